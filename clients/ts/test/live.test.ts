/**
 * The live channel's own logic (docs/protocol.md §17.7) over a scripted
 * WebSocket: parsing of every message type, a malformed frame reported as an
 * error message, an aborted wait that loses no message, and the close codes
 * (4401 ticket refused, 4403 revoked, 1000 a normal end). The channel against
 * a real relay is in test/interop/.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { b64 } from "../src/bytes.js";
import { LiveChannel, parseLiveMessage, type WebSocketLike } from "../src/live.js";
import type { RelayClient } from "../src/relay.js";
import { codeOf } from "../testkit/kit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Listener = (event: any) => void;

class ScriptedSocket implements WebSocketLike {
  static last: ScriptedSocket | null = null;
  readyState = 0;
  sent: string[] = [];
  private readonly listeners = new Map<string, Listener[]>();

  constructor(readonly url: string) {
    ScriptedSocket.last = this;
    queueMicrotask(() => this.emit("open", {}));
  }

  addEventListener(type: string, listener: Listener): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  emit(type: string, event: unknown): void {
    for (const l of this.listeners.get(type) ?? []) l(event);
  }

  send(data: string): void {
    this.sent.push(data);
  }

  close(code = 1000, reason = ""): void {
    this.emit("close", { code, reason });
  }
}

const relay = { wsTicket: async () => new Uint8Array(32), wsUrl: () => "ws://relay.test/v1/ws?ticket=x" } as unknown as RelayClient;
const space = new Uint8Array(16).fill(5);

test("messages are parsed, malformed frames reported, and an aborted wait loses nothing", async () => {
  const ch = await LiveChannel.open(relay, ScriptedSocket);
  const ws = ScriptedSocket.last!;
  ch.subscribe(space);
  assert.deepEqual(JSON.parse(ws.sent[0]!), { type: "subscribe", space: b64(space) });
  const aborter = new AbortController();
  const waiting = ch.next(aborter.signal);
  aborter.abort(new Error("stop"));
  await assert.rejects(waiting, /stop/);
  ws.emit("message", { data: JSON.stringify({ type: "subscribed", space: b64(space), size: 3 }) });
  ws.emit("message", { data: JSON.stringify({ type: "op", space: b64(space), offset: 3, envelope: b64(Uint8Array.of(1, 2)) }) });
  ws.emit("message", { data: "{not json" });
  ws.emit("message", { data: JSON.stringify({ type: "resync", space: b64(space), from: 2 }) });
  assert.deepEqual(await ch.next(), { type: "subscribed", space, size: 3 });
  assert.deepEqual(await ch.next(), { type: "op", space, offset: 3, envelope: Uint8Array.of(1, 2) });
  const bad = await ch.next();
  assert.ok(bad !== null && bad.type === "error" && bad.code === "malformed");
  assert.deepEqual(await ch.next(), { type: "resync", space, from: 2 });
  ch.close();
  assert.equal(await ch.next(), null);
});

test("close codes become typed errors", async () => {
  for (const [code, expected] of [[4401, "unauthenticated"], [4403, "revoked"], [1011, "unavailable"]] as const) {
    const ch = await LiveChannel.open(relay, ScriptedSocket);
    const pending = ch.next();
    ScriptedSocket.last!.close(code, "why");
    await assert.rejects(pending, (e: Error & { code?: string }) => e.code === expected);
    await assert.rejects(ch.next(), (e: Error & { code?: string }) => e.code === expected);
  }
});

test("frames with wrong fields are refused", () => {
  assert.equal(codeOf(() => parseLiveMessage(JSON.stringify({ type: "op", space: b64(space), offset: -1, envelope: "" }))), "malformed");
  assert.equal(codeOf(() => parseLiveMessage(JSON.stringify({ type: "subscribed", space: "+/==", size: 1 }))), "malformed");
  assert.equal(codeOf(() => parseLiveMessage(JSON.stringify({ type: "gossip" }))), "malformed");
});
