"""A denied device keeps its live connection (relay edge review, finding 17).

When the security controller denies a device (``policy_denied``: its trust
score fell below ``thresholds.read_only``), its HTTP requests are refused, but
its open WebSocket kept receiving every op of the account's spaces. The relay
now closes the device's connections as revocation does (close code 4403, reason
``policy_denied``), and a WebSocket ticket it obtained before is refused.

Against a real ``sddsf relay serve`` process with a policy under which a device
that reports a rooted system is denied.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from livekit import (
    RelayProcess,
    Relays,
    client,
    close_code,
    connect_outcome,
    subscribe,
    ticket_url,
    write_key_file,
    ws_connect,
)
from relaykit import World

from sddsf.errors import AuthorizationError, Code
from sddsf.protocol.posture import Posture, ReportKind, sign_report

POLICY = "[thresholds]\nfull = 70\nread_only = 60\n"
ROOTED = Posture("Linux", "6.1.0", "0.1.0", bytes(32), "keyring", "yes")


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("edge17-relay")
    key = write_key_file(work / "relay.key")
    (work / "policy.toml").write_text(POLICY)
    started = Relays(work)
    try:
        yield started.start("--db", f"sqlite:///{work / 'relay.db'}",
                            env={"SDDSF_RELAY_KEY_FILE": str(key),
                                 "SDDSF_RELAY_POLICY_FILE": str(work / "policy.toml")})
    finally:
        started.stop_all()


async def world_on(relay: RelayProcess) -> World:
    world = World()
    async with client(relay, world) as c:
        await c.create_account(world.entries[0])
        await c.append_registry(world.account.account_id,
                                world.add_device(1, ts=time.time_ns() // 1_000_000))
        await c.create_space(world.space, world.key_package())
    return world


async def deny(relay: RelayProcess, world: World, device: int) -> None:
    """The device states a rooted system: under POLICY its score (55 at most) is denied."""
    report = sign_report(world.devices[device], world.account.account_id, ReportKind.POSTURE,
                         ROOTED.to_data(), time.time_ns() // 1_000_000)
    async with client(relay) as anonymous:
        await anonymous.submit_report(world.account.account_id, report)


async def test_a_denied_devices_socket_is_closed(relay: RelayProcess) -> None:
    world = await world_on(relay)
    async with client(relay, world, 1) as phone:
        ticket = await phone.ws_ticket()
    async with ws_connect(ticket_url(relay, ticket)) as ws:
        assert (await subscribe(ws, world.space))["type"] == "subscribed"
        await deny(relay, world, 1)
        async with client(relay, world, 1) as phone:
            with pytest.raises(AuthorizationError) as refused:
                await phone.list_spaces()
            assert refused.value.code is Code.POLICY_DENIED
        assert await close_code(ws) == 4403


async def test_a_ticket_from_before_the_denial_is_refused(relay: RelayProcess) -> None:
    world = await world_on(relay)
    async with client(relay, world, 1) as phone:
        ticket = await phone.ws_ticket()
    await deny(relay, world, 1)
    assert await connect_outcome(ticket_url(relay, ticket)) == ("close", 4403)
