"""The seal thread: a thread of the device's own that seals buffered edits
(:meth:`sddsf.client.engine.outbox.Outbox.flush`); docs/performance.md says why."""

from __future__ import annotations

import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["SealThread"]

T = TypeVar("T")


class SealThread:
    """A thread of the device's own that seals buffered edits (:meth:`Outbox.flush`).

    Why a thread: the memory a seal allocates and frees (the Yjs merge decodes
    every update into blocks, then CBOR, AEAD and the store's rows) leaves holes
    in the heap of the thread that did it; a document typed into on that thread
    then places its next items in those holes, scattered, and yrs walks a
    text's items one by one on every edit (``find_position``, from the first
    item), so later edits got slower (docs/performance.md). A thread has a heap
    (arena) of its own in glibc's allocator. The caller waits for the seal:
    nothing runs concurrently with it, as before.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None  # started at first use
        # A device dropped without close() lets its idle thread end too.
        weakref.finalize(self, self._queue.put, None)

    def run(self, work: Callable[[], T]) -> T:
        """``work()`` on the seal thread: its result, or what it raised.

        An interrupt (Ctrl-C) while waiting is raised at once if the work has
        not started (it never will), else once the work ended (it may have
        committed its transaction).
        """
        if self._thread is threading.current_thread():
            return work()  # called by a seal: waiting for itself would never end
        if self._thread is None:
            self._thread = threading.Thread(target=_serve, args=(self._queue,),
                                            name="sddsf-seal", daemon=True)
            self._thread.start()
        future: Future[T] = Future()
        try:
            self._queue.put((work, future))
            return future.result()
        except BaseException as exc:
            if future.cancel() or future.done():
                raise  # never started (and never will), or ended: as raised
            interrupted = exc
        while not future.done():  # running: let it end (it may commit) ...
            with contextlib.suppress(BaseException):
                future.result()
        raise interrupted  # ... then the interrupt

    def close(self) -> None:
        """End the thread once queued work is done (a later :meth:`run` starts another)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


def _serve(jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None]) -> None:
    """The seal thread: run each job until told to stop (None)."""
    while (job := jobs.get()) is not None:
        work, future = job
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(work())
            except BaseException as exc:  # the caller raises it
                future.set_exception(exc)
