"""What opening a session costs a device, on loopback and over a slower
network (results go to docs/performance.md, "Opening a device, and the CLI's
offline commands").

A real relay process (SQLite) on loopback and one device. The device forgets
its session and lists its spaces, ``--runs`` times: each time the client opens
a session (posture report, challenge, session request) and then sends the
read. ``--rtt-ms`` delays every request by that much before it leaves the
client, as a network round trip would (requests in flight at once wait
together); connections themselves stay on loopback, so a new connection's
own handshake costs nothing extra. The report gives the median and the
fastest time in ms.

Usage:
    python bench/session_open.py [--runs 30] [--rtt-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trace_sync import relay_process

from sddsf.client.device import Device


class Delayed(httpx.AsyncBaseTransport):
    """Every request waits ``rtt_s`` before it goes out."""

    def __init__(self, rtt_s: float) -> None:
        self.rtt_s = rtt_s
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.rtt_s)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def measure(url: str, work: Path, runs: int, rtt_ms: float) -> dict[str, float]:
    device, _ = await Device.create_account(work / "a", url, "a", passphrase=None,
                                            insecure_plaintext=True,
                                            transport=Delayed(rtt_ms / 1000))
    try:
        await device.sync()
        times = []
        for _ in range(runs):
            device.relay.forget_session()
            start = time.perf_counter()
            await device.relay.list_spaces()
            times.append(time.perf_counter() - start)
    finally:
        await device.close()
    return {"rtt_ms": rtt_ms, "runs": runs,
            "open_and_read_ms": round(statistics.median(times) * 1000, 1),
            "open_and_read_min_ms": round(min(times) * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rtt-ms", type=float, default=20.0,
                    help="delay added to every request (0: plain loopback)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, relay_process(Path(tmp)) as url:
        print(json.dumps(asyncio.run(measure(url, Path(tmp), args.runs, args.rtt_ms))))


if __name__ == "__main__":
    main()
