"""Policy transitions end to end: a device whose posture drops becomes read-only
(pulls work, pushes refused ``policy_read_only``), then denied (no session,
``policy_denied``), and is trusted again once it reports a good posture (reports
are self-authenticating, so a denied device can still send one)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from ctlkit import DAY_MS, GOOD, HOUR_MS, Account, open_relay
from relaykit import T0, Clock

from sddsf.errors import AuthorizationError, Code, ConfigError
from sddsf.protocol.audit import AuditKind, decode_entry
from sddsf.protocol.encpolicy import (
    MAX_KDF_M_KIB,
    MAX_KDF_P,
    MAX_KDF_T,
    MIN_EPOCH_AGE_S,
    EncryptionPolicy,
    clamp,
    strictest,
)
from sddsf.relay.controller.policy import ControllerPolicy, load_policy

STRICT = """
[thresholds]
full = 75
read_only = 40

[posture]
min_os_version = { Linux = "5.0" }
"""


async def test_posture_drop_read_only_then_denied_then_restored(tmp_path: Path) -> None:
    clock = Clock(T0)
    app, storage = await open_relay(tmp_path, clock, STRICT)
    a = await Account(app, storage, clock).start(2)
    clock.now = T0 + 8 * DAY_MS  # the devices are a week old: no new-device factor
    try:
        await a.posture(1, GOOD)
        assert (await a.controller.trust(a.aid, a.device_id(1))).score == 100
        assert await a.push(1) == ["accepted"]

        clock.now += 1
        weak = replace(GOOD, key_storage="plaintext", rooted="unknown")  # 100 - 25 - 5
        assert (await a.posture(1, weak)).audit_seq is not None
        held = a.world.op(1, ts=clock.now)
        with pytest.raises(AuthorizationError) as refused:
            await a.client(1).upload(a.world.space, [held.raw])
        assert refused.value.code is Code.POLICY_READ_ONLY
        ops, _ = await a.client(1).pull(a.world.space)  # may pull
        assert len(ops) == 1
        [me] = [d for d in await a.client(0).device_trust() if d.name == "dev1"]
        assert (me.score, me.access) == (70, "read_only")
        assert {f.name for f in me.factors} == {"key_storage", "rooted"}

        clock.now += 1
        await a.posture(1, replace(weak, rooted="yes"))  # 100 - 25 - 45
        with pytest.raises(AuthorizationError) as denied:
            await a.client(1).pull(a.world.space)  # the open session is refused too
        assert denied.value.code is Code.POLICY_DENIED
        a.client(1).forget_session()
        with pytest.raises(AuthorizationError) as no_session:
            await a.client(1).list_spaces()
        assert no_session.value.code is Code.POLICY_DENIED

        clock.now += 1
        await a.posture(1, replace(GOOD, os_version="4.19"))  # an OS below the minimum
        outdated = await a.controller.trust(a.aid, a.device_id(1))
        assert (outdated.score, [f.name for f in outdated.factors]) == (80, ["os_outdated"])
        clock.now += 1
        await a.posture(1, GOOD)
        results, _ = await a.client(1).upload(a.world.space, [held.raw])
        assert results[0].status == "accepted"

        clock.now += 2 * DAY_MS  # no fresh posture: stale lowers trust
        factors = {f.name for f in (await a.controller.trust(a.aid, a.device_id(1))).factors}
        assert "posture_stale" in factors
        a.client(1).forget_session()
        await a.client(1).list_spaces()  # ...but never blocks the session that refreshes it

        kinds = [decode_entry(e).kind for _, e in await storage.audit_entries(a.aid, 0, 500)]
        assert kinds.count(AuditKind.POSTURE) == 5  # one per change (not per repeat)
        assert AuditKind.POLICY in kinds
    finally:
        await a.close()
        await storage.close()


async def test_a_repeated_posture_is_not_news_and_an_older_one_is_ignored(tmp_path: Path) -> None:
    clock = Clock(T0 + 12 * HOUR_MS)
    app, storage = await open_relay(tmp_path, clock)
    a = await Account(app, storage, clock).start(1)
    try:
        first = await a.posture(0, GOOD)
        assert first.stored and first.audit_seq is not None
        clock.now += 1
        again = await a.posture(0, GOOD)
        assert again.stored and again.audit_seq is None
        clock.now -= 10
        older = await a.posture(0, replace(GOOD, rooted="yes"))
        assert not older.stored
        assert (await a.controller.trust(a.aid, a.device_id(0))).access.value == "full"
    finally:
        await a.close()
        await storage.close()


def test_policy_file_is_strict(tmp_path: Path) -> None:
    assert load_policy("") == ControllerPolicy()
    p = tmp_path / "p.toml"
    p.write_text(STRICT)
    assert load_policy(str(p)).thresholds.full == 75
    for bad in ("[thresholds]\nfull = 10\nread_only = 50\n", "[tresholds]\nfull = 1\n",
                "[detectors]\nreplays = { threshold = 3 }\n",
                "[posture]\nrequired_key_storage = ['tape']\n",
                "[thresholds]\nfull = 'high'\n"):
        p.write_text(bad)
        with pytest.raises(ConfigError):
            load_policy(str(p))


def test_a_published_encryption_policy_is_clamped_before_it_is_merged() -> None:
    hostile = EncryptionPolicy(min_kdf_t=64, min_kdf_m_kib=4 * 1024 * 1024, min_kdf_p=64,
                               suites=(1,), max_epoch_age_s=1)
    bounded, changed = clamp(hostile)
    assert (bounded.max_epoch_age_s, bounded.min_kdf_t, bounded.min_kdf_m_kib,
            bounded.min_kdf_p) == (MIN_EPOCH_AGE_S, MAX_KDF_T, MAX_KDF_M_KIB, MAX_KDF_P)
    assert set(changed) == {"max_epoch_age_s", "min_kdf_t", "min_kdf_m_kib", "min_kdf_p"}
    assert strictest(None, hostile) == bounded
    own = EncryptionPolicy(3, 64 * 1024, 1, (1,), 90 * 86_400)
    assert strictest(own, hostile).max_epoch_age_s == MIN_EPOCH_AGE_S
    sane = EncryptionPolicy(4, 128 * 1024, 2, (1,), 7200)
    assert clamp(sane) == (sane, ())
    assert strictest(own, sane) == EncryptionPolicy(4, 128 * 1024, 2, (1,), 7200)
