"""Against a real ``sddsf relay serve`` process: an alert reaches the account's
other device over WebSocket, ``sddsf alerts`` lists and acknowledges it (lifting
the quarantine that kept the device read-only), ``sddsf device list`` shows trust
and its factors, and ``sddsf audit --verify`` verifies from both device homes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ctlkit import bad_signature
from livekit import RelayProcess, Relays, recv_json, ticket_url, write_key_file, ws_connect
from pycrdt import Map
from test_cli_homes import fails, ok, ok_json

from sddsf.client.device import Device
from sddsf.protocol.envelope import decode_envelope
from sddsf.wire import b64


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("ctl-relay")
    key = write_key_file(work / "relay.key")
    (work / "policy.toml").write_text('[alerts]\nquarantine = ["sig_failure_burst"]\n')
    started = Relays(work)
    try:
        yield started.start("--db", f"sqlite:///{work / 'relay.db'}",
                            env={"SDDSF_RELAY_KEY_FILE": str(key),
                                 "SDDSF_RELAY_POLICY_FILE": str(work / "policy.toml")})
    finally:
        started.stop_all()


async def test_alerts_and_audit_across_homes(relay: RelayProcess, tmp_path: Path) -> None:
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    a, _ = await Device.create_account(home_a, relay.base_url, "laptop", passphrase=None,
                                       insecure_plaintext=True)
    b = await Device.add_local(a, home_b, "phone", passphrase=None, insecure_plaintext=True)
    space = await a.create_space("notes")
    await a.sync()
    await b.sync()
    ws = await ws_connect(ticket_url(relay, await a.relay.ws_ticket()))
    try:
        # one real op of B's, then its signature forged five times
        b.doc(space, "kv").get("kv", type=Map)["k"] = "v"
        b.flush()
        [(_, raw)] = b.store.scan("pending", space)
        assert decode_envelope(raw).header.author == b.device_id
        envs = [bad_signature(raw)] * 5
        results, _ = await b.relay.upload(space, envs, proofs=False)
        assert {r.code for r in results} == {"sig_invalid"}
        message = await recv_json(ws)
        while message.get("type") != "alert":
            message = await recv_json(ws)
        assert message["rule"] == "sig_failure_burst" and message["device"] == b64(b.device_id)
    finally:
        await ws.close()
    report = await b.sync()  # quarantined: read-only, its op stays pending
    assert report.read_only and b.pending_count() == 1
    await a.close()
    await b.close()

    # Never quarantined silently: the read-only device's sync is an error that says
    # what happened, that nothing is lost, and how it ends.
    err = await asyncio.to_thread(fails, home_b, "sync")
    assert "read-only" in err and "1 edit(s) stay pending" in err, err
    assert "[policy_read_only]" in err and "alerts --ack" in err, err

    rows = await asyncio.to_thread(ok_json, home_a, "alerts")
    [alert] = [r for r in rows if r["rule"] == "sig_failure_burst"]
    assert alert["device_name"] == "phone" and alert["quarantine"]
    listed = await asyncio.to_thread(ok_json, home_a, "device", "list")
    [phone] = [d for d in listed if d["name"] == "phone"]
    assert phone["access"] == "read_only" and phone["quarantined"]
    assert {f["name"] for f in phone["trust_factors"]} >= {"sig_failures", "open_alerts"}
    text = await asyncio.to_thread(ok, home_a, "device", "list")
    assert "trust" in text and "sig_failures" in text

    out = await asyncio.to_thread(ok, home_a, "alerts", "--ack", alert["id"][:12])
    assert "acknowledged" in out
    synced = json.loads(await asyncio.to_thread(ok, home_b, "sync", "--json"))
    assert synced["pushed"] == 1

    for home in (home_a, home_b):
        check = await asyncio.to_thread(ok_json, home, "audit", "--verify")
        assert check["verified"] and check["size"] >= 8
        kinds = {e["kind"] for e in check["entries"]}
        assert {"device_added", "posture", "alert", "alert_ack", "session"} <= kinds
    again = await asyncio.to_thread(ok_json, home_a, "audit", "--verify")
    assert again["stored_heads_checked"] >= 1
    assert "audit log verified" in await asyncio.to_thread(ok, home_b, "audit")
