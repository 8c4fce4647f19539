"""Each detector fires on a crafted scenario against a real relay app (real SQLite,
real signatures, injected clock), and its alert has the effects the policy names:
stored, audited, quarantine (read-only) until another device acknowledges it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ctlkit import DAY_MS, HOUR_MS, Account, bad_signature, open_relay, replay
from relaykit import T0, Clock

from sddsf.errors import AuthorizationError, Code
from sddsf.protocol import registry as reg
from sddsf.protocol.audit import AuditKind, decode_entry
from sddsf.protocol.identity import DeviceKeys
from sddsf.protocol.posture import ReportKind

POLICY = """
[detectors]
pairing = { threshold = 3, window_s = 3600 }
deletions = { threshold = 4, window_s = 3600 }
unusual_hour = { quiet_start = 2, quiet_end = 5, min_history = 10, max_share = 0.05 }
volume = { factor = 5.0, min_ops = 40 }
stats = { window_s = 600, alpha = 0.2, z_threshold = 6.0, min_windows = 6, min_count = 30 }
correlation = { window_s = 3600, min_devices = 2 }
ml = { enabled = false }
"""


@pytest.fixture
async def account(tmp_path: Path) -> AsyncIterator[Account]:
    clock = Clock(T0 + 12 * HOUR_MS)  # midday
    app, storage = await open_relay(tmp_path, clock, POLICY)
    acct = await Account(app, storage, clock).start(3)
    yield acct
    await acct.close()
    await storage.close()


async def test_fork_raises_an_alert_and_a_trust_factor(account: Account) -> None:
    a = account
    first = a.world.op(0, ts=a.clock.now)
    rival = a.world.op(0, ts=a.clock.now, seq=1, prev=first.header.prev, text=b"other",
                       record=False)
    results, _ = await a.client(0).upload(a.world.space, [first.raw])
    assert results[0].status == "accepted"
    results, _ = await a.client(0).upload(a.world.space, [rival.raw])
    assert results[0].code == "chain_fork"
    assert ("fork", a.device_id(0)) in await a.rules()
    score = await a.controller.trust(a.aid, a.device_id(0))
    assert {f.name for f in score.factors} >= {"forks", "open_alerts"}


async def test_signature_failure_burst_quarantines_until_acknowledged(account: Account) -> None:
    a = account
    await a.push(1)
    bad = [bad_signature(a.world.op(1, ts=a.clock.now, record=False).raw) for _ in range(5)]
    results, _ = await a.client(1).upload(a.world.space, bad, proofs=False)
    assert {r.code for r in results} == {"sig_invalid"}
    [alert] = [x for x in await a.alerts() if x.rule == "sig_failure_burst"]
    assert alert.device_id == a.device_id(1) and alert.quarantine and alert.severity == "high"
    # quarantined = read-only: pulls work, pushes are refused with policy_read_only
    await a.client(1).pull(a.world.space)
    held = a.world.op(1, ts=a.clock.now)  # the device keeps it, as a client does
    with pytest.raises(AuthorizationError) as refused:
        await a.client(1).upload(a.world.space, [held.raw])
    assert refused.value.code is Code.POLICY_READ_ONLY
    # the device cannot lift its own quarantine; another device can
    with pytest.raises(AuthorizationError):
        await a.client(1).ack_alert(alert.alert_id)
    acked = await a.client(0).ack_alert(alert.alert_id)
    assert acked.acked_by == a.device_id(0)
    results, _ = await a.client(1).upload(a.world.space, [held.raw])
    assert results[0].status == "accepted"


async def test_replay_burst(account: Account) -> None:
    a = account
    for _ in range(3):  # a replay ends its session: one captured request of three sessions
        a.client(2).forget_session()
        statuses = await replay(a.client(2), "/v1/ws/ticket", {}, times=2)
        assert statuses == [200, 401]
    [alert] = [x for x in await a.alerts() if x.rule == "replay_burst"]
    # the device's tokens leak; the device did nothing: an account alert naming it
    assert alert.device_id == b"" and not alert.quarantine
    assert a.device_id(2).hex()[:12] in alert.message


async def test_deletion_burst_from_the_devices_that_saw_the_tombstones(account: Account) -> None:
    a = account
    subject = a.device_id(1)
    out = await a.report(0, ReportKind.TOMBSTONES, {"subject": subject, "count": 2, "since": 0})
    assert out.audit_seq is not None
    assert "deletion_burst" not in [r for r, _ in await a.rules()]
    await a.report(2, ReportKind.TOMBSTONES, {"subject": subject, "count": 2, "since": 0})
    assert ("deletion_burst", subject) in await a.rules()


async def test_pairing_attempts_burst(account: Account) -> None:
    a = account
    for outcome in ("failed", "sas_mismatch"):
        await a.report(1, ReportKind.PAIRING, {"outcome": outcome})
    assert "pairing_burst" not in [r for r, _ in await a.rules()]
    entry = reg.add_device(a.world.state, a.world.devices[1], a.world.devices[3], "dev3",
                           a.clock.now)  # a device addition by the same device counts
    a.world.entries.append(entry)
    await a.client(1).append_registry(a.aid, entry)
    assert ("pairing_burst", a.device_id(1)) in await a.rules()


async def test_device_added_at_an_unusual_hour(account: Account) -> None:
    a = account
    for day in range(12):  # the account's habits: sessions around midday
        a.clock.now = T0 + day * DAY_MS + 12 * HOUR_MS
        a.client(0).forget_session()
        await a.client(0).list_spaces()
    await a.client(0).append_registry(a.aid, a.world.add_device(3, a.clock.now))  # midday
    assert "unusual_hour" not in [r for r, _ in await a.rules()]
    a.clock.now = T0 + 13 * DAY_MS + 3 * HOUR_MS  # 03:00
    await a.client(0).append_registry(a.aid, a.world.add_device(4, a.clock.now))
    assert ("unusual_hour", a.device_id(4)) in await a.rules()


async def test_volume_spike_and_rate_anomaly(account: Account) -> None:
    a = account
    for window in range(8):  # a steady baseline of ~8 ops per 10-minute window
        a.clock.now = T0 + 12 * HOUR_MS + window * 600_000
        assert await a.push(0, 8 + window % 3) == ["accepted"] * (8 + window % 3)
    assert not await a.rules()
    a.clock.now += 600_000
    await a.push(0, 60)
    rules = [r for r, _ in await a.rules()]
    assert "volume_spike" in rules and "rate_anomaly" in rules


async def test_alerts_on_two_devices_raise_an_account_alert(account: Account) -> None:
    a = account
    for i in (1, 2):
        await a.report(0, ReportKind.TOMBSTONES, {"subject": a.device_id(i), "count": 4,
                                                  "since": 0})
    rules = await a.rules()
    assert ("correlated", b"") in rules
    assert sum(r == "correlated" for r, _ in rules) == 1  # once per window


async def test_every_alert_is_in_the_audit_log(account: Account) -> None:
    a = account
    await a.report(0, ReportKind.TOMBSTONES, {"subject": a.device_id(1), "count": 9, "since": 0})
    entries = [decode_entry(e) for _, e in await a.storage.audit_entries(a.aid, 0, 100)]
    kinds = [e.kind for e in entries]
    assert AuditKind.DEVICE_ADDED in kinds and AuditKind.SESSION in kinds
    assert AuditKind.KEY_ROTATION not in kinds  # epoch 0 comes with the space
    alert = [e for e in entries if e.kind is AuditKind.ALERT]
    assert [e.data["rule"] for e in alert] == ["deletion_burst"]
    report = [e for e in entries if e.kind is AuditKind.REPORT]
    assert report and report[0].report and report[0].device == a.device_id(0)


async def test_weak_registry_policy_is_reported(tmp_path: Path) -> None:
    clock = Clock(T0)
    app, storage = await open_relay(tmp_path, clock, "[approvals]\nmin_approvals = 2\n")
    try:
        a = await Account(app, storage, clock).start(1)
        assert ("weak_registry_policy", b"") in await a.rules()
        await a.close()
    finally:
        await storage.close()


async def test_a_burst_of_device_additions_raises_a_high_alert(account: Account) -> None:
    # Two devices were added when the account started; the default rule alerts at
    # 8 device-signed additions within a day (half the registry's own window limit).
    a = account
    state = a.world.state

    async def add(i: int) -> None:
        nonlocal state
        new = DeviceKeys.from_seeds(bytes([i, 7]) * 16, bytes([i, 8]) * 16)
        entry = reg.add_device(state, a.world.devices[1], new, f"dummy {i}", a.clock.now)
        state = state.apply(entry)
        a.world.entries.append(entry)
        await a.client(1).append_registry(a.aid, entry)
        a.clock.now += 20 * 60_000

    for i in range(5):
        await add(i)
    assert "device_add_burst" not in [r for r, _ in await a.rules()]
    await add(5)
    [alert] = [x for x in await a.alerts() if x.rule == "device_add_burst"]
    assert (alert.device_id, alert.severity) == (a.device_id(1), "high")
    assert "8 devices were added" in alert.message
