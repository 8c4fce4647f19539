"""Revocation with rotation, scheduled rotation and catch-up rotation."""

from __future__ import annotations

from pathlib import Path

import pycrdt
import pytest
from clientkit import InProcessRelay

from sddsf.errors import AuthorizationError, SddsfError
from sddsf.protocol import keypackage as kp
from sddsf.protocol import registry as reg
from sddsf.protocol.envelope import decode_envelope, open_op


async def test_revoked_device_cannot_read_what_is_written_after(relay: InProcessRelay,
                                                                 tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await laptop.sync()
    await phone.sync()
    stolen_keys = dict(phone._epoch_keys(space))  # everything the thief's copy holds
    await laptop.revoke(phone.device_id, "stolen")
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["pin"] = "1234"
    await laptop.sync()
    # The relay refuses the revoked device outright...
    with pytest.raises(AuthorizationError):
        await phone.sync()
    # ...and even the raw ciphertext is useless to it: the new epoch's package has
    # no key for it, and none of its keys opens the new op.
    packages = [kp.decode_key_package(p)
                for p in await laptop.relay.key_packages(space, 0)]
    assert phone.device_id not in packages[-1].recipients
    with pytest.raises(AuthorizationError):
        kp.open_epoch_keys(packages[-1], phone.device_id, phone.keys.kx)
    ops = await relay.storage.read_ops(space, -1, 1000)
    newest = decode_envelope(ops[-1].envelope)
    assert newest.header.epoch == packages[-1].epoch not in stolen_keys
    for key in stolen_keys.values():
        with pytest.raises(SddsfError):
            open_op(newest, key)
    await laptop.close()
    await phone.close()


async def test_policy_max_epoch_age_rotates_on_sync(relay: InProcessRelay,
                                                    tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    await laptop.set_policy({"max_epoch_age_s": 60})
    assert laptop.registry().policy == {"max_epoch_age_s": 60}
    assert (await laptop.sync()).rotated == 0
    relay.clock.now += 61_000
    report = await laptop.sync()
    assert report.rotated == 1
    assert max(laptop._epoch_keys(space)) == 1
    assert (await laptop.sync()).rotated == 0  # the new epoch is fresh
    await laptop.close()


async def test_a_revocation_without_rotation_is_caught_up_on_sync(relay: InProcessRelay,
                                                                   tmp_path: Path) -> None:
    # The revoking device crashed after appending the revoke entry, before it
    # opened new epochs: the next sync of any device rotates.
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await laptop.sync()
    before = max(laptop._epoch_keys(space))
    state = await laptop.refresh_registry()
    entry = reg.revoke_device(state, laptop.keys, phone.device_id, "lost", relay.clock(),
                              cutoff=laptop.cutoff_for(phone.device_id))
    await laptop.relay.append_registry(laptop.account.account_id, entry)
    report = await laptop.sync()
    assert report.rotated == 1 and max(laptop._epoch_keys(space)) == before + 1
    packages = [kp.decode_key_package(p) for p in await laptop.relay.key_packages(space, 0)]
    assert phone.device_id not in packages[-1].recipients
    await laptop.close()
    await phone.close()
