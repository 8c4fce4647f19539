/**
 * The SDDSF web app: this browser as a device of the account. It pairs with
 * the code `sddsf device add` shows, keeps its keys and state encrypted in
 * IndexedDB, and shows its pages: notes (a shared Yjs text in CodeMirror, and
 * the key-value document), the vault, the devices with their trust, the
 * alerts, and the audit log verified here; above them the verification status
 * and the sync line. Everything is verified by the library (@sddsf/client)
 * before it is shown; a refusal is shown with its stable code.
 *
 * It talks to the relay at its own origin (`sddsf web`, or a reverse proxy
 * that serves this app and forwards /v1/ to the relay).
 */

import "./style.css";

import { toHex } from "@sddsf/client/bytes";
import { ready } from "@sddsf/client/crypto";
import { BrowserDevice } from "@sddsf/client/device";
import { SddsfError } from "@sddsf/client/errors";
import { fingerprint } from "@sddsf/client/identity";
import { IndexedDbBackend, Store } from "@sddsf/client/store";

import { loadAlerts } from "./alerts.js";
import { loadAudit } from "./audit.js";
import { loadDevices } from "./devices.js";
import { $, show } from "./dom.js";
import { flushNow, initNotes, openFirstSpace } from "./notes.js";
import { pairFlow, unlockFlow } from "./pair.js";
import { onRender, render, state } from "./state.js";
import { refused, renderSyncLine, runSync, synced } from "./status.js";
import { hideSecret, initVault } from "./vault.js";

const PAGES = ["notes", "vault", "devices", "alerts", "audit"] as const;
type Page = (typeof PAGES)[number];
const LOADERS: Partial<Record<Page, () => Promise<void>>> = { devices: loadDevices, alerts: loadAlerts, audit: loadAudit };

function open(page: Page): void {
  for (const p of PAGES) {
    show(`page-${p}`, p === page);
    $(`nav-${p}`).classList.toggle("active", p === page);
  }
  if (page !== "vault") hideSecret();
  void LOADERS[page]?.();
}

function start(d: BrowserDevice): void {
  state.device = d;
  show("pair", false);
  show("unlock", false);
  show("app");
  $("who").textContent = `${d.identity.name} · ${d.fingerprint} · account ${fingerprint(d.identity.account.accountId)}`;
  $("trust").textContent = `Pinned account key ${fingerprint(d.identity.account.accountId)}; relay key ` +
    (d.session.relayKey ? toHex(d.session.relayKey.raw).slice(0, 16) : "(pinned at first contact)");
  $("sync").onclick = () => void runSync();
  for (const p of PAGES) $(`nav-${p}`).onclick = () => open(p);
  initNotes();
  initVault();
  onRender(renderSyncLine);
  addEventListener("pagehide", flushNow);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") flushNow();
  });
  setInterval(renderSyncLine, 1000);
  render();
  void (async () => {
    await runSync();
    openFirstSpace();
    // The live channel: a hint to sync; everything is verified by the pull.
    for (;;) {
      try {
        await d.watch((result) => {
          synced(result);
          render();
        });
      } catch (e) {
        if (e instanceof SddsfError) refused(e);
      }
      renderSyncLine();
      await new Promise((r) => setTimeout(r, 2000));
    }
  })();
}

async function main(): Promise<void> {
  await ready();
  const backend = await IndexedDbBackend.open("sddsf");
  const kind = await Store.protection(backend);
  if (kind === null) {
    pairFlow(backend, start);
    return;
  }
  const opened = async (store: Store): Promise<void> => {
    if (await BrowserDevice.exists(store)) {
      start(await BrowserDevice.open(store));
    } else { // a pairing that stopped before this device was stored
      await backend.clear();
      pairFlow(backend, start);
    }
  };
  if (kind === "passphrase") {
    unlockFlow(backend, opened);
    return;
  }
  await opened(await Store.open(backend));
}

void main();
