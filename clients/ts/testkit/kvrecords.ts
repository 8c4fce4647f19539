/**
 * Test-only reader and writer of the key-value document's signed records
 * (`sddsf.client.kv` / `sddsf.client.records`, docs/client.md), enough for the
 * interop test to read what a Python device wrote and to write a record a
 * Python device verifies, without the library's record layer (`src/kv.ts`,
 * with provenance and alerts), so the interop tests also check that layer's
 * output from the outside.
 *
 * A record is canonical JSON (sorted keys, no spaces, ASCII escapes as
 * Python's `json.dumps`) `{"f": 1, "key", "value", "author", "ts",
 * "supersedes", "sig"}`, where `sig` is the author's Ed25519 signature (hex)
 * over `labelled(KV_RECORD_SIG, record_id, canonical JSON without "sig")`.
 */

import * as Y from "yjs";

import { fromHex, toHex } from "../src/bytes.js";
import type { DeviceKeys } from "../src/identity.js";
import { KV_RECORD_SIG, labelled } from "../src/labels.js";
import { canonicalJson } from "../src/records.js";
import type { RegistryState } from "../src/registry.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

/** Python's canonical JSON (the library's: `src/records.ts`). */
export { canonicalJson };

/** One verified record. */
export interface KvRecord {
  readonly id: string;
  readonly key: string;
  readonly value: string | null;
  readonly author: string;
  readonly ts: number;
  readonly supersedes: readonly string[];
}

/**
 * The records of the `versions` map whose signature verifies under their
 * author's registry key; the others are returned as `refused`.
 */
export function readRecords(doc: Y.Doc, registry: RegistryState): { records: KvRecord[]; refused: string[] } {
  const records: KvRecord[] = [];
  const refused: string[] = [];
  for (const [id, raw] of doc.getMap("versions").entries()) {
    let d: Json;
    try {
      d = JSON.parse(String(raw));
    } catch {
      refused.push(id);
      continue;
    }
    const rec = d && d.f === 1 ? registry.device(fromHex(String(d.author))) : undefined;
    const { sig, ...body } = d ?? {};
    if (rec === undefined || typeof sig !== "string" ||
      !rec.publicId.signingKey.isValidSignature(labelled(KV_RECORD_SIG, id, canonicalJson(body)), fromHex(sig))) {
      refused.push(id);
      continue;
    }
    records.push({ id, key: d.key, value: d.value, author: d.author, ts: d.ts, supersedes: d.supersedes });
  }
  return { records, refused };
}

/** Per key, the current values (heads: versions no other supersedes), newest last. */
export function heads(records: readonly KvRecord[]): Map<string, KvRecord[]> {
  const superseded = new Set(records.flatMap((r) => r.supersedes));
  const out = new Map<string, KvRecord[]>();
  for (const r of records) {
    if (superseded.has(r.id)) continue;
    out.set(r.key, [...(out.get(r.key) ?? []), r].sort((a, b) => a.ts - b.ts || (a.id < b.id ? -1 : 1)));
  }
  return out;
}

/** Write `key = value` as a signed record superseding the key's heads (and the plain map, as Python does). */
export function putRecord(doc: Y.Doc, keys: DeviceKeys, registry: RegistryState, key: string, value: string, id: string,
  tsMs: number): void {
  const current = heads(readRecords(doc, registry).records).get(key) ?? [];
  const fields = { f: 1, key, value, author: toHex(keys.deviceId), ts: tsMs, supersedes: current.map((r) => r.id).sort() };
  const sig = toHex(keys.sign(labelled(KV_RECORD_SIG, id, canonicalJson(fields))));
  doc.transact(() => {
    doc.getMap("versions").set(id, canonicalJson({ ...fields, sig }));
    doc.getMap("kv").set(key, value);
  });
}
