"""``sddsf unlock`` / ``sddsf lock`` (issue 13 item 14): the store passphrase is
asked once; the key lives in a per-user agent that answers only its own uid,
expires, and is wiped by ``lock``. Real ``sddsf`` processes, a real relay."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_cli_homes as homes
from livekit import RelayProcess
from test_cli_homes import CLI_TIMEOUT_S, PASS, WRONG, Result, cli_env, failed, succeeded

from sddsf.client.agent import record_check

relay = homes.relay  # the module's relay-process fixture
NOBODY = 65534


def run(home: Path, agents: Path, *args: str, passphrase: str | None = None) -> Result:
    """``sddsf --home HOME ARGS`` with its agent directory, stdin closed (no prompt)."""
    proc = subprocess.run([sys.executable, "-m", "sddsf", "--home", str(home), *args],
                          env=cli_env(passphrase, {"SDDSF_AGENT_DIR": str(agents)}),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, check=False)
    return Result(args, proc.returncode, proc.stdout, proc.stderr)


def agent_socket(agents: Path) -> Path:
    found = list(agents.glob("*.sock"))
    assert len(found) == 1, found
    return found[0]


def ask(sock: Path, message: dict[str, object]) -> tuple[bytes, int]:
    """One request to the agent; its raw answer and the agent's pid (SO_PEERCRED)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sock))
        pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        s.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while chunk := s.recv(1024):
            data += chunk
    return data, pid


def ask_as(uid: int, sock: Path, message: dict[str, object]) -> bytes:
    """The agent's answer to a process running as ``uid`` (a forked child)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to uid, ask, report what came back
        code = 0
        try:
            os.close(read)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(str(sock))
                s.sendall(json.dumps(message).encode() + b"\n")
                data = b""
                while chunk := s.recv(1024):
                    data += chunk
            os.write(write, b"answer:" + data)
        except BaseException as exc:  # report, never return into pytest
            os.write(write, f"failed:{exc!r}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def wait_gone(path: Path, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not path.exists()


@pytest.fixture
def agents() -> Iterator[Path]:
    """An agent directory another user can reach (pytest's temp dirs are 0700), so
    that the test of a foreign uid gets as far as the agent."""
    path = Path(tempfile.mkdtemp(prefix="sddsf-agents-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_unlock_once_lock_and_expiry(relay: RelayProcess, tmp_path: Path,
                                     agents: Path) -> None:
    home = tmp_path / "home"
    succeeded(run(home, agents, "init", "--relay", relay.base_url, passphrase=PASS))
    succeeded(run(home, agents, "space", "create", "notes", passphrase=PASS))
    # locked: without a terminal, a command says what to do
    line = failed(run(home, agents, "ls", "notes"))
    assert "sddsf unlock" in line and "SDDSF_PASSPHRASE" in line, line
    # a wrong passphrase unlocks nothing
    line = failed(run(home, agents, "unlock", passphrase=WRONG))
    assert "wrong passphrase" in line, line
    assert not list(agents.glob("*.sock"))

    out = succeeded(run(home, agents, "unlock", "--for", "10m", passphrase=PASS))
    assert "unlocked" in out and "sddsf lock" in out, out
    sock = agent_socket(agents)
    assert stat.S_IMODE(agents.stat().st_mode) == 0o700
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    # commands run without the passphrase now (stdin closed, no SDDSF_PASSPHRASE)
    succeeded(run(home, agents, "put", "notes", "k", "v"))
    assert json.loads(succeeded(run(home, agents, "ls", "notes", "--json"))) == {"k": "v"}
    info = json.loads(succeeded(run(home, agents, "status", "--json")))
    assert info["store_key"] == "passphrase" and info["unlocked_until"].endswith("Z")

    # the agent: key never in its argv or environment, core dumps off
    record = json.loads((home / "storage-key.json").read_text())
    answer, pid = ask(sock, {"op": "get", "check": record_check(record)})
    key_hex = json.loads(answer)["key"]
    assert len(key_hex) == 64
    for name in ("cmdline", "environ"):
        raw = Path(f"/proc/{pid}/{name}").read_bytes()
        assert key_hex.encode() not in raw and PASS.encode() not in raw, name
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    assert any(ln.startswith("Max core file size") and ln.split()[4:6] == ["0", "0"]
               for ln in limits)
    # another key file (a home made anew at the same path) gets nothing
    assert "key" not in json.loads(ask(sock, {"op": "get", "check": "00" * 16})[0])

    # another user gets no answer at all, even with the file permissions opened
    # (SO_PEERCRED is checked, not only the 0600 mode); the owner still does
    os.chmod(agents, 0o755)  # noqa: S103 - opened on purpose: the foreign-uid probe
    os.chmod(sock, 0o666)  # noqa: S103 - likewise
    try:
        other = ask_as(NOBODY, sock, {"op": "get", "check": record_check(record)})
        # it reached the agent (no PermissionError) and got nothing: an empty answer,
        # or the connection closed under it
        assert b"key" not in other, other
        assert other == b"answer:" or b"ConnectionResetError" in other \
            or b"BrokenPipeError" in other, other
    finally:
        os.chmod(sock, 0o600)
        os.chmod(agents, 0o700)
    assert json.loads(ask(sock, {"op": "status"})[0])["expires_ms"] > 0

    # lock: the agent wipes the key and exits; commands ask again
    assert "locked" in succeeded(run(home, agents, "lock"))
    assert wait_gone(sock)
    assert not Path(f"/proc/{pid}").exists() or _is_zombie_or_gone(pid)
    assert "sddsf unlock" in failed(run(home, agents, "ls", "notes"))
    assert "was not unlocked" in succeeded(run(home, agents, "lock"))

    # expiry: an agent with a short time forgets the key by itself
    succeeded(run(home, agents, "unlock", "--for", "1s", passphrase=PASS))
    assert wait_gone(agent_socket(agents))
    assert "sddsf unlock" in failed(run(home, agents, "ls", "notes"))
    # bounds
    line = failed(run(home, agents, "unlock", "--for", "13h", passphrase=PASS))
    assert "12 h" in line, line


def _is_zombie_or_gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_unlock_on_a_home_without_a_passphrase_says_so(relay: RelayProcess,
                                                      tmp_path: Path) -> None:
    home, agents = tmp_path / "home", tmp_path / "agents"
    succeeded(run(home, agents, "init", "--relay", relay.base_url, "--insecure-plaintext-key"))
    line = failed(run(home, agents, "unlock"))
    assert "plaintext" in line and "no passphrase" in line, line
