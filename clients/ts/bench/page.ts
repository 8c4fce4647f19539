/**
 * The browser benchmark's page (bundled by bench/browser.ts into
 * bench/dist/page.js): a {@link BrowserDevice} in this page's IndexedDB,
 * paired with the Python device, whose first sync is timed. The library's
 * own classes are wrapped (in this page only) to split the sync into stages:
 *
 * - `requests`: every relay request, the network and decoding its answer;
 * - `verify_decrypt`: the pull minus its requests (tree heads, leaf hashes,
 *   the signed root, the rules of every op, gossip, snapshot checks, decryption);
 * - `apply`: applying the verified ops (or the snapshot) to Yjs;
 * - `store`: writing the device's state to IndexedDB;
 * - `other`: the rest (registry and key packages verification, sealing, CBOR).
 */

import * as Y from "yjs";

import { fromHex } from "../src/bytes.js";
import { ready } from "../src/crypto.js";
import { BrowserDevice } from "../src/device.js";
import { RelayClient } from "../src/relay.js";
import { IndexedDbBackend, Store } from "../src/store.js";
import { SpaceReplica } from "../src/sync.js";
import { DocSet } from "../src/ydocs.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type AnyFn = (...args: any[]) => any;

const spent = { requests: 0, pull: 0, pullRequests: 0, apply: 0, store: 0, snapshots: 0, count: 0 };

function timeAsync(proto: any, method: string, add: (ms: number) => void): void {
  const original = proto[method] as AnyFn;
  proto[method] = async function (this: unknown, ...args: unknown[]): Promise<unknown> {
    const t0 = performance.now();
    try {
      return await original.apply(this, args);
    } finally {
      add(performance.now() - t0);
    }
  };
}

function timeSync(proto: any, method: string, add: (ms: number) => void): void {
  const original = proto[method] as AnyFn;
  proto[method] = function (this: unknown, ...args: unknown[]): unknown {
    const t0 = performance.now();
    try {
      return original.apply(this, args);
    } finally {
      add(performance.now() - t0);
    }
  };
}

timeAsync(RelayClient.prototype, "sendOnce", (ms) => {
  spent.requests += ms;
  spent.count += 1;
});
{
  const original = SpaceReplica.prototype.pull;
  SpaceReplica.prototype.pull = async function (this: SpaceReplica) {
    const t0 = performance.now();
    const r0 = spent.requests;
    try {
      return await original.call(this);
    } finally {
      spent.pull += performance.now() - t0;
      spent.pullRequests += spent.requests - r0;
    }
  };
}
timeSync(DocSet.prototype, "applyVerified", (ms) => (spent.apply += ms));
timeSync(DocSet.prototype, "applySnapshot", (ms) => {
  spent.apply += ms;
  spent.snapshots += 1;
});
timeAsync(Store.prototype, "commit", (ms) => (spent.store += ms));
timeAsync(Store.prototype, "put", (ms) => (spent.store += ms));

let device: BrowserDevice | null = null;
let spaceHex = "";

async function pair(relayUrl: string, code: string, name: string): Promise<{ words: string[]; deviceId: string }> {
  await ready();
  const backend = await IndexedDbBackend.open("sddsf-bench");
  const store = await Store.create(backend, { kind: "webcrypto" });
  let words: string[] = [];
  device = await BrowserDevice.pair(store, relayUrl, code, name, (check) => {
    words = [...check.words];
    return true;
  });
  return { words, deviceId: Array.from(device.deviceId, (b) => b.toString(16).padStart(2, "0")).join("") };
}

/** The device's first sync, timed end to end and by stage; returns the text it reads. */
async function sync(space: string): Promise<Record<string, unknown>> {
  if (device === null) throw new Error("pair first");
  spaceHex = space;
  for (const k of Object.keys(spent) as (keyof typeof spent)[]) spent[k] = 0;
  const t0 = performance.now();
  const summary = await device.sync();
  const total = performance.now() - t0;
  const text = device.doc(fromHex(space), "text").getText("t").toString();
  const verifyDecrypt = spent.pull - spent.pullRequests;
  return {
    total_ms: total,
    stages: { requests: spent.requests, verify_decrypt: verifyDecrypt, apply: spent.apply, store: spent.store,
      other: total - spent.requests - verifyDecrypt - spent.apply - spent.store },
    requests: spent.count, snapshots: spent.snapshots, applied: summary.applied, skipped: summary.skipped,
    alerts: summary.alerts, size: String(summary.sizes.get(space) ?? -1n), text,
  };
}

/** Plain Yjs: `Y.applyUpdate` of the synced document's final state into a fresh document, REPEAT times. */
function plain(repeat: number): { ms: number[]; bytes: number; same: boolean } {
  if (device === null) throw new Error("pair first");
  const d = device.doc(fromHex(spaceHex), "text");
  const state = Y.encodeStateAsUpdate(d);
  const expected = d.getText("t").toString();
  const ms: number[] = [];
  let same = true;
  for (let i = 0; i < repeat; i++) {
    const t0 = performance.now();
    const fresh = new Y.Doc();
    Y.applyUpdate(fresh, state);
    const text = fresh.getText("t").toString();
    ms.push(performance.now() - t0);
    same &&= text === expected;
  }
  return { ms, bytes: state.length, same };
}

(globalThis as any).bench = { pair, sync, plain };
(globalThis as any).benchReady = true;
