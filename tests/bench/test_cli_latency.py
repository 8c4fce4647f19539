"""bench/cli_latency.py with one timed run of each command: every command it
times succeeds against its real relay, and the report names each of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "cli_latency.py"


def test_every_command_runs_and_is_reported() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--runs", "1"], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["runs"] == 1
    for name in ("help", "get", "ls", "put", "sync"):
        assert 0 < report[f"{name}_min_ms"] <= report[f"{name}_ms"], name
