"""Everyday CLI use never strands a device or loses an edit (real ``sddsf`` processes
against a real ``sddsf relay serve`` process).

* Ten ``put`` of 100 KB each, then ``sync``: the queue is larger than one request
  and goes up in several (it used to fail with ``too_large`` on every sync).
* Two shells run ``put`` + ``sync`` loops on one home while ``sync --watch`` runs
  there too: every key is on the device and on a device recovered afterwards, no
  ``chain_fork``, the watcher still runs (they used to fork the chain, lose keys,
  and kill the watcher).
* A process that waits for the home's lock says so on stderr, and gives up after
  ``SDDSF_LOCK_TIMEOUT`` seconds with one error line.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import clientkit  # noqa: F401 - puts tests/relay on sys.path for livekit
import pytest
from livekit import RelayProcess, Relays
from test_cli_homes import (
    CLI_TIMEOUT_S,
    PASS,
    Result,
    Running,
    cli_env,
    failed,
    ok,
    ok_json,
    relay_args,
    spawn,
    succeeded,
)

from sddsf.client.homelock import HomeLock


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("cli-robust-relay")
    started = Relays(work)
    args, env = relay_args(work)
    try:
        yield started.start(*args, env=env)
    finally:
        started.stop_all()


def new_home(relay: RelayProcess, tmp_path: Path, name: str = "a") -> tuple[Path, Path]:
    home, phrase = tmp_path / name, tmp_path / f"{name}-phrase.txt"
    ok(home, "init", "--relay", relay.base_url, "--name", "laptop", "--phrase-out", str(phrase),
       "--insecure-plaintext-key")
    ok(home, "space", "create", "s")
    return home, phrase


def recovered_ls(relay: RelayProcess, tmp_path: Path, phrase: Path) -> dict[str, str]:
    other = tmp_path / "recovered"
    ok(other, "recover", "--relay", relay.base_url, "--phrase-file", str(phrase), "--name",
       "tablet", passphrase=PASS)
    result: dict[str, str] = ok_json(other, "ls", "s", passphrase=PASS)
    return result


def test_a_queue_larger_than_one_request_is_synced(relay: RelayProcess,
                                                   tmp_path: Path) -> None:
    home, phrase = new_home(relay, tmp_path)
    # 10 x 100 KB: the document stays under 1 MiB, the queue is 1.3 MiB of base64
    values = {f"k{i}": chr(ord("a") + i) * 100_000 for i in range(10)}
    for key, value in values.items():
        ok(home, "put", "s", key, value)
    synced = ok_json(home, "sync")
    assert synced["pushed"] == 11 and synced["rejected"] == []  # the space's name + 10
    assert ok_json(home, "status")["pending_ops"] == 0
    assert recovered_ls(relay, tmp_path, phrase) == values


def _loop(home: Path, j: int, rounds: int, results: list[Result]) -> None:
    for i in range(rounds):
        results.append(spawn(home, "put", "s", f"p{j}_{i}", f"v{j}_{i}").result())
        results.append(spawn(home, "sync", "--json").result())


def test_two_processes_and_a_watcher_share_one_home(relay: RelayProcess,
                                                    tmp_path: Path) -> None:
    home, phrase = new_home(relay, tmp_path)
    ok(home, "sync")
    watcher = Running(("sync", "--watch"), subprocess.Popen(
        [sys.executable, "-m", "sddsf", "--home", str(home), "sync", "--watch", "--interval",
         "1.5", "--json"], env=cli_env(), cwd=tmp_path, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    rounds = 8
    results: list[list[Result]] = [[], []]
    try:
        loops = [threading.Thread(target=_loop, args=(home, j, rounds, results[j]))
                 for j in range(2)]
        for t in loops:
            t.start()
        for t in loops:
            t.join(timeout=rounds * 4 * CLI_TIMEOUT_S)
        assert watcher.proc.poll() is None, "sync --watch died while others used the home"
    finally:
        if watcher.proc.poll() is None:
            watcher.proc.send_signal(signal.SIGINT)
        watched = watcher.result()
    for r in results[0] + results[1]:
        out = succeeded(r)
        assert "chain_fork" not in out + r.stderr, (r.args, out, r.stderr)
        if r.args[0] == "sync":
            assert json.loads(out)["rejected"] == [], out
    assert "chain_fork" not in watched.stdout + watched.stderr, watched.stderr
    assert "Traceback" not in watched.stderr and "error:" not in watched.stderr, watched.stderr
    assert watched.stdout.count("pushed") >= 1  # it was syncing all along
    want = {f"p{j}_{i}": f"v{j}_{i}" for j in range(2) for i in range(rounds)}
    assert ok_json(home, "sync")["rejected"] == []
    assert ok_json(home, "ls", "s") == want  # on the writing device
    assert recovered_ls(relay, tmp_path, phrase) == want  # and on a device loaded afterwards


def test_a_waiting_command_says_why_and_gives_up_after_the_timeout(
        relay: RelayProcess, tmp_path: Path) -> None:
    home, _ = new_home(relay, tmp_path)
    lock = HomeLock.for_home(home)
    lock.acquire()  # this test process plays "another sddsf process"
    try:
        waiting = spawn(home, "put", "s", "k", "v")
        line = _stderr_line(waiting, "is using this home")
        assert f"(pid {os.getpid()})" in line and "waiting" in line, line
        lock.release()
        assert "k set" in succeeded(waiting.result())
        lock.acquire()
        env = cli_env(extra={"SDDSF_LOCK_TIMEOUT": "1"})
        gave_up = Running(("put",), subprocess.Popen(
            [sys.executable, "-m", "sddsf", "--home", str(home), "put", "s", "k", "w"], env=env,
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)).result()
    finally:
        lock.release()
    line = failed(gave_up)
    assert "[unavailable]" in line and "giving up" in line and "nothing was changed" in line
    assert ok_json(home, "get", "s", "k") == {"key": "k", "value": "v"}


def _stderr_line(running: Running, marker: str) -> str:
    """The first stderr line of a running command that contains ``marker`` (bounded)."""
    assert running.proc.stderr is not None
    deadline = time.monotonic() + CLI_TIMEOUT_S
    buffer = ""
    with selectors.DefaultSelector() as sel:
        sel.register(running.proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(running.proc.stderr.fileno(), 4096).decode()
            if not chunk:
                break
            buffer += chunk
            for line in buffer.splitlines():
                if marker in line:
                    return line
    raise AssertionError(f"no {marker!r} on stderr: {buffer!r}")
