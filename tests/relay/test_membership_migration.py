"""Migration 12 (membership entries in the space log) on a database that the
previous relay (schema 11) filled: every old leaf reads as an op, nothing else
changes, and the upgraded log takes membership entries after its ops.

The schema-11 database is built with the migrations up to 11 and filled with
that schema's own statements (``ops`` without ``kind``, envelopes in
``op_envelopes``, some pruned) from a real append plan (:func:`plan_append`:
real leaf hashes, Merkle nodes, roots and frontiers). A migration that fails
half-way must leave the schema-11 database as it was (one transaction).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sddsf.errors import SddsfError
from sddsf.protocol import merkle
from sddsf.relay.storage import migrations
from sddsf.relay.storage._common import plan_append
from sddsf.relay.storage.base import AppendStatus, LeafKind, RelayStorage, StoredOp
from sddsf.relay.storage.sqlite import SqliteStorage
from sddsf.testing.storage_conformance import NOW, make_entry, make_op, rid, verify_log

OLD = 11
PRUNED = 9  # the first space's envelopes below this offset were pruned
Sql = Callable[[str, Sequence[object]], Awaitable[list[tuple[Any, ...]]]]


@dataclass
class OldDatabase:
    """A schema-11 database: raw SQL on it (``?`` placeholders), and a new storage."""

    sql: Sql
    storage: Callable[[], RelayStorage]
    pg: bool


@pytest.fixture
async def sqlite_old(tmp_path: Path) -> AsyncIterator[OldDatabase]:
    path = str(tmp_path / "relay.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    assert migrations.apply_sqlite(conn, up_to=OLD) == OLD

    async def sqlite_sql(statement: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in conn.execute(statement, tuple(args)).fetchall()]
    try:
        yield OldDatabase(sqlite_sql, lambda: SqliteStorage(path), pg=False)
    finally:
        conn.close()


@pytest.fixture
async def postgres_old(postgres_schema: Any) -> AsyncIterator[OldDatabase]:
    import asyncpg

    from sddsf.relay.storage.postgres import PostgresStorage

    schema = postgres_schema
    conn = await asyncpg.connect(schema.dsn)
    await conn.execute(f'CREATE SCHEMA "{schema.name}"')
    await conn.execute(f'SET search_path = "{schema.name}"')
    assert await migrations.apply_postgres(conn, up_to=OLD) == OLD

    async def pg_sql(statement: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
        parts = statement.split("?")
        numbered = parts[0] + "".join(f"${n}{p}" for n, p in enumerate(parts[1:], 1))
        return [tuple(r) for r in await conn.fetch(numbered, *args)]
    try:
        yield OldDatabase(pg_sql, lambda: PostgresStorage(schema.dsn, schema=schema.name),
                          pg=True)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def old_db(request: pytest.FixtureRequest) -> OldDatabase:
    """A schema-11 database of each backend."""
    db: OldDatabase = request.getfixturevalue(f"{request.param}_old")
    return db


async def fill(db: OldDatabase) -> dict[bytes, list[StoredOp]]:
    """Two spaces of one account, two authors, batches of several sizes, written
    with schema 11's statements; the first space pruned below :data:`PRUNED`.
    Returns what each space's log must read back as."""
    account = rid()
    await db.sql("INSERT INTO registry_entries (account_id, seq, entry, stored_ms) "
                 "VALUES (?, 0, ?, ?)", [account, b"genesis", NOW])
    logs: dict[bytes, list[StoredOp]] = {}
    for n_space in range(2):
        space = rid()
        await db.sql("INSERT INTO spaces (space_id, account_id, created_ms, root) "
                     "VALUES (?, ?, ?, ?)", [space, account, NOW, merkle.EMPTY_ROOT])
        authors, seqs = [rid(), rid()], [1, 1]
        log: list[StoredOp] = []
        for batch in range(5):
            ops = []
            for i in range(batch + 2):
                a = (i + batch) % 2
                ops.append(make_op(authors[a], seqs[a], size=200 + 50 * i))
                seqs[a] += 1
            size, frontier = (await db.sql("SELECT size, frontier FROM spaces WHERE "
                                           "space_id = ?", [space]))[0]
            heads = {op.author: op.seq - 1 for op in reversed(ops)}
            plan = plan_append(int(size), bytes(frontier), heads, {}, ops)
            for offset, op_id, author, seq, deps, leaf, envelope in plan.op_rows:
                await db.sql("INSERT INTO ops (space_id, log_offset, op_id, author, seq, deps, "
                             "leaf_hash, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             [space, offset, op_id, author, seq, deps, leaf, NOW + batch])
                await db.sql("INSERT INTO op_envelopes (space_id, log_offset, envelope) "
                             "VALUES (?, ?, ?)", [space, offset, envelope])
            for node in plan.node_rows:
                await db.sql("INSERT INTO merkle_nodes (space_id, level, idx, hash) "
                             "VALUES (?, ?, ?, ?)", [space, *node])
            await db.sql("UPDATE spaces SET size = ?, root = ?, frontier = ? WHERE "
                         "space_id = ?", [plan.size, plan.root, plan.frontier, space])
            log += [StoredOp(len(log) + k, op.op_id, op.author, op.seq, op.leaf_hash,
                             op.envelope, NOW + batch) for k, op in enumerate(ops)]
        if n_space == 0:
            await db.sql("DELETE FROM op_envelopes WHERE space_id = ? AND log_offset < ?",
                         [space, PRUNED])
            log = [StoredOp(o.offset, o.op_id, o.author, o.seq, o.leaf_hash,
                            None if o.offset < PRUNED else o.envelope, o.received_ms)
                   for o in log]
        logs[space] = log
    return logs


def _norm(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(bytes(v) if isinstance(v, memoryview | bytearray) else v for v in r)
                  for r in rows)


async def raw_rows(db: OldDatabase) -> dict[str, list[tuple[Any, ...]]]:
    """Schema 11's rows, which the migration must not touch."""
    return {
        "ops": _norm(await db.sql("SELECT space_id, log_offset, op_id, author, seq, deps, "
                                  "leaf_hash, received_ms FROM ops", [])),
        "op_envelopes": _norm(await db.sql("SELECT * FROM op_envelopes", [])),
        "merkle_nodes": _norm(await db.sql("SELECT * FROM merkle_nodes", [])),
        "spaces": _norm(await db.sql("SELECT * FROM spaces", [])),
    }


async def test_old_leaves_become_ops_and_the_log_takes_entries(old_db: OldDatabase) -> None:
    db = old_db
    logs = await fill(db)
    before = await raw_rows(db)
    storage = db.storage()
    await storage.open()
    try:
        assert await storage.schema_version() == migrations.LATEST_VERSION == OLD + 1
        assert await raw_rows(db) == before
        assert await db.sql("SELECT DISTINCT kind FROM ops", []) == [(0,)]
        for space, log in logs.items():
            read = await storage.read_ops(space, -1, 1000)
            assert read == log and all(o.kind is LeafKind.OP for o in read)
            assert await storage.membership_entries(space) == []
            assert await storage.space_members(space) == {}
            await verify_log(storage, space)
        # The upgraded log goes on: an entry between op batches, then a prune.
        space, log = next(iter(logs.items()))
        last = log[-1]
        entry, eh = make_entry()
        out = await storage.append_membership(space, entry, eh, NOW, expected_head=bytes(32),
                                              members={rid(32): "admin"})
        assert (out.status, out.offset) == (AppendStatus.ACCEPTED, len(log))
        more = await storage.append_ops(space, [make_op(last.author, last.seq + 1)], NOW)
        assert [o.offset for o in more] == [len(log) + 1]
        assert await storage.prune_ops(space, len(log) + 2) == len(log) + 1 - PRUNED
        assert await storage.membership_entries(space) == [(len(log), entry)]
        record = await storage.get_space(space)
        assert record is not None and await storage.shared_spaces(record.account_id) == []
        await verify_log(storage, space)
        with pytest.raises(Exception, match=r"(?i)check"):
            await db.sql("UPDATE ops SET kind = 2 WHERE log_offset = 0", [])
    finally:
        await storage.close()


async def test_a_migration_that_fails_half_way_leaves_schema_11_intact(
        old_db: OldDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    db = old_db
    name = "POSTGRES_MIGRATIONS" if db.pg else "SQLITE_MIGRATIONS"
    real: tuple[migrations.Migration, ...] = getattr(migrations, name)
    twelve = real[OLD]
    broken = migrations.Migration(twelve.version, twelve.description,
                                  (*twelve.sql, "INSERT INTO no_such_table VALUES (1)"))
    logs = await fill(db)
    before = await raw_rows(db)
    monkeypatch.setattr(migrations, name, (*real[:OLD], broken))
    storage = db.storage()
    with pytest.raises(SddsfError):
        await storage.open()
    await storage.close()
    assert (await db.sql("SELECT max(version) FROM schema_migrations", []))[0][0] == OLD
    assert await raw_rows(db) == before
    for missing in ("SELECT kind FROM ops", "SELECT 1 FROM space_members"):
        with pytest.raises(Exception, match=r"kind|space_members"):
            await db.sql(missing, [])
    monkeypatch.setattr(migrations, name, real)
    storage = db.storage()
    await storage.open()
    try:
        for space, log in logs.items():
            assert await storage.read_ops(space, -1, 1000) == log
    finally:
        await storage.close()
