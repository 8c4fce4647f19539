"""Cold start: a new device's first sync of a finished space, from a snapshot
versus replaying every op, versus loading the plain Yjs state (results go to
docs/performance.md).

Two workloads, each at several history lengths, through a real relay process:

* ``trace``: the first N edits of the automerge-paper trace typed on device A
  (``--debounce`` edits per op). The document grows with the history.
* ``kv``: N ops, each overwriting one of 50 keys of a map. The history grows,
  the document hardly does: this shows what a snapshot start depends on.

For each: A syncs and writes a snapshot covering the whole log; device B (new,
snapshots on) and device C (new, ``use_snapshots = False``) are added and their
first ``sync()`` is timed end to end (session, registry, key packages,
snapshot or ops, verification, local store). ``snapshot_local_ms`` is the
CPU part of a snapshot start (verify, decrypt, apply to a fresh document);
``plain_ms`` is ``Doc().apply_update(state)`` of the same final state.
Every device's document must equal A's.

Usage:
    python bench/cold_start.py [--trace 25000,100000,259778] [--kv 500,2000,8000]
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
from typing import Any

import pycrdt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trace_sync import apply_edit, load, relay_process

from sddsf.client.device import Device
from sddsf.protocol.snapshot import SPACE_SNAPSHOT_DOC, verify_snapshot

REPEAT = 3


def content(doc: pycrdt.Doc[Any], workload: str) -> object:
    if workload == "trace":
        return str(doc.get("t", type=pycrdt.Text))
    return dict(doc.get("kv", type=pycrdt.Map))


async def write_history(a: Device, space: bytes, workload: str, n: int,
                        edits: list[tuple[int, int, str]], debounce: int) -> int:
    ops = 0
    if workload == "trace":
        doc = a.doc(space, "text")
        text = doc.get("t", type=pycrdt.Text)
        for i, edit in enumerate(edits[:n], 1):
            with doc.transaction():
                apply_edit(text, edit)
            if i % debounce == 0:
                ops += a.flush()
                if ops % 200 == 0:
                    await a.sync()
    else:
        m = a.doc(space, "kv").get("kv", type=pycrdt.Map)
        for i in range(n):
            m[f"k{i % 50}"] = f"value {i}"
            ops += a.flush()
            if ops % 200 == 0:
                await a.sync()
    ops += a.flush()
    await a.sync()
    return ops


async def one(url: str, work: Path, workload: str, n: int,
              edits: list[tuple[int, int, str]], debounce: int) -> dict[str, object]:
    a, _ = await Device.create_account(work / "a", url, "a", passphrase=None,
                                       insecure_plaintext=True)
    a.snapshot_every = 0  # one snapshot, written below, covering the whole log
    a.ack_every = 0  # keep the whole history on the relay, so replay stays possible
    space = await a.create_space(workload)
    ops = await write_history(a, space, workload, n, edits, debounce)
    size = await a.snapshot(space)
    name = "text" if workload == "trace" else "kv"
    expected = content(a.doc(space, name), workload)
    state = a.doc(space, name).get_update()

    plain = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        d: pycrdt.Doc[Any] = pycrdt.Doc()
        d.apply_update(state)
        assert content(d, workload) == expected
        plain.append(time.perf_counter() - start)

    _, blob = await a.relay.get_snapshot(space, SPACE_SNAPSHOT_DOC)
    local = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        snap = verify_snapshot(blob, registry=a.registry(), space=space,
                               epoch_keys=a._keys_cached(space))
        d = pycrdt.Doc()
        d.apply_update(snap.docs[name])
        assert content(d, workload) == expected
        local.append(time.perf_counter() - start)

    timings: dict[str, list[float]] = {"snapshot": [], "replay": []}
    for i in range(REPEAT):
        for mode in ("snapshot", "replay"):
            dev = await Device.add_local(a, work / f"{mode}{i}", f"{mode}{i}", passphrase=None,
                                         insecure_plaintext=True)
            dev.use_snapshots = mode == "snapshot"
            dev.ack_every = 0
            start = time.perf_counter()
            report = await dev.sync()
            timings[mode].append(time.perf_counter() - start)
            assert report.snapshots_loaded == (mode == "snapshot")
            assert content(dev.doc(space, name), workload) == expected
            await dev.close()
    await a.close()
    med = {k: statistics.median(v) * 1000 for k, v in timings.items()}
    plain_ms = statistics.median(plain) * 1000
    local_ms = statistics.median(local) * 1000
    return {
        "workload": workload, "history": n, "ops": ops, "log_size": size,
        "state_bytes": len(state), "snapshot_bytes": len(blob),
        "plain_ms": round(plain_ms, 2), "snapshot_local_ms": round(local_ms, 2),
        "cold_snapshot_ms": round(med["snapshot"], 1), "cold_replay_ms": round(med["replay"], 1),
        "local_vs_plain": round(local_ms / plain_ms, 2),
        "cold_snapshot_vs_plain": round(med["snapshot"] / plain_ms, 1),
        "replay_vs_snapshot": round(med["replay"] / med["snapshot"], 1),
    }


async def run(url: str, work: Path, trace: list[int], kv: list[int],
              debounce: int) -> list[dict[str, object]]:
    edits, _ = load(max(trace, default=0))
    rows = []
    for workload, sizes in (("trace", trace), ("kv", kv)):
        for n in sizes:
            sub = work / f"{workload}{n}"
            sub.mkdir()
            rows.append(await one(url, sub, workload, n, edits, debounce))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default="25000,100000,259778")
    ap.add_argument("--kv", default="500,2000,8000")
    ap.add_argument("--debounce", type=int, default=100)
    args = ap.parse_args()
    trace = [int(x) for x in args.trace.split(",") if x]
    kv = [int(x) for x in args.kv.split(",") if x]
    with tempfile.TemporaryDirectory() as tmp, relay_process(Path(tmp)) as url:
        asyncio.run(run(url, Path(tmp), trace, kv, args.debounce))


if __name__ == "__main__":
    main()
