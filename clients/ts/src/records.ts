/**
 * Write-once records: who really wrote each one, and what it first said
 * (mirrors `sddsf.client.records`; docs/vault.md "A malicious own device").
 *
 * The vault (document `vault`) and the key-value document (`kv`) keep
 * immutable records in a root Yjs map `versions`: one fresh random key per
 * write. A record names its author, but inside an op a Yjs update can write
 * any key, so that is only a claim. {@link Provenance} observes those maps
 * and keeps, per (space, document, key), a {@link Seen}: the value first
 * seen (authoritative: a later change is an alert, never adopted), the
 * *carrier* (the device whose verified op first brought the key; this device
 * for its own writes; unknown for a snapshot), and the last change or
 * removal with the signer of the op that made it. A key counts as carried by
 * an op only if the op's own updates hold it (applied to an empty document),
 * and a change counts as the op's only if its transaction took in nothing but
 * the op's content, so content a crafted update planted earlier is not
 * attributed to the next op's author.
 *
 * Records are also signed by their author ({@link signRecord}) over
 * `labelled(label, record id, canonical JSON of the other fields)`;
 * {@link authorship} combines both checks. The canonical JSON is Python's
 * `json.dumps(sort_keys=True, separators=(",", ":"))` with its default
 * `ensure_ascii` (every UTF-16 unit from 0x7f on as `\uXXXX`): a different text
 * would not verify on Python devices.
 */

import * as Y from "yjs";

import { bytesEqual, fromHex, toHex } from "./bytes.js";
import { decode, encode, type CborValue, type Encodable } from "./cbor.js";
import type { Ed25519PublicKey } from "./crypto.js";
import type { DeviceKeys } from "./identity.js";
import { labelled } from "./labels.js";

/** Document name → its root map of write-once records. */
export const TRACKED: Readonly<Record<string, string>> = { vault: "versions", kv: "versions" };
export const CHANGED = "changed";
export const REMOVED = "removed";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

/** Python's `json.dumps(value, sort_keys=True, separators=(",", ":"))` (ensure_ascii on). */
export function canonicalJson(value: Json): string {
  if (value === null || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new TypeError("records hold integers only");
    return String(value);
  }
  if (typeof value === "string") {
    // Python escapes DEL too (ensure_ascii: everything from 0x7f).
    return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${canonicalJson(k)}:${canonicalJson(value[k])}`).join(",")}}`;
}

/** `fields` plus `sig` (the author's signature of `labelled(label, id, canonical(fields))`), as canonical JSON. */
export function signRecord(keys: DeviceKeys, label: string, id: string, fields: Record<string, Json>): string {
  const sig = keys.sign(labelled(label, id, canonicalJson(fields)));
  return canonicalJson({ ...fields, sig: toHex(sig) });
}

/** Whether `record.sig` is `publicKey`'s signature of the rest of it. */
export function signatureValid(label: string, id: string, record: Record<string, Json>, publicKey: Ed25519PublicKey): boolean {
  const sig = record.sig;
  if (typeof sig !== "string" || !/^[0-9a-f]{128}$/.test(sig)) return false;
  const { sig: _omit, ...body } = record;
  let text: string;
  try {
    text = canonicalJson(body);
  } catch {
    return false;
  }
  return publicKey.isValidSignature(labelled(label, id, text), fromHex(sig));
}

/** The last change (`changed`) or removal (`removed`) of a known key. */
export interface Change {
  readonly action: string;
  readonly carrier: Uint8Array | null;
  readonly ms: number;
  readonly seq: number;
}

/** What this device knows of one key of a write-once map. */
export interface Seen {
  readonly value: string | null;
  readonly carrier: Uint8Array | null;
  readonly firstMs: number;
  readonly seq: number;
  readonly change: Change | null;
  readonly suspect: boolean;
}

/** What a reader may believe about a record's `author`. */
export type Authorship = "verified" | "unverified" | "forged" | "misattributed";

/**
 * Check a record's claimed `author` (hex) against its signature (when the
 * format is `signed`) and the signer of the op that carried it.
 */
export function authorship(label: string, id: string, record: Record<string, Json>, seen: Seen,
  publicKey: (deviceId: Uint8Array) => Ed25519PublicKey | undefined, signed: boolean): Authorship {
  let author: Uint8Array;
  try {
    if (typeof record.author !== "string" || !/^([0-9a-f]{2})*$/.test(record.author)) return "forged";
    author = fromHex(record.author);
  } catch {
    return "forged";
  }
  if (signed) {
    const key = publicKey(author);
    if (key === undefined || !signatureValid(label, id, record, key)) return "forged";
  }
  if (seen.carrier !== null && !bytesEqual(seen.carrier, author)) return "misattributed";
  if (!signed && seen.carrier === null) return seen.suspect ? "forged" : "unverified";
  return "verified";
}

/** One key of a write-once map as a reader must take it. */
export interface RecordView {
  readonly key: string;
  /** The authoritative (first seen) value. */
  readonly value: string | null;
  readonly seen: Seen;
  /** The document still holds the key. */
  readonly present: boolean;
  /** The document holds another value than the first. */
  readonly altered: boolean;
}

/** Where a {@link Provenance} keeps its tables (the device's encrypted store). */
export interface ProvenanceStore {
  load(scope: string): Promise<Uint8Array | undefined>;
  save(scope: string, value: Uint8Array): Promise<void>;
}

interface OpState {
  readonly scope: string;
  readonly root: string;
  readonly carrier: Uint8Array;
  readonly updates: readonly Uint8Array[];
  readonly txns: Uint8Array[];
  readonly first: Set<string>;
  readonly changed: Set<string>;
}

const text = (v: unknown): string | null => (typeof v === "string" ? v : null);

/** A device's record of who carried each key of its write-once maps (see the module comment). */
export class Provenance {
  private readonly tables = new Map<string, Map<string, Seen>>();
  private readonly dirty = new Set<string>();
  private readonly scopes = new Map<Y.Doc, [string, string]>();
  private remote = false;
  private carrier: Uint8Array | null = null;
  private op: OpState | null = null;
  private expected = new Set<string>();
  private seqValue = 0;

  constructor(private readonly me: Uint8Array, private readonly clock: () => number = () => Date.now()) {}

  /** Load the table of `scope` (hex space id ‖ doc id) from `store` (before attaching its document). */
  async load(scope: string, store: ProvenanceStore): Promise<void> {
    if (this.tables.has(scope)) return;
    const raw = await store.load(scope);
    const table = new Map<string, Seen>();
    if (raw !== undefined) {
      const [seq, rows] = decode(raw, { maxSize: 1 << 28, maxDepth: 8, maxItems: 1 << 22 }) as [number, CborValue[][]];
      this.seqValue = Math.max(this.seqValue, Number(seq));
      for (const row of rows) {
        const [key, value, carrier, firstMs, s, change, suspect] = row as [string, string | null, Uint8Array | null, number,
          number, CborValue[] | null, boolean];
        table.set(key, { value, carrier, firstMs: Number(firstMs), seq: Number(s), suspect,
          change: change === null ? null : { action: change[0] as string, carrier: change[1] as Uint8Array | null,
            ms: Number(change[2]), seq: Number(change[3]) } });
      }
    }
    this.tables.set(scope, table);
  }

  /** Write every table changed since the last save. */
  async save(store: ProvenanceStore): Promise<void> {
    for (const scope of [...this.dirty]) {
      const table = this.table(scope);
      const rows: Encodable[] = [...table].map(([k, s]) => [k, s.value, s.carrier, s.firstMs, s.seq,
        s.change === null ? null : [s.change.action, s.change.carrier, s.change.ms, s.change.seq], s.suspect]);
      await store.save(scope, encode([this.seqValue, rows]));
      this.dirty.delete(scope);
    }
  }

  /** Observe the write-once map of document `name` of `scope` (if it has one). */
  attach(scope: string, name: string, doc: Y.Doc): void {
    const root = TRACKED[name];
    if (root === undefined || this.scopes.has(doc)) return;
    this.scopes.set(doc, [scope, root]);
    doc.getMap(root).observe((event) => this.observed(scope, event));
    doc.on("update", (update: Uint8Array) => {
      if (this.op !== null && this.op.scope === scope) this.op.txns.push(update);
    });
  }

  /** The updates applied next are `updates` of a verified op signed by `author` to `doc` (null: a snapshot, carrier unknown). */
  applying(author: Uint8Array | null, doc: Y.Doc | null = null, updates: readonly Uint8Array[] = []): void {
    this.finish();
    this.remote = true;
    this.carrier = author;
    const tracked = doc !== null ? this.scopes.get(doc) : undefined;
    if (tracked !== undefined && author !== null) {
      this.op = { scope: tracked[0], root: tracked[1], carrier: author, updates, txns: [], first: new Set(), changed: new Set() };
    }
  }

  /** Edits from now on are this device's own. */
  applied(): void {
    this.finish();
    this.remote = false;
    this.carrier = null;
  }

  /** This device adds `keys` to a write-once map inside `fn`; local changes of other keys are not attributed to it. */
  writing<T>(keys: Iterable<string>, fn: () => T): T {
    this.expected = new Set(keys);
    try {
      return fn();
    } finally {
      this.expected = new Set();
    }
  }

  private next(): number {
    return ++this.seqValue;
  }

  /** Every key of `scope` this device has seen. */
  table(scope: string): Map<string, Seen> {
    let t = this.tables.get(scope);
    if (t === undefined) {
      t = new Map();
      this.tables.set(scope, t);
    }
    return t;
  }

  private set(scope: string, key: string, seen: Seen | null): void {
    const t = this.table(scope);
    if (seen === null) t.delete(key);
    else t.set(key, seen);
    this.dirty.add(scope);
  }

  private observed(scope: string, event: Y.YMapEvent<unknown>): void {
    const table = this.table(scope);
    const now = this.clock();
    const op = this.op !== null && this.op.scope === scope ? this.op : null;
    const map = event.target as Y.Map<unknown>;
    for (const [key, change] of event.changes.keys) {
      const carrier = this.remote ? (op === null ? this.carrier : op.carrier) : this.expected.has(key) ? this.me : null;
      const fresh = change.action === "delete" ? null : text(map.get(key));
      let seen = table.get(key);
      if (seen === undefined) {
        if (change.action === "add") {
          this.set(scope, key, { value: fresh, carrier, firstMs: now, seq: this.next(), change: null, suspect: false });
          op?.first.add(key);
          continue;
        }
        // Held before this device kept provenance: its old value is the first known.
        seen = { value: text(change.oldValue), carrier: null, firstMs: now, seq: this.next(), change: null, suspect: false };
      }
      if (change.action === "delete") {
        seen = { ...seen, change: { action: REMOVED, carrier, ms: now, seq: this.next() } };
      } else if (fresh !== seen.value) {
        seen = { ...seen, change: { action: CHANGED, carrier, ms: now, seq: this.next() } };
      } else {
        continue;
      }
      this.set(scope, key, seen);
      op?.changed.add(key);
    }
  }

  private finish(): void {
    // Check what the op being applied did against its own content.
    const op = this.op;
    this.op = null;
    if (op === null) return;
    const [foreign, content] = effects(op);
    const table = this.table(op.scope);
    const now = this.clock();
    if (foreign) {
      for (const key of op.first) {
        if (!content.has(key)) this.set(op.scope, key, { ...table.get(key)!, carrier: null, suspect: true });
      }
      for (const key of op.changed) {
        const s = table.get(key)!;
        if (s.change !== null) this.set(op.scope, key, { ...s, change: { ...s.change, carrier: null } });
      }
    }
    for (const [key, value] of content) {
      const seen = table.get(key);
      if (seen === undefined) { // carried, but a planted deletion removed it before it showed
        this.set(op.scope, key, { value, carrier: op.carrier, firstMs: now, seq: this.next(), suspect: false,
          change: { action: REMOVED, carrier: null, ms: now, seq: this.next() } });
      } else if (op.first.has(key) && seen.value !== value) { // changed in the same transaction
        this.set(op.scope, key, { value, carrier: op.carrier, firstMs: seen.firstMs, seq: seen.seq, suspect: false,
          change: { action: CHANGED, carrier: null, ms: now, seq: this.next() } });
      } else if (!op.first.has(key) && seen.value !== value) { // the op wrote a known key
        this.set(op.scope, key, { ...seen, change: { action: CHANGED, carrier: op.carrier, ms: now, seq: this.next() } });
      }
    }
  }

  /**
   * The records of one write-once map: every key this device ever saw there,
   * with its first value (keys never observed are adopted with an unknown carrier).
   */
  records(scope: string, live: Y.Map<unknown>): RecordView[] {
    const table = this.table(scope);
    const now = this.clock();
    for (const [k, v] of live.entries()) {
      if (!table.has(k)) this.set(scope, k, { value: text(v), carrier: null, firstMs: now, seq: this.next(), change: null, suspect: false });
    }
    return [...table].map(([k, s]) => ({ key: k, value: s.value, seen: s, present: live.has(k),
      altered: live.has(k) && text(live.get(k)) !== s.value }));
  }

  /** Drop keys (an own write that never left, or records purged for good). */
  forget(scope: string, keys: Iterable<string>): void {
    for (const k of keys) this.set(scope, k, null);
  }
}

function effects(op: OpState): [boolean, Map<string, string | null>] {
  // Whether the op's transactions took in more than its own updates, and the
  // new keys its updates hold; anything unexpected counts as foreign.
  try {
    if (op.updates.length === 0) return [op.txns.length > 0, new Map()];
    const own = Y.mergeUpdates([...op.updates]);
    const foreign = op.txns.length > 0 && !bytesEqual(Y.mergeUpdates([own, ...op.txns]), Y.mergeUpdates([own]));
    const scratch = new Y.Doc();
    for (const u of op.updates) Y.applyUpdate(scratch, u);
    const content = new Map([...scratch.getMap(op.root).entries()].map(([k, v]) => [k, text(v)] as const));
    return [foreign, content];
  } catch {
    return [true, new Map()];
  }
}

/** A version of a write-once map (kv or vault) with the fields heads need. */
export interface Versioned {
  readonly id: string;
  readonly tsMs: number;
  readonly supersedes: readonly string[];
}

/** The versions no other supersedes, oldest first (all of them if a cycle leaves none). */
export function currentHeads<V extends Versioned>(versions: readonly V[]): V[] {
  const superseded = new Set(versions.flatMap((v) => v.supersedes));
  const heads = versions.filter((v) => !superseded.has(v.id));
  return [...(heads.length ? heads : versions)].sort((a, b) => a.tsMs - b.tsMs || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** A JSON record as a dict, or null when it is not one. */
export function parseRecord(raw: string | null): Record<string, Json> | null {
  if (raw === null) return null;
  try {
    const d = JSON.parse(raw);
    return d !== null && typeof d === "object" && !Array.isArray(d) ? d : null;
  } catch {
    return null;
  }
}

/** A record's fields of the given types, or null. */
export function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v);
}
