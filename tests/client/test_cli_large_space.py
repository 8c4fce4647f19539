"""A space larger than one relay request, through the real ``sddsf`` command.

Twelve ``sddsf put`` of 120 KB values in one space (1.44 MB, past the wire's
1 MiB decode limit), each its own process against a real ``sddsf relay serve``:
every put must succeed (the local state is stored in pieces, never decoded with
the wire's limit), ``sync`` pushes them (every four puts, so that one push stays
within one relay request), and a second device (recovered from the phrase)
reads every value back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import clientkit  # noqa: F401 - puts tests/relay on sys.path for livekit
import pytest
from livekit import RelayProcess, Relays, relay_env, write_key_file

PASS = "correct horse battery staple"  # noqa: S105 - a test passphrase
VALUE_BYTES = 120_000
VALUES = 12


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    relays = Relays(tmp_path)
    key = write_key_file(tmp_path / "relay.key")
    try:
        yield relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}",
                           env={"SDDSF_RELAY_KEY_FILE": str(key)})
    finally:
        relays.stop_all()


def sddsf(home: Path, *args: str, passphrase: str | None = None) -> str:
    env = {k: v for k, v in relay_env().items()
           if k not in ("SDDSF_PASSPHRASE", "SDDSF_HOME", "SDDSF_DEBUG")}
    if passphrase is not None:
        env["SDDSF_PASSPHRASE"] = passphrase
    done = subprocess.run([sys.executable, "-m", "sddsf", "--home", str(home), *args],
                          env=env, cwd=home.parent, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, (args[:3], done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def value(i: int) -> str:
    return f"{i:04d}" + chr(ord("a") + i % 26) * (VALUE_BYTES - 4)


def test_many_120_kb_puts_past_1_mib_sync_and_a_second_device_reads_them(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone = tmp_path / "laptop", tmp_path / "phone"
    phrase = tmp_path / "phrase.txt"
    sddsf(laptop, "init", "--relay", relay.base_url, "--name", "laptop", "--phrase-out",
          str(phrase), "--insecure-plaintext-key")
    sddsf(laptop, "space", "create", "notes")
    for i in range(VALUES):
        sddsf(laptop, "put", "notes", f"k{i}", value(i))
        if i % 4 == 3:  # one push of four such ops stays within one relay request
            sddsf(laptop, "sync")
    assert json.loads(sddsf(laptop, "get", "notes", f"k{VALUES - 1}", "--json"))["value"] \
        == value(VALUES - 1)
    sddsf(phone, "recover", "--relay", relay.base_url, "--phrase-file", str(phrase),
          "--name", "phone", passphrase=PASS)
    listed = json.loads(sddsf(phone, "ls", "notes", "--json", passphrase=PASS))
    assert listed == {f"k{i}": value(i) for i in range(VALUES)}
    assert sum(len(v) for v in listed.values()) > 1 << 20
    # And the phone's own edit to that space reaches the laptop.
    sddsf(phone, "put", "notes", "from phone", value(99), passphrase=PASS)
    sddsf(phone, "sync", passphrase=PASS)
    sddsf(laptop, "sync")
    assert json.loads(sddsf(laptop, "get", "notes", "from phone", "--json"))["value"] \
        == value(99)
