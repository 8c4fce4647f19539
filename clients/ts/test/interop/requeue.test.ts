/**
 * Two copies of one TypeScript device (the same keys, e.g. a browser profile
 * restored from an older copy) write the same sequence number: the relay
 * accepts the first and refuses the second with `chain_fork`. The second copy
 * keeps its edit: `push` hands its payload back, the chain head moves back to
 * what the log holds, and after a pull the edit is sealed again on top of the
 * log and accepted; the Python device then reads both edits.
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { fromHex, toHex } from "../../src/bytes.js";
import { randomBytes, ready } from "../../src/crypto.js";
import { AccountPublic, DeviceKeys } from "../../src/identity.js";
import { RelayClient } from "../../src/relay.js";
import { DeviceSession, type SpaceReplica } from "../../src/sync.js";
import { DocSet } from "../../src/ydocs.js";
import { putRecord } from "../../testkit/kvrecords.js";
import { LiveRelay, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

let relay: LiveRelay | null = null;
before(ready);
after(() => relay?.stop());

async function copyOf(setup: Json, baseUrl: string): Promise<{ space: SpaceReplica; docs: DocSet; device: DeviceSession }> {
  const keys = DeviceKeys.fromSeeds(fromHex(setup.browser_sign_seed), fromHex(setup.browser_kx_seed));
  const account = AccountPublic.fromKeys(fromHex(setup.account_sign), fromHex(setup.account_recovery));
  const device = new DeviceSession(keys, account, new RelayClient(baseUrl, { device: keys, accountId: account.accountId }));
  await device.pinRelay();
  const space = device.space(fromHex(setup.space));
  await space.refreshKeys();
  const report = await space.pull();
  const docs = new DocSet();
  docs.applyVerified(report.applied);
  docs.takeLocal();
  return { space, docs, device };
}

test("a copy whose op loses a chain fork seals its edit again and it is accepted", { timeout: 300_000 }, async (t) => {
  if (!pythonAvailable(t)) return;
  relay = await LiveRelay.start();
  const setup = relay.py("setup", relay.home("a"), relay.home("b"), relay.baseUrl);
  const one = await copyOf(setup, relay.baseUrl);
  const two = await copyOf(setup, relay.baseUrl);
  const write = (c: typeof one, key: string, value: string): void => {
    putRecord(c.docs.doc("kv"), c.device.keys, c.device.registry(), key, value, toHex(randomBytes(16)), Date.now());
    const local = c.docs.takeLocal();
    c.space.seal("kv", [local.get("kv")!]);
  };
  write(one, "first", "one");
  write(two, "second", "two");
  const forkedSeq = one.space.pending[0]!.header.seq;
  assert.equal(two.space.pending[0]!.header.seq, forkedSeq, "both copies used the same seq");
  assert.equal((await one.space.push()).pushed, 1);
  const lost = await two.space.push();
  assert.deepEqual(lost.rejected.map(([code]) => code), ["chain_fork"]);
  assert.equal(lost.requeued.length, 1);
  assert.equal(lost.requeued[0]!.name, "kv");
  // Pull what the log holds, then seal the kept edit again on top of it.
  const report = await two.space.pull();
  two.docs.applyVerified(report.applied);
  const [again] = two.space.seal("kv", lost.requeued[0]!.updates);
  assert.equal(again!.header.seq, forkedSeq + 1n, "sealed on top of the op that won");
  const retry = await two.space.push();
  assert.deepEqual(retry.rejected, []);
  assert.equal(retry.pushed, 1);
  for (const [key, value] of [["first", "one"], ["second", "two"]] as const) {
    const seen = relay.py("read", relay.home("a"), key);
    assert.equal(seen.value, value);
    assert.equal(seen.verified, true, JSON.stringify(seen));
  }
});
