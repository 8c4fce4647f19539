/**
 * A TypeScript device's first sync through the relay's signed first-sync
 * bundle (docs/protocol.md §17.9), against a real `sddsf relay serve` and the
 * real `sddsf` command on one account. Every request of the devices is
 * recorded (and, for some, altered) by the fetch they are given.
 *
 * * A new device reads its whole first sync (registry, spaces, key packages,
 *   snapshot, attestations, chunks, the tail) from ONE bundle request; a later
 *   sync reads from the endpoints again.
 * * A bundle altered on the way (one byte), or signed for another request
 *   (another nonce), is refused `tree_head_invalid`, as the Python client
 *   refuses it, and nothing is stored; the honest bundle is then taken.
 * * A component the relay altered in its bundle (an op of the tail, signed
 *   again with the relay key) is refused with the error the ops endpoint
 *   gives for the same alteration, leaving the same state behind.
 * * An older relay (no `features` in its session answer) and a node answering
 *   404 for the bundle are read endpoint by endpoint, with the same result.
 *
 * Needs the Python environment (skips without; fails under SDDSF_REQUIRE_INTEROP=1).
 */

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { b64, fromHex, toHex, unb64 } from "../../src/bytes.js";
import { decode, encode, type CborValue } from "../../src/cbor.js";
import { Ed25519SigningKey, randomBytes, ready } from "../../src/crypto.js";
import { BrowserDevice } from "../../src/device.js";
import { SddsfError } from "../../src/errors.js";
import { BOOTSTRAP_SIG, labelled } from "../../src/labels.js";
import { MemoryBackend, Store } from "../../src/store.js";
import { deviceAdd, sddsf } from "../../testkit/cli.js";
import { LiveRelay, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

/** The reads a first sync makes one request each for, without a bundle. */
const PER_ENDPOINT_READ = /\/registry$|^GET \/v1\/spaces$|\/keys$|\/snapshot$|\/attestations$|\/snapshot-chunks\/|\/ops$/;

const json = (status: number, body: Json): Response =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

/** A device's network: every request recorded; answers optionally altered. */
class Wire {
  requests: string[] = [];
  /** Drop the session answer's feature list (a relay that predates it). */
  oldRelay = false;
  /** List the feature but answer the bundle 404 (a node being upgraded). */
  noEndpoint = false;
  /** Ask the relay for a bundle with another nonce than the device drew. */
  otherNonce = false;
  /** Rewrites a bundle (raw bytes, the device's nonce) on the way. */
  alterBundle: ((raw: Uint8Array, nonce: Uint8Array) => Uint8Array) | null = null;
  /** Rewrites an endpoint's JSON answer (path, answer). */
  alterEndpoint: ((path: string, answer: Json) => void) | null = null;

  readonly fetch: typeof fetch = async (input, init) => {
    const url = new URL(String(input));
    const path = url.pathname;
    const method = init?.method ?? "GET";
    this.requests.push(`${method} ${path}`);
    const nonce = path === "/v1/bootstrap" ? unb64(url.searchParams.get("nonce")!) : null;
    if (nonce !== null && this.noEndpoint) return json(404, { code: "not_found", message: "no such endpoint" });
    if (nonce !== null && this.otherNonce) url.searchParams.set("nonce", b64(randomBytes(16)));
    const answer = await fetch(url, init);
    if (!answer.ok || (method !== "GET" && path !== "/v1/auth/session")) return answer;
    const body = await answer.json();
    if (path === "/v1/auth/session" && this.oldRelay) delete body.features;
    else if (nonce !== null && this.alterBundle !== null) body.bundle = b64(this.alterBundle(unb64(body.bundle), nonce));
    else if (this.alterEndpoint !== null) this.alterEndpoint(path, body);
    return json(200, body);
  };

  reads(): string[] {
    return this.requests.filter((r) => r.startsWith("GET "));
  }

  endpointReads(): string[] {
    return this.reads().filter((r) => PER_ENDPOINT_READ.test(r));
  }
}

let relay: LiveRelay | null = null;
let home = "";
let work = "";
let adds = 0;
before(ready);
after(() => relay?.stop());

/** A new TypeScript device paired with the laptop, talking through `wire` (its pairing's requests forgotten). */
async function newDevice(wire: Wire): Promise<[BrowserDevice, Store]> {
  const add = await deviceAdd(home, join(work, `code${adds++}`));
  const store = await Store.create(new MemoryBackend(), { kind: "webcrypto" });
  const device = await BrowserDevice.pair(store, relay!.baseUrl, add.code, `browser${adds}`, () => true,
    { fetch: wire.fetch });
  const [status, , stderr] = await add.done;
  assert.equal(status, 0, stderr);
  wire.requests = [];
  return [device, store];
}

/** Everything a device's store holds, decrypted. */
async function stored(store: Store): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const k of await store.keys("")) out.set(k, toHex((await store.get(k))!));
  return out;
}

/** What a device shows and verified: per space its log and where it started, the values, the vault secret. */
function view(device: BrowserDevice): Json {
  const spaces = device.spaceList().map((s) => {
    const r = device.session.space(s.id);
    return { name: s.name, size: s.size, root: toHex(r.tree.root(r.size)), base: r.tree.base, docs: s.docs,
      kv: s.name === "groceries" ? device.kv(s.id).entries().map((e) => [e.key, e.value]) : null };
  });
  return { spaces, wallet: device.vault().get("wallet").secret };
}

async function refusal(device: BrowserDevice): Promise<SddsfError> {
  try {
    await device.sync();
  } catch (e) {
    if (e instanceof SddsfError) return e;
    throw e;
  }
  throw new Error("the sync was not refused");
}

/** Flip the last bit of the first op envelope in a bundle's tail and sign the body again with the relay's key. */
function alterTailOp(raw: Uint8Array): Uint8Array {
  const [version, bodyBytes] = decode(raw, { maxSize: 16 << 20, maxDepth: 8, maxItems: 10_000 }) as [number, Uint8Array];
  const body = decode(bodyBytes, { maxSize: 16 << 20, maxDepth: 8, maxItems: 10_000 }) as Map<string, CborValue>;
  const space = (body.get("spaces") as Map<string, CborValue>[]).find((s) => (s.get("ops") as CborValue[] | undefined)?.length)!;
  const op = (space.get("ops") as CborValue[][])[0]!;
  const env = op[3] as Uint8Array;
  env[env.length - 1]! ^= 1;
  const key = Ed25519SigningKey.fromSeed(fromHex(readFileSync(join(relay!.work, "relay.key"), "utf8").trim()));
  const signed = encode(body);
  return encode([version, signed, key.sign(labelled(BOOTSTRAP_SIG, signed))]);
}

function alterFirstOpJson(path: string, answer: Json): void {
  if (!path.endsWith("/ops") || !answer.ops?.length) return;
  const env = unb64(answer.ops[0].envelope);
  env[env.length - 1]! ^= 1;
  answer.ops[0].envelope = b64(env);
}

test("a new TypeScript device's first sync reads one signed bundle, verified part by part", { timeout: 900_000 }, async (t) => {
  if (!pythonAvailable(t)) return;
  relay = await LiveRelay.start();
  work = mkdtempSync(join(tmpdir(), "sddsf-boot-"));
  home = relay.home("laptop");
  // The laptop: two spaces (groceries with a snapshot and a tail after it; the vault), all synced.
  sddsf(home, ["init", "--relay", relay.baseUrl, "--name", "laptop", "--insecure-plaintext-key", "--phrase-out", join(work, "phrase")]);
  sddsf(home, ["space", "create", "groceries"]);
  sddsf(home, ["put", "groceries", "milk", "2 l"]);
  sddsf(home, ["put", "groceries", "eggs", "12"]);
  writeFileSync(join(work, "secret"), "correct horse battery staple\n");
  sddsf(home, ["vault", "put", "wallet", "--kind", "password", "--from-file", join(work, "secret")]);
  relay.py("snapshot", home); // syncs, then writes the whole-space snapshot of groceries
  sddsf(home, ["put", "groceries", "coffee", "beans"]);
  sddsf(home, ["put", "groceries", "eggs", "6"]);
  sddsf(home, ["sync"]);

  // 1. The bundle on the way: one byte flipped, then signed for another nonce. Refused, nothing stored.
  const wire = new Wire();
  const [device, store] = await newDevice(wire);
  const before = await stored(store);
  wire.alterBundle = (raw, nonce) => {
    const at = Buffer.from(raw).indexOf(Buffer.from(nonce));
    assert.ok(at > 0, "the bundle echoes the nonce");
    const out = new Uint8Array(raw);
    out[at]! ^= 1;
    return out;
  };
  const flipped = await refusal(device);
  assert.equal(flipped.code, "tree_head_invalid", flipped.message);
  assert.match(flipped.message, /bootstrap bundle does not verify/);
  assert.deepEqual(await stored(store), before, "nothing of a refused bundle is stored");
  assert.deepEqual(wire.endpointReads(), [], "nothing was read besides the bundle");
  wire.alterBundle = null;
  wire.otherNonce = true;
  const replayed = await refusal(device);
  assert.equal(replayed.code, "tree_head_invalid", replayed.message);
  assert.match(replayed.message, /another request/);
  assert.deepEqual(await stored(store), before, "nothing of a bundle for another request is stored");
  wire.otherNonce = false;

  // 2. The honest bundle: the first sync reads nothing else (the session is open already).
  wire.requests = [];
  const first = await device.sync();
  assert.deepEqual(first.rejected, []);
  assert.deepEqual(wire.reads(), ["GET /v1/bootstrap"], "one request reads the whole first sync");
  assert.deepEqual(wire.requests.filter((r) => !r.startsWith("GET ")).map((r) => r.replace(/\/v1\/spaces\/[^/]+\//, "/…/")),
    ["POST /…/ack", "POST /…/ack"], "then only the acknowledgements of the two spaces");
  const groceries = device.spaceByName("groceries");
  assert.ok(device.session.space(groceries).tree.base > 0n, "it started from the laptop's snapshot");
  assert.deepEqual(device.kv(groceries).entries().map((e) => [e.key, e.value]),
    [["coffee", "beans"], ["eggs", "6"], ["milk", "2 l"]]);
  assert.equal(device.vault().get("wallet").secret, "correct horse battery staple");

  // A later sync reads from the endpoints again.
  sddsf(home, ["put", "groceries", "bread", "1 loaf"]);
  sddsf(home, ["sync"]);
  wire.requests = [];
  await device.sync();
  assert.ok(!wire.reads().includes("GET /v1/bootstrap") && wire.endpointReads().some((r) => r.endsWith("/ops")));
  assert.equal(device.kv(groceries).entry("bread")?.value, "1 loaf");
  const expected = view(device);

  // 3. An older relay (no feature list) and a node without the endpoint: read endpoint by endpoint, same result.
  for (const setting of ["oldRelay", "noEndpoint"] as const) {
    const w = new Wire();
    w[setting] = true;
    const [other] = await newDevice(w);
    await other.sync();
    assert.equal(w.reads().includes("GET /v1/bootstrap"), setting === "noEndpoint", "a bundle is asked only when listed");
    const reads = w.endpointReads();
    assert.ok(reads.some((r) => r.endsWith("/keys")) && reads.some((r) => r.endsWith("/ops")), reads.join(", "));
    t.diagnostic(`${setting}: the first sync made ${w.reads().length} reads (with the bundle: 1)`);
    assert.deepEqual(view(other), expected, `${setting}: the same log, values and secret as through the bundle`);
  }

  // 4. A relay that alters an op of its bundle's tail (and signs the bundle): refused as when the ops
  //    endpoint serves the same alteration, with the same state left behind.
  const w = new Wire();
  const [victim, victimStore] = await newDevice(w);
  w.alterBundle = alterTailOp;
  const byBundle = await refusal(victim);
  assert.ok(w.reads().includes("GET /v1/bootstrap"));
  const leftByBundle = await stored(victimStore);
  w.alterBundle = null;
  w.oldRelay = true;
  victim.relay.forgetSession(); // the next session answer is an older relay's
  w.alterEndpoint = alterFirstOpJson;
  w.requests = [];
  const byEndpoint = await refusal(victim);
  assert.ok(!w.reads().includes("GET /v1/bootstrap"));
  assert.deepEqual([byBundle.constructor, byBundle.code, byBundle.message],
    [byEndpoint.constructor, byEndpoint.code, byEndpoint.message]);
  assert.equal(byBundle.code, "proof_invalid");
  assert.deepEqual(await stored(victimStore), leftByBundle, "the same state left behind");
  assert.ok(![...leftByBundle.keys()].some((k) => k.startsWith("doc/")), "no document of the refused log");
  w.alterEndpoint = null;
  await victim.sync();
  assert.deepEqual(view(victim), expected, "the honest relay's log then verifies");
});
