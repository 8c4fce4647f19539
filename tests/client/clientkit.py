"""Test helpers for the client: an in-process relay and device homes."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "relay"))

from relaykit import Clock, make_app

from sddsf.client.device import Device
from sddsf.relay.storage import open_storage
from sddsf.relay.storage.base import RelayStorage

PASS = "correct horse battery staple"  # noqa: S105 - a test passphrase


def passphrase() -> str:
    return PASS


class InProcessRelay:
    """A relay app served through httpx's ASGI transport (no sockets)."""

    def __init__(self, storage: RelayStorage, clock: Clock) -> None:
        self.app = make_app(storage, clock)
        self.clock = clock
        self.storage = storage

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.app)

    async def new_account(self, home: Path, name: str = "laptop") -> tuple[Device, bytes]:
        return await Device.create_account(home, "http://relay.test", name,
                                           passphrase=passphrase, transport=self.transport(),
                                           clock=self.clock)

    async def add(self, approver: Device, home: Path, name: str) -> Device:
        return await Device.add_local(approver, home, name, passphrase=passphrase,
                                      transport=self.transport(), clock=self.clock)


@contextlib.asynccontextmanager
async def sqlite_relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    """A relay app (default settings) on SQLite in ``tmp_path``, at the real time."""
    storage = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    await storage.open()
    try:
        yield InProcessRelay(storage, Clock(time.time_ns() // 1_000_000))
    finally:
        await storage.close()
