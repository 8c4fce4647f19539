/** Small DOM helpers: no framework. */

/** The element with `id` (the page's markup has every id this app uses). */
export const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`no element #${id}`);
  return el as T;
};

/** Show or hide the element `id`. */
export const show = (id: string, on = true): void => void $(id).classList.toggle("hidden", !on);

/** A new element with text content (never HTML: nothing from the relay or a document is parsed). */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, text = "", cls = ""): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

/** A table row of text cells. */
export function row(cells: readonly (string | Node)[], cls: readonly string[] = []): HTMLTableRowElement {
  const tr = document.createElement("tr");
  cells.forEach((c, i) => {
    const td = document.createElement("td");
    if (cls[i]) td.className = cls[i]!;
    if (typeof c === "string") td.textContent = c;
    else td.append(c);
    tr.append(td);
  });
  return tr;
}

/** A time in ms as local date and time. */
export const when = (ms: number | bigint): string => new Date(Number(ms)).toLocaleString();
