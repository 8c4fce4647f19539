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


async def test_concurrent_first_requests_share_one_session(relay: InProcessRelay,
                                                           tmp_path: Path) -> None:
    counting = _Counting(relay.transport())
    device, _ = await Device.create_account(tmp_path / "laptop", "http://relay.test",
                                            "laptop", passphrase=passphrase,
                                            transport=counting, clock=relay.clock)
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
    device, _ = await Device.create_account(tmp_path / "laptop", "http://relay.test",
                                            "laptop", passphrase=passphrase,
                                            transport=counting, clock=relay.clock)
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
    device, _ = await Device.create_account(tmp_path / "laptop", "http://relay.test",
                                            "laptop", passphrase=passphrase,
                                            transport=counting, clock=relay.clock)
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
