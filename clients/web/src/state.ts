/** What the pages share: the device, the open space, and how a page asks for a redraw. */

import type { BrowserDevice, SyncSummary } from "@sddsf/client/device";

export interface AppState {
  device: BrowserDevice | null;
  /** The space whose notes and key-value document are open. */
  current: Uint8Array | null;
  lastSync: SyncSummary | null;
}

export const state: AppState = { device: null, current: null, lastSync: null };

/** The device (pages only run once it is there). */
export function device(): BrowserDevice {
  if (state.device === null) throw new Error("no device yet");
  return state.device;
}

const renderers: (() => void)[] = [];

/** Register a page's redraw (called after each sync and local change). */
export function onRender(fn: () => void): void {
  renderers.push(fn);
}

/** Redraw every page from the device's state. */
export function render(): void {
  if (state.device === null) return;
  for (const fn of renderers) fn();
}
