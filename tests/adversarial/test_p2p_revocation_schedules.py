"""Revocations amid ops that spread between peers (protocol.md 23.8), over seeded
random schedules: every device ends with the same state, whoever applied which
op of the revoked device and whoever revoked it.

Four devices of one account share a space on an in-process relay. Each schedule
interleaves edits (the last device, the one that is later revoked, edits too),
catch-up exchanges between random pairs (registry entries, key packages and ops,
as a peer's answer brings them), and relay syncs of random devices; at a random
step a random other device revokes the last one, which then keeps editing and
exchanging with devices that have not heard of its revocation yet. In the end
the other three sync until nothing changes: their texts must be equal, and equal
to what a new device reads from the log alone.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pycrdt
import pytest
from clientkit import InProcessRelay, sqlite_relay
from relaykit import make_app

from p2pkit import devices, exchange, text
from sddsf.client.device import Device

STEPS = 40
#: Schedules run (40 under SDDSF_LONG_TESTS=1).
SEEDS = range(40 if os.environ.get("SDDSF_LONG_TESTS") == "1" else 5)
#: Four devices from one address sync often: request rates are not under test here.
LIFTED = {f"rate_{who}_{what}": 1e6 for who in ("ip", "device", "account")
          for what in ("per_s", "burst")}


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    async with sqlite_relay(tmp_path) as r:
        r.app = make_app(r.storage, r.clock, **LIFTED)
        yield r


def append(dev: Device, space: bytes, token: str) -> None:
    t = dev.doc(space, "t").get("t", type=pycrdt.Text)
    t.insert(len(str(t)), token)
    dev.flush()


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_revocation_amid_peer_exchanges_leaves_every_device_equal(
        relay: InProcessRelay, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    devs, space = await devices(relay, tmp_path, "a", "b", "c", "d")
    target, others = devs[-1], devs[:-1]
    revoke_at = rng.randrange(5, STEPS - 5)
    revoker = rng.choice(others)
    for step in range(STEPS):
        if step == revoke_at:
            await revoker.revoke(target.device_id, "stolen")
        revoked = step >= revoke_at
        action = rng.random()
        if action < 0.4:
            dev = rng.choice(devs)
            append(dev, space, f"[{dev.name}{step}]")
        elif action < 0.8:
            dev, peer = rng.sample(devs, 2)
            if revoked and dev is target:
                continue  # (what the revoked device takes in is its own affair)
            exchange(dev, peer, space)
        else:
            dev = rng.choice(others if revoked else devs)
            await dev.sync()
    for _ in range(3):
        for dev in others:
            await dev.sync()
    texts = {dev.name: text(dev, space) for dev in others}
    assert len(set(texts.values())) == 1, texts
    late = await relay.add(others[0], tmp_path / "late", "late")
    await late.sync()
    assert text(late, space) == texts[others[0].name]
    for dev in (*devs, late):
        await dev.close()
