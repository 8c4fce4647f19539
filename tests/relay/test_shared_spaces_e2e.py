"""Shared spaces end to end: three people, two devices each, one relay (SQLite and
PostgreSQL), through the client engine (protocol.md 21, 10.8).

Covers: share (create + add) opens an epoch for the new members' devices; a
member's devices join and read; concurrent offline edits by two people
converge; a reader's edit is refused by the relay; a removed member's devices
cannot read anything written after the removal (no key) nor write; a member
revoking one of its own devices makes the space rotate; membership is shown
with every member's devices.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pycrdt
import pytest
from relaykit import Clock, make_app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "client"))

from clientkit import InProcessRelay, passphrase
from relaykit import relay_key

from sddsf.client.device import Device
from sddsf.client.engine.common import doc_id_for
from sddsf.client.events import MembershipChange
from sddsf.client.invite import InviteCheck, accept_invite, invite
from sddsf.client.pairing import WORDS
from sddsf.client.relay_client import RelayClient
from sddsf.client.transport.relay import RelayTransport
from sddsf.errors import AuthenticationError, Code, ConflictError, ProofError
from sddsf.protocol import keypackage as kp
from sddsf.protocol import pairing as pp
from sddsf.protocol.clock import HLCTimestamp
from sddsf.protocol.envelope import (
    GENESIS_PREV,
    OpEnvelope,
    OpHeader,
    decode_envelope,
    seal_op,
)
from sddsf.protocol.membership import Role
from sddsf.protocol.vv import VersionVector
from sddsf.relay.storage.base import RelayStorage
from sddsf.testing.malicious_relay import Drop, Inject
from sddsf.testing.tampering import TamperingTransport


def text(dev: Device, space: bytes) -> str:
    return str(dev.doc(space, "text").get("t", type=pycrdt.Text))


def write(dev: Device, space: bytes, at: int, s: str) -> None:
    dev.doc(space, "text").get("t", type=pycrdt.Text).insert(at, s)
    dev.flush()


def _logged(dev: Device, space: bytes) -> list[OpEnvelope]:
    """The op envelopes of the space's log as the device stored them."""
    rows = dev.store.scan("op", space)
    return [decode_envelope(raw) for _, raw in rows if raw[:1] == b"\x84"]


class People:
    def __init__(self, relay: InProcessRelay) -> None:
        self.relay = relay
        self.devices: dict[str, tuple[Device, Device]] = {}

    async def behind_a_liar(self, name: str) -> tuple[Device, TamperingTransport]:
        """``name``'s first device, reopened behind a relay that can lie to it (the
        lie is re-signed with the relay key)."""
        first, second = self.devices[name]
        home = first.store.path.parent
        await first.close()
        wires: list[TamperingTransport] = []

        def lying(client: RelayClient, url: str) -> TamperingTransport:
            wires.append(TamperingTransport(RelayTransport(client, url), relay_key=relay_key()))
            return wires[-1]

        again = Device.open(home, passphrase=passphrase, transport=self.relay.transport(),
                            clock=self.relay.clock, engine_transport=lying)
        self.devices[name] = (again, second)
        return again, wires[-1]

    async def make(self, tmp_path: Path, name: str) -> tuple[Device, Device]:
        first, _ = await self.relay.new_account(tmp_path / f"{name}1", f"{name}-laptop")
        second = await self.relay.add(first, tmp_path / f"{name}2", f"{name}-phone")
        self.devices[name] = (first, second)
        return first, second


@pytest.fixture
async def people(storage: RelayStorage, tmp_path: Path) -> AsyncIterator[People]:
    relay = InProcessRelay(storage, Clock(time.time_ns() // 1_000_000))
    # Six devices share one loopback address here: lift the per-address limit.
    relay.app = make_app(storage, relay.clock, rate_ip_per_s=1000.0, rate_ip_burst=5000.0)
    p = People(relay)
    for name in ("alice", "bob", "carol"):
        await p.make(tmp_path, name)
    yield p
    for pair in p.devices.values():
        for dev in pair:
            await dev.close()


async def _shared(p: People) -> bytes:
    (a1, a2), (b1, b2), (c1, c2) = (p.devices[n] for n in ("alice", "bob", "carol"))
    space = await a1.create_space("plans")
    write(a1, space, 0, "hello")
    await a1.sync()
    await a1.sharing.share(space, b1.account, Role.WRITER)
    await a1.sharing.share(space, c1.account, Role.READER)
    for dev in (b1, b2, c1, c2):
        await dev.sharing.join(space, a1.account, "plans")
    await a2.sync()
    return space


async def test_three_people_share_a_space_and_converge(people: People) -> None:
    p = people
    (a1, a2), (b1, b2), (c1, c2) = (p.devices[n] for n in ("alice", "bob", "carol"))
    space = await _shared(p)
    # Every device of every member reads what the owner wrote before sharing.
    for dev in (a2, b1, b2, c1, c2):
        assert text(dev, space) == "hello", dev.name
    # The newest key package is sealed for all six devices and three recovery keys.
    newest = a1.engine.keyring.stored_packages(space)[-1]
    assert newest.version == kp.KEY_PACKAGE_VERSION_SHARED
    expected = {d.device_id for pair in p.devices.values() for d in pair} | {
        d.account.account_id for d in (a1, b1, c1)}
    assert set(newest.recipients) == expected
    # Concurrent offline edits by two people converge everywhere.
    write(a2, space, 5, " from alice")
    write(b2, space, 0, "bob says: ")
    for _ in range(2):
        for dev in (a2, b2, a1, b1, c1, c2):
            await dev.sync()
    texts = {text(dev, space) for pair in p.devices.values() for dev in pair}
    assert len(texts) == 1, texts
    assert "bob says: " in texts.pop()
    # Members are listed with their roles and devices, the owner marked.
    view = {m.fingerprint: m for m in b1.sharing.members(space)}
    owner = view[a1.account.fingerprint]
    assert owner.owner and owner.role == "admin" and not owner.you
    assert {name for _, name, active in owner.devices if active} == {"alice-laptop",
                                                                      "alice-phone"}
    assert view[c1.account.fingerprint].role == "reader"


async def test_a_readers_edit_stays_on_its_device_until_it_may_write(people: People) -> None:
    p = people
    (a1, _), (b1, _), (c1, _) = (p.devices[n] for n in ("alice", "bob", "carol"))
    space = await _shared(p)
    write(c1, space, 0, "carol was here ")
    report = await c1.sync()
    # Never sent (the relay would refuse it: tests/relay/test_shared_spaces.py),
    # never lost: held on the reader's device, and said so.
    assert report.not_writable == [space] and report.pushed == 0 and not report.rejected
    assert c1.held_count() == 1
    await a1.sync()
    await b1.sync()
    assert text(a1, space) == text(b1, space) == "hello"
    # Made a writer, the held edit goes out on its next sync.
    await a1.sharing.set_role(space, c1.account.account_id, Role.WRITER)
    report = await c1.sync()
    assert report.pushed == 1 and c1.held_count() == 0
    await a1.sync()
    assert text(a1, space) == "carol was here hello"


async def test_a_removed_member_reads_nothing_written_after_and_cannot_write(
        people: People) -> None:
    p = people
    (a1, _), (b1, b2), (c1, _) = (p.devices[n] for n in ("alice", "bob", "carol"))
    space = await _shared(p)
    before = max(b1.engine.keyring.keys_cached(space))
    events = c1.changes()
    report = await a1.sharing.remove(space, b1.account.account_id)
    assert report.rotated == 1
    write(a1, space, 5, " (secret after bob left)")
    await a1.sync()
    await c1.sync()
    assert text(c1, space) == "hello (secret after bob left)"
    # Carol's application hears of the removal, as her device verified it.
    seen = []
    while not any(isinstance(e, MembershipChange) for e in seen):
        seen.append(await asyncio.wait_for(anext(events), 5))
    change = next(e for e in seen if isinstance(e, MembershipChange))
    assert (change.space, change.change, change.account, change.role, change.by) == (
        space, "remove", b1.account.account_id, None, a1.account.account_id)
    # Bob's devices can no longer reach the space; their keys stop before the removal.
    report = await b1.sync()
    assert space in report.unreachable
    assert max(b1.engine.keyring.keys_cached(space)) == before
    assert text(b1, space) == "hello"
    newest = a1.engine.keyring.stored_packages(space)[-1]
    assert not {b1.device_id, b2.device_id, b1.account.account_id} & set(newest.recipients)
    # The relay refuses Bob's ops outright (the space is gone for his account).
    write(b2, space, 0, "bob again ")
    report = await b2.sync()
    assert space in report.unreachable and b2.pending_count() >= 1  # kept, never sent
    await a1.sync()
    assert "bob again" not in text(a1, space)


async def test_a_members_device_revocation_rotates_the_shared_space(people: People) -> None:
    p = people
    (a1, _), (b1, _), (c1, c2) = (p.devices[n] for n in ("alice", "bob", "carol"))
    space = await _shared(p)
    epoch = max(a1.engine.keyring.keys_cached(space))
    write(a1, space, 5, " (sealed before)")  # under the old epoch, not sent yet
    await c1.revoke(c2.device_id, "lost")  # the revoker opens new epochs at once
    await c1.sync()
    await a1.sync()
    newest = a1.engine.keyring.stored_packages(space)[-1]
    assert newest.epoch > epoch and c2.device_id not in newest.recipients
    # Alice's edit was not sent under the epoch the revoked phone holds, nor lost.
    assert a1.pending_count() == 0
    write(b1, space, 0, "after ")
    await b1.sync()
    await a1.sync()
    await c1.sync()
    assert text(a1, space) == text(c1, space) == "after hello (sealed before)"
    epochs = {env.header.epoch for env in _logged(a1, space)
              if env.header.author == a1.device_id}
    assert newest.epoch in epochs and epoch not in epochs  # (epoch 0: before sharing)


async def test_a_relay_hiding_a_removal_from_one_member_is_caught(people: People,
                                                                  tmp_path: Path) -> None:
    p = people
    (a1, _), (b1, _) = p.devices["alice"], p.devices["bob"]
    space = await _shared(p)
    # Carol's laptop, reopened behind a relay that can lie to it (it holds the key).
    carol, wire = await p.behind_a_liar("carol")
    await a1.sharing.remove(space, b1.account.account_id)
    removal = (await a1.transport.membership(space)).entries[-1][0]
    write(a1, space, 5, " after the removal")
    await a1.sync()
    # The relay shows Carol a log without the removal, re-signed: Alice's op that
    # followed it names the log she had seen, which Carol's view contradicts.
    wire.set_attack(Drop(offsets=frozenset({removal}), renumber=True, resign=True),
                    spaces=[space])
    with pytest.raises(ProofError) as caught:
        await carol.sync()
    assert caught.value.code is Code.SPLIT_VIEW, caught.value
    assert "after the removal" not in text(carol, space)
    wire.honest()
    await carol.sync()
    assert text(carol, space) == "hello after the removal"
    assert b1.account.account_id not in {m.account_id for m in carol.sharing.members(space)}


async def test_a_readers_op_served_by_a_lying_relay_is_refused(people: People) -> None:
    p = people
    c1 = p.devices["carol"][0]
    space = await _shared(p)
    # Carol (a reader) signs a well-formed op under the current epoch; the relay
    # refused it, but a lying relay serves it to Alice's laptop all the same.
    keys = c1.engine.keyring.keys_cached(space)
    epoch = max(keys)
    header = OpHeader(space=space, doc=doc_id_for(space, "text"), author=c1.device_id, seq=1,
                      prev=GENESIS_PREV, deps=VersionVector(), epoch=epoch,
                      ts=HLCTimestamp(p.relay.clock(), 0), seen=None,
                      nonce=bytes(range(24)), reg=c1.registry().seq)
    forged = seal_op(c1.keys, header, b"reader wrote this", keys[epoch]).raw
    alice, wire = await p.behind_a_liar("alice")
    before = alice.verified_size(space)
    wire.set_attack(Inject(leaf=forged), spaces=[space])
    with pytest.raises(ProofError) as caught:
        await alice.sync()
    assert "not_authorized" in caught.value.message and "reader" in caught.value.message
    assert alice.verified_size(space) == before  # nothing of the lying page was applied


async def test_an_invitation_by_code_shares_with_whoever_holds_it(people: People) -> None:
    p = people
    (a1, _), (b1, b2), (c1, _) = (p.devices[n] for n in ("alice", "bob", "carol"))
    space = await a1.create_space("trip")
    write(a1, space, 0, "train at 9")
    await a1.sync()
    shown: asyncio.Queue[str] = asyncio.Queue()
    checks: list[InviteCheck] = []

    def confirm(check: InviteCheck) -> bool:
        checks.append(check)  # a person compares the words on both screens
        return True

    async def guest() -> bytes:
        return await accept_invite(b1, b1.sharing, await shown.get(), confirm=confirm,
                                   name="trip", poll_s=0.02)

    (account, report), joined = await asyncio.gather(
        invite(a1, a1.sharing, space, Role.WRITER, show=lambda c: shown.put_nowait(c.code),
               confirm=confirm, poll_s=0.02), guest())
    assert joined == space and account.account_id == b1.account.account_id
    assert report.rotated == 1 and checks[0].words == checks[1].words
    assert {c.fingerprint for c in checks} == {b1.account.fingerprint}
    assert text(b1, space) == "train at 9"
    await b2.sharing.join(space, a1.account, "trip")  # Bob's other device, by the key
    assert text(b2, space) == "train at 9"

    # A wrong code (right mailbox number, other words) shares nothing.
    async def wrong_guest() -> bytes:
        code = await shown.get()
        other = pp.new_code(pp.decode_code(code, WORDS).nameplate)
        return await accept_invite(c1, c1.sharing, other.text(WORDS), confirm=confirm,
                                   poll_s=0.02)

    results = await asyncio.gather(
        invite(a1, a1.sharing, space, Role.WRITER, show=lambda c: shown.put_nowait(c.code),
               confirm=confirm, poll_s=0.02, timeout_s=10), wrong_guest(),
        return_exceptions=True)
    assert all(isinstance(r, AuthenticationError | ConflictError) for r in results), results
    assert {m.account_id for m in a1.sharing.members(space)} == {
        a1.account.account_id, b1.account.account_id}


async def test_a_members_new_device_gets_the_current_key(people: People,
                                                          tmp_path: Path) -> None:
    p = people
    (a1, _), (b1, _), _ = (p.devices[n] for n in ("alice", "bob", "carol"))
    space = await _shared(p)
    epoch = max(b1.engine.keyring.keys_cached(space))
    # Adding it opens a new epoch of every space Bob's account reads, this one too.
    tablet = await p.relay.add(b1, tmp_path / "bob3", "bob-tablet")
    try:
        await b1.sync()
        newest = b1.engine.keyring.stored_packages(space)[-1]
        assert newest.epoch > epoch
        assert tablet.device_id in newest.recipients
        await tablet.sharing.join(space, a1.account, "plans")
        assert text(tablet, space) == "hello"
        write(tablet, space, 5, " from the tablet")
        await tablet.sync()
        await a1.sync()
        assert text(a1, space) == "hello from the tablet"
    finally:
        await tablet.close()
