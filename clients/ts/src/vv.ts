/**
 * Version vectors (docs/protocol.md §6; mirrors `sddsf.protocol.vv`): author
 * (device id) → highest sequence number included; absent means 0.
 *
 * Wire form: `[[device_id, seq], ...]` sorted by device id, no zero entries,
 * no duplicates (one encoding per value). Sequence numbers are uint64, kept
 * as bigints so every wire value is exact.
 */

import { isInt, type CborValue } from "./cbor.js";
import { compareBytes, fromHex, toHex } from "./bytes.js";
import { Code, DecodeError, UsageError } from "./errors.js";

/** Result of comparing two version vectors. */
export type Ordering = "equal" | "before" | "after" | "concurrent";

/** An immutable version vector. */
export class VersionVector {
  private readonly entries: ReadonlyMap<string, bigint>;

  /** @param entries author (device id) → seq; zero entries are dropped. */
  constructor(entries: Iterable<readonly [Uint8Array, bigint | number]> = []) {
    const clean: [Uint8Array, bigint][] = [];
    for (const [author, seq] of entries) {
      const s = BigInt(seq);
      if (s < 0n) throw new UsageError("version vector sequence numbers are non-negative");
      if (s > 0n) clean.push([author, s]);
    }
    clean.sort((a, b) => compareBytes(a[0], b[0]));
    this.entries = new Map(clean.map(([a, s]) => [toHex(a), s]));
  }

  /** Number of authors with a non-zero entry. */
  get size(): number {
    return this.entries.size;
  }

  /** Sequence number included for `author` (0 if none). */
  seq(author: Uint8Array): bigint {
    return this.entries.get(toHex(author)) ?? 0n;
  }

  /** Whether `author` has an entry. */
  has(author: Uint8Array): boolean {
    return this.entries.has(toHex(author));
  }

  /** `[author, seq]` pairs sorted by author. */
  items(): [Uint8Array, bigint][] {
    return [...this.entries].map(([a, s]) => [fromHex(a), s]);
  }

  /** Least upper bound: the pointwise maximum. */
  join(other: VersionVector): VersionVector {
    const merged = new Map(this.entries);
    for (const [a, s] of other.entries) if (s > (merged.get(a) ?? 0n)) merged.set(a, s);
    return new VersionVector([...merged].map(([a, s]) => [fromHex(a), s] as const));
  }

  /** A copy with `author` set to `seq`. */
  withSeq(author: Uint8Array, seq: bigint): VersionVector {
    const merged = new Map(this.entries);
    merged.set(toHex(author), seq);
    return new VersionVector([...merged].map(([a, s]) => [fromHex(a), s] as const));
  }

  /** True when this ≥ other pointwise. */
  dominates(other: VersionVector): boolean {
    for (const [a, s] of other.entries) if ((this.entries.get(a) ?? 0n) < s) return false;
    return true;
  }

  /** Partial order between two vectors. */
  compare(other: VersionVector): Ordering {
    const ge = this.dominates(other);
    const le = other.dominates(this);
    if (ge && le) return "equal";
    if (ge) return "after";
    if (le) return "before";
    return "concurrent";
  }

  /** Equality of entries. */
  equals(other: VersionVector): boolean {
    return this.compare(other) === "equal";
  }

  /** `[[device_id, seq], ...]` sorted by device id. */
  toWire(): [Uint8Array, bigint][] {
    return this.items();
  }

  /**
   * Parse the wire form strictly (sorted, unique, non-zero).
   *
   * @throws DecodeError `too_large` over `maxEntries`; `malformed` otherwise.
   */
  static fromWire(value: CborValue, what: string, idSize: number, maxEntries: number): VersionVector {
    if (!Array.isArray(value)) throw new DecodeError(`${what}: expected an array of [id, seq] pairs`);
    if (value.length > maxEntries) {
      throw new DecodeError(`${what}: ${value.length} entries exceed the limit of ${maxEntries}`, Code.TOO_LARGE);
    }
    const out: [Uint8Array, bigint][] = [];
    let previous: Uint8Array = new Uint8Array(0);
    for (const item of value) {
      if (!Array.isArray(item) || item.length !== 2 || !(item[0] instanceof Uint8Array) ||
        item[0].length !== idSize || !isInt(item[1]) || BigInt(item[1]) < 1n) {
        throw new DecodeError(`${what}: each entry is [${idSize}-byte id, seq >= 1]`);
      }
      if (compareBytes(item[0], previous) <= 0) {
        throw new DecodeError(`${what}: entries must be sorted by id without duplicates`);
      }
      previous = item[0];
      out.push([item[0], BigInt(item[1])]);
    }
    return new VersionVector(out);
  }
}
