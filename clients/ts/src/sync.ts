/**
 * A device's verified view of its account and spaces, and sync that trusts no
 * relay (the device side of docs/protocol.md §9–§13, §17–§18; the same checks
 * as `sddsf.client.device.Device.sync`, in memory: persistence in IndexedDB is
 * the next milestone).
 *
 * Pulling a space checks, before anything is decrypted or applied:
 *
 * 1. the registry, verified from genesis against the pinned account key, and
 *    the space's key packages, verified as a chain;
 * 2. every tree head's signature under the pinned relay key;
 * 3. that offsets are contiguous and each envelope hashes to its leaf, that the
 *    log extends what this device already verified and reproduces the signed
 *    root (omitted, reordered, rewritten or rolled-back history is refused:
 *    `proof_invalid`, `log_rollback`), and that this device's acknowledged ops
 *    are still where the relay put them;
 * 4. every op with the shared rules in history mode (a revoked author's op
 *    beyond its cutoff is skipped and reported, as every device does);
 * 5. that the tree heads other devices report in their ops (`seen`) are
 *    prefixes of this device's log (`split_view`);
 * 6. that each payload names the op's document.
 *
 * Pushing checks each acknowledged op's inclusion proof against the signed head.
 */

import { bytesEqual, fromHex, toHex } from "./bytes.js";
import { HybridLogicalClock } from "./clock.js";
import { Ed25519PublicKey, randomBytes } from "./crypto.js";
import { decodePayload, docIdFor, encodePayload, type OpPayload } from "./docs.js";
import { decodeEnvelope, GENESIS_PREV, openOp, sealOp, type OpEnvelope, type TreeHeadRef } from "./envelope.js";
import { AuthorizationError, Code, ConfigError, ConflictError, NotFoundError, ProofError, SddsfError, UsageError } from "./errors.js";
import type { AccountPublic, DeviceKeys } from "./identity.js";
import { buildKeyPackage, needsRotation, openEpochKeys, verifyKeyPackage, type KeyPackage } from "./keypackage.js";
import { Frontier, leafHash, MerkleTree, verifyConsistency, verifyInclusion } from "./merkle.js";
import { verifyRegistry, type RegistryState } from "./registry.js";
import type { RelayClient } from "./relay.js";
import { MemoryChainView, verifyOp } from "./rules.js";
import { SPACE_SNAPSHOT_DOC, verifySnapshot, type Snapshot } from "./snapshot.js";
import { verifyTreeHead, type TreeHead } from "./treehead.js";
import { VersionVector } from "./vv.js";

const MAX_BATCH = 500;
const MAX_PAGES = 10_000;
/** Refusals of an own op whose edits are sealed again on top of the log. */
const RESEAL: ReadonlySet<string> = new Set([Code.CHAIN_FORK, Code.STALE_EPOCH, Code.CHAIN_GAP]);

/** An op of the verified log that was not applied (a revoked author beyond its cutoff). */
export interface SkippedOp {
  readonly offset: number;
  readonly author: Uint8Array;
  readonly seq: bigint;
  readonly code: string;
  readonly message: string;
}

/** A verified, decrypted op of another device (or of an older copy of this one). */
export interface AppliedOp {
  readonly offset: number;
  readonly envelope: OpEnvelope;
  readonly payload: OpPayload;
}

/** What one {@link SpaceReplica.pull} verified. */
export interface PullReport {
  /** Entries fetched and verified. */
  readonly pulled: number;
  /** Verified ops to apply, in log order (this device's own ops made here are left out). */
  readonly applied: readonly AppliedOp[];
  /** The snapshot the replica started from, if it did (apply its documents first). */
  readonly snapshot: Snapshot | null;
  readonly skipped: readonly SkippedOp[];
  /** The verified log size. */
  readonly size: bigint;
}

/** What one {@link SpaceReplica.push} did. */
export interface PushReport {
  readonly pushed: number;
  /** `[code, message]` of each refused op. */
  readonly rejected: readonly [string, string][];
  /** Payloads of refused ops to seal again (chain fork, stale epoch, chain gap). */
  readonly requeued: readonly OpPayload[];
}

/** Options of a {@link DeviceSession}. */
export interface DeviceSessionOptions {
  /** The relay's tree-head key if already pinned; else pinned on first contact. */
  readonly relayKey?: Uint8Array;
  readonly clock?: () => number;
  /** Start new spaces from the relay's snapshot (false: replay every op). */
  readonly useSnapshots?: boolean;
}

/** One device of an account talking to one relay, with its verified registry. */
export class DeviceSession {
  relayKey: Ed25519PublicKey | null;
  readonly clock: () => number;
  readonly hlc = new HybridLogicalClock();
  readonly useSnapshots: boolean;
  private registryState: RegistryState | null = null;
  private readonly spaces = new Map<string, SpaceReplica>();

  constructor(
    readonly keys: DeviceKeys,
    /** The pinned account keys (the trust anchor). */
    readonly account: AccountPublic,
    readonly relay: RelayClient,
    opts: DeviceSessionOptions = {},
  ) {
    this.relayKey = opts.relayKey ? Ed25519PublicKey.fromBytes(opts.relayKey) : null;
    this.clock = opts.clock ?? (() => Date.now());
    this.useSnapshots = opts.useSnapshots ?? true;
  }

  /** This device's id. */
  get deviceId(): Uint8Array {
    return this.keys.deviceId;
  }

  /**
   * Open a session (signed challenge) and pin the relay's tree-head key on first
   * contact; later, refuse another key.
   *
   * @throws ProofError `tree_head_invalid` when the relay's key changed.
   */
  async pinRelay(): Promise<Ed25519PublicKey> {
    const rid = await this.relay.openSession();
    if (this.relayKey === null) {
      this.relayKey = Ed25519PublicKey.fromBytes(rid);
    } else if (!bytesEqual(rid, this.relayKey.raw)) {
      this.relay.forgetSession();
      throw new ProofError("the relay's tree-head key changed since this device first connected; refusing to trust it",
        Code.TREE_HEAD_INVALID);
    }
    return this.relayKey;
  }

  /** The relay key, which must be pinned. */
  pinnedRelayKey(): Ed25519PublicKey {
    if (this.relayKey === null) throw new ConfigError("the relay key is not pinned yet; call pinRelay() while online");
    return this.relayKey;
  }

  /** The verified registry (after {@link refreshRegistry}). */
  registry(): RegistryState {
    if (this.registryState === null) throw new UsageError("the registry was not fetched yet; call refreshRegistry()");
    return this.registryState;
  }

  /**
   * Fetch new registry entries and verify them against the pinned account key
   * (the whole chain from genesis the first time).
   */
  async refreshRegistry(): Promise<RegistryState> {
    const accountId = this.account.accountId;
    if (this.registryState === null) {
      this.registryState = verifyRegistry(await this.relay.registry(accountId, 0), this.account);
      return this.registryState;
    }
    let state = this.registryState;
    for (const entry of await this.relay.registry(accountId, state.seq + 1)) state = state.apply(entry);
    this.registryState = state;
    return state;
  }

  /** The replica of one space (created empty on first use). */
  space(spaceId: Uint8Array): SpaceReplica {
    const k = toHex(spaceId);
    let s = this.spaces.get(k);
    if (s === undefined) {
      s = new SpaceReplica(this, spaceId);
      this.spaces.set(k, s);
    }
    return s;
  }

  /** Ids of the account's spaces as the relay lists them. */
  async listSpaces(): Promise<Uint8Array[]> {
    return (await this.relay.listSpaces()).map((s) => s.spaceId);
  }
}

/** This device's verified state of one space: log, chains, keys, own chain. */
export class SpaceReplica {
  /** The leaves this device verified (from a snapshot's frontier, or from offset 0). */
  tree = new MerkleTree();
  /** The last verified tree head. */
  head: TreeHead | null = null;
  /** Chain heads of every author, as the verified log leaves them. */
  chains = new MemoryChainView();
  /** Verified key packages, epoch order. */
  packages: KeyPackage[] = [];
  /** Epoch keys this device can open. */
  keys = new Map<bigint, Uint8Array>();
  /** Ops sealed here and not yet acknowledged, in seq order. */
  pending: OpEnvelope[] = [];
  private mine: { seq: bigint; opId: Uint8Array } | null = null;
  private readonly sent = new Map<bigint, string>();
  private readonly acked = new Map<number, Uint8Array>();
  private readonly gossipOk = new Set<string>();

  constructor(
    readonly device: DeviceSession,
    readonly spaceId: Uint8Array,
  ) {}

  private get relay(): RelayClient {
    return this.device.relay;
  }

  /** Fetch, verify (as a chain, against the refreshed registry) and open the space's key packages. */
  async refreshKeys(): Promise<KeyPackage[]> {
    const raw = await this.relay.keyPackages(this.spaceId, 0);
    const state = await this.device.refreshRegistry();
    const verified: KeyPackage[] = [];
    for (const data of raw) verified.push(verifyKeyPackage(data, state, this.spaceId, verified.at(-1) ?? null));
    if (verified.length === 0) throw new ProofError("the relay has no key package for this space");
    const keys = new Map<bigint, Uint8Array>();
    const me = this.device.deviceId;
    for (const pkg of verified) {
      if (pkg.recipients.has(toHex(me))) for (const [e, k] of openEpochKeys(pkg, me, this.device.keys.kx)) keys.set(e, k);
    }
    this.packages = verified;
    this.keys = keys;
    return verified;
  }

  private verifyHead(raw: Uint8Array): TreeHead {
    return verifyTreeHead(raw, this.device.pinnedRelayKey(), this.spaceId);
  }

  private async fetchSnapshot(): Promise<Snapshot | null> {
    let raw: Uint8Array;
    try {
      [, raw] = await this.relay.getSnapshot(this.spaceId, SPACE_SNAPSHOT_DOC);
    } catch (e) {
      if (e instanceof NotFoundError) return null;
      throw e;
    }
    try {
      return verifySnapshot(raw, this.device.registry(), this.spaceId, this.keys);
    } catch (e) {
      if (e instanceof AuthorizationError) return null; // written by a device since revoked: replay instead
      if (e instanceof SddsfError) {
        throw new ProofError(`the relay served a snapshot that fails verification: [${e.code}] ${e.message}`);
      }
      throw e;
    }
  }

  /**
   * Pull every op after what this device verified and verify all of it (see
   * the module comment). Nothing changes unless everything verified.
   *
   * @throws ProofError (`proof_invalid`, `log_rollback`, `split_view`),
   *   `tree_head_invalid`, and the relay's errors.
   */
  async pull(): Promise<PullReport> {
    let verified = this.tree;
    let snap: Snapshot | null = null;
    if (verified.size === 0n && this.device.useSnapshots) {
      snap = await this.fetchSnapshot();
      if (snap !== null) verified = MerkleTree.fromFrontier(Frontier.fromHashes(snap.size, snap.frontier));
    }
    const have = verified.size;
    const old = this.head;
    const fetched: [number, Uint8Array, Uint8Array][] = [];
    let head: TreeHead | null = null;
    let cursor = Number(have);
    for (let page = 0; page < MAX_PAGES; page++) {
      const [ops, headRaw] = await this.relay.pull(this.spaceId, cursor - 1, MAX_BATCH);
      head = this.verifyHead(headRaw);
      for (const op of ops) {
        if (op.offset !== cursor) {
          throw new ProofError(`the relay skipped or repeated log offsets (expected ${cursor}, got ${op.offset}): it is omitting history`);
        }
        if (op.envelope === null) {
          throw new ProofError(`the relay withheld the op at offset ${op.offset} (no snapshot this device trusts covers it)`);
        }
        if (!bytesEqual(leafHash(op.envelope), op.leafHash)) {
          throw new ProofError(`op at offset ${op.offset} does not match its leaf hash`);
        }
        fetched.push([op.offset, op.leafHash, op.envelope]);
        cursor += 1;
      }
      if (ops.length === 0 || BigInt(cursor) >= head.size) break;
    }
    if (head === null) throw new ProofError("the relay sent no tree head");
    if (head.size < have || (old !== null && head.size < old.size)) {
      throw new ProofError(`the relay's log went back to ${head.size} entries: it is rolling back history`, Code.LOG_ROLLBACK);
    }
    const tree = fetched.length ? verified.copy() : verified;
    for (const [, leaf] of fetched) tree.append(leaf);
    if (tree.size < head.size || !bytesEqual(tree.root(head.size), head.root)) {
      throw new ProofError("the ops the relay served do not reproduce its signed tree head: history was omitted, reordered or rewritten");
    }
    for (const [offset, leaf] of this.acked) {
      if (BigInt(offset) >= head.size) {
        throw new ProofError(`the relay's log (${head.size} entries) no longer holds this device's acknowledged op at offset ${offset}: it is rolling back history`,
          Code.LOG_ROLLBACK);
      }
      if (!bytesEqual(tree.hashRange(offset, offset + 1), leaf)) {
        throw new ProofError(`the relay dropped or replaced this device's acknowledged op at offset ${offset}`);
      }
    }
    return this.applyVerified(fetched, tree, head, snap);
  }

  private async applyVerified(fetched: [number, Uint8Array, Uint8Array][], tree: MerkleTree, head: TreeHead,
    snap: Snapshot | null): Promise<PullReport> {
    const state = this.device.registry();
    const keys = this.keys;
    const chains = new MemoryChainView(snap !== null ? snap.chains : this.chains.heads);
    const older: [Uint8Array, TreeHeadRef][] = [];
    const current = keys.size ? [...keys.keys()].reduce((a, b) => (a > b ? a : b)) : 0n;
    const verifiedOps: AppliedOp[] = [];
    const skipped: SkippedOp[] = [];
    for (const [offset, , raw] of fetched) {
      let env: OpEnvelope;
      try {
        const verdict = verifyOp(raw, { space: this.spaceId, registry: state, epochs: { current, startedMs: 0 }, chains,
          nowMs: null });
        if (verdict.outcome !== "accept") throw new ProofError(`the relay served a duplicate op at offset ${offset}`);
        env = verdict.envelope;
      } catch (e) {
        if (e instanceof ProofError) throw e;
        if (!(e instanceof SddsfError)) throw e;
        const skip = beyondCutoff(raw, offset, e, state);
        if (skip === null) {
          throw new ProofError(`the relay served an op (offset ${offset}) that fails the rules: [${e.code}] ${e.message}`);
        }
        skipped.push(skip);
        continue;
      }
      chains.record(env);
      this.checkGossip(env, offset, tree, older);
      const key = keys.get(env.header.epoch);
      if (key === undefined) throw new ProofError(`op at offset ${offset} uses an epoch this device has no key for`);
      // A wrong key is decrypt_failed and a non-canonical plaintext malformed,
      // as in the reference; a payload of another shape is proof_invalid.
      const payload = decodePayload(openOp(env, key), this.spaceId, env.header.doc, offset);
      verifiedOps.push({ offset, envelope: env, payload });
    }
    for (const [author, seen] of older) await this.checkOlderGossip(tree, author, seen);
    // Everything verified: adopt the new state at once.
    const me = this.device.deviceId;
    const applied = verifiedOps.filter(({ envelope: env }) =>
      !(bytesEqual(env.header.author, me) && this.sent.get(env.header.seq) === toHex(env.opId)));
    for (const { envelope: env } of verifiedOps) {
      if (!bytesEqual(env.header.author, me)) continue;
      // The log holds ops of this device that this copy did not make (restored
      // from an older copy): adopt the log's chain head.
      if (this.mine === null || this.mine.seq <= env.header.seq) this.mine = { seq: env.header.seq, opId: env.opId };
      this.sent.set(env.header.seq, toHex(env.opId));
    }
    this.tree = tree;
    this.head = head;
    this.chains = chains;
    return { pulled: fetched.length, applied, snapshot: snap, skipped, size: head.size };
  }

  private checkGossip(env: OpEnvelope, offset: number, tree: MerkleTree, older: [Uint8Array, TreeHeadRef][]): void {
    // Fork consistency: a tree head another device verified must be a prefix of
    // the log this device verified, and an op is written after its author
    // verified `seen`, so it sits at an offset >= seen.size.
    const seen = env.header.seen;
    if (seen === null || bytesEqual(env.header.author, this.device.deviceId)) return;
    const who = toHex(env.header.author).slice(0, 12);
    if (seen.size > BigInt(offset)) {
      throw new ProofError(`device ${who} had verified ${seen.size} entries of this space before writing the op this relay put ` +
        `at offset ${offset}: the relay is hiding entries from this device (split view)`, Code.SPLIT_VIEW);
    }
    if (seen.size < tree.base) {
      older.push([env.header.author, seen]);
      return;
    }
    if (seen.size <= tree.size && !bytesEqual(tree.root(seen.size), seen.root)) {
      throw new ProofError(`device ${who} saw a different history of this space at size ${seen.size}: the relay is showing ` +
        "devices different logs (split view)", Code.SPLIT_VIEW);
    }
  }

  private async checkOlderGossip(tree: MerkleTree, author: Uint8Array, seen: TreeHeadRef): Promise<void> {
    // History before a snapshot is known only as a frontier: check a head
    // gossiped about it with a consistency proof from seen.size to the base.
    const k = `${seen.size}/${toHex(seen.root)}`;
    if (this.gossipOk.has(k)) return;
    const [proof, headRaw] = await this.relay.consistencyProof(this.spaceId, Number(seen.size), Number(tree.base));
    const head = this.verifyHead(headRaw);
    try {
      if (head.size !== tree.base || !bytesEqual(head.root, tree.root(tree.base))) {
        throw new ProofError("the relay's head at the snapshot's size is not the snapshot's");
      }
      verifyConsistency(seen.size, tree.base, seen.root, head.root, proof);
    } catch (e) {
      if (!(e instanceof ProofError)) throw e;
      throw new ProofError(`device ${toHex(author).slice(0, 12)} saw a history of this space at size ${seen.size} that is not ` +
        `a prefix of this device's: the relay is showing devices different logs (split view; ${e.message})`, Code.SPLIT_VIEW);
    }
    this.gossipOk.add(k);
  }

  /** The newest epoch this device holds a key for. */
  currentEpoch(): bigint {
    if (this.keys.size === 0) throw new UsageError("this device has no key for the space yet; refresh its keys first");
    return [...this.keys.keys()].reduce((a, b) => (a > b ? a : b));
  }

  /**
   * Seal `updates` to the document `name` as this device's next op, under the
   * newest epoch, and queue it for {@link push}.
   *
   * @throws UsageError no key yet, or an op over the size limit.
   */
  seal(name: string, updates: readonly Uint8Array[]): OpEnvelope {
    const epoch = this.currentEpoch();
    const me = this.device.deviceId;
    const seq = (this.mine?.seq ?? 0n) + 1n;
    const prev = this.mine?.opId ?? GENESIS_PREV;
    const deps = new VersionVector([...this.chains.heads].filter(([a]) => a !== toHex(me))
      .map(([a, h]) => [fromHex(a), h.seq] as const));
    const seen: TreeHeadRef | null = this.head !== null && this.head.size > 0n ? { size: this.head.size, root: this.head.root } : null;
    const ts = this.device.hlc.tick(this.device.clock());
    const env = sealOp(this.device.keys, { space: this.spaceId, doc: docIdFor(this.spaceId, name), author: me, seq, prev, deps,
      epoch, ts, seen, nonce: randomBytes(24) }, encodePayload(name, updates), this.keys.get(epoch)!);
    this.mine = { seq, opId: env.opId };
    this.sent.set(seq, toHex(env.opId));
    this.pending.push(env);
    return env;
  }

  /**
   * Open a new key epoch when one is due: a device was revoked after the newest
   * package, a device added since is not among its recipients, or the policy's
   * `max_epoch_age_s` has passed (§10.7). Returns whether it rotated.
   */
  async rotateIfDue(): Promise<boolean> {
    const last = this.packages.at(-1);
    if (last === undefined) throw new UsageError("refresh the space's keys first");
    const state = this.device.registry();
    const maxAge = state.policy.get("max_epoch_age_s");
    const aged = typeof maxAge === "number" && maxAge > 0 && BigInt(this.device.clock()) - last.ts > BigInt(maxAge) * 1000n;
    if (!aged && !needsRotation(last, state)) return false;
    const epoch = last.epoch + 1n;
    const previousKeys: Uint8Array[] = [];
    for (let e = 0n; e < epoch; e++) {
      const k = this.keys.get(e);
      if (k === undefined) throw new UsageError("this device lacks some of the space's earlier keys; sync first");
      previousKeys.push(k);
    }
    const pkg = buildKeyPackage({ creator: this.device.keys, registry: state, space: this.spaceId, epoch, prev: last.hash,
      epochKey: randomBytes(32), tsMs: this.device.clock(), previousKeys,
      ephemeralSeeds: Array.from({ length: state.activeDevices().length + 1 }, () => randomBytes(32)) });
    try {
      await this.relay.putKeyPackage(this.spaceId, pkg);
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e; // another device rotated first: use its epoch
    }
    await this.refreshKeys();
    return true;
  }

  /**
   * Upload the pending ops; every acknowledged op's inclusion proof is checked
   * against the relay's signed tree head before it leaves the queue.
   *
   * @throws ProofError an acknowledgement without a valid proof.
   */
  async push(): Promise<PushReport> {
    let pushed = 0;
    const rejected: [string, string][] = [];
    const requeued: OpPayload[] = [];
    let lastOk: OpEnvelope | null = null;
    let reset = false;
    while (this.pending.length) {
      const chunk = this.pending.slice(0, MAX_BATCH);
      const [results, headRaw] = await this.relay.upload(this.spaceId, chunk.map((e) => e.raw));
      const head = this.verifyHead(headRaw);
      chunk.forEach((env, i) => {
        const r = results[i];
        if (r === undefined) throw new ProofError("the relay answered fewer results than ops");
        if (r.status === "accepted" || r.status === "duplicate") {
          if (r.offset === null || r.proof === null) throw new ProofError("the relay acknowledged an op without a proof");
          verifyInclusion(leafHash(env.raw), r.offset, head.size, r.proof, head.root);
          this.acked.set(r.offset, leafHash(env.raw));
          lastOk = env;
          pushed += 1;
          return;
        }
        rejected.push([r.code ?? "", r.message ?? ""]);
        if (r.code !== null && RESEAL.has(r.code)) {
          if (!reset) {
            this.resetHead(lastOk);
            reset = true;
          }
          const payload = this.ownPayload(env);
          if (payload !== null) requeued.push(payload);
        }
      });
      this.pending = this.pending.slice(chunk.length);
    }
    return { pushed, rejected, requeued };
  }

  private resetHead(lastOk: OpEnvelope | null): void {
    // This device's chain head after a refusal: the last op accepted in this
    // push, else the last one the verified log holds, else genesis.
    if (lastOk !== null) {
      this.mine = { seq: lastOk.header.seq, opId: lastOk.opId };
      return;
    }
    const logged = this.chains.head(this.device.deviceId);
    this.mine = logged === undefined ? null : { seq: logged.seq, opId: logged.opId };
  }

  private ownPayload(env: OpEnvelope): OpPayload | null {
    const key = this.keys.get(env.header.epoch);
    if (key === undefined) return null;
    return decodePayload(openOp(env, key), this.spaceId, env.header.doc);
  }
}

/**
 * A refusal that must not make the whole log unreadable: an op of a revoked
 * device beyond its cutoff. Every device skips exactly these ops.
 */
function beyondCutoff(raw: Uint8Array, offset: number, e: SddsfError, state: RegistryState): SkippedOp | null {
  if (e.code !== Code.REVOKED) return null;
  const h = decodeEnvelope(raw).header;
  const rec = state.device(h.author);
  const cut = rec?.cutoff.get(toHex(h.space)) ?? 0n;
  if (rec === undefined || rec.revokedSeq === null || h.seq <= cut) return null;
  return { offset, author: h.author, seq: h.seq, code: Code.REVOKED,
    message: `op ${h.seq} of revoked device '${rec.name}' is beyond its revocation cutoff (${cut}); not applied` };
}
