"""The blocking API: the same devices without asyncio (scripts, notebooks, Django, Qt).

::

    from sddsf.sync_api import Device

    with Device.open(home, passphrase="...") as device:
        device.sync()
        with device.live("notes", "todo") as handle:
            with handle.transaction():
                handle.doc.get("text", type=pycrdt.Text).insert(0, "milk")
            handle.synced.wait(10)

Every device of this API runs on one event loop in a background thread of the
process (started on first use); each call hands its work to that loop and waits
for the answer. The rules that follow from it:

* Callbacks (``on_change``, ``on_error``, ``on_status``, the runner's
  ``on_sync``) run on that thread: hand work to your own thread (Qt signals,
  ``queue.Queue``) rather than touching a UI there, and never call this API from
  inside them (it would wait for itself: ``UsageError``).
* A live handle's :attr:`LiveDoc.doc` belongs to your thread; remote edits are
  applied into it on the background thread under :attr:`LiveDoc.lock`. Edit it
  inside ``with handle.transaction():`` (the lock and one Yjs transaction).
* :meth:`Device.run` runs any function of the asyncio
  :class:`~sddsf.client.device.Device` on the background thread (e.g. the vault
  or key-value documents).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pycrdt

from sddsf.client import live as _live
from sddsf.client.device import Device as AsyncDevice
from sddsf.client.device import SyncReport
from sddsf.client.events import (
    Alert,
    ErrorCallback,
    Event,
    EventCallback,
    EventStream,
    PendingProposal,
    RegistryChange,
    RemoteChange,
    Rotation,
)
from sddsf.client.keystore import Passphrase
from sddsf.client.live import LiveStatus
from sddsf.client.runner import Runner as AsyncRunner
from sddsf.client.runner import RunnerSettings
from sddsf.errors import SddsfError, UsageError

__all__ = ["Alert", "Device", "Event", "LiveDoc", "LiveStatus", "PendingProposal",
           "RegistryChange", "RemoteChange", "Rotation", "Runner", "RunnerSettings",
           "SddsfError", "SyncReport"]

T = TypeVar("T")


class _Portal:
    """An event loop running in a daemon thread; calls wait for their result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sddsf-sync",
                                       daemon=True)
        self.thread.start()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any,
             timeout: float | None = None) -> T:
        """Await ``fn(*args)`` on the loop and return its result.

        Raises:
            UsageError: called from the loop's own thread (a callback).
            TimeoutError: ``timeout`` seconds passed (the call is cancelled).
        """
        if threading.get_ident() == self.thread.ident:
            raise UsageError("sddsf.sync_api was called from one of its own callbacks; "
                             "hand the work to another thread")

        async def run() -> T:
            return await fn(*args)

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call the plain function ``fn(*args)`` on the loop's thread."""
        async def call() -> T:
            return fn(*args)
        return self.call(call)


_lock = threading.Lock()
_the_portal: _Portal | None = None


def _portal() -> _Portal:
    global _the_portal  # noqa: PLW0603 - one loop thread per process, made on first use
    with _lock:
        if _the_portal is None:
            _the_portal = _Portal()
        return _the_portal


@atexit.register
def _stop_portal() -> None:
    if _the_portal is not None:
        _the_portal.loop.call_soon_threadsafe(_the_portal.loop.stop)


class Device:
    """A device, blocking: the methods of :class:`sddsf.client.device.Device`."""

    def __init__(self, device: AsyncDevice) -> None:
        #: The asyncio device (use it only through :meth:`run`).
        self.async_device = device
        self._portal = _portal()

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, home: Path | str, *, passphrase: Passphrase | None = None,
             **options: Any) -> Device:
        """Open a device home (the options of :meth:`sddsf.client.device.Device.open`;
        ``lock`` defaults to ``operation`` here, so other processes get turns)."""
        options.setdefault("lock", "operation")
        return cls(_portal().run(lambda: AsyncDevice.open(Path(home), passphrase=passphrase,
                                                          **options)))

    @classmethod
    def create_account(cls, home: Path | str, relay_url: str, name: str, *,
                       passphrase: Passphrase | None = None,
                       **options: Any) -> tuple[Device, bytes]:
        """Create an account and its first device; returns it and the account secret."""
        device, secret = _portal().call(functools.partial(
            AsyncDevice.create_account, Path(home), relay_url, name, passphrase=passphrase,
            **options))
        return cls(device), secret

    @classmethod
    def add_local(cls, approver: Device, home: Path | str, name: str, *,
                  passphrase: Passphrase | None = None, **options: Any) -> Device:
        """Add a device in another home of this machine, approved by ``approver``."""
        return cls(_portal().call(functools.partial(
            AsyncDevice.add_local, approver.async_device, Path(home), name,
            passphrase=passphrase, **options)))

    def close(self) -> None:
        """Stop live handles, flush and close (as leaving ``with``)."""
        self._portal.call(self.async_device.__aexit__, None, None, None)

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, fn: Callable[[AsyncDevice], T | Awaitable[T]]) -> T:
        """``fn(async_device)`` on the background thread (awaited if it returns an
        awaitable), e.g. ``device.run(lambda d: Vault.open(d))``."""
        async def call() -> T:
            result = fn(self.async_device)
            if isinstance(result, Awaitable):
                return await result
            return result
        return self._portal.call(call)

    # ---------------------------------------------------------------- sync
    def sync(self) -> SyncReport:
        """Push and pull once, verifying everything."""
        return self._portal.call(self.async_device.sync)

    def create_space(self, name: str) -> bytes:
        """Create a space; returns its id."""
        return self._portal.call(self.async_device.create_space, name)

    def spaces(self) -> list[tuple[bytes, str]]:
        """The spaces this device knows: ``(space id, name)``."""
        return self._portal.run(self.async_device.spaces)

    def space_by_name(self, name: str) -> bytes:
        """The id of the space called ``name``."""
        return self._portal.run(self.async_device.space_by_name, name)

    @property
    def device_id(self) -> bytes:
        """This device's id."""
        return self.async_device.device_id

    # -------------------------------------------------------------- events
    def changes(self) -> EventIterator:
        """Events from now on: ``for event in device.changes():`` (or ``.next(timeout)``)."""
        return EventIterator(self._portal, self._portal.run(self.async_device.changes))

    def on_change(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` on the background thread for every event."""
        return self.async_device.on_change(callback)

    def on_error(self, callback: ErrorCallback) -> Callable[[], None]:
        """Call ``callback(error)`` on the background thread for background errors."""
        return self.async_device.on_error(callback)

    def live(self, space: bytes | str, name: str, *, doc: pycrdt.Doc[Any] | None = None,
             settings: RunnerSettings | None = None) -> LiveDoc:
        """A live document (``with device.live(space, name, doc=d) as handle:``)."""
        space_id = self.space_by_name(space) if isinstance(space, str) else space
        return LiveDoc(self._portal, _live.LiveDoc(self.async_device, space_id, name, doc,
                                                   settings))


class EventIterator:
    """A blocking iterator over a device's events."""

    def __init__(self, portal: _Portal, stream: EventStream) -> None:
        self._portal = portal
        self._stream = stream

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        event = self.next()
        assert event is not None  # noqa: S101 - no timeout: next() waits for one
        return event

    def next(self, timeout: float | None = None) -> Event | None:
        """The next event, or None when none came within ``timeout`` seconds.

        Raises:
            StopIteration: the stream was closed.
        """
        try:
            return self._portal.call(self._stream.__anext__, timeout=timeout)
        except StopAsyncIteration:
            raise StopIteration from None
        except TimeoutError:
            return None

    def close(self) -> None:
        """Stop receiving events."""
        self._portal.run(self._stream.close)


class _Synced:
    """``handle.synced``: ``is_set()`` and ``wait(timeout)``, as ``threading.Event``."""

    def __init__(self, portal: _Portal, flag: _live.SyncedFlag) -> None:
        self._portal = portal
        self._flag = flag

    def is_set(self) -> bool:
        return self._flag.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until caught up with the relay; False when ``timeout`` passed first."""
        try:
            return self._portal.call(self._flag.wait, timeout=timeout)
        except TimeoutError:
            return False


class LiveDoc:
    """A live document, blocking (see :mod:`sddsf.client.live`)."""

    def __init__(self, portal: _Portal, handle: _live.LiveDoc) -> None:
        self._portal = portal
        self._handle = handle
        #: Caught up with the relay: ``synced.wait(timeout)``.
        self.synced = _Synced(portal, handle.synced)

    @property
    def doc(self) -> pycrdt.Doc[Any]:
        """The application's document (edit it in :meth:`transaction`)."""
        return self._handle.doc

    @property
    def lock(self) -> threading.RLock:
        """Held while remote edits are applied into :attr:`doc`."""
        return self._handle.lock

    @property
    def connected(self) -> bool:
        """Whether the live channel to the relay is up."""
        return self._handle.connected

    @property
    def status(self) -> LiveStatus:
        """Connected and caught up, now."""
        return self._handle.status

    def on_status(self, callback: Callable[[LiveStatus], object]) -> Callable[[], None]:
        """Call ``callback(status)`` on the background thread when the status changes."""
        return self._handle.on_status(callback)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[pycrdt.Doc[Any]]:
        """Edit :attr:`doc`: holds :attr:`lock` and one Yjs transaction."""
        with self._handle.lock, self._handle.doc.transaction():
            yield self._handle.doc

    def open(self) -> None:
        """Bind :attr:`doc` and start the background sync."""
        self._portal.call(self._handle.open)

    def close(self) -> None:
        """Unbind :attr:`doc` (for the last handle: stop the background sync)."""
        self._portal.call(self._handle.close)

    def __enter__(self) -> LiveDoc:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runner:
    """The background runner, blocking: ``with Runner(device):`` keeps it in sync.
    Its callbacks run on the background thread."""

    def __init__(self, device: Device, settings: RunnerSettings | None = None, *,
                 on_sync: Callable[[SyncReport], None] | None = None,
                 on_error: Callable[[SddsfError], None] | None = None) -> None:
        self._portal = device._portal
        self.runner = AsyncRunner(device.async_device, settings or RunnerSettings(),
                                  on_sync=on_sync, on_error=on_error)

    def changed(self) -> None:
        """Tell it about edits made outside a live handle."""
        self._portal.loop.call_soon_threadsafe(self.runner.changed)

    def start(self) -> None:
        """Start syncing, with a first sync at once."""
        self._portal.call(self.runner.__aenter__)

    def stop(self) -> None:
        """Stop (raises the first unexpected error it met, see the asyncio Runner)."""
        self._portal.call(self.runner.stop)

    def __enter__(self) -> Runner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
