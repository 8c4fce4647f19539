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
 * Format versions: {@link decodeKeyPackage} reads version 2 and version 1
 * (history: no `key_commit`/`prev_keys`; each sealed key carries up to 255
 * earlier keys itself); {@link buildKeyPackage} writes version 2 only.
 * Whoever holds epoch `e`'s key opens `prev_keys` and walks back to epoch 0
 * ({@link openKeyHistory}).
 */

import { bytesEqual, compareBytes, fromHex, toHex, utf8, zeros } from "./bytes.js";
import { decode, encode, isInt, type Encodable } from "./cbor.js";
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
/** Versions this build reads (1 is history). */
export const KEY_PACKAGE_VERSIONS: readonly number[] = [1, KEY_PACKAGE_VERSION];
/** Version 1 only: earlier epoch keys carried in one sealed key. */
export const MAX_KEY_HISTORY = 255;
/** Earlier epoch keys one version-2 package may wrap. */
export const MAX_WRAPPED_KEYS = 4096;
const WRAPPED_MAX_BYTES = 16 + 3 + 34 * MAX_WRAPPED_KEYS;
const WRAPPED_LIMITS = { maxSize: WRAPPED_MAX_BYTES, maxDepth: 2, maxItems: MAX_WRAPPED_KEYS };
const ZERO = zeros(32);
const FIELDS_V1 = ["v", "space", "epoch", "prev", "creator", "ts", "registry_seq", "recipients"];
const FIELDS: ReadonlyMap<number, readonly string[]> = new Map([[1, FIELDS_V1], [2, [...FIELDS_V1, "key_commit", "prev_keys"]]]);
/** Seal overhead + the labelled plaintext with a full (version 1) key history. */
const SEALED_SIZE = 48 + 100 + 34 * MAX_KEY_HISTORY;

/** A decoded key package (`keyCommit` and `prevKeys` are null in version 1). */
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

function decodeBody(version: number, data: Uint8Array, bodyBytes: Uint8Array, signature: Uint8Array,
  limits: ProtocolLimits): KeyPackage {
  const body = decode(bodyBytes, decodeLimits(limits, limits.maxKeyPackage));
  versionOfMap(body, version, "key package body");
  const f = expectMap(body, "key package", FIELDS.get(version)!);
  const recipients = new Map<string, Uint8Array>();
  let previous: Uint8Array = new Uint8Array(0);
  for (const item of f.list("recipients", limits.maxDevices + 1)) {
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
  const registrySeq = f.u64("registry_seq");
  const raw = new Uint8Array(data);
  return { version, space, epoch, prev, creator, ts, registrySeq, recipients, bodyBytes, signature, raw,
    hash: packageHash(raw), keyCommit, prevKeys };
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
  const outer = decodeSignedOuter(data, "key package", KEY_PACKAGE_VERSIONS, decodeLimits(limits, limits.maxKeyPackage));
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
  if (!bytesEqual(pkg.space, space)) throw new ContextError("key package belongs to another space");
  const expectedEpoch = previous === null ? 0n : previous.epoch + 1n;
  if (pkg.epoch !== expectedEpoch) {
    throw new EpochError(`key package is for epoch ${pkg.epoch}, expected ${expectedEpoch}`, Code.UNKNOWN_EPOCH);
  }
  if (!bytesEqual(pkg.prev, previous === null ? ZERO : previous.hash)) {
    throw new ContextError("key package does not link to the previous epoch's package");
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
