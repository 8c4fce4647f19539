"""Relay ingest and fan-out benchmark (results go to docs/performance.md).

Starts a real relay process (`sddsf relay serve`) on loopback, then:

1. measures the raw PyNaCl Ed25519 verify rate in this run (one thread, 200-byte
   messages) - the ceiling one relay process can approach;
2. uploads pre-signed ops through the HTTP batch endpoint and reports accepted
   ops/s, with and without per-op inclusion proofs, and the ratio to (1);
3. subscribes N WebSocket clients to the space and reports p50/p99 latency from
   the start of an upload to each subscriber's receipt of the op.

Usage:
    python bench/relay_ingest.py [--db postgresql://postgres@127.0.0.1/test]
        [--ops 6000] [--batch 500] [--subscribers 100] [--pushes 50]

Bounded in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "relay"))
sys.path.insert(0, str(ROOT / "src"))

from relaykit import World

from sddsf.client.relay_client import RelayClient
from sddsf.crypto import Ed25519SigningKey

RELAY_SEED = "11" * 32


def verify_rate(seconds: float = 2.0) -> float:
    key = Ed25519SigningKey.from_seed(bytes(32))
    msg = bytes(200)
    sig = key.sign(msg)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(500):
            key.public.verify(msg, sig)
        n += 500
    return n / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_relay(db: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, SDDSF_RELAY_KEY_HEX=RELAY_SEED, SDDSF_RELAY_RATE_OPS_PER_S="1e9",
               SDDSF_RELAY_RATE_OPS_BURST="1e9", SDDSF_RELAY_RATE_DEVICE_PER_S="1e6",
               SDDSF_RELAY_RATE_DEVICE_BURST="1e6", SDDSF_RELAY_RATE_ACCOUNT_PER_S="1e6",
               SDDSF_RELAY_RATE_ACCOUNT_BURST="1e6", SDDSF_RELAY_RATE_IP_PER_S="1e6",
               SDDSF_RELAY_RATE_IP_BURST="1e6", SDDSF_RELAY_MAX_REQUEST_BYTES=str(64 << 20),
               SDDSF_RELAY_KEY_FILE=str(workdir / "relay.key"),
               SDDSF_RELAY_WS_QUEUE_MAX="100000")
    proc = subprocess.Popen([sys.executable, "-m", "sddsf", "relay", "serve", "--db", db,
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("relay did not become ready")


async def ingest(base: str, n_ops: int, batch: int, proofs: bool) -> dict[str, float]:
    world = World()
    for i in range(1, 4):
        world.add_device(i)
    async with RelayClient(base, device=world.devices[0],
                           account_id=world.account.account_id) as client:
        await client.create_account(world.entries[0])
        for e in world.entries[1:]:
            await client.append_registry(world.account.account_id, e)
        await client.create_space(world.space, world.key_package())
        now = time.time_ns() // 1_000_000
        ops = [world.op(i % 4, ts=now, text=b"x" * 100).raw for i in range(n_ops)]
        batches = [ops[i:i + batch] for i in range(0, len(ops), batch)]
        await client.upload(world.space, batches[0][:1], proofs=proofs)  # warm up (1 op)
        start = time.perf_counter()
        accepted = 1
        for b in batches:
            chunk = b[1:] if b is batches[0] else b
            results, _ = await client.upload(world.space, chunk, proofs=proofs)
            accepted += sum(r.status == "accepted" for r in results)
        elapsed = time.perf_counter() - start
    if accepted != n_ops:
        raise SystemExit(f"only {accepted} of {n_ops} ops accepted")
    return {"ops": n_ops, "seconds": elapsed, "ops_per_s": (n_ops - 1) / elapsed}


async def fanout(base: str, ws_base: str, subscribers: int, pushes: int) -> dict[str, float]:
    world = World()
    async with RelayClient(base, device=world.devices[0],
                           account_id=world.account.account_id) as client:
        await client.create_account(world.entries[0])
        await client.create_space(world.space, world.key_package())
        space_b64 = base64.urlsafe_b64encode(world.space).decode()
        conns = []
        for _ in range(subscribers):
            ticket = base64.urlsafe_b64encode(await client.ws_ticket()).decode()
            ws = await websockets.connect(f"{ws_base}/v1/ws?ticket={ticket}")
            await ws.send(json.dumps({"type": "subscribe", "space": space_b64}))
            if json.loads(await ws.recv())["type"] != "subscribed":
                raise SystemExit("subscription failed")
            conns.append(ws)
        latencies: list[float] = []
        for i in range(pushes):
            op = world.op(0, ts=time.time_ns() // 1_000_000, text=f"push {i}".encode())
            start = time.perf_counter()
            upload = asyncio.create_task(client.upload(world.space, [op.raw], proofs=False))

            async def receive(ws: websockets.ClientConnection, t0: float) -> float:
                while True:
                    msg = json.loads(await ws.recv())
                    if msg["type"] == "op":
                        return time.perf_counter() - t0

            latencies += await asyncio.gather(*(receive(ws, start) for ws in conns))
            await upload
        for ws in conns:
            await ws.close()
    latencies.sort()
    return {"subscribers": subscribers, "pushes": pushes,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=None)
    ap.add_argument("--ops", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--subscribers", type=int, default=100)
    ap.add_argument("--pushes", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or f"sqlite:///{tmp}/relay.db"
        port = free_port()
        proc = start_relay(db, port, Path(tmp))
        try:
            raw = verify_rate()
            base, ws_base = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
            no_proofs = asyncio.run(ingest(base, args.ops, args.batch, proofs=False))
            with_proofs = asyncio.run(ingest(base, args.ops, args.batch, proofs=True))
            fan = asyncio.run(fanout(base, ws_base, args.subscribers, args.pushes))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    report = {
        "backend": db.split("://", 1)[0], "raw_verify_per_s": raw,
        "ingest_no_proofs": no_proofs, "ingest_with_proofs": with_proofs,
        "ratio_no_proofs": no_proofs["ops_per_s"] / raw,
        "ratio_with_proofs": with_proofs["ops_per_s"] / raw, "fanout": fan,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
