"""What this node knows about its peers: one immutable status per peer id.

The trio thread writes (connections, messages); the asyncio side reads
(:meth:`PeerTable.snapshot`). A lock makes each update and each read atomic;
readers get immutable :class:`PeerStatus` values, never the live table.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Literal

__all__ = ["FoundBy", "PeerStatus", "PeerTable"]

FoundBy = Literal["mdns", "dial", "inbound"]


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One peer as this node sees it."""

    device_id: bytes
    """The peer's SDDSF device id (from the key its peer id carries)."""
    peer_id: str
    """The libp2p peer id, base58btc."""
    addrs: tuple[str, ...]
    """Multiaddrs known for it (dialled, discovered or learnt by identify)."""
    connected: bool
    """Whether at least one connection to it is open now."""
    found_by: str
    """How the current (or last) connection came about: "mdns", "dial" or "inbound"."""
    last_seen_ms: int
    """Last time a connection, message or request from it was seen (Unix ms)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class PeerTable:
    """Peer statuses keyed by peer id; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._peers: dict[str, PeerStatus] = {}

    def connected(self, device_id: bytes, peer_id: str, addrs: tuple[str, ...],
                  found_by: FoundBy) -> PeerStatus:
        """Record a new connection.

        Args:
            device_id: The peer's device id.
            peer_id: Its peer id.
            addrs: Multiaddrs known for it now.
            found_by: How the connection came about.

        Returns:
            The new status.

        Raises:
            Nothing.
        """
        status = PeerStatus(device_id, peer_id, addrs, True, found_by, _now_ms())
        with self._lock:
            self._peers[peer_id] = status
        return status

    def update(self, peer_id: str, *, connected: bool | None = None,
               addrs: tuple[str, ...] | None = None) -> PeerStatus | None:
        """Touch a known peer (last seen now), optionally changing fields.

        Args:
            peer_id: The peer id.
            connected: The new connection state, or None to keep it.
            addrs: The new addresses, or None to keep them.

        Returns:
            The new status, or None if the peer is unknown.

        Raises:
            Nothing.
        """
        with self._lock:
            old = self._peers.get(peer_id)
            if old is None:
                return None
            new = dataclasses.replace(
                old, last_seen_ms=_now_ms(),
                connected=old.connected if connected is None else connected,
                addrs=old.addrs if addrs is None else addrs)
            self._peers[peer_id] = new
            return new

    def get(self, peer_id: str) -> PeerStatus | None:
        """The status of one peer id, or None.

        Args:
            peer_id: The peer id.

        Returns:
            Its status, or None if unknown.

        Raises:
            Nothing.
        """
        with self._lock:
            return self._peers.get(peer_id)

    def of_device(self, device_id: bytes) -> list[PeerStatus]:
        """Every peer id seen for a device (normally one).

        Args:
            device_id: The device id.

        Returns:
            Their statuses.

        Raises:
            Nothing.
        """
        with self._lock:
            return [s for s in self._peers.values() if s.device_id == device_id]

    def snapshot(self) -> list[PeerStatus]:
        """All statuses, ordered by peer id.

        Returns:
            A new list of immutable statuses.

        Raises:
            Nothing.
        """
        with self._lock:
            return [self._peers[k] for k in sorted(self._peers)]
