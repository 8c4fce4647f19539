"""A thief who saw the pairing code (a photo of the QR code) joins before the
real device (review finding P1 in docs/reliability.md), through the real
``sddsf`` command against a real ``sddsf relay serve`` process.

What must hold (docs/threat-model.md 5.3, docs/protocol.md section 19):

* both screens show the words right after the key exchange, before either side
  signs or stores anything, so the person compares them while both wait;
* the approving screen names the device that asks to join and shows its key
  fingerprint (the thief's, which the thief's own screen shows too);
* the real device, arriving second, is refused with a clear "someone else used
  this code" error, and that second attempt stops the pairing: even a person
  who is fooled and confirms adds nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import RelayProcess, Relays
from pairkit import FINGERPRINT, SAS_LINE, Live, last_error, wait_for_file, words_shown
from test_cli_homes import failed, ok, ok_json, relay_args, spawn


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("pairing-relay")
    started = Relays(work)
    args, env = relay_args(work)
    try:
        yield started.start(*args, env=env)
    finally:
        started.stop_all()


def test_a_code_thief_who_joins_first_is_shown_and_the_real_device_stops_it(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, thief_home, phone = tmp_path / "laptop", tmp_path / "thief", tmp_path / "phone"
    ok(laptop, "init", "--relay", relay.base_url, "--name", "laptop", "--phrase-out",
       str(tmp_path / "phrase"), "--insecure-plaintext-key")
    code_file = tmp_path / "code"
    approver = Live(laptop, "device", "add", "--code-out", str(code_file), "--timeout", "60")
    thief: Live | None = None
    try:
        code = wait_for_file(code_file)
        # The thief runs an ordinary client with the photographed code, under the
        # name the owner expects, and accepts whatever words it is shown.
        thief = Live(thief_home, "device", "join", code, "--relay", relay.base_url,
                     "--name", "phone", "--yes", "--insecure-plaintext-key")
        approver.wait_for(r"\[y/N\]: $")  # the owner is asked
        # Both screens already show the words: the joiner did not wait for the approval.
        thief_words = thief.wait_for(SAS_LINE.pattern, timeout_s=10).group(1)
        assert words_shown(approver.stderr) == [thief_words], approver.stderr
        # The question names who asks and shows its key fingerprint.
        thief_fp = FINGERPRINT.search(thief.stderr)
        assert thief_fp is not None, thief.stderr
        question = approver.stderr[approver.stderr.rindex(thief_words):]
        assert "'phone'" in approver.stderr and thief_fp.group(0) in approver.stderr, (
            approver.stderr)
        assert question.rstrip().endswith("[y/N]:"), question
        # The real phone arrives second: refused, and it says why.
        line = failed(spawn(phone, "device", "join", code, "--relay", relay.base_url,
                            "--name", "phone", "--yes", "--insecure-plaintext-key").result())
        assert "someone else" in line, line
        # The owner is fooled and confirms: nothing is added all the same.
        approver.answer("y")
        line = last_error(approver.result())
        assert "someone else" in line and "nothing was added" in line, line
        assert "someone else" in last_error(thief.result())
    finally:
        for live in (approver, thief):
            if live is not None and live.proc.poll() is None:
                live.proc.kill()
                live.result()
    rows = ok_json(laptop, "device", "list")
    assert [r["name"] for r in rows] == ["laptop"], rows
    for home in (thief_home, phone):
        assert not (home / "storage-key.json").exists(), home
