"""THREATS #14 (revoked device writes, racing the revocation) and #15 (revoked
device keeps reading), including across relay processes.

Passing:

* after a revocation stored through one node, every node refuses the device
  (sessions, tickets and signed requests) and refuses its ops uploaded by
  anyone else (``revoked``); its tickets issued before are void everywhere;
* a pending op sealed before two key rotations (refused ``stale_epoch``) is
  sealed again under the current epoch: no later edit of the device is lost
  (found by test_convergence.py, fixed in ``Device._push``).

* a revoked device's WebSocket on another relay process is closed (4403) and
  gets no op appended after the revocation (the revocation is broadcast to
  every process; each re-checks the registry before pushing ops).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from clientkit import InProcessRelay
from clusterkit import Cluster, new_world
from livekit import b64, ws_connect
from relaykit import Clock
from websockets.exceptions import ConnectionClosed

from sddsf.client.device import Device
from sddsf.errors import AuthenticationError, AuthorizationError, Code, ConflictError
from sddsf.relay.storage.base import RelayStorage


@pytest.fixture
def relay(sqlite_storage: RelayStorage) -> InProcessRelay:
    return InProcessRelay(sqlite_storage, Clock(time.time_ns() // 1_000_000))


def kv(device: Device, space: bytes) -> dict[str, Any]:
    return dict(device.doc(space, "kv").get("kv", type=pycrdt.Map))


# ------------------------------------------------------------- in process


async def test_revocation_racing_an_accepted_op_keeps_the_space_readable(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    await laptop.sync()
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    tablet = await relay.add(laptop, tmp_path / "tablet", "tablet")
    for d in (laptop, phone, tablet):
        await d.sync()
    phone.doc(space, "kv").get("kv", type=pycrdt.Map)["from phone"] = "1"
    await phone.sync()  # accepted; the laptop has not pulled it yet
    try:
        await laptop.revoke(phone.device_id, "lost")
    except ConflictError:  # the fixed relay refuses the stale cutoff: sync, revoke again
        await laptop.sync()
        await laptop.revoke(phone.device_id, "lost")
    await laptop.sync()
    await tablet.sync()
    assert kv(laptop, space) == kv(tablet, space) == {"from phone": "1"}
    for d in (laptop, phone, tablet):
        await d.close()


async def test_pending_op_sealed_before_two_rotations_is_not_lost(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")  # its first op waits in the queue...
    phone = await relay.add(laptop, tmp_path / "phone", "phone")  # ...through epoch 1
    tablet = await relay.add(laptop, tmp_path / "tablet", "tablet")  # ...and epoch 2
    await laptop.sync()
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["milk"] = "2 l"
    await laptop.sync()
    await phone.sync()
    assert laptop.pending_count() == 0
    assert kv(phone, space) == {"milk": "2 l"}
    assert phone.space_by_name("notes") == space
    for d in (laptop, phone, tablet):
        await d.close()


# ---------------------------------------------------------- three processes


async def test_revocation_through_one_node_is_enforced_by_every_node(
        cluster: Cluster) -> None:
    world = await new_world(cluster.nodes[0], devices=3)
    revoked = [node.client(world, 1) for node in cluster.nodes]
    for c in revoked:
        await c.list_spaces()  # a live session on every node
    tickets = [await c.ws_ticket() for c in revoked]  # and unused WebSocket tickets
    async with cluster.nodes[0].client(world, 0) as owner:
        await owner.append_registry(world.account.account_id, world.revoke(1))
    for node, c, ticket in zip(cluster.nodes, revoked, tickets, strict=True):
        with pytest.raises((AuthorizationError, AuthenticationError)) as info:
            await c.upload(world.space, [world.op(1, record=False).raw])
        assert info.value.code in (Code.REVOKED, Code.UNAUTHENTICATED)
        async with ws_connect(f"{node.base_url.replace('http', 'ws')}/v1/ws?ticket="
                              f"{b64(ticket)}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        await c.aclose()
    # An op of the revoked device, uploaded by an active one: refused on every node.
    late = world.op(1, record=False)
    for node in cluster.nodes:
        async with node.client(world, 2) as other:
            (r,), _ = await other.upload(world.space, [late.raw])
            assert (r.status, r.code) == ("rejected", "revoked")


async def test_revoked_devices_socket_on_another_node_is_closed(cluster: Cluster) -> None:
    world = await new_world(cluster.nodes[0], devices=2)
    node_a, node_b = cluster.nodes[0], cluster.nodes[1]
    async with node_b.client(world, 1) as phone, node_b.client(world, 0) as laptop_b:
        url = f"{node_b.base_url.replace('http', 'ws')}/v1/ws?ticket={b64(await phone.ws_ticket())}"
        async with ws_connect(url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "space": b64(world.space)}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            async with node_a.client(world, 0) as laptop_a:
                await laptop_a.append_registry(world.account.account_id, world.revoke(1))
            await laptop_b.upload(world.space, [world.op(0, text=b"after revoke").raw])
            received: list[dict[str, Any]] = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    received.append(json.loads(await asyncio.wait_for(ws.recv(), 2)))
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
            assert not [m for m in received if m.get("type") == "op"]
