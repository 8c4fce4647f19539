/**
 * Op envelopes: signed, encrypted CRDT updates (docs/protocol.md §8; mirrors
 * `sddsf.protocol.envelope`).
 *
 * ```
 * envelope = [version, header_bytes, ciphertext, signature]      version = 1
 * header   = {v, suite, space, doc, author, seq, prev, deps, epoch, ts, seen, nonce, reg}
 * ```
 *
 * Format versions: the outer array is version 1. The header has its own
 * version: 2 (with `reg`, the registry seq its author had verified) is what
 * new ops use; 1 (without `reg`) is readable history only — the rules refuse a
 * new one (§13 rule 7a). {@link HEADER_FORMATS} holds the key set of each.
 */

import { bytesEqual, utf8, zeros } from "./bytes.js";
import { decode, encode, isMap, type CborValue } from "./cbor.js";
import { HLCTimestamp } from "./clock.js";
import { AEAD_NONCE_SIZE, aeadDecrypt, aeadEncrypt, hkdfSha256, type Ed25519PublicKey } from "./crypto.js";
import { Code, DecodeError, UsageError } from "./errors.js";
import { ID_SIZE, type DeviceKeys } from "./identity.js";
import * as labels from "./labels.js";
import { labelled, taggedHash } from "./labels.js";
import { decodeLimits, DEFAULT_PROTOCOL_LIMITS, type ProtocolLimits } from "./limits.js";
import { checkVersion, expectMap, versionOfMap } from "./schema.js";
import { VersionVector } from "./vv.js";

/** The outer envelope array's version. */
export const FORMAT_VERSION = 1;
/** The header format new ops use (2 adds `reg`); 1 is readable history only. */
export const HEADER_VERSION = 2;
/** Header versions this build reads. */
export const HEADER_VERSIONS: readonly number[] = [1, HEADER_VERSION];
/** Ed25519 + XChaCha20-Poly1305 + HKDF-SHA256 + BLAKE2b-256 + RFC 9162 SHA-256 log. */
export const SUITE_V1 = 1;
/** Cipher suites this build accepts. */
export const SUPPORTED_SUITES: ReadonlySet<number> = new Set([SUITE_V1]);
export const SPACE_ID_SIZE = 16;
export const DOC_ID_SIZE = 16;
export const HASH_SIZE = 32;
/** `prev` of an author's first op in a space. */
export const GENESIS_PREV = zeros(HASH_SIZE);
const HEADER_KEYS_V1 = ["v", "suite", "space", "doc", "author", "seq", "prev", "deps", "epoch", "ts", "seen", "nonce"];
/** The keys of each header version this build reads. */
export const HEADER_FORMATS: ReadonlyMap<number, readonly string[]> = new Map([
  [1, HEADER_KEYS_V1],
  [2, [...HEADER_KEYS_V1, "reg"]],
]);

/** The last tree head (size, root) of the space log the author had verified. */
export interface TreeHeadRef {
  readonly size: bigint;
  readonly root: Uint8Array;
}

/** The signed, authenticated (AD) header of an op. */
export interface OpHeader {
  readonly version: number;
  readonly suite: number;
  readonly space: Uint8Array;
  readonly doc: Uint8Array;
  readonly author: Uint8Array;
  readonly seq: bigint;
  readonly prev: Uint8Array;
  readonly deps: VersionVector;
  readonly epoch: bigint;
  readonly ts: HLCTimestamp;
  readonly seen: TreeHeadRef | null;
  readonly nonce: Uint8Array;
  /** The registry seq the author had verified (header version 2; null in version 1). */
  readonly reg: bigint | null;
}

/** A decoded envelope, with the exact bytes it came from. */
export class OpEnvelope {
  constructor(
    readonly header: OpHeader,
    readonly headerBytes: Uint8Array,
    readonly ciphertext: Uint8Array,
    readonly signature: Uint8Array,
    readonly raw: Uint8Array,
    readonly opId: Uint8Array,
  ) {}

  /** The bytes the author's signature covers. */
  signedMessage(): Uint8Array {
    return labelled(labels.OP_SIG, this.headerBytes, taggedHash(labels.OP_CIPHERTEXT, this.ciphertext));
  }

  /**
   * Check the author's signature.
   *
   * @throws SignatureError the signature does not verify under `authorKey`.
   */
  verifySignature(authorKey: Ed25519PublicKey): void {
    authorKey.verify(this.signedMessage(), this.signature);
  }
}

/** The wire map of a header (with `reg` from version 2), ready for {@link encode}. */
export function headerToWire(h: OpHeader): Map<string, CborValue> {
  const wire = new Map<string, CborValue>([
    ["v", h.version],
    ["suite", h.suite],
    ["space", h.space],
    ["doc", h.doc],
    ["author", h.author],
    ["seq", h.seq],
    ["prev", h.prev],
    ["deps", h.deps.toWire()],
    ["epoch", h.epoch],
    ["ts", h.ts.toWire()],
    ["seen", h.seen === null ? null : [h.seen.size, h.seen.root]],
    ["nonce", h.nonce],
  ]);
  if (h.version >= 2) wire.set("reg", h.reg ?? 0n);
  return wire;
}

/** Per-document AEAD key for one key epoch (§8.4). */
export function deriveDocKey(epochKey: Uint8Array, space: Uint8Array, doc: Uint8Array, epoch: bigint): Uint8Array {
  if (epochKey.length !== 32) throw new UsageError("an epoch key is 32 bytes");
  return hkdfSha256(epochKey, utf8(labels.DOC_KEY), labelled(labels.DOC_KEY, space, doc, epoch));
}

/**
 * Encrypt and sign `plaintext` as an op with a version-2 header (§8.9).
 *
 * `header.nonce` must be 24 fresh random bytes (the caller supplies them), and
 * `header.reg` the registry seq the author has verified.
 *
 * @throws UsageError the header does not belong to `author`, is not of the
 *   current version, or the op exceeds `maxOp`.
 */
export function sealOp(
  author: DeviceKeys,
  header: Omit<OpHeader, "version" | "suite"> & Partial<Pick<OpHeader, "version" | "suite">>,
  plaintext: Uint8Array,
  epochKey: Uint8Array,
  limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS,
): OpEnvelope {
  const h: OpHeader = { ...header, version: header.version ?? HEADER_VERSION, suite: header.suite ?? SUITE_V1 };
  if (h.version !== HEADER_VERSION || h.reg === null || h.reg < 0n) {
    throw new UsageError(`new ops use header version ${HEADER_VERSION} with the verified registry seq in header.reg`);
  }
  if (!bytesEqual(h.author, author.deviceId)) throw new UsageError("header.author is not this device");
  if (h.nonce.length !== AEAD_NONCE_SIZE) throw new UsageError("header.nonce must be 24 random bytes");
  const headerBytes = encode(headerToWire(h));
  const key = deriveDocKey(epochKey, h.space, h.doc, h.epoch);
  const ciphertext = aeadEncrypt(key, h.nonce, plaintext, labelled(labels.OP_AD, headerBytes));
  const message = labelled(labels.OP_SIG, headerBytes, taggedHash(labels.OP_CIPHERTEXT, ciphertext));
  const raw = encode([FORMAT_VERSION, headerBytes, ciphertext, author.sign(message)]);
  if (raw.length > limits.maxOp) {
    throw new UsageError(`op of ${raw.length} bytes exceeds the limit of ${limits.maxOp}; split the update`);
  }
  return decodeEnvelope(raw, limits);
}

/**
 * Decrypt an op's payload with the key of its epoch (§8.10).
 *
 * @throws DecryptError wrong key, or tampered header or ciphertext.
 */
export function openOp(envelope: OpEnvelope, epochKey: Uint8Array): Uint8Array {
  const h = envelope.header;
  const key = deriveDocKey(epochKey, h.space, h.doc, h.epoch);
  return aeadDecrypt(key, h.nonce, envelope.ciphertext, labelled(labels.OP_AD, envelope.headerBytes));
}

function decodeHeader(headerBytes: Uint8Array, limits: ProtocolLimits): OpHeader {
  const value = decode(headerBytes, decodeLimits(limits, limits.maxHeader));
  versionOfMap(value, HEADER_VERSIONS, "op header");
  const version = checkVersion(isMap(value) ? value.get("v") : undefined, HEADER_VERSIONS, "op header");
  const f = expectMap(value, "op header", HEADER_FORMATS.get(version)!);
  const suite = f.u64("suite");
  if (suite > BigInt(Number.MAX_SAFE_INTEGER) || !SUPPORTED_SUITES.has(Number(suite))) {
    throw new DecodeError(`cipher suite ${suite} is not allowed`, Code.UNSUPPORTED_SUITE);
  }
  const seen = decodeSeen(f.raw("seen"));
  const seq = f.u64("seq", 1n);
  const prev = f.bytes("prev", { size: HASH_SIZE });
  if (seq === 1n && !bytesEqual(prev, GENESIS_PREV)) {
    throw new DecodeError("op header.prev must be all zeros for an author's first op");
  }
  const space = f.bytes("space", { size: SPACE_ID_SIZE });
  const doc = f.bytes("doc", { size: DOC_ID_SIZE });
  const author = f.bytes("author", { size: ID_SIZE });
  const deps = VersionVector.fromWire(f.raw("deps"), "op header.deps", ID_SIZE, limits.maxDeps);
  const epoch = f.u64("epoch");
  const ts = HLCTimestamp.fromWire(f.raw("ts"), "op header.ts");
  const nonce = f.bytes("nonce", { size: AEAD_NONCE_SIZE });
  const reg = version >= 2 ? f.u64("reg") : null;
  return { version, suite: Number(suite), space, doc, author, seq, prev, deps, epoch, ts, seen, nonce, reg };
}

function decodeSeen(raw: CborValue): TreeHeadRef | null {
  if (raw === null) return null;
  const pair = Array.isArray(raw) ? raw : [];
  const [size, root] = pair;
  if (pair.length !== 2 || (typeof size !== "number" && typeof size !== "bigint") || BigInt(size) < 1n ||
    !(root instanceof Uint8Array) || root.length !== HASH_SIZE) {
    throw new DecodeError("op header.seen: expected [size >= 1, 32-byte root] or null");
  }
  return { size: BigInt(size), root };
}

/**
 * The header decoder of each outer envelope version this build speaks (the
 * outer array is version 1; its header is version 1 or 2).
 */
export const ENVELOPE_FORMATS: ReadonlyMap<number, (headerBytes: Uint8Array, limits: ProtocolLimits) => OpHeader> =
  new Map([[FORMAT_VERSION, decodeHeader]]);

/**
 * Decode an envelope (structure only: no signature or rule checks), with the
 * checks of §8.3 in the reference order.
 *
 * @throws DecodeError `too_large`, `malformed`, `unsupported_version` or
 *   `unsupported_suite`, with the field at fault in the message.
 */
export function decodeEnvelope(data: Uint8Array, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): OpEnvelope {
  if (data.length > limits.maxOp) {
    throw new DecodeError(`op of ${data.length} bytes exceeds the limit of ${limits.maxOp}`, Code.TOO_LARGE);
  }
  const outer = decode(data, decodeLimits(limits, limits.maxOp));
  if (!Array.isArray(outer) || outer.length !== 4) {
    throw new DecodeError("op envelope: expected [version, header, ciphertext, signature]");
  }
  const [v, headerBytes, ciphertext, signature] = outer;
  const version = checkVersion(v, [...ENVELOPE_FORMATS.keys()], "op envelope");
  if (!(headerBytes instanceof Uint8Array) || !(ciphertext instanceof Uint8Array) || !(signature instanceof Uint8Array)) {
    throw new DecodeError("op envelope: header, ciphertext and signature are byte strings");
  }
  if (signature.length !== 64) throw new DecodeError("op envelope: signature must be 64 bytes");
  if (ciphertext.length < 16) throw new DecodeError("op envelope: ciphertext is shorter than its tag");
  const header = ENVELOPE_FORMATS.get(version)!(headerBytes, limits);
  const raw = new Uint8Array(data);
  return new OpEnvelope(header, headerBytes, ciphertext, signature, raw, taggedHash(labels.OP_ID, raw));
}
