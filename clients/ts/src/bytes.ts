/**
 * Byte-string helpers: hex, the relay API's URL-safe base64 (docs/protocol.md
 * §17.1), comparison and concatenation. Nothing here is secret-dependent in
 * timing except {@link constantTimeEqual}.
 */

import { Code, DecodeError, UsageError } from "./errors.js";

const HEX_BYTE: readonly string[] = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

/** Lowercase hex of `data`. */
export function toHex(data: Uint8Array): string {
  let out = "";
  for (let i = 0; i < data.length; i++) out += HEX_BYTE[data[i]!]!;
  return out;
}

/**
 * Bytes of a hex string (even length, `0-9a-fA-F` only).
 *
 * @throws UsageError for anything else.
 */
export function fromHex(text: string): Uint8Array {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new UsageError("not a hex string");
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/** Value of each ASCII code in the alphabet, -1 for codes outside it. */
const B64_INDEX: Int8Array = (() => {
  const t = new Int8Array(128).fill(-1);
  for (let i = 0; i < B64.length; i++) t[B64.charCodeAt(i)] = i;
  return t;
})();

/** URL-safe base64 with `=` padding (the canonical form the relay expects). */
export function b64(data: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 2 < data.length; i += 3) {
    const n = (data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!;
    out += B64[n >> 18]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + B64[n & 63]!;
  }
  const rest = data.length - i;
  if (rest === 1) {
    const n = data[i]! << 16;
    out += B64[n >> 18]! + B64[(n >> 12) & 63]! + "==";
  } else if (rest === 2) {
    const n = (data[i]! << 16) | (data[i + 1]! << 8);
    out += B64[n >> 18]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + "=";
  }
  return out;
}

/**
 * Decode URL-safe base64 with padding, strictly (as the relay decodes it).
 *
 * @param what names the field in the error message.
 * @param size when given, the exact number of bytes expected.
 * @throws DecodeError (`malformed`) for another alphabet, missing or excess
 *   padding, whitespace, or another size.
 */
export function unb64(text: string, what = "value", size?: number): Uint8Array {
  if (typeof text !== "string" || text.length % 4 !== 0) {
    throw new DecodeError(`${what}: not valid URL-safe base64 with padding`, Code.MALFORMED);
  }
  const pad = text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0;
  const body = text.slice(0, text.length - pad);
  const out = new Uint8Array((text.length / 4) * 3 - pad);
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < body.length; i++) {
    const c = body.charCodeAt(i);
    const v = c < 128 ? B64_INDEX[c]! : -1;
    if (v < 0) {
      throw new DecodeError(`${what}: not valid URL-safe base64 ('-' and '_', padded)`, Code.MALFORMED);
    }
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  if (size !== undefined && out.length !== size) {
    throw new DecodeError(`${what}: expected ${size} bytes, got ${out.length}`, Code.MALFORMED);
  }
  return out;
}

/** Concatenation of byte strings. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Bytewise lexicographic order (a shorter prefix sorts first): -1, 0 or 1. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/** Whether two byte strings are equal (not constant time: for public values). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return compareBytes(a, b) === 0;
}

/** Equality that does not reveal where two equal-length strings differ. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** UTF-8 bytes of a string. */
export function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** `n` zero bytes. */
export function zeros(n: number): Uint8Array {
  return new Uint8Array(n);
}

/** A hex key for byte strings used as map keys. */
export function key(data: Uint8Array): string {
  return toHex(data);
}

/** Whether `value` is a Uint8Array (and not another typed array). */
export function isBytes(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array;
}

/** Copy `data` into a fresh Uint8Array (detaches it from a larger buffer). */
export function copyBytes(data: Uint8Array): Uint8Array {
  return new Uint8Array(data);
}
