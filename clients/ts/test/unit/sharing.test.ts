/**
 * Shared spaces on the reading side (src/sharing.ts, src/members.ts and the
 * pull of src/sync.ts; protocol.md §10.8, §21.7).
 *
 * The world is the one of tests/vectors/key_package_v3.json (written by the
 * Python core): Alice owns the space; its membership log makes Bob a writer
 * and Carol a reader; its key chain is a version 2 package for Alice alone,
 * then version 3 packages for Alice and Bob, and for all three. The reading
 * device is Bob's laptop.
 *
 * * {@link leafKind}: envelopes, entries, anything else;
 * * {@link LogJudge}, each rule: the owner's registry before `create`, the
 *   author's member registry after it and its positions in the packages;
 *   refused: a device of no member, of two members, of a reader, of a removed
 *   member, a missing member registry, an op written after registry entries
 *   the relay withholds; a refused entry (a writer's add, a create by another
 *   account than the owner) changes nothing and is recorded;
 * * version 3 packages beyond the vectors: the decoder's bounds and
 *   `registrySeqFor`;
 * * a pull through a relay stand-in (signed tree heads, real leaves): the
 *   log read and applied, its membership kept across a reload; an op of a
 *   reader, of a non-member or at an offset the relay listed otherwise refuses
 *   the pull, and nothing is adopted; a listing that puts an entry where the
 *   verified log holds an op is refused; a refused entry is reported; joining
 *   checks the owner the relay names.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { before, describe, test } from "node:test";

import * as Y from "yjs";

import { concat, fromHex, toHex, zeros } from "../../src/bytes.js";
import { encode, type Encodable } from "../../src/cbor.js";
import { HLCTimestamp } from "../../src/clock.js";
import { Ed25519SigningKey, ready } from "../../src/crypto.js";
import { docIdFor } from "../../src/docs.js";
import { GENESIS_PREV, sealOp, type OpEnvelope } from "../../src/envelope.js";
import { Code, SddsfError } from "../../src/errors.js";
import { AccountKeys, AccountPublic, DeviceKeys } from "../../src/identity.js";
import { decodeKeyPackage, registrySeqFor, type KeyPackage } from "../../src/keypackage.js";
import { labelled, MEMBERSHIP_SIG } from "../../src/labels.js";
import { parseAccountCode, fingerprintBytes } from "../../src/members.js";
import { decodeMembershipEntry, type MembershipState } from "../../src/membership.js";
import { leafHash, MerkleTree } from "../../src/merkle.js";
import { encodeEdit } from "../../src/payload.js";
import { addDevice, genesis, verifyRegistry, type RegistryState } from "../../src/registry.js";
import type { MembershipLog, PulledOp, RelayClient, SpaceInfo } from "../../src/relay.js";
import { MemoryChainView, verifyOp } from "../../src/rules.js";
import { Fold, holdersOf, leafKind, LogJudge, SpaceMembers } from "../../src/sharing.js";
import { DeviceSession } from "../../src/sync.js";
import { signTreeHead } from "../../src/treehead.js";
import { VersionVector } from "../../src/vv.js";
import { codeOf, loadJson, OWN_VECTORS } from "../../testkit/kit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

const V = loadJson(join(OWN_VECTORS, "key_package_v3.json"));
const CTX = V.context;
const SPACE = fromHex(CTX.space);
const T0 = 1_767_225_600_000;

interface World {
  alice: AccountKeys; bob: AccountKeys; carol: AccountKeys; dave: AccountKeys;
  laptop: DeviceKeys; phone: DeviceKeys; bobLaptop: DeviceKeys; carolLaptop: DeviceKeys; daveLaptop: DeviceKeys;
  twin: DeviceKeys;
  entries: Map<string, Uint8Array[]>;
  regs: Map<string, RegistryState>;
  /** create, add Bob (writer), add Carol (reader). */
  log: Uint8Array[];
  chain: Uint8Array[];
  keys: Uint8Array[];
}

function device(seeds: Json): DeviceKeys {
  return DeviceKeys.fromSeeds(fromHex(seeds.signing_seed), fromHex(seeds.kx_seed));
}

let W: World;

function world(): World {
  const alice = AccountKeys.fromSecret(fromHex(CTX.account_secret));
  const bob = AccountKeys.fromSecret(fromHex(CTX.members.bob.account_secret));
  const carol = AccountKeys.fromSecret(fromHex(CTX.members.carol.account_secret));
  const dave = AccountKeys.fromSecret(new Uint8Array(32).fill(0xda));
  const daveLaptop = DeviceKeys.fromSeeds(new Uint8Array(32).fill(0xd1), new Uint8Array(32).fill(0xd2));
  const twin = DeviceKeys.fromSeeds(new Uint8Array(32).fill(0x71), new Uint8Array(32).fill(0x72));
  const entries = new Map<string, Uint8Array[]>([
    [toHex(alice.accountId), CTX.registry.map(fromHex)],
    [toHex(bob.accountId), CTX.members.bob.registry.map(fromHex)],
    [toHex(carol.accountId), CTX.members.carol.registry.map(fromHex)],
    [toHex(dave.accountId), [genesis(dave, daveLaptop, "laptop", T0 - 40_000)]],
  ]);
  const regs = new Map<string, RegistryState>();
  for (const [a, account] of [[alice.accountId, alice], [bob.accountId, bob], [carol.accountId, carol],
    [dave.accountId, dave]] as const) {
    regs.set(toHex(a), verifyRegistry(entries.get(toHex(a))!, account.publicKeys));
  }
  const keys = [0, 1, 2].map((e) => fromHex(V.valid.find((c: Json) => c.epoch === e).epoch_key));
  return { alice, bob, carol, dave, laptop: device(CTX.devices.laptop), phone: device(CTX.devices.phone),
    bobLaptop: device(CTX.members.bob.device), carolLaptop: device(CTX.members.carol.device), daveLaptop, twin, entries,
    regs, log: CTX.membership.map(fromHex), chain: CTX.chain.map(fromHex), keys };
}

const hex = (a: { accountId: Uint8Array }): string => toHex(a.accountId);
const registryOf = (regs: Map<string, RegistryState>) => (a: Uint8Array): RegistryState | undefined => regs.get(toHex(a));

/** A membership entry built by hand (the Python core builds them; this client only reads them). */
function entry(type: string, state: MembershipState, signer: DeviceKeys, signerAccount: Uint8Array, regSeq: number,
  member: Uint8Array, extra: [string, Encodable][] = []): Uint8Array {
  const body = encode(new Map<string, Encodable>([["v", 1], ["space", SPACE], ["type", type],
    ["prev", type === "create" ? zeros(32) : state.head], ["member", member], ["signer", signerAccount],
    ["device", signer.deviceId], ["registry_seq", regSeq], ["ts", T0], ...extra]));
  return encode([1, body, signer.sign(labelled(MEMBERSHIP_SIG, body))]);
}

function addFields(account: AccountPublic, role: string): [string, Encodable][] {
  return [["account_key", account.signingKey.raw], ["recovery_key", account.recoveryKey], ["role", role]];
}

/** One author's ops, chained. */
class Author {
  seq = 0n;
  prev = GENESIS_PREV;
  constructor(readonly keys: DeviceKeys, readonly reg: bigint) {}

  op(epoch: number, text: string, opts: { reg?: bigint } = {}): OpEnvelope {
    const doc = new Y.Doc();
    doc.getText("t").insert(0, text);
    this.seq += 1n;
    const env = sealOp(this.keys, { space: SPACE, doc: docIdFor(SPACE, "notes"), author: this.keys.deviceId, seq: this.seq,
      prev: this.prev, deps: new VersionVector(), epoch: BigInt(epoch), ts: new HLCTimestamp(T0 + Number(this.seq), 0),
      seen: null, nonce: new Uint8Array(24).fill(Number(this.seq)), reg: opts.reg ?? this.reg },
    encodeEdit("notes", [Y.encodeStateAsUpdate(doc)]), W.keys[epoch]!);
    this.prev = env.opId;
    return env;
  }
}

function fold(entries: readonly Uint8Array[], regs = W.regs): Fold {
  return Fold.empty(SPACE).more(entries.map((e) => decodeMembershipEntry(e)), W.alice.accountId, registryOf(regs));
}

function judge(f: Fold, regs = W.regs, packages: KeyPackage[] = W.chain.map((p) => decodeKeyPackage(p))): LogJudge {
  return new LogJudge(f, { owner: W.alice.accountId, ownerState: W.regs.get(hex(W.alice))!, registryOf: registryOf(regs),
    currentEpoch: 2n, packages });
}

function codeOfAsync(p: Promise<unknown>): Promise<string> {
  return p.then(() => { throw new Error("expected an SddsfError, nothing was thrown"); },
    (e) => { if (e instanceof SddsfError) return e.code; throw e; });
}

before(async () => {
  await ready();
  W = world();
});

describe("leafKind", () => {
  test("an envelope is an op, a membership entry a member, anything else malformed", () => {
    const env = new Author(W.laptop, 3n).op(0, "x");
    assert.equal(env.raw[0], 0x84);
    assert.equal(leafKind(env.raw), "op");
    assert.equal(leafKind(W.log[0]!), "member");
    // A key package is also an array of three: the kind is only the first step, decoding refuses it.
    assert.equal(leafKind(W.chain[0]!), "member");
    assert.equal(codeOf(() => decodeMembershipEntry(W.chain[0]!)), Code.UNSUPPORTED_VERSION);
    for (const bad of [new Uint8Array(0), Uint8Array.of(0x80), Uint8Array.of(0x85), Uint8Array.of(0xa0)]) {
      assert.equal(codeOf(() => leafKind(bad)), Code.MALFORMED);
    }
  });
});

describe("LogJudge", () => {
  test("before create the owner's registry judges every op", () => {
    const j = judge(Fold.empty(SPACE));
    const alice = j.context(new Author(W.laptop, 3n).op(0, "a"));
    assert.equal(toHex(alice.registry.accountId), hex(W.alice));
    assert.deepEqual(alice.window.packageSeqs, [3n, 3n, 3n]);
    const bobOp = new Author(W.bobLaptop, 0n).op(0, "b");
    const c = j.context(bobOp);
    assert.equal(toHex(c.registry.accountId), hex(W.alice), "a member's device before create: the owner's rules");
    assert.equal(codeOf(() => verifyOp(bobOp, { space: SPACE, registry: c.registry, epochs: c.window,
      chains: new MemoryChainView(), nowMs: null })), Code.UNKNOWN_DEVICE);
  });

  test("after create an op is judged with its author's member registry and that account's package positions", () => {
    const j = judge(fold(W.log.slice(0, 2)));
    const c = j.context(new Author(W.bobLaptop, 0n).op(1, "b"));
    assert.equal(toHex(c.registry.accountId), hex(W.bob));
    assert.deepEqual(c.window.packageSeqs, [0n, 0n, 0n], "bob: not a holder of epoch 0, seq 0 in epochs 1 and 2");
    assert.equal(c.window.current, 2n);
    assert.deepEqual(j.context(new Author(W.phone, 3n).op(1, "a")).window.packageSeqs, [3n, 3n, 3n]);
    assert.equal(toHex(j.context(null).registry.accountId), hex(W.alice), "an op that does not decode: the owner's rules");
  });

  test("a device of no member is not authorized", () => {
    const j = judge(fold(W.log));
    assert.equal(codeOf(() => j.context(new Author(W.daveLaptop, 0n).op(2, "d"))), Code.NOT_AUTHORIZED);
  });

  test("a device two member accounts list has no single author", () => {
    const regs = new Map(W.regs);
    for (const [account, keys] of [[W.bob, W.bobLaptop], [W.carol, W.carolLaptop]] as const) {
      const state = regs.get(hex(account))!;
      regs.set(hex(account), state.apply(addDevice(state, keys, W.twin, "twin", T0 - 1_000)));
    }
    const j = judge(fold(W.log, regs), regs);
    assert.equal(codeOf(() => j.context(new Author(W.twin, 1n).op(2, "t"))), Code.NOT_AUTHORIZED);
    // With one of them only, the twin is that account's device.
    const one = new Map(regs).set(hex(W.carol), W.regs.get(hex(W.carol))!);
    assert.equal(toHex(judge(fold(W.log, one), one).context(new Author(W.twin, 1n).op(2, "t")).registry.accountId),
      hex(W.bob));
  });

  test("a reader may not write", () => {
    const j = judge(fold(W.log));
    assert.equal(codeOf(() => j.context(new Author(W.carolLaptop, 0n).op(2, "c"))), Code.NOT_AUTHORIZED);
  });

  test("a removed member may not write at positions after its removal", () => {
    const f = fold(W.log);
    const removal = entry("remove", f.state, W.laptop, W.alice.accountId, 3, W.bob.accountId);
    const j = judge(f);
    const bob = new Author(W.bobLaptop, 0n);
    assert.equal(toHex(j.context(bob.op(2, "before")).registry.accountId), hex(W.bob));
    j.entry(7, decodeMembershipEntry(removal));
    assert.deepEqual(j.refused, []);
    assert.equal(codeOf(() => j.context(bob.op(2, "after"))), Code.NOT_AUTHORIZED);
  });

  test("a member's registry not at hand: wrong_context unless another member lists the author", () => {
    const regs = new Map(W.regs);
    regs.delete(hex(W.carol));
    const j = judge(fold(W.log), regs);
    assert.equal(codeOf(() => j.context(new Author(W.daveLaptop, 0n).op(2, "d"))), Code.WRONG_CONTEXT);
    assert.equal(toHex(j.context(new Author(W.bobLaptop, 0n).op(2, "b")).registry.accountId), hex(W.bob));
  });

  test("an op written after registry entries the relay withholds", () => {
    const j = judge(fold(W.log));
    assert.equal(codeOf(() => j.context(new Author(W.bobLaptop, 0n).op(2, "b", { reg: 1n }))), Code.REGISTRY_WITHHELD);
    // Before create, the owner's registry is the one behind.
    assert.equal(codeOf(() => judge(Fold.empty(SPACE)).context(new Author(W.laptop, 3n).op(0, "a", { reg: 4n }))),
      Code.REGISTRY_WITHHELD);
  });

  test("a refused entry changes nothing, is recorded and kept with the log", () => {
    const f = fold(W.log.slice(0, 2));
    const j = judge(f);
    const byWriter = entry("add", f.state, W.bobLaptop, W.bob.accountId, 0, W.dave.accountId,
      addFields(W.dave.publicKeys, "reader"));
    j.entry(2, decodeMembershipEntry(byWriter));
    assert.deepEqual(j.refused.map((r) => [r.offset, r.error.code]), [[2, Code.NOT_AUTHORIZED]]);
    assert.equal(j.fold, f, "the fold stands");
    assert.deepEqual(j.entries.map(([o]) => o), [2]);
    // A create that names another account than the owner (checked before the membership rules).
    const empty = judge(Fold.empty(SPACE));
    empty.entry(0, decodeMembershipEntry(entry("create", f.state, W.bobLaptop, W.bob.accountId, 0, W.bob.accountId,
      addFields(W.bob.publicKeys, "admin"))));
    assert.equal(empty.refused[0]!.error.code, Code.NOT_AUTHORIZED);
    assert.equal(empty.fold.shared, false);
    empty.entry(1, decodeMembershipEntry(W.log[0]!));
    assert.equal(empty.fold.shared, true);
  });

  test("the fold remembers the member set after each entry (what version 3 packages name)", () => {
    const f = fold(W.log);
    const heads = W.chain.slice(1).map((p) => decodeKeyPackage(p).membership!);
    assert.deepEqual([...f.membersAt(heads[0]!)!].sort(), [hex(W.alice), hex(W.bob)].sort());
    assert.deepEqual([...f.membersAt(heads[1]!)!].sort(), [hex(W.alice), hex(W.bob), hex(W.carol)].sort());
    assert.equal(f.membersAt(zeros(32)), undefined);
    assert.equal(toHex(new SpaceMembers(f.state, W.regs).writer(W.bobLaptop.deviceId)[0]), hex(W.bob));
  });
});

describe("version 3 packages beyond the vectors", () => {
  const raw = (body: Map<string, Encodable>): Uint8Array => encode([3, encode(body), new Uint8Array(64)]);
  const body = (members: Encodable[], recipients: Encodable[] = []): Map<string, Encodable> => new Map<string, Encodable>([
    ["v", 3], ["space", SPACE], ["epoch", 0], ["prev", zeros(32)], ["creator", zeros(32)], ["ts", 0],
    ["recipients", recipients], ["key_commit", zeros(32)], ["prev_keys", null], ["creator_account", zeros(32)],
    ["members", members], ["membership", zeros(32)]]);

  test("at most 1,024 members and 2,048 recipients (too_large)", () => {
    const id = (i: number): Uint8Array => concat(new Uint8Array(28), Uint8Array.of(0, 0, i >> 8, i & 0xff));
    assert.equal(codeOf(() => decodeKeyPackage(raw(body(Array.from({ length: 1025 }, (_, i) => [id(i), 0]))))),
      Code.TOO_LARGE);
    assert.equal(decodeKeyPackage(raw(body(Array.from({ length: 1024 }, (_, i) => [id(i), 0])))).members!.length, 1024);
    const recipients = (n: number): Encodable[] => Array.from({ length: n }, (_, i) => [id(i), new Uint8Array(80)]);
    assert.equal(codeOf(() => decodeKeyPackage(raw(body([[id(0), 0]], recipients(2049))))), Code.TOO_LARGE);
    assert.equal(decodeKeyPackage(raw(body([[id(0), 0]], recipients(2048)))).recipients.size, 2048);
  });

  test("a member is [32-byte id, uint]", () => {
    assert.equal(codeOf(() => decodeKeyPackage(raw(body([[zeros(31), 0]])))), Code.MALFORMED);
    assert.equal(codeOf(() => decodeKeyPackage(raw(body([[zeros(32), -1]])))), Code.MALFORMED);
    assert.equal(codeOf(() => decodeKeyPackage(raw(body([[zeros(32), true]])))), Code.MALFORMED);
  });

  test("registrySeqFor: a member's stated position; versions 1 and 2 name one", () => {
    const [p0, , p2] = W.chain.map((p) => decodeKeyPackage(p)) as [KeyPackage, KeyPackage, KeyPackage];
    assert.equal(registrySeqFor(p2, W.alice.accountId), 3n);
    assert.equal(registrySeqFor(p2, W.carol.accountId), 0n);
    assert.equal(registrySeqFor(p2, W.dave.accountId), null);
    assert.equal(registrySeqFor(p0, W.dave.accountId), 3n);
    assert.equal(p2.registrySeq, 0n, "the creator's account (Bob) position");
    assert.deepEqual([...holdersOf(p0, W.alice.accountId)], [[hex(W.alice), 3n]]);
    assert.equal(holdersOf(p2, W.alice.accountId).size, 3);
  });
});

describe("account codes and fingerprints", () => {
  test("an account code round-trips the two keys; a damaged one is refused", () => {
    const a = W.bob.publicKeys;
    // As sddsf.client.sharing.account_code writes it: base32 of [signing key, recovery key], lower case, unpadded.
    const raw = encode([a.signingKey.raw, a.recoveryKey]);
    const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
    let bits = "";
    for (const b of raw) bits += b.toString(2).padStart(8, "0");
    let code = "";
    for (let i = 0; i < bits.length; i += 5) code += alphabet[parseInt(bits.slice(i, i + 5).padEnd(5, "0"), 2)];
    const got = parseAccountCode(`sddsf-account-${code}`);
    assert.equal(toHex(got.accountId), hex(W.bob));
    assert.equal(codeOf(() => parseAccountCode(`sddsf-account-${code.slice(0, -9)}`)), Code.USAGE);
    assert.equal(codeOf(() => parseAccountCode("bob")), Code.USAGE);
    assert.equal(toHex(fingerprintBytes(W.bob.publicKeys.fingerprint)!), hex(W.bob).slice(0, 40));
    assert.equal(fingerprintBytes("ABCD-EFGH"), null);
  });
});

// ------------------------------------------------------------ pulls

/** The relay's side of one space (signed heads, real leaves): what the device's pulls read. */
class StandIn {
  readonly key = Ed25519SigningKey.fromSeed(new Uint8Array(32).fill(0x5e));
  leaves: Uint8Array[] = [];
  packages: Uint8Array[] = [];
  registries: Map<string, Uint8Array[]>;
  owner = W.alice.accountId;
  /** Entries the membership endpoint lists instead of the log's (a lying relay). */
  listing: (readonly [number, Uint8Array])[] | null = null;

  constructor() {
    this.registries = new Map(W.entries);
  }

  client(): RelayClient {
    const head = (): Uint8Array => {
      const tree = new MerkleTree();
      for (const l of this.leaves) tree.append(leafHash(l));
      return signTreeHead(this.key, SPACE, this.leaves.length, tree.root(), T0);
    };
    const fake = {
      registry: async (a: Uint8Array, since = 0) => (this.registries.get(toHex(a)) ?? []).slice(since),
      keyPackages: async (_s: Uint8Array, since = 0) => this.packages.slice(since),
      pull: async (_s: Uint8Array, after = -1, limit = 500): Promise<[PulledOp[], Uint8Array]> =>
        [this.leaves.slice(after + 1, after + 1 + limit).map((l, i) => ({ offset: after + 1 + i, opId: zeros(32),
          leafHash: leafHash(l), envelope: l })), head()],
      membership: async (): Promise<MembershipLog> => ({
        entries: this.listing ?? this.leaves.map((l, i) => [i, l] as const).filter(([, l]) => leafKind(l) === "member"),
        members: new Map(), owner: this.owner, treeHead: head() }),
      listSpaces: async (): Promise<SpaceInfo[]> => [{ spaceId: SPACE, size: this.leaves.length, root: zeros(32),
        epoch: this.packages.length - 1, owner: this.owner }],
    };
    return fake as unknown as RelayClient;
  }

  /** Bob's laptop, joined to the space. */
  async bob(): Promise<DeviceSession> {
    const session = new DeviceSession(W.bobLaptop, W.bob.publicKeys, this.client(),
      { relayKey: this.key.publicKey.raw, useSnapshots: false });
    await session.refreshRegistry();
    await session.joinSpace(SPACE, W.alice.publicKeys);
    return session;
  }
}

/** Alice's op at epoch 0, the membership, Bob's op at epoch 1, Alice's at epoch 2. */
function honest(): StandIn {
  const r = new StandIn();
  const alice = new Author(W.laptop, 3n);
  r.leaves = [alice.op(0, "alice 0").raw, W.log[0]!, W.log[1]!, new Author(W.bobLaptop, 0n).op(1, "bob 1").raw, W.log[2]!,
    alice.op(2, "alice 2").raw];
  r.packages = [...W.chain];
  return r;
}

describe("pulling a shared space", () => {
  test("the log is verified, its ops applied, its membership folded and kept across a reload", async () => {
    const r = honest();
    const session = await r.bob();
    const space = session.space(SPACE);
    await space.refreshKeys();
    assert.equal(space.shared, true);
    const epochs = (m: Map<bigint, Uint8Array>): bigint[] => [...m.keys()].sort((a, b) => Number(a - b));
    assert.deepEqual(epochs(space.keys), [0n, 1n, 2n], "epoch 0's key from the wrap of epoch 1");
    const report = await space.pull();
    assert.deepEqual(report.skipped, []);
    assert.equal(report.size, 6n);
    assert.deepEqual(report.applied.map((a) => a.offset), [0, 3, 5]);
    assert.deepEqual([...space.membership().members].map(([a, m]) => [a, m.role]).sort(),
      [[hex(W.alice), "admin"], [hex(W.bob), "writer"], [hex(W.carol), "reader"]].sort());
    assert.equal(codeOf(() => space.seal("notes", [new Uint8Array(1)])), Code.USAGE, "read only here");
    assert.equal(await space.rotateIfDue(), false);

    // A reload: the pinned keys and registries, then the replica (membership and owner included).
    const again = new DeviceSession(W.bobLaptop, W.bob.publicKeys, r.client(), { relayKey: r.key.publicKey.raw,
      useSnapshots: false });
    again.restoreRegistry(session.entries());
    again.members.importState(session.members.exportState());
    const copy = again.space(SPACE);
    copy.importState(space.exportState());
    assert.equal(toHex(copy.ownerId()), hex(W.alice));
    assert.equal(copy.membership().applied.length, 3);
    assert.deepEqual(epochs(copy.keys), [0n, 1n, 2n]);
    // And it goes on: a new op of Alice's phone, pulled by the reloaded copy.
    r.leaves.push(new Author(W.phone, 3n).op(2, "phone").raw);
    await copy.refreshKeys();
    assert.deepEqual((await copy.pull()).applied.map((a) => a.offset), [6]);
  });

  test("a reader's op refuses the pull, and nothing is adopted", async () => {
    const r = honest();
    r.leaves.push(new Author(W.carolLaptop, 0n).op(2, "carol").raw);
    const space = (await r.bob()).space(SPACE);
    await space.refreshKeys();
    const err = await space.pull().then(() => null, (e: unknown) => e);
    assert.ok(err instanceof SddsfError && err.code === Code.PROOF_INVALID, String(err));
    assert.match(err.message, /offset 6.*fails the rules: \[not_authorized\]/);
    assert.equal(space.size, 0n);
    assert.equal(space.membership().applied.length, 3, "(read ahead for the packages, not stored)");
  });

  test("a non-member's op refuses the pull", async () => {
    const r = honest();
    r.leaves.push(new Author(W.daveLaptop, 0n).op(2, "dave").raw);
    const space = (await r.bob()).space(SPACE);
    await space.refreshKeys();
    assert.equal(await codeOfAsync(space.pull()), Code.PROOF_INVALID);
  });

  test("a refused entry is reported and the log still reads", async () => {
    const r = honest();
    const state = fold(W.log).state;
    r.leaves.push(entry("add", state, W.bobLaptop, W.bob.accountId, 0, W.dave.accountId,
      addFields(W.dave.publicKeys, "reader")));
    const space = (await r.bob()).space(SPACE);
    await space.refreshKeys();
    const report = await space.pull();
    assert.deepEqual(report.skipped.map((s) => [s.offset, s.code, toHex(s.author)]), [[6, Code.NOT_AUTHORIZED, hex(W.bob)]]);
    assert.equal(space.membership().members.size, 3);
  });

  test("the relay lists another entry than its log holds", async () => {
    const r = honest();
    const other = entry("add", fold(W.log.slice(0, 2)).state, W.laptop, W.alice.accountId, 3, W.dave.accountId,
      addFields(W.dave.publicKeys, "reader"));
    r.listing = [[1, W.log[0]!], [2, W.log[1]!], [4, other]];
    const space = (await r.bob()).space(SPACE);
    // Epoch 2's package names the head after Carol's add, which this listing never applies.
    assert.equal(await codeOfAsync(space.refreshKeys()), Code.WRONG_CONTEXT);
    r.packages = W.chain.slice(0, 2);
    await space.refreshKeys();
    const err = await space.pull().then(() => null, (e: unknown) => e);
    assert.ok(err instanceof SddsfError && err.code === Code.PROOF_INVALID && /listed another/.test(err.message), String(err));
  });

  test("the relay lists an entry where the verified log holds an op", async () => {
    const r = honest();
    const full = [...r.leaves];
    r.leaves = full.slice(0, 4); // up to Bob's op at offset 3
    r.packages = W.chain.slice(0, 2);
    const space = (await r.bob()).space(SPACE);
    await space.refreshKeys();
    assert.equal((await space.pull()).size, 4n);
    r.leaves = full;
    r.packages = [...W.chain];
    r.listing = [[1, W.log[0]!], [2, W.log[1]!], [3, W.log[2]!]];
    const err = await space.refreshKeys().then(() => null, (e: unknown) => e);
    assert.ok(err instanceof SddsfError && err.code === Code.PROOF_INVALID && /offset 3/.test(err.message), String(err));
    r.listing = null;
    await space.refreshKeys();
    assert.deepEqual((await space.pull()).applied.map((a) => a.offset), [5]);
  });

  test("another owner named by the relay, or a space not shared: no join", async () => {
    const r = honest();
    r.owner = W.carol.accountId;
    const session = new DeviceSession(W.bobLaptop, W.bob.publicKeys, r.client(), { relayKey: r.key.publicKey.raw });
    assert.equal(await codeOfAsync(session.joinSpace(SPACE, W.alice.publicKeys)), Code.PROOF_INVALID);
    assert.equal(await codeOfAsync(session.joinSpace(zeros(16), W.alice.publicKeys)), Code.NOT_FOUND);
    assert.equal(await codeOfAsync(session.joinSpace(SPACE, W.bob.publicKeys)), Code.USAGE);
    // The relay now names Alice; but the key shown is not the one pinned for her account before.
    r.owner = W.alice.accountId;
    const forged = AccountPublic.fromKeys(W.alice.publicKeys.signingKey.raw, W.dave.publicKeys.recoveryKey);
    assert.equal(toHex(forged.accountId), hex(W.alice));
    const err = await session.joinSpace(SPACE, forged).then(() => null, (e: unknown) => e);
    assert.ok(err instanceof SddsfError && /pinned to another key/.test(err.message), String(err));
    assert.equal(toHex((await session.joinSpace(SPACE, W.alice.publicKeys)).ownerId()), hex(W.alice));
    assert.equal(await codeOfAsync(session.joinSpace(SPACE, W.alice.publicKeys)), Code.USAGE, "held already");
  });
});
