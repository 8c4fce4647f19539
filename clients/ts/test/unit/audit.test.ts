/**
 * The audit log verified on the device (src/controller.ts, the counterpart of
 * sddsf.protocol.audit): a log of relay-created and device-reported events
 * under heads signed by a relay key verifies; a rewritten or dropped event, a
 * log that shrank, a forked log, a bad consistency proof and a report signed
 * by the wrong device are each refused with their stable code. And the
 * controller's answers (devices, alerts) are parsed strictly.
 */

import assert from "node:assert/strict";
import { before, test } from "node:test";

import { b64 } from "../../src/bytes.js";
import { encode, type Encodable } from "../../src/cbor.js";
import {
  auditLogId, decodeAuditEntry, decodeReport, parseAlerts, parseAuditPage, parseDevices, verifyAuditLog, auditPageJson,
} from "../../src/controller.js";
import { Ed25519SigningKey, randomBytes, ready } from "../../src/crypto.js";
import { AccountKeys, DeviceKeys } from "../../src/identity.js";
import * as labels from "../../src/labels.js";
import { labelled } from "../../src/labels.js";
import { MerkleTree, leafHash } from "../../src/merkle.js";
import { addDevice, genesis, revokeDevice, verifyRegistry, type RegistryState } from "../../src/registry.js";
import { decodeTreeHead, signTreeHead, type TreeHead } from "../../src/treehead.js";
import { codeOf } from "../../testkit/kit.js";

before(ready);

const T0 = 1_767_225_600_000;

interface World {
  account: AccountKeys;
  laptop: DeviceKeys;
  phone: DeviceKeys;
  registry: RegistryState;
  relay: Ed25519SigningKey;
}

function world(): World {
  const account = AccountKeys.fromSecret(randomBytes(32));
  const laptop = DeviceKeys.fromSeeds(randomBytes(32), randomBytes(32));
  const phone = DeviceKeys.fromSeeds(randomBytes(32), randomBytes(32));
  const g = genesis(account, laptop, "laptop", T0);
  let state = verifyRegistry([g], null);
  const add = addDevice(state, laptop, phone, "phone", T0 + 1);
  state = state.apply(add);
  return { account, laptop, phone, registry: state, relay: Ed25519SigningKey.fromSeed(randomBytes(32)) };
}

function report(w: World, signer: DeviceKeys, device: Uint8Array, ts: number): Uint8Array {
  const body = encode(new Map<string, Encodable>([["v", 1], ["account", w.account.accountId], ["device", device], ["ts", ts],
    ["kind", "posture"], ["data", new Map<string, Encodable>([["os", "linux"], ["os_version", "6.1"], ["app_version", "0.1"],
      ["package_hash", new Uint8Array(32)], ["key_storage", "keyring"], ["rooted", "no"], ["attestation", "none"]])]]));
  return encode([1, body, signer.sign(labelled(labels.DEVICE_REPORT_SIG, body))]);
}

function entry(w: World, kind: string, ts: number, device: Uint8Array = new Uint8Array(0), rep: Uint8Array = new Uint8Array(0)): Uint8Array {
  return encode(new Map<string, Encodable>([["v", 1], ["account", w.account.accountId], ["ts", ts], ["kind", kind],
    ["device", device], ["data", new Map<string, Encodable>([["name", "phone"], ["seq", 1]])], ["report", rep]]));
}

function head(w: World, entries: readonly Uint8Array[], size = entries.length): TreeHead {
  const tree = new MerkleTree(entries.slice(0, size).map(leafHash));
  return decodeTreeHead(signTreeHead(w.relay, auditLogId(w.account.accountId), size, tree.root(), T0 + size));
}

function log(w: World): Uint8Array[] {
  return [entry(w, "device_added", T0, w.laptop.deviceId), entry(w, "device_added", T0 + 1, w.phone.deviceId),
    entry(w, "posture", T0 + 2, w.phone.deviceId, report(w, w.phone, w.phone.deviceId, T0 + 2)), entry(w, "session", T0 + 3)];
}

test("an honest audit log verifies: entries, device reports, growth from a stored head", () => {
  const w = world();
  const entries = log(w);
  const [decoded, tree] = verifyAuditLog(entries, head(w, entries), [], w.registry);
  assert.deepEqual(decoded.map((e) => e.kind), ["device_added", "device_added", "posture", "session"]);
  assert.equal(tree.size, 4n);
  // Grown from a head of size 2 the device stored: checked with the consistency proof.
  const old = head(w, entries, 2);
  const proof = tree.consistencyProof(2, 4);
  assert.equal(verifyAuditLog(entries, head(w, entries), [old], w.registry, proof)[0].length, 4);
  // A revoked device's old report stays valid.
  const revoked = w.registry.apply(revokeDevice(w.registry, w.laptop, w.phone.deviceId, "lost", T0 + 5));
  assert.equal(verifyAuditLog(entries, head(w, entries), [], revoked)[0].length, 4);
});

test("a rewritten or dropped event is refused (proof_invalid)", () => {
  const w = world();
  const entries = log(w);
  const signed = head(w, entries);
  const rewritten = [...entries];
  rewritten[1] = entry(w, "device_added", T0 + 99, w.phone.deviceId);
  assert.equal(codeOf(() => verifyAuditLog(rewritten, signed, [], w.registry)), "proof_invalid");
  // The relay re-signs a log without an event the device saw before: the stored head is no prefix.
  const old = head(w, entries, 3);
  const dropped = [entries[0]!, entries[2]!, entries[3]!, entry(w, "session", T0 + 4)];
  assert.equal(codeOf(() => verifyAuditLog(dropped, head(w, dropped), [old], w.registry, [])), "proof_invalid");
  // Fewer entries than the head says.
  assert.equal(codeOf(() => verifyAuditLog(entries.slice(0, 3), signed, [], w.registry)), "proof_invalid");
});

test("a log that shrank is a rollback; a bad consistency proof is refused", () => {
  const w = world();
  const entries = log(w);
  const stored = head(w, entries);
  assert.equal(codeOf(() => verifyAuditLog(entries.slice(0, 2), head(w, entries, 2), [stored], w.registry)), "log_rollback");
  const old = head(w, entries, 2);
  const bogus = [randomBytes(32), randomBytes(32)];
  assert.equal(codeOf(() => verifyAuditLog(entries, head(w, entries), [old], w.registry, bogus)), "proof_invalid");
});

test("a device report that does not verify, or names another device, is refused", () => {
  const w = world();
  const entries = log(w);
  // Signed by the laptop's key while naming the phone.
  entries[2] = entry(w, "posture", T0 + 2, w.phone.deviceId, report(w, w.laptop, w.phone.deviceId, T0 + 2));
  assert.equal(codeOf(() => verifyAuditLog(entries, head(w, entries), [], w.registry)), "proof_invalid");
  // A valid report by the phone, attributed to the laptop.
  entries[2] = entry(w, "posture", T0 + 2, w.laptop.deviceId, report(w, w.phone, w.phone.deviceId, T0 + 2));
  assert.equal(codeOf(() => verifyAuditLog(entries, head(w, entries), [], w.registry)), "proof_invalid");
  // A posture event without the device's report.
  entries[2] = entry(w, "posture", T0 + 2, w.phone.deviceId);
  assert.equal(codeOf(() => verifyAuditLog(entries, head(w, entries), [], w.registry)), "proof_invalid");
  // Another account's entry.
  const other = world();
  entries[2] = entry(other, "session", T0 + 2);
  assert.equal(codeOf(() => verifyAuditLog(entries, head(w, entries), [], w.registry)), "proof_invalid");
});

test("entries and reports are decoded strictly", () => {
  const w = world();
  const unknown = encode(new Map<string, Encodable>([["v", 1], ["account", w.account.accountId], ["ts", T0],
    ["kind", "party"], ["device", new Uint8Array(0)], ["data", new Map()], ["report", new Uint8Array(0)]]));
  assert.equal(codeOf(() => decodeAuditEntry(unknown)), "unsupported_version");
  assert.equal(codeOf(() => decodeAuditEntry(new Uint8Array(9000))), "too_large");
  const short = encode(new Map<string, Encodable>([["v", 1], ["account", w.account.accountId], ["ts", T0],
    ["kind", "session"], ["device", new Uint8Array(5)], ["data", new Map()], ["report", new Uint8Array(0)]]));
  assert.equal(codeOf(() => decodeAuditEntry(short)), "malformed");
  assert.equal(decodeReport(report(w, w.phone, w.phone.deviceId, T0)).kind, "posture");
});

test("the controller's answers are parsed strictly", () => {
  const w = world();
  const devices = parseDevices({ devices: [{ device_id: b64(w.phone.deviceId), name: "phone", status: "active", score: 80,
    access: "full", quarantined: false, factors: [{ name: "posture", points: -10, detail: "stale" }], posture: null }] });
  assert.equal(devices[0]!.name, "phone");
  assert.deepEqual(devices[0]!.factors, [{ name: "posture", points: -10, detail: "stale" }]);
  assert.equal(codeOf(() => parseDevices({ devices: [{ device_id: 3 }] })), "malformed");
  assert.equal(codeOf(() => parseDevices({})), "malformed");
  const alerts = parseAlerts({ alerts: [{ alert_id: b64(new Uint8Array(16)), device: b64(w.phone.deviceId), rule: "r",
    severity: "high", message: "m", quarantine: true, created_ms: T0, acked_ms: null }] });
  assert.equal(alerts[0]!.quarantine, true);
  const entries = log(w);
  const page = auditPageJson(entries.map((e, i) => [i, e]), head(w, entries).raw);
  const [rows, headRaw] = parseAuditPage(page);
  assert.equal(rows.length, 4);
  assert.equal(decodeTreeHead(headRaw).size, 4n);
  assert.equal(codeOf(() => parseAuditPage({ entries: [{ seq: -1, entry: "" }], tree_head: { tree_head: "" } })), "malformed");
});
