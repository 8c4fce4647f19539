"""Everyday use never loses data or strands a device (library level, in-process relay).

* Pending ops larger than one request are uploaded in several requests, sized
  from the relay's advertised limits (``GET /v1/limits``).
* An edit larger than one op is sealed as a multi-part op (protocol §8.11) and
  reassembled by readers; an edit beyond ``max_edit`` is refused at ``flush``
  with a clear error, nothing of it queued, and the device stays healthy.
* App observers that raise never stop a sync: the error is reported, the
  update is applied.
* ``429`` is retried after the relay's ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from clientkit import InProcessRelay

from sddsf.client.device import Device
from sddsf.client.retry import RetryPolicy
from sddsf.client.runner import Runner, RunnerSettings
from sddsf.errors import RateLimitedError, SddsfError, UsageError
from sddsf.relay.storage import open_storage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "relay"))

from relaykit import Clock, make_app

KIB = 1024


def kv(device: Device, space: bytes) -> Any:
    return device.doc(space, "kv").get("kv", type=pycrdt.Map)


def text(device: Device, space: bytes) -> Any:
    return device.doc(space, "text").get("t", type=pycrdt.Text)


@contextlib.asynccontextmanager
async def tuned_relay(tmp_path: Path, **settings: object) -> AsyncIterator[InProcessRelay]:
    """An in-process relay on SQLite with some settings changed."""
    storage = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    await storage.open()
    try:
        relay = InProcessRelay(storage, Clock(time.time_ns() // 1_000_000))
        relay.app = make_app(storage, relay.clock, **settings)
        yield relay
    finally:
        await storage.close()


async def two_devices(relay: InProcessRelay, tmp_path: Path) -> tuple[Device, Device, bytes]:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await laptop.sync()
    await phone.sync()
    return laptop, phone, space


# ------------------------------------------------------------------ item 1


async def test_pending_ops_larger_than_one_request_are_pushed_in_several(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, phone, space = await two_devices(relay, tmp_path)
    values = {f"k{i}": chr(ord("a") + i) * (400 * KIB) for i in range(3)}
    for key, value in values.items():  # three ops of ~400 KiB: > 1 MiB together
        kv(laptop, space)[key] = value
        assert laptop.flush() == 1
    report = await laptop.sync()
    assert report.pushed == 3 and report.rejected == []
    assert laptop.pending_count() == 0
    await phone.sync()
    assert dict(kv(phone, space)) == values
    await laptop.close()
    await phone.close()


async def test_a_relay_with_smaller_requests_gets_ops_that_fit(tmp_path: Path) -> None:
    async with tuned_relay(tmp_path, max_request_bytes=256 * KIB) as relay:
        laptop, phone, space = await two_devices(relay, tmp_path)
        kv(laptop, space)["big"] = "b" * (300 * KIB)  # larger than one request here
        kv(laptop, space)["small"] = "s"
        report = await laptop.sync()
        assert report.rejected == [] and laptop.pending_count() == 0
        await phone.sync()
        assert dict(kv(phone, space)) == {"big": "b" * (300 * KIB), "small": "s"}
        await laptop.close()
        await phone.close()


# ------------------------------------------------------------------ item 2


async def test_an_edit_larger_than_one_op_syncs_in_parts(relay: InProcessRelay,
                                                        tmp_path: Path) -> None:
    laptop, phone, space = await two_devices(relay, tmp_path)
    text(laptop, space).insert(0, "x" * 5_000_000)
    kv(laptop, space)["after"] = "1"
    report = await laptop.sync()
    assert report.rejected == [] and report.pushed > 2  # the text went in several parts
    kv(laptop, space)["later"] = "2"  # the device stays healthy: later edits sync
    assert laptop.flush() == 1
    await laptop.sync()
    await laptop.close()
    await phone.sync()
    assert len(str(text(phone, space))) == 5_000_000
    assert dict(kv(phone, space)) == {"after": "1", "later": "2"}
    await phone.close()
    again = Device.open(tmp_path / "laptop", passphrase=lambda: "correct horse battery staple",
                        transport=relay.transport(), clock=relay.clock)
    assert len(str(text(again, space))) == 5_000_000  # kept across a restart
    await again.close()


async def test_an_edit_beyond_max_edit_is_refused_at_flush_and_nothing_is_queued(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, phone, space = await two_devices(relay, tmp_path)
    laptop.max_edit = 1 << 20
    text(laptop, space).insert(0, "y" * (2 << 20))
    with pytest.raises(UsageError) as refused:
        laptop.flush()
    message = refused.value.message
    assert "max_edit" in message and "not synced" in message, message
    assert laptop.pending_count() == 0  # nothing of it was queued
    kv(laptop, space)["fine"] = "yes"  # the device is healthy
    assert laptop.flush() == 1
    report = await laptop.sync()
    assert report.pushed == 1 and report.rejected == []
    await laptop.close()  # does not raise again
    await phone.sync()
    assert dict(kv(phone, space)) == {"fine": "yes"}
    assert str(text(phone, space)) == ""  # never half-applied
    await phone.close()


# ------------------------------------------------------------------ item 10


async def test_an_observer_that_raises_does_not_stop_the_sync(relay: InProcessRelay,
                                                             tmp_path: Path) -> None:
    laptop, phone, space = await two_devices(relay, tmp_path)
    doc = phone.doc(space, "kv")
    seen: list[int] = []

    def observer(_: object) -> None:  # reads the doc inside its own transaction
        seen.append(len(doc.get("kv", type=pycrdt.Map)))

    doc.observe(observer)
    for i in range(3):
        kv(laptop, space)[f"k{i}"] = str(i)
        laptop.flush()
        await laptop.sync()
    report = await phone.sync()
    assert report.applied == 3
    assert report.app_errors and all("observer" in e.message for e in report.app_errors)
    assert dict(kv(phone, space)) == {"k0": "0", "k1": "1", "k2": "2"}
    assert phone.verified_size(space) == laptop.verified_size(space)
    await laptop.close()
    await phone.close()


# ------------------------------------------------------------------ item 11


async def test_retry_after_is_read_from_the_relay_and_honoured(tmp_path: Path) -> None:
    # One token per 100 s: a refused request is told to wait ~100 s.
    async with tuned_relay(tmp_path, rate_device_per_s=0.01, rate_device_burst=6.0) as relay:
        laptop, _ = await relay.new_account(tmp_path / "laptop")
        space = await laptop.create_space("notes")
        waits: list[float] = []

        async def sleep(seconds: float) -> None:  # the relay's clock moves instead
            waits.append(seconds)
            relay.clock.now += int(seconds * 1000) + 1

        laptop.relay.sleep = sleep
        laptop.relay.retry = RetryPolicy(budget_s=10_000)  # the waits cost no real time
        for i in range(4):  # every sync makes several device requests: the bucket runs dry
            kv(laptop, space)[f"k{i}"] = str(i)
            report = await laptop.sync()
            assert report.rejected == []
        # Each 429 was waited out for its Retry-After, so every sync went through.
        assert waits, "the relay never rate limited the device"
        assert min(waits) >= 50.0
        laptop.relay.retry = RetryPolicy(attempts=1)  # hand the 429 to the caller
        with pytest.raises(RateLimitedError) as limited:
            for _ in range(20):
                await laptop.sync()
        # The error carries the relay's Retry-After header (the relay's wait, "retry
        # in 99.6 s", in whole seconds), not a 1 s default.
        said = float(re.search(r"retry in ([0-9.]+) s", limited.value.message)[1])  # type: ignore[index]
        assert limited.value.retry_after_s >= 50.0
        assert limited.value.retry_after_s.is_integer()
        assert abs(limited.value.retry_after_s - said) <= 1.0
        await laptop.close()


# ------------------------------------------------------- item 10: the runner


async def _until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


QUICK = RunnerSettings(debounce_s=0.01, full_check_s=0.2, backoff_min_s=0.05,
                       backoff_max_s=0.2)


async def test_runner_survives_an_observer_that_raises(relay: InProcessRelay,
                                                      tmp_path: Path) -> None:
    laptop, phone, space = await two_devices(relay, tmp_path)
    def buggy_observer(_: object) -> None:
        raise ValueError("a bug in the application's observer")

    phone.doc(space, "kv").observe(buggy_observer)
    errors: list[SddsfError] = []
    runner = Runner(phone, QUICK, on_error=errors.append)
    await runner.start()
    try:
        for i in range(3):  # later edits arrive too: the runner kept running
            kv(laptop, space)[f"k{i}"] = str(i)
            await laptop.sync()
            await _until(lambda i=i: f"k{i}" in dict(kv(phone, space)))
        assert any("observer" in e.message and "a bug in the application" in e.message
                   for e in errors)
    finally:
        await runner.stop()  # the application's error is not the runner's: no raise
    await laptop.close()
    await phone.close()


async def test_runner_retries_an_unexpected_error_and_stop_raises_it(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, phone, space = await two_devices(relay, tmp_path)
    real_sync = phone.sync
    failures = [RuntimeError("a bug in a dependency")]

    async def sync_failing_once(progress: Any = None) -> Any:
        if failures:
            raise failures.pop()
        return await real_sync(progress)

    phone.sync = sync_failing_once  # type: ignore[method-assign]
    runner = Runner(phone, QUICK)
    await runner.start()
    kv(laptop, space)["after"] = "the bug"
    await laptop.sync()
    await _until(lambda: dict(kv(phone, space)).get("after") == "the bug")
    with pytest.raises(RuntimeError, match="a bug in a dependency"):
        await runner.stop()
    await laptop.close()
    await phone.close()


async def test_runner_waits_for_retry_after(tmp_path: Path) -> None:
    async with tuned_relay(tmp_path, rate_device_per_s=0.01, rate_device_burst=8.0) as relay:
        laptop, _ = await relay.new_account(tmp_path / "laptop")
        await laptop.create_space("notes")
        laptop.relay.retry = RetryPolicy(attempts=1)  # the 429 reaches the runner
        waits: list[float] = []
        limited: list[SddsfError] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            if seconds > 1:  # a Retry-After: let the relay's clock pass it
                relay.clock.now += int(seconds * 1000) + 1
            await asyncio.sleep(0.01)

        runner = Runner(laptop, QUICK, sleep=sleep,
                        on_error=lambda e: limited.append(e) if isinstance(
                            e, RateLimitedError) else None)
        await runner.start()
        try:
            await _until(lambda: len(limited) >= 3)  # it kept going after each 429
        finally:
            await runner.stop()
        # Every 429 was followed by a wait of at least its Retry-After (~100 s).
        assert sum(1 for w in waits if w >= 50) >= len(limited) - 1
        assert all(e.retry_after_s >= 50 for e in limited)
        await laptop.close()


# ------------------------------------------------------------------ item 4


async def test_an_operation_locked_device_picks_up_what_another_changed(
        relay: InProcessRelay, tmp_path: Path) -> None:
    home = tmp_path / "laptop"
    laptop, _ = await relay.new_account(home)
    space = await laptop.create_space("notes")
    await laptop.sync()
    await laptop.close()

    def open_device(lock: Any) -> Device:
        return Device.open(home, passphrase=lambda: "correct horse battery staple",
                           transport=relay.transport(), clock=relay.clock, lock=lock)

    watcher = open_device("operation")  # a long-running process on the home
    kv(watcher, space)["w0"] = "watcher"
    await watcher.sync()
    other = open_device("session")  # one command after another on the same home
    for i in range(3):
        kv(other, space)[f"o{i}"] = "other"
        assert other.flush() == 1
        await other.sync()
    await other.close()
    # The watcher reloads what the other connection stored before it acts: it
    # neither re-verifies the log from a stale cache nor folds the edits away.
    kv(watcher, space)["w1"] = "watcher"
    report = await watcher.sync()
    assert report.rejected == [] and report.pushed == 1
    want = {"w0": "watcher", "w1": "watcher", "o0": "other", "o1": "other", "o2": "other"}
    assert dict(kv(watcher, space)) == want
    await watcher.close()
    again = open_device("session")
    assert dict(kv(again, space)) == want
    await again.close()
