"""Bounded stalls (docs/operations.md 6.1, 6.4): a relay whose database stops
answering answers 503 ``unavailable`` within ``db_timeout_s`` and reports not
ready, instead of holding every request.

* SQLite: another process holds the database's write lock (what a stalled
  writer, a backup tool or a hung disk looks like to the relay). Several
  uploads at once all get 503 within the deadline (before: each queued behind
  the previous one's 5 s lock wait, 5, 10, 15, 20 s), ``/readyz`` is 503, and
  once the lock is released the relay serves again.
* ``/readyz`` of a SQLite relay whose filesystem is read-only or full is 503
  (a tmpfs of the test's own, remounted read-only, then filled).

The PostgreSQL case (a black-holed connection through a TCP proxy) is in
tests/adversarial/test_threat_22_partitions.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from livekit import RelayProcess, Relays, client
from relaykit import World

from sddsf.client.relay_client import RelayClient
from sddsf.errors import Code, UnavailableError

DEADLINE_S = 1.0
#: The deadline, plus the time an answer takes to come back on a busy machine.
BOUND_S = DEADLINE_S + 3.0


@pytest.fixture
def relays(tmp_path: Path) -> Relays:
    r = Relays(tmp_path)
    yield r  # type: ignore[misc]
    r.stop_all()


def _start(relays: Relays, tmp_path: Path) -> tuple[RelayProcess, Path]:
    db = tmp_path / "relay.db"
    relay = relays.start("--db", f"sqlite:///{db}", env={
        "SDDSF_RELAY_KEY_FILE": str(tmp_path / "relay.key"),
        "SDDSF_RELAY_DB_TIMEOUT_S": str(DEADLINE_S)})
    return relay, db


async def _readyz(relay: RelayProcess) -> tuple[int, dict[str, str]]:
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), timeout=10) as http:
        r = await http.get(f"{relay.base_url}/readyz")
        return r.status_code, r.json()


async def _world(relay: RelayProcess) -> World:
    world = World()
    async with client(relay, world) as c:
        await c.create_account(world.entries[0])
        await c.create_space(world.space, world.key_package())
    return world


async def _timed_upload(c: RelayClient, world: World, i: int) -> tuple[float, object]:
    started = time.monotonic()
    try:
        await c.upload(world.space, [world.op(0, text=f"stalled {i}".encode(),
                                              record=False).raw])
    except UnavailableError as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, "accepted"


async def test_a_write_lock_held_elsewhere_gives_503_within_the_deadline(
        relays: Relays, tmp_path: Path) -> None:
    relay, db = _start(relays, tmp_path)
    world = await _world(relay)
    assert (await _readyz(relay))[0] == 200
    clients = [client(relay, world) for _ in range(4)]
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        for c in clients:
            await c.list_spaces()  # sessions are open before the stall
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held
        outcomes = await asyncio.gather(*(_timed_upload(c, world, i)
                                          for i, c in enumerate(clients)))
        status, body = await _readyz(relay)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        for c in clients:
            await c.aclose()
    for waited, outcome in outcomes:
        assert isinstance(outcome, UnavailableError), outcome
        assert outcome.code is Code.UNAVAILABLE
        assert waited < BOUND_S, [w for w, _ in outcomes]
    assert status == 503 and body["code"] == "unavailable", body
    # Released: the stalled calls finish, the relay serves again.
    for _ in range(100):
        if (await _readyz(relay))[0] == 200:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("still not ready after the lock was released")
    async with client(relay, world) as c:
        pulled, _ = await c.pull(world.space)  # reads and sessions work again
    # A stalled call ran to its end after its caller got the 503 (the client
    # re-sends the same signed op and is answered "duplicate"): at most the
    # first of the four same-seq ops is stored, never a partial batch.
    assert len(pulled) <= 1


MOUNT = shutil.which("mount") or "/bin/mount"
UMOUNT = shutil.which("umount") or "/bin/umount"


@contextlib.contextmanager
def _tmpfs(where: Path, size_mib: int) -> Iterator[Path]:
    """A small filesystem of the test's own (tmpfs), so read-only and full can be
    caused for real; root can mount one, others skip (root ignores file modes)."""
    where.mkdir()
    done = subprocess.run([MOUNT, "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs",
                           str(where)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run([UMOUNT, "-l", str(where)], check=False)


def _mount(*args: str) -> None:
    subprocess.run([MOUNT, *args], check=True, capture_output=True)


async def _wait_ready(relay: RelayProcess, status: int) -> dict[str, str]:
    body: dict[str, str] = {}
    for _ in range(50):
        got, body = await _readyz(relay)
        if got == status:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz never answered {status}: {body}")


async def test_readyz_reports_a_read_only_and_a_full_filesystem(
        relays: Relays, tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "fs", 96) as fs:
        relay = relays.start("--db", f"sqlite:///{fs / 'relay.db'}", env={
            "SDDSF_RELAY_KEY_FILE": str(tmp_path / "relay.key"),
            "SDDSF_RELAY_DB_TIMEOUT_S": str(DEADLINE_S)})
        await _wait_ready(relay, 200)
        # The kernel refuses to remount a filesystem read-only while the relay
        # holds its database open for writing; a read-only filesystem mounted
        # over the directory is what the relay's path then resolves to.
        _mount("-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(fs))
        try:
            body = await _wait_ready(relay, 503)
        finally:
            subprocess.run([UMOUNT, str(fs)], check=True)
        assert "read-only" in body["message"], body
        await _wait_ready(relay, 200)
        # Leave less than the 64 MiB the relay wants free on its database's disk.
        (fs / "filler").write_bytes(bytes(48 << 20))
        body = await _wait_ready(relay, 503)
        assert "disk is full" in body["message"], body
        (fs / "filler").unlink()
        await _wait_ready(relay, 200)
        relays.stop_all()


def _free_port() -> int:

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis(port: int) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("no redis-server binary to start a Redis of the test's own")
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with contextlib.suppress(OSError):
            import socket

            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("redis-server did not start")


async def test_readyz_reports_redis_down_and_recovers(relays: Relays, tmp_path: Path) -> None:
    """A relay with ``redis_url`` whose Redis stops: ``/readyz`` 503 naming Redis
    (load balancers take the node out), and ready again once Redis is back."""
    port = _free_port()
    redis = _redis(port)
    try:
        relay = relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}", env={
            "SDDSF_RELAY_KEY_FILE": str(tmp_path / "relay.key"),
            "SDDSF_RELAY_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
        await _wait_ready(relay, 200)
        redis.kill()
        redis.wait(10)
        body = await _wait_ready(relay, 503)
        assert "redis" in body["message"].lower(), body
        redis = _redis(port)
        await _wait_ready(relay, 200)
    finally:
        redis.kill()
        redis.wait(10)
        relays.stop_all()
