"""What one space's prefix reads cost in a device store that holds other
spaces' rows too (results go to docs/performance.md, "The device store's
prefix reads").

A device keeps every space's rows of a kind in one namespace, keyed by the
space id first (the log replica, pending and own ops, document updates), and
syncs and flushes read one space's rows with ``count``, ``keys`` and ``scan``.
This bench fills one namespace of a SQLite device store with ``--rows`` rows
of ``--spaces`` spaces (equal shares) and times each read of the last space's
rows (best of 5 repeats of ``--calls`` calls); ``--matching`` rows belong to
a small extra space in the middle, whose reads are timed too.

Usage:
    python bench/store_reads.py [--rows 20000] [--spaces 2] [--matching 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from sddsf.client.sqlite_store import SqliteStore


def best_us(fn: Callable[[], object], calls: int) -> float:
    return round(min(timeit.repeat(fn, number=calls, repeat=5)) / calls * 1e6, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--spaces", type=int, default=2)
    ap.add_argument("--matching", type=int, default=10)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "device.db", os.urandom(32))
        spaces = [bytes([2 * i]) * 16 for i in range(args.spaces)]
        small = bytes([args.spaces | 1]) * 16  # sorts among the others
        with store.batch() as b:
            for i in range(args.rows):
                b.put("op", spaces[i % args.spaces] + i.to_bytes(8, "big"), b"x" * 100)
            for i in range(args.matching):
                b.put("op", small + i.to_bytes(8, "big"), b"x" * 100)
        out: dict[str, object] = {"rows": args.rows + args.matching, "spaces": args.spaces,
                                  "matching": args.matching}
        for name, space in (("small space", small), ("last space", spaces[-1])):
            n = args.calls if name == "small space" else max(1, args.calls // 50)
            out[name] = {
                "count_us": best_us(partial(store.count, "op", space), n),
                "keys_us": best_us(partial(store.keys, "op", space), n),
                "scan_first_row_us": best_us(partial(store.scan, "op", space, limit=1), n),
            }
        store.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
