/**
 * A full SDDSF device in a browser (or Node): its keys and state in an
 * encrypted {@link Store} (IndexedDB), paired to an account with pairing
 * version 2, syncing its spaces with every proof verified (`./sync.js`),
 * documents in Yjs, the key-value document and the vault read and written
 * with signed records and provenance, and the live channel as a hint to sync
 * (the counterpart of `sddsf.client.device.Device`).
 *
 * Store layout (every value encrypted by the store):
 *
 * ```
 * id                      CBOR {sign, kx, name, account_sign, account_recovery, relay_url, relay_key}
 * registry                CBOR [entry, ...]     (verified again from genesis on open)
 * members                 Members.exportState: other accounts' pinned keys and registries
 * hlc                     CBOR [wall_ms, counter]
 * space/<id>              CBOR {name, acked, gone, replica}  (replica: SpaceReplica.exportState)
 * doc/<id>/<name>         the Yjs state of a document (own unsent edits already sealed)
 * prov/<scope>            provenance of a write-once map
 * audit/heads             CBOR [tree head, ...]  (audit heads verified before, newest 32)
 * ```
 *
 * Every change to a space is written in one store transaction (replica,
 * documents, provenance), after the verified step that made it.
 *
 * Spaces shared between accounts (§21.7): the relay lists another account's
 * space shared with this one, but this device holds it only once joined
 * ({@link BrowserDevice.joinSpace}, naming the owner's account key as the
 * people compared it). Such a space, and this account's own once shared, is
 * read only here: its edits stay on this device. After this account is
 * removed from another account's space the relay no longer serves it: what
 * was synced stays readable and the space is reported `unreachable`.
 */

import * as Y from "yjs";

import { bytesEqual, fromHex, toHex } from "./bytes.js";
import { decode, encode, type CborValue } from "./cbor.js";
import { HLCTimestamp } from "./clock.js";
import type { Ed25519PublicKey } from "./crypto.js";
import { auditLogId, isByteList, parseAlerts, parseAuditPage, parseDevices, verifyAuditLog, type AuditCheck,
  type ControllerAlert, type DeviceTrust } from "./controller.js";
import { docIdFor } from "./docs.js";
import { AuthorizationError, Code, NotFoundError, ProofError, SddsfError, UsageError } from "./errors.js";
import { AccountPublic, DeviceKeys, fingerprint } from "./identity.js";
import { KeyValue } from "./kv.js";
import { LiveChannel, type LiveMessage } from "./live.js";
import { joinAccount, parseUri, type Joined, type PairingCheck } from "./pairing.js";
import { Provenance } from "./records.js";
import type { RegistryState } from "./registry.js";
import { RelayClient, type RetryPolicy } from "./relay.js";
import { Batch, type Store } from "./store.js";
import { DeviceSession, EMPTY_PAGE_RETRIES, type PullReport, type SpaceReplica } from "./sync.js";
import { verifyTreeHead, type TreeHead } from "./treehead.js";
import { Vault } from "./vault.js";
import { DocSet } from "./ydocs.js";

/** What one {@link BrowserDevice.sync} did, for a person. */
export interface SyncSummary {
  readonly pushed: number;
  readonly applied: number;
  readonly rejected: readonly [string, string][];
  readonly skipped: number;
  readonly rotated: number;
  readonly alerts: readonly [string, string][];
  /** Per space (hex): the verified log size. */
  readonly sizes: ReadonlyMap<string, bigint>;
  /**
   * The relay's security controller lets this device pull but not push
   * (`policy_read_only`): its edits stay pending here until it is trusted again.
   */
  readonly readOnly: boolean;
  /**
   * Other accounts' spaces this account was removed from (or left): the relay
   * no longer serves them; what was synced stays readable here.
   */
  readonly unreachable: readonly Uint8Array[];
}

/** One member of a shared space as this device verified it. */
export interface MemberView {
  readonly accountId: Uint8Array;
  readonly fingerprint: string;
  readonly role: string;
  /** The account whose space it is. */
  readonly owner: boolean;
  /** This device's account. */
  readonly you: boolean;
}

/** A space as this device knows it. */
export interface SpaceView {
  readonly id: Uint8Array;
  readonly name: string;
  readonly size: bigint;
  readonly epoch: bigint | null;
  readonly docs: readonly string[];
}

/** Options of {@link BrowserDevice}. */
export interface DeviceOptions {
  readonly fetch?: typeof fetch;
  readonly clock?: () => number;
  readonly retry?: RetryPolicy;
}

interface Identity {
  readonly keys: DeviceKeys;
  readonly name: string;
  readonly account: AccountPublic;
  readonly relayUrl: string;
  readonly relayKey: Uint8Array;
}

function encodeIdentity(j: Joined): Uint8Array {
  return encode(new Map<string, CborValue>([["sign", j.keys.signing.seed], ["kx", j.keys.kx.seed], ["name", j.name],
    ["account_sign", j.account.signingKey.raw], ["account_recovery", j.account.recoveryKey], ["relay_url", j.relayUrl],
    ["relay_key", j.relayKey]]));
}

function decodeIdentity(raw: Uint8Array): Identity {
  const m = decode(raw) as Map<string, CborValue>;
  const b = (k: string): Uint8Array => m.get(k) as Uint8Array;
  return { keys: DeviceKeys.fromSeeds(b("sign"), b("kx")), name: String(m.get("name")),
    account: AccountPublic.fromKeys(b("account_sign"), b("account_recovery")), relayUrl: String(m.get("relay_url")),
    relayKey: b("relay_key") };
}

/**
 * Acknowledge progress to the relay after this many new log entries (and at
 * the first sync), as the Python client's `ACK_EVERY`: the relay prunes a
 * space's history only below every active device's acknowledgement.
 */
export const ACK_EVERY = 256;

/** Audit tree heads kept (the largest ones), as the Python client. */
export const MAX_AUDIT_HEADS = 32;

/** One space of the device: its verified replica and its Yjs documents. */
class SpaceState {
  name = "";
  /** The offset this device last acknowledged (-1: none yet). */
  acked = -1n;
  /** Another account's space the relay no longer serves to this account (removed, or left). */
  gone = false;
  constructor(readonly replica: SpaceReplica, readonly docs: DocSet) {}
}

/** A browser (or Node) device of an SDDSF account. */
export class BrowserDevice {
  readonly session: DeviceSession;
  readonly provenance: Provenance;
  private readonly spaces = new Map<string, SpaceState>();
  private live: LiveChannel | null = null;
  private syncing: Promise<SyncSummary> | null = null;
  /** Alerts found by syncs and reads (`[code, message]`), newest last. */
  readonly alerts: [string, string][] = [];

  private constructor(
    readonly store: Store,
    readonly identity: Identity,
    readonly relay: RelayClient,
    private readonly clock: () => number,
  ) {
    this.session = new DeviceSession(identity.keys, identity.account, relay,
      { clock, ...(identity.relayKey.length ? { relayKey: identity.relayKey } : {}) });
    this.provenance = new Provenance(identity.keys.deviceId, clock);
  }

  /** This device's id. */
  get deviceId(): Uint8Array {
    return this.identity.keys.deviceId;
  }

  /** This device's fingerprint (what other devices show for it). */
  get fingerprint(): string {
    return fingerprint(this.deviceId);
  }

  /**
   * Pair this browser with an account: the code (or `sddsf://pair` link) that
   * `sddsf device add` shows. The identity is stored before the
   * countersignature leaves; afterwards the registry decides.
   *
   * @param relayUrl the relay (ignored when `code` is a link, which names it).
   * @param confirm shows the words and this device's fingerprint; true if they match the other screen.
   * @throws UsageError, AuthenticationError, ConflictError, NotFoundError as
   *   {@link joinAccount}; AuthorizationError the registry does not list this
   *   device after the pairing.
   */
  static async pair(store: Store, relayUrl: string, code: string, name: string,
    confirm: (check: PairingCheck) => boolean | Promise<boolean>, opts: DeviceOptions = {}): Promise<BrowserDevice> {
    const link = parseUri(code);
    const [url, text] = link ?? [relayUrl, code];
    if (!url) throw new UsageError("give the relay URL (the relay the other device uses), or paste the sddsf://pair link");
    const relay = new RelayClient(url, { ...(opts.fetch ? { fetch: opts.fetch } : {}), ...(opts.retry ? { retry: opts.retry } : {}) });
    await joinAccount(relay, url, text, name, { confirm, pollMs: 300,
      persist: async (joined) => store.put("id", encodeIdentity(joined)) });
    const device = await BrowserDevice.open(store, opts);
    const state = await device.session.refreshRegistry();
    if (!state.isActive(device.deviceId)) {
      throw new AuthorizationError("the relay's registry does not list this device: the other device did not add it " +
        "(or it awaits approvals on an account that requires them)", Code.UNKNOWN_DEVICE);
    }
    await device.persistRegistry();
    return device;
  }

  /** Whether `store` holds a device. */
  static async exists(store: Store): Promise<boolean> {
    return (await store.get("id")) !== undefined;
  }

  /**
   * Open the device held in `store`: its identity, its registry (verified
   * again from genesis against the pinned account key), its spaces.
   */
  static async open(store: Store, opts: DeviceOptions = {}): Promise<BrowserDevice> {
    const raw = await store.get("id");
    if (raw === undefined) throw new UsageError("this browser holds no device yet: pair it first");
    const identity = decodeIdentity(raw);
    const clock = opts.clock ?? (() => Date.now());
    const relay = new RelayClient(identity.relayUrl, { device: identity.keys, accountId: identity.account.accountId, clock,
      ...(opts.fetch ? { fetch: opts.fetch } : {}), ...(opts.retry ? { retry: opts.retry } : {}) });
    const device = new BrowserDevice(store, identity, relay, clock);
    await device.load();
    return device;
  }

  private async load(): Promise<void> {
    const reg = await this.store.get("registry");
    if (reg !== undefined) this.session.restoreRegistry(decode(reg) as Uint8Array[]);
    const members = await this.store.get("members");
    if (members !== undefined) this.session.members.importState(members);
    const hlc = await this.store.get("hlc");
    if (hlc !== undefined) {
      const [wall, counter] = decode(hlc) as [number, number];
      this.session.hlc.last = new HLCTimestamp(Number(wall), Number(counter));
    }
    for (const key of await this.store.keys("space/")) {
      const id = fromHex(key.slice("space/".length));
      const row = decode((await this.store.get(key))!, { maxSize: 1 << 30, maxDepth: 16, maxItems: 1 << 24 }) as Map<string, CborValue>;
      const st = await this.spaceState(id);
      st.name = String(row.get("name") ?? "");
      const acked = row.get("acked");
      if (typeof acked === "number" || typeof acked === "bigint") st.acked = BigInt(acked);
      st.gone = row.get("gone") === true;
      const replica = row.get("replica");
      if (replica instanceof Uint8Array && this.session.entries().length) st.replica.importState(replica);
      for (const docKey of await this.store.keys(`doc/${toHex(id)}/`)) {
        st.docs.load(decodeURIComponent(docKey.split("/")[2]!), (await this.store.get(docKey))!);
      }
    }
  }

  private scope(spaceId: Uint8Array, name: string): string {
    return toHex(spaceId) + toHex(docIdFor(spaceId, name));
  }

  private async spaceState(spaceId: Uint8Array): Promise<SpaceState> {
    const k = toHex(spaceId);
    let st = this.spaces.get(k);
    if (st === undefined) {
      for (const name of ["kv", "vault"]) {
        await this.provenance.load(this.scope(spaceId, name), { load: (s) => this.store.get(`prov/${s}`), save: async () => {} });
      }
      st = new SpaceState(this.session.space(spaceId), new DocSet(this.provenance, (name) => this.scope(spaceId, name)));
      this.spaces.set(k, st);
    }
    return st;
  }

  private async persistRegistry(): Promise<void> {
    await this.store.put("registry", encode([...this.session.entries()]));
  }

  /** Write a space's replica, documents and provenance in one transaction. */
  private async persist(st: SpaceState): Promise<void> {
    const b = new Batch();
    const id = toHex(st.replica.spaceId);
    b.put(`space/${id}`, encode(new Map<string, CborValue>([["name", st.name], ["acked", st.acked], ["gone", st.gone],
      ["replica", st.replica.exportState()]])));
    for (const name of st.docs.names()) b.put(`doc/${id}/${encodeURIComponent(name)}`, Y.encodeStateAsUpdate(st.docs.doc(name)));
    await this.provenance.save({ load: async () => undefined, save: async (s, v) => void b.put(`prov/${s}`, v) });
    b.put("registry", encode([...this.session.entries()]));
    b.put("members", this.session.members.exportState());
    const last = this.session.hlc.last;
    b.put("hlc", encode([last.wallMs, last.counter]));
    await this.store.commit(b);
  }

  // ------------------------------------------------------------------- spaces

  /** The spaces this device knows, with their names (from each space's `_meta` document). */
  spaceList(): SpaceView[] {
    return [...this.spaces.values()].map((st) => ({ id: st.replica.spaceId, name: st.name, size: st.replica.size,
      epoch: st.replica.keys.size ? st.replica.currentEpoch() : null, docs: st.docs.names() }));
  }

  /** The space named `name`. */
  spaceByName(name: string): Uint8Array {
    const found = [...this.spaces.values()].filter((s) => s.name === name).map((s) => s.replica.spaceId)
      .sort((a, b) => (toHex(a) < toHex(b) ? -1 : 1));
    if (!found.length) throw new UsageError(`no space named '${name}' on this device; sync first`);
    return found[0]!;
  }

  /** A document of a space (Yjs); edits are sealed by {@link flush} or the next sync. */
  doc(spaceId: Uint8Array, name: string): Y.Doc {
    const st = this.spaces.get(toHex(spaceId));
    if (st === undefined) throw new UsageError("no such space on this device; sync first");
    return st.docs.doc(name);
  }

  /** The key-value document of a space. */
  kv(spaceId: Uint8Array): KeyValue {
    return new KeyValue(this.doc(spaceId, "kv"), this.scope(spaceId, "kv"), this.identity.keys,
      (id) => this.authorKey(spaceId, id), this.provenance, this.clock);
  }

  /**
   * The signing key of a record's author device: from this account's registry,
   * else (a space shared between people) from the verified registry of an
   * account that is or was a member of the space; undefined: no such registry
   * lists it (a record naming it is forged).
   */
  private authorKey(spaceId: Uint8Array, deviceId: Uint8Array): Ed25519PublicKey | undefined {
    const own = this.registry().device(deviceId);
    if (own !== undefined) return own.publicId.signingKey;
    const me = toHex(this.identity.account.accountId);
    for (const account of this.spaces.get(toHex(spaceId))?.replica.memberAccounts() ?? []) {
      if (account === me) continue;
      const rec = this.session.members.registryOf(fromHex(account))?.device(deviceId);
      if (rec !== undefined) return rec.publicId.signingKey;
    }
    return undefined;
  }

  /** The vault (this account's spaces named `vault`; reads as empty when there is none). */
  vault(): Vault {
    // Only this account's spaces: another account's space named "vault" (shared
    // with this one) is that person's, never merged nor written (as in Python).
    const sources = [...this.spaces.values()].filter((s) => s.name === "vault" && s.replica.ownedHere)
      .sort((a, b) => (toHex(a.replica.spaceId) < toHex(b.replica.spaceId) ? -1 : 1))
      .map((s) => [this.scope(s.replica.spaceId, "vault"), s.docs.doc("vault")] as const);
    return new Vault(sources, this.identity.keys, () => this.registry(), this.provenance, this.clock);
  }

  /** The verified registry. */
  registry(): RegistryState {
    return this.session.registry();
  }

  /**
   * Seal the local edits of every space that has keys into pending ops and
   * store them (as the Python client's `flush`): an edit survives a reload
   * before the next sync.
   */
  async flush(): Promise<number> {
    let sealed = 0;
    for (const st of this.spaces.values()) {
      if (st.replica.keys.size === 0 || st.replica.shared) continue; // keys come with the first sync; shared: read only
      for (const [name, update] of st.docs.takeLocal()) {
        sealed += st.replica.seal(name, [update]).length;
      }
      await this.persist(st);
    }
    return sealed;
  }

  // --------------------------------------------------------------------- sync

  /**
   * Push pending edits, pull and verify everything, apply (serialised: a call
   * while one runs waits for it and runs again).
   *
   * @throws SddsfError a refusal (the relay misbehaved, or this device was revoked):
   *   nothing unverified was applied or stored.
   */
  async sync(): Promise<SyncSummary> {
    while (this.syncing !== null) await this.syncing.catch(() => undefined);
    this.syncing = this.syncOnce();
    try {
      return await this.syncing;
    } finally {
      this.syncing = null;
    }
  }

  private async syncOnce(): Promise<SyncSummary> {
    // A new device reads this sync through the relay's signed first-sync
    // bundle (§17.9); every part is verified where it is used.
    await this.session.prefetchFirstSync();
    try {
      return await this.syncSteps();
    } finally {
      this.session.endPrefetch();
    }
  }

  private async syncSteps(): Promise<SyncSummary> {
    let pushed = 0;
    let applied = 0;
    let skipped = 0;
    let rotated = 0;
    const rejected: [string, string][] = [];
    const alerts: [string, string][] = [];
    let readOnly = false;
    const unreachable: Uint8Array[] = [];
    // A device the controller made read-only keeps its pending ops and only pulls.
    const unlessReadOnly = async <T>(step: () => Promise<T>, otherwise: T): Promise<T> => {
      if (readOnly) return otherwise;
      try {
        return await step();
      } catch (e) {
        if (!(e instanceof AuthorizationError) || e.code !== Code.POLICY_READ_ONLY) throw e;
        readOnly = true;
        return otherwise;
      }
    };
    const state = await this.session.refreshRegistry();
    if (!state.isActive(this.deviceId)) {
      throw new AuthorizationError(state.device(this.deviceId) ? "this device has been revoked"
        : "this device is not in the account's registry; pair it again", state.device(this.deviceId) ? Code.REVOKED : Code.UNKNOWN_DEVICE);
    }
    await this.session.pinRelay();
    await this.persistRegistry();
    for (const id of await this.session.listSpaces()) await this.spaceState(id);
    for (const st of this.spaces.values()) {
      const r = st.replica;
      if (st.gone) {
        unreachable.push(r.spaceId);
        continue;
      }
      try {
        await r.refreshKeys();
      } catch (e) {
        if (!(e instanceof NotFoundError) || r.ownedHere) throw e;
        // Removed from another account's space (or it left): what it synced
        // stays readable here; nothing more is pulled or pushed.
        st.gone = true;
        await this.persist(st);
        unreachable.push(r.spaceId);
        continue;
      }
      if (await unlessReadOnly(() => r.rotateIfDue(), false)) rotated += 1;
      for (const [name, update] of st.docs.takeLocal()) {
        if (r.keys.size && !r.shared) r.seal(name, [update]);
        else st.docs.restoreLocal(name, update); // no key yet, or a shared space (read only here): kept
      }
      await this.persist(st); // pending ops are stored before they are sent
      const push = await unlessReadOnly(() => r.push(), { pushed: 0, rejected: [], requeued: [] });
      pushed += push.pushed;
      rejected.push(...push.rejected);
      const report = await r.pull();
      this.apply(st, report);
      applied += report.applied.length;
      skipped += report.skipped.length;
      alerts.push(...report.alerts);
      if (push.requeued.length) { // edits to seal again on top of what the log holds
        for (const edit of push.requeued) r.seal(edit.name, edit.updates);
        await this.persist(st);
        const again = await unlessReadOnly(() => r.push(), { pushed: 0, rejected: [], requeued: [] });
        pushed += again.pushed;
        rejected.push(...again.rejected);
        const more = await r.pull();
        this.apply(st, more);
        applied += more.applied.length;
      }
      await this.persist(st);
    }
    // Acknowledged once every space was read: a write ends the first-sync bundle's use.
    for (const st of this.spaces.values()) await this.acknowledge(st);
    this.alerts.push(...alerts);
    const sizes = new Map([...this.spaces].map(([k, st]) => [k, st.replica.size]));
    return { pushed, applied, rejected, skipped, rotated, alerts, sizes, readOnly, unreachable };
  }

  // ------------------------------------------------------------ shared spaces

  /**
   * Hold another account's space, shared with this one, and sync: the owner's
   * account key (signing and recovery key, as `sddsf account fingerprint`
   * shows them compared by the people, or from an account code) is pinned
   * here and never taken from the relay (as `sharing.join`).
   *
   * @param name the space's name until its `_meta` document names it.
   * @throws UsageError the space is held already, or this account's own;
   *   ProofError the owner's key differs from one pinned before, or the relay
   *   names another owner; NotFoundError the space is not shared with this account.
   */
  async joinSpace(spaceId: Uint8Array, ownerAccountKey: Uint8Array, ownerRecoveryKey: Uint8Array,
    name = ""): Promise<SyncSummary> {
    while (this.syncing !== null) await this.syncing.catch(() => undefined);
    const owner = AccountPublic.fromKeys(ownerAccountKey, ownerRecoveryKey);
    await this.session.joinSpace(spaceId, owner);
    const st = await this.spaceState(spaceId);
    st.name = name;
    await this.persist(st);
    return this.sync();
  }

  /** Other accounts' spaces the relay says are shared with this account, not joined here (unverified, to offer a join). */
  async sharedWithMe(): Promise<{ id: Uint8Array; owner: Uint8Array }[]> {
    return (await this.session.sharedWithMe()).map((s) => ({ id: s.spaceId, owner: s.owner! }));
  }

  /** The members of a shared space as this device verified them (empty: not shared). */
  members(spaceId: Uint8Array): MemberView[] {
    const st = this.spaces.get(toHex(spaceId));
    if (st === undefined) throw new UsageError("no such space on this device; sync first");
    const owner = toHex(st.replica.ownerId());
    const me = toHex(this.identity.account.accountId);
    return [...st.replica.membership().members].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([a, m]) => ({ accountId: fromHex(a), fingerprint: fingerprint(fromHex(a)), role: m.role, owner: a === owner,
        you: a === me }));
  }

  private async acknowledge(st: SpaceState): Promise<void> {
    // Everything up to the verified size is applied and stored: say so, now
    // and then, so that the relay can prune under a corroborated snapshot.
    const last = st.replica.size - 1n;
    if (st.gone || last < 0n || (st.acked >= 0n && last - st.acked < BigInt(ACK_EVERY))) return;
    await this.relay.acknowledge(st.replica.spaceId, Number(last));
    st.acked = last;
    await this.persist(st);
  }

  /** The offset this device last acknowledged in a space (-1: none). */
  acknowledged(spaceId: Uint8Array): bigint {
    return this.spaces.get(toHex(spaceId))?.acked ?? -1n;
  }

  private apply(st: SpaceState, report: PullReport): void {
    if (report.snapshot !== null) {
      try {
        st.docs.applySnapshot(report.snapshot);
      } catch (e) {
        // Signed by a device of the account, yet not Yjs state: never use it again.
        st.replica.distrustSnapshot(report.snapshot.id);
        throw new ProofError(`the snapshot of space ${toHex(st.replica.spaceId).slice(0, 12)} is unreadable (${String(e)})`);
      }
    }
    st.docs.applyVerified(report.applied);
    const name = st.docs.names().includes("_meta") ? st.docs.doc("_meta").getMap("meta").get("name") : undefined;
    if (typeof name === "string" && name) st.name = name;
  }

  // --------------------------------------------------------------- controller

  /** The account's devices with trust score, access and factors, as the relay's controller says (unverified). */
  async devicesTrust(): Promise<DeviceTrust[]> {
    return parseDevices(await this.relay.controllerDevices());
  }

  /** The account's alerts, as the relay's controller says (unverified); `all`: acknowledged ones too. */
  async controllerAlerts(all = false): Promise<ControllerAlert[]> {
    return parseAlerts(await this.relay.controllerAlerts(all));
  }

  private async storedAuditHeads(key: Uint8Array | null): Promise<TreeHead[]> {
    const raw = await this.store.get("audit/heads");
    if (raw === undefined || key === null) return [];
    const heads = decode(raw);
    if (!isByteList(heads)) throw new ProofError("this device's stored audit heads are unreadable");
    const pinned = this.session.relayKey!;
    return heads.map((h) => verifyTreeHead(h, pinned, auditLogId(this.identity.account.accountId)));
  }

  /**
   * Fetch and verify the account's audit log (as the Python client's
   * `verify_audit`): every entry against the relay's signed head, every head
   * this device verified before still a prefix, consistent growth, every
   * device report's signature; then keep the new head.
   *
   * @throws ProofError `log_rollback` or `proof_invalid` when the relay
   *   dropped, rewrote or reordered an event or signed heads of a forked log;
   *   `tree_head_invalid` for a head not signed by the pinned relay key.
   */
  async verifyAudit(page = 1000): Promise<AuditCheck> {
    const state = await this.session.refreshRegistry();
    const key = await this.session.pinRelay();
    const log = auditLogId(this.identity.account.accountId);
    const entries: Uint8Array[] = [];
    let head: TreeHead | null = null;
    let empty = 0; // empty pages in a row under a head beyond the entries (protocol 17.6)
    for (let i = 0; i < 10_000; i++) {
      const [rows, headRaw] = parseAuditPage(await this.relay.auditPage(entries.length, page));
      for (const [seq, raw] of rows) {
        if (seq !== entries.length) throw new ProofError(`the relay served audit entry ${seq} where ${entries.length} was expected`);
        entries.push(raw);
      }
      head = verifyTreeHead(headRaw, key, log);
      if (BigInt(entries.length) >= head.size) break;
      empty = rows.length === 0 ? empty + 1 : 0;
      if (empty > EMPTY_PAGE_RETRIES) break; // a relay hiding entries: verifyAuditLog refuses the short log
    }
    if (head === null) throw new ProofError("the relay served no audit tree head");
    const all = entries.slice(0, Number(head.size));
    const stored = await this.storedAuditHeads(key.raw);
    let proof: Uint8Array[] = [];
    const latest = stored.reduce<TreeHead | null>((a, h) => (a === null || h.size > a.size ? h : a), null);
    if (latest !== null && latest.size > 0n && latest.size < head.size) {
      const [p, proofHead] = await this.relay.auditConsistency(Number(latest.size), Number(head.size));
      if (!bytesEqual(verifyTreeHead(proofHead, key, log).root, head.root)) {
        throw new ProofError("the relay signed two different audit logs of one size");
      }
      proof = p;
    }
    const [decoded] = verifyAuditLog(all, head, stored, state, proof);
    const keep = [...stored.filter((h) => toHex(h.raw) !== toHex(head!.raw)), head]
      .sort((a, b) => (a.size < b.size ? -1 : a.size > b.size ? 1 : 0)).slice(-MAX_AUDIT_HEADS);
    await this.store.put("audit/heads", encode(keep.map((h) => h.raw)));
    return { entries: decoded, head, headsChecked: stored.length };
  }

  // ------------------------------------------------------------------ status

  /** Whether the live channel is open now. */
  get connected(): boolean {
    return this.live !== null;
  }

  /** Local edits not yet in the relay's log: sealed pending ops and held edits, plus unsealed Yjs edits. */
  pending(): number {
    let n = 0;
    for (const st of this.spaces.values()) n += st.replica.unsentCount() + st.docs.localCount();
    return n;
  }

  /** The verified tree head of a space (null before its first verified pull). */
  treeHead(spaceId: Uint8Array): TreeHead | null {
    return this.spaces.get(toHex(spaceId))?.replica.head ?? null;
  }

  // --------------------------------------------------------------------- live

  /**
   * Open the live channel and sync whenever the relay announces an op of one
   * of this device's spaces (a hint only: everything is verified by the pull).
   * `onSync` hears each result (or the error that stopped a sync).
   */
  async watch(onSync: (result: SyncSummary | SddsfError) => void, signal?: AbortSignal): Promise<void> {
    const live = await LiveChannel.open(this.relay);
    this.live = live;
    const subscribed = new Set<string>();
    const subscribe = (): void => { // spaces a sync found since are watched too
      for (const [k, st] of this.spaces) {
        if (!subscribed.has(k)) live.subscribe(st.replica.spaceId);
        subscribed.add(k);
      }
    };
    subscribe();
    const run = async (): Promise<void> => {
      try {
        onSync(await this.sync());
      } catch (e) {
        if (e instanceof SddsfError) onSync(e);
        else throw e;
      }
      subscribe();
    };
    try {
      for (;;) {
        const m: LiveMessage | null = await live.next(signal);
        if (m === null) return;
        if (m.type === "op" || m.type === "resync") await run();
      }
    } finally {
      live.close();
      this.live = null;
    }
  }

  /** Close the live channel. */
  close(): void {
    this.live?.close();
    this.store.backend.close();
  }
}
