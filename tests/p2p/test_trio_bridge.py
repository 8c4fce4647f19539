"""The asyncio <-> trio bridge of the peer-to-peer node (real threads, real loops)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

try:
    import trio
except ImportError:
    if os.environ.get("SDDSF_REQUIRE_P2P") == "1":
        raise
    pytest.skip("trio is not installed (SDDSF_REQUIRE_P2P=1 makes this a failure)",
                allow_module_level=True)

from sddsf.errors import ConflictError, InternalError, UnavailableError
from sddsf.p2p.bridge import TrioThread


class Body:
    """A trio main that records its life cycle."""

    def __init__(self) -> None:
        self.shut_down = False
        self.thread_name = ""

    async def __call__(self, stop: trio.Event, task_status: Any) -> None:
        self.thread_name = threading.current_thread().name
        task_status.started()
        await stop.wait()
        await trio.sleep(0.01)  # a graceful shutdown that needs the loop
        self.shut_down = True


@pytest.fixture
async def bridge() -> AsyncIterator[tuple[TrioThread, Body]]:
    thread, body = TrioThread("test-trio"), Body()
    await thread.start(body)
    yield thread, body
    await thread.stop()


async def test_a_call_runs_in_the_trio_thread_and_returns_its_result(bridge) -> None:
    thread, body = bridge

    async def where(x: int) -> tuple[str, int]:
        await trio.sleep(0)
        return threading.current_thread().name, x + 1

    async with asyncio.timeout(5):
        assert await thread.call(where, 41) == ("test-trio", 42)
        assert body.thread_name == "test-trio"


async def test_errors_cross_as_sddsf_errors(bridge) -> None:
    thread, _ = bridge

    async def conflict() -> None:
        raise ConflictError("somebody else won")

    async def bug() -> None:
        raise ValueError("oops")

    async with asyncio.timeout(5):
        with pytest.raises(ConflictError, match="somebody else won"):
            await thread.call(conflict)
        with pytest.raises(InternalError, match="ValueError: oops") as info:
            await thread.call(bug)
        assert isinstance(info.value.__cause__, ValueError)
        assert thread.running  # a failing call does not take the loop down


async def test_cancelling_the_asyncio_caller_cancels_the_trio_task(bridge) -> None:
    thread, _ = bridge
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    async with asyncio.timeout(5):
        task = asyncio.ensure_future(thread.call(forever))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(cancelled.wait, 2)


async def test_concurrent_calls_hold_no_executor_threads(bridge) -> None:
    thread, _ = bridge

    async def nap() -> None:
        await trio.sleep(0.2)

    async with asyncio.timeout(10):
        t0 = time.perf_counter()
        await asyncio.gather(*(thread.call(nap) for _ in range(64)))
        # One executor thread per call would serialise these in batches of a few.
        assert time.perf_counter() - t0 < 1.0


async def test_trio_reaches_asyncio_without_blocking_its_loop(bridge) -> None:
    thread, _ = bridge
    loop_thread = threading.current_thread().name
    posted: asyncio.Queue[str] = asyncio.Queue()

    async def on_asyncio(x: int) -> tuple[str, int]:
        await asyncio.sleep(0.2)
        return threading.current_thread().name, x * 2

    async def from_trio() -> tuple[tuple[str, int], int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await trio.sleep(0.01)
                ticks += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            result = await thread.call_asyncio(on_asyncio, 21)
            nursery.cancel_scope.cancel()
        thread.post(lambda: posted.put_nowait(threading.current_thread().name))
        return result, ticks

    async with asyncio.timeout(5):
        (ran_on, value), ticks = await thread.call(from_trio)
        assert (ran_on, value) == (loop_thread, 42)
        assert ticks >= 5  # trio kept running while asyncio worked
        assert await posted.get() == loop_thread


async def test_stop_fails_calls_in_flight_and_later_and_ends_the_thread() -> None:
    thread, body = TrioThread("test-trio-stop"), Body()

    async def forever() -> None:
        await trio.sleep_forever()

    async with asyncio.timeout(5):
        await thread.start(body)
        in_flight = asyncio.ensure_future(thread.call(forever))
        await asyncio.sleep(0.05)
        await thread.stop()
        await thread.stop()  # idempotent
        with pytest.raises(UnavailableError):
            await in_flight
        with pytest.raises(UnavailableError):
            await thread.call(forever)
        assert body.shut_down and not thread.running
        assert "test-trio-stop" not in {t.name for t in threading.enumerate()}


async def test_a_main_that_fails_before_ready_fails_start() -> None:
    async def broken(stop: trio.Event, task_status: Any) -> None:
        raise UnavailableError("port in use")

    thread = TrioThread("test-trio-broken")
    async with asyncio.timeout(5):
        with pytest.raises(UnavailableError, match="port in use"):
            await thread.start(broken)
        await thread.stop()
        assert not thread.running


async def test_a_call_from_another_event_loop_settles_on_that_loop(bridge) -> None:
    thread, _ = bridge

    async def answer() -> int:
        return 7

    async def from_other_loop() -> int:
        return await thread.call(answer)

    async with asyncio.timeout(5):
        assert await asyncio.to_thread(asyncio.run, from_other_loop()) == 7


async def test_stop_during_start_does_not_hang() -> None:
    async def slow(stop: trio.Event, task_status: Any) -> None:
        await trio.sleep(0.2)  # e.g. binding and announcing
        task_status.started()
        await stop.wait()

    thread = TrioThread("test-trio-early-stop")
    async with asyncio.timeout(5):
        starting = asyncio.ensure_future(thread.start(slow))
        await asyncio.sleep(0)  # the thread exists; its loop may not yet
        await thread.stop()
        with pytest.raises(UnavailableError):
            await starting
        assert "test-trio-early-stop" not in {t.name for t in threading.enumerate()}
