/**
 * Interop property (fast-check, shrinking to a smallest failing case): for any
 * op inputs -- device seeds, every header field over its whole range (uint64
 * seq, epoch, reg and seen size; 48-bit wall clock; deps), the nonce, the
 * epoch key and the plaintext, all given as inputs -- the TypeScript library
 * and the Python core seal byte-identical envelopes, the Python core opens
 * (decodes, checks the signature, decrypts) what TypeScript sealed and reads
 * back the same fields and plaintext, and TypeScript opens what Python sealed.
 *
 * The Python side is one `testkit/py_seal.py` process answering a JSON line per
 * case. SDDSF_PROP_RUNS sets the number of cases (default 1000),
 * SDDSF_PROP_SEED the seed (default random; printed on failure by fast-check).
 */

import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";

import fc from "fast-check";

import { fromHex, toHex } from "../../src/bytes.js";
import { HLCTimestamp } from "../../src/clock.js";
import { ready } from "../../src/crypto.js";
import { decodeEnvelope, GENESIS_PREV, openOp, sealOp } from "../../src/envelope.js";
import { DeviceKeys } from "../../src/identity.js";
import { VersionVector } from "../../src/vv.js";
import { PACKAGE_ROOT, REPO_ROOT } from "../../testkit/kit.js";
import { PYTHON, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

let py: ChildProcessWithoutNullStreams | null = null;
/** Lines py_seal.py answered and nobody took yet, and takers waiting for a line. */
const lines: string[] = [];
const waiting: ((line: string) => void)[] = [];
let partial = "";

before(ready);
after(() => {
  if (py?.pid !== undefined && py.exitCode === null) process.kill(py.pid, "SIGTERM");
});

async function python(c: Json): Promise<Json> {
  py!.stdin.write(`${JSON.stringify(c)}\n`);
  const line = lines.length > 0 ? lines.shift()! : await new Promise<string>((r) => waiting.push(r));
  return JSON.parse(line);
}

const bytes = (n: number): fc.Arbitrary<string> => fc.uint8Array({ minLength: n, maxLength: n }).map(toHex);
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });

const cases = fc.record({
  sign_seed: bytes(32), kx_seed: bytes(32), space: bytes(16), doc: bytes(16),
  seq: fc.oneof(fc.constant(1n), fc.bigInt({ min: 2n, max: 2n ** 64n - 1n })), prev: bytes(32),
  deps: fc.uniqueArray(fc.tuple(bytes(32), fc.bigInt({ min: 1n, max: 2n ** 64n - 1n })), { maxLength: 6, selector: (d) => d[0] }),
  epoch: u64, ts: fc.tuple(fc.integer({ min: 0, max: 2 ** 48 - 1 }), fc.integer({ min: 0, max: 0xffff })),
  seen: fc.option(fc.tuple(fc.bigInt({ min: 1n, max: 2n ** 64n - 1n }), bytes(32)), { nil: null }),
  nonce: bytes(24), reg: u64, epoch_key: bytes(32),
  plaintext: fc.uint8Array({ maxLength: 3000 }).map(toHex),
}).filter((c) => c.sign_seed !== c.kx_seed) // the Python core refuses one seed for both keys
  .map((c) => (c.seq === 1n ? { ...c, prev: toHex(GENESIS_PREV) } : c)); // an author's first op has the zero prev

function seal(c: Json): ReturnType<typeof sealOp> {
  const keys = DeviceKeys.fromSeeds(fromHex(c.sign_seed), fromHex(c.kx_seed));
  return sealOp(keys, {
    space: fromHex(c.space), doc: fromHex(c.doc), author: keys.deviceId, seq: c.seq, prev: fromHex(c.prev),
    deps: new VersionVector(c.deps.map(([a, s]: [string, bigint]) => [fromHex(a), s] as const)), epoch: c.epoch,
    ts: new HLCTimestamp(c.ts[0], c.ts[1]), seen: c.seen === null ? null : { size: c.seen[0], root: fromHex(c.seen[1]) },
    nonce: fromHex(c.nonce), reg: c.reg,
  }, fromHex(c.plaintext), fromHex(c.epoch_key));
}

const wire = (c: Json): Json => JSON.parse(JSON.stringify(c, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));

test("ops sealed in TypeScript open in Python and back; the same inputs give the same bytes", { timeout: 600_000 }, async (t) => {
  if (!pythonAvailable(t)) return;
  await ready();
  py = spawn(PYTHON, [join(PACKAGE_ROOT, "testkit", "py_seal.py")], { env: { ...process.env, PYTHONPATH: join(REPO_ROOT, "src") } });
  py.stderr.on("data", (d: Buffer) => process.stderr.write(d));
  py.stdout.on("data", (d: Buffer) => {
    const parts = (partial + d.toString("utf8")).split("\n");
    partial = parts.pop()!;
    for (const line of parts) {
      const taker = waiting.shift();
      if (taker) taker(line);
      else lines.push(line);
    }
  });
  const runs = Number(process.env.SDDSF_PROP_RUNS ?? 1000);
  const seed = process.env.SDDSF_PROP_SEED === undefined ? undefined : Number(process.env.SDDSF_PROP_SEED);
  await fc.assert(fc.asyncProperty(cases, async (c) => {
    const mine = seal(c);
    const theirs = await python({ ...wire(c), ts_envelope: toHex(mine.raw) });
    assert.equal(theirs.crash, undefined, theirs.crash);
    // Byte-exact: the same envelope from the same inputs.
    assert.equal(theirs.envelope, toHex(mine.raw));
    // Python reads what TypeScript sealed.
    assert.deepEqual(theirs.read, {
      plaintext: c.plaintext, seq: String(c.seq), epoch: String(c.epoch), reg: String(c.reg), ts: c.ts,
      op_id: toHex(mine.opId), deps: c.deps.map(([a, s]: [string, bigint]) => [a, String(s)]).sort(),
    });
    // TypeScript reads what Python sealed (checked separately from the byte equality).
    const back = decodeEnvelope(fromHex(theirs.envelope));
    const keys = DeviceKeys.fromSeeds(fromHex(c.sign_seed), fromHex(c.kx_seed));
    back.verifySignature(keys.publicIdentity.signingKey);
    assert.equal(toHex(openOp(back, fromHex(c.epoch_key))), c.plaintext);
    assert.equal(back.header.seq, c.seq);
    assert.equal(back.header.epoch, c.epoch);
  }), { numRuns: runs, ...(seed === undefined ? {} : { seed }) });
  // And a tampered envelope is refused by both (the property is not vacuous).
  const c = fc.sample(cases, { numRuns: 1, seed: 7 })[0]!;
  const raw = seal(c).raw.slice();
  raw[raw.length - 70]! ^= 1; // inside the ciphertext or the signature
  const read = (await python({ ...wire(c), ts_envelope: toHex(raw) })).read;
  assert.ok(["sig_invalid", "decrypt_failed", "malformed"].includes(read.error), JSON.stringify(read));
});
