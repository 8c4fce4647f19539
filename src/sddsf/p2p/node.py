"""A libp2p peer for one SDDSF device, with an asyncio API.

:class:`PeerNode` moves opaque bytes between *authorized* devices: pubsub
messages on topics, and one-shot request/response exchanges
(``/sddsf/sync/1.0.0``). What the bytes mean, and verifying them, is the sync
service's business; the node only guarantees who they came from.

Identity: the node's libp2p key is the device's Ed25519 signing key (from its
32-byte seed), so its peer id is the device's standard Ed25519 peer id and
:func:`device_of` maps any peer id back to a device id.

Security: only Noise is offered, and every connection, stream and pubsub
message is checked against ``authorize(device_id)`` and this node's bans (see
:mod:`sddsf.p2p.gate` for the four points). ``authorize`` is called from the
node's trio thread, often (every message): it must be thread-safe and cheap,
e.g. a set lookup in an immutable snapshot that the service swaps atomically.

Threading: libp2p runs on trio in a thread of the node's own
(:mod:`sddsf.p2p.bridge`). ``on_message`` and ``on_peer`` are called on the
asyncio loop that called :meth:`PeerNode.start`, in arrival order, and must not
block it; ``on_request`` is awaited on that loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import InternalError, UnavailableError, UsageError
from sddsf.p2p.bridge import TrioThread
from sddsf.p2p.gate import Admission
from sddsf.p2p.host import TrioHost
from sddsf.p2p.local import listen_addrs
from sddsf.p2p.peerid import device_of, peer_id_of
from sddsf.p2p.peers import PeerStatus
from sddsf.p2p.rpc import SYNC_PROTOCOL

__all__ = ["SYNC_PROTOCOL", "PeerNode", "PeerStatus", "device_of"]

OnMessage = Callable[[str, bytes, bytes], None]
OnRequest = Callable[[bytes, bytes], Awaitable[bytes]]
OnPeer = Callable[[PeerStatus], None]


class _ToAsyncio:
    """The host's :class:`~sddsf.p2p.host.Sink`: hands events to the asyncio loop."""

    def __init__(self, bridge: TrioThread, on_message: OnMessage, on_request: OnRequest,
                 on_peer: OnPeer | None) -> None:
        self._bridge = bridge
        self._on_message = on_message
        self._on_request = on_request
        self._on_peer = on_peer

    def message(self, topic: str, device_id: bytes, data: bytes) -> None:
        self._bridge.post(self._on_message, topic, device_id, data)

    def peer(self, status: PeerStatus) -> None:
        if self._on_peer is not None:
            self._bridge.post(self._on_peer, status)

    async def request(self, device_id: bytes, data: bytes) -> bytes:
        response = await self._bridge.call_asyncio(self._on_request, device_id, data)
        if not isinstance(response, bytes):
            raise InternalError(f"on_request returned {type(response).__name__}, not bytes")
        return response


class PeerNode:
    """A libp2p host for one device: Noise + yamux over TCP, GossipSub, mDNS.

    Args:
        signing_seed: The device's 32-byte Ed25519 signing seed (its identity).
        listen: Multiaddrs to listen on.
        mdns: Announce this node and dial the devices heard on the local network.
        authorize: ``authorize(device_id) -> bool``; thread-safe and cheap (see
            the module docstring). Peers it refuses are disconnected and ignored.
        on_message: ``on_message(topic, sender_device_id, data)`` for each pubsub
            message from another authorized device (never this node's own).
        on_request: ``await on_request(peer_device_id, request) -> response``;
            an :class:`~sddsf.errors.SddsfError` it raises reaches the requester
            as the same class.
        on_peer: Called with a peer's new status when it connects or disconnects.
        max_message: Largest request, response or pubsub message, in bytes
            (pubsub is further capped near 1 MiB by libp2p).

    Raises:
        UsageError: a seed that is not 32 bytes, or a non-positive ``max_message``.
    """

    def __init__(self, signing_seed: bytes, *, listen: Sequence[str] = ("/ip4/0.0.0.0/tcp/0",),
                 mdns: bool = True, authorize: Callable[[bytes], bool],
                 on_message: OnMessage, on_request: OnRequest,
                 on_peer: OnPeer | None = None, max_message: int = 4 << 20) -> None:
        if len(signing_seed) != 32:
            raise UsageError("the signing seed is 32 bytes")
        if max_message <= 0:
            raise UsageError("max_message must be positive")
        self._seed = bytes(signing_seed)
        self._peer_id = peer_id_of(Ed25519SigningKey.from_seed(self._seed).public.raw)
        self._listen = tuple(listen)
        self._mdns = mdns
        self._max = max_message
        self._admission = Admission(authorize)
        self._callbacks = (on_message, on_request, on_peer)
        self._bridge = TrioThread(f"sddsf-p2p-{self._peer_id[-8:]}")
        self._sink = _ToAsyncio(self._bridge, *self._callbacks)
        self._host: TrioHost | None = None

    async def start(self) -> None:
        """Start the node; return once it listens (and announces itself over mDNS, if on).

        A stopped node may be started again (a new thread and host; the peer
        table starts empty, the bans of :meth:`disconnect` carry over).

        Raises:
            UsageError: already running.
            ConfigError: a listen address is not a multiaddr.
            UnavailableError: a listen address could not be bound.
        """
        if self._bridge.running:
            raise UsageError("the peer-to-peer node is already running")
        if self._bridge.started:
            await self._bridge.stop()
            self._bridge = TrioThread(self._bridge.name)
            self._sink = _ToAsyncio(self._bridge, *self._callbacks)

        async def main(stop: trio.Event, task_status: Any) -> None:
            # Built in the trio thread: libp2p objects belong to that loop.
            self._host = TrioHost(self._seed, listen=self._listen, mdns=self._mdns,
                                  admission=self._admission, sink=self._sink,
                                  max_message=self._max)
            await self._host.run(stop, task_status)

        try:
            await self._bridge.start(main)
        except BaseException:
            await self._bridge.stop()
            raise

    async def stop(self) -> None:
        """Close every connection, stop the trio thread and wait for it to end. Idempotent.

        Raises:
            Nothing of its own.
        """
        await self._bridge.stop()

    @property
    def peer_id(self) -> str:
        """This node's libp2p peer id (base58btc), known before :meth:`start`."""
        return self._peer_id

    @property
    def addrs(self) -> list[str]:
        """Dialable listen multiaddrs with ``/p2p/<peer id>``; wildcards expanded to
        each interface's address (empty while the node is not running)."""
        host = self._host
        if host is None or not self._bridge.running:
            return []
        return listen_addrs(host.transport_addrs, self._peer_id)

    def _running_host(self) -> TrioHost:
        host = self._host
        if host is None or not self._bridge.running:
            raise UnavailableError("the peer-to-peer node is not running")
        return host

    async def dial(self, addr: str, timeout: float = 5.0) -> bytes:
        """Connect to the device at ``addr``.

        Args:
            addr: A multiaddr ending in ``/p2p/<peer id>``.
            timeout: Seconds before giving up.

        Returns:
            The device id of the peer (as the Noise handshake proved it).

        Raises:
            UsageError: not a multiaddr with ``/p2p/``, or this node's own address.
            DecodeError: the peer id is not an SDDSF (Ed25519) device's.
            AuthorizationError: ``authorize`` refuses the device, or it was disconnected.
            UnavailableError: unreachable, refused by the peer, or too slow.
        """
        return await self._bridge.call(self._running_host().dial, addr, timeout)

    async def subscribe(self, topic: str) -> None:
        """Receive the topic's messages through ``on_message``. Idempotent.

        Args:
            topic: The topic name.

        Raises:
            UnavailableError: the node is not running.
        """
        await self._bridge.call(self._running_host().topics.subscribe, topic)

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving the topic's messages. Idempotent.

        Args:
            topic: The topic name.

        Raises:
            UnavailableError: the node is not running.
        """
        await self._bridge.call(self._running_host().topics.unsubscribe, topic)

    async def publish(self, topic: str, data: bytes) -> None:
        """Send ``data`` to the topic's peers; no delivery confirmation.

        Args:
            topic: The topic name (this node need not be subscribed).
            data: The message.

        Raises:
            UsageError: ``data`` exceeds the pubsub limit.
            UnavailableError: the node is not running (nothing was sent).
        """
        await self.publish_many([(topic, data)])

    async def publish_many(self, messages: Sequence[tuple[str, bytes]],
                           wait_s: float = 2.0) -> None:
        """Send each ``(topic, data)``, in order, in one hand-over to the network
        thread (a burst costs one thread round trip, not one per message).

        Each message waits for room in its peers' outbound queues, so a burst
        is not dropped by a peer that reads more slowly than this node publishes
        (one that stalls for ``wait_s`` is not waited for again until it has
        drained: it catches up later).

        Args:
            messages: Topic names and messages.
            wait_s: The longest wait for one peer's room, in seconds.

        Raises:
            UsageError: a message exceeds the pubsub limit (nothing was sent).
            UnavailableError: the node is not running (nothing was sent).
        """
        if messages:
            await self._bridge.call(self._running_host().topics.publish,
                                    [(topic, bytes(data)) for topic, data in messages],
                                    wait_s)

    async def request(self, device_id: bytes, data: bytes, timeout: float = 10.0) -> bytes:
        """Ask a device: one request, one response, over a new stream.

        Args:
            device_id: A device this node has seen (dialled, discovered or inbound).
            data: The request, at most ``max_message`` bytes.
            timeout: Seconds for the whole exchange.

        Returns:
            The device's response.

        Raises:
            UsageError: ``data`` is too large.
            AuthorizationError: the device is not authorized, or was disconnected.
            UnavailableError: unknown, unreachable, or no answer within ``timeout``.
            SddsfError: the error the device's ``on_request`` raised.
        """
        host = self._running_host()
        return await self._bridge.call(host.sync.request, device_id, bytes(data), timeout)

    async def disconnect(self, device_id: bytes) -> None:
        """Close every connection to the device and refuse it from now on.

        The ban lasts as long as this node object (it holds across stop and
        start); pubsub drops the device too.

        Args:
            device_id: The device to cut off.

        Raises:
            Nothing of its own: on a stopped node only the ban is recorded.
        """
        self._admission.ban(device_id)
        if self._host is not None and self._bridge.running:
            await self._bridge.call(self._host.disconnect, device_id)

    def peers(self) -> list[PeerStatus]:
        """Every peer this node has connected to, connected or not now.

        Returns:
            Immutable statuses, ordered by peer id.

        Raises:
            Nothing.
        """
        host = self._host
        return host.table.snapshot() if host is not None else []
