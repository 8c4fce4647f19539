"""Request bodies and query parameters are parsed strictly: a JSON ``true`` or
``"2"`` is not an integer, ``"yes"`` is not a boolean, and ``?after=2.0`` or
``?after=1_000`` is not an offset. Each is refused 400 ``malformed`` with the
relay's ``{code, message}`` body, before any handler runs."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from relaykit import Clock, World, client_for, make_app

from sddsf.relay.storage import open_storage
from sddsf.relay.storage.base import RelayStorage


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[RelayStorage]:
    s = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    await s.open()
    yield s
    await s.close()


def _malformed(r: httpx.Response) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["code"] == "malformed"
    assert set(r.json()) == {"code", "message", "request_id"}


@pytest.mark.parametrize("version", [True, "2", 2.0, [2]])
async def test_a_json_integer_field_takes_only_a_json_integer(storage: RelayStorage,
                                                               version: object) -> None:
    app = make_app(storage, Clock())
    token = base64.urlsafe_b64encode(bytes(32)).decode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        r = await http.post("/v1/pairing", json={"version": version},
                            headers={"x-sddsf-pairing-token": token})
        _malformed(r)
        r = await http.post("/v1/pairing/claim", json={"nameplate": True},
                            headers={"x-sddsf-pairing-token": token})
        _malformed(r)
        ok = await http.post("/v1/pairing", json={"version": 2},
                             headers={"x-sddsf-pairing-token": token})
        assert ok.status_code == 200, ok.text


async def test_signed_bodies_are_strict_too(storage: RelayStorage) -> None:
    clock = Clock()
    world = World()
    app = make_app(storage, clock)
    client = client_for(app, world, 0, clock)
    await client.create_account(world.entries[0])
    await client.create_space(world.space, world.key_package())
    path = f"/v1/spaces/{base64.urlsafe_b64encode(world.space).decode()}"
    for bad in ({"offset": True}, {"offset": "0"}, {"offset": 0.0}):
        with pytest.raises(Exception) as info:
            await client._send("POST", f"{path}/ack", body=bad, signed=True)
        assert getattr(info.value, "code", None) is not None
        assert info.value.code.value == "malformed", bad  # type: ignore[attr-defined]
    for bad_flag in ("yes", 1):
        with pytest.raises(Exception) as info:
            await client._send("POST", f"{path}/ops", body={"ops": [], "proofs": bad_flag},
                               signed=True)
        assert info.value.code.value == "malformed"  # type: ignore[attr-defined]
    assert (await client._send("POST", f"{path}/ack", body={"offset": -1},
                               signed=True))["acked"] == -1


@pytest.mark.parametrize("after", ["2.0", "1_000", "+2", " 2", "true"])
async def test_integer_query_parameters_are_plain_decimal(storage: RelayStorage,
                                                          after: str) -> None:
    app = make_app(storage, Clock())
    token = base64.urlsafe_b64encode(bytes(32)).decode()
    channel = base64.urlsafe_b64encode(bytes(16)).decode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        r = await http.get(f"/v1/pairing/{channel}/messages", params={"after": after},
                           headers={"x-sddsf-pairing-token": token})
        _malformed(r)
        # A plain decimal passes validation (and then finds no channel).
        r = await http.get(f"/v1/pairing/{channel}/messages", params={"after": "-1"},
                           headers={"x-sddsf-pairing-token": token})
        assert r.status_code == 409 and r.json()["code"] == "conflict", r.text
