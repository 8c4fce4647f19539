/**
 * Pairing: this browser joins the account with the code `sddsf device add`
 * shows, after the person checks the five words and the fingerprint on both
 * screens. The store is protected by a non-extractable WebCrypto key or a
 * passphrase (Argon2id). The code never leaves the page but to the relay's
 * pairing mailbox (never into a URL, never logged).
 */

import { BrowserDevice } from "@sddsf/client/device";
import { SddsfError } from "@sddsf/client/errors";
import type { PairingCheck } from "@sddsf/client/pairing";
import { Store, type IndexedDbBackend } from "@sddsf/client/store";

import { $, show } from "./dom.js";

/** Show the pairing form; `start` runs with the paired device. */
export function pairFlow(backend: IndexedDbBackend, start: (d: BrowserDevice) => void): void {
  show("pair");
  $<HTMLInputElement>("pair-relay").value = location.origin;
  $<HTMLSelectElement>("pair-protect").onchange = (ev) =>
    show("pair-pass-row", (ev.target as HTMLSelectElement).value === "passphrase");
  $("pair-go").onclick = async () => {
    $("pair-msg").textContent = "Pairing…";
    $("pair-msg").className = "";
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
      const code = $<HTMLInputElement>("pair-code");
      const d = await BrowserDevice.pair(store, $<HTMLInputElement>("pair-relay").value, code.value,
        $<HTMLInputElement>("pair-name").value, confirm);
      code.value = ""; // used once; not kept in the page
      start(d);
    } catch (e) {
      await backend.clear(); // nothing half-paired stays behind
      $("pair-msg").textContent = e instanceof SddsfError ? `Pairing failed: [${e.code}] ${e.message}` : String(e);
      $("pair-msg").className = "bad";
      show("pair-check", false);
    }
  };
}

/** Ask for the passphrase of a store protected by one; `opened` gets the open store. */
export function unlockFlow(backend: IndexedDbBackend, opened: (s: Store) => Promise<void>): void {
  show("unlock");
  $("unlock-go").onclick = async () => {
    try {
      show("unlock", false);
      const pass = $<HTMLInputElement>("unlock-pass");
      const store = await Store.open(backend, pass.value);
      pass.value = "";
      await opened(store);
    } catch (e) {
      show("unlock");
      $("unlock-msg").textContent = e instanceof SddsfError ? e.message : String(e);
      $("unlock-msg").className = "bad";
    }
  };
}
