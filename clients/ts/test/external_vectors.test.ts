/**
 * External vectors (../shared/vectors) through the TypeScript wrappers, with the
 * same expectations as tests/vectors_ext/ on the Python side:
 *
 * * Wycheproof Ed25519 (151 cases: 88 accepted, 63 refused), XChaCha20-Poly1305
 *   (315 cases, 246 valid) and X25519 (518 cases, 31 all-zero shared secrets);
 * * all 914 CCTV Ed25519 edge cases decided by the one policy of
 *   docs/protocol.md §4.4 (exactly the flag-free vector is accepted; the only
 *   flag an accepted signature may carry is `low_order_component_R`), and
 *   every low-order or non-canonical key refused at registration;
 * * every transparency-dev/merkle RFC 9162 probe (inclusion, consistency,
 *   subtree inclusion and consistency), including the four valid probes whose
 *   12-byte "root" a length-checking verifier refuses (pinned by name).
 *
 * A missing folder skips, or fails under SDDSF_REQUIRE_VECTORS=1.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { before, describe, test } from "node:test";

import { fromHex, utf8 } from "../src/bytes.js";
import { aeadDecrypt, aeadEncrypt, Ed25519PublicKey, ready, validateX25519Public, x25519 } from "../src/crypto.js";
import { DecryptError, KeyValidationError, ProofError, SignatureError } from "../src/errors.js";
import { verifyConsistency, verifyInclusion, verifySubtreeConsistency, verifySubtreeInclusion } from "../src/merkle.js";
import { jsonFiles, loadJson, requireVectors, sharedVectorsDir } from "../testkit/kit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

before(ready);

function strictVerify(pk: Uint8Array, msg: Uint8Array, sig: Uint8Array): boolean {
  try {
    Ed25519PublicKey.fromBytes(pk).verify(msg, sig);
    return true;
  } catch (e) {
    if (e instanceof KeyValidationError || e instanceof SignatureError) return false;
    throw e;
  }
}

function throwsAs(cls: new (...a: never[]) => Error, fn: () => unknown): boolean {
  try {
    fn();
  } catch (e) {
    if (e instanceof cls) return true;
    throw e;
  }
  return false;
}

function wycheproof(dir: string, name: string): [Json, Json][] {
  const data = loadJson(join(dir, name));
  return data.testGroups.flatMap((g: Json) => g.tests.map((t: Json) => [g, t]));
}

describe("Wycheproof", () => {
  test("Ed25519: 151 cases, 88 accepted and 63 refused, matching their labels", (t) => {
    const dir = requireVectors(t, "wycheproof");
    if (dir === null) return;
    const cases = wycheproof(dir, "ed25519_test.json");
    assert.equal(cases.length, 151);
    const outcomes = new Map<string, number>();
    for (const [g, c] of cases) {
      const ok = strictVerify(fromHex(g.publicKey.pk), fromHex(c.msg), fromHex(c.sig));
      assert.equal(ok, c.result === "valid", `tcId ${c.tcId} ${c.comment}`);
      const k = `${c.result}/${ok}`;
      outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(outcomes), { "valid/true": 88, "invalid/false": 63 });
  });

  test("XChaCha20-Poly1305: 315 cases, 246 valid encrypt and decrypt, the others refused", (t) => {
    const dir = requireVectors(t, "wycheproof");
    if (dir === null) return;
    const cases = wycheproof(dir, "xchacha20_poly1305_test.json");
    assert.equal(cases.length, 315);
    let valid = 0;
    for (const [, c] of cases) {
      const [key, iv, aad, msg, ct, tag] = ["key", "iv", "aad", "msg", "ct", "tag"].map((k) => fromHex(c[k]));
      const sealed = new Uint8Array([...ct!, ...tag!]);
      if (c.result === "valid") {
        assert.deepEqual(aeadEncrypt(key!, iv!, msg!, aad!), sealed, `tcId ${c.tcId}`);
        assert.deepEqual(aeadDecrypt(key!, iv!, sealed, aad!), msg, `tcId ${c.tcId}`);
        valid++;
      } else {
        assert.ok(throwsAs(DecryptError, () => aeadDecrypt(key!, iv!, sealed, aad!)), `tcId ${c.tcId} not refused`);
      }
    }
    assert.equal(valid, 246);
  });

  test("X25519: 518 cases; an all-zero shared secret is refused; non-canonical keys refused as keys", (t) => {
    const dir = requireVectors(t, "wycheproof");
    if (dir === null) return;
    const cases = wycheproof(dir, "x25519_test.json");
    assert.equal(cases.length, 518);
    let refused = 0;
    for (const [, c] of cases) {
      const flags = new Set<string>(c.flags);
      const priv = fromHex(c.private);
      const pub = fromHex(c.public);
      if (flags.has("ZeroSharedSecret")) {
        assert.ok(throwsAs(KeyValidationError, () => x25519(priv, pub)), `tcId ${c.tcId}`);
        assert.ok(throwsAs(KeyValidationError, () => validateX25519Public(pub)), `tcId ${c.tcId}`);
        refused++;
        continue;
      }
      assert.ok(c.result === "valid" || c.result === "acceptable");
      assert.deepEqual(x25519(priv, pub), fromHex(c.shared), `tcId ${c.tcId}`);
      if (flags.has("NonCanonicalPublic")) {
        assert.ok(throwsAs(KeyValidationError, () => validateX25519Public(pub)), `tcId ${c.tcId}`);
      }
    }
    assert.equal(refused, 31);
  });
});

describe("CCTV Ed25519", () => {
  const expected = (flags: Set<string>): boolean => [...flags].every((f) => f === "low_order_component_R");

  test("all 914 vectors decided by the one policy; exactly the flag-free vector is accepted", (t) => {
    const dir = requireVectors(t, "cctv");
    if (dir === null) return;
    const vectors: Json[] = loadJson(join(dir, "ed25519vectors.json"));
    assert.equal(vectors.length, 914);
    const accepted: number[] = [];
    for (const v of vectors) {
      const flags = new Set<string>(v.flags ?? []);
      const got = strictVerify(fromHex(v.key), utf8(v.msg), fromHex(v.sig));
      assert.equal(got, expected(flags), `vector ${v.number} flags=${[...flags].sort()}`);
      if (got) accepted.push(v.number);
    }
    assert.equal(accepted.length, 1);
    assert.ok(!vectors[accepted[0]!].flags || vectors[accepted[0]!].flags.length === 0);
  });

  test("registration refuses every low-order or non-canonical key", (t) => {
    const dir = requireVectors(t, "cctv");
    if (dir === null) return;
    const vectors: Json[] = loadJson(join(dir, "ed25519vectors.json"));
    let checked = 0;
    for (const v of vectors) {
      const flags = new Set<string>(v.flags ?? []);
      if (["low_order_A", "non_canonical_A", "low_order_component_A"].some((f) => flags.has(f))) {
        assert.ok(throwsAs(KeyValidationError, () => Ed25519PublicKey.fromBytes(fromHex(v.key))), `vector ${v.number}`);
        checked++;
      }
    }
    assert.ok(checked > 0);
  });
});

// ------------------------------------------------------------- RFC 9162 probes

const BASE = "rfc9162-merkle";
const STRICTER_THAN_GO = new Set([
  `${BASE}/consistency/additional/sizes-are-equal-one-and-proof-is-empty.json`,
  `${BASE}/subtreeconsistency/additional/sizes-are-equal-one-and-proof-is-empty.json`,
  `${BASE}/subtreeconsistency/additional/subtree-is-empty-sizes-are-equal-one-subtree-root-valid-tree-root-random-proof-is-empty.json`,
  `${BASE}/subtreeconsistency/additional/subtree-is-empty-sizes-are-equal-zero-subtree-root-valid-tree-root-random-proof-is-empty.json`,
]);

/** Standard base64 (the probes' encoding) to bytes. */
function std64(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, "base64"));
}

function flip(h: Uint8Array): Uint8Array {
  const out = new Uint8Array(h);
  out[0] = out[0]! ^ 1;
  return out;
}

type Kind = "inclusion" | "consistency" | "subtreeinclusion" | "subtreeconsistency";
const proofOf = (p: Json): Uint8Array[] => (p.proof ?? []).map(std64);
const RUN: Record<Kind, (p: Json) => void> = {
  inclusion: (p) => verifyInclusion(std64(p.leafHash), p.leafIdx, p.treeSize, proofOf(p), std64(p.root)),
  consistency: (p) => verifyConsistency(p.size1, p.size2, std64(p.root1), std64(p.root2), proofOf(p)),
  subtreeinclusion: (p) => verifySubtreeInclusion(std64(p.leafHash), p.leafIdx, p.start, p.end, proofOf(p), std64(p.root)),
  subtreeconsistency: (p) => verifySubtreeConsistency(p.start, p.end, p.size, std64(p.root1), std64(p.root2), proofOf(p)),
};

function checkedFields(kind: Kind, p: Json): string[] {
  if (kind === "inclusion" || kind === "subtreeinclusion") return ["leafHash", "root"];
  if (kind === "subtreeconsistency" && p.start === p.end) return ["root1"];
  return ["root1", "root2"];
}

function proofError(fn: () => void): ProofError | null {
  try {
    fn();
  } catch (e) {
    if (e instanceof ProofError) return e;
    throw e;
  }
  return null;
}

describe("RFC 9162 Merkle probes (transparency-dev/merkle)", () => {
  const base = sharedVectorsDir();
  const counts: Record<Kind, number> = { inclusion: 98, consistency: 98, subtreeinclusion: 204, subtreeconsistency: 118 };
  for (const kind of Object.keys(counts) as Kind[]) {
    test(`${kind}: every probe (${counts[kind]} files)`, (t) => {
      const dir = requireVectors(t, `${BASE}/${kind}`);
      if (dir === null || base === null) return;
      const files = jsonFiles(dir, base);
      assert.equal(files.length, counts[kind], "a silently shrunk (or grown) folder is noticed");
      for (const rel of files) {
        const probe: Json = loadJson(join(base, rel));
        const run = RUN[kind];
        if (STRICTER_THAN_GO.has(rel)) {
          assert.equal(probe.wantErr, false, "pinned probe changed: review STRICTER_THAN_GO");
          const e = proofError(() => run(probe));
          assert.ok(e !== null && /expected a 32-byte SHA-256 hash/.test(e.message), rel);
          continue;
        }
        if (probe.wantErr) {
          const e = proofError(() => run(probe));
          assert.ok(e !== null && e.code === "proof_invalid", `${rel} was not refused`);
          continue;
        }
        run(probe);
        for (const field of checkedFields(kind, probe)) {
          const tampered = { ...probe, [field]: Buffer.from(flip(std64(probe[field]))).toString("base64") };
          assert.ok(proofError(() => run(tampered)) !== null, `${rel} with ${field} flipped was accepted`);
        }
      }
    });
  }
  test("the pinned stricter-than-Go probes are present and still have a short root", (t) => {
    const dir = requireVectors(t, BASE);
    if (dir === null || base === null) return;
    for (const rel of STRICTER_THAN_GO) {
      const probe: Json = loadJson(join(base, rel));
      assert.equal(probe.wantErr, false);
      assert.ok(std64(probe.root1).length !== 32 || std64(probe.root2).length !== 32, rel);
    }
  });
});

