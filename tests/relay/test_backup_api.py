"""Passphrase backups over the relay's HTTP API (docs/protocol.md 17.4.9), on both
storage backends: upload by a device of the account (session+signed), the
public KDF parameters, fetch by verifier with a lockout that doubles and
survives a relay restart, deletion, and the checks on what is uploaded.

Only the round-trip test runs the real Argon2id (64 MiB) through
``sddsf.recovery``; the other tests upload structurally valid backups with
arbitrary verifiers (the relay never derives anything).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from relaykit import Clock, World, client_for, make_app

from sddsf import recovery
from sddsf.client.relay_client import RelayClient
from sddsf.crypto import blake2b_256
from sddsf.errors import (
    AuthenticationError,
    AuthorizationError,
    Code,
    ContextError,
    DecodeError,
    NotFoundError,
    RateLimitedError,
)
from sddsf.protocol.backup import Backup, KdfParams, derive_verifier
from sddsf.protocol.encoding import encode
from sddsf.protocol.identity import AccountKeys
from sddsf.relay.storage.base import RelayStorage
from sddsf.testing.storage_conformance import Harness
from sddsf.wire import b64

PASS = "correct horse battery staple"  # noqa: S105 - a test passphrase
RIGHT, WRONG = b"R" * 32, b"W" * 32


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def _setup(storage: RelayStorage, clock: Clock, **settings: object
                 ) -> tuple[World, bytes, Any, RelayClient]:
    secret = os.urandom(32)
    world = World(account=AccountKeys.from_secret(secret))
    world.add_device(1)
    app = make_app(storage, clock, **settings)
    client = client_for(app, world, 0, clock)
    await client.create_account(world.entries[0])
    await client.append_registry(world.account.account_id, world.entries[1])
    return world, secret, app, client


def fake_backup(account_id: bytes, verifier: bytes = RIGHT, *, blob_account: bytes | None = None,
                t: int = 3, m: int = 65536, p: int = 4, blob_t: int | None = None,
                ct: bytes | None = None) -> Backup:
    """A structurally valid backup (the relay cannot tell it from a real one)."""
    salt, nonce = os.urandom(16), os.urandom(24)
    kdf = {"alg": "argon2id", "t": blob_t or t, "m": m, "p": p, "salt": salt}
    blob = encode({"v": 1, "account": blob_account or account_id, "kdf": kdf, "nonce": nonce,
                   "ct": os.urandom(48) if ct is None else ct})
    return Backup(KdfParams(t=t, m_kib=m, p=p, salt=salt), verifier, blob)


def http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_round_trip_through_the_recovery_helpers(storage: RelayStorage,
                                                       clock: Clock) -> None:
    """enable_backup -> GET kdf -> fetch_backup_secret with the real parameters; a
    wrong passphrase is counted; the relay stores BLAKE2b(verifier), never the verifier."""
    world, secret, app, client = await _setup(storage, clock)
    aid = world.account.account_id
    kdf = await recovery.enable_backup(client, aid, secret, PASS)
    assert (kdf.t, kdf.m_kib, kdf.p, len(kdf.salt)) == (3, 65536, 4, 16)
    assert await client.backup_kdf(aid) == kdf
    transport = httpx.ASGITransport(app=app)
    assert await recovery.fetch_backup_secret("http://relay.test", aid, PASS,
                                              transport=transport) == secret
    with pytest.raises(AuthenticationError, match="wrong passphrase") as info:
        await recovery.fetch_backup_secret("http://relay.test", aid, PASS + "?",
                                           transport=transport)
    assert info.value.code is Code.UNAUTHENTICATED
    stored = await storage.get_backup(aid)
    assert stored is not None and len(stored.verifier_hash) == 32
    assert stored.blob.count(secret) == 0
    # the relay keeps the verifier's hash, and the verifier nowhere in the row
    verifier = derive_verifier(PASS, kdf)
    assert stored.verifier_hash == blake2b_256(verifier)
    assert verifier not in (stored.verifier_hash, stored.blob, stored.salt)


async def test_put_get_fetch_replace_delete(storage: RelayStorage, clock: Clock) -> None:
    world, _, app, client = await _setup(storage, clock)
    aid = world.account.account_id
    with pytest.raises(NotFoundError, match="no passphrase backup"):
        await client.backup_kdf(aid)
    with pytest.raises(NotFoundError):
        await client.fetch_backup(aid, RIGHT)
    first = fake_backup(aid)
    await client.put_backup(aid, first)
    assert await client.backup_kdf(aid) == first.kdf
    assert await client.fetch_backup(aid, RIGHT) == first.blob
    # another device of the account replaces it
    second = fake_backup(aid, WRONG, t=4, m=131072, p=2)
    await client_for(app, world, 1, clock).put_backup(aid, second)
    assert await client.backup_kdf(aid) == second.kdf
    assert await client.fetch_backup(aid, WRONG) == second.blob
    with pytest.raises(AuthenticationError):
        await client.fetch_backup(aid, RIGHT)
    async with http(app) as h:
        r = await h.get(f"/v1/accounts/{b64(aid)}/backup/kdf")
        assert r.status_code == 200
        assert r.json() == {"kdf": {"alg": "argon2id", "t": 4, "m": 131072, "p": 2,
                                    "salt": b64(second.kdf.salt)}}
    assert await client.delete_backup(aid) is True
    assert await client.delete_backup(aid) is False
    with pytest.raises(NotFoundError):
        await client.backup_kdf(aid)


async def test_lockout_doubles_refuses_the_right_verifier_and_survives_a_restart(
        storage_harness: Harness, clock: Clock) -> None:
    settings = {"backup_max_failures": 3, "backup_lockout_s": 10, "backup_max_lockout_s": 35}
    world, _, app, client = await _setup(storage_harness.storage, clock, **settings)
    aid = world.account.account_id
    backup = fake_backup(aid)
    await client.put_backup(aid, backup)
    path = f"/v1/accounts/{b64(aid)}/backup/fetch"

    async def fetch(a: Any, verifier: bytes) -> httpx.Response:
        async with http(a) as h:
            return await h.post(path, json={"verifier": b64(verifier)})

    async def lock_out(a: Any, seconds: int) -> None:
        for _ in range(2):
            r = await fetch(a, WRONG)
            body = {k: v for k, v in r.json().items() if k != "request_id"}
            assert (r.status_code, body) == (401, {"code": "unauthenticated",
                                                   "message": "wrong passphrase"})
        r = await fetch(a, WRONG)
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        assert f"locked for {seconds} s" in r.json()["message"]
        r = await fetch(a, RIGHT)  # the right verifier is refused too
        assert r.status_code == 429 and r.json()["code"] == "rate_limited"
        assert r.headers["retry-after"] == str(seconds)
        assert "locked" in r.json()["message"]

    await lock_out(app, 10)
    clock.now += 4_000
    r = await fetch(app, RIGHT)
    assert r.status_code == 429 and r.headers["retry-after"] == "6"
    with pytest.raises(RateLimitedError):
        await client.fetch_backup(aid, RIGHT)
    clock.now += 6_000
    await lock_out(app, 20)  # the second lockout lasts twice as long
    clock.now += 20_000
    await lock_out(app, 35)  # 40 s, capped at backup_max_lockout_s

    # restart: close the storage, open the same database anew, build a new app
    await storage_harness.storage.close()
    reopened = storage_harness.new_peer()
    await reopened.open()
    restarted = make_app(reopened, clock, **settings)
    r = await fetch(restarted, RIGHT)
    assert r.status_code == 429 and r.headers["retry-after"] == "35"
    clock.now += 35_000
    r = await fetch(restarted, RIGHT)
    assert r.status_code == 200 and r.json() == {"blob": b64(backup.blob)}
    # a success reset the counters: the next lockout is the first one again
    await lock_out(restarted, 10)


async def test_uploads_need_a_signed_session_of_the_account(storage: RelayStorage,
                                                            clock: Clock) -> None:
    world, _, app, client = await _setup(storage, clock)
    aid = world.account.account_id
    backup = fake_backup(aid)
    body = {"kdf": {"alg": "argon2id", "t": 3, "m": 65536, "p": 4,
                    "salt": b64(backup.kdf.salt)},
            "verifier": b64(RIGHT), "blob": b64(backup.blob)}
    async with http(app) as h:
        for method in ("PUT", "DELETE"):
            r = await h.request(method, f"/v1/accounts/{b64(aid)}/backup",
                                json=body if method == "PUT" else None)
            assert (r.status_code, r.json()["code"]) == (401, "unauthenticated"), method
        # a session without the signed-request headers
        token = await client._session_token()
        r = await h.put(f"/v1/accounts/{b64(aid)}/backup", json=body,
                        headers={"authorization": f"Bearer {b64(token)}"})
        assert (r.status_code, r.json()["code"]) == (401, "unauthenticated")
        assert "X-Sddsf-Signature" in r.json()["message"]
    assert await storage.get_backup(aid) is None
    # a device of another account cannot store or delete this account's backup
    other = World()
    stranger = client_for(app, other, 0, clock)
    await stranger.create_account(other.entries[0])
    for attempt in (stranger.put_backup(aid, backup), stranger.delete_backup(aid)):
        with pytest.raises(AuthorizationError) as info:
            await attempt
        assert info.value.code is Code.NOT_AUTHORIZED
    # nor a revoked device of the account
    phone = client_for(app, world, 1, clock)
    await client.append_registry(aid, world.revoke(1))
    with pytest.raises(AuthorizationError) as info:
        await phone.put_backup(aid, backup)
    assert info.value.code is Code.REVOKED
    assert await storage.get_backup(aid) is None
    await client.put_backup(aid, backup)
    with pytest.raises(AuthorizationError):
        await stranger.delete_backup(aid)
    assert await storage.get_backup(aid) is not None


async def test_weak_or_inconsistent_uploads_are_refused(storage: RelayStorage,
                                                        clock: Clock) -> None:
    world, _, app, client = await _setup(storage, clock)
    aid = world.account.account_id
    cases: list[tuple[Backup, type[Exception], Code, str]] = [
        (fake_backup(aid, t=2), DecodeError, Code.MALFORMED, "weaker than the minimum"),
        (fake_backup(aid, m=32768), DecodeError, Code.MALFORMED, "weaker than the minimum"),
        (fake_backup(aid, m=2**31), DecodeError, Code.MALFORMED, "exceeds the maximum"),
        (fake_backup(aid, t=65), DecodeError, Code.MALFORMED, "exceeds the maximum"),
        (fake_backup(aid, blob_account=os.urandom(32)), ContextError, Code.WRONG_CONTEXT,
         "another account"),
        (fake_backup(aid, blob_t=4), DecodeError, Code.MALFORMED, "differ"),
        (fake_backup(aid, ct=b"short"), DecodeError, Code.MALFORMED, "ct"),
        (Backup(fake_backup(aid).kdf, b"x" * 31, fake_backup(aid).blob), DecodeError,
         Code.MALFORMED, "verifier"),
    ]
    for backup, exc, code, match in cases:
        with pytest.raises(exc, match=match) as info:
            await client.put_backup(aid, backup)
        assert info.value.code is code  # type: ignore[attr-defined]
    async with http(app) as h:
        r = await h.get(f"/v1/accounts/{b64(aid)}/backup/kdf")
        assert r.status_code == 404
        r = await h.post(f"/v1/accounts/{b64(aid)}/backup/fetch",
                         json={"verifier": b64(b"x" * 31)})
        assert (r.status_code, r.json()["code"]) == (400, "malformed")
        r = await h.post(f"/v1/accounts/{b64(aid)}/backup/fetch",
                         json={"verifier": b64(RIGHT), "extra": 1})
        assert (r.status_code, r.json()["code"]) == (400, "malformed")
        r = await h.get(f"/v1/accounts/{b64(b'short')}/backup/kdf")
        assert (r.status_code, r.json()["code"]) == (400, "malformed")
    assert await storage.get_backup(aid) is None


async def test_fetch_is_ip_rate_limited_and_documented(storage: RelayStorage,
                                                      clock: Clock) -> None:
    world, _, app, _ = await _setup(storage, clock, rate_ip_burst=3.0,
                                    rate_ip_per_s=0.001)
    aid = world.account.account_id
    async with http(app) as h:
        spec = (await h.get("/openapi.json")).json()
        for p in ("/v1/accounts/{account_id}/backup", "/v1/accounts/{account_id}/backup/kdf",
                  "/v1/accounts/{account_id}/backup/fetch"):
            assert p in spec["paths"], p
        codes = [(await h.post(f"/v1/accounts/{b64(aid)}/backup/fetch",
                               json={"verifier": b64(RIGHT)})).status_code
                 for _ in range(3)]
        # creating the account took two of the three tokens
        assert codes == [404, 429, 429]
