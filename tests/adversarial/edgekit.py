"""Helpers of the relay-edge tests (``test_edge_*``): an in-process relay app over
real SQLite with an injected clock, an account whose devices act through real
signed requests, and raw HTTP for what an attacker sends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from relaykit import T0, Clock, World, client_for, make_app

from sddsf.client.relay_client import RelayClient
from sddsf.relay.storage import open_storage
from sddsf.relay.storage.base import RelayStorage

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass
class Relay:
    """A relay app in process over SQLite in ``path``; :meth:`restart` builds a new
    app over the same database (what a relay restart keeps is what storage keeps)."""

    path: Path
    clock: Clock
    settings: dict[str, Any] = field(default_factory=dict)
    storage: RelayStorage | None = None
    app: Any = None

    async def open(self) -> Relay:
        self.storage = open_storage(f"sqlite:///{self.path / 'relay.db'}")
        await self.storage.open()
        self.app = make_app(self.storage, self.clock, **self.settings)
        return self

    async def restart(self) -> None:
        await self.close()
        await self.open()

    async def close(self) -> None:
        if self.storage is not None:
            self.app.state.relay.fabric.close()
            await self.storage.close()
            self.storage = None

    @property
    def ctx(self) -> Any:
        return self.app.state.relay

    def http(self, client: tuple[str, int] = ("127.0.0.1", 40000)) -> httpx.AsyncClient:
        """Raw HTTP to the app, as seen from the socket address ``client``."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, client=client),
                                 base_url="http://relay.test")

    def client(self, world: World, device: int = 0) -> RelayClient:
        return client_for(self.app, world, device, self.clock)


@contextlib.asynccontextmanager
async def relay_app(path: Path, clock: Clock | None = None,
                    **settings: Any) -> AsyncIterator[Relay]:
    """A :class:`Relay` (closed afterwards)."""
    relay = await Relay(path, clock or Clock(T0 + 12 * HOUR_MS), dict(settings)).open()
    try:
        yield relay
    finally:
        await relay.close()


async def new_account(relay: Relay, devices: int = 2, *, space: bool = True) -> World:
    """An account with ``devices`` devices (device 0 made the others) and a space."""
    world = World()
    async with relay.client(world) as c:
        await c.create_account(world.entries[0])
        for i in range(1, devices):
            await c.append_registry(world.account.account_id,
                                    world.add_device(i, ts=relay.clock()))
        if space:
            await c.create_space(world.space, world.key_package())
    return world


def policy_file(path: Path, text: str) -> str:
    """Write a controller policy (TOML) and return its path."""
    path.write_text(text)
    return str(path)
