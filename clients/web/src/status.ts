/**
 * The verification status (what the last sync verified, or the refusal and its
 * stable code: `#status[data-state][data-code]`) and the sync line: the live
 * channel open or closed, the last verified tree head of the open space (size
 * and a short root hash), and the local edits not yet in the relay's log.
 */

import { toHex } from "@sddsf/client/bytes";
import type { BrowserDevice, SyncSummary } from "@sddsf/client/device";
import { SddsfError } from "@sddsf/client/errors";

import { $ } from "./dom.js";
import { render, state } from "./state.js";

/** Set the status line: verified (`ok`) or refused with `code`. */
export function setStatus(ok: boolean, text: string, code = ""): void {
  const el = $("status");
  el.className = `status ${ok ? "ok" : "bad"}`;
  el.textContent = text;
  el.dataset.code = code;
  el.dataset.state = ok ? "verified" : "refused";
}

/** Show a refusal: nothing unverified was applied. */
export function refused(e: SddsfError): void {
  setStatus(false, `Refused ✗ [${e.code}] ${e.message} — nothing unverified was applied or stored`, e.code);
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

/** Show a sync's result. */
export function synced(result: SyncSummary | SddsfError): void {
  if (result instanceof SddsfError) {
    refused(result);
    return;
  }
  state.lastSync = result;
  setStatus(true, describe(result, state.device!), "ok");
}

/** Sync now and show the result (a refusal is shown, never thrown). */
export async function runSync(): Promise<void> {
  const d = state.device;
  if (d === null) return;
  try {
    synced(await d.sync());
  } catch (e) {
    if (!(e instanceof SddsfError)) throw e;
    refused(e);
  }
  render();
}

/** Redraw the sync line (cheap: called after each change and every second). */
export function renderSyncLine(): void {
  const d = state.device;
  if (d === null) return;
  const live = $("sync-live");
  live.dataset.connected = String(d.connected);
  live.textContent = `live: ${d.connected ? "connected" : "closed"}`;
  const head = state.current !== null ? d.treeHead(state.current) : null;
  const h = $("sync-head");
  h.dataset.size = head ? String(head.size) : "";
  h.textContent = head ? `last verified tree head: size ${head.size}, root ${toHex(head.root).slice(0, 12)}…`
    : "tree head: none verified yet";
  const n = d.pending();
  const p = $("sync-pending");
  p.dataset.pending = String(n);
  p.textContent = `pending: ${n}`;
}
