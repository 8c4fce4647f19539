/**
 * The key-value document `kv` of a space (mirrors `sddsf.client.kv`;
 * docs/client.md "Key-value document"): a root map `versions` of signed,
 * write-once records `{"f": 1, "key", "value" (null: removed), "author", "ts",
 * "supersedes", "sig"}`; a key's current values are its versions no other
 * supersedes (two heads: a conflict, shown until a later put). The older map
 * `kv` (key → plain value, last writer wins) is still read for keys without
 * versions, and every put/rm updates it too. Authorship and first values are
 * checked as for the vault ({@link Provenance}).
 */

import * as Y from "yjs";

import { fromHex, toHex } from "./bytes.js";
import { randomBytes, type Ed25519PublicKey } from "./crypto.js";
import { UsageError } from "./errors.js";
import type { DeviceKeys } from "./identity.js";
import { KV_RECORD_SIG } from "./labels.js";
import { authorship, CHANGED, currentHeads, isInt, parseRecord, REMOVED, signRecord, type Provenance } from "./records.js";

export const DOC = "kv";
const PLAIN = "kv";
const MAP = "versions";
const FORMAT = 1;
export const MAX_VALUE = 1 << 20;
/** The version id of a value read from the older map. */
export const LEGACY = "plain";

/** One write of a key; `value` null for a removal. */
export interface KvVersion {
  readonly id: string;
  readonly key: string;
  readonly value: string | null;
  /** Device id, hex (null: a plain value of the older format). */
  readonly author: string | null;
  readonly tsMs: number;
  readonly supersedes: readonly string[];
  readonly verified: boolean;
}

/** A key and its current versions (heads), oldest first. */
export interface KvEntry {
  readonly key: string;
  readonly heads: readonly KvVersion[];
  readonly value: string | null;
  readonly conflict: boolean;
  readonly deleted: boolean;
}

/** A record of the document another device tampered with. */
export interface KvAlert {
  readonly version: string;
  readonly key: string | null;
  readonly what: string;
  /** The carrier's device id, hex (null: unknown). */
  readonly by: string | null;
}

function entryOf(key: string, heads: KvVersion[]): KvEntry {
  const live = heads.filter((h) => h.value !== null);
  return { key, heads, value: live.length ? live.at(-1)!.value : null, conflict: heads.length > 1 && live.length > 0,
    deleted: live.length === 0 };
}

/** The key-value document of one space on this device (sync before reading and after writing). */
export class KeyValue {
  /** Records that could not be read (malformed, or a newer format). */
  unreadable: string[] = [];
  /** Records other devices tampered with, found by the last read. */
  alerts: KvAlert[] = [];

  constructor(
    readonly doc: Y.Doc,
    private readonly scope: string,
    private readonly keys: DeviceKeys,
    /** The signing key of an author device (undefined: no verified registry lists it). */
    private readonly publicKey: (deviceId: Uint8Array) => Ed25519PublicKey | undefined,
    private readonly provenance: Provenance,
    private readonly clock: () => number = () => Date.now(),
  ) {}

  private versions(): KvVersion[] {
    this.unreadable = [];
    this.alerts = [];
    const found: KvVersion[] = [];
    for (const rec of this.provenance.records(this.scope, this.doc.getMap(MAP))) {
      const d = parseRecord(rec.value);
      const ok = d !== null && d.f === FORMAT && typeof d.key === "string" && (d.value === null || typeof d.value === "string") &&
        typeof d.author === "string" && isInt(d.ts) && Array.isArray(d.supersedes) &&
        d.supersedes.every((s: unknown) => typeof s === "string");
      if (!ok) {
        this.unreadable.push(rec.key);
        continue;
      }
      const v: KvVersion = { id: rec.key, key: d.key, value: d.value, author: d.author, tsMs: d.ts, supersedes: d.supersedes,
        verified: true };
      const status = authorship(KV_RECORD_SIG, rec.key, d, rec.seen, this.publicKey, true);
      const by = rec.seen.carrier ? toHex(rec.seen.carrier) : null;
      if (status !== "verified") { // every record of this format is signed
        this.alerts.push({ version: v.id, key: v.key, what: status, by });
        continue;
      }
      const change = rec.seen.change;
      if (rec.altered || (!rec.present && change !== null)) {
        this.alerts.push({ version: v.id, key: v.key, what: rec.present ? CHANGED : REMOVED,
          by: change?.carrier ? toHex(change.carrier) : null });
      } else if (!rec.present) { // an own write never sent (no removal observed)
        this.provenance.forget(this.scope, [rec.key]);
        continue;
      }
      found.push(v);
    }
    return found;
  }

  private entriesByKey(): Map<string, KvEntry> {
    const byKey = new Map<string, KvVersion[]>();
    for (const v of this.versions()) byKey.set(v.key, [...(byKey.get(v.key) ?? []), v]);
    const out = new Map([...byKey].map(([k, vs]) => [k, entryOf(k, currentHeads(vs))]));
    for (const [k, value] of this.doc.getMap(PLAIN).entries()) {
      if (!out.has(k)) { // the older format: a plain value, last writer wins
        out.set(k, entryOf(k, [{ id: LEGACY, key: k, value: String(value), author: null, tsMs: 0, supersedes: [], verified: false }]));
      }
    }
    return new Map([...out].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  /** The keys that hold a value (or concurrent values), by key. */
  entries(): KvEntry[] {
    return [...this.entriesByKey().values()].filter((e) => !e.deleted);
  }

  /** The key, or null if it holds no value. */
  entry(key: string): KvEntry | null {
    const e = this.entriesByKey().get(key);
    return e === undefined || e.deleted ? null : e;
  }

  private write(key: string, value: string | null): KvVersion {
    const e = this.entriesByKey().get(key);
    const sup = e ? e.heads.filter((h) => h.id !== LEGACY).map((h) => h.id).sort() : [];
    const id = toHex(randomBytes(16));
    const fields = { f: FORMAT, key, value, author: toHex(this.keys.deviceId), ts: this.clock(), supersedes: sup };
    this.provenance.writing([id], () => this.doc.transact(() => {
      this.doc.getMap(MAP).set(id, signRecord(this.keys, KV_RECORD_SIG, id, fields));
      const plain = this.doc.getMap(PLAIN);
      if (value !== null) plain.set(key, value);
      else if (plain.has(key)) plain.delete(key);
    }));
    return { id, key, value, author: fields.author, tsMs: fields.ts, supersedes: sup, verified: true };
  }

  /**
   * Set `key`, superseding every current value (it ends a conflict).
   *
   * @throws UsageError an empty key or a value over 1 MiB.
   */
  put(key: string, value: string): KvVersion {
    if (!key) throw new UsageError("a key is at least one character");
    if (new TextEncoder().encode(value).length > MAX_VALUE) throw new UsageError(`a value is at most ${MAX_VALUE >> 20} MiB`);
    return this.write(key, value);
  }

  /**
   * Remove `key` (every current value).
   *
   * @throws UsageError the key holds no value.
   */
  rm(key: string): KvVersion {
    if (this.entry(key) === null) throw new UsageError(`no key '${key}' in this space`);
    return this.write(key, null);
  }
}

/** The hex device id of a record's author, as bytes (for display). */
export function authorId(v: KvVersion): Uint8Array | null {
  return v.author === null ? null : fromHex(v.author);
}
