"""Relay backup and restore: sizes and times (results go to docs/operations.md 5.6).

Builds a relay database (SQLite, or a scratch PostgreSQL database that is
dropped afterwards) with ``--spaces`` spaces and ``--ops`` signed ops in all,
uploaded through the relay app over real storage; then, with the real command
line (``python -m sddsf``; each run includes the interpreter start):

1. a full backup to a directory, unencrypted and encrypted to an operator key;
2. ``--more`` further ops, then an incremental backup (only the new ops);
3. a restore of the latest backup into a new database (its own checks, with
   and without the full fsck that follows by default), and ``restore --check``.

Reports the database size (SQLite: the file after a checkpoint; PostgreSQL:
``pg_total_relation_size`` of the relay tables), the bytes each backup wrote
and the wall time of each command.

Usage:
    python bench/relay_backup.py [--ops 10000] [--more 1000] [--spaces 4]
        [--db postgresql://postgres@127.0.0.1/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "relay"))
sys.path.insert(0, str(ROOT / "src"))

import httpx
from relaykit import World, make_app, seed

from sddsf.client.relay_client import RelayClient
from sddsf.relay.backup.tables import TABLES
from sddsf.relay.storage import open_storage

BATCH = 500


async def fill(url: str, spaces: int, ops: int, worlds: list[World] | None = None) -> list[World]:
    """Upload ``ops`` ops spread over ``spaces`` spaces (one account each)."""
    storage = open_storage(url)
    await storage.open()
    app = make_app(storage, lambda: time.time_ns() // 1_000_000, rate_ip_per_s=1e9,
                   rate_ip_burst=1e9, rate_device_per_s=1e9, rate_device_burst=1e9,
                   rate_account_per_s=1e9, rate_account_burst=1e9, rate_ops_per_s=1e9,
                   rate_ops_burst=1e9)
    try:
        fresh = worlds is None
        worlds = worlds or [World() for _ in range(spaces)]
        for i, world in enumerate(worlds):
            client = RelayClient("http://relay.test", device=world.devices[0],
                                 account_id=world.account.account_id,
                                 transport=httpx.ASGITransport(app=app), timeout_s=60)
            async with client:
                if fresh:
                    await client.create_account(world.entries[0])
                    await client.create_space(world.space, world.key_package())
                share = ops // len(worlds) + (1 if i < ops % len(worlds) else 0)
                envs = [world.op(0, text=seed("payload", j) * 4).raw for j in range(share)]
                for k in range(0, len(envs), BATCH):
                    await client.upload(world.space, envs[k:k + BATCH], proofs=False)
    finally:
        await storage.close()
    return worlds


def sddsf(*args: str) -> tuple[float, dict[str, Any] | None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDDSF_RELAY_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sddsf", *args], env=env, capture_output=True,
                         text=True, check=False)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"sddsf {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    try:
        return elapsed, json.loads(out.stdout)
    except json.JSONDecodeError:
        return elapsed, None


async def db_bytes(url: str) -> int:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        return os.path.getsize(path)
    import asyncpg  # noqa: PLC0415 - only for PostgreSQL runs

    conn = await asyncpg.connect(url)
    try:
        names = [t.name for t in TABLES] + ["merkle_nodes"]
        return int(await conn.fetchval(
            "SELECT sum(pg_total_relation_size(quote_ident(n))) FROM unnest($1::text[]) n",
            names))
    finally:
        await conn.close()


async def scratch_pg(base: str) -> tuple[str, str]:
    import asyncpg  # noqa: PLC0415 - only for PostgreSQL runs

    name = f"sddsf_bench_backup_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return urlunsplit(urlsplit(base)._replace(path=f"/{name}")), name


async def drop_pg(base: str, name: str) -> None:
    import asyncpg  # noqa: PLC0415 - only for PostgreSQL runs

    admin = await asyncpg.connect(base)
    try:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=10_000)
    ap.add_argument("--more", type=int, default=1_000)
    ap.add_argument("--spaces", type=int, default=4)
    ap.add_argument("--db", help="PostgreSQL server URL (default: SQLite in a temp dir)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sddsf-bench-backup-"))
    key = work / "relay.key"
    key.write_text(seed("relay", 1).hex() + "\n")
    made: list[str] = []
    if args.db:
        src, name = await scratch_pg(args.db)
        made.append(name)
        dst, name = await scratch_pg(args.db)
        made.append(name)
        bare, name = await scratch_pg(args.db)
        made.append(name)
    else:
        src, dst = f"sqlite:///{work / 'relay.db'}", f"sqlite:///{work / 'restored.db'}"
        bare = f"sqlite:///{work / 'restored-no-fsck.db'}"
    try:
        t0 = time.perf_counter()
        worlds = await fill(src, args.spaces, args.ops)
        results: dict[str, Any] = {"ops": args.ops, "spaces": args.spaces,
                                   "backend": "postgresql" if args.db else "sqlite",
                                   "fill_s": round(time.perf_counter() - t0, 2),
                                   "db_bytes": await db_bytes(src)}
        sddsf("relay", "backup-keygen", str(work / "op.key"))
        for label, extra in (("plain", []), ("encrypted", ["--encrypt-to",
                                                           str(work / "op.key.pub")])):
            s, report = sddsf("relay", "backup", "--db", src, "--to", str(work / label),
                              "--key-file", str(key), "--json", *extra)
            assert report is not None
            results[f"full_{label}"] = {"s": round(s, 2), "bytes": report["bytes_written"],
                                        "pieces": report["pieces_written"]}
        await fill(src, args.spaces, args.more, worlds)
        s, report = sddsf("relay", "backup", "--db", src, "--to", str(work / "encrypted"),
                          "--key-file", str(key), "--json", "--encrypt-to",
                          str(work / "op.key.pub"))
        assert report is not None
        results["incremental_encrypted"] = {
            "s": round(s, 2), "new_ops": report["ops"], "bytes": report["bytes_written"],
            "pieces_written": report["pieces_written"], "pieces_reused": report["pieces_reused"]}
        results["db_bytes_after"] = await db_bytes(src)
        results["backup_dir_bytes"] = dir_bytes(work / "encrypted")
        s, _ = sddsf("relay", "restore", "--from", str(work / "encrypted"), "--db", dst,
                     "--key-file", str(key), "--decrypt-key", str(work / "op.key"))
        results["restore_with_fsck_s"] = round(s, 2)
        s, _ = sddsf("relay", "restore", "--from", str(work / "encrypted"), "--db", bare,
                     "--key-file", str(key), "--decrypt-key", str(work / "op.key"), "--no-fsck")
        results["restore_without_fsck_s"] = round(s, 2)
        s, _ = sddsf("relay", "restore", "--from", str(work / "encrypted"), "--check",
                     "--key-file", str(key), "--decrypt-key", str(work / "op.key"))
        results["check_s"] = round(s, 2)
        print(json.dumps(results, indent=2))
    finally:
        for name in made:
            await drop_pg(args.db, name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
