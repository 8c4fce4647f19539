"""``sddsf relay backup`` / ``restore`` / ``fsck --heads`` through the real command line.

Every database here is written by real devices (pycrdt documents, real crypto,
encrypted device stores) through a relay app over real SQLite or PostgreSQL
storage, while the backup runs as a separate ``sddsf`` process reading the
same database. A restore is compared row by row with its source, and checked
with ``sddsf relay fsck --heads`` (every log against the backup's signed heads).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from backupkit import (
    S3_ENV,
    MotoS3,
    dump,
    files_of,
    key_file,
    moto_s3,
    sddsf,
    workload,
)

from sddsf.crypto import Ed25519SigningKey
from sddsf.relay.backup.tables import TABLES, check_columns


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def backup_json(db: str, to: str, key: Path, *extra: str,
                env: dict[str, str] | None = None) -> dict[str, object]:
    out = sddsf("relay", "backup", "--db", db, "--to", to, "--key-file", str(key), "--json",
                *extra, env=env)
    report = json.loads(out.stdout)
    assert isinstance(report, dict)
    return report


def restore(location: str, db: str, key: Path, *extra: str, env: dict[str, str] | None = None,
            check: bool = True) -> tuple[int, str, str]:
    out = sddsf("relay", "restore", "--from", location, "--db", db, "--key-file", str(key),
                *extra, env=env, check=check)
    return out.returncode, out.stdout, out.stderr


def fsck_heads(db: str, heads: Path, key: Path) -> str:
    out = sddsf("relay", "fsck", "--db", db, "--heads", str(heads), "--key-file", str(key))
    return out.stdout + out.stderr


def copy_sqlite(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite database (its WAL included)."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


def table_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {t.name: conn.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0]  # noqa: S608
                for t in TABLES}
    finally:
        conn.close()


# ------------------------------------------------------------------ round trips


async def test_round_trip_sqlite_directory(tmp_path: Path) -> None:
    """backup (while the relay runs) -> restore -> fsck --heads; the restored
    database equals its source, Merkle nodes included (recomputed, not copied)."""
    src = sqlite_url(tmp_path / "relay.db")
    key = key_file(tmp_path)
    async with workload(tmp_path, src) as w:
        await w.snapshot_and_prune()
        await w.write(2)
        out = sddsf("relay", "backup", "--db", src, "--to", str(tmp_path / "bk"),
                    "--key-file", str(key))
        assert "backup 1 of" in out.stdout and "(full)" in out.stdout
        assert "NOT encrypted" in out.stderr and "device names" in out.stderr
        source = await dump(src)
    assert len(source["op_envelopes"]) < len(source["ops"]), "nothing was pruned"
    assert all(source[t] for t in ("registry_entries", "key_packages", "snapshots", "acks",
                                   "audit_log", "device_posture", "merkle_nodes"))
    dst = sqlite_url(tmp_path / "restored.db")
    code, stdout, _ = restore(str(tmp_path / "bk"), dst, key, "--heads-out",
                              str(tmp_path / "heads.json"))
    assert code == 0 and "signed heads verified" in stdout and "clean" in stdout
    assert await dump(dst) == source
    report = fsck_heads(dst, tmp_path / "heads.json", key)
    assert "checking" in report and ": clean" in report


async def test_incremental_backup_writes_only_what_changed(tmp_path: Path) -> None:
    src = sqlite_url(tmp_path / "relay.db")
    key = key_file(tmp_path)
    bk = str(tmp_path / "bk")
    async with workload(tmp_path, src) as w:
        first = backup_json(src, bk, key)
        await w.write(3)
        second = backup_json(src, bk, key)
        third = backup_json(src, bk, key)  # nothing changed
        await w.snapshot_and_prune()  # prunes ops the first backup copied
        fourth = backup_json(src, bk, key)
        source = await dump(src)
    assert (first["number"], first["parent"]) == (1, None)
    assert (second["number"], second["parent"]) == (2, 1)
    assert second["ops"] == 3 and first["ops"] == 6  # 1 + 1 (secret, phone) + 4 writes
    assert second["pieces_reused"] and second["bytes_written"] < first["bytes_written"]
    assert third["ops"] == 0 and third["audit_entries"] == 0
    # unchanged tables are referred to; the signed heads and the state are new
    assert third["pieces_reused"] >= 5 and third["bytes_written"] < second["bytes_written"]
    assert fourth["ops"] == 0 and fourth["pieces_written"] > third["pieces_written"]
    assert len(source["op_envelopes"]) < len(source["ops"]), "nothing was pruned"
    dst = sqlite_url(tmp_path / "restored.db")
    code, stdout, _ = restore(bk, dst, key)
    assert code == 0, stdout
    assert await dump(dst) == source  # pruned envelopes dropped again
    # restoring an older backup of the chain gives the older database
    old = sqlite_url(tmp_path / "old.db")
    assert restore(bk, old, key, "--backup", "2")[0] == 0
    assert table_counts(tmp_path / "old.db")["ops"] == 9


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """One S3-compatible server (moto_server, a subprocess) for this module."""
    with moto_s3(tmp_path_factory.mktemp("s3")) as server:
        yield server


async def test_round_trip_to_s3_and_postgresql(tmp_path: Path, s3: MotoS3) -> None:
    """PostgreSQL source -> S3-compatible server -> a new PostgreSQL database,
    and the same backup into SQLite (the format is backend-neutral)."""
    from livekit import fresh_postgres_database

    key = key_file(tmp_path)
    s3.bucket("relay-backups")
    env = {**S3_ENV, "AWS_ENDPOINT_URL_S3": s3.endpoint}  # the standard AWS setting
    location = "s3://relay-backups/prod/relay"
    async with fresh_postgres_database() as src:
        async with workload(tmp_path, src) as w:
            backup_json(src, location, key, env=env)
            await w.write(2)
            second = backup_json(src, location, key, env=env)
            source = await dump(src)
        assert second["parent"] == 1 and second["ops"] == 2
        keys = sorted(s3.objects("relay-backups"))
        assert keys and all(k.startswith("prod/relay/backup-00000") for k in keys)
        async with fresh_postgres_database() as dst:
            code, stdout, stderr = restore(location, dst, key, "--heads-out",
                                           str(tmp_path / "heads.json"), env=env)
            assert code == 0, stdout + stderr
            assert await dump(dst) == source
            assert ": clean" in fsck_heads(dst, tmp_path / "heads.json", key)
        lite = sqlite_url(tmp_path / "from-pg.db")
        code, stdout, stderr = restore(location, lite, key, "--s3-endpoint", s3.endpoint,
                                       env=S3_ENV)
        assert code == 0, stdout + stderr
        assert await dump(lite) == source


async def test_sqlite_to_s3_incremental_and_s3_errors(tmp_path: Path, s3: MotoS3) -> None:
    src = sqlite_url(tmp_path / "relay.db")
    key = key_file(tmp_path)
    s3.bucket("lite-backups")
    location = "s3://lite-backups"  # no prefix: the bucket's top level
    flag = ("--s3-endpoint", s3.endpoint)
    async with workload(tmp_path, src) as w:
        first = backup_json(src, location, key, *flag, env=S3_ENV)
        await w.write(2)
        second = backup_json(src, location, key, *flag, env=S3_ENV)
        source = await dump(src)
    assert second["ops"] == 2 and second["bytes_written"] < first["bytes_written"]
    stored = s3.objects("lite-backups")
    assert "backup-000002/manifest" in stored and "backup-000001/claim" in stored
    out = sddsf("relay", "restore", "--from", location, "--check", "--key-file", str(key),
                *flag, env=S3_ENV)
    assert "backup 2" in out.stdout and "checked" in out.stdout
    code, stdout, stderr = restore(location, sqlite_url(tmp_path / "r.db"), key, *flag,
                                   env=S3_ENV)
    assert code == 0, stdout + stderr
    assert await dump(sqlite_url(tmp_path / "r.db")) == source
    out = sddsf("relay", "backup", "--db", src, "--to", "s3://no-such-bucket/x", "--key-file",
                str(key), *flag, env=S3_ENV, check=False)
    assert out.returncode == 1 and "the bucket 'no-such-bucket' does not exist" in out.stderr
    out = sddsf("relay", "backup", "--db", src, "--to", location, "--key-file", str(key),
                *flag, env={**S3_ENV, "AWS_SECRET_ACCESS_KEY": ""}, check=False)
    assert out.returncode == 1 and "no S3 credentials" in out.stderr, out.stderr


async def test_backup_is_consistent_while_devices_keep_writing(tmp_path: Path) -> None:
    """The relay keeps accepting ops during the backup. A backup that read the
    space rows and the op rows at different moments would see more ops than the
    row's size and refuse (root mismatch); one snapshot gives a backup whose
    every log matches its signed head."""
    import asyncio

    src = sqlite_url(tmp_path / "relay.db")
    key = key_file(tmp_path)
    async with workload(tmp_path, src) as w:
        before = len((await dump(src))["ops"])
        stop = asyncio.Event()

        async def keep_writing() -> int:
            n = 0
            while not stop.is_set():
                await w.write(1, prefix="busy")
                n += 1
            return n

        writer = asyncio.create_task(keep_writing())
        try:
            out = await asyncio.to_thread(sddsf, "relay", "backup", "--db", src, "--to",
                                          str(tmp_path / "bk"), "--key-file", str(key),
                                          "--json")
        finally:
            stop.set()
            during = await writer
        after = len((await dump(src))["ops"])
    copied = json.loads(out.stdout)["ops"]
    assert during > 0 and before <= copied <= after
    dst = sqlite_url(tmp_path / "restored.db")
    code, stdout, _ = restore(str(tmp_path / "bk"), dst, key)
    assert code == 0 and "clean" in stdout
    assert len((await dump(dst))["ops"]) == copied


# ------------------------------------------------------------- refusals


async def _one_backup(tmp_path: Path, *extra: str) -> tuple[str, Path, dict[str, object]]:
    src = sqlite_url(tmp_path / "relay.db")
    key = key_file(tmp_path)
    async with workload(tmp_path, src) as w:
        backup_json(src, str(tmp_path / "bk"), key, *extra)
        await w.write(1)
        second = backup_json(src, str(tmp_path / "bk"), key, *extra)
    return str(tmp_path / "bk"), key, second


def _assert_nothing_restored(path: Path) -> None:
    if path.exists():
        assert not any(table_counts(path).values()), "a failed restore left rows behind"


async def test_damaged_or_incomplete_backup_is_refused(tmp_path: Path) -> None:
    bk, key, _ = await _one_backup(tmp_path)
    pieces = [p for p in files_of(Path(bk) / "backup-000001") if p.name.startswith("p")]
    target = tmp_path / "t.db"

    victim = pieces[len(pieces) // 2]
    original = victim.read_bytes()
    victim.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    code, _, err = restore(bk, sqlite_url(target), key, check=False)
    assert code == 1 and "does not match the hash and size" in err and victim.name in err
    _assert_nothing_restored(target)

    victim.unlink()
    code, _, err = restore(bk, sqlite_url(target), key, check=False)
    assert code == 1 and "backup set is incomplete" in err and victim.name in err
    _assert_nothing_restored(target)
    victim.write_bytes(original)

    manifest = Path(bk) / "backup-000002" / "manifest"
    data = manifest.read_bytes()
    manifest.write_bytes(data.replace(b"sqlite", b"sqlitX"))
    code, _, err = restore(bk, sqlite_url(target), key, check=False)
    assert code == 1 and "[sig_invalid]" in err and "not signed by the relay key" in err
    manifest.unlink()  # an interrupted backup: no silent fall-back to backup 1
    code, _, err = restore(bk, sqlite_url(target), key, check=False)
    assert code == 1 and "backup 2" in err and "incomplete" in err and "--backup 1" in err
    _assert_nothing_restored(target)
    assert restore(bk, sqlite_url(target), key, "--backup", "1")[0] == 0


async def test_restore_under_another_relay_key_is_refused(tmp_path: Path) -> None:
    bk, _, _ = await _one_backup(tmp_path)
    other = tmp_path / "other.key"
    other.write_text(bytes(range(32)).hex() + "\n")
    target = tmp_path / "t.db"
    code, _, err = restore(bk, sqlite_url(target), other, check=False)
    assert code == 1 and "pinned the relay key" in err and "--allow-new-relay-key" in err
    _assert_nothing_restored(target)
    code, _, err = restore(bk, sqlite_url(target), tmp_path / "missing.key", check=False)
    assert code == 1 and "has no relay key yet" in err
    assert not (tmp_path / "missing.key").exists(), "the restore must not create a key"
    code, out, err = restore(bk, sqlite_url(target), other, "--allow-new-relay-key")
    assert code == 0 and "every device will refuse this relay" in err and "clean" in out


async def test_encrypted_backup_needs_the_operator_key(tmp_path: Path) -> None:
    pub = sddsf("relay", "backup-keygen", str(tmp_path / "op.key")).stdout.strip()
    assert (tmp_path / "op.key.pub").read_text().strip() == pub
    assert (tmp_path / "op.key").stat().st_mode & 0o777 == 0o600
    bk, key, second = await _one_backup(tmp_path, "--encrypt-to", str(tmp_path / "op.key.pub"))
    assert second["encrypted"] and second["recipient"] == pub and second["pieces_reused"]
    target = tmp_path / "t.db"
    code, _, err = restore(bk, sqlite_url(target), key, check=False)
    assert code == 1 and "encrypted" in err and "--decrypt-key" in err
    sddsf("relay", "backup-keygen", str(tmp_path / "wrong.key"))
    code, _, err = restore(bk, sqlite_url(target), key, "--decrypt-key",
                           str(tmp_path / "wrong.key"), check=False)
    assert code == 1 and "encrypted to" in err
    _assert_nothing_restored(target)
    code, out, _ = restore(bk, sqlite_url(target), key, "--decrypt-key",
                           str(tmp_path / "op.key"))
    assert code == 0 and "clean" in out
    # an incremental backup keeps its chain's encryption
    out = sddsf("relay", "backup", "--db", sqlite_url(tmp_path / "relay.db"), "--to", bk,
                "--key-file", str(key), check=False)
    assert out.returncode == 1 and "--full" in out.stderr


async def test_incremental_backup_refuses_a_rolled_back_database(tmp_path: Path) -> None:
    src_path = tmp_path / "relay.db"
    key = key_file(tmp_path)
    bk = str(tmp_path / "bk")
    async with workload(tmp_path, sqlite_url(src_path)) as w:
        sddsf("relay", "backup", "--db", sqlite_url(src_path), "--to", str(tmp_path / "early"),
              "--key-file", str(key))
        copy_sqlite(src_path, tmp_path / "early.db")
        await w.write(2)
        backup_json(sqlite_url(src_path), bk, key)
    out = sddsf("relay", "backup", "--db", sqlite_url(tmp_path / "early.db"), "--to", bk,
                "--key-file", str(key), check=False)
    assert out.returncode == 1 and "[log_rollback]" in out.stderr and "--full" in out.stderr
    assert backup_json(sqlite_url(tmp_path / "early.db"), bk, key, "--full")["parent"] is None


def test_fsck_heads_finds_a_restored_log_that_differs(tmp_path: Path) -> None:
    """fsck --heads on a database whose log lost its tail or was rewritten."""
    import asyncio

    async def build() -> None:
        async with workload(tmp_path, sqlite_url(tmp_path / "relay.db")) as w:
            await w.write(1)

    asyncio.run(build())
    key = key_file(tmp_path)
    src = sqlite_url(tmp_path / "relay.db")
    sddsf("relay", "backup", "--db", src, "--to", str(tmp_path / "bk"), "--key-file", str(key))
    sddsf("relay", "restore", "--from", str(tmp_path / "bk"), "--check", "--key-file",
          str(key), "--heads-out", str(tmp_path / "heads.json"))
    conn = sqlite3.connect(tmp_path / "relay.db")
    with conn:
        last = conn.execute("SELECT max(log_offset) FROM ops").fetchone()[0]
        conn.execute("UPDATE ops SET leaf_hash = ? WHERE log_offset = 0", (bytes(32),))
        conn.execute("DELETE FROM ops WHERE log_offset = ?", (last,))
    conn.close()
    out = sddsf("relay", "fsck", "--db", src, "--heads", str(tmp_path / "heads.json"),
                "--key-file", str(key), check=False)
    assert out.returncode == 1 and "head_beyond_log" in out.stdout
    other = Ed25519SigningKey.from_seed(bytes(32)).public.raw.hex()
    out = sddsf("relay", "fsck", "--db", src, "--heads", str(tmp_path / "heads.json"),
                "--relay-id", other, check=False)
    assert out.returncode == 1 and "head_invalid" in out.stdout


# ------------------------------------------------------------- schema coverage


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_backup_covers_every_table_and_column(backend: str, tmp_path: Path) -> None:
    """A migration that adds a table or column must teach the backup about it."""
    from livekit import fresh_postgres_database

    from sddsf.relay.backup.dbio import open_snapshot
    from sddsf.relay.storage import open_storage

    async def columns(url: str) -> dict[str, list[str]]:
        storage = open_storage(url)
        await storage.open()
        await storage.close()
        async with open_snapshot(url) as snap:
            return await snap.columns()

    if backend == "sqlite":
        actual = await columns(sqlite_url(tmp_path / "fresh.db"))
    else:
        async with fresh_postgres_database() as dsn:
            actual = await columns(dsn)
    check_columns(actual)
    with pytest.raises(Exception, match="table audit_extra is not covered"):
        check_columns({**actual, "audit_extra": ["x"]})
    with pytest.raises(Exception, match=r"columns \['extra'\] are not covered"):
        check_columns({**actual, "acks": [*actual["acks"], "extra"]})
