"""An exclusive advisory lock on a device home, so that processes take turns.

Two processes that change one home at the same time would both extend the
device's chain from the same head (``chain_fork``), fold each other's document
edits away, and verify the log from stale caches. Every state-changing
operation therefore runs under ``<home>/lock``, an ``flock`` (POSIX) or
``msvcrt.locking`` (Windows) lock that the operating system drops when its
process dies, so a crash never leaves a home locked.

The lock is per process and re-entrant: every :class:`~sddsf.client.device.Device`
of this process on the same home shares one :class:`HomeLock` (``for_home``),
and nested acquisitions only count. A waiter polls; after ``notice_after_s`` it
says once who holds the lock (``on_wait``), and after ``timeout_s`` it gives up
with :class:`~sddsf.errors.UnavailableError` (nothing was changed; try again).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Final

from sddsf.errors import UnavailableError

__all__ = ["DEFAULT_TIMEOUT_S", "LOCK_FILE", "HomeLock", "WaitNotice"]

LOCK_FILE: Final = "lock"
DEFAULT_TIMEOUT_S: Final = 120.0
#: ``on_wait(message)``: called once when a wait lasts longer than the notice delay.
WaitNotice = Callable[[str], None]
_POLL_MIN_S: Final = 0.02
_POLL_MAX_S: Final = 0.25


class HomeLock:
    """The exclusive lock of one device home, shared by this process (re-entrant)."""

    _by_path: ClassVar[dict[str, HomeLock]] = {}
    _registry_guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._depth = 0
        self._guard = threading.Lock()

    @classmethod
    def for_home(cls, home: Path) -> HomeLock:
        """The one lock object of ``home`` in this process."""
        key = str(home.resolve())
        with cls._registry_guard:
            lock = cls._by_path.get(key)
            if lock is None:
                lock = cls._by_path[key] = cls(Path(key) / LOCK_FILE)
            return lock

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self._depth > 0

    def acquire(self, *, timeout_s: float = DEFAULT_TIMEOUT_S, notice_after_s: float = 1.0,
                on_wait: WaitNotice | None = None) -> None:
        """Take the lock, blocking this thread while another process holds it.

        Raises:
            UnavailableError: another process held it for ``timeout_s`` seconds.
        """
        waiter = _Waiter(self, timeout_s, notice_after_s, on_wait)
        while not self._try_enter():
            time.sleep(waiter.next_poll())

    async def acquire_async(self, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                            notice_after_s: float = 1.0,
                            on_wait: WaitNotice | None = None) -> None:
        """:meth:`acquire` for coroutines: the event loop keeps running while it waits."""
        waiter = _Waiter(self, timeout_s, notice_after_s, on_wait)
        while not self._try_enter():
            await asyncio.sleep(waiter.next_poll())

    def release(self) -> None:
        """Undo one acquisition; the last one lets other processes in."""
        with self._guard:
            if self._depth == 0:
                return
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                _unlock(self._fd)

    def holder(self) -> str:
        """Who holds the lock, as far as the lock file says (for messages)."""
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return "another sddsf process"
        return f"another sddsf process (pid {pid})" if pid.isdigit() else \
            "another sddsf process"

    def _try_enter(self) -> bool:
        with self._guard:
            if self._depth > 0:
                self._depth += 1
                return True
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            if not _try_lock(self._fd):
                return False
            self._depth = 1
            # Say who holds it, for the message other processes show while waiting.
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.write(self._fd, f"{os.getpid()}\n".encode())
            return True


class _Waiter:
    """The deadline, the notice and the polling interval of one acquisition."""

    def __init__(self, lock: HomeLock, timeout_s: float, notice_after_s: float,
                 on_wait: WaitNotice | None) -> None:
        self.lock = lock
        self.started = time.monotonic()
        self.timeout_s = timeout_s
        self.notice_after_s = notice_after_s
        self.on_wait = on_wait
        self.poll = _POLL_MIN_S

    def next_poll(self) -> float:
        waited = time.monotonic() - self.started
        if waited >= self.timeout_s:
            raise UnavailableError(
                f"{self.lock.holder()} has been using the device home "
                f"{self.lock.path.parent} for {waited:.0f} s; giving up (nothing was changed; "
                "try again when it is done)")
        if self.on_wait is not None and waited >= self.notice_after_s:
            self.on_wait(f"{self.lock.holder()} is using this home "
                         f"({self.lock.path.parent}); waiting…")
            self.on_wait = None
        self.poll = min(_POLL_MAX_S, self.poll * 1.5)
        return min(self.poll, max(0.0, self.timeout_s - waited) + 0.001)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
