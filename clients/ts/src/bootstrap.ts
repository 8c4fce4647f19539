/**
 * The first-sync bundle (docs/protocol.md §17.9; mirrors
 * `sddsf.protocol.bootstrap` and `sddsf.client.transport.prefetch`): what a
 * new device's first sync reads, in one message the relay signs.
 *
 * ```
 * bundle = [1, body_bytes, signature]     signature over labelled(BOOTSTRAP_SIG, body_bytes)
 * body   = {v, account, device, nonce, ts, registry, policy, spaces}
 * space  = {space, size, root, epoch, head} + {keys} + {snaps} + {chunks} + {after, ops} + {owner}   (each optional;
 *          owner: a space another account shares with this one)
 * snap   = [doc_id, covers_offset, blob / null, snapshot_id / null, [attestation, ...]]
 * op     = [offset, op_id, leaf_hash, envelope / null]
 * ```
 *
 * {@link verifyBootstrap} checks the relay key's signature and the binding to
 * the device's request (account, device, nonce): a bundle altered on the way,
 * or replayed from another request, is refused as one unit. The signature
 * gives no trust in the contents: {@link Prefetched} answers the first sync's
 * reads with exactly the bytes each endpoint would have served, and the same
 * code verifies them as when the endpoint serves them.
 */

import { bytesEqual, toHex } from "./bytes.js";
import { isInt, type CborValue, type DecodeLimits } from "./cbor.js";
import type { Ed25519PublicKey } from "./crypto.js";
import { Code, DecodeError, NotFoundError, ProofError } from "./errors.js";
import * as labels from "./labels.js";
import { labelled } from "./labels.js";
import type { PulledOp, SpaceInfo } from "./relay.js";
import { decodeSigned, expectList, expectMap, type Fields } from "./schema.js";

/** The bundle format version this build speaks. */
export const BOOTSTRAP_VERSION = 1;
/** The name a relay lists in a session's `features` when it serves bundles (§17.3.1). */
export const BOOTSTRAP_FEATURE = "bootstrap";
/** The largest bundle a device decodes (a relay sends at most its own budget). */
export const BOOTSTRAP_MAX_BYTES = 16 << 20;
/** The device's request nonce, echoed in the signed body. */
export const BOOTSTRAP_NONCE_SIZE = 16;

const LIMITS: DecodeLimits = Object.freeze({ maxSize: BOOTSTRAP_MAX_BYTES, maxDepth: 8, maxItems: 10_000 });
const BODY = ["v", "account", "device", "nonce", "ts", "registry", "policy", "spaces"];
const SPACE = ["space", "size", "root", "epoch", "head"];
const SPACE_OPTIONAL = ["keys", "snaps", "chunks", "after", "ops", "owner"];
const MAX_ITEMS = 10_000;

/** A stored snapshot (`blob` null: none is stored under `doc`) and the attestations about it. */
export interface BundledSnapshot {
  readonly doc: Uint8Array;
  readonly coversOffset: number;
  readonly blob: Uint8Array | null;
  readonly snapshotId: Uint8Array | null;
  readonly attestations: readonly Uint8Array[];
}

/** One space of the account: `keys` null when left out; `ops` the entries after `after` (null: no tail). */
export interface BundledSpace {
  readonly info: SpaceInfo;
  readonly head: Uint8Array;
  readonly keys: readonly Uint8Array[] | null;
  readonly snapshots: readonly BundledSnapshot[];
  /** Chunk id (hex) → chunk. */
  readonly chunks: ReadonlyMap<string, Uint8Array>;
  readonly after: number | null;
  readonly ops: readonly PulledOp[];
}

/** A bundle whose signature and request binding were checked (its components were not). */
export interface Bootstrap {
  readonly account: Uint8Array;
  readonly device: Uint8Array;
  readonly ts: bigint;
  /** Every registry entry from seq 0, or null when left out. */
  readonly registry: readonly Uint8Array[] | null;
  readonly policy: Uint8Array | null;
  readonly spaces: readonly BundledSpace[];
}

/** The request a bundle must answer. */
export interface BootstrapRequest {
  readonly account: Uint8Array;
  readonly device: Uint8Array;
  readonly nonce: Uint8Array;
}

function bad(what: string, why: string): DecodeError {
  return new DecodeError(`bootstrap ${what}: ${why}`, Code.MALFORMED);
}

/**
 * Decode a bundle and check its signature under the pinned relay key and its
 * binding to the request.
 *
 * @throws DecodeError malformed, too large, or an unsupported version;
 *   ProofError `tree_head_invalid` when the signature does not verify or the
 *   bundle answers another request (account, device or nonce).
 */
export function verifyBootstrap(data: Uint8Array, relayKey: Ed25519PublicKey, request: BootstrapRequest): Bootstrap {
  const { fields: f, bodyBytes, signature } = decodeSigned(data, "bootstrap bundle", BOOTSTRAP_VERSION, BODY, LIMITS);
  if (!relayKey.isValidSignature(labelled(labels.BOOTSTRAP_SIG, bodyBytes), signature)) {
    throw new ProofError("the relay's signature on the bootstrap bundle does not verify: it was altered on the way",
      Code.TREE_HEAD_INVALID);
  }
  const account = f.bytes("account", { size: 32 });
  const device = f.bytes("device", { size: 32 });
  const nonce = f.bytes("nonce", { size: BOOTSTRAP_NONCE_SIZE });
  if (!bytesEqual(account, request.account) || !bytesEqual(device, request.device) || !bytesEqual(nonce, request.nonce)) {
    throw new ProofError("the bootstrap bundle answers another request (account, device or nonce): a replayed or " +
      "misdirected answer", Code.TREE_HEAD_INVALID);
  }
  const registry = f.raw("registry") === null ? null : byteItems(f.list("registry", MAX_ITEMS), "registry");
  const spaces = f.list("spaces", MAX_ITEMS).map((s) => space(expectMap(s, "bootstrap space", SPACE, SPACE_OPTIONAL)));
  return { account, device, ts: f.u64("ts"), registry, policy: optBytes(f.raw("policy"), "policy"), spaces };
}

function byteItems(items: readonly CborValue[], what: string): Uint8Array[] {
  if (!items.every((x) => x instanceof Uint8Array)) throw bad(what, "expected byte strings");
  return items as Uint8Array[];
}

function tuple(value: CborValue, what: string, size: number): CborValue[] {
  const items = expectList(value, `bootstrap ${what}`, size);
  if (items.length !== size) throw bad(what, `expected ${size} items`);
  return items;
}

function optBytes(value: CborValue, what: string): Uint8Array | null {
  if (value !== null && !(value instanceof Uint8Array)) throw bad(what, "expected bytes or null");
  return value;
}

/** An integer in [lo, 2^53 − 1] (offsets and epochs, as the JSON endpoints' numbers). */
function int(value: CborValue | undefined, what: string, lo = 0): number {
  if (!isInt(value) || BigInt(value) < BigInt(lo) || BigInt(value) > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw bad(what, `expected an integer >= ${lo}`);
  }
  return Number(value);
}

function space(f: Fields): BundledSpace {
  const keys = f.has("keys") ? byteItems(f.list("keys", MAX_ITEMS), "keys") : null;
  const snapshots = (f.has("snaps") ? f.list("snaps", 2) : []).map((raw): BundledSnapshot => {
    const [doc, covers, blob, sid, atts] = tuple(raw, "snapshot", 5) as [CborValue, CborValue, CborValue, CborValue, CborValue];
    return { doc: byteItems([doc], "snapshot doc")[0]!, coversOffset: int(covers, "covers_offset", -1),
      blob: optBytes(blob, "snapshot blob"), snapshotId: optBytes(sid, "snapshot id"),
      attestations: byteItems(expectList(atts, "bootstrap attestations", MAX_ITEMS), "attestations") };
  });
  const chunks = new Map<string, Uint8Array>();
  for (const raw of f.has("chunks") ? f.list("chunks", MAX_ITEMS) : []) {
    const [cid, blob] = byteItems(tuple(raw, "chunk", 2), "chunk") as [Uint8Array, Uint8Array];
    chunks.set(toHex(cid), blob);
  }
  if (f.has("after") !== f.has("ops")) throw bad("space", "'after' and 'ops' come together");
  const ops = (f.has("ops") ? f.list("ops", MAX_ITEMS) : []).map((raw): PulledOp => {
    const [offset, opId, leaf, env] = tuple(raw, "op", 4) as [CborValue, CborValue, CborValue, CborValue];
    const [id, leafHash] = byteItems([opId, leaf], "op") as [Uint8Array, Uint8Array];
    return { offset: int(offset, "op offset"), opId: id, leafHash, envelope: optBytes(env, "op envelope") };
  });
  const info: SpaceInfo = { spaceId: f.bytes("space", { size: 16 }), size: Number(f.u64("size", 0n, BigInt(Number.MAX_SAFE_INTEGER))),
    root: f.bytes("root", { size: 32 }), epoch: int(f.raw("epoch"), "epoch", -1),
    owner: f.has("owner") ? f.bytes("owner", { size: 32 }) : null };
  return { info, head: f.bytes("head", { maxSize: 1024 }), keys, snapshots, chunks,
    after: f.has("after") ? int(f.raw("after"), "after", -1) : null, ops };
}

/**
 * The reads one verified bundle answers, with exactly the bytes the endpoints
 * would have served. Each method returns null for what the bundle does not
 * hold (a component left out, a page beyond the bundled tail): ask the endpoint.
 */
export class Prefetched {
  private readonly spaces: ReadonlyMap<string, BundledSpace>;

  constructor(readonly bundle: Bootstrap) {
    this.spaces = new Map(bundle.spaces.map((s) => [toHex(s.info.spaceId), s]));
  }

  /** The account's registry entries from seq `since` (the bundle holds them all). */
  registry(accountId: Uint8Array, since: number): Uint8Array[] | null {
    if (!bytesEqual(accountId, this.bundle.account) || this.bundle.registry === null) return null;
    return this.bundle.registry.slice(since);
  }

  /** The spaces the account reads: a space without an `owner` is the account's own. */
  listSpaces(): SpaceInfo[] {
    return this.bundle.spaces.map((s) => ({ ...s.info, owner: s.info.owner ?? this.bundle.account }));
  }

  /** The space's key packages from `sinceEpoch` (bundled from epoch 0). */
  keyPackages(spaceId: Uint8Array, sinceEpoch: number): Uint8Array[] | null {
    const keys = this.spaces.get(toHex(spaceId))?.keys;
    return keys ? keys.slice(sinceEpoch) : null;
  }

  private snapshotOf(spaceId: Uint8Array, doc: Uint8Array): BundledSnapshot | null {
    return this.spaces.get(toHex(spaceId))?.snapshots.find((n) => bytesEqual(n.doc, doc)) ?? null;
  }

  /**
   * The snapshot stored under `doc`: `[covers_offset, blob]`.
   *
   * @throws NotFoundError the bundle says none is stored (as the endpoint would).
   */
  snapshot(spaceId: Uint8Array, doc: Uint8Array): [number, Uint8Array] | null {
    const snap = this.snapshotOf(spaceId, doc);
    if (snap === null) return null;
    if (snap.blob === null) throw new NotFoundError("no snapshot for this doc");
    return [snap.coversOffset, snap.blob];
  }

  /** `[snapshot id, attestations]` of the snapshot stored under `doc`. */
  attestations(spaceId: Uint8Array, doc: Uint8Array): [Uint8Array | null, Uint8Array[]] | null {
    const snap = this.snapshotOf(spaceId, doc);
    return snap === null ? null : [snap.snapshotId, [...snap.attestations]];
  }

  /** A bundled snapshot chunk. */
  chunk(spaceId: Uint8Array, chunkId: Uint8Array): Uint8Array | null {
    return this.spaces.get(toHex(spaceId))?.chunks.get(toHex(chunkId)) ?? null;
  }

  /**
   * The page after `after` when the bundled tail holds its start (it may be
   * shorter than `limit`, as an endpoint's page may), with the bundle's head.
   */
  pull(spaceId: Uint8Array, after: number, limit: number): [PulledOp[], Uint8Array] | null {
    const s = this.spaces.get(toHex(spaceId));
    if (s === undefined || s.after === null) return null;
    const start = after - s.after;
    if (start < 0 || start > s.ops.length || (start === s.ops.length && !reachesHead(s))) return null;
    return [s.ops.slice(start, start + limit), s.head];
  }
}

function reachesHead(s: BundledSpace): boolean {
  // An empty page is the log's end only if the tail reaches the listed size.
  const end = s.ops.length ? s.ops.at(-1)!.offset + 1 : s.after! + 1;
  return end >= s.info.size;
}
