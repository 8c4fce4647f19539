/**
 * Size limits for every structure that arrives from the network
 * (docs/protocol.md §15; mirrors `sddsf.protocol.limits`).
 *
 * Relays may lower them; raising them above the defaults breaks
 * interoperability with default peers.
 */

import type { DecodeLimits } from "./cbor.js";

/** Bounds on decoded structures (bytes unless stated). */
export interface ProtocolLimits {
  /** Whole op envelope. */
  readonly maxOp: number;
  /** One edit sealed as a multi-part op (§8.11): what a reader buffers per author. */
  readonly maxEdit: number;
  /** Parts of one multi-part edit. */
  readonly maxParts: number;
  /** Encoded op header. */
  readonly maxHeader: number;
  /** Entries in a version vector. */
  readonly maxDeps: number;
  /** One registry entry. */
  readonly maxRegistryEntry: number;
  /**
   * ACTIVE devices of one account. Devices may add up to `maxDevices − 1`: the
   * last slot is the account key's (recover), so a thief cannot lock it out.
   */
  readonly maxDevices: number;
  /** Device records ever introduced by devices (revoked ones count; the account key is exempt). */
  readonly maxDeviceRecords: number;
  /** Device-signed introductions allowed within `addWindowMs` of each other (§9.6). */
  readonly maxAddsPerWindow: number;
  readonly addWindowMs: number;
  /** One key package. */
  readonly maxKeyPackage: number;
  /** One tree head. */
  readonly maxTreeHead: number;
  /** One version-1 snapshot, or one version-2 manifest. */
  readonly maxSnapshot: number;
  /** Chunks of a version-2 snapshot (512 KiB of plaintext each). */
  readonly maxSnapshotChunks: number;
  /** Characters in a device name. */
  readonly maxName: number;
  /** Nesting of any structure. */
  readonly maxDepth: number;
}

/** The defaults every peer uses. */
export const DEFAULT_PROTOCOL_LIMITS: ProtocolLimits = Object.freeze({
  maxOp: 512 * 1024,
  maxEdit: 128 * 1024 * 1024,
  maxParts: 65_536,
  maxHeader: 64 * 1024,
  maxDeps: 1024,
  maxRegistryEntry: 64 * 1024,
  maxDevices: 1024,
  maxDeviceRecords: 4096,
  maxAddsPerWindow: 16,
  addWindowMs: 24 * 3600 * 1000,
  maxKeyPackage: 512 * 1024,
  maxTreeHead: 1024,
  maxSnapshot: 700 * 1024,
  maxSnapshotChunks: 512,
  maxName: 128,
  maxDepth: 8,
});

/** Decoder bounds for one structure of at most `maxSize` bytes (§2.4). */
export function decodeLimits(limits: ProtocolLimits, maxSize: number): DecodeLimits {
  return { maxSize, maxDepth: limits.maxDepth, maxItems: Math.max(limits.maxDeps, limits.maxDevices) + 16 };
}
