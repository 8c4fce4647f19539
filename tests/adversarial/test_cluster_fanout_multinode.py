"""Live fan-out across relay processes (docs/operations.md section 8).

Three real ``sddsf relay serve`` processes on one PostgreSQL database, once with
the shared Redis (the hints go over Redis pub/sub) and once without Redis (they
go over PostgreSQL LISTEN/NOTIFY):

* an op written through node A reaches a device's WebSocket on node C promptly
  (before: only at C's next pull, ~59 s in the field), in log order, once;
* a revocation stored through node A closes the device's WebSocket on node C
  (4403) before any later op reaches it;
* a controller alert raised on node A is pushed to the account's WebSockets on
  node C.

Every wait is bounded (``PROMPT_S``); the processes are stopped by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from clusterkit import Cluster, Node, new_world, stop_node, wait_healthy
from livekit import b64, unb64, ws_connect
from relaykit import World
from websockets.exceptions import ConnectionClosed

#: Far below the ~59 s a device on another node waited before (its next pull).
PROMPT_S = 5.0


@pytest.fixture(scope="module", params=["redis", "postgres"])
def nodes(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[list[Node]]:
    """Three nodes on the shared database: the shared cluster's (Redis pub/sub), or
    three more started without Redis (PostgreSQL LISTEN/NOTIFY)."""
    if request.param == "redis":
        yield cluster.nodes
        return
    started = [cluster.spawn(redis_url="") for _ in range(3)]
    cluster.extra.extend(started)
    try:
        yield asyncio.run(_healthy(started))
    finally:
        asyncio.run(_stop(started))
        for node in started:
            cluster.extra.remove(node)


async def _healthy(started: list[Node]) -> list[Node]:
    return list(await asyncio.gather(*(wait_healthy(n) for n in started)))


async def _stop(started: list[Node]) -> None:
    await asyncio.gather(*(stop_node(n) for n in started))


@contextlib.asynccontextmanager
async def subscribed(node: Node, world: World, device: int) -> AsyncIterator[Any]:
    """A WebSocket of ``device`` on ``node``, subscribed to the world's space."""
    async with node.client(world, device) as c:
        url = f"{node.base_url.replace('http', 'ws')}/v1/ws?ticket={b64(await c.ws_ticket())}"
        async with ws_connect(url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "space": b64(world.space)}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), PROMPT_S))
            assert reply["type"] == "subscribed", reply
            yield ws


async def next_of(ws: Any, kind: str) -> dict[str, Any]:
    """The next message of ``kind`` (bounded by PROMPT_S)."""
    async with asyncio.timeout(PROMPT_S):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def test_a_write_on_node_a_reaches_a_socket_on_node_c(nodes: list[Node]) -> None:
    node_a, node_c = nodes[0], nodes[2]
    world = await new_world(node_a)
    async with subscribed(node_c, world, 1) as ws, node_a.client(world, 0) as writer:
        ops = [world.op(0, text=f"from A {i}".encode()) for i in range(6)]
        await writer.upload(world.space, [o.raw for o in ops[:2]])
        await writer.upload(world.space, [ops[2].raw])
        await writer.upload(world.space, [o.raw for o in ops[3:]])
        got = [await next_of(ws, "op") for _ in ops]
    assert [m["offset"] for m in got] == list(range(len(ops)))
    assert [unb64(m["envelope"]) for m in got] == [o.raw for o in ops]


async def test_writes_on_every_node_reach_every_node_in_log_order(nodes: list[Node]) -> None:
    world = await new_world(nodes[0], devices=4)
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(subscribed(n, world, 3)) for n in nodes]
        writers = [await stack.enter_async_context(n.client(world, i))
                   for i, n in enumerate(nodes)]
        for w in writers:
            await w.list_spaces()
        ops_by_writer = [[world.op(i, text=f"w{i} {k}".encode()) for k in range(4)]
                         for i in range(3)]
        await asyncio.gather(*(w.upload(world.space, [o.raw for o in ops])
                               for w, ops in zip(writers, ops_by_writer, strict=True)))
        seen = [[await next_of(ws, "op") for _ in range(12)] for ws in sockets]
    for got in seen:  # every node pushes every op once, in log order
        assert [m["offset"] for m in got] == list(range(12))
    assert seen[0] == seen[1] == seen[2]


async def test_revocation_on_node_a_closes_the_socket_on_node_c(nodes: list[Node]) -> None:
    node_a, node_c = nodes[0], nodes[2]
    world = await new_world(node_a, devices=3)
    async with subscribed(node_c, world, 1) as ws, node_a.client(world, 0) as owner, \
            node_c.client(world, 2) as writer_c:
        await owner.append_registry(world.account.account_id, world.revoke(1))
        await writer_c.upload(world.space, [world.op(2, text=b"after revoke").raw])
        received: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(PROMPT_S):
                while True:
                    received.append(json.loads(await ws.recv()))
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4403, "revoked")
    assert not [m for m in received if m.get("type") == "op"]


async def test_an_alert_raised_on_node_a_is_pushed_on_node_c(nodes: list[Node]) -> None:
    node_a, node_c = nodes[0], nodes[2]
    world = await new_world(node_a, devices=3)
    async with subscribed(node_c, world, 1) as ws, node_a.client(world, 2) as forger:
        # Six ops with bad signatures from device 2 through node A: the
        # controller's sig_failure_burst alert (threshold 5).
        bad = [world.op(2, text=f"forged {i}".encode(), record=False).raw for i in range(6)]
        results, _ = await forger.upload(world.space, [e[:-1] + bytes([e[-1] ^ 1]) for e in bad],
                                         proofs=False)
        assert {r.code for r in results} == {"sig_invalid"}
        alert = await next_of(ws, "alert")
    assert alert["rule"] == "sig_failure_burst"
    assert unb64(alert["device"]) == world.devices[2].device_id
