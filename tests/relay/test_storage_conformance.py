"""The storage conformance suite on both backends, plus backend-specific checks
that need internals (fault injection, pragmas, lock timeouts, pool settings)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sddsf.crypto import sha256
from sddsf.errors import ConfigError, SddsfError, UnavailableError, UsageError
from sddsf.protocol import merkle
from sddsf.relay.storage import (
    SqliteStorage,
    StorageUnavailable,
    default_sqlite_url,
    migrations,
    open_storage,
)
from sddsf.relay.storage._sql import READABLE_SPACES, sqlite_statement
from sddsf.relay.storage.base import RelayStorage
from sddsf.testing.storage_conformance import (
    CHECKS,
    NOW,
    Check,
    Harness,
    chain,
    make_op,
    new_space,
    rid,
    verify_log,
)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
async def test_conformance(storage_harness: Harness, check: Check) -> None:
    await check(storage_harness)


async def assert_untouched(storage: RelayStorage, space: bytes, size: int) -> None:
    """Nothing of a failed batch is visible: size, rows and log are as before."""
    record = await storage.get_space(space)
    assert record is not None and record.size == size
    assert len(await storage.read_ops(space, -1, 10_000)) == size
    await verify_log(storage, space)


async def assert_appends_resume(storage: RelayStorage, space: bytes, size: int) -> None:
    """After a failure the next append continues gap-free at ``size``."""
    out = await storage.append_ops(space, chain(rid(), 1, 3), NOW)
    assert [o.offset for o in out] == [size, size + 1, size + 2]
    await verify_log(storage, space)


# ------------------------------------------------------------------- SQLite
@pytest.fixture
async def sqlite_storage(tmp_path: Path) -> Any:
    storage = SqliteStorage(str(tmp_path / "nested" / "dir" / "relay.db"))
    await storage.open()
    yield storage
    await storage.close()


async def test_sqlite_pragmas_and_one_worker_thread(sqlite_storage: SqliteStorage) -> None:
    pragmas = await sqlite_storage._run(lambda c: [
        c.execute(f"PRAGMA {p}").fetchone()[0]
        for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")])
    assert pragmas == ["wal", 2, 1, 5000]  # synchronous 2 = FULL
    idents = await asyncio.gather(*(sqlite_storage._run(lambda c: threading.get_ident())
                                    for _ in range(20)))
    assert len(set(idents)) == 1 and idents[0] != threading.get_ident()


async def test_sqlite_fault_mid_statement_rolls_back_whole_batch(
        sqlite_storage: SqliteStorage) -> None:
    """THREATS #20: a statement failing half-way (FAIL keeps its earlier rows in
    the transaction) must leave nothing of the batch: offsets, nodes, counter."""
    s = sqlite_storage
    space = await new_space(s)
    await s.append_ops(space, chain(rid(), 1, 5), NOW)
    await s._run(lambda c: c.execute(
        "CREATE TEMP TRIGGER fail_at_9 BEFORE INSERT ON main.ops WHEN NEW.log_offset = 9 "
        "BEGIN SELECT RAISE(FAIL, 'injected fault'); END"))
    with pytest.raises(SddsfError, match="injected fault"):
        await s.append_ops(space, chain(rid(), 1, 10), NOW)
    await assert_untouched(s, space, 5)
    await s._run(lambda c: c.execute("DROP TRIGGER temp.fail_at_9"))
    await assert_appends_resume(s, space, 5)


async def test_sqlite_io_error_after_rows_rolls_back(sqlite_storage: SqliteStorage,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """THREATS #20 (fault-injecting wrapper): an I/O error after the ops and the
    nodes were inserted but before the counter row is updated stores nothing."""
    s = sqlite_storage
    space = await new_space(s)
    await s.append_ops(space, chain(rid(), 1, 4), NOW)
    real = s._store_batch

    def failing(c: sqlite3.Connection, space_id: bytes, rows: Any, nodes: Any, head: Any,
                kind: Any) -> None:
        c.executemany("INSERT INTO ops (space_id, log_offset, op_id, author, seq, deps, "
                      "leaf_hash, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9)", rows)
        c.executemany("INSERT INTO op_envelopes (space_id, log_offset, envelope) "
                      "VALUES (?, ?, ?)", [(r[0], r[1], r[7]) for r in rows])
        c.executemany("INSERT INTO merkle_nodes (space_id, level, idx, hash) "
                      "VALUES (?, ?, ?, ?)", nodes)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(s, "_store_batch", failing)
    with pytest.raises(StorageUnavailable, match="could not write"):
        await s.append_ops(space, chain(rid(), 1, 7), NOW)
    monkeypatch.setattr(s, "_store_batch", real)
    await assert_untouched(s, space, 4)
    await assert_appends_resume(s, space, 4)


async def test_sqlite_locked_by_another_process_is_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "relay.db")
    storage = SqliteStorage(path, busy_timeout_ms=100)
    await storage.open()
    try:
        space = await new_space(storage)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageUnavailable, match="locked"):
                await storage.append_ops(space, chain(rid(), 1, 2), NOW)
        finally:
            other.execute("ROLLBACK")
            other.close()
        await assert_untouched(storage, space, 0)
        await assert_appends_resume(storage, space, 0)
    finally:
        await storage.close()


async def test_sqlite_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageUnavailable, match="directory"):
        await SqliteStorage(str(blocker / "relay.db")).open()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an sqlite database at all" * 100)
    with pytest.raises(StorageUnavailable, match="not a readable SQLite database"):
        await SqliteStorage(str(garbage)).open()
    with pytest.raises(SddsfError, match="not open"):
        await SqliteStorage(str(tmp_path / "x.db")).ping()


# --------------------------------------------------------------- PostgreSQL
async def _pg(pg: Any, **options: Any) -> Any:
    from sddsf.relay.storage.postgres import PostgresStorage

    storage = PostgresStorage(pg.dsn, schema=pg.name, **options)
    await storage.open()
    return storage


async def test_postgres_stalled_lock_holder_fails_fast(postgres_schema: Any) -> None:
    """THREATS #25: a writer holding the space row makes others fail within
    lock_timeout with an actionable error, and appends recover afterwards."""
    import asyncpg

    pg = postgres_schema
    storage = await _pg(pg, lock_timeout_ms=300)
    try:
        space = await new_space(storage)
        await storage.append_ops(space, chain(rid(), 1, 2), NOW)
        stalled = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.name})
        tx = stalled.transaction()
        await tx.start()
        await stalled.execute("SELECT 1 FROM spaces WHERE space_id = $1 FOR UPDATE", space)
        try:
            started = time.monotonic()
            with pytest.raises(UnavailableError, match="stalled writer; retry"):
                await storage.append_ops(space, chain(rid(), 1, 2), NOW)
            assert time.monotonic() - started < 2.0
            with pytest.raises(UnavailableError, match="stalled writer"):
                await storage.put_key_package(space, 0, b"p", NOW)
        finally:
            await tx.rollback()
            await stalled.close()
        await assert_untouched(storage, space, 2)
        await assert_appends_resume(storage, space, 2)
    finally:
        await storage.close()


async def test_postgres_fault_mid_batch_rolls_back(postgres_schema: Any) -> None:
    """THREATS #20: a failure inside the batch insert (after some rows) stores nothing."""
    pg = postgres_schema
    storage = await _pg(pg)
    try:
        space = await new_space(storage)
        await storage.append_ops(space, chain(rid(), 1, 5), NOW)
        await pg.sql("""
            CREATE FUNCTION fail_at_9() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.idx = 4 AND NEW.level = 1 THEN RAISE EXCEPTION 'injected fault'; END IF;
              RETURN NEW;
            END $$""")
        await pg.sql("CREATE TRIGGER fail_at_9 BEFORE INSERT ON merkle_nodes "
                                      "FOR EACH ROW EXECUTE FUNCTION fail_at_9()")
        with pytest.raises(UnavailableError, match="injected fault"):
            await storage.append_ops(space, chain(rid(), 1, 10), NOW)
        await assert_untouched(storage, space, 5)
        await pg.sql("DROP TRIGGER fail_at_9 ON merkle_nodes")
        await assert_appends_resume(storage, space, 5)
    finally:
        await storage.close()


async def test_postgres_session_settings_on_every_connection(
        postgres_schema: Any) -> None:
    """search_path, synchronous_commit and the timeouts hold on every pooled
    connection, also after the pool has reset them between uses."""
    pg = postgres_schema
    storage = await _pg(pg, max_size=3, lock_timeout_ms=1234)
    try:
        for _ in range(2):
            conns = [await storage._pool.acquire() for _ in range(3)]
            for conn in conns:
                row = await conn.fetchrow(
                    "SELECT current_setting('search_path'), "
                    "current_setting('synchronous_commit'), current_setting('lock_timeout'), "
                    "current_setting('statement_timeout')")
                assert tuple(row) == (f'"{pg.name}"', "on", "1234ms", "10s")
                await conn.execute("SET search_path = public")
            for conn in conns:
                await storage._pool.release(conn)
    finally:
        await storage.close()


async def test_postgres_unreachable_is_unavailable() -> None:
    from sddsf.relay.storage.postgres import PostgresStorage

    storage = PostgresStorage("postgresql://nobody:secret@127.0.0.1:1/none",
                              connect_timeout_s=2)
    with pytest.raises(StorageUnavailable, match="unavailable") as info:
        await storage.open()
    assert "secret" not in str(info.value)
    await storage.close()


# ----------------------------------------------------------- factory, schema
def test_open_storage_factory(tmp_path: Path) -> None:
    s = open_storage(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(s, SqliteStorage) and s.path == f"{tmp_path}/a.db"
    assert open_storage("sqlite:///relay.db").path == "relay.db"  # type: ignore[attr-defined]
    pg = open_storage("postgres://u@h/db", schema="s1", max_size=2)
    assert type(pg).__name__ == "PostgresStorage"
    assert open_storage("postgresql://u@h/db").dsn == "postgresql://u@h/db"  # type: ignore[attr-defined]
    for bad in ("mysql://x/y", "sqlite://relay.db", "relay.db", "sqlite:///", "sqlite:///:memory:"):
        with pytest.raises(ConfigError):
            open_storage(bad)
    with pytest.raises(ConfigError, match="option"):
        open_storage(f"sqlite:///{tmp_path}/a.db", pool_size=3)
    with pytest.raises(ConfigError):
        open_storage("postgresql://u@h/db", schema="bad-name; DROP")
    url = default_sqlite_url()
    assert url.startswith("sqlite:////") and url.endswith("/sddsf/relay.db")


def test_migration_lists_match_across_backends() -> None:
    assert [(m.version, m.description) for m in migrations.SQLITE_MIGRATIONS] == [
        (m.version, m.description) for m in migrations.POSTGRES_MIGRATIONS]
    assert len(migrations.SQLITE_MIGRATIONS) == migrations.LATEST_VERSION
    migrations.check_not_newer(migrations.LATEST_VERSION)
    with pytest.raises(ConfigError, match="upgrade the relay"):
        migrations.check_not_newer(migrations.LATEST_VERSION + 1)


# ------------------------------------------------------------- large batches
async def test_large_batches_append_and_recompute(storage_harness: Harness) -> None:
    """Three 1000-op batches (the relay's batch size): every op lands, the root
    recomputes. Speed is measured in bench/relay_ingest.py, not asserted here."""
    s = storage_harness.storage
    space = await new_space(s)
    authors = [rid() for _ in range(20)]
    for round_ in range(3):
        batch = [make_op(authors[i % 20], round_ * 50 + i // 20 + 1, 200) for i in range(1000)]
        outcomes = await s.append_ops(space, batch, NOW)
        assert [o.offset for o in outcomes] == list(range(round_ * 1000, round_ * 1000 + 1000))
    record = await s.get_space(space)
    assert record is not None and record.size == 3000
    assert record.root == merkle.root_of(await s.leaf_hashes(space, 0, 3000))


async def test_wrong_argument_types_are_usage_errors(storage: RelayStorage) -> None:
    """A caller's bug is a UsageError (HTTP 400), never a 503 or a driver exception."""
    with pytest.raises(UsageError):
        await storage.create_space(object(), b"acct", NOW)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        await storage.append_ops(rid(), [object()], NOW)  # type: ignore[list-item]


# ----------------------------------------------- the listing every request makes
#: 30,000 spaces of 10,000 accounts (3 each); every 10th is shared with another.
_MANY_SPACES = (
    "INSERT INTO spaces (space_id, account_id, created_ms, root) "
    "SELECT h(i), h(i / 3 + 1000000), i, h(0) FROM {series}")
_MANY_MEMBERS = (
    "INSERT INTO space_members (space_id, account_id, role) "
    "SELECT h(i), h(i / 3 + 1000007), 'reader' FROM {series} WHERE i % 10 = 0")
#: The account of spaces 321-323 (never shared), a member of space 300.
_READER = 1000107
_READABLE = (300, 321, 322, 323)


def _h(i: int) -> bytes:
    """The SQL function ``h`` of both tests: an id from a number."""
    return sha256(i.to_bytes(8, "big", signed=True))


def _assert_no_full_scan(plan: str) -> None:
    assert "Seq Scan on spaces" not in plan, plan  # PostgreSQL
    assert not re.search(r"\bSCAN (s|spaces)\b", plan), plan  # SQLite


async def test_readable_spaces_are_found_by_index_on_a_big_relay(tmp_path: Path) -> None:
    """The space listing (every first sync, every GET /v1/spaces) is two index
    searches, not a scan of every space on the relay."""
    path = tmp_path / "relay.db"
    storage = SqliteStorage(str(path))
    await storage.open()
    await storage.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.create_function("h", 1, _h, deterministic=True)
        series = ("(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                  "WHERE i < 30000) SELECT i FROM n)")
        for statement in (_MANY_SPACES, _MANY_MEMBERS):
            conn.execute(statement.format(series=series))
        conn.execute("ANALYZE")
        plan = " | ".join(str(r[3]) for r in conn.execute(
            "EXPLAIN QUERY PLAN " + sqlite_statement(READABLE_SPACES), (_h(_READER),)))
    _assert_no_full_scan(plan)
    await storage.open()
    try:
        got = [r.space_id for r in await storage.readable_spaces(_h(_READER))]
        assert got == [_h(i) for i in _READABLE]
    finally:
        await storage.close()


async def test_postgres_readable_spaces_are_found_by_index_on_a_big_relay(
        postgres_schema: Any) -> None:
    """As above on PostgreSQL, where the same listing written with OR scanned
    the whole table (200,000 spaces: 423 ms against 0.1 ms)."""
    pg = postgres_schema
    storage = await _pg(pg)
    try:
        await pg.sql("CREATE FUNCTION h(i bigint) RETURNS bytea LANGUAGE sql IMMUTABLE AS "
                     "$$ SELECT sha256(int8send(i)) $$")
        for statement in (_MANY_SPACES, _MANY_MEMBERS):
            await pg.sql(statement.format(series="generate_series(1, 30000) i"))
        await pg.sql("ANALYZE")
        literal = f"'\\x{_h(_READER).hex()}'::bytea"
        plan = "\n".join(str(r[0]) for r in await pg.sql(
            "EXPLAIN " + READABLE_SPACES.replace("$1", literal)))
        _assert_no_full_scan(plan)
        got = [r.space_id for r in await storage.readable_spaces(_h(_READER))]
        assert got == [_h(i) for i in _READABLE]
    finally:
        await storage.close()
