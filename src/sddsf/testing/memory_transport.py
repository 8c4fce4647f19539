"""An in-process relay as a :class:`~sddsf.client.transport.base.Transport` (no sockets).

:class:`InProcessRelay` runs the relay's own application — the same edge
(sessions, request signatures, anti-replay, rate limits), fabric (verify with
the shared rules, order, append to the Merkle log, sign tree heads), snapshot
and controller code and storage backend that a relay process runs — inside the
caller's event loop; nothing is re-implemented here. Requests reach it through
httpx's ASGI transport, so :class:`MemoryTransport` is the
:class:`~sddsf.client.transport.relay.RelayTransport` request path without a
network, and its live channel subscribes to the relay's fan-out hub directly
instead of over a WebSocket.

Storage is the SQLite backend in a private temporary directory (the backend
refuses ``:memory:`` databases by design: a relay's log must be durable), or
any :class:`~sddsf.relay.storage.base.RelayStorage` the caller opened.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import httpx

from sddsf.client.relay_client import RelayClient
from sddsf.client.transport.base import (
    Notification,
    OpNotice,
    ResyncNotice,
    SubscribedNotice,
)
from sddsf.client.transport.relay import RelayTransport, live_closed, notification
from sddsf.crypto import Ed25519SigningKey, random_bytes
from sddsf.errors import Code, UnavailableError
from sddsf.protocol.identity import DeviceKeys
from sddsf.relay.app import create_app
from sddsf.relay.deps import RelayContext
from sddsf.relay.fanout import Subscriber
from sddsf.relay.settings import RelaySettings
from sddsf.relay.storage import SqliteStorage
from sddsf.relay.storage.base import RelayStorage

__all__ = ["BASE_URL", "InProcessRelay", "MemoryTransport"]

#: The URL devices of an in-process relay are configured with (never resolved).
BASE_URL = "http://relay.in-process"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class InProcessRelay:
    """The relay application, run in this process (see the module docstring).

    Use as ``async with InProcessRelay() as relay:``; :meth:`transport_for`
    gives each device its transport, :meth:`http_transport` an httpx transport
    for code that builds its own client (``Device.create_account(...,
    transport=relay.http_transport())``).

    Args:
        storage: an opened storage backend (default: SQLite in a temporary
            directory, opened and closed by this object).
        settings: the relay's settings (default: the relay's defaults).
        clock: milliseconds since the epoch, for the relay.
    """

    def __init__(self, storage: RelayStorage | None = None, *,
                 settings: RelaySettings | None = None,
                 clock: Callable[[], int] = _now_ms) -> None:
        self._own_dir = tempfile.TemporaryDirectory(prefix="sddsf-relay-") \
            if storage is None else None
        self.storage = storage or SqliteStorage(str(Path(self._own_dir.name) / "relay.db")
                                                if self._own_dir else "")
        self.settings = settings or RelaySettings(db="sqlite:////unused", key_file="/unused")
        self.key = Ed25519SigningKey.from_seed(random_bytes(32))
        self.clock = clock
        self.app = create_app(self.settings, self.storage, self.key, clock=clock)

    @property
    def context(self) -> RelayContext:
        """The relay's context (storage, fabric, hub, controller)."""
        ctx: RelayContext = self.app.state.relay
        return ctx

    async def open(self) -> InProcessRelay:
        """Open the storage this object owns (applies migrations) and start the
        relay's live delivery (what the application's lifespan starts in a relay
        process: without it, accepted ops are never fanned out)."""
        if self._own_dir is not None:
            await self.storage.open()
        await self.context.live.start()
        return self

    async def aclose(self) -> None:
        """Stop live delivery; close the storage this object owns and remove its
        directory."""
        await self.context.live.close()
        if self._own_dir is not None:
            await self.storage.close()
            self._own_dir.cleanup()

    async def __aenter__(self) -> InProcessRelay:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def http_transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport into the relay application."""
        return httpx.ASGITransport(app=self.app)

    def transport_for(self, device: DeviceKeys, account_id: bytes, *,
                      clock: Callable[[], int] | None = None) -> MemoryTransport:
        """A transport for one device of ``account_id``."""
        client = RelayClient(BASE_URL, device=device, account_id=account_id,
                             transport=self.http_transport(), clock=clock or self.clock)
        return MemoryTransport(client, self)


class MemoryTransport(RelayTransport):
    """A device's transport into an :class:`InProcessRelay` (no sockets)."""

    def __init__(self, client: RelayClient, relay: InProcessRelay) -> None:
        super().__init__(client, BASE_URL)
        self.relay = relay

    async def subscribe(self, space_ids: Sequence[bytes]) -> AsyncIterator[Notification]:
        """Subscribe to the relay's fan-out hub directly, with this device's session.

        Raises:
            AuthorizationError: the device may not read (revoked, denied).
            NotFoundError: a space is not this device's account's.
        """
        session = await self.open_session()  # as the WebSocket ticket requires
        del session
        device = self.client.device
        account_id = self.client.account_id
        if device is None or account_id is None:  # pragma: no cover - a session needs both
            raise UnavailableError("this transport has no device identity")
        ctx = self.relay.context
        registry = await ctx.fabric.registries.get(account_id)
        if not registry.is_active(device.device_id):
            raise live_closed(Code.REVOKED.value)
        sub = Subscriber(account_id, device.device_id, ctx.settings.ws_queue_max)
        ctx.hub.add(sub)
        try:
            for space_id in space_ids:
                # Subscribe first, then read the size (as the WebSocket route does).
                await ctx.fabric.space_for(space_id, account_id)
                ctx.hub.subscribe(sub, space_id)
                space = await ctx.fabric.space_for(space_id, account_id)
                yield SubscribedNotice(space.space_id, space.size)
            while True:
                message = await sub.next_message()
                kind, space_raw = message.get("type"), message.get("space")
                if kind == "close":  # the relay closes a revoked or denied device's channel
                    raise live_closed(str(message.get("reason", "")))
                if kind == "alert" and isinstance(message.get("frame"), str):
                    alert = notification(str(message["frame"]))  # as the socket sends it
                    if alert is not None:
                        yield alert
                    continue
                if not isinstance(space_raw, bytes):
                    continue  # not a log hint
                if kind == "op" and isinstance(message.get("offset"), int):
                    yield OpNotice(space_raw, int(str(message["offset"])))
                elif kind == "resync":
                    yield ResyncNotice(space_raw)
        finally:
            ctx.hub.remove(sub)
