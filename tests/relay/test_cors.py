"""The relay's CORS allow-list (``cors_origins``, docs/operations.md): off by
default; with origins listed, the API answers their preflights and marks their
answers readable, and no other origin gets any CORS header.

A web app served from another origin than the relay needs this; the requests it
makes carry ``authorization``, ``content-type`` and the ``x-sddsf-*`` signature
headers, so a preflight precedes each of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from relaykit import Clock, make_app

from sddsf.errors import ConfigError
from sddsf.relay.settings import RelaySettings, load_settings
from sddsf.relay.storage.sqlite import SqliteStorage

APP = "https://notes.example"
OTHER = "https://evil.example"
SIGNED = "authorization, content-type, x-sddsf-nonce, x-sddsf-timestamp, x-sddsf-signature"


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    st = SqliteStorage(str(tmp_path / "relay.db"))
    await st.open()
    try:
        yield st
    finally:
        await st.close()


def _client(storage: SqliteStorage, **settings: object) -> httpx.AsyncClient:
    app = make_app(storage, Clock(), **settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://relay.test")


def _preflight(origin: str, method: str = "POST", headers: str = SIGNED) -> dict[str, str]:
    return {"origin": origin, "access-control-request-method": method,
            "access-control-request-headers": headers}


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


async def test_default_sends_no_cors_headers(storage: SqliteStorage) -> None:
    async with _client(storage) as http:
        pre = await http.options("/v1/spaces/AAAA/ops", headers=_preflight(APP))
        assert _cors_headers(pre) == {}
        got = await http.get("/v1/limits", headers={"origin": APP})
        assert got.status_code == 200
        assert _cors_headers(got) == {}


async def test_allowed_origin_gets_preflight_and_readable_answers(storage: SqliteStorage) -> None:
    async with _client(storage, cors_origins=f"{APP}, http://127.0.0.1:5173") as http:
        pre = await http.options("/v1/spaces/AAAA/ops", headers=_preflight(APP))
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == APP
        methods = {m.strip() for m in pre.headers["access-control-allow-methods"].split(",")}
        assert {"GET", "POST", "PUT", "DELETE"} <= methods
        allowed = {h.strip() for h in pre.headers["access-control-allow-headers"].split(",")}
        assert {h.strip() for h in SIGNED.split(",")} <= allowed
        assert "access-control-allow-credentials" not in pre.headers  # no cookies are used
        assert "origin" in pre.headers["vary"].lower()
        # The pairing mailbox's token and the key-signed registry read are x-sddsf-* too.
        pre2 = await http.options("/v1/pairing/claim", headers=_preflight(
            "http://127.0.0.1:5173", "PUT", "x-sddsf-pairing-token,x-sddsf-key-id"))
        assert pre2.status_code == 204
        assert pre2.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"

        got = await http.get("/v1/limits", headers={"origin": APP})
        assert got.status_code == 200
        assert got.headers["access-control-allow-origin"] == APP
        assert "retry-after" in got.headers["access-control-expose-headers"].lower()
        assert "origin" in got.headers["vary"].lower()
        # An error answer is readable too (the app shows the code).
        missing = await http.get("/v1/spaces/AAAA/tree-head", headers={"origin": APP})
        assert missing.status_code >= 400
        assert missing.headers["access-control-allow-origin"] == APP


async def test_other_origins_and_requests_get_no_cors_headers(storage: SqliteStorage) -> None:
    async with _client(storage, cors_origins=APP) as http:
        pre = await http.options("/v1/spaces/AAAA/ops", headers=_preflight(OTHER))
        assert _cors_headers(pre) == {}
        got = await http.get("/v1/limits", headers={"origin": OTHER})
        assert _cors_headers(got) == {}
        # A header outside the list, or a method the API does not use: refused.
        bad_header = await http.options("/v1/limits", headers=_preflight(APP, "GET", "x-other"))
        assert bad_header.status_code == 403
        assert _cors_headers(bad_header) == {}
        bad_method = await http.options("/v1/limits", headers=_preflight(APP, "TRACE", ""))
        assert bad_method.status_code == 403
        assert _cors_headers(bad_method) == {}
        # Outside the API (ops endpoints): nothing.
        health = await http.get("/healthz", headers={"origin": APP})
        assert _cors_headers(health) == {}


def test_cors_origins_setting_is_validated() -> None:
    base = RelaySettings(db="sqlite:////unused", key_file="/unused")
    assert base.cors_origins == ""
    assert base.replace(cors_origins=f" {APP} ,http://[::1]:8080 ").cors_origin_set == frozenset(
        {APP, "http://[::1]:8080"})
    for bad in ("*", "notes.example", "https://notes.example/", "https://notes.example/app",
                "ftp://notes.example", "https://user@notes.example"):
        with pytest.raises(ConfigError, match="cors_origins"):
            base.replace(cors_origins=bad)
    env = load_settings(env={"SDDSF_RELAY_CORS_ORIGINS": APP})
    assert env.cors_origin_set == frozenset({APP})
