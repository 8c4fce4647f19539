/**
 * The SDDSF web app: a browser device of an account. It pairs with the code
 * `sddsf device add` shows, keeps its keys and state encrypted in IndexedDB,
 * lists the spaces, edits a space's key-value document and a shared text
 * (Yjs) live, reads the vault, and shows what it verified or refused.
 *
 * Plain DOM, no framework; bundled with esbuild (`npm run build:app`). It talks
 * to the relay at its own origin by default (serve it behind the relay's
 * reverse proxy), or at the relay URL typed when pairing.
 */

import * as Y from "yjs";

import { toHex } from "../src/bytes.js";
import { ready } from "../src/crypto.js";
import { BrowserDevice, type SyncSummary } from "../src/device.js";
import { SddsfError } from "../src/errors.js";
import { fingerprint } from "../src/identity.js";
import type { PairingCheck } from "../src/pairing.js";
import { IndexedDbBackend, Store } from "../src/store.js";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;
const show = (id: string, on = true): void => void $(id).classList.toggle("hidden", !on);

let device: BrowserDevice | null = null;
let current: Uint8Array | null = null;
let lastSync: SyncSummary | null = null;

function setStatus(ok: boolean, text: string, code = ""): void {
  const el = $("status");
  el.className = `status ${ok ? "ok" : "bad"}`;
  el.textContent = text;
  el.dataset.code = code;
  el.dataset.state = ok ? "verified" : "refused";
}

function describe(s: SyncSummary, d: BrowserDevice): string {
  const reg = d.registry();
  const sizes = [...s.sizes.values()].reduce((a, b) => a + b, 0n);
  return `Verified ✓ registry of ${reg.seq + 1} entries from the pinned account key, every key package, ` +
    `${sizes} log entries against tree heads signed by the pinned relay key, every op's rules and signature` +
    (s.alerts.length ? ` — ${s.alerts.length} alert(s): ${s.alerts.map(([c, m]) => `[${c}] ${m}`).join("; ")}` : "") +
    ` (pushed ${s.pushed}, applied ${s.applied})` +
    (s.readOnly ? " — READ-ONLY: the relay's controller lets this device pull but not push; its edits stay here" : "");
}

function refused(e: SddsfError): void {
  setStatus(false, `Refused ✗ [${e.code}] ${e.message} — nothing unverified was applied or stored`, e.code);
}

async function runSync(): Promise<void> {
  if (device === null) return;
  try {
    lastSync = await device.sync();
    setStatus(true, describe(lastSync, device), "ok");
  } catch (e) {
    if (!(e instanceof SddsfError)) throw e;
    refused(e);
  }
  render();
}

function authorLabel(author: string | null, verified: boolean): string {
  if (device === null || author === null) return "unverified (older format)";
  const rec = device.registry().devices.get(author);
  return `${rec ? rec.name : author.slice(0, 12)} ${verified ? "✓" : "(unverified)"}`;
}

function renderSpaces(): void {
  const nav = $("spaces");
  nav.replaceChildren();
  for (const s of device!.spaceList()) {
    const b = document.createElement("button");
    b.textContent = `${s.name || toHex(s.id).slice(0, 12)} (${s.size} entries, epoch ${s.epoch ?? "-"})`;
    b.dataset.space = s.name;
    if (current !== null && toHex(current) === toHex(s.id)) b.classList.add("active");
    b.onclick = () => {
      current = s.id;
      attachNotes();
      render();
    };
    nav.append(b, " ");
  }
}

function renderKv(): void {
  const rows = $("kv-rows");
  rows.replaceChildren();
  if (current === null) return;
  const kv = device!.kv(current);
  for (const e of kv.entries()) {
    const tr = document.createElement("tr");
    tr.dataset.key = e.key;
    const value = e.conflict ? `CONFLICT: ${e.heads.map((h) => h.value).join(" | ")}` : e.value ?? "";
    const authors = e.heads.map((h) => authorLabel(h.author, h.verified)).join(", ");
    for (const [cls, text] of [["key", e.key], ["value", value], ["author", authors]]) {
      const td = document.createElement("td");
      td.className = cls!;
      td.textContent = text!;
      tr.append(td);
    }
    rows.append(tr);
  }
  for (const a of kv.alerts) {
    const tr = document.createElement("tr");
    tr.className = "bad";
    tr.textContent = `alert: record ${a.version.slice(0, 8)} ${a.what}${a.by ? ` by ${a.by.slice(0, 12)}` : ""}`;
    rows.append(tr);
  }
}

function renderVault(): void {
  const rows = $("vault-rows");
  rows.replaceChildren();
  const vault = device!.vault();
  for (const item of vault.list()) {
    const tr = document.createElement("tr");
    tr.dataset.item = item.name;
    const reveal = document.createElement("button");
    reveal.textContent = "Reveal";
    reveal.onclick = () => {
      try {
        const v = device!.vault().get(item.name);
        $("vault-secret").textContent = v.secret ?? "";
        $("vault-secret").dataset.item = item.name;
      } catch (e) {
        $("vault-secret").textContent = e instanceof SddsfError ? e.message : String(e);
      }
    };
    for (const text of [item.name, item.conflict ? `${item.kind} (CONFLICT)` : item.kind,
      item.heads.map((h) => authorLabel(h.author, h.verified)).join(", ")]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    const td = document.createElement("td");
    td.append(reveal);
    tr.append(td);
    rows.append(tr);
  }
}

function render(): void {
  if (device === null) return;
  renderSpaces();
  show("space-view", current !== null);
  if (current !== null) {
    $("space-name").textContent = device.spaceList().find((s) => toHex(s.id) === toHex(current!))?.name ?? "";
    renderKv();
    const notes = $<HTMLTextAreaElement>("notes");
    const text = device.doc(current, "notes").getText("t").toString();
    if (document.activeElement !== notes && notes.value !== text) notes.value = text;
  }
  renderVault();
}

let pending: ReturnType<typeof setTimeout> | null = null;
function edited(): void {
  // Seal and store the edit now (it survives a reload), send it shortly.
  void device!.flush();
  if (pending !== null) clearTimeout(pending);
  pending = setTimeout(() => void runSync(), 300);
}

let notesDoc: Y.Doc | null = null;
function attachNotes(): void {
  if (current === null || device === null) return;
  const doc = device.doc(current, "notes");
  if (doc === notesDoc) return;
  notesDoc = doc;
  doc.on("update", () => render());
}

function start(d: BrowserDevice): void {
  device = d;
  show("pair", false);
  show("unlock", false);
  show("app");
  $("who").textContent = `${d.identity.name} · ${d.fingerprint} · account ${fingerprint(d.identity.account.accountId)}`;
  $("trust").textContent = `Pinned account key ${fingerprint(d.identity.account.accountId)}; relay key ` +
    (d.session.relayKey ? toHex(d.session.relayKey.raw).slice(0, 16) : "(pinned at first contact)");
  $("sync").onclick = () => void runSync();
  $("kv-put").onclick = () => {
    const key = $<HTMLInputElement>("kv-key").value;
    const value = $<HTMLInputElement>("kv-value").value;
    if (current === null || !key) return;
    try {
      d.kv(current).put(key, value);
    } catch (e) {
      if (e instanceof SddsfError) refused(e);
      return;
    }
    render();
    edited();
  };
  $<HTMLTextAreaElement>("notes").oninput = (ev) => {
    if (current === null) return;
    const el = ev.target as HTMLTextAreaElement;
    const t = d.doc(current, "notes").getText("t");
    const old = t.toString();
    const now = el.value;
    let p = 0;
    while (p < old.length && p < now.length && old[p] === now[p]) p++;
    let s = 0;
    while (s < old.length - p && s < now.length - p && old[old.length - 1 - s] === now[now.length - 1 - s]) s++;
    t.doc!.transact(() => {
      if (old.length - p - s > 0) t.delete(p, old.length - p - s);
      if (now.length - p - s > 0) t.insert(p, now.slice(p, now.length - s));
    });
    edited();
  };
  render();
  void (async () => {
    await runSync();
    const first = d.spaceList().find((s) => s.name !== "vault" && s.name !== "") ?? d.spaceList()[0];
    if (current === null && first) {
      current = first.id;
      attachNotes();
      render();
    }
    // The live channel: a hint to sync; everything is verified by the pull.
    for (;;) {
      try {
        await d.watch((result) => {
          if (result instanceof SddsfError) refused(result);
          else setStatus(true, describe(result, d), "ok");
          render();
        });
      } catch (e) {
        if (e instanceof SddsfError) refused(e);
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  })();
}

async function pairFlow(backend: IndexedDbBackend): Promise<void> {
  show("pair");
  $<HTMLInputElement>("pair-relay").value = location.origin;
  $<HTMLSelectElement>("pair-protect").onchange = (ev) =>
    show("pair-pass-row", (ev.target as HTMLSelectElement).value === "passphrase");
  $("pair-go").onclick = async () => {
    $("pair-msg").textContent = "Pairing…";
    const protect = $<HTMLSelectElement>("pair-protect").value;
    try {
      const store = await Store.create(backend, protect === "passphrase"
        ? { kind: "passphrase", passphrase: $<HTMLInputElement>("pair-pass").value } : { kind: "webcrypto" });
      const confirm = (check: PairingCheck): Promise<boolean> => new Promise((resolve) => {
        $("pair-words").textContent = check.words.join(" ");
        $("pair-fp").textContent = check.fingerprint;
        show("pair-check");
        $("pair-yes").onclick = () => resolve(true);
        $("pair-no").onclick = () => resolve(false);
      });
      const d = await BrowserDevice.pair(store, $<HTMLInputElement>("pair-relay").value, $<HTMLInputElement>("pair-code").value,
        $<HTMLInputElement>("pair-name").value, confirm);
      start(d);
    } catch (e) {
      await backend.clear(); // nothing half-paired stays behind
      $("pair-msg").textContent = e instanceof SddsfError ? `Pairing failed: [${e.code}] ${e.message}` : String(e);
      $("pair-msg").className = "bad";
      show("pair-check", false);
    }
  };
}

async function main(): Promise<void> {
  await ready();
  const backend = await IndexedDbBackend.open("sddsf");
  const kind = await Store.protection(backend);
  if (kind === null) {
    await pairFlow(backend);
    return;
  }
  const opened = async (store: Store): Promise<void> => {
    if (await BrowserDevice.exists(store)) {
      start(await BrowserDevice.open(store));
    } else { // a pairing that stopped before this device was stored
      await backend.clear();
      await pairFlow(backend);
    }
  };
  if (kind === "passphrase") {
    show("unlock");
    $("unlock-go").onclick = async () => {
      try {
        show("unlock", false);
        await opened(await Store.open(backend, $<HTMLInputElement>("unlock-pass").value));
      } catch (e) {
        show("unlock");
        $("unlock-msg").textContent = e instanceof SddsfError ? e.message : String(e);
        $("unlock-msg").className = "bad";
      }
    };
    return;
  }
  await opened(await Store.open(backend));
}

void main();
