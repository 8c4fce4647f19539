"""The CLI's pull progress bar: shown on a terminal for long pulls only."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from sddsf.cli import device_cmds


def test_progress_bar_on_a_terminal_for_long_pulls(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(device_cmds, "Console",
                        lambda **_: Console(file=out, force_terminal=True, width=100))
    with device_cmds._pull_progress(enabled=True) as update:
        assert update is not None
        update(b"\x01" * 16, 10, 20)  # short pull: no bar
        update(b"\x02" * 16, 500, 3000)
        update(b"\x02" * 16, 3000, 3000)
    text = out.getvalue()
    assert "pulling 02020202" in text and "3000/3000" in text
    assert "01010101" not in text


def test_no_progress_bar_off_a_terminal_or_with_json() -> None:
    with device_cmds._pull_progress(enabled=True) as update:  # pytest's stderr is no tty
        assert update is None
    with device_cmds._pull_progress(enabled=False) as update:
        assert update is None
