/**
 * A space shared between people, read by the TypeScript device, on one real
 * relay with Python devices (testkit/py_sharing.py):
 *
 * 1. Alice (Python) creates a space and writes; Bob's browser device (the
 *    TypeScript device, paired with `sddsf device add` to Bob's Python
 *    account) does not hold it until it joins, naming Alice's account key;
 * 2. Alice shares it with Bob: the browser device joins and reads Alice's text
 *    (the membership entries folded, the version 3 key packages verified
 *    against the member registries, every op judged with its author's); the
 *    space is named "vault", which does not make it Bob's own vault;
 * 3. Alice adds Carol (a second Python account), Carol joins and writes: the
 *    browser reads Carol's edit (judged with Carol's registry, pinned by the
 *    entry that added her) and her signed key-value record (checked with the
 *    same registry, no alert), and again after a restart from its store;
 * 4. Alice removes Bob and writes: Bob's browser device reads nothing more
 *    (the relay no longer serves the space: `not_found`; the space is
 *    reported unreachable, what it read stays) and the newest key package has
 *    no key for it (`not_authorized`).
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { fromHex, toHex } from "../../src/bytes.js";
import { ready } from "../../src/crypto.js";
import { BrowserDevice } from "../../src/device.js";
import { AuthorizationError, Code, NotFoundError, SddsfError } from "../../src/errors.js";
import { decodeKeyPackage, openEpochKey } from "../../src/keypackage.js";
import { MemoryBackend, Store } from "../../src/store.js";
import { deviceAdd, sddsf } from "../../testkit/cli.js";
import { PACKAGE_ROOT, REPO_ROOT } from "../../testkit/kit.js";
import { LiveRelay, PYTHON, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

let relay: LiveRelay | null = null;
before(ready);
after(() => relay?.stop());

/** Run testkit/py_sharing.py in the relay's directory and parse its JSON line. */
function py(r: LiveRelay, ...args: string[]): Json {
  const p = spawnSync(PYTHON, [join(PACKAGE_ROOT, "testkit", "py_sharing.py"), ...args], { cwd: r.work, encoding: "utf8",
    timeout: 180_000, env: { ...process.env, PYTHONPATH: join(REPO_ROOT, "src") } });
  assert.equal(p.status, 0, `py_sharing.py ${args[0]} failed:\n${p.stdout}\n${p.stderr}`);
  return JSON.parse(p.stdout.trim().split("\n").at(-1)!);
}

async function errorOf(p: Promise<unknown>): Promise<SddsfError> {
  const e = await p.then(() => null, (err: unknown) => err);
  assert.ok(e instanceof SddsfError, `expected an SddsfError, got ${String(e)}`);
  return e;
}

test("a Python owner shares a space with a TypeScript device's account; it reads until removed", { timeout: 900_000 },
  async (t) => {
    if (!pythonAvailable(t)) return;
    // Five devices on one loopback address: lift the per-address request limit.
    relay = await LiveRelay.start({ SDDSF_RELAY_RATE_IP_PER_S: "1000", SDDSF_RELAY_RATE_IP_BURST: "5000" });
    const r = relay;
    const [alice, carol, bob] = [r.home("alice"), r.home("carol"), r.home("bob")];
    const s = py(r, "setup", alice, carol, r.baseUrl);
    const space = fromHex(s.space);

    // Bob: a Python account whose second device is this browser device.
    const work = mkdtempSync(join(tmpdir(), "sddsf-share-"));
    sddsf(bob, ["init", "--relay", r.baseUrl, "--name", "bob-laptop", "--insecure-plaintext-key", "--phrase-out",
      join(work, "phrase")]);
    const add = await deviceAdd(bob, join(work, "code"));
    const store = await Store.create(new MemoryBackend(), { kind: "webcrypto" });
    const device = await BrowserDevice.pair(store, r.baseUrl, add.code, "bob-browser", () => true);
    assert.equal((await add.done)[0], 0);
    const bobAccount = device.identity.account;

    // 1. Not shared yet: nothing to hold, and joining is refused.
    await device.sync();
    assert.deepEqual(device.spaceList().map((v) => toHex(v.id)), []);
    assert.equal((await errorOf(device.joinSpace(space, fromHex(s.alice_sign), fromHex(s.alice_recovery)))).code,
      Code.NOT_FOUND);

    // 2. Shared with Bob: listed (with its owner) but held only once joined, naming Alice's key.
    const shared = py(r, "share", alice, s.space, toHex(bobAccount.signingKey.raw), toHex(bobAccount.recoveryKey), "writer");
    assert.equal(shared.rotated, 1, "the share opens an epoch for Bob's devices");
    const offered = await device.sharedWithMe();
    assert.deepEqual(offered.map((o) => [toHex(o.id), toHex(o.owner)]), [[s.space, s.alice_account_id]]);
    await device.sync();
    assert.deepEqual(device.spaceList(), [], "not held before it is joined");
    const joined = await device.joinSpace(space, fromHex(s.alice_sign), fromHex(s.alice_recovery), "notes");
    assert.deepEqual(joined.rejected, []);
    assert.deepEqual(joined.skipped, 0);
    assert.deepEqual(joined.unreachable, []);
    const text = (d: BrowserDevice): string => d.doc(space, "notes").getText("t").toString();
    assert.equal(text(device), "alice: hello");
    // Alice named her space "vault": another account's space is never this account's vault.
    const vault = device.vault();
    assert.deepEqual([vault.list(), vault.alerts], [[], []], "Alice's space is not Bob's vault");
    assert.deepEqual(device.members(space).map((m) => [toHex(m.accountId), m.role, m.owner, m.you]).sort(), [
      [s.alice_account_id, "admin", true, false], [toHex(bobAccount.accountId), "writer", false, true]].sort());
    // Read only here: an edit stays on this device.
    device.doc(space, "notes").getText("t").insert(0, "bob: ");
    assert.equal(await device.flush(), 0);
    assert.equal((await device.sync()).pushed, 0);

    // 3. Carol (a second Python account) is added, joins and writes; Bob's browser reads it.
    py(r, "share", alice, s.space, s.carol_sign, s.carol_recovery, "writer");
    py(r, "join", carol, s.space, s.alice_sign, s.alice_recovery);
    const byCarol = py(r, "text", carol, s.space, " / carol: hi");
    assert.equal(byCarol.text, "alice: hello / carol: hi");
    assert.equal(decodeKeyPackage(fromHex(byCarol.package)).version, 3);
    const read = await device.sync();
    assert.deepEqual(read.rejected, []);
    assert.equal(read.skipped, 0);
    assert.ok(read.applied >= 1);
    assert.ok(text(device).endsWith("alice: hello / carol: hi"), text(device));
    assert.equal(device.members(space).find((m) => toHex(m.accountId) === s.carol_account_id)?.role, "writer");
    // Carol's signed key-value record is checked with Carol's registry: hers, not forged.
    const kv = device.kv(space);
    const last = kv.entry("last");
    assert.deepEqual(kv.alerts, []);
    assert.deepEqual([last?.value, last?.heads.map((h) => h.author)], [" / carol: hi", [byCarol.device_id]]);
    // The same after a restart from the encrypted store (pinned keys, membership, owner kept).
    const reopened = await BrowserDevice.open(store);
    assert.ok(text(reopened).endsWith("alice: hello / carol: hi"));
    assert.deepEqual((await reopened.sync()).rejected, []);
    assert.equal(reopened.members(space).length, 3);

    // 4. Bob is removed; Alice writes on. Bob's browser reads nothing more.
    const before = text(reopened);
    const epochBefore = reopened.spaceList().find((v) => toHex(v.id) === s.space)!.epoch;
    assert.equal(py(r, "remove", alice, s.space, toHex(bobAccount.accountId)).rotated, 1);
    const after = py(r, "text", alice, s.space, " / alice: after bob left");
    assert.ok(after.text.endsWith(" / alice: after bob left"));
    assert.ok(!after.members.includes(toHex(bobAccount.accountId)));
    const gone = await reopened.sync();
    assert.deepEqual(gone.unreachable.map(toHex), [s.space]);
    assert.equal(text(reopened), before, "what it read stays; nothing written after the removal");
    assert.equal(reopened.spaceList().find((v) => toHex(v.id) === s.space)!.epoch, epochBefore);
    // The relay no longer serves the space to Bob's account ...
    const refused = await errorOf(reopened.relay.keyPackages(space));
    assert.ok(refused instanceof NotFoundError);
    assert.equal(refused.code, Code.NOT_FOUND);
    // ... and the epoch opened after the removal holds no key for Bob's device or recovery key.
    const newest = decodeKeyPackage(fromHex(after.package));
    assert.ok(newest.epoch > epochBefore!);
    for (const [rid, pair] of [[device.deviceId, device.identity.keys.kx]] as const) {
      let caught: unknown = null;
      try {
        openEpochKey(newest, rid, pair);
      } catch (e) {
        caught = e;
      }
      assert.ok(caught instanceof AuthorizationError && caught.code === Code.NOT_AUTHORIZED, String(caught));
    }
    assert.ok(!newest.recipients.has(toHex(bobAccount.accountId)), "nor for Bob's recovery key");
    // A later sync stays quiet about it, even with progress left to acknowledge
    // (as after a sync that stopped before its acknowledgements): nothing is sent for it.
    (reopened as unknown as { spaces: Map<string, { acked: bigint }> }).spaces.get(s.space)!.acked = -1n;
    assert.deepEqual((await reopened.sync()).unreachable.map(toHex), [s.space]);
    assert.equal(reopened.acknowledged(space), -1n);
    reopened.close();
  });
