"""Version vectors: which op sequence numbers of each author a state includes.

A :class:`VersionVector` maps an author (device id) to the highest contiguous
sequence number seen from that author; absent means 0. It forms a join
semilattice: :meth:`join` is commutative, associative and idempotent (a
property test checks all three), and :meth:`compare` is the induced partial
order.

Wire form: an array of ``[device_id, seq]`` pairs sorted by device id, with
no zero entries and no duplicate ids (one encoding per value).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import Enum

from sddsf.errors import Code, DecodeError, UsageError
from sddsf.protocol.encoding import encode

__all__ = ["Ordering", "VersionVector"]


class Ordering(Enum):
    """Result of comparing two version vectors."""

    EQUAL = "equal"
    BEFORE = "before"  # self < other
    AFTER = "after"  # self > other
    CONCURRENT = "concurrent"


class VersionVector(Mapping[bytes, int]):
    """An immutable version vector."""

    __slots__ = ("_encoded", "_entries", "_hash")

    def __init__(self, entries: Mapping[bytes, int] | None = None) -> None:
        clean: dict[bytes, int] = {}
        for author, seq in (entries or {}).items():
            if not isinstance(author, bytes) or isinstance(seq, bool) or not isinstance(seq, int):
                raise UsageError("version vector entries map bytes to int")
            if seq < 0:
                raise UsageError("version vector sequence numbers are non-negative")
            if seq:
                clean[author] = seq
        self._entries = dict(sorted(clean.items()))
        self._hash: int | None = None
        self._encoded: bytes | None = None

    # Mapping protocol: absent authors read as 0 through get(), not [].
    def __getitem__(self, author: bytes) -> int:
        return self._entries[author]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._entries.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VersionVector):
            return self._entries == other._entries
        return NotImplemented

    def __repr__(self) -> str:
        inner = ", ".join(f"{a.hex()[:8]}:{s}" for a, s in self._entries.items())
        return f"VersionVector({{{inner}}})"

    def seq(self, author: bytes) -> int:
        """Sequence number included for ``author`` (0 if none)."""
        return self._entries.get(author, 0)

    def join(self, other: VersionVector) -> VersionVector:
        """Least upper bound: the pointwise maximum."""
        merged = dict(self._entries)
        for author, seq in other._entries.items():
            if seq > merged.get(author, 0):
                merged[author] = seq
        return VersionVector(merged)

    def with_seq(self, author: bytes, seq: int) -> VersionVector:
        """A copy with ``author`` set to ``seq``."""
        merged = dict(self._entries)
        merged[author] = seq
        return VersionVector(merged)

    def without(self, author: bytes) -> VersionVector:
        """A copy without ``author``."""
        return VersionVector({a: s for a, s in self._entries.items() if a != author})

    def dominates(self, other: VersionVector) -> bool:
        """True when ``self >= other`` pointwise."""
        return all(self._entries.get(a, 0) >= s for a, s in other._entries.items())

    def compare(self, other: VersionVector) -> Ordering:
        """Partial order between two vectors."""
        ge, le = self.dominates(other), other.dominates(self)
        if ge and le:
            return Ordering.EQUAL
        if ge:
            return Ordering.AFTER
        if le:
            return Ordering.BEFORE
        return Ordering.CONCURRENT

    def encoded(self) -> bytes:
        """Canonical bytes of :meth:`to_wire` (computed once)."""
        if self._encoded is None:
            self._encoded = encode(self.to_wire())
        return self._encoded

    def to_wire(self) -> list[list[object]]:
        """``[[device_id, seq], ...]`` sorted by device id."""
        return [[a, s] for a, s in self._entries.items()]

    @classmethod
    def _from_checked(cls, entries: dict[bytes, int], encoded: bytes) -> VersionVector:
        """A vector from entries already checked to be sorted by id, unique and
        >= 1, with ``encoded`` their canonical wire bytes (for decoders that
        validated the wire form themselves: the envelope's fast path)."""
        vv = cls.__new__(cls)
        vv._entries = entries
        vv._hash = None
        vv._encoded = encoded
        return vv

    @classmethod
    def from_wire(cls, value: object, *, what: str, id_size: int,
                  max_entries: int) -> VersionVector:
        """Parse the wire form strictly (sorted, unique, non-zero).

        Raises:
            DecodeError: any deviation from the single canonical form.
        """
        if not isinstance(value, list):
            raise DecodeError(f"{what}: expected an array of [id, seq] pairs")
        if len(value) > max_entries:
            raise DecodeError(f"{what}: {len(value)} entries exceed the limit of {max_entries}",
                              Code.TOO_LARGE)
        entries: dict[bytes, int] = {}
        previous = b""
        for item in value:
            if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes)
                    or len(item[0]) != id_size or isinstance(item[1], bool)
                    or not isinstance(item[1], int) or item[1] < 1):
                raise DecodeError(f"{what}: each entry is [{id_size}-byte id, seq >= 1]")
            if item[0] <= previous:
                raise DecodeError(f"{what}: entries must be sorted by id without duplicates")
            previous = item[0]
            entries[item[0]] = item[1]
        return cls(entries)
