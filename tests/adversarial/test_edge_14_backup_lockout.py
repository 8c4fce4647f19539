"""Backup lockout as a denial of service (relay edge review, finding 14).

Anyone who knows an account id could send five wrong verifiers to
``POST /v1/accounts/{id}/backup/fetch`` and lock the passphrase backup (the
lockout doubles up to a day), after which the owner's right passphrase was
refused too. The guess limit stays, but per source address: a source that guessed
wrong is locked out by itself; the account-wide count of wrong guesses puts the
backup into a slow-down in which only a source that has not guessed wrong may
try (once). So the owner, from an address that did not guess, always gets
through, and an attacker gets about one extra guess per address it controls.

In process over real SQLite; the source address is the ASGI peer (no proxy).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
from edgekit import Relay, relay_app
from relaykit import World

from sddsf.protocol.backup import Backup, KdfParams
from sddsf.protocol.encoding import encode
from sddsf.protocol.identity import AccountKeys
from sddsf.wire import b64

RIGHT, WRONG = b"R" * 32, b"W" * 32
OWNER = ("198.51.100.20", 50000)


def fake_backup(account_id: bytes) -> Backup:
    """A structurally valid backup whose verifier is RIGHT."""
    salt, nonce = os.urandom(16), os.urandom(24)
    kdf = {"alg": "argon2id", "t": 3, "m": 65536, "p": 4, "salt": salt}
    blob = encode({"v": 1, "account": account_id, "kdf": kdf, "nonce": nonce,
                   "ct": os.urandom(48)})
    return Backup(KdfParams(t=3, m_kib=65536, p=4, salt=salt), RIGHT, blob)


async def with_backup(relay: Relay) -> tuple[World, Backup]:
    world = World(account=AccountKeys.from_secret(os.urandom(32)))
    backup = fake_backup(world.account.account_id)
    async with relay.client(world) as c:
        await c.create_account(world.entries[0])
        await c.put_backup(world.account.account_id, backup)
    return world, backup


async def fetch(relay: Relay, world: World, verifier: bytes,
                source: tuple[str, int]) -> httpx.Response:
    async with relay.http(client=source) as h:
        return await h.post(f"/v1/accounts/{b64(world.account.account_id)}/backup/fetch",
                            json={"verifier": b64(verifier)})


def settings() -> dict[str, Any]:
    return {"backup_max_failures": 5, "backup_lockout_s": 900, "backup_max_lockout_s": 86_400,
            "rate_ip_per_s": 1e6, "rate_ip_burst": 1e6}


async def test_a_stranger_cannot_lock_the_owner_out(tmp_path: Path) -> None:
    async with relay_app(tmp_path, **settings()) as relay:
        world, backup = await with_backup(relay)
        attacker = ("203.0.113.1", 40000)
        guesses = [(await fetch(relay, world, WRONG, attacker)).status_code for _ in range(8)]
        assert guesses[:5] == [401] * 5 and set(guesses[5:]) == {429}  # the limit holds
        r = await fetch(relay, world, RIGHT, OWNER)
        assert r.status_code == 200, r.text
        assert r.json()["blob"] == b64(backup.blob)


async def test_many_addresses_get_one_guess_each_and_the_owner_still_gets_in(
        tmp_path: Path) -> None:
    async with relay_app(tmp_path, **settings()) as relay:
        world, _ = await with_backup(relay)
        checked = refused = 0
        for i in range(20):
            source = (f"203.0.113.{i + 1}", 40000)
            for _ in range(3):
                status = (await fetch(relay, world, WRONG, source)).status_code
                checked += status == 401
                refused += status == 429
        # the account-wide limit (5), then one guess per address that had none
        assert checked <= 5 + 20, checked
        assert refused >= 60 - 25
        await relay.restart()  # the state is in storage
        again = await fetch(relay, world, WRONG, ("203.0.113.1", 40000))
        assert again.status_code == 429
        r = await fetch(relay, world, RIGHT, OWNER)
        assert r.status_code == 200, r.text
        # the right passphrase clears the slow-down for everyone
        r = await fetch(relay, world, WRONG, ("203.0.113.2", 40000))
        assert r.status_code == 401
