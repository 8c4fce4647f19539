"""Every Transport passes one conformance suite: the relay over HTTP + WebSocket
(a real relay process on loopback), the in-process relay, and the tampering
harness in its honest mode (over the in-process relay)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "relay"))

from livekit import Relays

from sddsf.client.relay_client import RelayClient
from sddsf.client.transport.base import Transport
from sddsf.client.transport.relay import RelayTransport
from sddsf.protocol.identity import DeviceKeys
from sddsf.testing.memory_transport import InProcessRelay
from sddsf.testing.tampering import TamperingTransport
from sddsf.testing.transport_conformance import CHECKS, TransportFactory

Check = Callable[[TransportFactory], Awaitable[None]]
IMPLEMENTATIONS = ("relay", "memory", "tampering-honest")


@pytest.fixture(scope="module")
def live_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One relay process on loopback for the module (each check makes its own account)."""
    home = tmp_path_factory.mktemp("relay")
    relays = Relays(home)
    try:
        relay = relays.start("--db", f"sqlite:///{home / 'relay.db'}")
        yield relay.base_url
    finally:
        relays.stop_all()


@pytest.fixture
async def factory(request: pytest.FixtureRequest) -> AsyncIterator[TransportFactory]:
    kind = request.param
    if kind == "relay":
        base_url: str = request.getfixturevalue("live_relay")

        async def over_http(device: DeviceKeys, account_id: bytes) -> Transport:
            return RelayTransport(RelayClient(base_url, device=device, account_id=account_id))
        yield over_http
        return
    async with InProcessRelay() as relay:
        async def in_process(device: DeviceKeys, account_id: bytes) -> Transport:
            inner = relay.transport_for(device, account_id)
            return inner if kind == "memory" else TamperingTransport(inner, relay_key=relay.key)
        yield in_process


@pytest.mark.parametrize("factory", IMPLEMENTATIONS, indirect=True)
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_transport_conformance(check: Check, factory: TransportFactory) -> None:
    await check(factory)
