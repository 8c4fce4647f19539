"""The pairing mailbox over HTTP (in-process ASGI, both storage backends):
version 2 only, numbered channels, slot tokens, messages in turn, a second
claim burns the code, and the other side learns why a code was burnt."""

from __future__ import annotations

import httpx
import pytest
from relaykit import Clock, make_app

from sddsf.client.relay_client import RelayClient
from sddsf.crypto import random_bytes
from sddsf.errors import AuthenticationError, Code, ConflictError, DecodeError, NotFoundError
from sddsf.relay.storage.base import RelayStorage
from sddsf.wire import b64

BASE = "http://relay.test"


@pytest.fixture
def app(storage: RelayStorage):  # type: ignore[no-untyped-def]
    return make_app(storage, Clock())


def client(app) -> RelayClient:  # type: ignore[no-untyped-def]
    return RelayClient(BASE, transport=httpx.ASGITransport(app=app))


async def test_a_version_1_client_is_refused_clearly(app) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        # What a client from before pairing version 2 sends: no body, no token.
        r = await http.post("/v1/pairing")
        assert r.status_code == 400 and r.json()["code"] == Code.UNSUPPORTED_VERSION.value
        assert "pairing version 2" in r.json()["message"]
        r = await http.post("/v1/pairing", json={"version": 1},
                            headers={"x-sddsf-pairing-token": b64(bytes(32))})
        assert r.json()["code"] == Code.UNSUPPORTED_VERSION.value
        r = await http.post("/v1/pairing", json={"version": 2})
        assert r.status_code == 401 and "x-sddsf-pairing-token" in r.json()["message"]
        r = await http.post("/v1/pairing", json={"version": 2},
                            headers={"x-sddsf-pairing-token": b64(bytes(31))})
        assert r.status_code == 400 and r.json()["code"] == Code.MALFORMED.value


async def test_numbered_channels_slots_and_turns(app) -> None:  # type: ignore[no-untyped-def]
    laptop, phone, stranger = client(app), client(app), client(app)
    mine, theirs = random_bytes(32), random_bytes(32)
    channel, nameplate, _ = await laptop.open_channel(mine)
    assert nameplate == 1
    assert (await laptop.open_channel(random_bytes(32)))[1] == 2
    assert (await phone.claim_channel(nameplate, theirs))[0] == channel
    assert (await phone.claim_channel(nameplate, theirs))[0] == channel  # a retry
    with pytest.raises(NotFoundError, match="no pairing numbered 7"):
        await phone.claim_channel(7, random_bytes(32))
    assert await phone.post_channel(channel, theirs, 0, b"commit") == 0
    assert await phone.post_channel(channel, theirs, 0, b"commit") == 0  # a retry
    assert await laptop.post_channel(channel, mine, 1, b"pake") == 1
    assert [(i, s) for i, s, _ in await phone.read_channel(channel, theirs)] == [
        (0, "joiner"), (1, "initiator")]
    with pytest.raises(AuthenticationError, match="no slot"):
        await stranger.read_channel(channel, random_bytes(32))
    with pytest.raises(ConflictError, match="posted before message 2"):
        await phone.post_channel(channel, theirs, 3, b"late")  # ahead: refused, burnt
    with pytest.raises(ConflictError, match="out of order or changed"):
        await laptop.read_channel(channel, mine)


async def test_a_second_claim_burns_the_code_for_both_sides(app) -> None:  # type: ignore[no-untyped-def]
    laptop, phone, thief = client(app), client(app), client(app)
    mine, theirs = random_bytes(32), random_bytes(32)
    channel, nameplate, _ = await laptop.open_channel(mine)
    await thief.claim_channel(nameplate, theirs)
    with pytest.raises(ConflictError, match="someone else used this pairing code"):
        await phone.claim_channel(nameplate, random_bytes(32))
    for c, token in ((laptop, mine), (thief, theirs)):
        with pytest.raises(ConflictError, match="nothing was added"):
            await c.read_channel(channel, token)


async def test_a_burn_tells_the_other_side_why(app) -> None:  # type: ignore[no-untyped-def]
    laptop, phone = client(app), client(app)
    mine, theirs = random_bytes(32), random_bytes(32)
    channel, nameplate, _ = await laptop.open_channel(mine)
    await phone.claim_channel(nameplate, theirs)
    await phone.burn_channel(channel, theirs, "rejected")
    await laptop.burn_channel(channel, mine, "failed")  # the first reason stays
    with pytest.raises(ConflictError, match="person at the new device did not confirm"):
        await laptop.read_channel(channel, mine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        r = await http.post(f"/v1/pairing/{b64(channel)}/burn", json={"reason": "whatever"},
                            headers={"x-sddsf-pairing-token": b64(mine)})
        assert r.status_code == 400 and r.json()["code"] == Code.MALFORMED.value


async def test_a_client_refuses_a_relay_without_pairing_version_2() -> None:
    async def old_relay(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/pairing":
            return httpx.Response(200, json={"channel_id": b64(bytes(16)), "expires_ms": 1})
        return httpx.Response(404, json={"code": "not_found", "message": "no such endpoint"})

    old = RelayClient(BASE, transport=httpx.MockTransport(old_relay))
    with pytest.raises(DecodeError, match="does not speak pairing version 2") as info:
        await old.open_channel(random_bytes(32))
    assert info.value.code is Code.UNSUPPORTED_VERSION
    with pytest.raises(DecodeError, match="does not speak pairing version 2"):
        await old.claim_channel(1, random_bytes(32))
