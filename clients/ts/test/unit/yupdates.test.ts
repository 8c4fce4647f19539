/**
 * mergeMany (src/yupdates.ts): a long window of local edits is merged a few
 * updates at a time (Y.mergeUpdates is quadratic in its number of updates),
 * to the same bytes as one flat merge; the DocSet hands out such a window as
 * one update that rebuilds the typed text.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import * as Y from "yjs";

import { DocSet } from "../../src/ydocs.js";
import { FAN_IN, mergeMany } from "../../src/yupdates.js";

function typed(count: number): { updates: Uint8Array[]; text: string } {
  const doc = new Y.Doc();
  const text = doc.getText("t");
  const updates: Uint8Array[] = [];
  doc.on("update", (update: Uint8Array) => updates.push(update));
  for (let i = 0; i < count; i++) {
    doc.transact(() => text.insert(i % 5 ? text.length : 0, "abcdefgh"[i % 8]!));
  }
  return { updates, text: text.toString() };
}

test("a long window is merged FAN_IN updates at a time, to the flat merge's bytes", () => {
  const { updates, text } = typed(FAN_IN * FAN_IN * 2 + 3);
  const groups: number[] = [];
  const merged = mergeMany(updates, (group) => {
    groups.push(group.length);
    return Y.mergeUpdates(group);
  });
  assert.ok(Math.max(...groups) <= FAN_IN);
  assert.deepEqual(merged, Y.mergeUpdates(updates));
  const doc = new Y.Doc();
  Y.applyUpdate(doc, merged);
  assert.equal(doc.getText("t").toString(), text);
});

test("one update is handed back as it is; none is refused", () => {
  const one = new Uint8Array([0, 0]);
  assert.equal(mergeMany([one]), one);
  assert.throws(() => mergeMany([]), RangeError);
});

test("the DocSet hands a long typing window out as one update of the typed text", () => {
  const docs = new DocSet();
  const text = docs.doc("notes").getText("t");
  for (let i = 0; i < 600; i++) docs.doc("notes").transact(() => text.insert(i % 5 ? text.length : 0, "xy"));
  const taken = docs.takeLocal();
  assert.deepEqual([...taken.keys()], ["notes"]);
  const doc = new Y.Doc();
  Y.applyUpdate(doc, taken.get("notes")!);
  assert.equal(doc.getText("t").toString(), text.toString());
  assert.equal(docs.takeLocal().size, 0);
});
