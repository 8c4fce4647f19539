/**
 * Spaces shared between accounts, as a reader judges them (docs/protocol.md
 * §21.7; mirrors `sddsf.protocol.sharing` and the pure half of
 * `sddsf.client.engine.members`).
 *
 * A shared space's log interleaves op envelopes and membership entries. The
 * two are told apart by their bytes alone ({@link leafKind}): an envelope is a
 * canonical CBOR array of four items, a membership entry an array of three, so
 * a relay cannot pass one off as the other.
 *
 * The entries are folded in log order (§21.3–21.4, {@link Fold}); a refused
 * entry changes nothing. Before the space's `create` entry the space is its
 * owner's alone and the op rules run with the owner's registry; from `create`
 * on, an op's author must be a device of exactly one member account that may
 * write *at the op's log position* ({@link SpaceMembers.writer}), and the rules
 * run with that member's registry and that account's positions in the key
 * packages ({@link LogJudge}). Nothing here does I/O: the caller supplies the
 * registries it verified from the pinned account keys.
 */

import { bytesEqual, fromHex, toHex } from "./bytes.js";
import { AuthorizationError, Code, ContextError, DecodeError, ProofError, SddsfError } from "./errors.js";
import type { OpEnvelope } from "./envelope.js";
import type { KeyPackage } from "./keypackage.js";
import { checkWrite, MembershipState, type MembershipEntry, type RegistryResolver } from "./membership.js";
import type { RegistryState } from "./registry.js";
import type { EpochWindow } from "./rules.js";

/** First byte of a canonical CBOR array of 3 / 4 items (major type 4). */
const ARRAY3 = 0x83;
const ARRAY4 = 0x84;

/** What a leaf of a space log holds. */
export type LeafKind = "op" | "member";

/**
 * The kind of a log leaf, from its first byte: both formats are canonical CBOR
 * arrays with a fixed item count (an envelope 4, §8.1; a membership entry 3,
 * §21.1), so the first byte decides and full decoding then checks the rest.
 *
 * @throws DecodeError `malformed`: neither.
 */
export function leafKind(leaf: Uint8Array): LeafKind {
  if (leaf[0] === ARRAY4) return "op";
  if (leaf[0] === ARRAY3) return "member";
  throw new DecodeError("a space log leaf is neither an op envelope nor a membership entry");
}

/**
 * A space's `create` entry must make the space's owner its first admin (the
 * membership rules check that `create` is signed by the account it names;
 * this binds that account to the owner this device joined).
 *
 * @throws AuthorizationError `not_authorized`.
 */
export function checkCreateOwner(entry: MembershipEntry, ownerAccount: Uint8Array): void {
  if (entry.type === "create" && !bytesEqual(entry.member, ownerAccount)) {
    throw new AuthorizationError("only the space's owner account may create its membership", Code.NOT_AUTHORIZED);
  }
}

/**
 * A space's membership after some entries, and the member set (account ids,
 * hex) after each applied entry, by entry hash (hex): what a version 3 key
 * package's `membership` names (§10.8).
 */
export class Fold {
  constructor(
    readonly state: MembershipState,
    readonly sets: ReadonlyMap<string, ReadonlySet<string>> = new Map(),
  ) {}

  /** The empty membership of `space`. */
  static empty(space: Uint8Array): Fold {
    return new Fold(new MembershipState(space));
  }

  /** Whether the space is shared (its `create` entry was applied). */
  get shared(): boolean {
    return this.state.applied.length > 0;
  }

  /** The fold after `entry` (refused: throws, and this fold stands). */
  apply(entry: MembershipEntry, registryOf: RegistryResolver): Fold {
    const state = this.state.apply(entry, registryOf);
    return new Fold(state, new Map(this.sets).set(toHex(entry.hash), new Set(state.members.keys())));
  }

  /** `membersAt` for {@link verifyKeyPackageV3}. */
  membersAt(hash: Uint8Array): ReadonlySet<string> | undefined {
    return this.sets.get(toHex(hash));
  }

  /**
   * This fold after `entries` in log order, each checked against `owner`
   * ({@link checkCreateOwner}); a refused entry changes nothing (§21.4), and
   * `onRefused` hears it.
   */
  more(entries: Iterable<MembershipEntry>, owner: Uint8Array, registryOf: RegistryResolver,
    onRefused: (entry: MembershipEntry, error: SddsfError) => void = () => {}): Fold {
    let fold: Fold = this;
    for (const e of entries) {
      try {
        checkCreateOwner(e, owner);
        fold = fold.apply(e, registryOf);
      } catch (err) {
        if (!(err instanceof SddsfError)) throw err;
        onRefused(e, err); // every member skips it alike
      }
    }
    return fold;
  }
}

/**
 * A shared space's membership at one log position and the member registries
 * this device verified (invariant expected of the caller: each was verified
 * from the account key pinned for that account).
 */
export class SpaceMembers {
  constructor(
    readonly membership: MembershipState,
    /** Account id (hex) → registry. */
    readonly registries: ReadonlyMap<string, RegistryState>,
  ) {}

  /**
   * The member account whose registry lists `device` (active or revoked).
   *
   * @throws ContextError `wrong_context`: a member's registry is not at hand and
   *   no other member lists the device; AuthorizationError `not_authorized`: no
   *   member lists the device, or two do (its ops have no single author).
   */
  authorAccount(device: Uint8Array): Uint8Array {
    const owners = [...this.membership.members.keys()].filter((a) => this.registries.get(a)?.device(device) !== undefined);
    if (owners.length > 1) {
      throw new AuthorizationError("the device is listed by two member accounts; its ops have no single author",
        Code.NOT_AUTHORIZED);
    }
    if (owners.length === 1) return this.registries.get(owners[0]!)!.accountId;
    if ([...this.membership.members.keys()].some((a) => !this.registries.has(a))) {
      throw new ContextError("a member's registry is not at hand; sync it first");
    }
    throw new AuthorizationError("the op's author is not a device of any member of this space", Code.NOT_AUTHORIZED);
  }

  /**
   * The author's account and registry, if that account may write here.
   *
   * @throws ContextError, AuthorizationError as {@link authorAccount};
   *   `not_authorized` for a reader (`checkWrite`).
   */
  writer(device: Uint8Array): [Uint8Array, RegistryState] {
    const account = this.authorAccount(device);
    checkWrite(this.membership, account);
    return [account, this.registries.get(toHex(account))!];
  }
}

/**
 * The accounts an epoch's key was sealed for, each with its registry position
 * (hex → seq): a version 3 package's `members`, else (versions 1 and 2) the
 * owner alone at the package's `registry_seq`.
 */
export function holdersOf(pkg: KeyPackage, owner: Uint8Array): Map<string, bigint> {
  if (pkg.members === null) return new Map([[toHex(owner), pkg.registrySeq]]);
  return new Map(pkg.members.map(([a, seq]) => [toHex(a), seq]));
}

/** A membership entry of a pulled page that the fold refused (it changes nothing). */
export interface RefusedEntry {
  readonly offset: number;
  readonly entry: MembershipEntry;
  readonly error: SddsfError;
}

/** What a {@link LogJudge} needs besides the fold. */
export interface JudgeContext {
  /** The space's owner account. */
  readonly owner: Uint8Array;
  /** The owner's verified registry: it judges every op before the space's `create` entry. */
  readonly ownerState: RegistryState;
  /** Each account's verified registry (from its pinned key), or undefined. */
  readonly registryOf: RegistryResolver;
  /** The newest epoch this device holds a key of. */
  readonly currentEpoch: bigint;
  /** The space's verified key packages, by epoch. */
  readonly packages: readonly KeyPackage[];
}

/**
 * Judges the leaves of one pulled page in log order (§21.7; mirrors
 * `LogJudge`): membership entries move the fold; each op gets the registry of
 * its author's member account at its position (the owner's before the space's
 * membership) and that account's positions in the epochs' key packages.
 */
export class LogJudge {
  /** `[offset, entry bytes]` of every membership leaf judged (kept with the verified log). */
  readonly entries: [number, Uint8Array][] = [];
  /** The entries the fold refused. */
  readonly refused: RefusedEntry[] = [];

  constructor(
    /** The fold so far (after the entries before this page). */
    public fold: Fold,
    readonly ctx: JudgeContext,
  ) {}

  /** Fold the entry at `offset`; a refused one changes nothing and is recorded. */
  entry(offset: number, e: MembershipEntry): void {
    this.fold = this.fold.more([e], this.ctx.owner, this.ctx.registryOf,
      (entry, error) => this.refused.push({ offset, entry, error }));
    this.entries.push([offset, e.raw]);
  }

  /**
   * The registry and epoch window that judge `env` here (`null`: an op that
   * does not decode, judged, and refused, by the owner's rules).
   *
   * @throws AuthorizationError the author's account may not write here;
   *   ContextError a member's registry is not at hand; ProofError
   *   `registry_withheld`: the author's account registry is behind the op's `reg`.
   */
  context(env: OpEnvelope | null): { registry: RegistryState; window: EpochWindow } {
    let account = this.ctx.owner;
    let registry = this.ctx.ownerState;
    if (this.fold.shared && env !== null) {
      const regs = new Map<string, RegistryState>();
      for (const a of this.fold.state.members.keys()) {
        const reg = this.ctx.registryOf(fromHex(a));
        if (reg !== undefined) regs.set(a, reg);
      }
      [account, registry] = new SpaceMembers(this.fold.state, regs).writer(env.header.author);
    }
    if (env !== null && env.header.reg !== null && env.header.reg > BigInt(registry.seq)) {
      throw new ProofError(`an op was written after registry entry ${env.header.reg} of its author's account, but the ` +
        `relay serves that registry only up to entry ${registry.seq}`, Code.REGISTRY_WITHHELD);
    }
    const who = toHex(account);
    const packageSeqs = this.ctx.packages.map((p) => holdersOf(p, this.ctx.owner).get(who) ?? 0n);
    return { registry, window: { current: this.ctx.currentEpoch, startedMs: 0, packageSeqs } };
  }
}
