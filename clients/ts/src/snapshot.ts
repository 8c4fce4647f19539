/**
 * Signed, encrypted space snapshots and attestations (docs/protocol.md §18;
 * mirrors `sddsf.protocol.snapshot`), so a new device loads state + tail
 * instead of replaying the whole history.
 *
 * Two wire forms, both stored opaquely by the relay under {@link SPACE_SNAPSHOT_DOC}:
 *
 * ```
 * version 1 (one blob; read, and written by sealSnapshot for old readers)
 *   snapshot = [1, body_bytes, signature]
 *   body     = header + {ct}
 *   header   = {v, space, author, epoch, size, root, frontier, chains, ts, nonce}
 * version 2 (chunked; what clients write)
 *   manifest = [2, body_bytes, signature]
 *   body     = header + {plain, chunks}
 *   chunk_i  = AEAD(snapshot_key, chunk_nonce(nonce, i), plaintext[i·512 KiB …],
 *                   labelled(SNAPSHOT_CHUNK_AD, space, author, epoch, size, nonce, i, n))
 * chains    = [[author, seq, op_id, deps], ...]     sorted by author, unique
 * plaintext = {docs: [[name, state], ...]}          sorted by name, unique
 * ```
 *
 * A valid signature and frontier do not show that the documents are what the
 * log says (a device of the account can sign any state): attestations
 * (§18.7) are a device's signed `match`/`mismatch` verdict after recomputing.
 */

import { bytesEqual, compareBytes, fromHex, toHex, utf8 } from "./bytes.js";
import { decode, encode, isInt, type CborValue, type DecodeLimits, type Encodable } from "./cbor.js";
import { AEAD_NONCE_SIZE, aeadDecrypt, aeadEncrypt, hkdfSha256 } from "./crypto.js";
import { DOC_ID_SIZE, HASH_SIZE, SPACE_ID_SIZE } from "./envelope.js";
import { AuthorizationError, Code, ContextError, DecodeError, EpochError, ProofError, UsageError } from "./errors.js";
import { ID_SIZE, type DeviceKeys } from "./identity.js";
import * as labels from "./labels.js";
import { labelled, taggedHash } from "./labels.js";
import { decodeLimits, DEFAULT_PROTOCOL_LIMITS, type ProtocolLimits } from "./limits.js";
import { Frontier } from "./merkle.js";
import type { DeviceRecord, RegistryState } from "./registry.js";
import type { ChainHead } from "./rules.js";
import { codePoints, decodeSigned, expectList, expectMap, type Fields } from "./schema.js";
import { VersionVector } from "./vv.js";

/** The single-blob form. */
export const SNAPSHOT_VERSION = 1;
/** The chunked form: a signed manifest and encrypted chunks (what clients write). */
export const CHUNKED_SNAPSHOT_VERSION = 2;
/** Plaintext bytes per chunk (the last one may be shorter). */
export const SNAPSHOT_CHUNK_PLAIN = 512 * 1024;
/** The doc id under which a whole-space snapshot is stored on the relay. */
export const SPACE_SNAPSHOT_DOC = new Uint8Array(16);
/** Where the relay keeps the newest corroborated whole-space snapshot (only the relay writes it). */
export const CORROBORATED_SNAPSHOT_DOC = Uint8Array.from([...new Uint8Array(15), 1]);
const HEADER_KEYS = ["v", "space", "author", "epoch", "size", "root", "frontier", "chains", "ts", "nonce"];
const MANIFEST_KEYS = [...HEADER_KEYS, "plain", "chunks"];
/** Bounds a reader enforces (so a writer checks them too). */
export const MAX_SNAPSHOT_DOCS = 1024;
export const MAX_DOC_NAME = 256;

export const ATTESTATION_VERSION = 1;
export const MATCH = "match";
export const MISMATCH = "mismatch";
/** An attestation is a few hundred bytes; anything larger is refused unread. */
export const MAX_ATTESTATION = 1024;
const ATTEST_KEYS = ["v", "space", "doc", "snapshot", "size", "verdict", "attester", "ts"];

/** A verified, decrypted snapshot (`raw` is the blob or the version-2 manifest). */
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
  /** The id attestations name it by ({@link snapshotId}). */
  readonly id: Uint8Array;
  readonly version: number;
}

/** A snapshot whose signature, frontier and epoch were checked, documents not yet decrypted. */
export interface SnapshotManifest {
  readonly version: number;
  readonly id: Uint8Array;
  readonly space: Uint8Array;
  readonly author: Uint8Array;
  readonly authorActive: boolean;
  readonly epoch: bigint;
  readonly size: bigint;
  readonly root: Uint8Array;
  readonly frontier: readonly Uint8Array[];
  readonly chains: ReadonlyMap<string, ChainHead>;
  readonly ts: bigint;
  readonly nonce: Uint8Array;
  readonly plain: number;
  readonly chunkIds: readonly Uint8Array[];
  readonly raw: Uint8Array;
  /** Version 1: decrypted already. */
  readonly inlineDocs: ReadonlyMap<string, Uint8Array> | null;
}

/** What {@link sealChunkedSnapshot} makes: upload the chunks, then the manifest. */
export interface SealedSnapshot {
  readonly manifest: Uint8Array;
  readonly chunks: readonly Uint8Array[];
  readonly chunkIds: readonly Uint8Array[];
  readonly id: Uint8Array;
  readonly size: bigint;
}

/** A device's signed verdict on a snapshot, after recomputing it from the log. */
export interface Attestation {
  readonly space: Uint8Array;
  readonly doc: Uint8Array;
  readonly snapshot: Uint8Array;
  readonly size: bigint;
  readonly verdict: string;
  readonly attester: Uint8Array;
  readonly ts: bigint;
  readonly raw: Uint8Array;
}

interface Decoded {
  readonly version: number;
  readonly fields: Fields;
  readonly headerBytes: Uint8Array;
  readonly bodyBytes: Uint8Array;
  readonly signature: Uint8Array;
  readonly ciphertext: Uint8Array;
}

/** The id attestations name a snapshot by: `tagged_hash(SNAPSHOT_ID, blob or manifest)`. */
export function snapshotId(data: Uint8Array): Uint8Array {
  return taggedHash(labels.SNAPSHOT_ID, data);
}

/** A chunk's id, as listed in its manifest: `tagged_hash(SNAPSHOT_CHUNK_ID, chunk)`. */
export function chunkId(chunk: Uint8Array): Uint8Array {
  return taggedHash(labels.SNAPSHOT_CHUNK_ID, chunk);
}

/** The key a snapshot of `epoch` is encrypted under (§18.2). */
export function snapshotKey(epochKey: Uint8Array, space: Uint8Array, epoch: bigint): Uint8Array {
  if (epochKey.length !== 32) throw new UsageError("an epoch key is 32 bytes");
  return hkdfSha256(epochKey, utf8(labels.SNAPSHOT_KEY), labelled(labels.SNAPSHOT_KEY, space, epoch));
}

/** The nonce of chunk `index` (distinct per chunk; the snapshot nonce is fresh per snapshot). */
export function chunkNonce(nonce: Uint8Array, index: number): Uint8Array {
  return taggedHash(labels.SNAPSHOT_CHUNK_NONCE, nonce, index).slice(0, AEAD_NONCE_SIZE);
}

/** The associated data of chunk `index` of `count`. */
export function chunkAd(space: Uint8Array, author: Uint8Array, epoch: bigint, size: bigint, nonce: Uint8Array,
  index: number, count: number): Uint8Array {
  return labelled(labels.SNAPSHOT_CHUNK_AD, space, author, epoch, size, nonce, index, count);
}

function outerVersion(data: Uint8Array, dl: DecodeLimits): number {
  // Which layout to decode with; decodeSigned then checks everything.
  if (data.length > dl.maxSize) {
    throw new DecodeError(`snapshot of ${data.length} bytes exceeds the limit of ${dl.maxSize}`, Code.TOO_LARGE);
  }
  const outer = decode(data, dl);
  return Array.isArray(outer) && outer.length > 0 && outer[0] === CHUNKED_SNAPSHOT_VERSION
    ? CHUNKED_SNAPSHOT_VERSION : SNAPSHOT_VERSION;
}

function decodeAny(data: Uint8Array, limits: ProtocolLimits): Decoded {
  const dl = decodeLimits(limits, limits.maxSnapshot);
  const version = outerVersion(data, dl);
  const keys = version === CHUNKED_SNAPSHOT_VERSION ? MANIFEST_KEYS : [...HEADER_KEYS, "ct"];
  const { fields, bodyBytes, signature } = decodeSigned(data, "snapshot", version, keys, dl);
  if (version === CHUNKED_SNAPSHOT_VERSION) {
    return { version, fields, headerBytes: new Uint8Array(0), bodyBytes, signature, ciphertext: new Uint8Array(0) };
  }
  const body = decode(bodyBytes, dl) as Map<string, CborValue>;
  const header = new Map([...body].filter(([k]) => k !== "ct"));
  return { version, fields, headerBytes: encode(header), bodyBytes, signature, ciphertext: fields.bytes("ct") };
}

/**
 * The `(space, author, size)` a snapshot (either version) claims: structure only, no trust.
 *
 * @throws DecodeError malformed, too large or unsupported version.
 */
export function decodeSnapshot(data: Uint8Array, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS):
  { space: Uint8Array; author: Uint8Array; size: bigint } {
  const d = decodeAny(data, limits);
  return { space: d.fields.bytes("space", { size: SPACE_ID_SIZE }), author: d.fields.bytes("author", { size: ID_SIZE }),
    size: d.fields.u64("size", 1n) };
}

function chunkList(f: Fields, limits: ProtocolLimits): [number, Uint8Array[]] {
  const plain = Number(f.u64("plain", 1n, BigInt(Number.MAX_SAFE_INTEGER)));
  const items = f.list("chunks", limits.maxSnapshotChunks);
  if (!items.every((c) => c instanceof Uint8Array && c.length === HASH_SIZE)) {
    throw new DecodeError("snapshot.chunks: expected 32-byte chunk ids");
  }
  const count = Math.ceil(plain / SNAPSHOT_CHUNK_PLAIN);
  if (items.length !== count) {
    throw new DecodeError(`snapshot.chunks: ${plain} bytes of plaintext are ${count} chunks, not ${items.length}`);
  }
  return [plain, items as Uint8Array[]];
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

function docsOf(plaintext: Uint8Array, dl: DecodeLimits): Map<string, Uint8Array> {
  const value = decode(plaintext, dl);
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

function authorRecord(registry: RegistryState, author: Uint8Array, acceptRevoked: boolean): DeviceRecord {
  const record = registry.device(author);
  if (record === undefined) {
    throw new AuthorizationError("the snapshot's author is not a device of this account", Code.UNKNOWN_DEVICE);
  }
  if (!acceptRevoked && !registry.isActive(author)) {
    throw new AuthorizationError("the snapshot's author has been revoked; its snapshots are not trusted", Code.REVOKED);
  }
  return record;
}

function frontierOf(f: Fields, size: bigint): Frontier {
  const raw = f.list("frontier", 64);
  if (!raw.every((h) => h instanceof Uint8Array)) throw new DecodeError("snapshot.frontier: expected 32-byte hashes");
  return Frontier.fromHashes(size, raw);
}

/** Options of {@link openSnapshot} and {@link verifySnapshot}. */
export interface OpenOptions {
  /** Admit a revoked author's snapshot (its signature still verifies): decide with attestations (§18.7). */
  readonly acceptRevoked?: boolean;
  readonly limits?: ProtocolLimits;
}

/**
 * Check a snapshot's (or manifest's) space, author, signature, frontier and
 * epoch (§18.5). A version-1 blob is decrypted here too; a version-2
 * manifest's chunks are checked and decrypted by {@link loadSnapshot}.
 *
 * @throws DecodeError, ContextError, AuthorizationError (`unknown_device`,
 *   `revoked`), SignatureError, ProofError, EpochError (`unknown_epoch`),
 *   DecryptError (version 1).
 */
export function openSnapshot(data: Uint8Array, registry: RegistryState, space: Uint8Array,
  epochKeys: ReadonlyMap<bigint, Uint8Array>, opts: OpenOptions = {}): SnapshotManifest {
  const limits = opts.limits ?? DEFAULT_PROTOCOL_LIMITS;
  const d = decodeAny(data, limits);
  const f = d.fields;
  if (!bytesEqual(f.bytes("space", { size: SPACE_ID_SIZE }), space)) throw new ContextError("the snapshot belongs to another space");
  const author = f.bytes("author", { size: ID_SIZE });
  const record = authorRecord(registry, author, opts.acceptRevoked ?? false);
  record.publicId.signingKey.verify(labelled(labels.SNAPSHOT_SIG, d.bodyBytes), d.signature);
  const size = f.u64("size", 1n);
  const frontier = frontierOf(f, size);
  const root = f.bytes("root", { size: HASH_SIZE });
  if (!bytesEqual(frontier.root(), root)) throw new ProofError("the snapshot's Merkle frontier does not fold to its root");
  const epoch = f.u64("epoch");
  const epochKey = epochKeys.get(epoch);
  if (epochKey === undefined) {
    throw new EpochError(`no key for the snapshot's epoch ${epoch}; sync the space's keys`, Code.UNKNOWN_EPOCH);
  }
  const nonce = f.bytes("nonce", { size: AEAD_NONCE_SIZE });
  let inlineDocs: Map<string, Uint8Array> | null = null;
  let plain = 0;
  let chunkIds: Uint8Array[] = [];
  let chains: Map<string, ChainHead>;
  if (d.version === SNAPSHOT_VERSION) {
    // Order of the version 1 checks: decryption (10), chains (11), docs (12).
    const plaintext = aeadDecrypt(snapshotKey(epochKey, space, epoch), nonce, d.ciphertext,
      labelled(labels.SNAPSHOT_AD, d.headerBytes));
    chains = chainsOf(f, limits);
    inlineDocs = docsOf(plaintext, decodeLimits(limits, limits.maxSnapshot));
    plain = plaintext.length;
  } else {
    chains = chainsOf(f, limits);
    [plain, chunkIds] = chunkList(f, limits);
  }
  return { version: d.version, id: snapshotId(data), space, author, authorActive: registry.isActive(author), epoch, size,
    root, frontier: frontier.toHashes(), chains, ts: f.u64("ts"), nonce, plain, chunkIds, raw: new Uint8Array(data),
    inlineDocs };
}

/**
 * Check a manifest's chunks against it, decrypt and decode the documents.
 *
 * @param chunks the chunk blobs in manifest order (empty for version 1).
 * @throws ProofError a chunk missing, extra or not the one named; DecryptError;
 *   DecodeError a malformed plaintext.
 */
export function loadSnapshot(m: SnapshotManifest, chunks: readonly Uint8Array[], epochKeys: ReadonlyMap<bigint, Uint8Array>,
  limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): Snapshot {
  let docs: ReadonlyMap<string, Uint8Array>;
  if (m.inlineDocs !== null) {
    docs = m.inlineDocs;
  } else {
    if (chunks.length !== m.chunkIds.length) {
      throw new ProofError(`the snapshot has ${m.chunkIds.length} chunks; ${chunks.length} were given`);
    }
    const key = snapshotKey(epochKeys.get(m.epoch)!, m.space, m.epoch);
    const plaintext = new Uint8Array(m.plain);
    chunks.forEach((blob, i) => {
      if (!bytesEqual(chunkId(blob), m.chunkIds[i]!)) {
        throw new ProofError(`snapshot chunk ${i} is not the one its signed manifest names`);
      }
      const part = aeadDecrypt(key, chunkNonce(m.nonce, i), blob, chunkAd(m.space, m.author, m.epoch, m.size, m.nonce, i,
        m.chunkIds.length));
      const expected = Math.min(SNAPSHOT_CHUNK_PLAIN, m.plain - i * SNAPSHOT_CHUNK_PLAIN);
      if (part.length !== expected) throw new DecodeError(`snapshot chunk ${i} holds ${part.length} bytes, not ${expected}`);
      plaintext.set(part, i * SNAPSHOT_CHUNK_PLAIN);
    });
    docs = docsOf(plaintext, decodeLimits(limits, m.plain));
  }
  return { space: m.space, author: m.author, epoch: m.epoch, size: m.size, root: m.root, frontier: m.frontier, chains: m.chains,
    ts: m.ts, docs, raw: m.raw, id: m.id, version: m.version };
}

/**
 * Decode, authenticate and decrypt a snapshot: {@link openSnapshot} then
 * {@link loadSnapshot} (`chunks`: a version-2 manifest's chunks, in order).
 */
export function verifySnapshot(data: Uint8Array, registry: RegistryState, space: Uint8Array,
  epochKeys: ReadonlyMap<bigint, Uint8Array>, chunks: readonly Uint8Array[] = [], opts: OpenOptions = {}): Snapshot {
  const manifest = openSnapshot(data, registry, space, epochKeys, opts);
  return loadSnapshot(manifest, chunks, epochKeys, opts.limits ?? DEFAULT_PROTOCOL_LIMITS);
}

/** What a snapshot writer provides. */
export interface SealArgs {
  readonly space: Uint8Array;
  readonly epoch: bigint;
  readonly epochKey: Uint8Array;
  readonly size: bigint;
  readonly frontier: Frontier;
  readonly chains: ReadonlyMap<string, ChainHead>;
  readonly docs: ReadonlyMap<string, Uint8Array>;
  readonly tsMs: bigint | number;
  /** 24 fresh random bytes. */
  readonly nonce: Uint8Array;
}

function checkSealArgs(a: SealArgs, limits: ProtocolLimits): void {
  if (a.frontier.size !== a.size || a.size < 1n) throw new UsageError("a snapshot covers at least one entry and its frontier has its size");
  if (a.nonce.length !== AEAD_NONCE_SIZE) throw new UsageError("the snapshot nonce must be 24 random bytes");
  if (a.docs.size > MAX_SNAPSHOT_DOCS || [...a.docs.keys()].some((n) => codePoints(n) > MAX_DOC_NAME)) {
    throw new UsageError(`a snapshot holds at most ${MAX_SNAPSHOT_DOCS} documents with names of at most ${MAX_DOC_NAME} characters`);
  }
  if (a.chains.size > limits.maxDevices) throw new UsageError(`a snapshot holds at most ${limits.maxDevices} chains`);
}

function headerOf(author: DeviceKeys, version: number, a: SealArgs): Map<string, Encodable> {
  return new Map<string, Encodable>([
    ["v", version], ["space", a.space], ["author", author.deviceId], ["epoch", a.epoch], ["size", a.size],
    ["root", a.frontier.root()], ["frontier", a.frontier.toHashes()],
    ["chains", [...a.chains].sort(([x], [y]) => (x < y ? -1 : 1)).map(([id, h]) => [fromHex(id), h.seq, h.opId, h.deps.toWire()])],
    ["ts", BigInt(a.tsMs)], ["nonce", a.nonce],
  ]);
}

function payloadOf(docs: ReadonlyMap<string, Uint8Array>): Uint8Array {
  const names = [...docs.keys()].sort((a, b) => compareBytes(utf8(a), utf8(b)));
  return encode(new Map([["docs", names.map((n) => [n, docs.get(n)!])]]));
}

/**
 * Encrypt and sign the state of a space at log size `size` as ONE blob
 * (version 1, at most `maxSnapshot` bytes), for readers that only speak it.
 *
 * @throws UsageError inconsistent arguments, or the snapshot exceeds `maxSnapshot`.
 */
export function sealSnapshot(author: DeviceKeys, a: SealArgs, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): Uint8Array {
  checkSealArgs(a, limits);
  const header = headerOf(author, SNAPSHOT_VERSION, a);
  const headerBytes = encode(header);
  const ct = aeadEncrypt(snapshotKey(a.epochKey, a.space, a.epoch), a.nonce, payloadOf(a.docs),
    labelled(labels.SNAPSHOT_AD, headerBytes));
  const body = encode(new Map([...header, ["ct", ct]]));
  const raw = encode([SNAPSHOT_VERSION, body, author.sign(labelled(labels.SNAPSHOT_SIG, body))]);
  if (raw.length > limits.maxSnapshot) throw new UsageError(`snapshot of ${raw.length} bytes exceeds the limit of ${limits.maxSnapshot}`);
  return raw;
}

/**
 * Encrypt the state of a space at log size `size` in chunks of
 * {@link SNAPSHOT_CHUNK_PLAIN} bytes and sign a manifest that binds them
 * (version 2, §18.4).
 *
 * @throws UsageError inconsistent arguments, more than `maxSnapshotChunks`
 *   chunks, or a manifest over `maxSnapshot` bytes.
 */
export function sealChunkedSnapshot(author: DeviceKeys, a: SealArgs,
  limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): SealedSnapshot {
  checkSealArgs(a, limits);
  const plaintext = payloadOf(a.docs);
  const count = Math.ceil(plaintext.length / SNAPSHOT_CHUNK_PLAIN);
  if (count > limits.maxSnapshotChunks) {
    throw new UsageError(`a space state of ${plaintext.length} bytes needs ${count} snapshot chunks; the limit is ` +
      `${limits.maxSnapshotChunks}`);
  }
  const key = snapshotKey(a.epochKey, a.space, a.epoch);
  const chunks = Array.from({ length: count }, (_, i) => aeadEncrypt(key, chunkNonce(a.nonce, i),
    plaintext.subarray(i * SNAPSHOT_CHUNK_PLAIN, (i + 1) * SNAPSHOT_CHUNK_PLAIN),
    chunkAd(a.space, author.deviceId, a.epoch, a.size, a.nonce, i, count)));
  const ids = chunks.map(chunkId);
  const body = encode(new Map<string, Encodable>([...headerOf(author, CHUNKED_SNAPSHOT_VERSION, a),
    ["plain", plaintext.length], ["chunks", ids]]));
  const manifest = encode([CHUNKED_SNAPSHOT_VERSION, body, author.sign(labelled(labels.SNAPSHOT_SIG, body))]);
  if (manifest.length > limits.maxSnapshot) {
    throw new UsageError(`snapshot manifest of ${manifest.length} bytes exceeds the limit of ${limits.maxSnapshot}`);
  }
  return { manifest, chunks, chunkIds: ids, id: snapshotId(manifest), size: a.size };
}

// ------------------------------------------------------------- attestations

/**
 * Sign a verdict on the snapshot whose id is `snapshot` ({@link snapshotId}):
 * `match` when the state recomputed from the log equals its documents.
 *
 * @throws UsageError a verdict other than match/mismatch, or bad sizes.
 */
export function attestSnapshot(attester: DeviceKeys, a: { space: Uint8Array; doc: Uint8Array; snapshot: Uint8Array;
  size: bigint; verdict: string; tsMs: bigint | number }): Uint8Array {
  if (a.verdict !== MATCH && a.verdict !== MISMATCH) throw new UsageError("an attestation's verdict is 'match' or 'mismatch'");
  if (a.space.length !== SPACE_ID_SIZE || a.doc.length !== DOC_ID_SIZE || a.snapshot.length !== HASH_SIZE || a.size < 1n) {
    throw new UsageError("an attestation names a space, a doc, a 32-byte snapshot id and a size >= 1");
  }
  const body = encode(new Map<string, Encodable>([["v", ATTESTATION_VERSION], ["space", a.space], ["doc", a.doc],
    ["snapshot", a.snapshot], ["size", a.size], ["verdict", a.verdict], ["attester", attester.deviceId],
    ["ts", BigInt(a.tsMs)]]));
  return encode([ATTESTATION_VERSION, body, attester.sign(labelled(labels.SNAPSHOT_ATTEST_SIG, body))]);
}

function attestation(data: Uint8Array): [Attestation, Uint8Array, Uint8Array] {
  const { fields: f, bodyBytes, signature } = decodeSigned(data, "snapshot attestation", ATTESTATION_VERSION, ATTEST_KEYS,
    { maxSize: MAX_ATTESTATION, maxDepth: 2, maxItems: 16 });
  const verdict = f.str("verdict", 16);
  if (verdict !== MATCH && verdict !== MISMATCH) throw new DecodeError("snapshot attestation: verdict is 'match' or 'mismatch'");
  const att: Attestation = {
    space: f.bytes("space", { size: SPACE_ID_SIZE }), doc: f.bytes("doc", { size: DOC_ID_SIZE }),
    snapshot: f.bytes("snapshot", { size: HASH_SIZE }), size: f.u64("size", 1n), verdict,
    attester: f.bytes("attester", { size: ID_SIZE }), ts: f.u64("ts"), raw: new Uint8Array(data),
  };
  return [att, bodyBytes, signature];
}

/**
 * An attestation's claims: structure only, no signature check.
 *
 * @throws DecodeError malformed, too large or unsupported version.
 */
export function decodeAttestation(data: Uint8Array): Attestation {
  return attestation(data)[0];
}

/**
 * Decode an attestation and check its space, attester and signature.
 *
 * @throws DecodeError; ContextError another space; AuthorizationError the
 *   attester is unknown or (without `acceptRevoked`) revoked; SignatureError.
 */
export function verifyAttestation(data: Uint8Array, registry: RegistryState, space: Uint8Array,
  acceptRevoked = false): Attestation {
  const [att, body, sig] = attestation(data);
  if (!bytesEqual(att.space, space)) throw new ContextError("the attestation belongs to another space");
  const record = registry.device(att.attester);
  if (record === undefined) {
    throw new AuthorizationError("the attestation's device is not a device of this account", Code.UNKNOWN_DEVICE);
  }
  if (!acceptRevoked && !registry.isActive(att.attester)) {
    throw new AuthorizationError("the attestation's device has been revoked", Code.REVOKED);
  }
  record.publicId.signingKey.verify(labelled(labels.SNAPSHOT_ATTEST_SIG, body), sig);
  return att;
}
