/**
 * Every page of the web app (clients/web) in real Chromium, against a real
 * `sddsf relay serve` and a Python device (the real `sddsf` command and the
 * library through testkit/py_device.py) on the same account:
 *
 * 1. Pair: the Python device adds the browser (the same five words on both).
 * 2. Notes: text typed in the CodeMirror editor is the Yjs text `t` of the
 *    document `notes` the Python device reads; the Python device's edit of it
 *    appears in the editor (live). The sync line shows the live channel open,
 *    the last verified tree head and nothing pending.
 * 3. Vault: a secret written in Python is revealed on click and copied to the
 *    clipboard; never in the page's URL. A conflicting version written by the
 *    Python device is shown as a conflict, each version revealable.
 * 4. Devices: this browser and the Python device, active, with the trust
 *    score, access and factors of the relay's controller.
 * 5. Alerts: the controller's open alerts (as many as `sddsf alerts` lists).
 * 6. Audit log: fetched and verified in the browser; as many events as
 *    `sddsf audit` verifies; verified again, on top of the head kept; a relay
 *    that drops an event from it is refused (`proof_invalid`), nothing shown.
 *
 * A screenshot of each page goes to clients/ts/test-artifacts/ (or
 * SDDSF_SCREENSHOTS): page-pair, page-notes, page-vault (and
 * page-vault-conflict), page-devices,
 * page-alerts, page-audit (and page-audit-refused). Needs Chromium and the Python environment (skips
 * without, fails under SDDSF_REQUIRE_CHROMIUM=1 / SDDSF_REQUIRE_INTEROP=1).
 */

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

import type { BrowserContext, Page } from "playwright-core";

import { AppServer } from "../../testkit/appserver.js";
import { chromiumAvailable, launch, pairPage, screenshot, statusOf } from "../../testkit/browser.js";
import { sddsf } from "../../testkit/cli.js";
import { APP_DIST } from "../../testkit/kit.js";
import { LiveRelay, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

let relay: LiveRelay | null = null;
let server: AppServer | null = null;
let context: BrowserContext | null = null;
const dirs: string[] = [];

after(async () => {
  await context?.close().catch(() => undefined);
  await server?.stop();
  relay?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const editorText = (page: Page): Promise<string> => page.locator("#notes .cm-content").innerText();

/** The Python device's copy of the shared text, after it synced (until it equals `want`, a bounded number of tries). */
async function pythonText(home: string, want: string): Promise<string> {
  let text = "";
  for (let i = 0; i < 30 && text !== want; i++) {
    text = relay!.py("text", home).text;
    if (text !== want) await new Promise((r) => setTimeout(r, 500));
  }
  return text;
}

test("every page of the web app: pair, notes (CodeMirror + Yjs) both ways, vault, devices, alerts, audit", { timeout: 600_000 }, async (t) => {
  if (!chromiumAvailable(t) || !pythonAvailable(t)) return;
  assert.ok(existsSync(join(APP_DIST, "index.html")), `the app is built (${APP_DIST}: cd clients/web && npm run build)`);
  relay = await LiveRelay.start();
  server = await AppServer.start(relay.baseUrl);
  const work = mkdtempSync(join(tmpdir(), "sddsf-pages-"));
  dirs.push(work);
  const home = relay.home("laptop");
  sddsf(home, ["init", "--relay", relay.baseUrl, "--name", "laptop", "--insecure-plaintext-key", "--phrase-out", join(work, "phrase")]);
  sddsf(home, ["space", "create", "groceries"]);
  sddsf(home, ["put", "groceries", "milk", "2 l"]);
  writeFileSync(join(work, "secret"), "correct horse battery staple\n");
  sddsf(home, ["vault", "put", "wallet", "--kind", "password", "--from-file", join(work, "secret")]);
  sddsf(home, ["sync"]);

  context = await launch(dirs);
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // What the page logs and every URL it asks for: no secret may appear in either.
  const logged: string[] = [];
  const urls: string[] = [];
  page.on("console", (m) => logged.push(m.text()));
  context.on("request", (r) => urls.push(r.url()));
  await page.goto(server.url);

  // 1. Pair.
  await page.locator("#pair").waitFor({ state: "visible" });
  await screenshot(page, "page-pair");
  await pairPage(page, home, work, "browser");

  // 2. Notes: typed in the editor → the Python device; the Python device's edit → the editor.
  await page.locator('#spaces button[data-space="groceries"]').click();
  await page.locator("#notes .cm-content").click();
  await page.keyboard.type("typed in the browser");
  assert.equal(await pythonText(home, "typed in the browser"), "typed in the browser", "the Python device reads the browser's text");
  const py = relay.py("text", home, ", and a line from Python");
  assert.equal(py.text, "typed in the browser, and a line from Python");
  await page.waitForFunction(() => document.querySelector("#notes .cm-content")?.textContent ===
    "typed in the browser, and a line from Python", null, { timeout: 60_000 });
  assert.equal(await editorText(page), "typed in the browser, and a line from Python");
  assert.equal((await statusOf(page)).state, "verified");
  await page.locator('#sync-live[data-connected="true"]').waitFor({ timeout: 60_000 });
  await page.locator('#sync-pending[data-pending="0"]').waitFor({ timeout: 60_000 });
  const head = await page.locator("#sync-head").getAttribute("data-size");
  assert.ok(Number(head) >= 3, `a verified tree head of the space is shown (size ${head})`);
  assert.match(await page.locator("#sync-head").innerText(), /last verified tree head: size \d+, root [0-9a-f]{12}…/);
  await screenshot(page, "page-notes");

  // 3. Vault: reveal on click, copy; the secret is never in the URL.
  await page.click("#nav-vault");
  await page.locator('#vault-rows tr[data-item="wallet"]').waitFor();
  assert.equal(await page.locator("#vault-secret").innerText(), "", "nothing revealed before the click");
  await screenshot(page, "page-vault");
  await page.locator('#vault-rows tr[data-item="wallet"] button.reveal').click();
  assert.equal(await page.locator("#vault-secret").innerText(), "correct horse battery staple");
  await page.locator('#vault-rows tr[data-item="wallet"] button.copy').click();
  await page.locator('#vault-msg[data-copied="wallet"]').waitFor({ timeout: 30_000 });
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), "correct horse battery staple");
  assert.ok(!page.url().includes("correct"), "the secret is not in the URL");
  // A conflict: the Python device writes a version that supersedes nothing (as a device that had not seen
  // the current one would); the page shows both, each revealable.
  const fork = relay.py("vaultfork", home, "wallet", "a concurrent secret");
  assert.deepEqual(fork, { conflict: true, heads: 2 });
  const conflicted = page.locator('#vault-rows tr[data-item="wallet"][data-conflict="true"]');
  await conflicted.waitFor({ timeout: 60_000 });
  assert.equal(await page.locator("#vault-secret").innerText(), "", "a revealed secret is hidden once its item changed");
  assert.match(await conflicted.locator("td.kind").innerText(), /CONFLICT: 2 versions/);
  await screenshot(page, "page-vault-conflict");
  const revealed: string[] = [];
  for (const i of [1, 2]) {
    await conflicted.locator(`button.reveal:text-is("Reveal ${i}")`).click();
    revealed.push(await page.locator("#vault-secret").innerText());
  }
  assert.deepEqual(revealed.sort(), ["a concurrent secret", "correct horse battery staple"]);
  await page.click("#nav-devices");
  assert.equal(await page.locator("#vault-secret").innerText(), "", "leaving the page hides the secret");

  // 4. Devices: both, active, with the controller's trust and factors.
  await page.locator('#devices-msg[data-state="loaded"]').waitFor({ timeout: 60_000 });
  for (const name of ["laptop", "browser"]) {
    const tr = page.locator(`#device-rows tr[data-device="${name}"]`);
    assert.equal(await tr.getAttribute("data-status"), "active");
    assert.match(await tr.locator("td.score").innerText(), /^\d+$/, `${name} has a trust score`);
    assert.match(await tr.locator("td.access").innerText(), /^[a-z_]+/, `${name} has an access level`);
    assert.ok((await tr.locator("td.factors .factor").count()) > 0, `${name} has trust factors`);
  }
  assert.match(await page.locator('#device-rows tr[data-device="browser"] td.name').innerText(), /this browser/);
  await screenshot(page, "page-devices");

  // 5. Alerts: as the controller lists them to the Python device.
  await page.click("#nav-alerts");
  await page.locator('#alerts-msg[data-state="loaded"]').waitFor({ timeout: 60_000 });
  const alerts: Json[] = JSON.parse(sddsf(home, ["alerts", "--json"]));
  assert.equal(await page.locator("#alerts-msg").getAttribute("data-count"), String(alerts.length));
  assert.equal(await page.locator("#alert-rows tr").count(), alerts.length);
  await screenshot(page, "page-alerts");

  // 6. Audit log: verified in the browser, the same events the Python device verifies.
  await page.click("#nav-audit");
  await page.locator('#audit-result[data-state="verified"]').waitFor({ timeout: 60_000 });
  const audit: Json = JSON.parse(sddsf(home, ["audit", "--json"]));
  assert.equal(audit.verified, true);
  const rows = await page.locator("#audit-rows tr").count();
  assert.ok(rows >= 2 && rows <= audit.size, `the browser verified ${rows} events; the Python device ${audit.size}`);
  assert.ok(await page.locator('#audit-rows tr[data-kind="device_added"]').count() >= 1);
  assert.match(await page.locator("#audit-result").innerText(), /Verified ✓ \d+ audit events .* 0 earlier head/);
  await screenshot(page, "page-audit");
  // Again: the head kept from the first check must still be a prefix.
  await page.click("#nav-notes");
  await page.click("#nav-audit");
  await page.waitForFunction(() => /1 earlier head/.test(document.getElementById("audit-result")?.textContent ?? ""), null,
    { timeout: 60_000 });
  assert.equal(await page.locator("#audit-result").getAttribute("data-state"), "verified");
  // A relay that drops an event from the audit log it serves (renumbered, under its signed head): refused, nothing shown.
  server.tamper = (url, body) => {
    if (!url.startsWith("/v1/controller/audit?") || !Array.isArray(body.entries) || body.entries.length < 2) return null;
    return { ...body, entries: body.entries.slice(1).map((e: Json, i: number) => ({ ...e, seq: i })) };
  };
  await page.click("#nav-notes");
  await page.click("#nav-audit");
  await page.locator('#audit-result[data-state="refused"]').waitFor({ timeout: 60_000 });
  assert.equal(await page.locator("#audit-result").getAttribute("data-code"), "proof_invalid");
  assert.equal(await page.locator("#audit-rows tr").count(), 0, "an audit log that does not verify is not shown");
  await screenshot(page, "page-audit-refused");
  server.tamper = null;
  assert.deepEqual(errors, []);
  const passphraseOrSecrets = ["correct horse battery staple", "a concurrent secret",
    readFileSync(join(work, "phrase"), "utf8").trim().split(/\s+/).slice(0, 6).join(" ")];
  assert.ok(urls.length > 10, "the requests were recorded");
  for (const secret of passphraseOrSecrets) {
    assert.ok(!logged.some((line) => line.includes(secret)), "no secret is logged by the page");
    assert.ok(!urls.some((url) => url.includes(secret) || url.includes(encodeURIComponent(secret))),
      "no secret is put in a URL");
  }
});
