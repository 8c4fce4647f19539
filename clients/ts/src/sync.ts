/**
 * A device's verified view of its account and spaces, and sync that trusts no
 * relay (the device side of docs/protocol.md §9–§13, §17–§18; the same checks
 * as `sddsf.client.device.Device.sync`). The state lives in memory and is
 * exported as one canonical value per space ({@link SpaceReplica.exportState})
 * so that a store (`./store.js`, IndexedDB in browsers) persists it after each
 * verified step.
 *
 * Pulling a space checks, before anything is decrypted or applied:
 *
 * 1. the registry, verified from genesis against the pinned account key, and
 *    the space's key packages, verified as a chain (a stored package is never
 *    replaced: `key_package_fork`; one the relay stops serving: `proof_invalid`);
 * 2. every tree head's signature under the pinned relay key;
 * 3. that offsets are contiguous and each envelope hashes to its leaf, that the
 *    log extends what this device already verified and reproduces the signed
 *    root (omitted, reordered, rewritten or rolled-back history is refused:
 *    `proof_invalid`, `log_rollback`), and that this device's acknowledged ops
 *    are still where the relay put them;
 * 4. that the registry covers every op's `reg` (else `registry_withheld`), and
 *    every op with the shared rules in history mode, with the epochs' package
 *    seqs (`epoch_compromised`); a revoked author's op beyond its cutoff is
 *    skipped and reported, as every device does;
 * 5. that the tree heads other devices report in their ops (`seen`) are
 *    prefixes of this device's log (`split_view`);
 * 6. each payload (§8.11): one-op edits, and multi-part edits joined across
 *    pulls, whose document name must hash to the op's doc id.
 *
 * A new device may start from a snapshot (version 1 or chunked version 2) only
 * when the rules of §18.7 let it trust one (its author is trusted, or a trusted
 * device other than its author attested it, and no trusted device disputes it);
 * otherwise it replays the log.
 *
 * A space shared between accounts (§21.7; another account's, joined with
 * {@link DeviceSession.joinSpace}, or this account's own once shared) is read
 * here, not written: its log interleaves membership entries, told from ops by
 * their bytes and folded in log order (`./sharing.js`); before its `create`
 * entry the owner's registry judges each op, after it the registry of the
 * author's member account, verified from the key the entry that introduced
 * the account pinned (`./members.js`), with that account's positions in the
 * version 3 key packages, which are verified against the members' registries
 * and the fold (§10.8). An op of a device of no member, of two, of a reader
 * or of a removed member refuses the pull (the relay served an op that fails
 * the rules). Such a space is replayed from its log (no snapshot start), and
 * its epochs are opened and its edits written by a device of the Python
 * client: here {@link SpaceReplica.seal} refuses and no epoch is rotated.
 *
 * Writing: an edit is sealed under the newest epoch unless a device revoked
 * since that epoch's package may hold its key: then it is held until a new
 * epoch is stored ({@link SpaceReplica.rotateIfDue}), or `rotation_blocked` says
 * why not. Edits too large for one op are sealed as parts (§8.11). Pushing
 * checks each acknowledged op's inclusion proof against the signed head.
 */

import { bytesEqual, fromHex, toHex } from "./bytes.js";
import { decode, encode, type CborValue, type Encodable } from "./cbor.js";
import { HybridLogicalClock } from "./clock.js";
import { Ed25519PublicKey, randomBytes } from "./crypto.js";
import { docIdFor, editOf, type OpPayload } from "./docs.js";
import { decodeEnvelope, GENESIS_PREV, headerToWire, OpEnvelope, openOp, sealOp, type OpHeader,
  type TreeHeadRef } from "./envelope.js";
import { AuthenticationError, AuthorizationError, Code, ConfigError, ConflictError, DecodeError, EpochError, NotFoundError,
  ProofError, SddsfError, UsageError } from "./errors.js";
import type { AccountPublic, DeviceKeys } from "./identity.js";
import { buildKeyPackage, checkChain, decodeKeyPackage, KEY_PACKAGE_VERSION_SHARED, needsRotation, openKeyHistory,
  revokedSince, verifyKeyPackage, verifyKeyPackageV3, type KeyPackage } from "./keypackage.js";
import { Members } from "./members.js";
import { decodeMembershipEntry, type MembershipEntry, type MembershipState } from "./membership.js";
import { Fold, holdersOf, leafKind, LogJudge } from "./sharing.js";
import { DEFAULT_PROTOCOL_LIMITS } from "./limits.js";
import { Frontier, leafHash, MerkleTree, verifyConsistency, verifyInclusion } from "./merkle.js";
import { decodePayload, PartsReader, splitEdit, type Assembly, type OpenAssembly } from "./payload.js";
import { verifyRegistry, type RegistryState } from "./registry.js";
import { DEFAULT_RELAY_LIMITS, maxEnvelope, requestFits, type RelayClient, type RelayLimits, type SpaceInfo } from "./relay.js";
import { MemoryChainView, verifyOp, type ChainHead } from "./rules.js";
import { CORROBORATED_SNAPSHOT_DOC, decodeSnapshot, loadSnapshot, MATCH, MISMATCH, openSnapshot, SPACE_SNAPSHOT_DOC,
  snapshotId, verifyAttestation, type Snapshot } from "./snapshot.js";
import { verifyTreeHead, type TreeHead } from "./treehead.js";
import { VersionVector } from "./vv.js";

const MAX_BATCH = 500;
const MAX_PAGES = 10_000;
/** Empty pages in a row a pull asks for again while the signed head says the
 * log is longer (an append between the relay's two reads), before it refuses
 * the log as withholding entries (protocol 17.6; the Python device's
 * `EMPTY_PAGE_RETRIES`). */
export const EMPTY_PAGE_RETRIES = 3;
/** Header and framing of an envelope around its payload (as the reference's `_ENVELOPE_OVERHEAD`). */
const ENVELOPE_OVERHEAD = 128;
/** Refusals of an own op whose edits are sealed again on top of the log. */
const RESEAL: ReadonlySet<string> = new Set([Code.CHAIN_FORK, Code.STALE_EPOCH, Code.CHAIN_GAP]);
/** The version of {@link SpaceReplica.exportState}'s value. */
const STATE_VERSION = 1;

/** An op of the verified log that was not applied (a revoked author beyond its cutoff). */
export interface SkippedOp {
  readonly offset: number;
  readonly author: Uint8Array;
  readonly seq: bigint;
  readonly code: string;
  readonly message: string;
}

/** A verified, decrypted edit of another device (or of an older copy of this one): a one-op edit or a joined multi-part one. */
export interface AppliedOp {
  readonly offset: number;
  /** The op that completed the edit (its last part for a multi-part edit). */
  readonly envelope: OpEnvelope;
  readonly payload: OpPayload;
}

/** What one {@link SpaceReplica.pull} verified. */
export interface PullReport {
  /** Entries fetched and verified. */
  readonly pulled: number;
  /** Verified edits to apply, in log order (this device's own ops made here are left out). */
  readonly applied: readonly AppliedOp[];
  /** The snapshot the replica started from, if it did (apply its documents first). */
  readonly snapshot: Snapshot | null;
  readonly skipped: readonly SkippedOp[];
  /** The verified log size. */
  readonly size: bigint;
  /** Snapshot findings for a person (`snapshot_mismatch` alerts, §18.7). */
  readonly alerts: readonly [string, string][];
}

/** What one {@link SpaceReplica.push} did. */
export interface PushReport {
  readonly pushed: number;
  /** `[code, message]` of each refused op. */
  readonly rejected: readonly [string, string][];
  /** Edits of refused (or unsendable) ops to seal again (chain fork, stale epoch, chain gap). */
  readonly requeued: readonly OpPayload[];
}

/** Options of a {@link DeviceSession}. */
export interface DeviceSessionOptions {
  /** The relay's tree-head key if already pinned; else pinned on first contact. */
  readonly relayKey?: Uint8Array;
  readonly clock?: () => number;
  /** Start new spaces from a trusted relay snapshot (false: replay every op). */
  readonly useSnapshots?: boolean;
}

/** One device of an account talking to one relay, with its verified registry. */
export class DeviceSession {
  relayKey: Ed25519PublicKey | null;
  readonly clock: () => number;
  readonly hlc = new HybridLogicalClock();
  readonly useSnapshots: boolean;
  private registryState: RegistryState | null = null;
  private registryEntries: Uint8Array[] = [];
  private readonly spaces = new Map<string, SpaceReplica>();
  /** The relay's request limits, remembered so that offline edits are sized for it. */
  relayLimits: RelayLimits = DEFAULT_RELAY_LIMITS;
  /** Other accounts: their pinned keys and verified registries (shared spaces). */
  readonly members: Members;

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
    this.members = new Members({ account, relay, ownRegistry: () => this.registryState,
      refreshRegistry: () => this.refreshRegistry() });
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

  /**
   * A new device (no verified tree head of any space): read this sync through
   * the relay's first-sync bundle (§17.9), verified under the pinned relay key
   * ({@link pinRelay} first). Every component is then verified where it is
   * used, exactly as when its endpoint serves it. Returns false, and the reads
   * go to their endpoints, for a device that already pulled a log, one the
   * verified registry lists as inactive or whose session is refused (the sync
   * then says why), a relay without the feature, or a node answering 404.
   * Call {@link endPrefetch} when the sync ends.
   *
   * @throws ProofError `tree_head_invalid`: a bundle altered on the way or
   *   answering another request, or a relay key that changed; DecodeError a
   *   malformed bundle.
   */
  async prefetchFirstSync(): Promise<boolean> {
    if (this.replicas().some((r) => r.head !== null)) return false;
    if (this.registryState !== null && !this.registryState.isActive(this.deviceId)) return false;
    try {
      return await this.relay.prefetchFirstSync(await this.pinRelay());
    } catch (e) {
      // No session for this device (revoked or awaiting approval): the sync says why.
      if (e instanceof AuthenticationError || e instanceof AuthorizationError) return false;
      throw e;
    }
  }

  /** Read from the endpoints again (the sync that used the first-sync bundle ended). */
  endPrefetch(): void {
    this.relay.endPrefetch();
  }

  /** The relay key, which must be pinned. */
  pinnedRelayKey(): Ed25519PublicKey {
    if (this.relayKey === null) throw new ConfigError("the relay key is not pinned yet; call pinRelay() while online");
    return this.relayKey;
  }

  /** The verified registry (after {@link refreshRegistry} or {@link restoreRegistry}). */
  registry(): RegistryState {
    if (this.registryState === null) throw new UsageError("the registry was not fetched yet; call refreshRegistry()");
    return this.registryState;
  }

  /** The registry entries verified so far (to persist; {@link restoreRegistry} verifies them again). */
  entries(): readonly Uint8Array[] {
    return this.registryEntries;
  }

  /**
   * Verify stored registry entries from genesis against the pinned key (a
   * stored registry is re-verified, never trusted).
   */
  restoreRegistry(entries: readonly Uint8Array[]): RegistryState {
    this.registryState = verifyRegistry(entries, this.account);
    this.registryEntries = [...entries];
    return this.registryState;
  }

  /**
   * Fetch new registry entries and verify them against the pinned account key
   * (the whole chain from genesis the first time). The read is signed with
   * this device's key (§17.3.3).
   */
  async refreshRegistry(): Promise<RegistryState> {
    const accountId = this.account.accountId;
    if (this.registryState === null) return this.restoreRegistry(await this.relay.registry(accountId, 0));
    let state = this.registryState;
    const entries = [...this.registryEntries];
    for (const entry of await this.relay.registry(accountId, state.seq + 1)) {
      const next = state.apply(entry);
      if (next !== state) entries.push(entry); // a repeat of a known entry changes nothing
      state = next;
    }
    this.registryEntries = entries;
    this.registryState = state;
    return state;
  }

  /** Ask the relay for its request limits and remember them. */
  async refreshRelayLimits(): Promise<RelayLimits> {
    this.relayLimits = await this.relay.limits();
    return this.relayLimits;
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

  /** The replicas opened so far. */
  replicas(): SpaceReplica[] {
    return [...this.spaces.values()];
  }

  /**
   * Ids of the account's own spaces as the relay lists them. Another account's
   * space shared with this one is held only once joined ({@link joinSpace}):
   * its owner's key is compared by the people, never taken from the relay.
   */
  async listSpaces(): Promise<Uint8Array[]> {
    return (await this.relay.listSpaces())
      .filter((s) => s.owner === null || bytesEqual(s.owner, this.account.accountId)).map((s) => s.spaceId);
  }

  /** Other accounts' spaces the relay says are shared with this account and this device does not hold (unverified). */
  async sharedWithMe(): Promise<SpaceInfo[]> {
    return (await this.relay.listSpaces()).filter((s) => s.owner !== null && !bytesEqual(s.owner, this.account.accountId) &&
      !this.spaces.has(toHex(s.spaceId)));
  }

  /**
   * Hold another account's space, shared with this one (as `sharing.join`):
   * pin the owner's account key, as the people compared it (its fingerprint),
   * check that the relay lists the space as that account's, and return its
   * replica (pull it to read it).
   *
   * @throws UsageError the space is this device's already, or this account's own;
   *   ProofError the owner's key differs from one pinned before, or the relay
   *   names another owner (`proof_invalid`); NotFoundError the space is not
   *   shared with this account (yet).
   */
  async joinSpace(spaceId: Uint8Array, owner: AccountPublic): Promise<SpaceReplica> {
    if (bytesEqual(owner.accountId, this.account.accountId)) throw new UsageError("this account owns the space; nothing to join");
    if (this.spaces.has(toHex(spaceId))) throw new UsageError("this device holds that space already");
    this.members.pin(owner);
    const space = (await this.relay.listSpaces()).find((s) => bytesEqual(s.spaceId, spaceId));
    if (space === undefined) {
      throw new NotFoundError("no space with that id is shared with this account; ask its owner to share it first");
    }
    if (space.owner === null || !bytesEqual(space.owner, owner.accountId)) {
      throw new ProofError("the relay says another account owns this space than the one you named: compare the owner's " +
        "fingerprint again", Code.PROOF_INVALID);
    }
    const replica = this.space(spaceId);
    replica.owner = owner.accountId;
    return replica;
  }

  /** Whether `deviceId` is a device this session trusts (active in the verified registry). */
  trusted(deviceId: Uint8Array): boolean {
    return this.registry().isActive(deviceId);
  }

  /** A device's name and short id, for messages. */
  label(deviceId: Uint8Array): string {
    const rec = this.registryState?.device(deviceId);
    return `${rec ? `'${rec.name}' ` : ""}(${toHex(deviceId).slice(0, 12)})`;
  }
}

/** An edit whose parts were sealed: kept whole until its last part is logged, to re-send it after a refusal. */
interface KeptEdit {
  readonly lastSeq: bigint;
  readonly name: string;
  readonly updates: readonly Uint8Array[];
}

/** What this device's state of a space started from (§18.7), while no trusted device vouches for it. */
interface SnapBase {
  readonly id: Uint8Array;
  readonly author: Uint8Array;
  readonly size: bigint;
  /** Trusted devices (not its author) that attested it. */
  readonly by: readonly Uint8Array[];
  /** Nothing else records the history under it (pruned). */
  readonly final: boolean;
}

/** This device's verified state of one space: log, chains, keys, own chain, unsent edits. */
export class SpaceReplica {
  /** The leaves this device verified (from a snapshot's frontier, or from offset 0). */
  tree = new MerkleTree();
  /** The last verified tree head. */
  head: TreeHead | null = null;
  /** Chain heads of every author, as the verified log leaves them. */
  chains = new MemoryChainView();
  /** Verified key packages, epoch order. */
  packages: KeyPackage[] = [];
  /** Epoch keys this device can open (its packages, and the earlier keys they wrap). */
  keys = new Map<bigint, Uint8Array>();
  /** Ops sealed here and not yet acknowledged, in seq order. */
  pending: OpEnvelope[] = [];
  /** Edits kept back because a device revoked since the newest epoch may hold its key. */
  held: OpPayload[] = [];
  /** The frontier of the snapshot this replica started from (empty: it replayed the log from offset 0). */
  baseFrontier: readonly Uint8Array[] = [];
  /** Where this replica's state started: a snapshot nobody corroborated yet, or null (the log). */
  snapBase: SnapBase | null = null;
  private mine: { seq: bigint; opId: Uint8Array } | null = null;
  private sent = new Map<bigint, string>();
  private acked = new Map<number, Uint8Array>();
  private assemblies = new Map<string, OpenAssembly>();
  private kept = new Map<string, KeptEdit>();
  private readonly gossipOk = new Set<string>();
  /** Snapshot ids this device never uses again (unreadable, or disputed). */
  private distrusted = new Set<string>();
  /** The account whose space it is; null: this device's own account. */
  owner: Uint8Array | null = null;
  /** The membership entries of the verified log, by offset, each stored by the pull that verified its leaf. */
  private mlog = new Map<number, Uint8Array>();
  /** Offsets of the entries the fold refused (they change nothing; kept so a reload folds alike). */
  private mrefused = new Set<number>();
  /** The fold of {@link mlog} (§21.3). */
  private fold: Fold;
  /**
   * Entries the relay listed beyond the pulled log (offset → bytes), read
   * ahead for the key packages that name them: a later pull must find exactly
   * these leaves there.
   */
  private listed: Map<number, Uint8Array> | null = null;
  /** The fold including {@link listed}, until a pull reaches them. */
  private ahead: Fold | null = null;

  constructor(
    readonly device: DeviceSession,
    readonly spaceId: Uint8Array,
  ) {
    this.fold = Fold.empty(spaceId);
  }

  /** The account whose space it is. */
  ownerId(): Uint8Array {
    return this.owner ?? this.device.account.accountId;
  }

  /** Whether the space is this device's account's own. */
  get ownedHere(): boolean {
    return bytesEqual(this.ownerId(), this.device.account.accountId);
  }

  /**
   * Whether the space is shared between accounts as far as this device knows
   * (another account's, or a membership or a version 3 key package seen): read
   * only here ({@link seal} refuses, no epoch is rotated), replayed from its log.
   */
  get shared(): boolean {
    return !this.ownedHere || (this.ahead ?? this.fold).shared ||
      this.packages.some((p) => p.version >= KEY_PACKAGE_VERSION_SHARED);
  }

  /** The newest membership this device verified (read ahead of the pulled log when it did so). */
  membership(): MembershipState {
    return (this.ahead ?? this.fold).state;
  }

  /**
   * The accounts (hex ids, sorted) that are or were members of the space at
   * some position of its verified membership log: a former member's records
   * stay theirs.
   */
  memberAccounts(): string[] {
    const fold = this.ahead ?? this.fold;
    const all = new Set(fold.state.members.keys());
    for (const set of fold.sets.values()) for (const a of set) all.add(a);
    return [...all].sort();
  }

  private refold(): void {
    // The stored entries in log order; an entry refused when it was pulled is
    // skipped again (registries only grow, so one applied then applies now).
    const entries = [...this.mlog].sort(([a], [b]) => a - b).filter(([o]) => !this.mrefused.has(o))
      .map(([, raw]) => decodeMembershipEntry(raw));
    this.fold = Fold.empty(this.spaceId).more(entries, this.ownerId(), (a) => this.device.members.registryOf(a));
  }

  private get relay(): RelayClient {
    return this.device.relay;
  }

  // ------------------------------------------------------------- key epochs

  /**
   * Fetch, verify (as a chain, against the refreshed registry) and open the
   * space's key packages.
   *
   * @throws ProofError `key_package_fork` (another package for an epoch this
   *   device holds), `proof_invalid` (a held epoch no longer served, or none).
   */
  async refreshKeys(): Promise<KeyPackage[]> {
    // A space's sync starts here: other accounts' registries are read again,
    // once each, for its key packages and its pull.
    this.device.members.newGeneration();
    const raw = await this.relay.keyPackages(this.spaceId, 0);
    const state = await this.device.refreshRegistry();
    // A package byte-identical to the stored one of its epoch, after a run of
    // such packages, passed these checks when it was stored: they depend only
    // on the package, the previous one and registry positions it states, none
    // of which changed (device records are never rewritten, §9.6).
    let same = 0;
    while (same < raw.length && same < this.packages.length && bytesEqual(raw[same]!, this.packages[same]!.raw)) same++;
    const verify = await this.verifier(state, raw.slice(same));
    const verified: KeyPackage[] = this.packages.slice(0, same);
    for (const data of raw.slice(same)) {
      const pkg = verify(data, verified.at(-1) ?? null);
      const mine = this.packages[Number(pkg.epoch)];
      if (mine !== undefined && !bytesEqual(mine.raw, pkg.raw)) {
        throw new ProofError(`the relay serves another key package for epoch ${pkg.epoch} of space ${this.label()} than ` +
          "the one this device stored: two packages for one epoch are fork evidence (the relay, or a device, equivocates); " +
          "the stored one is kept", Code.KEY_PACKAGE_FORK);
      }
      verified.push(pkg);
    }
    if (verified.length < this.packages.length) {
      throw new ProofError(`the relay no longer serves the key package(s) of epoch(s) ${verified.length}..` +
        `${this.packages.length - 1} of space ${this.label()} that this device stored: it is hiding or rolling back key packages`);
    }
    if (verified.length === 0) throw new ProofError("the relay has no key package for this space");
    this.setPackages(verified);
    return verified;
  }

  private async verifier(state: RegistryState, fresh: readonly Uint8Array[]):
    Promise<(data: Uint8Array, previous: KeyPackage | null) => KeyPackage> {
    // One-account packages (versions 1, 2) verify against the owner's
    // registry (this account's, or a joined space owner's, verified from its
    // pinned key); shared ones (version 3) against the member registries and
    // the membership, read ahead of the log when they name entries this device
    // has not pulled yet (§10.8, §21.7).
    const owner = this.ownerId();
    const members = this.device.members;
    const ownerState = this.ownedHere ? state : await members.refresh(owner);
    const v3 = fresh.map((p) => decodeKeyPackage(p)).filter((p) => p.version >= KEY_PACKAGE_VERSION_SHARED);
    let fold = this.fold;
    let regs = new Map<string, RegistryState>();
    if (v3.length) {
      fold = await this.readAhead();
      // Accounts a package names that are no longer members keep the registry verified before.
      const named = v3.flatMap((p) => p.members!.map(([a]) => toHex(a)));
      regs = await members.refreshAll([toHex(owner), ...fold.state.members.keys(), ...named]);
    }
    return (data, previous) => (decodeKeyPackage(data).version >= KEY_PACKAGE_VERSION_SHARED
      ? verifyKeyPackageV3(data, this.spaceId, previous, regs, (h) => fold.membersAt(h))
      : verifyKeyPackage(data, ownerState, this.spaceId, previous));
  }

  /**
   * The stored fold extended by the entries the relay lists beyond the log this
   * device pulled (`GET .../members`): what the newest key packages may name.
   * The extension is not stored: each entry is stored by the pull that finds it
   * in the signed log, and must be the leaf listed here.
   *
   * @throws ProofError the relay lists other entries at pulled offsets, or
   *   another owner than this device knows.
   */
  private async readAhead(): Promise<Fold> {
    const log = await this.relay.membership(this.spaceId);
    if (!bytesEqual(log.owner, this.ownerId())) {
      throw new ProofError("the relay names another owner of this space than the one this device joined");
    }
    // Every listed entry inside the log this device verified must be the entry
    // stored from it (an op there, or another entry, is the relay lying).
    const last = Math.max(this.mlog.size ? Math.max(...this.mlog.keys()) : -1, Number(this.tree.size) - 1);
    for (const [offset, raw] of log.entries) {
      const stored = this.mlog.get(offset);
      if (offset <= last && offset >= Number(this.tree.base) && (stored === undefined || !bytesEqual(stored, raw))) {
        throw new ProofError(`the relay lists another membership entry at offset ${offset} than its log holds`);
      }
    }
    const fresh = log.entries.filter(([o]) => o > last).map(([o, raw]) => [o, decodeMembershipEntry(raw)] as const);
    const members = this.device.members;
    await members.prepare(fresh.map(([, e]) => e));
    this.listed = new Map(fresh.map(([o, e]) => [o, e.raw]));
    this.ahead = this.fold.more(fresh.map(([, e]) => e), this.ownerId(), (a) => members.registryOf(a));
    await members.refreshAll(this.ahead.state.members.keys()); // new members: their devices get keys
    return this.ahead;
  }

  private setPackages(packages: KeyPackage[]): void {
    this.packages = packages;
    this.keys = openKeyHistory(packages, this.device.deviceId, this.device.keys.kx);
  }

  /**
   * Epoch → the registry seq its package took `account`'s devices at (default:
   * this device's account; 0 for an account it was not sealed for): the
   * rules' `EpochWindow.packageSeqs`.
   */
  packageSeqs(account: Uint8Array = this.device.account.accountId): bigint[] {
    const who = toHex(account);
    return this.packages.map((p) => holdersOf(p, this.ownerId()).get(who) ?? 0n);
  }

  /** The newest epoch this device holds a key for. */
  currentEpoch(): bigint {
    if (this.keys.size === 0) throw new UsageError("this device has no key for the space yet; refresh its keys first");
    return [...this.keys.keys()].reduce((a, b) => (a > b ? a : b));
  }

  /** Whether a device revoked after `epoch`'s package was made may hold its key (nothing new is sealed or pushed under it). */
  compromised(epoch: bigint, state: RegistryState = this.device.registry()): boolean {
    const seqs = this.packageSeqs();
    return epoch >= BigInt(seqs.length) || state.revokedBetween(seqs[Number(epoch)]!, state.seq);
  }

  private label(): string {
    return toHex(this.spaceId).slice(0, 12);
  }

  /**
   * Open a new key epoch when one is due (a device was revoked after the newest
   * package, a device added since is not among its recipients, or the
   * policy's `max_epoch_age_s` passed), then hold again the pending ops
   * sealed under a compromised epoch and seal the held edits under the new
   * one (§10.7). Returns whether this device stored a new epoch.
   *
   * @throws EpochError `rotation_blocked`: rotation is due after a revocation
   *   and the relay neither stores this device's package nor serves a newer
   *   one without the revoked device (nothing is written under the old key).
   */
  async rotateIfDue(): Promise<boolean> {
    const last = this.packages.at(-1);
    if (last === undefined) throw new UsageError("refresh the space's keys first");
    // A shared space's epochs are opened by a device that builds version 3 packages.
    if (this.shared) return false;
    // A device that holds no key of the newest epoch (added, and the adder has
    // not opened an epoch for it yet) cannot wrap it: another device rotates.
    const rotated = this.epochDue(last) && this.keys.has(last.epoch) ? await this.tryRotate() : false;
    if (!rotated) this.checkNotBlocked(this.packages.at(-1)!);
    this.holdCompromisedPending();
    this.releaseHeld();
    return rotated;
  }

  private epochDue(last: KeyPackage): boolean {
    const state = this.device.registry();
    const maxAge = state.policy.get("max_epoch_age_s");
    const aged = typeof maxAge === "number" && maxAge > 0 && BigInt(this.device.clock()) - last.ts > BigInt(maxAge) * 1000n;
    return aged || needsRotation(last, state);
  }

  private async tryRotate(): Promise<boolean> {
    // True when this device stored the new epoch. A refused upload (409:
    // another device's package holds the epoch, or the relay claims so) is
    // accepted only if the package the relay then serves is safe to write
    // under; otherwise nothing may be written: rotation_blocked.
    const packages = await this.refreshKeys();
    const last = packages.at(-1)!;
    const pkg = this.buildPackage(last);
    try {
      await this.relay.putKeyPackage(this.spaceId, pkg);
    } catch (e) {
      if (!(e instanceof ConflictError) && !(e instanceof EpochError)) throw e;
      const newest = (await this.refreshKeys()).at(-1)!;
      this.checkNotBlocked(newest, e);
      return false;
    }
    const state = this.device.registry();
    this.setPackages([...this.packages, verifyKeyPackage(pkg, state, this.spaceId, last)]);
    return true;
  }

  private buildPackage(last: KeyPackage): Uint8Array {
    // The new epoch's package wraps the earlier keys a device added later
    // needs: the previous epoch's key (whose package leads further back), or,
    // after version 1 packages, every earlier key this device holds.
    const known = this.keys;
    if (!known.has(last.epoch)) throw new UsageError("this device lacks the space's previous key; sync first");
    const previousKeys: Uint8Array[] = [];
    if (last.version >= 2) {
      previousKeys.push(known.get(last.epoch)!);
    } else {
      for (let e = last.epoch; e >= 0n && known.has(e); e--) previousKeys.unshift(known.get(e)!);
    }
    return buildKeyPackage({ creator: this.device.keys, registry: this.device.registry(), space: this.spaceId,
      epoch: last.epoch + 1n, prev: last.hash, epochKey: randomBytes(32), tsMs: this.device.clock(), previousKeys });
  }

  private checkNotBlocked(newest: KeyPackage, cause?: SddsfError): void {
    const revoked = revokedSince(newest, this.device.registry());
    if (revoked.length === 0) return;
    const names = revoked.map((r) => `'${r.name}'`).join(", ");
    const why = cause ? ` ([${cause.code}] ${cause.message})` : "";
    throw new EpochError(`cannot rotate the key of space ${this.label()} after the revocation of ${names}: the relay ` +
      `refused this device's new key package${why} and serves no newer epoch without the revoked device (its newest is ` +
      `epoch ${newest.epoch}). Nothing is written under the old key, which the revoked device holds: your edits stay on ` +
      "this device. Sync again later; if this persists, the relay is suppressing the rotation (it may be colluding with " +
      "the revoked device): move the account to another relay", Code.ROTATION_BLOCKED);
  }

  private holdCompromisedPending(): void {
    // Pending ops sealed under an epoch that a device revoked since can read
    // are never pushed: they become held edits again and the chain head goes
    // back to what the log holds (every pending op is re-sealed, since they
    // form one chain after it).
    const state = this.device.registry();
    if (!this.pending.some((e) => this.compromised(e.header.epoch, state))) return;
    const parted = new Set<string>();
    for (const env of this.pending) {
      const edit = this.pendingEdit(env, parted);
      if (edit !== null) this.held.push(edit);
    }
    this.pending = [];
    this.resetHead(null);
  }

  private pendingEdit(env: OpEnvelope, parted: Set<string>): OpPayload | null {
    // The edit a pending op of this device carries: itself, or for a part of a
    // multi-part edit the whole edit kept when it was sealed (once).
    const key = this.keys.get(env.header.epoch);
    if (key === undefined) return null;
    let payload;
    try {
      payload = decodePayload(openOp(env, key));
    } catch (e) {
      if (e instanceof SddsfError) return null; // not an edit this device can read back
      throw e;
    }
    if (payload.kind === "edit") return { name: payload.name, updates: payload.updates };
    const digest = toHex(payload.digest);
    if (parted.has(digest)) return null;
    parted.add(digest);
    const whole = this.kept.get(digest);
    this.kept.delete(digest);
    return whole === undefined ? null : { name: whole.name, updates: whole.updates };
  }

  private releaseHeld(): void {
    // Seal the held edits of each document as one op (the epoch is safe now).
    if (this.held.length === 0 || this.keys.size === 0 || this.compromised(this.currentEpoch())) return;
    const byName = new Map<string, Uint8Array[]>();
    for (const h of this.held) byName.set(h.name, [...(byName.get(h.name) ?? []), ...h.updates]);
    this.held = [];
    for (const [name, updates] of byName) this.seal(name, updates);
  }

  // ------------------------------------------------------------------ writing

  /**
   * Seal `updates` to the document `name` as this device's next op (or, for an
   * edit too large for one op, its next ops: parts, §8.11), under the newest
   * epoch with the verified registry seq in `reg`, and queue it for
   * {@link push}. Under a compromised epoch the edit is held instead (empty
   * result) until {@link rotateIfDue} opens a new one.
   *
   * @throws UsageError no key yet, or an edit over `max_edit`/`max_parts`.
   */
  seal(name: string, updates: readonly Uint8Array[]): OpEnvelope[] {
    if (this.shared) {
      throw new UsageError(`space ${this.label()} is shared between accounts: this client reads it but does not write ` +
        "to it yet (write from a device of the Python client)");
    }
    const epoch = this.currentEpoch();
    const state = this.device.registry();
    if (this.compromised(epoch, state)) {
      this.held.push({ name, updates: [...updates] });
      return [];
    }
    const me = this.device.deviceId;
    let seq = (this.mine?.seq ?? 0n) + 1n;
    let prev = this.mine?.opId ?? GENESIS_PREV;
    const deps = new VersionVector([...this.chains.heads].filter(([a]) => a !== toHex(me))
      .map(([a, h]) => [fromHex(a), h.seq] as const));
    const seen: TreeHeadRef | null = this.head !== null && this.head.size > 0n ? { size: this.head.size, root: this.head.root } : null;
    const doc = docIdFor(this.spaceId, name);
    const reg = BigInt(state.seq);
    const probe: OpHeader = { version: 2, suite: 1, space: this.spaceId, doc, author: me, seq, prev, deps, epoch,
      ts: this.device.hlc.last, seen, nonce: new Uint8Array(24), reg };
    const largest = Math.min(maxEnvelope(this.device.relayLimits), DEFAULT_PROTOCOL_LIMITS.maxOp);
    const room = largest - encode(headerToWire(probe)).length - ENVELOPE_OVERHEAD;
    const payloads = splitEdit(name, updates, { maxPayload: room });
    const envs: OpEnvelope[] = [];
    for (const payload of payloads) { // parts of one edit: consecutive ops of the chain
      const ts = this.device.hlc.tick(this.device.clock());
      const env = sealOp(this.device.keys, { space: this.spaceId, doc, author: me, seq, prev, deps, epoch, ts, seen,
        nonce: randomBytes(24), reg }, payload, this.keys.get(epoch)!);
      envs.push(env);
      this.sent.set(seq, toHex(env.opId));
      seq += 1n;
      prev = env.opId;
    }
    const last = envs.at(-1)!;
    this.mine = { seq: last.header.seq, opId: last.opId };
    this.pending.push(...envs);
    if (envs.length > 1) {
      const first = decodePayload(payloads[0]!);
      if (first.kind === "part") this.kept.set(toHex(first.digest), { lastSeq: last.header.seq, name, updates: [...updates] });
    }
    return envs;
  }

  /**
   * Upload the pending ops in batches that fit the relay's limits; every
   * acknowledged op's inclusion proof is checked against the relay's signed
   * tree head before it leaves the queue. Refused ops whose edit must be
   * sealed again (chain fork, stale epoch, chain gap), and ops too large for
   * this relay, come back in `requeued`.
   *
   * @throws ProofError an acknowledgement without a valid proof.
   */
  async push(): Promise<PushReport> {
    let pushed = 0;
    const rejected: [string, string][] = [];
    const requeued: OpPayload[] = [];
    const parted = new Set<string>();
    if (this.pending.length === 0) return { pushed, rejected, requeued };
    const limits = await this.device.refreshRelayLimits();
    let lastOk: OpEnvelope | null = null;
    let reset = false;
    while (this.pending.length) {
      const [batch, unsendable] = nextBatch(this.pending, limits);
      if (unsendable) {
        // Queued for a relay with larger limits: sealed again in ops that fit
        // this one (on top of the last op it accepted), never dropped.
        this.resetHead(lastOk);
        for (const env of this.pending) {
          const edit = this.pendingEdit(env, parted);
          if (edit !== null) requeued.push(edit);
        }
        this.pending = [];
        break;
      }
      const [results, headRaw] = await this.relay.upload(this.spaceId, batch.map((e) => e.raw));
      const head = this.verifyHead(headRaw);
      batch.forEach((env, i) => {
        const r = results[i];
        if (r === undefined) throw new ProofError("the relay answered fewer results than ops");
        if (r.status === "accepted" || r.status === "duplicate") {
          if (r.offset === null || r.proof === null) throw new ProofError("the relay acknowledged an op without a proof");
          verifyInclusion(leafHash(env.raw), r.offset, head.size, r.proof, head.root);
          this.acked.set(r.offset, leafHash(env.raw));
          for (const [digest, k] of this.kept) if (k.lastSeq === env.header.seq) this.kept.delete(digest);
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
          const edit = this.pendingEdit(env, parted);
          if (edit !== null) requeued.push(edit);
        }
      });
      this.pending = this.pending.slice(batch.length);
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

  // ------------------------------------------------------------------ reading

  private verifyHead(raw: Uint8Array): TreeHead {
    return verifyTreeHead(raw, this.device.pinnedRelayKey(), this.spaceId);
  }

  /**
   * Pull every op after what this device verified and verify all of it (see
   * the module comment). Nothing changes unless everything verified.
   *
   * @throws ProofError (`proof_invalid`, `log_rollback`, `split_view`,
   *   `registry_withheld`, `tree_head_invalid`), and the relay's errors.
   */
  async pull(): Promise<PullReport> {
    let verified = this.tree;
    let snap: Snapshot | null = null;
    let basis: SnapBase | null = null;
    const alerts: [string, string][] = [];
    // A shared space is replayed: a snapshot would leave out the membership
    // entries before it, which judge the ops after it.
    if (verified.size === 0n && this.device.useSnapshots && !this.shared) {
      const start = await this.fetchSnapshot(alerts);
      if (start !== null) {
        [snap, basis] = start;
        verified = MerkleTree.fromFrontier(Frontier.fromHashes(snap.size, snap.frontier));
      }
    }
    const have = verified.size;
    const old = this.head;
    const fetched: [number, Uint8Array, Uint8Array][] = [];
    let head: TreeHead | null = null;
    let cursor = Number(have);
    let empty = 0; // empty pages in a row under a head beyond the cursor
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
      if (BigInt(cursor) >= head.size) break;
      if (ops.length === 0) {
        // The relay reads the page, then its head: an append between the two
        // serves no entry under a longer head. Ask again; a relay that keeps
        // doing so hides entries, refused by the root check below.
        if (++empty > EMPTY_PAGE_RETRIES) break;
        continue;
      }
      empty = 0;
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
      if (BigInt(offset) < tree.base) continue; // inside a snapshot's frontier: covered by the root check
      if (BigInt(offset) >= head.size) {
        throw new ProofError(`the relay's log (${head.size} entries) no longer holds this device's acknowledged op at offset ${offset}: it is rolling back history`,
          Code.LOG_ROLLBACK);
      }
      if (!bytesEqual(tree.hashRange(offset, offset + 1), leaf)) {
        throw new ProofError(`the relay dropped or replaced this device's acknowledged op at offset ${offset}`);
      }
    }
    return this.applyVerified(fetched, tree, head, snap, basis, alerts);
  }

  private async registryCovering(envs: readonly OpEnvelope[]): Promise<RegistryState> {
    // Each op names the registry seq its author had verified (header.reg): this
    // device needs at least that much of the registry to judge it. A relay that
    // serves such ops but not the entries is withholding the registry.
    let state = this.device.registry();
    const wanted = envs.reduce((m, e) => (e.header.reg !== null && e.header.reg > m ? e.header.reg : m), -1n);
    if (wanted <= BigInt(state.seq)) return state;
    state = await this.device.refreshRegistry();
    if (wanted > BigInt(state.seq)) {
      throw new ProofError(`an op was written after registry entry ${wanted}, but the relay serves the registry only up to ` +
        `entry ${state.seq}: it is withholding registry entries (a revocation?) from this device`, Code.REGISTRY_WITHHELD);
    }
    return state;
  }

  private leafOf(offset: number, raw: Uint8Array): OpEnvelope | MembershipEntry | null {
    // A pulled leaf decoded by its kind (§21.7). A leaf the relay listed ahead
    // must be the listed entry; an entry that does not decode refuses the pull;
    // an op that does not decode is refused below by the rules, with its code.
    const listed = this.listed?.get(offset);
    if (listed !== undefined && !bytesEqual(listed, raw)) {
      throw new ProofError(`the relay listed another membership entry at offset ${offset} than its log holds`);
    }
    let kind;
    try {
      kind = leafKind(raw);
    } catch (e) {
      if (!(e instanceof SddsfError)) throw e;
      kind = "op";
    }
    try {
      return kind === "member" ? decodeMembershipEntry(raw) : decodeEnvelope(raw);
    } catch (e) {
      if (!(e instanceof SddsfError)) throw e;
      if (kind === "op") return null;
      throw new ProofError(`the relay served a membership entry that does not decode: [${e.code}] ${e.message}`);
    }
  }

  private async judge(items: readonly (OpEnvelope | MembershipEntry | null)[], current: bigint): Promise<LogJudge> {
    // Who judges each leaf: this account's registry for its own space that is
    // not shared (fetched further only when an op names a later entry); else
    // the owner's before the space's membership and each op's author's member
    // registry at its position, every account named refreshed first (once per
    // generation), so that an op's `reg` is covered (else `registry_withheld`).
    const entries = items.filter((e): e is MembershipEntry => e !== null && !(e instanceof OpEnvelope));
    const members = this.device.members;
    const owner = this.ownerId();
    let ownerState: RegistryState;
    if (this.ownedHere && !this.fold.shared && entries.length === 0) {
      ownerState = await this.registryCovering(items.filter((e): e is OpEnvelope => e instanceof OpEnvelope));
    } else {
      await members.prepare(entries);
      const named = [toHex(owner), toHex(this.device.account.accountId), ...this.fold.state.members.keys(),
        ...entries.filter((e) => e.memberKey !== null).map((e) => toHex(e.member))];
      let regs = await members.refreshAll(named);
      // An op of a device no registry read in this sync lists, or that names a
      // later registry entry of its account, may be newer than that read (a
      // member added a device and wrote): read them all once more before judging.
      const ops = items.filter((e): e is OpEnvelope => e instanceof OpEnvelope);
      const listing = (env: OpEnvelope): RegistryState | undefined =>
        [...regs.values()].find((r) => r.device(env.header.author) !== undefined);
      if (ops.some((env) => { const r = listing(env); return r === undefined || (env.header.reg ?? 0n) > BigInt(r.seq); })) {
        members.newGeneration();
        regs = await members.refreshAll(named);
      }
      const state = regs.get(toHex(owner));
      if (state === undefined) {
        throw new ProofError(`the relay does not serve the registry of the space's owner (${toHex(owner).slice(0, 12)})`);
      }
      ownerState = state;
    }
    return new LogJudge(this.fold, { owner, ownerState, registryOf: (a) => members.registryOf(a), currentEpoch: current,
      packages: this.packages });
  }

  private async applyVerified(fetched: [number, Uint8Array, Uint8Array][], tree: MerkleTree, head: TreeHead,
    snap: Snapshot | null, basis: SnapBase | null, alerts: [string, string][]): Promise<PullReport> {
    const keys = this.keys;
    const chains = new MemoryChainView(snap !== null ? snap.chains : this.chains.heads);
    const older: [Uint8Array, TreeHeadRef][] = [];
    const items = fetched.map(([offset, , raw]) => this.leafOf(offset, raw));
    const current = keys.size ? [...keys.keys()].reduce((a, b) => (a > b ? a : b)) : 0n;
    const judge = await this.judge(items, current);
    // A snapshot is never taken while an assembly is open (§8.11): start fresh from one.
    const parts = new PartsReader(snap !== null ? new Map() : this.assemblies);
    const verifiedOps: AppliedOp[] = [];
    const skipped: SkippedOp[] = [];
    const own: OpEnvelope[] = [];
    fetched.forEach(([offset, , raw], i) => {
      const item = items[i]!;
      if (item !== null && !(item instanceof OpEnvelope)) {
        judge.entry(offset, item);
        return;
      }
      let env: OpEnvelope;
      let state = judge.ctx.ownerState; // (until the author's is known)
      try {
        const c = judge.context(item);
        state = c.registry;
        const verdict = verifyOp(item ?? raw, { space: this.spaceId, registry: state, epochs: c.window, chains, nowMs: null });
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
        return;
      }
      chains.record(env);
      this.checkGossip(env, offset, tree, older);
      const key = keys.get(env.header.epoch);
      if (key === undefined) throw new ProofError(`op at offset ${offset} uses an epoch this device has no key for`);
      if (bytesEqual(env.header.author, this.device.deviceId)) own.push(env);
      const payload = editOf(parts, this.spaceId, env, offset, openOp(env, key));
      if (payload !== null) verifiedOps.push({ offset, envelope: env, payload });
    });
    for (const [author, seen] of older) await this.checkOlderGossip(tree, author, seen);
    for (const r of judge.refused) {
      skipped.push({ offset: r.offset, author: r.entry.signer, seq: 0n, code: r.error.code,
        message: `membership entry (${r.entry.type}) refused: ${r.error.message}` });
    }
    // Everything verified: adopt the new state at once.
    const applied = verifiedOps.filter(({ envelope: env }) =>
      !(bytesEqual(env.header.author, this.device.deviceId) && this.sent.get(env.header.seq) === toHex(env.opId)));
    for (const env of own) {
      // The log holds ops of this device that this copy did not make (restored
      // from an older copy): adopt the log's chain head.
      if (this.mine === null || this.mine.seq <= env.header.seq) this.mine = { seq: env.header.seq, opId: env.opId };
      this.sent.set(env.header.seq, toHex(env.opId));
    }
    if (snap !== null) {
      this.baseFrontier = snap.frontier;
      this.snapBase = basis;
      // Until a trusted device other than its author corroborates it, the state
      // rests on the author's word (§18.7); a grounded start is dropped here.
      if (basis !== null && (basis.final || basis.by.length > 0)) this.snapBase = null;
    }
    this.assemblies = parts.state();
    this.tree = tree;
    this.head = head;
    this.chains = chains;
    for (const [offset, raw] of judge.entries) this.mlog.set(offset, raw);
    for (const r of judge.refused) this.mrefused.add(r.offset);
    this.fold = judge.fold;
    if (this.ahead !== null && this.ahead.state.applied.length <= this.fold.state.applied.length) {
      this.ahead = null;
      this.listed = null;
    }
    return { pulled: fetched.length, applied, snapshot: snap, skipped, size: head.size, alerts };
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

  // -------------------------------------------------------- snapshots (§18.7)

  private claimsOf(raw: Uint8Array): { id: Uint8Array; author: Uint8Array; size: bigint } | null {
    // A served snapshot's claims with its signature checked (any device of the
    // account); null if its author is not one. A bad signature or another
    // space means the relay served something no device wrote.
    try {
      const c = decodeSnapshot(raw);
      if (!bytesEqual(c.space, this.spaceId)) throw new ProofError("[wrong_context] it belongs to another space");
      const state = this.device.registry();
      const rec = state.device(c.author);
      if (rec === undefined) return null;
      // Signature and frontier, as check_snapshot_signature: open with no keys
      // stops at the epoch step, after both were checked.
      try {
        openSnapshot(raw, state, this.spaceId, new Map(), { acceptRevoked: true });
      } catch (e) {
        if (!(e instanceof EpochError)) throw e;
      }
      return { id: snapshotId(raw), author: c.author, size: c.size };
    } catch (e) {
      if (e instanceof AuthorizationError) return null;
      if (e instanceof SddsfError) throw new ProofError(`the relay served a snapshot that fails verification: [${e.code}] ${e.message}`);
      throw e;
    }
  }

  private async verdicts(doc: Uint8Array, claims: { id: Uint8Array; author: Uint8Array; size: bigint }):
    Promise<{ match: boolean; matchers: Uint8Array[]; dissent: Uint8Array[] }> {
    // The verified attestations the relay holds about the snapshot under `doc`
    // (signatures checked; ones about another snapshot or forged are ignored).
    const v = { match: false, matchers: [] as Uint8Array[], dissent: [] as Uint8Array[] };
    const [sid, raws] = await this.relay.snapshotAttestations(this.spaceId, doc);
    if (sid === null || !bytesEqual(sid, claims.id)) return v;
    for (const raw of raws) {
      let att;
      try {
        att = verifyAttestation(raw, this.device.registry(), this.spaceId, true);
      } catch (e) {
        if (e instanceof SddsfError) continue;
        throw e;
      }
      if (!bytesEqual(att.snapshot, claims.id) || att.size !== claims.size || !bytesEqual(att.doc, SPACE_SNAPSHOT_DOC) ||
        bytesEqual(att.attester, claims.author)) continue;
      const trusted = this.device.trusted(att.attester) && !bytesEqual(att.attester, this.device.deviceId);
      if (att.verdict === MISMATCH && trusted) v.dissent.push(att.attester);
      else if (att.verdict === MATCH) {
        v.match = true;
        if (trusted) v.matchers.push(att.attester);
      }
    }
    return v;
  }

  private async logComplete(): Promise<boolean> {
    // Pruning drops a prefix, so the log can be replayed iff entry 0 is there.
    const [page] = await this.relay.pull(this.spaceId, -1, 1);
    return page.length === 0 || page[0]!.envelope !== null;
  }

  private async fetchSnapshot(alerts: [string, string][]): Promise<[Snapshot, SnapBase] | null> {
    // In order: the current or the corroborated snapshot, if no trusted device
    // disputes it and its author is trusted or a trusted device (not its
    // author) attested it; else the log, when it is complete; else (history
    // pruned) a snapshot that a device other than its author attested.
    const judged: [{ id: Uint8Array; author: Uint8Array; size: bigint }, { match: boolean; matchers: Uint8Array[] }, Uint8Array][] = [];
    for (const doc of [SPACE_SNAPSHOT_DOC, CORROBORATED_SNAPSHOT_DOC]) {
      let raw: Uint8Array;
      try {
        [, raw] = await this.relay.getSnapshot(this.spaceId, doc);
      } catch (e) {
        if (e instanceof NotFoundError) continue;
        throw e;
      }
      const claims = this.claimsOf(raw);
      if (claims === null || this.distrusted.has(toHex(claims.id)) || judged.some(([c]) => bytesEqual(c.id, claims.id))) continue;
      const v = await this.verdicts(doc, claims);
      if (v.dissent.length) {
        alerts.push([Code.SNAPSHOT_MISMATCH, `device ${this.device.label(v.dissent[0]!)} reports that the snapshot of space ` +
          `${this.label()} written by device ${this.device.label(claims.author)} does not match the log; not used`]);
        continue;
      }
      judged.push([claims, v, raw]);
    }
    for (const [claims, v, raw] of judged) {
      if (v.matchers.length || this.device.trusted(claims.author)) {
        return this.loadFrom(raw, claims, v.matchers, false, alerts);
      }
    }
    if (judged.length === 0 || await this.logComplete()) return null;
    for (const [claims, v, raw] of judged) {
      if (v.match) return this.loadFrom(raw, claims, [], true, alerts);
    }
    return null;
  }

  private async loadFrom(raw: Uint8Array, claims: { id: Uint8Array; author: Uint8Array; size: bigint },
    by: Uint8Array[], final: boolean, alerts: [string, string][]): Promise<[Snapshot, SnapBase] | null> {
    try {
      const manifest = openSnapshot(raw, this.device.registry(), this.spaceId, this.keys, { acceptRevoked: true });
      const chunks: Uint8Array[] = [];
      for (const cid of manifest.chunkIds) {
        try {
          chunks.push(await this.relay.getSnapshotChunk(this.spaceId, cid));
        } catch (e) {
          if (e instanceof NotFoundError) throw new ProofError("the relay withheld a chunk of the snapshot it served");
          throw e;
        }
      }
      const snap = loadSnapshot(manifest, chunks, this.keys);
      return [snap, { id: snap.id, author: snap.author, size: snap.size, by, final }];
    } catch (e) {
      if (e instanceof EpochError) return null; // no key for its epoch: replay instead
      if (e instanceof ProofError) throw new ProofError(`the relay served a snapshot that fails verification: ${e.message}`);
      if (!(e instanceof SddsfError)) throw e;
      // Signed by a device of the account, yet unreadable: its author wrote it so.
      this.distrusted.add(toHex(claims.id));
      alerts.push([Code.SNAPSHOT_MISMATCH, `the snapshot of space ${this.label()} written by device ` +
        `${this.device.label(claims.author)} is unreadable ([${e.code}] ${e.message}); not used`]);
      return null;
    }
  }

  /** Distrust a snapshot (e.g. its documents are not valid Yjs state): never start from it again. */
  distrustSnapshot(id: Uint8Array): void {
    this.distrusted.add(toHex(id));
  }

  // ------------------------------------------------------------- persistence

  /**
   * This replica's whole state as one canonical value (no secrets but the
   * space's epoch keys are derivable only with the device's key: the store
   * encrypts it anyway). {@link importState} reads it back.
   */
  exportState(): Uint8Array {
    const tree = this.tree;
    const base = tree.base > 0n ? [tree.base, [...this.baseFrontier]] : null;
    const leaves: Uint8Array[] = [];
    for (let i = tree.base; i < tree.size; i++) leaves.push(tree.hashRange(Number(i), Number(i) + 1));
    const value: Encodable = new Map<string, Encodable>([
      ["v", STATE_VERSION],
      ["base", base],
      ["leaves", leaves],
      ["head", this.head?.raw ?? null],
      ["chains", [...this.chains.heads].map(([a, h]) => [fromHex(a), h.seq, h.opId, h.deps.toWire()])],
      ["packages", this.packages.map((p) => p.raw)],
      ["pending", this.pending.map((e) => e.raw)],
      ["held", this.held.map((h) => [h.name, [...h.updates]])],
      ["mine", this.mine === null ? null : [this.mine.seq, this.mine.opId]],
      ["sent", [...this.sent].map(([s, id]) => [s, fromHex(id)])],
      ["acked", [...this.acked].map(([o, l]) => [o, l])],
      ["asm", [...this.assemblies].map(([a, o]) => [fromHex(a), assemblyWire(o.assembly), [...o.chunks]])],
      ["kept", [...this.kept].map(([d, k]) => [fromHex(d), k.lastSeq, k.name, [...k.updates]])],
      ["snapbase", this.snapBase === null ? null : [this.snapBase.id, this.snapBase.author, this.snapBase.size,
        [...this.snapBase.by], this.snapBase.final]],
      ["distrusted", [...this.distrusted].map(fromHex)],
      ["owner", this.owner],
      ["mlog", [...this.mlog].map(([o, raw]) => [o, raw, this.mrefused.has(o)])],
    ]);
    return encode(value);
  }

  /**
   * Restore a state written by {@link exportState}. The key packages are
   * verified again against the current registry and the head against the
   * pinned relay key; the rest was written by this device and is read as such.
   *
   * @throws DecodeError a state of another version or shape (the store is damaged).
   */
  importState(data: Uint8Array): void {
    const m = decode(data, { maxSize: 1 << 30, maxDepth: 16, maxItems: 1 << 24 }) as Map<string, CborValue>;
    if (!(m instanceof Map) || m.get("v") !== STATE_VERSION) {
      throw new DecodeError("this space's stored state is of another version; it cannot be read by this build");
    }
    const get = <T>(k: string): T => m.get(k) as unknown as T;
    const base = get<[bigint | number, Uint8Array[]] | null>("base");
    const tree = base === null ? new MerkleTree() : MerkleTree.fromFrontier(Frontier.fromHashes(BigInt(base[0]), base[1]));
    this.baseFrontier = base === null ? [] : base[1];
    for (const leaf of get<Uint8Array[]>("leaves")) tree.append(leaf);
    this.tree = tree;
    const head = get<Uint8Array | null>("head");
    this.head = head === null ? null : this.verifyHead(head);
    const heads = new Map<string, ChainHead>();
    for (const [a, seq, opId, deps] of get<[Uint8Array, number | bigint, Uint8Array, CborValue][]>("chains")) {
      heads.set(toHex(a), { seq: BigInt(seq), opId, deps: VersionVector.fromWire(deps, "stored chain", 32, 1 << 20) });
    }
    this.chains = new MemoryChainView(heads);
    // (States written before shared spaces have neither key: this account's own space, no membership.)
    this.owner = get<Uint8Array | null | undefined>("owner") ?? null;
    const mlog = get<[number | bigint, Uint8Array, boolean][] | undefined>("mlog") ?? [];
    this.mlog = new Map(mlog.map(([o, raw]) => [Number(o), raw]));
    this.mrefused = new Set(mlog.filter(([, , refused]) => refused).map(([o]) => Number(o)));
    this.refold();
    // One-account packages are verified again against the owner's registry (a
    // joined space's as verified here from its pinned key); a shared space's
    // (version 3) were verified against the membership they name, which may be
    // ahead of the stored log: their chain is checked, the rest was verified
    // when they were stored (the store is authenticated).
    const ownerState = this.ownedHere ? this.device.registry() : this.device.members.registryOf(this.ownerId());
    const packages: KeyPackage[] = [];
    for (const raw of get<Uint8Array[]>("packages")) {
      const previous = packages.at(-1) ?? null;
      const pkg = decodeKeyPackage(raw);
      if (pkg.version < KEY_PACKAGE_VERSION_SHARED && ownerState !== undefined) {
        packages.push(verifyKeyPackage(raw, ownerState, this.spaceId, previous));
      } else {
        checkChain(pkg, this.spaceId, previous);
        packages.push(pkg);
      }
    }
    if (packages.length) this.setPackages(packages);
    this.pending = get<Uint8Array[]>("pending").map((r) => decodeEnvelope(r));
    this.held = get<[string, Uint8Array[]][]>("held").map(([name, updates]) => ({ name, updates }));
    const mine = get<[number | bigint, Uint8Array] | null>("mine");
    this.mine = mine === null ? null : { seq: BigInt(mine[0]), opId: mine[1] };
    this.sent = new Map(get<[number | bigint, Uint8Array][]>("sent").map(([s, id]) => [BigInt(s), toHex(id)]));
    this.acked = new Map(get<[number, Uint8Array][]>("acked").map(([o, l]) => [Number(o), l]));
    this.assemblies = new Map(get<[Uint8Array, CborValue[], Uint8Array[]][]>("asm").map(([a, w, chunks]) =>
      [toHex(a), { assembly: assemblyFromWire(w), chunks }]));
    this.kept = new Map(get<[Uint8Array, number | bigint, string, Uint8Array[]][]>("kept").map(([d, s, name, updates]) =>
      [toHex(d), { lastSeq: BigInt(s), name, updates }]));
    const sb = get<[Uint8Array, Uint8Array, number | bigint, Uint8Array[], boolean] | null>("snapbase");
    this.snapBase = sb === null ? null : { id: sb[0], author: sb[1], size: BigInt(sb[2]), by: sb[3], final: sb[4] };
    this.distrusted = new Set(get<Uint8Array[]>("distrusted").map(toHex));
  }

  /** The verified log size. */
  get size(): bigint {
    return this.tree.size;
  }

  /** This device's own chain head (seq), 0 before its first op here. */
  get ownSeq(): bigint {
    return this.mine?.seq ?? 0n;
  }

  /** Payloads not yet logged: pending ops (decrypted) and held edits, for a person. */
  unsentCount(): number {
    return this.pending.length + this.held.length;
  }
}

function assemblyWire(a: Assembly): Encodable[] {
  return [a.name, a.doc, a.count, a.total, a.digest, a.nextIndex, a.nextSeq, a.received];
}

function assemblyFromWire(w: CborValue[]): Assembly {
  const [name, doc, count, total, digest, nextIndex, nextSeq, received] = w as [string, Uint8Array, number, number,
    Uint8Array, number, number | bigint, number];
  return { name, doc, count: Number(count), total: Number(total), digest, nextIndex: Number(nextIndex),
    nextSeq: BigInt(nextSeq), received: Number(received) };
}

/** The next upload: pending ops that fit one request, or `[[], true]` from an op that cannot fit even alone. */
function nextBatch(pending: readonly OpEnvelope[], limits: RelayLimits): [OpEnvelope[], boolean] {
  const batch: OpEnvelope[] = [];
  const sizes: number[] = [];
  for (const env of pending) {
    if (!requestFits(limits, [env.raw.length])) return batch.length ? [batch, false] : [[], true];
    if (batch.length >= MAX_BATCH || !requestFits(limits, [...sizes, env.raw.length])) break;
    batch.push(env);
    sizes.push(env.raw.length);
  }
  return [batch, false];
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

