"""The cluster bus: short hints broadcast to every relay process of a deployment.

A hint is a small JSON text (at most :data:`MAX_HINT` bytes, under PostgreSQL's
8000-byte ``NOTIFY`` payload limit). The bus is best effort by design: the
data stays in the database, and whatever a lost hint would have said is
repaired by its receiver (a space's delivery cursor catches up from the log at
the next hint; a reconnect re-checks every open connection, see
:mod:`sddsf.relay.cluster`). So a bus never blocks a request: a send that
fails is logged and dropped.

* :class:`PostgresBus`: ``LISTEN``/``NOTIFY`` on one dedicated asyncpg
  connection (used when the database is PostgreSQL and no Redis is set);
* :class:`RedisBus`: Redis pub/sub (used when ``redis_url`` is set);
* no bus (``None``): one process, nothing to tell anyone (SQLite).

Every process also receives its own hints; the receiver drops them by node id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Final

__all__ = ["MAX_HINT", "Bus", "PostgresBus", "RedisBus", "open_bus"]

log = logging.getLogger("sddsf.relay")

#: Largest hint in bytes (PostgreSQL refuses NOTIFY payloads of 8000 bytes or more).
MAX_HINT: Final = 7000
CHANNEL: Final = "sddsf_relay_bus"
_RETRY_S: Final = (0.1, 0.25, 0.5, 1.0, 2.0)
_KEEPALIVE_S: Final = 5.0

Deliver = Callable[[str], None]
Reconnected = Callable[[], Awaitable[None]]


class Bus(ABC):
    """Broadcast text hints to every process (this one included)."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._reconnected: Reconnected | None = None
        self._task: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=10_000)
        self._closed = False
        #: Whether the bus is connected now (``/readyz`` reports it).
        self.up = False

    async def start(self, deliver: Deliver, reconnected: Reconnected) -> None:
        """Start receiving: ``deliver(text)`` per hint; ``reconnected()`` after every
        (re)connection but the first, when hints may have been missed."""
        self._deliver, self._reconnected = deliver, reconnected
        self._task = asyncio.create_task(self._run(), name=f"sddsf-{type(self).__name__}")

    def send(self, text: str) -> None:
        """Queue a hint for every process (dropped with a warning if the queue is full)."""
        if len(text.encode()) > MAX_HINT:
            raise ValueError(f"bus hint of {len(text)} characters is too long")
        try:
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("cluster bus: outbox full, a hint was dropped (receivers catch up)")

    async def close(self) -> None:
        """Stop the bus (idempotent)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._disconnect()

    async def _run(self) -> None:
        attempt, first = 0, True
        while not self._closed:
            try:
                await self._connect()
                self.up, attempt = True, 0
                if not first and self._reconnected is not None:
                    await self._reconnected()
                first = False
                await self._pump()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.up or attempt == 0:
                    log.warning("cluster bus (%s): %s: %s; reconnecting", type(self).__name__,
                                type(exc).__name__, exc)
            self.up = False
            await self._disconnect()
            await asyncio.sleep(_RETRY_S[min(attempt, len(_RETRY_S) - 1)])
            attempt += 1

    async def _pump(self) -> None:
        """Send queued hints (several per round trip) until the connection fails;
        an idle connection is probed every few seconds."""
        while True:
            try:
                first = await asyncio.wait_for(self._outbox.get(), _KEEPALIVE_S)
            except TimeoutError:
                await self._probe()
                continue
            batch = [first]
            while not self._outbox.empty() and len(batch) < 256:
                batch.append(self._outbox.get_nowait())
            await self._publish(batch)

    def _received(self, text: str) -> None:
        if self._deliver is not None:
            try:
                self._deliver(text)
            except Exception:  # a bad hint must not stop the bus
                log.exception("cluster bus: could not handle a hint")

    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def _disconnect(self) -> None: ...

    @abstractmethod
    async def _publish(self, batch: list[str]) -> None: ...

    @abstractmethod
    async def _probe(self) -> None: ...


class PostgresBus(Bus):
    """``LISTEN``/``NOTIFY`` on a dedicated connection (not one of the pool's)."""

    def __init__(self, dsn: str, *, timeout_s: float = 5.0) -> None:
        super().__init__()
        self.dsn, self.timeout_s = dsn, timeout_s
        self._conn: Any = None
        self._lost: asyncio.Event = asyncio.Event()

    async def _connect(self) -> None:
        import asyncpg  # noqa: PLC0415 - the postgres extra

        self._lost = asyncio.Event()
        self._conn = await asyncpg.connect(self.dsn, timeout=self.timeout_s,
                                           command_timeout=self.timeout_s,
                                           server_settings={"application_name": "sddsf-bus"})
        self._conn.add_termination_listener(lambda _c: self._lost.set())
        await self._conn.add_listener(CHANNEL, lambda _c, _pid, _ch, text: self._received(text))

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _publish(self, batch: list[str]) -> None:
        if self._lost.is_set():
            raise ConnectionError("the bus connection was closed")
        await self._conn.execute("SELECT pg_notify($1, t) FROM unnest($2::text[]) "
                                 "WITH ORDINALITY AS u(t, i) ORDER BY i", CHANNEL, batch)

    async def _probe(self) -> None:
        if self._lost.is_set():
            raise ConnectionError("the bus connection was closed")
        await self._conn.fetchval("SELECT 1")


class RedisBus(Bus):
    """Redis pub/sub: one subscribed connection, publishes through a second."""

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        super().__init__()
        self.url, self.timeout_s = url, timeout_s
        self._client: Any = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def _connect(self) -> None:
        import redis.asyncio as aioredis  # noqa: PLC0415 - the redis extra

        self._client = aioredis.Redis.from_url(self.url, socket_connect_timeout=self.timeout_s,
                                               socket_timeout=self.timeout_s,
                                               health_check_interval=0)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await asyncio.wait_for(self._pubsub.subscribe(CHANNEL), self.timeout_s)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                data = message["data"]
                self._received(data.decode() if isinstance(data, bytes) else str(data))

    async def _disconnect(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        for closing in (pubsub, client):
            if closing is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closing.aclose(), self.timeout_s)

    def _check_reader(self) -> None:
        reader = self._reader
        if reader is None or reader.done():
            error = reader.exception() if reader is not None and not reader.cancelled() else None
            raise ConnectionError(f"the bus subscription ended ({error})")

    async def _publish(self, batch: list[str]) -> None:
        self._check_reader()
        async with self._client.pipeline(transaction=False) as pipe:
            for text in batch:
                pipe.publish(CHANNEL, text)
            await asyncio.wait_for(pipe.execute(), self.timeout_s)

    async def _probe(self) -> None:
        self._check_reader()
        await asyncio.wait_for(self._client.ping(), self.timeout_s)


def open_bus(db: str, redis_url: str) -> Bus | None:
    """The bus for a deployment: Redis pub/sub with ``redis_url``, else PostgreSQL
    ``LISTEN``/``NOTIFY`` for a PostgreSQL database, else none (SQLite: one process)."""
    if redis_url:
        return RedisBus(redis_url)
    if db.startswith(("postgresql://", "postgres://")):
        return PostgresBus(db)
    return None
