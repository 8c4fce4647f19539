"""LocalDiscovery's table of nodes heard over mDNS, against made-up announcements.

An mDNS announcement is not signed: anyone on the LAN can announce any peer id
at any address, and as many peer ids as it likes. Each test starts a real
LocalDiscovery (real zeroconf on this machine) and hands it announcements
through libp2p's process-wide discovery events, where zeroconf's listener
delivers them. Its dials go to a recorder that connects the genuine address
and refuses every other, as a Noise handshake with the wrong key would.
Real libp2p nodes under the same attack: ``tests/p2p/test_node.py``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import pytest

if os.environ.get("SDDSF_REQUIRE_P2P") != "1":
    pytest.importorskip("libp2p", reason="peer-to-peer sync needs the p2p extra (libp2p)")

import multiaddr
import trio
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import UnavailableError
from sddsf.p2p.local import LocalDiscovery
from sddsf.p2p.peerid import peer_id_of


def new_peer_id() -> str:
    return peer_id_of(Ed25519SigningKey.from_seed(os.urandom(32)).public.raw)


class World:
    """The devices this node admits, and the one address where each really listens."""

    def __init__(self) -> None:
        self.admitted: set[str] = set()
        self.genuine: dict[str, str] = {}
        self.connected: set[str] = set()
        self.dialled: list[str] = []

    async def dial(self, addr: str) -> None:
        self.dialled.append(addr)
        peer = addr.rsplit("/p2p/", 1)[1]
        if self.genuine.get(peer) != addr:
            raise UnavailableError(f"{addr} closed the connection")
        self.connected.add(peer)

    def wanted(self, peer: str) -> bool:
        return peer in self.admitted and peer not in self.connected


def announce(peer: str, *addrs: str) -> None:
    peerDiscovery.emit_peer_discovered(
        PeerInfo(ID.from_base58(peer), [multiaddr.Multiaddr(a) for a in addrs]))


async def until(done: Callable[[], bool], seconds: float = 5) -> None:
    with trio.fail_after(seconds):
        while not done():
            await trio.sleep(0.02)


def run(scenario: Callable[[World], Awaitable[None]]) -> World:
    world = World()

    async def main() -> None:
        discovery = LocalDiscovery(new_peer_id(), world.dial, world.wanted,
                                   world.admitted.__contains__)
        async with trio.open_nursery() as nursery:
            await discovery.start(["/ip4/127.0.0.1/tcp/9"], nursery)
            try:
                await scenario(world)
            finally:
                await discovery.stop()
                nursery.cancel_scope.cancel()

    trio.run(main)
    return world


def test_made_up_peer_ids_do_not_crowd_out_a_device() -> None:
    device = new_peer_id()

    async def scenario(world: World) -> None:
        world.admitted.add(device)
        world.genuine[device] = f"/ip4/127.0.0.1/tcp/4242/p2p/{device}"
        for i in range(300):  # more made-up nodes than the table holds
            announce(new_peer_id(), f"/ip4/10.9.{i // 250}.{i % 250}/tcp/4001")
        announce(device, "/ip4/127.0.0.1/tcp/4242")
        await until(lambda: device in world.connected)

    run(scenario)


def test_a_spoofed_address_of_a_device_does_not_replace_its_own() -> None:
    device = new_peer_id()

    async def scenario(world: World) -> None:
        world.genuine[device] = f"/ip4/127.0.0.1/tcp/4242/p2p/{device}"
        announce(device, "/ip4/127.0.0.1/tcp/4242")  # heard before it is admitted
        await trio.sleep(0.1)
        for port in range(5000, 5040):  # then spoofed, more than a node's bound
            announce(device, f"/ip4/127.0.0.1/tcp/{port}")
        await trio.sleep(0.1)
        world.admitted.add(device)  # admitted now: the retry dials it
        announce(device, "/ip4/127.0.0.1/tcp/6000")  # one more, so a try starts now
        await until(lambda: device in world.connected)
        # At most one round of the bound's addresses, tried until one connected.
        assert len(world.dialled) <= 16

    run(scenario)


def test_a_device_that_connected_keeps_that_address_first() -> None:
    device = new_peer_id()

    async def scenario(world: World) -> None:
        world.admitted.add(device)
        world.genuine[device] = f"/ip4/127.0.0.1/tcp/4242/p2p/{device}"
        announce(device, "/ip4/127.0.0.1/tcp/4242")
        await until(lambda: device in world.connected)
        world.connected.clear()  # it dropped off; spoofers flood its peer id
        before = len(world.dialled)
        for port in range(5000, 5040):
            announce(device, f"/ip4/127.0.0.1/tcp/{port}")
        await until(lambda: device in world.connected)
        assert world.dialled[before] == world.genuine[device]  # tried first, at once

    run(scenario)


def test_a_node_unreachable_everywhere_is_forgotten_until_heard_again() -> None:
    device = new_peer_id()

    async def scenario(world: World) -> None:
        world.admitted.add(device)
        announce(device, "/ip4/127.0.0.1/tcp/5000", "/ip4/127.0.0.1/tcp/5001")
        await until(lambda: len(world.dialled) == 2)
        await trio.sleep(0.3)
        world.genuine[device] = f"/ip4/127.0.0.1/tcp/4242/p2p/{device}"
        announce(device, "/ip4/127.0.0.1/tcp/4242")
        await until(lambda: device in world.connected)
        # The forgotten addresses were not tried again with the new one.
        assert world.dialled[2:] == [world.genuine[device]]

    run(scenario)
