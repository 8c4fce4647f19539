"""Long crash loops: kill -9 the relay and device processes N times, then check
everything (see tests/adversarial/_procs.py for what one run does and checks).

Usage:
    python scripts/crash_loop.py --backend sqlite|postgres --iterations 50 --seed 1
                                 [--runs 1] [--json]

Each run uses a fresh database (a temporary SQLite file, or a new PostgreSQL
database on ``SDDSF_TEST_POSTGRES_DSN``, dropped afterwards). Prints the figures
of each run and a total; exits 1 if any checker found a violation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "tests" / "adversarial")]

from _procs import run_on_backend  # noqa: E402 - after the path set-up


async def one_run(backend: str, iterations: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sddsf-crash-") as tmp:
        result = await run_on_backend(Path(tmp), backend, iterations=iterations, seed=seed)
    return result.figures()


def main() -> None:
    ap = argparse.ArgumentParser(description="kill -9 crash loops with checkers")
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--iterations", type=int, default=50, help="kills per run")
    ap.add_argument("--seed", type=int, default=1, help="seed of the first run")
    ap.add_argument("--runs", type=int, default=1, help="runs (seeds seed, seed+1, ...)")
    ap.add_argument("--json", action="store_true", help="one JSON object per run")
    args = ap.parse_args()
    totals = {"runs": 0, "iterations": 0, "relay_kills": 0, "client_kills": 0,
              "log_ops": 0, "acked_ops": 0, "resent_acks": 0, "violations": 0, "seconds": 0.0}
    for run in range(args.runs):
        figures = asyncio.run(one_run(args.backend, args.iterations, args.seed + run))
        print(json.dumps(figures) if args.json else json.dumps(figures, indent=2), flush=True)
        totals["runs"] += 1
        for key in ("iterations", "relay_kills", "client_kills", "log_ops", "acked_ops",
                    "resent_acks", "seconds"):
            totals[key] += figures[key]
        totals["violations"] += len(figures["violations"])
    totals["seconds"] = round(float(totals["seconds"]), 1)
    print(json.dumps({"backend": args.backend, "total": totals}))
    if totals["violations"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
