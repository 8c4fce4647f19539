"""Live delivery across relay processes: the local :class:`~sddsf.relay.fanout.Hub`
fed in log order, from this process's appends and from other processes' hints.

What travels on the bus (:mod:`sddsf.relay.bus`), as compact JSON:

* ``ops``: a space grew to ``end`` (the ops themselves stay in the database);
* ``close``: close a device's connections (revoked, or denied by the controller);
* ``registry``: an account's registry changed; each process re-checks its own
  connections of that account (a revoked device's are closed);
* ``alert``: a controller alert, as the WebSocket frame to show the account's
  other devices.

**Order and gaps.** Per space with local subscribers, this process keeps a
cursor: the next offset its hub will deliver. Ops are delivered strictly in
offset order by one task: ops appended here come with their envelopes; a hint
from elsewhere, or a gap before local ops, is filled from the log
(``read_ops``). A lost hint is therefore repaired by the next one for the space
(or by the re-check after the bus reconnects), and a subscriber never sees an
op twice or out of order from this process. Without local subscribers a space
has no cursor; a new subscription starts it at the size it reports to the
client, so every later op is pushed.

A hint is only a hint: nothing is acknowledged or refused because of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from sddsf.crypto import random_bytes
from sddsf.errors import SddsfError
from sddsf.protocol.registry import RegistryState
from sddsf.relay.bus import Bus
from sddsf.relay.fanout import Hub
from sddsf.relay.storage.base import RelayStorage

__all__ = ["ClusterLive"]

log = logging.getLogger("sddsf.relay")

#: Ops read from the log per round trip when filling a gap.
_FILL_PAGE: Final = 500
#: The same device is told to every process at most this often (ms) for one reason.
_CLOSE_DEBOUNCE_S: Final = 1.0

#: ``(account, device) -> close reason or ""``: whether a device may still read.
Refusal = Callable[[bytes, bytes], Awaitable[str]]


class Registries(Protocol):
    """The fabric's verified registries (:class:`~sddsf.relay.fabric.RegistryCache`)."""

    async def get(self, account_id: bytes) -> RegistryState:
        """The registry, refreshed from storage."""
        ...

    def cached(self, account_id: bytes) -> RegistryState | None:
        """The registry as last read here."""
        ...


@dataclass
class _Pending:
    """What is known about a space's new ops and not yet delivered."""

    start: int | None = None
    end: int = 0
    envelopes: dict[int, bytes] = field(default_factory=dict)


class ClusterLive:
    """The relay's live connections, cluster-wide (one per process).

    Implements the controller's ``LiveConnections`` (``has_device``,
    ``close_device``) and the fabric's and controller's publish hooks.
    """

    def __init__(self, hub: Hub, storage: RelayStorage, bus: Bus | None,
                 registries: Registries) -> None:
        self.hub = hub
        self.storage = storage
        self.registries = registries
        self.bus = bus
        self.node = random_bytes(8).hex()
        self.refusal: Refusal | None = None  # set by the app (registry + controller)
        self._cursor: dict[bytes, int] = {}
        self._pending: dict[bytes, _Pending] = {}
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closing: dict[tuple[bytes, str], float] = {}
        self._checks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the delivery task and the bus."""
        self._worker = asyncio.create_task(self._deliver_loop(), name="sddsf-fanout")
        if self.bus is not None:
            await self.bus.start(self._on_hint, self._repair)

    async def close(self) -> None:
        """Stop the bus and the delivery task."""
        if self.bus is not None:
            await self.bus.close()
        for task in [self._worker, *self._checks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._worker = None

    @property
    def distributed(self) -> bool:
        """Whether other processes may hold connections (a bus is configured)."""
        return self.bus is not None

    # ------------------------------------------------------------ publishing
    async def publish(self, space_id: bytes, items: list[tuple[int, bytes]]) -> None:
        """Ops appended by this process (after commit): deliver here, hint elsewhere."""
        if not items:
            return
        end = max(offset for offset, _ in items) + 1
        if self.hub.subscribed(space_id):
            self._want(space_id, items[0][0], end).envelopes.update(items)
        self._send({"t": "ops", "s": space_id.hex(), "b": items[0][0], "e": end})

    def publish_account(self, account_id: bytes, about: bytes,
                        alert: dict[str, object]) -> int:
        """A controller alert for the account's other devices, on every process."""
        frame = self.hub.alert_frame(alert)
        sent = self.hub.offer_account(account_id, about, frame)
        self._send({"t": "alert", "a": account_id.hex(), "x": about.hex(), "f": frame})
        return sent

    def has_device(self, device_id: bytes) -> bool:
        """Whether the device may have a connection: here, or (with a bus) anywhere."""
        return self.distributed or self.hub.has_device(device_id)

    def close_device(self, device_id: bytes, reason: str) -> int:
        """Close the device's connections here and on every other process.
        Returns how many were closed here."""
        closed = self.hub.close_device(device_id, reason)
        loop = asyncio.get_running_loop()
        key = (device_id, reason)
        if loop.time() - self._closing.get(key, -1e9) >= _CLOSE_DEBOUNCE_S:
            self._closing[key] = loop.time()
            if len(self._closing) > 10_000:
                self._closing.clear()
            self._send({"t": "close", "d": device_id.hex(), "r": reason})
        return closed

    def registry_changed(self, account_id: bytes) -> None:
        """An account's registry grew: every process re-checks its connections of it."""
        self._send({"t": "registry", "a": account_id.hex()})

    def subscribed(self, space_id: bytes, size: int) -> None:
        """A local connection subscribed to ``space_id`` and was told its size:
        start the cursor there if it is the space's only subscriber here (earlier
        ops come over HTTP)."""
        if self.hub.subscriber_count(space_id) <= 1 or space_id not in self._cursor:
            self._cursor[space_id] = size

    def _want(self, space_id: bytes, start: int, end: int) -> _Pending:
        pending = self._pending.setdefault(space_id, _Pending())
        pending.start = start if pending.start is None else min(pending.start, start)
        pending.end = max(pending.end, end)
        self._wake.set()
        return pending

    def _send(self, hint: dict[str, object]) -> None:
        if self.bus is None:
            return
        hint["n"] = self.node
        try:
            self.bus.send(json.dumps(hint, separators=(",", ":")))
        except ValueError as exc:  # an oversized alert: it is listed over HTTP anyway
            log.warning("cluster bus: %s", exc)

    # ------------------------------------------------------------ receiving
    def _on_hint(self, text: str) -> None:
        hint = json.loads(text)
        if not isinstance(hint, dict) or hint.get("n") == self.node:
            return
        kind = hint.get("t")
        if kind == "ops":
            space_id = bytes.fromhex(str(hint["s"]))
            if self.hub.subscribed(space_id):
                self._want(space_id, int(hint["b"]), int(hint["e"]))
        elif kind == "close":
            self.hub.close_device(bytes.fromhex(str(hint["d"])), str(hint["r"]))
        elif kind == "alert":
            self.hub.offer_account(bytes.fromhex(str(hint["a"])), bytes.fromhex(str(hint["x"])),
                                   str(hint["f"]))
        elif kind == "registry":
            self._spawn(self._recheck(bytes.fromhex(str(hint["a"]))))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _recheck(self, account_id: bytes | None) -> None:
        """Close this process's connections (of one account, or all) whose device
        may no longer read."""
        if self.refusal is None:
            return
        for account, device in self.hub.devices(account_id):
            try:
                reason = await self.refusal(account, device)
            except SddsfError as exc:  # the next hint or subscribe checks again
                log.warning("cluster: could not re-check %s: %s", device.hex()[:12], exc)
                continue
            if reason:
                self.hub.close_device(device, reason)

    async def _repair(self) -> None:
        """After the bus reconnected: hints may have been missed. Re-check every
        connection, and catch every subscribed space up to its stored size."""
        await self._recheck(None)
        for space_id in self.hub.spaces():
            with contextlib.suppress(SddsfError):
                space = await self.storage.get_space(space_id)
                if space is not None:
                    self._want(space_id, space.size, space.size)

    async def _cut_revoked(self, space_id: bytes, *, fresh: bool) -> None:
        """Close the space's subscribers whose device is no longer active, before
        any op written after its revocation is pushed to them (whichever hint,
        the revocation's or the op's, arrived first)."""
        for account, device in self.hub.space_devices(space_id):
            state = None if fresh else self.registries.cached(account)
            if state is None:
                state = await self.registries.get(account)
            if not state.is_active(device):
                self.hub.close_device(device, "revoked")

    # ------------------------------------------------------------ delivery
    async def _deliver_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, {}
            for space_id, todo in pending.items():
                try:
                    await self._deliver(space_id, todo)
                except SddsfError as exc:
                    # The database is unavailable: subscribers resync from their
                    # last op when they can (the cursor did not move).
                    log.warning("cluster: could not read space %s for fan-out: %s",
                                space_id.hex()[:12], exc)
                    self.hub.resync(space_id, self._cursor.get(space_id, 0))
                except Exception:
                    log.exception("cluster: fan-out of space %s failed", space_id.hex()[:12])

    async def _deliver(self, space_id: bytes, todo: _Pending) -> None:
        if not self.hub.subscribed(space_id):
            self._cursor.pop(space_id, None)
            return
        cursor = self._cursor.get(space_id)
        if cursor is None:  # no cursor yet: start at what this batch or hint covers
            cursor = todo.end if todo.start is None else todo.start
        fresh = False
        while cursor < todo.end:
            if cursor in todo.envelopes:
                # Appended here: the batch was verified against a registry read
                # after every revocation stored before it, so the cache is
                # recent enough to cut off a device revoked before these ops.
                await self._cut_revoked(space_id, fresh=False)
                run: list[tuple[int, bytes]] = []
                while cursor in todo.envelopes and cursor < todo.end:
                    run.append((cursor, todo.envelopes[cursor]))
                    cursor += 1
                await self.hub.publish(space_id, run)
                self._cursor[space_id] = cursor
                continue
            stop = min([todo.end, *(o for o in todo.envelopes if o > cursor)])
            ops = await self.storage.read_ops(space_id, cursor - 1,
                                              min(_FILL_PAGE, stop - cursor))
            if not ops:
                return  # not visible yet (or the log is shorter): the next hint repairs
            if not fresh:  # appended elsewhere: read the registry as it is now
                await self._cut_revoked(space_id, fresh=True)
                fresh = True
            run = []
            for op in ops:
                if op.envelope is None:  # pruned: subscribers backfill over HTTP
                    self.hub.resync(space_id, op.offset)
                    break
                run.append((op.offset, op.envelope))
            if run:
                await self.hub.publish(space_id, run)
            cursor = ops[-1].offset + 1
            self._cursor[space_id] = cursor
