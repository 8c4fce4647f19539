/**
 * Chromium for the browser tests (Debian's `chromium` driven by playwright-core;
 * never a downloaded browser), the web app's pairing steps, and screenshots
 * saved as test artifacts: `clients/ts/test-artifacts/` (gitignored), or
 * SDDSF_SCREENSHOTS=DIR.
 */

import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";

import { chromium, type BrowserContext, type Page } from "playwright-core";

import { deviceAdd } from "./cli.js";
import { PACKAGE_ROOT } from "./kit.js";

export const CHROMIUM = process.env.SDDSF_CHROMIUM ?? "/usr/bin/chromium";
export const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
/** Where screenshots go. */
export const ARTIFACTS = process.env.SDDSF_SCREENSHOTS ?? join(PACKAGE_ROOT, "test-artifacts");

/** Whether Chromium is installed; if not, skip (fail under SDDSF_REQUIRE_CHROMIUM=1). */
export function chromiumAvailable(t: TestContext): boolean {
  if (existsSync(CHROMIUM)) return true;
  const reason = `Chromium is not installed at ${CHROMIUM} (apt-get install chromium, or set SDDSF_CHROMIUM)`;
  if (process.env.SDDSF_REQUIRE_CHROMIUM === "1") throw new Error(`${reason} -- SDDSF_REQUIRE_CHROMIUM=1 makes this a failure`);
  t.skip(reason);
  return false;
}

/** A headless Chromium with a fresh profile (a directory the caller removes). */
export async function launch(profiles: string[]): Promise<BrowserContext> {
  const profile = mkdtempSync(join(tmpdir(), "sddsf-chromium-"));
  profiles.push(profile);
  return chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: FLAGS });
}

/** Save what the page shows as ARTIFACTS/NAME.png. */
export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** The verification status line: state (verified, refused), code and text. */
export async function statusOf(page: Page): Promise<{ state: string; code: string; text: string }> {
  return page.$eval("#status", (el) => ({ state: (el as HTMLElement).dataset.state ?? "", code: (el as HTMLElement).dataset.code ?? "",
    text: el.textContent ?? "" }));
}

/** The value cell of KEY in the open space's key-value table (waits for it). */
export async function kvValue(page: Page, key: string, timeout = 60_000): Promise<string> {
  const cell = page.locator(`#kv-rows tr[data-key="${key}"] td.value`);
  await cell.waitFor({ timeout });
  return cell.innerText();
}

/** Pair the page (showing the pairing form) with HOME's account, as `name`; waits for a verified sync. */
export async function pairPage(page: Page, home: string, work: string, name: string, shot?: string): Promise<void> {
  const add = await deviceAdd(home, join(work, `code-${name}`));
  await page.fill("#pair-code", add.code);
  await page.fill("#pair-name", name);
  await page.click("#pair-go");
  await page.locator("#pair-words").waitFor({ state: "visible", timeout: 60_000 });
  const words = (await page.locator("#pair-words").innerText()).trim().split(" ");
  assert.deepEqual(words, await add.words, "the browser shows the words the Python device shows");
  if (shot) await screenshot(page, shot);
  await page.click("#pair-yes");
  await page.locator('#status[data-state="verified"]').waitFor({ timeout: 60_000 });
  assert.equal((await add.done)[0], 0);
}

/** Wait until the status line is refused with CODE (after clicking "Sync now" if `click`). */
export async function refusedWith(page: Page, code: string, click = true): Promise<string> {
  if (click) await page.click("#sync");
  await page.locator(`#status[data-state="refused"][data-code="${code}"]`).waitFor({ timeout: 60_000 });
  return (await statusOf(page)).text;
}
