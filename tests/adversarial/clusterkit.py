"""Several real relay processes over one PostgreSQL database and one Redis, plus the
faults the multi-process threat tests inject.

* :func:`start_cluster`: N ``sddsf relay serve`` processes (started in parallel)
  sharing a database and a Redis edge state, each optionally with its wall clock
  shifted (a ``sitecustomize`` that offsets ``time.time``/``time.time_ns``: the
  only way to give one process on this machine a skewed clock, THREATS #19).
* :class:`FaultProxy`: an asyncio TCP proxy that passes, refuses, black-holes or
  loses responses, and can cut every open connection (THREATS #22). It runs in
  the test's event loop, so tests must only await while it is in use.
* :func:`fsck`: recompute a space's Merkle root from its stored leaves and check
  the log is gap-free (THREATS #20, #24 checker).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from livekit import (
    SRC,
    RelayProcess,
    free_port,
    postgres_dsn,
    relay_env,
    serve_command,
    write_key_file,
)
from relaykit import World

from rediskit import RedisServer
from sddsf.client.relay_client import RelayClient
from sddsf.client.retry import RetryPolicy
from sddsf.relay.fsck import describe
from sddsf.relay.fsck import fsck as relay_fsck

LONG = os.environ.get("SDDSF_LONG_TESTS") == "1"
START_TIMEOUT_S = 30.0

_CLOCK_SHIFT = '''"""Test-only: shift this process's wall clock by SDDSF_TEST_CLOCK_OFFSET_MS."""
import os
import time

_offset_ms = int(os.environ.get("SDDSF_TEST_CLOCK_OFFSET_MS", "0") or "0")
if _offset_ms:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _offset_ms / 1000
    time.time_ns = lambda: _time_ns() + _offset_ms * 1_000_000
'''

#: Limits for cluster tests: all clients share 127.0.0.1, so the per-address
#: bucket is lifted; the per-device op bucket is small so that THREATS #18 can
#: tell a global limit (one bucket) from per-process ones (N buckets).
CLUSTER_ENV: Mapping[str, str] = {
    "SDDSF_RELAY_RATE_IP_PER_S": "100000", "SDDSF_RELAY_RATE_IP_BURST": "100000",
    "SDDSF_RELAY_RATE_OPS_PER_S": "20", "SDDSF_RELAY_RATE_OPS_BURST": "200",
    "SDDSF_RELAY_MAX_BATCH_OPS": "200",
}


def clock_shift_path(workdir: Path) -> Path:
    """A directory whose ``sitecustomize.py`` shifts the clock (put it on PYTHONPATH)."""
    shift = workdir / "clockshift"
    shift.mkdir(parents=True, exist_ok=True)
    target = shift / "sitecustomize.py"
    # Written once, atomically: nodes are spawned back to back, and rewriting
    # the file in place (truncate, then write) while the previous node's
    # interpreter was reading it at startup left that node, now and then,
    # with an empty sitecustomize: its clock was not shifted at all.
    if not target.exists() or target.read_text() != _CLOCK_SHIFT:
        partial = shift / f"sitecustomize.{os.getpid()}.tmp"
        partial.write_text(_CLOCK_SHIFT)
        os.replace(partial, target)
    return shift


@dataclass
class Node:
    """One relay process of a cluster."""

    relay: RelayProcess
    offset_ms: int = 0

    @property
    def base_url(self) -> str:
        return self.relay.base_url

    @property
    def pid(self) -> int:
        return self.relay.proc.pid

    def client(self, world: World | None = None, device: int = 0,
               timeout_s: float = 20.0) -> RelayClient:
        """A RelayClient over real loopback HTTP, as ``device`` of ``world``."""
        # No retries: these tests observe each answer of the relay (a 429 or 503
        # is what they check, not something to wait out as a device would).
        return RelayClient(self.base_url, device=world.devices[device] if world else None,
                           account_id=world.account.account_id if world else None,
                           transport=httpx.AsyncHTTPTransport(), timeout_s=timeout_s,
                           retry=RetryPolicy(attempts=1))


@dataclass
class Cluster:
    """Relay processes sharing ``dsn`` (PostgreSQL) and ``redis_url``."""

    workdir: Path
    dsn: str
    redis_url: str
    env: Mapping[str, str]
    nodes: list[Node] = field(default_factory=list)
    extra: list[Node] = field(default_factory=list)
    redis: RedisServer | None = None

    def spawn(self, *, offset_ms: int = 0, db: str | None = None,
              redis_url: str | None = None, env: Mapping[str, str] | None = None) -> Node:
        """Start one more relay (not waited for: see :func:`wait_healthy`)."""
        port = free_port()
        shift = clock_shift_path(self.workdir)
        merged = {**self.env, **(env or {}),
                  "SDDSF_RELAY_KEY_FILE": str(write_key_file(self.workdir / "relay.key")),
                  "SDDSF_RELAY_REDIS_URL": self.redis_url if redis_url is None else redis_url,
                  "SDDSF_TEST_CLOCK_OFFSET_MS": str(offset_ms),
                  "PYTHONPATH": os.pathsep.join([str(shift), str(SRC)])}
        index = len(self.nodes) + len(self.extra)
        log_path = self.workdir / f"relay-{index}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                serve_command("--db", db or self.dsn, "--port", str(port)),
                env=relay_env(merged), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.workdir)
        return Node(RelayProcess(proc, port, log_path), offset_ms)

    def stop_all(self) -> None:
        """SIGTERM every node at once (a paused one is resumed first), then wait."""
        nodes = [*self.nodes, *self.extra]
        for node in nodes:
            if node.relay.proc.poll() is None:
                os.kill(node.pid, signal.SIGCONT)  # a stopped process cannot terminate
                node.relay.proc.terminate()
        for node in nodes:
            node.relay.stop()  # waits, and kills what did not exit in time


async def wait_healthy(node: Node, timeout: float = START_TIMEOUT_S) -> Node:
    """Poll ``/healthz`` without blocking the event loop (a proxy may run in it)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), timeout=1.0) as http:
        while time.monotonic() < deadline and node.relay.proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{node.base_url}/healthz")).status_code == 200:
                    return node
            await asyncio.sleep(0.05)
    node.relay.stop()
    raise AssertionError(f"relay did not become healthy:\n{node.relay.log()}")


async def stop_node(node: Node, timeout: float = 5.0) -> None:
    """SIGTERM and wait without blocking the event loop (its proxies must keep
    running for the relay to close its connections), then SIGKILL if needed."""
    proc = node.relay.proc
    if proc.poll() is None:
        os.kill(node.pid, signal.SIGCONT)
        proc.terminate()
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    node.relay.stop()


def start_cluster(workdir: Path, dsn: str, redis_url: str, offsets: Sequence[int],
                  env: Mapping[str, str] = CLUSTER_ENV) -> Cluster:
    """Start ``len(offsets)`` relays in parallel (each with its clock offset in ms)."""
    cluster = Cluster(workdir, dsn, redis_url, env)
    pending = [cluster.spawn(offset_ms=o) for o in offsets]
    try:
        cluster.nodes = asyncio.run(_wait_all(pending))
    except BaseException:
        for node in pending:
            node.relay.stop()
        raise
    return cluster


async def _wait_all(nodes: list[Node]) -> list[Node]:
    return list(await asyncio.gather(*(wait_healthy(n) for n in nodes)))


@contextlib.contextmanager
def running_cluster(workdir: Path, offsets: Sequence[int]) -> Iterator[Cluster]:
    """A fresh database, an own redis-server and ``len(offsets)`` relays; all
    stopped (and the database dropped) afterwards."""
    dsn = create_database()
    redis = RedisServer(workdir / "redis")
    try:
        redis.start()
        cluster = start_cluster(workdir, dsn, redis.url, offsets)
        cluster.redis = redis
        try:
            yield cluster
        finally:
            cluster.stop_all()
    finally:
        redis.stop()
        drop_database(dsn)


# ---------------------------------------------------------------- worlds


async def new_world(node: Node, devices: int = 2) -> World:
    """An account with ``devices`` devices and one space (key package epoch 0)."""
    world = World()
    async with node.client(world) as c:
        await c.create_account(world.entries[0])
        for i in range(1, devices):
            await c.append_registry(world.account.account_id,
                                    world.add_device(i, time.time_ns() // 1_000_000))
        await c.create_space(world.space, world.key_package())
    return world


# ------------------------------------------------------------ PostgreSQL


def create_database() -> str:
    """A new empty database on the test server (skip, or fail under
    SDDSF_REQUIRE_POSTGRES=1, when unreachable). Returns its DSN."""
    dsn = postgres_dsn()
    name = f"sddsf_adv_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        admin = await asyncpg.connect(dsn, timeout=3)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = f"PostgreSQL is unreachable: {type(exc).__name__}: {exc}"
        if os.environ.get("SDDSF_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (SDDSF_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def drop_database(db_dsn: str) -> None:
    """Terminate the database's connections and drop it."""
    name = urlsplit(db_dsn).path.lstrip("/")

    async def drop() -> None:
        admin = await asyncpg.connect(postgres_dsn(), timeout=3)
        try:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await admin.close()

    asyncio.run(drop())


async def sql(dsn: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return [tuple(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


@dataclass(frozen=True)
class LogRow:
    offset: int
    op_id: bytes
    author: bytes
    seq: int
    leaf_hash: bytes


async def stored_log(dsn: str, space: bytes) -> list[LogRow]:
    rows = await sql(dsn, "SELECT log_offset, op_id, author, seq, leaf_hash FROM ops "
                          "WHERE space_id = $1 ORDER BY log_offset", space)
    return [LogRow(int(r[0]), bytes(r[1]), bytes(r[2]), int(r[3]), bytes(r[4])) for r in rows]


async def fsck(dsn: str, space: bytes) -> list[LogRow]:
    """The space's log rows, after ``sddsf.relay.fsck`` found the whole database
    consistent (gap-free offsets, no duplicates, every root, frontier, node,
    chain and registry recomputed from the rows)."""
    report = await relay_fsck(dsn)
    assert report.ok, describe(report)
    return await stored_log(dsn, space)


# ----------------------------------------------------------- fault proxy


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target`` with switchable faults.

    Modes (they apply to open connections too, chunk by chunk):

    * ``pass``: forward both ways;
    * ``refuse``: new connections are closed at once (the service is down);
    * ``blackhole``: bytes are swallowed both ways, nothing is ever answered
      (a partition: the peer only notices through its own timeouts);
    * ``lose_responses``: requests reach the target, and the first bytes of a
      reply abort the client's connection instead (an ambiguous outcome: the
      server did the work, the client never hears of it).

    :meth:`cut` aborts every open connection (both sides).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.port = 0
        self.lost_responses = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        for down, up in list(self._pairs):
            down.transport.abort()
            if up is not None:
                up.transport.abort()
        self._pairs.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.transport.abort()
            return
        up_writer: asyncio.StreamWriter | None = None
        up_reader: asyncio.StreamReader | None = None
        if self.mode != "blackhole":
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        pumps = [self._spawn(self._pump(reader, up_writer, pair, upstream=True))]
        if up_reader is not None:
            pumps.append(self._spawn(self._pump(up_reader, writer, pair, upstream=False)))
        await asyncio.gather(*pumps, return_exceptions=True)
        self._pairs.discard(pair)
        for w in (writer, up_writer):
            if w is not None:
                w.transport.abort()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None], *,
                    upstream: bool) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while chunk := await reader.read(65536):
                if self.mode == "blackhole" or writer is None:
                    continue
                if not upstream and self.mode == "lose_responses":
                    self.lost_responses += 1
                    pair[0].transport.abort()
                    return
                writer.write(chunk)
                await writer.drain()
        for w in pair:
            if w is not None:
                w.transport.abort()


async def until(check: Callable[[], Any], timeout: float = 10.0,
                interval: float = 0.05) -> bool:
    """Poll a sync or async ``check`` until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
