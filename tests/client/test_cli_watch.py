"""``sddsf sync --watch`` (issue 13 item 15): live over the relay's WebSocket (the
library's runner), one line per change or connection change, never a line per
idle cycle. Real ``sddsf`` processes against a real relay process."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import test_cli_homes as homes
from livekit import RelayProcess, connected_devices
from test_cli_homes import PASS, Running, ok, spawn, succeeded

relay = homes.relay  # the module's relay-process fixture


class Lines:
    """Collects a running command's stdout lines as they come."""

    def __init__(self, running: Running) -> None:
        self.lines: list[str] = []
        assert running.proc.stdout is not None
        stream = running.proc.stdout
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(
            stream.readline, "")), daemon=True)
        self.thread.start()

    def wait_for(self, check: Callable[[str], bool], timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if check(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no such line in {self.lines}")


def test_watch_is_live_and_prints_only_changes(relay: RelayProcess, tmp_path: Path) -> None:
    laptop, tablet, phrase = tmp_path / "laptop", tmp_path / "tablet", tmp_path / "phrase"
    ok(laptop, "init", "--relay", relay.base_url, "--name", "laptop", "--phrase-out",
       str(phrase), "--insecure-plaintext-key")
    ok(laptop, "space", "create", "notes")
    ok(laptop, "sync")
    ok(tablet, "recover", "--relay", relay.base_url, "--phrase-file", str(phrase), "--name",
       "tablet", passphrase=PASS)
    before = asyncio.run(connected_devices(relay))

    watcher = spawn(laptop, "sync", "--watch")
    try:
        out = Lines(watcher)
        out.wait_for(lambda ln: "connected to " + relay.base_url in ln)
        # the live channel is open: the relay counts one more WebSocket subscriber
        deadline = time.monotonic() + 30
        while asyncio.run(connected_devices(relay)) <= before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert asyncio.run(connected_devices(relay)) > before

        # an edit on another device appears, as one line naming what happened
        ok(tablet, "put", "notes", "milk", "2 l", passphrase=PASS)
        ok(tablet, "sync", passphrase=PASS)
        out.wait_for(lambda ln: "received 1 edit" in ln)
        # an edit made here by another command is sent without waiting for a cycle
        ok(laptop, "put", "notes", "eggs", "12")
        out.wait_for(lambda ln: "sent 1 edit" in ln)
    finally:
        watcher.proc.send_signal(signal.SIGINT)
        result = watcher.result()
    succeeded(result)
    lines = [ln for ln in out.lines + result.stdout.splitlines() if ln.strip()]
    # every line is an event: never an idle "pushed 0, pulled 0" per cycle
    assert not any("pushed 0" in ln or "sent 0" in ln or "received 0" in ln
                   for ln in lines), lines
    assert any("stopped" in ln for ln in lines), lines
    assert "Traceback" not in result.stderr
    succeeded(spawn(tablet, "sync", passphrase=PASS).result())
    assert '"eggs": "12"' in succeeded(spawn(tablet, "ls", "notes", "--json",
                                             passphrase=PASS).result())
