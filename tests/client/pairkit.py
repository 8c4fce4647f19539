"""Driving ``sddsf device add`` / ``device join`` as a person at two terminals does:
live ``sddsf`` processes whose output is read while they run, prompts answered on
stdin, Ctrl-C (SIGINT) sent by process id.

Each process runs in its own session without a controlling terminal, so a hidden
prompt (the passphrase) reads stdin and writes to the process's own streams
instead of the terminal of whoever runs the tests. With ``tty=True`` the
process instead gets a pseudo-terminal of its own as its controlling terminal
and stdin (stdout and stderr stay pipes): prompts that need a terminal appear
there, answers are typed into it, and Ctrl-C is the byte ``\x03`` typed into it,
which the terminal turns into SIGINT for the process, as a keyboard would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from test_cli_homes import CLI_TIMEOUT_S, Result, cli_env

__all__ = ["FINGERPRINT", "SAS_LINE", "Live", "last_error", "wait_for_file", "words_shown"]

#: A device fingerprint as ``sddsf.protocol.identity.fingerprint`` spells it.
FINGERPRINT = re.compile(r"(?<![-0-9A-Z])[2-7A-Z]{4}(?:-[2-7A-Z]{4}){7}(?![-0-9A-Z])")
#: The line with the five words of the short authentication string.
SAS_LINE = re.compile(r"^ {4}([a-z]+(?: [a-z]+){4})\s*$", re.MULTILINE)


def words_shown(text: str) -> list[str]:
    """Every five-word line a screen showed, in order."""
    return [m.group(1) for m in SAS_LINE.finditer(text)]


def last_error(r: Result, returncode: int = 1) -> str:
    """The last stderr line of a command that failed with ``returncode``: its
    ``error: ...`` (or ``aborted`` / ``interrupted`` for 130), and no traceback.
    Pairing commands show the code, QR code and words before it."""
    assert r.returncode == returncode, (r.args, r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines, r
    if returncode == 1:  # after a prompt answered through a pipe, on the prompt's line
        assert "error: " in lines[-1], r.stderr
        return lines[-1][lines[-1].index("error: "):]
    return lines[-1]


def wait_for_file(path: Path, timeout_s: float = CLI_TIMEOUT_S) -> str:
    """The stripped contents of ``path`` once it is written."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


class Live:
    """One running ``sddsf --home HOME ARGS`` whose stdout and stderr are collected
    as they come."""

    def __init__(self, home: Path, *args: str, passphrase: str | None = None,
                 tty: bool = False) -> None:
        self.args = args
        command = [sys.executable, "-m", "sddsf", "--home", str(home), *args]
        self._tty: int | None = None
        self._tty_out: list[bytes] = []
        if tty:
            self._tty, follower = os.openpty()
            # setsid -c: a new session whose controlling terminal is stdin.
            self.proc = subprocess.Popen(
                [shutil.which("setsid") or "/usr/bin/setsid", "-c", *command],
                env=cli_env(passphrase), cwd=home.parent,
                stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            os.close(follower)
        else:
            self.proc = subprocess.Popen(
                command, env=cli_env(passphrase), cwd=home.parent, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._lock = threading.Lock()
        self._readers = [threading.Thread(target=self._pump, args=(s, b), daemon=True)
                         for s, b in ((self.proc.stdout, self._out),
                                      (self.proc.stderr, self._err))]
        if self._tty is not None:
            self._readers.append(threading.Thread(target=self._pump_tty, daemon=True))
        for r in self._readers:
            r.start()

    def _pump_tty(self) -> None:
        assert self._tty is not None
        while True:
            try:
                chunk = os.read(self._tty, 4096)
            except OSError:  # the process closed its terminal (EIO)
                return
            if not chunk:
                return
            with self._lock:
                self._tty_out.append(chunk)

    def _pump(self, stream: IO[bytes] | None, into: list[bytes]) -> None:
        assert stream is not None
        while chunk := stream.read1(4096):  # type: ignore[attr-defined]
            with self._lock:
                into.append(chunk)

    @property
    def stdout(self) -> str:
        with self._lock:
            return b"".join(self._out).decode(errors="replace")

    @property
    def stderr(self) -> str:
        with self._lock:
            return b"".join(self._err).decode(errors="replace")

    @property
    def terminal(self) -> str:
        """What the process wrote to its terminal (``tty=True``)."""
        with self._lock:
            return b"".join(self._tty_out).decode(errors="replace")

    def _text(self, stream: str) -> str:
        return {"err": self.stderr, "out": self.stdout, "tty": self.terminal}.get(stream) or (
            self.stdout + "\n" + self.stderr + "\n" + self.terminal if stream == "any"
            else "")

    def wait_for(self, pattern: str, *, stream: str = "err",
                 timeout_s: float = CLI_TIMEOUT_S) -> re.Match[str]:
        """The first match of ``pattern`` in the stream (``err``, ``out`` or ``any``),
        once it shows up.

        Fails when the process exits (or the time runs out) without showing it."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = re.search(pattern, self._text(stream), re.MULTILINE)
            if found:
                return found
            if self.proc.poll() is not None or time.monotonic() > deadline:
                for r in self._readers:
                    r.join(timeout=5)
                found = re.search(pattern, self._text(stream), re.MULTILINE)
                if found:
                    return found
                raise AssertionError(f"{self.args} never showed {pattern!r} (exit "
                                     f"{self.proc.poll()}):\nstdout: {self.stdout}\n"
                                     f"stderr: {self.stderr}")
            time.sleep(0.05)

    def answer(self, text: str) -> None:
        """Type ``text`` (and Enter) at the prompt."""
        if self._tty is not None:
            os.write(self._tty, text.encode() + b"\r")
            return
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def interrupt(self, *, until_exit_s: float = 20.0) -> None:
        """Press Ctrl-C, again every half second while the process still runs (as a
        person does when nothing happens)."""
        deadline = time.monotonic() + until_exit_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            if self._tty is not None:
                os.write(self._tty, b"\x03")  # the terminal sends SIGINT
            else:
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue

    def result(self, timeout_s: float = CLI_TIMEOUT_S) -> Result:
        """Wait for the exit (killing the process if it overruns); what it did."""
        try:
            self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            for r in self._readers:
                r.join(timeout=5)
            if self._tty is not None:
                os.close(self._tty)
                self._tty = None
        return Result(self.args, self.proc.returncode, self.stdout, self.stderr)
