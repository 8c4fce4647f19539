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
  /** Encoded op header. */
  readonly maxHeader: number;
  /** Entries in a version vector. */
  readonly maxDeps: number;
  /** One registry entry. */
  readonly maxRegistryEntry: number;
  /** Devices ever added to one account (revoked ones count). */
  readonly maxDevices: number;
  /** One key package. */
  readonly maxKeyPackage: number;
  /** One tree head. */
  readonly maxTreeHead: number;
  /** One whole-space snapshot. */
  readonly maxSnapshot: number;
  /** Characters in a device name. */
  readonly maxName: number;
  /** Nesting of any structure. */
  readonly maxDepth: number;
}

/** The defaults every peer uses. */
export const DEFAULT_PROTOCOL_LIMITS: ProtocolLimits = Object.freeze({
  maxOp: 512 * 1024,
  maxHeader: 64 * 1024,
  maxDeps: 1024,
  maxRegistryEntry: 64 * 1024,
  maxDevices: 1024,
  maxKeyPackage: 512 * 1024,
  maxTreeHead: 1024,
  maxSnapshot: 700 * 1024,
  maxName: 128,
  maxDepth: 8,
});

/** Decoder bounds for one structure of at most `maxSize` bytes (§2.4). */
export function decodeLimits(limits: ProtocolLimits, maxSize: number): DecodeLimits {
  return { maxSize, maxDepth: limits.maxDepth, maxItems: Math.max(limits.maxDeps, limits.maxDevices) + 16 };
}
