/**
 * The Notes page: the spaces, the open space's shared text (a Yjs text edited
 * in CodeMirror 6, bound by y-codemirror.next: the same document `notes`,
 * text `t`, that other devices edit) and its key-value document.
 */

import { EditorState } from "@codemirror/state";
import { EditorView, keymap } from "@codemirror/view";
import { yCollab, yUndoManagerKeymap } from "y-codemirror.next";
import type * as Y from "yjs";

import { toHex } from "@sddsf/client/bytes";
import { SddsfError } from "@sddsf/client/errors";
import { REMOTE } from "@sddsf/client/ydocs";

import { $, row, show } from "./dom.js";
import { device, onRender, render, state } from "./state.js";
import { refused, renderSyncLine, runSync } from "./status.js";

/** The document and text the notes editor edits (as the Python device's `doc(space, "notes").get("t")`). */
export const NOTES_DOC = "notes";
export const NOTES_TEXT = "t";

let editor: EditorView | null = null;
let editing: Y.Doc | null = null;
let pending: ReturnType<typeof setTimeout> | null = null;

/**
 * A local edit: after a short pause in typing, sealed and stored (it survives
 * a reload) and sent; one op per pause, not per keystroke. Leaving the page
 * seals and stores at once.
 */
export function edited(): void {
  renderSyncLine();
  if (pending !== null) clearTimeout(pending);
  pending = setTimeout(() => {
    pending = null;
    void device().flush().then(runSync);
  }, 300);
}

/** Seal and store what is typed but not yet sealed (the page is being left). */
export function flushNow(): void {
  if (pending === null || state.device === null) return;
  clearTimeout(pending);
  pending = null;
  void state.device.flush();
}

/** Who wrote a value: the registry's name of the author, and whether that was verified. */
export function authorLabel(author: string | null, verified: boolean): string {
  if (author === null) return "unverified (older format)";
  const rec = device().registry().devices.get(author);
  return `${rec ? rec.name : author.slice(0, 12)} ${verified ? "✓" : "(unverified)"}`;
}

function attachEditor(): void {
  if (state.current === null) return;
  const doc = device().doc(state.current, NOTES_DOC);
  if (doc === editing) return;
  editing = doc;
  editor?.destroy();
  const text = doc.getText(NOTES_TEXT);
  editor = new EditorView({
    parent: $("notes"),
    state: EditorState.create({
      doc: text.toString(),
      extensions: [keymap.of(yUndoManagerKeymap), EditorView.lineWrapping, yCollab(text, null),
        EditorView.contentAttributes.of({ "aria-label": "notes", spellcheck: "false" })],
    }),
  });
  doc.on("update", (_u: Uint8Array, origin: unknown) => {
    // Edits typed here (not applied from verified ops) are sent.
    if (doc === editing && origin !== REMOTE) edited();
  });
}

function renderSpaces(): void {
  const nav = $("spaces");
  nav.replaceChildren();
  for (const s of device().spaceList()) {
    const b = document.createElement("button");
    b.textContent = `${s.name || toHex(s.id).slice(0, 12)} (${s.size} entries, epoch ${s.epoch ?? "-"})`;
    b.dataset.space = s.name;
    if (state.current !== null && toHex(state.current) === toHex(s.id)) b.classList.add("active");
    b.onclick = () => {
      state.current = s.id;
      attachEditor();
      render();
    };
    nav.append(b, " ");
  }
}

function renderKv(): void {
  const rows = $("kv-rows");
  rows.replaceChildren();
  if (state.current === null) return;
  const kv = device().kv(state.current);
  for (const e of kv.entries()) {
    const value = e.conflict ? `CONFLICT: ${e.heads.map((h) => h.value).join(" | ")}` : e.value ?? "";
    const tr = row([e.key, value, e.heads.map((h) => authorLabel(h.author, h.verified)).join(", ")], ["key", "value", "author"]);
    tr.dataset.key = e.key;
    rows.append(tr);
  }
  for (const a of kv.alerts) {
    const tr = document.createElement("tr");
    tr.className = "bad";
    tr.textContent = `alert: record ${a.version.slice(0, 8)} ${a.what}${a.by ? ` by ${a.by.slice(0, 12)}` : ""}`;
    rows.append(tr);
  }
}

/** Open the first space with a name (not the vault) when none is open. */
export function openFirstSpace(): void {
  const d = device();
  const first = d.spaceList().find((s) => s.name !== "vault" && s.name !== "") ?? d.spaceList()[0];
  if (state.current === null && first) {
    state.current = first.id;
    attachEditor();
    render();
  }
}

/** Wire the page. */
export function initNotes(): void {
  $("kv-put").onclick = () => {
    const key = $<HTMLInputElement>("kv-key").value;
    const value = $<HTMLInputElement>("kv-value").value;
    if (state.current === null || !key) return;
    try {
      device().kv(state.current).put(key, value);
    } catch (e) {
      if (e instanceof SddsfError) refused(e);
      return;
    }
    render();
    edited();
  };
  onRender(() => {
    renderSpaces();
    show("space-view", state.current !== null);
    if (state.current === null) return;
    $("space-name").textContent = device().spaceList().find((s) => toHex(s.id) === toHex(state.current!))?.name ?? "";
    renderKv();
  });
}
