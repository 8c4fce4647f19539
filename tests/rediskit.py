"""A throw-away ``redis-server`` for tests: own port, own directory, restartable.

Tests that restart, flush or kill Redis must not touch a server other tests
share, so each gets its own process (no persistence unless asked; an explicit
``SAVE`` writes the snapshot a restart loads). Without the ``redis-server``
binary the test is skipped, or fails when ``SDDSF_REQUIRE_REDIS=1``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_TIMEOUT_S = 10.0


def require_redis_binary() -> str:
    """The path of ``redis-server``, else skip (or fail under SDDSF_REQUIRE_REDIS=1)."""
    found = shutil.which("redis-server")
    if found is None:
        reason = "redis-server is not installed (needed for the Redis edge-state tests)"
        if os.environ.get("SDDSF_REQUIRE_REDIS") == "1":
            pytest.fail(reason + " (SDDSF_REQUIRE_REDIS=1)")
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One ``redis-server`` on 127.0.0.1; :meth:`stop` always ends it."""

    workdir: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart) the server on the same port and wait until it answers.
        It loads ``dump.rdb`` from its directory if a ``SAVE`` wrote one."""
        binary = require_redis_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        with log:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), "--dbfilename", "dump.rdb",
                 "--maxmemory-policy", "noeviction"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            if _answers(self.port):
                return self
            time.sleep(0.02)
        log_text = (self.workdir / "redis.log").read_text(errors="replace")
        self.stop()
        raise AssertionError(f"redis-server did not start:\n{log_text}")

    def kill(self) -> None:
        """kill -9: nothing is saved."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        self.kill()

    def restart(self) -> None:
        """kill -9, then start again on the same port."""
        self.kill()
        self.start()

    def command(self, *args: str) -> bytes:
        """One command over a raw socket (inline protocol); the first reply line."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(" ".join(args).encode() + b"\r\n")
            return s.recv(65536).split(b"\r\n", 1)[0]


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    """A started server, killed afterwards."""
    server = RedisServer(workdir)
    try:
        yield server.start()
    finally:
        server.stop()
