/**
 * The web app in real Chromium (Debian's `chromium`, driven by playwright-core)
 * against a real `sddsf relay serve` and a Python device (the real `sddsf`
 * command) on the same account. The app and the relay share one origin
 * (testkit/appserver.ts forwards /v1/ to the relay, as a reverse proxy would).
 *
 * 1. Pairing: `sddsf device add` shows a code; the browser joins with it and
 *    shows the same five words as the Python side, and the person (the test)
 *    confirms them.
 * 2. Sync: the browser lists the space, reads the Python device's values and a
 *    vault secret, every proof verified (the status says so).
 * 3. An edit in the browser is read by Python (authorship verified there).
 * 4. An edit in Python appears in the browser live (WebSocket hint, verified pull).
 * 5. A reload: the device comes back from IndexedDB (encrypted, its storage key
 *    under a non-extractable WebCrypto key) and syncs on.
 * 6. A relay that rewrites history (drops an op from the log it serves) is
 *    refused, visibly (`proof_invalid`), and the dropped edit's successors are
 *    not shown.
 * 7. A second browser device whose store is under a passphrase (Argon2id in
 *    the page) pairs, asks for the passphrase after a reload (a wrong one is
 *    refused), and a shared text (Yjs, in the CodeMirror editor) typed in the
 *    first page appears live in the second.
 *
 * What the page shows at the refusal and at the end is saved as
 * app-refused.png and app-verified.png in clients/ts/test-artifacts/ (or
 * SDDSF_SCREENSHOTS=DIR).
 *
 * Chromium: /usr/bin/chromium or SDDSF_CHROMIUM; without it the test skips,
 * and fails under SDDSF_REQUIRE_CHROMIUM=1. It also needs the Python
 * environment (SDDSF_REQUIRE_INTEROP=1 makes its absence a failure).
 */

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

import type { BrowserContext } from "playwright-core";

import { AppServer } from "../../testkit/appserver.js";
import { chromiumAvailable, kvValue, launch, screenshot, statusOf } from "../../testkit/browser.js";
import { deviceAdd, getJson, sddsf } from "../../testkit/cli.js";
import { APP_DIST } from "../../testkit/kit.js";
import { LiveRelay, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

let relay: LiveRelay | null = null;
let server: AppServer | null = null;
let context: BrowserContext | null = null;
const profiles: string[] = [];

after(async () => {
  await context?.close().catch(() => undefined);
  await server?.stop();
  relay?.stop();
  for (const p of profiles) rmSync(p, { recursive: true, force: true });
});

test("the web app pairs, syncs, edits live and refuses a tampering relay, in Chromium", { timeout: 600_000 }, async (t) => {
  if (!chromiumAvailable(t) || !pythonAvailable(t)) return;
  assert.ok(existsSync(join(APP_DIST, "index.html")), "the app is built (cd clients/web && npm run build)");
  relay = await LiveRelay.start();
  server = await AppServer.start(relay.baseUrl);
  const home = relay.home("laptop");
  const work = mkdtempSync(join(tmpdir(), "sddsf-app-"));
  profiles.push(work);
  sddsf(home, ["init", "--relay", relay.baseUrl, "--name", "laptop", "--insecure-plaintext-key", "--phrase-out", join(work, "phrase")]);
  sddsf(home, ["space", "create", "groceries"]);
  sddsf(home, ["put", "groceries", "milk", "2 l"]);
  writeFileSync(join(work, "secret"), "correct horse battery staple\n");
  sddsf(home, ["vault", "put", "wallet", "--kind", "password", "--from-file", join(work, "secret")]);
  sddsf(home, ["sync"]);

  context = await launch(profiles);
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(server.url);

  // 1. Pairing with the code the Python device shows; the same words on both screens.
  const add = await deviceAdd(home, join(work, "code"));
  await page.fill("#pair-code", add.code);
  await page.fill("#pair-name", "browser");
  await page.click("#pair-go");
  await page.locator("#pair-words").waitFor({ state: "visible", timeout: 60_000 });
  const words = (await page.locator("#pair-words").innerText()).trim().split(" ");
  assert.deepEqual(words, await add.words, "the browser shows the words the Python device shows");
  await page.click("#pair-yes");
  await page.locator("#app").waitFor({ state: "visible", timeout: 60_000 });
  assert.equal((await add.done)[0], 0);

  // 2. Verified sync: the space, the Python device's value, the vault secret.
  await page.locator('#status[data-state="verified"]').waitFor({ timeout: 60_000 });
  assert.match((await statusOf(page)).text, /Verified ✓ registry of \d+ entries from the pinned account key/);
  await page.locator('#spaces button[data-space="groceries"]').click();
  assert.equal(await kvValue(page, "milk"), "2 l");
  assert.match(await page.locator('#kv-rows tr[data-key="milk"] td.author').innerText(), /laptop ✓/);
  await page.click("#nav-vault");
  await page.locator('#vault-rows tr[data-item="wallet"] button.reveal').click();
  assert.equal(await page.locator("#vault-secret").innerText(), "correct horse battery staple");
  await page.click("#nav-notes");

  // 3. An edit in the browser, read by Python with its authorship verified.
  await page.fill("#kv-key", "bread");
  await page.fill("#kv-value", "1 loaf");
  await page.click("#kv-put");
  await page.waitForFunction(() => /pushed [1-9]/.test(document.getElementById("status")?.textContent ?? ""), null,
    { timeout: 60_000 });
  assert.deepEqual(getJson(home, "groceries", "bread"), { key: "bread", value: "1 loaf" });
  const bread = relay.py("read", home, "bread");
  assert.equal(bread.verified, true, JSON.stringify(bread));
  assert.equal(bread.authors.length, 1);

  // 4. An edit in Python, shown in the browser live (no click: the WebSocket hint, then a verified pull).
  sddsf(home, ["put", "groceries", "tea", "green"]);
  sddsf(home, ["sync"]);
  assert.equal(await kvValue(page, "tea"), "green");
  assert.equal((await statusOf(page)).state, "verified");

  // 5. A reload: the device comes back from IndexedDB and syncs on.
  await page.reload();
  await page.locator('#status[data-state="verified"]').waitFor({ timeout: 60_000 });
  await page.locator('#spaces button[data-space="groceries"]').click();
  assert.equal(await kvValue(page, "bread"), "1 loaf");
  const stored: Json = await page.evaluate(async () => {
    const db: IDBDatabase = await new Promise((res, rej) => {
      const r = indexedDB.open("sddsf");
      r.onsuccess = () => res(r.result);
      r.onerror = () => rej(r.error);
    });
    const get = (store: string, key: string): Promise<unknown> => new Promise((res) => {
      const r = db.transaction(store).objectStore(store).get(key);
      r.onsuccess = () => res(r.result);
    });
    const wrapping = (await get("meta", "wrapping-key")) as CryptoKey;
    const values: string[] = await new Promise((res) => {
      const r = db.transaction("values").objectStore("values").getAll();
      r.onsuccess = () => res((r.result as ArrayBuffer[]).map((b) => new TextDecoder("latin1").decode(b)));
    });
    return { extractable: wrapping.extractable, type: wrapping.type, plain: values.some((v) => /2 l|1 loaf|correct horse|groceries/.test(v)) };
  });
  assert.deepEqual(stored, { extractable: false, type: "secret", plain: false }, "values encrypted; the wrapping key is not extractable");

  // 6. A relay that rewrites history: the log it serves loses an op. The browser refuses it, visibly.
  server.tamper = (url, body) => {
    if (!/\/v1\/spaces\/[^/]+\/ops\?/.test(url) || !Array.isArray(body.ops) || body.ops.length === 0) return null;
    // Drop the first op of every page and renumber: history rewritten under a valid-looking answer.
    const ops = body.ops.slice(1).map((o: Json, i: number) => ({ ...o, offset: body.ops[i].offset }));
    return { ...body, ops };
  };
  sddsf(home, ["put", "groceries", "jam", "plum"]);
  sddsf(home, ["sync"]);
  await page.locator('#status[data-state="refused"]').waitFor({ timeout: 60_000 });
  const refused = await statusOf(page);
  assert.equal(refused.code, "proof_invalid", refused.text);
  assert.match(refused.text, /Refused ✗ \[proof_invalid\]/);
  assert.equal(await page.locator('#kv-rows tr[data-key="jam"]').count(), 0, "nothing from the rewritten log is shown");
  await screenshot(page, "app-refused");
  server.tamper = null;
  await page.click("#sync");
  assert.equal(await kvValue(page, "jam"), "plum", "the honest log verifies again");

  // 7. A second browser device, its store under a passphrase (Argon2id in the page): it pairs,
  //    asks for the passphrase after a reload, and a shared text typed in one page appears in the other.
  const second = await launch(profiles);
  try {
    const tab = await second.newPage();
    tab.on("pageerror", (e) => errors.push(String(e)));
    await tab.goto(server.url);
    const add2 = await deviceAdd(home, join(work, "code2"));
    await tab.fill("#pair-code", add2.code);
    await tab.fill("#pair-name", "tablet");
    await tab.selectOption("#pair-protect", "passphrase");
    await tab.fill("#pair-pass", "a long passphrase");
    await tab.click("#pair-go");
    await tab.locator("#pair-words").waitFor({ state: "visible", timeout: 60_000 });
    assert.deepEqual((await tab.locator("#pair-words").innerText()).trim().split(" "), await add2.words);
    await tab.click("#pair-yes");
    await tab.locator('#status[data-state="verified"]').waitFor({ timeout: 60_000 });
    assert.equal((await add2.done)[0], 0);
    await tab.reload();
    await tab.locator("#unlock").waitFor({ state: "visible", timeout: 30_000 });
    await tab.fill("#unlock-pass", "not the passphrase");
    await tab.click("#unlock-go");
    await tab.locator("#unlock-msg.bad").waitFor({ timeout: 60_000 });
    assert.match(await tab.locator("#unlock-msg").innerText(), /wrong passphrase/);
    await tab.fill("#unlock-pass", "a long passphrase");
    await tab.click("#unlock-go");
    await tab.locator('#status[data-state="verified"]').waitFor({ timeout: 60_000 });
    await tab.locator('#spaces button[data-space="groceries"]').click();
    assert.equal(await kvValue(tab, "bread"), "1 loaf");
    await page.locator("#notes .cm-content").click();
    await page.keyboard.type("shopping on friday");
    await tab.waitForFunction(() => document.querySelector("#notes .cm-content")?.textContent === "shopping on friday",
      null, { timeout: 60_000 });
    assert.equal((await statusOf(tab)).state, "verified");
  } finally {
    await second.close();
  }
  await screenshot(page, "app-verified");
  assert.deepEqual(errors, []);
});
