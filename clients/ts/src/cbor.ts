/**
 * Canonical encoding: the strict subset of deterministic CBOR of
 * docs/protocol.md §2 (mirrors `sddsf.protocol.encoding`).
 *
 * Invariant: one byte string per value. {@link encode} produces the only
 * encoding {@link decode} accepts, so a signature over the bytes is a
 * signature over the value.
 *
 * * {@link decode} is a strict reader that applies the refusals of §2.3 in the
 *   same order as the Python reference, with the same codes (`too_large` for
 *   the size and item limits, `malformed` for everything else), checking every
 *   declared length against the remaining input before allocating. It then
 *   re-encodes the value with cborg's RFC 8949 deterministic encoder and
 *   refuses the input (`malformed`) unless the bytes are identical: a second,
 *   independent check that only the canonical form is ever accepted.
 * * {@link encode} checks the value is inside the data model (`usage`
 *   otherwise) and encodes it with cborg's RFC 8949 options (map keys sorted
 *   bytewise by their encoding, shortest-form arguments, definite lengths).
 *
 * Data model in TypeScript: `null`, booleans, integers (a `number` when it is
 * a safe integer, else a `bigint`; −2^64 … 2^64−1), `Uint8Array`, strings,
 * arrays, and `Map`s whose keys are strings or integers (plain objects with
 * string keys are accepted by {@link encode} as maps).
 */

import { encode as cborgEncode, rfc8949EncodeOptions } from "cborg";

import { bytesEqual } from "./bytes.js";
import { Code, DecodeError, UsageError } from "./errors.js";

/** A value of the canonical data model. */
export type CborValue =
  | null
  | boolean
  | number
  | bigint
  | Uint8Array
  | string
  | CborValue[]
  | CborMap;

/** A decoded map: keys are text or integers. */
export type CborMap = Map<CborKey, CborValue>;
/** A map key. */
export type CborKey = string | number | bigint;

/** What {@link encode} accepts: the data model plus plain objects as maps. */
export type Encodable =
  | null
  | boolean
  | number
  | bigint
  | Uint8Array
  | string
  | readonly Encodable[]
  | ReadonlyMap<CborKey, Encodable>
  | { readonly [key: string]: Encodable };

/** Bounds applied while decoding untrusted bytes (§2.4). */
export interface DecodeLimits {
  /** Whole input, bytes. */
  readonly maxSize: number;
  /** Nesting of arrays and maps (the outermost container is at depth 0). */
  readonly maxDepth: number;
  /** Entries in one array or map. */
  readonly maxItems: number;
}

/** The generic limits, used when no protocol limit applies. */
export const DEFAULT_LIMITS: DecodeLimits = Object.freeze({
  maxSize: 1 << 20,
  maxDepth: 16,
  maxItems: 10_000,
});

const U64_MAX = (1n << 64n) - 1n;
const MAJOR_UINT = 0;
const MAJOR_NINT = 1;
const MAJOR_BYTES = 2;
const MAJOR_TEXT = 3;
const MAJOR_ARRAY = 4;
const MAJOR_TAG = 6;
const MAJOR_SIMPLE = 7;

// ------------------------------------------------------------------- encode

/** The canonical head of a byte string of `length` bytes. */
export function byteStringHead(length: number): Uint8Array {
  return head(MAJOR_BYTES, BigInt(length));
}

function head(major: number, arg: bigint): Uint8Array {
  const mt = major << 5;
  if (arg < 24n) return Uint8Array.of(mt | Number(arg));
  if (arg <= 0xffn) return Uint8Array.of(mt | 24, Number(arg));
  const width = arg <= 0xffffn ? 2 : arg <= 0xffffffffn ? 4 : 8;
  const out = new Uint8Array(1 + width);
  out[0] = mt | (width === 2 ? 25 : width === 4 ? 26 : 27);
  for (let i = 0; i < width; i++) out[width - i] = Number((arg >> BigInt(8 * i)) & 0xffn);
  return out;
}

function isWellFormed(text: string): boolean {
  // No lone surrogates: such a string has no UTF-8 encoding.
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);
}

function checkKey(key: unknown): CborKey {
  if (typeof key === "string") {
    if (!isWellFormed(key)) throw new UsageError("map key is not valid Unicode");
    return key;
  }
  if (typeof key === "number" || typeof key === "bigint") {
    checkInteger(key);
    return key;
  }
  throw new UsageError(`map keys must be text or integers, got ${typeof key}`);
}

function checkInteger(value: number | bigint): void {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value) || Object.is(value, -0)) {
      throw new UsageError(`${value} is not an integer of the data model (use a bigint beyond 2^53)`);
    }
    return;
  }
  if (value > U64_MAX || value < -(1n << 64n)) {
    throw new UsageError(`integer ${value} does not fit in 64 bits`);
  }
}

/** Normalise `value` into the data model (plain objects become Maps). */
function normalise(value: unknown, depth: number): CborValue {
  if (depth > 64) throw new UsageError("value nests too deeply to encode");
  if (value === null || typeof value === "boolean") return value;
  if (typeof value === "number" || typeof value === "bigint") {
    checkInteger(value);
    // A bigint that fits a safe integer encodes the same; keep one JS type.
    return typeof value === "bigint" && value >= BigInt(Number.MIN_SAFE_INTEGER) &&
      value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  }
  if (value instanceof Uint8Array) return value;
  if (typeof value === "string") {
    if (!isWellFormed(value)) throw new UsageError("text is not valid Unicode (lone surrogate)");
    return value;
  }
  if (Array.isArray(value)) return value.map((v) => normalise(v, depth + 1));
  if (value instanceof Map) {
    const out: CborMap = new Map();
    for (const [k, v] of value) {
      const nk = checkKey(k);
      out.set(typeof nk === "bigint" ? normaliseKey(nk) : nk, normalise(v, depth + 1));
    }
    return out;
  }
  if (typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const out: CborMap = new Map();
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      out.set(checkKey(k), normalise(v, depth + 1));
    }
    return out;
  }
  throw new UsageError(`cannot encode values of type ${typeof value}`);
}

function normaliseKey(k: bigint): CborKey {
  return k >= BigInt(Number.MIN_SAFE_INTEGER) && k <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(k) : k;
}

/**
 * Encode `value` canonically.
 *
 * @throws UsageError a type outside the data model, a key that is not text or
 *   an integer, an integer beyond 64 bits or a non-integer number.
 */
export function encode(value: Encodable): Uint8Array {
  return cborgEncode(normalise(value, 0), rfc8949EncodeOptions);
}

// ------------------------------------------------------------------- decode

const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

class Reader {
  pos = 0;
  readonly end: number;

  constructor(
    readonly data: Uint8Array,
    readonly limits: DecodeLimits,
  ) {
    this.end = data.length;
  }

  fail(why: string): DecodeError {
    return new DecodeError(`malformed encoding at byte ${this.pos}: ${why}`, Code.MALFORMED);
  }

  /** The argument of an item whose initial byte has additional info `info`. */
  private argument(info: number): bigint {
    if (info < 24) return BigInt(info);
    if (info > 27) {
      // 28-30 reserved, 31 = indefinite length: neither is canonical.
      throw this.fail("indefinite lengths and reserved values are not allowed");
    }
    const width = 1 << (info - 24);
    if (this.pos + width > this.end) throw this.fail("truncated integer or length");
    let arg = 0n;
    for (let i = 0; i < width; i++) arg = (arg << 8n) | BigInt(this.data[this.pos + i]!);
    this.pos += width;
    // Shortest form only: each width must be needed.
    const floor = width === 1 ? 24n : 1n << BigInt(4 * width);
    if (arg < floor) throw this.fail("integer or length not in its shortest form");
    return arg;
  }

  value(depth: number): CborValue {
    if (this.pos >= this.end) throw this.fail("unexpected end of input");
    const initial = this.data[this.pos]!;
    this.pos += 1;
    const major = initial >> 5;
    if (major === MAJOR_SIMPLE) {
      if (initial === 0xf4) return false;
      if (initial === 0xf5) return true;
      if (initial === 0xf6) return null;
      throw this.fail("floats and simple values other than false/true/null are not allowed");
    }
    const arg = this.argument(initial & 0x1f);
    if (major === MAJOR_UINT) return toInt(arg);
    if (major === MAJOR_NINT) return toInt(-1n - arg);
    if (major === MAJOR_BYTES || major === MAJOR_TEXT) return this.string(major, arg);
    if (major === MAJOR_TAG) throw this.fail("tags are not allowed");
    return this.container(major, arg, depth);
  }

  private string(major: number, arg: bigint): Uint8Array | string {
    if (arg > BigInt(this.end - this.pos)) {
      throw this.fail(`string of ${arg} bytes is longer than the input`);
    }
    const n = Number(arg);
    const raw = this.data.subarray(this.pos, this.pos + n);
    this.pos += n;
    if (major === MAJOR_BYTES) return raw.slice();
    try {
      return textDecoder.decode(raw);
    } catch {
      throw this.fail("text string is not valid UTF-8");
    }
  }

  private container(major: number, arg: bigint, depth: number): CborValue {
    if (depth >= this.limits.maxDepth) throw this.fail(`nesting deeper than ${this.limits.maxDepth}`);
    if (arg > BigInt(this.limits.maxItems)) {
      throw new DecodeError(`${arg} items exceed the limit of ${this.limits.maxItems}`, Code.TOO_LARGE);
    }
    const count = Number(arg);
    // Every item takes at least one byte (a map entry two): refuse impossible
    // counts before allocating anything for them.
    if (count * (major === MAJOR_ARRAY ? 1 : 2) > this.end - this.pos) {
      throw this.fail(`declares ${count} items but the input is too short`);
    }
    if (major === MAJOR_ARRAY) {
      const out: CborValue[] = [];
      for (let i = 0; i < count; i++) out.push(this.value(depth + 1));
      return out;
    }
    return this.map(count, depth + 1);
  }

  private map(count: number, depth: number): CborMap {
    const out: CborMap = new Map();
    let previous: Uint8Array = new Uint8Array(0);
    for (let i = 0; i < count; i++) {
      const start = this.pos;
      const k = this.value(depth);
      if (typeof k !== "string" && typeof k !== "number" && typeof k !== "bigint") {
        throw this.fail("map keys must be text or integers");
      }
      const keyBytes = this.data.subarray(start, this.pos);
      // RFC 8949 §4.2.1: keys sorted bytewise by their encoding; equal = duplicate.
      if (compareEncoded(keyBytes, previous) <= 0) {
        throw this.fail("map keys are duplicated or not in canonical order");
      }
      previous = keyBytes;
      out.set(k, this.value(depth));
    }
    return out;
  }
}

function compareEncoded(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

function toInt(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/**
 * Decode exactly one canonical value from `data`.
 *
 * @throws DecodeError `too_large` when `data` exceeds `limits.maxSize` or a
 *   container exceeds `limits.maxItems`; `malformed` for anything that is not
 *   the canonical encoding.
 */
export function decode(data: Uint8Array, limits: DecodeLimits = DEFAULT_LIMITS): CborValue {
  if (data.length > limits.maxSize) {
    throw new DecodeError(`input of ${data.length} bytes exceeds the limit of ${limits.maxSize}`, Code.TOO_LARGE);
  }
  const reader = new Reader(data, limits);
  const value = reader.value(0);
  if (reader.pos !== data.length) {
    throw reader.fail(`${data.length - reader.pos} trailing bytes after the value`);
  }
  // Independent check of the invariant: the value's one encoding is the input.
  if (!bytesEqual(cborgEncode(value, rfc8949EncodeOptions), data)) {
    throw new DecodeError("malformed encoding: not the canonical encoding of its value", Code.MALFORMED);
  }
  return value;
}

/** Whether a decoded value is a map. */
export function isMap(value: unknown): value is CborMap {
  return value instanceof Map;
}

/** Whether a decoded value is an integer (never a boolean). */
export function isInt(value: unknown): value is number | bigint {
  return (typeof value === "number" && Number.isInteger(value)) || typeof value === "bigint";
}
