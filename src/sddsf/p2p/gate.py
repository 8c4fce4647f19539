"""Who may talk to this node: the admission policy and the Noise handshake gate.

py-libp2p has no connection gater, so admission is enforced at four points, each
a backstop for the one before it:

1. :class:`GatedNoise`: right after the Noise handshake proves the remote's key,
   an unadmitted peer's secure channel is closed and the upgrade fails. No muxer,
   no stream and no pubsub message from it ever exists on this node.
2. The network notifee (``connected``) re-checks and closes: covers a ban that
   lands while a handshake is in flight.
3. Stream handlers (the sync protocol and the pubsub protocols) reset streams
   from unadmitted peers: covers a peer whose authorization was withdrawn while
   connected.
4. The pubsub topic validator drops messages whose forwarder or source is not
   admitted (gossip can relay a message from a peer this node never connected to).

:class:`Admission` is the one predicate all four use: not banned by this node
(:meth:`Admission.ban`) and ``authorize(device_id)`` true.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from libp2p.abc import INotifee
from libp2p.security.exceptions import HandshakeFailure
from libp2p.security.noise.transport import Transport as NoiseTransport

from sddsf.errors import SddsfError
from sddsf.p2p.peerid import device_of

__all__ = ["Admission", "ConnectionWatch", "GatedNoise"]

_log = logging.getLogger(__name__)
_CACHE_LIMIT = 4096


class Admission:
    """The admission predicate over peer ids, thread-safe.

    ``authorize`` is called from the trio thread, on every connection, stream
    and pubsub message: it must be thread-safe and cheap (a lookup in an
    immutable snapshot). An exception from it counts as "not authorized".
    """

    def __init__(self, authorize: Callable[[bytes], bool]) -> None:
        self._authorize = authorize
        self._banned: frozenset[bytes] = frozenset()
        self._lock = threading.Lock()
        # peer id bytes -> device id, or None for a peer id that names no device.
        self._devices: dict[bytes, bytes | None] = {}

    def device(self, peer_id: bytes) -> bytes | None:
        """The device id behind a binary peer id, or None if it is not an SDDSF device.

        Args:
            peer_id: The binary peer id (identity multihash).

        Returns:
            The 32-byte device id, or None.

        Raises:
            Nothing.
        """
        try:
            return self._devices[peer_id]
        except KeyError:
            pass
        try:
            found: bytes | None = device_of(peer_id)
        except SddsfError:
            found = None
        with self._lock:
            if len(self._devices) >= _CACHE_LIMIT:
                self._devices.clear()
            self._devices[peer_id] = found
        return found

    def admits_device(self, device_id: bytes) -> bool:
        """True if the device is not banned and ``authorize`` accepts it.

        Args:
            device_id: A 32-byte device id.

        Returns:
            Whether frames from this device may be accepted now.

        Raises:
            Nothing: an exception from ``authorize`` is logged and counts as False.
        """
        if device_id in self._banned:
            return False
        try:
            return bool(self._authorize(device_id))
        except Exception:  # a failing policy refuses, it does not crash
            _log.exception("authorize() raised; refusing the peer")
            return False

    def admits(self, peer_id: bytes) -> bytes | None:
        """The device id behind ``peer_id`` if it is admitted, else None.

        Args:
            peer_id: The binary peer id.

        Returns:
            The device id, or None (not a device, banned or not authorized).

        Raises:
            Nothing.
        """
        device = self.device(peer_id)
        return device if device is not None and self.admits_device(device) else None

    def ban(self, device_id: bytes) -> None:
        """Refuse this device from now on (for the life of this object).

        Args:
            device_id: A 32-byte device id.

        Raises:
            Nothing.
        """
        with self._lock:
            self._banned = self._banned | {device_id}


class GatedNoise(NoiseTransport):
    """The Noise XX transport, refusing unadmitted peers right after the handshake.

    The handshake authenticates the remote's identity key (its peer id); the
    gate then closes the secure channel and fails the upgrade with
    ``HandshakeFailure`` unless :meth:`Admission.admits` accepts the peer id.
    """

    def __init__(self, key_pair: Any, noise_privkey: Any, admission: Admission) -> None:
        super().__init__(key_pair, noise_privkey=noise_privkey)
        self._admission = admission

    async def secure_inbound(self, conn: Any) -> Any:
        """Handshake as responder, then apply the gate.

        Args:
            conn: The raw inbound connection.

        Returns:
            The secure connection, if the remote is admitted.

        Raises:
            HandshakeFailure: the handshake failed, or the remote is not admitted.
        """
        return await self._gate(await super().secure_inbound(conn))

    async def secure_outbound(self, conn: Any, peer_id: Any) -> Any:
        """Handshake as initiator (the remote must prove ``peer_id``), then apply the gate.

        Args:
            conn: The raw outbound connection.
            peer_id: The peer id the dial expects.

        Returns:
            The secure connection, if the remote is admitted.

        Raises:
            HandshakeFailure: the handshake failed, or the remote is not admitted.
        """
        return await self._gate(await super().secure_outbound(conn, peer_id))

    async def _gate(self, secure_conn: Any) -> Any:
        remote = secure_conn.get_remote_peer()
        if self._admission.admits(remote.to_bytes()) is not None:
            return secure_conn
        _log.info("refused peer %s at the handshake (not authorized or banned)", remote)
        try:
            await secure_conn.close()
        except Exception:  # the connection is being refused anyway
            _log.debug("closing a refused connection failed", exc_info=True)
        raise HandshakeFailure(f"peer {remote} is not authorized")


class ConnectionWatch(INotifee):
    """The network notifee: every new connection (inbound or outbound) and every
    closed one is reported to the host, which re-checks admission (layer 2)."""

    def __init__(self, connected: Callable[[Any], Awaitable[None]],
                 disconnected: Callable[[Any], None]) -> None:
        self._connected = connected
        self._disconnected = disconnected

    async def connected(self, network: Any, conn: Any) -> None:
        """A connection was added to the swarm (after its muxer started).

        Args:
            network: The swarm.
            conn: The new connection.

        Raises:
            Nothing of its own.
        """
        await self._connected(conn)

    async def disconnected(self, network: Any, conn: Any) -> None:
        """A connection was removed from the swarm.

        Args:
            network: The swarm.
            conn: The closed connection.

        Raises:
            Nothing of its own.
        """
        self._disconnected(conn)

    async def opened_stream(self, network: Any, stream: Any) -> None:
        """Not used (part of the notifee interface).

        Args:
            network: The swarm.
            stream: Ignored.

        Raises:
            Nothing.
        """

    async def closed_stream(self, network: Any, stream: Any) -> None:
        """Not used (part of the notifee interface).

        Args:
            network: The swarm.
            stream: Ignored.

        Raises:
            Nothing.
        """

    async def listen(self, network: Any, multiaddr: Any) -> None:
        """Not used (part of the notifee interface).

        Args:
            network: The swarm.
            multiaddr: Ignored.

        Raises:
            Nothing.
        """

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        """Not used (part of the notifee interface).

        Args:
            network: The swarm.
            multiaddr: Ignored.

        Raises:
            Nothing.
        """
