"""The background runner against a real relay process: an edit on one device
reaches another through push-on-change and the live WebSocket hint, and the
runner rides out a relay restart (backoff) without losing edits."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pycrdt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "relay"))

from clientkit import passphrase
from livekit import Relays

from sddsf.client.device import Device
from sddsf.client.runner import Runner, RunnerSettings

FAST = RunnerSettings(debounce_s=0.05, full_check_s=30.0, backoff_min_s=0.1,
                      backoff_max_s=0.5)


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Relays]:
    r = Relays(tmp_path)
    yield r
    r.stop_all()


async def _until(check: object, timeout: float = 10.0) -> None:
    assert callable(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_edit_reaches_the_other_device_live(relays: Relays, tmp_path: Path) -> None:
    relay = relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}")
    laptop, _ = await Device.create_account(tmp_path / "laptop", relay.base_url, "laptop",
                                            passphrase=passphrase)
    space = await laptop.create_space("notes")
    phone = await Device.add_local(laptop, tmp_path / "phone", "phone", passphrase=passphrase)
    await laptop.sync()
    await phone.sync()
    runners = [Runner(laptop, FAST), Runner(phone, FAST)]
    for r in runners:
        await r.start()
    try:
        laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["live"] = "yes"
        runners[0].changed()
        await _until(lambda: dict(phone.doc(space, "kv").get("kv", type=pycrdt.Map)).get(
            "live") == "yes")
        assert runners[1].syncs >= 1  # woken by the live channel, not by the timer
    finally:
        for r in runners:
            await r.stop()
    await laptop.close()
    await phone.close()


async def test_runner_retries_while_the_relay_is_down(relays: Relays, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'relay.db'}"
    relay = relays.start("--db", db)
    laptop, _ = await Device.create_account(tmp_path / "laptop", relay.base_url, "laptop",
                                            passphrase=passphrase)
    space = await laptop.create_space("notes")
    errors: list[str] = []
    runner = Runner(laptop, FAST, on_error=lambda e: errors.append(e.code.value))
    relay.stop()
    await runner.start()
    try:
        laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["offline"] = "edit"
        runner.changed()
        await _until(lambda: "unavailable" in errors)
        assert laptop.pending_count() >= 1  # kept on disk while the relay is down
        relays.start("--db", db, "--port", str(relay.port), port=relay.port)
        await _until(lambda: laptop.pending_count() == 0, timeout=15)
    finally:
        await runner.stop()
    await laptop.close()
