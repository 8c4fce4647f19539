/**
 * Typed HTTP client of the relay API (docs/protocol.md §17; mirrors
 * `sddsf.client.relay_client`), over `fetch`, for browsers and Node.
 *
 * It opens sessions (signed challenge, §17.3.1), signs every mutating request
 * with a fresh nonce and timestamp (§17.3.2), and turns every `{code,
 * message}` error body back into the typed error ({@link errorFromWire}). A
 * connection failure is an {@link UnavailableError}.
 *
 * It trusts nothing it receives: callers verify registries, key packages,
 * tree heads and proofs with the protocol modules (see `./sync.js`).
 *
 * A new device's first sync may read through one signed first-sync bundle
 * (`GET /v1/bootstrap`, §17.9; {@link RelayClient.prefetchFirstSync}): while
 * it is held, the registry, spaces, key packages, snapshots, attestations,
 * chunks and pages of the log it holds are answered from it, with the bytes
 * the endpoints would have served, until {@link RelayClient.endPrefetch} or
 * any write.
 */

import { BOOTSTRAP_FEATURE, BOOTSTRAP_NONCE_SIZE, Prefetched, verifyBootstrap } from "./bootstrap.js";
import { b64, toHex, unb64 } from "./bytes.js";
import { randomBytes, type Ed25519PublicKey } from "./crypto.js";
import { AuthenticationError, Code, DecodeError, errorFromWire, NotFoundError, RateLimitedError,
  UnavailableError } from "./errors.js";
import { AccountKeys, type DeviceKeys } from "./identity.js";
import { keyRequestMessage, NONCE_SIZE, requestMessage, sessionMessage, tokenHash } from "./auth.js";

/** The pairing protocol version this client speaks (§19). */
export const PAIRING_VERSION = 2;

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

/** One op's result from the relay (unverified: check the proof yourself). */
export interface UploadResult {
  readonly status: "accepted" | "duplicate" | "rejected";
  readonly offset: number | null;
  readonly opId: Uint8Array | null;
  readonly proof: Uint8Array[] | null;
  readonly code: string | null;
  readonly message: string | null;
}

/** One op of the log (`envelope` null once pruned). */
export interface PulledOp {
  readonly offset: number;
  readonly opId: Uint8Array;
  readonly leafHash: Uint8Array;
  readonly envelope: Uint8Array | null;
}

/** A space as the relay lists it (unverified). */
export interface SpaceInfo {
  readonly spaceId: Uint8Array;
  readonly size: number;
  readonly root: Uint8Array;
  readonly epoch: number;
  /** The account whose space it is (null from a relay, or a first-sync bundle, that does not say). */
  readonly owner: Uint8Array | null;
}

/**
 * A space's membership entries as the relay lists them (`GET
 * /v1/spaces/{id}/members`, §17.4.13; unverified: fold the entries, and
 * check each against the log at its offset).
 */
export interface MembershipLog {
  /** `[log offset, entry bytes]`, in log order. */
  readonly entries: readonly (readonly [number, Uint8Array])[];
  /** The relay's member set: account id (hex) → role. */
  readonly members: ReadonlyMap<string, string>;
  /** The account that created the space. */
  readonly owner: Uint8Array;
  readonly treeHead: Uint8Array;
}

/**
 * What one relay request may carry (`GET /v1/limits`; the defaults of a relay
 * that predates the endpoint).
 */
export interface RelayLimits {
  readonly maxRequestBytes: number;
  readonly maxBatchOps: number;
  readonly maxPageOps: number;
  readonly maxOp: number;
  /** base64 characters in one body field. */
  readonly maxFieldChars: number;
}

/** The limits of a relay without `GET /v1/limits`. */
export const DEFAULT_RELAY_LIMITS: RelayLimits = Object.freeze({
  maxRequestBytes: 1 << 20, maxBatchOps: 1000, maxPageOps: 1000, maxOp: 512 * 1024, maxFieldChars: 1_500_000,
});

const b64Len = (n: number): number => Math.floor((n + 2) / 3) * 4;
/** `{"ops": ["...", ...], "proofs": true}`: 27 bytes of frame, then per op its base64 in quotes and a separator. */
const uploadBodyLen = (sizes: readonly number[]): number => 27 + sizes.reduce((a, n) => a + b64Len(n) + 4, 0);

/** Whether an upload of envelopes of these sizes fits one request of a relay with `limits`. */
export function requestFits(limits: RelayLimits, sizes: readonly number[]): boolean {
  return sizes.length <= limits.maxBatchOps && sizes.every((n) => b64Len(n) <= limits.maxFieldChars) &&
    uploadBodyLen(sizes) <= limits.maxRequestBytes;
}

/** The largest op envelope a relay with `limits` takes, alone in one request. */
export function maxEnvelope(limits: RelayLimits): number {
  const fitRequest = Math.floor((limits.maxRequestBytes - uploadBodyLen([])) / 4) * 3 - 3;
  const fitField = Math.floor(limits.maxFieldChars / 4) * 3;
  return Math.max(0, Math.min(limits.maxOp, fitRequest, fitField));
}

/**
 * When to try a request again (mirrors `sddsf.client.retry.RetryPolicy`):
 * `rate_limited` after the relay's Retry-After, `unavailable` and connection
 * failures with exponential backoff (idempotent requests only); nothing else.
 */
export interface RetryPolicy {
  /** Tries of one request, the first included (1: never retry). */
  readonly attempts: number;
  /** Most seconds one request may spend waiting between tries. */
  readonly budgetS: number;
  readonly baseS: number;
  readonly maxS: number;
}

/** The default retry policy (as the Python client's). */
export const DEFAULT_RETRY: RetryPolicy = Object.freeze({ attempts: 4, budgetS: 30, baseS: 0.25, maxS: 8 });

/** Options of a {@link RelayClient}. */
export interface RelayClientOptions {
  /** The device that authenticates (needed for session endpoints). */
  readonly device?: DeviceKeys;
  /** The account of that device. */
  readonly accountId?: Uint8Array;
  /** The device's clock in ms (signed requests carry it). */
  readonly clock?: () => number;
  /** The fetch implementation (default: the global one). */
  readonly fetch?: typeof fetch;
  /** When to retry (default {@link DEFAULT_RETRY}; `{attempts: 1, ...}` never retries). */
  readonly retry?: RetryPolicy;
  /** How a retry waits (tests replace it). */
  readonly sleep?: (seconds: number) => Promise<void>;
}

interface SendOptions {
  readonly body?: Json;
  readonly params?: Record<string, string | number>;
  readonly signed?: boolean;
  readonly authed?: boolean;
  /** Without a session: signed by a key the account's registry knows (§17.3.3). */
  readonly key?: DeviceKeys | AccountKeys;
  readonly headers?: Record<string, string>;
  /** Whether repeating the request after an unknown outcome is safe (default true). */
  readonly idempotent?: boolean;
}

/** A device's connection to one relay. */
export class RelayClient {
  readonly baseUrl: string;
  /** The relay's tree-head key, as it stated it when this client opened a session (unpinned). */
  relayId: Uint8Array | null = null;
  /** The optional features the relay listed at the last session opening (empty for a relay that predates the list). */
  features: ReadonlySet<string> = new Set();
  /** The first-sync bundle answering reads (see {@link prefetchFirstSync}). */
  private prefetched: Prefetched | null = null;
  private readonly device: DeviceKeys | undefined;
  private readonly accountId: Uint8Array | undefined;
  private readonly clock: () => number;
  private readonly fetchImpl: typeof fetch;
  private token: Uint8Array | null = null;
  private tokenExpiresMs = 0;
  private limitsCache: RelayLimits | null = null;
  readonly retry: RetryPolicy;
  private readonly sleep: (seconds: number) => Promise<void>;

  constructor(baseUrl: string, opts: RelayClientOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.device = opts.device;
    this.accountId = opts.accountId;
    this.clock = opts.clock ?? (() => Date.now());
    this.fetchImpl = opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.retry = opts.retry ?? DEFAULT_RETRY;
    this.sleep = opts.sleep ?? ((s) => new Promise((r) => setTimeout(r, s * 1000)));
  }

  /** Drop the cached session (the next call opens a new one). */
  forgetSession(): void {
    this.token = null;
  }

  // ------------------------------------------------------------- plumbing

  private async send(method: string, path: string, opts: SendOptions = {}): Promise<Json> {
    // Every relay write is idempotent (§17.2) except the few callers that say
    // otherwise; each try is signed again with a fresh nonce.
    let waited = 0;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.sendRetryingSession(method, path, opts);
      } catch (e) {
        const wait = this.waitFor(e, attempt, opts.idempotent ?? true);
        if (wait === null || attempt >= this.retry.attempts || waited + wait > this.retry.budgetS) throw e;
        await this.sleep(wait);
        waited += wait;
      }
    }
  }

  private waitFor(e: unknown, attempt: number, idempotent: boolean): number | null {
    if (e instanceof RateLimitedError) return e.retryAfterS * (1 + Math.random() * 0.1);
    if (e instanceof UnavailableError && idempotent) {
      const raw = Math.min(this.retry.maxS, this.retry.baseS * 2 ** Math.max(0, attempt - 1));
      return raw * (0.5 + Math.random());
    }
    return null;
  }

  private async sendRetryingSession(method: string, path: string, opts: SendOptions): Promise<Json> {
    try {
      return await this.sendOnce(method, path, opts);
    } catch (e) {
      // The relay forgot our session (restart, or another node): open a new
      // one and retry once; a signed request is re-signed with a fresh nonce.
      if (!(e instanceof AuthenticationError) || e.code !== Code.UNAUTHENTICATED || !(opts.authed || opts.signed) ||
        this.token === null) {
        throw e;
      }
      this.forgetSession();
      return await this.sendOnce(method, path, opts);
    }
  }

  private async sendOnce(method: string, path: string, opts: SendOptions): Promise<Json> {
    const content = opts.body !== undefined ? new TextEncoder().encode(JSON.stringify(opts.body)) : new Uint8Array(0);
    const headers: Record<string, string> = opts.body !== undefined ? { "content-type": "application/json" } : {};
    Object.assign(headers, opts.headers ?? {});
    const query = opts.params ? new URLSearchParams(Object.entries(opts.params).map(([k, v]) => [k, String(v)])).toString() : "";
    const target = query ? `${path}?${query}` : path;
    if (opts.key !== undefined) {
      // No session: signed by a key the account's registry knows (§17.3.3).
      const k = opts.key;
      const keyId = k instanceof AccountKeys ? k.accountId : k.deviceId;
      const nonce = randomBytes(NONCE_SIZE);
      const ts = this.clock();
      const sig = k.sign(keyRequestMessage(method, target, content, nonce, ts, keyId));
      Object.assign(headers, { "x-sddsf-key-id": b64(keyId), "x-sddsf-nonce": b64(nonce),
        "x-sddsf-timestamp": String(ts), "x-sddsf-signature": b64(sig) });
    }
    if (opts.authed || opts.signed) {
      const token = await this.sessionToken();
      headers.authorization = `Bearer ${b64(token)}`;
      if (opts.signed && this.device !== undefined) {
        const nonce = randomBytes(NONCE_SIZE);
        const ts = this.clock();
        const sig = this.device.sign(requestMessage(method, target, content, nonce, ts, tokenHash(token)));
        headers["x-sddsf-nonce"] = b64(nonce);
        headers["x-sddsf-timestamp"] = String(ts);
        headers["x-sddsf-signature"] = b64(sig);
      }
    }
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.baseUrl}${target}`, {
        method, headers, body: opts.body !== undefined ? content : undefined,
      });
    } catch (e) {
      throw new UnavailableError(`cannot reach the relay at ${this.baseUrl}: ${(e as Error).message}`);
    }
    const text = await response.text();
    if (response.status >= 400) {
      let err: Json;
      try {
        err = JSON.parse(text);
      } catch {
        throw new UnavailableError(`relay answered HTTP ${response.status} without an error body`);
      }
      if (typeof err?.code !== "string" || typeof err?.message !== "string") {
        throw new UnavailableError(`relay answered HTTP ${response.status} without an error body`);
      }
      const typed = errorFromWire(err.code, err.message);
      const retry = Number(response.headers.get("retry-after"));
      if (typed instanceof RateLimitedError && retry > 0) typed.retryAfterS = retry;
      throw typed;
    }
    try {
      return JSON.parse(text);
    } catch {
      throw new DecodeError("relay sent a response that is not JSON");
    }
  }

  private async sessionToken(): Promise<Uint8Array> {
    if (this.token !== null && this.clock() < this.tokenExpiresMs - 30_000) return this.token;
    if (this.device === undefined || this.accountId === undefined) {
      throw new UnavailableError("this client has no device identity to authenticate with");
    }
    let s: Json;
    try {
      s = await this.openSessionWith(this.device, this.accountId);
    } catch (e) {
      // The challenge was refused (it expired on the way, or a node with a
      // skewed clock answered): once more with a new one (§17.3.1).
      if (!(e instanceof AuthenticationError) || e.code !== Code.UNAUTHENTICATED) throw e;
      s = await this.openSessionWith(this.device, this.accountId);
    }
    this.token = unb64(s.token, "token", 32);
    this.tokenExpiresMs = Number(s.expires_ms);
    this.features = new Set(Array.isArray(s.features) ? s.features.filter((f: unknown) => typeof f === "string") : []);
    return this.token;
  }

  private async openSessionWith(device: DeviceKeys, accountId: Uint8Array): Promise<Json> {
    const ids = { account_id: b64(accountId), device_id: b64(device.deviceId) };
    const ch = await this.send("POST", "/v1/auth/challenge", { body: ids });
    const challenge = unb64(ch.challenge, "challenge", 32);
    const relayId = unb64(ch.relay_id, "relay_id", 32);
    this.relayId = relayId;
    const sig = device.sign(sessionMessage(relayId, accountId, device.deviceId, challenge));
    return await this.send("POST", "/v1/auth/session", { body: { ...ids, challenge: b64(challenge), signature: b64(sig) } });
  }

  /**
   * The relay's request limits (`GET /v1/limits`), asked once per client; a
   * relay without the endpoint has {@link DEFAULT_RELAY_LIMITS}.
   */
  async limits(): Promise<RelayLimits> {
    if (this.limitsCache === null) {
      try {
        const r = await this.send("GET", "/v1/limits");
        const n = (x: unknown): number => {
          if (typeof x !== "number" || !Number.isSafeInteger(x) || x < 0) throw new DecodeError("the relay sent malformed limits");
          return x;
        };
        this.limitsCache = { maxRequestBytes: n(r.max_request_bytes), maxBatchOps: n(r.max_batch_ops),
          maxPageOps: n(r.max_page_ops), maxOp: n(r.max_op), maxFieldChars: n(r.max_field_chars) };
      } catch (e) {
        if (!(e instanceof NotFoundError)) throw e;
        this.limitsCache = DEFAULT_RELAY_LIMITS;
      }
    }
    return this.limitsCache;
  }

  /** Open a session now (if none is open) and return the relay's stated key. */
  async openSession(): Promise<Uint8Array> {
    await this.sessionToken();
    return this.relayId!;
  }

  // ------------------------------------------------- first-sync bundle (§17.9)

  /** The signed first-sync bundle for `nonce` (`GET /v1/bootstrap`; verify it, then every component). */
  async bootstrap(nonce: Uint8Array): Promise<Uint8Array> {
    const r = await this.send("GET", "/v1/bootstrap", { authed: true, params: { nonce: b64(nonce) } });
    return unb64(r.bundle, "bundle");
  }

  /**
   * Read a new device's first sync in one request: when the session lists
   * the `bootstrap` feature, fetch a bundle for a fresh nonce, check its
   * signature under `relayKey` (the pinned key) and its binding to this
   * request, and answer the reads it holds from it until {@link endPrefetch}
   * or any write. Returns false (the reads go to their endpoints) for a relay
   * without the feature or a node answering 404.
   *
   * @throws ProofError `tree_head_invalid` for a bundle altered on the way or
   *   answering another request (nothing of it is used); DecodeError a
   *   malformed one; the session's errors.
   */
  async prefetchFirstSync(relayKey: Ed25519PublicKey): Promise<boolean> {
    this.prefetched = null;
    await this.sessionToken();
    if (!this.features.has(BOOTSTRAP_FEATURE) || this.device === undefined || this.accountId === undefined) return false;
    const nonce = randomBytes(BOOTSTRAP_NONCE_SIZE);
    let raw: Uint8Array;
    try {
      raw = await this.bootstrap(nonce);
    } catch (e) {
      if (e instanceof NotFoundError) return false; // a node without the endpoint (mid-upgrade)
      throw e;
    }
    this.prefetched = new Prefetched(verifyBootstrap(raw, relayKey,
      { account: this.accountId, device: this.device.deviceId, nonce }));
    return true;
  }

  /** Whether a first-sync bundle answers reads now. */
  get prefetching(): boolean {
    return this.prefetched !== null;
  }

  /** Stop answering reads from the first-sync bundle. */
  endPrefetch(): void {
    this.prefetched = null;
  }

  private wrote(): void {
    // A write may change what the relay holds: every later read asks it.
    this.prefetched = null;
  }

  // -------------------------------------------------------------- registry

  /** Upload a genesis entry; returns the account id (idempotent). */
  async createAccount(genesis: Uint8Array): Promise<Uint8Array> {
    const r = await this.send("POST", "/v1/accounts", { body: { genesis: b64(genesis) } });
    return unb64(r.account_id, "account_id", 32);
  }

  /**
   * Registry entries from `since` (verify them!). The read is signed by
   * `signer`, by default this client's device (no session needed, so a device
   * awaiting approval can read it); a device recovering with the account
   * secret passes the account keys (§17.3.3).
   */
  async registry(accountId: Uint8Array, since = 0, signer?: DeviceKeys | AccountKeys): Promise<Uint8Array[]> {
    const held = this.prefetched?.registry(accountId, since);
    if (held) return held;
    const own = this.accountId !== undefined && b64(accountId) === b64(this.accountId);
    const key = signer ?? (own ? this.device : undefined);
    // Another account's registry: with this device's session, as a member of
    // a space shared with it (§17.3.4, §21.7).
    const authed = key === undefined && this.device !== undefined && this.accountId !== undefined;
    const r = await this.send("GET", `/v1/accounts/${b64(accountId)}/registry`, { params: { since }, key, authed });
    return (r.entries as string[]).map((e) => unb64(e, "registry entry"));
  }

  /** Append a signed entry; returns the next seq. */
  async appendRegistry(accountId: Uint8Array, entry: Uint8Array): Promise<number> {
    this.wrote();
    const r = await this.send("POST", `/v1/accounts/${b64(accountId)}/registry`, { body: { entry: b64(entry) } });
    return Number(r.next_seq);
  }

  // ---------------------------------------------------------------- spaces

  private static space(x: Json): SpaceInfo {
    return { spaceId: unb64(x.space_id, "space_id", 16), size: Number(x.size), root: unb64(x.root, "root", 32),
      epoch: Number(x.epoch), owner: typeof x.owner === "string" ? unb64(x.owner, "owner", 32) : null };
  }

  /** Create a space with its epoch-0 key package. */
  async createSpace(spaceId: Uint8Array, keyPackage: Uint8Array): Promise<SpaceInfo> {
    this.wrote();
    return RelayClient.space(await this.send("POST", "/v1/spaces", { signed: true,
      body: { space_id: b64(spaceId), key_package: b64(keyPackage) } }));
  }

  /** The account's spaces. */
  async listSpaces(): Promise<SpaceInfo[]> {
    if (this.prefetched) return this.prefetched.listSpaces();
    const r = await this.send("GET", "/v1/spaces", { authed: true });
    return (r.spaces as Json[]).map(RelayClient.space);
  }

  /**
   * Every membership entry of the space with its log offset, the relay's
   * member set, the owner account and the current tree head (§17.4.13; verify
   * before use).
   */
  async membership(spaceId: Uint8Array): Promise<MembershipLog> {
    const r = await this.send("GET", `/v1/spaces/${b64(spaceId)}/members`, { authed: true });
    return {
      entries: (r.entries as Json[]).map((e) => [Number(e.offset), unb64(e.entry, "membership entry")] as const),
      members: new Map((r.members as Json[]).map((m) => [toHex(unb64(m.account_id, "account_id", 32)), String(m.role)])),
      owner: unb64(r.owner, "owner", 32), treeHead: unb64(r.tree_head.tree_head, "tree_head"),
    };
  }

  /**
   * The genesis registry entry of the account whose fingerprint is `prefix`
   * (20 bytes; §17.4.13; unverified: verify it and check that its id starts
   * with them).
   */
  async accountByFingerprint(prefix: Uint8Array): Promise<Uint8Array> {
    const r = await this.send("GET", `/v1/accounts/by-fingerprint/${b64(prefix)}`, { authed: true });
    if (typeof r?.genesis !== "string") throw new DecodeError("the relay sent no genesis entry");
    return unb64(r.genesis, "genesis");
  }

  /** Open the next epoch. */
  async putKeyPackage(spaceId: Uint8Array, keyPackage: Uint8Array): Promise<SpaceInfo> {
    this.wrote();
    return RelayClient.space(await this.send("POST", `/v1/spaces/${b64(spaceId)}/keys`, { signed: true,
      body: { key_package: b64(keyPackage) } }));
  }

  /** Key packages from `sinceEpoch`. */
  async keyPackages(spaceId: Uint8Array, sinceEpoch = 0): Promise<Uint8Array[]> {
    const held = this.prefetched?.keyPackages(spaceId, sinceEpoch);
    if (held) return held;
    const r = await this.send("GET", `/v1/spaces/${b64(spaceId)}/keys`, { authed: true, params: { since_epoch: sinceEpoch } });
    return (r.key_packages as string[]).map((p) => unb64(p, "key package"));
  }

  /** Upload a batch; returns per-op results and the signed tree head bytes. */
  async upload(spaceId: Uint8Array, envelopes: readonly Uint8Array[], proofs = true): Promise<[UploadResult[], Uint8Array]> {
    this.wrote();
    const r = await this.send("POST", `/v1/spaces/${b64(spaceId)}/ops`, { signed: true,
      body: { ops: envelopes.map(b64), proofs } });
    const results: UploadResult[] = (r.results as Json[]).map((x) => ({
      status: x.status, offset: x.offset ?? null, opId: x.op_id ? unb64(x.op_id, "op_id", 32) : null,
      proof: x.proof != null ? (x.proof as string[]).map((p) => unb64(p, "proof", 32)) : null,
      code: x.code ?? null, message: x.message ?? null,
    }));
    return [results, unb64(r.tree_head.tree_head, "tree_head")];
  }

  /** One page of ops after `after` and the current signed tree head bytes. */
  async pull(spaceId: Uint8Array, after = -1, limit = 500): Promise<[PulledOp[], Uint8Array]> {
    const held = this.prefetched?.pull(spaceId, after, limit);
    if (held) return held;
    const r = await this.send("GET", `/v1/spaces/${b64(spaceId)}/ops`, { authed: true, params: { after, limit } });
    const ops: PulledOp[] = (r.ops as Json[]).map((o) => ({
      offset: Number(o.offset), opId: unb64(o.op_id, "op_id", 32), leafHash: unb64(o.leaf_hash, "leaf_hash", 32),
      envelope: o.envelope !== null ? unb64(o.envelope, "envelope") : null,
    }));
    return [ops, unb64(r.tree_head.tree_head, "tree_head")];
  }

  /** The current signed tree head bytes. */
  async treeHead(spaceId: Uint8Array): Promise<Uint8Array> {
    const r = await this.send("GET", `/v1/spaces/${b64(spaceId)}/tree-head`, { authed: true });
    return unb64(r.tree_head, "tree_head");
  }

  /** Inclusion proof and the signed head it is relative to. */
  async inclusionProof(spaceId: Uint8Array, index: number, size?: number): Promise<[Uint8Array[], Uint8Array]> {
    const params: Record<string, number> = { index };
    if (size !== undefined) params.size = size;
    const r = await this.send("GET", `/v1/spaces/${b64(spaceId)}/proofs/inclusion`, { authed: true, params });
    return [(r.proof as string[]).map((p) => unb64(p, "proof", 32)), unb64(r.tree_head.tree_head, "tree_head")];
  }

  /** Consistency proof and the signed head of `second`. */
  async consistencyProof(spaceId: Uint8Array, first: number, second?: number): Promise<[Uint8Array[], Uint8Array]> {
    const params: Record<string, number> = { first };
    if (second !== undefined) params.second = second;
    const r = await this.send("GET", `/v1/spaces/${b64(spaceId)}/proofs/consistency`, { authed: true, params });
    return [(r.proof as string[]).map((p) => unb64(p, "proof", 32)), unb64(r.tree_head.tree_head, "tree_head")];
  }

  /** Tell the relay this device applied every op up to `offset`: `[stored ack, pruned before]`. */
  async acknowledge(spaceId: Uint8Array, offset: number): Promise<[number, number]> {
    this.wrote();
    const r = await this.send("POST", `/v1/spaces/${b64(spaceId)}/ack`, { signed: true, body: { offset } });
    return [Number(r.acked), Number(r.pruned_before)];
  }

  /** Store a signed encrypted snapshot; returns the stored cover offset. */
  async putSnapshot(spaceId: Uint8Array, docId: Uint8Array, coversOffset: number, blob: Uint8Array): Promise<number> {
    this.wrote();
    const r = await this.send("PUT", `/v1/spaces/${b64(spaceId)}/docs/${b64(docId)}/snapshot`, { signed: true,
      body: { covers_offset: coversOffset, blob: b64(blob) } });
    return Number(r.covers_offset);
  }

  /** A doc's snapshot `[covers_offset, blob]` (NotFoundError when none). */
  async getSnapshot(spaceId: Uint8Array, docId: Uint8Array): Promise<[number, Uint8Array]> {
    const held = this.prefetched?.snapshot(spaceId, docId);
    if (held) return held;
    const r = await this.send("GET", `/v1/spaces/${b64(spaceId)}/docs/${b64(docId)}/snapshot`, { authed: true });
    return [Number(r.covers_offset), unb64(r.blob, "blob")];
  }

  /** Store one chunk of a chunked snapshot (upload every chunk, then the manifest). */
  async putSnapshotChunk(spaceId: Uint8Array, chunkId: Uint8Array, blob: Uint8Array): Promise<void> {
    this.wrote();
    await this.send("PUT", `/v1/spaces/${b64(spaceId)}/snapshot-chunks/${b64(chunkId)}`, { signed: true,
      body: { blob: b64(blob) } });
  }

  /** One chunk of a chunked snapshot (check it against its manifest). */
  async getSnapshotChunk(spaceId: Uint8Array, chunkId: Uint8Array): Promise<Uint8Array> {
    const held = this.prefetched?.chunk(spaceId, chunkId);
    if (held) return held;
    const r = await this.send("GET", `/v1/spaces/${b64(spaceId)}/snapshot-chunks/${b64(chunkId)}`, { authed: true });
    return unb64(r.blob, "blob");
  }

  /** Send this device's signed verdict on the doc's current snapshot. */
  async attestSnapshot(spaceId: Uint8Array, docId: Uint8Array, attestation: Uint8Array): Promise<void> {
    this.wrote();
    await this.send("POST", `/v1/spaces/${b64(spaceId)}/docs/${b64(docId)}/snapshot/attestations`, { signed: true,
      body: { attestation: b64(attestation) } });
  }

  /** `[snapshot id, attestations]` of the doc's current snapshot (unverified). */
  async snapshotAttestations(spaceId: Uint8Array, docId: Uint8Array): Promise<[Uint8Array | null, Uint8Array[]]> {
    const held = this.prefetched?.attestations(spaceId, docId);
    if (held) return held;
    const r = await this.send("GET", `/v1/spaces/${b64(spaceId)}/docs/${b64(docId)}/snapshot/attestations`, { authed: true });
    return [r.snapshot_id ? unb64(r.snapshot_id, "snapshot_id", 32) : null,
      (r.attestations as string[]).map((a) => unb64(a, "attestation"))];
  }

  // ------------------------------------------------------------ controller
  // What the relay's security controller says (session requests; shown, never trusted).

  /** Every device of the account with its trust score, access and factors (`GET /v1/controller/devices`). */
  async controllerDevices(): Promise<Json> {
    return this.send("GET", "/v1/controller/devices", { authed: true });
  }

  /** The account's alerts (`all`: acknowledged ones too), oldest first. */
  async controllerAlerts(all = false): Promise<Json> {
    return this.send("GET", "/v1/controller/alerts", { authed: true, params: all ? { all: "true" } : {} });
  }

  /** One page of the audit log from `start` and the signed head of the whole log (verify it!). */
  async auditPage(start = 0, limit = 500): Promise<Json> {
    return this.send("GET", "/v1/controller/audit", { authed: true, params: { start, limit } });
  }

  /** Consistency proof between audit log sizes `first` and `second`, and the signed head of `second`. */
  async auditConsistency(first: number, second?: number): Promise<[Uint8Array[], Uint8Array]> {
    const params: Record<string, number> = { first };
    if (second !== undefined) params.second = second;
    const r = await this.send("GET", "/v1/controller/audit/proofs/consistency", { authed: true, params });
    return [(r.proof as string[]).map((p) => unb64(p, "proof", 32)), unb64(r.tree_head.tree_head, "tree_head")];
  }

  // ------------------------------------------------------- pairing mailbox
  // Every channel request names the caller's slot by its token (§17.4.7).

  private static pairingHeaders(token: Uint8Array): Record<string, string> {
    return { "x-sddsf-pairing-token": b64(token) };
  }

  /**
   * Open a pairing mailbox whose initiator slot is `token`: `[channelId, nameplate, expiresMs]`.
   *
   * @throws DecodeError `unsupported_version`: the relay does not speak pairing version 2.
   */
  async openChannel(token: Uint8Array): Promise<[Uint8Array, number, number]> {
    const r = await this.send("POST", "/v1/pairing", { body: { version: PAIRING_VERSION },
      headers: RelayClient.pairingHeaders(token), idempotent: false });
    if (r.nameplate === undefined) {
      throw new DecodeError(`the relay at ${this.baseUrl} does not speak pairing version ${PAIRING_VERSION}: update the relay`,
        Code.UNSUPPORTED_VERSION);
    }
    return [unb64(r.channel_id, "channel_id"), Number(r.nameplate), Number(r.expires_ms)];
  }

  /**
   * Claim the joiner slot of the mailbox numbered `nameplate` for `token`: `[channelId, expiresMs]`.
   *
   * @throws NotFoundError no such number; ConflictError claimed by another
   *   device, burnt or expired; DecodeError the relay does not speak pairing version 2.
   */
  async claimChannel(nameplate: number, token: Uint8Array): Promise<[Uint8Array, number]> {
    let r: Json;
    try {
      r = await this.send("POST", "/v1/pairing/claim", { body: { nameplate }, headers: RelayClient.pairingHeaders(token),
        idempotent: false });
    } catch (e) {
      if (e instanceof NotFoundError && e.message === "no such endpoint") {
        throw new DecodeError(`the relay at ${this.baseUrl} does not speak pairing version ${PAIRING_VERSION}: update the relay`,
          Code.UNSUPPORTED_VERSION);
      }
      throw e;
    }
    return [unb64(r.channel_id, "channel_id"), Number(r.expires_ms)];
  }

  /** Post message `index` in the slot of `token` (a retry of the same message is answered as stored). */
  async postChannel(channelId: Uint8Array, token: Uint8Array, index: number, body: Uint8Array): Promise<number> {
    const r = await this.send("POST", `/v1/pairing/${b64(channelId)}/messages`, { body: { index, body: b64(body) },
      headers: RelayClient.pairingHeaders(token) });
    return Number(r.messages[0].index);
  }

  /** Messages after index `after`: `[index, sender, body]`. */
  async readChannel(channelId: Uint8Array, token: Uint8Array, after = -1): Promise<[number, string, Uint8Array][]> {
    const r = await this.send("GET", `/v1/pairing/${b64(channelId)}/messages`, { params: { after },
      headers: RelayClient.pairingHeaders(token) });
    return (r.messages as Json[]).map((x) => [Number(x.index), String(x.sender), unb64(x.body, "message")]);
  }

  /** Burn a pairing mailbox, telling the other side `reason`. */
  async burnChannel(channelId: Uint8Array, token: Uint8Array, reason = "failed"): Promise<void> {
    await this.send("POST", `/v1/pairing/${b64(channelId)}/burn`, { body: { reason },
      headers: RelayClient.pairingHeaders(token) });
  }

  /** A single-use WebSocket ticket (§17.7). */
  async wsTicket(): Promise<Uint8Array> {
    const r = await this.send("POST", "/v1/ws/ticket", { signed: true, body: {} });
    return unb64(r.ticket, "ticket", 32);
  }

  /** The WebSocket URL of this relay for `ticket`. */
  wsUrl(ticket: Uint8Array): string {
    const url = new URL(`${this.baseUrl}/v1/ws`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("ticket", b64(ticket));
    return url.toString();
  }
}
