"""Sharing one vault secret with another person (docs/vault.md, "Sharing one secret").

Alice, Bob (writer) and Carol (reader) on one in-process relay over SQLite.
Alice copies one secret of her personal vault into the vault of a space she
shares; Bob and Carol read exactly that secret, its author checked through
Alice's verified registry, and nothing else of Alice's vault; Bob's update is
Alice's next value, checked through Bob's registry (also once Bob is removed);
Carol cannot write it; a record signed by a key no member lists is refused as
forged; refusals are typed. Another account's space named ``vault`` is never
taken for one's own vault. Then the same through the real ``sddsf`` process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from clientkit import sqlite_relay
from livekit import RelayProcess, Relays
from relaykit import make_app
from test_cli_sharing import person
from test_vault_cli import Homes

from sddsf.client.device import Device
from sddsf.client.records import sign_record
from sddsf.client.vault import SPACE, Vault, VaultConflictError, author_device
from sddsf.crypto import random_bytes
from sddsf.errors import AuthorizationError, Code, NotFoundError, UsageError
from sddsf.protocol.identity import DeviceKeys
from sddsf.protocol.labels import VAULT_RECORD_SIG
from sddsf.protocol.membership import Role

SEED = "ab" * 32
OTHER_SEED = "cd" * 32
PRIVATE = ["ALICE-MAIL-PASSWORD-1", "ALICE-PRIVATE-NOTE-2"]


@dataclass
class People:
    alice: Device
    phone: Device  # Alice's second device
    bob: Device
    carol: Device
    space: bytes  # Alice's space "family": Bob writes, Carol reads


@pytest.fixture(name="p")
async def people(tmp_path: Path) -> AsyncIterator[People]:
    async with sqlite_relay(tmp_path) as relay:
        # Four devices share one loopback address here: lift the per-address limit.
        relay.app = make_app(relay.storage, relay.clock, rate_ip_per_s=1000.0,
                             rate_ip_burst=5000.0)
        alice, _ = await relay.new_account(tmp_path / "alice", "alice-laptop")
        phone = await relay.add(alice, tmp_path / "phone", "alice-phone")
        bob, _ = await relay.new_account(tmp_path / "bob", "bob-laptop")
        carol, _ = await relay.new_account(tmp_path / "carol", "carol-laptop")
        space = await alice.create_space("family")
        await alice.sharing.share(space, bob.account, Role.WRITER)
        await alice.sharing.share(space, carol.account, Role.READER)
        for dev in (bob, carol):
            await dev.sharing.join(space, alice.account, "family")
        await phone.sync()
        yield People(alice, phone, bob, carol, space)
        for dev in (alice, phone, bob, carol):
            await dev.close()


async def sync(*devices: Device) -> None:
    for dev in devices:
        report = await dev.sync()
        assert report.rejected == [], report.rejected


def vault_map(device: Device, space: bytes) -> Any:
    return device.doc(space, "vault").get("versions", type=pycrdt.Map)


async def alice_shares_her_key(p: People) -> tuple[Vault, Vault, str]:
    """Alice's personal vault holds three secrets; she shares the ed25519 key."""
    personal = await Vault.open(p.alice)
    personal.put("mail", "password", PRIVATE[0])
    personal.put("note", "note", PRIVATE[1])
    key = personal.put("signing", "ed25519", SEED)
    shared = await Vault.open(p.alice, space=p.space)
    assert shared.list() == []
    copy = personal.share("signing", shared)
    assert copy.secret == SEED and copy.id != key.id and copy.kind == "ed25519"
    assert copy.author == p.alice.device_id.hex() and copy.supersedes == ()
    await sync(p.alice, p.bob, p.carol)
    assert copy.public_key is not None
    return personal, shared, copy.public_key


async def test_the_other_person_reads_exactly_the_shared_secret_verified(p: People) -> None:
    personal, _, public = await alice_shares_her_key(p)
    bob_shared = await Vault.open(p.bob, space=p.space)
    assert [i.name for i in bob_shared.list()] == ["signing"]
    got = bob_shared.get("signing")
    assert got.secret == SEED and got.public_key == public and got.kind == "ed25519"
    assert got.verified and got.author == p.alice.device_id.hex()
    assert bob_shared.all_alerts() == [] and bob_shared.unreadable == []
    found = author_device(p.bob, p.space, p.alice.device_id)
    assert found is not None and found[0] == p.alice.account.account_id
    assert found[1].name == "alice-laptop"
    # Nothing else of Alice's vault reached Bob: not in his personal vault, not in
    # the shared document, and her vault space is not his.
    assert (await Vault.open(p.bob, create=False)).list() == []
    assert all(n != SPACE for _, n in p.bob.spaces())
    held = json.dumps(dict(vault_map(p.bob, p.space).items()))
    assert not any(secret in held for secret in PRIVATE)
    # Alice's personal vault is unchanged by the share.
    assert [v.secret for v in personal.history("signing")] == [SEED]
    assert {i.name for i in personal.list()} == {"mail", "note", "signing"}


async def test_a_writer_updates_the_shared_secret_and_the_owner_reads_it_verified(
        p: People) -> None:
    personal, shared, _ = await alice_shares_her_key(p)
    bob_shared = await Vault.open(p.bob, space=p.space)
    updated = bob_shared.put("signing", "ed25519", OTHER_SEED)
    await sync(p.bob, p.alice, p.phone, p.carol)
    phone_shared = await Vault.open(p.phone, space=p.space)
    carol_shared = await Vault.open(p.carol, space=p.space)
    for v in (shared, phone_shared, carol_shared):
        got = v.get("signing")  # Bob's version superseded Alice's: no conflict
        assert got.id == updated.id and got.secret == OTHER_SEED
        assert got.verified and got.author == p.bob.device_id.hex()
        assert [x.verified for x in v.history("signing")] == [True, True]
        assert v.all_alerts() == []
    assert personal.get("signing").secret == SEED  # the personal copy stays Alice's
    # Removed from the space, Bob's version stays his (a former member's
    # registry still vouches for what he wrote while he was one).
    await p.alice.sharing.remove(p.space, p.bob.account.account_id)
    await sync(p.alice)
    assert p.bob.account.account_id not in p.alice.engine.members.current(p.space).state.members
    after = await Vault.open(p.alice, space=p.space)
    got = after.get("signing")
    assert got.id == updated.id and got.verified and after.all_alerts() == []


async def test_a_reader_cannot_share_nor_write_the_shared_vault(p: People) -> None:
    await alice_shares_her_key(p)
    carol_personal = await Vault.open(p.carol)
    carol_personal.put("pin", "password", "CAROL-PIN-7")
    carol_shared = await Vault.open(p.carol, space=p.space)
    before = dict(vault_map(p.carol, p.space).items())
    with pytest.raises(AuthorizationError, match="may only read space 'family'") as err:
        carol_personal.share("pin", carol_shared)
    assert err.value.code is Code.NOT_AUTHORIZED and "space role" in err.value.message
    with pytest.raises(AuthorizationError):
        carol_shared.put("signing", "ed25519", OTHER_SEED)
    with pytest.raises(AuthorizationError):
        carol_shared.rm("signing")
    assert dict(vault_map(p.carol, p.space).items()) == before
    await sync(p.carol, p.alice)
    assert [i.name for i in (await Vault.open(p.alice, space=p.space)).list()] == ["signing"]


async def test_sharing_refuses_unknown_names_conflicts_and_wrong_spaces(p: People) -> None:
    personal, shared, _ = await alice_shares_her_key(p)
    with pytest.raises(UsageError, match="no secret named 'nope' in the vault"):
        personal.share("nope", shared)
    personal.rm("note")
    with pytest.raises(UsageError, match="'note' was deleted"):
        personal.share("note", shared)
    # A conflict: both of Alice's devices update "mail" before syncing.
    await sync(p.alice, p.phone)
    phone_personal = await Vault.open(p.phone)
    personal.put("mail", "password", "from-laptop")
    phone_personal.put("mail", "password", "from-phone")
    await sync(p.alice, p.phone, p.alice)
    with pytest.raises(VaultConflictError, match=r"resolve it first .*resolve mail --keep") \
            as conflict:
        personal.share("mail", shared)
    assert len(conflict.value.versions) == 2
    assert shared.item("mail") is None
    with pytest.raises(NotFoundError, match="join it first"):
        await Vault.open(p.alice, space=random_bytes(16))
    (own,) = [s for s, n in p.alice.spaces() if n == SPACE]
    with pytest.raises(UsageError, match="into another space's vault"):
        personal.share("signing", await Vault.open(p.alice, space=own))
    with pytest.raises(UsageError, match="into another space's vault"):
        personal.share("signing", personal)
    # Messages about a shared vault name its space and the --space option.
    with pytest.raises(UsageError, match=r"vault of space 'family'; `sddsf vault list "
                                         r"--space family`"):
        shared.get("nope")


async def test_a_record_signed_by_a_key_no_member_lists_is_refused_as_forged(
        p: People) -> None:
    await alice_shares_her_key(p)
    stranger = DeviceKeys.from_seeds(bytes(range(32)), bytes(range(1, 33)))
    vid = "ee" * 16
    fields = {"f": 2, "name": "signing", "kind": "ed25519", "secret": OTHER_SEED,
              "author": stranger.device_id.hex(), "ts": 1,
              "supersedes": [(await Vault.open(p.bob, space=p.space)).get("signing").id]}
    vault_map(p.bob, p.space)[vid] = sign_record(stranger, VAULT_RECORD_SIG, vid, fields)
    p.bob.flush()
    await sync(p.bob, p.alice)
    shared = await Vault.open(p.alice, space=p.space)
    got = shared.get("signing")
    assert got.secret == SEED and got.author == p.alice.device_id.hex()  # not replaced
    (alert,) = shared.all_alerts()
    assert (alert.version, alert.what, alert.by) == (vid, "forged", p.bob.device_id.hex())
    # Acknowledgements are per vault: a later alert of Alice's personal vault (a
    # record her phone forges there), acknowledged, leaves the shared one's new.
    personal = await Vault.open(p.alice)
    assert personal.all_alerts() == []
    await sync(p.phone)
    (own,) = [s for s, n in p.phone.spaces() if n == SPACE]
    vault_map(p.phone, own)["dd" * 16] = sign_record(stranger, VAULT_RECORD_SIG, "dd" * 16,
                                                     {**fields, "supersedes": []})
    p.phone.flush()
    await sync(p.phone, p.alice)
    assert [a.what for a in personal.all_alerts()] == ["forged"]
    assert personal.all_alerts()[0].seq > alert.seq
    assert personal.acknowledge() == 1
    assert shared.new_alerts() == [alert]
    assert shared.acknowledge() == 1 and shared.new_alerts() == []


async def test_another_accounts_space_named_vault_is_not_ones_own_vault(p: People) -> None:
    bob_personal = await Vault.open(p.bob)
    bob_personal.put("bike-lock", "password", "BOB-LOCK-1")
    alice_personal = await Vault.open(p.alice)
    alice_personal.put("mail", "password", PRIVATE[0])
    await sync(p.alice, p.bob)
    # Alice shares her whole vault space with Bob: a shared vault space.
    (alice_vault,) = [s for s, n in p.alice.spaces() if n == SPACE]
    await p.alice.sharing.share(alice_vault, p.bob.account, Role.WRITER)
    await p.bob.sharing.join(alice_vault, p.alice.account, "alices-vault")
    await sync(p.bob)
    assert dict(p.bob.spaces())[alice_vault] == SPACE  # its own name, synced
    reopened = await Vault.open(p.bob)
    assert [i.name for i in reopened.list()] == ["bike-lock"] and reopened.all_alerts() == []
    reopened.put("bank", "password", "BOB-BANK-2")  # into Bob's own vault space
    await sync(p.bob, p.alice)
    assert [i.name for i in (await Vault.open(p.alice)).list()] == ["mail"]
    # Bob reads Alice's vault explicitly, as that space's vault.
    hers = await Vault.open(p.bob, space=alice_vault)
    assert hers.get("mail").secret == PRIVATE[0] and hers.get("mail").verified


# ------------------------------------------------------------ the CLI
@pytest.fixture
def relay_process(tmp_path: Path) -> Any:
    relays = Relays(tmp_path)
    try:
        yield relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}")
    finally:
        relays.stop_all()


def test_vault_share_from_the_command_line(relay_process: RelayProcess, tmp_path: Path) -> None:
    cli = Homes()
    (alice, a), (bob, b), (carol, c) = (person(relay_process, tmp_path, n)
                                        for n in ("alice", "bob", "carol"))
    cli.ok(alice, "vault", "put", "wifi", "--kind", "password", stdin="WIFI-PASS-1\n")
    cli.ok(alice, "vault", "put", "diary", "--kind", "note", stdin=PRIVATE[1])
    cli.ok(alice, "space", "create", "family")
    line = cli.fails(alice, "vault", "share", "wifi", "--space", "nowhere")
    assert "no space named 'nowhere'" in line and "[not_found]" in line
    cli.ok(alice, "space", "share", "family", "--with", b["fingerprint"])
    cli.ok(alice, "space", "share", "family", "--with", c["account_code"], "--role", "reader")
    space_id = json.loads(cli.ok(alice, "space", "list", "--json"))
    (sid,) = [s["id"] for s in space_id if s["name"] == "family"]
    for home in (bob, carol):
        cli.ok(home, "space", "join", sid, "--owner", a["fingerprint"], "--name", "family")
    assert "no secret named 'nope'" in cli.fails(alice, "vault", "share", "nope", "--space",
                                                 "family")
    out = cli.ok(alice, "vault", "share", "wifi", "--space", "family")
    assert "shared 'wifi' (password) in space 'family'" in out and "2 other member" in out

    listed = cli.json(bob, "vault", "list", "--space", "family")
    assert [i["name"] for i in listed] == ["wifi"]
    (version,) = listed[0]["versions"]
    assert version["author_verified"] and version["author_name"].startswith(
        "alice-laptop (account ")
    assert cli.ok(bob, "vault", "get", "wifi", "--space", "family") == "WIFI-PASS-1\n"
    assert cli.json(bob, "vault", "list") == []  # Bob's own vault: nothing of Alice's
    cli.ok(bob, "vault", "put", "wifi", "--kind", "password", "--space", "family",
           stdin="WIFI-PASS-2")
    history = cli.json(alice, "vault", "history", "wifi", "--space", "family")
    assert [v["author_name"].split(" ")[0] for v in history] == ["alice-laptop",
                                                                  "bob-laptop"]
    assert all(v["author_verified"] for v in history)
    assert cli.ok(alice, "vault", "get", "wifi", "--space", "family") == "WIFI-PASS-2\n"
    assert cli.ok(alice, "vault", "get", "wifi") == "WIFI-PASS-1\n"  # her own copy

    cli.ok(carol, "vault", "put", "pin", "--kind", "password", stdin="CAROL-PIN")
    line = cli.fails(carol, "vault", "share", "pin", "--space", "family")
    assert "may only read space 'family'" in line and "[not_authorized]" in line
    assert cli.ok(carol, "vault", "get", "wifi", "--space", "family") == "WIFI-PASS-2\n"
    for r in cli.results:  # only `vault get` printed a secret
        if r.args[:2] != ("vault", "get"):
            for secret in ("WIFI-PASS-1", "WIFI-PASS-2", PRIVATE[1], "CAROL-PIN"):
                assert secret not in r.stdout + r.stderr, (r.args, secret)
