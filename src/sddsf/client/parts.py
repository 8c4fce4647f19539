"""A reader's assemblies of multi-part edits (protocol section 8.11), kept in the
device store so that parts which arrive in different syncs still join up.

Rows (values encrypted like every other row of the store):

* ``asm``, key ``space || author``: the author's open :class:`Assembly`;
* ``asmpart``, key ``space || author || index (4 bytes)``: the chunks seen so far.

One :class:`PartsReader` follows one verified pull: :meth:`PartsReader.feed`
takes each op's payload in log order and returns the edits that are complete;
:meth:`PartsReader.commit` writes the new state in the pull's transaction, so
the assemblies always match the leaves the device has stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sddsf.client.store import LocalStore, StoreBatch
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.payload import Assembly, Edit, Part, advance, finish

__all__ = ["PartsReader", "open_assemblies"]


def open_assemblies(store: LocalStore, space_id: bytes) -> list[bytes]:
    """Authors with a multi-part edit open in the space (only its first parts logged)."""
    return [key[len(space_id):] for key, _ in store.scan("asm", space_id)]


@dataclass
class _Author:
    stored: Assembly | None  # as committed
    current: Assembly | None
    drop_stored_chunks: bool = False
    chunks: list[tuple[int, bytes]] = field(default_factory=list)  # new, not yet committed


class PartsReader:
    """Assemblies of one space during one verified pull."""

    def __init__(self, store: LocalStore, space_id: bytes,
                 limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS, *,
                 fresh: bool = False) -> None:
        """Args:
            fresh: start with no open assembly and never read or write the stored
                ones (a replay of the log from a point where none was open).
        """
        self._store = store
        self._space = space_id
        self._limits = limits
        self._fresh = fresh
        self._authors: dict[bytes, _Author] = {}

    def feed(self, author: bytes, seq: int, doc: bytes, payload: Edit | Part) -> Edit | None:
        """The edit that op ``seq`` of ``author`` completes: the payload itself for
        a one-op edit, the joined edit for a multi-part edit's last part, else None.

        Raises:
            DecodeError: the op does not continue its author's open assembly, or
                exceeds the reader's bounds.
        """
        state = self._state(author)
        new = advance(state.current, payload, doc=doc, seq=seq, limits=self._limits)
        if state.current is not None and (new is None or new.next_index == 1):
            self._void(state)  # abandoned by its author (re-sent after a refusal)
        state.current = new
        if isinstance(payload, Edit):
            return payload
        state.chunks.append((payload.index, payload.chunk))
        if new is None or not new.complete:
            return None
        edit = finish(new, self._chunks(author, state))
        self._void(state)
        state.current = None
        return edit

    def commit(self, b: StoreBatch) -> None:
        """Write the assemblies' new state into the pull's transaction."""
        if self._fresh:
            raise ValueError("a fresh PartsReader replays the log; it has nothing to commit")
        for author, state in self._authors.items():
            key = self._space + author
            if state.drop_stored_chunks:
                for row, _ in self._store.scan("asmpart", key):
                    b.delete("asmpart", row)
            for index, chunk in state.chunks:
                b.put("asmpart", key + index.to_bytes(4, "big"), chunk)
            if state.current is None:
                b.delete("asm", key)
            elif state.current != state.stored:
                b.put("asm", key, encode(state.current.to_wire()))

    def _state(self, author: bytes) -> _Author:
        state = self._authors.get(author)
        if state is None and self._fresh:
            state = self._authors[author] = _Author(None, None)
        if state is None:
            raw = self._store.get("asm", self._space + author)
            stored = Assembly.from_wire(decode(raw)) if raw is not None else None
            state = self._authors[author] = _Author(stored, stored)
        return state

    def _void(self, state: _Author) -> None:
        state.drop_stored_chunks = state.stored is not None or state.drop_stored_chunks
        state.chunks = []

    def _chunks(self, author: bytes, state: _Author) -> list[bytes]:
        earlier = [] if state.drop_stored_chunks or self._fresh else [
            chunk for _, chunk in self._store.scan("asmpart", self._space + author)]
        return earlier + [chunk for _, chunk in state.chunks]
