"""One device, one process, one handshake: concurrent requests that each need a
session (the runner's sync loop and its WebSocket loop, after a relay restart
forgot every session) share one session opening instead of racing two."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from clientkit import InProcessRelay, passphrase

from sddsf.client.device import Device
from sddsf.client.retry import RetryPolicy
from sddsf.errors import UnavailableError


class _Counting(httpx.AsyncBaseTransport):
    """Counts the requests per path that reach the relay."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self.inner.handle_async_request(request)

    def count(self, path: str) -> int:
        return sum(1 for p in self.paths if p == path)


async def _laptop(relay: InProcessRelay, tmp_path: Path,
                  transport: httpx.AsyncBaseTransport) -> Device:
    """A new account's device whose requests go through ``transport``."""
    device, _ = await Device.create_account(tmp_path / "laptop", "http://relay.test",
                                            "laptop", passphrase=passphrase,
                                            transport=transport, clock=relay.clock)
    return device


async def test_concurrent_first_requests_share_one_session(relay: InProcessRelay,
                                                           tmp_path: Path) -> None:
    counting = _Counting(relay.transport())
    device = await _laptop(relay, tmp_path, counting)
    try:
        device.relay.forget_session()
        counting.paths.clear()
        spaces, ticket = await asyncio.gather(device.relay.list_spaces(),
                                              device.relay.ws_ticket())
        assert spaces == [] and ticket
        assert counting.count("/v1/auth/session") == 1
        assert counting.count("/v1/auth/challenge") == 1
    finally:
        await device.close()


async def test_a_forgotten_session_is_reopened_once(relay: InProcessRelay,
                                                    tmp_path: Path) -> None:
    """The relay restarted: its answer to the old token is 401 for every request in
    flight; the client opens one new session and retries each request on it."""
    counting = _Counting(relay.transport())
    device = await _laptop(relay, tmp_path, counting)
    try:
        device.relay._token = bytes(32)  # a token the relay never issued (it restarted)
        counting.paths.clear()
        results = await asyncio.gather(*(device.relay.list_spaces() for _ in range(3)),
                                       device.relay.ws_ticket())
        assert all(r == [] for r in results[:3]) and results[3]
        assert counting.count("/v1/auth/session") == 1
    finally:
        await device.close()


async def test_a_cancelled_lone_request_leaves_no_handshake_running(relay: InProcessRelay,
                                                                     tmp_path: Path) -> None:
    """The shared opening is shielded from one waiter's cancellation, but once no
    request waits for it, it is cancelled too (no orphaned task keeps using the
    connection pool after the caller gave up or closed the client)."""
    counting = _Counting(relay.transport())
    device = await _laptop(relay, tmp_path, counting)
    try:
        device.relay.forget_session()
        request = asyncio.create_task(device.relay.list_spaces())
        while device.relay._opening is None:
            await asyncio.sleep(0)
        opening = device.relay._opening
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        with pytest.raises(asyncio.CancelledError):
            await opening
        assert device.relay._opening is None
        assert await device.relay.list_spaces() == []  # a later request opens a new one
    finally:
        await device.close()


class _HoldReports(httpx.AsyncBaseTransport):
    """Holds each posture report until the challenge request has arrived too (or
    2 s have passed: then the client asked for them one after the other)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.challenged = asyncio.Event()
        self.overlapped: list[bool] = []
        self.fail_reports = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/auth/challenge":
            self.challenged.set()
        elif path.endswith("/reports"):
            try:
                await asyncio.wait_for(self.challenged.wait(), 2.0)
                self.overlapped.append(True)
            except TimeoutError:
                self.overlapped.append(False)
            if self.fail_reports:
                raise httpx.ConnectError("the report's connection failed", request=request)
        return await self.inner.handle_async_request(request)


async def test_the_posture_report_and_the_challenge_share_a_round_trip(
        relay: InProcessRelay, tmp_path: Path) -> None:
    """A session opening is the posture report, a challenge and the session
    request: the first two do not depend on each other, so they are asked at
    once (two round trips, not three); the session request still waits for the
    report's answer, so the relay scores the device with the fresh posture."""
    holding = _HoldReports(relay.transport())
    device = await _laptop(relay, tmp_path, holding)
    try:
        device.relay.forget_session()
        holding.challenged.clear()
        holding.overlapped.clear()
        assert await device.relay.list_spaces() == []
        assert holding.overlapped == [True]
        assert device.relay.report_error is None  # the report was accepted

        # A report that cannot be delivered still stops the opening, as one typed error.
        device.relay.forget_session()
        device.relay.retry = RetryPolicy(attempts=1)
        holding.challenged.clear()
        holding.fail_reports = True
        with pytest.raises(UnavailableError, match="cannot reach the relay"):
            await device.relay.list_spaces()
        assert device.relay._opening is None
    finally:
        await device.close()
