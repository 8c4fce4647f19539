/**
 * The device registry: the account's signed, hash-chained sigchain
 * (docs/protocol.md §9; mirrors `sddsf.protocol.registry`).
 *
 * ```
 * entry = [version, body_bytes, sigs]      sigs = {"by"} | {"by", "new"}
 * body  = {v, account, seq, prev, type, ts, signer, ...type fields}
 * ```
 *
 * Every device verifies the chain from genesis against the pinned account key
 * ({@link verifyRegistry}); approval entries (§9.8) are applied by
 * {@link step} from `./approval.js`. Sequence numbers and timestamps are
 * uint64 on the wire and compared exactly (bigint).
 */

import * as approval from "./approval.js";
import type { Policy, PolicyValue, Proposal } from "./approval.js";
import { bytesEqual, compareBytes, fromHex, toHex, zeros } from "./bytes.js";
import { decode, encode, isInt, isMap, type CborValue, type Encodable } from "./cbor.js";
import type { Ed25519PublicKey } from "./crypto.js";
import { AuthorizationError, Code, DecodeError, RegistryError, SignatureError, UsageError } from "./errors.js";
import { AccountKeys, AccountPublic, ID_SIZE, type DeviceKeys, type DevicePublic } from "./identity.js";
import * as labels from "./labels.js";
import { labelled, taggedHash } from "./labels.js";
import { decodeLimits, DEFAULT_PROTOCOL_LIMITS, type ProtocolLimits } from "./limits.js";
import { checkVersion, expectMap, versionOfMap, type Fields } from "./schema.js";

/** The registry format version this build speaks. */
export const REGISTRY_VERSION = 1;
const ZERO = zeros(32);
const COMMON = ["v", "account", "seq", "prev", "type", "ts", "signer"];

/** Kinds of registry entry. */
export type EntryType = "genesis" | "add" | "revoke" | "policy" | "recover" | "propose" | "approve" | "veto" | "enact";

const TYPE_FIELDS: Readonly<Record<EntryType, readonly string[]>> = {
  genesis: ["account_key", "recovery_key", "device"],
  add: ["device"],
  revoke: ["target", "reason", "cutoff"],
  policy: ["policy"],
  recover: ["device", "revoke"],
  propose: ["action"],
  approve: ["proposal"],
  veto: ["proposal", "reason"],
  enact: ["proposal", "cutoff"],
};
const INTRODUCES_DEVICE: ReadonlySet<EntryType> = new Set(["genesis", "add", "recover"]);
const ACCOUNT_ONLY: ReadonlySet<EntryType> = new Set(["genesis", "recover"]);
/** Direct device changes; a device may not sign them while the policy governs them. */
const GOVERNED: ReadonlySet<EntryType> = new Set(["add", "revoke", "policy"]);
/** The approval entry types (§9.8). */
export const APPROVAL_TYPES: ReadonlySet<EntryType> = new Set(["propose", "approve", "veto", "enact"]);

/** Whether a device may act for the account. */
export type DeviceStatus = "active" | "revoked";

/** Anything that signs: device keys or account keys. */
export interface Signer {
  sign(message: Uint8Array): Uint8Array;
}

/** What the registry knows about one device. */
export interface DeviceRecord {
  readonly publicId: DevicePublic;
  readonly name: string;
  readonly status: DeviceStatus;
  readonly addedBy: Uint8Array;
  readonly addedSeq: number;
  readonly addedTs: bigint;
  readonly revokedSeq: number | null;
  readonly revokedBy: Uint8Array | null;
  /** Per space (hex id): the last seq of this device that stays valid history after its revocation. */
  readonly cutoff: ReadonlyMap<string, bigint>;
  readonly deviceId: Uint8Array;
}

/** One decoded (not yet verified) entry. */
export interface RegistryEntry {
  readonly type: EntryType;
  readonly account: Uint8Array;
  readonly seq: bigint;
  readonly prev: Uint8Array;
  readonly ts: bigint;
  readonly signer: Uint8Array;
  readonly fields: Fields;
  readonly bodyBytes: Uint8Array;
  readonly signature: Uint8Array;
  readonly countersignature: Uint8Array | null;
  readonly raw: Uint8Array;
  readonly hash: Uint8Array;
}

/** The hash that links the next entry (`prev`) to this one. */
export function entryHash(entryBytes: Uint8Array): Uint8Array {
  return taggedHash(labels.REGISTRY_ENTRY, entryBytes);
}

function isEntryType(value: string): value is EntryType {
  return Object.prototype.hasOwnProperty.call(TYPE_FIELDS, value);
}

/**
 * Decode one entry's structure (§9.4; signatures are checked by {@link RegistryState.apply}).
 *
 * @throws DecodeError malformed, too large or an unsupported version.
 */
export function decodeEntry(data: Uint8Array, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): RegistryEntry {
  if (data.length > limits.maxRegistryEntry) {
    throw new DecodeError(`registry entry of ${data.length} bytes exceeds the limit of ${limits.maxRegistryEntry}`,
      Code.TOO_LARGE);
  }
  const dl = decodeLimits(limits, limits.maxRegistryEntry);
  const outer = decode(data, dl);
  if (!Array.isArray(outer) || outer.length !== 3) throw new DecodeError("registry entry: expected [version, body, signatures]");
  const [version, bodyBytes, sigs] = outer;
  checkVersion(version, REGISTRY_VERSION, "registry entry");
  if (!(bodyBytes instanceof Uint8Array)) throw new DecodeError("registry entry: body must be a byte string");
  const s = expectMap(sigs, "registry entry signatures", ["by"], ["new"]);
  const signature = s.bytes("by", { size: 64 });
  const cosig = s.has("new") ? s.bytes("new", { size: 64 }) : null;
  const body = decode(bodyBytes, dl);
  versionOfMap(body, REGISTRY_VERSION, "registry entry body");
  const kind = isMap(body) ? body.get("type") : undefined;
  if (typeof kind !== "string") throw new DecodeError("registry entry body: expected a map with a text 'type'");
  if (!isEntryType(kind)) throw new DecodeError(`registry entry type '${kind}' is unknown`, Code.UNSUPPORTED_VERSION);
  const f = expectMap(body, `registry ${kind} entry`, [...COMMON, ...TYPE_FIELDS[kind]]);
  const introduces = INTRODUCES_DEVICE.has(kind) || (kind === "propose" && approval.actionTypeOf(f.raw("action")) === "add");
  if ((cosig === null) === introduces) {
    throw new DecodeError(`registry ${kind} entry: a countersignature is ${introduces ? "required" : "not allowed"}`);
  }
  const account = f.bytes("account", { size: ID_SIZE });
  const seq = f.u64("seq");
  const prev = f.bytes("prev", { size: 32 });
  const ts = f.u64("ts");
  const signer = f.bytes("signer", { size: ID_SIZE });
  const raw = new Uint8Array(data);
  return { type: kind, account, seq, prev, ts, signer, fields: f, bodyBytes, signature, countersignature: cosig, raw,
    hash: entryHash(raw) };
}

function cutoffOf(value: CborValue, what: string): Map<string, bigint> {
  // [[space_id, seq], ...] sorted by space id, unique, seq >= 1: one encoding.
  if (!Array.isArray(value) || value.length > 65_536) throw new DecodeError(`${what}: expected an array of [space id, seq] pairs`);
  const cutoff = new Map<string, bigint>();
  let previous: Uint8Array = new Uint8Array(0);
  for (const item of value) {
    if (!Array.isArray(item) || item.length !== 2 || !(item[0] instanceof Uint8Array) || item[0].length !== 16 ||
      !isInt(item[1]) || BigInt(item[1]) < 1n) {
      throw new DecodeError(`${what}: each entry is [16-byte space id, seq >= 1]`);
    }
    if (compareBytes(item[0], previous) <= 0) throw new DecodeError(`${what}: entries must be sorted by space id, without repeats`);
    previous = item[0];
    cutoff.set(toHex(item[0]), BigInt(item[1]));
  }
  return cutoff;
}

/** Wire form of a revocation cutoff: `[[space_id, last valid seq], ...]` (space ids as hex keys). */
export function cutoffField(cutoff: ReadonlyMap<string, bigint>): [Uint8Array, bigint][] {
  return [...cutoff].filter(([, s]) => s > 0n).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([space, s]) => [fromHex(space), s]);
}

type Target = [Uint8Array, Map<string, bigint>];

/** The verified registry after applying entries `0..seq`. Immutable: {@link apply} returns a new state. */
export class RegistryState {
  constructor(
    readonly account: AccountPublic,
    /** Device records by device id (hex). */
    readonly devices: ReadonlyMap<string, DeviceRecord>,
    readonly policy: Policy,
    readonly seq: number,
    readonly head: Uint8Array,
    readonly entryHashes: readonly Uint8Array[],
    readonly limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS,
    /** Every proposal ever made, by proposal id (hex). */
    readonly proposals: ReadonlyMap<string, Proposal> = new Map(),
    /** The largest entry ts so far (approval entries may not go back). */
    readonly lastTs: bigint = 0n,
    /** Registry seqs of every revocation, ascending (one per revoked device). */
    readonly revokedSeqs: readonly number[] = [],
    /** Dates of the last `limits.maxAddsPerWindow` device-signed introductions. */
    readonly recentAdds: readonly bigint[] = [],
  ) {}

  /**
   * Whether some device was revoked at a registry seq `r` with
   * `after < r <= upTo` (e.g. after a key package was made).
   */
  revokedBetween(after: number | bigint, upTo: number | bigint): boolean {
    const seqs = this.revokedSeqs;
    const lo0 = BigInt(after);
    let lo = 0;
    let hi = seqs.length;
    while (lo < hi) { // the first revocation after `after` (seqs ascend)
      const mid = (lo + hi) >> 1;
      if (BigInt(seqs[mid]!) <= lo0) lo = mid + 1;
      else hi = mid;
    }
    return lo < seqs.length && BigInt(seqs[lo]!) <= BigInt(upTo);
  }

  /** The account id. */
  get accountId(): Uint8Array {
    return this.account.accountId;
  }

  /** The record of `deviceId`, or undefined if the registry never had it. */
  device(deviceId: Uint8Array): DeviceRecord | undefined {
    return this.devices.get(toHex(deviceId));
  }

  /** Whether `deviceId` is a registered, non-revoked device. */
  isActive(deviceId: Uint8Array): boolean {
    return this.device(deviceId)?.status === "active";
  }

  /** Active devices, in the order they were added. */
  activeDevices(): DeviceRecord[] {
    return [...this.devices.values()].filter((r) => r.status === "active").sort((a, b) => a.addedSeq - b.addedSeq);
  }

  /** The policy's approval settings. */
  rules(): approval.ApprovalRules {
    return approval.rulesOf(this.policy);
  }

  /** Proposals still pending and not expired at `nowMs`, oldest first. */
  openProposals(nowMs: bigint): Proposal[] {
    return [...this.proposals.values()].filter((p) => approval.openAt(p, nowMs)).sort((a, b) => a.seq - b.seq);
  }

  /** Key of an identity allowed to sign entries: the account or an active device. */
  signerKey(signer: Uint8Array): Ed25519PublicKey | undefined {
    if (bytesEqual(signer, this.accountId)) return this.account.signingKey;
    const rec = this.device(signer);
    return rec?.status === "active" ? rec.publicId.signingKey : undefined;
  }

  /**
   * Verify the next entry against this state and return the new state (§9.6
   * step 3). Re-applying an entry already in the chain returns this state.
   *
   * @throws RegistryError `registry_fork`, `registry_invalid`; AuthorizationError
   *   `not_authorized`; SignatureError; KeyValidationError; DecodeError.
   */
  apply(data: Uint8Array | RegistryEntry): RegistryState {
    const e = data instanceof Uint8Array ? decodeEntry(data, this.limits) : data;
    const seq = BigInt(this.seq);
    if (e.seq <= seq && bytesEqual(this.entryHashes[Number(e.seq)]!, e.hash)) return this;
    if (e.seq > seq + 1n) throw new RegistryError(`registry gap: expected seq ${seq + 1n}, got ${e.seq}`);
    if (e.seq <= seq || !bytesEqual(e.prev, this.head)) {
      this.checkForkEvidence(e);
      throw new RegistryError(`registry fork: entry ${e.seq} conflicts with the verified chain`, Code.REGISTRY_FORK);
    }
    if (!bytesEqual(e.account, this.accountId)) throw new RegistryError("registry entry belongs to another account");
    if (e.type === "genesis") throw new RegistryError("a second genesis entry is not allowed");
    if (ACCOUNT_ONLY.has(e.type) && !bytesEqual(e.signer, this.accountId)) {
      throw new AuthorizationError(`a ${e.type} entry must be signed by the account key`, Code.NOT_AUTHORIZED);
    }
    const key = this.signerKey(e.signer);
    if (key === undefined) {
      throw new AuthorizationError("registry entry signer is not an active device of this account", Code.NOT_AUTHORIZED);
    }
    key.verify(labelled(labels.REGISTRY_SIG, e.bodyBytes), e.signature);
    if (GOVERNED.has(e.type) && !bytesEqual(e.signer, this.accountId) && this.rules().governed) {
      throw new AuthorizationError(
        `this account's policy requires approval for device changes: a ${e.type} must be proposed and approved, ` +
          "or signed with the account key", Code.NOT_AUTHORIZED);
    }
    return this.applied(e);
  }

  private checkForkEvidence(e: RegistryEntry): void {
    // The signer may have been revoked since the fork point: any key this
    // account ever certified can sign evidence of its own equivocation.
    if (!bytesEqual(e.account, this.accountId)) throw new RegistryError("registry entry belongs to another account");
    let key: Ed25519PublicKey;
    if (bytesEqual(e.signer, this.accountId)) {
      key = this.account.signingKey;
    } else {
      const rec = this.device(e.signer);
      if (rec === undefined) {
        throw new AuthorizationError("registry entry signer is not a device of this account", Code.NOT_AUTHORIZED);
      }
      key = rec.publicId.signingKey;
    }
    key.verify(labelled(labels.REGISTRY_SIG, e.bodyBytes), e.signature);
  }

  /** The effects of a verified entry (§9.6 step 4). */
  applied(e: RegistryEntry): RegistryState {
    const devices = new Map(this.devices);
    let policy: Policy = this.policy;
    let proposals: ReadonlyMap<string, Proposal> = this.proposals;
    const f = e.fields;
    let targets: Target[] = [];
    let revokedBy = e.signer;
    const before = devices.size;
    if (INTRODUCES_DEVICE.has(e.type)) {
      const { publicId, name } = approval.parseDevice(f, this.limits);
      this.introduce(devices, publicId, name, e.signer, e);
      try {
        publicId.signingKey.verify(labelled(labels.REGISTRY_COSIG, e.bodyBytes), e.countersignature ?? new Uint8Array(0));
      } catch (err) {
        if (err instanceof SignatureError) throw new SignatureError("new device's countersignature does not verify");
        throw err;
      }
    }
    if (e.type === "revoke") {
      f.str("reason", 256);
      targets = [[f.bytes("target", { size: ID_SIZE }), cutoffOf(f.raw("cutoff"), "registry revoke entry.cutoff")]];
    } else if (e.type === "recover") {
      targets = recoverTargets(f, this.limits);
    } else if (e.type === "policy") {
      policy = approval.parsePolicy(f);
    } else if (APPROVAL_TYPES.has(e.type)) {
      const [next, enacted] = approval.step(this, e);
      proposals = next;
      const cutoff = e.type === "enact" ? cutoffOf(f.raw("cutoff"), "registry enact entry.cutoff") : new Map<string, bigint>();
      if (enacted !== null) {
        [policy, targets] = this.carryOut(enacted, cutoff, devices, e);
        revokedBy = enacted.proposer;
      }
    }
    for (const [target, cut] of targets) {
      const rec = devices.get(toHex(target));
      if (rec === undefined || rec.status !== "active") throw new RegistryError("revocation target is not an active device");
      devices.set(toHex(target), { ...rec, status: "revoked", revokedSeq: Number(e.seq), revokedBy, cutoff: cut });
    }
    let recent = this.recentAdds;
    if (devices.size > before && !bytesEqual(e.signer, this.accountId)) {
      recent = [...recent, e.ts].slice(-this.limits.maxAddsPerWindow);
    }
    return new RegistryState(this.account, devices, policy, Number(e.seq), e.hash, [...this.entryHashes, e.hash],
      this.limits, proposals, this.lastTs > e.ts ? this.lastTs : e.ts,
      [...this.revokedSeqs, ...targets.map(() => Number(e.seq))], recent);
  }

  private introduce(devices: Map<string, DeviceRecord>, publicId: DevicePublic, name: string, addedBy: Uint8Array,
    e: RegistryEntry): void {
    const id = toHex(publicId.deviceId);
    if (devices.has(id)) {
      throw new RegistryError("device is already in the registry (a revoked device cannot be re-added; pair it again with new keys)");
    }
    this.checkDeviceCaps(devices, e);
    devices.set(id, { publicId, name, status: "active", addedBy, addedSeq: Number(e.seq), addedTs: e.ts, revokedSeq: null,
      revokedBy: null, cutoff: new Map(), deviceId: publicId.deviceId });
  }

  private checkDeviceCaps(devices: ReadonlyMap<string, DeviceRecord>, e: RegistryEntry): void {
    // The account key may always introduce a device while fewer than
    // maxDevices are active (recovery must work whatever a device did);
    // devices leave it that last slot and are bounded in number and rate.
    const lim = this.limits;
    let active = 0;
    for (const r of devices.values()) if (r.status === "active") active++;
    const byAccount = bytesEqual(e.signer, this.accountId);
    if (active >= lim.maxDevices - (byAccount ? 0 : 1)) {
      throw new RegistryError(`account already has ${active} active devices (limit ${lim.maxDevices}, the last one kept ` +
        `for the account key): revoke devices first${byAccount ? "" : ", or recover with the account secret"}`);
    }
    if (byAccount) return;
    if (devices.size >= lim.maxDeviceRecords) {
      throw new RegistryError(`devices have introduced ${devices.size} devices to this account (limit ` +
        `${lim.maxDeviceRecords}); only the account key may add more`);
    }
    const recent = this.recentAdds;
    const window = BigInt(lim.addWindowMs);
    if (recent.length >= lim.maxAddsPerWindow && recent.every((ts) => (e.ts > ts ? e.ts - ts : ts - e.ts) < window)) {
      throw new RegistryError(`devices already added ${recent.length} devices within ${Math.floor(lim.addWindowMs / 3_600_000)} h ` +
        `of this entry's date (limit ${lim.maxAddsPerWindow}); wait, or add it with the account key`);
    }
  }

  private carryOut(p: Proposal, cutoff: Map<string, bigint>, devices: Map<string, DeviceRecord>,
    e: RegistryEntry): [Policy, Target[]] {
    // An enacted proposal has the effect of the direct entry, at the enact
    // entry's seq; the cutoff (the enactor's view) matters only for revoke.
    const a = p.action;
    if (cutoff.size && a.type !== "revoke") throw new DecodeError("registry enact entry: a cutoff only goes with a revocation");
    if (a.type === "add" && a.device !== undefined) this.introduce(devices, a.device, a.name ?? "", p.proposer, e);
    if (a.type === "revoke" && a.target !== undefined) return [this.policy, [[a.target, cutoff]]];
    if (a.type === "policy" && a.policy !== undefined) return [a.policy, []];
    return [this.policy, []];
  }
}

function recoverTargets(f: Fields, limits: ProtocolLimits): Target[] {
  const targets: Target[] = [];
  for (const t of f.list("revoke", limits.maxDevices)) {
    if (!Array.isArray(t) || t.length !== 2 || !(t[0] instanceof Uint8Array) || t[0].length !== ID_SIZE) {
      throw new DecodeError("registry recover entry: revoke lists [32-byte device id, cutoff] pairs");
    }
    targets.push([t[0], cutoffOf(t[1]!, "registry recover entry.revoke")]);
  }
  if (new Set(targets.map(([t]) => toHex(t))).size !== targets.length) {
    throw new RegistryError("registry recover entry lists a device twice");
  }
  return targets;
}

function genesisState(e: RegistryEntry, pinned: AccountPublic | null, limits: ProtocolLimits): RegistryState {
  if (e.type !== "genesis" || e.seq !== 0n || !bytesEqual(e.prev, ZERO)) {
    throw new RegistryError("the registry must start with a genesis entry at seq 0");
  }
  const f = e.fields;
  const accountKey = f.bytes("account_key", { size: 32 });
  const recoveryKey = f.bytes("recovery_key", { size: 32 });
  const account = AccountPublic.fromKeys(accountKey, recoveryKey);
  if (pinned !== null && (!account.signingKey.equals(pinned.signingKey) || !bytesEqual(account.recoveryKey, pinned.recoveryKey))) {
    throw new AuthorizationError(
      "genesis names another account key than the pinned one; this registry does not belong to your account",
      Code.NOT_AUTHORIZED);
  }
  if (!bytesEqual(e.account, account.accountId) || !bytesEqual(e.signer, account.accountId)) {
    throw new RegistryError("genesis must be signed by the account key it introduces");
  }
  account.signingKey.verify(labelled(labels.REGISTRY_SIG, e.bodyBytes), e.signature);
  const beforeGenesis = new RegistryState(account, new Map(), new Map(), -1, ZERO, [], limits, new Map(), e.ts, [], []);
  return beforeGenesis.applied(e);
}

/**
 * Verify a whole registry from genesis (§9.6).
 *
 * @param entries entry bytes in seq order, starting with genesis.
 * @param pinned the account key this device trusts; `null` only on first
 *   contact (the caller must then pin the result's `account` and show its
 *   fingerprint to the person).
 * @throws RegistryError, AuthorizationError, SignatureError, KeyValidationError, DecodeError.
 */
export function verifyRegistry(entries: readonly Uint8Array[], pinned: AccountPublic | null,
  limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): RegistryState {
  if (entries.length === 0) throw new RegistryError("the registry is empty (no genesis entry)");
  let state = genesisState(decodeEntry(entries[0]!, limits), pinned, limits);
  for (const data of entries.slice(1)) state = state.apply(data);
  return state;
}

// ------------------------------------------------------------------ builders

/**
 * Canonical body bytes of a new entry.
 *
 * @throws UsageError `fields` do not match the entry type.
 */
export function buildBody(type: EntryType, opts: { accountId: Uint8Array; seq: bigint | number; prev: Uint8Array;
  tsMs: bigint | number; signerId: Uint8Array; fields: ReadonlyMap<string, Encodable> }): Uint8Array {
  const expected = [...TYPE_FIELDS[type]].sort().join(",");
  if ([...opts.fields.keys()].sort().join(",") !== expected) {
    throw new UsageError(`a ${type} entry takes fields ${TYPE_FIELDS[type].join(", ")}`);
  }
  const body = new Map<string, Encodable>([
    ["v", REGISTRY_VERSION], ["account", opts.accountId], ["seq", BigInt(opts.seq)], ["prev", opts.prev],
    ["type", type], ["ts", BigInt(opts.tsMs)], ["signer", opts.signerId], ...opts.fields,
  ]);
  return encode(body);
}

/** The `device` field for genesis, add and recover entries. */
export function deviceFields(publicId: DevicePublic, name: string): Map<string, Encodable> {
  return new Map<string, Encodable>([["sign", publicId.signingKey.raw], ["kx", publicId.kxKey], ["name", name]]);
}

/** The `by` signature over a body. */
export function signBody(bodyBytes: Uint8Array, signer: Signer): Uint8Array {
  return signer.sign(labelled(labels.REGISTRY_SIG, bodyBytes));
}

/** The new device's `new` countersignature over a body. */
export function countersignBody(bodyBytes: Uint8Array, newDevice: Signer): Uint8Array {
  return newDevice.sign(labelled(labels.REGISTRY_COSIG, bodyBytes));
}

/** Entry bytes from a body and its signature(s). */
export function assembleEntry(bodyBytes: Uint8Array, signature: Uint8Array, countersignature: Uint8Array | null = null): Uint8Array {
  const sigs = new Map<string, Encodable>([["by", signature]]);
  if (countersignature !== null) sigs.set("new", countersignature);
  return encode([REGISTRY_VERSION, bodyBytes, sigs]);
}

function signerId(signer: DeviceKeys | AccountKeys): Uint8Array {
  return signer instanceof AccountKeys ? signer.accountId : signer.deviceId;
}

function next(state: RegistryState, type: EntryType, signer: DeviceKeys | AccountKeys, tsMs: bigint,
  fields: ReadonlyMap<string, Encodable>): Uint8Array {
  return buildBody(type, { accountId: state.accountId, seq: state.seq + 1, prev: state.head, tsMs, signerId: signerId(signer),
    fields });
}

/** The genesis entry: the account key certifies the first device. */
export function genesis(account: AccountKeys, firstDevice: DeviceKeys, name: string, tsMs: bigint | number): Uint8Array {
  const body = buildBody("genesis", { accountId: account.accountId, seq: 0, prev: ZERO, tsMs, signerId: account.accountId,
    fields: new Map<string, Encodable>([["account_key", account.signing.publicKey.raw],
      ["recovery_key", account.recovery.publicKey], ["device", deviceFields(firstDevice.publicIdentity, name)]]) });
  return assembleEntry(body, signBody(body, account), countersignBody(body, firstDevice));
}

/** An add-device entry signed by `signer` and countersigned by `newDevice`. */
export function addDevice(state: RegistryState, signer: DeviceKeys | AccountKeys, newDevice: DeviceKeys, name: string,
  tsMs: bigint | number): Uint8Array {
  const body = next(state, "add", signer, BigInt(tsMs), new Map([["device", deviceFields(newDevice.publicIdentity, name)]]));
  return assembleEntry(body, signBody(body, signer), countersignBody(body, newDevice));
}

/** A revoke-device entry; `cutoff` (space id hex → seq) is the target's last op that stays valid history. */
export function revokeDevice(state: RegistryState, signer: DeviceKeys | AccountKeys, target: Uint8Array, reason: string,
  tsMs: bigint | number, cutoff: ReadonlyMap<string, bigint> = new Map()): Uint8Array {
  const body = next(state, "revoke", signer, BigInt(tsMs), new Map<string, Encodable>([
    ["target", target], ["reason", reason], ["cutoff", cutoffField(cutoff)]]));
  return assembleEntry(body, signBody(body, signer));
}

/** A set-policy entry (replaces the whole policy map). */
export function setPolicy(state: RegistryState, signer: DeviceKeys | AccountKeys, policy: ReadonlyMap<string, PolicyValue>,
  tsMs: bigint | number): Uint8Array {
  const body = next(state, "policy", signer, BigInt(tsMs), new Map([["policy", new Map(policy)]]));
  return assembleEntry(body, signBody(body, signer));
}
