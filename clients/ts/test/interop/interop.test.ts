/**
 * Python ↔ TypeScript on one real relay.
 *
 * The test starts `sddsf relay serve` (the worktree's .venv) on a free
 * loopback port; a Python device (py_device.py, `sddsf.client.device.Device`)
 * creates an account and a space, writes key-value edits and adds a second
 * device, whose key seeds it hands over. The TypeScript library then *is*
 * that second device: it opens a session with a signed challenge, pins the
 * relay key, verifies the registry from the pinned account key and the key
 * packages as a chain, pulls the space verifying every tree head, leaf, op
 * (rules in history mode), gossip and payload, checks an inclusion proof for
 * every offset, decrypts, applies the Yjs updates and reads the same values.
 * It writes an op with Yjs that the Python device pulls, verifies and applies
 * (pycrdt), and it receives the Python device's next op over the WebSocket
 * live channel before pulling it. Finally a fresh copy of the TypeScript device
 * starts from a snapshot the Python device wrote and pulls only the tail, and
 * the live channel's close codes are checked (an unknown ticket; revocation).
 *
 * Needs the Python environment (.venv at the repository root): it skips when
 * absent, and fails instead under SDDSF_REQUIRE_INTEROP=1 (as .ci/run sets).
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { fromHex, toHex } from "../../src/bytes.js";
import { randomBytes, ready } from "../../src/crypto.js";
import { AccountPublic, DeviceKeys } from "../../src/identity.js";
import { LiveChannel, type LiveMessage } from "../../src/live.js";
import { leafHash, verifyInclusion } from "../../src/merkle.js";
import { RelayClient } from "../../src/relay.js";
import { DeviceSession } from "../../src/sync.js";
import { verifyTreeHead } from "../../src/treehead.js";
import { DocSet } from "../../src/ydocs.js";
import { heads, putRecord, readRecords } from "../../testkit/kvrecords.js";
import { LiveRelay, pythonAvailable } from "../../testkit/relaykit.js";

let relay: LiveRelay | null = null;

/** The next live message matching `pred` (bounded by a timeout). */
async function nextMatching(ch: LiveChannel, pred: (m: LiveMessage) => boolean, ms = 30_000): Promise<LiveMessage> {
  const signal = AbortSignal.timeout(ms);
  for (;;) {
    const m = await ch.next(signal);
    if (m === null) throw new Error("the live channel closed");
    if (pred(m)) return m;
  }
}

before(ready);

after(() => relay?.stop());

test("a TypeScript device and a Python device share a space on one real relay", { timeout: 300_000 }, async (t) => {
  if (!pythonAvailable(t)) return;
  relay = await LiveRelay.start();
  const baseUrl = relay.baseUrl;
  const py = relay.py.bind(relay);
  const home = relay.home.bind(relay);
  // 1. Python: account, space, kv edits, a second device for TypeScript.
  const setup = py("setup", home("a"), home("b"), baseUrl);
  const keys = DeviceKeys.fromSeeds(fromHex(setup.browser_sign_seed), fromHex(setup.browser_kx_seed));
  assert.equal(toHex(keys.deviceId), setup.browser_id);
  const account = AccountPublic.fromKeys(fromHex(setup.account_sign), fromHex(setup.account_recovery));
  assert.equal(toHex(account.accountId), setup.account_id);
  const spaceId = fromHex(setup.space);

  // 2. TypeScript: session (signed challenge), relay key pinned, registry verified from the pinned account key.
  const client = new RelayClient(baseUrl, { device: keys, accountId: account.accountId });
  const device = new DeviceSession(keys, account, client);
  const relayKey = await device.pinRelay();
  assert.equal(toHex(relayKey.raw), setup.relay_key, "both devices pinned the same relay key");
  const registry = await device.refreshRegistry();
  assert.ok(registry.isActive(keys.deviceId) && registry.isActive(fromHex(setup.laptop_id)));
  assert.deepEqual(registry.activeDevices().map((d) => d.name), ["laptop", "browser"]);
  assert.deepEqual((await device.listSpaces()).map(toHex), [setup.space]);

  // 3. Keys (a verified chain; the newest epoch is wrapped for this device and carries the history).
  const space = device.space(spaceId);
  const packages = await space.refreshKeys();
  assert.ok(packages.length >= 2, "the laptop opened an epoch that includes the browser");
  assert.deepEqual([...space.keys.keys()].sort(), packages.map((p) => p.epoch).sort());

  // 4. Pull and verify everything, then apply to Yjs and read the Python device's values.
  const report = await space.pull();
  assert.equal(report.size, BigInt(setup.size));
  assert.equal(report.pulled, setup.size);
  assert.equal(report.skipped.length, 0);
  const docs = new DocSet();
  if (report.snapshot !== null) docs.applySnapshot(report.snapshot);
  docs.applyVerified(report.applied);
  const kv = docs.doc("kv");
  const read = readRecords(kv, registry);
  assert.deepEqual(read.refused, [], "every record's signature verifies under its author's registry key");
  const values = new Map([...heads(read.records)].map(([k, hs]) => [k, hs.map((h) => h.value)]));
  assert.deepEqual(Object.fromEntries(values), { milk: ["2 l"], eggs: ["6"], coffee: ["beans"] });
  assert.equal(kv.getMap("kv").get("eggs"), "6");

  // Every offset has an inclusion proof under a head signed by the pinned key.
  const size = Number(report.size);
  for (let i = 0; i < size; i++) {
    const [proof, headRaw] = await client.inclusionProof(spaceId, i, size);
    const head = verifyTreeHead(headRaw, relayKey, spaceId);
    assert.equal(head.size, report.size);
    verifyInclusion(space.tree.hashRange(i, i + 1), i, head.size, proof, head.root);
  }

  // 5. The live channel: subscribe, then write from TypeScript with Yjs.
  const live = await LiveChannel.open(client);
  try {
    live.subscribe(spaceId);
    const sub = await nextMatching(live, (m) => m.type === "subscribed");
    assert.ok(sub.type === "subscribed" && sub.size === size);

    putRecord(kv, keys, registry, "bread", "1 loaf", toHex(randomBytes(16)), Date.now());
    const local = docs.takeLocal();
    assert.deepEqual([...local.keys()], ["kv"]);
    const [env] = space.seal("kv", [local.get("kv")!]);
    const pushed = await space.push();
    assert.deepEqual(pushed.rejected, []);
    assert.equal(pushed.pushed, 1);
    const own = await nextMatching(live, (m) => m.type === "op" && m.offset === size);
    assert.ok(own.type === "op" && toHex(leafHash(own.envelope)) === toHex(leafHash(env!.raw)));

    // 6. Python pulls, verifies and applies the TypeScript op (pycrdt) and reads the value.
    const seen = py("read", home("a"), "bread");
    assert.equal(seen.value, "1 loaf");
    assert.equal(seen.verified, true, JSON.stringify(seen));
    assert.deepEqual(seen.authors, [toHex(keys.deviceId)]);
    assert.deepEqual(seen.alerts, []);
    assert.equal(seen.size, size + 1);

    // 7. Python writes again; the live channel announces it; TypeScript pulls and applies it.
    const put = py("put", home("a"), "butter", "250 g");
    assert.deepEqual(put.rejected, []);
    const hint = await nextMatching(live, (m) => m.type === "op" && m.offset === size + 1);
    assert.ok(hint.type === "op");
    const next = await space.pull();
    assert.equal(next.size, BigInt(size + 2));
    assert.equal(next.applied.length, 1, "the own op made here is not applied twice");
    docs.applyVerified(next.applied);
    const after2 = heads(readRecords(kv, registry).records);
    assert.deepEqual(after2.get("butter")?.map((h) => h.value), ["250 g"]);
    assert.deepEqual(after2.get("bread")?.map((h) => h.author), [toHex(keys.deviceId)]);
  } finally {
    live.close();
  }

  // 8. A fresh copy of this device starts from the Python device's snapshot
  //    (verified: active author, frontier, signature, decryption) and pulls
  //    only the tail, which must extend the snapshot's frontier to the signed root.
  const snap = py("snapshot", home("a"));
  assert.equal(snap.size, size + 2);
  assert.deepEqual(py("put", home("a"), "jam", "plum").rejected, []);
  const fresh = new DeviceSession(keys, account, new RelayClient(baseUrl, { device: keys, accountId: account.accountId }),
    { relayKey: relayKey.raw });
  await fresh.pinRelay();
  const copy = fresh.space(spaceId);
  await copy.refreshKeys();
  const fromSnap = await copy.pull();
  assert.ok(fromSnap.snapshot !== null, "started from the snapshot");
  assert.equal(fromSnap.snapshot.size, BigInt(size + 2));
  assert.equal(copy.tree.base, BigInt(size + 2));
  assert.equal(fromSnap.applied.length, 1, "only the tail is replayed");
  const docs2 = new DocSet();
  docs2.applySnapshot(fromSnap.snapshot);
  docs2.applyVerified(fromSnap.applied);
  const values2 = new Map([...heads(readRecords(docs2.doc("kv"), registry).records)].map(([k, hs]) => [k, hs[0]!.value]));
  assert.deepEqual(Object.fromEntries([...values2].sort()),
    { bread: "1 loaf", butter: "250 g", coffee: "beans", eggs: "6", jam: "plum", milk: "2 l" });

  // 9. Live channel close codes: an unknown ticket is 4401; revoking this
  //    device closes its open channel with 4403, and the relay refuses it.
  class BadTicket extends RelayClient {
    override async wsTicket(): Promise<Uint8Array> {
      return randomBytes(32);
    }
  }
  // The relay accepts the connection, then closes it at once (§17.7).
  const refused = await LiveChannel.open(new BadTicket(baseUrl, { device: keys, accountId: account.accountId }));
  await assert.rejects(refused.next(), (e: Error & { code?: string }) => e.code === "unauthenticated");
  const watching = await LiveChannel.open(client);
  watching.subscribe(spaceId);
  await nextMatching(watching, (m) => m.type === "subscribed");
  assert.equal(py("revoke", home("a"), toHex(keys.deviceId)).done, true);
  await assert.rejects(nextMatching(watching, () => false, 30_000), (e: Error & { code?: string }) => e.code === "revoked");
  // The registry is read only by a device of the account (§17.3.3): a revoked one is refused.
  await assert.rejects(fresh.refreshRegistry(), (e: Error & { code?: string }) => e.code === "revoked");
  await assert.rejects(copy.pull(), (e: Error & { code?: string }) => e.code === "revoked");
});
