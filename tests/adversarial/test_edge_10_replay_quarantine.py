"""Replays and forgeries under a leaked session token, and the owner's way out of a
quarantine (relay edge review, finding 10; also: an alert about the only active
device could never be cleared).

A replayed signed request, or a bad request signature under a valid bearer
token, is evidence that the *token* leaked (a logging proxy, TLS interception),
not that the device misbehaved: the relay ends that session and does not count
it against the device, so an eavesdropper cannot quarantine a device with three
replays. A quarantine can always be lifted by the owner: with the account key
(``sddsf alerts --ack ID --phrase``), or it ends by itself after
``alerts.quarantine_max_s``. The CLI only suggests commands that work: the CLI
test runs every command ``sddsf alerts`` suggests.

In process over real SQLite (injected clock), and the real ``sddsf`` command
against a real ``sddsf relay serve`` process.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from edgekit import DAY_MS, Relay, new_account, relay_app
from livekit import RelayProcess, Relays, write_key_file
from pycrdt import Map
from relaykit import World, client_for
from test_cli_homes import cli_env, ok, ok_json, spawn

from sddsf.client.device import Device
from sddsf.client.relay_client import RelayClient
from sddsf.errors import AuthorizationError, Code
from sddsf.protocol import auth
from sddsf.wire import b64


class Recorder(httpx.AsyncBaseTransport):
    """Passes requests through and keeps a copy of each (what an eavesdropper has)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.captured: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.captured.append(request)
        return await self.inner.handle_async_request(request)

    def last(self, path: str) -> httpx.Request:
        return [r for r in self.captured if r.url.path == path][-1]


def recorded_client(relay: Relay, world: World, device: int) -> tuple[RelayClient, Recorder]:
    recorder = Recorder(httpx.ASGITransport(app=relay.app))
    return RelayClient("http://relay.test", device=world.devices[device],
                       account_id=world.account.account_id, transport=recorder,
                       clock=relay.clock), recorder


async def send(relay: Relay, request: httpx.Request,
               headers: dict[str, str] | None = None) -> tuple[int, str | None]:
    async with relay.http() as h:
        r = await h.request(request.method, request.url.path,
                            headers={**request.headers, **(headers or {})},
                            content=request.content)
    return r.status_code, r.json().get("code")


async def quarantines(relay: Relay, world: World, device: int) -> list[str]:
    alerts = await relay.ctx.controller.alerts(world.account.account_id, include_acked=False)
    return [a.rule for a in alerts
            if a.device_id == world.devices[device].device_id and a.quarantine]


async def test_replays_end_the_leaked_session_and_do_not_quarantine(tmp_path: Path) -> None:
    async with relay_app(tmp_path) as relay:
        world = await new_account(relay, 2)
        victim, recorder = recorded_client(relay, world, 1)
        await victim.ws_ticket()
        captured = recorder.last("/v1/ws/ticket")
        relay.clock.now += 30_000  # replayed later (a copy within seconds is a duplicate)
        outcomes = [await send(relay, captured) for _ in range(6)]
        # The first replay is caught by the nonce and ends the session; the token
        # is then worthless, so later copies are not even a replay.
        assert outcomes[0] == (401, "replay")
        assert set(outcomes[1:]) == {(401, "unauthenticated")}
        assert await quarantines(relay, world, 1) == []
        score = await relay.ctx.controller.trust(world.account.account_id,
                                                 world.devices[1].device_id)
        assert score.access.value == "full"
        # the device itself carries on: a new session, and its writes are accepted
        results, _ = await victim.upload(world.space, [world.op(1).raw])
        assert results[0].status == "accepted"
        await victim.aclose()


async def test_forged_requests_under_a_leaked_token_do_not_quarantine(tmp_path: Path) -> None:
    async with relay_app(tmp_path) as relay:
        world = await new_account(relay, 2)
        victim, recorder = recorded_client(relay, world, 1)
        await victim.ws_ticket()
        captured = recorder.last("/v1/ws/ticket")
        forged = []
        for i in range(8):  # the token without the device key: garbage signatures
            forged.append(await send(relay, captured, {
                "x-sddsf-nonce": b64(bytes([i]) * 16),
                "x-sddsf-timestamp": str(relay.clock.now),
                "x-sddsf-signature": b64(bytes([i]) * 64)}))
        assert set(forged) == {(401, "unauthenticated")}
        assert await quarantines(relay, world, 1) == []
        results, _ = await victim.upload(world.space, [world.op(1).raw])
        assert results[0].status == "accepted"
        await victim.aclose()


async def quarantine_only_device(relay: Relay) -> tuple[World, RelayClient, bytes]:
    """A one-device account whose device uploaded forged ops (its own signed
    requests): a genuine ``sig_failure_burst`` that quarantines it."""
    world = await new_account(relay, 1)
    device = client_for(relay.app, world, 0, relay.clock)
    bad = []
    for _ in range(5):
        raw = world.op(0, record=False).raw
        bad.append(raw[:-1] + bytes([raw[-1] ^ 1]))
    results, _ = await device.upload(world.space, bad, proofs=False)
    assert {r.code for r in results} == {"sig_invalid"}
    [alert] = [a for a in await relay.ctx.controller.alerts(world.account.account_id,
                                                            include_acked=False)
               if a.rule == "sig_failure_burst"]
    assert alert.quarantine
    with pytest.raises(AuthorizationError) as refused:
        await device.upload(world.space, [world.op(0, record=False).raw])
    assert refused.value.code is Code.POLICY_READ_ONLY
    return world, device, alert.alert_id


async def test_the_owner_lifts_the_quarantine_of_the_only_device_with_the_account_key(
        tmp_path: Path) -> None:
    async with relay_app(tmp_path) as relay:
        world, device, alert_id = await quarantine_only_device(relay)
        with pytest.raises(AuthorizationError, match="about itself"):
            await device.ack_alert(alert_id)  # a device still cannot clear its own alert
        acked = await device.ack_alerts_as_account(world.account, [alert_id])
        assert [a.alert_id for a in acked] == [alert_id]
        assert acked[0].acked_by == world.account.account_id
        results, _ = await device.upload(world.space, [world.op(0).raw])
        assert results[0].status == "accepted"
        # an acknowledgement of this account's alerts signed by another key is refused
        aid, stranger = world.account.account_id, World().account
        ts = relay.clock.now
        forged = stranger.sign(auth.alert_ack_message(aid, ts, []))
        async with relay.http() as h:
            r = await h.post(f"/v1/accounts/{b64(aid)}/alerts/ack", json={
                "alert_ids": [], "ts_ms": ts, "signature": b64(forged)})
        assert (r.status_code, r.json()["code"]) == (403, "not_authorized")
        await device.aclose()


async def test_a_quarantine_ends_by_itself(tmp_path: Path) -> None:
    async with relay_app(tmp_path) as relay:
        world, device, _ = await quarantine_only_device(relay)
        relay.clock.now += DAY_MS + 1000  # the default alerts.quarantine_max_s: one day
        device.forget_session()
        results, _ = await device.upload(world.space, [world.op(0).raw])
        assert results[0].status == "accepted"
        await device.aclose()


# ------------------------------------------------------------ the real CLI


@pytest.fixture(scope="module")
def relay_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("edge10-relay")
    key = write_key_file(work / "relay.key")
    started = Relays(work)
    try:
        yield started.start("--db", f"sqlite:///{work / 'relay.db'}",
                            env={"SDDSF_RELAY_KEY_FILE": str(key)})
    finally:
        started.stop_all()


def run_suggestion(home: Path, command: str, stdin: str) -> subprocess.CompletedProcess[str]:
    words = command.split()
    assert words[0] == "sddsf", command
    return subprocess.run([sys.executable, "-m", "sddsf", "--home", str(home), *words[1:]],
                          env=cli_env(), cwd=home.parent, input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)


async def forge_ops(home: Path, n: int = 5) -> None:
    d = Device.open(home, passphrase=None)
    try:
        [space] = [s for s, _ in d.spaces()]
        d.doc(space, "kv").get("kv", type=Map)["k"] = "v"
        d.flush()
        [(_, raw)] = d.store.scan("pending", space)
        bad = [raw[:-1] + bytes([raw[-1] ^ 1])] * n
        results, _ = await d.relay.upload(space, bad, proofs=False)
        assert {r.code for r in results} == {"sig_invalid"}
    finally:
        await d.close()


def test_cli_suggestions_work_for_an_alert_about_the_only_device(
        relay_process: RelayProcess, tmp_path: Path) -> None:
    home, phrase = tmp_path / "laptop", tmp_path / "phrase.txt"
    ok(home, "init", "--relay", relay_process.base_url, "--name", "laptop", "--phrase-out",
       str(phrase), "--insecure-plaintext-key")
    ok(home, "space", "create", "notes")
    ok(home, "sync")
    asyncio.run(forge_ops(home))
    # Quarantined: the edit stays pending, and the sync says so (never silently).
    held = spawn(home, "sync", "--json").result()
    assert held.returncode == 1 and "[policy_read_only]" in held.stderr, held
    assert json.loads(held.stdout)["pushed"] == 0
    out = ok(home, "alerts")
    assert "sig_failure_burst" in out
    suggested = re.findall(r"`(sddsf [^`]+)`", out)
    assert suggested, out
    # the plain acknowledgement is refused here, and its error names what works
    [alert] = ok_json(home, "alerts")
    refused = run_suggestion(home, f"sddsf alerts --ack {alert['id'][:12]}", stdin="")
    assert refused.returncode == 1 and "about itself" in refused.stderr, refused.stderr
    suggested += re.findall(r"`(sddsf [^`]+)`", refused.stderr)
    for command in [*suggested, "sddsf alerts --ack all --phrase"]:
        done = run_suggestion(home, command, stdin=phrase.read_text() + "y\n")
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert ok_json(home, "alerts") == []
    assert ok_json(home, "sync")["pushed"] == 1


async def account_alerts(relay: Relay, world: World) -> list[str]:
    return [a.rule for a in await relay.ctx.controller.alerts(world.account.account_id,
                                                              include_acked=False)]


async def test_duplicates_from_a_retrying_proxy_are_not_counted_as_replays(
        tmp_path: Path) -> None:
    """A proxy that sends each signed upload three times (byte-identical copies
    within seconds): every copy is refused (nothing is done twice), but none
    counts toward ``replay_burst`` or ends the device's session, and every edit
    is accepted."""
    async with relay_app(tmp_path) as relay:
        world = await new_account(relay, 2)
        device, recorder = recorded_client(relay, world, 1)
        await device.list_spaces()
        for i in range(5):
            (r,), _ = await device.upload(world.space, [world.op(1, text=f"{i}".encode()).raw])
            assert r.status == "accepted"
            original = recorder.last(f"/v1/spaces/{b64(world.space)}/ops")
            relay.clock.now += 1000  # the proxy retries a second later
            assert [await send(relay, original) for _ in range(2)] == [(401, "replay")] * 2
        assert "replay_burst" not in await account_alerts(relay, world)
        sessions = len([r for r in recorder.captured if r.url.path == "/v1/auth/session"])
        assert sessions == 1  # the same session throughout
        await device.aclose()


async def test_replays_of_old_requests_still_count(tmp_path: Path) -> None:
    async with relay_app(tmp_path) as relay:
        world = await new_account(relay, 2)
        device, recorder = recorded_client(relay, world, 1)
        captured = []
        for _ in range(3):
            device.forget_session()  # a replay ends its session: one request per session
            await device.ws_ticket()
            captured.append(recorder.last("/v1/ws/ticket"))
        relay.clock.now += 30_000  # well after any retry, still inside the window
        assert [(await send(relay, c))[1] for c in captured] == ["replay"] * 3
        assert "replay_burst" in await account_alerts(relay, world)
        await device.aclose()
