"""The log of a real ``sddsf relay serve`` process: ``--log-format json`` gives
one JSON object per line, every line logged while a request is served carries
its request id (the client's ``X-Request-Id`` when sane, else a generated
one, echoed in the response header and in error bodies), and no WebSocket
ticket, bearer token or other secret reaches the log."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from livekit import Relays, b64, client, ticket_url, write_key_file, ws_connect
from relaykit import World


def _lines(text: str) -> list[dict[str, object]]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        out.append(json.loads(line))  # every line is one JSON object
    return out


async def test_json_log_has_request_ids_and_no_tickets(tmp_path: Path) -> None:
    relays = Relays(tmp_path)
    key = write_key_file(tmp_path / "relay.key")
    try:
        relay = relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}",
                             "--log-format", "json", "--log-level", "info",
                             env={"SDDSF_RELAY_KEY_FILE": str(key)})
        world = World()
        device = client(relay, world)
        async with device:
            await device.create_account(world.entries[0])
            ticket = await device.ws_ticket()
            token = device._token
        assert token is not None
        async with ws_connect(ticket_url(relay, ticket)) as ws:
            await ws.send(json.dumps({"type": "subscribe", "space": b64(bytes(16))}))
            await ws.recv()
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(),
                                     base_url=relay.base_url, timeout=5) as http:
            mine = await http.get("/v1/nothing-here", headers={"x-request-id": "req-4711.a"})
            assert mine.status_code == 404
            assert mine.headers["x-request-id"] == "req-4711.a"
            assert mine.json() == {"code": "not_found", "message": "no such endpoint",
                                   "request_id": "req-4711.a"}
            insane = await http.get("/healthz", headers={
                "x-request-id": ("a b\u00e9" * 40).encode("latin-1")})
            generated = insane.headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
            again = await http.get("/healthz")
            assert again.headers["x-request-id"] not in (generated, "")
    finally:
        relays.stop_all()
    log = relay.log()
    for secret in (b64(ticket), b64(token), b64(ticket).rstrip("="), b64(token).rstrip("=")):
        assert secret not in log
    lines = _lines(log)
    access = [x for x in lines if x.get("logger") == "sddsf.relay.access"]
    assert any(x.get("request_id") == "req-4711.a" and x.get("status") == 404
               and x.get("path") == "/v1/nothing-here" and x.get("method") == "GET"
               for x in access), access
    assert any(x.get("request_id") == generated for x in access)
    ws_lines = [x for x in lines if "/v1/ws?" in str(x.get("message", "")) + str(x.get("path"))]
    assert len(ws_lines) >= 2, lines  # uvicorn's [accepted] line and the access line
    for x in ws_lines:  # the ticket parameter is masked; the line has its request id
        assert "ticket=***" in str(x.get("message", "")) + str(x.get("path", "")), x
        assert re.fullmatch(r"[0-9a-f]{32}", str(x.get("request_id"))), x
    for x in lines:
        assert {"ts", "level", "logger", "message"} <= set(x), x


async def test_text_log_masks_tickets_too(tmp_path: Path) -> None:
    relays = Relays(tmp_path)
    key = write_key_file(tmp_path / "relay.key")
    try:
        relay = relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}",
                             env={"SDDSF_RELAY_KEY_FILE": str(key)})
        world = World()
        device = client(relay, world)
        async with device:
            await device.create_account(world.entries[0])
            ticket = await device.ws_ticket()
        async with ws_connect(ticket_url(relay, ticket)) as ws:
            await ws.send(json.dumps({"type": "subscribe", "space": b64(bytes(16))}))
            await ws.recv()
    finally:
        relays.stop_all()
    log = relay.log()
    assert b64(ticket) not in log and b64(ticket).rstrip("=") not in log
    assert "ticket=***" in log
    assert re.search(r"request_id=[0-9a-f]{32}", log), log
