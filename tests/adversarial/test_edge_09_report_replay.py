"""Replayed device reports (relay edge review, finding 9).

``POST /v1/accounts/{id}/reports`` needs no session (a denied device must be able
to send a better posture), so a signed report is its own credential. Anyone who
saw one (on the wire, or in the audit log every device of the account reads) must
not be able to submit it again: not inside the freshness window (the relay
remembers each report's digest, in storage, so also across a restart), not after
it (the report's time is bounded in the past too). A device that signs fresh
reports in a loop cannot grow the audit log without bound either (a per-device
budget of audited events).

In process over real SQLite with an injected clock; every request is real HTTP
through the relay app.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from edgekit import Relay, new_account, relay_app
from relaykit import World

from sddsf.protocol.audit import decode_entry
from sddsf.protocol.posture import ReportKind, sign_report
from sddsf.wire import b64


async def post_report(relay: Relay, world: World, raw: bytes) -> httpx.Response:
    async with relay.http() as h:
        return await h.post(f"/v1/accounts/{b64(world.account.account_id)}/reports",
                            json={"report": b64(raw)})


def pairing_report(world: World, device: int, ts: int, outcome: str = "failed") -> bytes:
    return sign_report(world.devices[device], world.account.account_id, ReportKind.PAIRING,
                       {"outcome": outcome}, ts)


async def audit_size(relay: Relay, world: World) -> int:
    assert relay.storage is not None
    return await relay.storage.audit_size(world.account.account_id)


async def test_a_captured_report_is_accepted_once(tmp_path: Path) -> None:
    async with relay_app(tmp_path) as relay:
        world = await new_account(relay, 2)
        raw = pairing_report(world, 1, relay.clock.now)
        first = await post_report(relay, world, raw)
        assert first.status_code == 200 and first.json()["audit_seq"] is not None
        size = await audit_size(relay, world)
        before = (await relay.ctx.controller.trust(world.account.account_id,
                                                   world.devices[1].device_id)).score
        replays = [await post_report(relay, world, raw) for _ in range(6)]
        assert {(r.status_code, r.json().get("code")) for r in replays} == {(401, "replay")}
        # nothing changed: no audit entry, no alert, no signal, same trust
        assert await audit_size(relay, world) == size
        alerts = await relay.ctx.controller.alerts(world.account.account_id,
                                                   include_acked=True)
        assert not [a for a in alerts if a.rule == "pairing_burst"]
        after = await relay.ctx.controller.trust(world.account.account_id,
                                                 world.devices[1].device_id)
        assert after.score == before
        # the device's next (fresh) report is accepted
        relay.clock.now += 1
        fresh = await post_report(relay, world, pairing_report(world, 1, relay.clock.now))
        assert fresh.status_code == 200


async def test_a_report_copied_from_the_audit_log_is_refused(tmp_path: Path) -> None:
    async with relay_app(tmp_path) as relay:
        world = await new_account(relay, 2)
        subject = world.devices[0].device_id
        raw = sign_report(world.devices[1], world.account.account_id, ReportKind.TOMBSTONES,
                          {"subject": subject, "count": 7, "since": 0}, relay.clock.now)
        assert (await post_report(relay, world, raw)).status_code == 200
        # any device of the account reads the log, and with it the signed report
        async with relay.client(world, 0) as reader:
            rows, _ = await reader.audit_page(0, 1000)
        logged = [decode_entry(e).report for _, e in rows if decode_entry(e).report]
        assert raw in logged
        size = await audit_size(relay, world)
        for copy in logged:
            r = await post_report(relay, world, copy)
            assert r.status_code in (400, 401), r.text
            assert r.json()["code"] in ("replay", "clock_skew")
        assert await audit_size(relay, world) == size


async def test_replay_after_the_window_and_after_a_restart_is_refused(tmp_path: Path) -> None:
    async with relay_app(tmp_path) as relay:
        world = await new_account(relay, 2)
        raw = pairing_report(world, 1, relay.clock.now)
        assert (await post_report(relay, world, raw)).status_code == 200
        await relay.restart()  # the digest is remembered in storage, not in the process
        r = await post_report(relay, world, raw)
        assert (r.status_code, r.json()["code"]) == (401, "replay")
        window = relay.ctx.settings.request_window_s * 1000
        relay.clock.now += window + 1000  # outside the freshness window: too old
        r = await post_report(relay, world, raw)
        assert (r.status_code, r.json()["code"]) == (400, "clock_skew")
        old = pairing_report(world, 1, relay.clock.now - window - 1000, "expired")
        r = await post_report(relay, world, old)  # never seen, but signed too long ago
        assert (r.status_code, r.json()["code"]) == (400, "clock_skew")


async def test_audit_growth_per_device_is_capped(tmp_path: Path) -> None:
    # A device holding its own key signs distinct, fresh reports in a loop: with
    # the default settings it gets a burst of audited events, then 429. (The
    # per-address limit is lifted: the device could use many addresses.)
    async with relay_app(tmp_path, rate_ip_per_s=1e6, rate_ip_burst=1e6) as relay:
        world = await new_account(relay, 2)
        subject = world.devices[0].device_id
        size = await audit_size(relay, world)
        statuses = []
        for i in range(300):
            relay.clock.now += 1
            raw = sign_report(world.devices[1], world.account.account_id,
                              ReportKind.TOMBSTONES,
                              {"subject": subject, "count": 1, "since": i}, relay.clock.now)
            r = await post_report(relay, world, raw)
            statuses.append((r.status_code, r.json().get("code")))
        grown = await audit_size(relay, world) - size
        assert grown <= 150, f"{grown} audit entries from one device in 0.3 s"
        assert (429, "rate_limited") in statuses
        assert statuses[0] == (200, None)
        # the other device's budget is its own
        r = await post_report(relay, world, pairing_report(world, 0, relay.clock.now))
        assert r.status_code == 200
