/**
 * The lying relay served to a browser (testkit/py_malicious_front.py): a real
 * relay app behind the project's malicious-relay harness, with the web app's
 * files on the same origin. Started from the repository's .venv, stopped by
 * its process id.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { PACKAGE_ROOT, REPO_ROOT } from "./kit.js";
import { PYTHON } from "./relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

const START_TIMEOUT_MS = 30_000;

/** One running front: `url` serves the app and the (harnessed) relay. */
export class MaliciousFront {
  private constructor(readonly work: string, readonly url: string, private readonly proc: ChildProcess) {}

  /** Start it over a fresh SQLite database, serving the app in `dist`. */
  static async start(dist: string): Promise<MaliciousFront> {
    const work = mkdtempSync(join(tmpdir(), "sddsf-front-"));
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SDDSF_")));
    const proc = spawn(PYTHON, [join(PACKAGE_ROOT, "testkit", "py_malicious_front.py"), work, dist],
      { cwd: work, stdio: ["ignore", "pipe", "pipe"], env: { ...env, PYTHONPATH: join(REPO_ROOT, "src"), PYTHONUNBUFFERED: "1" } });
    let out = "";
    let err = "";
    proc.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the front did not start:\n${err}`)), START_TIMEOUT_MS);
      proc.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const line = out.split("\n").find((l) => l.startsWith("{"));
        if (line) {
          clearTimeout(timer);
          resolve((JSON.parse(line) as { url: string }).url);
        }
      });
      proc.on("exit", () => reject(new Error(`the front exited:\n${err}`)));
    });
    return new MaliciousFront(work, url, proc);
  }

  /** Steer the harness (see py_malicious_front.py). */
  async control(body: Json): Promise<Json> {
    // A fresh connection each time (no keep-alive race with the server closing an idle one).
    const r = await fetch(`${this.url}/__harness`, { method: "POST", body: JSON.stringify(body), keepalive: false,
      headers: { connection: "close" } });
    const answer = await r.json();
    if (!r.ok) throw new Error(`harness ${JSON.stringify(body)}: ${JSON.stringify(answer)}`);
    return answer;
  }

  /** Stop it (by its process id) and remove its directory. */
  stop(): void {
    if (this.proc.exitCode === null && this.proc.pid !== undefined) process.kill(this.proc.pid, "SIGTERM");
    rmSync(this.work, { recursive: true, force: true });
  }
}
