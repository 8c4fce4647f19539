"""The vault: version/head logic (unit and property tests over plain pycrdt documents),
input validation, secrets kept out of every listing and error, and two real devices
syncing their vault through the in-process relay."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from clientkit import InProcessRelay
from hypothesis import event, given
from hypothesis import strategies as st
from mnemonic import Mnemonic

from sddsf.client.device import Device
from sddsf.client.vault import GRACE_MS, SPACE, Vault, VaultConflictError, Version
from sddsf.crypto import Ed25519SigningKey, secp256k1_public_key
from sddsf.errors import SddsfError, UsageError

DAY_MS = 24 * 3600 * 1000
PHRASE = Mnemonic("english").to_mnemonic(bytes(range(32)))


class FakeClock:
    def __init__(self, t: int = 1_700_000_000_000) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def replica(author: int, clock: FakeClock) -> tuple[pycrdt.Doc[Any], Vault]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    return doc, Vault(lambda: [doc], bytes([author]) * 16, clock=clock)


def merge(src: pycrdt.Doc[Any], dst: pycrdt.Doc[Any]) -> None:
    dst.apply_update(src.get_update(dst.get_state()))


def val(version: Version) -> str | None:
    """The secret of a version (a helper, so that comparisons read as values)."""
    return version.secret


def heads(vault: Vault, name: str) -> set[str]:
    item = vault.item(name)
    assert item is not None
    return {h.id for h in item.heads}


# ------------------------------------------------------------- version logic
def test_sequential_writes_supersede_and_history_keeps_every_version() -> None:
    clock = FakeClock()
    _, v = replica(1, clock)
    first = v.put("mail", "password", "hunter2")
    clock.t += 1
    second = v.put("mail", "password", "hunter3")
    assert second.supersedes == (first.id,)
    assert heads(v, "mail") == {second.id}
    assert val(v.get("mail")) == "hunter3"
    assert [x.secret for x in v.history("mail")] == ["hunter2", "hunter3"]
    assert val(v.get("mail", first.id[:6])) == "hunter2"
    assert v.get("mail").author == (bytes([1]) * 16).hex() and v.get("mail").ts_ms == clock.t
    with pytest.raises(UsageError, match="too short"):
        v.get("mail", first.id[:3])
    with pytest.raises(UsageError, match="not one of the versions of 'mail'"):
        v.get("mail", "ffffffffff")
    with pytest.raises(UsageError, match="no secret named 'nope'"):
        v.get("nope")


def test_concurrent_puts_are_both_kept_as_a_conflict_until_resolved() -> None:
    clock = FakeClock()
    a_doc, a = replica(1, clock)
    b_doc, b = replica(2, clock)
    base = a.put("mail", "password", "base")
    merge(a_doc, b_doc)
    from_a = a.put("mail", "password", "from-a")
    from_b = b.put("mail", "note", "from-b")
    assert from_a.supersedes == from_b.supersedes == (base.id,)
    merge(a_doc, b_doc)
    merge(b_doc, a_doc)
    for v in (a, b):
        assert [i.name for i in v.conflicts()] == ["mail"]
        assert heads(v, "mail") == {from_a.id, from_b.id}
        with pytest.raises(VaultConflictError) as err:
            v.get("mail")
        assert set(err.value.versions) == {from_a.id, from_b.id}
        assert "resolve mail --keep" in err.value.message
        assert val(v.get("mail", from_b.id)) == "from-b"
    kept = b.resolve("mail", keep=from_a.id[:8])
    assert set(kept.supersedes) == {from_a.id, from_b.id}
    merge(b_doc, a_doc)
    for v in (a, b):
        assert v.conflicts() == []
        assert val(v.get("mail")) == "from-a" and v.get("mail").kind == "password"
        assert len(v.history("mail")) == 4
    with pytest.raises(UsageError, match="no conflict"):
        a.resolve("mail", keep=kept.id)


def test_delete_update_race_keeps_the_item_flagged() -> None:
    clock = FakeClock()
    a_doc, a = replica(1, clock)
    b_doc, b = replica(2, clock)
    a.put("seed", "bip39", PHRASE)
    merge(a_doc, b_doc)
    tomb = a.rm("seed")
    update = b.put("seed", "bip39", Mnemonic("english").to_mnemonic(bytes(32)))
    merge(a_doc, b_doc)
    merge(b_doc, a_doc)
    for v in (a, b):
        (item,) = v.list()
        assert item.name == "seed" and item.conflict and not item.deleted
        assert {h.id: h.deleted for h in item.heads} == {tomb.id: True, update.id: False}
        with pytest.raises(VaultConflictError):
            v.get("seed")
        with pytest.raises(UsageError, match="is a deletion"):
            v.get("seed", tomb.id)
        with pytest.raises(UsageError, match="is not deleted; `sddsf vault conflicts`"):
            v.restore("seed")
    # keeping the tombstone confirms the deletion (still restorable)
    assert a.resolve("seed", keep=tomb.id).deleted
    merge(a_doc, b_doc)
    assert b.list() == [] and b.conflicts() == []
    assert [i.name for i in b.list(deleted=True)] == ["seed"]


def test_restore_within_the_grace_period_and_refused_after_it() -> None:
    clock = FakeClock()
    _, v = replica(1, clock)
    v.put("pin", "password", "1234")
    v.rm("pin")
    assert v.list() == []
    with pytest.raises(UsageError, match=r"was deleted on .*`sddsf vault restore pin`"):
        v.get("pin")
    with pytest.raises(UsageError, match="was deleted"):
        v.rm("pin")
    clock.t += 29 * DAY_MS
    (restored,) = v.restore("pin")
    assert val(restored) == "1234" and val(v.get("pin")) == "1234"
    with pytest.raises(UsageError, match="is not deleted"):
        v.restore("pin")
    v.rm("pin")
    clock.t += GRACE_MS + 1
    with pytest.raises(UsageError, match="grace period has ended and it is gone"):
        v.restore("pin")
    assert [i.name for i in v.list(deleted=True)] == ["pin"]
    assert not v.restorable(v.list(deleted=True)[0])


def test_restore_of_a_deleted_conflict_brings_back_every_value() -> None:
    clock = FakeClock()
    a_doc, a = replica(1, clock)
    b_doc, b = replica(2, clock)
    a.put("k", "password", "one")
    b.put("k", "password", "two")
    merge(b_doc, a_doc)
    a.rm("k")
    restored = a.restore("k")
    assert sorted(x.secret or "" for x in restored) == ["one", "two"]
    assert [i.name for i in a.conflicts()] == ["k"]


def test_concurrent_deletes_are_a_deletion_not_a_conflict() -> None:
    clock = FakeClock()
    a_doc, a = replica(1, clock)
    b_doc, b = replica(2, clock)
    a.put("k", "password", "one")
    merge(a_doc, b_doc)
    a.rm("k")
    b.rm("k")
    merge(b_doc, a_doc)
    item = a.item("k")
    assert item is not None and item.deleted and not item.conflict and len(item.heads) == 2
    (back,) = a.restore("k")
    assert val(back) == "one" and len(back.supersedes) == 2


def test_put_after_rm_recreates_and_purge_erases_only_expired_items() -> None:
    clock = FakeClock()
    a_doc, a = replica(1, clock)
    b_doc, b = replica(2, clock)
    a.put("old", "password", "ERASE-ME-123")
    a.put("kept", "password", "stays")
    a.put("again", "password", "v1")
    merge(a_doc, b_doc)
    a.rm("old")
    a.rm("again")
    assert val(a.put("again", "password", "v2")) == "v2"
    assert a.purge() == []  # nothing past its grace period yet
    clock.t += GRACE_MS + 1
    b.put("old", "password", "concurrent")  # b never saw the deletion
    assert a.purge() == ["old"]
    assert b"ERASE-ME-123" not in a_doc.get_update()
    with pytest.raises(UsageError, match="no secret named 'old'"):
        a.history("old")
    merge(b_doc, a_doc)  # b's concurrent write survives, its superseded base is gone
    assert val(a.get("old")) == "concurrent"
    assert sorted(i.name for i in a.list()) == ["again", "kept", "old"]


def test_two_vault_spaces_are_read_as_one_and_malformed_records_are_skipped() -> None:
    clock = FakeClock()
    d1: pycrdt.Doc[Any] = pycrdt.Doc()
    d2: pycrdt.Doc[Any] = pycrdt.Doc()
    Vault(lambda: [d2], bytes(16), clock=clock).put("x", "password", "in-second")
    d1.get("versions", type=pycrdt.Map)["junk"] = "{not json"
    both = Vault(lambda: [d1, d2], bytes(16), clock=clock)
    assert val(both.get("x")) == "in-second"
    assert both.unreadable == ["junk"]
    both.put("y", "note", "in-first")
    assert "y" not in str(d2.get_update()) and len(d1.get("versions", type=pycrdt.Map)) == 2


# ----------------------------------------------------------- property test
_STEP = st.tuples(st.sampled_from(["put", "rm", "sync"]), st.integers(0, 1),
                  st.sampled_from(["x", "y"]))


@given(steps=st.lists(_STEP, max_size=30), data=st.data())
def test_no_write_is_ever_lost_and_replicas_converge(
        steps: list[tuple[str, int, str]], data: st.DataObject) -> None:
    clock = FakeClock()
    pairs = [replica(1, clock), replica(2, clock)]
    outbox: list[list[bytes]] = [[], []]  # each replica's own updates not yet delivered
    written: dict[str, Version] = {}

    def deliver(i: int) -> None:
        for update in data.draw(st.permutations(outbox[i])):
            pairs[1 - i][0].apply_update(update)
        outbox[i].clear()

    def visible(v: Vault) -> set[str]:
        return {x.id for n in ("x", "y") if v.item(n) for x in v.history(n)}

    for op, i, name in steps:
        clock.t += 1
        doc, vault = pairs[i]
        if op == "sync":
            deliver(i)
            continue
        item, before, state = vault.item(name), visible(vault), doc.get_state()
        if op == "rm" and (item is None or item.deleted):
            with pytest.raises(UsageError):
                vault.rm(name)
            continue
        v = vault.put(name, "password", f"s{len(written)}") if op == "put" else vault.rm(name)
        assert set(v.supersedes) <= before  # a writer supersedes only what it saw
        written[v.id] = v
        outbox[i].append(doc.get_update(state))
    deliver(data.draw(st.integers(0, 1)))
    deliver(0)
    deliver(1)
    vaults = [p[1] for p in pairs]
    for vault in vaults:
        for w in written.values():  # every write is still there, unchanged
            assert next(h for h in vault.history(w.name) if h.id == w.id) == w
        for name in ("x", "y"):
            mine = [w for w in written.values() if w.name == name]
            superseded = {s for w in mine for s in w.supersedes}
            expected = {w.id for w in mine if w.id not in superseded}
            assert (heads(vault, name) if mine else set()) == expected
    a, b = ([i.describe() for i in v.list(deleted=True)] for v in vaults)
    assert a == b
    assert [i.name for i in vaults[0].conflicts()] == [i.name for i in vaults[1].conflicts()]
    event(f"conflicts after merging: {len(vaults[0].conflicts())}")


# --------------------------------------------------------- generate, inputs
def test_generate_each_kind() -> None:
    _, v = replica(1, FakeClock())
    ed = v.generate("ed", "ed25519")
    assert ed.secret is not None and len(bytes.fromhex(ed.secret)) == 32
    assert ed.public_key == Ed25519SigningKey.from_seed(bytes.fromhex(ed.secret)).public.raw.hex()
    k1 = v.generate("k1", "secp256k1")
    assert k1.secret is not None and k1.public_key is not None
    assert k1.public_key == secp256k1_public_key(bytes.fromhex(k1.secret)).hex()
    assert len(k1.public_key) == 66 and k1.public_key[:2] in ("02", "03")
    seed = v.generate("seed", "bip39")
    assert seed.secret is not None and len(seed.secret.split()) == 24
    assert Mnemonic("english").check(seed.secret) and seed.public_key is None
    assert v.generate("ed2", "ed25519").secret != ed.secret
    with pytest.raises(UsageError, match="'ed' already exists"):
        v.generate("ed", "ed25519")
    with pytest.raises(UsageError, match="only ed25519, secp256k1, bip39"):
        v.generate("pw", "password")
    assert {i.name: i.kind for i in v.list()} == {"ed": "ed25519", "ed2": "ed25519",
                                                  "k1": "secp256k1", "seed": "bip39"}


BAD_PHRASE = " ".join([*PHRASE.split()[:-1], "zoo"])  # valid words, wrong checksum
N = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141"  # secp256k1 order


@pytest.mark.parametrize(("kind", "secret", "fragment"), [
    ("bip39", BAD_PHRASE, "checksum does not match"),
    ("bip39", " ".join([*PHRASE.split()[:-1], "bitcoinz"]), "word(s) 24 of the phrase"),
    ("bip39", " ".join(PHRASE.split()[:11]), "12, 15, 18, 21 or 24 words, not 11"),
    ("ed25519", "zz" * 32, "characters that are not hex"),
    ("ed25519", "ab" * 31, "64 hex digits (32 bytes); this one is 31 bytes"),
    ("secp256k1", "00" * 32, "not a valid secp256k1 private key"),
    ("secp256k1", N, "not a valid secp256k1 private key"),
    ("password", "", "the password is empty"),
    ("note", " \n", "the note is empty"),
    ("note", "x" * (64 * 1024 + 1), "at most 64 KiB"),
    ("wallet", "anything", "unknown secret kind 'wallet'; use one of password, bip39"),
])
def test_invalid_input_is_a_usage_error_that_does_not_echo_the_secret(
        kind: str, secret: str, fragment: str) -> None:
    _, v = replica(1, FakeClock())
    with pytest.raises(UsageError) as err:
        v.put("item", kind, secret)
    assert fragment in err.value.message
    if len(secret.strip()) >= 8:
        assert secret.strip().lower() not in str(err.value).lower()
    assert v.list() == []


def test_kinds_are_normalized() -> None:
    _, v = replica(1, FakeClock())
    assert v.put("s", "BIP39", "  " + PHRASE.upper().replace(" ", "\n ") + "\n").secret == PHRASE
    assert val(v.put("k", "ed25519", "0x" + "AB" * 32)) == "ab" * 32
    assert v.put("n", "generic", "text").kind == "note"
    for bad in ("", "a\nb", "x" * 201):
        with pytest.raises(UsageError, match="item name has 1 to 200"):
            v.put(bad, "note", "text")


def test_secrets_never_appear_in_listings_reprs_or_errors() -> None:
    clock = FakeClock()
    a_doc, a = replica(1, clock)
    b_doc, b = replica(2, clock)
    secrets = ["PASSWORD-FROM-A-42", "PASSWORD-FROM-B-42"]
    a.put("mail", "password", secrets[0])
    b.put("mail", "password", secrets[1])
    merge(b_doc, a_doc)
    ed, k1, seed = (a.generate(n, k) for n, k in
                    [("ed", "ed25519"), ("k1", "secp256k1"), ("seed", "bip39")])
    secrets += [s.secret or "" for s in (ed, k1, seed)]
    a.put("gone", "note", "DELETED-NOTE-42")
    a.rm("gone")
    secrets.append("DELETED-NOTE-42")
    texts = [json.dumps([i.describe() for i in a.list(deleted=True)]),
             json.dumps([i.describe() for i in a.conflicts()]),
             json.dumps([v.describe() for n in ("mail", "ed", "gone") for v in a.history(n)]),
             repr(a.list(deleted=True)), repr(a.history("mail")), str(a.history("seed"))]
    calls: list[Callable[[], object]] = [
        lambda: a.get("mail"), lambda: a.get("gone"), lambda: a.rm("gone"),
        lambda: a.resolve("mail", "0000"), lambda: a.get("seed", "zz"),
        lambda: a.put("ed", "ed25519", secrets[2][:-2])]
    for call in calls:
        with pytest.raises(SddsfError) as err:
            call()
        texts.append(str(err.value))
    assert ed.public_key and ed.public_key[:16] in texts[0]  # the fingerprint is shown
    for text in texts:
        for secret in secrets:
            assert secret not in text and secret[:16] not in text, (secret, text)


# ------------------------------------------------- two devices, one relay


@pytest.fixture
async def devices(relay: InProcessRelay, tmp_path: Path) -> AsyncIterator[tuple[Device, Device]]:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    yield laptop, phone
    await laptop.close()
    await phone.close()


async def sync_all(*devices: Device) -> None:
    for d in (*devices, devices[0]):
        report = await d.sync()
        assert report.rejected == []


async def test_concurrent_offline_writes_on_two_devices_conflict_and_resolve(
        devices: tuple[Device, Device]) -> None:
    laptop, phone = devices
    lv = await Vault.open(laptop)
    lv.put("exchange", "password", "base")
    await sync_all(laptop, phone)
    pv = await Vault.open(phone)  # found by name, not created again
    assert [n for _, n in phone.spaces()].count(SPACE) == 1
    assert val(pv.get("exchange")) == "base"
    # both offline: each writes a new version of the same item
    on_laptop = lv.put("exchange", "password", "laptop-value")
    on_phone = pv.put("exchange", "password", "phone-value")
    await sync_all(laptop, phone)
    for v in (lv, pv):
        (item,) = v.conflicts()
        assert {h.id: h.secret for h in item.heads} == {on_laptop.id: "laptop-value",
                                                        on_phone.id: "phone-value"}
        assert {h.author for h in item.heads} == {laptop.device_id.hex(), phone.device_id.hex()}
        with pytest.raises(VaultConflictError):
            v.get("exchange")
    pv.resolve("exchange", keep=on_laptop.id)
    await sync_all(phone, laptop)
    for v in (lv, pv):
        assert v.conflicts() == []
        assert val(v.get("exchange")) == "laptop-value"
        assert [x.secret for x in v.history("exchange")].count("phone-value") == 1


async def test_delete_update_race_and_grace_restore_between_devices(
        devices: tuple[Device, Device]) -> None:
    laptop, phone = devices
    clock = FakeClock(time.time_ns() // 1_000_000)
    lv = await Vault.open(laptop, clock=clock)
    lv.put("seed", "bip39", PHRASE)
    lv.put("pin", "password", "2468")
    await sync_all(laptop, phone)
    pv = await Vault.open(phone, clock=clock)
    lv.rm("seed")  # offline on the laptop ...
    other = Mnemonic("english").to_mnemonic(bytes(16))
    pv.put("seed", "bip39", other)  # ... while the phone updates it
    await sync_all(laptop, phone)
    for v in (lv, pv):
        (item,) = v.conflicts()
        assert item.name == "seed" and "seed" in [i.name for i in v.list()]
        assert sorted(h.deleted for h in item.heads) == [False, True]
    # grace period: deleted on the laptop, restored on the phone 29 days later
    lv.rm("pin")
    await sync_all(laptop, phone)
    assert [i.name for i in pv.list()] == ["seed"]
    clock.t += 29 * DAY_MS
    pv.restore("pin")
    await sync_all(phone, laptop)
    assert val(lv.get("pin")) == "2468"
    lv.rm("pin")
    await sync_all(laptop, phone)
    clock.t += 31 * DAY_MS
    with pytest.raises(UsageError, match="gone"):
        pv.restore("pin")


async def test_vaults_created_concurrently_on_two_devices_lose_nothing(
        devices: tuple[Device, Device]) -> None:
    laptop, phone = devices
    lv = await Vault.open(laptop)  # neither has synced: both create a "vault" space
    pv = await Vault.open(phone)
    lv.put("a", "password", "from-laptop")
    pv.put("b", "password", "from-phone")
    await sync_all(laptop, phone)
    assert sorted(n for _, n in laptop.spaces()).count(SPACE) == 2
    for v in (lv, pv):
        assert {i.name: v.get(i.name).secret for i in v.list()} == {"a": "from-laptop",
                                                                    "b": "from-phone"}
    pv.put("a", "password", "updated-on-phone")
    await sync_all(phone, laptop)
    assert val(lv.get("a")) == "updated-on-phone" and lv.conflicts() == []


@pytest.mark.parametrize("secret", ["00" * 32, "ff" * 32])
def test_a_key_record_that_is_not_a_valid_key_is_unreadable_not_fatal(secret: str) -> None:
    """A device (a misbehaving own device, or a bug) writes a secp256k1 record whose
    64 hex digits are not a key (0, or not below the group order): listings,
    descriptions and reads of other items keep working and the record is reported
    as unreadable instead of raising out of every listing."""
    clock = FakeClock()
    doc, vault = replica(1, clock)
    vault.put("ok", "password", "fine")
    good = json.loads(doc.get("versions", type=pycrdt.Map)[vault.get("ok").id])
    bad = {**good, "name": "bad", "kind": "secp256k1", "secret": secret, "supersedes": []}
    doc.get("versions", type=pycrdt.Map)["b" * 32] = json.dumps(bad)
    assert [i.name for i in vault.list()] == ["ok"]
    assert [i.describe()["name"] for i in vault.list()] == ["ok"]
    assert vault.unreadable == ["b" * 32]
    assert val(vault.get("ok")) == "fine"
