"""A benign workload (several devices over simulated days, injected clock) raises
no alert, and every attack injected after it is caught by its rule. The figures
at scale come from ``bench/controller_fp.py``."""

from __future__ import annotations

import random
from pathlib import Path

from ctlkit import DAY_MS, HOUR_MS, Account, open_relay
from relaykit import T0, Clock
from workload import ATTACKS, benign


async def test_benign_days_raise_no_alert_and_attacks_are_caught(tmp_path: Path) -> None:
    clock = Clock(T0 + 7 * HOUR_MS)
    app, storage = await open_relay(tmp_path, clock)
    a = await Account(app, storage, clock).start(4)
    try:
        load = await benign(a, days=4, rng=random.Random(7))
        assert load.device_days >= 12 and load.sessions >= 40
        assert await a.rules() == []  # the false-positive count of this run
        caught = []
        for n, (name, (attack, rule)) in enumerate(sorted(ATTACKS.items())):
            a.clock.now = max(a.clock.now, T0 + (5 + n) * DAY_MS + 12 * HOUR_MS)
            device = n % 4
            await attack(a, device)
            if rule in [r for r, _ in await a.rules()]:
                caught.append(name)
        assert caught == sorted(ATTACKS)
    finally:
        await a.close()
        await storage.close()
