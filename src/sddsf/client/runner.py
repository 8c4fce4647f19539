"""Background sync: push on change (debounced), live pull over the device's
transport (``Transport.subscribe``: the relay's WebSocket, or any other
transport), reconnect with exponential backoff and jitter, and a periodic full
check.

The runner never applies what the live channel says directly: an op or resync
notice only wakes :meth:`Device.sync`, which pulls and verifies like any other
sync (the live channel is a hint; the signed log is the truth).

Nothing stops it but :meth:`Runner.stop`: ``429`` waits for the relay's
``Retry-After`` and outages back off (one :class:`~sddsf.client.retry.RetryPolicy`
with the CLI); verification failures and the application's own callback errors
(observers, ``on_sync``) go to ``on_error``; any other exception is logged,
retried with backoff, and raised again by :meth:`Runner.stop`. Open the device
with ``lock="operation"`` so that other processes can use its home between syncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sddsf.client.engine.common import SyncReport
from sddsf.client.hosts import SyncHost
from sddsf.client.retry import RetryPolicy, Sleep
from sddsf.client.transport.base import AlertNotice, SubscribedNotice
from sddsf.errors import SddsfError, UsageError

log = logging.getLogger("sddsf.client")

__all__ = ["Runner", "RunnerSettings"]


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """Timing of the background runner (seconds)."""

    debounce_s: float = 0.25  # wait this long after an edit before pushing
    full_check_s: float = 60.0  # a full sync at least this often, even when idle
    backoff_min_s: float = 0.5
    backoff_max_s: float = 60.0


@dataclass
class Runner:
    """Keeps one device in sync until :meth:`stop` is called."""

    #: The device it syncs (open it with ``lock="operation"``).
    device: SyncHost
    #: Debounce, full-check period and backoff bounds.
    settings: RunnerSettings = field(default_factory=RunnerSettings)
    #: Told each completed sync's report.
    on_sync: Callable[[SyncReport], None] | None = None
    #: Told each error a sync raised (a verification failure, an outage before
    #: its retry) and each error of the application's own callbacks (None: they
    #: are logged as warnings).
    on_error: Callable[[SddsfError], None] | None = None
    #: Syncs completed.
    syncs: int = 0
    # --- live-state hooks (live handles, sddsf.client.live) ---
    #: Told True once the live channel subscribed every space, False when it drops.
    on_live: Callable[[bool], None] | None = None
    #: Whether the live channel is up and subscribed to every space.
    connected: bool = False
    #: Syncs begun (a sync begun after ``connected`` turned True is caught up).
    started: int = 0
    #: How the runner waits (tests pass one that records the waits).
    sleep: Sleep = asyncio.sleep
    #: The first unexpected exception (a bug), raised again by :meth:`stop`.
    failure: BaseException | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _follow: asyncio.Task[None] | None = None  # the live subscription, while it runs
    _following: set[bytes] = field(default_factory=set)  # the spaces it follows

    @property
    def retry(self) -> RetryPolicy:
        """The waits between failed syncs: the CLI's policy, with this runner's bounds."""
        return RetryPolicy(base_s=self.settings.backoff_min_s, max_s=self.settings.backoff_max_s)

    def changed(self) -> None:
        """Call after local edits: they are pushed after the debounce window.

        Raises:
            Nothing of its own.
        """
        self._wake.set()

    async def __aenter__(self) -> Runner:
        await self.start()
        self.changed()  # a first sync at once: push what is pending, pull what is new
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the sync loop and the live channel, as tasks of the running event
        loop; they run until :meth:`stop` (``async with runner:`` starts them and
        asks for a first sync at once).

        Raises:
            Nothing of its own: the loops' errors go to ``on_error`` or are
            logged, retried and raised again by :meth:`stop`.
        """
        self._tasks = [asyncio.create_task(self._sync_loop()),
                       asyncio.create_task(self._live_loop())]

    async def stop(self) -> None:
        """Stop both loops (pending edits stay queued on disk).

        Raises:
            Exception: the first unexpected exception either loop met (it was
                logged and retried when it happened), so that it is not lost.
        """
        self._stop.set()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # kept, raised below
                self.failure = self.failure or exc
        if self.failure is not None:
            raise self.failure

    async def _sync_loop(self) -> None:
        tries = 0  # failed syncs in a row
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.full_check_s)
            self._wake.clear()
            await self.sleep(self.settings.debounce_s)  # batch bursts of edits
            try:
                self.started += 1
                report = await self.device.sync()
            except SddsfError as exc:
                self._report_error(exc)
                wait = self.retry.wait_for(exc, tries + 1)  # 429: Retry-After; 503: backoff
                if wait is None:
                    tries = 0  # a verification failure: reported, state kept
                    continue
            except Exception as exc:  # a bug: logged, retried, raised again by stop()
                _unless_cancelled()
                log.exception("the background sync failed unexpectedly; retrying")
                self.failure = self.failure or exc
                wait = self.retry.backoff(tries + 1)
            else:
                tries = 0
                self.syncs += 1
                await self._subscribe_new()  # a space created or joined since connecting
                self._delivered(report)
                continue
            tries += 1
            await self.sleep(wait)
            self._wake.set()

    def _delivered(self, report: SyncReport) -> None:
        # The application's callbacks: their errors are reported, never fatal.
        for error in report.app_errors:
            self._report_error(error)
        if self.on_sync is not None:
            try:
                self.on_sync(report)
            except Exception as exc:  # the application's error, reported
                error = UsageError(f"on_sync raised {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                self._report_error(error)

    def _report_error(self, exc: SddsfError) -> None:
        if self.on_error is None:
            log.warning("background sync: %s", exc)
            return
        try:
            self.on_error(exc)
        except Exception:  # an error handler that fails is logged, never fatal
            log.exception("on_error raised while reporting %s", exc)

    async def _live_loop(self) -> None:
        tries = 0  # failed connections in a row
        while not self._stop.is_set():
            spaces = [space_id for space_id, _ in self.device.synced_spaces()]
            self._following = set(spaces)
            self._follow = asyncio.create_task(self._follow_spaces(spaces))
            try:
                await self._follow
                tries = 0  # the channel ended normally: reconnect at once
                continue
            except asyncio.CancelledError:
                _unless_cancelled()  # stop() cancels this loop: it ends
                continue  # a new space to follow: subscribe again, at once
            except SddsfError as exc:  # the transport's: outage, revoked, denied, 429
                self._report_error(exc)
                wait = self.retry.wait_for(exc, tries + 1)
                if wait is not None:  # 429: the relay's Retry-After
                    tries += 1
                    await self.sleep(wait)
                    continue
            except Exception as exc:  # a bug: logged, retried, raised again by stop()
                _unless_cancelled()
                log.exception("the live channel failed unexpectedly; reconnecting")
                self.failure = self.failure or exc
            finally:
                self._set_connected(False)
            if self._stop.is_set():
                return
            tries += 1
            await self.sleep(self.retry.backoff(tries))

    async def _follow_spaces(self, spaces: list[bytes]) -> None:
        # One subscription over the device's transport. Every notice is a hint
        # that wakes a sync (pull and verify; never trust the push); alerts go
        # to the events hook.
        waiting = len(spaces)
        self._set_connected(False)
        async for notice in self.device.transport.subscribe(spaces):
            if isinstance(notice, AlertNotice):
                self.device.events.relay_alert(notice)
                continue
            self._wake.set()
            if isinstance(notice, SubscribedNotice):
                waiting -= 1
                self._set_connected(waiting <= 0)
        # Following no space: nothing to wait for (the transport yields nothing).

    async def _subscribe_new(self) -> int:
        # A space created or joined since the subscription began: subscribe
        # again with it (the transport follows a fixed list). Returns how many
        # spaces were new.
        new = [space_id for space_id, _ in self.device.synced_spaces()
               if space_id not in self._following]
        follow = self._follow
        if new and follow is not None and not follow.done():
            follow.cancel()
        return len(new)

    def _set_connected(self, up: bool) -> None:
        if up == self.connected:
            return
        self.connected = up
        if up:
            self._wake.set()  # a sync that begins now catches up with the relay
        if self.on_live is not None:
            try:
                self.on_live(up)
            except Exception:  # the application's callback: logged, never fatal
                log.exception("on_live raised")


def _unless_cancelled() -> None:
    """Re-raise the cancellation of the current task that another exception (e.g.
    the store closing under a sync that was being cancelled) is hiding: a loop
    that is being cancelled must end, not retry."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
