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
 */

import { b64, unb64 } from "./bytes.js";
import { randomBytes } from "./crypto.js";
import { AuthenticationError, Code, DecodeError, errorFromWire, RateLimitedError, UnavailableError } from "./errors.js";
import type { DeviceKeys } from "./identity.js";
import { NONCE_SIZE, requestMessage, sessionMessage, tokenHash } from "./auth.js";

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
}

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
}

interface SendOptions {
  readonly body?: Json;
  readonly params?: Record<string, string | number>;
  readonly signed?: boolean;
  readonly authed?: boolean;
}

/** A device's connection to one relay. */
export class RelayClient {
  readonly baseUrl: string;
  /** The relay's tree-head key, as it stated it when this client opened a session (unpinned). */
  relayId: Uint8Array | null = null;
  private readonly device: DeviceKeys | undefined;
  private readonly accountId: Uint8Array | undefined;
  private readonly clock: () => number;
  private readonly fetchImpl: typeof fetch;
  private token: Uint8Array | null = null;
  private tokenExpiresMs = 0;

  constructor(baseUrl: string, opts: RelayClientOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.device = opts.device;
    this.accountId = opts.accountId;
    this.clock = opts.clock ?? (() => Date.now());
    this.fetchImpl = opts.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** Drop the cached session (the next call opens a new one). */
  forgetSession(): void {
    this.token = null;
  }

  // ------------------------------------------------------------- plumbing

  private async send(method: string, path: string, opts: SendOptions = {}): Promise<Json> {
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
    const query = opts.params ? new URLSearchParams(Object.entries(opts.params).map(([k, v]) => [k, String(v)])).toString() : "";
    const target = query ? `${path}?${query}` : path;
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
    const deviceId = this.device.deviceId;
    const ch = await this.send("POST", "/v1/auth/challenge", {
      body: { account_id: b64(this.accountId), device_id: b64(deviceId) } });
    const challenge = unb64(ch.challenge, "challenge", 32);
    const relayId = unb64(ch.relay_id, "relay_id", 32);
    this.relayId = relayId;
    const sig = this.device.sign(sessionMessage(relayId, this.accountId, deviceId, challenge));
    const s = await this.send("POST", "/v1/auth/session", {
      body: { account_id: b64(this.accountId), device_id: b64(deviceId), challenge: b64(challenge), signature: b64(sig) } });
    this.token = unb64(s.token, "token", 32);
    this.tokenExpiresMs = Number(s.expires_ms);
    return this.token;
  }

  /** Open a session now (if none is open) and return the relay's stated key. */
  async openSession(): Promise<Uint8Array> {
    await this.sessionToken();
    return this.relayId!;
  }

  // -------------------------------------------------------------- registry

  /** Upload a genesis entry; returns the account id (idempotent). */
  async createAccount(genesis: Uint8Array): Promise<Uint8Array> {
    const r = await this.send("POST", "/v1/accounts", { body: { genesis: b64(genesis) } });
    return unb64(r.account_id, "account_id", 32);
  }

  /** Registry entries from `since` (verify them!). */
  async registry(accountId: Uint8Array, since = 0): Promise<Uint8Array[]> {
    const r = await this.send("GET", `/v1/accounts/${b64(accountId)}/registry`, { params: { since } });
    return (r.entries as string[]).map((e) => unb64(e, "registry entry"));
  }

  /** Append a signed entry; returns the next seq. */
  async appendRegistry(accountId: Uint8Array, entry: Uint8Array): Promise<number> {
    const r = await this.send("POST", `/v1/accounts/${b64(accountId)}/registry`, { body: { entry: b64(entry) } });
    return Number(r.next_seq);
  }

  // ---------------------------------------------------------------- spaces

  private static space(x: Json): SpaceInfo {
    return { spaceId: unb64(x.space_id, "space_id", 16), size: Number(x.size), root: unb64(x.root, "root", 32),
      epoch: Number(x.epoch) };
  }

  /** Create a space with its epoch-0 key package. */
  async createSpace(spaceId: Uint8Array, keyPackage: Uint8Array): Promise<SpaceInfo> {
    return RelayClient.space(await this.send("POST", "/v1/spaces", { signed: true,
      body: { space_id: b64(spaceId), key_package: b64(keyPackage) } }));
  }

  /** The account's spaces. */
  async listSpaces(): Promise<SpaceInfo[]> {
    const r = await this.send("GET", "/v1/spaces", { authed: true });
    return (r.spaces as Json[]).map(RelayClient.space);
  }

  /** Open the next epoch. */
  async putKeyPackage(spaceId: Uint8Array, keyPackage: Uint8Array): Promise<SpaceInfo> {
    return RelayClient.space(await this.send("POST", `/v1/spaces/${b64(spaceId)}/keys`, { signed: true,
      body: { key_package: b64(keyPackage) } }));
  }

  /** Key packages from `sinceEpoch`. */
  async keyPackages(spaceId: Uint8Array, sinceEpoch = 0): Promise<Uint8Array[]> {
    const r = await this.send("GET", `/v1/spaces/${b64(spaceId)}/keys`, { authed: true, params: { since_epoch: sinceEpoch } });
    return (r.key_packages as string[]).map((p) => unb64(p, "key package"));
  }

  /** Upload a batch; returns per-op results and the signed tree head bytes. */
  async upload(spaceId: Uint8Array, envelopes: readonly Uint8Array[], proofs = true): Promise<[UploadResult[], Uint8Array]> {
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
    const r = await this.send("POST", `/v1/spaces/${b64(spaceId)}/ack`, { signed: true, body: { offset } });
    return [Number(r.acked), Number(r.pruned_before)];
  }

  /** Store a signed encrypted snapshot; returns the stored cover offset. */
  async putSnapshot(spaceId: Uint8Array, docId: Uint8Array, coversOffset: number, blob: Uint8Array): Promise<number> {
    const r = await this.send("PUT", `/v1/spaces/${b64(spaceId)}/docs/${b64(docId)}/snapshot`, { signed: true,
      body: { covers_offset: coversOffset, blob: b64(blob) } });
    return Number(r.covers_offset);
  }

  /** A doc's snapshot `[covers_offset, blob]` (NotFoundError when none). */
  async getSnapshot(spaceId: Uint8Array, docId: Uint8Array): Promise<[number, Uint8Array]> {
    const r = await this.send("GET", `/v1/spaces/${b64(spaceId)}/docs/${b64(docId)}/snapshot`, { authed: true });
    return [Number(r.covers_offset), unb64(r.blob, "blob")];
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
