/**
 * Key epochs and key packages (docs/protocol.md §10; mirrors
 * `sddsf.protocol.keypackage`).
 *
 * ```
 * package    = [version, body_bytes, signature]                 version = 2
 * body       = {v, space, epoch, prev, creator, ts, registry_seq, recipients, key_commit, prev_keys}
 * recipients = [[recipient_id, sealed_key], ...]   sorted by id, unique
 * sealed_key = seal(recipient_x25519_pk, labelled(KEY_PACKAGE_SEALED, space, epoch, key))
 * key_commit = tagged_hash(KEY_PACKAGE_COMMIT, space, epoch, key)
 * prev_keys  = null | AEAD(wrap_key, wrap_nonce, E([key_{e-n}, ..., key_{e-1}]),
 *                          ad = labelled(KEY_PACKAGE_WRAP, space, epoch))
 * wrap_key ‖ wrap_nonce = HKDF-SHA256(key, salt = KEY_PACKAGE_WRAP, info = labelled(KEY_PACKAGE_WRAP, space, epoch), 56)
 * ```
 *
 * Format versions: {@link decodeKeyPackage} reads version 2, version 1
 * (history: no `key_commit`/`prev_keys`; each sealed key carries up to 255
 * earlier keys itself) and version 3 (a space shared between accounts, §10.8:
 * no `registry_seq`, but `creator_account`, `members` — each member account
 * with the registry position its devices were taken at — and `membership`,
 * the membership head the members were read at); {@link buildKeyPackage}
 * writes version 2 only. Version 3 is verified by {@link verifyKeyPackageV3}
 * (mirrors `sddsf.protocol.keypackage_v3`, same checks in the same order);
 * its sealed keys, `key_commit` and `prev_keys` are version 2's, so opening is
 * unchanged. Whoever holds epoch `e`'s key opens `prev_keys` and walks back to
 * epoch 0 ({@link openKeyHistory}).
 */

import { bytesEqual, compareBytes, fromHex, toHex, utf8, zeros } from "./bytes.js";
import { decode, encode, isInt, type DecodeLimits, type Encodable } from "./cbor.js";
import { AEAD_NONCE_SIZE, aeadDecrypt, aeadEncrypt, hkdfSha256, sealOpen, seal, type X25519KeyPair } from "./crypto.js";
import { AuthorizationError, Code, ContextError, DecodeError, DecryptError, EpochError, UsageError } from "./errors.js";
import { ID_SIZE, type DeviceKeys } from "./identity.js";
import * as labels from "./labels.js";
import { labelled, taggedHash } from "./labels.js";
import { decodeLimits, DEFAULT_PROTOCOL_LIMITS, type ProtocolLimits } from "./limits.js";
import type { DeviceRecord, RegistryState } from "./registry.js";
import { SPACE_ID_SIZE } from "./envelope.js";
import { decodeSignedOuter, expectMap, versionOfMap } from "./schema.js";

/** The key package format version this module writes. */
export const KEY_PACKAGE_VERSION = 2;
/** The version of a shared space's packages (§10.8; read and verified here, not built). */
export const KEY_PACKAGE_VERSION_SHARED = 3;
/** Versions this build reads (1 is history). */
export const KEY_PACKAGE_VERSIONS: readonly number[] = [1, KEY_PACKAGE_VERSION, KEY_PACKAGE_VERSION_SHARED];
/** Member accounts one version 3 package may list. */
export const MAX_PACKAGE_MEMBERS = 1024;
/** Recipients of one version 3 package (1,024 members with one device each, plus their recovery keys). */
export const MAX_PACKAGE_RECIPIENTS = 2 * MAX_PACKAGE_MEMBERS;
/** Version 1 only: earlier epoch keys carried in one sealed key. */
export const MAX_KEY_HISTORY = 255;
/** Earlier epoch keys one version-2 package may wrap. */
export const MAX_WRAPPED_KEYS = 4096;
const WRAPPED_MAX_BYTES = 16 + 3 + 34 * MAX_WRAPPED_KEYS;
const WRAPPED_LIMITS = { maxSize: WRAPPED_MAX_BYTES, maxDepth: 2, maxItems: MAX_WRAPPED_KEYS };
const ZERO = zeros(32);
const FIELDS_V1 = ["v", "space", "epoch", "prev", "creator", "ts", "registry_seq", "recipients"];
const FIELDS_V2 = [...FIELDS_V1, "key_commit", "prev_keys"];
const FIELDS: ReadonlyMap<number, readonly string[]> = new Map([[1, FIELDS_V1], [2, FIELDS_V2],
  [3, [...FIELDS_V2.filter((k) => k !== "registry_seq"), "creator_account", "members", "membership"]]]);
/** Seal overhead + the labelled plaintext with a full (version 1) key history. */
const SEALED_SIZE = 48 + 100 + 34 * MAX_KEY_HISTORY;

/**
 * A decoded key package (`keyCommit` and `prevKeys` are null in version 1).
 *
 * `creatorAccount`, `members` and `membership` are set in version 3 only (null
 * before). A version 3 package has no single `registry_seq`: `registrySeq`
 * then holds the creator account's stated position (0 if the creator account
 * is not listed, which verification refuses); {@link registrySeqFor} gives any
 * member's.
 */
export interface KeyPackage {
  readonly version: number;
  readonly space: Uint8Array;
  readonly epoch: bigint;
  readonly prev: Uint8Array;
  readonly creator: Uint8Array;
  readonly ts: bigint;
  readonly registrySeq: bigint;
  /** Recipient id (hex) → sealed key, in recipient-id order. */
  readonly recipients: ReadonlyMap<string, Uint8Array>;
  readonly bodyBytes: Uint8Array;
  readonly signature: Uint8Array;
  readonly raw: Uint8Array;
  readonly hash: Uint8Array;
  readonly keyCommit: Uint8Array | null;
  /** The wrapped earlier keys (AEAD output), or null. */
  readonly prevKeys: Uint8Array | null;
  /** Version 3: the creator device's account. */
  readonly creatorAccount: Uint8Array | null;
  /** Version 3: `[member account id, registry seq]`, strictly increasing by account id. */
  readonly members: readonly (readonly [Uint8Array, bigint])[] | null;
  /** Version 3: hash of the membership head the members come from. */
  readonly membership: Uint8Array | null;
}

/**
 * The registry position at which `pkg` took `accountId`'s devices. Version 3:
 * the member's stated seq, or null if the account is not a member of the
 * package. Versions 1 and 2 name one account's position only, which this
 * returns whatever `accountId` is (the caller knows the account).
 */
export function registrySeqFor(pkg: KeyPackage, accountId: Uint8Array): bigint | null {
  if (pkg.members === null) return pkg.registrySeq;
  return pkg.members.find(([a]) => bytesEqual(a, accountId))?.[1] ?? null;
}

/** Hash that the next epoch's package names as `prev`. */
export function packageHash(packageBytes: Uint8Array): Uint8Array {
  return taggedHash(labels.KEY_PACKAGE_HASH, packageBytes);
}

/** The public commitment to an epoch key that a version-2 package carries. */
export function keyCommitment(space: Uint8Array, epoch: bigint, epochKey: Uint8Array): Uint8Array {
  return taggedHash(labels.KEY_PACKAGE_COMMIT, space, epoch, epochKey);
}

function wrapKeyAndNonce(space: Uint8Array, epoch: bigint, epochKey: Uint8Array): [Uint8Array, Uint8Array] {
  // The wrap key is used for exactly one encryption (each epoch key is fresh
  // random and seals one package), so a nonce derived with it is never reused.
  const out = hkdfSha256(epochKey, utf8(labels.KEY_PACKAGE_WRAP), wrapAd(space, epoch), 32 + AEAD_NONCE_SIZE);
  return [out.slice(0, 32), out.slice(32)];
}

function wrapAd(space: Uint8Array, epoch: bigint): Uint8Array {
  return labelled(labels.KEY_PACKAGE_WRAP, space, epoch);
}

function packageLimits(limits: ProtocolLimits): DecodeLimits {
  // A shared space's recipients array is longer than any other array in the
  // protocol; its own bound is checked right after decoding.
  const dl = decodeLimits(limits, limits.maxKeyPackage);
  return { ...dl, maxItems: Math.max(dl.maxItems, MAX_PACKAGE_RECIPIENTS) };
}

function decodeBody(version: number, data: Uint8Array, bodyBytes: Uint8Array, signature: Uint8Array,
  limits: ProtocolLimits): KeyPackage {
  const body = decode(bodyBytes, packageLimits(limits));
  versionOfMap(body, version, "key package body");
  const f = expectMap(body, "key package", FIELDS.get(version)!);
  const recipients = new Map<string, Uint8Array>();
  let previous: Uint8Array = new Uint8Array(0);
  const shared = version >= KEY_PACKAGE_VERSION_SHARED;
  for (const item of f.list("recipients", shared ? MAX_PACKAGE_RECIPIENTS : limits.maxDevices + 1)) {
    if (!Array.isArray(item) || item.length !== 2 || !(item[0] instanceof Uint8Array) || item[0].length !== ID_SIZE ||
      !(item[1] instanceof Uint8Array) || item[1].length > SEALED_SIZE) {
      throw new DecodeError("key package: each recipient is [32-byte id, sealed key]");
    }
    if (compareBytes(item[0], previous) <= 0) throw new DecodeError("key package: recipients must be sorted and unique");
    previous = item[0];
    recipients.set(toHex(item[0]), item[1]);
  }
  const epoch = f.u64("epoch");
  const prev = f.bytes("prev", { size: 32 });
  if (epoch === 0n && !bytesEqual(prev, ZERO)) throw new DecodeError("key package: epoch 0 has an all-zero prev");
  let keyCommit: Uint8Array | null = null;
  let prevKeys: Uint8Array | null = null;
  if (version >= 2) {
    keyCommit = f.bytes("key_commit", { size: 32 });
    const wrapped = f.raw("prev_keys");
    if (wrapped !== null && (!(wrapped instanceof Uint8Array) || wrapped.length < 34 + 16 || wrapped.length > WRAPPED_MAX_BYTES)) {
      throw new DecodeError(`key package: prev_keys is null or the wrapped earlier keys (at most ${MAX_WRAPPED_KEYS})`);
    }
    if (epoch === 0n && wrapped !== null) throw new DecodeError("key package: epoch 0 has no earlier keys to wrap");
    prevKeys = wrapped;
  }
  const space = f.bytes("space", { size: SPACE_ID_SIZE });
  const creator = f.bytes("creator", { size: ID_SIZE });
  const ts = f.u64("ts");
  const raw = new Uint8Array(data);
  const common = { version, space, epoch, prev, creator, ts, recipients, bodyBytes, signature, raw,
    hash: packageHash(raw), keyCommit, prevKeys };
  if (!shared) return { ...common, registrySeq: f.u64("registry_seq"), creatorAccount: null, members: null, membership: null };
  const creatorAccount = f.bytes("creator_account", { size: ID_SIZE });
  const members = decodeMembers(f.list("members", MAX_PACKAGE_MEMBERS));
  const registrySeq = members.find(([a]) => bytesEqual(a, creatorAccount))?.[1] ?? 0n;
  return { ...common, registrySeq, creatorAccount, members, membership: f.bytes("membership", { size: 32 }) };
}

function decodeMembers(items: readonly unknown[]): (readonly [Uint8Array, bigint])[] {
  const members: (readonly [Uint8Array, bigint])[] = [];
  let previous: Uint8Array = new Uint8Array(0);
  for (const item of items) {
    if (!Array.isArray(item) || item.length !== 2 || !(item[0] instanceof Uint8Array) || item[0].length !== ID_SIZE ||
      !isInt(item[1]) || BigInt(item[1]) < 0n) {
      throw new DecodeError("key package: each member is [32-byte account id, registry seq]");
    }
    if (compareBytes(item[0], previous) <= 0) throw new DecodeError("key package: members must be sorted and unique");
    previous = item[0];
    members.push([item[0], BigInt(item[1])]);
  }
  if (members.length === 0) throw new DecodeError("key package: a version 3 package lists at least one member");
  return members;
}

type PackageDecoder = (data: Uint8Array, body: Uint8Array, signature: Uint8Array, limits: ProtocolLimits) => KeyPackage;

/** The body decoder of each key package format version this build speaks. */
export const KEY_PACKAGE_FORMATS: ReadonlyMap<number, PackageDecoder> = new Map(
  KEY_PACKAGE_VERSIONS.map((v) => [v, (d: Uint8Array, b: Uint8Array, sig: Uint8Array, l: ProtocolLimits) =>
    decodeBody(v, d, b, sig, l)]));

/**
 * Decode a key package's structure (§10.4; no signature or membership checks).
 *
 * @throws DecodeError malformed, too large or an unsupported version.
 */
export function decodeKeyPackage(data: Uint8Array, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): KeyPackage {
  const outer = decodeSignedOuter(data, "key package", KEY_PACKAGE_VERSIONS, packageLimits(limits));
  return KEY_PACKAGE_FORMATS.get(outer.version)!(data, outer.bodyBytes, outer.signature, limits);
}

function activeAt(rec: { addedSeq: number; revokedSeq: number | null }, seq: bigint): boolean {
  return BigInt(rec.addedSeq) <= seq && (rec.revokedSeq === null || BigInt(rec.revokedSeq) > seq);
}

/**
 * Verify a key package against the verified registry and the previous epoch (§10.5).
 *
 * @param registry the registry state at (or after) the package's `registry_seq`.
 * @param previous the verified package of epoch − 1 (null for epoch 0).
 * @throws DecodeError, ContextError, EpochError, AuthorizationError, SignatureError.
 */
export function verifyKeyPackage(data: Uint8Array, registry: RegistryState, space: Uint8Array,
  previous: KeyPackage | null, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): KeyPackage {
  const pkg = decodeKeyPackage(data, limits);
  if (pkg.version >= KEY_PACKAGE_VERSION_SHARED) {
    throw new ContextError("key package is a shared space's (version 3); verify it with verifyKeyPackageV3");
  }
  checkChain(pkg, space, previous);
  // A space moves to shared packages once; a one-account package after a
  // shared one would drop the other members without a membership change.
  if (previous !== null && previous.version >= KEY_PACKAGE_VERSION_SHARED) {
    throw new ContextError("a one-account key package (version 2) cannot follow a shared space's package (version 3)");
  }
  if (pkg.registrySeq > BigInt(registry.seq)) {
    throw new ContextError("key package refers to registry entries this device has not seen; sync the registry first");
  }
  // Registry states only move forward along the epoch chain: a device revoked
  // after epoch e cannot back-date epoch e+1 to a time it was still active.
  if (previous !== null && pkg.registrySeq < previous.registrySeq) {
    throw new ContextError("key package claims an older registry state than the previous epoch's package");
  }
  const creator = registry.device(pkg.creator);
  if (creator === undefined || BigInt(creator.addedSeq) > pkg.registrySeq) {
    throw new AuthorizationError("key package creator is not a device of this account at the package's registry state",
      Code.UNKNOWN_DEVICE);
  }
  if (creator.revokedSeq !== null && BigInt(creator.revokedSeq) <= pkg.registrySeq) {
    throw new AuthorizationError("key package creator was revoked", Code.REVOKED);
  }
  creator.publicId.signingKey.verify(labelled(labels.KEY_PACKAGE_SIG, pkg.bodyBytes), pkg.signature);
  const accountHex = toHex(registry.accountId);
  if (!pkg.recipients.has(accountHex)) throw new AuthorizationError("key package omits the account recovery key");
  for (const rid of pkg.recipients.keys()) {
    if (rid === accountHex) continue;
    const rec = registry.devices.get(rid);
    if (rec === undefined) {
      throw new AuthorizationError("key package wraps the key for a device that is not in the registry", Code.UNKNOWN_DEVICE);
    }
    if (!activeAt(rec, pkg.registrySeq)) {
      throw new AuthorizationError("key package wraps the key for a device that was not active at its registry state",
        Code.REVOKED);
    }
  }
  // Completeness: a device of the owner's cannot quietly lock the others out.
  for (const [id, rec] of registry.devices) {
    if (activeAt(rec, pkg.registrySeq) && !pkg.recipients.has(id)) {
      throw new AuthorizationError("key package leaves out a device that was active at its registry state",
        Code.NOT_AUTHORIZED);
    }
  }
  return pkg;
}

/**
 * The space and epoch-chain checks every version shares (§10.5 steps 2–4).
 *
 * @throws ContextError another space, or `prev` is not the previous package's
 *   hash; EpochError `unknown_epoch`: the epoch does not follow the previous one.
 */
export function checkChain(pkg: KeyPackage, space: Uint8Array, previous: KeyPackage | null): void {
  if (!bytesEqual(pkg.space, space)) throw new ContextError("key package belongs to another space");
  const expectedEpoch = previous === null ? 0n : previous.epoch + 1n;
  if (pkg.epoch !== expectedEpoch) {
    throw new EpochError(`key package is for epoch ${pkg.epoch}, expected ${expectedEpoch}`, Code.UNKNOWN_EPOCH);
  }
  if (!bytesEqual(pkg.prev, previous === null ? ZERO : previous.hash)) {
    throw new ContextError("key package does not link to the previous epoch's package");
  }
}

/**
 * `membersAt(membershipHash)`: the member account ids (hex) after the applied
 * membership entry with that hash, or undefined if no applied entry has it.
 */
export type MembersAt = (membershipHash: Uint8Array) => ReadonlySet<string> | undefined;

function memberRegistry(registries: ReadonlyMap<string, RegistryState>, account: string): RegistryState {
  const reg = registries.get(account);
  if (reg === undefined) {
    throw new ContextError("a member account's registry is not at hand; sync that member's registry first");
  }
  if (toHex(reg.accountId) !== account) throw new UsageError("registries must map each account id to that account's registry");
  return reg;
}

/**
 * Verify a shared space's key package (§10.8, the checks in that order; mirrors
 * `verify_key_package_v3`).
 *
 * @param previous the verified package of epoch − 1 (any version; null for epoch 0).
 * @param registries account id (hex) → that account's registry, verified from
 *   the key pinned for it, at or after the position the package states.
 * @param membersAt the member set after a membership entry ({@link MembersAt}).
 * @throws DecodeError; ContextError (not version 3, other space, broken chain,
 *   membership head not applied, a member registry missing or behind, a
 *   position older than the previous package's); EpochError `unknown_epoch`;
 *   AuthorizationError (`not_authorized`: members differ from the membership,
 *   the creator account not a member, a recovery key or an active device
 *   missing; `unknown_device` / `revoked`: the creator or a recipient not
 *   active at its account's position); SignatureError; UsageError (a registry
 *   of another account).
 */
export function verifyKeyPackageV3(data: Uint8Array, space: Uint8Array, previous: KeyPackage | null,
  registries: ReadonlyMap<string, RegistryState>, membersAt: MembersAt,
  limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): KeyPackage {
  const pkg = decodeKeyPackage(data, limits);
  if (pkg.version !== KEY_PACKAGE_VERSION_SHARED || pkg.members === null || pkg.membership === null ||
    pkg.creatorAccount === null) {
    throw new ContextError(`key package is a one-account package (version ${pkg.version}); verify it with verifyKeyPackage`);
  }
  checkChain(pkg, space, previous);
  const expected = membersAt(pkg.membership);
  if (expected === undefined) {
    throw new ContextError("key package names a membership entry this device has not applied; sync the membership log first");
  }
  const stated = new Map(pkg.members.map(([a, seq]) => [toHex(a), seq] as const));
  if (stated.size !== expected.size || [...stated.keys()].some((a) => !expected.has(a))) {
    throw new AuthorizationError("key package members are not the space's members at its membership entry", Code.NOT_AUTHORIZED);
  }
  checkPositions(stated, registries, statedSeqs(previous, registries));
  checkCreator(pkg, stated, registries);
  const creator = registries.get(toHex(pkg.creatorAccount))!.device(pkg.creator)!;
  creator.publicId.signingKey.verify(labelled(labels.KEY_PACKAGE_SIG, pkg.bodyBytes), pkg.signature);
  checkRecipients(pkg, stated, registries);
  return pkg;
}

function statedSeqs(pkg: KeyPackage | null, registries: ReadonlyMap<string, RegistryState>): ReadonlyMap<string, bigint> {
  // Per account, the registry position a package took its devices at. A
  // version 1/2 package names one: its creator device's account.
  if (pkg === null) return new Map();
  if (pkg.members !== null) return new Map(pkg.members.map(([a, seq]) => [toHex(a), seq]));
  for (const [a, reg] of registries) if (reg.device(pkg.creator) !== undefined) return new Map([[a, pkg.registrySeq]]);
  return new Map();
}

function checkPositions(stated: ReadonlyMap<string, bigint>, registries: ReadonlyMap<string, RegistryState>,
  before: ReadonlyMap<string, bigint>): void {
  for (const [account, seq] of stated) {
    const reg = memberRegistry(registries, account);
    if (seq > BigInt(reg.seq)) {
      throw new ContextError("key package refers to registry entries of a member this device has not seen; sync that " +
        "member's registry first");
    }
    // Registry positions only move forward along the epoch chain: a device
    // revoked after epoch e cannot back-date epoch e+1 to when it was active.
    if (seq < (before.get(account) ?? 0n)) {
      throw new ContextError("key package states an older registry position for a member than the previous epoch's package");
    }
  }
}

function checkCreator(pkg: KeyPackage, stated: ReadonlyMap<string, bigint>,
  registries: ReadonlyMap<string, RegistryState>): void {
  const account = pkg.creatorAccount === null ? undefined : toHex(pkg.creatorAccount);
  const seq = account === undefined ? undefined : stated.get(account);
  if (account === undefined || seq === undefined) {
    throw new AuthorizationError("key package creator account is not a member", Code.NOT_AUTHORIZED);
  }
  const rec = registries.get(account)!.device(pkg.creator);
  if (rec === undefined || BigInt(rec.addedSeq) > seq) {
    throw new AuthorizationError("key package creator is not a device of its account at the stated registry position",
      Code.UNKNOWN_DEVICE);
  }
  if (rec.revokedSeq !== null && BigInt(rec.revokedSeq) <= seq) {
    throw new AuthorizationError("key package creator was revoked", Code.REVOKED);
  }
}

function checkRecipients(pkg: KeyPackage, stated: ReadonlyMap<string, bigint>,
  registries: ReadonlyMap<string, RegistryState>): void {
  if ([...stated.keys()].some((account) => !pkg.recipients.has(account))) {
    throw new AuthorizationError("key package omits a member's recovery key", Code.NOT_AUTHORIZED);
  }
  const active = new Set<string>();
  for (const [account, seq] of stated) {
    for (const [id, rec] of registries.get(account)!.devices) if (activeAt(rec, seq)) active.add(id);
  }
  for (const rid of pkg.recipients.keys()) {
    if (stated.has(rid) || active.has(rid)) continue;
    if ([...stated.keys()].some((a) => registries.get(a)!.devices.has(rid))) {
      throw new AuthorizationError("key package wraps the key for a device that was not active at its account's stated " +
        "position", Code.REVOKED);
    }
    throw new AuthorizationError("key package wraps the key for a device of no member", Code.UNKNOWN_DEVICE);
  }
  // Completeness: no member's device can quietly lock the others out.
  for (const id of active) {
    if (!pkg.recipients.has(id)) {
      throw new AuthorizationError("key package leaves out a device that was active at its account's stated position",
        Code.NOT_AUTHORIZED);
    }
  }
}

/**
 * Devices revoked after `pkg` was made: each may hold its epoch key, so the
 * epoch is compromised for new writes (§10.7).
 */
export function revokedSince(pkg: KeyPackage, registry: RegistryState): DeviceRecord[] {
  return [...registry.devices.values()].filter((r) => r.revokedSeq !== null && BigInt(r.revokedSeq) > pkg.registrySeq);
}

/**
 * Whether a new epoch is due: a device was revoked after `pkg` was made
 * ({@link revokedSince}: write nothing under it until the next package is
 * stored), or a device added since is not one of its recipients (§10.7).
 */
export function needsRotation(pkg: KeyPackage, registry: RegistryState): boolean {
  if (revokedSince(pkg, registry).length) return true;
  for (const [id, r] of registry.devices) {
    if (r.revokedSeq === null && BigInt(r.addedSeq) > pkg.registrySeq && !pkg.recipients.has(id)) return true;
  }
  return false;
}

function openSealed(pkg: KeyPackage, recipientId: Uint8Array, keypair: X25519KeyPair): unknown[] {
  const sealed = pkg.recipients.get(toHex(recipientId));
  if (sealed === undefined) {
    throw new AuthorizationError("this key package has no key for this device (it was created after the device was " +
      "revoked, or before it was added)", Code.NOT_AUTHORIZED);
  }
  const plaintext = sealOpen(keypair, sealed);
  let value;
  try {
    value = decode(plaintext);
  } catch (e) {
    if (e instanceof DecodeError) throw new DecryptError("sealed epoch key has the wrong format");
    throw e;
  }
  const items = pkg.version === 1 ? 5 : 4;
  if (!Array.isArray(value) || value.length !== items || value[0] !== labels.KEY_PACKAGE_SEALED ||
    !(value[3] instanceof Uint8Array) || value[3].length !== 32) {
    throw new DecryptError("sealed epoch key has the wrong format");
  }
  const [, sp, ep] = value;
  if (!(sp instanceof Uint8Array) || !bytesEqual(sp, pkg.space) || !isInt(ep) || typeof ep === "boolean" ||
    BigInt(ep) !== pkg.epoch) {
    throw new ContextError("sealed epoch key was made for another space or epoch");
  }
  return value;
}

function checkCommitment(pkg: KeyPackage, key: Uint8Array): void {
  if (pkg.keyCommit !== null && !bytesEqual(keyCommitment(pkg.space, pkg.epoch, key), pkg.keyCommit)) {
    throw new DecryptError(`the key of epoch ${pkg.epoch} does not match its package's key commitment (its creator gave ` +
      "devices different keys)");
  }
}

/**
 * Unwrap this package's epoch key (and, in version 1, the key history sealed
 * with it) (§10.6).
 *
 * @returns epoch → key for the package's epoch and, for a version-1 package,
 *   the earlier ones it carries; a version-2 package's earlier keys come from
 *   {@link unwrapPreviousKeys} (or all at once from {@link openKeyHistory}).
 * @throws AuthorizationError no entry for the recipient; DecryptError the sealed
 *   key does not open, has the wrong format or does not match the key
 *   commitment; ContextError another space/epoch.
 */
export function openEpochKeys(pkg: KeyPackage, recipientId: Uint8Array, keypair: X25519KeyPair): Map<bigint, Uint8Array> {
  const value = openSealed(pkg, recipientId, keypair);
  const key = value[3] as Uint8Array;
  const keys = new Map<bigint, Uint8Array>();
  if (pkg.version >= 2) {
    checkCommitment(pkg, key);
    keys.set(pkg.epoch, key);
    return keys;
  }
  const history = value[4];
  const maxHistory = pkg.epoch < BigInt(MAX_KEY_HISTORY) ? Number(pkg.epoch) : MAX_KEY_HISTORY;
  if (!Array.isArray(history) || history.length > maxHistory ||
    history.some((k) => !(k instanceof Uint8Array) || k.length !== 32)) {
    throw new DecryptError("sealed epoch key has the wrong format");
  }
  (history as Uint8Array[]).forEach((k, i) => keys.set(pkg.epoch - BigInt(history.length) + BigInt(i), k));
  keys.set(pkg.epoch, key);
  return keys;
}

/** Unwrap the epoch key for `recipientId` (a device id, or the account id). */
export function openEpochKey(pkg: KeyPackage, recipientId: Uint8Array, keypair: X25519KeyPair): Uint8Array {
  return openEpochKeys(pkg, recipientId, keypair).get(pkg.epoch)!;
}

/**
 * The earlier epoch keys a version-2 package wraps, opened with its own epoch
 * key: epoch → key for epochs `epoch − n … epoch − 1` (empty for version 1 or
 * when it wraps none).
 *
 * @throws DecryptError `epochKey` is not this package's key, or the wrapped
 *   keys were tampered with or are not a list of 32-byte keys.
 */
export function unwrapPreviousKeys(pkg: KeyPackage, epochKey: Uint8Array): Map<bigint, Uint8Array> {
  const out = new Map<bigint, Uint8Array>();
  if (pkg.version < 2 || pkg.prevKeys === null) return out;
  checkCommitment(pkg, epochKey);
  const [key, nonce] = wrapKeyAndNonce(pkg.space, pkg.epoch, epochKey);
  const plaintext = aeadDecrypt(key, nonce, pkg.prevKeys, wrapAd(pkg.space, pkg.epoch));
  let value;
  try {
    value = decode(plaintext, WRAPPED_LIMITS);
  } catch (e) {
    if (e instanceof DecodeError) throw new DecryptError("the wrapped earlier keys have the wrong format");
    throw e;
  }
  const most = pkg.epoch < BigInt(MAX_WRAPPED_KEYS) ? Number(pkg.epoch) : MAX_WRAPPED_KEYS;
  if (!Array.isArray(value) || value.length < 1 || value.length > most ||
    value.some((k) => !(k instanceof Uint8Array) || k.length !== 32)) {
    throw new DecryptError("the wrapped earlier keys have the wrong format");
  }
  (value as Uint8Array[]).forEach((k, i) => out.set(pkg.epoch - BigInt(value.length) + BigInt(i), new Uint8Array(k)));
  return out;
}

/**
 * Every epoch key of a space that `recipientId` can read (§10.6).
 *
 * `packages` is the space's verified chain (any order). The recipient opens
 * each package that lists it; then, from the newest epoch down, each version-2
 * package whose key is known unwraps the earlier keys it carries, until every
 * epoch is known or the walk reaches a version-1 package it cannot open. A key
 * learnt this way must match its own package's commitment.
 *
 * @throws DecryptError, ContextError a sealed or wrapped key that does not open
 *   or does not match its package (the creator misbehaved).
 */
export function openKeyHistory(packages: readonly KeyPackage[], recipientId: Uint8Array,
  keypair: X25519KeyPair): Map<bigint, Uint8Array> {
  const byEpoch = new Map(packages.map((p) => [p.epoch, p] as const));
  const keys = new Map<bigint, Uint8Array>();
  const me = toHex(recipientId);
  for (const pkg of packages) {
    if (!pkg.recipients.has(me)) continue;
    for (const [e, k] of openEpochKeys(pkg, recipientId, keypair)) if (!keys.has(e)) keys.set(e, k);
  }
  const missing = new Set([...byEpoch.keys()].filter((e) => !keys.has(e)));
  const lowest = (): bigint | null => (missing.size ? [...missing].reduce((a, b) => (a < b ? a : b)) : null);
  let low = lowest();
  for (const epoch of [...byEpoch.keys()].sort((a, b) => (a > b ? -1 : a < b ? 1 : 0))) {
    if (low === null || epoch <= low) break; // every epoch is known, or none below this one can be learnt
    const key = keys.get(epoch);
    if (key === undefined) continue;
    for (const [earlier, k] of unwrapPreviousKeys(byEpoch.get(epoch)!, key)) {
      const earlierPkg = byEpoch.get(earlier);
      if (earlierPkg !== undefined) checkCommitment(earlierPkg, k);
      if (!keys.has(earlier)) keys.set(earlier, k);
      missing.delete(earlier);
    }
    if (low !== null && !missing.has(low)) low = lowest();
  }
  return keys;
}

/**
 * Wrap `epochKey` for every active device and the recovery key, commit to it,
 * wrap the earlier keys under it, and sign (§10.3, version 2).
 *
 * @param previousKeys keys of the epochs just before `epoch`, oldest first and
 *   ending with epoch `epoch − 1`'s (normally just that one; after version-1
 *   packages, every earlier key the creator holds). The last
 *   {@link MAX_WRAPPED_KEYS} are wrapped.
 * @param ephemeralSeeds TEST VECTORS ONLY: one 32-byte seed per recipient in
 *   recipient-id order (a reused seed reuses the ephemeral key and nonce);
 *   without it libsodium draws each ephemeral key.
 * @throws UsageError wrong sizes, or the creator is not active.
 */
export function buildKeyPackage(opts: { creator: DeviceKeys; registry: RegistryState; space: Uint8Array; epoch: bigint;
  prev: Uint8Array; epochKey: Uint8Array; tsMs: bigint | number; previousKeys?: readonly Uint8Array[];
  ephemeralSeeds?: readonly Uint8Array[] }): Uint8Array {
  const { creator, registry, space, epoch } = opts;
  if (opts.epochKey.length !== 32 || space.length !== SPACE_ID_SIZE) throw new UsageError("epoch key is 32 bytes and space id 16 bytes");
  if (!registry.isActive(creator.deviceId)) throw new UsageError("only an active device can create a key package");
  const targets = new Map<string, Uint8Array>(registry.activeDevices().map((r) => [toHex(r.deviceId), r.publicId.kxKey]));
  targets.set(toHex(registry.accountId), registry.account.recoveryKey);
  const seeds = opts.ephemeralSeeds;
  if (seeds !== undefined && seeds.length !== targets.size) {
    throw new UsageError(`need ${targets.size} ephemeral seeds, got ${seeds.length}`);
  }
  const history = (opts.previousKeys ?? []).slice(-MAX_WRAPPED_KEYS);
  if (history.some((k) => k.length !== 32) || BigInt(history.length) > epoch) {
    throw new UsageError("previous keys are 32 bytes each, at most one per earlier epoch");
  }
  const plaintext = labelled(labels.KEY_PACKAGE_SEALED, space, epoch, opts.epochKey);
  const ids = [...targets.keys()].sort();
  const recipients: Encodable[] = ids.map((rid, i) => [fromHex(rid), seal(targets.get(rid)!, plaintext, seeds?.[i])]);
  let wrapped: Uint8Array | null = null;
  if (history.length) {
    const [key, nonce] = wrapKeyAndNonce(space, epoch, opts.epochKey);
    wrapped = aeadEncrypt(key, nonce, encode([...history]), wrapAd(space, epoch));
  }
  const body = encode(new Map<string, Encodable>([["v", KEY_PACKAGE_VERSION], ["space", space], ["epoch", epoch],
    ["prev", epoch ? opts.prev : ZERO], ["creator", creator.deviceId], ["ts", BigInt(opts.tsMs)],
    ["registry_seq", BigInt(registry.seq)], ["recipients", recipients],
    ["key_commit", keyCommitment(space, epoch, opts.epochKey)], ["prev_keys", wrapped]]));
  return encode([KEY_PACKAGE_VERSION, body, creator.sign(labelled(labels.KEY_PACKAGE_SIG, body))]);
}
