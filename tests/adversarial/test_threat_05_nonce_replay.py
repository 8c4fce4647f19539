"""THREATS #5: a captured signed request is never accepted twice — inside or
outside the freshness window, on the same node or another, and after the
shared replay cache (Redis) was flushed, restarted or went down.

* In process, with an injected clock, on both edge-state implementations: the
  first replay is ``replay`` and ends the session it came with, so no later copy
  is accepted inside or after the window; two relay apps sharing one Redis
  refuse each other's replays.
* Three relay processes sharing PostgreSQL and Redis: a request captured on one
  node is refused by every node; after FLUSHALL and after a Redis restart the
  replay is still refused (its session is gone); with Redis down, writes fail
  closed with 503 ``unavailable`` and nothing is acknowledged.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from clusterkit import Cluster, Node, fsck, new_world
from relaykit import Clock, World, make_app, relay_key

from rediskit import RedisServer, redis_server
from sddsf.client.relay_client import RelayClient
from sddsf.errors import Code, UnavailableError
from sddsf.relay.app import create_app
from sddsf.relay.edge import EdgeState, MemoryEdgeState
from sddsf.relay.edge_redis import RedisEdgeState
from sddsf.relay.settings import RelaySettings
from sddsf.relay.storage.base import RelayStorage


class Recorder(httpx.AsyncBaseTransport):
    """Passes requests through and keeps a copy of each (what an eavesdropper has)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.captured: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.captured.append(request)
        return await self.inner.handle_async_request(request)

    def last_upload(self) -> httpx.Request:
        return [r for r in self.captured if r.url.path.endswith("/ops")
                and r.method == "POST"][-1]


async def replay(request: httpx.Request, transport: httpx.AsyncBaseTransport,
                 base_url: str) -> httpx.Response:
    """Send the captured bytes again (same headers, nonce, timestamp, signature)."""
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        return await http.request(request.method, request.url.path, headers=request.headers,
                                  content=request.content)


# --------------------------------------------------------- in process (U)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def shared_edge(request: pytest.FixtureRequest) -> AsyncIterator[EdgeState | None]:
    """None: each app its own in-memory state; else one Redis state for both apps."""
    if request.param == "memory":
        yield None
        return
    server: RedisServer = request.getfixturevalue("redis")
    state = RedisEdgeState(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    yield state
    await state.close()


async def _world(app: object, clock: Clock) -> tuple[World, RelayClient, Recorder]:
    world = World()
    recorder = Recorder(httpx.ASGITransport(app=app))  # type: ignore[arg-type]
    c = RelayClient("http://relay.test", device=world.devices[0],
                    account_id=world.account.account_id, transport=recorder, clock=clock)
    await c.create_account(world.entries[0])
    await c.create_space(world.space, world.key_package())
    return world, c, recorder


async def test_replay_inside_the_window_is_replay_outside_is_clock_skew(
        sqlite_storage: RelayStorage, shared_edge: EdgeState | None) -> None:
    clock = Clock()
    settings = RelaySettings(db="sqlite:////unused", key_file="/unused")
    app = create_app(settings, sqlite_storage, relay_key(), clock=clock,
                     edge=shared_edge or MemoryEdgeState())
    world, c, recorder = await _world(app, clock)
    await c.upload(world.space, [world.op(0).raw])
    captured = recorder.last_upload()
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    window = settings.request_window_s * 1000
    outcomes = []
    for advance in (0, window - 1000, 2000):  # now, just inside the window, just outside
        clock.now += advance
        r = await replay(captured, transport, "http://relay.test")
        outcomes.append((r.status_code, r.json()["code"]))
    # A copy at once is a duplicate (a retrying proxy): refused, the session kept.
    # The later replay also ends the session its token opened (a replay of an
    # old request shows the token leaked), so the last copy is refused before
    # its time is read.
    assert outcomes == [(401, "replay"), (401, "replay"), (401, "unauthenticated")]
    pulled, _ = await c.pull(world.space)
    assert len(pulled) == 1


async def test_two_apps_sharing_redis_refuse_each_others_replays(
        sqlite_storage: RelayStorage, shared_edge: EdgeState | None) -> None:
    clock = Clock()
    settings = RelaySettings(db="sqlite:////unused", key_file="/unused")
    apps = [create_app(settings, sqlite_storage, relay_key(), clock=clock,
                       edge=shared_edge or MemoryEdgeState()) for _ in range(2)]
    world, c, recorder = await _world(apps[0], clock)
    await c.upload(world.space, [world.op(0).raw])
    r = await replay(recorder.last_upload(), httpx.ASGITransport(app=apps[1]),  # type: ignore[arg-type]
                     "http://relay.test")
    # Shared state: the other node knows the nonce. Separate states: it does not
    # know the session either, and the signature binds the request to it.
    expected = "replay" if shared_edge is not None else "unauthenticated"
    assert (r.status_code, r.json()["code"]) == (401, expected)
    assert len((await c.pull(world.space))[0]) == 1


def test_make_app_still_defaults_to_memory(sqlite_storage: RelayStorage) -> None:
    app = make_app(sqlite_storage, Clock())
    assert isinstance(app.state.relay.edge, MemoryEdgeState)


# -------------------------------------------------------- three processes


async def _capture_upload(node: Node, world: World, text: bytes) -> httpx.Request:
    recorder = Recorder(httpx.AsyncHTTPTransport())
    async with RelayClient(node.base_url, device=world.devices[0],
                           account_id=world.account.account_id, transport=recorder) as c:
        (result,), _ = await c.upload(world.space, [world.op(0, text=text).raw])
        assert result.status == "accepted"
    return recorder.last_upload()


async def _replays(cluster: Cluster, captured: httpx.Request) -> set[tuple[int, str]]:
    out = set()
    for node in cluster.nodes:
        r = await replay(captured, httpx.AsyncHTTPTransport(), node.base_url)
        out.add((r.status_code, r.json()["code"]))
    return out


async def test_replays_across_nodes_and_after_redis_flush_restart_and_outage(
        cluster: Cluster) -> None:
    # One account per phase: the controller rightly quarantines a device whose
    # requests keep being replayed, which is not what this test is about.
    assert cluster.redis is not None
    worlds = [await new_world(cluster.nodes[0]) for _ in range(4)]
    first = await _capture_upload(cluster.nodes[0], worlds[0], b"one")
    # The first node's replay ends the session on every node (shared Redis).
    assert await _replays(cluster, first) == {(401, "replay"), (401, "unauthenticated")}

    second = await _capture_upload(cluster.nodes[1], worlds[1], b"two")
    assert cluster.redis.command("FLUSHALL") == b"+OK"
    # The nonces are gone, but so is the session the signature is bound to.
    assert await _replays(cluster, second) == {(401, "unauthenticated")}

    third = await _capture_upload(cluster.nodes[2], worlds[2], b"three")
    cluster.redis.restart()  # kill -9, no persistence
    assert await _replays(cluster, third) == {(401, "unauthenticated")}

    # Redis down: fail closed, nothing acknowledged, a typed 503 for the client.
    world = worlds[3]
    cluster.redis.kill()
    try:
        async with cluster.nodes[0].client(world, 0) as c:
            with pytest.raises(UnavailableError) as info:
                await c.upload(world.space, [world.op(0, text=b"lost", record=False).raw])
            assert info.value.code is Code.UNAVAILABLE
        r = await replay(third, httpx.AsyncHTTPTransport(), cluster.nodes[1].base_url)
        assert (r.status_code, r.json()["code"]) == (503, "unavailable")
    finally:
        cluster.redis.start()
    await _capture_upload(cluster.nodes[1], world, b"four")  # back to normal at once
    for w in worlds:  # exactly the legitimate op of each phase, nothing replayed
        assert len(await fsck(cluster.dsn, w.space)) == 1
