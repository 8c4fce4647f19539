"""Pubsub topics of a peer node (trio side): GossipSub with this node's admission.

Every subscribed topic has a validator that runs on every message before it is
delivered or forwarded: the message must fit ``max_message``, and both its
source (the ``from`` peer, whose signature pubsub checks) and the peer that
forwarded it must be admitted. Gossip can relay a message from a device this
node never connected to, so the source is checked, not only the connection.

py-libp2p 0.8.1 behaviours this module works around:

* GossipSub's spam protection drops ordinary traffic: it is off (admission is
  ours). Heartbeat every second so a new peer joins the mesh within ~1 s.
* A subscription queue holds 32 messages and drops the rest silently: each
  topic has a task that hands messages to asyncio at once (unbounded there).
* One pubsub RPC is capped at 1 MiB (larger ones are dropped silently on the
  way out): :meth:`Topics.publish` refuses what would not fit.
* A peer's outbound queue holds 32 RPCs and drops the rest silently, so a burst
  published faster than a peer reads loses its tail until the next catch-up:
  :meth:`Topics.publish` waits for room in the topic's peers' queues first
  (back-pressure), except for a peer that has not drained for a whole wait.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import OutBoundQueueSize

from sddsf.errors import UsageError
from sddsf.p2p.gate import Admission

__all__ = ["PUBSUB_MAX_DATA", "Topics"]

#: 1 MiB per pubsub RPC, less 16 KiB for the envelope (ids, signature, key, topic).
PUBSUB_MAX_DATA: Final = (1 << 20) - (16 << 10)

#: A publication waits until each peer's outbound queue holds fewer RPCs than
#: this, leaving room for GossipSub's own control messages (heartbeat GRAFT,
#: PRUNE, IHAVE share the queue and its bound).
_QUEUE_ROOM: Final = OutBoundQueueSize - 8
#: How often a waiting publication looks at the queues again (they have no
#: "room" event).
_QUEUE_POLL_S: Final = 0.002


class Topics:
    """GossipSub on one host, delivering validated messages to ``deliver``.

    ``tasks`` must be set to a running nursery before :meth:`subscribe`.
    """

    def __init__(self, host: Any, admission: Admission,
                 deliver: Callable[[str, bytes, bytes], None],
                 seen: Callable[[Any], None], max_message: int) -> None:
        self.router: Any = GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=6, degree_low=4, degree_high=12,
            heartbeat_initial_delay=0.1, heartbeat_interval=1,
            spam_protection_enabled=False)
        self.pubsub: Any = Pubsub(host, self.router)
        self.tasks: trio.Nursery | None = None
        self._self: bytes = host.get_id().to_bytes()
        self._admission = admission
        self._deliver = deliver
        self._seen = seen
        self._max = max_message
        self._subs: dict[str, Any] = {}
        # Peers whose queue stayed full for a whole wait: not waited for until it
        # has room again (a stalled peer must not stall every publication; it
        # gets what it misses from a catch-up).
        self._stalled: set[Any] = set()

    def _validate(self, forwarder: Any, msg: Any) -> bool:
        # Runs for every message, ours included, before anything is delivered.
        if len(msg.data) > self._max:
            return False
        source: bytes = msg.from_id
        fwd = forwarder.to_bytes()
        if source == self._self:
            return bool(fwd == self._self)
        return (self._admission.admits(source) is not None
                and (fwd == source or self._admission.admits(fwd) is not None))

    async def subscribe(self, topic: str) -> None:
        """Join ``topic``; its messages go to ``deliver``. Idempotent.

        Args:
            topic: The pubsub topic name.

        Raises:
            Nothing of its own.
        """
        if topic in self._subs:
            return
        assert self.tasks is not None  # noqa: S101 -- calls run only while serving
        self.pubsub.set_topic_validator(topic, self._validate, False)
        sub = await self.pubsub.subscribe(topic)
        self._subs[topic] = sub
        self.tasks.start_soon(self._drain, topic, sub)

    async def _drain(self, topic: str, sub: Any) -> None:
        async for msg in sub:
            if msg.from_id == self._self:
                continue  # this node's own publication
            device = self._admission.device(msg.from_id)
            if device is None:
                continue  # unreachable: the validator refused it
            self._seen(ID(msg.from_id))
            self._deliver(topic, device, bytes(msg.data))

    async def unsubscribe(self, topic: str) -> None:
        """Leave ``topic``. Idempotent.

        Args:
            topic: The pubsub topic name.

        Raises:
            Nothing of its own.
        """
        if self._subs.pop(topic, None) is None:
            return
        await self.pubsub.unsubscribe(topic)  # closes the queue: _drain ends
        self.pubsub.remove_topic_validator(topic)

    async def publish(self, messages: Sequence[tuple[str, bytes]], wait_s: float) -> None:
        """Publish each ``(topic, data)`` in order (to the peers in the topic's
        mesh), each once the topic's peers have room for it.

        Args:
            messages: Each ``data`` at most min(max_message, PUBSUB_MAX_DATA) bytes.
            wait_s: The longest wait for a peer's room; a peer whose queue
                stays full that long is not waited for again until it drains.

        Raises:
            UsageError: a message is too large for pubsub (nothing was sent).
        """
        limit = min(self._max, PUBSUB_MAX_DATA)
        for _, data in messages:
            if len(data) > limit:
                raise UsageError(f"a pubsub message is at most {limit} bytes, got {len(data)}; "
                                 "send larger payloads with request()")
        for topic, data in messages:
            await self._room(topic, wait_s)
            await self.pubsub.publish(topic, data)

    def _full(self, topic: str) -> list[Any]:
        """The topic's peers whose outbound queue has no room (stalled ones aside)."""
        queues = self.pubsub.peer_queues
        full = []
        for peer in self.pubsub.peer_topics.get(topic, ()):
            queue = queues.get(peer)
            if queue is None or len(queue) < _QUEUE_ROOM:
                self._stalled.discard(peer)
            elif peer not in self._stalled:
                full.append(peer)
        return full

    async def _room(self, topic: str, wait_s: float) -> None:
        # Invariant: returns once every non-stalled peer of the topic has room
        # for this publication, or after wait_s (those still full are then
        # marked stalled and their copy may be dropped by libp2p).
        with trio.move_on_after(wait_s) as scope:
            while self._full(topic):
                await trio.sleep(_QUEUE_POLL_S)
        if scope.cancelled_caught:
            self._stalled.update(self._full(topic))
