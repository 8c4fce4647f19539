/**
 * The Audit log page: the account's security events, fetched and VERIFIED in
 * the browser as the Python client does (every entry against the relay's
 * signed audit tree head, the heads this browser verified before still a
 * prefix, consistent growth, each device report's signature). The result is
 * `#audit-result[data-state="verified"|"refused"][data-code]`.
 */

import { toHex } from "@sddsf/client/bytes";
import type { AuditEntry } from "@sddsf/client/controller";
import { SddsfError } from "@sddsf/client/errors";

import { $, row, when } from "./dom.js";
import { device } from "./state.js";

function details(e: AuditEntry): string {
  return [...e.data].map(([k, v]) => `${k}=${v instanceof Uint8Array ? toHex(v).slice(0, 12) : String(v)}`).join(", ") +
    (e.report.length ? " (signed by the device)" : "");
}

/** Fetch, verify and show the audit log (when the page opens). */
export async function loadAudit(): Promise<void> {
  const d = device();
  const out = $("audit-result");
  out.textContent = "Verifying…";
  out.className = "status";
  out.dataset.state = "";
  const rows = $("audit-rows");
  try {
    const check = await d.verifyAudit();
    rows.replaceChildren();
    check.entries.forEach((e, i) => {
      const who = e.device.length ? d.registry().devices.get(toHex(e.device))?.name ?? toHex(e.device).slice(0, 12) : "account";
      const tr = row([String(i), when(e.ts), e.kind, who, details(e)]);
      tr.dataset.kind = e.kind;
      rows.append(tr);
    });
    out.className = "status ok";
    out.textContent = `Verified ✓ ${check.entries.length} audit events against the audit tree head of size ${check.head.size} ` +
      `(root ${toHex(check.head.root).slice(0, 12)}…) signed by the pinned relay key; ${check.headsChecked} earlier head(s) ` +
      "still a prefix; every device report's signature checked";
    out.dataset.state = "verified";
    out.dataset.code = "ok";
  } catch (e) {
    if (!(e instanceof SddsfError)) throw e;
    rows.replaceChildren();
    out.className = "status bad";
    out.textContent = `Refused ✗ [${e.code}] ${e.message} — the audit log is not shown`;
    out.dataset.state = "refused";
    out.dataset.code = e.code;
  }
}
