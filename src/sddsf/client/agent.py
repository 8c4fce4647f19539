"""The unlock agent: one device home's storage key, in memory, for a bounded time.

``sddsf unlock`` derives the storage key from the passphrase once (Argon2id,
0.6-0.9 s) and hands it to an agent process; later commands get the key from
the agent instead of asking again, until it expires or ``sddsf lock`` ends it
(like ``ssh-agent`` or ``bw unlock``).

Where and who:

* one agent per home, listening on a Unix socket ``<agent dir>/<id>.sock``
  where ``<id>`` is a hash of the home's real path; the agent directory is
  ``SDDSF_AGENT_DIR``, else ``$XDG_RUNTIME_DIR/sddsf``, else
  ``<tmp>/sddsf-<uid>``; it must belong to this user with mode 0700 (it is
  created so, and refused otherwise), and the socket is 0600;
* the agent answers a connection only if the peer's uid (``SO_PEERCRED``) is
  its own, and a client trusts an agent only if the agent's uid is its own;
* the key is bound to the home's key file: a request names a digest of the
  wrapped key record, and the agent answers only for that record (a home made
  anew at the same path gets nothing from a stale agent).

What the agent process does to keep the key in memory only: it disables core
dumps and (Linux) marks itself non-dumpable (``PR_SET_DUMPABLE`` 0, so other
processes of the same user cannot ptrace it or read ``/proc/<pid>/mem``); the
key arrives over a pipe (never argv or the environment), lives in one
``bytearray`` that is overwritten with zeros on ``lock``, on expiry and on
SIGTERM/SIGINT, and the process then exits. It never writes the key anywhere.

Protocol: one JSON line per connection each way: ``{"op": "get", "check": HEX}``
-> ``{"key": HEX}``; ``{"op": "status"}`` -> ``{"expires_ms": N}``;
``{"op": "lock"}`` -> ``{"locked": true}`` (then the agent wipes and exits).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import resource
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sddsf.errors import ConfigError, UsageError

__all__ = ["MAX_TTL_S", "MIN_TTL_S", "AgentKeyCache", "AgentStatus", "agent_dir", "lock",
           "record_check", "socket_path", "start_agent", "status"]

MIN_TTL_S: Final = 1
MAX_TTL_S: Final = 12 * 3600
_IO_TIMEOUT_S: Final = 2.0
_START_TIMEOUT_S: Final = 15.0
_MAX_REQUEST: Final = 4096
_PEERCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid
_PR_SET_DUMPABLE: Final = 4


def agent_dir() -> Path:
    """This user's agent directory (created 0700; refused if anyone else could use it).

    Raises:
        ConfigError: the directory belongs to another user or is open to others.
    """
    env = os.environ.get("SDDSF_AGENT_DIR")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if env:
        path = Path(env)
    elif runtime:
        path = Path(runtime) / "sddsf"
    else:
        path = Path(tempfile.gettempdir()) / f"sddsf-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() \
            or stat.S_IMODE(info.st_mode) & 0o077:
        raise ConfigError(f"the agent directory {path} must be a directory of this user with "
                          "mode 0700; fix or remove it (or set SDDSF_AGENT_DIR)")
    return path


def socket_path(home: Path) -> Path:
    """The agent socket of ``home``."""
    digest = hashlib.blake2b(str(home.resolve()).encode("utf-8", "surrogateescape"),
                             digest_size=10).hexdigest()
    return agent_dir() / f"{digest}.sock"


def record_check(record: dict[str, object]) -> str:
    """Digest of a passphrase key record (salt and wrapped key): what the key is bound to."""
    text = f"{record.get('salt')}:{record.get('wrapped')}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


# ------------------------------------------------------------------ client side


def _request(path: Path, message: dict[str, Any]) -> dict[str, Any] | None:
    """Send one request to the agent at ``path``; None when there is no usable agent
    (absent, not ours, or not answering)."""
    try:
        info = path.lstat()
    except OSError:
        return None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(_IO_TIMEOUT_S)
        try:
            s.connect(str(path))
            if _peer_uid(s) != os.getuid():
                return None
            s.sendall(json.dumps(message).encode() + b"\n")
            answer = _read_line(s)
        except OSError:
            return None
    try:
        value = json.loads(answer)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class AgentKeyCache:
    """:class:`sddsf.client.keystore.KeyCache` served by the unlock agent."""

    def get(self, home: Path, record: dict[str, object]) -> bytes | None:
        """The key from the home's agent, if one runs for exactly this key record."""
        try:
            path = socket_path(home)
        except (ConfigError, OSError):
            return None
        answer = _request(path, {"op": "get", "check": record_check(record)})
        if not answer or not isinstance(answer.get("key"), str):
            return None
        try:
            key = bytes.fromhex(answer["key"])
        except ValueError:
            return None
        return key if len(key) == 32 else None


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """A running agent: when it forgets the key."""

    expires_ms: int


def status(home: Path) -> AgentStatus | None:
    """The running agent of ``home``, or None."""
    answer = _request(socket_path(home), {"op": "status"})
    if not answer or not isinstance(answer.get("expires_ms"), int):
        return None
    return AgentStatus(int(answer["expires_ms"]))


def lock(home: Path) -> bool:
    """Make the agent of ``home`` wipe its key and exit; False if none was running."""
    answer = _request(socket_path(home), {"op": "lock"})
    return bool(answer and answer.get("locked"))


def start_agent(home: Path, key: bytes, record: dict[str, object], ttl_s: int) -> AgentStatus:
    """Start the agent of ``home`` holding ``key`` for ``ttl_s`` seconds (replacing
    a running one). The key goes to the agent over a pipe.

    Raises:
        UsageError: ``ttl_s`` outside ``MIN_TTL_S..MAX_TTL_S``.
        ConfigError: the agent did not start.
    """
    if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        raise UsageError(f"the unlock time must be between {MIN_TTL_S} s and "
                         f"{MAX_TTL_S // 3600} h")
    path = socket_path(home)
    lock(home)
    env = {k: v for k, v in os.environ.items()
           if k not in ("SDDSF_PASSPHRASE", "SDDSF_BACKUP_PASSPHRASE",
                        "SDDSF_SHARES_PASSPHRASE")}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "sddsf.client.agent", "--socket", str(path), "--ttl",
         str(ttl_s), "--check", record_check(record)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=env, start_new_session=True, close_fds=True)
    assert proc.stdin is not None and proc.stdout is not None  # noqa: S101 - PIPEs
    try:
        proc.stdin.write(key)
        proc.stdin.close()
        ready = _wait_ready(proc)
    except (OSError, ValueError):
        ready = None
    if ready is None:
        with contextlib.suppress(OSError):
            proc.kill()
        raise ConfigError(f"the unlock agent did not start (socket {path})")
    return AgentStatus(ready)


def _wait_ready(proc: subprocess.Popen[bytes]) -> int | None:
    assert proc.stdout is not None  # noqa: S101 - a PIPE
    deadline = time.monotonic() + _START_TIMEOUT_S
    os.set_blocking(proc.stdout.fileno(), False)
    buffer = b""
    while time.monotonic() < deadline and proc.poll() is None:
        chunk = proc.stdout.read(64)
        if chunk:
            buffer += chunk
            if b"\n" in buffer:
                line = buffer.split(b"\n", 1)[0].decode()
                proc.stdout.close()
                kind, _, value = line.partition(" ")
                return int(value) if kind == "ready" and value.isdigit() else None
        time.sleep(0.02)
    return None


# ------------------------------------------------------------------- agent side


def _peer_uid(conn: socket.socket) -> int:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return int(_PEERCRED.unpack(raw)[1])


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) <= _MAX_REQUEST:
        chunk = conn.recv(1024)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _harden() -> None:
    """No core dump, and (Linux) not dumpable: no ptrace or /proc/<pid>/mem by peers."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


class _Agent:
    def __init__(self, key: bytearray, check: str, expires_ms: int) -> None:
        self.key = key
        self.check = check
        self.expires_ms = expires_ms
        self.done = False

    def wipe(self) -> None:
        for i in range(len(self.key)):
            self.key[i] = 0
        self.done = True

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "get":
            if request.get("check") != self.check:
                return {"error": "another key file"}
            return {"key": self.key.hex()}
        if op == "status":
            return {"expires_ms": self.expires_ms}
        if op == "lock":
            self.wipe()
            return {"locked": True}
        return {"error": "unknown request"}

    def serve_one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(_IO_TIMEOUT_S)
            try:
                if _peer_uid(conn) != os.getuid():
                    return  # another user: no answer at all
                request = json.loads(_read_line(conn))
                reply = self.answer(request if isinstance(request, dict) else {})
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except (OSError, ValueError):
                return


def _serve(path: Path, ttl_s: int, check: str) -> None:
    _harden()
    key = bytearray(32)
    view = memoryview(key)
    got = 0
    while got < 32:
        n = os.readv(sys.stdin.fileno(), [view[got:]])
        if not n:
            raise SystemExit("sddsf agent: no key on stdin")
        got += n
    view.release()
    deadline = time.monotonic() + ttl_s
    agent = _Agent(key, check, time.time_ns() // 1_000_000 + ttl_s * 1000)

    def stop(*_: object) -> None:
        agent.wipe()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    old_umask = os.umask(0o177)  # the socket is created 0600, never wider
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
    finally:
        os.umask(old_umask)
    server.listen(8)
    ours = path.lstat().st_ino  # unlink at exit only while the path is still our socket
    print(f"ready {agent.expires_ms}", flush=True)
    sys.stdout.close()
    try:
        while not agent.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            server.settimeout(min(remaining, 1.0))
            try:
                conn, _ = server.accept()
            except (TimeoutError, InterruptedError):
                continue
            agent.serve_one(conn)
    finally:
        agent.wipe()
        server.close()
        with contextlib.suppress(FileNotFoundError):
            if path.lstat().st_ino == ours:
                path.unlink()


def main(argv: list[str] | None = None) -> None:
    """``python -m sddsf.client.agent --socket PATH --ttl S --check HEX`` (key on stdin)."""
    parser = argparse.ArgumentParser(prog="sddsf-agent")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--ttl", type=int, required=True)
    parser.add_argument("--check", required=True)
    args = parser.parse_args(argv)
    _serve(Path(args.socket), max(MIN_TTL_S, min(args.ttl, MAX_TTL_S)), args.check)


if __name__ == "__main__":
    main()
