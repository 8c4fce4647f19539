/**
 * The Vault page: the items (name, kind, who wrote it, verified or not), a
 * secret revealed only on click (and hidden again on the next reveal or page
 * change), copied with the clipboard API; an item two devices changed
 * concurrently is shown as a conflict, each version revealable on its own.
 * A secret is never logged, never put in a URL or an attribute.
 */

import { SddsfError } from "@sddsf/client/errors";
import type { Item, Version } from "@sddsf/client/vault";

import { $, el, row, when } from "./dom.js";
import { authorLabel } from "./notes.js";
import { device, onRender } from "./state.js";

/** What is revealed: the item and its versions then (a change of the item hides it). */
let revealed: { name: string; versions: string } | null = null;

const versionsOf = (item: Item): string => item.heads.map((h) => h.id).join(",");

function reveal(item: Item, secret: string | null): void {
  const name = item.name;
  revealed = { name, versions: versionsOf(item) };
  const out = $("vault-secret");
  out.textContent = secret ?? "";
  out.dataset.item = name;
  $("vault-msg").textContent = "";
}

/** Hide a revealed secret (when the person leaves the page). */
export function hideSecret(): void {
  revealed = null;
  $("vault-secret").textContent = "";
  $("vault-secret").dataset.item = "";
}

async function copy(name: string, secret: string | null): Promise<void> {
  try {
    await navigator.clipboard.writeText(secret ?? "");
    $("vault-msg").textContent = `Copied ${name} to the clipboard.`;
    $("vault-msg").dataset.copied = name;
  } catch (e) {
    $("vault-msg").textContent = `The clipboard refused: ${String(e)}`;
  }
}

function button(label: string, cls: string, onclick: () => void): HTMLButtonElement {
  const b = el("button", label, cls);
  b.onclick = onclick;
  return b;
}

function versionLabel(v: Version): string {
  return `${authorLabel(v.author, v.verified)} at ${when(v.tsMs)}`;
}

function itemRow(item: Item): HTMLTableRowElement {
  const actions = document.createElement("span");
  const current = (): string | null => {
    try {
      return device().vault().get(item.name).secret ?? null;
    } catch (e) {
      $("vault-msg").textContent = e instanceof SddsfError ? e.message : String(e);
      return null;
    }
  };
  if (item.conflict) {
    // Each concurrent version, revealable and copyable on its own.
    item.heads.forEach((h, i) => actions.append(
      button(`Reveal ${i + 1}`, "reveal", () => reveal(item, h.secret)), " ",
      button(`Copy ${i + 1}`, "copy", () => void copy(item.name, h.secret)), " "));
  } else {
    actions.append(button("Reveal", "reveal", () => reveal(item, current())), " ",
      button("Copy", "copy", () => void copy(item.name, current())));
  }
  const kind = item.conflict ? `${item.kind} (CONFLICT: ${item.heads.length} versions: ${item.heads.map(versionLabel).join("; ")})`
    : item.kind;
  const tr = row([item.name, kind, item.heads.map((h) => authorLabel(h.author, h.verified)).join(", "), actions],
    ["name", item.conflict ? "kind bad" : "kind", "author", "actions"]);
  tr.dataset.item = item.name;
  if (item.conflict) tr.dataset.conflict = "true";
  return tr;
}

/** Wire the page. */
export function initVault(): void {
  onRender(() => {
    const rows = $("vault-rows");
    rows.replaceChildren();
    const vault = device().vault();
    const items = vault.list();
    for (const item of items) if (!item.deleted) rows.append(itemRow(item));
    // A revealed secret whose item changed since (a new version, a conflict) is hidden: reveal again.
    const shown = revealed === null ? undefined : items.find((i) => i.name === revealed!.name);
    if (revealed !== null && (shown === undefined || versionsOf(shown) !== revealed.versions)) hideSecret();
    for (const a of vault.alerts) {
      const tr = el("tr", `alert: ${a.name ?? "?"} ${a.what}${a.by ? ` by ${a.by.slice(0, 12)}` : ""}`, "bad");
      rows.append(tr);
    }
  });
}
