"""Live fan-out: per-space subscribers with bounded queues.

After a batch commits, the fabric publishes ``(offset, envelope)`` pairs (through
:class:`~sddsf.relay.cluster.ClusterLive`, which also feeds ops appended by
other relay processes, in log order). Each op's WebSocket frame is encoded
once, whatever the number of subscribers: as JSON text, and as the complete
wire frame that is written straight to each subscriber's socket when the
server offers a direct writer (:mod:`sddsf.relay.wsdirect`), nothing is queued
for that subscriber and its socket's send buffer is below the high-water mark;
otherwise the op is queued and sent through ASGI by the connection's task. Each
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
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.frames import Frame, Opcode

from sddsf.wire import b64

__all__ = ["DIRECT_WRITE", "Hub", "Subscriber", "frame", "text_frame"]

#: ASGI scope extension of a WebSocket connection: a ``Callable[[bytes], bool]``
#: writing one complete server frame to it now (:mod:`sddsf.relay.wsdirect`).
DIRECT_WRITE = "sddsf.direct_write"


def frame(message: dict[str, object]) -> str:
    """A WebSocket text frame: the message as JSON, bytes as base64."""
    return json.dumps({k: b64(v) if isinstance(v, bytes) else v
                       for k, v in message.items()}, separators=(",", ":"))


def text_frame(text: str) -> bytes:
    """The complete WebSocket frame a server sends for ``text`` (unmasked, no
    extension): the same bytes on every connection without compression."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


@dataclass(eq=False)
class Subscriber:
    """One WebSocket connection's subscriptions and outbound queue.

    Invariant: for every subscribed space, the client either receives every op
    in order, or a ``resync`` naming an offset at or before the first op it did
    not receive. The queue holds at most ``queue_max`` ops plus one resync
    marker per space. An op goes to ``direct`` only while nothing is queued
    or being sent, so ops reach the socket in the order offered.
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
    # Writes a message's pre-encoded "wire" frame to the socket now, or returns
    # False (connection not open, or send buffer above its high-water mark).
    # None: the server has no direct path; every message goes through the queue.
    direct: Callable[[bytes], bool] | None = None
    # The sending task holds a message taken from ``pending``, not yet sent.
    sending: bool = False

    def write_now(self, wire: bytes) -> bool:
        """Write pre-encoded frames straight to the socket, if nothing is queued
        or being sent and the socket takes them; False otherwise (nothing written)."""
        return (not self.closed and self.direct is not None and not self.pending
                and not self.sending and self.direct(wire))

    def offer(self, message: dict[str, object]) -> bool:
        """Send an op now if possible, else queue it; False if the queue is full
        (the caller then calls overflow)."""
        if self.closed:
            return False
        wire = message.get("wire")
        if isinstance(wire, bytes) and self.write_now(wire):
            return True
        if len(self.pending) >= self.queue_max:
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
        """Wait for and return the next message to send; the caller calls
        :meth:`sent` once it is written."""
        while not self.pending:
            self.wake.clear()
            await self.wake.wait()
        self.sending = True
        message = self.pending.popleft()
        if message.get("type") == "resync":
            space = message.get("space")
            if isinstance(space, bytes):
                # Delivered: a later miss starts a new resync for this space.
                self.resync_from.pop(space, None)
        return message

    def sent(self) -> None:
        """The message from :meth:`next_message` is written (or the send failed)."""
        self.sending = False


#: At most this many bytes of consecutive frames are joined into one write
#: (a slow reader's socket holds at most its high-water mark plus one chunk).
CHUNK_BYTES = 64 * 1024


def _joined(wires: list[bytes]) -> list[tuple[bytes, int]]:
    """Consecutive frames joined into chunks of at most :data:`CHUNK_BYTES` (or
    one frame, if larger): ``(bytes, number of frames)`` in order."""
    chunks: list[tuple[bytes, int]] = []
    run: list[bytes] = []
    size = 0
    for wire in wires:
        if run and size + len(wire) > CHUNK_BYTES:
            chunks.append((b"".join(run), len(run)))
            run, size = [], 0
        run.append(wire)
        size += len(wire)
    if run:
        chunks.append((b"".join(run), len(run)))
    return chunks


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

    def subscribed(self, space_id: bytes) -> bool:
        """Whether any connection of this process subscribes to the space."""
        return bool(self._by_space.get(space_id))

    def subscriber_count(self, space_id: bytes) -> int:
        """How many connections of this process subscribe to the space."""
        return len(self._by_space.get(space_id, ()))

    def spaces(self) -> list[bytes]:
        """The spaces with subscribers on this process."""
        return list(self._by_space)

    def devices(self, account_id: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """``(account, device)`` of the open connections (of one account, or all)."""
        return list(dict.fromkeys((s.account_id, s.device_id) for s in self._all
                                  if not s.closed and account_id in (None, s.account_id)))

    def space_devices(self, space_id: bytes) -> list[tuple[bytes, bytes]]:
        """``(account, device)`` of the open connections subscribed to the space."""
        return list(dict.fromkeys((s.account_id, s.device_id)
                                  for s in self._by_space.get(space_id, ()) if not s.closed))

    async def publish(self, space_id: bytes, items: list[tuple[int, bytes]]) -> None:
        """Deliver committed ops, in offset order, to every subscriber of the space
        (each op's frame is encoded once, for all of them; consecutive frames go
        to a socket in one write)."""
        subs = list(self._by_space.get(space_id, ()))
        if not subs:
            return
        messages: list[dict[str, object]] = []
        wires: list[bytes] = []
        for offset, envelope in items:
            text = frame({"type": "op", "space": space_id, "offset": offset,
                          "envelope": envelope})
            wires.append(text_frame(text))
            messages.append({"type": "op", "space": space_id, "offset": offset,
                             "frame": text, "wire": wires[-1]})
        chunks = _joined(wires)
        for sub in subs:
            done = 0  # one write per chunk of frames while the socket takes them
            for wire, count in chunks:
                if not sub.write_now(wire):
                    break
                done += count
            for message in messages[done:]:
                if not sub.offer(message):
                    sub.overflow(space_id, int(str(message["offset"])))
                    break

    def resync(self, space_id: bytes, offset: int) -> None:
        """Tell every subscriber of the space to backfill from ``offset`` over HTTP
        (ops from there could not be pushed)."""
        for sub in list(self._by_space.get(space_id, ())):
            sub.overflow(space_id, offset)

    @staticmethod
    def alert_frame(alert: dict[str, object]) -> str:
        """The WebSocket frame of a controller alert."""
        return frame({"type": "alert", **alert})

    def offer_account(self, account_id: bytes, about: bytes, alert_frame: str) -> int:
        """Push an encoded alert to every connection of the account's devices
        except the one it is about. An alert that does not fit a full queue is
        dropped for that connection (alerts are also listed over HTTP).
        Returns how many connections it was queued on."""
        sent = 0
        for sub in list(self._all):
            if sub.account_id == account_id and sub.device_id != about:
                sent += sub.offer({"type": "alert", "frame": alert_frame})
        return sent

    def publish_account(self, account_id: bytes, about: bytes,
                        alert: dict[str, object]) -> int:
        """:meth:`offer_account` of an alert not yet encoded."""
        return self.offer_account(account_id, about, self.alert_frame(alert))

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

