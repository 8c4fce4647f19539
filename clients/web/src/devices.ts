/**
 * The Devices page: every device of the verified registry (name, fingerprint,
 * active or revoked, this one marked), with the trust score, access level and
 * factors the relay's controller states for it (a session request; what the
 * relay says is shown, never used for a decision).
 */

import { toHex } from "@sddsf/client/bytes";
import { SddsfError } from "@sddsf/client/errors";
import { fingerprint } from "@sddsf/client/identity";

import { $, el, row } from "./dom.js";
import { device } from "./state.js";

/** Fetch and show the devices (when the page opens). */
export async function loadDevices(): Promise<void> {
  const d = device();
  const msg = $("devices-msg");
  msg.textContent = "Loading…";
  msg.className = "muted";
  const rows = $("device-rows");
  try {
    const trust = new Map((await d.devicesTrust()).map((t) => [toHex(t.deviceId), t]));
    rows.replaceChildren();
    const registry = d.registry();
    for (const rec of [...registry.devices.values()].sort((a, b) => a.addedSeq - b.addedSeq)) {
      const id = toHex(rec.deviceId);
      const t = trust.get(id);
      const factors = el("span");
      for (const f of t?.factors ?? []) {
        factors.append(el("span", `${f.name} ${f.points >= 0 ? "+" : ""}${f.points}${f.detail ? ` (${f.detail})` : ""}`, "factor"));
      }
      const me = id === toHex(d.deviceId) ? " (this browser)" : "";
      const tr = row([`${rec.name}${me}`, fingerprint(rec.deviceId), rec.status, t?.score != null ? String(t.score) : "-",
        t ? `${t.access ?? "-"}${t.quarantined ? " (quarantined)" : ""}` : "-", factors],
      ["name", "fp", "status", "score", "access", "factors"]);
      tr.dataset.device = rec.name;
      tr.dataset.status = rec.status;
      rows.append(tr);
    }
    msg.textContent = `${registry.devices.size} device(s) in the registry verified from the pinned account key.`;
    msg.dataset.state = "loaded";
  } catch (e) {
    if (!(e instanceof SddsfError)) throw e;
    msg.textContent = `Refused ✗ [${e.code}] ${e.message}`;
    msg.className = "bad";
    msg.dataset.state = "refused";
  }
}
