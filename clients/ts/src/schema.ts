/**
 * Narrowing decoded values into typed fields, with errors that name the field
 * (docs/protocol.md §2.5; mirrors `sddsf.protocol.schema`).
 *
 * Structures are maps with a fixed set of text keys: a missing or unknown key
 * is `malformed` (no "ignore if unsupported"), so each structure has exactly
 * one accepted shape.
 */

import { decode, isInt, isMap, type CborMap, type CborValue, type DecodeLimits } from "./cbor.js";
import { Code, DecodeError } from "./errors.js";

/** 2^64 − 1, the largest uint of the wire. */
export const U64_MAX = (1n << 64n) - 1n;

function bad(what: string, why: string): DecodeError {
  return new DecodeError(`${what}: ${why}`, Code.MALFORMED);
}

/** Number of Unicode code points (what the Python reference's `len(str)` counts). */
export function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

function typeName(v: CborValue | undefined): string {
  if (v === null) return "null";
  if (v instanceof Uint8Array) return "bytes";
  if (Array.isArray(v)) return "array";
  if (v instanceof Map) return "map";
  if (typeof v === "number" || typeof v === "bigint") return "integer";
  return typeof v;
}

/**
 * Check a structure's version field before anything else about it.
 *
 * @throws DecodeError `malformed` if it is not an integer, `unsupported_version`
 *   if it is not one of `supported`.
 */
export function checkVersion(value: CborValue | undefined, supported: number | readonly number[], what: string): number {
  if (!isInt(value)) throw bad(what, "version must be an integer");
  const list = typeof supported === "number" ? [supported] : supported;
  const v = typeof value === "bigint" ? -1 : value;
  if (!list.includes(v)) {
    throw new DecodeError(
      `${what}: version ${value} is not supported (this build speaks version ${list.join(" or ")}); ` +
        "upgrade the software that sent it",
      Code.UNSUPPORTED_VERSION,
    );
  }
  return v;
}

/**
 * Check the `"v"` field of a decoded map first, so that a newer structure with
 * new fields is reported as `unsupported_version`, not `malformed`.
 */
export function versionOfMap(value: CborValue, supported: number | readonly number[], what: string): void {
  if (isMap(value) && value.has("v")) checkVersion(value.get("v"), supported, what);
}

/**
 * Check `value` is a map with exactly the `required` keys (plus any `optional`).
 *
 * @throws DecodeError not a map, a missing key, or an unknown key.
 */
export function expectMap(
  value: CborValue | undefined,
  what: string,
  required: readonly string[],
  optional: readonly string[] = [],
): Fields {
  if (!isMap(value)) throw bad(what, `expected a map, got ${typeName(value)}`);
  const missing = required.filter((k) => !value.has(k));
  if (missing.length) throw bad(what, `missing field(s) ${JSON.stringify(missing.sort())}`);
  const allowed = new Set<unknown>([...required, ...optional]);
  const unknown = [...value.keys()].filter((k) => !allowed.has(k));
  if (unknown.length) throw bad(what, `unknown field(s) ${JSON.stringify(unknown.map(String).sort())}`);
  return new Fields(value, what);
}

/**
 * Check `value` is an array of at most `maxItems` items.
 *
 * @throws DecodeError `malformed` when not an array, `too_large` when longer.
 */
export function expectList(value: CborValue | undefined, what: string, maxItems: number): CborValue[] {
  if (!Array.isArray(value)) throw bad(what, `expected an array, got ${typeName(value)}`);
  if (value.length > maxItems) {
    throw new DecodeError(`${what}: ${value.length} items exceed the limit of ${maxItems}`, Code.TOO_LARGE);
  }
  return value;
}

/** Typed accessors over one decoded map; every error names `what.field`. */
export class Fields {
  constructor(
    readonly map: CborMap,
    readonly what: string,
  ) {}

  /** Whether an optional field is present. */
  has(key: string): boolean {
    return this.map.has(key);
  }

  private get(key: string): CborValue {
    if (!this.map.has(key)) throw bad(`${this.what}.${key}`, "missing field");
    return this.map.get(key) as CborValue;
  }

  /** The undecoded value of `key`. */
  raw(key: string): CborValue {
    return this.get(key);
  }

  /** A byte string, of exactly `size` or at most `maxSize` bytes (`too_large` beyond). */
  bytes(key: string, opts: { size?: number; maxSize?: number } = {}): Uint8Array {
    const v = this.get(key);
    if (!(v instanceof Uint8Array)) throw bad(`${this.what}.${key}`, `expected bytes, got ${typeName(v)}`);
    if (opts.size !== undefined && v.length !== opts.size) {
      throw bad(`${this.what}.${key}`, `expected ${opts.size} bytes, got ${v.length}`);
    }
    if (opts.maxSize !== undefined && v.length > opts.maxSize) {
      throw new DecodeError(`${this.what}.${key}: ${v.length} bytes exceed the limit of ${opts.maxSize}`, Code.TOO_LARGE);
    }
    return v;
  }

  /** An unsigned 64-bit integer in `[lo, hi]`, as a bigint (exact for every wire value). */
  u64(key: string, lo = 0n, hi = U64_MAX): bigint {
    const v = this.get(key);
    if (!isInt(v)) throw bad(`${this.what}.${key}`, `expected an integer, got ${typeName(v)}`);
    const n = BigInt(v);
    if (n < lo || n > hi) throw bad(`${this.what}.${key}`, `${n} is outside [${lo}, ${hi}]`);
    return n;
  }

  /** A small integer in `[lo, hi]` (both safe integers), as a number. */
  int(key: string, lo: number, hi: number): number {
    return Number(this.u64OrNeg(key, BigInt(lo), BigInt(hi)));
  }

  private u64OrNeg(key: string, lo: bigint, hi: bigint): bigint {
    const v = this.get(key);
    if (!isInt(v)) throw bad(`${this.what}.${key}`, `expected an integer, got ${typeName(v)}`);
    const n = BigInt(v);
    if (n < lo || n > hi) throw bad(`${this.what}.${key}`, `${n} is outside [${lo}, ${hi}]`);
    return n;
  }

  /** A text string of at most `maxLen` characters (code points). */
  str(key: string, maxLen = 256): string {
    const v = this.get(key);
    if (typeof v !== "string") throw bad(`${this.what}.${key}`, `expected text, got ${typeName(v)}`);
    if (codePoints(v) > maxLen) throw bad(`${this.what}.${key}`, `text longer than ${maxLen} characters`);
    return v;
  }

  /** A boolean. */
  bool(key: string): boolean {
    const v = this.get(key);
    if (typeof v !== "boolean") throw bad(`${this.what}.${key}`, `expected a boolean, got ${typeName(v)}`);
    return v;
  }

  /** An array of at most `maxItems` items. */
  list(key: string, maxItems: number): CborValue[] {
    return expectList(this.get(key), `${this.what}.${key}`, maxItems);
  }

  /** A nested map with exactly the given keys. */
  subMap(key: string, required: readonly string[], optional: readonly string[] = []): Fields {
    return expectMap(this.get(key), `${this.what}.${key}`, required, optional);
  }
}

/** The result of {@link decodeSignedOuter}: `[version, body_bytes, signature]`. */
export interface SignedOuter {
  readonly version: number;
  readonly bodyBytes: Uint8Array;
  readonly signature: Uint8Array;
}

/**
 * Decode the outer layout `[version, body_bytes, signature]` shared by key
 * packages, tree heads and snapshots, accepting any of the `versions` (so a
 * module can dispatch to the decoder of each format version).
 *
 * @throws DecodeError `too_large` over `limits.maxSize`; `unsupported_version`;
 *   `malformed` for any other shape error.
 */
export function decodeSignedOuter(
  data: Uint8Array,
  what: string,
  versions: number | readonly number[],
  limits: DecodeLimits,
): SignedOuter {
  if (data.length > limits.maxSize) {
    throw new DecodeError(`${what} of ${data.length} bytes exceeds the limit of ${limits.maxSize}`, Code.TOO_LARGE);
  }
  const outer = decode(data, limits);
  if (!Array.isArray(outer) || outer.length !== 3) throw bad(what, "expected [version, body, signature]");
  const [v, bodyBytes, signature] = outer;
  const version = checkVersion(v, versions, what);
  if (!(bodyBytes instanceof Uint8Array) || !(signature instanceof Uint8Array) || signature.length !== 64) {
    throw bad(what, "the body is a byte string and the signature 64 bytes");
  }
  return { version, bodyBytes, signature };
}

/**
 * Decode the common signed layout `[version, body_bytes, signature]` whose body
 * is a canonical map with `"v"` = the outer version (one of `versions`) and
 * exactly the keys `fields` (or `fields(version)` for structures whose versions
 * differ in their fields).
 *
 * @returns the body fields, the version, the body bytes and the signature.
 * @throws DecodeError as {@link decodeSignedOuter}, and for the body's shape.
 */
export function decodeSigned(
  data: Uint8Array,
  what: string,
  versions: number | readonly number[],
  fields: readonly string[] | ((version: number) => readonly string[]),
  limits: DecodeLimits,
): { fields: Fields; version: number; bodyBytes: Uint8Array; signature: Uint8Array } {
  const outer = decodeSignedOuter(data, what, versions, limits);
  const body = decode(outer.bodyBytes, limits);
  versionOfMap(body, outer.version, `${what} body`);
  const keys = typeof fields === "function" ? fields(outer.version) : fields;
  return { fields: expectMap(body, what, keys), version: outer.version, bodyBytes: outer.bodyBytes,
    signature: outer.signature };
}
