/**
 * Reading the vault (mirrors the reading side of `sddsf.client.vault`;
 * docs/vault.md): the space named `vault`, its document `vault`, whose root
 * map `versions` holds immutable records `{"f", "name", "kind", "secret"
 * (null: a tombstone), "author", "ts", "supersedes", "sig"}` (format 2 signed
 * with `VAULT_RECORD_SIG`, format 1 unsigned, from older sddsf). An item's
 * heads are its versions no other supersedes; two live heads are a conflict
 * and no value is chosen. Every record's authorship and first value are
 * checked ({@link Provenance}): forged and misattributed records are refused,
 * changed and removed ones are alerts (the first value is kept).
 *
 * Writing: `put` of `password` and `note` items (signed format 2). The key
 * kinds (bip39, ed25519, secp256k1: validation, generation) are written with
 * the Python client.
 */

import * as Y from "yjs";

import { toHex } from "./bytes.js";
import { randomBytes } from "./crypto.js";
import { UsageError } from "./errors.js";
import type { DeviceKeys } from "./identity.js";
import { VAULT_RECORD_SIG } from "./labels.js";
import { authorship, CHANGED, currentHeads, isInt, parseRecord, REMOVED, signRecord, type Provenance } from "./records.js";
import type { RegistryState } from "./registry.js";

export const SPACE = "vault";
export const DOC = "vault";
const MAP = "versions";
export const KINDS = ["password", "bip39", "ed25519", "secp256k1", "note"] as const;
export const MAX_NAME = 200;
export const MAX_SECRET = 64 * 1024;

/** One immutable write of an item; `secret` null for a tombstone. */
export interface Version {
  readonly id: string;
  readonly name: string;
  readonly kind: string;
  readonly secret: string | null;
  readonly author: string;
  readonly tsMs: number;
  readonly supersedes: readonly string[];
  /** The author is checked (signature, or the signer of the op that carried it). */
  readonly verified: boolean;
}

/** A named secret: its current versions (heads), oldest first. */
export interface Item {
  readonly name: string;
  readonly heads: readonly Version[];
  readonly deleted: boolean;
  readonly conflict: boolean;
  readonly kind: string;
}

/** A record another device tampered with (`changed`, `removed`, `forged`, `misattributed`). */
export interface VaultAlert {
  readonly version: string;
  readonly name: string | null;
  readonly what: string;
  readonly by: string | null;
}

function parseVersion(id: string, d: Record<string, unknown> | null): Version | null {
  if (d === null || (d.f !== 1 && d.f !== 2)) return null;
  const { name, kind, secret, author, ts, supersedes } = d as Record<string, unknown>;
  if (!(typeof name === "string" && (KINDS as readonly string[]).includes(String(kind)) && typeof author === "string" &&
    (secret === null || typeof secret === "string") && isInt(ts) && Array.isArray(supersedes) &&
    supersedes.every((s) => typeof s === "string"))) return null;
  if ((kind === "ed25519" || kind === "secp256k1") && secret !== null && !/^[0-9a-f]{64}$/.test(secret as string)) return null;
  return { id, name, kind: String(kind), secret: secret as string | null, author, tsMs: ts, supersedes: supersedes as string[],
    verified: true };
}

/** The vault documents of this device (one per space named `vault`). */
export class Vault {
  unreadable: string[] = [];
  alerts: VaultAlert[] = [];

  /**
   * @param sources `[scope, doc]` of each `vault` space's `vault` document; writes go to the first
   *   (the smaller space id, as the Python client).
   */
  constructor(
    private readonly sources: readonly (readonly [string, Y.Doc])[],
    private readonly keys: DeviceKeys,
    private readonly registry: () => RegistryState,
    private readonly provenance: Provenance,
    private readonly clock: () => number = () => Date.now(),
  ) {}

  private versions(): Version[] {
    this.unreadable = [];
    this.alerts = [];
    const out: Version[] = [];
    const publicKey = (id: Uint8Array) => this.registry().device(id)?.publicId.signingKey;
    for (const [scope, doc] of this.sources) {
      for (const rec of this.provenance.records(scope, doc.getMap(MAP))) {
        const d = parseRecord(rec.value);
        const v = parseVersion(rec.key, d);
        if (v === null || d === null) {
          this.unreadable.push(rec.key);
          continue;
        }
        const status = authorship(VAULT_RECORD_SIG, rec.key, d, rec.seen, publicKey, d.f === 2);
        const by = rec.seen.carrier ? toHex(rec.seen.carrier) : null;
        if (status === "forged" || status === "misattributed") {
          this.alerts.push({ version: v.id, name: v.name, what: status, by });
          continue;
        }
        const change = rec.seen.change;
        if (rec.altered || change?.action === CHANGED) {
          this.alerts.push({ version: v.id, name: v.name, what: CHANGED, by: change?.carrier ? toHex(change.carrier) : null });
        }
        if (!rec.present && change !== null) {
          this.alerts.push({ version: v.id, name: v.name, what: REMOVED, by: change.carrier ? toHex(change.carrier) : null });
        }
        out.push({ ...v, verified: status === "verified" });
      }
    }
    return out;
  }

  private items(): Map<string, Item> {
    const byName = new Map<string, Version[]>();
    for (const v of this.versions()) byName.set(v.name, [...(byName.get(v.name) ?? []), v]);
    const items = new Map<string, Item>();
    for (const [name, vs] of [...byName].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const heads = currentHeads(vs);
      const deleted = heads.every((h) => h.secret === null);
      items.set(name, { name, heads, deleted, conflict: heads.length > 1 && !deleted, kind: heads.at(-1)!.kind });
    }
    return items;
  }

  /** The live items (not deleted), by name. */
  list(): Item[] {
    return [...this.items().values()].filter((i) => !i.deleted);
  }

  /**
   * The current secret of `name`.
   *
   * @throws UsageError no such item, deleted, or in conflict (no value is chosen).
   */
  get(name: string): Version {
    const item = this.items().get(name);
    if (item === undefined || item.deleted) throw new UsageError(`no item '${name}' in the vault`);
    if (item.conflict) {
      throw new UsageError(`'${name}' has ${item.heads.length} current versions (written concurrently); resolve it with ` +
        "`sddsf vault resolve`");
    }
    return item.heads[0]!;
  }

  /**
   * Store a `password` or `note` secret, superseding every current version.
   *
   * @throws UsageError another kind, a bad name, an empty or too large secret, or no vault space.
   */
  put(name: string, kind: "password" | "note", secret: string): Version {
    if (kind !== "password" && kind !== "note") throw new UsageError("this client writes password and note items");
    if (!name || [...name].length > MAX_NAME || /[\u0000-\u001f\u007f]/.test(name)) {
      throw new UsageError(`an item name has 1 to ${MAX_NAME} printable characters`);
    }
    if (!secret || new TextEncoder().encode(secret).length > MAX_SECRET) throw new UsageError("a secret has 1 byte to 64 KiB");
    const target = this.sources[0];
    if (target === undefined) throw new UsageError("this account has no vault space yet");
    const item = this.items().get(name);
    const sup = item ? item.heads.map((h) => h.id).sort() : [];
    const id = toHex(randomBytes(16));
    const fields = { f: 2, name, kind, secret, author: toHex(this.keys.deviceId), ts: this.clock(), supersedes: sup };
    const [, doc] = target;
    this.provenance.writing([id], () => doc.getMap(MAP).set(id, signRecord(this.keys, VAULT_RECORD_SIG, id, fields)));
    return { id, name, kind, secret, author: fields.author, tsMs: fields.ts, supersedes: sup, verified: true };
  }
}
