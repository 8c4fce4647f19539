/**
 * Space membership entries (docs/protocol.md §21): decoding, verification in
 * log order, and the read/write queries. Mirrors src/sddsf/protocol/membership.py;
 * a pulled space log's entries are folded with it by `./sharing.js` (§21.7).
 */

import { bytesEqual, key, zeros } from "./bytes.js";
import { decode, isMap } from "./cbor.js";
import type { Ed25519PublicKey } from "./crypto.js";
import { SPACE_ID_SIZE } from "./envelope.js";
import { AuthorizationError, Code, ContextError, DecodeError, MembershipError, SddsfError } from "./errors.js";
import { AccountPublic, ID_SIZE } from "./identity.js";
import { labelled, MEMBERSHIP_ENTRY, MEMBERSHIP_SIG, taggedHash } from "./labels.js";
import { decodeLimits, DEFAULT_PROTOCOL_LIMITS, type ProtocolLimits } from "./limits.js";
import type { RegistryState } from "./registry.js";
import { checkVersion, expectMap, versionOfMap } from "./schema.js";

export const MEMBERSHIP_VERSION = 1;
/** Bytes of one encoded entry. */
export const MAX_MEMBERSHIP_ENTRY = 2048;

export type MembershipEntryType = "create" | "add" | "role" | "remove" | "leave";
export type Role = "reader" | "writer" | "admin";

const COMMON = ["v", "space", "type", "prev", "member", "signer", "device", "registry_seq", "ts"] as const;
const TYPE_FIELDS: Record<MembershipEntryType, readonly string[]> = {
  create: ["account_key", "recovery_key", "role"],
  add: ["account_key", "recovery_key", "role"],
  role: ["role"],
  remove: [],
  leave: [],
};
const BY_ADMIN: ReadonlySet<MembershipEntryType> = new Set(["add", "role", "remove"]);
const ROLES: ReadonlySet<string> = new Set(["reader", "writer", "admin"]);

/** `registryOf(accountId)`: that account's registry, verified by the caller, or undefined. */
export type RegistryResolver = (accountId: Uint8Array) => RegistryState | undefined;

/** One decoded (not yet verified) entry. */
export interface MembershipEntry {
  readonly type: MembershipEntryType;
  readonly space: Uint8Array;
  readonly prev: Uint8Array;
  readonly member: Uint8Array;
  readonly signer: Uint8Array;
  readonly device: Uint8Array;
  readonly registrySeq: bigint;
  readonly ts: bigint;
  readonly role: Role | null;
  readonly memberKey: AccountPublic | null;
  readonly bodyBytes: Uint8Array;
  readonly signature: Uint8Array;
  readonly raw: Uint8Array;
  readonly hash: Uint8Array;
}

/** An entry's hash: what a later entry's `prev` names. */
export function membershipEntryHash(entryBytes: Uint8Array): Uint8Array {
  return taggedHash(MEMBERSHIP_ENTRY, entryBytes);
}

function isType(value: string): value is MembershipEntryType {
  return Object.prototype.hasOwnProperty.call(TYPE_FIELDS, value);
}

/**
 * Decode one entry's structure (§21.2).
 *
 * @throws DecodeError, KeyValidationError; MembershipError for a member id that is not its key's.
 */
export function decodeMembershipEntry(data: Uint8Array, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): MembershipEntry {
  if (data.length > MAX_MEMBERSHIP_ENTRY) {
    throw new DecodeError(`membership entry of ${data.length} bytes exceeds the limit of ${MAX_MEMBERSHIP_ENTRY}`,
      Code.TOO_LARGE);
  }
  const dl = decodeLimits(limits, MAX_MEMBERSHIP_ENTRY);
  const outer = decode(data, dl);
  if (!Array.isArray(outer) || outer.length !== 3) throw new DecodeError("membership entry: expected [version, body, signature]");
  const [version, bodyBytes, signature] = outer;
  checkVersion(version, MEMBERSHIP_VERSION, "membership entry");
  if (!(bodyBytes instanceof Uint8Array) || !(signature instanceof Uint8Array) || signature.length !== 64) {
    throw new DecodeError("membership entry: the body is a byte string and the signature 64 bytes");
  }
  const body = decode(bodyBytes, dl);
  versionOfMap(body, MEMBERSHIP_VERSION, "membership entry body");
  const kind = isMap(body) ? body.get("type") : undefined;
  if (typeof kind !== "string") throw new DecodeError("membership entry body: expected a map with a text 'type'");
  if (!isType(kind)) throw new DecodeError(`membership entry type '${kind}' is unknown`, Code.UNSUPPORTED_VERSION);
  const f = expectMap(body, `membership ${kind} entry`, [...COMMON, ...TYPE_FIELDS[kind]]);
  let role: Role | null = null;
  if (f.has("role")) {
    const r = f.str("role", 16);
    if (!ROLES.has(r)) throw new DecodeError(`membership ${kind} entry: role must be reader, writer or admin`);
    role = r as Role;
  }
  const member = f.bytes("member", { size: ID_SIZE });
  let memberKey: AccountPublic | null = null;
  if (f.has("account_key")) {
    memberKey = AccountPublic.fromKeys(f.bytes("account_key", { size: 32 }), f.bytes("recovery_key", { size: 32 }));
    if (!bytesEqual(memberKey.accountId, member)) {
      throw new MembershipError(`membership ${kind} entry: the member id is not the id of the account key it carries`);
    }
  }
  const raw = new Uint8Array(data);
  return {
    type: kind, space: f.bytes("space", { size: SPACE_ID_SIZE }), prev: f.bytes("prev", { size: 32 }), member,
    signer: f.bytes("signer", { size: ID_SIZE }), device: f.bytes("device", { size: ID_SIZE }),
    registrySeq: f.u64("registry_seq"), ts: f.u64("ts"), role, memberKey, bodyBytes, signature, raw,
    hash: membershipEntryHash(raw),
  };
}

/** One member account: its role and the account key pinned when it was added. */
export interface Member {
  readonly role: Role;
  readonly key: AccountPublic;
}

/** The verified membership of one space (§21.3). Immutable: {@link apply} returns a new state. */
export class MembershipState {
  constructor(
    readonly space: Uint8Array,
    /** Members by account id (hex). */
    readonly members: ReadonlyMap<string, Member> = new Map(),
    /** Hashes of the applied entries, in log order. */
    readonly applied: readonly Uint8Array[] = [],
    /** Per signer account (hex), the largest `registry_seq` an applied entry stated. */
    readonly registrySeqs: ReadonlyMap<string, bigint> = new Map(),
    private readonly appliedSet: ReadonlySet<string> = new Set(),
  ) {}

  /** The newest applied entry's hash (zeros before `create`). */
  get head(): Uint8Array {
    return this.applied.length > 0 ? this.applied[this.applied.length - 1]! : zeros(32);
  }

  roleOf(account: Uint8Array): Role | null {
    return this.members.get(key(account))?.role ?? null;
  }

  /** Account ids (hex) of the admins, sorted. */
  admins(): string[] {
    return [...this.members].filter(([, m]) => m.role === "admin").map(([a]) => a).sort();
  }

  /**
   * Verify the next entry of the log against this state (§21.3) and return the new state.
   *
   * @throws DecodeError, KeyValidationError, ContextError, AuthorizationError, SignatureError, MembershipError.
   */
  apply(data: Uint8Array | MembershipEntry, registryOf: RegistryResolver): MembershipState {
    const e = data instanceof Uint8Array ? decodeMembershipEntry(data) : data;
    if (!bytesEqual(e.space, this.space)) throw new ContextError("membership entry belongs to another space");
    if (this.appliedSet.has(key(e.hash))) throw new MembershipError("membership entry was already applied (a replay)");
    const deviceKey = deviceKeyOf(e, this.signerKey(e), registryOf);
    if (e.registrySeq < (this.registrySeqs.get(key(e.signer)) ?? 0n)) {
      throw new ContextError("membership entry states an older registry position than an earlier entry of its signer account");
    }
    deviceKey.verify(labelled(MEMBERSHIP_SIG, e.bodyBytes), e.signature);
    this.checkRules(e);
    return this.applied_(e);
  }

  private signerKey(e: MembershipEntry): AccountPublic {
    if (e.type === "create") {
      if (!bytesEqual(e.member, e.signer) || e.memberKey === null) {
        throw new MembershipError("a create entry makes its signer account the owner");
      }
      return e.memberKey;
    }
    const m = this.members.get(key(e.signer));
    if (m === undefined) throw new AuthorizationError("membership entry signer is not a member of this space", Code.NOT_AUTHORIZED);
    if (BY_ADMIN.has(e.type) && m.role !== "admin") {
      throw new AuthorizationError(`only an admin may sign a ${e.type} entry`, Code.NOT_AUTHORIZED);
    }
    if (e.type === "leave" && !bytesEqual(e.member, e.signer)) {
      throw new AuthorizationError("a leave entry is signed by the leaving member", Code.NOT_AUTHORIZED);
    }
    return m.key;
  }

  private checkRules(e: MembershipEntry): void {
    if (e.type === "create") {
      if (this.applied.length > 0) throw new MembershipError("create must be the first membership entry");
      if (!bytesEqual(e.prev, zeros(32)) || e.role !== "admin") {
        throw new MembershipError("create has prev zeros and makes the owner an admin");
      }
      return;
    }
    if (!this.appliedSet.has(key(e.prev))) {
      throw new ContextError("membership entry builds on an entry this membership did not apply");
    }
    const target = this.members.get(key(e.member));
    if (e.type === "add") {
      if (target !== undefined) throw new MembershipError("account is already a member (change its role instead)");
      return;
    }
    if (target === undefined) throw new MembershipError(`${e.type}: the account is not a member`);
    if (e.type === "role" && e.role === target.role) throw new MembershipError(`member already has the role ${target.role}`);
    const admins = this.admins();
    if (target.role === "admin" && e.role !== "admin" && admins.length === 1 && admins[0] === key(e.member)) {
      throw new MembershipError("the last admin cannot be removed, demoted or leave: make another member admin first");
    }
  }

  private applied_(e: MembershipEntry): MembershipState {
    const members = new Map(this.members);
    const id = key(e.member);
    if (e.role !== null && e.memberKey !== null) members.set(id, { role: e.role, key: e.memberKey });
    else if (e.role !== null) members.set(id, { role: e.role, key: members.get(id)!.key });
    else members.delete(id);
    const seqs = new Map(this.registrySeqs).set(key(e.signer), e.registrySeq);
    return new MembershipState(this.space, members, [...this.applied, e.hash], seqs,
      new Set([...this.appliedSet, key(e.hash)]));
  }
}

function deviceKeyOf(e: MembershipEntry, account: AccountPublic, registryOf: RegistryResolver): Ed25519PublicKey {
  // Device ids are never re-added (§9.6): the current verified registry answers for earlier positions.
  const reg = registryOf(e.signer);
  if (reg === undefined) throw new ContextError("the signer account's registry is not at hand; sync it first");
  if (!bytesEqual(reg.account.signingKey.raw, account.signingKey.raw) || !bytesEqual(reg.account.recoveryKey, account.recoveryKey)) {
    throw new AuthorizationError("the signer's registry belongs to another account key than the one pinned in the membership",
      Code.NOT_AUTHORIZED);
  }
  if (e.registrySeq > BigInt(reg.seq)) {
    throw new ContextError("membership entry refers to registry entries this device has not seen; sync the registry first");
  }
  const rec = reg.device(e.device);
  if (rec === undefined || BigInt(rec.addedSeq) > e.registrySeq) {
    throw new AuthorizationError("membership entry device is not a device of its signer account at the stated registry position",
      Code.UNKNOWN_DEVICE);
  }
  if (rec.revokedSeq !== null && BigInt(rec.revokedSeq) <= e.registrySeq) {
    throw new AuthorizationError("membership entry device was revoked by the stated registry position", Code.REVOKED);
  }
  return rec.publicId.signingKey;
}

/** The state after a log, and the entries refused on the way (log index, error). */
export interface FoldResult {
  readonly state: MembershipState;
  readonly refused: readonly [number, SddsfError][];
}

/** Apply `entries` in log order; a refused entry changes nothing and the fold goes on (§21.4). */
export function foldMembership(space: Uint8Array, entries: readonly Uint8Array[], registryOf: RegistryResolver,
  start?: MembershipState): FoldResult {
  let state = start ?? new MembershipState(space);
  const refused: [number, SddsfError][] = [];
  entries.forEach((data, i) => {
    try {
      state = state.apply(data, registryOf);
    } catch (exc) {
      if (!(exc instanceof SddsfError)) throw exc;
      refused.push([i, exc]);
    }
  });
  return { state, refused };
}

/** Whether `account` is an admin. */
export function isAdmin(state: MembershipState, account: Uint8Array): boolean {
  return state.roleOf(account) === "admin";
}

/** Whether `account` is a member (every role reads). */
export function canRead(state: MembershipState, account: Uint8Array): boolean {
  return state.roleOf(account) !== null;
}

/** Whether `account` is a writer or an admin. */
export function canWrite(state: MembershipState, account: Uint8Array): boolean {
  const role = state.roleOf(account);
  return role === "writer" || role === "admin";
}

/**
 * Refuse a write by a non-member or a reader.
 *
 * @throws AuthorizationError `not_authorized`.
 */
export function checkWrite(state: MembershipState, account: Uint8Array): void {
  const role = state.roleOf(account);
  if (role === null) throw new AuthorizationError("the account is not a member of this space", Code.NOT_AUTHORIZED);
  if (role === "reader") throw new AuthorizationError("the account is a reader of this space and may not write", Code.NOT_AUTHORIZED);
}
