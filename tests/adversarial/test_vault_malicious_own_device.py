"""The vault under a malicious own device (docs/vault.md, "A malicious own device").

A device of the account turned malicious: a real :class:`Device` whose ``vault``
pycrdt document is edited directly with forged fields, then flushed and synced
through the in-process relay over real SQLite storage. Its ops are validly
signed (it is an active device), so the relay accepts them; what it writes
inside them is a lie. The honest devices must:

* attribute every record to the signer of the op that carried it, so forged
  tombstones naming another device neither delete anything nor make the relay's
  controller raise ``deletion_burst`` against the named device (framing);
* count deletions and decide grace periods by when they first saw a record,
  so a tombstone dated in the far future (or past) neither hides later deletions
  from the controller (blinding) nor makes an item purgeable at once;
* never adopt a change or removal of an existing record: the first value stays
  what they read, and the change is an alert naming the device that made it;
* not be fooled by a crafted Yjs update that waits in the document for another
  device's next record (a deletion of items not received yet, or an item whose
  origin is that record): the record is taken from its own op's content, and
  what the planted update did is an alert naming no one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from clientkit import InProcessRelay, sqlite_relay
from mnemonic import Mnemonic

from sddsf.client.device import Device, doc_id_for
from sddsf.client.vault import GRACE_MS, Vault

PHRASE = Mnemonic("english").to_mnemonic(bytes(range(32)))
ATTACKER_PHRASE = Mnemonic("english").to_mnemonic(bytes(32))
PIN = "2468"
YEAR_2100_MS = 4_102_444_800_000
DAY_MS = 24 * 3600 * 1000


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    async with sqlite_relay(tmp_path) as r:
        yield r


@pytest.fixture
async def own(relay: InProcessRelay,
              tmp_path: Path) -> AsyncIterator[tuple[Device, Device, Device]]:
    """A (laptop), B (phone) and M (tablet, the one that turns malicious)."""
    a, _ = await relay.new_account(tmp_path / "a", "laptop")
    b = await relay.add(a, tmp_path / "b", "phone")
    m = await relay.add(a, tmp_path / "m", "tablet")
    yield a, b, m
    for d in (a, b, m):
        await d.close()


async def sync_all(*devices: Device) -> None:
    for d in (*devices, devices[0]):
        report = await d.sync()
        assert report.rejected == []


def versions(device: Device) -> Any:
    """The malicious device's own pycrdt map of vault records (edited directly)."""
    (space,) = [s for s, n in device.spaces() if n == "vault"]
    return device.doc(space, "vault").get("versions", type=pycrdt.Map)


def inject(device: Device, update: bytes) -> None:
    """The malicious device sends raw Yjs update bytes in its own (validly signed) op."""
    (space,) = [s for s, n in device.spaces() if n == "vault"]
    device.doc(space, "vault")
    device._buffers[(space, doc_id_for(space, "vault"))].append(update)
    device.flush()


def varuint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varuint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = data[i]
        n, shift, i = n | (byte & 0x7F) << shift, shift + 7, i + 1
        if byte < 0x80:
            return n, i


def next_clock(doc: Any, client: int) -> int:
    """The clock a Yjs client's next item gets, from the document's state vector."""
    state = doc.get_state()
    count, i = read_varuint(state, 0)
    for _ in range(count):
        c, i = read_varuint(state, i)
        clock, i = read_varuint(state, i)
        if c == client:
            return clock
    return 0


def vault_doc(device: Device) -> Any:
    (space,) = [s for s, n in device.spaces() if n == "vault"]
    return device.doc(space, "vault")


def forged(name: str, kind: str, secret: str | None, author: bytes, ts: int,
           supersedes: Sequence[str]) -> str:
    """A vault record in the format every sddsf version reads (format 1, unsigned)."""
    return json.dumps({"f": 1, "name": name, "kind": kind, "secret": secret,
                       "author": author.hex(), "ts": ts, "supersedes": list(supersedes)},
                      sort_keys=True, separators=(",", ":"))


async def bursts(relay: InProcessRelay, device: Device) -> set[bytes]:
    """Devices the relay's controller raised ``deletion_burst`` against."""
    alerts = await relay.app.state.relay.controller.alerts(device.account.account_id,
                                                           include_acked=True)
    return {a.device_id for a in alerts if a.rule == "deletion_burst"}


async def honest_vault_with(a: Device, names: Sequence[str], *others: Device) -> Vault:
    av = await Vault.open(a)
    for n in names:
        av.put(n, "password", f"pw-{n}")
    await sync_all(a, *others)
    return av


# ------------------------------------------------------------------ (a) framing
async def test_forged_tombstones_naming_another_device_frame_nobody(
        relay: InProcessRelay, own: tuple[Device, Device, Device]) -> None:
    a, b, m = own
    names = [f"item{i:02d}" for i in range(20)]
    av = await honest_vault_with(a, names, b, m)
    mv = await Vault.open(m)
    heads = {n: mv.get(n).id for n in names}
    vmap = versions(m)
    with vmap.doc.transaction():
        for n in names:  # 20 deletions "by the laptop", written by the tablet
            vmap[f"{n}-tomb".encode().hex()] = forged(n, "password", None, a.device_id,
                                                      relay.clock(), [heads[n]])
    m.flush()
    await sync_all(m, a, b)

    framed = await bursts(relay, a)
    assert a.device_id not in framed, "the relay raised deletion_burst against the laptop, " \
        "which deleted nothing: the honest devices believed the forged author field"
    bv = await Vault.open(b)
    for v in (av, bv):
        assert [i.name for i in v.list()] == names  # nothing was deleted
        refused = [x for x in v.alerts if x.what == "misattributed"]
        assert len(refused) == 20 and {x.by for x in refused} == {m.device_id.hex()}
    # the deletions are the tablet's, and are reported as such
    assert m.device_id in framed


async def test_signed_format_forgeries_and_moved_signed_records_are_refused(
        relay: InProcessRelay, own: tuple[Device, Device, Device]) -> None:
    """The same framing in the signed record format: a record naming the laptop
    with a signature M cannot make, and the laptop's genuine signed tombstone
    copied under a new key (a signature covers the key): neither deletes
    anything, and neither is counted as the laptop's deletion."""
    a, b, m = own
    av = await honest_vault_with(a, ["x", "y", "z"], b, m)
    av.rm("z")
    await sync_all(a, b, m)
    z_tomb = next(v for v in av.history("z") if v.deleted)
    mv = await Vault.open(m)
    vmap = versions(m)
    record = json.loads(forged("x", "password", None, a.device_id, relay.clock(),
                               [mv.get("x").id]))
    record.update(f=2, sig="00" * 64)
    copied = json.loads(vmap[z_tomb.id])
    copied.update(name="y", supersedes=[mv.get("y").id])
    with vmap.doc.transaction():
        vmap["ab" * 16] = json.dumps(record, sort_keys=True, separators=(",", ":"))
        vmap["cd" * 16] = vmap[z_tomb.id]  # the genuine record under another key
        vmap["ef" * 16] = json.dumps(copied, sort_keys=True, separators=(",", ":"))
    m.flush()
    await sync_all(m, a, b)
    bv = await Vault.open(b)
    for v in (av, bv):
        assert [i.name for i in v.list()] == ["x", "y"]
        whats = sorted((x.what, x.version[:4]) for x in v.alerts)
        assert whats == [("forged", "abab"), ("forged", "cdcd"), ("forged", "efef")], whats
        assert {x.by for x in v.alerts} == {m.device_id.hex()}
    assert a.device_id not in await bursts(relay, a)


# ------------------------------------------------------------------ (b) blinding
async def test_a_tombstone_dated_2100_does_not_blind_the_deletion_report(
        relay: InProcessRelay, own: tuple[Device, Device, Device]) -> None:
    a, b, m = own
    names = [f"key{i:02d}" for i in range(31)]
    await honest_vault_with(a, names, b, m)
    mv = await Vault.open(m)
    versions(m)["ee" * 16] = forged("key30", "password", None, m.device_id, YEAR_2100_MS,
                                    [mv.get("key30").id])
    m.flush()
    await sync_all(m, a, b)  # the honest devices see (and report) one deletion
    assert m.device_id not in await bursts(relay, a)
    for n in names[:30]:  # then 30 real deletions
        mv.rm(n)
    await sync_all(m, a, b)
    assert m.device_id in await bursts(relay, a), "30 deletions raised no deletion_burst: " \
        "the tombstone dated 2100 moved the honest devices' report watermark"


async def test_a_backdated_tombstone_keeps_its_full_grace_period(
        relay: InProcessRelay, own: tuple[Device, Device, Device]) -> None:
    a, b, m = own
    av = await honest_vault_with(a, ["savings"], b, m)
    mv = await Vault.open(m)
    versions(m)["dd" * 16] = forged("savings", "password", None, m.device_id, 0,
                                    [mv.get("savings").id])  # "deleted in 1970"
    m.flush()
    await sync_all(m, a, b)
    item = av.item("savings")
    assert item is not None and item.deleted
    assert av.restorable(item), "a tombstone dated 1970 made the item purgeable at once"
    assert av.purge() == []
    now = relay.clock()
    assert now <= av.deleted_at(item) + GRACE_MS <= now + GRACE_MS + DAY_MS
    av.restore("savings")
    await sync_all(a, b)
    assert av.get("savings").secret == "pw-" + "savings"


# -------------------------------------------------------------- (c) silent swap
async def test_an_in_place_swap_of_a_seed_is_refused_and_alerted(
        relay: InProcessRelay, own: tuple[Device, Device, Device]) -> None:
    a, b, m = own
    av = await Vault.open(a)
    original = av.put("wallet", "bip39", PHRASE)
    await sync_all(a, b, m)
    vmap = versions(m)
    vmap[original.id] = forged("wallet", "bip39", ATTACKER_PHRASE, a.device_id,
                               original.ts_ms, original.supersedes)
    m.flush()
    await sync_all(m, a, b)
    bv = await Vault.open(b)
    for v in (av, bv):
        got = v.get("wallet")
        assert got.secret == PHRASE, "the laptop's seed was swapped in place: the vault " \
            "shows the attacker's phrase as the laptop's, one version, no conflict"
        assert got.id == original.id and got.author == a.device_id.hex()
        assert [x.id for x in v.history("wallet")] == [original.id]
        (alert,) = v.alerts
        assert (alert.what, alert.version, alert.by, alert.name) == (
            "changed", original.id, m.device_id.hex(), "wallet")
        assert ATTACKER_PHRASE not in json.dumps(alert.describe())
        assert v.new_alerts() == [alert] and v.acknowledge() == 1
        assert v.new_alerts() == [] and v.alerts == [alert]  # still listed


async def test_removing_a_live_record_is_refused_and_alerted(
        relay: InProcessRelay, own: tuple[Device, Device, Device]) -> None:
    a, b, m = own
    av = await Vault.open(a)
    original = av.put("wallet", "bip39", PHRASE)
    await sync_all(a, b, m)
    del versions(m)[original.id]  # a deletion with no tombstone, nothing to restore
    m.flush()
    await sync_all(m, a, b)
    bv = await Vault.open(b)
    for v in (av, bv):
        assert v.get("wallet").secret == PHRASE
        assert [(x.what, x.by) for x in v.alerts] == [("removed", m.device_id.hex())]
    # the silent removal counts as a deletion by the tablet, never by the laptop
    assert a.device_id not in await bursts(relay, a)


async def test_a_legitimate_purge_is_not_an_alert(
        relay: InProcessRelay, own: tuple[Device, Device, Device]) -> None:
    a, b, m = own
    av = await honest_vault_with(a, ["old"], b, m)
    av.rm("old")
    await sync_all(a, b, m)
    later = relay.clock() + GRACE_MS + DAY_MS
    aged = await Vault.open(a, clock=lambda: later)
    assert aged.purge() == ["old"]
    await sync_all(a, b, m)
    bv = await Vault.open(b, clock=lambda: later)
    assert bv.item("old") is None and bv.alerts == []


# ------------------------------------------- crafted updates that wait for A
async def test_a_planted_deletion_of_a_future_record_does_not_erase_it(
        relay: InProcessRelay, own: tuple[Device, Device, Device]) -> None:
    """M deletes the laptop's *next* Yjs items before they exist: a delete set
    for clocks its Yjs client has not used yet. Yjs keeps it pending and applies
    it the moment the laptop's next record arrives, so honest devices would never
    see that record at all."""
    a, b, m = own
    await honest_vault_with(a, ["old"], b, m)
    x = vault_doc(a).client_id  # the laptop's Yjs client (in every device's state vector)
    clock = next_clock(vault_doc(m), x)
    inject(m, b"\x00" + varuint(1) + varuint(x) + varuint(1) + varuint(clock) + varuint(1000))
    await sync_all(m, a, b)
    av = await Vault.open(a)
    new = av.put("new", "bip39", PHRASE)
    await sync_all(a, b)
    bv = await Vault.open(b)
    assert [i.name for i in bv.list()] == ["new", "old"], "the laptop's new record was " \
        "erased on the phone by a deletion planted before it existed"
    assert bv.get("new").secret == PHRASE and bv.get("new").author == a.device_id.hex()
    assert [(x.what, x.version, x.by) for x in bv.alerts] == [("removed", new.id, None)]
    assert a.device_id not in await bursts(relay, a)


async def test_a_planted_item_cannot_take_over_the_next_record(
        relay: InProcessRelay, own: tuple[Device, Device, Device]) -> None:
    """M writes, under the laptop's Yjs client id, an item whose origin is the
    laptop's *next* item: it waits, then takes that record's key (a map entry
    inherits the key of its origin) and replaces its value, with a record
    naming the laptop as its author."""
    a, b, m = own
    await honest_vault_with(a, ["old"], b, m)
    x = vault_doc(a).client_id
    helper: pycrdt.Doc[Any] = pycrdt.Doc(client_id=x)
    helper.apply_update(vault_doc(m).get_update())
    hm = helper.get("versions", type=pycrdt.Map)
    hm["guess"] = "placeholder"  # gets the id the laptop's next item will have
    before = helper.get_state()
    hm["guess"] = forged("new", "bip39", ATTACKER_PHRASE, a.device_id, relay.clock(), [])
    inject(m, helper.get_update(before))  # only the item whose origin does not exist yet
    await sync_all(m, a, b)
    av = await Vault.open(a)
    new = av.put("new", "bip39", PHRASE)
    await sync_all(a, b, m)
    bv = await Vault.open(b)
    assert bv.get("new").secret == PHRASE, "a planted item replaced the laptop's new " \
        "seed with the attacker's on the phone, shown as the laptop's"
    assert [(x.what, x.version, x.by) for x in bv.alerts] == [("changed", new.id, None)]
    # on the laptop the planted item takes effect with the next op of another device
    bv.put("other", "password", "pw-other")
    await sync_all(b, a)
    assert av.get("new").secret == PHRASE
    assert [(x.what, x.version, x.by) for x in av.alerts] == [("changed", new.id, None)]
    assert a.device_id not in await bursts(relay, a)
    assert b.device_id not in await bursts(relay, a)


# ------------------------------------------------- a snapshot written by M
async def test_a_new_device_starting_from_the_attackers_snapshot(
        relay: InProcessRelay, own: tuple[Device, Device, Device], tmp_path: Path) -> None:
    """A device that joins later starts from the newest snapshot, here written by M
    after it swapped two records in place: it never saw the ops, so only the
    records' own signatures speak. A signed-format forgery is refused; a record
    in the older unsigned format is shown with its author unverified; tombstones
    it only knows from the snapshot are never reported as anyone's deletions."""
    a, b, m = own
    av = await Vault.open(a)
    wallet = av.put("wallet", "bip39", PHRASE)
    pin = av.put("pin", "password", PIN)
    await sync_all(a, b, m)
    vmap = versions(m)
    signed = json.loads(forged("wallet", "bip39", ATTACKER_PHRASE, a.device_id,
                               wallet.ts_ms, wallet.supersedes))
    signed.update(f=2, sig="11" * 64)
    with vmap.doc.transaction():
        vmap[wallet.id] = json.dumps(signed, sort_keys=True, separators=(",", ":"))
        vmap[pin.id] = forged("pin", "password", "0000", a.device_id, pin.ts_ms, [])
        vmap["fe" * 16] = forged("gone", "password", None, a.device_id, 0, [])
    m.flush()
    await sync_all(m, a, b)
    (space,) = [s for s, n in m.spaces() if n == "vault"]
    assert await m.snapshot(space) is not None
    n = await relay.add(a, tmp_path / "n", "watch")
    try:
        report = await n.sync()
        assert report.snapshots_loaded == 1
        nv = await Vault.open(n)
        assert nv.item("wallet") is None  # the only record it has is a forgery
        assert [(x.what, x.version, x.by) for x in nv.alerts] == [("forged", wallet.id, None)]
        got = nv.get("pin")
        assert (got.secret, got.verified) == ("0000", False)  # shown as unverified
        assert nv.deletions(0) == ({}, 0)
    finally:
        await n.close()
    assert a.device_id not in await bursts(relay, a)
    for v in (av, await Vault.open(b)):  # the devices that saw the ops kept the originals
        assert v.get("wallet").secret == PHRASE and v.get("pin").secret == PIN


async def test_junk_records_neither_stop_sync_nor_reads(
        relay: InProcessRelay, own: tuple[Device, Device, Device]) -> None:
    """Records that are not text, or JSON nested past Python's recursion limit:
    counted as unreadable, never an error that stops a device."""
    a, b, m = own
    av = await honest_vault_with(a, ["ok"], b, m)
    vmap = versions(m)
    with vmap.doc.transaction():
        vmap["aa" * 16] = pycrdt.Map({"f": 2})
        vmap["bb" * 16] = "[" * 100_000 + "]" * 100_000
        vmap["cc" * 16] = 42
    m.flush()
    await sync_all(m, a, b)
    bv = await Vault.open(b)
    for v in (av, bv):
        assert [i.name for i in v.list()] == ["ok"]
        assert sorted(v.unreadable) == ["aa" * 16, "bb" * 16, "cc" * 16]
        assert v.alerts == []
