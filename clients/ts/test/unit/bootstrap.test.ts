/**
 * The first-sync bundle's decoder (docs/protocol.md §17.9) against the Python
 * core: bundles the Python relay code signs (valid ones, bit flips, bodies
 * changed into other requests, shapes and versions; testkit/py_bootstrap.py)
 * get the same verdict here, the same error code or the same components. And
 * what {@link Prefetched} answers for the reads of a first sync.
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { before, test } from "node:test";

import { type Bootstrap, Prefetched, verifyBootstrap } from "../../src/bootstrap.js";
import { fromHex, toHex, utf8 } from "../../src/bytes.js";
import { Ed25519PublicKey, Ed25519SigningKey, ready } from "../../src/crypto.js";
import { NotFoundError } from "../../src/errors.js";
import { codeOf, PACKAGE_ROOT, REPO_ROOT } from "../../testkit/kit.js";
import { PYTHON, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

before(ready);

const REQUEST = { account: utf8("a".repeat(32)), device: utf8("d".repeat(32)), nonce: utf8("n".repeat(16)) };
const hex = (b: Uint8Array | null): string | null => (b === null ? null : toHex(b));

/** The components as py_bootstrap.py prints them. */
function digest(b: Bootstrap): Json {
  return { account: toHex(b.account), device: toHex(b.device), ts: Number(b.ts),
    registry: b.registry === null ? null : b.registry.map(toHex), policy: hex(b.policy),
    spaces: b.spaces.map((s) => ({ space: toHex(s.info.spaceId), size: s.info.size, root: toHex(s.info.root),
      epoch: s.info.epoch, head: toHex(s.head), keys: s.keys === null ? null : s.keys.map(toHex),
      snaps: s.snapshots.map((n) => [toHex(n.doc), n.coversOffset, hex(n.blob), hex(n.snapshotId), n.attestations.map(toHex)]),
      chunks: [...s.chunks].map(([c, v]) => [c, toHex(v)]).sort(), after: s.after,
      ops: s.ops.map((o) => [o.offset, toHex(o.opId), toHex(o.leafHash), hex(o.envelope)]) })) };
}

function corpus(): Json {
  const r = spawnSync(PYTHON, [join(PACKAGE_ROOT, "testkit", "py_bootstrap.py")], { encoding: "utf8",
    env: { ...process.env, PYTHONPATH: join(REPO_ROOT, "src") }, maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test("bundles signed by the Python relay code: the same verdict, code or components", (t) => {
  if (!pythonAvailable(t)) return;
  const { relay_key: relayKey, cases } = corpus();
  const key = Ed25519PublicKey.fromBytes(fromHex(relayKey));
  assert.ok(cases.length > 100);
  const codes = new Set<string>();
  for (const c of cases) {
    const run = (): Bootstrap => verifyBootstrap(fromHex(c.input), key, REQUEST);
    if (c.code === null) {
      assert.deepEqual(digest(run()), c.result, c.name);
    } else {
      assert.equal(codeOf(run), c.code, c.name);
      codes.add(c.code);
    }
  }
  assert.deepEqual([...codes].sort(), ["malformed", "too_large", "tree_head_invalid", "unsupported_version"]);
  // Signed by another key than the pinned one: refused like an altered bundle.
  const valid = fromHex(cases.find((c: Json) => c.name === "valid").input);
  const other = Ed25519SigningKey.fromSeed(new Uint8Array(32)).publicKey;
  assert.equal(codeOf(() => verifyBootstrap(valid, other, REQUEST)), "tree_head_invalid");
});

test("a bundle answers the first sync's reads with the endpoints' bytes, and only what it holds", (t) => {
  if (!pythonAvailable(t)) return;
  const { relay_key: relayKey, cases } = corpus();
  const raw = fromHex(cases.find((c: Json) => c.name === "valid").input);
  const pre = new Prefetched(verifyBootstrap(raw, Ed25519PublicKey.fromBytes(fromHex(relayKey)), REQUEST));
  const s = utf8("s".repeat(16));
  const bare = utf8("t".repeat(16));
  const text = (x: readonly Uint8Array[] | null): string[] | null => (x === null ? null : x.map((b) => new TextDecoder().decode(b)));
  assert.deepEqual(text(pre.registry(REQUEST.account, 0)), ["g", "e"]);
  assert.deepEqual(text(pre.registry(REQUEST.account, 1)), ["e"]);
  assert.equal(pre.registry(utf8("b".repeat(32)), 0), null, "another account's registry: ask the endpoint");
  assert.deepEqual(pre.listSpaces().map((x) => [toHex(x.spaceId), x.size, x.epoch]), [[toHex(s), 3, 1], [toHex(bare), 0, -1]]);
  assert.deepEqual(text(pre.keyPackages(s, 1)), ["kp1"]);
  assert.equal(pre.keyPackages(bare, 0), null, "packages left out: ask the endpoint");
  const [covers, blob] = pre.snapshot(s, new Uint8Array(16))!;
  assert.deepEqual([covers, text([blob])], [1, ["manifest"]]);
  const corroborated = new Uint8Array(16);
  corroborated[15] = 1;
  assert.throws(() => pre.snapshot(s, corroborated), NotFoundError, "none stored: 404, as the endpoint");
  assert.equal(pre.snapshot(bare, corroborated), null);
  assert.deepEqual(text(pre.attestations(s, new Uint8Array(16))![1]), ["att"]);
  assert.deepEqual(text([pre.chunk(s, utf8("c".repeat(32)))!]), ["chunk"]);
  assert.equal(pre.chunk(s, utf8("x".repeat(32))), null);
  // The tail after offset 1 holds offsets 2 and 3: pages after 1, 2 and 3 (the end) come from it.
  const page = (after: number, limit = 500): number[] | null => pre.pull(s, after, limit)?.[0].map((o) => o.offset) ?? null;
  assert.deepEqual([page(1), page(1, 1), page(2), page(3)], [[2, 3], [2], [3], []]);
  assert.equal(page(0), null, "before the tail: ask the endpoint");
  assert.equal(page(4), null, "beyond the tail: ask the endpoint");
  assert.equal(pre.pull(bare, -1, 500), null, "no tail bundled");
  assert.equal(toHex(pre.pull(s, 1, 500)![1]), toHex(utf8("head")), "the page's head is the bundle's");
});
