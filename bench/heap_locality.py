"""Why later edits got slower when updates were merged in between (pycrdt only;
results go to docs/performance.md, "Why later edits were slower").

Types the trace into a pycrdt ``Text``, one transaction per edit, the updates
collected with the document's observer; after every ``--window`` edits it does
the variant's work, then drops the window's updates. Timed: the edits alone
(CPU seconds), and afterwards 200 inserts at the end of the finished document
(each walks every item: the document's layout alone, nothing in between).

Variants:
    none          nothing between windows
    merge_keep    pycrdt.merge_updates of the window, the output kept (as an op)
    merge_drop    the same, the output dropped at once
    apply_doc     the window applied to a throwaway Doc instead
    tiny          merge_updates of the window's first two updates only
    merge_thread  merge_keep, with the merge run on another (persistent) thread
    malloc_free   no pycrdt: 3,000 C malloc() of 24-200 bytes, then free()

Each run is a fresh process; variants alternate; medians are printed.

Usage:
    python bench/heap_locality.py [--trace PATH.json.gz] [--edits N] [--runs 3]
                                  [--variants none,merge_keep,merge_thread]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import ctypes.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pycrdt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trace_sync import TRACE, apply_edit, load

VARIANTS = ("none", "merge_keep", "merge_drop", "apply_doc", "tiny", "merge_thread",
            "malloc_free")


def _malloc_free() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    sizes = [(24, 200, 64, 136, 40, 120)[i * 5 % 6] for i in range(3000)]  # mixed sizes

    def churn() -> None:
        for p in [libc.malloc(s) for s in sizes]:
            libc.free(p)
    return churn


def one_run(edits: list[tuple[int, int, str]], variant: str, window: int) -> dict[str, float]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    buf: list[bytes] = []
    doc.observe(lambda e: buf.append(bytes(e.update)))
    kept: list[bytes] = []
    pool = concurrent.futures.ThreadPoolExecutor(1)
    churn = _malloc_free() if variant == "malloc_free" else None
    typing = 0.0
    for i in range(0, len(edits), window):
        start = time.process_time()
        for edit in edits[i:i + window]:
            with doc.transaction():
                apply_edit(text, edit)
        typing += time.process_time() - start
        if variant == "merge_keep":
            kept.append(pycrdt.merge_updates(*buf))
        elif variant == "merge_drop":
            pycrdt.merge_updates(*buf)
        elif variant == "apply_doc":
            scratch: pycrdt.Doc[Any] = pycrdt.Doc()
            for u in buf:
                scratch.apply_update(u)
        elif variant == "tiny" and len(buf) > 1:
            pycrdt.merge_updates(buf[0], buf[1])
        elif variant == "merge_thread":
            kept.append(pool.submit(pycrdt.merge_updates, *buf).result())
        elif churn is not None:
            churn()
        buf.clear()
    pool.shutdown()
    end = len(text)
    start = time.process_time()
    for k in range(200):  # each insert at the end walks every item
        with doc.transaction():
            text.insert(end + k, "x")
    return {"typing_s": typing, "walk_ms": (time.process_time() - start) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--edits", type=int, default=None)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--variants", default="none,merge_keep,merge_thread")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a single run, in a child process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(load(args.trace, args.edits).edits, args.one, args.window)))
        return
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        raise SystemExit(f"unknown variants: {sorted(unknown)}; known: {VARIANTS}")
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for _ in range(args.runs):
        for v in variants:
            cmd = [sys.executable, __file__, "--trace", str(args.trace), "--window",
                   str(args.window), "--one", v]
            if args.edits is not None:
                cmd += ["--edits", str(args.edits)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[v].append(json.loads(out))
    report = {v: {k: {"median": round(statistics.median(r[k] for r in rs), 3),
                      "runs": [round(r[k], 3) for r in rs]} for k in rs[0]}
              for v, rs in runs.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
