/**
 * Differential conformance with the Python core: py_corpus.py mutates the
 * project's vectors (byte-level, and structurally with re-signing), builds
 * random runs of approval entries on governed accounts (§9.8), and records
 * the Python verdict on each; the TypeScript library must reach the same one
 * (the same error code, or the same result when accepted), and the canonical
 * decoder must accept exactly the same byte strings and re-encode them to the
 * same bytes.
 *
 * SDDSF_DIFF_SEED and SDDSF_DIFF_CASES change the corpus (defaults: seed 1,
 * 120 mutations per input). Needs the Python environment: skips when absent,
 * fails under SDDSF_REQUIRE_INTEROP=1.
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";

import { fromHex, toHex } from "../../src/bytes.js";
import { decode, encode } from "../../src/cbor.js";
import { Ed25519PublicKey, ready } from "../../src/crypto.js";
import { SddsfError } from "../../src/errors.js";
import { AccountKeys, AccountPublic } from "../../src/identity.js";
import { openEpochKey, unwrapPreviousKeys, verifyKeyPackage } from "../../src/keypackage.js";
import { assemble } from "../../src/payload.js";
import { verifyRegistry } from "../../src/registry.js";
import { MemoryChainView, verifyOp } from "../../src/rules.js";
import { verifyAttestation, verifySnapshot } from "../../src/snapshot.js";
import { verifyTreeHead } from "../../src/treehead.js";
import { loadJson, OWN_VECTORS, PACKAGE_ROOT, REPO_ROOT } from "../../testkit/kit.js";
import { DEFAULT_PROTOCOL_LIMITS } from "../../src/limits.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

const PYTHON = join(REPO_ROOT, ".venv", "bin", "python");
const CORPUS = join(PACKAGE_ROOT, "testkit", "py_corpus.py");

before(ready);

function verdict(fn: () => string): [string | null, string | null] {
  try {
    return [null, fn()];
  } catch (e) {
    if (e instanceof SddsfError) return [e.code, null];
    throw e;
  }
}

const json = (v: unknown): string => JSON.stringify(v);

function runners(): Record<string, (input: Json) => string> {
  const env = loadJson(join(OWN_VECTORS, "envelope.json"));
  const ctx = env.context;
  const account = AccountKeys.fromSecret(fromHex(ctx.account_secret));
  const reg = verifyRegistry(ctx.registry.map(fromHex), account.publicKeys);
  const envCases = new Map<string, string[]>(env.valid.map((c: Json) => [c.name, c.preceding]));
  const pkgs = loadJson(join(OWN_VECTORS, "key_package.json"));
  const pkgCases = new Map<string, string | null>(pkgs.valid.map((c: Json) => [c.name, c.previous]));
  const regVectors = loadJson(join(OWN_VECTORS, "registry.json"));
  const regCases = new Map<string, string[]>(regVectors.valid.map((c: Json) => [c.name, c.entries]));
  const snap = loadJson(join(OWN_VECTORS, "snapshot.json"));
  const epochKeys = new Map(Object.entries(snap.context.epoch_keys as Record<string, string>).map(([e, k]) => [BigInt(e), fromHex(k)]));
  const th = loadJson(join(OWN_VECTORS, "tree_head.json"));
  const relayKey = Ed25519PublicKey.fromBytes(fromHex(th.context.relay_public_key));
  const space = fromHex(ctx.space);
  const chunked = loadJson(join(OWN_VECTORS, "snapshot_chunked.json")).context;
  const chunkedReg = verifyRegistry(chunked.registry.map(fromHex), AccountKeys.fromSecret(fromHex(chunked.account_secret)).publicKeys);
  const chunkedSpace = fromHex(chunked.space);
  const chunkedKeys = new Map(Object.entries(chunked.epoch_keys as Record<string, string>).map(([e, k]) => [BigInt(e), fromHex(k)]));
  const att = loadJson(join(OWN_VECTORS, "snapshot_attestation.json")).context;
  const attReg = verifyRegistry(att.registry.map(fromHex), AccountKeys.fromSecret(fromHex(att.account_secret)).publicKeys);
  const attSpace = fromHex(att.space);
  const payloadDoc = fromHex(loadJson(join(OWN_VECTORS, "payload.json")).context.doc);
  const caseName = (name: string, sep: RegExp): string => name.replace(sep, "");
  const devices = (entries: Uint8Array[], pinned: AccountPublic = account.publicKeys): string => {
    const state = verifyRegistry(entries, pinned);
    const pairs = [...state.devices.values()].map((r) => [r.name, r.status])
      .sort((a, b) => (a[0]! < b[0]! ? -1 : a[0]! > b[0]! ? 1 : a[1]! < b[1]! ? -1 : a[1]! > b[1]! ? 1 : 0));
    return `${toHex(state.head)}/${json(pairs)}`;
  };
  return {
    cbor: (c) => toHex(encode(decode(fromHex(c.input)))),
    envelope: (c) => {
      const preceding = envCases.get(caseName(c.name, / (bytes|struct) #\d+$/))!;
      const chains = new MemoryChainView();
      const opts = { space, registry: reg, chains, nowMs: ctx.now_ms,
        epochs: { current: BigInt(ctx.epoch.current), startedMs: ctx.epoch.started_ms,
          packageSeqs: (ctx.epoch.package_seqs as number[]).map(BigInt) },
        settings: { maxSkewMs: ctx.rules.max_skew_ms, epochGraceMs: ctx.rules.epoch_grace_ms, limits: DEFAULT_PROTOCOL_LIMITS } };
      for (const p of preceding) chains.record(verifyOp(fromHex(p), opts).envelope);
      const v = verifyOp(fromHex(c.input), opts);
      return `${v.outcome}/${toHex(v.envelope.opId)}`;
    },
    registry: (c) => {
      const m = /^(.*) entry (\d+) (bytes|struct) #\d+$/.exec(c.name)!;
      const entries = regCases.get(m[1]!)!.map(fromHex);
      entries[Number(m[2])] = fromHex(c.input);
      return devices(entries);
    },
    "registry-chain": (c) => devices((c.input as string[]).map(fromHex),
      c.pinned ? AccountPublic.fromKeys(fromHex(c.pinned[0]), fromHex(c.pinned[1])) : account.publicKeys),
    key_package: (c) => {
      const previous = pkgCases.get(caseName(c.name, / (bytes|struct) #\d+$/));
      const prev = previous ? verifyKeyPackage(fromHex(previous), reg, space, null) : null;
      const p = verifyKeyPackage(fromHex(c.input), reg, space, prev);
      const key = openEpochKey(p, account.accountId, account.recovery);
      const earlier = [...unwrapPreviousKeys(p, key)].sort(([a], [b]) => (a < b ? -1 : 1)).map(([e, k]) => [Number(e), toHex(k)]);
      return `${toHex(p.hash)}/${toHex(key)}/${json(earlier)}`;
    },
    snapshot: (c) => {
      const s = verifySnapshot(fromHex(c.input), reg, space, epochKeys);
      return `${s.size}/${toHex(s.root)}/${json([...s.docs.keys()].sort())}`;
    },
    chunked: (c) => {
      const s = verifySnapshot(fromHex(c.input), chunkedReg, chunkedSpace, chunkedKeys, (c.chunks as string[]).map(fromHex));
      return `${s.size}/${toHex(s.id)}/${json([...s.docs.keys()].sort())}`;
    },
    attestation: (c) => {
      const a = verifyAttestation(fromHex(c.input), attReg, attSpace);
      return `${toHex(a.attester)}/${a.verdict}/${toHex(a.snapshot)}/${a.size}/${a.ts}`;
    },
    payload: (c) => json(assemble((c.input as [number, string][]).map(([s, p]) => [BigInt(s), fromHex(p)] as const), payloadDoc)
      .map((e) => [e.name, e.updates.map(toHex)])),
    tree_head: (c) => {
      const h = verifyTreeHead(fromHex(c.input), relayKey, fromHex(th.context.log));
      return `${h.size}/${toHex(h.root)}/${h.ts}`;
    },
  };
}

test("the TypeScript library reaches the Python core's verdict on every mutated input", { timeout: 300_000 }, (t) => {
  if (!existsSync(PYTHON)) {
    const reason = `the Python environment (${PYTHON}) is missing; create it with the README's set-up command`;
    if (process.env.SDDSF_REQUIRE_INTEROP === "1") throw new Error(`${reason} -- SDDSF_REQUIRE_INTEROP=1 makes this a failure`);
    t.skip(reason);
    return;
  }
  const seed = process.env.SDDSF_DIFF_SEED ?? "1";
  const n = process.env.SDDSF_DIFF_CASES ?? "120";
  const r = spawnSync(PYTHON, [CORPUS, seed, n], { encoding: "utf8", maxBuffer: 512 << 20, timeout: 240_000,
    env: { ...process.env, PYTHONPATH: join(REPO_ROOT, "src") } });
  assert.equal(r.status, 0, `py_corpus.py failed:\n${r.stderr}`);
  const cases: Json[] = JSON.parse(r.stdout).cases;
  const run = runners();
  const mismatches: string[] = [];
  const codes = new Map<string, number>();
  for (const c of cases) {
    const [code, result] = verdict(() => run[c.kind]!(c));
    codes.set(`${c.kind}:${c.code}`, (codes.get(`${c.kind}:${c.code}`) ?? 0) + 1);
    if (code !== c.code || (c.code === null && result !== c.result)) {
      mismatches.push(`${c.kind} '${c.name}': python ${c.code ?? c.result}, typescript ${code ?? result} (input ${
        typeof c.input === "string" ? c.input.slice(0, 80) : "chain"})`);
    }
  }
  assert.deepEqual(mismatches.slice(0, 20), [], `${mismatches.length} of ${cases.length} cases differ`);
  // The corpus reaches well past decoding: accepted inputs and semantic refusals.
  for (const k of ["envelope:null", "cbor:null", "envelope:sig_invalid", "registry:sig_invalid", "snapshot:decrypt_failed",
    "registry-chain:registry_invalid", "registry-chain:not_authorized", "key_package:null", "chunked:null",
    "chunked:proof_invalid", "chunked:sig_invalid", "attestation:null", "attestation:sig_invalid", "payload:null",
    "payload:malformed"]) {
    assert.ok((codes.get(k) ?? 0) > 0, `the corpus has no ${k} case`);
  }
  t.diagnostic(`${cases.length} cases, seed ${seed}: ${json(Object.fromEntries([...codes].sort()))}`);
});
