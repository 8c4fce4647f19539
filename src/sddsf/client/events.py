"""What happened to a device, as typed events for the application.

Every :class:`~sddsf.client.device.Device` has one :class:`EventBus`
(``device.events``). The device publishes on it at the points where something
the application may care about became true:

* :class:`RemoteChange`: a verified op of another device was applied to a
  document and stored (one event per op);
* :class:`RegistryChange`: the verified registry gained or revoked a device;
* :class:`PendingProposal`: the verified registry holds a new open proposal
  (a device change that waits for approvals, ``docs/protocol.md`` §9.8);
* :class:`Rotation`: a space moved to a new key epoch (made here or elsewhere);
* :class:`MembershipChange`: a shared space's verified membership changed (an
  account added, its role changed, removed, or it left);
* :class:`Alert`: this device found something wrong with another one
  (``SyncReport.alerts``), or the relay's security controller pushed an alert
  over the live channel.

Applications read them with ``async for event in device.changes():`` or with
callbacks (``device.on_change(cb)``). Delivery never stops syncing: a callback
that raises is reported to the ``on_error`` callbacks (or logged), and a
stream that is not read drops its oldest events beyond :data:`STREAM_MAX`
(counted in :attr:`EventStream.dropped`). Events are hints for the UI: the
device's documents and stores remain the truth.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sddsf.client import yupdates
from sddsf.errors import SddsfError, UsageError

if TYPE_CHECKING:
    from sddsf.client.transport.base import AlertNotice
    from sddsf.protocol.registry import RegistryState

__all__ = ["STREAM_MAX", "Alert", "ErrorCallback", "Event", "EventBus", "EventCallback",
           "EventStream", "MembershipChange", "PendingProposal", "RegistryChange",
           "RemoteChange", "Rotation"]

log = logging.getLogger("sddsf.client")

#: Events one unread :class:`EventStream` keeps; older ones are dropped.
STREAM_MAX = 4096


@dataclass(frozen=True, slots=True)
class RemoteChange:
    """Another device's edit, verified, applied to ``doc`` and stored.

    Attributes:
        space: the space id (16 bytes).
        doc: the document's name.
        author_device: the id of the device that made the edit.
        update: the edit as one Yjs update (``pycrdt.Doc.apply_update`` takes it).
    """

    space: bytes
    doc: str
    author_device: bytes
    update: bytes


@dataclass(frozen=True, slots=True)
class RegistryChange:
    """A device was added to or revoked from the account (verified registry).

    Attributes:
        change: ``added`` or ``revoked``.
        device: the id of the device added or revoked.
        name: the device's name in the registry (empty if it is not there).
    """

    change: Literal["added", "revoked"]
    device: bytes
    name: str


@dataclass(frozen=True, slots=True)
class PendingProposal:
    """A device change awaiting approvals (``sddsf device pending`` lists it).

    Attributes:
        proposal_id: the proposal's id (what approving it names).
        action: ``add``, ``revoke`` or ``policy``.
        device: the device it would add or revoke (None for a policy change).
        proposer: the id of the device that proposed it.
    """

    proposal_id: bytes
    action: str  # "add", "revoke" or "policy"
    device: bytes | None  # the device it would add or revoke
    proposer: bytes


@dataclass(frozen=True, slots=True)
class Rotation:
    """A space moved to key epoch ``epoch``, opened by device ``by``.

    Attributes:
        space: the space id (16 bytes).
        epoch: the new key epoch (> 0).
        by: the id of the device that opened it (this one or another).
    """

    space: bytes
    epoch: int
    by: bytes


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """A shared space's membership changed, as this device verified it in the log.

    Attributes:
        space: the space id (16 bytes).
        change: ``create``, ``add``, ``role``, ``remove`` or ``leave``.
        account: the account the change is about (32 bytes).
        role: its role after the change (None after ``remove`` or ``leave``).
        by: the account that signed the change.
    """

    space: bytes
    change: str
    account: bytes
    role: str | None
    by: bytes


@dataclass(frozen=True, slots=True)
class Alert:
    """Something is wrong with a device.

    Attributes:
        code: a stable code: an error code such as ``snapshot_mismatch``
            (``source == "device"``) or the controller rule (``"relay"``).
        message: what happened, for a person.
        source: ``device`` (this device's verification) or ``relay`` (the
            relay's security controller, pushed over the live channel).
        device: the device the alert is about, when the relay named one.
        severity: the controller's severity (relay alerts only).
    """

    code: str
    message: str
    source: Literal["device", "relay"]
    device: bytes | None = None
    severity: str | None = None


#: Any event a device publishes (what ``device.changes()`` yields).
Event = RemoteChange | RegistryChange | PendingProposal | Rotation | MembershipChange | Alert
#: A callback for events; it may return an awaitable (run as a task).
EventCallback = Callable[[Event], Awaitable[None] | None]
#: A callback for the errors of callbacks and background syncs (``on_error``).
ErrorCallback = Callable[[SddsfError], None]


class EventStream:
    """An async iterator of a device's events from the moment it was made.

    Use ``async for event in device.changes():``; leaving the loop (or
    :meth:`close`, or dropping the stream) unsubscribes it.
    """

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        #: Events dropped because the stream was not read (kept at most STREAM_MAX).
        self.dropped = 0

    def _put(self, event: Event) -> None:
        if len(self._queue) >= STREAM_MAX:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._ready.set()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def close(self) -> None:
        """Stop receiving events; a waiting ``async for`` ends.

        Events received before are still yielded, then the iteration stops.

        Raises:
            Nothing of its own.
        """
        self._closed = True
        self._bus._streams.discard(self)
        self._ready.set()

    async def aclose(self) -> None:
        """As :meth:`close` (the async-generator protocol).

        Raises:
            Nothing of its own.
        """
        self.close()


class EventBus:
    """Fan-out of one device's events to streams and callbacks (module docstring).

    Invariant: publishing never raises; the callers are sync steps that must go on.
    """

    def __init__(self) -> None:
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._callbacks: list[EventCallback] = []
        self._error_callbacks: list[ErrorCallback] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def listening(self) -> bool:
        """Whether anything receives events (else publishers may skip the work)."""
        return bool(self._callbacks) or len(self._streams) > 0

    # ------------------------------------------------------------ subscribe
    def stream(self) -> EventStream:
        """A new stream of the events published from now on.

        Make it on the device's event loop, and read it there.

        Returns:
            A new :class:`EventStream`, subscribed until it is closed or dropped.

        Raises:
            Nothing of its own.
        """
        s = EventStream(self)
        self._streams.add(s)
        return s

    def on_change(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event published from now on.

        A callback that returns an awaitable has it run as a task. One that
        raises (or whose awaitable raises) is reported to the :meth:`on_error`
        callbacks as a :class:`~sddsf.errors.UsageError`; publishing goes on.

        Args:
            callback: called with each event, on the device's event loop.

        Returns:
            A function that removes the callback (calling it twice is harmless).

        Raises:
            Nothing of its own.
        """
        self._callbacks.append(callback)
        return lambda: self._remove(self._callbacks, callback)

    def on_error(self, callback: ErrorCallback) -> Callable[[], None]:
        """Call ``callback(error)`` for errors of callbacks and of background syncs.

        Without any such callback, these errors are logged (logger
        ``sddsf.client``, level warning).

        Args:
            callback: called with each :class:`~sddsf.errors.SddsfError` of event
                callbacks, document observers and live handles' background syncs.
                One that raises is logged, never fatal.

        Returns:
            A function that removes the callback (calling it twice is harmless).

        Raises:
            Nothing of its own.
        """
        self._error_callbacks.append(callback)
        return lambda: self._remove(self._error_callbacks, callback)

    @staticmethod
    def _remove(callbacks: list[Any], callback: object) -> None:
        if callback in callbacks:
            callbacks.remove(callback)

    # -------------------------------------------------------------- publish
    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every stream and callback.

        A callback's exception is reported through :meth:`error`.

        Args:
            event: the event to deliver.

        Raises:
            Nothing: publishing never raises (its callers are sync steps that
            must go on).
        """
        for s in list(self._streams):
            s._put(event)
        for callback in list(self._callbacks):
            try:
                result = callback(event)
            except Exception as exc:  # the application's bug: reported, never fatal
                self.error(_callback_error(callback, exc))
                continue
            if result is not None:
                self._run(callback, result)

    def _run(self, callback: object, awaitable: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await awaitable
            except Exception as exc:
                self.error(_callback_error(callback, exc))
        task = asyncio.ensure_future(run())
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    def error(self, error: SddsfError) -> None:
        """Report ``error`` to the :meth:`on_error` callbacks (or the log).

        Args:
            error: the error of a callback or of a background sync.

        Raises:
            Nothing: an ``on_error`` callback that raises is logged.
        """
        if not self._error_callbacks:
            log.warning("%s", error)
            return
        for callback in list(self._error_callbacks):
            try:
                callback(error)
            except Exception:  # an error handler that fails is logged, never fatal
                log.exception("on_error raised while reporting %s", error)

    # ----------------------------------------- the device's publishing points
    def remote_applied(self, space: bytes,
                       ops: Iterable[tuple[str, bytes, Sequence[bytes]]]) -> None:
        """Ops of other devices were applied and stored: one :class:`RemoteChange` each.

        Documents whose name starts with ``_`` are the device's own bookkeeping
        (``_meta``: a space's settings), not the application's: no event.

        Args:
            space: the space id.
            ops: per op, the document's name, the author device's id and the op's
                Yjs updates (published merged into one update).

        Raises:
            Nothing of its own.
        """
        if not self.listening:
            return
        for name, author, updates in ops:
            if name.startswith("_"):
                continue
            update = yupdates.merge(updates)
            self.publish(RemoteChange(space, name, author, bytes(update)))

    def registry_changed(self, old: RegistryState, new: RegistryState, now_ms: int) -> None:
        """The verified registry moved from ``old`` to ``new``.

        Publishes a :class:`RegistryChange` per device added or revoked and a
        :class:`PendingProposal` per proposal open in ``new`` and not in ``old``.

        Args:
            old: the registry state verified before.
            new: the registry state verified now.
            now_ms: the time (milliseconds since the epoch) at which proposals
                are open.

        Raises:
            Nothing of its own.
        """
        if not self.listening or old is new:
            return
        before = {d.device_id for d in old.active_devices()}
        after = {d.device_id: d for d in new.active_devices()}
        for device_id, rec in after.items():
            if device_id not in before:
                self.publish(RegistryChange("added", device_id, rec.name))
        for device_id in sorted(before - after.keys()):
            gone = new.device(device_id)
            self.publish(RegistryChange("revoked", device_id, gone.name if gone else ""))
        known = {p.id for p in old.open_proposals(now_ms)}
        for p in new.open_proposals(now_ms):
            if p.id not in known:
                a = p.action
                subject = a.target if a.target is not None else (
                    a.device.device_id if a.device is not None else None)
                self.publish(PendingProposal(p.id, a.type.value, subject, p.proposer))

    def rotated(self, space: bytes, epoch: int, by: bytes) -> None:
        """``space`` has a new key epoch: publishes a :class:`Rotation`.

        Args:
            space: the space id.
            epoch: the new epoch (> 0).
            by: the id of the device that opened it.

        Raises:
            Nothing of its own.
        """
        if self.listening:
            self.publish(Rotation(space, epoch, by))

    def membership_changed(self, change: MembershipChange) -> None:
        """A shared space's membership changed: publishes the :class:`MembershipChange`.

        Args:
            change: what changed.

        Raises:
            Nothing of its own.
        """
        if self.listening:
            self.publish(change)

    def device_alert(self, code: str, message: str) -> None:
        """This device found something wrong: publishes an :class:`Alert` (``device``).

        Args:
            code: the stable code (an error code such as ``snapshot_mismatch``).
            message: the entry of ``SyncReport.alerts``.

        Raises:
            Nothing of its own.
        """
        if self.listening:
            self.publish(Alert(code, message, "device"))

    def relay_alert(self, notice: AlertNotice) -> None:
        """The relay's controller pushed an alert: publishes an :class:`Alert` (``relay``).

        Args:
            notice: the alert, as the transport's live channel delivered it.

        Raises:
            Nothing of its own.
        """
        if self.listening:
            self.publish(Alert(notice.rule, notice.message, "relay", notice.device,
                               notice.severity))


def _callback_error(callback: object, exc: Exception) -> SddsfError:
    name = getattr(callback, "__qualname__", type(callback).__name__)
    error = UsageError(f"the event callback {name} raised {type(exc).__name__}: {exc}; "
                       "syncing goes on")
    error.__cause__ = exc
    return error
