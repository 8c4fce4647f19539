"""Live fan-out: per-space subscribers with bounded queues.

After a batch commits, the fabric publishes ``(offset, envelope)`` pairs. Each
subscriber has a queue of at most ``queue_max`` messages; a subscriber that
falls behind is not buffered without bound: its queue is replaced by one
``resync`` message naming the first offset it missed, and it backfills over
HTTP (THREATS #18, #23). Revoking a device closes its subscriptions at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Hub", "Subscriber"]


@dataclass(eq=False)
class Subscriber:
    """One WebSocket connection's subscriptions and outbound queue."""

    account_id: bytes
    device_id: bytes
    queue_max: int
    spaces: set[bytes] = field(default_factory=set)
    pending: deque[dict[str, object]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    # Lowest offset this subscriber missed and has not yet been told about.
    resync_from: int | None = None

    def offer(self, message: dict[str, object]) -> bool:
        """Queue a message; False if the subscriber is full (caller sends resync)."""
        if self.closed or len(self.pending) >= self.queue_max:
            return False
        self.pending.append(message)
        self.wake.set()
        return True

    def replace_with(self, message: dict[str, object]) -> None:
        """Drop everything queued and leave only ``message`` (resync or close)."""
        self.pending.clear()
        self.pending.append(message)
        self.wake.set()

    async def next_message(self) -> dict[str, object]:
        """Wait for and return the next message to send."""
        while not self.pending:
            self.wake.clear()
            await self.wake.wait()
        message = self.pending.popleft()
        if message.get("type") == "resync":
            self.resync_from = None  # delivered: later misses start a new resync
        return message


class Hub:
    """Subscribers by space, in one relay process."""

    def __init__(self) -> None:
        self._by_space: dict[bytes, set[Subscriber]] = {}
        self._all: set[Subscriber] = set()

    @property
    def connected(self) -> int:
        """Number of open subscriber connections."""
        return len(self._all)

    def add(self, sub: Subscriber) -> None:
        """Register a connection."""
        self._all.add(sub)

    def subscribe(self, sub: Subscriber, space_id: bytes) -> None:
        """Start delivering ``space_id`` to ``sub``."""
        sub.spaces.add(space_id)
        self._by_space.setdefault(space_id, set()).add(sub)

    def remove(self, sub: Subscriber) -> None:
        """Forget a connection and all its subscriptions."""
        self._all.discard(sub)
        for space_id in sub.spaces:
            subs = self._by_space.get(space_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_space[space_id]
        sub.spaces.clear()

    async def publish(self, space_id: bytes, items: list[tuple[int, bytes]]) -> None:
        """Deliver committed ops to every subscriber of the space."""
        for sub in list(self._by_space.get(space_id, ())):
            for offset, envelope in items:
                if not sub.offer({"type": "op", "space": space_id, "offset": offset,
                                  "envelope": envelope}):
                    if not sub.closed:
                        # Everything queued is dropped, so the resync must start at
                        # the first op still queued or at an earlier pending resync.
                        first = _first_queued_offset(sub, space_id, offset)
                        sub.resync_from = first if sub.resync_from is None else min(
                            sub.resync_from, first)
                        sub.replace_with({"type": "resync", "space": space_id,
                                          "from": sub.resync_from})
                    break

    def close_device(self, device_id: bytes, reason: str) -> int:
        """Close every connection of a device (revocation). Returns how many."""
        closing = [s for s in self._all if s.device_id == device_id]
        for sub in closing:
            sub.replace_with({"type": "close", "reason": reason})
            sub.closed = True
        return len(closing)


def _first_queued_offset(sub: Subscriber, space_id: bytes, default: int) -> int:
    queued = [m.get("offset") for m in sub.pending
              if m.get("space") == space_id and isinstance(m.get("offset"), int)]
    return min([default, *(q for q in queued if isinstance(q, int))])
