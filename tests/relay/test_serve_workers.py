"""``sddsf relay serve --workers N``: N uvicorn worker processes on one address,
sharing the database (a SQLite file here) and, through ``redis_url``, the edge
state and the cluster bus, so a session, a ticket and a live update work
whichever worker a connection lands on. Without ``redis_url`` several workers
are refused at start-up (a client's session and ticket could reach a worker
that does not know them).

Each worker listens on a socket of its own (``SO_REUSEPORT``), so a burst of
connections is spread over the workers (with one shared socket, one worker
accepted all of them); a worker that dies is replaced, none outlives the
supervisor, and an address already in use is refused with a config error."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from livekit import (
    RelayProcess,
    Relays,
    b64,
    client,
    free_port,
    relay_env,
    serve_command,
    ticket_url,
    write_key_file,
    ws_connect,
)
from relaykit import World

from rediskit import redis_server


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(t) for t in text]
    return out


def _workers(pid: int) -> list[int]:
    """The relay's worker processes (not multiprocessing's resource tracker)."""
    out = []
    for child in _children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(child)
        except FileNotFoundError:
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _sockets(pid: int, port: int, state: str) -> int:
    """TCP sockets of ``pid`` on local port ``port`` in ``state`` (/proc/net/tcp:
    01 established, 0A listening)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state \
                and fields[9] in inodes:
            count += 1
    return count


def _wait(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def _two_workers(tmp_path: Path) -> Iterator[RelayProcess]:
    with redis_server(tmp_path / "redis") as redis:
        relays = Relays(tmp_path)
        key = write_key_file(tmp_path / "relay.key")
        try:
            relay = relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}", "--workers", "2",
                                 env={"SDDSF_RELAY_KEY_FILE": str(key),
                                      "SDDSF_RELAY_REDIS_URL": redis.url})
            _wait(lambda: len([w for w in _workers(relay.proc.pid)
                               if _sockets(w, relay.port, "0A")]) == 2, "two listening workers")
            yield relay
        finally:
            relays.stop_all()


def test_several_workers_need_redis(tmp_path: Path) -> None:
    key = write_key_file(tmp_path / "relay.key")
    done = subprocess.run(
        serve_command("--db", f"sqlite:///{tmp_path / 'relay.db'}", "--workers", "2",
                      "--port", str(free_port())),
        env=relay_env({"SDDSF_RELAY_KEY_FILE": str(key)}), cwd=tmp_path,
        capture_output=True, timeout=30, check=False)
    stderr = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in stderr, stderr
    assert "workers" in stderr and "redis_url" in stderr and "[config]" in stderr, stderr


async def test_two_workers_on_sqlite_serve_sessions_tickets_and_live_updates(
        tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as redis:
        relays = Relays(tmp_path)
        key = write_key_file(tmp_path / "relay.key")
        try:
            relay = relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}",
                                 "--workers", "2",
                                 env={"SDDSF_RELAY_KEY_FILE": str(key),
                                      "SDDSF_RELAY_REDIS_URL": redis.url})
            deadline = time.monotonic() + 20
            while len(_children(relay.proc.pid)) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert len(_children(relay.proc.pid)) >= 2, relay.log()
            world = World()
            world.add_device(1, time.time_ns() // 1_000_000)
            # Each client has its own connections: several chances to land on
            # either worker; every step works whichever it reaches.
            for round_ in range(3):
                a, b = client(relay, world, 0), client(relay, world, 1)
                async with a, b:
                    if round_ == 0:
                        await a.create_account(world.entries[0])
                        await a.append_registry(world.account.account_id, world.entries[1])
                        await a.create_space(world.space, world.key_package())
                    async with ws_connect(ticket_url(relay, await b.ws_ticket())) as ws:
                        await ws.send(json.dumps({"type": "subscribe",
                                                  "space": b64(world.space)}))
                        subscribed = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        assert subscribed["type"] == "subscribed", subscribed
                        op = world.op(0, text=f"round {round_}".encode())
                        results, _ = await a.upload(world.space, [op.raw])
                        assert results[0].status == "accepted"
                        pushed = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        assert pushed["type"] == "op" and pushed["offset"] == round_, pushed
        finally:
            relays.stop_all()
        assert "Traceback" not in relay.log(), relay.log()


async def test_a_burst_of_connections_is_spread_over_the_workers(tmp_path: Path) -> None:
    with _two_workers(tmp_path) as relay:
        for _ in range(3):
            # The previous round's (or the start-up probe's) connections are
            # closed on the workers' side first, so that only this burst is counted.
            _wait(lambda: sum(_sockets(w, relay.port, "01")
                              for w in _workers(relay.proc.pid)) == 0, "idle workers", 10)
            clients = [httpx.AsyncClient(base_url=relay.base_url) for _ in range(16)]
            try:  # sixteen keep-alive connections opened at once, as uploaders do
                answers = await asyncio.gather(*(c.get("/healthz") for c in clients))
                assert all(a.status_code == 200 for a in answers)
                held = [_sockets(w, relay.port, "01") for w in _workers(relay.proc.pid)]
            finally:
                for c in clients:
                    await c.aclose()
            # One shared socket gave every connection to one worker; hashed over
            # two sockets, all sixteen on one side has a chance of 2 in 65,536.
            assert sum(held) == 16 and min(held) > 0, held


def test_a_dead_worker_is_replaced_and_none_outlives_the_supervisor(tmp_path: Path) -> None:
    with _two_workers(tmp_path) as relay:
        first, second = _workers(relay.proc.pid)
        os.kill(first, signal.SIGKILL)
        _wait(lambda: len([w for w in _workers(relay.proc.pid) if w != first
                           and _sockets(w, relay.port, "0A")]) == 2, "a replacement worker")
        assert httpx.get(f"{relay.base_url}/healthz", timeout=5).status_code == 200
        workers = _workers(relay.proc.pid)
        relay.proc.send_signal(signal.SIGTERM)
        assert relay.proc.wait(timeout=30) == 0
        _wait(lambda: not any(_alive(w) for w in workers), "the workers to stop")
        assert second in workers
    assert "Traceback" not in relay.log(), relay.log()


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    with _two_workers(tmp_path) as relay:
        workers = _workers(relay.proc.pid)
        relay.proc.kill()
        relay.proc.wait(timeout=10)
        _wait(lambda: not any(_alive(w) for w in workers), "orphaned workers to stop")


def test_an_address_in_use_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            serve_command("--db", f"sqlite:///{tmp_path / 'relay.db'}", "--workers", "2",
                          "--port", str(port)),
            env=relay_env({"SDDSF_RELAY_KEY_FILE": str(write_key_file(tmp_path / "k")),
                           "SDDSF_RELAY_REDIS_URL": "redis://127.0.0.1:1/0"}),
            cwd=tmp_path, capture_output=True, timeout=60, check=False)
    stderr = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in stderr, stderr
    assert f"127.0.0.1:{port}" in stderr and "[config]" in stderr, stderr


def test_port_zero_is_refused_with_several_workers(tmp_path: Path) -> None:
    # Each worker would bind a port of its own: refused before any starts.
    done = subprocess.run(
        serve_command("--db", f"sqlite:///{tmp_path / 'relay.db'}", "--workers", "2",
                      "--port", "0"),
        env=relay_env({"SDDSF_RELAY_KEY_FILE": str(write_key_file(tmp_path / "k")),
                       "SDDSF_RELAY_REDIS_URL": "redis://127.0.0.1:1/0"}),
        cwd=tmp_path, capture_output=True, timeout=60, check=False)
    stderr = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in stderr, stderr
    assert "fixed 'port'" in stderr and "[config]" in stderr, stderr
