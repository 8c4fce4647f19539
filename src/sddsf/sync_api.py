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
* Errors are those of the asyncio API, raised in the calling thread as they
  were raised on the loop; every call made from the loop's own thread (a
  callback) raises :class:`~sddsf.errors.UsageError` instead of waiting.

Size: a blocking twin of each public class of the asyncio API (device,
live document, event iterator, runner), each method a short call through
the one background event loop.
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

__all__ = ["Alert", "Device", "Event", "EventIterator", "LiveDoc", "LiveStatus",
           "PendingProposal", "RegistryChange", "RemoteChange", "Rotation", "Runner",
           "RunnerSettings", "SddsfError", "SyncReport"]

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
    """A device, blocking: the methods of :class:`sddsf.client.device.Device`.

    Made by :meth:`open`, :meth:`create_account` or :meth:`add_local`; a context
    manager (``with Device.open(...) as device:`` closes it on exit).

    Args:
        device: the asyncio device to drive (opened on the background loop).
    """

    def __init__(self, device: AsyncDevice) -> None:
        #: The asyncio device (use it only through :meth:`run`).
        self.async_device = device
        self._portal = _portal()

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, home: Path | str, *, passphrase: Passphrase | None = None,
             **options: Any) -> Device:
        """Open an existing device home.

        Args:
            home: the device home.
            passphrase: the store's passphrase (a str, or a function asking for
                it, called on the background thread), if it has one.
            **options: the other options of
                :meth:`sddsf.client.device.Device.open`; ``lock`` defaults to
                ``operation`` here, so other processes get turns.

        Returns:
            The open device.

        Raises:
            ConfigError: ``home`` holds no device, or its storage key cannot be
                had (no passphrase given, no longer in the keyring, an
                unreadable key file).
            DecryptError: a wrong passphrase, or a store that does not decrypt.
            UsageError: a passphrase that is neither a str nor a function, or a
                call from one of this API's callbacks.
            UnavailableError: another process kept the home locked for
                ``lock_timeout_s``, or the store or the keyring failed.
        """
        options.setdefault("lock", "operation")
        return cls(_portal().run(lambda: AsyncDevice.open(Path(home), passphrase=passphrase,
                                                          **options)))

    @classmethod
    def create_account(cls, home: Path | str, relay_url: str, name: str, *,
                       passphrase: Passphrase | None = None,
                       **options: Any) -> tuple[Device, bytes]:
        """Create an account and its first device in a new home.

        Args:
            home: the new device home (it must not hold a device).
            relay_url: the relay's base URL.
            name: this device's name.
            passphrase: protects the store (None: the OS keyring, if there is one).
            **options: the other options of
                :meth:`sddsf.client.device.Device.create_account`.

        Returns:
            The device and the 32-byte account secret, to show ONCE (e.g. as the
            recovery phrase).

        Raises:
            UsageError: ``home`` already holds a device, a passphrase shorter
                than 8 characters or of a wrong type, or a call from one of this
                API's callbacks.
            ConfigError: no passphrase and no OS keyring.
            UnavailableError: the relay cannot be reached (or answered 503), or
                the store or the keyring failed.
            SddsfError: any other refusal of the relay, as its typed error.
        """
        device, secret = _portal().call(functools.partial(
            AsyncDevice.create_account, Path(home), relay_url, name, passphrase=passphrase,
            **options))
        return cls(device), secret

    @classmethod
    def add_local(cls, approver: Device, home: Path | str, name: str, *,
                  passphrase: Passphrase | None = None, **options: Any) -> Device:
        """Add a device in another home of this machine, approved by ``approver``.

        Args:
            approver: a device of the account that approves the new one.
            home: the new device's home (it must not hold a device).
            name: the new device's name.
            passphrase: protects the new store (None: the OS keyring, if any).
            **options: the other options of
                :meth:`sddsf.client.device.Device.add_local`.

        Returns:
            The new device (it may await more approvals, as the account's policy
            says).

        Raises:
            UsageError: ``home`` already holds a device, a passphrase shorter
                than 8 characters or of a wrong type, or a call from one of this
                API's callbacks.
            ConfigError: no passphrase and no OS keyring.
            AuthorizationError: ``approver`` may not add devices.
            UnavailableError: the relay cannot be reached (or answered 503), or
                the store or the keyring failed.
            SddsfError: any other refusal of the relay, as its typed error.
        """
        return cls(_portal().call(functools.partial(
            AsyncDevice.add_local, approver.async_device, Path(home), name,
            passphrase=passphrase, **options)))

    def close(self) -> None:
        """Stop live handles, flush and close (as leaving ``with``).

        The store, the connections and the home's lock are released even when
        it raises.

        Raises:
            UsageError: a buffered edit was refused (too large to sync), or a
                call from one of this API's callbacks.
            Exception: the first unexpected exception (a bug) the live handles'
                background sync met (:meth:`sddsf.client.runner.Runner.stop`).
        """
        self._portal.call(self.async_device.__aexit__, None, None, None)

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, fn: Callable[[AsyncDevice], T | Awaitable[T]]) -> T:
        """Run ``fn(async_device)`` on the background thread, e.g. ``device.run(Vault.open)``.

        Args:
            fn: called with the asyncio device; what it returns is awaited there
                if it is awaitable.

        Returns:
            What ``fn`` returned (or its awaitable gave).

        Raises:
            UsageError: a call from one of this API's callbacks.
            Exception: whatever ``fn`` raises, unchanged.
        """
        async def call() -> T:
            result = fn(self.async_device)
            if isinstance(result, Awaitable):
                return await result
            return result
        return self._portal.call(call)

    # ---------------------------------------------------------------- sync
    def sync(self) -> SyncReport:
        """Push and pull once, verifying everything (:meth:`sddsf.client.device.Device.sync`).

        Returns:
            What the sync did (ops pushed and pulled, alerts, observer errors).

        Raises:
            UnavailableError: the relay cannot be reached or answered 503 (the
                edits stay queued), or the store failed.
            RateLimitedError: the relay asked to wait (``retry_after_s``).
            AuthorizationError: this device is revoked, awaiting approval, or
                read-only.
            VerificationError: the relay or another device misbehaved (a
                subclass such as ``ProofError`` says how); nothing was applied.
            UsageError: an edit was refused (too large to sync), or a call from
                one of this API's callbacks.
        """
        return self._portal.call(self.async_device.sync)

    def create_space(self, name: str) -> bytes:
        """Create a space, its first key wrapped for every device of the account.

        Args:
            name: the space's name (unique on this device).

        Returns:
            The new space's id (16 bytes).

        Raises:
            UsageError: a space of that name exists already, or a call from one
                of this API's callbacks.
            UnavailableError: the relay cannot be reached (or answered 503).
            SddsfError: any other refusal of the relay, as its typed error.
        """
        return self._portal.call(self.async_device.create_space, name)

    def spaces(self) -> list[tuple[bytes, str]]:
        """The spaces this device holds keys for.

        Returns:
            ``(space id, name)`` of each.

        Raises:
            UsageError: the device is closed, or a call from one of this API's
                callbacks.
            DecryptError: the store does not decrypt (a tampered store).
            UnavailableError: the store failed.
        """
        return self._portal.run(self.async_device.spaces)

    def space_by_name(self, name: str) -> bytes:
        """The id of the space called ``name``.

        Args:
            name: the space's name.

        Returns:
            Its id (16 bytes).

        Raises:
            UsageError: no space of that name on this device (sync first?), or a
                call from one of this API's callbacks.
        """
        return self._portal.run(self.async_device.space_by_name, name)

    @property
    def device_id(self) -> bytes:
        """This device's id."""
        return self.async_device.device_id

    # -------------------------------------------------------------- events
    def changes(self) -> EventIterator:
        """Events from now on: ``for event in device.changes():`` (or ``.next(timeout)``).

        Returns:
            A blocking iterator of the device's events; it keeps at most 4,096
            unread ones (the oldest are dropped).

        Raises:
            UsageError: a call from one of this API's callbacks.
        """
        return EventIterator(self._portal, self._portal.run(self.async_device.changes))

    def on_change(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` on the background thread for every event.

        Args:
            callback: called with each event. One that raises is reported to the
                :meth:`on_error` callbacks; syncing goes on.

        Returns:
            A function that removes the callback.

        Raises:
            Nothing of its own.
        """
        return self.async_device.on_change(callback)

    def on_error(self, callback: ErrorCallback) -> Callable[[], None]:
        """Call ``callback(error)`` on the background thread for background errors.

        Args:
            callback: called with each :class:`~sddsf.errors.SddsfError` of event
                callbacks, document observers and live handles' syncs (without
                one they are logged).

        Returns:
            A function that removes the callback.

        Raises:
            Nothing of its own.
        """
        return self.async_device.on_error(callback)

    def live(self, space: bytes | str, name: str, *, doc: pycrdt.Doc[Any] | None = None,
             settings: RunnerSettings | None = None) -> LiveDoc:
        """A live document (``with device.live(space, name, doc=d) as handle:``).

        Args:
            space: the space id, or its name.
            name: the document's name in the space.
            doc: the application's ``pycrdt.Doc`` to keep in sync (None: a new
                one, ``handle.doc``).
            settings: the background sync's timing, used by the device's first
                live handle (default :data:`sddsf.client.live.LIVE_SETTINGS`).

        Returns:
            The handle, not bound yet: entering it (or :meth:`LiveDoc.open`)
            binds ``doc`` and starts the background sync.

        Raises:
            UsageError: no space of that name on this device, or a call from one
                of this API's callbacks.
        """
        space_id = self.space_by_name(space) if isinstance(space, str) else space
        return LiveDoc(self._portal, _live.LiveDoc(self.async_device, space_id, name, doc,
                                                   settings))


class EventIterator:
    """A blocking iterator over a device's events (made by :meth:`Device.changes`)."""

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

        Args:
            timeout: how long to wait, in seconds (None: until an event comes).

        Returns:
            The next event, or None when ``timeout`` passed first.

        Raises:
            StopIteration: the iterator was closed.
            UsageError: a call from one of this API's callbacks.
        """
        try:
            return self._portal.call(self._stream.__anext__, timeout=timeout)
        except StopAsyncIteration:
            raise StopIteration from None
        except TimeoutError:
            return None

    def close(self) -> None:
        """Stop receiving events; events received before are still returned.

        Raises:
            UsageError: a call from one of this API's callbacks.
        """
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
    """A live document, blocking (see :mod:`sddsf.client.live`); made by
    :meth:`Device.live`, bound from ``with`` entry to exit."""

    def __init__(self, portal: _Portal, handle: _live.LiveDoc) -> None:
        self._portal = portal
        self._handle = handle
        #: Caught up with the relay, as a ``threading.Event``: ``synced.is_set()``
        #: tells now; ``synced.wait(timeout)`` waits, and returns False if
        #: ``timeout`` seconds passed first.
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
        """Call ``callback(status)`` on the background thread when the status changes.

        Args:
            callback: called with the new :class:`LiveStatus`. One that raises is
                reported to the device's ``on_error`` callbacks.

        Returns:
            A function that removes the callback.

        Raises:
            Nothing of its own.
        """
        return self._handle.on_status(callback)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[pycrdt.Doc[Any]]:
        """Edit :attr:`doc`: ``with handle.transaction() as doc:``.

        Returns:
            A context manager that holds :attr:`lock` and one Yjs transaction of
            :attr:`doc` for its block, and gives :attr:`doc`. The edits are
            pushed by the background sync after the block.

        Raises:
            Nothing of its own.
        """
        with self._handle.lock, self._handle.doc.transaction():
            yield self._handle.doc

    def open(self) -> None:
        """Bind :attr:`doc` and start the background sync (entering ``with`` calls it).

        Raises:
            UsageError: the handle is open already, the document's name is not
                1 to 256 characters, the device is closed, or a call from one of
                this API's callbacks.
            DecryptError: the device's stored copy does not decrypt.
            DecodeError: the stored copy is incomplete (a damaged store).
            UnavailableError: the device's store failed.
        """
        self._portal.call(self._handle.open)

    def close(self) -> None:
        """Unbind :attr:`doc` (for the last handle: stop the background sync).

        Leaving ``with`` calls it; edits not pushed yet stay queued on the device.

        Raises:
            UsageError: a call from one of this API's callbacks.
            Exception: (the last handle) the first unexpected exception (a bug)
                the background sync met (:meth:`sddsf.client.runner.Runner.stop`).
        """
        self._portal.call(self._handle.close)

    def __enter__(self) -> LiveDoc:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runner:
    """The background runner, blocking: ``with Runner(device):`` keeps it in sync.

    Do not run it on a device that has live handles open (they run their own).

    Args:
        device: the device to keep in sync.
        settings: its timing (None: :class:`RunnerSettings` defaults).
        on_sync: called on the background thread after each sync.
        on_error: called on the background thread with each error of a sync
            (without it they are logged).
    """

    def __init__(self, device: Device, settings: RunnerSettings | None = None, *,
                 on_sync: Callable[[SyncReport], None] | None = None,
                 on_error: Callable[[SddsfError], None] | None = None) -> None:
        self._portal = device._portal
        self.runner = AsyncRunner(device.async_device, settings or RunnerSettings(),
                                  on_sync=on_sync, on_error=on_error)

    def changed(self) -> None:
        """Tell it about edits made outside a live handle (pushed after the debounce).

        Callable from any thread, callbacks included.

        Raises:
            Nothing of its own.
        """
        self._portal.loop.call_soon_threadsafe(self.runner.changed)

    def start(self) -> None:
        """Start syncing, with a first sync at once (entering ``with`` calls it).

        Raises:
            UsageError: a call from one of this API's callbacks.
        """
        self._portal.call(self.runner.__aenter__)

    def stop(self) -> None:
        """Stop syncing (leaving ``with`` calls it); pending edits stay queued.

        Raises:
            UsageError: a call from one of this API's callbacks.
            Exception: the first unexpected exception (a bug) the runner met, as
                :meth:`sddsf.client.runner.Runner.stop` raises it.
        """
        self._portal.call(self.runner.stop)

    def __enter__(self) -> Runner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
