"""Shortening a veto window with entry timestamps (relay edge review, finding 16).

A governed account's veto window is measured between the propose and enact
entries' timestamps, which the signing devices choose. The relay bounded each
approval entry's timestamp to its clock ± ``max_skew_s``, so a device could date
the proposal ``max_skew_s`` early and the enactment ``max_skew_s`` late and
enact up to 20 minutes (2 x 600 s) before the window had passed in real time.
The relay now measures the window on its own clock: it refuses an enactment
before (its time of receipt of the proposal) + the veto window.

In process over real SQLite with an injected clock.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from edgekit import Relay, new_account, relay_app
from relaykit import World

from sddsf.errors import ClockSkewError
from sddsf.protocol import registry as reg
from sddsf.protocol.approval import ActionType

WINDOW_S = 3600


async def append(relay: Relay, world: World, entry: bytes, device: int = 0) -> None:
    async with relay.client(world, device) as c:
        await c.append_registry(world.account.account_id, entry)
    world.entries.append(entry)


async def governed_revocation(relay: Relay) -> tuple[World, bytes, int]:
    """Three devices, 2 approvals and a one-hour veto window; device 0 proposes
    revoking device 2 with the earliest time the relay accepts, device 1 approves.
    Returns the world, the proposal id and the relay's time of the proposal."""
    skew = relay.ctx.settings.max_skew_s * 1000
    now = relay.clock.now
    # The devices were added (dated by the relay's clock) before the earliest
    # date the proposal may carry: entry dates never go back along the chain.
    relay.clock.now = now - skew - 120_000
    world = await new_account(relay, 3)
    relay.clock.now = now
    await append(relay, world, reg.set_policy(world.state, world.devices[0], {
        "approvals": 2, "veto_window_s": WINDOW_S}, now - skew - 60_000))
    proposal = reg.propose(world.state, world.devices[0], ActionType.REVOKE,
                           {"target": world.devices[2].device_id, "reason": "stolen"},
                           now - skew + 1000)
    await append(relay, world, proposal)
    await append(relay, world, reg.approve(world.state, world.devices[1],
                                           reg.entry_hash(proposal), now), device=1)
    return world, reg.entry_hash(proposal), now


async def test_a_dated_enactment_cannot_end_the_window_early(tmp_path: Path) -> None:
    async with relay_app(tmp_path) as relay:
        world, pid, proposed_at = await governed_revocation(relay)
        skew = relay.ctx.settings.max_skew_s * 1000
        # 41 minutes later in real time, dated as late as the relay accepts:
        # by the entries' timestamps the hour has passed.
        relay.clock.now = proposed_at + WINDOW_S * 1000 - 2 * skew + 60_000
        early = reg.enact(world.state, world.devices[0], pid, relay.clock.now + skew - 1000)
        with pytest.raises(ClockSkewError, match=r"veto window by the relay.s clock"):
            await append(relay, world, early)
        assert world.state.device(world.devices[2].device_id) is not None
        async with relay.client(world, 1) as c:
            stored = await c.registry(world.account.account_id, 0)
        assert len(stored) == len(world.entries)  # nothing was stored
        # once the hour has passed on the relay's clock, it is enacted
        relay.clock.now = proposed_at + WINDOW_S * 1000 + 1000
        await append(relay, world, reg.enact(world.state, world.devices[0], pid,
                                             relay.clock.now))
        assert not world.state.is_active(world.devices[2].device_id)
