/**
 * The project's own conformance vectors (tests/vectors/*.json), read as data
 * and run through the TypeScript library exactly as tests/unit/test_own_vectors.py
 * runs them through the Python core: valid cases verify (and give the stated
 * intermediate values), invalid cases are refused with the stated error code.
 *
 * Every file in the folder must have a runner here: a new vector file (for
 * instance of a new format version) fails this suite until the TypeScript
 * library speaks it.
 */

import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";

import { fromHex, toHex, utf8 } from "../src/bytes.js";
import { decode } from "../src/cbor.js";
import { aeadDecrypt, Ed25519PublicKey, hkdfSha256, ready, type X25519KeyPair } from "../src/crypto.js";
import { decodeEnvelope, deriveDocKey, openOp } from "../src/envelope.js";
import { AccountKeys, DeviceKeys } from "../src/identity.js";
import { decodeKeyPackage, openEpochKey, openKeyHistory, unwrapPreviousKeys, verifyKeyPackage, verifyKeyPackageV3,
  type KeyPackage } from "../src/keypackage.js";
import { SNAPSHOT_AD, SNAPSHOT_KEY, labelled } from "../src/labels.js";
import { DEFAULT_PROTOCOL_LIMITS } from "../src/limits.js";
import { leafHash, MerkleTree } from "../src/merkle.js";
import { foldMembership, MembershipState } from "../src/membership.js";
import { verifyRegistry, type RegistryState } from "../src/registry.js";
import { MemoryChainView, verifyOp, type Outcome } from "../src/rules.js";
import { assemble, partsDigest, splitEdit } from "../src/payload.js";
import { chunkId, decodeAttestation, decodeSnapshot, snapshotId, verifyAttestation, verifySnapshot,
  type Snapshot } from "../src/snapshot.js";
import { checkProgress, verifyTreeHead } from "../src/treehead.js";
import { codeOf, loadJson, OWN_VECTORS } from "../testkit/kit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

const RUNNERS = new Set(["envelope.json", "registry.json", "key_package.json", "tree_head.json", "snapshot.json",
  "payload.json", "snapshot_chunked.json", "snapshot_attestation.json", "membership.json", "key_package_v3.json"]);
/** Cases per file, as tests/unit/test_own_vectors.py::test_vector_counts (and test_keypackage_v3_vectors.py) pin them. */
const COUNTS: Record<string, number> = { "envelope.json": 22, "registry.json": 13, "key_package.json": 9,
  "tree_head.json": 4, "snapshot.json": 24, "payload.json": 18, "snapshot_chunked.json": 13, "snapshot_attestation.json": 9,
  "membership.json": 29, "key_package_v3.json": 26 };
/**
 * Vector files of protocols this library does not speak, each with the reason.
 * presence.json: presence records (protocol.md 23.5) exist only for peer-to-peer
 * sync over libp2p, which a browser device does not run; it never seals, fetches
 * or opens one. A browser peer would need a runner here first.
 */
const NOT_SPOKEN: Record<string, string> = {
  "presence.json": "presence records serve peer-to-peer sync, which the browser does not run",
};
const load = (name: string): Json => loadJson(join(OWN_VECTORS, name));

function registryOf(ctx: Json): RegistryState {
  const account = AccountKeys.fromSecret(fromHex(ctx.account_secret));
  assert.equal(toHex(account.signing.publicKey.raw), ctx.account_public_key);
  return verifyRegistry(ctx.registry.map(fromHex), account.publicKeys);
}

before(ready);

test("every vector file has a runner", () => {
  const files = readdirSync(OWN_VECTORS).filter((f) => f.endsWith(".json")).sort();
  assert.ok(files.length > 0, "no vector files found");
  const unknown = files.filter((f) => !RUNNERS.has(f) && !(f in NOT_SPOKEN));
  assert.deepEqual(unknown, [], `vector files without a TypeScript runner: ${unknown.join(", ")}`);
  assert.deepEqual(files, [...RUNNERS, ...Object.keys(NOT_SPOKEN)].sort());
  for (const f of files.filter((name) => RUNNERS.has(name))) {
    const d = load(f);
    assert.equal(d.valid.length + d.invalid.length, COUNTS[f], `${f}: every case is run`);
  }
});

describe("envelope.json", () => {
  const data = load("envelope.json");
  const ctx = data.context;
  const run = (preceding: string[], envelope: string): Outcome => {
    const reg = registryOf(ctx);
    const chains = new MemoryChainView();
    const opts = { space: fromHex(ctx.space), registry: reg, chains, nowMs: ctx.now_ms,
      epochs: { current: BigInt(ctx.epoch.current), startedMs: ctx.epoch.started_ms,
        packageSeqs: (ctx.epoch.package_seqs as number[]).map(BigInt) },
      settings: { maxSkewMs: ctx.rules.max_skew_ms, epochGraceMs: ctx.rules.epoch_grace_ms,
        limits: DEFAULT_PROTOCOL_LIMITS } };
    for (const p of preceding) chains.record(verifyOp(fromHex(p), opts).envelope);
    return verifyOp(fromHex(envelope), opts).outcome;
  };
  for (const c of data.valid) {
    test(`valid: ${c.name}`, () => {
      assert.equal(run(c.preceding, c.envelope), c.outcome);
      const env = decodeEnvelope(fromHex(c.envelope));
      assert.equal(toHex(env.opId), c.op_id);
      assert.equal(toHex(openOp(env, fromHex(ctx.epoch_key))), c.plaintext);
      const h = env.header;
      assert.equal(toHex(deriveDocKey(fromHex(ctx.epoch_key), h.space, h.doc, h.epoch)), c.doc_key);
    });
  }
  for (const c of data.invalid) {
    test(`invalid (${c.code}): ${c.name}`, () => {
      assert.equal(codeOf(() => run(c.preceding, c.envelope)), c.code);
    });
  }
});

describe("registry.json", () => {
  const data = load("registry.json");
  const account = (): AccountKeys => AccountKeys.fromSecret(fromHex(data.context.account_secret));
  for (const c of data.valid) {
    test(`valid: ${c.name}`, () => {
      const state = verifyRegistry(c.entries.map(fromHex), account().publicKeys);
      assert.equal(toHex(state.head), c.head);
      const devices = Object.fromEntries([...state.devices.values()].map((r) => [r.name, r.status]));
      assert.deepEqual(devices, c.devices);
    });
  }
  for (const c of data.invalid) {
    test(`invalid (${c.code}): ${c.name}`, () => {
      assert.equal(codeOf(() => verifyRegistry(c.entries.map(fromHex), account().publicKeys)), c.code);
    });
  }
});

describe("key_package.json", () => {
  const data = load("key_package.json");
  const ctx = data.context;
  const verify = (c: Json): KeyPackage => {
    const reg = registryOf(ctx);
    const space = fromHex(ctx.space);
    const previous = c.previous ? verifyKeyPackage(fromHex(c.previous), reg, space, null) : null;
    return verifyKeyPackage(fromHex(c.package), reg, space, previous);
  };
  for (const c of data.valid) {
    test(`valid: ${c.name}`, () => {
      const pkg = verify(c);
      assert.equal(toHex(pkg.hash), c.hash);
      const account = AccountKeys.fromSecret(fromHex(ctx.account_secret));
      const key = openEpochKey(pkg, account.accountId, account.recovery);
      assert.equal(toHex(key), c.epoch_key);
      assert.equal(pkg.keyCommit === null ? null : toHex(pkg.keyCommit), c.key_commit);
      const previous = Object.fromEntries([...unwrapPreviousKeys(pkg, key)].map(([e, k]) => [String(e), toHex(k)]));
      assert.deepEqual(previous, c.previous_keys);
    });
  }
  for (const c of data.invalid) {
    test(`invalid (${c.code}): ${c.name}`, () => {
      assert.equal(codeOf(() => verify(c)), c.code);
    });
  }
});

describe("tree_head.json", () => {
  const data = load("tree_head.json");
  const log = fromHex(data.context.log);
  const key = (): Ed25519PublicKey => Ed25519PublicKey.fromBytes(fromHex(data.context.relay_public_key));
  for (const c of data.valid) {
    test(`valid: ${c.name}`, () => {
      const th = verifyTreeHead(fromHex(c.tree_head), key(), log);
      assert.equal(th.size, BigInt(c.size));
      assert.equal(toHex(th.root), c.root);
      const leaves = (data.context.leaves as string[]).slice(0, c.size).map((l) => leafHash(fromHex(l)));
      assert.equal(toHex(new MerkleTree(leaves).root()), c.root);
    });
  }
  for (const c of data.invalid) {
    test(`invalid (${c.code}): ${c.name}`, () => {
      assert.equal(codeOf(() => verifyTreeHead(fromHex(c.tree_head), key(), log)), c.code);
    });
  }
  for (const c of data.progress) {
    test(`progress (${c.code ?? "ok"}): ${c.name}`, () => {
      const old = verifyTreeHead(fromHex(c.old), key(), log);
      const next = verifyTreeHead(fromHex(c.new), key(), log);
      const proof = (c.proof as string[]).map(fromHex);
      if (c.code === null) checkProgress(old, next, proof);
      else assert.equal(codeOf(() => checkProgress(old, next, proof)), c.code);
    });
  }
});

describe("snapshot.json", () => {
  const data = load("snapshot.json");
  const ctx = data.context;
  const epochKeys = (): Map<bigint, Uint8Array> =>
    new Map(Object.entries(ctx.epoch_keys as Record<string, string>).map(([e, k]) => [BigInt(e), fromHex(k)]));
  const verify = (raw: string): Snapshot => verifySnapshot(fromHex(raw), registryOf(ctx), fromHex(ctx.space), epochKeys());
  test("the invalid cases cover every rejection", () => {
    assert.deepEqual(new Set(data.invalid.map((c: Json) => c.code)), new Set(["sig_invalid", "decrypt_failed",
      "proof_invalid", "wrong_context", "revoked", "unknown_device", "unknown_epoch", "unsupported_version", "malformed"]));
  });
  for (const c of data.valid) {
    test(`valid: ${c.name}`, () => {
      const snap = verify(c.snapshot);
      assert.deepEqual([toHex(snap.space), toHex(snap.author), snap.epoch, snap.size, toHex(snap.root), snap.ts],
        [ctx.space, c.author, BigInt(c.epoch), BigInt(c.size), c.root, BigInt(c.ts)]);
      assert.deepEqual(snap.frontier.map(toHex), c.frontier);
      assert.deepEqual(Object.fromEntries([...snap.docs].map(([n, d]) => [n, toHex(d)])), c.docs);
      const chains = [...snap.chains].sort(([a], [b]) => (a < b ? -1 : 1)).map(([a, h]) =>
        [a, Number(h.seq), toHex(h.opId), h.deps.items().map(([i, n]) => [toHex(i), Number(n)])]);
      assert.deepEqual(chains, c.chains);
      const claimed = decodeSnapshot(snap.raw);
      assert.deepEqual([toHex(claimed.space), toHex(claimed.author), claimed.size], [ctx.space, c.author, BigInt(c.size)]);
    });
    test(`valid matches its log: ${c.name}`, () => {
      // The frontier and root are those of the first `size` leaves; the chains
      // are what replaying those leaves through the rules (history mode) gives.
      const entries = (ctx.leaves as string[]).slice(0, c.size).map(fromHex);
      const tree = new MerkleTree(entries.map(leafHash));
      assert.equal(toHex(tree.root()), c.root);
      assert.deepEqual(tree.frontier().toHashes().map(toHex), c.frontier);
      const chains = new MemoryChainView();
      const reg = registryOf(ctx);
      for (const e of entries) {
        chains.record(verifyOp(e, { space: fromHex(ctx.space), registry: reg, chains, nowMs: null,
          epochs: { current: BigInt(ctx.epoch.current), startedMs: 0,
            packageSeqs: (ctx.epoch.package_seqs as number[]).map(BigInt) } }).envelope);
      }
      const snap = verify(c.snapshot);
      assert.deepEqual([...chains.heads.keys()].sort(), [...snap.chains.keys()].sort());
      for (const [a, h] of chains.heads) {
        const s = snap.chains.get(a)!;
        assert.deepEqual([h.seq, toHex(h.opId), h.deps.equals(s.deps)], [s.seq, toHex(s.opId), true]);
      }
    });
    test(`valid intermediate values: ${c.name}`, () => {
      const space = fromHex(ctx.space);
      const epoch = BigInt(c.epoch);
      const key = hkdfSha256(fromHex(ctx.epoch_keys[String(c.epoch)]), utf8(SNAPSHOT_KEY), labelled(SNAPSHOT_KEY, space, epoch));
      assert.equal(toHex(key), c.snapshot_key);
      const outer = decode(fromHex(c.snapshot)) as [number, Uint8Array, Uint8Array];
      const body = decode(outer[1]) as Map<string, Uint8Array>;
      const header = fromHex(c.header);
      const decodedHeader = decode(header) as Map<string, unknown>;
      assert.deepEqual([...decodedHeader.keys()].sort(), [...body.keys()].filter((k) => k !== "ct").sort());
      const plaintext = aeadDecrypt(key, body.get("nonce")!, body.get("ct")!, labelled(SNAPSHOT_AD, header));
      assert.equal(toHex(plaintext), c.plaintext);
    });
  }
  for (const c of data.invalid) {
    test(`invalid (${c.code}): ${c.name}`, () => {
      assert.equal(codeOf(() => verify(c.snapshot)), c.code);
    });
  }
});

describe("payload.json", () => {
  const data = load("payload.json");
  const run = (c: Json) => assemble((c.ops as Json[]).map((op) => [BigInt(op.seq), fromHex(op.payload)] as const),
    fromHex(data.context.doc));
  for (const c of data.valid) {
    test(`valid: ${c.name}`, () => {
      const edits = run(c);
      assert.deepEqual(edits.map((e) => ({ name: e.name, updates: e.updates.map(toHex) })), c.edits);
      if ("whole" in c) { // the parts are the whole edit's bytes, cut in order
        assert.equal(toHex(partsDigest(fromHex(c.whole))), c.digest);
        assert.deepEqual(splitEdit(edits[0]!.name, edits[0]!.updates, { maxPayload: c.max_payload }).map(toHex),
          (c.ops as Json[]).map((op) => op.payload));
      }
    });
  }
  for (const c of data.invalid) {
    test(`invalid (${c.code}): ${c.name}`, () => {
      assert.equal(codeOf(() => run(c)), c.code);
    });
  }
});

describe("snapshot_chunked.json", () => {
  const data = load("snapshot_chunked.json");
  const ctx = data.context;
  const epochKeys = (): Map<bigint, Uint8Array> =>
    new Map(Object.entries(ctx.epoch_keys as Record<string, string>).map(([e, k]) => [BigInt(e), fromHex(k)]));
  const verify = (c: Json): Snapshot => verifySnapshot(fromHex(c.manifest), registryOf(ctx), fromHex(ctx.space), epochKeys(),
    (c.chunks as string[]).map(fromHex));
  for (const c of data.valid) {
    test(`valid: ${c.name}`, () => {
      const snap = verify(c);
      assert.deepEqual([toHex(snap.author), snap.epoch, snap.size, snap.version], [c.author, BigInt(c.epoch), BigInt(c.size), 2]);
      assert.deepEqual(Object.fromEntries([...snap.docs].map(([n, d]) => [n, toHex(d)])), c.docs);
      const manifest = fromHex(c.manifest);
      assert.equal(toHex(snapshotId(manifest)), c.snapshot_id);
      assert.equal(toHex(snap.id), c.snapshot_id);
      assert.deepEqual((c.chunks as string[]).map((x) => toHex(chunkId(fromHex(x)))), c.chunk_ids);
      assert.equal(decodeSnapshot(manifest).size, BigInt(c.size));
    });
    test(`valid intermediate values: ${c.name}`, () => {
      // Each chunk opens with the snapshot key, its nonce and AD (§18.3); the plaintexts concatenate to the payload.
      const key = fromHex(c.snapshot_key);
      const parts = (c.chunks as string[]).map((x, i) => toHex(aeadDecrypt(key, fromHex(c.chunk_nonces[i]), fromHex(x),
        fromHex(c.chunk_ads[i]))));
      assert.equal(parts.join(""), c.plaintext);
    });
  }
  for (const c of data.invalid) {
    test(`invalid (${c.code}): ${c.name}`, () => {
      assert.equal(codeOf(() => verify(c)), c.code);
    });
  }
});

describe("snapshot_attestation.json", () => {
  const data = load("snapshot_attestation.json");
  const ctx = data.context;
  for (const c of data.valid) {
    test(`valid: ${c.name}`, () => {
      const raw = fromHex(c.attestation);
      const att = verifyAttestation(raw, registryOf(ctx), fromHex(ctx.space));
      assert.deepEqual([toHex(att.attester), att.verdict, toHex(att.snapshot), att.size],
        [c.attester, c.verdict, c.snapshot, BigInt(c.size)]);
      assert.deepEqual(decodeAttestation(raw), att);
    });
  }
  for (const c of data.invalid) {
    test(`invalid (${c.code}): ${c.name}`, () => {
      assert.equal(codeOf(() => verifyAttestation(fromHex(c.attestation), registryOf(ctx), fromHex(ctx.space))), c.code);
    });
  }
});

describe("membership.json", () => {
  const data = load("membership.json");
  const ctx = data.context;
  const space = fromHex(ctx.space);
  // Every account's registry, verified from the key its secret derives; and names by account id.
  const world = (): { regs: Map<string, RegistryState>; names: Map<string, string> } => {
    const owner = AccountKeys.fromSecret(fromHex(ctx.account_secret));
    const regs = new Map([[toHex(owner.accountId), registryOf(ctx)]]);
    const names = new Map([[toHex(owner.accountId), "alice"]]);
    for (const [name, m] of Object.entries<Json>(ctx.members)) {
      const account = AccountKeys.fromSecret(fromHex(m.account_secret));
      assert.equal(toHex(account.accountId), m.account_id);
      regs.set(m.account_id, verifyRegistry(m.registry.map(fromHex), account.publicKeys));
      names.set(m.account_id, name);
    }
    return { regs, names };
  };
  for (const c of data.valid) {
    test(`valid: ${c.name}`, () => {
      const { regs, names } = world();
      const result = foldMembership(space, c.entries.map(fromHex), (a) => regs.get(toHex(a)));
      const members = Object.fromEntries([...result.state.members].map(([a, m]) => [names.get(a), m.role]));
      assert.deepEqual(members, c.members);
      assert.equal(toHex(result.state.head), c.head);
      assert.deepEqual(result.refused.map(([i, e]) => [i, e.code]), c.refused);
    });
  }
  for (const c of data.invalid) {
    test(`invalid (${c.code}): ${c.name}`, () => {
      const { regs } = world();
      const registry = (a: Uint8Array): RegistryState | undefined => regs.get(toHex(a));
      let state = new MembershipState(space);
      for (const e of c.preceding) state = state.apply(fromHex(e), registry);
      assert.equal(codeOf(() => state.apply(fromHex(c.entry), registry)), c.code);
    });
  }
});

describe("key_package_v3.json", () => {
  // Alice owns the space (her registry judges version 2 packages); the
  // membership log makes Bob and then Carol members; each case's chain is the
  // first `previous` packages of the context's `chain`.
  const data = load("key_package_v3.json");
  const ctx = data.context;
  const space = fromHex(ctx.space);
  const world = (): { regs: Map<string, RegistryState>; sets: Map<string, Set<string>> } => {
    const alice = AccountKeys.fromSecret(fromHex(ctx.account_secret));
    const regs = new Map([[toHex(alice.accountId), registryOf(ctx)]]);
    for (const m of Object.values<Json>(ctx.members)) {
      const account = AccountKeys.fromSecret(fromHex(m.account_secret));
      regs.set(m.account_id, verifyRegistry(m.registry.map(fromHex), account.publicKeys));
    }
    const sets = new Map<string, Set<string>>();
    let state = new MembershipState(space);
    for (const e of ctx.membership) {
      state = state.apply(fromHex(e), (a) => regs.get(toHex(a)));
      sets.set(toHex(state.head), new Set(state.members.keys()));
    }
    return { regs, sets };
  };
  const verify = (raw: Uint8Array, previous: KeyPackage | null, verifier: string): KeyPackage => {
    const { regs, sets } = world();
    if (verifier === "v2") return verifyKeyPackage(raw, registryOf(ctx), space, previous);
    return verifyKeyPackageV3(raw, space, previous, regs, (h) => sets.get(toHex(h)));
  };
  const byVersion = (raw: Uint8Array): string => (decodeKeyPackage(raw).version === 3 ? "v3" : "v2");
  const chainBefore = (count: number): KeyPackage[] => {
    const out: KeyPackage[] = [];
    for (const p of ctx.chain.slice(0, count)) out.push(verify(fromHex(p), out.at(-1) ?? null, byVersion(fromHex(p))));
    return out;
  };
  const opener = (name: string): [Uint8Array, X25519KeyPair] => {
    if (name === "alice/recovery") {
      const alice = AccountKeys.fromSecret(fromHex(ctx.account_secret));
      return [alice.accountId, alice.recovery];
    }
    const [owner, device] = name.split("/") as [string, string];
    const seeds = owner === "alice" ? ctx.devices[device] : ctx.members[owner].device;
    const keys = DeviceKeys.fromSeeds(fromHex(seeds.signing_seed), fromHex(seeds.kx_seed));
    return [keys.deviceId, keys.kx];
  };
  for (const c of data.valid) {
    test(`valid: ${c.name}`, () => {
      const chain = chainBefore(c.previous);
      const raw = fromHex(c.package);
      const pkg = verify(raw, chain.at(-1) ?? null, byVersion(raw));
      assert.deepEqual({ version: pkg.version, epoch: Number(pkg.epoch), hash: toHex(pkg.hash), creator: toHex(pkg.creator),
        creator_account: pkg.creatorAccount && toHex(pkg.creatorAccount),
        members: pkg.members && pkg.members.map(([a, seq]) => [toHex(a), Number(seq)]),
        membership: pkg.membership && toHex(pkg.membership), recipients: [...pkg.recipients.keys()] },
      { version: c.version, epoch: c.epoch, hash: c.hash, creator: c.creator, creator_account: c.creator_account,
        members: c.members, membership: c.membership, recipients: c.recipients });
      assert.ok(c.opened_by.length > 0);
      for (const name of c.opened_by) {
        const [rid, pair] = opener(name);
        assert.equal(toHex(openEpochKey(pkg, rid, pair)), c.epoch_key, name);
      }
      for (const [name, keys] of Object.entries<Json>(c.history ?? {})) {
        const [rid, pair] = opener(name);
        const got = Object.fromEntries([...openKeyHistory([...chain, pkg], rid, pair)].map(([e, k]) => [String(e), toHex(k)]));
        assert.deepEqual(got, keys, name);
      }
    });
  }
  for (const c of data.invalid) {
    test(`invalid (${c.code}): ${c.name}`, () => {
      const chain = chainBefore(c.previous);
      assert.equal(codeOf(() => verify(fromHex(c.package), chain.at(-1) ?? null, c.verifier)), c.code);
    });
  }
});
