"""What ``Device.flush()`` costs per op on the editing trace (results go to
docs/performance.md, "Flush per op").

Device A types the first ``--edits`` edits of the trace into ``Device.doc``,
one transaction per edit; every ``--debounce`` edits ``flush()`` seals them
into one op; every ``--sync-every`` ops A syncs with an in-process relay
(SQLite device store, as a device uses by default). Only the ``flush()`` calls
are timed: wall and CPU time per op, and with ``--profile`` the cProfile
cumulative time per op of the functions a flush spends most in.

``--phases`` instead runs ``bench/trace_sync.py``'s SDDSF side (a real relay
process, then device B syncs and must end on the same text) and reports where
its time goes: typing, flushing, A's syncs, B's sync.

Usage:
    python bench/flush_cost.py [--trace PATH.json.gz] [--edits 50000]
                               [--debounce 100] [--sync-every 200] [--profile]
    python bench/flush_cost.py --phases [--edits 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycrdt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from trace_sync import TRACE, Trace, apply_edit, load, relay_process, two_devices

from sddsf.client.device import Device
from sddsf.testing.memory_transport import BASE_URL, InProcessRelay

#: The functions whose cumulative time per op is reported (name, file).
WATCHED = [("seal", "outbox.py"), ("seal_op", "envelope.py"), ("payloads", "outbox.py"),
           ("put", "sqlite_store.py"), ("batch", "sqlite_store.py"),
           ("get", "sqlite_store.py"), ("scan", "sqlite_store.py"), ("deps", "verified.py"),
           ("merge_updates", "_update.py"), ("decode_envelope", "envelope.py")]


async def run(edits: list[tuple[int, int, str]], debounce: int, sync_every: int,
              profile: cProfile.Profile | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with InProcessRelay() as relay:
            device, _ = await Device.create_account(
                Path(tmp) / "a", BASE_URL, "a", passphrase=None, insecure_plaintext=True,
                transport=relay.http_transport())
            space = await device.create_space("trace")
            await device.sync()
            doc = device.doc(space, "text")
            text = doc.get("t", type=pycrdt.Text)
            ops, wall, cpu = 0, 0.0, 0.0
            for i, edit in enumerate(edits, 1):
                with doc.transaction():
                    apply_edit(text, edit)
                if i % debounce == 0:
                    w, c = time.perf_counter(), time.process_time()
                    if profile is not None:
                        profile.enable()
                    ops += device.flush()
                    if profile is not None:
                        profile.disable()
                    wall += time.perf_counter() - w
                    cpu += time.process_time() - c
                    if ops % sync_every == 0:
                        await device.sync()
            await device.close()
    return {"ops": ops, "flush_wall_us_per_op": wall / ops * 1e6,
            "flush_cpu_us_per_op": cpu / ops * 1e6}


async def phases(url: str, work: Path, trace: Trace, debounce: int,
                 sync_every: int) -> dict[str, Any]:
    """bench/trace_sync.py's SDDSF run, timed by phase: wall seconds, and this
    process's CPU seconds (the client's own work; the relay is another process)."""
    laptop, phone, space = await two_devices(url, work)
    doc = laptop.doc(space, "text")
    text = doc.get("t", type=pycrdt.Text)
    wall = dict.fromkeys(("typing", "flush", "sync_a", "sync_b"), 0.0)
    cpu = dict(wall)

    @contextlib.contextmanager
    def timed(phase: str) -> Iterator[None]:
        w, c = time.perf_counter(), time.process_time()
        yield
        wall[phase] += time.perf_counter() - w
        cpu[phase] += time.process_time() - c

    ops = 0
    for i, edit in enumerate(trace.edits, 1):
        with timed("typing"), doc.transaction():
            apply_edit(text, edit)
        if i % debounce == 0:
            with timed("flush"):
                ops += laptop.flush()
            if ops % sync_every == 0:
                with timed("sync_a"):
                    await laptop.sync()
    with timed("flush"):
        ops += laptop.flush()
    with timed("sync_a"):
        await laptop.sync()
    with timed("sync_b"):
        await phone.sync()
        result = str(phone.doc(space, "text").get("t", type=pycrdt.Text))
    await laptop.close()
    await phone.close()
    return {"ops": ops, "wall_s": {k: round(v, 3) for k, v in wall.items()},
            "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
            "total_wall_s": round(sum(wall.values()), 3), "matches_end": result == trace.end}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--edits", type=int, default=50_000)
    ap.add_argument("--debounce", type=int, default=100)
    ap.add_argument("--sync-every", type=int, default=200)
    ap.add_argument("--profile", action="store_true",
                    help="also report cProfile cumulative µs per op (about 2x slower)")
    ap.add_argument("--phases", action="store_true",
                    help="time trace_sync.py's phases through a real relay instead")
    args = ap.parse_args()
    trace = load(args.trace, args.edits)
    if args.phases:
        with tempfile.TemporaryDirectory() as tmp, relay_process(Path(tmp)) as url:
            print(json.dumps(asyncio.run(phases(url, Path(tmp), trace, args.debounce,
                                                args.sync_every)), indent=2))
        return
    profile = cProfile.Profile() if args.profile else None
    report = asyncio.run(run(trace.edits, args.debounce, args.sync_every, profile))
    if profile is not None:
        stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        per_op: dict[str, float] = {}
        for (path, _, name), (_, _, _, cumulative, _) in stats.items():
            for want, file in WATCHED:
                if name == want and path.endswith(file):
                    key = f"{name} ({file})"
                    per_op[key] = per_op.get(key, 0.0) + cumulative / report["ops"] * 1e6
        report["profiled_us_per_op"] = {k: round(v) for k, v in per_op.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
