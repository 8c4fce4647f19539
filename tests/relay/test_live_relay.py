"""The relay as a real process: ``sddsf relay serve`` on a loopback port, over real
HTTP and WebSocket (the ``websockets`` client library).

Covered: start-up on SQLite (explicit path, and a fresh install with no set-up at
all) and on PostgreSQL (a throw-away database), health/readiness/OpenAPI, a full
account-space-ops flow whose tree heads and proofs verify with the protocol
core, the TOML settings file (a limit enforced; an unknown key refused in one
line), live fan-out (order, envelopes, single-use tickets, close codes 4401,
4403 and 1009, another account's space), a slow subscriber (bounded queue,
``resync``, no gap after backfilling), connection clean-up (THREATS #27), and a
new device's first sync from one bundle (protocol 17.9) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest
from livekit import (
    Follower,
    RelayProcess,
    Relays,
    b64,
    client,
    close_code,
    connect_outcome,
    connected_devices,
    free_port,
    fresh_postgres_database,
    recv_json,
    relay_env,
    serve_command,
    slow_ws_connect,
    subscribe,
    ticket_url,
    unb64,
    until,
    write_key_file,
    ws_connect,
)
from relaykit import World, relay_key

from sddsf.client.device import Device
from sddsf.client.relay_client import RelayClient
from sddsf.errors import AuthorizationError, Code, DecodeError
from sddsf.protocol import merkle
from sddsf.protocol.treehead import TreeHead, verify_tree_head

V1_PATHS = ("/v1/accounts", "/v1/accounts/{account_id}/registry", "/v1/auth/challenge",
            "/v1/auth/session", "/v1/spaces", "/v1/spaces/{space_id}/ops",
            "/v1/spaces/{space_id}/keys", "/v1/spaces/{space_id}/tree-head",
            "/v1/spaces/{space_id}/proofs/inclusion",
            "/v1/spaces/{space_id}/proofs/consistency", "/v1/pairing", "/v1/ws/ticket",
            "/v1/bootstrap")
FRAME_LIMIT = 64 * 1024


def key_env(directory: Path) -> dict[str, str]:
    return {"SDDSF_RELAY_KEY_FILE": str(write_key_file(directory / "relay.key"))}


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'relay.db'}"


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Relays]:
    """Start relays for one test; every one is stopped afterwards."""
    started = Relays(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One SQLite relay shared by the tests that only add their own accounts."""
    work = tmp_path_factory.mktemp("live-relay")
    started = Relays(work)
    try:
        yield started.start("--db", sqlite_url(work), env=key_env(work))
    finally:
        started.stop_all()


async def get_json(relay: RelayProcess, path: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), timeout=5) as http:
        r = await http.get(relay.base_url + path)
    return r.status_code, r.json()


async def setup_world(relay: RelayProcess) -> tuple[World, RelayClient, RelayClient]:
    """An account with devices 0 (A) and 1 (B) and a space with its key package."""
    world = World()
    world.add_device(1, time.time_ns() // 1_000_000)  # the relay process runs on real time
    a = client(relay, world, 0)
    await a.create_account(world.entries[0])
    await a.append_registry(world.account.account_id, world.entries[1])
    await a.create_space(world.space, world.key_package())
    return world, a, client(relay, world, 1)


def another_space(world: World) -> World:
    """The same account and devices, with a second space (own key packages, chains)."""
    other = copy.copy(world)
    other.space, other.packages, other.epoch_keys, other.heads = uuid.uuid4().bytes, [], [], {}
    return other


def verified_head(raw: bytes, world: World) -> TreeHead:
    return verify_tree_head(raw, relay_key().public, log=world.space)


async def check_full_flow(relay: RelayProcess) -> None:
    """Both devices upload; results, proofs, heads and the pulled log all check out."""
    world, a, b = await setup_world(relay)
    async with a, b:
        assert a.relay_id == relay_key().public.raw  # the key file given at start-up
        uploaded = []
        for device, count in ((0, 4), (1, 3)):
            ops = [world.op(device, text=f"dev {device} edit {i}".encode())
                   for i in range(count)]
            results, head_raw = await (a, b)[device].upload(world.space, [o.raw for o in ops])
            head = verified_head(head_raw, world)
            first = len(uploaded)
            assert [(r.status, r.offset) for r in results] == [
                ("accepted", first + i) for i in range(count)]
            assert head.size == first + count
            for op, r in zip(ops, results, strict=True):
                assert r.op_id == op.op_id and r.proof is not None and r.offset is not None
                merkle.verify_inclusion(merkle.leaf_hash(op.raw), r.offset, head.size,
                                        r.proof, head.root)
            uploaded += ops
        pulled, head_raw = await b.pull(world.space)
        head = verified_head(head_raw, world)
        assert [p.offset for p in pulled] == list(range(len(uploaded)))
        assert [p.envelope for p in pulled] == [o.raw for o in uploaded]
        assert [p.op_id for p in pulled] == [o.op_id for o in uploaded]
        assert [p.leaf_hash for p in pulled] == [merkle.leaf_hash(o.raw) for o in uploaded]
        assert head.size == len(uploaded)
        assert head.root == merkle.root_of([p.leaf_hash for p in pulled])


# ------------------------------------------------------------------ start-up


async def test_serve_sqlite_health_ready_and_openapi(relay: RelayProcess) -> None:
    assert await get_json(relay, "/healthz") == (200, {"status": "ok"})
    status, ready = await get_json(relay, "/readyz")
    assert status == 200 and ready["status"] == "ready"
    status, spec = await get_json(relay, "/openapi.json")
    assert status == 200
    missing = [p for p in V1_PATHS if p not in spec["paths"]]
    assert not missing
    assert "(sqlite)" in relay.log()


async def test_serve_sqlite_full_flow(relay: RelayProcess) -> None:
    await check_full_flow(relay)


async def test_fresh_install_uses_the_user_data_dir(relays: Relays, tmp_path: Path) -> None:
    data = tmp_path / "xdg-data"
    relay = relays.start(env={"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(data)})
    assert await get_json(relay, "/healthz") == (200, {"status": "ok"})
    status, ready = await get_json(relay, "/readyz")
    assert status == 200 and ready["status"] == "ready"
    db, key = data / "sddsf" / "relay.db", data / "sddsf" / "relay.key"
    assert db.is_file() and db.stat().st_size > 0
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600
    world = World()
    async with client(relay, world) as c:  # the default database takes writes
        assert await c.create_account(world.entries[0]) == world.account.account_id


async def test_serve_postgres_full_flow(relays: Relays, tmp_path: Path) -> None:
    async with fresh_postgres_database() as dsn:
        relay = relays.start("--db", dsn, env=key_env(tmp_path))
        try:
            status, ready = await get_json(relay, "/readyz")
            assert status == 200 and ready["status"] == "ready"
            assert "(postgresql)" in relay.log()
            await check_full_flow(relay)
        finally:
            relay.stop()  # before the database is dropped


# ------------------------------------------------------------------ settings


async def test_config_file_sets_port_and_batch_limit(relays: Relays, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(f"[relay]\nport = {port}\nmax_batch_ops = 3\n")
    relay = relays.start("--db", sqlite_url(tmp_path), "--config", str(config),
                         env=key_env(tmp_path), port=port)
    world, a, _ = await setup_world(relay)
    ops = [world.op(0) for _ in range(4)]
    async with a:
        with pytest.raises(DecodeError) as info:
            await a.upload(world.space, [o.raw for o in ops])
        assert info.value.code is Code.TOO_LARGE
        assert (await a.pull(world.space))[0] == []  # nothing of the refused batch stored
        results, _ = await a.upload(world.space, [o.raw for o in ops[:3]])
        assert [r.status for r in results] == ["accepted"] * 3


def test_unknown_config_key_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("[relay]\nmax_batch_opz = 3\n")
    done = subprocess.run(
        serve_command("--db", sqlite_url(tmp_path), "--config", str(config),
                      "--port", str(free_port())),
        env=relay_env(key_env(tmp_path)), cwd=tmp_path, capture_output=True, timeout=20,
        check=False)
    stderr = done.stderr.decode()
    assert done.returncode != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "max_batch_opz" in lines[0], stderr


# ----------------------------------------------------------------- WebSocket


async def test_ws_fanout_delivers_uploaded_ops_in_order(relay: RelayProcess) -> None:
    world, a, b = await setup_world(relay)
    async with a, b, ws_connect(ticket_url(relay, await b.ws_ticket())) as ws:
        assert await subscribe(ws, world.space) == {
            "type": "subscribed", "space": b64(world.space), "size": 0}
        ops = [world.op(0, text=f"live {i}".encode()) for i in range(5)]
        await a.upload(world.space, [o.raw for o in ops[:3]])
        await a.upload(world.space, [o.raw for o in ops[3:]])
        got = [await recv_json(ws) for _ in ops]
        assert [(g["type"], g["space"], g["offset"]) for g in got] == [
            ("op", b64(world.space), i) for i in range(5)]
        assert [unb64(g["envelope"]) for g in got] == [o.raw for o in ops]
        assert (await subscribe(ws, world.space))["size"] == 5  # re-subscribe: current size


async def test_ws_bad_or_reused_ticket_closes_with_4401(relay: RelayProcess) -> None:
    world, a, _ = await setup_world(relay)
    async with a:
        ticket = await a.ws_ticket()
        async with ws_connect(ticket_url(relay, ticket)) as ws:
            assert (await subscribe(ws, world.space))["type"] == "subscribed"
        outcomes = {
            "reused": await connect_outcome(ticket_url(relay, ticket)),
            "garbage": await connect_outcome(ticket_url(relay, "not-a-ticket")),
            "unknown": await connect_outcome(ticket_url(relay, bytes(32))),
            "missing": await connect_outcome(relay.ws_url),
        }
    assert outcomes == dict.fromkeys(outcomes, ("close", 4401))


async def test_ws_foreign_space_and_frame_limit(relay: RelayProcess) -> None:
    world, a, _ = await setup_world(relay)
    other = World()
    async with a, client(relay, other) as stranger:
        await stranger.create_account(other.entries[0])
        async with ws_connect(ticket_url(relay, await stranger.ws_ticket())) as ws:
            refused = await subscribe(ws, world.space)
            assert (refused["type"], refused["code"]) == ("error", "not_found")
            await ws.send("x" * FRAME_LIMIT)  # at the limit: refused, socket stays open
            assert (await recv_json(ws))["code"] == "malformed"
            await ws.send("x" * (FRAME_LIMIT + 1))
            assert await close_code(ws) == 1009


async def test_slow_subscriber_gets_resync_and_backfills_without_gap(
        relays: Relays, tmp_path: Path) -> None:
    """A subscriber that stops reading: once its socket's buffers are full, the
    relay queues at most ``ws_queue_max`` ops for it, then replaces them by a
    resync; the subscriber ends with every op, live or pulled."""
    relay = relays.start("--db", sqlite_url(tmp_path),
                         env={**key_env(tmp_path), "SDDSF_RELAY_WS_QUEUE_MAX": "4"})
    world, a, b = await setup_world(relay)
    # ~6 MB of ops, in bursts of 8 and 3: more than the sockets buffer (the relay
    # writes straight to a socket while its send buffer is below the high-water mark).
    batches = [8, 3] * 10
    ops = [world.op(0, text=bytes(60_000)) for _ in range(sum(batches))]
    follower = Follower(b, [world.space])
    async with a, b, slow_ws_connect(relay, ticket_url(relay, await b.ws_ticket())) as ws:
        assert (await subscribe(ws, world.space))["type"] == "subscribed"
        start = 0
        for n in batches:  # the subscriber reads nothing meanwhile
            results, _ = await a.upload(world.space, [o.raw for o in ops[start:start + n]],
                                        proofs=False)
            assert {r.status for r in results} == {"accepted"}
            start += n
        await follower.follow(ws, {world.space: len(ops)})
    assert follower.logs[b64(world.space)] == [o.raw for o in ops]
    assert 1 <= follower.count("resync") <= len(batches)
    # Bounded: the relay dropped ops for it rather than buffering them all.
    assert follower.count("op") < len(ops)


async def test_burst_beyond_the_queue_reaches_reading_subscribers_live(
        relays: Relays, tmp_path: Path) -> None:
    """Subscribers that keep up get a burst larger than ``ws_queue_max`` as live ops,
    in offset order, each op in the same frame for all of them (it is written
    to each socket as it is committed, not queued)."""
    relay = relays.start("--db", sqlite_url(tmp_path),
                         env={**key_env(tmp_path), "SDDSF_RELAY_WS_QUEUE_MAX": "4"})
    world, a, b = await setup_world(relay)
    ops = [world.op(0, text=f"burst {i}".encode()) for i in range(40)]
    async with a, b, contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(
            ws_connect(ticket_url(relay, await b.ws_ticket()))) for _ in range(3)]
        for ws in sockets:
            assert (await subscribe(ws, world.space))["type"] == "subscribed"
        results, _ = await a.upload(world.space, [o.raw for o in ops], proofs=False)
        assert {r.status for r in results} == {"accepted"}
        frames = [[await ws.recv() for _ in ops] for ws in sockets]
    assert frames[0] == frames[1] == frames[2]
    got = [json.loads(f) for f in frames[0]]
    assert [(g["type"], g["offset"]) for g in got] == [("op", i) for i in range(len(ops))]
    assert [unb64(g["envelope"]) for g in got] == [o.raw for o in ops]


async def test_slow_subscriber_of_two_spaces_loses_no_ops(relays: Relays,
                                                          tmp_path: Path) -> None:
    """A subscriber that stops reading falls behind on space 2; then a burst on space 1
    overflows its queue. Each space must still end gap-free (resync or live ops)."""
    relay = relays.start("--db", sqlite_url(tmp_path),
                         env={**key_env(tmp_path), "SDDSF_RELAY_WS_QUEUE_MAX": "4"})
    world, a, b = await setup_world(relay)
    world2 = another_space(world)
    async with a, b:
        await a.create_space(world2.space, world2.key_package())
        follower = Follower(b, [world.space, world2.space])
        async with slow_ws_connect(relay, ticket_url(relay, await b.ws_ticket())) as ws:
            for space in (world.space, world2.space):
                assert (await subscribe(ws, space))["type"] == "subscribed"
            big = [world2.op(0, text=bytes(100_000)) for _ in range(60)]
            for op in big:  # ~8 MB: more than the sockets buffer, so its queue fills
                await a.upload(world2.space, [op.raw], proofs=False)
            burst = [world.op(0) for _ in range(10)]
            await a.upload(world.space, [o.raw for o in burst], proofs=False)
            last = world2.op(0)
            await a.upload(world2.space, [last.raw], proofs=False)
            await follower.follow(ws, {world.space: 10, world2.space: 61})
    assert follower.count("resync") >= 1, "the subscriber never fell behind"
    assert follower.logs[b64(world.space)] == [o.raw for o in burst]
    assert follower.logs[b64(world2.space)] == [o.raw for o in [*big, last]]


async def test_revocation_closes_the_revoked_devices_socket(relay: RelayProcess) -> None:
    world, a, b = await setup_world(relay)
    async with (a, b, ws_connect(ticket_url(relay, await a.ws_ticket())) as ws_a,
                ws_connect(ticket_url(relay, await b.ws_ticket())) as ws_b):
        for ws in (ws_a, ws_b):
            assert (await subscribe(ws, world.space))["type"] == "subscribed"
        await a.append_registry(world.account.account_id, world.revoke(1))
        assert await close_code(ws_b, timeout=2.0) == 4403
        op = world.op(0)
        await a.upload(world.space, [op.raw])  # the other device's socket stays live
        assert unb64((await recv_json(ws_a))["envelope"]) == op.raw
        b.forget_session()
        with pytest.raises(AuthorizationError) as info:
            await b.list_spaces()
        assert info.value.code is Code.REVOKED


async def test_many_connections_leave_no_residue(relays: Relays, tmp_path: Path) -> None:
    relay = relays.start("--db", sqlite_url(tmp_path), env=key_env(tmp_path))
    world, a, _ = await setup_world(relay)
    async with a:
        for i in range(30):
            ws = await ws_connect(ticket_url(relay, await a.ws_ticket()))
            try:
                assert (await subscribe(ws, world.space))["type"] == "subscribed"
                if i == 0:
                    assert await connected_devices(relay) == 1
            finally:
                if i % 2:  # half of them vanish without a close handshake
                    ws.transport.abort()
                    async with asyncio.timeout(2):
                        await ws.wait_closed()
                else:
                    await ws.close()

    async def back_to_zero() -> bool:
        return await connected_devices(relay) == 0

    assert await until(back_to_zero, timeout=5), await connected_devices(relay)
    assert (await get_json(relay, "/readyz"))[0] == 200  # still serving after the churn


# ----------------------------------------------------------- first sync (17.9)


class _Recorded(httpx.AsyncBaseTransport):
    """Loopback HTTP, every request recorded."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def check_first_sync_from_one_bundle(relay: RelayProcess, work: Path) -> None:
    """A new device's first sync of a space with a snapshot and a tail reads
    everything with one request; the documents agree."""
    laptop, _ = await Device.create_account(work / "laptop", relay.base_url, "laptop",
                                            passphrase=None, insecure_plaintext=True)
    laptop.snapshot_every = 0
    space = await laptop.create_space("notes")
    m = laptop.doc(space, "kv").get("kv", type=pycrdt.Map)
    for i in range(20):
        m[f"k{i % 5}"] = i
        laptop.flush()
        if i == 14:
            await laptop.sync()
            assert await laptop.snapshot(space) is not None
    await laptop.sync()
    wire = _Recorded()
    phone = await Device.add_local(laptop, work / "phone", "phone", passphrase=None,
                                   insecure_plaintext=True, transport=wire)
    phone.ack_every = 0
    wire.requests.clear()
    report = await phone.sync()
    assert wire.requests == ["GET /v1/bootstrap"]
    assert report.snapshots_loaded == 1
    assert dict(phone.doc(space, "kv").get("kv", type=pycrdt.Map)) == dict(m)
    await phone.close()
    await laptop.close()


async def test_first_sync_from_one_bundle_on_sqlite(relay: RelayProcess,
                                                    tmp_path: Path) -> None:
    await check_first_sync_from_one_bundle(relay, tmp_path)


async def test_first_sync_from_one_bundle_on_postgres(relays: Relays, tmp_path: Path) -> None:
    async with fresh_postgres_database() as dsn:
        relay = relays.start("--db", dsn, env=key_env(tmp_path))
        try:
            await check_first_sync_from_one_bundle(relay, tmp_path)
        finally:
            relay.stop()  # before the database is dropped
