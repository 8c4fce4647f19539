"""Raw database access for relay backups: one consistent read snapshot of a live
relay database, and the writer that fills a new one in one transaction.

The SQL lives here, not in the storage backends (like ``sddsf relay fsck``):
the backup copies rows, it does not go through the code whose data it saves.

* Reading: SQLite opens one deferred read transaction (in WAL mode a reader
  sees the database as of its first read and never blocks the relay's
  writers); PostgreSQL runs one ``REPEATABLE READ READ ONLY`` transaction.
  Everything a backup copies comes from that one snapshot, so the op logs,
  the space rows (sizes, roots) and every other table agree with each other
  while the relay keeps running.
* Writing: the restore target is migrated to the current schema, must hold no
  rows, and is filled in one transaction (a failed restore leaves it empty).
"""

from __future__ import annotations

import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

from sddsf.errors import ConfigError, SddsfError, UnavailableError
from sddsf.relay.backup.tables import DERIVED_TABLES, TABLES
from sddsf.relay.storage.base import require_backend_url
from sddsf.relay.storage.migrations import apply_postgres, apply_sqlite

__all__ = ["RestoreTarget", "Snapshot", "open_snapshot", "open_target"]

_BATCH: Final = 1000


def _sqlite_path(url: str) -> str:
    path = unquote(url[len("sqlite:///"):].split("?", 1)[0])
    if not path:
        raise ConfigError("the SQLite URL has no path: use sqlite:///PATH")
    return path


class Snapshot(ABC):
    """One read-only, consistent snapshot of a relay database. SQL uses ``?``."""

    #: "sqlite" or "postgresql".
    source: str

    @abstractmethod
    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """All rows of one query."""

    @abstractmethod
    def stream(self, sql: str, *args: object) -> AsyncIterator[list[tuple[Any, ...]]]:
        """The rows of one query in batches (memory stays bounded)."""

    @abstractmethod
    async def columns(self) -> dict[str, list[str]]:
        """Every table and its columns."""

    async def schema_version(self) -> int:
        """The applied schema version.

        Raises:
            ConfigError: not a relay database.
        """
        try:
            rows = await self.fetch("SELECT coalesce(max(version), 0) FROM schema_migrations")
        except SddsfError:
            raise ConfigError("this database has no relay schema (no schema_migrations "
                              "table): is --db the relay's database?") from None
        return int(rows[0][0])


class _SqliteSnapshot(Snapshot):
    source = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise UnavailableError(f"SQLite read failed: {exc}") from exc

    async def stream(self, sql: str, *args: object) -> AsyncIterator[list[tuple[Any, ...]]]:
        try:
            cur = self._conn.execute(sql, args)
            while batch := cur.fetchmany(_BATCH):
                yield batch
        except sqlite3.Error as exc:
            raise UnavailableError(f"SQLite read failed: {exc}") from exc

    async def columns(self) -> dict[str, list[str]]:
        names = await self.fetch("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                                 "name NOT LIKE 'sqlite_%'")
        out = {}
        for (raw,) in names:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            info = await self.fetch(f'PRAGMA table_info("{name}")')
            out[name] = [c[1].decode() if isinstance(c[1], bytes) else str(c[1]) for c in info]
        return out


class _PostgresSnapshot(Snapshot):
    source = "postgresql"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @staticmethod
    def _numbered(sql: str) -> str:
        parts = sql.split("?")
        return parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], start=1))

    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        import asyncpg  # noqa: PLC0415 - the optional driver

        try:
            return [tuple(r) for r in await self._conn.fetch(self._numbered(sql), *args)]
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise UnavailableError(f"PostgreSQL read failed: {exc}") from exc

    async def stream(self, sql: str, *args: object) -> AsyncIterator[list[tuple[Any, ...]]]:
        import asyncpg  # noqa: PLC0415

        try:
            batch: list[tuple[Any, ...]] = []
            async for record in self._conn.cursor(self._numbered(sql), *args, prefetch=_BATCH):
                batch.append(tuple(record))
                if len(batch) >= _BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise UnavailableError(f"PostgreSQL read failed: {exc}") from exc

    async def columns(self) -> dict[str, list[str]]:
        rows = await self.fetch("SELECT table_name, column_name FROM information_schema.columns "
                                "WHERE table_schema = current_schema() "
                                "ORDER BY table_name, ordinal_position")
        out: dict[str, list[str]] = {}
        for table, column in rows:
            out.setdefault(str(table), []).append(str(column))
        return out


@asynccontextmanager
async def open_snapshot(url: str, schema: str | None = None) -> AsyncIterator[Snapshot]:
    """One consistent, read-only snapshot of a relay database (safe while it runs).

    Raises:
        ConfigError: unsupported URL, missing SQLite file.
        UnavailableError: the database cannot be opened.
    """
    require_backend_url(url)
    if url.startswith("sqlite:///"):
        path = _sqlite_path(url)
        if not os.path.isfile(path):
            raise ConfigError(f"no SQLite database at {path!r}; pass the relay's --db URL")
        try:
            # mode=rw never creates a file; query_only forbids writes; the deferred
            # transaction takes its snapshot at the first read and keeps it.
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None)
            conn.text_factory = bytes
            conn.execute("PRAGMA query_only = ON")
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise UnavailableError(f"cannot open the SQLite database {path!r}: {exc}") from exc
        try:
            yield _SqliteSnapshot(conn)
        finally:
            conn.close()
        return
    conn = await _pg_connect(url, schema, "sddsf-backup")
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            yield _PostgresSnapshot(conn)
    finally:
        await conn.close()


async def _pg_connect(url: str, schema: str | None, name: str) -> Any:
    try:
        import asyncpg  # noqa: PLC0415 - the optional driver
    except ImportError as exc:
        raise ConfigError("PostgreSQL needs asyncpg: pip install 'sddsf[postgres]'") from exc
    from sddsf.relay.storage._common import validate_sql_identifier  # noqa: PLC0415
    from sddsf.relay.storage.postgres import redact_dsn  # noqa: PLC0415

    settings = {"application_name": name}
    if schema is not None:
        settings["search_path"] = f'"{validate_sql_identifier(schema, "PostgreSQL schema")}"'
    try:
        return await asyncpg.connect(url, timeout=10, server_settings=settings)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError,
            ValueError) as exc:
        raise UnavailableError(f"cannot connect to {redact_dsn(url)}: {exc}") from exc


# ----------------------------------------------------------------------- writing


class RestoreTarget(ABC):
    """A new relay database being filled inside one open transaction."""

    @abstractmethod
    async def insert(self, table: str, columns: Sequence[str],
                     rows: Sequence[Sequence[object]]) -> None:
        """Insert rows (values already of the column kinds)."""

    @abstractmethod
    async def execute(self, sql: str, *args: object) -> None:
        """One statement (``?`` placeholders)."""

    @abstractmethod
    async def finish_identity(self, table: str, column: str) -> None:
        """Let the table's identity column continue after the restored ids."""

    async def _check_empty(self, fetch: Any) -> None:
        for name in ([t.name for t in TABLES] + sorted(DERIVED_TABLES - {"schema_migrations"})
                     + ["op_envelopes"]):
            if await fetch(f"SELECT 1 FROM {name} LIMIT 1"):  # noqa: S608 - fixed names
                raise ConfigError(f"the target database is not empty (table {name} has rows): "
                                  "restore into a new database (or an empty one)")


class _SqliteTarget(RestoreTarget):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def insert(self, table: str, columns: Sequence[str],
                     rows: Sequence[Sequence[object]]) -> None:
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise UnavailableError(f"SQLite insert into {table} failed: {exc}") from exc

    async def execute(self, sql: str, *args: object) -> None:
        try:
            self.conn.execute(sql, args)
        except sqlite3.Error as exc:
            raise UnavailableError(f"SQLite statement failed: {exc}") from exc

    async def finish_identity(self, table: str, column: str) -> None:
        """SQLite's INTEGER PRIMARY KEY continues after max(rowid) by itself."""


class _PostgresTarget(RestoreTarget):
    def __init__(self, conn: Any, schema: str | None) -> None:
        self.conn = conn
        self.schema = schema

    async def insert(self, table: str, columns: Sequence[str],
                     rows: Sequence[Sequence[object]]) -> None:
        import asyncpg  # noqa: PLC0415

        try:
            # COPY accepts explicit values for GENERATED ALWAYS identity columns.
            await self.conn.copy_records_to_table(table, records=rows, columns=list(columns),
                                                  schema_name=self.schema)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise UnavailableError(f"PostgreSQL copy into {table} failed: {exc}") from exc

    async def execute(self, sql: str, *args: object) -> None:
        import asyncpg  # noqa: PLC0415

        try:
            await self.conn.execute(_PostgresSnapshot._numbered(sql), *args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise UnavailableError(f"PostgreSQL statement failed: {exc}") from exc

    async def finish_identity(self, table: str, column: str) -> None:
        # Fixed table and column names from TABLES (never input).
        sql = (f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "  # noqa: S608
               f"coalesce(max({column}), 0) + 1, false) FROM {table}")
        await self.execute(sql)


@asynccontextmanager
async def open_target(url: str, schema: str | None = None) -> AsyncIterator[RestoreTarget]:
    """A new relay database, migrated, checked empty, inside one transaction that
    commits when the block ends normally and rolls back otherwise.

    Raises:
        ConfigError: unsupported URL, or a database that already holds rows.
        UnavailableError: it cannot be opened or written.
    """
    require_backend_url(url)
    if url.startswith("sqlite:///"):
        async with _sqlite_target(_sqlite_path(url)) as target:
            yield target
        return
    conn = await _pg_connect(url, schema, "sddsf-restore")
    try:
        await apply_postgres(conn)
        target = _PostgresTarget(conn, schema)

        async def fetch(sql: str) -> list[Any]:
            return list(await conn.fetch(sql))

        async with conn.transaction():
            await target._check_empty(fetch)
            yield target
    except SddsfError:
        raise
    except Exception as exc:
        import asyncpg  # noqa: PLC0415

        if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
            raise UnavailableError(f"PostgreSQL restore failed: {exc}") from exc
        raise
    finally:
        await conn.close()


@asynccontextmanager
async def _sqlite_target(path: str) -> AsyncIterator[RestoreTarget]:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise UnavailableError(f"cannot create the SQLite database {path!r}: {exc}") from exc
    try:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            apply_sqlite(conn)
        except sqlite3.Error as exc:
            raise UnavailableError(f"cannot prepare {path!r}: {exc}") from exc
        target = _SqliteTarget(conn)

        async def fetch(sql: str) -> list[Any]:
            return conn.execute(sql).fetchall()

        conn.execute("BEGIN IMMEDIATE")
        try:
            await target._check_empty(fetch)
            yield target
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise UnavailableError(f"SQLite commit failed: {exc}") from exc
    finally:
        conn.close()
