"""Helpers for tests against a real ``sddsf relay serve`` process on loopback.

* :class:`Relays`: starts relay subprocesses (free port, own log file, clean
  ``SDDSF_RELAY_*`` environment), waits for ``/healthz`` and always stops them.
* :func:`held_port`: a port that stays unconnectable (and untaken) after the
  relay on it stops.
* :func:`fresh_postgres_database`: a throw-away PostgreSQL database (skip, or
  fail under ``SDDSF_REQUIRE_POSTGRES=1``, when the server is unreachable).
* WebSocket helpers over the ``websockets`` client library.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest
from relaykit import World, seed
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sddsf.client.relay_client import RelayClient
from sddsf.client.retry import RetryPolicy

SRC = Path(__file__).resolve().parents[2] / "src"
RELAY_SEED = seed("relay", 1)  # relaykit.relay_key(): tree heads verify with its public key
START_TIMEOUT_S = 20.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), altchars=b"-_", validate=True)


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    Outgoing connections take their local ports from the ephemeral range, so a
    port there can be taken by a client socket between a relay's stop and a
    test's next connection, and a connection to a dead port there can connect
    to itself (the kernel picks the same local port: TCP self-connect), which
    looks like a relay that accepts and never answers. Below the range neither
    can happen.
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 20_000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # nothing free below the range: any port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A loopback port below the ephemeral range that this process keeps bound,
    never listening, until the block ends.

    Nothing listens on it unless a server is started there: a relay binds it as
    well (servers set ``SO_REUSEADDR``, and this socket has it once bound) and
    listens.
    Once that server stops, the port is still held: a connection to it is
    refused at once, and a port probe such as :func:`free_port` (a plain bind)
    fails on it, so no other test's server can take it in between. Use it
    where a test stops a relay and expects "cannot reach the relay".
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        sock = socket.socket()
        try:  # a plain bind: nobody else holds the port, not even in TIME_WAIT
            sock.bind(("127.0.0.1", rng.randrange(max(1024, low - 20_000), low)))
        except OSError:
            sock.close()
            continue
        # Set after the bind: only a server that sets it too can bind next to it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            yield int(sock.getsockname()[1])
        finally:
            sock.close()
        return
    raise AssertionError("no free loopback port below the ephemeral range")


def relay_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any ``SDDSF_RELAY_*``, plus PYTHONPATH and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDDSF_RELAY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sddsf", "relay", "serve", *args]


def write_key_file(path: Path) -> Path:
    path.write_text(RELAY_SEED.hex() + "\n")
    path.chmod(0o600)
    return path


@dataclass
class RelayProcess:
    """One running relay."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@dataclass
class Relays:
    """Starts relay processes in ``workdir``; :meth:`stop_all` ends every one."""

    workdir: Path
    started: list[RelayProcess] = field(default_factory=list)

    def start(self, *args: str, env: Mapping[str, str] | None = None,
              port: int | None = None) -> RelayProcess:
        """Start ``sddsf relay serve ARGS`` and wait until ``/healthz`` answers.

        Without ``port`` a free port is chosen and passed as ``--port`` (retried if
        another process takes it first); with ``port`` the caller configured it.
        """
        for _ in range(3):
            chosen = port or free_port()
            argv = serve_command(*args, *([] if port else ["--port", str(chosen)]))
            relay = self._spawn(argv, chosen, env)
            if _wait_healthy(relay):
                return relay
            relay.stop()
            if port or "address already in use" not in relay.log().lower():
                break
        raise AssertionError(f"relay did not become healthy:\n{relay.log()}")

    def _spawn(self, argv: Sequence[str], port: int,
               env: Mapping[str, str] | None) -> RelayProcess:
        log_path = self.workdir / f"relay-{len(self.started)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, env=relay_env(env), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.workdir)
        relay = RelayProcess(proc, port, log_path)
        self.started.append(relay)
        return relay

    def stop_all(self) -> None:
        for relay in self.started:
            relay.stop()


def _wait_healthy(relay: RelayProcess) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(transport=httpx.HTTPTransport(), timeout=1.0) as http:
        while time.monotonic() < deadline and relay.proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{relay.base_url}/healthz").status_code == 200:
                    return True
            time.sleep(0.05)
    return False


def client(relay: RelayProcess, world: World | None = None, device: int = 0) -> RelayClient:
    """A RelayClient over real loopback HTTP (no proxies from the environment)."""
    # No retries: these tests observe each answer of the relay.
    return RelayClient(relay.base_url,
                       device=world.devices[device] if world else None,
                       account_id=world.account.account_id if world else None,
                       transport=httpx.AsyncHTTPTransport(), timeout_s=10.0,
                       retry=RetryPolicy(attempts=1))


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0,
                interval: float = 0.05) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


async def connected_devices(relay: RelayProcess) -> float:
    """The ``sddsf_websocket_connections`` gauge from ``/metrics``."""
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), timeout=5) as http:
        text = (await http.get(f"{relay.base_url}/metrics")).text
    found = re.search(r"^sddsf_websocket_connections (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


# ------------------------------------------------------------------ WebSocket


def ticket_url(relay: RelayProcess, ticket: bytes | str) -> str:
    value = b64(ticket) if isinstance(ticket, bytes) else ticket
    return f"{relay.ws_url}?ticket={quote(value, safe='')}"


def ws_connect(url: str, **options: Any) -> Any:
    """``websockets`` client connect, loopback only, no compression."""
    settings: dict[str, Any] = {"proxy": None, "compression": None, "open_timeout": 5,
                                "close_timeout": 2, "max_queue": None, **options}
    return connect(url, **settings)


@contextlib.asynccontextmanager
async def slow_ws_connect(relay: RelayProcess, url: str) -> AsyncIterator[ClientConnection]:
    """A WebSocket that stops reading from the network after one buffered message,
    over a socket with a tiny receive buffer: a subscriber that does not keep up."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", relay.port))
        async with ws_connect(url, sock=sock, max_queue=1) as ws:
            yield ws
    finally:
        sock.close()


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        message = json.loads(await ws.recv())
    assert isinstance(message, dict), message
    return message


async def subscribe(ws: ClientConnection, space: bytes) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "subscribe", "space": b64(space)}))
    return await recv_json(ws)


@dataclass
class Follower:
    """A subscriber's copy of each space's log, kept the way a client must: live ops
    appended in order, and on ``resync`` a backfill over HTTP from the named offset.
    It asserts the fan-out contract: never a live op beyond what it has (a gap)
    unless a resync came first, and never a resync that skips what it lacks."""

    client: RelayClient
    spaces: Sequence[bytes]
    logs: dict[str, list[bytes]] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logs = {b64(s): [] for s in self.spaces}

    async def take(self, msg: dict[str, Any]) -> None:
        self.messages.append(msg)
        assert msg.get("space") in self.logs, msg
        log = self.logs[msg["space"]]
        if msg["type"] == "op":
            assert msg["offset"] <= len(log), (
                f"gap in space {msg['space']}: live op {msg['offset']} arrived when only "
                f"offsets < {len(log)} were known, with no resync for that space")
            if msg["offset"] == len(log):
                log.append(unb64(msg["envelope"]))
            return
        assert msg["type"] == "resync", msg
        assert msg["from"] <= len(log), (
            f"resync of {msg['space']} from {msg['from']} skips offset {len(log)}")
        del log[msg["from"]:]
        for _ in range(100):  # page through the backfill
            pulled, _ = await self.client.pull(unb64(msg["space"]), after=len(log) - 1)
            if not pulled:
                break
            log.extend(p.envelope or b"" for p in pulled)

    async def follow(self, ws: ClientConnection, sizes: Mapping[bytes, int],
                     max_messages: int = 500) -> None:
        """Read until every space has ``sizes`` ops, then drain what is still coming."""
        for _ in range(max_messages):
            if all(len(self.logs[b64(s)]) >= n for s, n in sizes.items()):
                break
            await self.take(await recv_json(ws))
        with contextlib.suppress(TimeoutError):
            for _ in range(max_messages):
                await self.take(await recv_json(ws, timeout=0.3))

    def count(self, kind: str) -> int:
        return sum(1 for m in self.messages if m["type"] == kind)


async def close_code(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Read (and drop) messages until the server closes; its close code."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        raise AssertionError(f"the relay did not close the socket within {timeout} s"
                             ) from None


async def connect_outcome(url: str) -> tuple[str, int | None]:
    """("close", code) when the server accepts then closes; ("http", status) when it
    refuses the handshake itself."""
    try:
        async with ws_connect(url) as ws:
            return "close", await close_code(ws)
    except InvalidStatus as exc:
        return "http", exc.response.status_code


# ----------------------------------------------------------------- PostgreSQL


def postgres_dsn() -> str:
    """Same server as tests/relay/conftest.py (``SDDSF_TEST_POSTGRES_DSN``)."""
    return os.environ.get("SDDSF_TEST_POSTGRES_DSN",
                          "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """The DSN of a new, empty database, dropped (backends terminated) afterwards."""
    dsn = postgres_dsn()
    try:
        import asyncpg

        admin = await asyncpg.connect(dsn, timeout=3)
    except Exception as exc:  # any failure means "not usable here"
        reason = f"PostgreSQL is unreachable: {type(exc).__name__}: {exc}"
        if os.environ.get("SDDSF_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (SDDSF_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    name = f"sddsf_live_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(dsn)
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        try:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await admin.close()
