/**
 * The web app in real Chromium against a lying relay: the project's
 * malicious-relay harness (src/sddsf/testing/malicious_relay.py) in front of a
 * real relay app, served to the browser with the app on one origin
 * (testkit/py_malicious_front.py, through `sddsf web`'s front). A Python device
 * (the real `sddsf` CLI) writes through the same relay; the harness lies only
 * to the browser.
 *
 * 1. A tampered op (one ciphertext bit flipped, its leaf hash kept): refused
 *    `proof_invalid`, shown on the page, the op's value not shown; the honest
 *    log then verifies.
 * 2. A rollback (the log as it was, under the head the relay signed then):
 *    `log_rollback`, nothing newer shown.
 * 3. A split view: the relay forks the log (the Python device on one branch,
 *    the browser on the other), then folds the Python device's branch into
 *    the browser's; the Python device's op carries a head the browser's log
 *    never had: `split_view`, its edits not shown.
 * 4. Revocation (a second account, no lies): `sddsf device revoke` ends the
 *    browser's live channel and session (shown: `revoked`), and what the
 *    Python device writes afterwards never reaches the page.
 *
 * Screenshots of each page go to clients/ts/test-artifacts/ (or
 * SDDSF_SCREENSHOTS). Needs Chromium and the Python environment (skips
 * without, fails under SDDSF_REQUIRE_CHROMIUM=1 / SDDSF_REQUIRE_INTEROP=1).
 */

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

import type { BrowserContext, Page } from "playwright-core";

import { chromiumAvailable, kvValue, launch, pairPage, refusedWith, screenshot, statusOf } from "../../testkit/browser.js";
import { sddsf } from "../../testkit/cli.js";
import { MaliciousFront } from "../../testkit/front.js";
import { APP_DIST } from "../../testkit/kit.js";
import { pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

let front: MaliciousFront | null = null;
const contexts: BrowserContext[] = [];
const dirs: string[] = [];

after(async () => {
  for (const c of contexts) await c.close().catch(() => undefined);
  front?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function account(name: string): Promise<{ home: string; work: string }> {
  const work = mkdtempSync(join(tmpdir(), "sddsf-attack-"));
  dirs.push(work);
  const home = join(work, name);
  sddsf(home, ["init", "--relay", front!.url, "--name", name, "--insecure-plaintext-key", "--phrase-out", join(work, "phrase")]);
  sddsf(home, ["space", "create", "groceries"]);
  sddsf(home, ["put", "groceries", "milk", "2 l"]);
  sddsf(home, ["sync"]);
  return { home, work };
}

async function browserPage(errors: string[]): Promise<Page> {
  const context = await launch(dirs);
  contexts.push(context);
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(front!.url);
  return page;
}

function ids(home: string): { browser: string; laptop: string; space: string } {
  const status: Json = JSON.parse(sddsf(home, ["status", "--json"]));
  const spaces: Json[] = JSON.parse(sddsf(home, ["space", "list", "--json"]));
  return { laptop: status.device_id, browser: status.devices.find((d: Json) => d.name === "browser").id,
    space: spaces.find((s) => s.name === "groceries").id };
}

async function put(home: string, key: string, value: string): Promise<void> {
  sddsf(home, ["put", "groceries", key, value]);
  sddsf(home, ["sync"]);
}

async function openSpace(page: Page): Promise<void> {
  await page.locator('#spaces button[data-space="groceries"]').click();
  assert.equal(await kvValue(page, "milk"), "2 l");
}

async function verifiedWith(page: Page, key: string, value: string): Promise<void> {
  await page.click("#sync");
  assert.equal(await kvValue(page, key), value);
  assert.equal((await statusOf(page)).state, "verified");
}

const absent = async (page: Page, key: string): Promise<number> => page.locator(`#kv-rows tr[data-key="${key}"]`).count();

test("a lying relay is refused on the page: tampered op, rollback, split view", { timeout: 600_000 }, async (t) => {
  if (!chromiumAvailable(t) || !pythonAvailable(t)) return;
  assert.ok(existsSync(join(APP_DIST, "index.html")), `the app is built (${APP_DIST})`);
  front = await MaliciousFront.start(APP_DIST);
  const { home, work } = await account("laptop");
  const errors: string[] = [];
  const page = await browserPage(errors);
  await screenshot(page, "pair");
  await pairPage(page, home, work, "browser", "pair-words");
  await openSpace(page);
  await screenshot(page, "verified");
  const id = ids(home);

  // 1. A tampered op: one ciphertext bit of the next op flipped (set before it is
  //    written: the browser pulls it at once, on the live channel's hint).
  const size1 = (await front.control({ op: "size", space: id.space })).size;
  await front.control({ op: "attack", kind: "rewrite", offset: size1, victims: [id.browser], space: id.space });
  await put(home, "jam", "plum");
  const tampered = await refusedWith(page, "proof_invalid");
  assert.match(tampered, /Refused ✗ \[proof_invalid\].*nothing unverified was applied/);
  assert.equal(await absent(page, "jam"), 0, "the tampered op's value is not shown");
  assert.ok((await front.control({ op: "served" })).served > 0);
  await screenshot(page, "refused-tampered-op");
  await front.control({ op: "honest" });
  await verifiedWith(page, "jam", "plum");

  // 2. A rollback: the browser verified size n+1; the relay serves the log at size n.
  const before = (await front.control({ op: "size", space: id.space })).size;
  await put(home, "tea", "green");
  await verifiedWith(page, "tea", "green");
  await front.control({ op: "attack", kind: "rollback", to_size: before, victims: [id.browser], space: id.space });
  await put(home, "cake", "lemon"); // the browser pulls on the hint, and is served the old log
  const rolled = await refusedWith(page, "log_rollback");
  assert.match(rolled, /Refused ✗ \[log_rollback\]/);
  assert.equal(await absent(page, "cake"), 0);
  assert.equal(await kvValue(page, "tea"), "green", "what was verified stays");
  await screenshot(page, "refused-rollback");
  await front.control({ op: "honest" });
  await verifiedWith(page, "cake", "lemon");

  // 3. A split view: the Python device is moved to a fork of the log; each side writes;
  //    the relay then folds the fork into the browser's log.
  await front.control({ op: "fork" });
  await front.control({ op: "route", device: id.laptop, backend: "fork" });
  await page.fill("#kv-key", "bread");
  await page.fill("#kv-value", "1 loaf");
  await page.click("#kv-put");
  await page.waitForFunction(() => /pushed [1-9]/.test(document.getElementById("status")?.textContent ?? ""), null,
    { timeout: 60_000 });
  await put(home, "p1", "fork one");
  await put(home, "p2", "fork two"); // its `seen` head is the fork's, after p1
  assert.equal((await front.control({ op: "merge", space: id.space, src: "fork", dst: "main" })).appended, 2);
  await front.control({ op: "route", device: id.laptop, backend: "main" });
  const split = await refusedWith(page, "split_view");
  assert.match(split, /Refused ✗ \[split_view\]/);
  assert.equal(await absent(page, "p1"), 0, "the other branch's edits are not shown");
  assert.equal(await absent(page, "p2"), 0);
  await screenshot(page, "refused-split-view");
  // A fork is permanent evidence: refused again.
  await refusedWith(page, "split_view");
  assert.deepEqual(errors, []);
});

test("revoking the browser from Python ends its session and live channel; later writes never reach it", { timeout: 600_000 }, async (t) => {
  if (!chromiumAvailable(t) || !pythonAvailable(t)) return;
  front ??= await MaliciousFront.start(APP_DIST);
  const { home, work } = await account("desk");
  const errors: string[] = [];
  const page = await browserPage(errors);
  await pairPage(page, home, work, "browser");
  await openSpace(page);
  await put(home, "before", "seen");
  assert.equal(await kvValue(page, "before"), "seen", "live while trusted");

  sddsf(home, ["device", "revoke", "browser", "--yes"]);
  // The relay closes the live channel (4403): the page says so without a click.
  await page.locator('#status[data-state="refused"][data-code="revoked"]').waitFor({ timeout: 60_000 });
  assert.match((await statusOf(page)).text, /revoked/);
  await screenshot(page, "revoked");
  await put(home, "after", "secret plan");
  const again = await refusedWith(page, "revoked");
  assert.match(again, /revoked/);
  assert.equal(await absent(page, "after"), 0, "a write after the revocation never reaches the revoked browser");
  assert.equal(await kvValue(page, "before"), "seen");
  assert.deepEqual(errors, []);
});
