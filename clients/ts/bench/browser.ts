/**
 * The browser benchmark (issue 17): a browser device's first sync in headless
 * Chromium, of the editing trace's ops and from a snapshot, with the page's
 * JS heap; figures go to docs/performance.md ("Browser (Chromium)").
 *
 *     npm run bench:browser -- [--repeat 3] [--trace PATH] [--edits 259778] [--debounce 100] [--profile]
 *
 * The trace: --trace PATH, else SDDSF_TRACE, else the trace bench's default
 * (shared/traces/automerge-paper.json.gz beside the checkout). --profile saves
 * a CPU profile of the first run of each mode (bench/dist/*.cpuprofile) and
 * prints the functions with the most self time.
 *
 * 1. A real `sddsf relay serve` (SQLite, loopback, the trace bench's lifted
 *    rate limits); Python device A (bench/py_bench.py) types the
 *    automerge-paper trace as bench/trace_sync.py does (2,598 ops with the
 *    default debounce of 100 edits per op) and never snapshots on its own.
 * 2. Replay, REPEAT times: a fresh Chromium profile loads the bench page (the
 *    library bundled with esbuild, served with the relay from one origin),
 *    pairs a new device with A (pairing v2 against A's `add_device`), and its
 *    first `sync()` is timed: every op verified (signatures, op ids, chains,
 *    the leaves against the signed tree head), decrypted, applied to Yjs,
 *    stored in IndexedDB. Its text must equal A's. JS heap used (after a
 *    forced GC) before and after the sync.
 * 3. Same-run baselines: plain Yjs `applyUpdate` of the final state in the
 *    page, and a fresh Python device's first sync (replay) of the same space.
 * 4. A writes a snapshot; step 2 and the Python baseline again, starting from it.
 *
 * Not part of `npm test`. Needs the Python environment (.venv at the
 * repository root) and Chromium (/usr/bin/chromium or SDDSF_CHROMIUM).
 */

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { build } from "esbuild";
import type { BrowserContext, Page } from "playwright-core";

import { AppServer } from "../testkit/appserver.js";
import { launch } from "../testkit/browser.js";
import { PACKAGE_ROOT, REPO_ROOT } from "../testkit/kit.js";
import { LiveRelay, PYTHON } from "../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

const { values: opts } = parseArgs({ options: {
  repeat: { type: "string", default: "3" },
  trace: { type: "string" },
  edits: { type: "string", default: "259778" },
  debounce: { type: "string", default: "100" },
  profile: { type: "boolean", default: false },
} });
const REPEAT = Number(opts.repeat);
// The registry allows 16 device additions a day: 2 × REPEAT paired browsers and 2 Python devices.
if (!(REPEAT >= 1 && REPEAT <= 7)) throw new Error("--repeat: 1 to 7 (each run pairs a new device; the registry allows 16 a day)");
const HELPER = join(PACKAGE_ROOT, "bench", "py_bench.py");
const OUT = join(PACKAGE_ROOT, "bench", "dist");
const STEP_TIMEOUT_MS = 900_000;

function pyEnv(): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SDDSF_")));
  const trace = opts.trace ?? process.env.SDDSF_TRACE;
  return { ...env, PYTHONPATH: join(REPO_ROOT, "src"), ...(trace ? { SDDSF_TRACE: trace } : {}) };
}

function py(work: string, ...args: string[]): Json {
  const r = spawnSync(PYTHON, [HELPER, ...args], { cwd: work, encoding: "utf8", timeout: STEP_TIMEOUT_MS, env: pyEnv() });
  assert.equal(r.status, 0, `py_bench.py ${args[0]} failed:\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!);
}

/**
 * Bundle the page as the web app is bundled (esm, minified), but keep the
 * names (a profile names the library's functions).
 */
async function bundle(): Promise<void> {
  mkdirSync(OUT, { recursive: true });
  await build({ entryPoints: [join(PACKAGE_ROOT, "bench", "page.ts")], bundle: true, format: "esm", platform: "browser",
    target: "es2022", minifyWhitespace: true, minifySyntax: true, outfile: join(OUT, "page.js"), logLevel: "warning" });
  copyFileSync(join(PACKAGE_ROOT, "bench", "index.html"), join(OUT, "index.html"));
}

async function heapUsed(page: Page): Promise<number> {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("HeapProfiler.collectGarbage");
  await cdp.send("Performance.enable");
  const { metrics } = await cdp.send("Performance.getMetrics");
  await cdp.detach();
  return metrics.find((m) => m.name === "JSHeapUsedSize")!.value;
}

/** Self time by function (top N) of a CPU profile. */
function topSelf(profile: Json, n = 12): [string, number][] {
  const byId = new Map<number, Json>(profile.nodes.map((node: Json) => [node.id, node]));
  const self = new Map<string, number>();
  const deltas: number[] = profile.timeDeltas;
  profile.samples.forEach((id: number, i: number) => {
    const f = byId.get(id).callFrame;
    const key = `${f.functionName || "(anonymous)"} ${f.url.split("/").at(-1)}:${f.lineNumber + 1}:${f.columnNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + (deltas[i] ?? 0) / 1000);
  });
  return [...self].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => [k, Math.round(v)]);
}

interface Run {
  total_ms: number;
  stages: Record<string, number>;
  heap_before: number;
  heap_after: number;
  applied: number;
  requests: number;
  snapshots: number;
  plain_ms: number;
}

/** One fresh browser device: pair, time its first sync, check its text, measure the heap. */
async function browserRun(server: AppServer, work: string, space: string, expected: string, name: string,
  profiles: string[], profile: boolean): Promise<Run> {
  const context: BrowserContext = await launch(profiles);
  try {
    const page = await context.newPage();
    page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
    await page.goto(`${server.url}/index.html`);
    await page.waitForFunction(() => (globalThis as Json).benchReady === true);
    const codeFile = join(work, `code-${name}`);
    const helper = spawn(PYTHON, [HELPER, "pair", work, codeFile], { cwd: work, env: pyEnv(), stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    helper.stdout.on("data", (d: Buffer) => (out += d.toString()));
    helper.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const done = new Promise<number | null>((r) => helper.on("close", r));
    const deadline = Date.now() + 60_000;
    while (!existsSync(codeFile) || readFileSync(codeFile, "utf8").trim() === "") {
      if (Date.now() > deadline || helper.exitCode !== null) {
        if (helper.exitCode === null && helper.pid !== undefined) process.kill(helper.pid, "SIGTERM");
        throw new Error(`py_bench.py pair showed no code:\n${out}\n${err}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const code = readFileSync(codeFile, "utf8").trim();
    let joined: Json;
    try {
      joined = await page.evaluate(([c, n]) => (globalThis as Json).bench.pair(location.origin, c, n), [code, name]);
    } catch (e) {
      await Promise.race([done, new Promise((r) => setTimeout(r, 10_000))]);
      if (helper.exitCode === null && helper.pid !== undefined) process.kill(helper.pid, "SIGTERM");
      throw new Error(`the page's pairing failed: ${String(e)}\npy_bench.py pair:\n${out}\n${err}`);
    }
    assert.equal(await done, 0, `py_bench.py pair failed:\n${out}\n${err}`);
    const paired = JSON.parse(out.trim().split("\n").at(-1)!);
    assert.deepEqual(joined.words, paired.words, "both sides saw the same words");
    assert.equal(joined.deviceId, paired.device_id);

    const heapBefore = await heapUsed(page);
    let cdp = null;
    if (profile) {
      cdp = await page.context().newCDPSession(page);
      await cdp.send("Profiler.enable");
      await cdp.send("Profiler.setSamplingInterval", { interval: 200 });
      await cdp.send("Profiler.start");
    }
    const r = await page.evaluate((s) => (globalThis as Json).bench.sync(s), space);
    if (cdp !== null) {
      const { profile: prof } = await cdp.send("Profiler.stop");
      writeFileSync(join(OUT, `${name}.cpuprofile`), JSON.stringify(prof));
      console.log(`  profile (${name}), self time ms:`);
      for (const [k, v] of topSelf(prof)) console.log(`    ${String(v).padStart(6)}  ${k}`);
      await cdp.detach();
    }
    assert.equal(r.text, expected, "the browser device's text equals the Python device's");
    assert.deepEqual(r.alerts, []);
    assert.equal(r.skipped, 0);
    const heapAfter = await heapUsed(page);
    const plain = await page.evaluate((n) => (globalThis as Json).bench.plain(n), 5);
    assert.ok(plain.same, "plain Yjs reads the same text");
    return { total_ms: r.total_ms, stages: r.stages, heap_before: heapBefore, heap_after: heapAfter, applied: r.applied,
      requests: r.requests, snapshots: r.snapshots, plain_ms: median(plain.ms) };
  } finally {
    await context.close();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const fmt = (xs: number[], digits = 0): string =>
  `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`;
const mib = (b: number): number => b / (1 << 20);

function summarise(label: string, runs: Run[], pyMs: number[]): Json {
  const total = runs.map((r) => r.total_ms);
  console.log(`\n${label}: ${runs.length} browser devices, ops applied per device: ${runs.map((r) => r.applied).join(", ")}, ` +
    `relay requests per sync: ${runs.map((r) => r.requests).join(", ")}`);
  console.log(`  browser first sync, ms: median ${fmt(total)}`);
  for (const stage of Object.keys(runs[0]!.stages)) {
    console.log(`    ${stage.padEnd(15)} ${fmt(runs.map((r) => r.stages[stage]!))}`);
  }
  console.log(`  Python device first sync, ms: median ${fmt(pyMs)}  -> browser / Python: ${(median(total) / median(pyMs)).toFixed(2)}`);
  console.log(`  plain Yjs applyUpdate of the final state in the page, ms: median ${fmt(runs.map((r) => r.plain_ms), 2)}`);
  console.log(`  JS heap used after GC, MiB: before sync ${fmt(runs.map((r) => mib(r.heap_before)), 1)}, ` +
    `after ${fmt(runs.map((r) => mib(r.heap_after)), 1)}, growth ${fmt(runs.map((r) => mib(r.heap_after - r.heap_before)), 1)}`);
  return { label, runs, python_ms: pyMs };
}

async function main(): Promise<void> {
  assert.ok(existsSync(PYTHON), `the Python environment (${PYTHON}) is missing`);
  await bundle();
  // Measure sync, not the relay's security controller (as bench/load.py): a
  // policy that never restricts, since pairing REPEAT devices in a minute is a
  // burst that would make device A read-only.
  const policy = join(OUT, "controller-policy.toml");
  writeFileSync(policy, "[thresholds]\nfull = 0\nread_only = 0\n");
  const relay = await LiveRelay.start({ SDDSF_RELAY_POLICY_FILE: policy, SDDSF_RELAY_RATE_OPS_PER_S: "1e9", SDDSF_RELAY_RATE_OPS_BURST: "1e9",
    SDDSF_RELAY_RATE_DEVICE_PER_S: "1e6", SDDSF_RELAY_RATE_DEVICE_BURST: "1e6",
    SDDSF_RELAY_MAX_REQUEST_BYTES: String(64 << 20) });
  const profiles: string[] = [];
  let server: AppServer | null = null;
  try {
    server = await AppServer.start(relay.baseUrl, OUT);
    const work = relay.work;
    const setup = py(work, "setup", work, relay.baseUrl, opts.edits!, opts.debounce!);
    console.log(`workload: ${setup.edits} edits, ${setup.ops} ops (debounce ${opts.debounce}), log size ${setup.log_size}, ` +
      `state ${setup.state_bytes} bytes, text ${setup.text_chars} chars, matches the trace's endContent: ${setup.matches_end}, ` +
      `typed by device A in ${setup.typed_s.toFixed(1)} s`);
    const expected = readFileSync(join(work, "expected.txt"), "utf8");
    const results: Json[] = [];
    for (const mode of ["replay", "snapshot"] as const) {
      if (mode === "snapshot") console.log(`\nsnapshot written by device A at log size ${py(work, "snapshot", work).size}`);
      const runs: Run[] = [];
      for (let i = 0; i < REPEAT; i++) {
        const run = await browserRun(server, work, setup.space, expected, `browser-${mode}-${i}`, profiles,
          opts.profile && i === 0);
        assert.equal(run.snapshots, mode === "snapshot" ? 1 : 0, `a ${mode} start applied ${run.snapshots} snapshots`);
        runs.push(run);
        console.log(`  ${mode} #${i + 1}: ${run.total_ms.toFixed(0)} ms, ${run.applied} ops applied, heap ${mib(run.heap_after).toFixed(1)} MiB`);
      }
      const pyMs: number[] = py(work, "pull", work, mode, String(REPEAT)).ms;
      results.push(summarise(mode === "replay" ? `First sync replaying the ${setup.ops}-op log` : "First sync from the snapshot",
        runs, pyMs));
    }
    writeFileSync(join(OUT, "results.json"), JSON.stringify({ setup, results }, null, 2));
    console.log(`\nraw figures: ${join(OUT, "results.json")}`);
  } finally {
    await server?.stop();
    relay.stop();
    for (const p of profiles) rmSync(p, { recursive: true, force: true });
  }
}

await main();
