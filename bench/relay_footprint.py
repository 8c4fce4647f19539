"""What the relay's op log costs on disk under prune-then-append cycles, on
SQLite and PostgreSQL (results go to docs/performance.md).

Each cycle appends ``--append`` ops of ``--envelope`` random bytes (batches of
100, one author) through the storage API, then prunes every envelope but the
last ``--keep``, as the relay does under a corroborated snapshot. After each
cycle it prints the live envelope bytes and what the log's tables take:

* SQLite: the database file after a WAL checkpoint, and its free pages;
* PostgreSQL: ``pg_total_relation_size`` (heap, TOAST, indexes) of ``ops``,
  ``op_envelopes`` and ``merkle_nodes``; once as written, once after a plain
  ``VACUUM`` of those tables (what autovacuum does between prunes on a live
  relay: dead rows become reusable space; it does not shrink the files).

With ``--rate`` it measures the write path instead: 20 appends of 1,000 ops
(prebuilt, one author, fresh database), best of 5 runs, in ops/s and CPU µs
per op of this process; then one prune of the first half of the log, in ms;
then two reads of the whole log in pages of 1,000 (pulls), in µs per op.

Usage:
    python bench/relay_footprint.py [--cycles 5] [--append 400] [--keep 100]
        [--envelope 1864] [--postgres postgresql://postgres@127.0.0.1:5432/test]
    python bench/relay_footprint.py --rate [--envelope 1864] [--postgres DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import asyncpg

from sddsf.relay.storage.base import RelayStorage
from sddsf.relay.storage.postgres import PostgresStorage
from sddsf.relay.storage.sqlite import SqliteStorage
from sddsf.testing.storage_conformance import NOW, make_op, new_space, rid

LOG_TABLES = ("ops", "op_envelopes", "merkle_nodes")


async def cycles(storage: RelayStorage, args: argparse.Namespace,
                 measure: Any) -> list[dict[str, Any]]:
    space = await new_space(storage)
    author, seq, out = rid(), 1, []
    base = await measure()
    for n in range(1, args.cycles + 1):
        for first in range(seq, seq + args.append, 100):
            batch = range(first, min(first + 100, seq + args.append))
            await storage.append_ops(space, [make_op(author, s, size=args.envelope)
                                             for s in batch], NOW)
        seq += args.append
        await storage.prune_ops(space, seq - 1 - args.keep)
        ops = seq - 1
        row = {"cycle": n, "ops": ops, "live_envelope_bytes": args.keep * args.envelope}
        for key, value in (await measure()).items():
            row[key] = value - base.get(key, 0) if key.endswith("bytes") else value
        row["bytes_per_op"] = row["log_bytes"] / ops
        row["ratio_to_live_envelopes"] = row["log_bytes"] / row["live_envelope_bytes"]
        out.append(row)
    return out


async def sqlite_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "relay.db"
        storage = SqliteStorage(str(db))
        await storage.open()

        async def measure() -> dict[str, int]:
            with sqlite3.connect(db) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                free = conn.execute("PRAGMA freelist_count").fetchone()[0]
                page = conn.execute("PRAGMA page_size").fetchone()[0]
            return {"log_bytes": db.stat().st_size, "free_bytes": free * page}
        try:
            return await cycles(storage, args, measure)
        finally:
            await storage.close()


async def postgres_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    schema = f"sddsf_footprint_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(args.postgres)
    storage = PostgresStorage(args.postgres, schema=schema)
    await storage.open()

    async def size() -> int:
        return int(await conn.fetchval(
            "SELECT sum(pg_total_relation_size(format('%I.%I', $1::text, t)))::bigint "
            "FROM unnest($2::text[]) AS t", schema, list(LOG_TABLES)))

    async def measure() -> dict[str, int]:
        written = await size()
        for table in LOG_TABLES:
            await conn.execute(f'VACUUM "{schema}".{table}')
        tables = {f"{t}_bytes": int(await conn.fetchval(
            "SELECT pg_total_relation_size(format('%I.%I', $1::text, $2::text))", schema, t))
            for t in LOG_TABLES}
        return {"log_bytes_as_written": written, "log_bytes": await size(), **tables}
    try:
        return await cycles(storage, args, measure)
    finally:
        await storage.close()
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


@asynccontextmanager
async def fresh(backend: str, dsn: str | None) -> AsyncIterator[RelayStorage]:
    """An opened storage on a new, empty database (a temporary file or schema)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            storage: RelayStorage = SqliteStorage(f"{tmp}/relay.db")
            await storage.open()
            try:
                yield storage
            finally:
                await storage.close()
        return
    schema = f"sddsf_rate_{uuid.uuid4().hex[:12]}"
    storage = PostgresStorage(str(dsn), schema=schema)
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


async def rate(backend: str, args: argparse.Namespace) -> dict[str, float]:
    """Best-of-5 append rate and CPU per op, and the time of one prune."""
    runs: list[tuple[float, float, float]] = []
    for _ in range(5):
        async with fresh(backend, args.postgres) as storage:
            space, author = await new_space(storage), rid()
            batches = [[make_op(author, s, size=args.envelope)
                        for s in range(b * 1000 + 1, b * 1000 + 1001)] for b in range(20)]
            cpu, wall = time.process_time(), time.perf_counter()
            for batch in batches:
                await storage.append_ops(space, batch, NOW)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            prune = time.perf_counter()
            await storage.prune_ops(space, 10_000)
            prune = time.perf_counter() - prune
            reads = []
            for _ in range(2):  # the first read after a prune also meets its dead rows
                read, after = time.perf_counter(), -1
                while page := await storage.read_ops(space, after, 1000):
                    after = page[-1].offset
                reads.append((time.perf_counter() - read) / 20_000)
            runs.append((20_000 / wall, cpu / 20_000 * 1e6, prune, *reads))
    return {"ops_per_s": max(r[0] for r in runs), "cpu_us_per_op": min(r[1] for r in runs),
            "prune_10000_ms": min(r[2] for r in runs) * 1000,
            "first_read_us_per_op": min(r[3] for r in runs) * 1e6,
            "read_us_per_op": min(r[4] for r in runs) * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--append", type=int, default=400)
    ap.add_argument("--keep", type=int, default=100)
    ap.add_argument("--envelope", type=int, default=1864, help="bytes (the trace's mean)")
    ap.add_argument("--postgres", default=None, help="a DSN: also measure PostgreSQL")
    ap.add_argument("--rate", action="store_true", help="measure the write path instead")
    args = ap.parse_args()
    backends = ["sqlite", "postgres"] if args.postgres else ["sqlite"]
    report: dict[str, Any]
    if args.rate:
        report = {b: asyncio.run(rate(b, args)) for b in backends}
    else:
        runs = {"sqlite": sqlite_run, "postgres": postgres_run}
        report = {b: asyncio.run(runs[b](args)) for b in backends}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
