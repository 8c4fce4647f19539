"""A trio event loop in its own thread, and the calls that cross to and from asyncio.

py-libp2p runs on trio; SDDSF's client runs on asyncio. :class:`TrioThread` runs
``trio.run`` in a daemon thread and carries calls both ways without blocking
either loop:

* asyncio -> trio, :meth:`TrioThread.call`: the coroutine function is started
  in the trio thread's call nursery through the trio token
  (``run_sync_soon``), and its outcome is handed back with
  ``loop.call_soon_threadsafe``. No thread waits: a hundred calls in flight
  hold no executor threads. Cancelling the asyncio caller cancels the trio task.
* trio -> asyncio, :meth:`TrioThread.post` (fire-and-forget callbacks such as
  "a message arrived") and :meth:`TrioThread.call_asyncio` (await an asyncio
  coroutine from trio: ``run_coroutine_threadsafe`` and a trio event set from
  the future's done-callback; the trio loop keeps running meanwhile).

Errors crossing towards asyncio are SDDSF errors: an ``SddsfError`` raised in
trio arrives as itself; the loop having stopped (or stopping while the call
runs) arrives as :class:`~sddsf.errors.UnavailableError`; anything else is a
bug and arrives as :class:`~sddsf.errors.InternalError` chained to the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from sddsf.errors import InternalError, SddsfError, UnavailableError, UsageError

__all__ = ["TrioMain", "TrioThread"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

#: The trio-side body, ``main(stop: trio.Event, task_status)``: it calls
#: ``task_status.started()`` once ready, runs until ``stop`` is set, then shuts
#: down gracefully and returns. (Typed loosely: trio's ``TaskStatus`` is spelt
#: differently by trio itself and by the trio-typing stubs libp2p installs.)
TrioMain = Callable[..., Awaitable[None]]


def _stopped() -> UnavailableError:
    return UnavailableError("the peer-to-peer node is stopped")


def _translate(exc: BaseException) -> BaseException:
    # trio nurseries wrap what their tasks raise in exception groups.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, SddsfError):
        return exc
    if isinstance(exc, trio.Cancelled | trio.RunFinishedError):
        return _stopped()
    if isinstance(exc, Exception):
        err = InternalError(f"unexpected error in the peer-to-peer node: "
                            f"{type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return err
    return exc  # KeyboardInterrupt, SystemExit: not ours to translate


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    # Runs on the asyncio loop. The caller may have been cancelled meanwhile.
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class TrioThread:
    """One trio loop in a daemon thread, driven from an asyncio loop.

    Use from asyncio: ``await start(main)``, then :meth:`call` as often as
    needed, then ``await stop()``. Use from trio (inside ``main`` and the calls):
    :meth:`post` and :meth:`call_asyncio`.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._calls: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._closing = False

    @property
    def name(self) -> str:
        """The thread's name."""
        return self._name

    @property
    def started(self) -> bool:
        """True once :meth:`start` was called (a TrioThread runs at most once)."""
        return self._thread is not None

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and the start of :meth:`stop`."""
        thread = self._thread
        return (self._calls is not None and not self._closing
                and thread is not None and thread.is_alive())

    async def start(self, main: TrioMain) -> None:
        """Start the thread and return once ``main`` reported ready.

        Args:
            main: The trio body (see :data:`TrioMain`).

        Raises:
            UsageError: already started.
            SddsfError: what ``main`` raised before it was ready (translated).
        """
        if self._thread is not None:
            raise UsageError("this trio thread was already started")
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(main, ready),
                                        name=self._name, daemon=True)
        self._thread.start()
        await ready

    def _run(self, main: TrioMain, ready: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None  # noqa: S101 -- set by start() before the thread
        try:
            trio.run(self._root, main, ready)
        except BaseException as exc:  # reported to the waiting caller
            _log.debug("trio thread %s ended with %r", self._name, exc)
            self._post_settle(ready, None, _translate(exc))
        else:
            self._post_settle(ready, None, _stopped())

    @staticmethod
    def _post_settle(fut: asyncio.Future[Any], result: Any,
                     exc: BaseException | None) -> None:
        # To the loop of whoever awaits ``fut`` (a caller may use another loop
        # than start()'s). A closed loop raises RuntimeError: nobody is waiting.
        with contextlib.suppress(RuntimeError):
            fut.get_loop().call_soon_threadsafe(_settle, fut, result, exc)

    async def _root(self, main: TrioMain, ready: asyncio.Future[None]) -> None:
        self._stop = stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        if self._closing:  # stop() ran before the token existed: it could not signal
            stop.set()
        async with trio.open_nursery() as root:
            await root.start(main, stop)
            # Calls run only while main is up: they start after it is ready and
            # are cancelled (UnavailableError to their callers) when stop is set.
            async with trio.open_nursery() as calls:
                self._calls = calls
                # A stop() that came during start-up fails start() too.
                self._post_settle(ready, None, _stopped() if stop.is_set() else None)
                await stop.wait()
                calls.cancel_scope.cancel()

    async def stop(self) -> None:
        """Ask ``main`` to shut down, then wait for the thread to end.

        Idempotent; safe to call when :meth:`start` failed or never ran.

        Raises:
            Nothing of its own.
        """
        self._closing = True  # before reading the token: see _root
        token, stop, thread = self._token, self._stop, self._thread
        if token is not None and stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(stop.set)
        if thread is not None and thread.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` in the trio thread and return its result.

        Args:
            fn: A trio coroutine function.
            *args: Its arguments.

        Returns:
            What ``fn`` returned.

        Raises:
            UnavailableError: the loop is stopped or stops during the call.
            SddsfError: what ``fn`` raised (other exceptions become InternalError).
        """
        token, calls, loop = self._token, self._calls, asyncio.get_running_loop()
        if token is None or calls is None or self._closing:
            raise _stopped()
        fut: asyncio.Future[T] = loop.create_future()
        scope = trio.CancelScope()

        async def runner() -> None:
            try:
                with scope:
                    result = await fn(*args)
            except Exception as exc:  # handed to the caller, never raised here
                self._post_settle(fut, None, _translate(exc))
                return
            except BaseException:  # trio.Cancelled: the loop is stopping
                self._post_settle(fut, None, _stopped())
                raise
            if scope.cancelled_caught:
                self._post_settle(fut, None, _stopped())
            else:
                self._post_settle(fut, result, None)

        def spawn() -> None:
            # Runs in the trio thread; must not raise (that would crash trio.run).
            try:
                calls.start_soon(runner)
            except RuntimeError:  # the nursery is closed: the loop is stopping
                self._post_settle(fut, None, _stopped())

        try:
            token.run_sync_soon(spawn)
        except trio.RunFinishedError:
            raise _stopped() from None
        try:
            return await fut
        except asyncio.CancelledError:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)
            raise

    # -- trio side ---------------------------------------------------------

    def post(self, callback: Callable[..., object], *args: Any) -> None:
        """From trio: schedule ``callback(*args)`` on the asyncio loop; do not wait.

        Exceptions the callback raises are logged by the asyncio loop.

        Args:
            callback: A plain (non-async) function.
            *args: Its arguments.

        Raises:
            Nothing: a closed asyncio loop drops the call.
        """
        assert self._loop is not None  # noqa: S101 -- only called after start()
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            _log.debug("asyncio loop closed; dropped a callback")

    async def call_asyncio(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """From trio: run ``await fn(*args)`` on the asyncio loop and wait for it.

        The trio loop keeps running while the coroutine runs. Cancelling the
        trio caller cancels the asyncio task.

        Args:
            fn: An asyncio coroutine function.
            *args: Its arguments.

        Returns:
            What ``fn`` returned.

        Raises:
            UnavailableError: the asyncio loop is closed.
            Exception: what ``fn`` raised, unchanged.
        """
        assert self._loop is not None  # noqa: S101 -- only called after start()
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        try:
            cf = asyncio.run_coroutine_threadsafe(_await(fn, *args), self._loop)
        except RuntimeError:
            raise UnavailableError("the asyncio loop is closed") from None
        cf.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            cf.cancel()
            raise
        return cf.result()


async def _await(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await fn(*args)
