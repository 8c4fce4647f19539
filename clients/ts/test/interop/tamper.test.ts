/**
 * A relay that tampers with what it serves is detected by the TypeScript
 * device, before anything is applied (docs/protocol.md §17.6, §18.6; the same
 * refusals as the Python client's sync).
 *
 * The data is real: a real `sddsf relay serve` process and a Python device
 * write the space. The tampering sits between the relay and the TypeScript
 * device (a `fetch` that rewrites the relay's answers), so every refusal is
 * the library's own check on bytes the real relay produced:
 *
 * omitted op, reordered ops, an op replaced by another, a withheld (null)
 * envelope, a truncated log, a tree head signed by another key, a rolled-back
 * log; and two split views (gossip): another device's op that claims a
 * different history at an earlier size, and one placed before the head its
 * author had verified.
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { b64, fromHex, unb64 } from "../../src/bytes.js";
import { encode } from "../../src/cbor.js";
import { Ed25519SigningKey, randomBytes, ready } from "../../src/crypto.js";
import { docIdFor } from "../../src/docs.js";
import { encodeEdit } from "../../src/payload.js";
import { sealOp } from "../../src/envelope.js";
import { AccountPublic, DeviceKeys } from "../../src/identity.js";
import { labelled, TREE_HEAD_SIG } from "../../src/labels.js";
import { RelayClient } from "../../src/relay.js";
import { DeviceSession } from "../../src/sync.js";
import { decodeTreeHead } from "../../src/treehead.js";
import { VersionVector } from "../../src/vv.js";
import { HLCTimestamp } from "../../src/clock.js";
import { expectCode } from "../../testkit/kit.js";
import { LiveRelay, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;
type Rewrite = (body: Json) => Json;

let relay: LiveRelay | null = null;

before(ready);
after(() => relay?.stop());

/** A fetch that hands every `GET .../ops` answer to `rewrite` first. */
function tampering(rewrite: () => Rewrite | null): typeof fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    const url = String(input);
    const fn = rewrite();
    if (fn === null || (init?.method ?? "GET") !== "GET" || !/\/v1\/spaces\/[^/]+\/ops\?/.test(url)) return response;
    const body = fn(JSON.parse(await response.text()));
    return new Response(JSON.stringify(body), { status: response.status, headers: { "content-type": "application/json" } });
  };
}

async function pullWith(setup: Json, baseUrl: string, fetchImpl: typeof fetch, session?: DeviceSession): Promise<void> {
  const device = session ?? newSession(setup, baseUrl, fetchImpl);
  await device.pinRelay();
  const space = device.space(fromHex(setup.space));
  await space.refreshKeys();
  await space.pull();
}

function newSession(setup: Json, baseUrl: string, fetchImpl: typeof fetch): DeviceSession {
  const keys = DeviceKeys.fromSeeds(fromHex(setup.browser_sign_seed), fromHex(setup.browser_kx_seed));
  const account = AccountPublic.fromKeys(fromHex(setup.account_sign), fromHex(setup.account_recovery));
  return new DeviceSession(keys, account, new RelayClient(baseUrl, { device: keys, accountId: account.accountId, fetch: fetchImpl }),
    { relayKey: fromHex(setup.relay_key) });
}

const swap = (ops: Json[], i: number, j: number): void => {
  const a = { ...ops[i] };
  ops[i] = { ...ops[j], offset: a.offset };
  ops[j] = { ...a, offset: ops[j].offset };
};

test("the TypeScript device refuses every tampered answer of a real relay", { timeout: 300_000 }, async (t) => {
  if (!pythonAvailable(t)) return;
  relay = await LiveRelay.start();
  const r = relay;
  const setup = r.py("setup", r.home("a"), r.home("b"), r.baseUrl);
  assert.ok(setup.size >= 5);

  // Untampered, the pull verifies (the cases below differ only by the tampering).
  await pullWith(setup, r.baseUrl, tampering(() => null));

  const once = (fn: Rewrite): typeof fetch => tampering(() => fn);
  await expectCode("proof_invalid", pullWith(setup, r.baseUrl, once((b) => ({ ...b, ops: b.ops.filter((_: Json, i: number) => i !== 1) }))));
  await expectCode("proof_invalid", pullWith(setup, r.baseUrl, once((b) => {
    swap(b.ops, 1, 2);
    return b;
  })));
  await expectCode("proof_invalid", pullWith(setup, r.baseUrl, once((b) => {
    b.ops[2] = { ...b.ops[1], offset: b.ops[2].offset };
    return b;
  })));
  await expectCode("proof_invalid", pullWith(setup, r.baseUrl, once((b) => {
    b.ops[1] = { ...b.ops[1], envelope: null };
    return b;
  })));
  await expectCode("proof_invalid", pullWith(setup, r.baseUrl, once((b) => ({ ...b, ops: b.ops.filter((o: Json) => o.offset < 2) }))));
  const impostor = Ed25519SigningKey.fromSeed(randomBytes(32));
  await expectCode("tree_head_invalid", pullWith(setup, r.baseUrl, once((b) => {
    // The same body, signed by another key.
    const th = decodeTreeHead(unb64(b.tree_head.tree_head));
    const forged = encode([1, th.bodyBytes, impostor.sign(labelled(TREE_HEAD_SIG, th.bodyBytes))]);
    return { ...b, tree_head: { ...b.tree_head, tree_head: b64(forged) } };
  })));

  // Rollback: a device that verified size N+1 is then served the log at size N.
  let recorded: Json = null;
  let replay = false;
  const rollback = tampering(() => (b: Json) => {
    // Rolled back: the later ops are gone and the head is the older one.
    if (replay) return { ...b, ops: [], tree_head: recorded.tree_head };
    recorded ??= structuredClone(b);
    return b;
  });
  const device = newSession(setup, r.baseUrl, rollback);
  await pullWith(setup, r.baseUrl, rollback, device);
  r.py("put", r.home("a"), "tea", "green");
  await device.space(fromHex(setup.space)).pull();
  assert.equal(device.space(fromHex(setup.space)).tree.size, BigInt(setup.size + 1));
  replay = true;
  await expectCode("log_rollback", device.space(fromHex(setup.space)).pull());

  // Split views through gossip: ops signed by the laptop (its seeds are
  // test data) that report another history than the log holds.
  const laptop = DeviceKeys.fromSeeds(fromHex(setup.laptop_sign_seed), fromHex(setup.laptop_kx_seed));
  const honest = newSession(setup, r.baseUrl, tampering(() => null));
  await honest.pinRelay();
  const space = honest.space(fromHex(setup.space));
  await space.refreshKeys();
  await space.pull();
  const forge = (seen: { size: bigint; root: Uint8Array }): Uint8Array => {
    const head = space.chains.head(laptop.deviceId)!;
    const env = sealOp(laptop, { space: space.spaceId, doc: docIdFor(space.spaceId, "kv"), author: laptop.deviceId,
      seq: head.seq + 1n, prev: head.opId, deps: head.deps.join(new VersionVector()), epoch: space.currentEpoch(),
      ts: new HLCTimestamp(Date.now()), seen, nonce: randomBytes(24), reg: BigInt(honest.registry().seq) }, encodeEdit("kv", []), space.keys.get(space.currentEpoch())!);
    return env.raw;
  };
  const client = new RelayClient(r.baseUrl, { device: honest.keys, accountId: honest.account.accountId });
  const [results] = await client.upload(space.spaceId, [forge({ size: 2n, root: new Uint8Array(32).fill(7) })]);
  assert.equal(results[0]!.status, "accepted", JSON.stringify(results[0]));
  await expectCode("split_view", space.pull());

  // A second account: an op placed before the head its author had verified.
  const later = r.py("setup", r.home("a2"), r.home("b2"), r.baseUrl);
  const s2 = newSession(later, r.baseUrl, tampering(() => null));
  await s2.pinRelay();
  const sp2 = s2.space(fromHex(later.space));
  await sp2.refreshKeys();
  await sp2.pull();
  const laptop2 = DeviceKeys.fromSeeds(fromHex(later.laptop_sign_seed), fromHex(later.laptop_kx_seed));
  const head2 = sp2.chains.head(laptop2.deviceId)!;
  const ahead = sealOp(laptop2, { space: sp2.spaceId, doc: docIdFor(sp2.spaceId, "kv"), author: laptop2.deviceId,
    seq: head2.seq + 1n, prev: head2.opId, deps: head2.deps, epoch: sp2.currentEpoch(), ts: new HLCTimestamp(Date.now()),
    seen: { size: sp2.tree.size + 5n, root: new Uint8Array(32).fill(1) }, nonce: randomBytes(24),
    reg: BigInt(s2.registry().seq) },
  encodeEdit("kv", []), sp2.keys.get(sp2.currentEpoch())!);
  const c2 = new RelayClient(r.baseUrl, { device: s2.keys, accountId: s2.account.accountId });
  assert.equal((await c2.upload(sp2.spaceId, [ahead.raw]))[0][0]!.status, "accepted");
  await expectCode("split_view", sp2.pull());
});

test("an append between the relay's page and head is no tamper; a head over empty pages is", { timeout: 300_000 }, async (t) => {
  if (!pythonAvailable(t)) return;
  relay ??= await LiveRelay.start();
  const r = relay;
  const setup = r.py("setup", r.home("race-a"), r.home("race-b"), r.baseUrl);
  let mode: "honest" | "race" | "withhold" = "honest";
  let pulls = 0;
  const racing = tampering(() => (b: Json) => {
    pulls += 1;
    if (mode === "race") {
      mode = "honest"; // once: the page as read before the append, the head after it
      return { ...b, ops: [] };
    }
    return mode === "withhold" ? { ...b, ops: [] } : b;
  });
  const device = newSession(setup, r.baseUrl, racing);
  await pullWith(setup, r.baseUrl, racing, device);
  const space = device.space(fromHex(setup.space));
  const before = space.tree.size;
  r.py("put", r.home("race-a"), "between", "yes");
  mode = "race";
  await space.pull();
  assert.equal(space.tree.size, before + 1n);
  r.py("put", r.home("race-a"), "hidden", "yes");
  mode = "withhold";
  pulls = 0;
  await expectCode("proof_invalid", space.pull());
  assert.ok(pulls <= 5, `asked ${pulls} times`);
  assert.equal(space.tree.size, before + 1n);
});
