"""Wall time of everyday CLI commands, each a new process (results go to
docs/performance.md, "Opening a device, and the CLI's offline commands").

A real relay process on loopback (SQLite) and one device home made with
``sddsf init``; then each command runs ``--runs`` times in a row, as a person
or a script would run it, and the report gives the median and the fastest
run in ms:

* ``help``: ``sddsf --help``, the interpreter and the CLI's imports (the floor);
* ``get``, ``ls``, ``put``: the key-value commands, which work offline
  (``put`` stores a pending op; nothing is sent);
* ``sync``: a sync with the relay (the session opening included: a new process
  has none).

The commands run from this tree's ``src`` (``PYTHONPATH``), so a copy of the
bench in another checkout times that checkout's code. Python writes bytecode
caches as an installed package has them (``PYTHONDONTWRITEBYTECODE`` is
dropped), and each command runs once before timing.

Usage:
    python bench/cli_latency.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trace_sync import relay_process


def cli(home: Path, env: dict[str, str], *args: str, stdin: str = "") -> float:
    """Run ``sddsf --home HOME ARGS``; its wall time in seconds (it must succeed)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sddsf", "--home", str(home), *args],
                          input=stdin.encode(), env=env, capture_output=True, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sddsf {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15, help="timed runs of each command")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT / "src")
    with tempfile.TemporaryDirectory() as tmp, relay_process(Path(tmp)) as url:
        home = Path(tmp) / "home"
        cli(home, env, "init", "--relay", url, "--name", "laptop", "--insecure-plaintext-key",
            "--phrase-out", str(Path(tmp) / "phrase"))
        cli(home, env, "space", "create", "notes")
        cli(home, env, "put", "notes", "greeting", "-", stdin="hello")
        commands: dict[str, tuple[list[str], str]] = {
            "help": (["--help"], ""),
            "get": (["get", "notes", "greeting"], ""),
            "ls": (["ls", "notes"], ""),
            "put": (["put", "notes", "counter", "-"], "1"),
            "sync": (["sync"], ""),
        }
        report: dict[str, object] = {"runs": args.runs}
        for name, (argv, stdin) in commands.items():
            cli(home, env, *argv, stdin=stdin)  # bytecode caches, a warm page cache
            times = [cli(home, env, *argv, stdin=stdin) for _ in range(args.runs)]
            report[f"{name}_ms"] = round(statistics.median(times) * 1000, 1)
            report[f"{name}_min_ms"] = round(min(times) * 1000, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
