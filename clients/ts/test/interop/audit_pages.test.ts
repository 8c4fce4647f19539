/**
 * `BrowserDevice.verifyAudit` pages through the account's audit log on a real
 * relay, and tells an append that raced the relay's page read from a relay
 * that withholds events (docs/protocol.md §17.6; the same rule as op pulls,
 * see tamper.test.ts).
 *
 * The relay reads an audit page, then signs the head of the whole log: when
 * another event is appended between those two reads it honestly serves an
 * EMPTY page under a head one entry longer. The device asks again (up to
 * `EMPTY_PAGE_RETRIES` empty pages in a row) instead of refusing; a relay that
 * keeps serving empty pages under a longer head is refused (`proof_invalid`:
 * the entries do not reproduce the signed head) after a bounded number of
 * requests.
 *
 * The log is real (a real `sddsf relay serve`, `sddsf init` and a pairing
 * write it); a `fetch` between the relay and the TypeScript device empties the
 * `entries` of chosen audit pages and keeps the relay's own signed head.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { toHex } from "../../src/bytes.js";
import { ready } from "../../src/crypto.js";
import { BrowserDevice } from "../../src/device.js";
import { MemoryBackend, Store } from "../../src/store.js";
import { EMPTY_PAGE_RETRIES } from "../../src/sync.js";
import { deviceAdd, sddsf } from "../../testkit/cli.js";
import { expectCode } from "../../testkit/kit.js";
import { LiveRelay, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

let relay: LiveRelay | null = null;
before(ready);
after(() => relay?.stop());

const PAGE = 2; // entries per audit page: the log below needs several pages
const FROM = PAGE; // the first page the tampering touches (the second one)

/**
 * What the wire does to audit pages: `honest` passes them; `race` empties the
 * entries of the next page from FROM on, once (the page as read before an
 * append, the head as read after it), then turns honest; `withhold` empties
 * every page from FROM on, always. The relay's signed head is kept as is.
 */
type Mode = "honest" | "race" | "withhold";

interface AuditWire {
  mode: Mode;
  /** The `start` of every audit page request, in order. */
  starts: number[];
  readonly fetch: typeof fetch;
}

function auditWire(): AuditWire {
  const wire: AuditWire = {
    mode: "honest",
    starts: [],
    fetch: async (input, init) => {
      const response = await fetch(input, init);
      const url = new URL(String(input));
      if ((init?.method ?? "GET") !== "GET" || url.pathname !== "/v1/controller/audit" || !response.ok) return response;
      const start = Number(url.searchParams.get("start"));
      wire.starts.push(start);
      if (wire.mode === "honest" || start < FROM) return response;
      const body: Json = await response.json();
      if (wire.mode === "race") wire.mode = "honest";
      return new Response(JSON.stringify({ ...body, entries: [], next_start: start }),
        { status: response.status, headers: { "content-type": "application/json" } });
    },
  };
  return wire;
}

test("verifyAudit asks again after an empty audit page under a longer head; a relay that keeps withholding is refused",
  { timeout: 300_000 }, async (t) => {
    if (!pythonAvailable(t)) return;
    relay = await LiveRelay.start();
    const r = relay;
    const home = r.home("laptop");
    const work = r.work; // removed with the relay
    sddsf(home, ["init", "--relay", r.baseUrl, "--name", "laptop", "--insecure-plaintext-key", "--phrase-out", join(work, "phrase")]);
    // `sddsf init` and the pairing write the audit log (device additions, sessions, ...).
    const add = await deviceAdd(home, join(work, "code"));
    const wire = auditWire();
    const device = await BrowserDevice.pair(await Store.create(new MemoryBackend(), { kind: "webcrypto" }), r.baseUrl,
      add.code, "browser", () => true, { fetch: wire.fetch });
    const [status, , stderr] = await add.done;
    assert.equal(status, 0, stderr);

    // Honest: every entry, one page of PAGE after another.
    wire.starts = [];
    const honest = await device.verifyAudit(PAGE);
    const size = Number(honest.head.size);
    assert.ok(size >= 2 * PAGE + 1, `the audit log has ${size} entries; the test needs at least three pages`);
    assert.equal(honest.entries.length, size);
    t.diagnostic(`audit log: ${size} entries, ${Math.ceil(size / PAGE)} pages of ${PAGE}`);
    const honestStarts = [...wire.starts];
    assert.deepEqual(honestStarts, Array.from({ length: Math.ceil(size / PAGE) }, (_, i) => i * PAGE));

    // Race: the second page comes back empty under the relay's real (longer)
    // head, once. The device asks for that page again and gets every entry.
    wire.mode = "race";
    wire.starts = [];
    const raced = await device.verifyAudit(PAGE);
    assert.equal(wire.mode, "honest", "the race page was served");
    assert.equal(raced.head.size, honest.head.size, "no event was appended meanwhile");
    assert.equal(raced.entries.length, size);
    assert.deepEqual(raced.entries.map((e) => toHex(e.raw)), honest.entries.map((e) => toHex(e.raw)));
    assert.deepEqual(wire.starts, [0, FROM, ...honestStarts.slice(1)], "the empty page is asked again, once");

    // Withhold: every page from the second on is empty, under the same longer
    // head. Refused; and the device stops asking: the first page (start 0),
    // then the empty page at FROM EMPTY_PAGE_RETRIES + 1 times (it gives up
    // when the count of empty pages in a row exceeds EMPTY_PAGE_RETRIES), so
    // EMPTY_PAGE_RETRIES + 2 audit requests in all.
    wire.mode = "withhold";
    wire.starts = [];
    await expectCode("proof_invalid", device.verifyAudit(PAGE));
    assert.ok(wire.starts.length <= EMPTY_PAGE_RETRIES + 2, `asked ${wire.starts.length} times: ${wire.starts.join(",")}`);
    assert.deepEqual(wire.starts, [0, ...Array<number>(EMPTY_PAGE_RETRIES + 1).fill(FROM)]);

    // Honest again: the refused check stored nothing that breaks the next one.
    wire.mode = "honest";
    const again = await device.verifyAudit(PAGE);
    assert.equal(again.entries.length, Number(again.head.size));
    assert.ok(again.head.size >= honest.head.size);
    device.close();
  });
