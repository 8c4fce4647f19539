/**
 * A real `sddsf relay serve` process for the interop tests: free loopback
 * port, own work directory and key file, health wait, stopped by its process
 * id. And the Python device helper (py_device.py), one JSON line per run.
 */

import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";

import { toHex } from "../src/bytes.js";
import { randomBytes } from "../src/crypto.js";
import { PACKAGE_ROOT, REPO_ROOT } from "./kit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

export const PYTHON = join(REPO_ROOT, ".venv", "bin", "python");
const HELPER = join(PACKAGE_ROOT, "testkit", "py_device.py");
const START_TIMEOUT_MS = 30_000;
const STEP_TIMEOUT_MS = 120_000;

/**
 * Whether the Python environment is there; if not, skip the test (fail it
 * under SDDSF_REQUIRE_INTEROP=1) and return false.
 */
export function pythonAvailable(t: TestContext): boolean {
  if (existsSync(PYTHON)) return true;
  const reason = `the Python environment (${PYTHON}) is missing; create it with the README's set-up command`;
  if (process.env.SDDSF_REQUIRE_INTEROP === "1") throw new Error(`${reason} -- SDDSF_REQUIRE_INTEROP=1 makes this a failure`);
  t.skip(reason);
  return false;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

/** One running relay and its work directory. */
export class LiveRelay {
  private constructor(
    readonly work: string,
    readonly baseUrl: string,
    private readonly proc: ChildProcess,
  ) {}

  /**
   * Start a relay on SQLite in a fresh temporary directory and wait for `/healthz`.
   * `relayEnv`: settings for it (`SDDSF_RELAY_*`; the caller's own are not passed on).
   */
  static async start(relayEnv: Record<string, string> = {}): Promise<LiveRelay> {
    const work = mkdtempSync(join(tmpdir(), "sddsf-ts-"));
    writeFileSync(join(work, "relay.key"), `${toHex(randomBytes(32))}\n`, { mode: 0o600 });
    const port = await freePort();
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SDDSF_RELAY_")));
    const fd = openSync(join(work, "relay.log"), "w");
    const proc = spawn(PYTHON, ["-m", "sddsf", "relay", "serve", "--db", `sqlite:///${join(work, "relay.db")}`,
      "--port", String(port)], { cwd: work, stdio: ["ignore", fd, fd],
      env: { ...env, ...relayEnv, SDDSF_RELAY_KEY_FILE: join(work, "relay.key"), PYTHONPATH: join(REPO_ROOT, "src") } });
    const relay = new LiveRelay(work, `http://127.0.0.1:${port}`, proc);
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline && proc.exitCode === null) {
      try {
        if ((await fetch(`${relay.baseUrl}/healthz`)).ok) return relay;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const log = readFileSync(join(work, "relay.log"), "utf8");
    relay.stop();
    throw new Error(`relay did not become healthy:\n${log}`);
  }

  /** Run the Python device helper in this relay's directory and parse its JSON line. */
  py(...args: string[]): Json {
    const r = spawnSync(PYTHON, [HELPER, ...args], { cwd: this.work, encoding: "utf8", timeout: STEP_TIMEOUT_MS,
      env: { ...process.env, PYTHONPATH: join(REPO_ROOT, "src") } });
    assert.equal(r.status, 0, `py_device.py ${args[0]} failed:\n${r.stdout}\n${r.stderr}`);
    return JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  }

  /** Python device A's home in this relay's directory. */
  home(name: string): string {
    return join(this.work, name);
  }

  /** Stop the relay (by its process id) and remove the directory. */
  stop(): void {
    if (this.proc.exitCode === null && this.proc.pid !== undefined) process.kill(this.proc.pid, "SIGTERM");
    rmSync(this.work, { recursive: true, force: true });
  }
}
