/**
 * Signed, encrypted space snapshots (docs/protocol.md §18; mirrors
 * `sddsf.protocol.snapshot`), so a new device loads state + tail instead of
 * replaying the whole history.
 *
 * ```
 * snapshot  = [version, body_bytes, signature]
 * body      = header + {ct}
 * header    = {v, space, author, epoch, size, root, frontier, chains, ts, nonce}
 * chains    = [[author, seq, op_id, deps], ...]     sorted by author, unique
 * plaintext = {docs: [[name, state], ...]}          sorted by name, unique
 * ```
 *
 * Format versions: this build reads and writes version 1 (one blob). The
 * chunked format (version 2: a manifest plus chunks) is added as another
 * decoder in {@link SNAPSHOT_FORMATS}.
 */

import { bytesEqual, compareBytes, fromHex, toHex, utf8 } from "./bytes.js";
import { decode, encode, isInt, type CborValue, type Encodable } from "./cbor.js";
import { AEAD_NONCE_SIZE, aeadDecrypt, aeadEncrypt, hkdfSha256 } from "./crypto.js";
import { HASH_SIZE, SPACE_ID_SIZE } from "./envelope.js";
import { AuthorizationError, Code, ContextError, DecodeError, EpochError, ProofError, UsageError } from "./errors.js";
import { ID_SIZE, type DeviceKeys } from "./identity.js";
import * as labels from "./labels.js";
import { labelled } from "./labels.js";
import { decodeLimits, DEFAULT_PROTOCOL_LIMITS, type ProtocolLimits } from "./limits.js";
import { Frontier } from "./merkle.js";
import type { RegistryState } from "./registry.js";
import type { ChainHead } from "./rules.js";
import { codePoints, decodeSignedOuter, expectList, expectMap, versionOfMap, type Fields } from "./schema.js";
import { VersionVector } from "./vv.js";

/** The snapshot format version this module writes. */
export const SNAPSHOT_VERSION = 1;
/** The doc id under which a whole-space snapshot is stored on the relay. */
export const SPACE_SNAPSHOT_DOC = new Uint8Array(16);
const HEADER_KEYS = ["v", "space", "author", "epoch", "size", "root", "frontier", "chains", "ts", "nonce"];
/** Bounds a reader enforces (so a writer checks them too). */
export const MAX_SNAPSHOT_DOCS = 1024;
export const MAX_DOC_NAME = 256;

/** A verified, decrypted snapshot. */
export interface Snapshot {
  readonly space: Uint8Array;
  readonly author: Uint8Array;
  readonly epoch: bigint;
  readonly size: bigint;
  readonly root: Uint8Array;
  readonly frontier: readonly Uint8Array[];
  /** Chain heads by author (hex). */
  readonly chains: ReadonlyMap<string, ChainHead>;
  readonly ts: bigint;
  /** Document name → state (a Yjs update in the reference client). */
  readonly docs: ReadonlyMap<string, Uint8Array>;
  readonly raw: Uint8Array;
}

interface Decoded {
  readonly fields: Fields;
  readonly headerBytes: Uint8Array;
  readonly bodyBytes: Uint8Array;
  readonly signature: Uint8Array;
  readonly ciphertext: Uint8Array;
}

function snapshotKey(epochKey: Uint8Array, space: Uint8Array, epoch: bigint): Uint8Array {
  if (epochKey.length !== 32) throw new UsageError("an epoch key is 32 bytes");
  return hkdfSha256(epochKey, utf8(labels.SNAPSHOT_KEY), labelled(labels.SNAPSHOT_KEY, space, epoch));
}

function decodeV1(bodyBytes: Uint8Array, signature: Uint8Array, limits: ProtocolLimits): Decoded {
  const dl = decodeLimits(limits, limits.maxSnapshot);
  const body = decode(bodyBytes, dl);
  versionOfMap(body, SNAPSHOT_VERSION, "snapshot body");
  const fields = expectMap(body, "snapshot", [...HEADER_KEYS, "ct"]);
  const header = new Map([...(body as Map<string, CborValue>)].filter(([k]) => k !== "ct"));
  return { fields, headerBytes: encode(header), bodyBytes, signature, ciphertext: fields.bytes("ct") };
}

/** The body decoder of each snapshot format version this build speaks. */
export const SNAPSHOT_FORMATS: ReadonlyMap<number, (body: Uint8Array, sig: Uint8Array, limits: ProtocolLimits) => Decoded> =
  new Map([[1, decodeV1]]);

function decodeAny(data: Uint8Array, limits: ProtocolLimits): Decoded {
  const outer = decodeSignedOuter(data, "snapshot", [...SNAPSHOT_FORMATS.keys()], decodeLimits(limits, limits.maxSnapshot));
  return SNAPSHOT_FORMATS.get(outer.version)!(outer.bodyBytes, outer.signature, limits);
}

/**
 * The `(space, author, size)` a snapshot claims (structure only, no trust).
 *
 * @throws DecodeError malformed, too large or unsupported version.
 */
export function decodeSnapshot(data: Uint8Array, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS):
  { space: Uint8Array; author: Uint8Array; size: bigint } {
  const d = decodeAny(data, limits);
  return { space: d.fields.bytes("space", { size: SPACE_ID_SIZE }), author: d.fields.bytes("author", { size: ID_SIZE }),
    size: d.fields.u64("size", 1n) };
}

function chainsOf(f: Fields, limits: ProtocolLimits): Map<string, ChainHead> {
  const out = new Map<string, ChainHead>();
  let last: Uint8Array = new Uint8Array(0);
  for (const item of f.list("chains", limits.maxDevices)) {
    const row = expectList(item, "snapshot.chains[]", 4);
    if (row.length !== 4) throw new DecodeError("snapshot.chains[]: expected [author, seq, op_id, deps]");
    const [author, seq, opId, deps] = row;
    if (!(author instanceof Uint8Array) || author.length !== ID_SIZE || compareBytes(author, last) <= 0) {
      throw new DecodeError("snapshot.chains: authors are 32-byte ids in strictly increasing order");
    }
    if (!isInt(seq) || BigInt(seq) < 1n) throw new DecodeError("snapshot.chains[]: seq must be an integer >= 1");
    if (!(opId instanceof Uint8Array) || opId.length !== HASH_SIZE) throw new DecodeError("snapshot.chains[]: op_id must be 32 bytes");
    out.set(toHex(author), { seq: BigInt(seq), opId, deps: VersionVector.fromWire(deps!, "snapshot.chains[].deps", ID_SIZE, limits.maxDeps) });
    last = author;
  }
  return out;
}

function docsOf(plaintext: Uint8Array, limits: ProtocolLimits): Map<string, Uint8Array> {
  const value = decode(plaintext, decodeLimits(limits, limits.maxSnapshot));
  const f = expectMap(value, "snapshot payload", ["docs"]);
  const docs = new Map<string, Uint8Array>();
  for (const item of f.list("docs", MAX_SNAPSHOT_DOCS)) {
    const row = expectList(item, "snapshot payload.docs[]", 2);
    const [name, state] = row;
    if (row.length !== 2 || typeof name !== "string" || codePoints(name) > MAX_DOC_NAME || !(state instanceof Uint8Array) ||
      docs.has(name)) {
      throw new DecodeError("snapshot payload.docs: expected unique [name, state] pairs");
    }
    docs.set(name, state);
  }
  return docs;
}

/**
 * Decode, authenticate and decrypt a snapshot (§18.5, steps in order).
 *
 * @param registry the reader's verified registry state (its latest).
 * @param epochKeys the epoch keys the reader holds.
 * @throws DecodeError, ContextError, AuthorizationError, SignatureError,
 *   ProofError, EpochError, DecryptError.
 */
export function verifySnapshot(data: Uint8Array, registry: RegistryState, space: Uint8Array,
  epochKeys: ReadonlyMap<bigint, Uint8Array>, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): Snapshot {
  const d = decodeAny(data, limits);
  const f = d.fields;
  if (!bytesEqual(f.bytes("space", { size: SPACE_ID_SIZE }), space)) throw new ContextError("the snapshot belongs to another space");
  const author = f.bytes("author", { size: ID_SIZE });
  const record = registry.device(author);
  if (record === undefined) {
    throw new AuthorizationError("the snapshot's author is not a device of this account", Code.UNKNOWN_DEVICE);
  }
  if (!registry.isActive(author)) {
    throw new AuthorizationError("the snapshot's author has been revoked; its snapshots are not trusted", Code.REVOKED);
  }
  record.publicId.signingKey.verify(labelled(labels.SNAPSHOT_SIG, d.bodyBytes), d.signature);
  const size = f.u64("size", 1n);
  const frontierRaw = f.list("frontier", 64);
  if (!frontierRaw.every((h) => h instanceof Uint8Array)) throw new DecodeError("snapshot.frontier: expected 32-byte hashes");
  const frontier = Frontier.fromHashes(size, frontierRaw);
  const root = f.bytes("root", { size: HASH_SIZE });
  if (!bytesEqual(frontier.root(), root)) throw new ProofError("the snapshot's Merkle frontier does not fold to its root");
  const epoch = f.u64("epoch");
  const epochKey = epochKeys.get(epoch);
  if (epochKey === undefined) {
    throw new EpochError(`no key for the snapshot's epoch ${epoch}; sync the space's keys`, Code.UNKNOWN_EPOCH);
  }
  const nonce = f.bytes("nonce", { size: AEAD_NONCE_SIZE });
  const plaintext = aeadDecrypt(snapshotKey(epochKey, space, epoch), nonce, d.ciphertext,
    labelled(labels.SNAPSHOT_AD, d.headerBytes));
  const chains = chainsOf(f, limits);
  const ts = f.u64("ts");
  const docs = docsOf(plaintext, limits);
  return { space, author, epoch, size, root, frontier: frontier.toHashes(), chains, ts, docs, raw: new Uint8Array(data) };
}

/**
 * Encrypt and sign the state of a space at log size `size` (§18.4).
 * `nonce` must be 24 fresh random bytes.
 *
 * @throws UsageError inconsistent arguments, or the snapshot exceeds `maxSnapshot`.
 */
export function sealSnapshot(author: DeviceKeys, opts: { space: Uint8Array; epoch: bigint; epochKey: Uint8Array;
  size: bigint; frontier: Frontier; chains: ReadonlyMap<string, ChainHead>; docs: ReadonlyMap<string, Uint8Array>;
  tsMs: bigint | number; nonce: Uint8Array }, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): Uint8Array {
  const { space, epoch, size, frontier, chains, docs } = opts;
  if (frontier.size !== size || size < 1n) throw new UsageError("a snapshot covers at least one entry and its frontier has its size");
  if (opts.nonce.length !== AEAD_NONCE_SIZE) throw new UsageError("the snapshot nonce must be 24 random bytes");
  if (docs.size > MAX_SNAPSHOT_DOCS || [...docs.keys()].some((n) => codePoints(n) > MAX_DOC_NAME)) {
    throw new UsageError(`a snapshot holds at most ${MAX_SNAPSHOT_DOCS} documents with names of at most ${MAX_DOC_NAME} characters`);
  }
  if (chains.size > limits.maxDevices) throw new UsageError(`a snapshot holds at most ${limits.maxDevices} chains`);
  const header = new Map<string, Encodable>([
    ["v", SNAPSHOT_VERSION], ["space", space], ["author", author.deviceId], ["epoch", epoch], ["size", size],
    ["root", frontier.root()], ["frontier", frontier.toHashes()],
    ["chains", [...chains].sort(([a], [b]) => (a < b ? -1 : 1)).map(([a, h]) => [fromHex(a), h.seq, h.opId, h.deps.toWire()])],
    ["ts", BigInt(opts.tsMs)], ["nonce", opts.nonce],
  ]);
  const headerBytes = encode(header);
  const names = [...docs.keys()].sort((a, b) => compareBytes(utf8(a), utf8(b)));
  const plaintext = encode(new Map([["docs", names.map((n) => [n, docs.get(n)!])]]));
  const ct = aeadEncrypt(snapshotKey(opts.epochKey, space, epoch), opts.nonce, plaintext, labelled(labels.SNAPSHOT_AD, headerBytes));
  const body = encode(new Map([...header, ["ct", ct]]));
  const raw = encode([SNAPSHOT_VERSION, body, author.sign(labelled(labels.SNAPSHOT_SIG, body))]);
  if (raw.length > limits.maxSnapshot) throw new UsageError(`snapshot of ${raw.length} bytes exceeds the limit of ${limits.maxSnapshot}`);
  return raw;
}

