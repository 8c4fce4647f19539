"""The trio side of a peer node: one libp2p host, GossipSub, the sync protocol.

Everything here runs in the node's trio thread (:mod:`sddsf.p2p.bridge`);
:class:`~sddsf.p2p.node.PeerNode` is the asyncio face. What crosses back to
asyncio goes through a :class:`Sink`.

The host offers Noise only (:class:`~sddsf.p2p.gate.GatedNoise`, never plaintext,
TLS or SECIO) and yamux only (no mplex); its connection manager never redials on its own
(``low_watermark=0``). libp2p objects are typed ``Any`` here: this module is the
boundary, and only the attributes named below are used.

py-libp2p 0.8.1 behaviours this module works around (each bit us in a spike):

* ``host.connect`` waits out a 250 ms happy-eyeballs head start even when its
  only address has connected: dials go through ``dial_addr``.
* A failed dial blocks the peer for 60 s (negative cache): cleared before each
  dial, since a device that was away is often back.
* The pubsub seen-message cache owns a thread: stopped on shutdown.
* GossipSub's own quirks: see :mod:`sddsf.p2p.topics`.
* mDNS start-up blocks for 1.3-1.6 s: it runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final, Protocol

import multiaddr  # type: ignore[import-untyped]  # no type information
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from sddsf.errors import (
    AuthorizationError,
    Code,
    ConfigError,
    DecodeError,
    UnavailableError,
    UsageError,
)
from sddsf.p2p.gate import Admission, ConnectionWatch, GatedNoise
from sddsf.p2p.local import LocalDiscovery, listen_addrs
from sddsf.p2p.peers import FoundBy, PeerStatus, PeerTable
from sddsf.p2p.rpc import SYNC_PROTOCOL, SyncExchange, network_errors
from sddsf.p2p.topics import Topics

__all__ = ["Sink", "TrioHost"]

_log = logging.getLogger(__name__)
# libp2p's logger has no handler (unless LIBP2P_DEBUG configures one) and does
# not propagate, so Python's last-resort handler printed its warnings and errors
# (one per refused dial of a peer that is away) on the stderr of every program
# using this module. With a handler of its own they go only where LIBP2P_DEBUG or
# the application sends them.
logging.getLogger("libp2p").addHandler(logging.NullHandler())

_STOP_GRACE_S: Final = 3.0
_ADDR_TTL_S: Final = 3600
_MDNS_DIAL_TIMEOUT_S: Final = 5.0


class Sink(Protocol):
    """Where the trio side hands things to the application (implemented by the node).

    ``message`` and ``peer`` are called in the trio thread and must not block;
    ``request`` may take time (the trio loop keeps running meanwhile).
    """

    def message(self, topic: str, device_id: bytes, data: bytes) -> None:
        """A validated pubsub message from an admitted device.

        Args:
            topic: The topic it came on.
            device_id: The source device.
            data: The message.

        Raises:
            Nothing: must not raise.
        """

    def peer(self, status: PeerStatus) -> None:
        """A peer connected or disconnected.

        Args:
            status: Its new status.

        Raises:
            Nothing: must not raise.
        """

    async def request(self, device_id: bytes, data: bytes) -> bytes:
        """Answer a request from an admitted device.

        Args:
            device_id: The requesting device.
            data: The request.

        Returns:
            The response.

        Raises:
            SddsfError: sent to the requester as its code.
        """
        ...


class TrioHost:
    """One libp2p host and its pubsub, driven from the trio thread."""

    def __init__(self, signing_seed: bytes, *, listen: tuple[str, ...], mdns: bool,
                 admission: Admission, sink: Sink, max_message: int) -> None:
        try:
            self._listen = [multiaddr.Multiaddr(a) for a in listen]
        except Exception as exc:  # multiaddr raises several types
            raise ConfigError(f"not a listen multiaddr: {exc}") from exc
        self._key_pair: Any = create_new_key_pair(signing_seed)
        self._admission = admission
        self._sink = sink
        self._max = max_message
        self._mdns_on = mdns
        self.table = PeerTable()
        self._host: Any = new_host(
            key_pair=self._key_pair,
            sec_opt={NOISE_PROTOCOL_ID: GatedNoise(
                self._key_pair, create_x25519_key_pair().private_key, admission)},
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},  # new_host's default adds mplex
            connection_config=ConnectionConfig(
                min_connections=0, low_watermark=0, high_watermark=64, max_connections=128))
        self.peer_id: str = self._host.get_id().to_base58()
        self._self_bytes: bytes = self._host.get_id().to_bytes()
        self.topics = Topics(self._host, admission, sink.message, self._touch, max_message)
        self.sync = SyncExchange(self._host, admission, self.table, sink.request, self._touch,
                                 max_message)
        # peer id -> the reason of each dial to it in flight (mDNS dials a
        # node's addresses at once).
        self._dialing: dict[str, list[FoundBy]] = {}
        self._local: LocalDiscovery | None = None
        self.transport_addrs: list[str] = []

    # -- life cycle ----------------------------------------------------------

    async def run(self, stop: trio.Event,
                  task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, serve until ``stop`` is set, then shut down within a grace period.

        Args:
            stop: Set (from any task) to shut down.
            task_status: Reports ready once listening (and mDNS announced, if on).

        Raises:
            UnavailableError: a listen address could not be bound.
        """
        try:
            with trio.CancelScope() as life:
                async with (self._host.run(self._listen),
                            background_trio_service(self.topics.pubsub),
                            background_trio_service(self.topics.router)):
                    await self._ready()
                    async with trio.open_nursery() as tasks:
                        self.topics.tasks = tasks
                        if self._mdns_on:
                            self._local = LocalDiscovery(self.peer_id, self._dial_heard,
                                                         self._wanted, self._admitted)
                            await self._local.start(
                                listen_addrs(self.transport_addrs, self.peer_id), tasks)
                        task_status.started()
                        await stop.wait()
                        # Past the grace period everything below is cancelled.
                        life.deadline = trio.current_time() + _STOP_GRACE_S
                        tasks.cancel_scope.cancel()
                    await self._shutdown()
        finally:
            self.topics.pubsub.seen_messages.stop()  # its sweeper thread outlives trio

    async def _ready(self) -> None:
        await self.topics.pubsub.wait_until_ready()
        self.transport_addrs = [str(a) for a in self._host.get_transport_addrs()]
        if len(self.transport_addrs) < len(self._listen):
            raise UnavailableError(
                f"could not listen on every address of {[str(a) for a in self._listen]} "
                f"(listening on {self.transport_addrs}); is a port in use?")
        self._host.get_network().register_notifee(
            ConnectionWatch(self.on_connected, self.on_disconnected))
        self._host.set_stream_handler(SYNC_PROTOCOL, self.sync.serve)
        # Pubsub registered its handlers in its constructor; put the gate in front.
        for proto in self.topics.router.get_protocols():
            self._host.set_stream_handler(proto, self._gated(self.topics.pubsub.stream_handler))

    async def _shutdown(self) -> None:
        if self._local is not None:
            await self._local.stop()
        with network_errors("closing the host"):
            await self._host.close()

    # -- admission and connections (called by ConnectionWatch) ---------------

    async def on_connected(self, conn: Any) -> None:
        """Admit or close a new connection; record it.

        Args:
            conn: The libp2p connection (a SwarmConn).

        Raises:
            Nothing: failures to close are logged.
        """
        peer = conn.muxed_conn.peer_id
        device = self._admission.admits(peer.to_bytes())
        if device is None:
            _log.info("closing a connection from unadmitted peer %s", peer)
            try:
                await conn.close()
            except Exception:  # refusing anyway
                _log.debug("closing a refused connection failed", exc_info=True)
            return
        key = peer.to_base58()
        inbound = str(getattr(conn, "direction", "")) == "inbound"
        # A connection that arrives while this node dials the same peer (both
        # dialled at once, as two nodes hearing each other over mDNS do) keeps
        # this node's reason to dial: it found the peer itself. (dial() drops
        # the entry when it returns.)
        dialing = self._dialing.get(key)
        found_by: FoundBy = dialing[0] if dialing else ("inbound" if inbound else "dial")
        old = self.table.get(key)
        if old is not None and old.connected:
            self.table.update(key)
            return
        self._sink.peer(self.table.connected(device, key, self._addrs_of(peer), found_by))

    def on_disconnected(self, conn: Any) -> None:
        """Record a closed connection; report the peer gone when it was the last.

        Args:
            conn: The libp2p connection that closed.

        Raises:
            Nothing.
        """
        peer = conn.muxed_conn.peer_id
        left = [c for c in self._host.get_network().get_connections(peer)
                if c is not conn and not c.is_closed]
        if not left:
            status = self.table.update(peer.to_base58(), connected=False)
            if status is not None:
                self._sink.peer(status)

    def _touch(self, peer: Any) -> None:
        # Last seen now; addresses as identify has learnt them so far.
        self.table.update(peer.to_base58(), addrs=self._addrs_of(peer) or None)

    def _addrs_of(self, peer: Any) -> tuple[str, ...]:
        try:
            found = self._host.get_peerstore().addrs(peer)
        except Exception:  # PeerStoreError: nothing known yet
            return ()
        suffix = f"/p2p/{peer.to_base58()}"
        return tuple(sorted({f"{a}{suffix}" if "/p2p/" not in str(a) else str(a)
                             for a in found}))

    def _gated(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        async def gated(stream: Any) -> None:
            if self._admission.admits(stream.muxed_conn.peer_id.to_bytes()) is None:
                await stream.reset()
                return
            await handler(stream)
        return gated

    # -- dialing --------------------------------------------------------------

    async def dial(self, addr: str, timeout: float, found_by: FoundBy = "dial") -> bytes:
        """Connect to a peer at ``addr`` (with ``/p2p/``) and return its device id.

        Args:
            addr: A multiaddr ending in ``/p2p/<peer id>``.
            timeout: Seconds before giving up.
            found_by: Recorded in the peer's status.

        Returns:
            The peer's device id.

        Raises:
            UsageError: not a multiaddr with ``/p2p/``, or this node's own address.
            DecodeError: the peer id is not an Ed25519 (SDDSF device) peer id.
            AuthorizationError: the device is banned or not authorized.
            UnavailableError: unreachable, refused, or not connected within ``timeout``.
        """
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:  # multiaddr raises several types
            raise UsageError(f"not a multiaddr with /p2p/<peer id>: {addr!r}") from exc
        peer = info.peer_id
        if peer.to_bytes() == self._self_bytes:
            raise UsageError("cannot dial this node's own address")
        device = self._admission.device(peer.to_bytes())
        if device is None:
            raise DecodeError(f"{peer} is not an SDDSF device's peer id (not Ed25519)",
                              Code.UNSUPPORTED_SUITE)
        if not self._admission.admits_device(device):
            raise AuthorizationError(f"device {device.hex()[:16]}... is not authorized "
                                     "(or was disconnected by this node)")
        key, network = peer.to_base58(), self._host.get_network()
        self._host.get_peerstore().add_addrs(peer, info.addrs, _ADDR_TTL_S)
        # Read by on_connected, which runs inside dial_addr.
        self._dialing.setdefault(key, []).append(found_by)
        try:
            # dial_addr, not host.connect: connect's happy-eyeballs loop waits out
            # its 250 ms head start even after the only address has connected.
            with trio.move_on_after(timeout) as scope, network_errors(f"dialing {addr}"):
                if not network.get_connections(peer):
                    await network.dial_addr(info.addrs[0], peer)
        finally:
            reasons = self._dialing[key]
            reasons.remove(found_by)
            if not reasons:
                del self._dialing[key]
        if scope.cancelled_caught:
            raise UnavailableError(f"no connection to {addr} within {timeout:g} s",
                                   Code.REQUEST_TIMEOUT)
        if not network.get_connections(peer):
            raise UnavailableError(f"{addr} closed the connection (it may not authorize "
                                   "this device)")
        return device

    def _wanted(self, peer_id: str) -> bool:
        # LocalDiscovery asks before dialling a node heard over mDNS.
        status = self.table.get(peer_id)
        if status is not None and status.connected:
            return False
        return self._admitted(peer_id)

    def _admitted(self, peer_id: str) -> bool:
        try:
            return self._admission.admits(ID.from_base58(peer_id).to_bytes()) is not None
        except ValueError:  # not base58
            return False

    async def _dial_heard(self, addr: str) -> None:
        await self.dial(addr, _MDNS_DIAL_TIMEOUT_S, "mdns")

    async def disconnect(self, device_id: bytes) -> None:
        """Close every connection to a device the caller has just banned.

        The ban itself is recorded first, in the shared :class:`Admission`, so a
        connection racing with this call is refused by the gate.

        Args:
            device_id: The device to cut off.

        Raises:
            Nothing: close failures are logged.
        """
        for status in self.table.of_device(device_id):
            peer = ID.from_base58(status.peer_id)
            await _blacklist(self.topics.pubsub, peer)
            try:
                await self._host.disconnect(peer)
            except Exception:  # the ban holds either way
                _log.debug("closing connections to %s failed", peer, exc_info=True)
            self.table.update(status.peer_id, connected=False)


async def _blacklist(pubsub: Any, peer: Any) -> None:
    """Ban ``peer`` from pubsub and drop its stream, without racing libp2p.

    ``Pubsub.add_to_blacklist`` (0.8.1) starts a task that resets the peer's
    stream and then deletes it from ``peers``; the reset lets the dead-peer
    handler delete it first, and the second delete raises KeyError, which ends
    the whole pubsub service (seen when a revoked device is cut off). Here the
    peer is removed first, then its stream is reset.
    """
    pubsub.blacklisted_peers.add(peer)
    stream = pubsub.peers.pop(peer, None)
    queue = pubsub.peer_queues.pop(peer, None) if hasattr(pubsub, "peer_queues") else None
    if queue is not None:
        queue.close()
    with contextlib.suppress(Exception):  # (the router may not know it yet)
        pubsub.router.remove_peer(peer)
    pubsub._forget_all_subscriptions(peer)
    if stream is not None:
        with contextlib.suppress(Exception):  # already closed by the other side
            await stream.reset()
