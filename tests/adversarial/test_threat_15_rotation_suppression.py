"""Rotation suppression: a relay colluding with a revoked device (THREATS #14, #15).

After a revocation every space must move to an epoch the revoked device cannot
read. A relay that works with the revoked device (it is the adversary of
``sddsf.testing.malicious_relay``, in front of a real relay app over real
SQLite storage) tries to keep the other devices writing under the old epoch:

* it answers ``409 conflict`` to every key-package upload after the revocation,
  so the revoker (and every other device) believes another device rotated;
* it hides the new package from one device, which then never learns the new
  epoch; the revoking device sees no error at all;
* it stores an op sealed under the old epoch after the revocation, or serves
  another package for an epoch a device already holds;
* (downgrade) an op in the old header format, which names no registry state,
  is refused when new and stays readable as history.

What must hold: no device seals or pushes data under an epoch the revoked
device holds; the edits stay pending locally (also across a restart) and the
person gets ``rotation_blocked``; a device that is served such an op refuses
to apply it (``epoch_compromised``); a stored key package is never replaced
(``key_package_fork``). Once the relay is honest again everything converges.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest
from clientkit import InProcessRelay, passphrase
from relaykit import T0, Clock, World, client_for, make_app

from sddsf.client.device import Device, doc_id_for
from sddsf.crypto import random_bytes
from sddsf.errors import ProofError, SddsfError
from sddsf.protocol import keypackage as kp
from sddsf.protocol import merkle
from sddsf.protocol.encoding import encode
from sddsf.protocol.envelope import GENESIS_PREV, OpHeader, decode_envelope, open_op, seal_op
from sddsf.protocol.vv import VersionVector
from sddsf.relay.storage.base import OpToAppend, RelayStorage
from sddsf.testing.malicious_relay import (
    HideKeyPackages,
    MaliciousRelay,
    RefuseKeyUploads,
    SubstituteKeyPackage,
    forge_op,
)

SECRET = "after the revocation"  # noqa: S105 - marker text of a document edit


class Harnessed(InProcessRelay):
    """A relay app on SQLite whose every device goes through the malicious harness."""

    def __init__(self, storage: RelayStorage, clock: Clock) -> None:
        super().__init__(storage, clock)
        self.harness = MaliciousRelay(httpx.ASGITransport(app=self.app))

    def transport(self) -> httpx.AsyncBaseTransport:
        return self.harness


@dataclass
class Three:
    relay: Harnessed
    laptop: Device
    phone: Device
    tablet: Device
    space: bytes


@pytest.fixture
async def three(sqlite_storage: RelayStorage, tmp_path: Path) -> AsyncIterator[Three]:
    relay = Harnessed(sqlite_storage, Clock(time.time_ns() // 1_000_000))
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    tablet = await relay.add(laptop, tmp_path / "tablet", "tablet")
    for d in (laptop, phone, tablet):
        await d.sync()
    kv(laptop, space)["before"] = "everyone may read this"
    for d in (laptop, phone, tablet):
        await d.sync()
    three = Three(relay, laptop, phone, tablet, space)
    yield three
    for d in (three.laptop, three.phone, three.tablet):
        await d.close()


def kv(device: Device, space: bytes) -> Any:
    return device.doc(space, "kv").get("kv", type=pycrdt.Map)


async def readable_by(device_keys: dict[int, bytes], storage: RelayStorage,
                      space: bytes) -> list[bytes]:
    """Every op payload in the relay's log that the given epoch keys open."""
    out = []
    for op in await storage.read_ops(space, -1, 10_000):
        assert op.envelope is not None
        env = decode_envelope(op.envelope)
        key = device_keys.get(env.header.epoch)
        if key is not None:
            out.append(open_op(env, key))
    return out


def leaked(payloads: list[bytes]) -> bool:
    return any(SECRET.encode() in p for p in payloads)


async def test_refusing_every_key_upload_blocks_writes_instead_of_leaking_them(
        three: Three, tmp_path: Path) -> None:
    t = three
    stolen = dict(t.tablet._epoch_keys(t.space))  # everything the revoked device holds
    t.relay.harness.set_key_attack(RefuseKeyUploads())
    with pytest.raises(SddsfError) as revoking:
        await t.laptop.revoke(t.tablet.device_id, "stolen")
    assert revoking.value.code.value == "rotation_blocked", revoking.value
    assert t.laptop.registry().device(t.tablet.device_id).revoked_seq is not None
    kv(t.laptop, t.space)["laptop"] = SECRET
    with pytest.raises(SddsfError) as laptop_sync:
        await t.laptop.sync()
    assert laptop_sync.value.code.value == "rotation_blocked"
    assert "rotat" in laptop_sync.value.message and "relay" in laptop_sync.value.message
    kv(t.phone, t.space)["phone"] = SECRET
    with pytest.raises(SddsfError) as phone_sync:
        await t.phone.sync()
    assert phone_sync.value.code.value == "rotation_blocked"
    assert t.relay.harness.key_served >= 3
    # Nothing written after the revocation is readable with the revoked device's keys.
    assert not leaked(await readable_by(stolen, t.relay.storage, t.space))
    # The edits are kept, also across a restart, and pushed once the relay is honest.
    await t.laptop.close()
    t.laptop = Device.open(tmp_path / "laptop", passphrase=passphrase,
                           transport=t.relay.transport(), clock=t.relay.clock)
    assert kv(t.laptop, t.space)["laptop"] == SECRET
    t.relay.harness.honest()
    report = await t.laptop.sync()
    assert report.rotated == 1
    await t.phone.sync()
    await t.laptop.sync()
    assert kv(t.phone, t.space)["laptop"] == SECRET
    assert kv(t.laptop, t.space)["phone"] == SECRET
    newest = max(t.laptop._epoch_keys(t.space))
    assert newest not in stolen
    assert not leaked(await readable_by(stolen, t.relay.storage, t.space))


async def test_key_package_hidden_from_one_device_blocks_its_writes(three: Three) -> None:
    t = three
    stolen = dict(t.tablet._epoch_keys(t.space))
    hidden_from = max(stolen) + 1
    t.relay.harness.set_key_attack(HideKeyPackages(from_epoch=hidden_from),
                                   victims={t.phone.device_id})
    await t.laptop.revoke(t.tablet.device_id, "stolen")  # silent: the laptop rotated
    assert max(t.laptop._epoch_keys(t.space)) == hidden_from
    kv(t.phone, t.space)["phone"] = SECRET
    with pytest.raises(SddsfError) as info:
        await t.phone.sync()
    assert info.value.code.value == "rotation_blocked", info.value
    assert t.relay.harness.key_served >= 1
    await t.laptop.sync()
    assert "phone" not in kv(t.laptop, t.space)  # never applied
    assert not leaked(await readable_by(stolen, t.relay.storage, t.space))
    t.relay.harness.honest()
    await t.phone.sync()
    await t.laptop.sync()
    assert kv(t.laptop, t.space)["phone"] == SECRET
    assert not leaked(await readable_by(stolen, t.relay.storage, t.space))


async def test_op_under_a_compromised_epoch_is_refused_by_readers(three: Three) -> None:
    # The relay colludes all the way: it stores (bypassing the rules) an op the
    # phone sealed under the old epoch after it had verified the revocation.
    t = three
    stolen = dict(t.tablet._epoch_keys(t.space))
    old = max(stolen)
    await t.laptop.revoke(t.tablet.device_id, "stolen")
    await t.phone.sync()
    state = t.phone.registry()
    assert t.phone.store.get("mine", t.space) is None  # the phone's first op here
    header = OpHeader(space=t.space, doc=doc_id_for(t.space, "kv"), author=t.phone.device_id,
                      seq=1, prev=GENESIS_PREV, deps=VersionVector(), epoch=old,
                      ts=t.phone.hlc.tick(t.relay.clock()), seen=None,
                      nonce=random_bytes(24), reg=state.seq)
    env = seal_op(t.phone.keys, header, encode({"n": "kv", "u": []}), stolen[old])
    await t.relay.storage.append_ops(t.space, [OpToAppend(
        env.raw, env.op_id, env.header.author, env.header.seq, env.header.deps.encoded(),
        merkle.leaf_hash(env.raw))], t.relay.clock())
    with pytest.raises(ProofError) as info:
        await t.laptop.sync()
    assert "epoch_compromised" in info.value.message, info.value


async def test_a_second_package_for_a_stored_epoch_is_fork_evidence(three: Three) -> None:
    t = three
    await t.laptop.revoke(t.tablet.device_id, "stolen")
    await t.phone.sync()
    packages = [kp.decode_key_package(p)
                for p in await t.phone.relay.key_packages(t.space, 0)]
    last, before = packages[-1], packages[-2]
    stored = t.phone.store.get("kp", t.space + last.epoch.to_bytes(4, "big"))
    assert stored == last.raw
    state = t.phone.registry()
    known = t.phone._epoch_keys(t.space)
    rival = kp.build_key_package(  # valid, signed by an active device, another key
        creator=t.phone.keys, registry=state, space=t.space, epoch=last.epoch,
        prev=before.hash, epoch_key=random_bytes(32), ts_ms=t.relay.clock(),
        ephemeral_seeds=[random_bytes(32) for _ in range(len(state.active_devices()) + 1)],
        previous_keys=[known[e] for e in range(last.epoch)])
    kp.verify_key_package(rival, registry=state, space=t.space, previous=before)
    t.relay.harness.set_key_attack(SubstituteKeyPackage(rival), victims={t.phone.device_id})
    with pytest.raises(SddsfError) as info:
        await t.phone.sync()
    assert info.value.code.value == "key_package_fork", info.value
    assert t.phone.store.get("kp", t.space + last.epoch.to_bytes(4, "big")) == last.raw
    t.relay.harness.honest()
    await t.phone.sync()


async def test_relay_refuses_new_ops_under_an_epoch_a_revoked_device_holds(
        sqlite_storage: RelayStorage) -> None:
    # The relay's own rules: after a revocation and a rotation, the previous
    # epoch gets no grace when a revoked device holds its key (the writer
    # re-seals under the current epoch: stale_epoch is re-sealed by clients).
    clock = Clock(T0)
    app = make_app(sqlite_storage, clock)
    world = World()
    aid = world.account.account_id
    async with client_for(app, world, 0, clock) as owner:
        await owner.create_account(world.entries[0])
        for i in (1, 2):
            await owner.append_registry(aid, world.add_device(i))
        await owner.create_space(world.space, world.key_package())  # epoch 0: 0, 1, 2
        await owner.append_registry(aid, world.revoke(2))
        await owner.put_key_package(world.space, world.key_package())  # epoch 1: 0, 1
    clock.now += 60_000  # well inside the 24 h grace of epoch 0
    late = world.op(1, epoch=0, ts=clock.now, record=False)
    fresh = world.op(1, epoch=1, ts=clock.now)
    async with client_for(app, world, 1, clock) as writer:
        (refused,), _ = await writer.upload(world.space, [late.raw])
        (accepted,), _ = await writer.upload(world.space, [fresh.raw])
    assert (refused.status, refused.code) in (("rejected", "stale_epoch"),
                                              ("rejected", "epoch_compromised")), refused
    assert accepted.status == "accepted", accepted


async def test_new_ops_must_name_the_registry_they_saw_but_old_ones_stay_readable(
        three: Three) -> None:
    # A version 1 header has no reg, so the compromised-epoch rule cannot judge
    # it: the relay refuses new ones (a clear code and message), while ops stored
    # before the upgrade are still applied by every device.
    t = three
    epoch = max(t.tablet._epoch_keys(t.space))
    update = pycrdt.Doc()
    update.get("kv", type=pycrdt.Map)["old client"] = "yes"
    header = OpHeader(space=t.space, doc=doc_id_for(t.space, "kv"), author=t.tablet.device_id,
                      seq=1, prev=GENESIS_PREV, deps=VersionVector(), epoch=epoch,
                      ts=t.tablet.hlc.tick(t.relay.clock()), seen=None, nonce=random_bytes(24),
                      version=1, reg=None)
    old = forge_op(t.tablet.keys.signing, header,
                   encode({"n": "kv", "u": [update.get_update()]}),
                   t.tablet._epoch_keys(t.space)[epoch])
    (result,), _ = await t.tablet.relay.upload(t.space, [old])
    assert (result.status, result.code) == ("rejected", "unsupported_version"), result
    assert "history only" in (result.message or "")
    env = decode_envelope(old)
    await t.relay.storage.append_ops(t.space, [OpToAppend(
        env.raw, env.op_id, env.header.author, env.header.seq, env.header.deps.encoded(),
        merkle.leaf_hash(env.raw))], t.relay.clock())  # stored before the upgrade
    await t.laptop.sync()
    assert kv(t.laptop, t.space)["old client"] == "yes"
