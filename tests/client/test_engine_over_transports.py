"""The sync engine runs over any Transport: a device's engine syncs over the
in-process relay, and an attack scripted on the tampering wrapper (the
malicious-relay harness through the Transport contract) is refused exactly as
over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pycrdt
import pytest
from clientkit import passphrase

from sddsf.client.device import Device
from sddsf.client.engine import SyncEngine
from sddsf.client.engine.identity import DeviceIdentity
from sddsf.client.home import open_home
from sddsf.client.relay_client import RelayClient
from sddsf.client.runner import Runner, RunnerSettings
from sddsf.client.transport.base import PullPage
from sddsf.client.transport.relay import RelayTransport
from sddsf.errors import Code, ProofError
from sddsf.testing.malicious_relay import Drop, Reorder
from sddsf.testing.memory_transport import BASE_URL, InProcessRelay, MemoryTransport
from sddsf.testing.tampering import TamperingTransport


@pytest.fixture
async def relay() -> AsyncIterator[InProcessRelay]:
    async with InProcessRelay() as r:
        yield r


async def _engine(relay: InProcessRelay, home: Path) -> TamperingTransport:
    store, kind = open_home(home, passphrase=passphrase)
    ident = DeviceIdentity(store, kind, relay.clock)
    tampering = TamperingTransport(relay.transport_for(ident.keys, ident.account.account_id),
                                   relay_key=relay.key)
    tampering.engine = SyncEngine(ident, tampering)  # type: ignore[attr-defined]
    return tampering


async def _laptop_and_phone(relay: InProcessRelay, tmp: Path) -> tuple[Device, bytes, Device]:
    """A new account's laptop with a space "notes", and a phone added to it."""
    laptop, _ = await Device.create_account(tmp / "laptop", BASE_URL, "laptop",
                                            passphrase=passphrase,
                                            transport=relay.http_transport())
    space = await laptop.create_space("notes")
    phone = await Device.add_local(laptop, tmp / "phone", "phone", passphrase=passphrase,
                                   transport=relay.http_transport())
    return laptop, space, phone


async def test_engine_syncs_over_memory_and_refuses_scripted_attacks(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, space, phone = await _laptop_and_phone(relay, tmp_path)
    await phone.close()
    for i in range(3):
        laptop.doc(space, "kv").get("kv", type=pycrdt.Map)[f"k{i}"] = i
        await laptop.sync()

    wire = await _engine(relay, tmp_path / "phone")
    engine: SyncEngine = wire.engine  # type: ignore[attr-defined]
    report = await engine.run()
    assert report.applied >= 3 and report.tree_size[space] == laptop.verified_size(space)
    assert dict(engine.docs.doc(space, "kv").get("kv", type=pycrdt.Map)) == {
        "k0": 0, "k1": 1, "k2": 2}

    for key in ("later", "last"):  # two new ops the phone has not pulled
        laptop.doc(space, "kv").get("kv", type=pycrdt.Map)[key] = "yes"
        await laptop.sync()
    size = laptop.verified_size(space)
    for attack in (Drop(offsets=frozenset({size - 2}), renumber=True, resign=True),
                   Reorder(first=size - 2, second=size - 1)):
        wire.set_attack(attack, spaces=[space])
        with pytest.raises(ProofError) as caught:
            await engine.run()
        assert caught.value.code is Code.PROOF_INVALID
        assert "later" not in engine.docs.doc(space, "kv").get("kv", type=pycrdt.Map)
    assert wire.served >= 2
    wire.honest()
    await engine.run()
    assert engine.docs.doc(space, "kv").get("kv", type=pycrdt.Map)["later"] == "yes"
    await wire.aclose()
    engine.store.close()
    await laptop.close()


class _Recorder:
    """An observer that records remote edits and raises on rotations."""

    def __init__(self) -> None:
        self.remote: list[tuple[bytes, str, bytes]] = []
        self.registry_changes = 0

    def on_remote_update(self, space_id: bytes, doc: str, author: bytes,
                         updates: list[bytes]) -> None:
        assert updates
        self.remote.append((space_id, doc, author))

    def on_registry_change(self, old: object, new: object) -> None:
        self.registry_changes += 1

    def on_rotation(self, space_id: bytes, epoch: int, creator: bytes) -> None:
        raise RuntimeError("an application bug")

    def on_alert(self, code: str, message: str) -> None:
        pass


async def test_observer_sees_remote_edits_and_its_errors_never_stop_a_sync(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, space, phone = await _laptop_and_phone(relay, tmp_path)
    await phone.close()
    store, kind = open_home(tmp_path / "phone", passphrase=passphrase)
    seen = _Recorder()
    phone = Device(store, kind, transport=relay.http_transport(), observer=seen)
    await phone.sync()
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["x"] = 1
    await laptop.sync()
    await phone.rotate(space)  # the observer raises: logged, the rotation stands
    report = await phone.sync()
    assert (space, "kv", laptop.device_id) in seen.remote and report.applied >= 1
    assert phone.doc(space, "kv").get("kv", type=pycrdt.Map)["x"] == 1
    await phone.close()
    await laptop.close()


async def test_background_sync_follows_spaces_over_the_devices_transport(
        relay: InProcessRelay, tmp_path: Path) -> None:
    # No socket anywhere: the relay runs in this process and the phone's engine
    # transport reaches its fan-out hub directly. The runner's live updates come
    # through Transport.subscribe (not a WebSocket of its own), so the phone
    # hears of the laptop's edit at once; the periodic full check is an hour away.
    def in_process(client: RelayClient, url: str) -> MemoryTransport:
        return MemoryTransport(client, relay)

    laptop, space, phone = await _laptop_and_phone(relay, tmp_path)
    await phone.sync()  # learns the space
    await phone.close()
    phone = Device.open(tmp_path / "phone", passphrase=passphrase,
                        transport=relay.http_transport(), engine_transport=in_process)
    assert isinstance(phone.transport, MemoryTransport)
    runner = Runner(phone, settings=RunnerSettings(debounce_s=0.0, full_check_s=3600.0))
    async with runner:
        async def connected() -> None:
            # Connected and caught up: the edit below can only arrive by a later
            # sync, the one its live notification starts.
            while not runner.connected or runner.syncs < 1:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(connected(), 10)
        laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["live"] = "yes"
        await laptop.sync()

        async def arrived() -> None:
            while phone.doc(space, "kv").get("kv", type=pycrdt.Map).get("live") != "yes":
                await asyncio.sleep(0.02)
        await asyncio.wait_for(arrived(), 10)
    assert runner.syncs >= 2 and runner.failure is None
    await phone.close()
    await laptop.close()


class _AppendBetween(RelayTransport):
    """The relay's own order of reads for a pull (the page, then the head),
    with another device's upload landing between the two, once (``armed``):
    an empty page under a head one entry longer. ``withhold``: every page is
    served empty (a relay hiding its new entries behind its signed head)."""

    armed: Callable[[], Awaitable[object]] | None = None
    withhold = False
    pulls = 0

    async def pull(self, space_id: bytes, after: int = -1, limit: int = 500, *,
                   omit_own: bool = False) -> PullPage:
        type(self).pulls += 1
        page = await super().pull(space_id, after, limit, omit_own=omit_own)
        upload, type(self).armed = type(self).armed, None
        if upload is not None and not page.ops:
            await upload()
            return PullPage((), await self.tree_head(space_id))
        if type(self).withhold:
            return PullPage((), page.tree_head)
        return page


async def _with_append_between(relay: InProcessRelay, tmp_path: Path
                               ) -> tuple[Device, bytes, Device]:
    laptop, space, phone = await _laptop_and_phone(relay, tmp_path)
    await phone.sync()
    await phone.close()
    phone = Device.open(tmp_path / "phone", passphrase=passphrase,
                        transport=relay.http_transport(), engine_transport=_AppendBetween)
    await phone.sync()  # caught up: its next page of the log is empty
    return laptop, space, phone


async def test_an_upload_between_the_page_and_the_head_is_no_proof_failure(
        relay: InProcessRelay, tmp_path: Path) -> None:
    # Nothing misbehaved: the relay read the page, another device's op was
    # appended, then the relay read its head. The entries are there; the
    # device asks again instead of calling the log rewritten.
    laptop, space, phone = await _with_append_between(relay, tmp_path)

    async def upload() -> None:
        laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["between"] = "yes"
        await laptop.sync()

    _AppendBetween.armed = upload
    report = await phone.sync()
    assert _AppendBetween.armed is None  # the upload happened inside the pull
    assert phone.doc(space, "kv").get("kv", type=pycrdt.Map)["between"] == "yes"
    assert report.applied >= 1
    await phone.close()
    await laptop.close()


async def test_a_head_over_empty_pages_is_still_refused(relay: InProcessRelay,
                                                        tmp_path: Path) -> None:
    # A relay that signs a longer log but serves no entries of it is hiding
    # them: the device asks a bounded number of times, then refuses.
    laptop, space, phone = await _with_append_between(relay, tmp_path)
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["hidden"] = "yes"
    await laptop.sync()
    _AppendBetween.withhold, _AppendBetween.pulls = True, 0
    try:
        with pytest.raises(ProofError) as info:
            await phone.sync()
    finally:
        _AppendBetween.withhold = False
    assert info.value.code is Code.PROOF_INVALID
    assert _AppendBetween.pulls <= 5
    assert phone.doc(space, "kv").get("kv", type=pycrdt.Map).get("hidden") is None
    await phone.close()
    await laptop.close()
