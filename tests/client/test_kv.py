"""The key-value document (:mod:`sddsf.client.kv`) between real devices through the
in-process relay: older documents (plain map values) stay readable, concurrent
writes are both kept as a conflict until a later put, a removal racing a put is
kept visible, and a malicious own device can neither rewrite another device's
value in place nor write a value in its name."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from clientkit import InProcessRelay

from sddsf.client.device import Device
from sddsf.client.kv import KeyValue
from sddsf.errors import UsageError


@pytest.fixture
async def devices(relay: InProcessRelay,
                  tmp_path: Path) -> AsyncIterator[tuple[Device, Device, bytes]]:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    space = await laptop.create_space("notes")
    await sync_all(laptop, phone)
    yield laptop, phone, space
    await laptop.close()
    await phone.close()


async def sync_all(*devices: Device) -> None:
    for d in (*devices, devices[0]):
        report = await d.sync()
        assert report.rejected == []


def plain(device: Device, space: bytes) -> Any:
    """The older format's map, as an older sddsf writes and reads it."""
    return device.doc(space, "kv").get("kv", type=pycrdt.Map)


async def test_older_plain_values_stay_readable_and_are_kept_updated(
        devices: tuple[Device, Device, bytes]) -> None:
    laptop, phone, space = devices
    plain(laptop, space)["wifi"] = "old-format"  # written by an older sddsf
    laptop.flush()
    await sync_all(laptop, phone)
    kv = KeyValue(phone, space)
    (entry,) = kv.entries()
    assert (entry.key, entry.value, entry.conflict) == ("wifi", "old-format", False)
    assert entry.heads[0].author is None and not entry.heads[0].verified
    kv.put("wifi", "new-format")
    kv.put("pin", "1357")
    await sync_all(phone, laptop)
    lkv = KeyValue(laptop, space)
    assert {e.key: e.value for e in lkv.entries()} == {"pin": "1357", "wifi": "new-format"}
    assert dict(plain(laptop, space)) == {"pin": "1357", "wifi": "new-format"}  # older readers
    lkv.rm("pin")
    await sync_all(laptop, phone)
    assert "pin" not in dict(plain(phone, space)) and KeyValue(phone, space).entry("pin") is None
    with pytest.raises(UsageError, match="no key 'pin'"):
        lkv.rm("pin")


async def test_concurrent_puts_are_a_conflict_until_a_later_put(
        devices: tuple[Device, Device, bytes]) -> None:
    laptop, phone, space = devices
    lkv, pkv = KeyValue(laptop, space), KeyValue(phone, space)
    lkv.put("k", "base")
    await sync_all(laptop, phone)
    on_laptop, on_phone = lkv.put("k", "from-laptop"), pkv.put("k", "from-phone")
    await sync_all(laptop, phone)
    for kv in (lkv, pkv):
        entry = kv.entry("k")
        assert entry is not None and entry.conflict
        assert {h.id: (h.value, h.author) for h in entry.heads} == {
            on_laptop.id: ("from-laptop", laptop.device_id.hex()),
            on_phone.id: ("from-phone", phone.device_id.hex())}
    pkv.put("k", "kept")
    await sync_all(phone, laptop)
    entry = lkv.entry("k")
    assert entry is not None and not entry.conflict and entry.value == "kept"


async def test_a_removal_racing_a_put_keeps_the_value_visible(
        devices: tuple[Device, Device, bytes]) -> None:
    laptop, phone, space = devices
    lkv, pkv = KeyValue(laptop, space), KeyValue(phone, space)
    lkv.put("k", "v1")
    await sync_all(laptop, phone)
    lkv.rm("k")
    pkv.put("k", "v2")
    await sync_all(laptop, phone)
    for kv in (lkv, pkv):
        entry = kv.entry("k")
        assert entry is not None and entry.conflict and entry.value == "v2"
        assert sorted(h.deleted for h in entry.heads) == [False, True]


async def test_a_malicious_own_device_cannot_rewrite_or_forge_values(
        relay: InProcessRelay, devices: tuple[Device, Device, bytes], tmp_path: Path) -> None:
    laptop, phone, space = devices
    tablet = await relay.add(laptop, tmp_path / "tablet", "tablet")
    try:
        await sync_all(laptop, phone, tablet)
        original = KeyValue(laptop, space).put("door", "1234")
        await sync_all(laptop, phone, tablet)
        versions = tablet.doc(space, "kv").get("versions", type=pycrdt.Map)
        record = json.loads(versions[original.id])
        with versions.doc.transaction():
            versions[original.id] = json.dumps({**record, "value": "0000"})  # in place
            versions["ab" * 16] = json.dumps({**record, "value": "9999",
                                              "supersedes": [original.id]})  # "by the laptop"
        tablet.flush()
        await sync_all(tablet, laptop, phone)
        for device in (laptop, phone):
            kv = KeyValue(device, space)
            entry = kv.entry("door")
            assert entry is not None and (entry.value, entry.conflict) == ("1234", False)
            assert sorted((x.what, x.version, x.by) for x in kv.alerts) == [
                ("changed", original.id, tablet.device_id.hex()),
                ("forged", "ab" * 16, tablet.device_id.hex())]
    finally:
        await tablet.close()
