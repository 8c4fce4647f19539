"""fsck on logs that hold membership entries (schema 12).

The log: ops of one author with membership entries between them, every op
envelope pruned (the entries are kept). The account has no registry, so the
clean baseline is the one finding ``registry_missing``; each tampering adds
exactly its own code. Without the membership checks an entry would be replayed
as an op (``op_invalid``) and the kept entries amid pruned ops would read as a
broken prune prefix (``prune_not_prefix``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sddsf.relay.fsck import FsckCode, fsck, read_logs
from sddsf.relay.storage.base import RelayStorage
from sddsf.relay.storage.sqlite import SqliteStorage
from sddsf.testing.storage_conformance import NOW, chain, make_entry, rid

BASELINE = {"registry_missing"}


async def fill(storage: RelayStorage) -> tuple[bytes, list[int]]:
    """A space of 4 ops, an entry, 3 ops, an entry, 1 op; every op pruned.
    Returns the space and the entries' offsets."""
    space, author = rid(), rid(32)
    await storage.create_space(space, rid(32), NOW)
    head, offsets = bytes(32), []
    for first, count in ((1, 4), (5, 3)):
        await storage.append_ops(space, chain(author, first, count), NOW)
        entry, eh = make_entry()
        out = await storage.append_membership(space, entry, eh, NOW, expected_head=head,
                                              members={rid(32): "admin"})
        head = eh
        offsets.append(out.offset)
    await storage.append_ops(space, chain(author, 8, 1), NOW)
    assert await storage.prune_ops(space, 100) == 8
    return space, offsets


def codes(report: Any) -> set[str]:
    return {f.code.value for f in report.findings}


@pytest.fixture
async def db(tmp_path: Path) -> tuple[Path, list[int]]:
    path = tmp_path / "relay.db"
    storage = SqliteStorage(str(path))
    await storage.open()
    try:
        _, offsets = await fill(storage)
    finally:
        await storage.close()
    return path, offsets


def sql(path: Path, statement: str, *args: object) -> None:
    conn = sqlite3.connect(path, isolation_level=None)  # foreign keys off: a hand edit
    try:
        conn.execute(statement, args)
    finally:
        conn.close()


async def test_entries_amid_pruned_ops_are_clean(db: tuple[Path, list[int]]) -> None:
    path, offsets = db
    report = await fsck(f"sqlite:///{path}")
    assert codes(report) == BASELINE, [str(f) for f in report.findings]
    assert report.ops == 10
    [log] = await read_logs(f"sqlite:///{path}")
    assert [e.offset for e in log.entries if e.kind == 1] == offsets == [4, 8]


@pytest.mark.parametrize(("statement", "code"), [
    ("DELETE FROM op_envelopes WHERE log_offset = ?", FsckCode.MEMBERSHIP_PRUNED),
    ("UPDATE ops SET author = zeroblob(32) WHERE log_offset = ?", FsckCode.MEMBERSHIP_MISMATCH),
    ("UPDATE ops SET op_id = zeroblob(32) WHERE log_offset = ?", FsckCode.MEMBERSHIP_MISMATCH),
    ("UPDATE ops SET deps = x'80' WHERE log_offset = ?", FsckCode.MEMBERSHIP_MISMATCH),
    ("UPDATE ops SET leaf_hash = zeroblob(32) WHERE log_offset = ?", FsckCode.LEAF_MISMATCH),
])
async def test_each_membership_tampering_is_found(db: tuple[Path, list[int]], statement: str,
                                                  code: FsckCode) -> None:
    path, offsets = db
    sql(path, statement, offsets[1])
    report = await fsck(f"sqlite:///{path}")
    found = {(f.code, f.offset) for f in report.findings if f.code.value not in BASELINE}
    # a wrong leaf hash also breaks the root and the nodes above it
    assert (code, offsets[1]) in found and all(
        c in (code, FsckCode.ROOT_MISMATCH, FsckCode.NODE_MISMATCH, FsckCode.FRONTIER_MISMATCH)
        for c, _ in found), [str(f) for f in report.findings]
    if code is not FsckCode.LEAF_MISMATCH:
        assert found == {(code, offsets[1])}


async def test_changed_entry_bytes_no_longer_match_their_row(
        db: tuple[Path, list[int]]) -> None:
    path, offsets = db
    sql(path, "UPDATE op_envelopes SET envelope = x'00' || envelope WHERE log_offset = ?",
        offsets[0])
    report = await fsck(f"sqlite:///{path}")
    assert {(f.code, f.offset) for f in report.findings if f.code.value not in BASELINE} == {
        (FsckCode.LEAF_MISMATCH, offsets[0]), (FsckCode.MEMBERSHIP_MISMATCH, offsets[0])}


async def test_members_of_a_space_that_does_not_exist(db: tuple[Path, list[int]]) -> None:
    path, _ = db
    ghost = rid()
    sql(path, "INSERT INTO space_members (space_id, account_id, role) VALUES (?, ?, 'reader')",
        ghost, rid(32))
    report = await fsck(f"sqlite:///{path}")
    orphans = [f for f in report.findings if f.code is FsckCode.MEMBERS_ORPHAN]
    assert codes(report) == BASELINE | {"members_orphan"} and orphans[0].space == ghost


async def test_postgresql_reader_checks_entries_too(postgres_schema: Any) -> None:
    import asyncpg

    from sddsf.relay.storage.postgres import PostgresStorage

    pg = postgres_schema
    storage = PostgresStorage(pg.dsn, schema=pg.name)
    await storage.open()
    try:
        _, offsets = await fill(storage)
    finally:
        await storage.close()
    report = await fsck(pg.dsn, schema=pg.name)
    assert codes(report) == BASELINE, [str(f) for f in report.findings]
    conn = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.name})
    try:
        await conn.execute("UPDATE ops SET author = $1 WHERE log_offset = $2", bytes(32),
                           offsets[0])
        await conn.execute("SET session_replication_role = replica")  # no FK check
        await conn.execute("INSERT INTO space_members VALUES ($1, $2, 'writer')", rid(),
                           rid(32))
    finally:
        await conn.close()
    report = await fsck(pg.dsn, schema=pg.name)
    assert codes(report) == BASELINE | {"membership_mismatch", "members_orphan"}
