"""Relay storage fixtures, shared by every relay test.

* ``storage_backend``: parametrized ``"sqlite"`` / ``"postgres"``.
* ``storage_harness``: an opened, empty storage of that backend wrapped in a
  :class:`~sddsf.testing.storage_conformance.Harness` (peers and raw SQL on the
  same database). SQLite lives in ``tmp_path``; PostgreSQL in a fresh random
  schema of ``SDDSF_TEST_POSTGRES_DSN``, dropped afterwards.
* ``storage``: just the opened storage.
* ``postgres_schema``: a :class:`PostgresSchema` (dsn, fresh schema name, ``sql()``)
  on a reachable PostgreSQL, dropped afterwards.

PostgreSQL unreachable: the test is skipped with the reason, or fails when
``SDDSF_REQUIRE_POSTGRES=1`` (CI sets it, so a missing server cannot pass silently).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sddsf.relay.storage.base import RelayStorage
from sddsf.relay.storage.sqlite import SqliteStorage
from sddsf.testing.storage_conformance import Harness

DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgres"]
_unreachable: dict[str, str | None] = {}


def postgres_dsn() -> str:
    """The PostgreSQL test server (``SDDSF_TEST_POSTGRES_DSN``)."""
    return os.environ.get("SDDSF_TEST_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)


async def require_postgres() -> str:
    """The DSN of a reachable server, else skip (or fail under SDDSF_REQUIRE_POSTGRES=1)."""
    dsn = postgres_dsn()
    if dsn not in _unreachable:
        try:
            import asyncpg

            conn = await asyncpg.connect(dsn, timeout=3)
            await conn.close()
            _unreachable[dsn] = None
        except Exception as exc:  # any failure means "not usable here"
            from sddsf.relay.storage.postgres import redact_dsn

            _unreachable[dsn] = (f"PostgreSQL at {redact_dsn(dsn)} is unreachable: "
                                 f"{type(exc).__name__}: {exc}")
    reason = _unreachable[dsn]
    if reason is not None:
        if os.environ.get("SDDSF_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (SDDSF_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    return dsn


async def pg_execute(dsn: str, schema: str | None, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection (optionally inside ``schema``)."""
    import asyncpg

    settings = {"search_path": f'"{schema}"'} if schema else {}
    conn = await asyncpg.connect(dsn, timeout=5, server_settings=settings)
    try:
        return [tuple(r) for r in await conn.fetch(statement)]
    finally:
        await conn.close()


@dataclass(frozen=True)
class PostgresSchema:
    """A fresh schema on the test server: where a test's tables live."""

    dsn: str
    name: str

    async def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run one statement inside the schema on its own connection."""
        return await pg_execute(self.dsn, self.name, statement)


@asynccontextmanager
async def postgres_test_schema() -> AsyncIterator[PostgresSchema]:
    """A fresh schema name, dropped with everything in it afterwards."""
    dsn = await require_postgres()
    schema = PostgresSchema(dsn, f"sddsf_test_{uuid.uuid4().hex[:12]}")
    try:
        yield schema
    finally:
        await pg_execute(dsn, None, f'DROP SCHEMA IF EXISTS "{schema.name}" CASCADE')


def _sqlite_sql(path: str, statement: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        return [tuple(r) for r in conn.execute(statement).fetchall()]
    finally:
        conn.close()


@asynccontextmanager
async def make_harness(backend: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """An opened, empty storage of ``backend`` and its peers; all closed afterwards."""
    made: list[RelayStorage] = []

    def track(storage: RelayStorage) -> RelayStorage:
        made.append(storage)
        return storage

    if backend == "sqlite":
        path = str(tmp_path / "db" / "relay.db")

        async def sqlite_sql(statement: str) -> list[tuple[Any, ...]]:
            return await asyncio.to_thread(_sqlite_sql, path, statement)

        storage = track(SqliteStorage(path))
        try:
            await storage.open()
            yield Harness(storage, lambda: track(SqliteStorage(path)), sqlite_sql)
        finally:
            for s in made:
                await s.close()
        return
    from sddsf.relay.storage.postgres import PostgresStorage

    async with postgres_test_schema() as pg:
        storage = track(PostgresStorage(pg.dsn, schema=pg.name))
        try:
            await storage.open()
            yield Harness(storage, lambda: track(PostgresStorage(pg.dsn, schema=pg.name)),
                          pg.sql)
        finally:
            for s in made:
                await s.close()


@pytest.fixture(params=BACKENDS)
def storage_backend(request: pytest.FixtureRequest) -> str:
    """The backend name, once per backend."""
    return str(request.param)


@pytest.fixture
async def storage_harness(storage_backend: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """An opened, empty storage of each backend, with peers and raw SQL."""
    async with make_harness(storage_backend, tmp_path) as harness:
        yield harness


@pytest.fixture
async def storage(storage_harness: Harness) -> RelayStorage:
    """An opened, empty storage of each backend."""
    return storage_harness.storage


@pytest.fixture
async def postgres_schema() -> AsyncIterator[PostgresSchema]:
    """A fresh schema on the test server (skips without PostgreSQL), dropped afterwards."""
    async with postgres_test_schema() as schema:
        yield schema
