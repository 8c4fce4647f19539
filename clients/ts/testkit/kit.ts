/**
 * Test helpers, outside test/ so that Node's test runner does not run them as
 * tests: where the project's own vectors and the external vectors are, and
 * the skip-or-fail rule for a missing external folder (as tests/vectorkit.py:
 * with SDDSF_REQUIRE_VECTORS=1 a missing folder fails the test).
 */

import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestContext } from "node:test";

import { SddsfError } from "../src/errors.js";

/** clients/ts (the package root), found from this compiled file (dist/testkit/kit.js). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The repository root. */
export const REPO_ROOT = resolve(PACKAGE_ROOT, "..", "..");
/** The project's own vectors. */
export const OWN_VECTORS = join(REPO_ROOT, "tests", "vectors");

/** The external vectors folder (SDDSF_VECTORS_DIR, else ../shared/vectors beside the checkout), or null. */
export function sharedVectorsDir(): string | null {
  const override = process.env.SDDSF_VECTORS_DIR;
  const path = override ? resolve(override) : resolve(REPO_ROOT, "..", "shared", "vectors");
  return existsSync(path) && statSync(path).isDirectory() ? path : null;
}

/**
 * `<vectors>/<subdir>`, or: skip the test (fail it under SDDSF_REQUIRE_VECTORS=1)
 * and return null.
 */
export function requireVectors(t: TestContext, subdir: string): string | null {
  const base = sharedVectorsDir();
  if (base !== null && existsSync(join(base, subdir))) return join(base, subdir);
  const reason = `external vectors not found (${subdir}); set SDDSF_VECTORS_DIR or place the shared/ folder beside the checkout`;
  if (process.env.SDDSF_REQUIRE_VECTORS === "1") {
    throw new Error(`${reason} -- SDDSF_REQUIRE_VECTORS=1 makes this a failure`);
  }
  t.skip(reason);
  return null;
}

/** Every `*.json` file under `dir`, as paths relative to `base`, sorted. */
export function jsonFiles(dir: string, base: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith(".json")) out.push(relative(base, p));
    }
  };
  walk(dir);
  return out.sort();
}

/** Parse a JSON file. */
export function loadJson<T = any>(path: string): T {
  return JSON.parse(readFileSync(path, "utf8")) as T;
}

/** Run `fn` and return the SDDSF error code it throws (throws if it throws nothing). */
export function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof SddsfError) return e.code;
    throw e;
  }
  throw new Error("expected an SddsfError, nothing was thrown");
}

/** Await `p` and check it rejects with the SDDSF error `code` (a resolved promise or another error fails). */
export async function expectCode(code: string, p: Promise<unknown>): Promise<void> {
  let got = "none";
  try {
    await p;
  } catch (e) {
    got = (e as { code?: string }).code ?? String(e);
  }
  if (got !== code) throw new Error(`expected the error code ${code}, got ${got}`);
}

/** The built web app the browser tests serve (clients/web: `npm run build` there). */
export const APP_DIST = join(REPO_ROOT, "clients", "web", "dist");
