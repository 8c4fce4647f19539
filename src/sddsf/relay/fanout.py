"""Live fan-out: per-space subscribers with bounded queues.

After a batch commits, the fabric publishes ``(offset, envelope)`` pairs. Each
subscriber has a queue of at most ``queue_max`` ops; a subscriber that falls
behind on a space is not buffered without bound: that space's queued ops are
replaced by one ``resync`` message naming the first offset it missed (other
spaces keep theirs), and it backfills over HTTP (THREATS #18, #23). Revoking a
device, or the controller denying it, closes its subscriptions at once.
Controller alerts go to every connection of the account
(:meth:`Hub.publish_account`), subscribed or not.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Hub", "Subscriber"]


@dataclass(eq=False)
class Subscriber:
    """One WebSocket connection's subscriptions and outbound queue.

    Invariant: for every subscribed space, the client either receives every op
    in order, or a ``resync`` naming an offset at or before the first op it did
    not receive. The queue holds at most ``queue_max`` ops plus one resync
    marker per space.
    """

    account_id: bytes
    device_id: bytes
    queue_max: int
    spaces: set[bytes] = field(default_factory=set)
    pending: deque[dict[str, object]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    # Per space: the lowest offset missed and not yet told to the client.
    resync_from: dict[bytes, int] = field(default_factory=dict)

    def offer(self, message: dict[str, object]) -> bool:
        """Queue an op; False if the queue is full (the caller then calls overflow)."""
        if self.closed or len(self.pending) >= self.queue_max:
            return False
        self.pending.append(message)
        self.wake.set()
        return True

    def overflow(self, space_id: bytes, offset: int) -> None:
        """The subscriber fell behind on ``space_id`` at ``offset``: drop that space's
        queued messages (other spaces keep theirs) and queue one resync for it."""
        if self.closed:
            return
        dropped = [m["offset"] for m in self.pending
                   if m.get("space") == space_id and isinstance(m.get("offset"), int)]
        first = min([offset, *(o for o in dropped if isinstance(o, int))])
        previous = self.resync_from.get(space_id)
        self.resync_from[space_id] = first if previous is None else min(previous, first)
        self.pending = deque(m for m in self.pending if m.get("space") != space_id)
        self.pending.append({"type": "resync", "space": space_id,
                             "from": self.resync_from[space_id]})
        self.wake.set()

    def close(self, reason: str) -> None:
        """Drop everything and leave only a close marker."""
        self.pending.clear()
        self.pending.append({"type": "close", "reason": reason})
        self.closed = True
        self.wake.set()

    async def next_message(self) -> dict[str, object]:
        """Wait for and return the next message to send."""
        while not self.pending:
            self.wake.clear()
            await self.wake.wait()
        message = self.pending.popleft()
        if message.get("type") == "resync":
            space = message.get("space")
            if isinstance(space, bytes):
                # Delivered: a later miss starts a new resync for this space.
                self.resync_from.pop(space, None)
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
                    sub.overflow(space_id, offset)
                    break

    def publish_account(self, account_id: bytes, about: bytes,
                        alert: dict[str, object]) -> int:
        """Push a controller alert to every connection of the account's devices
        except the one it is about. An alert that does not fit a full queue is
        dropped for that connection (alerts are also listed over HTTP).
        Returns how many connections it was queued on."""
        sent = 0
        for sub in list(self._all):
            if sub.account_id == account_id and sub.device_id != about:
                sent += sub.offer({"type": "alert", **alert})
        return sent

    def has_device(self, device_id: bytes) -> bool:
        """Whether the device has an open connection on this process."""
        return any(s.device_id == device_id and not s.closed for s in self._all)

    def close_device(self, device_id: bytes, reason: str) -> int:
        """Close every connection of a device (revocation, or the controller denies
        it). Returns how many."""
        closing = [s for s in self._all if s.device_id == device_id and not s.closed]
        for sub in closing:
            sub.close(reason)
        return len(closing)

