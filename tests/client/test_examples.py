"""The examples in ``examples/`` run as written, each as its own process, against a
real relay process on loopback, and print what they promise."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "relay"))

from livekit import RelayProcess, Relays, relay_env

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    relays = Relays(tmp_path)
    try:
        yield relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}")
    finally:
        relays.stop_all()


def run_example(name: str, relay: RelayProcess, work: Path) -> list[str]:
    script = EXAMPLES / name
    assert len(script.read_text().splitlines()) < 60  # examples stay short
    out = subprocess.run([sys.executable, str(script), relay.base_url, str(work)],
                         capture_output=True, text=True, timeout=120, check=False,
                         env=relay_env(), cwd=work.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.splitlines()


def test_notes(relay: RelayProcess, tmp_path: Path) -> None:
    lines = run_example("notes.py", relay, tmp_path / "work")
    assert lines[0].startswith("phone: an edit of 'todo' by device ")
    assert lines[1:] == ["laptop sees: buy milk, call mum", "phone sees:  buy milk, call mum"]


def test_vault(relay: RelayProcess, tmp_path: Path) -> None:
    lines = run_example("vault.py", relay, tmp_path / "work")
    assert lines == ["phone reads wifi: correct horse",
                     "phone sees the key's public half: True",
                     "conflict: True [\"laptop's new password\", \"phone's new password\"]",
                     "resolved: True"]


def test_observe(relay: RelayProcess, tmp_path: Path) -> None:
    lines = run_example("observe.py", relay, tmp_path / "work")
    assert "callback: device 'tablet' added" in lines
    assert "stream: device 'tablet' added" in lines
    assert any(line.startswith("callback: space moved to key epoch ") for line in lines)
    assert any(line.startswith("reported: the event callback") for line in lines)
    assert any(line.startswith("stream: edit of 'kv' (") for line in lines)
    assert lines[-1] == "phone reads milk: 2 l"


def test_readme_library_example(relay: RelayProcess, tmp_path: Path) -> None:
    readme = EXAMPLES.parent / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)
    code = next(b for b in blocks if "from sddsf import Device" in b)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False, cwd=tmp_path,
                         env=relay_env({"SDDSF_RELAY": relay.base_url}))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == "the phone got an edit of 'list': milk, eggs\n"


def test_chat(relay: RelayProcess, tmp_path: Path) -> None:
    # Four devices on one loopback address, under the relay's default per-address
    # limits (the example stays within them; a device waits out a 429 anyway).
    lines = run_example("chat.py", relay, tmp_path / "work")
    assert lines == [f"{name} sees: alice: hi | bob: hello | carol: hey"
                     for name in ("alice", "bob", "carol", "carol's phone")]


def test_shared_doc(relay: RelayProcess, tmp_path: Path) -> None:
    lines = run_example("shared_doc.py", relay, tmp_path / "work")
    assert lines == ["bob got: Meet at noon by the river.",
                     "alice offline: Meet at one by the river.",
                     "bob offline: Saturday: Meet at noon by the river.",
                     "alice: Saturday: Meet at one by the river.",
                     "bob: Saturday: Meet at one by the river.",
                     "converged: True"]
