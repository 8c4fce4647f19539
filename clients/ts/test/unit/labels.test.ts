/**
 * Every domain-separation label of the TypeScript library is the Python
 * core's label of the same name (docs/protocol.md §3): a label that differs
 * makes every signature, hash or AD under it fail between the two.
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";

import * as labels from "../../src/labels.js";
import { REPO_ROOT } from "../../testkit/kit.js";
import { PYTHON, pythonAvailable } from "../../testkit/relaykit.js";

test("the TypeScript labels are the Python core's", (t) => {
  if (!pythonAvailable(t)) return;
  const r = spawnSync(PYTHON, ["-c", "import json; from sddsf.protocol import labels; print(json.dumps({k: v for k, v " +
    "in vars(labels).items() if k.isupper() and isinstance(v, str)}))"], { encoding: "utf8",
    env: { ...process.env, PYTHONPATH: join(REPO_ROOT, "src") } });
  assert.equal(r.status, 0, r.stderr);
  const python: Record<string, string> = JSON.parse(r.stdout);
  const ours = Object.entries(labels).filter(([, v]) => typeof v === "string");
  assert.ok(ours.length > 40);
  for (const [name, value] of ours) assert.equal(value, python[name], `label ${name}`);
});
