/**
 * The TypeScript SPAKE2 (`src/spake2.ts`) against python-spake2, the library
 * the Python client pairs with: with the same entropy both give the same
 * messages and keys byte for byte, and each side completes an exchange with
 * the other (TypeScript as joiner with Python as initiator, and the reverse),
 * for random binary passwords; a wrong password gives another key, and
 * malformed, same-side, reflected and low-order messages are refused.
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { before, test } from "node:test";

import { concat, fromHex, toHex, utf8 } from "../../src/bytes.js";
import { randomBytes, ready } from "../../src/crypto.js";
import { M, N, Spake2 } from "../../src/spake2.js";
import { PACKAGE_ROOT, REPO_ROOT } from "../../testkit/kit.js";
import { PYTHON, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

const ID_A = utf8("sddsf/v2/pairing/initiator");
const ID_B = utf8("sddsf/v2/pairing/joiner");

before(ready);

function python(cases: Json[]): Json[] {
  const r = spawnSync(PYTHON, [join(PACKAGE_ROOT, "testkit", "py_spake2.py")], { input: JSON.stringify(cases),
    encoding: "utf8", timeout: 120_000, env: { ...process.env, PYTHONPATH: join(REPO_ROOT, "src") } });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

const fixed = (e: Uint8Array) => (n: number): Uint8Array => e.slice(0, n);

test("python-spake2 and the TypeScript SPAKE2 agree byte for byte and pair with each other", { timeout: 180_000 }, (t) => {
  if (!pythonAvailable(t)) return;
  const rounds = Array.from({ length: 12 }, (_, i) => ({
    password: i === 0 ? new Uint8Array(0) : randomBytes(1 + (i * 7) % 60),
    ea: randomBytes(64), eb: randomBytes(64),
  }));
  // TypeScript B and A first: their messages go to Python as the peer's.
  const tsB = rounds.map((r) => new Spake2("B", r.password, ID_A, ID_B, fixed(r.eb)));
  const tsA = rounds.map((r) => new Spake2("A", r.password, ID_A, ID_B, fixed(r.ea)));
  const out = python(rounds.flatMap((r, i) => [
    { side: "A", password: toHex(r.password), entropy: toHex(r.ea), peer: toHex(tsB[i]!.message) },
    { side: "B", password: toHex(r.password), entropy: toHex(r.eb), peer: toHex(tsA[i]!.message) },
  ]));
  rounds.forEach((_, i) => {
    const pyA = out[2 * i]!;
    const pyB = out[2 * i + 1]!;
    // Same entropy: the same messages.
    assert.equal(toHex(tsA[i]!.message), pyA.message);
    assert.equal(toHex(tsB[i]!.message), pyB.message);
    // Python A with TypeScript B, and TypeScript A with Python B: one key.
    const keyB = toHex(tsB[i]!.finish(fromHex(pyA.message)));
    const keyA = toHex(tsA[i]!.finish(fromHex(pyB.message)));
    assert.equal(keyB, pyA.key);
    assert.equal(keyA, pyB.key);
    assert.equal(keyA, keyB);
  });
});

test("a wrong password gives another key; bad messages are refused", { timeout: 60_000 }, (t) => {
  if (!pythonAvailable(t)) return;
  const a = new Spake2("A", utf8("right"), ID_A, ID_B);
  const b = new Spake2("B", utf8("wrong"), ID_A, ID_B);
  const [py] = python([{ side: "A", password: toHex(utf8("right")), entropy: toHex(randomBytes(64)), peer: toHex(b.message) }]);
  assert.notEqual(toHex(b.finish(a.message)), toHex(a.finish(b.message)));
  assert.notEqual(py.key, null);
  const refused = (msg: Uint8Array): string => {
    try {
      new Spake2("B", utf8("pw"), ID_A, ID_B).finish(msg);
    } catch (e) {
      return (e as { code?: string }).code ?? "?";
    }
    return "accepted";
  };
  const own = new Spake2("B", utf8("pw"), ID_A, ID_B);
  assert.equal(refused(own.message), "bad_key", "same side");
  assert.equal(refused(concat(utf8("A"), own.message.slice(1, 20))), "bad_key", "short");
  assert.equal(refused(concat(utf8("A"), new Uint8Array(32))), "bad_key", "small order");
  assert.equal(refused(concat(utf8("A"), fromHex("ec" + "ff".repeat(30) + "7f"))), "bad_key", "non-canonical");
  const reflect = new Spake2("B", utf8("pw"), ID_A, ID_B);
  assert.throws(() => reflect.finish(concat(utf8("A"), reflect.message.slice(1))), (e: Json) => e.code === "bad_key");
  // Python refuses what the TypeScript side refuses.
  const bad = python([{ side: "B", password: "00", entropy: toHex(randomBytes(64)), peer: "41" + "00".repeat(32) }]);
  assert.deepEqual(typeof bad[0].key, "object");
  assert.equal(M.length + N.length, 64);
});
