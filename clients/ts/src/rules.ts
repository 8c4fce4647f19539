/**
 * THE op verification rules (docs/protocol.md §13; mirrors
 * `sddsf.protocol.rules`): one function, {@link verifyOp}, that the relay and
 * every client apply in the same order with the same codes.
 *
 * ```
 * 1-2 decode (size, structure, version, suite)   too_large, malformed, unsupported_*
 * 3   space matches                               wrong_context
 * 4   author has a record                         unknown_device
 * 5   same (author, seq, op id) accepted          → DUPLICATE
 * 6   author not revoked (history: ≤ cutoff)      revoked
 * 7a  live mode: header version 2                 unsupported_version
 * 7   epoch not beyond the current one            unknown_epoch
 * 7b  `reg` known to the verifier                 wrong_context
 * 7c  epoch not compromised by `reg`              epoch_compromised
 * 7d  epoch current / grace / history             stale_epoch
 * 8   live mode: ts not in the future             clock_skew
 * 9   signature                                   sig_invalid
 * 10  chain: contiguous seq, prev linked          chain_gap, chain_fork
 * 11  deps monotonic, no self dep                 deps_regression
 * ```
 *
 * History mode (`nowMs = null`) is for a client verifying ops the relay
 * already ordered: rule 8 is skipped, header version 1 is accepted and any
 * epoch up to the current one is accepted; a revoked author's op is valid
 * history up to its cutoff. Rule 7c applies in both modes (it reads only the
 * signed `reg`, the packages and the registry).
 */

import { bytesEqual, toHex } from "./bytes.js";
import { decodeEnvelope, HEADER_VERSION, OpEnvelope } from "./envelope.js";
import { AuthorizationError, ChainError, ClockSkewError, Code, ContextError, DecodeError, EpochError, SddsfError } from "./errors.js";
import { DEFAULT_PROTOCOL_LIMITS, type ProtocolLimits } from "./limits.js";
import type { DeviceRecord, RegistryState } from "./registry.js";
import type { VersionVector } from "./vv.js";

const MINUTE = 60_000;

/** Tunable windows of the rules (relay and clients must agree, §15). */
export interface RuleSettings {
  readonly maxSkewMs: number;
  readonly epochGraceMs: number;
  readonly limits: ProtocolLimits;
}

/** The defaults: 10 minutes of skew, 24 hours of epoch grace. */
export const DEFAULT_RULES: RuleSettings = Object.freeze({
  maxSkewMs: 10 * MINUTE,
  epochGraceMs: 24 * 60 * MINUTE,
  limits: DEFAULT_PROTOCOL_LIMITS,
});

/**
 * The space's current key epoch and when it started (ms).
 *
 * `packageSeqs[e]` is the `registry_seq` of epoch `e`'s key package, for every
 * epoch up to `current`: the compromised-epoch rule (7c) needs it. Verifiers
 * MUST supply it; a window without it skips that rule.
 */
export interface EpochWindow {
  readonly current: bigint;
  readonly startedMs: number;
  readonly packageSeqs?: readonly bigint[];
}

/** The last accepted op of one author in one space. */
export interface ChainHead {
  readonly seq: bigint;
  readonly opId: Uint8Array;
  readonly deps: VersionVector;
}

/** Read access to the accepted per-author chains of one space. */
export interface ChainView {
  /** The author's last accepted op, or undefined if it has none here. */
  head(author: Uint8Array): ChainHead | undefined;
  /** The id of the author's accepted op at `seq`, or undefined. */
  opIdAt(author: Uint8Array, seq: bigint): Uint8Array | undefined;
}

/** A {@link ChainView} in memory; {@link record} adds an accepted op. */
export class MemoryChainView implements ChainView {
  /** Heads by author (hex). */
  readonly heads: Map<string, ChainHead>;
  private readonly ids = new Map<string, Uint8Array>();

  /** @param heads initial heads by author (hex), e.g. a snapshot's chains. */
  constructor(heads: ReadonlyMap<string, ChainHead> = new Map()) {
    this.heads = new Map(heads);
    for (const [author, h] of this.heads) this.ids.set(`${author}/${h.seq}`, h.opId);
  }

  head(author: Uint8Array): ChainHead | undefined {
    return this.heads.get(toHex(author));
  }

  opIdAt(author: Uint8Array, seq: bigint): Uint8Array | undefined {
    return this.ids.get(`${toHex(author)}/${seq}`);
  }

  /** Record an op that {@link verifyOp} accepted. */
  record(envelope: OpEnvelope): void {
    const h = envelope.header;
    this.heads.set(toHex(h.author), { seq: h.seq, opId: envelope.opId, deps: h.deps });
    this.ids.set(`${toHex(h.author)}/${h.seq}`, envelope.opId);
  }
}

/** What to do with a verified op. */
export type Outcome = "accept" | "duplicate";

/** Result of {@link verifyOp} (rejections are thrown). */
export interface Verdict {
  readonly outcome: Outcome;
  readonly envelope: OpEnvelope;
}

function revokedAfter(registry: RegistryState, window: EpochWindow, epoch: bigint, upTo: bigint): DeviceRecord | null {
  // A device revoked after the epoch's package was made (and at or before
  // registry seq `upTo`) may hold the epoch key: the package listed it, or a
  // later package it received carried the key as history.
  const seqs = window.packageSeqs ?? [];
  if (epoch >= BigInt(seqs.length)) return null;
  const madeAt = seqs[Number(epoch)]!;
  if (!registry.revokedBetween(madeAt, upTo)) return null; // the common case, O(log n)
  for (const rec of registry.devices.values()) {
    if (rec.revokedSeq !== null && madeAt < BigInt(rec.revokedSeq) && BigInt(rec.revokedSeq) <= upTo) return rec;
  }
  return null;
}

function checkEpoch(env: OpEnvelope, registry: RegistryState, window: EpochWindow, nowMs: number | null,
  settings: RuleSettings): void {
  const h = env.header;
  const epoch = h.epoch;
  if (nowMs !== null && h.version < HEADER_VERSION) {
    throw new DecodeError(`op header version ${h.version} is history only: new ops carry the registry seq their author ` +
      `verified (version ${HEADER_VERSION}); update the client that made this op`, Code.UNSUPPORTED_VERSION);
  }
  if (epoch > window.current) {
    throw new EpochError(`op uses key epoch ${epoch} but the space is at epoch ${window.current}; fetch the space's key packages`,
      Code.UNKNOWN_EPOCH);
  }
  if (h.reg !== null) {
    if (h.reg > BigInt(registry.seq)) {
      throw new ContextError(`op was written after registry entry ${h.reg}, but this verifier's registry ends at ` +
        `${registry.seq}; sync the registry first`);
    }
    const revoked = revokedAfter(registry, window, epoch, h.reg);
    if (revoked !== null) {
      throw new EpochError(`op was sealed under key epoch ${epoch} after its author had seen the revocation of device ` +
        `'${revoked.name}' (registry entry ${revoked.revokedSeq}), which holds that epoch's key: rotate the space's key ` +
        "and re-encrypt", Code.EPOCH_COMPROMISED);
    }
  }
  if (epoch === window.current || nowMs === null) return;
  if (epoch === window.current - 1n && nowMs <= window.startedMs + settings.epochGraceMs &&
    revokedAfter(registry, window, epoch, BigInt(registry.seq)) === null) return;
  throw new EpochError(`op uses key epoch ${epoch}, which was replaced by epoch ${window.current}; re-encrypt it under the current key`,
    Code.STALE_EPOCH);
}

function checkChain(env: OpEnvelope, chains: ChainView): void {
  const h = env.header;
  const head = chains.head(h.author);
  const headSeq = head?.seq ?? 0n;
  if (h.seq > headSeq + 1n) {
    throw new ChainError(`op seq ${h.seq} skips ahead of the author's last accepted seq ${headSeq}; send the missing ops first`,
      Code.CHAIN_GAP);
  }
  if (h.seq <= headSeq) {
    throw new ChainError(`a different op already holds seq ${h.seq} of this author (equivocation or a device restored from an old backup)`,
      Code.CHAIN_FORK);
  }
  if (head !== undefined && !bytesEqual(h.prev, head.opId)) {
    throw new ChainError(`op seq ${h.seq} does not link to the author's previous op`, Code.CHAIN_FORK);
  }
  if (h.deps.has(h.author)) throw new ChainError("op deps must not name the author itself", Code.DEPS_REGRESSION);
  if (head !== undefined && !h.deps.dominates(head.deps)) {
    throw new ChainError("op deps go backwards relative to the author's previous op", Code.DEPS_REGRESSION);
  }
}

/** Inputs of {@link verifyOp} besides the envelope. */
export interface VerifyContext {
  /** The space the op is submitted to or pulled from. */
  readonly space: Uint8Array;
  /** The verified registry that applies to this op. */
  readonly registry: RegistryState;
  /** The space's current key epoch. */
  readonly epochs: EpochWindow;
  /** Accepted chains of this space (the caller records accepted ops). */
  readonly chains: ChainView;
  /** The verifier's clock; null selects history mode. */
  readonly nowMs: number | null;
  readonly settings?: RuleSettings;
}

/**
 * Apply every rule to one op. Pure: reads only its arguments.
 *
 * @returns `accept` or `duplicate`.
 * @throws DecodeError, ContextError, AuthorizationError, EpochError,
 *   ClockSkewError, SignatureError, ChainError (see the module comment).
 */
export function verifyOp(data: Uint8Array | OpEnvelope, ctx: VerifyContext): Verdict {
  const settings = ctx.settings ?? DEFAULT_RULES;
  const env = data instanceof OpEnvelope ? data : decodeEnvelope(data, settings.limits);
  const h = env.header;
  if (!bytesEqual(h.space, ctx.space)) throw new ContextError("op was signed for another space");
  const author = ctx.registry.device(h.author);
  if (author === undefined) {
    throw new AuthorizationError("op author is not a device of this account", Code.UNKNOWN_DEVICE);
  }
  // Rule 5 between the early and the late rules: a retry of an accepted op stays a duplicate.
  const accepted = ctx.chains.opIdAt(h.author, h.seq);
  if (accepted !== undefined && bytesEqual(accepted, env.opId)) return { outcome: "duplicate", envelope: env };
  if (author.status === "revoked" && (ctx.nowMs !== null || h.seq > (author.cutoff.get(toHex(h.space)) ?? 0n))) {
    throw new AuthorizationError("op author has been revoked; its writes are refused", Code.REVOKED);
  }
  checkEpoch(env, ctx.registry, ctx.epochs, ctx.nowMs, settings);
  // Ordering never uses wall clocks; a timestamp from the future would poison
  // every peer's hybrid logical clock, so only that is refused.
  if (ctx.nowMs !== null && h.ts.wallMs - ctx.nowMs > settings.maxSkewMs) {
    throw new ClockSkewError(`op timestamp is ${Math.floor((h.ts.wallMs - ctx.nowMs) / 1000)} s ahead of the verifier's clock ` +
      `(limit ${Math.floor(settings.maxSkewMs / 1000)} s); check the device's clock`);
  }
  env.verifySignature(author.publicId.signingKey);
  checkChain(env, ctx.chains);
  return { outcome: "accept", envelope: env };
}

/** Whether an error is an SDDSF rejection (for batch callers that collect them). */
export function isRejection(e: unknown): e is SddsfError {
  return e instanceof SddsfError;
}
