"""A burst of ops published at once reaches a peer by gossip alone (protocol 23.3).

py-libp2p queues at most 32 RPCs per peer and drops the rest silently. A device
that publishes faster than a peer reads must wait for room in that peer's queue
instead of losing the burst's tail until the next periodic catch-up; and a peer
that stalls for longer than ``gossip_wait_s`` must not stall publication."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pycrdt
import pytest

if os.environ.get("SDDSF_REQUIRE_P2P") != "1":
    pytest.importorskip("libp2p", reason="peer-to-peer sync needs the p2p extra (libp2p)")

from libp2p.pubsub import gossipsub, pubsub, rpc_queue

from client.clientkit import InProcessRelay, sqlite_relay
from p2pkit import devices, text, until
from sddsf.client.device import Device
from sddsf.p2p.sync import PeerSync, PeerSyncSettings

#: No periodic catch-up: only gossip (and the catch-up a gap in it triggers)
#: carries the ops.
NO_TIMER = PeerSyncSettings(listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, poll_s=0.1,
                            catch_up_s=3600.0)
#: Large ops: the writer to a peer that reads nothing soon waits for it (the
#: stream's window), so the queue in front of that writer fills.
WORDS = [f"{i:04d}" * 4096 for i in range(300)]


@pytest.fixture
def dropped(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Publications libp2p drops on the way out (it only logs them)."""
    counts: list[int] = []
    real_drop = rpc_queue.drop_rpc

    def count_drop(peer_id: object, rpc: object) -> None:
        counts.append(len(rpc.publish))  # type: ignore[attr-defined]
        real_drop(peer_id, rpc)  # type: ignore[arg-type]

    for module in (pubsub, gossipsub):  # each imported the function by name
        assert module.drop_rpc is real_drop
        monkeypatch.setattr(module, "drop_rpc", count_drop)
    return counts


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    async with sqlite_relay(tmp_path) as r:
        yield r


async def _block(seconds: float) -> None:
    time.sleep(seconds)  # blocks the node's network thread: it reads nothing


def _stall(peer: PeerSync, seconds: float) -> asyncio.Future[None]:
    """The peer's network side stalls (a busy CPU, a pause): it reads nothing."""
    return asyncio.ensure_future(peer.node._bridge.call(_block, seconds))


@dataclasses.dataclass
class Pair:
    laptop: Device
    phone: Device
    space: bytes
    a: PeerSync  # the laptop's
    b: PeerSync  # the phone's


@contextlib.asynccontextmanager
async def _pair(relay: InProcessRelay, tmp_path: Path, settings: PeerSyncSettings
                ) -> AsyncIterator[Pair]:
    """Two connected devices whose gossip already flows (one op went through)."""
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    a, b = PeerSync(laptop, settings), None
    try:
        await a.start()
        b = PeerSync(phone, dataclasses.replace(settings, bootstrap=tuple(a.addrs)))
        await b.start()
        await until(lambda: any(p.connected for p in a.peers()))
        laptop.doc(space, "t").get("t", type=pycrdt.Text).insert(0, ">")
        await a.publish_pending()
        await until(lambda: text(phone, space) == ">")
        yield Pair(laptop, phone, space, a, b)
    finally:
        await a.stop()
        if b is not None:
            await b.stop()
        await laptop.close()
        await phone.close()


async def _publish_each(a: PeerSync, laptop: Device, space: bytes) -> None:
    """One large op after another, each published at once (a message each:
    together far more than a peer's queue holds)."""
    t = laptop.doc(space, "t").get("t", type=pycrdt.Text)
    for word in WORDS:
        t.insert(len(str(t)), word)
        await a.publish_pending()


async def _publish_while_stalled(p: Pair, seconds: float) -> asyncio.Future[None]:
    """Stall the phone's network thread for ``seconds``, publish every word on
    the laptop, and wait until all are published; returns the stall."""
    stall = _stall(p.b, seconds)
    await asyncio.sleep(0.2)
    before = p.a.stats.published
    await _publish_each(p.a, p.laptop, p.space)
    await until(lambda: p.a.stats.published - before == len(WORDS), timeout=60)
    return stall


async def test_a_burst_reaches_a_slow_peer_without_drops(
        relay: InProcessRelay, tmp_path: Path, dropped: list[int]) -> None:
    settings = dataclasses.replace(NO_TIMER, gossip_wait_s=30.0)
    async with _pair(relay, tmp_path, settings) as p:
        stall = await _publish_while_stalled(p, 3.0)
        await stall
        await until(lambda: text(p.phone, p.space) == ">" + "".join(WORDS), timeout=60)
        assert sum(dropped) == 0, f"{sum(dropped)} publications dropped"


async def test_a_stalled_peer_does_not_stall_publication(
        relay: InProcessRelay, tmp_path: Path, dropped: list[int]) -> None:
    # The phone reads nothing for longer than the laptop waits for room: the
    # laptop stops waiting for it, publishes the rest (libp2p drops the
    # phone's copies) and the phone gets them from its periodic catch-up.
    settings = dataclasses.replace(NO_TIMER, gossip_wait_s=0.5, catch_up_s=1.0)
    async with _pair(relay, tmp_path, settings) as p:
        stall = await _publish_while_stalled(p, 10.0)
        assert not stall.done(), "publication waited for the stalled peer"
        assert sum(dropped) > 0  # the stalled peer's copies
        await stall
        await until(lambda: text(p.phone, p.space) == ">" + "".join(WORDS), timeout=60)


async def test_a_burst_travels_in_as_few_messages_as_fit(
        relay: InProcessRelay, tmp_path: Path, dropped: list[int]) -> None:
    # Nothing publishes behind the test's back (no polling): the 50 ops sealed
    # here are new at one publication, which packs them into one message.
    settings = dataclasses.replace(NO_TIMER, poll_s=3600.0)
    async with _pair(relay, tmp_path, settings) as p:
        t = p.laptop.doc(p.space, "t").get("t", type=pycrdt.Text)
        for i in range(50):
            t.insert(len(str(t)), f" {i}")
            p.laptop.engine.outbox.flush()
        messages = p.a.stats.messages
        assert await p.a.publish_pending() == 50
        assert p.a.stats.messages == messages + 1
        expected = ">" + "".join(f" {i}" for i in range(50))
        await until(lambda: text(p.phone, p.space) == expected)
        assert p.b.stats.applied >= 51 and not p.b.stats.refused
