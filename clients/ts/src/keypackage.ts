/**
 * Key epochs and key packages (docs/protocol.md §10; mirrors
 * `sddsf.protocol.keypackage`).
 *
 * ```
 * package    = [version, body_bytes, signature]
 * body       = {v, space, epoch, prev, creator, ts, registry_seq, recipients}
 * recipients = [[recipient_id, sealed_key], ...]   sorted by id, unique
 * sealed_key = seal(recipient_x25519_pk, labelled(KEY_PACKAGE_SEALED, space, epoch, key, history))
 * ```
 *
 * Format versions: {@link decodeKeyPackage} dispatches on the outer version
 * through {@link KEY_PACKAGE_FORMATS}; this build speaks version 1. A version-2
 * decoder (a package that also carries the previous epoch's key wrapped under
 * the new one) is added there beside the version-1 one.
 */

import { bytesEqual, compareBytes, fromHex, toHex, zeros } from "./bytes.js";
import { decode, encode, isInt, type Encodable } from "./cbor.js";
import { sealOpen, seal, type X25519KeyPair } from "./crypto.js";
import { AuthorizationError, Code, ContextError, DecodeError, DecryptError, EpochError, UsageError } from "./errors.js";
import { ID_SIZE, type DeviceKeys } from "./identity.js";
import * as labels from "./labels.js";
import { labelled, taggedHash } from "./labels.js";
import { decodeLimits, DEFAULT_PROTOCOL_LIMITS, type ProtocolLimits } from "./limits.js";
import type { RegistryState } from "./registry.js";
import { SPACE_ID_SIZE } from "./envelope.js";
import { decodeSignedOuter, expectMap, versionOfMap } from "./schema.js";

/** The key package format version this module writes. */
export const KEY_PACKAGE_VERSION = 1;
/** Previous epoch keys carried in one sealed key. */
export const MAX_KEY_HISTORY = 255;
const ZERO = zeros(32);
const FIELDS_V1 = ["v", "space", "epoch", "prev", "creator", "ts", "registry_seq", "recipients"];
/** Seal overhead + the labelled plaintext with a full key history. */
const SEALED_SIZE = 48 + 100 + 34 * MAX_KEY_HISTORY;

/** A decoded key package. */
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
}

/** Hash that the next epoch's package names as `prev`. */
export function packageHash(packageBytes: Uint8Array): Uint8Array {
  return taggedHash(labels.KEY_PACKAGE_HASH, packageBytes);
}

function decodeV1(data: Uint8Array, bodyBytes: Uint8Array, signature: Uint8Array, limits: ProtocolLimits): KeyPackage {
  const body = decode(bodyBytes, decodeLimits(limits, limits.maxKeyPackage));
  versionOfMap(body, KEY_PACKAGE_VERSION, "key package body");
  const f = expectMap(body, "key package", FIELDS_V1);
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
  const space = f.bytes("space", { size: SPACE_ID_SIZE });
  const creator = f.bytes("creator", { size: ID_SIZE });
  const ts = f.u64("ts");
  const registrySeq = f.u64("registry_seq");
  const raw = new Uint8Array(data);
  return { version: 1, space, epoch, prev, creator, ts, registrySeq, recipients, bodyBytes, signature, raw,
    hash: packageHash(raw) };
}

type PackageDecoder = (data: Uint8Array, body: Uint8Array, signature: Uint8Array, limits: ProtocolLimits) => KeyPackage;

/** The body decoder of each key package format version this build speaks. */
export const KEY_PACKAGE_FORMATS: ReadonlyMap<number, PackageDecoder> = new Map([[1, decodeV1]]);

/**
 * Decode a key package's structure (§10.4; no signature or membership checks).
 *
 * @throws DecodeError malformed, too large or an unsupported version.
 */
export function decodeKeyPackage(data: Uint8Array, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): KeyPackage {
  const outer = decodeSignedOuter(data, "key package", [...KEY_PACKAGE_FORMATS.keys()],
    decodeLimits(limits, limits.maxKeyPackage));
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
 * Whether a new epoch is due: a device was revoked after `pkg` was made, or a
 * device added since is not one of its recipients (§10.7).
 */
export function needsRotation(pkg: KeyPackage, registry: RegistryState): boolean {
  for (const [id, r] of registry.devices) {
    if (r.revokedSeq !== null && BigInt(r.revokedSeq) > pkg.registrySeq) return true;
    if (r.revokedSeq === null && BigInt(r.addedSeq) > pkg.registrySeq && !pkg.recipients.has(id)) return true;
  }
  return false;
}

/**
 * Unwrap this package's epoch key and the key history it carries (§10.6).
 *
 * @returns epoch → key for the package's epoch and the earlier ones it carries.
 * @throws AuthorizationError no entry for the recipient; DecryptError the sealed
 *   key does not open or has the wrong format; ContextError another space/epoch.
 */
export function openEpochKeys(pkg: KeyPackage, recipientId: Uint8Array, keypair: X25519KeyPair): Map<bigint, Uint8Array> {
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
  const maxHistory = pkg.epoch < BigInt(MAX_KEY_HISTORY) ? Number(pkg.epoch) : MAX_KEY_HISTORY;
  if (!Array.isArray(value) || value.length !== 5 || value[0] !== labels.KEY_PACKAGE_SEALED ||
    !(value[3] instanceof Uint8Array) || value[3].length !== 32 || !Array.isArray(value[4]) ||
    value[4].length > maxHistory || value[4].some((k) => !(k instanceof Uint8Array) || k.length !== 32)) {
    throw new DecryptError("sealed epoch key has the wrong format");
  }
  const [, sp, ep, key, hist] = value;
  if (!(sp instanceof Uint8Array) || !bytesEqual(sp, pkg.space) || !isInt(ep) || BigInt(ep) !== pkg.epoch) {
    throw new ContextError("sealed epoch key was made for another space or epoch");
  }
  const history = hist as Uint8Array[];
  const keys = new Map<bigint, Uint8Array>();
  history.forEach((k, i) => keys.set(pkg.epoch - BigInt(history.length) + BigInt(i), k));
  keys.set(pkg.epoch, key as Uint8Array);
  return keys;
}

/** Unwrap the epoch key for `recipientId` (a device id, or the account id). */
export function openEpochKey(pkg: KeyPackage, recipientId: Uint8Array, keypair: X25519KeyPair): Uint8Array {
  return openEpochKeys(pkg, recipientId, keypair).get(pkg.epoch)!;
}

/**
 * Wrap `epochKey` for every active device and the recovery key, and sign (§10.3).
 *
 * @param ephemeralSeeds one fresh 32-byte random seed per recipient, in recipient-id order.
 * @param previousKeys the keys of the epochs before `epoch`, oldest first.
 * @throws UsageError wrong sizes, or the creator is not active.
 */
export function buildKeyPackage(opts: { creator: DeviceKeys; registry: RegistryState; space: Uint8Array; epoch: bigint;
  prev: Uint8Array; epochKey: Uint8Array; tsMs: bigint | number; ephemeralSeeds: readonly Uint8Array[];
  previousKeys?: readonly Uint8Array[] }): Uint8Array {
  const { creator, registry, space, epoch } = opts;
  if (opts.epochKey.length !== 32 || space.length !== SPACE_ID_SIZE) throw new UsageError("epoch key is 32 bytes and space id 16 bytes");
  if (!registry.isActive(creator.deviceId)) throw new UsageError("only an active device can create a key package");
  const targets = new Map<string, Uint8Array>(registry.activeDevices().map((r) => [toHex(r.deviceId), r.publicId.kxKey]));
  targets.set(toHex(registry.accountId), registry.account.recoveryKey);
  if (opts.ephemeralSeeds.length !== targets.size) {
    throw new UsageError(`need ${targets.size} ephemeral seeds, got ${opts.ephemeralSeeds.length}`);
  }
  const history = (opts.previousKeys ?? []).slice(-MAX_KEY_HISTORY);
  if (history.some((k) => k.length !== 32) || BigInt(history.length) > epoch) {
    throw new UsageError("previous keys are 32 bytes each, at most one per earlier epoch");
  }
  const plaintext = labelled(labels.KEY_PACKAGE_SEALED, space, epoch, opts.epochKey, [...history]);
  const ids = [...targets.keys()].sort();
  const recipients: Encodable[] = ids.map((rid, i) => [fromHex(rid), seal(targets.get(rid)!, plaintext, opts.ephemeralSeeds[i]!)]);
  const body = encode(new Map<string, Encodable>([["v", KEY_PACKAGE_VERSION], ["space", space], ["epoch", epoch],
    ["prev", epoch ? opts.prev : ZERO], ["creator", creator.deviceId], ["ts", BigInt(opts.tsMs)],
    ["registry_seq", BigInt(registry.seq)], ["recipients", recipients]]));
  return encode([KEY_PACKAGE_VERSION, body, creator.sign(labelled(labels.KEY_PACKAGE_SIG, body))]);
}
