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
import type { Provenance } from "./records.js";
import type { Snapshot } from "./snapshot.js";
import type { AppliedOp } from "./sync.js";
import { mergeMany } from "./yupdates.js";

/** The transaction origin of updates that came from verified ops. */
export const REMOTE = Symbol("sddsf-remote");

/** The Yjs documents of one space. */
export class DocSet {
  private readonly docs = new Map<string, Y.Doc>();
  private readonly local = new Map<string, Uint8Array[]>();

  /**
   * @param provenance when given, the write-once maps of `kv` and `vault` are
   *   observed (`./records.js`); `scopeOf(name)` names a document's scope there.
   */
  constructor(private readonly provenance?: Provenance, private readonly scopeOf?: (name: string) => string) {}

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
      if (this.provenance !== undefined && this.scopeOf !== undefined) this.provenance.attach(this.scopeOf(name), name, d);
    }
    return d;
  }

  /** Names of the documents opened or received so far. */
  names(): string[] {
    return [...this.docs.keys()].sort();
  }

  /** Apply a verified snapshot's documents (before the ops after it). */
  applySnapshot(snapshot: Snapshot): void {
    this.provenance?.applying(null); // records of a snapshot: carrier unknown
    try {
      for (const [name, state] of snapshot.docs) Y.applyUpdate(this.doc(name), state, REMOTE);
    } finally {
      this.provenance?.applied();
    }
  }

  /** Apply verified ops in log order (each op's author is the carrier of the records it brings). */
  applyVerified(ops: readonly AppliedOp[]): void {
    try {
      for (const op of ops) {
        const d = this.doc(op.payload.name);
        this.provenance?.applying(op.envelope.header.author, d, op.payload.updates);
        for (const u of op.payload.updates) Y.applyUpdate(d, u, REMOTE);
      }
    } finally {
      this.provenance?.applied();
    }
  }

  /** Load a stored state (this device's own copy: no provenance event is a remote op). */
  load(name: string, state: Uint8Array): void {
    Y.applyUpdate(this.doc(name), state, REMOTE);
  }

  /** Put local edits back (they could not be sealed yet). */
  restoreLocal(name: string, update: Uint8Array): void {
    this.doc(name);
    this.local.get(name)!.push(update);
  }

  /**
   * The local edits since the last call: document name → one merged Yjs update.
   */
  takeLocal(): Map<string, Uint8Array> {
    const out = new Map<string, Uint8Array>();
    for (const [name, buffer] of this.local) {
      if (buffer.length === 0) continue;
      out.set(name, mergeMany(buffer));
      buffer.length = 0;
    }
    return out;
  }

  /** Documents with local edits not taken yet (not sealed into ops). */
  localCount(): number {
    let n = 0;
    for (const buffer of this.local.values()) if (buffer.length) n += 1;
    return n;
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
