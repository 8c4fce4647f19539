/**
 * The encrypted store and the record layer's canonical JSON, against the
 * Python client: a storage-key record written by `sddsf.client.home` (Argon2id
 * t=3, m=64 MiB, p=4) opens here with the passphrase and not without it; a
 * record with weaker parameters is refused; a value moved to another key does
 * not open; and the canonical JSON of records is byte for byte Python's
 * `json.dumps(sort_keys=True, separators=(",", ":"))`.
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { before, test } from "node:test";

import { toHex, utf8 } from "../../src/bytes.js";
import { ready } from "../../src/crypto.js";
import { canonicalJson } from "../../src/records.js";
import { Batch, MemoryBackend, Store, unwrapWithPassphrase, type KeyRecord } from "../../src/store.js";
import { REPO_ROOT } from "../../testkit/kit.js";
import { PYTHON, pythonAvailable } from "../../testkit/relaykit.js";

before(ready);

function py(code: string, input = ""): string {
  const r = spawnSync(PYTHON, ["-c", code], { input, encoding: "utf8", timeout: 120_000,
    env: { ...process.env, PYTHONPATH: join(REPO_ROOT, "src") } });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

test("a storage-key record of the Python client opens with its passphrase (Argon2id, p = 4)", { timeout: 120_000 }, async (t) => {
  if (!pythonAvailable(t)) return;
  const out = JSON.parse(py(`
import json, tempfile, pathlib
from sddsf.client.keystore import PassphraseKeyStore
d = pathlib.Path(tempfile.mkdtemp())
key = PassphraseKeyStore(lambda: "a long passphrase").create(d)
print(json.dumps({"key": key.hex(), "record": json.loads((d / "storage-key.json").read_text())}))
`));
  const record = out.record as KeyRecord;
  assert.deepEqual([record.kind, (record as { t: number }).t, (record as { m: number }).m, (record as { p: number }).p],
    ["passphrase", 3, 65536, 4]);
  assert.equal(toHex(await unwrapWithPassphrase(record, "a long passphrase")), out.key);
  await assert.rejects(unwrapWithPassphrase(record, "another passphrase"), (e: { code?: string }) => e.code === "decrypt_failed");
  await assert.rejects(unwrapWithPassphrase({ ...record, m: 1024 } as KeyRecord, "a long passphrase"),
    (e: { code?: string }) => e.code === "config");
});

test("values are encrypted, bound to their key, and a short passphrase is refused", async () => {
  const backend = new MemoryBackend();
  const store = await Store.create(backend, { kind: "webcrypto" });
  await store.commit(new Batch().put("a", utf8("alpha secret")).put("b", utf8("beta")));
  assert.equal(new TextDecoder().decode(await store.get("a")), "alpha secret");
  const raw = backend.rawValues();
  assert.ok(!Buffer.from(raw.get("a")!).toString("latin1").includes("alpha"));
  await backend.apply(new Map([["b", raw.get("a")!]])); // moved to another key
  await assert.rejects(store.get("b"), (e: { code?: string }) => e.code === "decrypt_failed");
  const reopened = await Store.open(backend);
  assert.equal(new TextDecoder().decode(await reopened.get("a")), "alpha secret");
  await assert.rejects(Store.create(new MemoryBackend(), { kind: "passphrase", passphrase: "short" }),
    (e: { code?: string }) => e.code === "usage");
  await assert.rejects(Store.create(backend, { kind: "webcrypto" }), (e: { code?: string }) => e.code === "usage");
});

test("canonical JSON is Python's json.dumps(sort_keys, separators) with ensure_ascii", (t) => {
  if (!pythonAvailable(t)) return;
  const values = [
    { f: 1, key: "café ☕", value: "naïve 😀 \u2028 \u0001 \"q\" \\ /", author: "ab", ts: 1767225600000, supersedes: ["b", "a"] },
    { z: null, a: [true, false, 0, -1], m: { y: "\u007f\u0080\uffff", b: "" } },
  ];
  const expected = py(`
import json, sys
for v in json.loads(sys.stdin.read()):
    print(json.dumps(v, sort_keys=True, separators=(",", ":")))
`, JSON.stringify(values)).trim().split("\n");
  assert.deepEqual(values.map(canonicalJson), expected);
});
