"""A device on a plugged store and key store: ``Device.create_account`` /
``Device.open`` with ``store_factory=`` and ``key_store=``, against the relay app."""

from __future__ import annotations

from pathlib import Path

import pycrdt
import pytest
from clientkit import PASS, InProcessRelay, passphrase

from sddsf.client.device import Device
from sddsf.client.keystore import PlaintextKeyStore
from sddsf.client.memory_store import MemoryStore
from sddsf.client.store import LocalStore
from sddsf.errors import UsageError


async def test_a_device_on_a_memory_store_syncs_and_writes_no_store_file(
        relay: InProcessRelay, tmp_path: Path) -> None:
    home = tmp_path / "laptop"
    made: list[MemoryStore] = []

    def memory(path: Path, key: bytes) -> LocalStore:
        made.append(MemoryStore(path, key))
        return made[-1]

    laptop, _ = await Device.create_account(home, "http://relay.test", "laptop",
                                            passphrase=passphrase, transport=relay.transport(),
                                            clock=relay.clock, store_factory=memory)
    assert laptop.store is made[0] and laptop.store.path == home / "device.db"
    space = await laptop.create_space("notes")
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["milk"] = "2 l"
    await laptop.sync()
    assert laptop.pending_count() == 0
    # A second device (on the default SQLite store) gets it through the relay.
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await phone.sync()
    assert dict(phone.doc(space, "kv").get("kv", type=pycrdt.Map)) == {"milk": "2 l"}
    await phone.close()
    await laptop.close()
    assert not list(home.glob("device.db*")), "the memory store wrote a store file"
    # The rows outlive the connection (as a file would): reopen them.
    again = Device.open(home, passphrase=PASS, transport=relay.transport(), clock=relay.clock,
                        store_factory=lambda path, key: made[0].reopen(key))
    try:
        assert again.device_id == laptop.device_id
        assert dict(again.doc(space, "kv").get("kv", type=pycrdt.Map)) == {"milk": "2 l"}
    finally:
        await again.close()
    assert not list(home.glob("device.db*"))


async def test_open_takes_the_passphrase_as_a_str(relay: InProcessRelay,
                                                  tmp_path: Path) -> None:
    home = tmp_path / "laptop"
    laptop, _ = await Device.create_account(home, "http://relay.test", "laptop",
                                            passphrase=PASS, transport=relay.transport(),
                                            clock=relay.clock)
    device_id = laptop.device_id
    await laptop.close()
    again = Device.open(home, passphrase=PASS, transport=relay.transport(), clock=relay.clock)
    assert again.device_id == device_id and again.key_kind == "passphrase"
    await again.close()


async def test_a_plugged_key_store_keeps_the_key(relay: InProcessRelay,
                                                 tmp_path: Path) -> None:
    home = tmp_path / "laptop"
    laptop, _ = await Device.create_account(home, "http://relay.test", "laptop",
                                            passphrase=None, transport=relay.transport(),
                                            clock=relay.clock, key_store=PlaintextKeyStore())
    assert laptop.key_kind == "plaintext"
    await laptop.close()
    again = Device.open(home, passphrase=None, transport=relay.transport(), clock=relay.clock,
                        key_store=PlaintextKeyStore())
    assert again.device_id == laptop.device_id
    await again.close()


async def test_add_local_that_cannot_make_the_home_registers_nothing(
        relay: InProcessRelay, tmp_path: Path) -> None:
    """A new home that cannot be made (a passphrase too short; a home that already
    holds a device) is refused BEFORE the account's registry gets an entry for a
    device whose keys would be thrown away; the refused home is left as it was."""
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    before = [d.device_id for d in (await laptop.refresh_registry()).active_devices()]
    with pytest.raises(UsageError):
        await Device.add_local(laptop, tmp_path / "phone", "phone", passphrase="short",  # noqa: S106 - too short on purpose
                               transport=relay.transport(), clock=relay.clock)
    assert not (tmp_path / "phone").exists() or not any((tmp_path / "phone").iterdir())
    second = await relay.add(laptop, tmp_path / "tablet", "tablet")
    await second.close()
    with pytest.raises(UsageError):
        await Device.add_local(laptop, tmp_path / "tablet", "again", passphrase=PASS,
                               transport=relay.transport(), clock=relay.clock)
    after = [d.device_id for d in (await laptop.refresh_registry()).active_devices()]
    assert after == [*before, second.device_id]
    reopened = Device.open(tmp_path / "tablet", passphrase=passphrase,
                           transport=relay.transport(), clock=relay.clock)
    assert reopened.device_id == second.device_id  # the existing home is untouched
    await reopened.close()
    await laptop.close()
