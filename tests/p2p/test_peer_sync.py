"""Two and three device homes syncing over real libp2p on loopback (protocol 23):
gossip, catch-up after being away, outsiders refused, a revoked device cut off by
registry entries a peer carried, and a hybrid device carrying peers' ops to the
relay's log. The relay here is in process; the peers talk over TCP."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pycrdt
import pytest

if os.environ.get("SDDSF_REQUIRE_P2P") != "1":
    pytest.importorskip("libp2p", reason="peer-to-peer sync needs the p2p extra (libp2p)")

from client.clientkit import InProcessRelay, sqlite_relay
from p2pkit import devices, text, until
from relay.livekit import free_port
from sddsf.client.device import Device
from sddsf.client.runner import RunnerSettings
from sddsf.p2p.hybrid import HybridSync
from sddsf.p2p.sync import PeerSync, PeerSyncSettings
from sddsf.protocol.membership import Role

LOOPBACK = PeerSyncSettings(listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, poll_s=0.1,
                            catch_up_s=1.0)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    async with sqlite_relay(tmp_path) as r:
        yield r


def append(dev: Device, space: bytes, s: str) -> None:
    t = dev.doc(space, "t").get("t", type=pycrdt.Text)
    t.insert(len(str(t)), s)


async def start(dev: Device, *bootstrap: str) -> PeerSync:
    settings = PeerSyncSettings(listen=LOOPBACK.listen, mdns=False, poll_s=LOOPBACK.poll_s,
                                catch_up_s=LOOPBACK.catch_up_s, bootstrap=bootstrap)
    peer = PeerSync(dev, settings)
    await peer.start()
    return peer


async def test_edits_travel_by_gossip_and_catch_up(relay: InProcessRelay,
                                                   tmp_path: Path) -> None:
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    a = await start(laptop)
    b = await start(phone, *a.addrs)
    try:
        await until(lambda: any(p.connected for p in a.peers()))
        append(laptop, space, "hello")
        await until(lambda: text(phone, space) == "hello")
        append(phone, space, " world")
        await until(lambda: text(laptop, space) == "hello world")
        # The phone goes away; the laptop keeps editing; the phone comes back
        # and catches up (those ops were published while it was gone).
        await b.stop()
        for word in (" one", " two", " three"):
            append(laptop, space, word)
            await a.publish_pending()
        b = await start(phone, *a.addrs)
        await until(lambda: text(phone, space) == "hello world one two three")
        assert laptop.pending_count() == 4  # nothing went through the relay
    finally:
        await a.stop()
        await b.stop()
    # Later the relay's log gets them all, each once; nothing is applied twice.
    await laptop.sync()
    await phone.sync()
    assert text(phone, space) == text(laptop, space) == "hello world one two three"
    for dev in (laptop, phone):
        await dev.close()


async def test_an_outsider_is_refused(relay: InProcessRelay, tmp_path: Path) -> None:
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    outsider, _ = await relay.new_account(tmp_path / "outsider", "outsider")
    a = await start(laptop)
    b = await start(phone, *a.addrs)
    o = await start(outsider)
    try:
        assert await o.dial(a.addrs[0]) is None or not any(
            p.connected and p.device_id == outsider.device_id for p in a.peers())
        await asyncio.sleep(0.5)
        assert not any(p.device_id == outsider.device_id and p.connected for p in a.peers())
        append(laptop, space, "private")
        await until(lambda: text(phone, space) == "private")
        assert outsider.spaces() == [(s, n) for s, n in outsider.spaces() if s != space]
    finally:
        for p in (a, b, o):
            await p.stop()
    for dev in (laptop, phone, outsider):
        await dev.close()


async def test_revoked_device_is_cut_off_without_the_relay(relay: InProcessRelay,
                                                           tmp_path: Path) -> None:
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    a = await start(laptop)
    b = await start(phone, *a.addrs)
    c = await start(tablet, *a.addrs, *b.addrs)
    try:
        await until(lambda: sum(p.connected for p in b.peers()) == 2)
        append(tablet, space, "before")
        await until(lambda: text(phone, space) == "before")
        await laptop.revoke(tablet.device_id, "stolen")
        await laptop.sync()  # the phone never syncs with the relay in this test
        await a.publish_pending()  # announces the new registry entries to peers
        await until(lambda: not phone.registry().is_active(tablet.device_id))
        await until(lambda: not any(p.connected and p.device_id == tablet.device_id
                                    for p in b.peers()))
        append(tablet, space, " after")
        await c.publish_pending()
        await asyncio.sleep(1.0)
        assert text(phone, space) == "before"
    finally:
        for p in (a, b, c):
            await p.stop()
    for dev in (laptop, phone, tablet):
        await dev.close()


async def test_a_revoked_devices_gossip_beyond_its_cutoff_is_taken_back(
        relay: InProcessRelay, tmp_path: Path) -> None:
    # The tablet's edit reaches the phone by gossip only; the laptop, which never
    # saw it, revokes the tablet. At its next relay sync the phone rebuilds the
    # space from the log without that edit, and says so (protocol 23.8).
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    b = await start(phone)
    c = await start(tablet, *b.addrs)
    try:
        await until(lambda: any(p.connected for p in b.peers()))
        append(tablet, space, "from the stolen tablet")
        await until(lambda: text(phone, space) == "from the stolen tablet")
    finally:
        await b.stop()
        await c.stop()
    await laptop.revoke(tablet.device_id, "stolen")
    report = await phone.sync()
    assert report.rederived == [space]
    assert any(code == "revoked" and "'tablet'" in message for code, message in report.alerts)
    await laptop.sync()
    assert text(phone, space) == text(laptop, space) == ""
    for dev in (laptop, phone, tablet):
        await dev.close()


async def test_hybrid_carries_peer_ops_to_the_log(relay: InProcessRelay,
                                                  tmp_path: Path) -> None:
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    a = await start(laptop)
    b = await start(phone, *a.addrs)
    try:
        append(laptop, space, "offline laptop")
        await until(lambda: text(phone, space) == "offline laptop")
    finally:
        await a.stop()
        await b.stop()
    report = await phone.sync()  # the laptop never reaches the relay
    assert report.carried >= 1
    await tablet.sync()  # a device only ever on the relay side
    assert text(tablet, space) == "offline laptop"
    for dev in (laptop, phone, tablet):
        await dev.close()


async def test_hybrid_sync_sends_to_peers_and_to_the_relay(relay: InProcessRelay,
                                                           tmp_path: Path) -> None:
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    quick = RunnerSettings(debounce_s=0.05, full_check_s=1.0)
    async with HybridSync(laptop, LOOPBACK, quick) as a, \
            HybridSync(phone, dataclasses.replace(LOOPBACK, bootstrap=tuple(a.peers.addrs)),
                       quick):
        append(laptop, space, "both ways")
        a.changed()
        await until(lambda: text(phone, space) == "both ways")  # (peers, or the relay)

        async def tablet_has_it() -> bool:
            await tablet.sync()  # a device only on the relay side
            return text(tablet, space) == "both ways"
        deadline = time.monotonic() + 20
        while not await tablet_has_it():
            assert time.monotonic() < deadline, "the relay never got the edit"
            await asyncio.sleep(0.2)
    for dev in (laptop, phone, tablet):
        await dev.close()


async def test_a_peer_that_comes_back_is_dialled_again(relay: InProcessRelay,
                                                       tmp_path: Path) -> None:
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    port = free_port()
    fixed = dataclasses.replace(LOOPBACK, listen=(f"/ip4/127.0.0.1/tcp/{port}",))
    a = PeerSync(laptop, fixed)
    await a.start()
    b = await start(phone, *a.addrs)
    try:
        await until(lambda: any(p.connected for p in b.peers()))
        await a.stop()  # the laptop goes away, then comes back at the same address,
        append(phone, space, "while you were away")  # knowing no one's address
        await b.publish_pending()
        a = PeerSync(laptop, fixed)
        await a.start()
        # The phone dials it again on its own (every catch_up_s) and it catches up.
        await until(lambda: text(laptop, space) == "while you were away")
    finally:
        await a.stop()
        await b.stop()
    for dev in (laptop, phone):
        await dev.close()


async def test_two_people_sync_a_shared_space_directly(relay: InProcessRelay,
                                                       tmp_path: Path) -> None:
    alice, _ = await relay.new_account(tmp_path / "alice", "alice-laptop")
    bob, _ = await relay.new_account(tmp_path / "bob", "bob-laptop")
    carol, _ = await relay.new_account(tmp_path / "carol", "carol-laptop")
    space = await alice.create_space("plans")
    await alice.sync()
    await alice.sharing.share(space, bob.account, Role.WRITER)
    await bob.sharing.join(space, alice.account, "plans")
    a = await start(alice)
    b = await start(bob, *a.addrs)
    c = await start(carol, *a.addrs)  # not a member: refused
    try:
        append(bob, space, "from bob")
        await until(lambda: text(alice, space) == "from bob")
        append(alice, space, ", and alice")
        await until(lambda: text(bob, space) == "from bob, and alice")
        assert not any(p.connected and p.device_id == carol.device_id for p in a.peers())
    finally:
        for p in (a, b, c):
            await p.stop()
    for dev in (alice, bob, carol):
        await dev.close()
