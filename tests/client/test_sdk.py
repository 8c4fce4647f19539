"""The application API: top-level exports, async context managers, str passphrases,
typed events, live documents bound to the application's own pycrdt.Doc (two paired
devices against a real relay process on loopback), and the blocking facade."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pycrdt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "relay"))

from clientkit import PASS, InProcessRelay
from livekit import RelayProcess, Relays

from sddsf.client.device import Device
from sddsf.client.live import LIVE_SETTINGS
from sddsf.errors import UsageError

#: Bounds the waits for things that happen over the network; never a speed claim.
SETTLE_S = 20.0
LIVE_DELIVERY_S = 10.0  # well below the live handle's 60 s full check


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Relays]:
    r = Relays(tmp_path)
    yield r
    r.stop_all()


@pytest.fixture
def live_relay(relays: Relays, tmp_path: Path) -> RelayProcess:
    return relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}")


def test_import_sddsf_is_light_and_exports_the_api() -> None:
    code = ("import sys, sddsf\n"
            "heavy = [m for m in ('pycrdt', 'httpx', 'sddsf.client.device') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "from sddsf import Device, Runner, SyncReport, SddsfError, UsageError, "
            "UnavailableError, RateLimitedError, VerificationError, RemoteChange, LiveDoc\n"
            "import sddsf.client.device as d, sddsf.client.runner as r, sddsf.errors as e\n"
            "assert Device is d.Device and Runner is r.Runner and SyncReport is d.SyncReport\n"
            "assert SddsfError is e.SddsfError and issubclass(UsageError, SddsfError)\n"
            "assert set(sddsf.__all__) == {'__version__', *sddsf._EXPORTS}\n"
            "assert all(getattr(sddsf, n) is not None for n in sddsf.__all__)\n"
            "assert 'Device' in dir(sddsf)\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    import sddsf
    with pytest.raises(AttributeError):
        _ = sddsf.NoSuchName  # type: ignore[attr-defined]


async def test_str_passphrase_and_async_with(relay: InProcessRelay, tmp_path: Path) -> None:
    home = tmp_path / "laptop"
    device, _ = await Device.create_account(home, "http://relay.test", "laptop",
                                            passphrase=PASS, transport=relay.transport(),
                                            clock=relay.clock)
    async with device:
        space = await device.create_space("notes")
        device.doc(space, "kv").get("kv", type=pycrdt.Map)["a"] = "1"
    # Closed on leaving the block: edits flushed, the home's lock released.
    async with Device.open(home, passphrase=PASS, transport=relay.transport(),
                           clock=relay.clock, lock_timeout_s=1) as again:
        assert again.pending_count() >= 1  # queued by close(), not sent
        assert dict(again.doc(space, "kv").get("kv", type=pycrdt.Map)) == {"a": "1"}
    with pytest.raises(UsageError):
        Device.open(home, passphrase=b"bytes", transport=relay.transport())  # type: ignore[arg-type]


async def test_registry_rotation_and_proposal_events(relay: InProcessRelay,
                                                     tmp_path: Path) -> None:
    from sddsf import PendingProposal, RegistryChange, Rotation

    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await phone.sync()
    events = phone.changes()
    tablet = await relay.add(laptop, tmp_path / "tablet", "tablet")
    await laptop.set_policy({"approvals": 2})
    change = await laptop.revoke(tablet.device_id, "lost")
    assert change.pending is not None
    await phone.sync()
    seen = []
    while True:
        try:
            seen.append(await asyncio.wait_for(anext(events), 0.1))
        except TimeoutError:
            break
    assert RegistryChange("added", tablet.device_id, "tablet") in seen
    assert any(isinstance(e, Rotation) and e.space == space and e.by == laptop.device_id
               for e in seen)
    assert PendingProposal(change.pending.proposal.id, "revoke", tablet.device_id,
                           laptop.device_id) in seen
    for d in (laptop, phone, tablet):
        await d.close()


async def _paired(relay: RelayProcess, tmp_path: Path) -> tuple[Device, Device, bytes]:
    laptop, _ = await Device.create_account(tmp_path / "laptop", relay.base_url, "laptop",
                                            passphrase=PASS)
    space = await laptop.create_space("notes")
    phone = await Device.add_local(laptop, tmp_path / "phone", "phone", passphrase=PASS)
    await laptop.sync()
    await phone.sync()
    return laptop, phone, space


async def test_live_app_doc_sees_remote_change_without_changed(
        live_relay: RelayProcess, tmp_path: Path) -> None:
    from sddsf import RemoteChange

    laptop, phone, space = await _paired(live_relay, tmp_path)
    mine, theirs = pycrdt.Doc(), pycrdt.Doc()
    async with laptop, phone, laptop.live(space, "notes", doc=mine) as a, \
            phone.live(space, "notes", doc=theirs) as b:
        assert a.doc is mine and b.doc is theirs
        await asyncio.wait_for(a.synced.wait(), SETTLE_S)
        await asyncio.wait_for(b.synced, SETTLE_S)
        assert a.connected and b.connected
        events = phone.changes()
        mine.get("text", type=pycrdt.Text).insert(0, "hello")  # no Runner.changed()
        # The bound of waiting for the event (not a speed assertion).
        event = await asyncio.wait_for(anext(events), 1.0)
        assert isinstance(event, RemoteChange)
        assert (event.space, event.doc, event.author_device) == (space, "notes",
                                                                  laptop.device_id)
        assert str(theirs.get("text", type=pycrdt.Text)) == "hello"
        replay = pycrdt.Doc()
        replay.apply_update(event.update)
        assert str(replay.get("text", type=pycrdt.Text)) == "hello"
    assert not a.connected


async def test_bind_applies_stored_state_and_pushes_what_the_doc_held(
        live_relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone, space = await _paired(live_relay, tmp_path)
    laptop.doc(space, "notes").get("m", type=pycrdt.Map)["stored"] = "yes"
    await laptop.sync()
    await phone.sync()
    held = pycrdt.Doc()
    held.get("m", type=pycrdt.Map)["held"] = "before binding"
    async with laptop, phone, phone.live(space, "notes", doc=held) as b:
        assert dict(held.get("m", type=pycrdt.Map)) == {"stored": "yes",
                                                         "held": "before binding"}
        await asyncio.wait_for(b.synced.wait(), SETTLE_S)
        async with laptop.live(space, "notes") as a:
            async def both() -> None:
                while dict(a.doc.get("m", type=pycrdt.Map)).get("held") != "before binding":
                    await asyncio.sleep(0.02)
            await asyncio.wait_for(both(), SETTLE_S)


async def test_raising_observer_and_callback_do_not_stop_syncing(
        live_relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone, space = await _paired(live_relay, tmp_path)
    theirs = pycrdt.Doc()
    text = theirs.get("text", type=pycrdt.Text)

    def observer(event: object) -> None:
        raise RuntimeError("application bug in an observer")

    text.observe(observer)
    errors: list[str] = []
    phone.on_error(lambda e: errors.append(e.message))

    def callback(event: object) -> None:
        raise ValueError("application bug in a callback")

    phone.on_change(callback)
    async with laptop, phone, laptop.live(space, "notes") as a, \
            phone.live(space, "notes", doc=theirs) as b:
        await asyncio.wait_for(b.synced.wait(), SETTLE_S)
        for word in ("one", "two"):
            a.doc.get("text", type=pycrdt.Text).insert(0, word)

            async def arrived(word: str = word) -> None:
                while word not in str(text):
                    await asyncio.sleep(0.02)
            await asyncio.wait_for(arrived(), SETTLE_S)
        assert str(text) == "twoone"
        assert any("application bug in an observer" in m for m in errors)
        assert any("application bug in a callback" in m for m in errors)
        assert b.connected


def test_sync_api_live_document(live_relay: RelayProcess, tmp_path: Path) -> None:
    from sddsf import sync_api

    laptop, _ = sync_api.Device.create_account(tmp_path / "laptop", live_relay.base_url,
                                               "laptop", passphrase=PASS)
    with laptop:
        laptop.create_space("notes")
        phone = sync_api.Device.add_local(laptop, tmp_path / "phone", "phone",
                                          passphrase=PASS)
        with phone:
            laptop.sync()
            phone.sync()
            events = phone.changes()
            with laptop.live("notes", "todo") as a, phone.live("notes", "todo") as b:
                assert a.synced.wait(SETTLE_S) and b.synced.wait(SETTLE_S)
                with a.transaction() as doc:
                    doc.get("text", type=pycrdt.Text).insert(0, "milk")
                event = events.next(timeout=SETTLE_S)
                assert isinstance(event, sync_api.RemoteChange)
                with b.lock:
                    assert str(b.doc.get("text", type=pycrdt.Text)) == "milk"
            assert phone.sync().applied == 0
    reopened = sync_api.Device.open(tmp_path / "phone", passphrase=lambda: PASS)
    with reopened:
        assert str(reopened.run(lambda d: str(d.doc(d.space_by_name("notes"), "todo")
                                               .get("text", type=pycrdt.Text)))) == "milk"


async def test_live_follows_a_space_learnt_after_connecting(
        live_relay: RelayProcess, tmp_path: Path) -> None:
    # The phone has not synced since it joined: it learns the space at the live
    # handle's first sync, after its live channel connected with no space.
    laptop, _ = await Device.create_account(tmp_path / "laptop", live_relay.base_url,
                                            "laptop", passphrase=PASS)
    space = await laptop.create_space("notes")
    phone = await Device.add_local(laptop, tmp_path / "phone", "phone", passphrase=PASS)
    assert phone.spaces() == []
    async with laptop, phone, laptop.live(space, "notes") as a, \
            phone.live(space, "notes") as b:
        await asyncio.wait_for(a.synced.wait(), SETTLE_S)
        await asyncio.wait_for(b.synced.wait(), SETTLE_S)

        async def subscribed() -> None:  # the phone's channel now follows the space
            runner = b._session.runner  # type: ignore[union-attr]
            while space not in runner._following or not runner.connected:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(subscribed(), SETTLE_S)
        events = phone.changes()
        a.doc.get("text", type=pycrdt.Text).insert(0, "hello")
        # Live, not the timer: the live handle's full check runs every 60 s
        # (LIVE_SETTINGS.full_check_s), so arriving within 10 s means the
        # channel delivered it (1 s was too tight on a loaded machine).
        assert LIVE_SETTINGS.full_check_s > 5 * LIVE_DELIVERY_S
        await asyncio.wait_for(anext(events), LIVE_DELIVERY_S)
        assert str(b.doc.get("text", type=pycrdt.Text)) == "hello"


async def test_event_bus_alerts_streams_and_async_callbacks() -> None:
    from sddsf.client.events import STREAM_MAX, Alert, EventBus
    from sddsf.client.transport.relay import notification
    from sddsf.wire import b64

    bus = EventBus()
    stream = bus.stream()
    errors: list[str] = []
    bus.on_error(lambda e: errors.append(e.message))

    async def failing(event: object) -> None:
        raise KeyError("async callback bug")

    bus.on_change(failing)
    bus.relay_alert(notification(json.dumps({
        "type": "alert", "rule": "new_ip", "severity": "high",
        "message": "seen from a new network", "device": b64(b"\x01" * 32)})))
    bus.device_alert("snapshot_mismatch", "device 'phone' wrote a forged snapshot")
    assert await anext(stream) == Alert("new_ip", "seen from a new network", "relay",
                                        b"\x01" * 32, "high")
    assert await anext(stream) == Alert("snapshot_mismatch",
                                        "device 'phone' wrote a forged snapshot", "device")
    await asyncio.sleep(0)  # the async callbacks ran
    assert len(errors) == 2 and all("async callback bug" in m for m in errors)
    for _ in range(STREAM_MAX + 3):
        bus.device_alert("x", "y")
    assert stream.dropped == 3
    stream.close()
    assert [e async for e in stream] == [Alert("x", "y", "device")] * STREAM_MAX


async def test_close_without_async_with_stops_the_live_sync(
        live_relay: RelayProcess, tmp_path: Path) -> None:
    """device.close() called directly (not by leaving ``async with device``) ends
    the live handles' background sync too: no task keeps syncing a closed device."""
    laptop, phone, space = await _paired(live_relay, tmp_path)
    handle = await phone.live(space, "notes").__aenter__()
    await asyncio.wait_for(handle.synced.wait(), SETTLE_S)
    from sddsf.client import live as live_module

    runner = live_module._sessions[phone].runner
    tasks = list(runner._tasks)
    assert tasks and not any(t.done() for t in tasks)
    await phone.close()
    assert phone not in live_module._sessions
    assert all(t.done() for t in tasks)
    await laptop.close()
