"""PeerNode over real libp2p connections on 127.0.0.1 (no mocks).

Each test starts its own nodes (mDNS off: loopback has no multicast here) and
is bounded by ``asyncio.timeout``. Skipped when py-libp2p is not installed,
unless ``SDDSF_REQUIRE_P2P=1`` (then the import error fails the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

try:
    import libp2p  # noqa: F401
except ImportError:
    if os.environ.get("SDDSF_REQUIRE_P2P") == "1":
        raise
    pytest.skip("py-libp2p is not installed (pip install 'sddsf[p2p]'; "
                "SDDSF_REQUIRE_P2P=1 makes this a failure)", allow_module_level=True)

from sddsf.errors import (
    AuthorizationError,
    DecodeError,
    NotFoundError,
    UnavailableError,
    UsageError,
)
from sddsf.p2p import PeerNode, PeerStatus, device_of
from sddsf.p2p.peerid import peer_id_of
from sddsf.protocol.identity import DeviceKeys

TOPIC = "sddsf-test-topic"
LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)


@dataclass
class Probe:
    """One started node and what its callbacks saw."""

    node: PeerNode
    keys: DeviceKeys
    allowed: set[bytes] | None  # None: authorize everyone
    messages: asyncio.Queue[tuple[str, bytes, bytes]] = field(default_factory=asyncio.Queue)
    heard: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # every message
    statuses: list[PeerStatus] = field(default_factory=list)

    def on_message(self, topic: str, device_id: bytes, data: bytes) -> None:
        self.heard.append((topic, device_id, data))
        self.messages.put_nowait((topic, device_id, data))

    @property
    def device_id(self) -> bytes:
        return self.keys.device_id

    def allow(self, *others: Probe) -> None:
        assert self.allowed is not None
        self.allowed.update(o.device_id for o in others)

    def revoke(self, other: Probe) -> None:
        assert self.allowed is not None
        self.allowed.discard(other.device_id)


@pytest.fixture
async def make_node() -> AsyncIterator[Callable[..., object]]:
    started: list[PeerNode] = []

    async def make(*, open_to_all: bool = True, max_message: int = 4 << 20,
                   on_request: Callable[[bytes, bytes], object] | None = None,
                   mdns: bool = False, start: bool = True,
                   authorize: Callable[[bytes], bool] | None = None) -> Probe:
        # Fresh identities: mDNS announcements reach every process on this machine,
        # and a test running at the same time in another worker must not hear
        # (and be dialled as) a node with this node's peer id.
        seed = os.urandom(32)
        keys = DeviceKeys.from_seeds(seed, os.urandom(32))
        allowed: set[bytes] | None = None if open_to_all else set()

        def by_set(device_id: bytes) -> bool:
            return allowed is None or device_id in allowed

        async def echo(device_id: bytes, data: bytes) -> bytes:
            return device_id + data

        probe: Probe
        node = PeerNode(seed, listen=LOOPBACK, mdns=mdns,
                        authorize=authorize or by_set,
                        on_message=lambda t, d, m: probe.on_message(t, d, m),  # noqa: PLW0108 -- probe is
                        # assigned below
                        on_request=on_request or echo,  # type: ignore[arg-type]
                        on_peer=lambda s: probe.statuses.append(s),  # noqa: PLW0108 -- (late binding)
                        max_message=max_message)
        probe = Probe(node, keys, allowed)
        started.append(node)
        if start:
            await node.start()
        return probe

    yield make
    for node in started:
        await node.stop()


async def publish_until_received(sender: Probe, receiver: Probe, data: bytes) -> bytes:
    """Publish until ``receiver`` gets ``data``; return the sender device id it saw.

    GossipSub puts a new peer in the topic mesh at its next heartbeat (1 s), so
    the first messages after a dial may reach nobody: fire-and-forget by design.
    """
    while True:
        await sender.node.publish(TOPIC, data)
        try:
            topic, device, got = await asyncio.wait_for(receiver.messages.get(), 0.2)
        except TimeoutError:
            continue
        if got == data:
            assert topic == TOPIC
            return device


async def test_peer_id_is_the_device_key_and_maps_back_to_the_device_id(make_node) -> None:
    async with asyncio.timeout(10):
        a, b = await make_node(), await make_node()
        # The node's peer id is the standard Ed25519 identity-multihash peer id of
        # the device signing key, and device_of inverts it to DeviceKeys' device id.
        assert a.node.peer_id == peer_id_of(a.keys.signing.public.raw)
        assert a.node.peer_id.startswith("12D3KooW")
        assert device_of(a.node.peer_id) == a.keys.device_id
        # What the Noise handshake proved on the wire is the same device.
        assert await b.node.dial(a.node.addrs[0]) == a.device_id
        assert all(addr.endswith(f"/p2p/{a.node.peer_id}") for addr in a.node.addrs)


def test_device_of_refuses_peer_ids_that_are_not_ed25519() -> None:
    from libp2p.crypto.secp256k1 import create_new_key_pair as secp256k1_pair
    from libp2p.peer.id import ID

    secp = ID.from_pubkey(secp256k1_pair().public_key).to_base58()
    for bad in (secp, "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "not base58 0OIl", ""):
        with pytest.raises(DecodeError):
            device_of(bad)


async def test_two_nodes_exchange_pubsub_messages_both_ways(make_node) -> None:
    async with asyncio.timeout(15):
        a, b = await make_node(), await make_node()
        await a.node.subscribe(TOPIC)
        await b.node.subscribe(TOPIC)
        assert await b.node.dial(a.node.addrs[0]) == a.device_id
        assert await publish_until_received(a, b, b"from a") == a.device_id
        assert await publish_until_received(b, a, b"from b") == b.device_id
        # A node never hears its own publications.
        await a.node.publish(TOPIC, b"echo?")
        await asyncio.sleep(0.3)
        assert all(m[2] != b"echo?" for m in a.heard)
        # found_by and last_seen say how and when each side met the other.
        (seen_by_a,) = a.node.peers()
        (seen_by_b,) = b.node.peers()
        assert (seen_by_a.found_by, seen_by_b.found_by) == ("inbound", "dial")
        assert seen_by_a.device_id == b.device_id and seen_by_a.connected
        assert a.node.addrs[0] in seen_by_b.addrs
        assert [s.connected for s in b.statuses] == [True]


async def test_simultaneous_dials_record_each_sides_own_reason(make_node) -> None:
    # Two nodes that dial each other at once (as two nodes that hear each
    # other's mDNS announcements do) each see the other's connection arrive
    # while their own dial is in flight: each records the peer as found by its
    # own dial, not as "inbound" on both sides.
    for _ in range(4):
        a, b = await make_node(), await make_node()
        await asyncio.gather(a.node.dial(b.node.addrs[0]), b.node.dial(a.node.addrs[0]))
        (b_seen_by_a,), (a_seen_by_b,) = a.node.peers(), b.node.peers()
        assert (b_seen_by_a.found_by, a_seen_by_b.found_by) == ("dial", "dial")


async def test_request_response_round_trip_of_one_mebibyte(make_node) -> None:
    async with asyncio.timeout(15):
        a, b = await make_node(), await make_node()
        await b.node.dial(a.node.addrs[0])
        payload = os.urandom(1 << 20)
        # The echo handler answers the requester's device id and the request.
        assert await b.node.request(a.device_id, payload) == b.device_id + payload
        assert await a.node.request(b.device_id, b"back") == a.device_id + b"back"


async def test_a_handler_error_reaches_the_requester_as_its_class(make_node) -> None:
    async def refuse(device_id: bytes, data: bytes) -> bytes:
        raise NotFoundError(f"no document {data.decode()}")

    async with asyncio.timeout(10):
        a, b = await make_node(on_request=refuse), await make_node()
        await b.node.dial(a.node.addrs[0])
        with pytest.raises(NotFoundError, match="no document d1"):
            await b.node.request(a.device_id, b"d1")


async def test_sizes_above_max_message_are_refused(make_node) -> None:
    async with asyncio.timeout(15):
        small = await make_node(max_message=1000)
        big = await make_node()
        await small.node.subscribe(TOPIC)
        await big.node.subscribe(TOPIC)
        await big.node.dial(small.node.addrs[0])
        # Locally: too large to send is the caller's error.
        with pytest.raises(UsageError):
            await small.node.publish(TOPIC, bytes(1001))
        with pytest.raises(UsageError):
            await small.node.request(big.device_id, bytes(1001))
        # Remotely: a request over the responder's limit is reset, a pubsub message
        # over it is dropped, while one within it arrives.
        with pytest.raises(UnavailableError):
            await big.node.request(small.device_id, bytes(1001))
        await publish_until_received(big, small, b"mesh ready")
        await big.node.publish(TOPIC, b"x" * 1001)
        assert await publish_until_received(big, small, b"fits") == big.device_id
        assert [len(m[2]) for m in small.heard if len(m[2]) > 1000] == []


async def test_an_unauthorized_peer_is_refused_and_never_heard(make_node) -> None:
    async with asyncio.timeout(20):
        a = await make_node(open_to_all=False)      # authorizes c only
        b = await make_node()                       # valid key, not authorized by a
        c = await make_node()                       # relays between a and b
        a.allow(c)
        for p in (a, b, c):
            await p.node.subscribe(TOPIC)
        # b cannot connect to a (a closes it right after the Noise handshake) ...
        with pytest.raises(UnavailableError):
            await b.node.dial(a.node.addrs[0])
        # ... and a will not dial b.
        with pytest.raises(AuthorizationError):
            await a.node.dial(b.node.addrs[0])
        assert a.node.peers() == [] and a.statuses == []
        # Gossip relays b's messages through c (c forwards each one before it
        # delivers it locally); a's validator drops them.
        await c.node.dial(a.node.addrs[0])
        await b.node.dial(c.node.addrs[0])
        assert await publish_until_received(c, a, b"c to a") == c.device_id
        assert await publish_until_received(b, c, b"b via c") == b.device_id
        assert await publish_until_received(c, a, b"control") == c.device_id
        assert [m for m in a.heard if m[1] == b.device_id] == []
        assert [p.device_id for p in a.node.peers()] == [c.device_id]


async def test_a_connection_is_closed_if_authorization_ends_during_its_set_up(
        make_node) -> None:
    # authorize() says yes once -- to the Noise handshake gate -- and no after:
    # the connected-notifee check (and the stream gates) must close it.
    calls: list[bytes] = []

    def once(device_id: bytes) -> bool:
        calls.append(device_id)
        return len(calls) == 1

    async with asyncio.timeout(10):
        a, b = await make_node(authorize=once), await make_node()
        with contextlib.suppress(UnavailableError):
            await b.node.dial(a.node.addrs[0])
        while not b.statuses or b.statuses[-1].connected:
            await asyncio.sleep(0.05)
        assert len(calls) >= 2
        assert a.node.peers() == [] and a.statuses == []


async def test_authorization_withdrawn_while_connected_stops_messages_and_requests(
        make_node) -> None:
    async with asyncio.timeout(15):
        a = await make_node(open_to_all=False)
        b, c = await make_node(), await make_node()
        a.allow(b, c)
        for p in (a, b, c):
            await p.node.subscribe(TOPIC)
        await b.node.dial(a.node.addrs[0])
        await c.node.dial(a.node.addrs[0])
        assert await publish_until_received(b, a, b"before") == b.device_id
        assert await publish_until_received(c, a, b"c ready") == c.device_id
        a.revoke(b)  # the service swapped its snapshot; no disconnect() yet
        await b.node.publish(TOPIC, b"after")
        await asyncio.sleep(0.2)
        assert await publish_until_received(c, a, b"control") == c.device_id
        assert [m for m in a.heard if m[2] == b"after"] == []
        with pytest.raises(UnavailableError):  # a resets b's stream
            await b.node.request(a.device_id, b"q")


async def test_disconnect_cuts_a_peer_that_then_cannot_reconnect(make_node) -> None:
    async with asyncio.timeout(15):
        a, b = await make_node(), await make_node()
        await a.node.subscribe(TOPIC)
        await b.node.subscribe(TOPIC)
        await b.node.dial(a.node.addrs[0])
        assert await publish_until_received(b, a, b"hello") == b.device_id
        await a.node.disconnect(b.device_id)
        assert [s.connected for s in a.node.peers()] == [False]
        while not b.statuses or b.statuses[-1].connected:  # b sees the connection close
            await asyncio.sleep(0.05)
        with pytest.raises(UnavailableError):
            await b.node.dial(a.node.addrs[0])
        with pytest.raises(AuthorizationError):
            await a.node.dial(b.node.addrs[0])
        with pytest.raises(AuthorizationError):
            await a.node.request(b.device_id, b"q")
        assert [s.connected for s in a.node.peers()] == [False]


async def test_a_restarted_node_serves_again_and_keeps_its_bans(make_node) -> None:
    async with asyncio.timeout(15):
        a, b, c = await make_node(), await make_node(), await make_node()
        await a.node.disconnect(b.device_id)  # banned before it ever connected
        old_addr = a.node.addrs[0]
        await a.node.stop()
        assert a.node.addrs == []
        with pytest.raises(UnavailableError):
            await c.node.dial(old_addr)
        await a.node.start()
        with pytest.raises(UsageError):
            await a.node.start()
        assert await c.node.dial(a.node.addrs[0]) == a.device_id
        with pytest.raises(UnavailableError):
            await b.node.dial(a.node.addrs[0])
        with pytest.raises(AuthorizationError):
            await a.node.dial(b.node.addrs[0])


async def test_stop_is_idempotent_ends_the_thread_and_later_calls_fail(make_node) -> None:
    async with asyncio.timeout(10):
        before = set(threading.enumerate())
        a, b = await make_node(), await make_node()
        await b.node.dial(a.node.addrs[0])
        b_addr = b.node.addrs[0]
        names = {t.name for t in set(threading.enumerate()) - before}
        assert f"sddsf-p2p-{a.node.peer_id[-8:]}" in names
        await a.node.stop()
        await a.node.stop()
        await b.node.stop()
        # The trio threads and the pubsub caches' sweeper threads are gone (the
        # asyncio executor's idle workers may stay).
        left = {t.name for t in set(threading.enumerate()) - before}
        assert {n for n in left if n.startswith("sddsf-p2p") or "_background_cleanup" in n} \
            == set(), left
        with pytest.raises(UnavailableError):
            await a.node.publish(TOPIC, b"lost?")
        with pytest.raises(UnavailableError):
            await a.node.dial(b_addr)
        with pytest.raises(UnavailableError):
            await a.node.request(b.device_id, b"q")


@pytest.mark.parametrize("offer", ["plaintext", "noise+mplex"])
async def test_a_peer_without_noise_or_yamux_cannot_connect(make_node, offer: str) -> None:
    import multiaddr
    import trio
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.crypto.x25519 import create_new_key_pair as x25519_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
    from libp2p.security.noise.transport import Transport as Noise
    from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex

    async with asyncio.timeout(15):
        a = await make_node()  # authorizes everyone: only the protocols can refuse

        async def foreign_dial() -> BaseException | None:
            key_pair = create_new_key_pair(bytes(range(32)))
            if offer == "plaintext":
                host = new_host(key_pair=key_pair,
                                sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)})
            else:
                host = new_host(key_pair=key_pair, muxer_opt={MPLEX_PROTOCOL_ID: Mplex},
                                sec_opt={NOISE: Noise(key_pair, x25519_pair().private_key)})
            async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                try:
                    with trio.fail_after(5):
                        await host.connect(info_from_p2p_addr(
                            multiaddr.Multiaddr(a.node.addrs[0])))
                except Exception as exc:
                    return exc
            return None

        assert await asyncio.to_thread(trio.run, foreign_dial) is not None
        assert a.node.peers() == []


async def _until(done: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 8
    while not done():
        if asyncio.get_running_loop().time() > deadline:
            reason = f"no mDNS {what} within 8 s (no multicast on this machine?)"
            if os.environ.get("SDDSF_REQUIRE_P2P") == "1":
                pytest.fail(reason)
            pytest.skip(reason)
        await asyncio.sleep(0.05)


async def test_mdns_discovery_connects_authorized_devices_only(make_node) -> None:
    # Three nodes announce themselves on the loopback interface; a and b
    # authorize each other, c is authorized by nobody (nor are other SDDSF or
    # libp2p nodes that may be announcing on this machine).
    async with asyncio.timeout(20):
        a, b, c = [await make_node(open_to_all=False, mdns=True, start=False)
                   for _ in range(3)]
        a.allow(b)
        b.allow(a)
        await asyncio.gather(a.node.start(), b.node.start(), c.node.start())
        await _until(lambda: bool(a.node.peers() and b.node.peers()), "discovery")
        (b_seen_by_a,), (a_seen_by_b,) = a.node.peers(), b.node.peers()
        assert (b_seen_by_a.device_id, a_seen_by_b.device_id) == (b.device_id, a.device_id)
        assert "mdns" in {b_seen_by_a.found_by, a_seen_by_b.found_by}
        # c heard both and was heard by both; no connection was made with it.
        await asyncio.sleep(0.5)
        assert c.node.peers() == []
        assert [p.device_id for p in a.node.peers()] == [b.device_id]


async def test_mdns_peers_heard_before_they_were_authorized_are_dialled_later(
        make_node, monkeypatch, caplog) -> None:
    from sddsf.p2p import local

    monkeypatch.setattr(local, "REDIAL_S", 0.3)
    caplog.set_level(logging.INFO, logger="sddsf.p2p.gate")
    async with asyncio.timeout(20):
        a, b = [await make_node(open_to_all=False, mdns=True, start=False) for _ in range(2)]
        b.allow(a)  # a authorizes nobody yet: b's dials are refused at a's gate
        await asyncio.gather(a.node.start(), b.node.start())
        refused = f"refused peer {b.node.peer_id} at the handshake"
        await _until(lambda: refused in caplog.text, "discovery")
        # a authorizes nobody: it lists nobody. b may list a, not connected: its
        # side of the secure channel can complete before a's gate closes it.
        assert a.node.peers() == []
        assert not any(p.connected for p in b.node.peers())
        a.allow(b)  # the service's snapshot now includes b; nobody re-announces
        while not (a.node.peers() and any(p.connected for p in b.node.peers())):
            await asyncio.sleep(0.05)
        # Either side may dial first (a's periodic retry, or b hearing a again).
        assert "mdns" in {a.node.peers()[0].found_by, b.node.peers()[0].found_by}


class _Spoofer:
    """An outsider on the LAN announcing another node's peer id over real mDNS.

    It registers libp2p's own ``_p2p._udp.local`` service (a random service
    name, as every node's) whose TXT records name ``peer_id`` at ``addrs``,
    and listens to nothing (so it re-announces nobody else).
    """

    def __init__(self, peer_id: str, addrs: list[str]) -> None:
        from libp2p.discovery.mdns.broadcaster import PeerBroadcaster
        from libp2p.discovery.mdns.mdns import SERVICE_TYPE
        from zeroconf import Zeroconf

        port = int(addrs[0].split("/tcp/")[1].split("/")[0])
        self.zeroconf = Zeroconf()
        name = f"{os.urandom(16).hex()}.{SERVICE_TYPE}"
        self.broadcaster = PeerBroadcaster(self.zeroconf, SERVICE_TYPE, name, peer_id, port,
                                           listen_addrs=addrs)
        self.broadcaster.register()

    def close(self) -> None:
        self.broadcaster.unregister()
        self.zeroconf.close()


@pytest.mark.parametrize("dead", ["refused", "blackhole"])
async def test_an_outsiders_mdns_announcements_of_a_devices_peer_id_do_not_hide_it(
        make_node, monkeypatch, dead) -> None:
    # An outsider hears a and b announce themselves, then announces each one's
    # peer id with an address of its own: one that refuses connections, or one
    # that never answers. a and b still find each other once they authorize
    # each other (nobody re-announces: mDNS reports a service once).
    from libp2p.discovery.events.peerDiscovery import peerDiscovery

    from sddsf.p2p import local

    monkeypatch.setattr(local, "REDIAL_S", 0.3)
    heard: set[tuple[str, str]] = set()

    def hear(info: object) -> None:  # zeroconf's thread
        heard.update((str(info.peer_id), str(addr)) for addr in info.addrs)  # type: ignore[attr-defined]

    spoofers: list[_Spoofer] = []
    peerDiscovery.register_peer_discovered_handler(hear)
    try:
        async with asyncio.timeout(40):
            a, b = [await make_node(open_to_all=False, mdns=True, start=False)
                    for _ in range(2)]
            await asyncio.gather(a.node.start(), b.node.start())
            ids = {a.node.peer_id, b.node.peer_id}
            await _until(lambda: ids <= {p for p, _ in heard}, "announcement of a and b")
            await asyncio.sleep(0.3)  # each node has recorded the other
            with socket.socket() as s:  # a loopback port nobody listens on
                s.bind(("127.0.0.1", 0))
                closed = s.getsockname()[1]
            fake = (f"/ip4/127.0.0.1/tcp/{closed}" if dead == "refused"
                    else "/ip4/192.0.2.1/tcp/4001")  # TEST-NET-1: no answer ever
            for peer_id in sorted(ids):
                spoofers.append(await asyncio.to_thread(_Spoofer, peer_id, [fake]))
            await _until(lambda: {(p, fake) for p in ids} <= heard, "announcement of the fakes")
            await asyncio.sleep(0.3)  # each node has recorded the spoofed address
            a.allow(b)
            b.allow(a)
            # Within a few rounds of retries (0.3 s apart, each dial ≤ 5 s).
            while not (a.node.peers() and any(p.connected for p in a.node.peers())):
                await asyncio.sleep(0.05)
            assert [p.device_id for p in a.node.peers()] == [b.device_id]
    finally:
        peerDiscovery.unregister_peer_discovered_handler(hear)
        for spoofer in spoofers:
            await asyncio.to_thread(spoofer.close)
