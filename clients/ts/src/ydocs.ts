/**
 * The documents of the spaces a device holds, as Yjs documents (the CRDT the
 * Python client uses through pycrdt, which speaks the same update format).
 *
 * Verified ops are applied with {@link DocSet.applyVerified} (a snapshot's
 * states first, then the ops in log order); local edits made in a document's
 * transactions are captured and handed out by {@link DocSet.takeLocal}, one
 * merged update per document, ready to be sealed as one op each (as the
 * Python client's `flush` does).
 */

import * as Y from "yjs";

import { toHex } from "./bytes.js";
import type { Snapshot } from "./snapshot.js";
import type { AppliedOp } from "./sync.js";

/** The transaction origin of updates that came from verified ops. */
export const REMOTE = Symbol("sddsf-remote");

/** The Yjs documents of one space. */
export class DocSet {
  private readonly docs = new Map<string, Y.Doc>();
  private readonly local = new Map<string, Uint8Array[]>();

  /** The document `name` (created empty on first use). */
  doc(name: string): Y.Doc {
    let d = this.docs.get(name);
    if (d === undefined) {
      d = new Y.Doc();
      const buffer: Uint8Array[] = [];
      this.local.set(name, buffer);
      d.on("update", (update: Uint8Array, origin: unknown) => {
        if (origin !== REMOTE) buffer.push(update);
      });
      this.docs.set(name, d);
    }
    return d;
  }

  /** Names of the documents opened or received so far. */
  names(): string[] {
    return [...this.docs.keys()].sort();
  }

  /** Apply a verified snapshot's documents (before the ops after it). */
  applySnapshot(snapshot: Snapshot): void {
    for (const [name, state] of snapshot.docs) Y.applyUpdate(this.doc(name), state, REMOTE);
  }

  /** Apply verified ops in log order. */
  applyVerified(ops: readonly AppliedOp[]): void {
    for (const op of ops) {
      const d = this.doc(op.payload.name);
      for (const u of op.payload.updates) Y.applyUpdate(d, u, REMOTE);
    }
  }

  /**
   * The local edits since the last call: document name → one merged Yjs update.
   */
  takeLocal(): Map<string, Uint8Array> {
    const out = new Map<string, Uint8Array>();
    for (const [name, buffer] of this.local) {
      if (buffer.length === 0) continue;
      out.set(name, buffer.length === 1 ? buffer[0]! : Y.mergeUpdates(buffer));
      buffer.length = 0;
    }
    return out;
  }

  /** The full state of every document (for a snapshot). */
  states(): Map<string, Uint8Array> {
    return new Map([...this.docs].map(([n, d]) => [n, Y.encodeStateAsUpdate(d)]));
  }

  /** A short description for logs. */
  toString(): string {
    return `DocSet(${[...this.docs.keys()].map((n) => `${n}:${toHex(Y.encodeStateVector(this.docs.get(n)!)).length}`).join(", ")})`;
  }
}
