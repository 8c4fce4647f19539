/**
 * The Alerts page: the open alerts of the relay's controller (a session
 * request), naming the device by the registry's name, and the alerts this
 * device's own checks raised while syncing (records changed or removed by
 * another device, forged or misattributed authorship).
 */

import { toHex } from "@sddsf/client/bytes";
import { SddsfError } from "@sddsf/client/errors";

import { $, el, row, when } from "./dom.js";
import { device } from "./state.js";

/** Fetch and show the alerts (when the page opens). */
export async function loadAlerts(): Promise<void> {
  const d = device();
  const msg = $("alerts-msg");
  msg.textContent = "Loading…";
  msg.className = "muted";
  const rows = $("alert-rows");
  try {
    const alerts = await d.controllerAlerts();
    rows.replaceChildren();
    for (const a of alerts) {
      const name = d.registry().devices.get(toHex(a.device))?.name ?? toHex(a.device).slice(0, 12);
      const tr = row([when(a.createdMs), a.severity, name, a.rule, `${a.message}${a.quarantine ? " (quarantine)" : ""}`]);
      tr.dataset.rule = a.rule;
      rows.append(tr);
    }
    const local = $("local-alerts");
    local.replaceChildren(...d.alerts.map(([code, m]) => el("li", `[${code}] ${m}`, "bad")));
    msg.textContent = alerts.length ? `${alerts.length} open alert(s) from the relay's controller.`
      : "No open alerts from the relay's controller.";
    msg.className = "muted";
    msg.dataset.state = "loaded";
    msg.dataset.count = String(alerts.length);
  } catch (e) {
    if (!(e instanceof SddsfError)) throw e;
    msg.textContent = `Refused ✗ [${e.code}] ${e.message}`;
    msg.className = "bad";
    msg.dataset.state = "refused";
  }
}
