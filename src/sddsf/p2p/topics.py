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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub

from sddsf.errors import UsageError
from sddsf.p2p.gate import Admission

__all__ = ["PUBSUB_MAX_DATA", "Topics"]

#: 1 MiB per pubsub RPC, less 16 KiB for the envelope (ids, signature, key, topic).
PUBSUB_MAX_DATA: Final = (1 << 20) - (16 << 10)


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

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data`` on ``topic`` (to the peers in the topic's mesh).

        Args:
            topic: The pubsub topic name.
            data: At most min(max_message, PUBSUB_MAX_DATA) bytes.

        Raises:
            UsageError: ``data`` is too large for a pubsub message.
        """
        limit = min(self._max, PUBSUB_MAX_DATA)
        if len(data) > limit:
            raise UsageError(f"a pubsub message is at most {limit} bytes, got {len(data)}; "
                             "send larger payloads with request()")
        await self.pubsub.publish(topic, data)
