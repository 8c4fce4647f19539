/**
 * The hot helpers of a pull (hex, the relay's base64, the log's SHA-256) keep
 * their exact results: hex of every byte value; base64 round trips of every
 * length up to 3 × 256 and the strict refusals (another alphabet, characters
 * outside ASCII, whitespace, misplaced padding); SHA-256 equal to the FIPS
 * 180-4 vectors and to Node's, before libsodium is ready (pure JS) and after.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import { b64, fromHex, toHex, unb64, utf8 } from "../../src/bytes.js";
import { randomBytes, ready, sha256 } from "../../src/crypto.js";
import { codeOf } from "../../testkit/kit.js";

const ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/** Computed when this module loads, before libsodium is ready. */
const BEFORE_READY = [toHex(sha256(utf8("abc"))), toHex(sha256(new Uint8Array(0)))];

test("hex: every byte value, and back", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const hex = toHex(all);
  assert.equal(hex, Array.from(all, (b) => b.toString(16).padStart(2, "0")).join(""));
  assert.deepEqual(fromHex(hex), all);
  assert.equal(toHex(new Uint8Array(0)), "");
});

test("base64: round trips of every length, as Node encodes them", () => {
  for (let n = 0; n <= 768; n++) {
    const data = Uint8Array.from({ length: n }, (_, i) => (i * 151 + n) & 0xff);
    const text = b64(data);
    const plain = Buffer.from(data).toString("base64url");
    assert.equal(text, plain + "=".repeat((4 - (plain.length % 4)) % 4));
    assert.deepEqual(unb64(text), data);
  }
});

test("base64: the strict refusals", () => {
  for (const bad of ["-_8", "+/8=", "-_8==", " -_8=", "-_=8", "AAA\u00e9", "AA\ud83d\ude00", "AAA\u0000", "AA\nA", "====", "A==="]) {
    assert.equal(codeOf(() => unb64(bad)), "malformed", JSON.stringify(bad));
  }
  assert.equal(codeOf(() => unb64("AAAA", "nonce", 16)), "malformed");
  assert.deepEqual(unb64("-_8="), fromHex("fbff"));
});

test("sha256: the standard vectors and Node's digest, before and after libsodium is ready", async () => {
  assert.deepEqual(BEFORE_READY, [ABC, EMPTY]);
  await ready();
  assert.equal(toHex(sha256(utf8("abc"))), ABC);
  assert.equal(toHex(sha256(new Uint8Array(0))), EMPTY);
  for (const n of [1, 55, 56, 63, 64, 65, 1000, 100_000]) {
    const data = randomBytes(n);
    assert.equal(toHex(sha256(data)), createHash("sha256").update(data).digest("hex"));
  }
});
