"""Cluster: N ``sddsf relay serve`` processes on one PostgreSQL database.

Two measurements, each against 1 node and then against ``--nodes`` nodes (all
on one fresh database per run; with ``--redis URL`` the processes share Redis
and its pub/sub bus, else they use PostgreSQL LISTEN/NOTIFY):

1. **Aggregate accepted ops/s.** ``--accounts`` accounts, each with one space
   and a writer device; writer ``i`` talks to node ``i % nodes``. For
   ``--seconds`` every writer uploads batches of ``--batch`` ops in a closed
   loop; the figure is accepted ops / elapsed time.
2. **Cross-node edit-to-notification latency.** A reader device subscribes on
   the last node over WebSocket; a writer on the first node uploads one op at a
   time (``--samples`` of them, spaced 20 ms); the latency is from just before
   the upload request to the op's arrival on the reader's socket (the
   upload's own round trip included).

Every process is started and stopped by pid; the whole run is bounded by
``--deadline`` seconds.

Usage:
    python bench/cluster.py --dsn postgresql://postgres@127.0.0.1:5432/test \\
        [--nodes 3] [--accounts 12] [--batch 50] [--seconds 20] [--samples 200]
        [--redis redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "relay"))
sys.path.insert(0, str(ROOT / "src"))

from relaykit import World

from sddsf.client.relay_client import RelayClient
from sddsf.client.retry import RetryPolicy
from sddsf.wire import b64

RELAY_SEED = "11" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nodes(db: str, n: int, redis_url: str) -> list[tuple[subprocess.Popen[bytes], str]]:
    env = dict(os.environ, SDDSF_RELAY_KEY_HEX=RELAY_SEED, SDDSF_RELAY_REDIS_URL=redis_url,
               PYTHONPATH=str(ROOT / "src"))
    for name in ("RATE_OPS", "RATE_DEVICE", "RATE_ACCOUNT", "RATE_IP"):
        env[f"SDDSF_RELAY_{name}_PER_S"] = env[f"SDDSF_RELAY_{name}_BURST"] = "1e9"
    nodes = []
    for _ in range(n):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "sddsf", "relay", "serve", "--db", db,
                                 "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        nodes.append((proc, f"http://127.0.0.1:{port}"))
    deadline = time.monotonic() + 30
    for proc, url in nodes:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                stop_nodes(nodes)
                raise SystemExit("a relay did not become ready")
            time.sleep(0.1)
    return nodes


def stop_nodes(nodes: list[tuple[subprocess.Popen[bytes], str]]) -> None:
    for proc, _ in nodes:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc, _ in nodes:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


async def fresh_db(dsn: str) -> str:
    name = f"sddsf_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def drop_db(dsn: str, db: str) -> None:
    name = urlsplit(db).path.lstrip("/")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


def client(url: str, world: World, device: int) -> RelayClient:
    return RelayClient(url, device=world.devices[device], account_id=world.account.account_id,
                       transport=httpx.AsyncHTTPTransport(), timeout_s=30,
                       retry=RetryPolicy(attempts=1))


async def new_world(url: str, devices: int = 2) -> World:
    world = World()
    async with client(url, world, 0) as c:
        await c.create_account(world.entries[0])
        for i in range(1, devices):
            await c.append_registry(world.account.account_id,
                                    world.add_device(i, time.time_ns() // 1_000_000))
        await c.create_space(world.space, world.key_package())
    return world


async def throughput(urls: list[str], accounts: int, batch: int, seconds: float) -> float:
    worlds = [await new_world(urls[0], devices=1) for _ in range(accounts)]
    clients = [client(urls[i % len(urls)], w, 0) for i, w in enumerate(worlds)]
    for c in clients:
        await c.list_spaces()
    accepted = 0
    stop = time.monotonic() + seconds

    async def writer(c: RelayClient, world: World) -> None:
        nonlocal accepted
        while time.monotonic() < stop:
            ops = [world.op(0, text=f"{k}".encode()).raw for k in range(batch)]
            results, _ = await c.upload(world.space, ops, proofs=False)
            accepted += sum(r.status == "accepted" for r in results)

    started = time.monotonic()
    await asyncio.gather(*(writer(c, w) for c, w in zip(clients, worlds, strict=True)))
    elapsed = time.monotonic() - started
    for c in clients:
        await c.aclose()
    return accepted / elapsed


async def latency(urls: list[str], samples: int) -> list[float]:
    world = await new_world(urls[0])
    async with client(urls[0], world, 0) as writer, client(urls[-1], world, 1) as reader:
        await writer.list_spaces()
        ticket = await reader.ws_ticket()
        ws_url = f"{urls[-1].replace('http', 'ws')}/v1/ws?ticket={b64(ticket)}"
        async with websockets.connect(ws_url, max_size=1 << 20) as ws:
            await ws.send(json.dumps({"type": "subscribe", "space": b64(world.space)}))
            json.loads(await ws.recv())
            out = []
            for i in range(samples):
                op = world.op(0, text=f"lat {i}".encode())
                started = time.perf_counter()
                await writer.upload(world.space, [op.raw], proofs=False)
                async with asyncio.timeout(10):
                    while True:
                        message = json.loads(await ws.recv())
                        if message.get("type") == "op" and message["offset"] == i:
                            break
                out.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    report: dict[str, object] = {"nodes": args.nodes, "accounts": args.accounts,
                                 "batch": args.batch, "seconds": args.seconds,
                                 "bus": "redis" if args.redis else "postgres"}
    for n in (1, args.nodes):
        db = await fresh_db(args.dsn)
        nodes = start_nodes(db, n, args.redis)
        try:
            urls = [u for _, u in nodes]
            report[f"ops_per_s_{n}_nodes"] = round(
                await throughput(urls, args.accounts, args.batch, args.seconds))
            if n > 1:
                lat = await latency(urls, args.samples)
                report["cross_node_latency_ms"] = {
                    "p50": round(statistics.median(lat) * 1000, 1),
                    "p99": round(pct(lat, 0.99) * 1000, 1),
                    "max": round(max(lat) * 1000, 1), "samples": len(lat)}
        finally:
            stop_nodes(nodes)
            await drop_db(args.dsn, db)
    one, many = report["ops_per_s_1_nodes"], report[f"ops_per_s_{args.nodes}_nodes"]
    assert isinstance(one, int) and isinstance(many, int)
    report["speedup"] = round(many / max(one, 1), 2)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", default=os.environ.get("SDDSF_TEST_POSTGRES_DSN",
                                                   "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--accounts", type=int, default=12)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--redis", default="", help="share Redis (and its pub/sub bus)")
    p.add_argument("--deadline", type=float, default=240.0)
    args = p.parse_args()

    async def bounded() -> dict[str, object]:
        return await asyncio.wait_for(run(args), args.deadline)

    print(json.dumps(asyncio.run(bounded()), indent=2))


if __name__ == "__main__":
    main()
