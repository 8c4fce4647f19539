"""Background sync: push on change (debounced), live pull over WebSocket,
reconnect with exponential backoff and jitter, and a periodic full check.

The runner never applies what the WebSocket says directly: a live ``op`` or
``resync`` message only wakes :meth:`Device.sync`, which pulls and verifies
like any other sync (the live channel is a hint; the signed log is the truth).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import websockets

from sddsf.client.device import Device, SyncReport
from sddsf.errors import SddsfError, UnavailableError

__all__ = ["Runner", "RunnerSettings"]


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """Timing of the background runner (seconds)."""

    debounce_s: float = 0.25  # wait this long after an edit before pushing
    full_check_s: float = 60.0  # a full sync at least this often, even when idle
    backoff_min_s: float = 0.5
    backoff_max_s: float = 60.0


@dataclass
class Runner:
    """Keeps one device in sync until :meth:`stop` is called."""

    device: Device
    settings: RunnerSettings = field(default_factory=RunnerSettings)
    on_sync: Callable[[SyncReport], None] | None = None
    on_error: Callable[[SddsfError], None] | None = None
    syncs: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def changed(self) -> None:
        """Call after local edits: they are pushed after the debounce window."""
        self._wake.set()

    async def start(self) -> None:
        """Start the sync loop and the live channel."""
        self._tasks = [asyncio.create_task(self._sync_loop()),
                       asyncio.create_task(self._live_loop())]

    async def stop(self) -> None:
        """Stop both loops (pending edits stay queued on disk)."""
        self._stop.set()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _sync_loop(self) -> None:
        delay = self.settings.backoff_min_s
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.full_check_s)
            self._wake.clear()
            await asyncio.sleep(self.settings.debounce_s)  # batch bursts of edits
            try:
                report = await self.device.sync()
            except UnavailableError as exc:
                self._report_error(exc)
                delay = min(delay * 2, self.settings.backoff_max_s)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
                self._wake.set()
                continue
            except SddsfError as exc:  # a verification failure: report, keep state
                self._report_error(exc)
                continue
            delay = self.settings.backoff_min_s
            self.syncs += 1
            if self.on_sync is not None:
                self.on_sync(report)

    def _report_error(self, exc: SddsfError) -> None:
        if self.on_error is not None:
            self.on_error(exc)

    async def _live_loop(self) -> None:
        delay = self.settings.backoff_min_s
        url = self.device.relay_url.replace("http://", "ws://", 1).replace(
            "https://", "wss://", 1).rstrip("/")
        while not self._stop.is_set():
            try:
                ticket = base64.urlsafe_b64encode(await self.device.relay.ws_ticket()).decode()
                async with websockets.connect(f"{url}/v1/ws?ticket={ticket}",
                                              max_size=1 << 20) as ws:
                    for space_id, _ in self.device.spaces():
                        await ws.send(json.dumps({
                            "type": "subscribe",
                            "space": base64.urlsafe_b64encode(space_id).decode()}))
                    delay = self.settings.backoff_min_s
                    async for frame in ws:
                        message = json.loads(frame)
                        if message.get("type") in ("op", "resync", "subscribed"):
                            self._wake.set()  # pull and verify; never trust the push
            except (OSError, websockets.WebSocketException, SddsfError) as exc:
                if isinstance(exc, SddsfError):
                    self._report_error(exc)
            if self._stop.is_set():
                return
            delay = min(delay * 2, self.settings.backoff_max_s)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
