"""The application-facing part of :class:`~sddsf.client.device.Device`.

``Device`` inherits it: ``async with Device.open(home) as device:``, events
(``device.changes()``, ``device.on_change``, ``device.on_error``) and live
documents (``device.live(space, name, doc=...)``). It holds no state of its own
beyond ``events``, so the sync engine underneath can change without it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import pycrdt

    from sddsf.client.events import ErrorCallback, EventBus, EventCallback, EventStream
    from sddsf.client.hosts import SyncHost
    from sddsf.client.live import LiveDoc
    from sddsf.client.runner import RunnerSettings

__all__ = ["ApplicationApi"]

class ApplicationApi(ABC):
    """Context manager, events and live documents of a device (module docstring)."""

    events: EventBus

    @abstractmethod
    async def close(self) -> None:
        """Close the device (``Device.close``)."""

    @abstractmethod
    def space_by_name(self, name: str) -> bytes:
        """A space's id by its name (``Device.space_by_name``)."""

    async def __aenter__(self) -> ApplicationApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """:meth:`close` (which also stops the live handles' background sync)."""
        await self.close()

    def changes(self) -> EventStream:
        """Events from now on: ``async for event in device.changes():`` yields
        :class:`~sddsf.client.events.RemoteChange`, ``RegistryChange``,
        ``PendingProposal``, ``Rotation`` and ``Alert`` as syncs find them."""
        return self.events.stream()

    def on_change(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every event (a coroutine function runs as a
        task). A callback that raises is reported to :meth:`on_error`; syncing goes
        on. Returns a function that removes the callback."""
        return self.events.on_change(callback)

    def on_error(self, callback: ErrorCallback) -> Callable[[], None]:
        """Call ``callback(error)`` with every :class:`~sddsf.errors.SddsfError` of
        event callbacks, document observers and background syncs (without one they
        are logged). Returns a function that removes it."""
        return self.events.on_error(callback)

    def live(self, space: bytes | str, name: str, *, doc: pycrdt.Doc[Any] | None = None,
             settings: RunnerSettings | None = None) -> LiveDoc:
        """A live document: ``async with device.live(space, "notes", doc=d) as h:``.

        Args:
            space: the space id, or its name.
            name: the document's name in the space.
            doc: the application's ``pycrdt.Doc`` to keep in sync (None: a new one,
                ``handle.doc``). The document as stored on this device is applied
                into it first; what it held already becomes an edit of this device.
            settings: the background sync's timing, used by the first live
                handle of this device (default :data:`~sddsf.client.live.LIVE_SETTINGS`).

        Returns:
            A :class:`~sddsf.client.live.LiveDoc`; entering it binds ``doc``, starts
            the background sync and returns the handle.
        """
        from sddsf.client.live import LiveDoc  # noqa: PLC0415 - live imports the runner

        space_id = self.space_by_name(space) if isinstance(space, str) else space
        return LiveDoc(cast("SyncHost", self), space_id, name, doc, settings)
