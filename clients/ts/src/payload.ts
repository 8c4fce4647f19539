/**
 * Op payloads (docs/protocol.md §8.11; mirrors `sddsf.protocol.payload`):
 * what the plaintext of an op carries. Two forms, each the canonical encoding
 * of a map:
 *
 * ```
 * edit = {"n": tstr, "u": [* bstr]}     ; an edit of document n: CRDT updates
 * part = {"n": tstr, "p": [index: uint, count: uint, total: uint, digest: bstr .size 32, chunk: bstr]}
 * ```
 *
 * An edit whose encoding does not fit one op is sealed as `count` ≥ 2 parts:
 * consecutive ops of its author's chain, all on the document's id, part `i`
 * carrying the next bytes of `whole` = the edit's encoding, every part the
 * same `total` = `len(whole)` and `digest` = `tagged_hash(OP_PARTS, whole)`.
 * A reader keeps at most one open {@link Assembly} per author and space
 * ({@link advance}); part 0 opens one, each next part continues it exactly,
 * the last completes it ({@link finish}); any other op of the author abandons
 * it. Pure functions over bytes.
 */

import { bytesEqual, concat } from "./bytes.js";
import { DEFAULT_LIMITS, decode, encode, isInt, isMap, type DecodeLimits, type Encodable } from "./cbor.js";
import { Code, DecodeError, UsageError } from "./errors.js";
import * as labels from "./labels.js";
import { taggedHash } from "./labels.js";
import { DEFAULT_PROTOCOL_LIMITS, type ProtocolLimits } from "./limits.js";

export const DIGEST_SIZE = 32;
/** Map, keys, array and integer heads of a part (bounded). */
const PART_FRAME_SLACK = 64;

/** An edit of one document: its name and CRDT updates. */
export interface Edit {
  readonly kind: "edit";
  readonly name: string;
  readonly updates: readonly Uint8Array[];
}

/** One part of a multi-part edit. */
export interface Part {
  readonly kind: "part";
  readonly name: string;
  readonly index: number;
  readonly count: number;
  readonly total: number;
  readonly digest: Uint8Array;
  readonly chunk: Uint8Array;
}

/** A multi-part edit whose first parts a reader has seen (one per author and space). */
export interface Assembly {
  readonly name: string;
  readonly doc: Uint8Array;
  readonly count: number;
  readonly total: number;
  readonly digest: Uint8Array;
  readonly nextIndex: number;
  readonly nextSeq: bigint;
  readonly received: number;
}

/** Whether every part of `a` has arrived. */
export function isComplete(a: Assembly): boolean {
  return a.nextIndex === a.count;
}

/** The digest every part of a multi-part edit carries. */
export function partsDigest(whole: Uint8Array): Uint8Array {
  return taggedHash(labels.OP_PARTS, whole);
}

/** The payload of a one-op edit: `{"n": name, "u": updates}`. */
export function encodeEdit(name: string, updates: readonly Uint8Array[]): Uint8Array {
  return encode(new Map<string, Encodable>([["n", name], ["u", [...updates]]]));
}

/**
 * The payloads of the ops that carry one edit: one edit payload when it fits
 * `maxPayload` bytes, else parts of at most `maxPayload` bytes each.
 *
 * @throws UsageError the edit exceeds `maxEdit` or needs more than `maxParts` parts.
 */
export function splitEdit(name: string, updates: readonly Uint8Array[], opts: { maxPayload: number; maxEdit?: number;
  limits?: ProtocolLimits }): Uint8Array[] {
  const limits = opts.limits ?? DEFAULT_PROTOCOL_LIMITS;
  const whole = encodeEdit(name, updates);
  if (whole.length <= opts.maxPayload) return [whole];
  const ceiling = opts.maxEdit !== undefined ? Math.min(limits.maxEdit, opts.maxEdit) : limits.maxEdit;
  if (whole.length > ceiling) {
    throw new UsageError(`an edit of document '${name}' is ${whole.length} bytes, more than the largest edit that syncs ` +
      `(max_edit = ${ceiling} bytes)`);
  }
  const frame = encode(new Map<string, Encodable>([["n", name], ["p", [0, 0, 0, new Uint8Array(DIGEST_SIZE), new Uint8Array(0)]]])).length;
  const chunk = opts.maxPayload - frame - PART_FRAME_SLACK;
  if (chunk < 1024) throw new UsageError(`ops of at most ${opts.maxPayload} bytes are too small to carry parts`);
  const count = Math.ceil(whole.length / chunk);
  if (count > limits.maxParts) {
    throw new UsageError(`an edit of document '${name}' needs ${count} parts, more than max_parts = ${limits.maxParts}`);
  }
  const digest = partsDigest(whole);
  return Array.from({ length: count }, (_, i) => encode(new Map<string, Encodable>([["n", name],
    ["p", [i, count, whole.length, digest, whole.subarray(i * chunk, (i + 1) * chunk)]]])));
}

/**
 * Decode one op's plaintext.
 *
 * @throws DecodeError `malformed` (neither form, a wrong type, an index out of range), or `too_large`.
 */
export function decodePayload(data: Uint8Array, limits: DecodeLimits = DEFAULT_LIMITS): Edit | Part {
  const value = decode(data, limits);
  if (!isMap(value) || typeof value.get("n") !== "string") {
    throw new DecodeError('op payload: expected a map with a document name "n"');
  }
  const name = value.get("n") as string;
  const keys = [...value.keys()].map(String).sort();
  if (keys.length === 2 && keys[0] === "n" && keys[1] === "u") {
    const updates = value.get("u");
    if (!Array.isArray(updates) || !updates.every((u) => u instanceof Uint8Array)) {
      throw new DecodeError('op payload "u": expected an array of byte strings');
    }
    return { kind: "edit", name, updates: updates as Uint8Array[] };
  }
  if (keys.length === 2 && keys[0] === "n" && keys[1] === "p") return partOf(name, value.get("p"));
  throw new DecodeError(`op payload: unexpected fields ${JSON.stringify(keys)}`);
}

function partOf(name: string, raw: unknown): Part {
  if (!Array.isArray(raw) || raw.length !== 5) throw new DecodeError('op payload "p": expected [index, count, total, digest, chunk]');
  const [index, count, total, digest, chunk] = raw as unknown[];
  if (!isInt(index) || !isInt(count) || !isInt(total)) throw new DecodeError('op payload "p": index, count and total are integers');
  if (!(digest instanceof Uint8Array) || digest.length !== DIGEST_SIZE || !(chunk instanceof Uint8Array)) {
    throw new DecodeError('op payload "p": expected a 32-byte digest and a byte-string chunk');
  }
  const [i, c, t] = [BigInt(index), BigInt(count), BigInt(total)];
  if (c < 2n || i < 0n || i >= c || chunk.length === 0 || BigInt(chunk.length) > t) {
    throw new DecodeError(`op payload "p": part ${i} of ${c} with ${chunk.length} of ${t} bytes is out of range`);
  }
  // Beyond the safe-integer range nothing can be buffered: advance() refuses it as too large.
  const num = (x: bigint): number => (x > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(x));
  return { kind: "part", name, index: num(i), count: num(c), total: num(t), digest, chunk };
}

/**
 * A reader's open assembly of one author after that author's op `seq` on
 * document `doc` carrying `payload`: an edit, or part 0, abandons `current`;
 * part 0 opens a new assembly; a later part must continue `current` exactly.
 *
 * @throws DecodeError `too_large` (beyond `maxEdit` or `maxParts`), or
 *   `malformed` (a part that does not continue the open assembly).
 */
export function advance(current: Assembly | null, payload: Edit | Part, doc: Uint8Array, seq: bigint,
  limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): Assembly | null {
  if (payload.kind === "edit") return null;
  const p = payload;
  if (p.index === 0) {
    if (p.total > limits.maxEdit || p.count > limits.maxParts) {
      throw new DecodeError(`a multi-part edit of ${p.total} bytes in ${p.count} parts exceeds max_edit = ${limits.maxEdit} ` +
        `or max_parts = ${limits.maxParts}`, Code.TOO_LARGE);
    }
    return { name: p.name, doc, count: p.count, total: p.total, digest: p.digest, nextIndex: 1, nextSeq: seq + 1n,
      received: p.chunk.length };
  }
  const c = current;
  if (c === null || c.name !== p.name || !bytesEqual(c.doc, doc) || c.count !== p.count || c.total !== p.total ||
    !bytesEqual(c.digest, p.digest) || c.nextIndex !== p.index || c.nextSeq !== seq) {
    throw new DecodeError(`part ${p.index} of a multi-part edit does not continue its author's previous part`);
  }
  const received = c.received + p.chunk.length;
  const last = p.index === p.count - 1;
  if (received > c.total || (last && received !== c.total)) {
    throw new DecodeError(`the parts of a multi-part edit carry ${received} bytes, not the ${c.total} they declare`);
  }
  return { ...c, nextIndex: p.index + 1, nextSeq: seq + 1n, received };
}

/**
 * The edit a complete assembly carries, from its parts' chunks in order.
 *
 * @throws DecodeError the chunks do not hash to the digest, or do not decode as
 *   an edit of the assembly's document.
 */
export function finish(assembly: Assembly, chunks: readonly Uint8Array[]): Edit {
  const whole = concat(...chunks);
  if (!isComplete(assembly) || chunks.length !== assembly.count || whole.length !== assembly.total) {
    throw new DecodeError("a multi-part edit is incomplete");
  }
  if (!bytesEqual(partsDigest(whole), assembly.digest)) throw new DecodeError("the parts of a multi-part edit do not match their digest");
  const edit = decodePayload(whole, { maxSize: assembly.total, maxDepth: DEFAULT_LIMITS.maxDepth,
    maxItems: DEFAULT_LIMITS.maxItems });
  if (edit.kind !== "edit" || edit.name !== assembly.name) {
    throw new DecodeError("the parts of a multi-part edit do not hold an edit of their document");
  }
  return edit;
}

/**
 * The reference reader of one author's ops on `doc`: `[seq, plaintext]` in
 * chain order in, the edits they complete out.
 *
 * @throws DecodeError as {@link decodePayload}, {@link advance} and {@link finish}.
 */
export function assemble(ops: readonly (readonly [bigint, Uint8Array])[], doc: Uint8Array,
  limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS): Edit[] {
  const edits: Edit[] = [];
  let current: Assembly | null = null;
  let chunks: Uint8Array[] = [];
  for (const [seq, plaintext] of ops) {
    const payload = decodePayload(plaintext);
    current = advance(current, payload, doc, seq, limits);
    if (payload.kind === "edit") {
      edits.push(payload);
      chunks = [];
      continue;
    }
    chunks = payload.index === 0 ? [payload.chunk] : [...chunks, payload.chunk];
    if (current !== null && isComplete(current)) {
      edits.push(finish(current, chunks));
      current = null;
      chunks = [];
    }
  }
  return edits;
}

/** One author's open assembly and its chunks so far (what a device keeps between pulls). */
export interface OpenAssembly {
  readonly assembly: Assembly;
  readonly chunks: readonly Uint8Array[];
}

/**
 * The assemblies of one space across pulls (in memory; a device persists
 * {@link PartsReader.state} with its verified log). {@link feed} takes each
 * op that passed the rules, in log order.
 */
export class PartsReader {
  private readonly open: Map<string, OpenAssembly>;

  constructor(state: ReadonlyMap<string, OpenAssembly> = new Map(), private readonly limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) {
    this.open = new Map(state);
  }

  /**
   * The edit that op `seq` of `author` (hex) completes: the payload itself for a
   * one-op edit, the joined edit for a multi-part edit's last part, else null.
   *
   * @throws DecodeError the op does not continue its author's open assembly, or exceeds the bounds.
   */
  feed(author: string, seq: bigint, doc: Uint8Array, payload: Edit | Part): Edit | null {
    const state = this.open.get(author) ?? null;
    const next = advance(state?.assembly ?? null, payload, doc, seq, this.limits);
    if (payload.kind === "edit") {
      this.open.delete(author);
      return payload;
    }
    const chunks = payload.index === 0 ? [payload.chunk] : [...(state?.chunks ?? []), payload.chunk];
    if (next === null || !isComplete(next)) {
      if (next !== null) this.open.set(author, { assembly: next, chunks });
      return null;
    }
    this.open.delete(author);
    return finish(next, chunks);
  }

  /** The open assemblies by author (hex): a copy, to persist or to start the next pull from. */
  state(): Map<string, OpenAssembly> {
    return new Map(this.open);
  }

  /** Whether some author has an assembly open (no snapshot may be written then, §8.11). */
  get anyOpen(): boolean {
    return this.open.size > 0;
  }
}
