"""What merging a debounce window's Yjs updates into one op costs, by window
size: ``pycrdt.merge_updates`` of the whole window in one call against
``sddsf.client.yupdates.merge`` (merges of ``FAN_IN`` at a time, then of their
results), on windows of the automerge-paper trace (one update per edit, as a
device's document records them). Results go to docs/performance.md.

Each figure is the best of ``--repeat`` runs over consecutive windows; the
output says whether both merges gave the same bytes.

Usage:
    python bench/merge_cost.py [--trace PATH.json.gz] [--edits 40000]
                               [--windows 100,1000,5000,20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pycrdt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trace_sync import TRACE, apply_edit, load

from sddsf.client import yupdates


def typed_updates(trace_path: Path, edits: int) -> list[bytes]:
    """One update per edit, in order, as a document's observer records them."""
    trace = load(trace_path, edits)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for edit in trace.edits:
        with doc.transaction():
            apply_edit(text, edit)
    return updates


def best_us(merge: Callable[[Sequence[bytes]], bytes], windows: list[list[bytes]],
            repeat: int) -> float:
    """Best of ``repeat`` runs, in µs per window."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for window in windows:
            merge(window)
        best = min(best, (time.perf_counter() - start) / len(windows))
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--edits", type=int, default=40000)
    ap.add_argument("--windows", default="100,1000,5000,20000")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    updates = typed_updates(args.trace, args.edits)
    rows = []
    for size in (int(w) for w in args.windows.split(",")):
        windows = [updates[i:i + size] for i in range(0, len(updates) - size + 1, size)]
        flat = best_us(lambda w: pycrdt.merge_updates(*w), windows, args.repeat)
        tree = best_us(yupdates.merge, windows, args.repeat)
        same = all(yupdates.merge(w) == pycrdt.merge_updates(*w) for w in windows)
        rows.append({"window_edits": size, "windows": len(windows), "flat_us": round(flat),
                     "tree_us": round(tree), "flat_over_tree": round(flat / tree, 2),
                     "same_bytes": same})
    print(json.dumps({"edits": len(updates), "fan_in": yupdates.FAN_IN, "rows": rows},
                     indent=2))


if __name__ == "__main__":
    main()
