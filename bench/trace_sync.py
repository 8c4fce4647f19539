"""The automerge-paper editing trace (259,778 edits) typed on device A, synced
through a real relay to device B (results go to docs/performance.md).

Baseline (same run): the same edits in plain pycrdt, one transaction per edit,
the updates applied directly to a second document.

SDDSF: device A types into a ``Device.doc`` text, one transaction per edit;
every ``--debounce`` edits its buffered updates become one signed, encrypted
op (what the background runner's debounce window does for a fast typist); A
syncs every ``--sync-every`` ops; at the end device B (another home) syncs,
verifying everything, and its text must equal the trace's ``endContent``.

Usage:
    python bench/trace_sync.py [--edits 259778] [--debounce 100] [--sync-every 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pycrdt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sddsf.client.device import Device

TRACE = ROOT.parent / "shared" / "traces" / "automerge-paper.json.gz"


def load(limit: int) -> tuple[list[tuple[int, int, str]], str]:
    with gzip.open(os.environ.get("SDDSF_TRACE", str(TRACE))) as f:
        data = json.load(f)
    edits = [tuple(p) for t in data["txns"] for p in t["patches"]][:limit]
    return edits, data["endContent"]  # type: ignore[return-value]


def apply_edit(text: Any, edit: tuple[int, int, str]) -> None:
    pos, delete, insert = edit
    if delete:
        del text[pos:pos + delete]
    if insert:
        text.insert(pos, insert)


def baseline(edits: list[tuple[int, int, str]]) -> tuple[float, str]:
    start = time.perf_counter()
    a: pycrdt.Doc[Any] = pycrdt.Doc()
    text = a.get("t", type=pycrdt.Text)
    updates: list[bytes] = []
    a.observe(lambda e: updates.append(e.update))
    for edit in edits:
        with a.transaction():
            apply_edit(text, edit)
    b: pycrdt.Doc[Any] = pycrdt.Doc()
    for u in updates:
        b.apply_update(u)
    return time.perf_counter() - start, str(b.get("t", type=pycrdt.Text))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def sddsf_run(url: str, work: Path, edits: list[tuple[int, int, str]], debounce: int,
                     sync_every: int) -> tuple[float, str, int]:
    laptop, _ = await Device.create_account(work / "a", url, "a", passphrase=None,
                                            insecure_plaintext=True)
    space = await laptop.create_space("trace")
    phone = await Device.add_local(laptop, work / "b", "b", passphrase=None,
                                   insecure_plaintext=True)
    await laptop.sync()
    await phone.sync()
    doc = laptop.doc(space, "text")
    text = doc.get("t", type=pycrdt.Text)
    ops = 0
    start = time.perf_counter()
    for i, edit in enumerate(edits, 1):
        with doc.transaction():
            apply_edit(text, edit)
        if i % debounce == 0:
            ops += laptop.flush()
            if ops % sync_every == 0:
                await laptop.sync()
    ops += laptop.flush()
    await laptop.sync()
    await phone.sync()
    elapsed = time.perf_counter() - start
    result = str(phone.doc(space, "text").get("t", type=pycrdt.Text))
    await laptop.close()
    await phone.close()
    return elapsed, result, ops


@contextlib.contextmanager
def relay_process(work: Path, max_request_bytes: int | None = None) -> Iterator[str]:
    """A real relay (``sddsf relay serve``, SQLite) on a free loopback port, with
    rate limits lifted for benchmarks (and requests of up to 64 MiB unless
    ``max_request_bytes`` is given). Yields its URL."""
    port = free_port()
    env = dict(os.environ, SDDSF_RELAY_KEY_FILE=str(work / "relay.key"),
               SDDSF_RELAY_RATE_OPS_PER_S="1e9", SDDSF_RELAY_RATE_OPS_BURST="1e9",
               SDDSF_RELAY_RATE_DEVICE_PER_S="1e6", SDDSF_RELAY_RATE_DEVICE_BURST="1e6",
               SDDSF_RELAY_MAX_REQUEST_BYTES=str(max_request_bytes or 64 << 20))
    relay = subprocess.Popen([sys.executable, "-m", "sddsf", "relay", "serve", "--db",
                              f"sqlite:///{work / 'relay.db'}", "--port", str(port)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--edits", type=int, default=259_778)
    ap.add_argument("--debounce", type=int, default=100)
    ap.add_argument("--sync-every", type=int, default=200)
    args = ap.parse_args()
    edits, end = load(args.edits)
    base_s, base_text = baseline(edits)
    with tempfile.TemporaryDirectory() as tmp, relay_process(Path(tmp)) as url:
        ours_s, ours_text, ops = asyncio.run(sddsf_run(
            url, Path(tmp), edits, args.debounce, args.sync_every))
    full = args.edits >= 259_778
    report = {
        "edits": len(edits), "debounce_edits_per_op": args.debounce, "ops": ops,
        "baseline_s": base_s, "sddsf_s": ours_s, "ratio": ours_s / base_s,
        "baseline_matches_end": (base_text == end) if full else None,
        "sddsf_matches_end": (ours_text == end) if full else None,
        "sddsf_matches_baseline": ours_text == base_text,
    }
    print(json.dumps(report, indent=2))
    if not report["sddsf_matches_baseline"] or (full and not report["sddsf_matches_end"]):
        raise SystemExit("device B's text does not match the trace")


if __name__ == "__main__":
    main()
