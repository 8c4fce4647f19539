/**
 * The WebSocket live channel (docs/protocol.md §17.7).
 *
 * A hint, never the truth: an `op` message carries no proof, so a client never
 * applies it directly; it pulls and verifies the space (`Space.pull` in
 * `./sync.js`), as the Python runner does. The channel reports, per space, the
 * offsets it announced so a caller can notice gaps, and turns the relay's
 * close codes into typed errors (4401: ticket refused; 4403: this device was
 * revoked).
 */

import { b64, unb64 } from "./bytes.js";
import { AuthenticationError, AuthorizationError, Code, DecodeError, UnavailableError, type SddsfError } from "./errors.js";
import type { RelayClient } from "./relay.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

/** A message from the relay, decoded (binary fields as bytes). */
export type LiveMessage =
  | { readonly type: "subscribed"; readonly space: Uint8Array; readonly size: number }
  | { readonly type: "op"; readonly space: Uint8Array; readonly offset: number; readonly envelope: Uint8Array }
  | { readonly type: "resync"; readonly space: Uint8Array; readonly from: number }
  | { readonly type: "error"; readonly code: string; readonly message: string }
  | { readonly type: "alert"; readonly alertId: Uint8Array; readonly device: Uint8Array; readonly rule: string;
    readonly severity: string; readonly message: string };

/** The minimal WebSocket surface the channel uses (the browser's and Node's global `WebSocket`). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "message" | "close" | "error", listener: (event: any) => void): void;
}

/** A WebSocket constructor. */
export type WebSocketFactory = new (url: string) => WebSocketLike;

/**
 * Parse one text frame from the relay.
 *
 * @throws DecodeError a frame that is not one of the documented messages.
 */
export function parseLiveMessage(text: string): LiveMessage {
  let m: Json;
  try {
    m = JSON.parse(text);
  } catch {
    throw new DecodeError("the relay sent a live message that is not JSON");
  }
  switch (m?.type) {
    case "subscribed":
      return { type: "subscribed", space: unb64(m.space, "space", 16), size: intOf(m.size, "size") };
    case "op":
      return { type: "op", space: unb64(m.space, "space", 16), offset: intOf(m.offset, "offset"),
        envelope: unb64(m.envelope, "envelope") };
    case "resync":
      return { type: "resync", space: unb64(m.space, "space", 16), from: intOf(m.from, "from") };
    case "error":
      return { type: "error", code: String(m.code), message: String(m.message) };
    case "alert":
      return { type: "alert", alertId: unb64(m.alert_id, "alert_id"), device: unb64(m.device, "device"),
        rule: String(m.rule), severity: String(m.severity), message: String(m.message) };
    default:
      throw new DecodeError(`the relay sent a live message of unknown type ${JSON.stringify(m?.type)}`);
  }
}

function intOf(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw new DecodeError(`live message: ${what} is not an offset`);
  return v;
}

/** The error a close code stands for (null for an ordinary close). */
export function closeError(code: number, reason: string): SddsfError | null {
  if (code === 4401) return new AuthenticationError(`the relay refused the live channel's ticket (${reason}); get a new ticket`);
  if (code === 4403) return new AuthorizationError(`this device was revoked (${reason})`, Code.REVOKED);
  if (code === 1000) return null;
  return new UnavailableError(`the live channel closed (code ${code}${reason ? `: ${reason}` : ""}); reconnect and pull`);
}

/** One open live connection to a relay. */
export class LiveChannel {
  private readonly queue: LiveMessage[] = [];
  private waiters: ((m: LiveMessage | null) => void)[] = [];
  private closedWith: SddsfError | null | undefined = undefined;

  private constructor(private readonly ws: WebSocketLike) {
    ws.addEventListener("message", (ev) => {
      let msg: LiveMessage;
      try {
        msg = parseLiveMessage(typeof ev.data === "string" ? ev.data : String(ev.data));
      } catch (e) {
        msg = { type: "error", code: (e as SddsfError).code ?? Code.MALFORMED, message: (e as Error).message };
      }
      const w = this.waiters.shift();
      if (w) w(msg);
      else this.queue.push(msg);
    });
    ws.addEventListener("close", (ev) => {
      this.closedWith = closeError(Number(ev.code), String(ev.reason ?? ""));
      for (const w of this.waiters.splice(0)) w(null);
    });
  }

  /**
   * Get a ticket (a signed request) and open the channel.
   *
   * A ticket the relay refuses still opens (the relay accepts, then closes
   * with 4401): that surfaces as an AuthenticationError from {@link next}.
   *
   * @param factory the WebSocket constructor (default: the global `WebSocket`).
   * @throws UnavailableError the connection did not open.
   */
  static async open(relay: RelayClient, factory?: WebSocketFactory): Promise<LiveChannel> {
    const ctor = factory ?? (globalThis as { WebSocket?: WebSocketFactory }).WebSocket;
    if (ctor === undefined) throw new UnavailableError("no WebSocket implementation is available here");
    const ticket = await relay.wsTicket();
    const ws = new ctor(relay.wsUrl(ticket));
    const channel = new LiveChannel(ws);
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve());
      ws.addEventListener("error", () => reject(new UnavailableError("the live channel did not open")));
      ws.addEventListener("close", (ev) => reject(closeError(Number(ev.code), String(ev.reason ?? "")) ??
        new UnavailableError("the live channel closed while opening")));
    });
    return channel;
  }

  /** Ask for the ops of `spaceId` (answered by a `subscribed` message). */
  subscribe(spaceId: Uint8Array): void {
    this.ws.send(JSON.stringify({ type: "subscribe", space: b64(spaceId) }));
  }

  /**
   * The next message, or null once the channel closed normally. An aborted
   * `signal` stops the wait without losing a message (it stays queued).
   *
   * @throws the close code's error (revoked, ticket refused, dropped); the
   *   signal's reason when it is aborted.
   */
  async next(signal?: AbortSignal): Promise<LiveMessage | null> {
    const queued = this.queue.shift();
    if (queued !== undefined) return queued;
    if (this.closedWith !== undefined) {
      if (this.closedWith !== null) throw this.closedWith;
      return null;
    }
    signal?.throwIfAborted();
    const msg = await new Promise<LiveMessage | null>((resolve, reject) => {
      const waiter = (m: LiveMessage | null): void => {
        signal?.removeEventListener("abort", onAbort);
        resolve(m);
      };
      const onAbort = (): void => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
    if (msg === null && this.closedWith) throw this.closedWith;
    return msg;
  }

  /** Close the channel. */
  close(): void {
    this.ws.close(1000, "done");
  }
}
