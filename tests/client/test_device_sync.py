"""Client sync against an in-process relay: offline edits converge; the store is
encrypted at rest."""

from __future__ import annotations

from pathlib import Path

import pycrdt
import pytest
from clientkit import PASS, InProcessRelay, passphrase

from sddsf.client.device import Device


async def test_offline_edits_on_two_devices_converge(relay: InProcessRelay,
                                                     tmp_path: Path) -> None:
    laptop, secret = await relay.new_account(tmp_path / "laptop")
    assert len(secret) == 32
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await laptop.sync()
    await phone.sync()
    assert phone.space_by_name("notes") == space
    # offline: both edit the same map and a shared text
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["milk"] = "2 l"
    phone.doc(space, "kv").get("kv", type=pycrdt.Map)["eggs"] = "12"
    laptop.doc(space, "text").get("t", type=pycrdt.Text).insert(0, "hello ")
    phone.doc(space, "text").get("t", type=pycrdt.Text).insert(0, "world")
    assert laptop.flush() == 2 and phone.flush() == 2
    for _ in range(2):
        await laptop.sync()
        await phone.sync()
    for dev in (laptop, phone):
        assert dict(dev.doc(space, "kv").get("kv", type=pycrdt.Map)) == {"milk": "2 l",
                                                                          "eggs": "12"}
    assert str(laptop.doc(space, "text").get("t", type=pycrdt.Text)) == str(
        phone.doc(space, "text").get("t", type=pycrdt.Text))
    assert laptop.pending_count() == phone.pending_count() == 0
    await laptop.close()
    await phone.close()


async def test_state_survives_reopen_and_store_has_no_plaintext(relay: InProcessRelay,
                                                                tmp_path: Path) -> None:
    home = tmp_path / "laptop"
    laptop, _ = await relay.new_account(home)
    space = await laptop.create_space("secret-space-name")
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["wallet"] = "PLAINTEXT-SEED-WORDS"
    await laptop.sync()
    device_id, seed = laptop.device_id, laptop.keys.signing.seed
    await laptop.close()
    raw = (home / "device.db").read_bytes() + b"".join(
        p.read_bytes() for p in home.glob("device.db*"))
    for needle in (b"PLAINTEXT-SEED-WORDS", b"secret-space-name", seed, PASS.encode(),
                   b"laptop"):
        assert needle not in raw, needle
    again = Device.open(home, passphrase=passphrase, transport=relay.transport(),
                        clock=relay.clock)
    assert again.device_id == device_id
    assert dict(again.doc(space, "kv").get("kv", type=pycrdt.Map)) == {
        "wallet": "PLAINTEXT-SEED-WORDS"}
    assert again.space_by_name("secret-space-name") == space
    await again.close()


async def test_revoke_then_recover_on_a_new_device(relay: InProcessRelay,
                                                   tmp_path: Path) -> None:
    from sddsf.errors import AuthenticationError, AuthorizationError

    laptop, secret = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await phone.sync()
    phone.doc(space, "kv").get("kv", type=pycrdt.Map)["from phone"] = "before revocation"
    await phone.sync()
    await laptop.sync()
    await laptop.revoke(phone.device_id, "lost")
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["after"] = "revocation"
    await laptop.sync()
    # the revoked phone can neither write nor read what came after
    phone.doc(space, "kv").get("kv", type=pycrdt.Map)["sneaky"] = "write"
    with pytest.raises((AuthenticationError, AuthorizationError)):
        await phone.sync()
    assert max(phone._epoch_keys(space)) < max(laptop._epoch_keys(space))
    # every device lost: recover from the secret on a third device
    tablet = await Device.recover(tmp_path / "tablet", "http://relay.test", secret, "tablet",
                                  passphrase=passphrase, revoke_others=True,
                                  transport=relay.transport(), clock=relay.clock)
    assert dict(tablet.doc(space, "kv").get("kv", type=pycrdt.Map)) == {
        "from phone": "before revocation", "after": "revocation"}
    assert [d.name for d in tablet.registry().active_devices()] == ["tablet"]
    assert tablet.space_by_name("notes") == space
    with pytest.raises((AuthenticationError, AuthorizationError)):
        await laptop.sync()  # revoked by the recovery
    for dev in (laptop, phone, tablet):
        await dev.close()


async def test_sync_reports_pull_progress_per_page(relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    laptop.snapshot_every = 0  # the phone must pull every op, in pages of 500
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    m = laptop.doc(space, "kv").get("kv", type=pycrdt.Map)
    for i in range(620):
        m[f"k{i}"] = i
        laptop.flush()
    await laptop.sync()
    calls: list[tuple[bytes, int, int]] = []
    report = await phone.sync(lambda sid, done, total: calls.append((sid, done, total)))
    size = report.tree_size[space]
    mine = [(done, total) for sid, done, total in calls if sid == space]
    assert len(mine) >= 2 and mine[-1] == (size, size)
    assert [d for d, _ in mine] == sorted(d for d, _ in mine)
    assert all(total == size for _, total in mine)
    await laptop.close()
    await phone.close()
