"""Documents: the live :class:`pycrdt.Doc` objects of a device and their stored state.

Each document is opened from the store (its folded state in pieces of at most
``DOC_PIECE`` bytes, then the appended rows: this device's edits ``docupd`` and
pulled updates ``docrem``), and every local transaction on it is captured into
a buffer that the outbox seals into ops. Updates applied by sync are not
captured (``applying``). :meth:`Documents.compact` folds appended rows into new
pieces only when they are many or large compared with the document, so an
edit costs O(edit), not O(document).
"""

from __future__ import annotations

from typing import Any

import pycrdt

from sddsf.client.engine.common import (
    COMPACT_MIN_BYTES,
    COMPACT_ROWS,
    DOC_PIECE,
    as_local_dict,
    as_local_list,
    doc_id_for,
)
from sddsf.client.records import Provenance
from sddsf.client.store import LocalStore
from sddsf.errors import DecodeError, SddsfError, UsageError
from sddsf.protocol.encoding import encode
from sddsf.protocol.snapshot import MAX_DOC_NAME

__all__ = ["Documents"]


class Documents:
    """The open documents of one device (see the module docstring)."""

    def __init__(self, store: LocalStore, provenance: Provenance) -> None:
        self.store = store
        #: Who carried each vault and key-value record (see sddsf.client.records).
        self.provenance = provenance
        self.open: dict[tuple[bytes, bytes], pycrdt.Doc[Any]] = {}
        #: Captured local updates per open document, not sealed yet.
        self.buffers: dict[tuple[bytes, bytes], list[bytes]] = {}
        self.subs: dict[tuple[bytes, bytes], Any] = {}
        #: Document id -> name, for every document opened in this process.
        self.names: dict[bytes, str] = {}
        #: True while sync applies updates (they are not local edits).
        self.applying = False

    def reload(self) -> list[SddsfError]:
        """Merge what another process stored into the open documents (never
        folding its edits away); returns the application observers' errors."""
        errors: list[SddsfError] = []
        self.applying = True
        try:
            for (space_id, doc_id), doc in self.open.items():
                for update in self.stored_updates(space_id, doc_id):
                    self.apply_update(doc, update, self.names[doc_id], errors)
        finally:
            self.applying = False
        return errors

    def detach_space(self, space_id: bytes) -> None:
        """Close the space's open documents (its state is being rebuilt): a caller
        still holding one holds a detached copy."""
        for open_key in [k for k in self.open if k[0] == space_id]:
            self.open.pop(open_key).unobserve(self.subs.pop(open_key))
            del self.buffers[open_key]

    def doc(self, space_id: bytes, name: str) -> pycrdt.Doc[Any]:
        """The document ``name`` of a space, as a live :class:`pycrdt.Doc`.

        Local transactions are captured and become ops at the next :meth:`flush`.
        """
        if not name or len(name) > MAX_DOC_NAME:
            raise UsageError(f"a document name has 1 to {MAX_DOC_NAME} characters")
        doc_id = doc_id_for(space_id, name)
        key = (space_id, doc_id)
        if key not in self.open:
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            for update in self.stored_updates(space_id, doc_id):
                doc.apply_update(update)
            self.open[key] = doc
            self.buffers[key] = []

            def capture(event: Any, key: tuple[bytes, bytes] = key) -> None:
                if not self.applying:
                    self.buffers[key].append(bytes(event.update))

            self.subs[key] = doc.observe(capture)
            self.provenance.attach(space_id + doc_id, name, doc)
            self.names[doc_id] = name
        return self.open[key]

    def stored_updates(self, space_id: bytes, doc_id: bytes) -> list[bytes]:
        """The document as stored: its folded state and the updates appended since."""
        # A document as stored: its folded state (in pieces), then the updates
        # appended since: this device's own ops (docupd) and the ones pulled
        # (docrem); order is irrelevant. Rows of this device's own store are
        # decoded without the network's size bound.
        updates: list[bytes] = []
        state = self.stored_state(space_id, doc_id)
        if state:
            updates.append(state)
        for ns in ("docupd", "docrem"):
            for _, rows in self.store.scan(ns, space_id + doc_id):
                updates.extend(u for u in as_local_list(rows) if isinstance(u, bytes))
        return updates

    def apply_update(self, doc: pycrdt.Doc[Any], update: bytes, name: str,
                      errors: list[SddsfError]) -> None:
        """Apply an update; an application observer's failure goes to ``errors``."""
        # pycrdt applies the update, then runs the application's observers and
        # raises what they raised as one ExceptionGroup: the update is in, so an
        # application bug is reported and never stops or undoes a sync.
        try:
            doc.apply_update(update)
        except ExceptionGroup as group:
            causes = "; ".join(f"{type(e).__name__}: {e}" for e in group.exceptions)
            error = UsageError(f"an observer of document {name!r} raised ({causes}); the "
                               "update was applied and stored anyway (an observer must not "
                               "read or change its document while it is being updated)")
            error.__cause__ = group
            errors.append(error)

    def forget_doc(self, key: tuple[bytes, bytes]) -> None:
        """Close an open document (a refused edit is undone this way)."""
        # Undo a refused edit here: the next doc() loads the document as stored
        # (without it); the object the application holds no longer syncs.
        doc = self.open.pop(key, None)
        sub = self.subs.pop(key, None)
        if doc is not None and sub is not None:
            doc.unobserve(sub)
        self.buffers.pop(key, None)

    def doc_row(self, space_id: bytes, doc_id: bytes) -> dict[str, Any] | None:
        """The stored ``doc`` row: ``{"name", "pieces", "size"}`` (or a legacy state)."""
        # {"name", "pieces", "size"}; homes written before pieces hold
        # {"name", "state"} (read here, rewritten at the next compaction).
        raw = self.store.get("doc", space_id + doc_id)
        return None if raw is None else as_local_dict(raw)

    def stored_state(self, space_id: bytes, doc_id: bytes) -> bytes:
        """The document's folded state: its pieces joined (b"" if none)."""
        row = self.doc_row(space_id, doc_id)
        if row is None:
            return b""
        if "state" in row:
            return bytes(row["state"])
        pieces = self.store.scan("docpiece", space_id + doc_id)
        if len(pieces) != int(row["pieces"]):
            raise DecodeError(f"the device store holds {len(pieces)} of the {row['pieces']} "
                              "pieces of a document: the store is damaged")
        return b"".join(v for _, v in pieces)

    def write_state(self, b: Any, space_id: bytes, doc_id: bytes, name: str,
                     state: bytes) -> None:
        """Replace the stored state in pieces, inside the batch ``b``."""
        # Replace the stored state by ``state`` in pieces (one transaction: b).
        row = self.doc_row(space_id, doc_id)
        old = 0 if row is None or "state" in row else int(row["pieces"])
        count = -(-len(state) // DOC_PIECE)
        for i in range(count):
            b.put("docpiece", space_id + doc_id + i.to_bytes(4, "big"),
                  state[i * DOC_PIECE:(i + 1) * DOC_PIECE])
        for i in range(count, old):
            b.delete("docpiece", space_id + doc_id + i.to_bytes(4, "big"))
        b.put("doc", space_id + doc_id, encode({"name": name, "pieces": count,
                                                "size": len(state)}))

    def compact(self) -> None:
        """Fold appended rows into stored pieces when they are many or large."""
        # Fold appended updates into each open document's stored pieces once
        # they are many or large compared with it; record every open document
        # that has content by name, so snapshots find it.
        with self.store.batch() as b:
            for (space_id, doc_id), doc in self.open.items():
                prefix = space_id + doc_id
                rows = self.store.count("docupd", prefix) + self.store.count("docrem", prefix)
                row = self.doc_row(space_id, doc_id)
                if not rows and (row is None or "state" not in row):
                    continue
                appended = (self.store.stored_bytes("docupd", prefix)
                            + self.store.stored_bytes("docrem", prefix))
                size = int(row.get("size", 0)) if row is not None else 0
                if (row is not None and "state" not in row and rows <= COMPACT_ROWS
                        and appended <= max(COMPACT_MIN_BYTES, size // 4)):
                    continue
                if row is None and rows <= COMPACT_ROWS and appended <= COMPACT_MIN_BYTES:
                    b.put("doc", prefix, encode({"name": self.names[doc_id], "pieces": 0,
                                                 "size": 0}))
                    continue
                self.write_state(b, space_id, doc_id, self.names[doc_id], doc.get_update())
                b.delete_prefix("docupd", prefix)
                b.delete_prefix("docrem", prefix)

    def doc_names(self, space_id: bytes) -> list[str]:
        """The names of the space's documents: stored ones and open ones."""
        # Documents with stored content, and open ones (which may be newer).
        names = {str(as_local_dict(raw)["name"]) for _, raw in self.store.scan("doc", space_id)}
        names.update(self.names[d] for (sid, d) in self.open if sid == space_id)
        return sorted(names)
