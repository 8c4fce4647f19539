"""bench/session_open.py with two runs: it opens sessions against its real
relay, and the added delay shows in what it reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "session_open.py"


def test_it_times_session_openings_with_the_added_delay() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--runs", "2", "--rtt-ms", "15"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["runs"] == 2 and report["rtt_ms"] == 15
    # At least the two sequential round trips of an opening and the read's.
    assert 3 * 15 <= report["open_and_read_min_ms"] <= report["open_and_read_ms"]
