"""A benign synthetic workload, and attacks to inject, for measuring the controller.

Several devices of one account live through simulated days (the relay's clock is
injected): each has its own active hours, opens a few sessions a day (each with
a fresh posture report), pushes a noisy number of ops per session (sometimes a
burst of three times as many), pulls, sometimes stays offline for a day, and
sometimes reports a vault deletion it saw. Every request is real: signed,
verified and stored by the relay app. Used by tests/controller/test_benign.py
and bench/controller_fp.py.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ctlkit import DAY_MS, HOUR_MS, Account, bad_signature, replay
from relaykit import T0

from sddsf.protocol import registry as reg
from sddsf.protocol.posture import ReportKind


@dataclass
class Load:
    """What a run did."""

    device_days: int = 0
    sessions: int = 0
    ops: int = 0


async def benign(a: Account, days: int, rng: random.Random, *, first_day: int = 0) -> Load:
    """Play ``days`` benign days for every device of ``a`` (events in time order)."""
    load = Load()
    devices = range(len(a.clients))
    events: list[tuple[int, int, int]] = []  # (time, device, ops)
    for day in range(first_day, first_day + days):
        for i in devices:
            if rng.random() < 0.1:
                continue  # offline today
            load.device_days += 1
            start = 7 + (i * 3) % 8  # each device has its own day
            for s in range(rng.randint(2, 6)):
                at = T0 + day * DAY_MS + (start + 2 * s) * HOUR_MS + rng.randint(0, 3_500_000)
                n = max(1, round(rng.gauss(10, 4)))
                if rng.random() < 0.05:
                    n *= 3
                events.append((at, i, n))
    for at, i, n in sorted(events):
        a.clock.now = max(a.clock.now + 1, at)
        a.client(i).forget_session()
        await a.posture(i)
        await a.push(i, n)
        await a.client(i).pull(a.world.space, after=-1, limit=1)
        load.sessions += 1
        load.ops += n
        if rng.random() < 0.05:
            other = a.device_id(rng.choice([d for d in devices if d != i]))
            await a.report(i, ReportKind.TOMBSTONES, {"subject": other, "count": 1,
                                                     "since": 0})
    return load


Attack = Callable[[Account, int], Awaitable[None]]


async def fork(a: Account, i: int) -> None:
    first = a.world.op(i, ts=a.clock.now)
    rival = a.world.op(i, ts=a.clock.now, seq=first.header.seq, prev=first.header.prev,
                       text=b"rival", record=False)
    await a.client(i).upload(a.world.space, [first.raw])
    await a.client(i).upload(a.world.space, [rival.raw])


async def signature_failures(a: Account, i: int) -> None:
    bad = [bad_signature(a.world.op(i, ts=a.clock.now, record=False).raw) for _ in range(6)]
    await a.client(i).upload(a.world.space, bad, proofs=False)


async def replays(a: Account, i: int) -> None:
    for _ in range(5):  # a replay ends its session: one captured request of each of five
        a.client(i).forget_session()
        await replay(a.client(i), "/v1/ws/ticket", {}, times=2)


async def deletions(a: Account, i: int) -> None:
    observer = (i + 1) % len(a.clients)
    await a.report(observer, ReportKind.TOMBSTONES, {"subject": a.device_id(i), "count": 40,
                                                     "since": 0})


async def pairing(a: Account, i: int) -> None:
    for _ in range(6):
        a.clock.now += 1  # six statements (an identical copy would be a replay)
        await a.report(i, ReportKind.PAIRING, {"outcome": "failed"})


async def volume(a: Account, i: int) -> None:
    await a.push(i, 700)


async def unusual_hour(a: Account, i: int) -> None:
    day = (a.clock.now - T0) // DAY_MS + 1
    a.clock.now = T0 + day * DAY_MS + 3 * HOUR_MS
    state = a.world.state
    new = next(k for k, d in enumerate(a.world.devices) if state.device(d.device_id) is None)
    entry = reg.add_device(state, a.world.devices[i], a.world.devices[new], f"night{new}",
                           a.clock.now)
    a.world.entries.append(entry)
    await a.client(i).append_registry(a.aid, entry)


#: attack -> the rule that should catch it
ATTACKS: dict[str, tuple[Attack, str]] = {
    "fork": (fork, "fork"),
    "signature_failures": (signature_failures, "sig_failure_burst"),
    "replays": (replays, "replay_burst"),
    "deletions": (deletions, "deletion_burst"),
    "pairing": (pairing, "pairing_burst"),
    "volume": (volume, "volume_spike"),
    "unusual_hour": (unusual_hour, "unusual_hour"),
}
