"""The automerge-paper editing trace (259,778 edits) typed on device A, synced
through a real relay to device B (results go to docs/performance.md).

Baseline (same run): the same edits in plain pycrdt, one transaction per edit,
the updates applied directly to a second document.

SDDSF: device A types into a ``Device.doc`` text, one transaction per edit;
every ``--debounce`` edits its buffered updates become one signed, encrypted
op (what the background runner's debounce window does for a fast typist); A
syncs every ``--sync-every`` ops; at the end device B (another home) syncs,
verifying everything, and its text must equal the trace's ``endContent``.

``--debounce-ms MS`` replaces the fixed edit count by the background runner's
own policy (``RunnerSettings.debounce_s``, 250 ms by default): once MS
milliseconds have passed since the window's first edit, A syncs (a sync
flushes first, so each window becomes one op). The runner syncs on its own
task while typing goes on; here the sync blocks the typing, so the figure is
an upper bound on what the runner costs.

Any trace in the editing-traces format replays (``--trace``): its positions
count Unicode code points, pycrdt's ``Text`` offsets count UTF-8 bytes, and the
loader converts (before the clock starts). Both texts must end on the trace's
``endContent``.

Usage:
    python bench/trace_sync.py [--trace PATH.json.gz] [--edits N] [--debounce 100]
                               [--sync-every 200] [--debounce-ms 250]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pycrdt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sddsf.client.device import Device

TRACE = ROOT.parent / "shared" / "traces" / "automerge-paper.json.gz"


@dataclass(frozen=True)
class Trace:
    """An editing trace ready to replay into a pycrdt ``Text``.

    ``edits`` are ``(position, deleted, inserted)`` with position and deleted
    length in UTF-8 bytes (pycrdt's ``Text`` offsets), converted from the
    trace's code points; ``complete`` is whether every edit of the file is in.
    """

    start: str
    edits: list[tuple[int, int, str]]
    end: str
    complete: bool


def load(path: Path, limit: int | None) -> Trace:
    """The first LIMIT edits (all if None) of the trace at PATH (editing-traces
    JSON, gzipped): ``startContent``, ``txns[].patches`` and ``endContent``."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    patches = [tuple(p) for t in data["txns"] for p in t["patches"]]
    chosen = patches if limit is None else patches[:limit]
    text, edits = data.get("startContent", ""), []
    start = text
    for pos, delete, insert in chosen:
        # str.isascii() is O(1) in CPython: an ASCII text converts for free.
        byte_pos = pos if text.isascii() else len(text[:pos].encode())
        byte_del = len(text[pos:pos + delete].encode())
        edits.append((byte_pos, byte_del, insert))
        text = text[:pos] + insert + text[pos + delete:]
    complete = len(chosen) == len(patches)
    return Trace(start, edits, data["endContent"] if complete else text, complete)


def apply_edit(text: Any, edit: tuple[int, int, str]) -> None:
    pos, delete, insert = edit
    if delete:
        del text[pos:pos + delete]
    if insert:
        text.insert(pos, insert)


def baseline(trace: Trace) -> tuple[float, str]:
    a: pycrdt.Doc[Any] = pycrdt.Doc()
    text = a.get("t", type=pycrdt.Text)
    text.insert(0, trace.start)
    b: pycrdt.Doc[Any] = pycrdt.Doc()
    b.apply_update(a.get_update())
    start = time.perf_counter()
    updates: list[bytes] = []
    a.observe(lambda e: updates.append(e.update))
    for edit in trace.edits:
        with a.transaction():
            apply_edit(text, edit)
    for u in updates:
        b.apply_update(u)
    return time.perf_counter() - start, str(b.get("t", type=pycrdt.Text))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def two_devices(url: str, work: Path) -> tuple[Device, Device, bytes]:
    """Device A (a new account with a space "trace") and device B, both synced."""
    laptop, _ = await Device.create_account(work / "a", url, "a", passphrase=None,
                                            insecure_plaintext=True)
    space = await laptop.create_space("trace")
    phone = await Device.add_local(laptop, work / "b", "b", passphrase=None,
                                   insecure_plaintext=True)
    await laptop.sync()
    await phone.sync()
    return laptop, phone, space


async def sddsf_run(url: str, work: Path, trace: Trace, debounce: int,
                     sync_every: int, debounce_s: float | None) -> tuple[float, str, int]:
    laptop, phone, space = await two_devices(url, work)
    doc = laptop.doc(space, "text")
    text = doc.get("t", type=pycrdt.Text)
    if trace.start:
        text.insert(0, trace.start)
        laptop.flush()
        await laptop.sync()
        await phone.sync()
    start = time.perf_counter()
    if debounce_s is None:
        ops = await _type_every(laptop, text, trace, debounce, sync_every)
    else:
        ops = await _type_debounced(laptop, text, trace, debounce_s)
    ops += laptop.flush()
    await laptop.sync()
    await phone.sync()
    elapsed = time.perf_counter() - start
    result = str(phone.doc(space, "text").get("t", type=pycrdt.Text))
    await laptop.close()
    await phone.close()
    return elapsed, result, ops


async def _type_every(laptop: Device, text: pycrdt.Text, trace: Trace, debounce: int,
                      sync_every: int) -> int:
    """Type the trace; seal an op every ``debounce`` edits, sync every ``sync_every`` ops."""
    doc = text.doc
    ops = 0
    for i, edit in enumerate(trace.edits, 1):
        with doc.transaction():
            apply_edit(text, edit)
        if i % debounce == 0:
            ops += laptop.flush()
            if ops % sync_every == 0:
                await laptop.sync()
    return ops


async def _type_debounced(laptop: Device, text: pycrdt.Text, trace: Trace,
                          debounce_s: float) -> int:
    """Type the trace; sync (which flushes) once ``debounce_s`` has passed since
    the first edit after the last sync: the background runner's window."""
    doc = text.doc
    ops = 0
    window_start: float | None = None
    for edit in trace.edits:
        with doc.transaction():
            apply_edit(text, edit)
        now = time.perf_counter()
        if window_start is None:
            window_start = now
        elif now - window_start >= debounce_s:
            ops += (await laptop.sync()).pushed
            window_start = None
    return ops


#: The process id of the relay :func:`relay_process` started last (for CPU readings).
RELAY_PID = [0]


@contextlib.contextmanager
def relay_process(work: Path, max_request_bytes: int | None = None) -> Iterator[str]:
    """A real relay (``sddsf relay serve``, SQLite) on a free loopback port, with
    rate limits lifted for benchmarks (and requests of up to 64 MiB unless
    ``max_request_bytes`` is given). Yields its URL; its pid is in ``RELAY_PID``."""
    port = free_port()
    env = dict(os.environ, SDDSF_RELAY_KEY_FILE=str(work / "relay.key"),
               SDDSF_RELAY_RATE_OPS_PER_S="1e9", SDDSF_RELAY_RATE_OPS_BURST="1e9",
               SDDSF_RELAY_RATE_DEVICE_PER_S="1e6", SDDSF_RELAY_RATE_DEVICE_BURST="1e6",
               SDDSF_RELAY_MAX_REQUEST_BYTES=str(max_request_bytes or 64 << 20))
    relay = subprocess.Popen([sys.executable, "-m", "sddsf", "relay", "serve", "--db",
                              f"sqlite:///{work / 'relay.db'}", "--port", str(port)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    RELAY_PID[0] = relay.pid
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        relay.terminate()
        relay.wait(timeout=10)


def relay_storage(db: Path) -> dict[str, Any]:
    """What the relay stored: its database's bytes on disk (after a checkpoint
    folds the write-ahead log in; and after VACUUM, without free pages) against
    the bytes of the envelopes it still holds (pruned ones have no row), and
    the bytes of each table and index (SQLite's ``dbstat``)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        count = conn.execute("SELECT count(*) FROM ops").fetchone()[0]
        held, envelopes = conn.execute(
            "SELECT count(*), coalesce(sum(length(envelope)), 0) FROM op_envelopes").fetchone()
        free_pages, page = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                            for p in ("freelist_count", "page_size"))
        tables = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name "
                                   "ORDER BY 2 DESC").fetchall())
        disk = db.stat().st_size
        conn.execute("VACUUM")
    return {"ops": count, "envelopes_held": held, "envelope_bytes": envelopes,
            "db_bytes": disk, "db_bytes_vacuumed": db.stat().st_size,
            "free_bytes": free_pages * page,
            "db_bytes_per_op": disk / max(count, 1),
            "envelope_bytes_per_held_op": envelopes / max(held, 1),
            "bytes_by_table": tables}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", type=Path, default=TRACE,
                    help="an editing trace (JSON, gzipped; default: automerge-paper)")
    ap.add_argument("--edits", type=int, default=None, help="replay only the first N edits")
    ap.add_argument("--debounce", type=int, default=100)
    ap.add_argument("--sync-every", type=int, default=200)
    ap.add_argument("--debounce-ms", type=float, default=None,
                    help="sync this long after a window's first edit (the runner's policy) "
                         "instead of every --debounce edits")
    args = ap.parse_args()
    trace = load(args.trace, args.edits)
    base_s, base_text = baseline(trace)
    with tempfile.TemporaryDirectory() as tmp:
        with relay_process(Path(tmp)) as url:
            ours_s, ours_text, ops = asyncio.run(sddsf_run(
                url, Path(tmp), trace, args.debounce, args.sync_every,
                None if args.debounce_ms is None else args.debounce_ms / 1000))
        storage = relay_storage(Path(tmp) / "relay.db")
    report = {
        "trace": args.trace.name, "edits": len(trace.edits), "complete": trace.complete,
        "debounce_edits_per_op": None if args.debounce_ms else args.debounce,
        "debounce_ms": args.debounce_ms, "ops": ops,
        "baseline_s": base_s, "sddsf_s": ours_s, "ratio": ours_s / base_s,
        # A partial replay has no endContent to compare with: its end is the
        # loader's own replay of the same edits over a Python str.
        "baseline_matches_end": base_text == trace.end,
        "sddsf_matches_end": ours_text == trace.end,
        "relay_storage": storage,
    }
    print(json.dumps(report, indent=2))
    if not (report["baseline_matches_end"] and report["sddsf_matches_end"]):
        raise SystemExit("a replayed text does not match the trace's end")


if __name__ == "__main__":
    main()
