/**
 * The real `sddsf` command (the repository's .venv) for the device and browser
 * tests: one-shot commands, and `sddsf device add` running in the background
 * (its pairing code read from --code-out, the words it shows from its stderr).
 */

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

import { REPO_ROOT } from "./kit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

const SDDSF = join(REPO_ROOT, ".venv", "bin", "sddsf");
const STEP_TIMEOUT_MS = 120_000;

function env(): NodeJS.ProcessEnv {
  const e = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SDDSF_")));
  return { ...e, PYTHONPATH: join(REPO_ROOT, "src") };
}

/** Run `sddsf --home HOME ARGS...`; returns stdout (fails the test on a non-zero exit). */
export function sddsf(home: string, args: string[], input?: string): string {
  const r = spawnSync(SDDSF, ["--home", home, ...args], { encoding: "utf8", timeout: STEP_TIMEOUT_MS, env: env(),
    ...(input !== undefined ? { input } : {}) });
  assert.equal(r.status, 0, `sddsf ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** `sddsf sync`, then `sddsf get SPACE KEY --json`, parsed. */
export function getJson(home: string, space: string, key: string): Json {
  sddsf(home, ["sync"]);
  return JSON.parse(sddsf(home, ["get", space, key, "--json"]));
}

/** A running `sddsf device add`. */
export interface DeviceAdd {
  /** The pairing code it shows. */
  readonly code: string;
  /** The words it shows once the new device exchanged keys (resolves when printed). */
  readonly words: Promise<string[]>;
  /** Its exit: `[status, stdout, stderr]`. */
  readonly done: Promise<[number | null, string, string]>;
}

/** Start `sddsf device add --yes` on HOME and wait for its code. */
export async function deviceAdd(home: string, codeFile: string): Promise<DeviceAdd> {
  const proc = spawn(SDDSF, ["--home", home, "device", "add", "--yes", "--code-out", codeFile, "--timeout", "120"],
    { env: env(), stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let wordsResolve: (w: string[]) => void = () => {};
  const words = new Promise<string[]>((r) => (wordsResolve = r));
  proc.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
    const m = /these words:\s*\n\s*\n\s*([a-z]+(?: [a-z]+){4})/.exec(stderr);
    if (m) wordsResolve(m[1]!.split(" "));
  });
  const done = new Promise<[number | null, string, string]>((resolve) => proc.on("close", (c) => resolve([c, stdout, stderr])));
  const deadline = Date.now() + 60_000;
  while (!existsSync(codeFile) || readFileSync(codeFile, "utf8").trim() === "") {
    if (Date.now() > deadline || proc.exitCode !== null) {
      proc.kill("SIGTERM");
      throw new Error(`sddsf device add did not show a code:\n${stdout}\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { code: readFileSync(codeFile, "utf8").trim(), words, done };
}
