"""THREATS #22: network partitions, made with an asyncio TCP fault proxy
(clusterkit.FaultProxy) on loopback.

* client <-> relay: the upload reaches the relay, the response is lost (an
  ambiguous outcome). The client re-sends the *same* signed op; the relay
  answers ``duplicate`` with the original offset and proof: one leaf.
* relay <-> PostgreSQL: a relay process whose database connections go through
  the proxy. With PostgreSQL cut off, writes (and reads) fail with a typed 503
  ``unavailable`` within a bounded time and nothing is acknowledged; healed, the
  relay serves again and the log holds exactly the acknowledged ops.
* relay <-> Redis: the same relay's shared edge state goes through a second
  proxy. Refused or black-holed, every authenticated request fails closed with
  503 ``unavailable`` (bounded by the Redis timeout); healed, it serves again.

A black-holed database connection (packets dropped, no reset) fails reads and
writes with 503 within ``db_timeout_s`` (asyncpg's ``command_timeout``), and
``/readyz`` says not ready: ``test_blackholed_database_is_bounded``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from clusterkit import (
    Cluster,
    FaultProxy,
    Node,
    fsck,
    new_world,
    stop_node,
    wait_healthy,
)
from relaykit import World

from sddsf.client.relay_client import RelayClient
from sddsf.errors import Code, UnavailableError

#: The partitioned relay's db_timeout_s (asyncpg command_timeout).
DB_TIMEOUT_S = 2.0


def _via(url: str, proxy: FaultProxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"{netloc[0]}@{proxy.address}" if len(netloc) == 2 else proxy.address
    return urlunsplit(parts._replace(netloc=host))


async def test_lost_response_then_resend_of_the_same_op_is_one_leaf(cluster: Cluster) -> None:
    node = cluster.nodes[1]
    proxy = await FaultProxy("127.0.0.1", node.relay.port).start()
    world = await new_world(node)
    try:
        c = RelayClient(f"http://{proxy.address}", device=world.devices[0],
                        account_id=world.account.account_id,
                        transport=httpx.AsyncHTTPTransport(), timeout_s=10)
        async with c:
            await c.list_spaces()
            first = world.op(0, text=b"first")
            await c.upload(world.space, [first.raw])
            op = world.op(0, text=b"ambiguous")
            proxy.mode = "lose_responses"
            with pytest.raises(UnavailableError):
                await c.upload(world.space, [op.raw])
            assert proxy.lost_responses >= 1
            proxy.mode = "pass"
            (again,), _ = await c.upload(world.space, [op.raw])  # the same signed op
            assert (again.status, again.offset) == ("duplicate", 1)
            (after,), _ = await c.upload(world.space, [world.op(0, text=b"next").raw])
            assert (after.status, after.offset) == ("accepted", 2)
    finally:
        await proxy.close()
    assert len(await fsck(cluster.dsn, world.space)) == 3


@dataclass
class Partitioned:
    node: Node
    db: FaultProxy
    redis: FaultProxy


@pytest.fixture
async def partitioned(cluster: Cluster) -> AsyncIterator[Partitioned]:
    """A fourth relay whose PostgreSQL and Redis connections pass through proxies."""
    db_port = urlsplit(cluster.dsn).port or 5432
    redis_port = urlsplit(cluster.redis_url).port or 6379
    db = await FaultProxy("127.0.0.1", db_port).start()
    redis = await FaultProxy("127.0.0.1", redis_port).start()
    node = cluster.spawn(db=_via(cluster.dsn, db), redis_url=_via(cluster.redis_url, redis),
                         env={"SDDSF_RELAY_DB_TIMEOUT_S": str(DB_TIMEOUT_S)})
    cluster.extra.append(node)
    try:
        yield Partitioned(await wait_healthy(node), db, redis)
    finally:
        await stop_node(node)
        cluster.extra.remove(node)
        await db.close()
        await redis.close()


async def _refused(c: RelayClient, world: World, *, write: bool = True) -> float:
    """The call fails with a typed 503; returns how long that took."""
    started = time.monotonic()
    with pytest.raises(UnavailableError) as info:
        if write:
            await c.upload(world.space, [world.op(0, text=b"never", record=False).raw])
        else:
            await c.pull(world.space)
    assert info.value.code is Code.UNAVAILABLE
    assert "relay answered HTTP" not in info.value.message  # a typed body, not a bare 5xx
    return time.monotonic() - started


async def test_database_and_redis_partitions_fail_closed_and_heal(
        cluster: Cluster, partitioned: Partitioned) -> None:
    node, db, redis = partitioned.node, partitioned.db, partitioned.redis
    world = await new_world(node)
    async with node.client(world, 0, timeout_s=30) as c:
        (ok,), _ = await c.upload(world.space, [world.op(0, text=b"before").raw])
        assert ok.status == "accepted"

        db.mode = "refuse"  # PostgreSQL unreachable: open connections reset too
        db.cut()
        assert await _refused(c, world) < 15
        assert await _refused(c, world, write=False) < 15
        db.mode = "pass"
        (healed,), _ = await c.upload(world.space, [world.op(0, text=b"after db").raw])
        assert (healed.status, healed.offset) == ("accepted", 1)

        redis.mode = "refuse"
        redis.cut()
        assert await _refused(c, world) < 10
        redis.mode = "blackhole"  # connections accepted, nothing ever answered
        assert await _refused(c, world, write=False) < 10
        redis.mode = "pass"
        redis.cut()  # drop the black-holed connections the pool still holds
        (back,), _ = await c.upload(world.space, [world.op(0, text=b"after redis").raw])
        assert (back.status, back.offset) == ("accepted", 2)
    log = await fsck(cluster.dsn, world.space)
    assert len(log) == 3  # exactly the acknowledged ops, nothing from the failed calls


async def test_blackholed_database_is_bounded(cluster: Cluster,
                                              partitioned: Partitioned) -> None:
    node, db = partitioned.node, partitioned.db
    world = await new_world(node)
    async with node.client(world, 0, timeout_s=40) as c, httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(), timeout=40) as http:
        await c.upload(world.space, [world.op(0).raw])
        db.mode = "blackhole"  # the pool's open connections now swallow every query
        # Bounded by db_timeout_s (plus the relay's one re-verify after a failed
        # append), not by TCP giving up (minutes).
        assert await _refused(c, world) < 2 * DB_TIMEOUT_S + 3
        assert await _refused(c, world, write=False) < 2 * DB_TIMEOUT_S + 3
        ready = await http.get(f"{node.base_url}/readyz")
        assert ready.status_code == 503 and ready.json()["code"] == "unavailable"
        db.mode = "pass"
        db.cut()  # drop the black-holed connections the pool still holds
        for _ in range(50):
            if (await http.get(f"{node.base_url}/readyz")).status_code == 200:
                break
        (healed,), _ = await c.upload(world.space, [world.op(0, text=b"healed").raw])
        assert healed.status == "accepted"
