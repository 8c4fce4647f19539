"""This node on the local network: its dialable addresses and mDNS presence.

* :func:`listen_addrs` turns the bound listen addresses into ones another device
  can dial: a wildcard (``0.0.0.0``, ``::``) becomes each interface's address.
* :class:`LocalDiscovery` announces the node over mDNS (libp2p's
  ``_p2p._udp.local`` service, dnsaddr TXT records) and dials the nodes it
  hears. zeroconf does blocking socket work (1.3-1.6 s to register), so start
  and stop run in a worker thread; its browser thread reports discoveries
  through the trio token, never by touching trio state directly.

Runs in (or, for the zeroconf callbacks, next to) the node's trio thread.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import multiaddr  # type: ignore[import-untyped]  # no type information
import trio
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.discovery.mdns.mdns import MDNSDiscovery
from libp2p.utils.address_validation import expand_wildcard_address

from sddsf.errors import SddsfError, UnavailableError

__all__ = ["REDIAL_S", "LocalDiscovery", "listen_addrs"]

_log = logging.getLogger(__name__)
_WILDCARDS = ("/ip4/0.0.0.0/", "/ip6/::/")
_LOOPBACKS = ("/ip4/127.", "/ip6/::1/")
#: Nodes remembered; past it, a node this one admits takes the place of one it does not.
_MAX_HEARD: Final = 256
#: Addresses remembered per node (anyone on the LAN may announce any peer id).
_MAX_ADDRS: Final = 16
#: Seconds each address of a node is tried after the one before it, unless one
#: connects first: an address that never answers delays the next by this much only.
_STAGGER_S: Final = 0.25
#: Seconds between dial attempts to nodes heard over mDNS but not connected.
REDIAL_S: Final = 10.0


def listen_addrs(transport_addrs: list[str], peer_id: str) -> list[str]:
    """Dialable multiaddrs, each ending in ``/p2p/<peer_id>``.

    A wildcard address is replaced by the matching addresses of every
    interface (loopback last); other addresses are kept as they are.

    Args:
        transport_addrs: The bound listen addresses (without ``/p2p/``).
        peer_id: This node's peer id.

    Returns:
        The addresses, without duplicates, in a stable order.

    Raises:
        Nothing: an interface list that cannot be read yields loopback only.
    """
    out: list[str] = []
    for addr in transport_addrs:
        if not addr.startswith(_WILDCARDS):
            out.append(addr)
            continue
        port = addr.rsplit("/", 1)[-1]
        v6 = addr.startswith("/ip6/")
        expanded = [str(a) for a in expand_wildcard_address(multiaddr.Multiaddr(addr))]
        out += [a for a in expanded if not a.startswith(_WILDCARDS)]
        out.append(f"/ip6/::1/tcp/{port}" if v6 else f"/ip4/127.0.0.1/tcp/{port}")
    suffix = f"/p2p/{peer_id}"
    return list(dict.fromkeys(a + suffix for a in out))


class LocalDiscovery:
    """mDNS announcement of this node, and dials to the nodes it hears.

    Every node heard (other than this one) is remembered with its addresses and
    dialled through ``dial`` when ``wanted(peer_id)`` (not connected, and
    admitted now); the remembered ones are tried again every
    :data:`REDIAL_S` seconds, so a device that the service authorizes later, or
    that dropped off, is connected without a new announcement. A node that is
    unreachable at every address is forgotten until it announces itself again.

    Anyone on the network can announce any peer id with addresses of its own
    (an announcement is not signed; the Noise handshake authenticates the peer
    at dial time). So a new announcement adds addresses and never replaces
    them; the address that last connected (before any connection: the first
    heard) is kept first; a node's addresses are dialled at once,
    :data:`_STAGGER_S` apart, and those that fail are dropped. A full table
    makes room for a node that ``admitted`` accepts by forgetting the oldest
    one that it does not.
    """

    def __init__(self, peer_id: str, dial: Callable[[str], Awaitable[object]],
                 wanted: Callable[[str], bool], admitted: Callable[[str], bool]) -> None:
        self._peer_id = peer_id
        self._dial = dial
        self._wanted = wanted
        self._admitted = admitted
        self._mdns: Any = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        # peer id -> its addresses, the one that last connected first, then
        # in the order heard (at most _MAX_ADDRS).
        self._heard: dict[str, list[str]] = {}
        self._trying: set[str] = set()

    async def start(self, addrs: list[str], nursery: trio.Nursery) -> None:
        """Announce ``addrs`` and start listening for other nodes.

        Args:
            addrs: This node's dialable addresses.
            nursery: Where the dials and the periodic retry run.

        Raises:
            Nothing: a network without multicast logs a warning; the node runs on
            without local discovery.
        """
        self._token = trio.lowlevel.current_trio_token()
        self._nursery = nursery
        # Loopback addresses are announced only when there is nothing else (a
        # node bound to 127.0.0.1 is reachable from this machine only).
        announced = [a for a in addrs if not a.startswith(_LOOPBACKS)] or addrs
        port = int(addrs[0].split("/tcp/")[1].split("/")[0]) if addrs else 0
        # peerDiscovery is process-wide: every node's handler hears every node's
        # listener; _heard_from_zeroconf filters this node out.
        peerDiscovery.register_peer_discovered_handler(self._heard_from_zeroconf)
        try:
            self._mdns = await trio.to_thread.run_sync(self._open, announced, port)
        except Exception:  # no multicast: run without mDNS
            _log.warning("mDNS discovery could not start", exc_info=True)
            peerDiscovery.unregister_peer_discovered_handler(self._heard_from_zeroconf)
            return
        nursery.start_soon(self._retry_forever)

    def _open(self, announced: list[str], port: int) -> Any:
        swarm: Any = _NoSwarm(self._peer_id)  # duck-typed: see _NoSwarm
        mdns = MDNSDiscovery(swarm, port=port, listen_addrs=announced)
        mdns.broadcaster.register()
        return mdns

    async def stop(self) -> None:
        """Withdraw the announcement and stop listening. Idempotent.

        Raises:
            Nothing: failures are logged.
        """
        peerDiscovery.unregister_peer_discovered_handler(self._heard_from_zeroconf)
        mdns, self._mdns = self._mdns, None
        if mdns is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_close, mdns)

    def _heard_from_zeroconf(self, peer_info: Any) -> None:
        # zeroconf's thread: hand over to trio; never raise here.
        token = self._token
        peer_id = str(peer_info.peer_id)
        if token is None or peer_id == self._peer_id:
            return
        addrs = tuple(f"{a}/p2p/{peer_id}" for a in peer_info.addrs)
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self._heard_in_trio, peer_id, addrs)

    def _heard_in_trio(self, peer_id: str, addrs: tuple[str, ...]) -> None:
        known = self._heard.get(peer_id)
        if known is None:
            if len(self._heard) >= _MAX_HEARD and not self._make_room(peer_id):
                return  # a LAN with hundreds of libp2p nodes: keep the first ones
            known = self._heard[peer_id] = []
        for addr in addrs:
            if addr not in known:
                known.append(addr)
        # Past the bound the oldest go, except the one that last connected.
        del known[1:max(1, len(known) - _MAX_ADDRS + 1)]
        self._spawn(peer_id)

    def _make_room(self, peer_id: str) -> bool:
        # Announcements of made-up peer ids must not keep a device out.
        if not self._admitted(peer_id):
            return False
        stranger = next((p for p in self._heard if not self._admitted(p)), None)
        if stranger is None:
            return False
        del self._heard[stranger]
        return True

    def _spawn(self, peer_id: str) -> None:
        if self._nursery is None or peer_id in self._trying:
            return
        self._trying.add(peer_id)
        with contextlib.suppress(RuntimeError):  # the nursery closed: shutting down
            self._nursery.start_soon(self._try, peer_id)

    async def _retry_forever(self) -> None:
        while True:
            await trio.sleep(REDIAL_S)
            for peer_id in list(self._heard):
                self._spawn(peer_id)

    async def _try(self, peer_id: str) -> None:
        try:
            if not self._wanted(peer_id):
                return
            tried = _Round(list(self._heard.get(peer_id, ())))
            async with trio.open_nursery() as dials:
                for i, addr in enumerate(tried.addrs):
                    dials.start_soon(self._try_addr, peer_id, addr, i * _STAGGER_S, tried,
                                     dials.cancel_scope)
            self._remember(peer_id, tried)
        finally:
            self._trying.discard(peer_id)

    async def _try_addr(self, peer_id: str, addr: str, delay: float, tried: _Round,
                        dials: trio.CancelScope) -> None:
        await trio.sleep(delay)
        try:
            await self._dial(addr)
        except UnavailableError as exc:
            _log.debug("mDNS peer %s at %s: %s", peer_id, addr, exc)
            tried.dead.add(addr)
            return
        except SddsfError as exc:  # not a device, or not authorized now
            _log.debug("mDNS peer %s: %s", peer_id, exc)
            tried.refused = True
        else:
            tried.connected = addr
        dials.cancel()  # the other addresses need no try

    def _remember(self, peer_id: str, tried: _Round) -> None:
        known = self._heard.get(peer_id)
        if known is None:
            return
        if tried.connected is None and not tried.refused and tried.dead >= set(known):
            del self._heard[peer_id]  # unreachable everywhere: forget it
            return
        known[:] = [a for a in known if a not in tried.dead and a != tried.connected]
        if tried.connected is not None:
            known.insert(0, tried.connected)


class _Round:
    """One round of dials to a node's addresses, and how it went."""

    def __init__(self, addrs: list[str]) -> None:
        self.addrs = addrs
        self.dead: set[str] = set()  # unreachable, or not the node announced
        self.connected: str | None = None
        self.refused = False  # the node is not one to connect to now


def _close(mdns: Any) -> None:
    try:
        mdns.broadcaster.unregister()
        mdns.listener.stop()
        mdns.zeroconf.close()
    except Exception:  # shutting down anyway
        _log.debug("closing mDNS failed", exc_info=True)


class _NoSwarm:
    """What MDNSDiscovery reads from a swarm: the peer id and a peerstore.

    The peerstore is a sink: discovered addresses go to :class:`LocalDiscovery`'s
    callback, which dials through the admission gate, not into the host's
    peerstore from zeroconf's thread.
    """

    def __init__(self, peer_id: str) -> None:
        self._peer_id = peer_id
        self.peerstore = _NullPeerstore()

    def get_peer_id(self) -> str:
        return self._peer_id


class _NullPeerstore:
    def add_addrs(self, *_: object) -> None:
        return None

    def clear_addrs(self, *_: object) -> None:
        return None
