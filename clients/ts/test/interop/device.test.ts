/**
 * The TypeScript device (`src/device.ts`: the browser device's code, here in
 * Node with an in-memory backend) with a real relay and the real `sddsf`
 * command on one account:
 *
 * * pairing version 2: `sddsf device add` shows a code; the TypeScript device
 *   joins with it (commitment, SPAKE2 with python-spake2, the same five words
 *   on both sides, the countersigned entry) and the registry lists it;
 * * it syncs (every proof verified), reads the key-value values and a vault
 *   secret the Python device wrote (signatures and carriers checked);
 * * it writes a key-value record that `sddsf get` reads as verified, and
 *   reads the Python device's next write;
 * * its state survives a restart from the encrypted store (no value is
 *   stored in plaintext), with a WebCrypto-wrapped key and with a passphrase.
 */

import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { toHex } from "../../src/bytes.js";
import { ready } from "../../src/crypto.js";
import { BrowserDevice } from "../../src/device.js";
import { MemoryBackend, Store } from "../../src/store.js";
import { deviceAdd, getJson, sddsf } from "../../testkit/cli.js";
import { LiveRelay, pythonAvailable } from "../../testkit/relaykit.js";

let relay: LiveRelay | null = null;
before(ready);
after(() => relay?.stop());

test("a TypeScript device pairs with `sddsf device add`, syncs kv and the vault both ways, and restarts from its store",
  { timeout: 600_000 }, async (t) => {
    if (!pythonAvailable(t)) return;
    relay = await LiveRelay.start();
    const r = relay;
    const home = r.home("laptop");
    const work = mkdtempSync(join(tmpdir(), "sddsf-dev-"));
    sddsf(home, ["init", "--relay", r.baseUrl, "--name", "laptop", "--insecure-plaintext-key", "--phrase-out", join(work, "phrase")]);
    sddsf(home, ["space", "create", "groceries"]);
    sddsf(home, ["put", "groceries", "milk", "2 l"]);
    writeFileSync(join(work, "secret"), "correct horse battery staple\n");
    sddsf(home, ["vault", "put", "wallet", "--kind", "password", "--from-file", join(work, "secret")]);
    sddsf(home, ["sync"]);

    // Pairing: the code `sddsf device add` shows; the same words on both screens.
    const add = await deviceAdd(home, join(work, "code"));
    const backend = new MemoryBackend();
    const store = await Store.create(backend, { kind: "webcrypto" });
    let shown: readonly string[] = [];
    const device = await BrowserDevice.pair(store, r.baseUrl, add.code, "browser", (check) => {
      shown = check.words;
      return true;
    });
    const [status, , stderr] = await add.done;
    assert.equal(status, 0, stderr);
    assert.deepEqual([...shown], await add.words, "both screens show the same words");
    assert.ok(device.registry().isActive(device.deviceId));

    // Sync: the Python device's values and the vault secret, verified.
    const first = await device.sync();
    assert.deepEqual(first.rejected, []);
    const groceries = device.spaceByName("groceries");
    const milk = device.kv(groceries).entry("milk");
    assert.equal(milk?.value, "2 l");
    assert.equal(milk?.heads[0]?.verified, true);
    assert.deepEqual(device.kv(groceries).alerts, []);
    // Progress acknowledged at the first sync (the relay prunes only below every device's).
    const size = device.spaceList().find((sp) => sp.name === "groceries")!.size;
    assert.equal(device.acknowledged(groceries), size - 1n);
    assert.deepEqual((await device.relay.acknowledge(groceries, 0))[0], Number(size - 1n), "the relay stored it");
    const wallet = device.vault().get("wallet");
    assert.equal(wallet.secret, "correct horse battery staple");
    assert.equal(wallet.verified, true);

    // The TypeScript device writes; Python reads it as verified.
    device.kv(groceries).put("bread", "1 loaf");
    await device.flush();
    assert.equal((await device.sync()).pushed, 1);
    assert.deepEqual(getJson(home, "groceries", "bread"), { key: "bread", value: "1 loaf" });
    const bread = r.py("read", home, "bread"); // the Python API: authorship of every head
    assert.deepEqual([bread.value, bread.verified, bread.authors, bread.alerts], ["1 loaf", true, [toHex(device.deviceId)], []]);

    // Python writes again; the TypeScript device reads it.
    sddsf(home, ["put", "groceries", "tea", "green"]);
    sddsf(home, ["sync"]);
    await device.sync();
    assert.equal(device.kv(groceries).entry("tea")?.value, "green");

    // Restart from the store: the same values before any network access.
    device.close();
    const again = await BrowserDevice.open(await Store.open(backend));
    const g2 = again.spaceByName("groceries");
    assert.deepEqual(again.kv(g2).entries().map((e) => [e.key, e.value]),
      [["bread", "1 loaf"], ["milk", "2 l"], ["tea", "green"]]);
    assert.equal(again.vault().get("wallet").secret, "correct horse battery staple");
    const after2 = await again.sync();
    assert.equal(after2.applied, 0, "nothing is applied twice after a restart");
    again.close();

    // A relay whose controller made this device read-only (policy_read_only on uploads):
    // the sync still pulls, the edit stays pending here, and goes out once the device is trusted again.
    const readOnlyFetch: typeof fetch = async (input, init) => {
      if ((init?.method ?? "GET") === "POST" && /\/v1\/spaces\/[^/]+\/ops$/.test(String(input))) {
        return new Response(JSON.stringify({ code: "policy_read_only", message: "this device may read, not write" }),
          { status: 403, headers: { "content-type": "application/json" } });
      }
      return fetch(input, init);
    };
    const limited = await BrowserDevice.open(await Store.open(backend), { fetch: readOnlyFetch });
    limited.kv(g2).put("cheese", "brie");
    const ro = await limited.sync();
    assert.deepEqual([ro.readOnly, ro.pushed], [true, 0]);
    limited.close();
    const trusted = await BrowserDevice.open(await Store.open(backend));
    const rw = await trusted.sync();
    assert.deepEqual([rw.readOnly, rw.pushed], [false, 1], "the kept edit is pushed once trusted again");
    assert.deepEqual(getJson(home, "groceries", "cheese"), { key: "cheese", value: "brie" });
    for (const [key, raw] of backend.rawValues()) {
      const text = Buffer.from(raw).toString("latin1");
      for (const plain of ["2 l", "1 loaf", "correct horse", "groceries", "brie"]) {
        assert.ok(!text.includes(plain), `${key} holds '${plain}' in plaintext`);
      }
    }
    trusted.close();

    // A passphrase-protected store (Argon2id with the Python client's parameters).
    const add2 = await deviceAdd(home, join(work, "code2"));
    const pb = new MemoryBackend();
    const phone = await BrowserDevice.pair(await Store.create(pb, { kind: "passphrase", passphrase: "a long passphrase" }),
      r.baseUrl, add2.code, "phone", () => true);
    assert.equal((await add2.done)[0], 0);
    await phone.sync();
    phone.close();
    await assert.rejects(Store.open(pb, "the wrong passphrase"), (e: { code?: string }) => e.code === "decrypt_failed");
    const reopened = await BrowserDevice.open(await Store.open(pb, "a long passphrase"));
    assert.equal(reopened.kv(reopened.spaceByName("groceries")).entry("bread")?.value, "1 loaf");

    // Words that do not match: the joiner says so, the code is burnt, nothing is added.
    const add3 = await deviceAdd(home, join(work, "code3"));
    await assert.rejects(BrowserDevice.pair(await Store.create(new MemoryBackend(), { kind: "webcrypto" }), r.baseUrl, add3.code,
      "tablet", () => false), (e: { code?: string }) => e.code === "usage");
    const [status3, , stderr3] = await add3.done;
    assert.notEqual(status3, 0, stderr3);
    await reopened.sync();
    assert.deepEqual(reopened.registry().activeDevices().map((d) => d.name).sort(), ["browser", "laptop", "phone"]);
    // A typo never reaches the relay.
    await assert.rejects(BrowserDevice.pair(await Store.create(new MemoryBackend(), { kind: "webcrypto" }), r.baseUrl,
      "7-crossover-clockwork-pilot", "tablet", () => true), (e: { code?: string }) => e.code === "usage");
  });
