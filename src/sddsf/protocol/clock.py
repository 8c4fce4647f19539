"""Hybrid logical clock (Kulkarni et al.), as a pure state machine.

A timestamp is ``(wall_ms, counter)``, ordered lexicographically. The clock
never goes backwards even when the wall clock does, and stays within
``max_drift_ms`` of the wall clock (default 10 minutes, the same window
as the op rules' ``max_skew_ms``, so a timestamp the rules accept is one the
clock can observe). Wall time is a parameter (the caller reads
the clock), so the core does no I/O.

SDDSF never orders ops by time: order comes from per-author sequence numbers
and the relay's per-space offsets (THREATS #19). Timestamps serve freshness
checks (the skew window) and tie-breaking inside documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sddsf.errors import ClockSkewError, DecodeError, UsageError

__all__ = ["HLCTimestamp", "HybridLogicalClock"]

_MAX_COUNTER: Final = 0xFFFF
_MAX_WALL_MS: Final = 2**48 - 1  # year 10889


@dataclass(frozen=True, slots=True, order=True)
class HLCTimestamp:
    """A hybrid logical timestamp."""

    wall_ms: int
    counter: int = 0

    def to_wire(self) -> list[int]:
        """``[wall_ms, counter]``."""
        return [self.wall_ms, self.counter]

    @classmethod
    def from_wire(cls, value: object, *, what: str) -> HLCTimestamp:
        """Parse ``[wall_ms, counter]`` with range checks."""
        if (not isinstance(value, list) or len(value) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
            raise DecodeError(f"{what}: expected [wall_ms, counter]")
        wall, counter = value
        if not (isinstance(wall, int) and isinstance(counter, int)
                and 0 <= wall <= _MAX_WALL_MS and 0 <= counter <= _MAX_COUNTER):
            raise DecodeError(f"{what}: timestamp out of range")
        return cls(wall, counter)


class HybridLogicalClock:
    """Issues monotonic timestamps close to wall time."""

    __slots__ = ("last", "max_drift_ms")

    def __init__(self, last: HLCTimestamp | None = None, *, max_drift_ms: int = 600_000) -> None:
        self.last = last or HLCTimestamp(0, 0)
        self.max_drift_ms = max_drift_ms

    def _advance(self, candidate_wall: int, counter_floor: int, wall_ms: int) -> HLCTimestamp:
        if not 0 <= wall_ms <= _MAX_WALL_MS:
            raise UsageError("wall clock value out of range")
        if candidate_wall >= wall_ms:
            counter = counter_floor + 1
        else:
            candidate_wall, counter = wall_ms, 0
        if counter > _MAX_COUNTER:
            # Only reachable with > 65535 events in one millisecond of a stalled clock.
            candidate_wall, counter = candidate_wall + 1, 0
        if candidate_wall - wall_ms > self.max_drift_ms:
            raise ClockSkewError(
                f"logical clock is {candidate_wall - wall_ms} ms ahead of the wall clock "
                f"(limit {self.max_drift_ms} ms); check this machine's time")
        self.last = HLCTimestamp(candidate_wall, counter)
        return self.last

    def tick(self, wall_ms: int) -> HLCTimestamp:
        """Timestamp for a local event (e.g. creating an op)."""
        return self._advance(self.last.wall_ms, self.last.counter, wall_ms)

    def observe(self, remote: HLCTimestamp, wall_ms: int) -> HLCTimestamp:
        """Merge a received timestamp; returns the timestamp of the receive event.

        Raises:
            ClockSkewError: ``remote`` is more than ``max_drift_ms`` ahead of ``wall_ms``
                (the clock state is left unchanged).
        """
        if remote.wall_ms - wall_ms > self.max_drift_ms:
            raise ClockSkewError(
                f"peer timestamp is {remote.wall_ms - wall_ms} ms in the future "
                f"(limit {self.max_drift_ms} ms)")
        # The lexicographic max carries the larger counter when the walls tie.
        base = max(self.last, remote)
        return self._advance(base.wall_ms, base.counter, wall_ms)
