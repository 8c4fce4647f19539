/**
 * Pairing version 2 (`src/pairing.ts`) against the Python core
 * (`sddsf.protocol.pairing`): codes Python makes decode here to the same
 * SPAKE2 password, typos are caught before any request, the channel keys,
 * confirmation tags and the five words are the same on both sides, and a
 * message the TypeScript joiner seals opens with Python's `open_message`.
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { before, test } from "node:test";

import { fromHex, toHex } from "../../src/bytes.js";
import { randomBytes, ready } from "../../src/crypto.js";
import { decodeCode, pairingKeys, parseUri, sealMessage, WORDS } from "../../src/pairing.js";
import { PACKAGE_ROOT, REPO_ROOT } from "../../testkit/kit.js";
import { PYTHON, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

before(ready);

function python(req: Json): Json {
  const r = spawnSync(PYTHON, [join(PACKAGE_ROOT, "testkit", "py_pairing.py")], { input: JSON.stringify(req), encoding: "utf8",
    timeout: 120_000, env: { ...process.env, PYTHONPATH: join(REPO_ROOT, "src") } });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

const code = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code ?? "?";
  }
  return "ok";
};

test("codes made by Python decode to the same password; typos are caught", (t) => {
  if (!pythonAvailable(t)) return;
  const codes: Json[] = python({ codes: [[7, 3], [1, 3], [999999, 8], [4242, 5], [12, 4]] });
  for (const c of codes) {
    assert.equal(toHex(decodeCode(c.text).password), c.password, c.text);
    assert.equal(toHex(decodeCode(`  ${c.text.toUpperCase().replace(/-/g, " ")} `).password), c.password, "case and spaces are loose");
    const parts = c.text.split("-");
    const wrong = WORDS[(WORDS.indexOf(parts[1]) + 1) % 2048];
    const typo = [parts[0], wrong, ...parts.slice(2)].join("-");
    // One word off: caught by the checksum (6 bits: 1 in 64 slips through, so accept a different password then).
    let caught = code(() => decodeCode(typo));
    if (caught === "ok") caught = toHex(decodeCode(typo).password) !== c.password ? "usage" : "same";
    assert.equal(caught, "usage");
  }
  assert.equal(code(() => decodeCode("7-notaword-clockwork-pilot")), "usage");
  assert.equal(code(() => decodeCode("crossover-clockwork-pilot")), "usage");
  assert.equal(code(() => decodeCode("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567ABCDEFG")), "usage", "an old-style code");
  assert.deepEqual(parseUri("sddsf://pair?relay=https%3A%2F%2Frelay.example&code=7-a-b-c"), ["https://relay.example", "7-a-b-c"]);
  assert.equal(parseUri("7-a-b-c"), null);
  assert.equal(code(() => parseUri("sddsf://pair?relay=ftp://x&code=1")), "usage");
});

test("channel keys, tags and words match Python's; a sealed message opens there", (t) => {
  if (!pythonAvailable(t)) return;
  const a = { key: randomBytes(32), channel: randomBytes(16), commitment: randomBytes(32), initiator: randomBytes(33),
    joiner: randomBytes(33) };
  const py = python(Object.fromEntries(Object.entries(a).map(([k, v]) => [k, toHex(v)])));
  for (const role of ["initiator", "joiner"] as const) {
    const k = pairingKeys(role, a.key, { channelId: a.channel, commitment: a.commitment, initiatorMsg: a.initiator,
      joinerMsg: a.joiner });
    assert.deepEqual({ send: toHex(k.send), receive: toHex(k.receive), my_confirm: toHex(k.myConfirm), sas: [...k.sas] }, py[role]);
  }
  const joiner = pairingKeys("joiner", a.key, { channelId: a.channel, commitment: a.commitment, initiatorMsg: a.initiator,
    joinerMsg: a.joiner });
  const msg = sealMessage("reveal", joiner.send, { extra: new Map([["m", a.joiner], ["n", a.commitment], ["c", joiner.myConfirm]]),
    payload: new Map<string, Uint8Array | string>([["sign", a.key], ["kx", a.commitment], ["name", "browser é"]]) });
  const opened = python({ kind: "reveal", key: toHex(joiner.send), message: toHex(msg), clear: ["m", "n", "c"],
    fields: ["sign", "kx", "name"] });
  assert.deepEqual(opened.payload, { sign: toHex(a.key), kx: toHex(a.commitment), name: "browser é" });
  assert.equal(opened.clear.m, toHex(a.joiner));
  assert.ok(fromHex(opened.clear.c).length === 32);
});
