"""Live documents: an application's own ``pycrdt.Doc`` kept in sync, provider-style.

``async with device.live(space, "notes", doc=my_doc) as handle:`` binds the
application's document to the device's copy of that document:

* **Binding.** The state this device stored is applied into ``my_doc``; what
  ``my_doc`` held that the device did not becomes an edit of this device. From
  then on the two are kept equal by Yjs updates in both directions (each
  direction guarded, so an update is never echoed back).
* **Local edits** (any transaction on ``my_doc``) are captured by an observer and
  pushed by the device's background sync after its batching window (50 ms by
  default): no ``Runner.changed()`` call is needed.
* **Remote edits** arrive as the WebSocket wakes a verified sync (the runner's
  rule: the live channel is a hint, the signed log is the truth) and are applied
  into ``my_doc``; :meth:`Device.changes` yields them as ``RemoteChange``.
* **Status.** ``handle.connected`` (the live channel is up and subscribed),
  ``handle.synced`` (awaitable: a sync that began after the channel came up has
  finished, so the handle has caught up with the relay), ``handle.on_status(cb)``
  and ``async for status in handle.statuses()``.

Every live handle of one device shares one :class:`~sddsf.client.runner.Runner`
(started by the first handle, stopped by the last), so retries follow the one
:class:`~sddsf.client.retry.RetryPolicy` (``Retry-After`` on 429, backoff with
jitter on 503 and outages). Do not run another Runner on the same device.

Errors never stop the handle: sync failures, the application's observers that
raise while a remote edit is applied, and status callbacks that raise go to
``device.on_error`` callbacks (or the log).

If the device drops its copy of the document (it re-derived the space from the
log, or refused an edit too large to sync), the handle binds to the new copy and
applies it into ``my_doc`` in one direction only: the application's document
may still hold the dropped state, which must never come back as an edit of this
device. ``on_error`` is told; replace ``my_doc`` to be exact.

Threads: the device and its copy live on the event loop's thread. ``my_doc``
may be edited from another thread (``sddsf.sync_api``): its updates are handed
to the loop, and remote updates are applied under :attr:`LiveDoc.lock`, which
the other thread holds while it edits.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pycrdt

from sddsf.client.runner import Runner, RunnerSettings
from sddsf.errors import SddsfError, UsageError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sddsf.client.engine.common import SyncReport
    from sddsf.client.hosts import SyncHost

__all__ = ["LIVE_SETTINGS", "LiveDoc", "LiveStatus", "SyncedFlag"]

#: The background sync of live handles: a 50 ms batching window after an edit.
LIVE_SETTINGS = RunnerSettings(debounce_s=0.05, full_check_s=60.0, backoff_min_s=0.5,
                               backoff_max_s=60.0)
_EMPTY_UPDATE = 2  # a Yjs v1 update with no structs and no deletions is 2 bytes
_STATUS_MAX = 64  # statuses an unread iterator keeps (the newest)


@dataclass(frozen=True, slots=True)
class LiveStatus:
    """The state of a live handle: channel up, and caught up with the relay.

    Attributes:
        connected: the live channel to the relay is up and subscribed.
        synced: a sync that began after the channel came up has finished.
    """

    connected: bool
    synced: bool


class SyncedFlag:
    """``await handle.synced`` waits until the handle has caught up with the relay;
    ``handle.synced.is_set()`` tells without waiting (cleared while disconnected)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def is_set(self) -> bool:
        """Whether the handle is caught up now.

        Returns:
            True from the end of a sync that began after the live channel came
            up, until the channel drops or the handle closes.

        Raises:
            Nothing of its own.
        """
        return self._event.is_set()

    async def wait(self) -> bool:
        """Wait until the handle is caught up (at once if it is now).

        Returns:
            True (bound it with ``asyncio.timeout`` to give up).

        Raises:
            Nothing of its own.
        """
        return await self._event.wait()

    def __await__(self) -> Any:
        return self.wait().__await__()

    def _set(self, value: bool) -> None:
        if value:
            self._event.set()
        else:
            self._event.clear()


class _Session:
    """The background sync one device's live handles share."""

    def __init__(self, device: SyncHost, settings: RunnerSettings) -> None:
        self.device = device
        self.handles: list[LiveDoc] = []
        self.caught_up = False
        self._threshold = 0  # syncs begun before the channel came up
        self.runner = Runner(device, settings, on_sync=self._synced, on_error=self._failed,
                             on_live=self._live)

    def _live(self, up: bool) -> None:
        self._threshold = self.runner.started
        if not up:
            self.caught_up = False
        for h in list(self.handles):
            h._status_changed()

    def _synced(self, report: SyncReport) -> None:
        self._check_attached()
        if self.runner.connected and self.runner.started > self._threshold and \
                not self.caught_up:
            self.caught_up = True
            for h in list(self.handles):
                h._status_changed()

    def _failed(self, error: SddsfError) -> None:
        self.device.events.error(error)
        self._check_attached()

    def _check_attached(self) -> None:
        for h in list(self.handles):
            h._check_attached()


_sessions: weakref.WeakKeyDictionary[SyncHost, _Session] = weakref.WeakKeyDictionary()


async def stop_live(device: object) -> None:
    """Stop ``device``'s live background sync and unbind its handles.

    The device's hook: leaving ``async with device:`` calls it before
    ``device.close()``. Applications leave their handles' blocks instead.

    Args:
        device: the device (nothing happens if it has no live handle).

    Raises:
        Exception: the first unexpected exception (a bug) the background sync
            met, as :meth:`sddsf.client.runner.Runner.stop` raises it; the
            handles are unbound all the same.
    """
    session = _sessions.pop(device, None)  # type: ignore[call-overload]
    if session is None:
        return
    for h in list(session.handles):
        h._unbind()
    session.handles.clear()
    await session.runner.stop()


class LiveDoc:
    """A live handle on one document (module docstring); enter it to bind.

    Made by ``device.live(space, name, doc=...)``, which resolves a space name.

    Args:
        device: the device whose copy of the document it follows.
        space_id: the space's id.
        name: the document's name in the space.
        doc: the application's document (None: a new one).
        settings: the background sync's timing, used if this is the device's
            first open live handle (None: :data:`LIVE_SETTINGS`).
    """

    def __init__(self, device: SyncHost, space_id: bytes, name: str,
                 doc: pycrdt.Doc[Any] | None, settings: RunnerSettings | None) -> None:
        #: The device whose copy of the document the handle follows.
        self.device = device
        #: The space's id.
        self.space_id = space_id
        #: The document's name in the space.
        self.name = name
        #: The application's document (a new one when none was given).
        self.doc: pycrdt.Doc[Any] = doc if doc is not None else pycrdt.Doc()
        #: Held while remote updates are applied into :attr:`doc`; hold it while
        #: editing :attr:`doc` from a thread other than the event loop's.
        self.lock = threading.RLock()
        #: Awaitable "caught up with the relay".
        self.synced = SyncedFlag()
        self._settings = settings or LIVE_SETTINGS
        self._session: _Session | None = None
        self._inner: pycrdt.Doc[Any] | None = None
        self._subs: list[tuple[pycrdt.Doc[Any], Any]] = []
        self._applying: int | None = None  # the thread applying into self.doc
        self._to_device = False  # applying into the device's copy
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._status_callbacks: list[Callable[[LiveStatus], object]] = []
        self._status_queues: weakref.WeakSet[_StatusQueue] = weakref.WeakSet()
        self._last = LiveStatus(False, False)

    # --------------------------------------------------------------- status
    @property
    def connected(self) -> bool:
        """Whether the live channel to the relay is up."""
        return self._session is not None and self._session.runner.connected

    @property
    def status(self) -> LiveStatus:
        """Connected and caught up, now."""
        return LiveStatus(self.connected, self.synced.is_set())

    def on_status(self, callback: Callable[[LiveStatus], object]) -> Callable[[], None]:
        """Call ``callback(status)`` whenever :attr:`status` changes.

        Args:
            callback: called with the new :class:`LiveStatus` on the event loop.
                One that raises is reported to ``device.on_error`` as a
                :class:`~sddsf.errors.UsageError`; the handle goes on.

        Returns:
            A function that removes the callback (calling it twice is harmless).

        Raises:
            Nothing of its own.
        """
        self._status_callbacks.append(callback)
        return lambda: self._status_callbacks.remove(callback) \
            if callback in self._status_callbacks else None

    def statuses(self) -> AsyncIterator[LiveStatus]:
        """``async for status in handle.statuses():`` each change from now on.

        Returns:
            An async iterator of every new :class:`LiveStatus`; when it is not
            read, it keeps the newest 64. It never ends by itself: leave the
            loop (or drop it) when done.

        Raises:
            Nothing of its own.
        """
        q = _StatusQueue()
        self._status_queues.add(q)
        return q

    def _status_changed(self) -> None:
        session = self._session
        self.synced._set(session is not None and session.caught_up)
        now = self.status
        if now == self._last:
            return
        self._last = now
        for q in list(self._status_queues):
            q.put(now)
        for callback in list(self._status_callbacks):
            try:
                callback(now)
            except Exception as exc:  # the application's bug: reported, never fatal
                error = UsageError(f"a status callback raised {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                self.device.events.error(error)

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> LiveDoc:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Bind :attr:`doc` and start (or join) the device's background sync.

        The device's stored state is applied into :attr:`doc`, and what
        :attr:`doc` held that the device did not becomes an edit of this device;
        a first sync starts at once. ``async with handle:`` calls it.

        Raises:
            UsageError: the handle is open already, the document's name is not
                1 to 256 characters, or the device is closed.
            DecryptError: the device's stored copy of the document does not
                decrypt (a tampered store).
            DecodeError: the stored copy is incomplete (a damaged store).
            UnavailableError: the device's store failed.
        """
        if self._session is not None:
            raise UsageError("this live handle is open already")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._bind(self.device.doc(self.space_id, self.name), both_ways=True)
        session = _sessions.get(self.device)
        fresh = session is None
        if session is None:
            session = _sessions[self.device] = _Session(self.device, self._settings)
        session.handles.append(self)
        self._session = session
        if fresh:
            await session.runner.start()
        session.runner.changed()  # a first sync at once, and push what binding added
        self._status_changed()

    async def close(self) -> None:
        """Unbind :attr:`doc` (it keeps its content) and, for the device's last
        live handle, stop the background sync.

        Edits not pushed yet stay queued on the device (``device.close()`` or the
        next sync sends them). Closing a closed handle does nothing. Leaving
        ``async with handle:`` calls it.

        Raises:
            Exception: (the last handle) the first unexpected exception (a bug)
                the background sync met, as
                :meth:`sddsf.client.runner.Runner.stop` raises it; the handle
                is closed all the same. Errors the sync expects
                (:class:`~sddsf.errors.SddsfError`) went to ``on_error`` instead.
        """
        session, self._session = self._session, None
        self._unbind()
        if session is None or self not in session.handles:
            return
        session.handles.remove(self)
        self._status_changed()
        if not session.handles and _sessions.get(self.device) is session:
            del _sessions[self.device]
            await session.runner.stop()

    # -------------------------------------------------------------- binding
    def _bind(self, inner: pycrdt.Doc[Any], *, both_ways: bool) -> None:
        self._inner = inner
        self._apply_to_app(inner.get_update(self.doc.get_state()))
        ours = self.doc.get_update(inner.get_state()) if both_ways else b""
        self._subs = [(self.doc, self.doc.observe(self._from_app)),
                      (inner, inner.observe(self._from_device))]
        if len(ours) > _EMPTY_UPDATE:
            self._to_device_doc(ours)

    def _unbind(self) -> None:
        for doc, sub in self._subs:
            doc.unobserve(sub)
        self._subs = []
        self._inner = None

    def _check_attached(self) -> None:
        # The device replaced its copy (a re-derived space, a refused edit): bind
        # to the new one, one way only (module docstring).
        if self._inner is None:
            return
        current = self.device.doc(self.space_id, self.name)
        if current is self._inner:
            return
        self._unbind()
        self._bind(current, both_ways=False)
        self.device.events.error(UsageError(
            f"this device reset its copy of document {self.name!r} (the space was "
            "re-derived from the log, or an edit was refused); the live document now "
            "follows the new copy, but may still hold state the device dropped: "
            "open it again with a new pycrdt.Doc to be exact"))

    def _from_app(self, event: Any) -> None:
        if self._applying == threading.get_ident():
            return  # our own application of a device update
        update = bytes(event.update)
        if threading.get_ident() == self._loop_thread or self._loop is None:
            self._to_device_doc(update)
        else:
            self._loop.call_soon_threadsafe(self._to_device_doc, update)

    def _to_device_doc(self, update: bytes) -> None:
        inner = self._inner
        if inner is None:
            return  # closed meanwhile
        self._to_device = True
        try:
            inner.apply_update(update)  # the device captures it as a local edit
        finally:
            self._to_device = False
        if self._session is not None:
            self._session.runner.changed()

    def _from_device(self, event: Any) -> None:
        if not self._to_device:
            self._apply_to_app(bytes(event.update))

    def _apply_to_app(self, update: bytes) -> None:
        if len(update) <= _EMPTY_UPDATE:
            return
        with self.lock:
            self._applying = threading.get_ident()
            try:
                self.doc.apply_update(update)
            except Exception as exc:  # the application's observers (ExceptionGroup)
                error = UsageError(f"an observer of the live document {self.name!r} raised "
                                   f"({exc!r}); the update was applied anyway")
                error.__cause__ = exc
                self.device.events.error(error)
            finally:
                self._applying = None


class _StatusQueue:
    """An async iterator of status changes, keeping the newest :data:`_STATUS_MAX`."""

    def __init__(self) -> None:
        self._items: deque[LiveStatus] = deque(maxlen=_STATUS_MAX)
        self._ready = asyncio.Event()

    def put(self, status: LiveStatus) -> None:
        self._items.append(status)
        self._ready.set()

    def __aiter__(self) -> _StatusQueue:
        return self

    async def __anext__(self) -> LiveStatus:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()
