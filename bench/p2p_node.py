"""PeerNode on loopback: start, dial, pubsub one-way latency, request/response.

Two nodes in one process (each with its own trio thread), listening on
127.0.0.1, mDNS off unless ``--mdns``. Figures, all wall-clock
(``time.perf_counter``) on the asyncio side, so each includes both bridge
crossings:

* **start**: ``await node.start()`` until it returns (listening; with
  ``--mdns`` also the mDNS announcement);
* **dial**: ``await b.dial(a.addrs[0])`` until it returns (TCP, Noise XX,
  yamux, both sides' admission checks);
* **pubsub one-way**: after the mesh has formed (a warm-up message got
  through), ``--messages`` messages of ``--size`` bytes, one at a time: from
  just before ``a.publish`` to ``b``'s ``on_message`` callback running on the
  asyncio loop; spaced by ``--gap`` ms so each is measured alone;
* **request/response**: ``--requests`` sequential ``b.request(a, data)`` round
  trips with a ``--size`` request and an equal response, then a few of 1 MiB.

With ``--split``, node a runs in a child process of its own (two devices are
two processes): b asks it over the sync protocol to publish each message, a
stamps the message with ``time.perf_counter()`` (CLOCK_MONOTONIC, one clock for
every process of the machine) and b subtracts that stamp on arrival. The child
is stopped by closing its stdin, and killed by pid if it lingers.

Usage:
    python bench/p2p_node.py [--messages 100] [--requests 100] [--size 256]
        [--gap 10] [--mdns] [--split]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sddsf.p2p import PeerNode

TOPIC = "bench"


def _ms(samples: list[float]) -> str:
    qs = statistics.quantiles(samples, n=100)
    return (f"p50 {statistics.median(samples) * 1e3:.2f} ms, p90 {qs[89] * 1e3:.2f} ms, "
            f"p99 {qs[98] * 1e3:.2f} ms, max {max(samples) * 1e3:.2f} ms (n={len(samples)})")


async def _until_mesh(a: PeerNode, arrivals: asyncio.Queue[tuple[bytes, float]]) -> float:
    t0 = time.perf_counter()
    while True:  # the mesh forms at a GossipSub heartbeat: publish until one gets through
        await a.publish(TOPIC, b"warm-up")
        try:
            await asyncio.wait_for(arrivals.get(), 0.1)
            return time.perf_counter() - t0
        except TimeoutError:
            continue


async def _one_way(a: PeerNode, arrivals: asyncio.Queue[tuple[bytes, float]],
                   args: argparse.Namespace) -> list[float]:
    out = []
    for i in range(args.messages):
        data = i.to_bytes(4, "big") + bytes(args.size - 4)
        sent = time.perf_counter()
        await a.publish(TOPIC, data)
        got, at = await asyncio.wait_for(arrivals.get(), 5)
        assert got == data, "out of order or lost"
        out.append(at - sent)
        await asyncio.sleep(args.gap / 1e3)
    return out


async def _round_trips(b: PeerNode, device_a: bytes, payload: bytes, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert await b.request(device_a, payload) == payload
        out.append(time.perf_counter() - t0)
    return out


async def run(args: argparse.Namespace) -> None:
    arrivals: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()

    async def echo(device_id: bytes, data: bytes) -> bytes:
        return data

    def node(seed: bytes, receive: bool) -> PeerNode:
        def on_message(topic: str, device: bytes, data: bytes) -> None:
            if receive:
                arrivals.put_nowait((data, time.perf_counter()))
        return PeerNode(seed, listen=("/ip4/127.0.0.1/tcp/0",), mdns=args.mdns,
                        authorize=lambda d: True, on_message=on_message, on_request=echo)

    a, b = node(b"A" * 32, False), node(b"B" * 32, True)
    starts = []
    for n in (a, b):
        t0 = time.perf_counter()
        await n.start()
        starts.append(time.perf_counter() - t0)
    try:
        t0 = time.perf_counter()
        device_a = await b.dial(a.addrs[0])
        dial = time.perf_counter() - t0
        await a.subscribe(TOPIC)
        await b.subscribe(TOPIC)
        mesh = await _until_mesh(a, arrivals)
        one_way = await _one_way(a, arrivals, args)
        rtt = await _round_trips(b, device_a, bytes(args.size), args.requests)
        big = await _round_trips(b, device_a, bytes(1 << 20), 5)
    finally:
        t0 = time.perf_counter()
        await a.stop()
        await b.stop()
        stop = time.perf_counter() - t0
    print(f"start (to listening{' + mDNS' if args.mdns else ''}): "
          f"{starts[0] * 1e3:.1f} ms, {starts[1] * 1e3:.1f} ms")
    print(f"dial: {dial * 1e3:.1f} ms")
    print(f"mesh ready after dial+subscribe: {mesh * 1e3:.0f} ms")
    print(f"pubsub one-way ({args.size} B): {_ms(one_way)}")
    print(f"request/response ({args.size} B each way): {_ms(rtt)}")
    print(f"request/response (1 MiB each way): median {statistics.median(big) * 1e3:.1f} ms "
          f"(n={len(big)})")
    print(f"stop both: {stop * 1e3:.0f} ms")


async def publisher() -> None:
    """The child of ``--split``: node a; publishes a stamped message per ``pub`` request."""
    a: PeerNode

    async def answer(device_id: bytes, data: bytes) -> bytes:
        if data.startswith(b"pub"):
            size = int(data[3:])
            await a.publish(TOPIC, struct.pack(">d", time.perf_counter()) + bytes(size - 8))
            return b"ok"
        return data

    a = PeerNode(b"A" * 32, listen=("/ip4/127.0.0.1/tcp/0",), mdns=False,
                 authorize=lambda d: True, on_message=lambda *_: None, on_request=answer)
    await a.start()
    print(a.addrs[0], flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes stdin
    await a.stop()


async def run_split(args: argparse.Namespace) -> None:
    arrivals: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()

    async def echo(device_id: bytes, data: bytes) -> bytes:
        return data

    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--role", "publisher",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    b = PeerNode(b"B" * 32, listen=("/ip4/127.0.0.1/tcp/0",), mdns=False,
                 authorize=lambda d: True, on_request=echo,
                 on_message=lambda t, d, m: arrivals.put_nowait((m, time.perf_counter())))
    try:
        addr = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
        await b.start()
        t0 = time.perf_counter()
        device_a = await b.dial(addr)
        dial = time.perf_counter() - t0
        await b.subscribe(TOPIC)
        ask = f"pub{args.size}".encode()
        while True:  # until the mesh carries a message
            await b.request(device_a, ask)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrivals.get(), 0.1)
                break
        one_way = []
        for _ in range(args.messages):
            await b.request(device_a, ask)
            data, at = await asyncio.wait_for(arrivals.get(), 5)
            one_way.append(at - struct.unpack(">d", data[:8])[0])
            await asyncio.sleep(args.gap / 1e3)
        rtt = await _round_trips(b, device_a, bytes(args.size), args.requests)
        big = await _round_trips(b, device_a, bytes(1 << 20), 5)
    finally:
        await b.stop()
        child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 10)
        except TimeoutError:
            child.kill()  # this child, by its pid
            await child.wait()
    print(f"[two processes] dial: {dial * 1e3:.1f} ms")
    print(f"[two processes] pubsub one-way ({args.size} B): {_ms(one_way)}")
    print(f"[two processes] request/response ({args.size} B each way): {_ms(rtt)}")
    print(f"[two processes] request/response (1 MiB each way): median "
          f"{statistics.median(big) * 1e3:.1f} ms (n={len(big)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--gap", type=float, default=10.0)
    ap.add_argument("--mdns", action="store_true")
    ap.add_argument("--split", action="store_true")
    ap.add_argument("--role", choices=["publisher"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "publisher":
        asyncio.run(publisher())
    else:
        asyncio.run(run_split(args) if args.split else run(args))


if __name__ == "__main__":
    main()
