"""``sddsf relay serve --workers N``: N uvicorn worker processes on one address,
sharing the database (a SQLite file here) and, through ``redis_url``, the edge
state and the cluster bus, so a session, a ticket and a live update work
whichever worker a connection lands on. Without ``redis_url`` several workers
are refused at start-up (a client's session and ticket could reach a worker
that does not know them)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

from livekit import (
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
