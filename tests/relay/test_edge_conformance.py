"""The edge-state contract (``sddsf.relay.edge.EdgeState``), run against both
implementations: in-process :class:`MemoryEdgeState` and :class:`RedisEdgeState`
on a real ``redis-server`` (rediskit: own process and port).

The suite uses the real clock and short lifetimes with real sleeps, because the
Redis implementation expires records with Redis TTLs and refills buckets on
Redis's clock (so nodes with skewed clocks agree). Redis-only sections: two
instances share one state (two relay nodes), Redis down or black-holed fails
closed with ``unavailable``, and lost Redis data (flush, restart, a restore from
an older snapshot) never lets a signed request be replayed (THREATS #5).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rediskit import RedisServer, redis_server
from sddsf.errors import Code, ConfigError, UnavailableError
from sddsf.relay.edge import EdgeState, MemoryEdgeState, Session, open_edge_state
from sddsf.relay.edge_redis import RedisEdgeState
from sddsf.relay.settings import load_settings

ACCOUNT = bytes(range(32))
DEV_A = bytes([0xA] * 32)
DEV_B = bytes([0xB] * 32)


def now() -> int:
    return time.time_ns() // 1_000_000


def session(device: bytes = DEV_A, ttl_ms: int = 60_000) -> Session:
    return Session(ACCOUNT, device, now() + ttl_ms)


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the module; each test uses its own key prefix."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def edge(request: pytest.FixtureRequest) -> AsyncIterator[EdgeState]:
    """Each implementation, empty."""
    if request.param == "memory":
        yield MemoryEdgeState()
        return
    server: RedisServer = request.getfixturevalue("shared_redis")
    state = RedisEdgeState(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    try:
        yield state
    finally:
        await state.close()


# ------------------------------------------------------------- the contract


async def test_records_expire(edge: EdgeState) -> None:
    t = now()
    await edge.put_session(b"s", Session(ACCOUNT, DEV_A, t + 60), t)
    await edge.put_ticket(b"k", session(), t + 60, t)
    assert await edge.remember_nonce(b"n", t + 60, t)
    assert await edge.get_session(b"s", now()) == Session(ACCOUNT, DEV_A, t + 60)
    await asyncio.sleep(0.15)
    later = now()
    assert await edge.get_session(b"s", later) is None
    assert await edge.take_ticket(b"k", later) is None
    assert await edge.remember_nonce(b"n", later + 60, later)  # forgotten: new again


async def test_session_round_trips_and_is_not_consumed(edge: EdgeState) -> None:
    s = session()
    await edge.put_session(b"digest", s, now())
    assert await edge.get_session(b"digest", now()) == s
    assert await edge.get_session(b"digest", now()) == s
    assert await edge.get_session(b"other", now()) is None


async def test_ticket_is_single_use(edge: EdgeState) -> None:
    s = session()
    await edge.put_ticket(b"ticket", s, now() + 30_000, now())
    assert await edge.take_ticket(b"ticket", now()) == s
    assert await edge.take_ticket(b"ticket", now()) is None


async def test_drop_device_drops_its_sessions_and_tickets_only(edge: EdgeState) -> None:
    t = now()
    await edge.put_session(b"a1", session(DEV_A), t)
    await edge.put_session(b"a2", session(DEV_A), t)
    await edge.put_ticket(b"ta", session(DEV_A), t + 30_000, t)
    await edge.put_session(b"b1", session(DEV_B), t)
    await edge.put_ticket(b"tb", session(DEV_B), t + 30_000, t)
    assert await edge.drop_device(DEV_A) == 3
    assert await edge.get_session(b"a1", now()) is None
    assert await edge.get_session(b"a2", now()) is None
    assert await edge.take_ticket(b"ta", now()) is None
    assert await edge.get_session(b"b1", now()) is not None
    assert await edge.take_ticket(b"tb", now()) is not None
    assert await edge.drop_device(DEV_A) == 0


async def test_drop_session_drops_that_session_only(edge: EdgeState) -> None:
    t = now()
    await edge.put_session(b"leaked", session(DEV_A), t)
    await edge.put_session(b"other", session(DEV_A), t)
    assert await edge.drop_session(b"leaked") is True
    assert await edge.drop_session(b"leaked") is False
    assert await edge.get_session(b"leaked", now()) is None
    assert await edge.get_session(b"other", now()) is not None
    assert await edge.drop_device(DEV_A) == 1  # the other one


async def test_nonce_is_remembered_until_it_expires(edge: EdgeState) -> None:
    t = now()
    assert await edge.remember_nonce(b"dev+nonce", t + 60_000, t) is True
    assert await edge.remember_nonce(b"dev+nonce", t + 60_000, now()) is False
    assert await edge.remember_nonce(b"dev+other", t + 60_000, now()) is True


async def test_token_bucket_serves_the_burst_then_refuses_without_taking(
        edge: EdgeState) -> None:
    rate, burst = 10.0, 5.0
    waits = [await edge.take_tokens("device:x", 1, rate, burst, now()) for _ in range(5)]
    assert waits == [0.0] * 5
    refused = await edge.take_tokens("device:x", 1, rate, burst, now())
    assert 0 < refused <= 1 / rate + 0.01
    big = await edge.take_tokens("device:x", 3, rate, burst, now())  # needs 3, has < 1
    assert 0.2 < big <= 3 / rate + 0.01
    assert await edge.take_tokens("device:other", 5, rate, burst, now()) == 0.0  # own bucket
    await asyncio.sleep(0.25)  # ~2.5 tokens refill; the refused calls took none
    assert await edge.take_tokens("device:x", 2, rate, burst, now()) == 0.0
    assert await edge.take_tokens("device:x", 2, rate, burst, now()) > 0


async def test_concurrent_single_use_takes_have_one_winner(edge: EdgeState) -> None:
    t = now()
    await edge.put_ticket(b"k", session(), t + 60_000, t)
    tickets = await asyncio.gather(*(edge.take_ticket(b"k", now()) for _ in range(8)))
    nonces = await asyncio.gather(*(edge.remember_nonce(b"n", t + 60_000, now())
                                    for _ in range(8)))
    assert len([k for k in tickets if k is not None]) == 1
    assert sorted(nonces) == [False] * 7 + [True]


async def test_presence_round_trips_per_space_and_replaces(edge: EdgeState) -> None:
    t = now()
    space, other = b"s" * 16, b"o" * 16
    assert await edge.presence(space, t) == []
    assert await edge.put_presence(space, DEV_B, b"b1", t + 60_000, t, max_devices=8)
    assert await edge.put_presence(space, DEV_A, b"a1", t + 60_000, t, max_devices=8)
    assert await edge.put_presence(other, DEV_A, b"elsewhere", t + 60_000, t, max_devices=8)
    assert await edge.presence(space, now()) == [(DEV_A, b"a1"), (DEV_B, b"b1")]
    # The device's latest record replaces its previous one, even one living longer.
    assert await edge.put_presence(space, DEV_A, b"a2", t + 30_000, now(), max_devices=8)
    assert await edge.presence(space, now()) == [(DEV_A, b"a2"), (DEV_B, b"b1")]
    assert await edge.presence(other, now()) == [(DEV_A, b"elsewhere")]


async def test_presence_expires(edge: EdgeState) -> None:
    t = now()
    space = b"e" * 16
    assert await edge.put_presence(space, DEV_A, b"short", t + 60, t, max_devices=8)
    assert await edge.put_presence(space, DEV_B, b"long", t + 60_000, t, max_devices=8)
    await asyncio.sleep(0.15)
    assert await edge.presence(space, now()) == [(DEV_B, b"long")]


async def test_presence_is_bounded_per_space_by_live_records(edge: EdgeState) -> None:
    t = now()
    space = b"b" * 16
    dev_c = bytes([0xC] * 32)
    assert await edge.put_presence(space, DEV_A, b"a", t + 60, t, max_devices=2)
    assert await edge.put_presence(space, DEV_B, b"b", t + 60_000, t, max_devices=2)
    assert not await edge.put_presence(space, dev_c, b"c", t + 60_000, t, max_devices=2)
    assert await edge.put_presence(space, DEV_B, b"b2", t + 60_000, t, max_devices=2)
    assert await edge.presence(space, now()) == [(DEV_A, b"a"), (DEV_B, b"b2")]
    await asyncio.sleep(0.15)  # A's record died: its place is free
    assert await edge.put_presence(space, dev_c, b"c", t + 60_000, now(), max_devices=2)
    assert await edge.presence(space, now()) == [(DEV_B, b"b2"), (dev_c, b"c")]


async def test_concurrent_presence_writers_never_exceed_the_bound(edge: EdgeState) -> None:
    t = now()
    space = b"c" * 16
    stored = await asyncio.gather(*(edge.put_presence(space, bytes([i]) * 32, b"x",
                                                      t + 60_000, t, max_devices=3)
                                    for i in range(8)))
    assert sorted(stored) == [False] * 5 + [True] * 3
    assert len(await edge.presence(space, now())) == 3


async def test_memory_presence_drops_the_least_recently_written_space() -> None:
    edge = MemoryEdgeState(max_presence=3)
    t = now()
    for space in (b"1" * 16, b"2" * 16):
        for dev in (DEV_A, DEV_B):
            assert await edge.put_presence(space, dev, space[:1], t + 60_000, t, max_devices=8)
    # Four records over a cap of three: the space written first is gone whole.
    assert await edge.presence(b"1" * 16, t) == []
    assert len(await edge.presence(b"2" * 16, t)) == 2


# ------------------------------------------------------------- Redis only


async def test_two_nodes_share_one_state(shared_redis: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a, b = (RedisEdgeState(shared_redis.url, prefix=prefix) for _ in range(2))
    try:
        t = now()
        await a.put_session(b"s", session(), t)
        await a.put_ticket(b"k", session(), t + 60_000, t)
        assert await b.get_session(b"s", now()) is not None
        assert await b.remember_nonce(b"n", t + 60_000, t)
        assert not await a.remember_nonce(b"n", t + 60_000, t)
        assert await b.drop_device(DEV_A) == 2  # session and ticket stored through a
        assert await a.get_session(b"s", now()) is None
        # One bucket for both: 4 tokens in all, whichever node asks.
        granted = [await node.take_tokens("ip:x", 1, 0.001, 4, now()) == 0.0
                   for node in (a, b, a, b, a, b)]
        assert granted == [True] * 4 + [False] * 2
    finally:
        await a.close()
        await b.close()


async def test_buckets_ignore_the_nodes_clocks(shared_redis: RedisServer) -> None:
    """A node whose clock is an hour ahead cannot refill a shared bucket."""
    state = RedisEdgeState(shared_redis.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    try:
        assert await state.take_tokens("ops:x", 4, 1.0, 4, now()) == 0.0
        assert await state.take_tokens("ops:x", 1, 1.0, 4, now() + 3_600_000) > 0
        t = now() - 3_600_000  # a node an hour behind: lifetimes are still relative
        await state.put_session(b"s", Session(ACCOUNT, DEV_A, t + 60_000), t)
        assert await state.get_session(b"s", now()) is not None
    finally:
        await state.close()


async def _every_operation(state: EdgeState) -> list[str]:
    """Call each operation; the ones that did NOT raise UnavailableError."""
    t = now()
    calls = {
        "put_session": state.put_session(b"s", session(), t),
        "get_session": state.get_session(b"s", t),
        "drop_session": state.drop_session(b"s"),
        "drop_device": state.drop_device(DEV_A),
        "put_ticket": state.put_ticket(b"k", session(), t + 1000, t),
        "take_ticket": state.take_ticket(b"k", t),
        "remember_nonce": state.remember_nonce(b"n", t + 1000, t),
        "take_tokens": state.take_tokens("ip:x", 1, 1, 1, t),
        "put_presence": state.put_presence(b"s" * 16, DEV_A, b"r", t + 1000, t, max_devices=1),
        "presence": state.presence(b"s" * 16, t),
        "ping": state.ping(),
    }
    passed = []
    for name, call in calls.items():
        try:
            await call
            passed.append(name)
        except UnavailableError as exc:
            assert exc.code is Code.UNAVAILABLE and exc.http_status == 503
            assert "Redis" in exc.message
    return passed


async def test_redis_down_fails_closed_with_unavailable(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    state = RedisEdgeState(server.url, timeout_s=1.0)
    try:
        assert await state.remember_nonce(b"n", now() + 1000, now())
        server.kill()
        assert await _every_operation(state) == []
        server.start()  # same port: the next call reconnects by itself
        assert await state.remember_nonce(b"n2", now() + 1000, now())
    finally:
        await state.close()
        server.stop()


async def test_black_holed_redis_fails_closed_within_the_timeout() -> None:
    """A server that accepts connections and never answers (a partition)."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    state = RedisEdgeState(f"redis://127.0.0.1:{hole.getsockname()[1]}/0", timeout_s=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(UnavailableError):
            await state.remember_nonce(b"n", now() + 1000, now())
        assert time.monotonic() - started < 5  # bounded: no hang
    finally:
        await state.close()
        hole.close()


async def test_flush_or_restart_ends_every_session(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    state = RedisEdgeState(server.url)
    try:
        await state.put_session(b"s", session(), now())
        server.command("FLUSHALL")
        assert await state.get_session(b"s", now()) is None
        await state.put_session(b"s", session(), now())
        server.restart()  # no persistence
        assert await state.get_session(b"s", now()) is None
    finally:
        await state.close()
        server.stop()


async def test_restore_from_an_older_snapshot_refuses_the_old_sessions(
        tmp_path: Path) -> None:
    """RDB persistence: a restart restores sessions but loses the nonces recorded
    after the snapshot. Without the run_id check the session would be live
    again and a captured request replayable; with it, the session is refused."""
    server = RedisServer(tmp_path).start()
    state = RedisEdgeState(server.url)
    try:
        t = now()
        await state.put_session(b"s", session(), t)
        await state.put_ticket(b"k", session(), t + 60_000, t)
        assert server.command("SAVE") == b"+OK"
        assert await state.remember_nonce(b"dev+nonce", t + 240_000, t)  # after the snapshot
        server.restart()
        keys = server.command("DBSIZE")
        # The snapshot came back: session, ticket and the device's index.
        assert keys == b":3", keys
        assert await state.remember_nonce(b"dev+nonce", t + 240_000, now())  # lost
        assert await state.get_session(b"s", now()) is None  # ...so the session is refused
        assert await state.take_ticket(b"k", now()) is None
        await state.put_session(b"s2", session(), now())  # new sessions work at once
        assert await state.get_session(b"s2", now()) is not None
    finally:
        await state.close()
        server.stop()


def test_the_setting_selects_the_implementation() -> None:
    assert isinstance(open_edge_state(""), MemoryEdgeState)
    settings = load_settings(env={"SDDSF_RELAY_REDIS_URL": "redis://127.0.0.1:1/0"})
    chosen = open_edge_state(settings.redis_url)
    assert isinstance(chosen, RedisEdgeState)
    with contextlib.suppress(RuntimeError):
        asyncio.run(chosen.close())
    with pytest.raises(ConfigError) as info:
        load_settings(env={"SDDSF_RELAY_REDIS_URL": "http://user:secret@host/0"})
    assert "secret" not in info.value.message
