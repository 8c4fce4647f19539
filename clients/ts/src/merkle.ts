/**
 * RFC 9162 Merkle log: hashes, proof verification, proof generation and an
 * append frontier (docs/protocol.md §11; mirrors `sddsf.protocol.merkle`).
 *
 * * leaf hash `SHA-256(0x00 ‖ leaf)`, node `SHA-256(0x01 ‖ left ‖ right)`;
 * * sizes and indices are uint64 and handled as bigints (exact bit arithmetic);
 * * untrusted input that does not verify, or is malformed (a hash that is not
 *   32 bytes, including the roots of trivial cases), is a `ProofError`
 *   (`proof_invalid`), never another exception; misuse by our own caller is a
 *   `UsageError`.
 */

import { bytesEqual, concat, toHex } from "./bytes.js";
import { sha256 } from "./crypto.js";
import { Code, ProofError, UsageError } from "./errors.js";

export const HASH_SIZE = 32;
const MAX_SIZE = (1n << 64n) - 1n;
const LEAF = Uint8Array.of(0);
const NODE = Uint8Array.of(1);

/** The root of the empty tree, SHA-256(""). */
export const EMPTY_ROOT = sha256(new Uint8Array(0));

/** A size or index: a number or a bigint. */
export type Uint = number | bigint;

function node(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(concat(NODE, left, right));
}

/** Hash one log entry: `SHA-256(0x00 ‖ leaf)`. */
export function leafHash(leaf: Uint8Array): Uint8Array {
  return sha256(concat(LEAF, leaf));
}

/**
 * Hash two children: `SHA-256(0x01 ‖ left ‖ right)`.
 *
 * @throws UsageError a child is not a 32-byte hash.
 */
export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return node(ownHash(left, "left child"), ownHash(right, "right child"));
}

function bitLength(n: bigint): number {
  return n === 0n ? 0 : n.toString(2).length;
}

function popcount(n: bigint): number {
  let c = 0;
  for (const ch of n.toString(2)) if (ch === "1") c++;
  return c;
}

function tz(n: bigint): number {
  // trailing zero bits of n > 0
  return bitLength(n & -n) - 1;
}

function bitCeil(n: bigint): bigint {
  return n <= 1n ? 1n : 1n << BigInt(bitLength(n - 1n));
}

function isNodeRange(start: bigint, end: bigint): boolean {
  return start < end && start % bitCeil(end - start) === 0n;
}

function largestPow2Below(n: bigint): bigint {
  return 1n << BigInt(bitLength(n - 1n) - 1);
}

function err(message: string): ProofError {
  return new ProofError(message, Code.PROOF_INVALID);
}

function describe(value: unknown): string {
  return value instanceof Uint8Array ? `${value.length} bytes` : `a ${typeof value}`;
}

function hash(value: unknown, what: string): Uint8Array {
  if (value instanceof Uint8Array && value.length === HASH_SIZE) return value;
  throw err(`${what} is ${describe(value)}, expected a ${HASH_SIZE}-byte SHA-256 hash`);
}

function ownHash(value: unknown, what: string): Uint8Array {
  if (value instanceof Uint8Array && value.length === HASH_SIZE) return value;
  throw new UsageError(`${what} is ${describe(value)}, expected a ${HASH_SIZE}-byte SHA-256 hash`);
}

function uint(value: unknown, what: string): bigint {
  if (typeof value === "bigint" && value >= 0n && value <= MAX_SIZE) return value;
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  throw err(`${what} must be an integer in [0, 2**64), got ${String(value)}`);
}

function ownUint(value: unknown, what: string): bigint {
  if (typeof value === "bigint" && value >= 0n && value <= MAX_SIZE) return value;
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  throw new UsageError(`${what} must be an integer in [0, 2**64), got ${String(value)}`);
}

function proofList(value: unknown, what: string): Uint8Array[] {
  if (!Array.isArray(value)) throw err(`${what} must be a sequence of hashes, got ${describe(value)}`);
  return value.map((h, i) => hash(h, `${what} hash #${i}`));
}

function short(h: Uint8Array): string {
  return `${toHex(h).slice(0, 16)}...`;
}

function fold(frontier: readonly Uint8Array[]): Uint8Array {
  if (frontier.length === 0) return EMPTY_ROOT;
  let r = frontier[frontier.length - 1]!;
  for (let i = frontier.length - 2; i >= 0; i--) r = node(frontier[i]!, r);
  return r;
}

/**
 * `MTH` over a list of leaf hashes (RFC 9162 §2.1.1), in O(n).
 *
 * @throws UsageError an element is not a 32-byte hash.
 */
export function rootOf(leafHashes: readonly Uint8Array[]): Uint8Array {
  const f = new Frontier();
  leafHashes.forEach((h, i) => f.append(ownHash(h, `leaf hash #${i}`)));
  return f.root();
}

// ------------------------------------------------------------------ inclusion

function rootFromPath(seed: Uint8Array, index: bigint, size: bigint, proof: Uint8Array[], where: string): Uint8Array {
  const inner = bitLength(index ^ (size - 1n));
  const want = inner + popcount(index >> BigInt(inner));
  if (proof.length !== want) throw err(`inclusion proof has ${proof.length} hashes, expected ${want} for ${where}`);
  let fn = index;
  let sn = size - 1n;
  let r = seed;
  for (const p of proof) {
    if (sn === 0n) throw err(`inclusion proof for ${where} is too long`);
    if ((fn & 1n) === 1n || fn === sn) {
      r = node(p, r);
      if ((fn & 1n) === 0n) {
        while (fn !== 0n && (fn & 1n) === 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = node(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw err(`inclusion proof for ${where} is too short`);
  return r;
}

/**
 * The root an inclusion proof leads to (RFC 9162 §2.1.3.2).
 *
 * @throws ProofError a malformed input, `index ≥ size`, or a proof of the wrong length.
 */
export function rootFromInclusion(leafHashValue: Uint8Array, index: Uint, size: Uint, proof: readonly Uint8Array[]): Uint8Array {
  const seed = hash(leafHashValue, "leaf hash");
  const i = uint(index, "leaf index");
  const n = uint(size, "tree size");
  if (i >= n) throw err(`leaf index ${i} is outside a tree of ${n} leaves`);
  return rootFromPath(seed, i, n, proofList(proof, "inclusion proof"), `leaf ${i} in a tree of ${n}`);
}

/**
 * Check that `leafHash` is leaf `index` of the tree of `size` with `root` (§11.2).
 *
 * @throws ProofError the proof does not verify, or an input is malformed.
 */
export function verifyInclusion(leafHashValue: Uint8Array, index: Uint, size: Uint, proof: readonly Uint8Array[],
  root: Uint8Array): void {
  const expected = hash(root, "root");
  const computed = rootFromInclusion(leafHashValue, index, size, proof);
  if (!bytesEqual(computed, expected)) {
    throw err(`inclusion proof for leaf ${index} in a tree of ${size} leads to root ${short(computed)}, not the tree ` +
      `head's ${short(expected)}: the leaf, the proof or the tree head is wrong`);
  }
}

// ---------------------------------------------------------------- consistency

/**
 * Check that the tree of `size1` is a prefix of the tree of `size2` (§11.3).
 * `size1 = size2` needs an empty proof and equal roots; `size1 = 0` is refused.
 *
 * @throws ProofError the proof does not verify, or an input is malformed.
 */
export function verifyConsistency(size1: Uint, size2: Uint, root1: Uint8Array, root2: Uint8Array,
  proof: readonly Uint8Array[]): void {
  const s1 = uint(size1, "size1");
  const s2 = uint(size2, "size2");
  const r1 = hash(root1, "root1");
  const r2 = hash(root2, "root2");
  const hashes = proofList(proof, "consistency proof");
  if (s1 > s2) throw err(`the log shrank: size1 ${s1} is larger than size2 ${s2}`);
  if (s1 === 0n) {
    throw err("a consistency proof from the empty tree (size1 = 0) proves nothing; accept a first tree head on its signature instead");
  }
  if (s1 === s2) {
    if (hashes.length) throw err(`consistency proof between equal sizes (${s1}) must be empty, got ${hashes.length} hashes`);
    if (!bytesEqual(r1, r2)) {
      throw err(`two tree heads of size ${s1} have different roots (${short(r1)} and ${short(r2)}): a fork or a forged head`);
    }
    return;
  }
  if (!hashes.length) throw err(`consistency proof from size ${s1} to ${s2} is empty`);
  const inner = bitLength((s1 - 1n) ^ (s2 - 1n));
  const shift = tz(s1);
  const perfect = s1 === 1n << BigInt(shift);
  const want = (perfect ? 0 : 1) + inner - shift + popcount((s1 - 1n) >> BigInt(inner));
  if (hashes.length !== want) {
    throw err(`consistency proof has ${hashes.length} hashes, expected ${want} from size ${s1} to size ${s2}`);
  }
  const path = perfect ? [r1, ...hashes] : hashes;
  let fn = s1 - 1n;
  let sn = s2 - 1n;
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = path[0]!;
  let sr = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0n) throw err(`consistency proof from size ${s1} to ${s2} is too long`);
    if ((fn & 1n) === 1n || fn === sn) {
      fr = node(c, fr);
      sr = node(c, sr);
      if ((fn & 1n) === 0n) {
        while (fn !== 0n && (fn & 1n) === 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      sr = node(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw err(`consistency proof from size ${s1} to ${s2} is too short`);
  if (!bytesEqual(fr, r1)) {
    throw err(`consistency proof does not rebuild the size-${s1} root ${short(r1)} (got ${short(fr)}): wrong proof or wrong old tree head`);
  }
  if (!bytesEqual(sr, r2)) {
    throw err(`consistency proof leads to ${short(sr)}, not the size-${s2} root ${short(r2)}: the log is not an extension of the old tree head`);
  }
}

// ------------------------------------------------------------ subtree proofs

/**
 * Check that `leafHash` is leaf `index` of the subtree `[start, end)` (§11.4,
 * transparency-dev/merkle `VerifySubtreeInclusion` semantics).
 *
 * @throws ProofError the proof does not verify, or an input is malformed.
 */
export function verifySubtreeInclusion(leafHashValue: Uint8Array, index: Uint, start: Uint, end: Uint,
  proof: readonly Uint8Array[], subtreeRoot: Uint8Array): void {
  const seed = hash(leafHashValue, "leaf hash");
  const expected = hash(subtreeRoot, "subtree root");
  const i = uint(index, "leaf index");
  const s = uint(start, "subtree start");
  const e = uint(end, "subtree end");
  if (!isNodeRange(s, e)) {
    throw err(`[${s}, ${e}) is not a subtree: it must be non-empty and start at a multiple of the smallest power of two >= its size`);
  }
  if (!(s <= i && i < e)) throw err(`leaf index ${i} is outside the subtree [${s}, ${e})`);
  const hashes = proofList(proof, "subtree inclusion proof");
  const where = `leaf ${i} in the subtree [${s}, ${e})`;
  const computed = rootFromPath(seed, i - s, e - s, hashes, where);
  if (!bytesEqual(computed, expected)) {
    throw err(`inclusion proof for ${where} leads to ${short(computed)}, not the subtree root ${short(expected)}`);
  }
}

/**
 * Check that the subtree `[start, end)` with `subtreeRoot` is in the tree of
 * `size` with `root` (transparency-dev/merkle `VerifySubtreeConsistency`).
 *
 * @throws ProofError the proof does not verify, or an input is malformed.
 */
export function verifySubtreeConsistency(start: Uint, end: Uint, size: Uint, subtreeRoot: Uint8Array, root: Uint8Array,
  proof: readonly Uint8Array[]): void {
  const s = uint(start, "subtree start");
  const e = uint(end, "subtree end");
  const n = uint(size, "tree size");
  const sub = hash(subtreeRoot, "subtree root");
  const expected = hash(root, "root");
  const hashes = proofList(proof, "subtree consistency proof");
  if (s > e) throw err(`subtree start ${s} is after its end ${e}`);
  if (s < e && !isNodeRange(s, e)) {
    throw err(`[${s}, ${e}) is not a subtree: it must start at a multiple of the smallest power of two >= its size`);
  }
  if (e > n) throw err(`subtree [${s}, ${e}) ends past the tree of ${n} leaves`);
  if (s === e) {
    if (hashes.length) throw err(`the empty subtree [${s}, ${e}) needs an empty proof, got ${hashes.length} hashes`);
    if (!bytesEqual(sub, EMPTY_ROOT)) throw err(`the empty subtree's root must be SHA-256(""), got ${short(sub)}`);
    return;
  }
  let computed: Uint8Array;
  if (s === 0n && e === n) {
    if (hashes.length) throw err(`subtree [0, ${n}) is the whole tree: the proof must be empty, got ${hashes.length} hashes`);
    computed = sub;
  } else if (!hashes.length) {
    throw err(`subtree consistency proof for [${s}, ${e}) in a tree of ${n} is empty`);
  } else if (e === n) {
    computed = chainRightEdgeSubtree(s, e, sub, hashes);
  } else {
    computed = chainInnerSubtree(s, e, n, sub, hashes);
  }
  if (!bytesEqual(computed, expected)) {
    throw err(`subtree consistency proof for [${s}, ${e}) leads to ${short(computed)}, not the size-${n} root ${short(expected)}`);
  }
}

function chainRightEdgeSubtree(start: bigint, end: bigint, sub: Uint8Array, proof: Uint8Array[]): Uint8Array {
  const level = bitLength((end - 1n) ^ start);
  const want = popcount(start >> BigInt(level));
  if (proof.length !== want) {
    throw err(`subtree consistency proof has ${proof.length} hashes, expected ${want} for [${start}, ${end}) in a tree of ${end}`);
  }
  let r = sub;
  for (const p of proof) r = node(p, r);
  return r;
}

function chainInnerSubtree(start: bigint, end: bigint, size: bigint, sub: Uint8Array, proof: Uint8Array[]): Uint8Array {
  const fork = bitLength((end - 1n) ^ (size - 1n));
  const border = popcount((end - 1n) >> BigInt(fork));
  const shift = tz(end - start);
  const inner = fork - shift;
  const perfect = end - start === 1n << BigInt(shift);
  const lead = perfect ? 0 : 1;
  const want = lead + inner + border;
  if (proof.length !== want) {
    throw err(`subtree consistency proof has ${proof.length} hashes, expected ${want} for [${start}, ${end}) in a tree of ${size}`);
  }
  const seed = perfect ? sub : proof[0]!;
  const path = proof.slice(lead);
  const mask = (end - 1n) >> BigInt(shift);
  const bit = (i: number): boolean => ((mask >> BigInt(i)) & 1n) === 1n;
  if (!perfect) {
    const height = bitLength((end - 1n) ^ start);
    const subInner = Math.min(height, fork) - shift;
    const subBorder = Math.max(0, border - popcount((end - 1n) >> BigInt(height)));
    let h1 = seed;
    path.slice(0, subInner).forEach((p, i) => {
      if (bit(i)) h1 = node(p, h1);
    });
    for (const p of path.slice(inner, inner + subBorder)) h1 = node(p, h1);
    if (!bytesEqual(h1, sub)) {
      throw err(`subtree consistency proof does not rebuild the root of [${start}, ${end}) ${short(sub)} (got ${short(h1)})`);
    }
  }
  let r = seed;
  path.slice(0, inner).forEach((p, i) => {
    r = bit(i) ? node(p, r) : node(r, p);
  });
  for (const p of path.slice(inner)) r = node(p, r);
  return r;
}

// ----------------------------------------------------------- proof generation

/** `hashRange(start, end)` returns `MTH(D[start:end])` for a node range. */
export type HashRange = (start: bigint, end: bigint) => Uint8Array;

/**
 * The audit path `PATH(index, D[0:size])` (RFC 9162 §2.1.3.1), lowest level first.
 *
 * @throws UsageError `index` or `size` out of range.
 */
export function inclusionProof(hashRange: HashRange, index: Uint, size: Uint): Uint8Array[] {
  const i = ownUint(index, "leaf index");
  const n = ownUint(size, "tree size");
  if (i >= n) throw new UsageError(`cannot prove leaf ${i} in a tree of ${n} leaves`);
  const siblings: Uint8Array[] = [];
  let lo = 0n;
  let hi = n;
  while (hi - lo > 1n) {
    const mid = lo + largestPow2Below(hi - lo);
    if (i < mid) {
      siblings.push(hashRange(mid, hi));
      hi = mid;
    } else {
      siblings.push(hashRange(lo, mid));
      lo = mid;
    }
  }
  return siblings.reverse();
}

/**
 * `PROOF(size1, D[0:size2])` (RFC 9162 §2.1.4.1), lowest level first.
 *
 * @throws UsageError unless `0 < size1 ≤ size2`.
 */
export function consistencyProof(hashRange: HashRange, size1: Uint, size2: Uint): Uint8Array[] {
  const s1 = ownUint(size1, "size1");
  const s2 = ownUint(size2, "size2");
  if (!(0n < s1 && s1 <= s2)) {
    throw new UsageError(`cannot prove consistency from size ${s1} to size ${s2}: need 0 < size1 <= size2`);
  }
  const nodes: Uint8Array[] = [];
  let lo = 0n;
  let hi = s2;
  let m = s1;
  let known = true;
  while (m !== hi - lo) {
    const k = largestPow2Below(hi - lo);
    if (m <= k) {
      nodes.push(hashRange(lo + k, hi));
      hi = lo + k;
    } else {
      nodes.push(hashRange(lo, lo + k));
      lo += k;
      m -= k;
      known = false;
    }
  }
  if (!known) nodes.push(hashRange(lo, hi));
  return nodes.reverse();
}

/**
 * `MTH(D[start:end])` for a node range, from stored perfect nodes.
 *
 * @param nodeAt `nodeAt(level, index)` returns the perfect node covering
 *   `[index·2^level, (index+1)·2^level)`.
 * @throws UsageError the range is not a node range.
 */
export function rangeHashFromNodes(nodeAt: (level: number, index: bigint) => Uint8Array, start: Uint, end: Uint): Uint8Array {
  let lo = ownUint(start, "range start");
  const e = ownUint(end, "range end");
  if (lo === e) return EMPTY_ROOT;
  if (!isNodeRange(lo, e)) {
    throw new UsageError(`[${lo}, ${e}) is not a node range: start must be a multiple of the smallest power of two >= its size`);
  }
  const lefts: Uint8Array[] = [];
  while (((e - lo) & (e - lo - 1n)) !== 0n) {
    const k = largestPow2Below(e - lo);
    const level = bitLength(k) - 1;
    lefts.push(nodeAt(level, lo >> BigInt(level)));
    lo += k;
  }
  const level = bitLength(e - lo) - 1;
  let r = nodeAt(level, lo >> BigInt(level));
  for (let i = lefts.length - 1; i >= 0; i--) r = node(lefts[i]!, r);
  return r;
}

// ------------------------------------------------------------------- frontier

/**
 * The roots of the perfect subtrees covering `[0, size)`, largest first (one
 * per set bit of `size`); the only wire form is inside a snapshot (§18).
 */
export class Frontier {
  private sizeValue = 0n;
  // Invariant: hashes.length == popcount(size), highest bit first.
  private hashes: Uint8Array[] = [];

  /** Number of leaves appended so far. */
  get size(): bigint {
    return this.sizeValue;
  }

  /**
   * Append one leaf hash.
   *
   * @returns the perfect nodes completed by this append as `[level, index, hash]`, the leaf first.
   * @throws UsageError not a 32-byte hash.
   */
  append(leaf: Uint8Array): [number, bigint, Uint8Array][] {
    let h = ownHash(leaf, "leaf hash");
    const index = this.sizeValue;
    if (index >= MAX_SIZE) throw new UsageError("the log is full (2**64 - 1 leaves)");
    const completed: [number, bigint, Uint8Array][] = [[0, index, h]];
    let level = 0;
    while (((index >> BigInt(level)) & 1n) === 1n) {
      h = node(this.hashes.pop()!, h);
      level += 1;
      completed.push([level, index >> BigInt(level), h]);
    }
    this.hashes.push(h);
    this.sizeValue = index + 1n;
    return completed;
  }

  /** The root at the current size. */
  root(): Uint8Array {
    return fold(this.hashes);
  }

  /** A copy of the frontier's hashes, largest subtree first. */
  toHashes(): Uint8Array[] {
    return [...this.hashes];
  }

  /**
   * Rebuild a frontier from untrusted hashes.
   *
   * @throws ProofError wrong number of hashes, a malformed hash, or a bad size.
   */
  static fromHashes(size: Uint, hashes: readonly unknown[]): Frontier {
    const n = uint(size, "frontier size");
    const items = proofList(hashes, "frontier");
    if (items.length !== popcount(n)) {
      throw err(`a frontier for size ${n} has ${popcount(n)} hashes (one per set bit of the size), got ${items.length}`);
    }
    const f = new Frontier();
    f.sizeValue = n;
    f.hashes = items;
    return f;
  }
}

/**
 * In-memory append-only tree storing perfect-subtree nodes. A tree started from
 * a frontier ({@link MerkleTree.fromFrontier}) answers every root, range hash
 * and proof that involves only sizes ≥ its `base`, and refuses (`UsageError`)
 * anything that needs a node inside `[0, base)`.
 */
export class MerkleTree {
  // levels[l][i] is the perfect node (l, starts[l] + i).
  private levels: Uint8Array[][] = [[]];
  private starts: bigint[] = [0n];
  private baseValue = 0n;

  /** Build a tree from leaf hashes (appended in order). */
  constructor(leafHashes: Iterable<Uint8Array> = []) {
    for (const h of leafHashes) this.append(h);
  }

  /** A tree whose first `frontier.size` leaves are known only by their frontier. */
  static fromFrontier(frontier: Frontier): MerkleTree {
    const tree = new MerkleTree();
    const size = frontier.size;
    const nLevels = Math.max(bitLength(size), 1);
    tree.starts = Array.from({ length: nLevels }, (_, l) => size >> BigInt(l));
    tree.levels = Array.from({ length: nLevels }, () => []);
    const hashes = frontier.toHashes();
    let k = 0;
    for (let level = bitLength(size) - 1; level >= 0; level--) {
      if (((size >> BigInt(level)) & 1n) === 1n) {
        tree.starts[level] = tree.starts[level]! - 1n;
        tree.levels[level]!.push(hashes[k++]!);
      }
    }
    tree.baseValue = size;
    return tree;
  }

  /** Leaves known only through a frontier (0 for a tree built from leaves). */
  get base(): bigint {
    return this.baseValue;
  }

  /** Number of leaves. */
  get size(): bigint {
    return this.starts[0]! + BigInt(this.levels[0]!.length);
  }

  /** An independent copy. */
  copy(): MerkleTree {
    const t = new MerkleTree();
    t.levels = this.levels.map((l) => [...l]);
    t.starts = [...this.starts];
    t.baseValue = this.baseValue;
    return t;
  }

  /**
   * Append a leaf hash; returns its index.
   *
   * @throws UsageError not a 32-byte hash.
   */
  append(leaf: Uint8Array): bigint {
    let h = ownHash(leaf, "leaf hash");
    const index = this.size;
    this.levels[0]!.push(h);
    let level = 0;
    let i = index;
    while ((i & 1n) === 1n) {
      const left = i - 1n - this.starts[level]!;
      if (left < 0n) throw new UsageError("the tree's frontier lacks a node it needs");
      h = node(this.levels[level]![Number(left)]!, h);
      level += 1;
      i >>= 1n;
      if (level === this.levels.length) {
        this.levels.push([]);
        this.starts.push(i);
      }
      this.levels[level]!.push(h);
    }
    return index;
  }

  /** Hash a log entry and append it. */
  appendLeaf(leaf: Uint8Array): bigint {
    return this.append(leafHash(leaf));
  }

  /**
   * The stored perfect node `(level, index)`.
   *
   * @throws UsageError no such complete node, or one inside the frontier's base.
   */
  node(level: number, index: bigint): Uint8Array {
    const start = this.starts[level];
    const stored = this.levels[level];
    if (start === undefined || stored === undefined || index < 0n || index >= start + BigInt(stored.length)) {
      throw new UsageError(`no complete node (${level}, ${index}) in a tree of ${this.size}`);
    }
    if (index < start) {
      throw new UsageError(`node (${level}, ${index}) lies inside the first ${this.baseValue} leaves, which this tree knows only by their frontier`);
    }
    return stored[Number(index - start)]!;
  }

  private sizeArg(size?: Uint): bigint {
    if (size === undefined) return this.size;
    const n = ownUint(size, "tree size");
    if (n > this.size) throw new UsageError(`tree size ${n} is larger than the tree (${this.size} leaves)`);
    return n;
  }

  /** The root at `size` (default: now). */
  root(size?: Uint): Uint8Array {
    return this.hashRange(0n, this.sizeArg(size));
  }

  /** `MTH(D[start:end])` for a node range. */
  hashRange(start: Uint, end: Uint): Uint8Array {
    if (BigInt(end) > this.size) throw new UsageError(`range [${start}, ${end}) is past the end of the tree (${this.size})`);
    return rangeHashFromNodes((l, i) => this.node(l, i), start, end);
  }

  /** The frontier at the current size. */
  frontier(): Frontier {
    const size = this.size;
    let start = 0n;
    const hashes: Uint8Array[] = [];
    for (let level = bitLength(size) - 1; level >= 0; level--) {
      if (((size >> BigInt(level)) & 1n) === 1n) {
        hashes.push(this.node(level, start >> BigInt(level)));
        start += 1n << BigInt(level);
      }
    }
    return Frontier.fromHashes(size, hashes);
  }

  /** Audit path of leaf `index` in the tree at `size` (default: now). */
  inclusionProof(index: Uint, size?: Uint): Uint8Array[] {
    return inclusionProof((s, e) => this.hashRange(s, e), index, this.sizeArg(size));
  }

  /** Consistency proof from `size1` to `size2` (default: now). */
  consistencyProof(size1: Uint, size2?: Uint): Uint8Array[] {
    return consistencyProof((s, e) => this.hashRange(s, e), size1, this.sizeArg(size2));
  }
}
