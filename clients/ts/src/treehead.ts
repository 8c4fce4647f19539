/**
 * Signed tree heads of the relay's Merkle logs and the client's progress check
 * (docs/protocol.md §12; mirrors `sddsf.protocol.treehead`).
 *
 * ```
 * tree_head = [version, body_bytes, signature]
 * body      = {v, log, size, root, ts}
 * ```
 */

import { bytesEqual } from "./bytes.js";
import { encode } from "./cbor.js";
import type { Ed25519PublicKey, Ed25519SigningKey } from "./crypto.js";
import { Code, ProofError } from "./errors.js";
import * as labels from "./labels.js";
import { labelled } from "./labels.js";
import { decodeLimits, DEFAULT_PROTOCOL_LIMITS, type ProtocolLimits } from "./limits.js";
import { verifyConsistency } from "./merkle.js";
import { decodeSigned } from "./schema.js";

/** The tree head format version this build speaks. */
export const TREE_HEAD_VERSION = 1;

/** A decoded tree head. */
export interface TreeHead {
  readonly log: Uint8Array;
  readonly size: bigint;
  readonly root: Uint8Array;
  readonly ts: bigint;
  readonly bodyBytes: Uint8Array;
  readonly signature: Uint8Array;
  readonly raw: Uint8Array;
}

/** Sign a tree head (relay side; used by tests). */
export function signTreeHead(key: Ed25519SigningKey, log: Uint8Array, size: bigint | number, root: Uint8Array,
  tsMs: bigint | number): Uint8Array {
  const body = encode(new Map<string, Uint8Array | bigint | number>([["v", TREE_HEAD_VERSION], ["log", log],
    ["size", BigInt(size)], ["root", root], ["ts", BigInt(tsMs)]]));
  return encode([TREE_HEAD_VERSION, body, key.sign(labelled(labels.TREE_HEAD_SIG, body))]);
}

/**
 * Decode a tree head's structure (§12.2).
 *
 * @throws DecodeError malformed, too large or unsupported version.
 */
export function decodeTreeHead(data: Uint8Array, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): TreeHead {
  const { fields: f, bodyBytes, signature } = decodeSigned(data, "tree head", TREE_HEAD_VERSION,
    ["v", "log", "size", "root", "ts"], decodeLimits(limits, limits.maxTreeHead));
  const log = f.bytes("log", { maxSize: 64 });
  const size = f.u64("size");
  const root = f.bytes("root", { size: 32 });
  const ts = f.u64("ts");
  return { log, size, root, ts, bodyBytes, signature, raw: new Uint8Array(data) };
}

/**
 * Decode and check a tree head's signature and log id.
 *
 * @throws DecodeError; ProofError `tree_head_invalid` for a bad signature or another log.
 */
export function verifyTreeHead(data: Uint8Array, relayKey: Ed25519PublicKey, log: Uint8Array,
  limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): TreeHead {
  const th = decodeTreeHead(data, limits);
  if (!bytesEqual(th.log, log)) throw new ProofError("tree head is for another log", Code.TREE_HEAD_INVALID);
  if (!relayKey.isValidSignature(labelled(labels.TREE_HEAD_SIG, th.bodyBytes), th.signature)) {
    throw new ProofError("tree head signature does not verify", Code.TREE_HEAD_INVALID);
  }
  return th;
}

/**
 * Accept `next` only if the log grew consistently from `old` (§12.3).
 *
 * @throws ProofError `log_rollback` (smaller), `proof_invalid` (inconsistent),
 *   `tree_head_invalid` (another log).
 */
export function checkProgress(old: TreeHead | null, next: TreeHead, consistency: readonly Uint8Array[]): void {
  if (old === null) return;
  if (!bytesEqual(next.log, old.log)) throw new ProofError("tree heads of two different logs", Code.TREE_HEAD_INVALID);
  if (old.size === 0n) return;
  if (next.size < old.size) {
    throw new ProofError(`the relay's log went back from ${old.size} to ${next.size} entries; it is rolling back history`,
      Code.LOG_ROLLBACK);
  }
  verifyConsistency(old.size, next.size, old.root, next.root, consistency);
}
