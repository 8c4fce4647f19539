/**
 * The current formats between Python and TypeScript on one real relay:
 *
 * * key packages version 2: a device added by the Python laptop without a
 *   rotation is caught up by the TypeScript device, whose new package wraps
 *   the earlier key; the new Python device then reads the whole history
 *   through it (key history walked back to epoch 0);
 * * multi-part edits (§8.11): a Python edit larger than one op is joined by
 *   the TypeScript device, and a TypeScript edit larger than one op is joined
 *   by the Python device;
 * * a revocation by the TypeScript device: while the relay refuses its new
 *   key package and serves none without the revoked device, rotation is
 *   blocked (`rotation_blocked`) and the edit stays on the device, never
 *   pushed under the compromised epoch; once the relay stores the package,
 *   the held edit is sealed under the new epoch and the Python device reads
 *   it;
 * * a relay that withholds registry entries an op names (`registry_withheld`),
 *   serves another key package for an epoch the device holds
 *   (`key_package_fork`), or stops serving one (`proof_invalid`).
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { b64, fromHex, toHex } from "../../src/bytes.js";
import { randomBytes, ready } from "../../src/crypto.js";
import { AccountPublic, DeviceKeys } from "../../src/identity.js";
import { buildKeyPackage } from "../../src/keypackage.js";
import { revokeDevice } from "../../src/registry.js";
import { RelayClient } from "../../src/relay.js";
import { DeviceSession, type SpaceReplica } from "../../src/sync.js";
import { DocSet } from "../../src/ydocs.js";
import { heads, putRecord, readRecords } from "../../testkit/kvrecords.js";
import { LiveRelay, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

let relay: LiveRelay | null = null;
before(ready);
after(() => relay?.stop());

/** A fetch that may rewrite answers (`rewrite` returns the body to serve) or refuse requests (`refuse`). */
function tampering(opts: { rewrite?: (url: string, body: Json) => Json | null; refuse?: (url: string, method: string) => boolean }):
  typeof fetch {
  return async (input, init) => {
    const url = String(input);
    const method = init?.method ?? "GET";
    if (opts.refuse?.(url, method)) {
      return new Response(JSON.stringify({ code: "conflict", message: "another key package holds this epoch" }),
        { status: 409, headers: { "content-type": "application/json" } });
    }
    const response = await fetch(input, init);
    if (opts.rewrite === undefined || method !== "GET" || response.status !== 200) return response;
    const body = JSON.parse(await response.text());
    const out = opts.rewrite(url, body) ?? body;
    return new Response(JSON.stringify(out), { status: 200, headers: { "content-type": "application/json" } });
  };
}

function session(setup: Json, baseUrl: string, fetchImpl?: typeof fetch): DeviceSession {
  const keys = DeviceKeys.fromSeeds(fromHex(setup.browser_sign_seed), fromHex(setup.browser_kx_seed));
  const account = AccountPublic.fromKeys(fromHex(setup.account_sign), fromHex(setup.account_recovery));
  const client = new RelayClient(baseUrl, { device: keys, accountId: account.accountId, ...(fetchImpl ? { fetch: fetchImpl } : {}) });
  return new DeviceSession(keys, account, client, { relayKey: fromHex(setup.relay_key) });
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return "none";
}

async function syncOnce(space: SpaceReplica, docs: DocSet): Promise<void> {
  await space.refreshKeys();
  await space.rotateIfDue();
  for (const [name, update] of docs.takeLocal()) space.seal(name, [update]);
  const pushed = await space.push();
  assert.deepEqual(pushed.rejected, []);
  const report = await space.pull();
  if (report.snapshot !== null) docs.applySnapshot(report.snapshot);
  docs.applyVerified(report.applied);
}

test("key packages v2, multi-part edits, blocked rotation and withheld registry between Python and TypeScript",
  { timeout: 600_000 }, async (t) => {
    if (!pythonAvailable(t)) return;
    relay = await LiveRelay.start();
    const r = relay;
    const setup = r.py("setup", r.home("a"), r.home("b"), r.baseUrl);

    // 0. A refused challenge (stateless challenges, §17.3.1: expired on the way, or from a node
    //    with a skewed clock) is retried once with a new one.
    let challenges = 0;
    const flaky = session(setup, r.baseUrl, async (input, init) => {
      const response = await fetch(input, init);
      if (!String(input).endsWith("/v1/auth/challenge")) return response;
      const body = JSON.parse(await response.text());
      challenges += 1;
      if (challenges === 1) { // the first challenge arrives damaged: the relay refuses the session
        const raw = Buffer.from(body.challenge, "base64url");
        raw[20] = raw[20]! ^ 1;
        body.challenge = raw.toString("base64url") + "=".repeat((4 - (raw.toString("base64url").length % 4)) % 4);
      }
      return new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
    });
    await flaky.pinRelay();
    assert.equal(challenges, 2, "one retry with a new challenge");

    const device = session(setup, r.baseUrl);
    await device.pinRelay();
    const space = device.space(fromHex(setup.space));
    const docs = new DocSet();
    await syncOnce(space, docs);
    const epochs = space.packages.length;

    // 1. The laptop adds a tablet without rotating; the TypeScript device catches up
    //    (the tablet is not a recipient of the newest package) with a version 2 package.
    const tablet = r.py("add", r.home("a"), r.home("c"), "tablet");
    await space.refreshKeys();
    assert.equal(await space.rotateIfDue(), true, "the TypeScript device opened the epoch that includes the tablet");
    const newest = space.packages.at(-1)!;
    assert.equal(space.packages.length, epochs + 1);
    assert.equal(newest.version, 2);
    assert.equal(toHex(newest.creator), toHex(device.deviceId));
    assert.ok(newest.recipients.has(tablet.device_id) && newest.prevKeys !== null);
    // The tablet reads the whole history through it (its key history walks back to epoch 0).
    const seenByTablet = r.py("read", r.home("c"), "eggs");
    assert.equal(seenByTablet.value, "6", JSON.stringify(seenByTablet));
    assert.equal(seenByTablet.verified, true);

    // 2. Multi-part edits both ways (a value larger than one op).
    const big = r.py("putbig", r.home("a"), "big", "700000");
    assert.deepEqual(big.rejected, []);
    const before = space.size;
    await syncOnce(space, docs);
    assert.ok(space.size - before >= 2n, "the Python edit came as parts");
    const bigValue = heads(readRecords(docs.doc("kv"), device.registry()).records).get("big")![0]!.value!;
    assert.equal(bigValue.length, 700_000);
    assert.equal(bigValue.slice(0, 16), big.value_head);
    const mine = "z".repeat(650_000);
    putRecord(docs.doc("kv"), device.keys, device.registry(), "mine", mine, toHex(randomBytes(16)), Date.now());
    const own = space.ownSeq;
    await syncOnce(space, docs);
    assert.ok(space.ownSeq - own >= 2n, "the TypeScript edit was sealed as parts");
    const seenBig = r.py("read", r.home("a"), "mine");
    assert.equal(seenBig.value?.length, 650_000, JSON.stringify({ ...seenBig, value: seenBig.value?.length }));
    assert.equal(seenBig.verified, true);

    // 3. The TypeScript device revokes the tablet. The relay refuses its new package
    //    and serves no newer one: rotation is blocked and the edit stays here.
    let refuseKeys = true;
    const blocking = session(setup, r.baseUrl, tampering({
      refuse: (url, method) => refuseKeys && method === "POST" && /\/v1\/spaces\/[^/]+\/keys$/.test(url) }));
    await blocking.pinRelay();
    const bspace = blocking.space(fromHex(setup.space));
    const bdocs = new DocSet();
    await syncOnce(bspace, bdocs);
    const state = blocking.registry();
    const cutoff = new Map([[setup.space as string, bspace.chains.head(fromHex(tablet.device_id))?.seq ?? 0n]]);
    await blocking.relay.appendRegistry(blocking.account.accountId,
      revokeDevice(state, blocking.keys, fromHex(tablet.device_id), "lost", Date.now(), cutoff));
    await bspace.refreshKeys();
    putRecord(bdocs.doc("kv"), blocking.keys, blocking.registry(), "secret", "after revocation", toHex(randomBytes(16)), Date.now());
    for (const [name, update] of bdocs.takeLocal()) assert.deepEqual(bspace.seal(name, [update]), [], "held, not sealed");
    assert.equal(await code(bspace.rotateIfDue()), "rotation_blocked");
    assert.equal(bspace.pending.length, 0, "nothing is queued under the compromised epoch");
    assert.equal(bspace.held.length, 1);
    assert.equal((await bspace.push()).pushed, 0);
    // The relay stores the package again: the held edit is sealed under the new epoch and read by Python.
    refuseKeys = false;
    assert.equal(await bspace.rotateIfDue(), true);
    assert.equal(bspace.held.length, 0);
    assert.equal(bspace.pending.length, 1);
    assert.equal(bspace.pending[0]!.header.epoch, bspace.packages.at(-1)!.epoch);
    assert.equal((await bspace.push()).pushed, 1);
    const secret = r.py("read", r.home("a"), "secret");
    assert.equal(secret.value, "after revocation");
    assert.equal(secret.verified, true);

    // 4. A relay that withholds the registry entry (the revocation, entry 3) that the
    //    newest op names in `reg`, and the packages made after it.
    const withheld = (url: string, body: Json): Json | null => {
      const since = Number(new URL(url).searchParams.get("since") ?? "0");
      if (/\/registry\?/.test(url)) return { ...body, entries: body.entries.slice(0, Math.max(0, 3 - since)) };
      if (/\/keys\?/.test(url)) return { ...body, key_packages: body.key_packages.slice(0, epochs + 1) };
      return null;
    };
    const early = session(setup, r.baseUrl, tampering({ rewrite: withheld }));
    await early.pinRelay();
    const espace = early.space(fromHex(setup.space));
    await espace.refreshKeys();
    assert.equal(early.registry().seq, 2);
    assert.equal(await code(espace.pull()), "registry_withheld");

    // 5. Key packages: another package for an epoch the device holds, and a held epoch no longer served.
    const laptop = DeviceKeys.fromSeeds(fromHex(setup.laptop_sign_seed), fromHex(setup.laptop_kx_seed));
    let mode: "fork" | "hide" | "none" = "none";
    const keysTamper = session(setup, r.baseUrl, tampering({
      rewrite: (url, body) => {
        if (!/\/keys\?/.test(url) || mode === "none") return null;
        const pkgs = body.key_packages as string[];
        if (mode === "hide") return { ...body, key_packages: pkgs.slice(0, -1) };
        const reg = keysTamper.registry();
        const first = kspace.packages[0]!;
        // A correctly signed package of epoch 1 (by the laptop) that is not the one stored.
        const other = buildKeyPackage({ creator: laptop, registry: reg, space: fromHex(setup.space), epoch: 1n,
          prev: first.hash, epochKey: randomBytes(32), tsMs: Date.now(), previousKeys: [] });
        return { ...body, key_packages: [pkgs[0], b64(other), ...pkgs.slice(2)] };
      } }));
    await keysTamper.pinRelay();
    const kspace = keysTamper.space(fromHex(setup.space));
    await kspace.refreshKeys();
    mode = "fork";
    assert.equal(await code(kspace.refreshKeys()), "key_package_fork");
    mode = "hide";
    assert.equal(await code(kspace.refreshKeys()), "proof_invalid");
  });
