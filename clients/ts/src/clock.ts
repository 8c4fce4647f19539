/**
 * Hybrid logical clock timestamps (docs/protocol.md §7; mirrors
 * `sddsf.protocol.clock`), as a pure state machine: wall time is a parameter.
 */

import { isInt, type CborValue } from "./cbor.js";
import { ClockSkewError, DecodeError, UsageError } from "./errors.js";

const MAX_COUNTER = 0xffff;
const MAX_WALL_MS = 2 ** 48 - 1;

/** A hybrid logical timestamp `(wallMs, counter)`, ordered lexicographically. */
export class HLCTimestamp {
  constructor(
    readonly wallMs: number,
    readonly counter = 0,
  ) {}

  /** `[wall_ms, counter]`. */
  toWire(): [number, number] {
    return [this.wallMs, this.counter];
  }

  /** -1, 0 or 1 in lexicographic `(wallMs, counter)` order. */
  compare(other: HLCTimestamp): number {
    if (this.wallMs !== other.wallMs) return this.wallMs < other.wallMs ? -1 : 1;
    if (this.counter !== other.counter) return this.counter < other.counter ? -1 : 1;
    return 0;
  }

  /**
   * Parse `[wall_ms, counter]` with range checks.
   *
   * @throws DecodeError `malformed`.
   */
  static fromWire(value: CborValue, what: string): HLCTimestamp {
    if (!Array.isArray(value) || value.length !== 2 || !value.every(isInt)) {
      throw new DecodeError(`${what}: expected [wall_ms, counter]`);
    }
    const [wall, counter] = value as (number | bigint)[];
    if (typeof wall !== "number" || typeof counter !== "number" || wall < 0 || wall > MAX_WALL_MS ||
      counter < 0 || counter > MAX_COUNTER) {
      throw new DecodeError(`${what}: timestamp out of range`);
    }
    return new HLCTimestamp(wall, counter);
  }
}

/** Issues monotonic timestamps close to wall time (local to each device). */
export class HybridLogicalClock {
  last: HLCTimestamp;

  constructor(
    last: HLCTimestamp | null = null,
    readonly maxDriftMs = 600_000,
  ) {
    this.last = last ?? new HLCTimestamp(0, 0);
  }

  private advance(candidateWall: number, counterFloor: number, wallMs: number): HLCTimestamp {
    if (!Number.isSafeInteger(wallMs) || wallMs < 0 || wallMs > MAX_WALL_MS) {
      throw new UsageError("wall clock value out of range");
    }
    let wall = candidateWall;
    let counter: number;
    if (candidateWall >= wallMs) {
      counter = counterFloor + 1;
    } else {
      wall = wallMs;
      counter = 0;
    }
    if (counter > MAX_COUNTER) {
      wall += 1;
      counter = 0;
    }
    if (wall - wallMs > this.maxDriftMs) {
      throw new ClockSkewError(
        `logical clock is ${wall - wallMs} ms ahead of the wall clock (limit ${this.maxDriftMs} ms); check this machine's time`,
      );
    }
    this.last = new HLCTimestamp(wall, counter);
    return this.last;
  }

  /** Timestamp for a local event (e.g. creating an op). */
  tick(wallMs: number): HLCTimestamp {
    return this.advance(this.last.wallMs, this.last.counter, wallMs);
  }

  /**
   * Merge a received timestamp; returns the timestamp of the receive event.
   *
   * @throws ClockSkewError `remote` is more than `maxDriftMs` ahead (state unchanged).
   */
  observe(remote: HLCTimestamp, wallMs: number): HLCTimestamp {
    if (remote.wallMs - wallMs > this.maxDriftMs) {
      throw new ClockSkewError(`peer timestamp is ${remote.wallMs - wallMs} ms in the future (limit ${this.maxDriftMs} ms)`);
    }
    const base = this.last.compare(remote) >= 0 ? this.last : remote;
    return this.advance(base.wallMs, base.counter, wallMs);
  }
}
