"""Backups across migration 11 (envelopes in a table of their own).

A backup's ``ops`` rows carry the envelope column at schema 10 and 11 alike
(the backup reads it from ``op_envelopes`` now), so a backup written by a
schema-10 relay restores at schema 11 and an incremental backup continues its
chain. A schema-10 backup is simulated by the only thing that differs: the
version its signed manifest names.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from backupkit import dump

from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import ConfigError
from sddsf.relay.backup import create
from sddsf.relay.backup.dbio import Snapshot
from sddsf.relay.backup.restore import read_manifest, restore_backup
from sddsf.relay.backup.store import open_store
from sddsf.relay.storage.migrations import LATEST_VERSION
from sddsf.relay.storage.sqlite import SqliteStorage
from sddsf.testing.storage_conformance import NOW, make_op, new_space, rid


async def _relay(path: Path) -> tuple[SqliteStorage, bytes, bytes]:
    storage = SqliteStorage(str(path))
    await storage.open()
    space, author = await new_space(storage), rid()
    await storage.append_ops(space, [make_op(author, s, size=900) for s in range(1, 11)], NOW)
    assert await storage.prune_ops(space, 4) == 4
    return storage, space, author


async def _as_of_version(monkeypatch: pytest.MonkeyPatch, version: int, url: str,
                         store_dir: Path, key: Ed25519SigningKey) -> None:
    """A full backup whose manifest names ``version`` (what an older relay wrote)."""
    real_check = create._check_database

    async def check(snap: Snapshot) -> None:
        with monkeypatch.context() as m:
            m.setattr(create, "LATEST_VERSION", LATEST_VERSION)
            await real_check(snap)
    with monkeypatch.context() as m:
        m.setattr(create, "LATEST_VERSION", version)
        m.setattr(create, "_check_database", check)
        await create.create_backup(url, open_store(str(store_dir)), key, full=True)


async def test_a_schema_10_backup_restores_and_its_chain_continues(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519SigningKey.from_seed(os.urandom(32))
    db = tmp_path / "relay.db"
    url = f"sqlite:///{db}"
    storage, space, author = await _relay(db)
    try:
        await _as_of_version(monkeypatch, 10, url, tmp_path / "bk", key)
        store = open_store(str(tmp_path / "bk"))
        assert (await read_manifest(store, 1)).schema == 10
        first = await dump(url)
        await restore_backup(store, f"sqlite:///{tmp_path / 'one.db'}", relay_key=key.public)
        assert await dump(f"sqlite:///{tmp_path / 'one.db'}") == first
        # The relay goes on at the current schema; the next backup extends the schema-10 one.
        await storage.append_ops(space, [make_op(author, s, size=900) for s in range(11, 14)],
                                 NOW)
        await storage.prune_ops(space, 8)
        report = await create.create_backup(url, store, key)
        assert (report.number, report.parent, report.ops) == (2, 1, 3)
        second = await dump(url)
    finally:
        await storage.close()
    assert len(second["op_envelopes"]) == 13 - 8
    await restore_backup(store, f"sqlite:///{tmp_path / 'two.db'}", relay_key=key.public)
    assert await dump(f"sqlite:///{tmp_path / 'two.db'}") == second


async def test_a_backup_of_schema_9_is_refused(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519SigningKey.from_seed(os.urandom(32))
    db = tmp_path / "relay.db"
    storage, _, _ = await _relay(db)
    await storage.close()
    await _as_of_version(monkeypatch, 9, f"sqlite:///{db}", tmp_path / "bk", key)
    with pytest.raises(ConfigError, match="schema version 9"):
        await restore_backup(open_store(str(tmp_path / "bk")),
                             f"sqlite:///{tmp_path / 'restored.db'}", relay_key=key.public)
