"""Relay backups of logs that hold membership entries (schema 12).

A backup carries each leaf's kind and the stored member sets; a restore gives
the same rows (SQLite and PostgreSQL, either way). The prune watermark applies
to ops only: an entry below it keeps its bytes through an incremental chain. A
backup written before schema 12 (``ops`` rows without ``kind``) restores with
every leaf an op, and its chain continues.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from backupkit import dump

from sddsf.crypto import Ed25519SigningKey
from sddsf.relay.backup import create
from sddsf.relay.backup.dbio import Snapshot
from sddsf.relay.backup.restore import read_manifest, restore_backup
from sddsf.relay.backup.store import open_store
from sddsf.relay.backup.tables import OLDER_COLUMNS, TABLE_BY_NAME, Table
from sddsf.relay.storage.base import LeafKind, RelayStorage
from sddsf.relay.storage.migrations import LATEST_VERSION
from sddsf.relay.storage.sqlite import SqliteStorage
from sddsf.testing.storage_conformance import NOW, chain, make_entry, new_space, rid


class Relay:
    """One space written through the storage API: op batches and membership entries."""

    def __init__(self, storage: RelayStorage, space: bytes) -> None:
        self.storage = storage
        self.space = space
        self.author = rid(32)
        self.seq = 1
        self.head = bytes(32)

    async def ops(self, count: int) -> None:
        await self.storage.append_ops(self.space, chain(self.author, self.seq, count), NOW)
        self.seq += count

    async def entry(self, *members: bytes) -> int:
        entry, eh = make_entry()
        out = await self.storage.append_membership(
            self.space, entry, eh, NOW, expected_head=self.head,
            members={m: "writer" for m in members})
        self.head = eh
        return out.offset


async def _relay(path: Path) -> Relay:
    storage = SqliteStorage(str(path))
    await storage.open()
    return Relay(storage, await new_space(storage))


def _kinds(rows: dict[str, list[tuple[Any, ...]]]) -> list[int]:
    """The ``kind`` of each ops row of a dump (its last column), by offset."""
    return [int(r[-1]) for r in sorted(rows["ops"], key=lambda r: int(r[1]))]


async def test_entries_and_members_survive_an_incremental_chain(tmp_path: Path) -> None:
    key = Ed25519SigningKey.from_seed(os.urandom(32))
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    store = open_store(str(tmp_path / "bk"))
    relay = await _relay(tmp_path / "relay.db")
    try:
        await relay.ops(3)
        first = await relay.entry(rid(32), rid(32))
        await relay.ops(4)
        await create.create_backup(url, store, key)
        # The relay prunes every op the first backup copied; the entry stays.
        second = await relay.entry(rid(32))
        await relay.ops(2)
        assert await relay.storage.prune_ops(relay.space, second + 1) == 7
        report = await create.create_backup(url, store, key)
        assert (report.parent, report.ops) == (1, 3)
        source = await dump(url)
    finally:
        await relay.storage.close()
    assert sorted(int(o) for _, o, _ in source["op_envelopes"]) == [first, second, 9, 10]
    assert _kinds(source) == [1 if o in (first, second) else 0 for o in range(11)]
    assert len(source["space_members"]) == 1
    restored = f"sqlite:///{tmp_path / 'restored.db'}"
    await restore_backup(store, restored, relay_key=key.public)
    assert await dump(restored) == source
    storage = SqliteStorage(str(tmp_path / "restored.db"))
    await storage.open()
    try:
        assert [o for o, _ in await storage.membership_entries(relay.space)] == [first, second]
    finally:
        await storage.close()


async def test_a_backup_crosses_backends_with_its_entries(tmp_path: Path) -> None:
    """SQLite -> backup -> PostgreSQL -> backup -> SQLite: the same rows each time."""
    from livekit import fresh_postgres_database

    key = Ed25519SigningKey.from_seed(os.urandom(32))
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    relay = await _relay(tmp_path / "relay.db")
    try:
        await relay.ops(2)
        await relay.entry(rid(32))
        await relay.ops(3)
        await relay.entry(rid(32), rid(32), rid(32))
        await relay.storage.prune_ops(relay.space, 4)
        source = await dump(url)
    finally:
        await relay.storage.close()
    await create.create_backup(url, open_store(str(tmp_path / "bk1")), key)
    async with fresh_postgres_database() as pg:
        await restore_backup(open_store(str(tmp_path / "bk1")), pg, relay_key=key.public)
        assert await dump(pg) == source
        await create.create_backup(pg, open_store(str(tmp_path / "bk2")), key)
    back = f"sqlite:///{tmp_path / 'back.db'}"
    await restore_backup(open_store(str(tmp_path / "bk2")), back, relay_key=key.public)
    assert await dump(back) == source


async def test_a_backup_without_kinds_restores_as_ops_and_its_chain_continues(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519SigningKey.from_seed(os.urandom(32))
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    store = open_store(str(tmp_path / "bk"))
    relay = await _relay(tmp_path / "relay.db")
    ops = TABLE_BY_NAME["ops"]
    older = Table("ops", tuple(c for c in ops.columns if c.name in OLDER_COLUMNS["ops"][0]),
                  ops.order_by, ops.incremental, source=ops.source)
    real_check = create._check_database

    async def check(snap: Snapshot) -> None:
        with monkeypatch.context() as m:
            m.setattr(create, "LATEST_VERSION", LATEST_VERSION)
            await real_check(snap)
    try:
        await relay.ops(6)
        assert await relay.storage.prune_ops(relay.space, 2) == 2
        with monkeypatch.context() as m:  # what a schema-11 relay wrote
            m.setattr(create, "_OPS", older)
            m.setattr(create, "LATEST_VERSION", 11)
            m.setattr(create, "_check_database", check)
            await create.create_backup(url, store, key, full=True)
        assert (await read_manifest(store, 1)).schema == 11
        first = await dump(url)
        await restore_backup(store, f"sqlite:///{tmp_path / 'one.db'}", relay_key=key.public)
        assert await dump(f"sqlite:///{tmp_path / 'one.db'}") == first
        # The relay goes on at schema 12: an entry, more ops, a prune past the entry.
        offset = await relay.entry(rid(32))
        await relay.ops(2)
        await relay.storage.prune_ops(relay.space, 8)
        report = await create.create_backup(url, store, key)
        assert (report.number, report.parent, report.ops) == (2, 1, 3)
        second = await dump(url)
    finally:
        await relay.storage.close()
    assert _kinds(second)[offset] == LeafKind.MEMBERSHIP
    await restore_backup(store, f"sqlite:///{tmp_path / 'two.db'}", relay_key=key.public)
    assert await dump(f"sqlite:///{tmp_path / 'two.db'}") == second
