"""Migration 11 (envelopes in a table of their own) on a database that the
previous relay (schema 10) filled: nothing is lost, nothing changes.

The schema-10 database is built with the migrations up to 10 and filled with
that schema's own statements (an ``ops.envelope`` column, NULL once pruned),
from a real append plan (:func:`plan_append`: real leaf hashes, Merkle nodes,
roots and frontiers). After the upgrade, every op, pull page, proof and raw
row must be what it was; a migration that fails half-way must leave the
schema-10 database exactly as it was (one transaction).
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
from sddsf.relay.storage.base import OpToAppend, RelayStorage, StoredOp
from sddsf.relay.storage.sqlite import SqliteStorage
from sddsf.testing.storage_conformance import NOW, make_op, rid, verify_log

OLD = 10
Sql = Callable[[str, Sequence[object]], Awaitable[list[tuple[Any, ...]]]]


@dataclass
class OldDatabase:
    """A schema-10 database: raw SQL on it (``?`` placeholders), and a new storage."""

    sql: Sql
    storage: Callable[[], RelayStorage]
    pg: bool


@pytest.fixture
async def sqlite_old(tmp_path: Path) -> AsyncIterator[OldDatabase]:
    """An empty SQLite database at schema version 10, as the previous relay made it."""
    path = str(tmp_path / "relay.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size = 16384")
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
    """The same in a fresh PostgreSQL schema."""
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
    """A schema-10 database of each backend."""
    db: OldDatabase = request.getfixturevalue(f"{request.param}_old")
    return db


async def old_append(db: OldDatabase, space: bytes, ops: list[OpToAppend],
                     received_ms: int) -> None:
    """Append with schema 10's statements (what the previous relay wrote)."""
    size, frontier = (await db.sql("SELECT size, frontier FROM spaces WHERE space_id = ?",
                                   [space]))[0]
    heads: dict[bytes, int] = {}
    for author in {op.author for op in ops}:
        head = (await db.sql("SELECT max(seq) FROM ops WHERE space_id = ? AND author = ?",
                             [space, author]))[0][0]
        if head is not None:
            heads[author] = int(head)
    plan = plan_append(int(size), bytes(frontier), heads, {}, ops)
    for row in plan.op_rows:
        await db.sql("INSERT INTO ops (space_id, log_offset, op_id, author, seq, deps, "
                     "leaf_hash, envelope, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [space, *row, received_ms])
    for node in plan.node_rows:
        await db.sql("INSERT INTO merkle_nodes (space_id, level, idx, hash) "
                     "VALUES (?, ?, ?, ?)", [space, *node])
    await db.sql("UPDATE spaces SET size = ?, root = ?, frontier = ? WHERE space_id = ?",
                 [plan.size, plan.root, plan.frontier, space])


@dataclass
class Filled:
    spaces: dict[bytes, list[StoredOp]]  # what each space's log must read back as
    pruned: dict[bytes, int]


async def fill(db: OldDatabase) -> Filled:
    """Two spaces, three authors, batches of several sizes; the first space
    pruned below offset 23 (schema 10: envelopes set to NULL)."""
    account = rid()
    await db.sql("INSERT INTO registry_entries (account_id, seq, entry, stored_ms) "
                 "VALUES (?, 0, ?, ?)", [account, b"genesis", NOW])
    filled = Filled({}, {})
    for n_space in range(2):
        space = rid()
        await db.sql("INSERT INTO spaces (space_id, account_id, created_ms, root) "
                     "VALUES (?, ?, ?, ?)", [space, account, NOW, merkle.EMPTY_ROOT])
        authors, seqs = [rid(), rid(), rid()], [1, 1, 1]
        expected: list[StoredOp] = []
        for batch in range(7):
            ops = []
            for i in range(batch + 3):
                a = (i + batch) % 3
                ops.append(make_op(authors[a], seqs[a], size=300 + 997 * ((i * 7) % 5)))
                seqs[a] += 1
            received = NOW + 1000 * batch
            await old_append(db, space, ops, received)
            expected += [StoredOp(len(expected) + k, op.op_id, op.author, op.seq,
                                  op.leaf_hash, op.envelope, received)
                         for k, op in enumerate(ops)]
        filled.spaces[space] = expected
        if n_space == 0:
            await db.sql("UPDATE ops SET envelope = NULL WHERE space_id = ? AND "
                         "log_offset < ?", [space, 23])
            filled.pruned[space] = 23
    return filled


def expected_reads(filled: Filled, space: bytes) -> list[StoredOp]:
    below = filled.pruned.get(space, 0)
    return [StoredOp(o.offset, o.op_id, o.author, o.seq, o.leaf_hash,
                     None if o.offset < below else o.envelope, o.received_ms)
            for o in filled.spaces[space]]


async def raw_rows(db: OldDatabase) -> dict[str, list[tuple[Any, ...]]]:
    """The rows the migration must not touch (ops without the envelope column)."""
    def norm(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return sorted(tuple(bytes(v) if isinstance(v, memoryview | bytearray) else v
                            for v in r) for r in rows)
    return {
        "ops": norm(await db.sql("SELECT space_id, log_offset, op_id, author, seq, deps, "
                                 "leaf_hash, received_ms FROM ops", [])),
        "merkle_nodes": norm(await db.sql("SELECT * FROM merkle_nodes", [])),
        "spaces": norm(await db.sql("SELECT * FROM spaces", [])),
    }


async def check_reads(storage: RelayStorage, filled: Filled) -> None:
    """Pull pages, single-op reads, leaves and proofs are what schema 10 held."""
    for space, ops in filled.spaces.items():
        want = expected_reads(filled, space)
        assert await storage.read_ops(space, -1, 1000) == want
        pages: list[StoredOp] = []
        after = -1
        while page := await storage.read_ops(space, after, 4):
            pages += page
            after = page[-1].offset
        assert pages == want
        for op in want:
            assert await storage.op_by_author_seq(space, op.author, op.seq) == op
        record = await storage.get_space(space)
        assert record is not None and record.size == len(ops)
        assert record.root == merkle.root_of([o.leaf_hash for o in ops])
        # Inclusion and consistency proofs from the stored nodes, at every size.
        history = [(n, merkle.root_of([o.leaf_hash for o in ops[:n]]))
                   for n in range(0, len(ops), 5)]
        await verify_log(storage, space, history)


async def test_migration_moves_envelopes_and_changes_nothing_else(old_db: OldDatabase) -> None:
    db = old_db
    filled = await fill(db)
    before = await raw_rows(db)
    storage = db.storage()
    await storage.open()
    try:
        assert await storage.schema_version() == migrations.LATEST_VERSION
        assert await raw_rows(db) == before
        held = await db.sql("SELECT space_id, log_offset, envelope FROM op_envelopes", [])
        assert len(held) == sum(len(o) for o in filled.spaces.values()) - 23
        await check_reads(storage, filled)
        # The upgraded database goes on: appends, then a prune that deletes rows.
        space = next(iter(filled.spaces))
        last = filled.spaces[space][-1]
        more = [make_op(last.author, last.seq + k, size=2_000) for k in range(1, 6)]
        outcomes = await storage.append_ops(space, more, NOW + 9000)
        assert [o.offset for o in outcomes] == list(range(last.offset + 1,
                                                          last.offset + 6))
        assert await storage.prune_ops(space, last.offset + 3) == last.offset + 3 - 23
        tail = await storage.read_ops(space, last.offset, 10)
        assert [o.envelope for o in tail] == [None, None, *(op.envelope for op in more[2:])]
        await verify_log(storage, space)
    finally:
        await storage.close()


async def test_a_migration_that_fails_half_way_leaves_schema_10_intact(
        old_db: OldDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    # The copy ran, the column was dropped, then the next statement failed (a
    # crash at that point is the same: the transaction never commits).
    db = old_db
    name = "POSTGRES_MIGRATIONS" if db.pg else "SQLITE_MIGRATIONS"
    real: tuple[migrations.Migration, ...] = getattr(migrations, name)
    eleven = real[OLD]
    broken = migrations.Migration(eleven.version, eleven.description,
                                  (*eleven.sql, "INSERT INTO no_such_table VALUES (1)"))
    filled = await fill(db)
    before = await raw_rows(db)
    envelopes = await db.sql("SELECT space_id, log_offset, envelope FROM ops "
                             "ORDER BY space_id, log_offset", [])
    monkeypatch.setattr(migrations, name, (*real[:OLD], broken))
    storage = db.storage()
    with pytest.raises(SddsfError):
        await storage.open()
    await storage.close()
    assert (await db.sql("SELECT max(version) FROM schema_migrations", []))[0][0] == OLD
    assert await raw_rows(db) == before
    assert await db.sql("SELECT space_id, log_offset, envelope FROM ops "
                        "ORDER BY space_id, log_offset", []) == envelopes
    with pytest.raises(Exception, match="op_envelopes"):
        await db.sql("SELECT 1 FROM op_envelopes", [])
    monkeypatch.setattr(migrations, name, real)
    storage = db.storage()
    await storage.open()
    try:
        await check_reads(storage, filled)
    finally:
        await storage.close()

