"""fsck of the controller's audit log tables (docs/operations.md, "Checking a database").

A real account on an in-process relay over SQLite writes its audit log (the
account, a second device, sessions and signed posture reports). The clean
database has no finding; each hand edit of the ``audit_log`` and
``audit_heads`` rows adds exactly its own code.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from client.clientkit import sqlite_relay
from sddsf.protocol.audit import decode_entry
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.merkle import leaf_hash
from sddsf.relay.fsck import fsck


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    async with sqlite_relay(tmp_path) as relay:
        laptop, _ = await relay.new_account(tmp_path / "laptop")
        phone = await relay.add(laptop, tmp_path / "phone", "phone")
        await laptop.sync()
        await phone.sync()
        for dev in (laptop, phone):
            await dev.close()
    return tmp_path / "relay.db"


def rows(path: Path) -> list[tuple[bytes, int, bytes]]:
    with sqlite3.connect(path) as conn:
        return [(bytes(a), int(s), bytes(e)) for a, s, e in conn.execute(
            "SELECT account_id, seq, entry FROM audit_log ORDER BY account_id, seq")]


def sql(path: Path, statement: str, *args: object) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(statement, args)
    finally:
        conn.close()


def put_entry(path: Path, account: bytes, seq: int, entry: bytes) -> None:
    # A rewritten entry with a matching leaf: only the entry check can tell.
    sql(path, "UPDATE audit_log SET entry = ?, leaf_hash = ? WHERE account_id = ? AND seq = ?",
        entry, leaf_hash(entry), account, seq)


def with_report_flipped(raw: bytes) -> bytes:
    value: Any = decode(raw)
    report = bytearray(value["report"])
    report[-1] ^= 1  # the last byte of the device's signature
    value["report"] = bytes(report)
    return encode(value)


async def codes(path: Path) -> list[str]:
    return sorted(f.code.value for f in (await fsck(f"sqlite:///{path}")).findings)


async def test_a_clean_audit_log_has_no_finding(db: Path) -> None:
    report = await fsck(f"sqlite:///{db}")
    assert report.ok, [str(f) for f in report.findings]
    assert report.audit_entries == len(rows(db)) > 3


def _middle(path: Path) -> tuple[bytes, int, bytes]:
    found = rows(path)
    return found[len(found) // 2]


def _reported(path: Path) -> tuple[bytes, int, bytes]:
    return next(r for r in rows(path) if decode_entry(r[2]).report)


TAMPER: dict[str, Callable[[Path], None]] = {
    "audit_gap": lambda p: sql(p, "DELETE FROM audit_log WHERE account_id = ? AND seq = ?",
                               *_middle(p)[:2]),
    "audit_leaf_mismatch": lambda p: sql(
        p, "UPDATE audit_log SET leaf_hash = ? WHERE account_id = ? AND seq = ?",
        bytes(32), *_middle(p)[:2]),
    "audit_entry_invalid": lambda p: put_entry(p, *_middle(p)[:2], b"\xa0"),
    "audit_size_mismatch": lambda p: sql(p, "UPDATE audit_heads SET size = size + 1"),
}


@pytest.mark.parametrize("code", sorted(TAMPER))
async def test_each_edit_of_the_audit_tables_is_found(db: Path, code: str) -> None:
    TAMPER[code](db)
    assert await codes(db) == [code]


async def test_a_device_report_whose_signature_fails_is_found(db: Path) -> None:
    account, seq, raw = _reported(db)
    put_entry(db, account, seq, with_report_flipped(raw))
    report = await fsck(f"sqlite:///{db}")
    (finding,) = report.findings
    assert (finding.code.value, finding.account, finding.offset) == (
        "audit_entry_invalid", account, seq)


async def test_another_accounts_entry_is_found(db: Path) -> None:
    accounts = sorted({a for a, _, _ in rows(db)})
    assert len(accounts) == 1  # one account here: make up the other one
    account, seq, raw = _middle(db)
    value: Any = decode(raw)
    value["account"] = bytes(32)
    put_entry(db, account, seq, encode(value))
    assert await codes(db) == ["audit_entry_invalid"]


async def test_the_postgresql_reader_checks_the_audit_log_too(postgres_schema: Any,
                                                              tmp_path: Path) -> None:
    import asyncpg
    from relaykit import Clock

    from client.clientkit import InProcessRelay
    from sddsf.relay.storage.postgres import PostgresStorage

    pg = postgres_schema
    storage = PostgresStorage(pg.dsn, schema=pg.name)
    await storage.open()
    try:
        relay = InProcessRelay(storage, Clock(time.time_ns() // 1_000_000))
        laptop, _ = await relay.new_account(tmp_path / "laptop")
        await laptop.sync()
        await laptop.close()
    finally:
        await storage.close()
    report = await fsck(pg.dsn, schema=pg.name)
    assert report.ok and report.audit_entries > 1, [str(f) for f in report.findings]
    conn = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.name})
    try:
        await conn.execute("DELETE FROM audit_log WHERE seq = 1")
        await conn.execute("UPDATE audit_heads SET size = size + 5")
    finally:
        await conn.close()
    report = await fsck(pg.dsn, schema=pg.name)
    assert sorted(f.code.value for f in report.findings) == ["audit_gap", "audit_size_mismatch"]


async def test_entries_without_their_counter_row_are_found(db: Path) -> None:
    sql(db, "DELETE FROM audit_heads")
    report = await fsck(f"sqlite:///{db}")
    assert [f.code.value for f in report.findings] == ["audit_size_mismatch"]
    assert "without a counter row" in report.findings[0].message
