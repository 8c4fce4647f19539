"""The history checkers and ``sddsf relay fsck``: each passes a real history and
catches a crafted violation of exactly its property.

The good history comes from real devices (pycrdt documents, real crypto) syncing
through a relay app on SQLite: three devices edit one space, one of them
writes a snapshot, everyone acknowledges (the relay prunes a prefix of the log),
then a fourth device cold-starts from the snapshot. Each violation below is
made from that history or from a copy of its database with one row changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import permissive_policy
from relaykit import make_app

from sddsf.cli import cli
from sddsf.client.device import Device
from sddsf.protocol import merkle
from sddsf.relay.fsck import FsckCode, SpaceLog, fsck, read_logs
from sddsf.relay.storage import open_storage
from sddsf.testing import checkers as ck
from sddsf.testing.checkers import Ack, Delivery, History, ObservedHead

URL = "http://relay.test"


def kv_state(device: Device, space: bytes) -> object:
    return dict(device.doc(space, "kv").get("kv", type=pycrdt.Map))


@dataclasses.dataclass
class World:
    db: Path
    history: History
    logs: list[SpaceLog]
    space: bytes


async def _build(work: Path) -> World:
    storage = open_storage(f"sqlite:///{work / 'relay.db'}")
    await storage.open()
    # Real time, and IP limits far above this one-address, many-device build (it
    # checks the recorded history, not rate limiting); a controller that never
    # restricts (see _procs).
    app = make_app(storage, lambda: time.time_ns() // 1_000_000, rate_ip_per_s=10_000.0,
                   rate_ip_burst=10_000.0, **permissive_policy(work))

    def transport() -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=app)

    history = History()
    a, _ = await Device.create_account(work / "a", URL, "a", passphrase=None,
                                       insecure_plaintext=True, transport=transport())
    space = await a.create_space("notes")
    # Push the space's first op before adding devices: each addition opens a new
    # key epoch, and an op left pending across two of them is refused (stale_epoch).
    await a.sync()
    devices = {"a": a}
    for name in ("b", "c"):
        devices[name] = await Device.add_local(a, work / name, name, passphrase=None,
                                               insecure_plaintext=True, transport=transport())
    for name, d in devices.items():
        ck.record_device(history.add, name, d)
        d.ack_every = 1
        d.check_every = 0  # check the snapshot at once: pruning waits for a corroboration
        await d.sync()  # learn the space and its keys
    for i in range(6):
        for name, d in devices.items():
            d.doc(space, "kv").get("kv", type=pycrdt.Map)[f"{name}{i}"] = i
            await d.sync()
    for d in devices.values():
        await d.sync()
    assert await a.snapshot(space) is not None
    for d in devices.values():
        await d.sync()  # acknowledgements: every device applied the log, so it is pruned
    late = await Device.add_local(a, work / "d", "d", passphrase=None, insecure_plaintext=True,
                                  transport=transport())
    ck.record_device(history.add, "d", late)
    devices["d"] = late
    for i in range(2):  # a tail of kept envelopes after the pruned prefix
        for name, d in devices.items():
            await d.sync()
            d.doc(space, "kv").get("kv", type=pycrdt.Map)[f"{name}-tail{i}"] = i
    for _ in range(2):  # push the last edits, then let everyone pull them
        for d in devices.values():
            await d.sync()
    for name, d in devices.items():
        ck.record_final(history, name, d, kv_state)
        await d.close()
    await storage.close()
    logs = await read_logs(f"sqlite:///{work / 'relay.db'}")
    return World(work / "relay.db", history, logs, space)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return asyncio.run(_build(tmp_path_factory.mktemp("checkers")))


@pytest.fixture
def db_copy(world: World, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "relay.db"
    shutil.copyfile(world.db, path)
    yield path


def sql(path: Path, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
    """Run statements (text, or (text, parameters)) on a database file."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for s in statements:
            text, args = (s, ()) if isinstance(s, str) else s
            conn.execute(text, args)
    finally:
        conn.close()


def codes(report: Any) -> set[str]:
    return {f.code.value for f in report.findings}


def replaced(history: History, **changes: Any) -> History:
    return dataclasses.replace(history, **changes)


# ------------------------------------------------------------- a good history


def test_good_history_passes_every_checker(world: World) -> None:
    h = world.history
    [log] = world.logs
    # the history is substantial: every device acked and applied, heads of many sizes
    assert {a.client for a in h.acks} == {"a", "b", "c", "d"}
    assert len(h.acks) >= 18 and len({x.size for x in h.heads}) > 10
    # the relay pruned a prefix and the late device started from the snapshot
    assert log.entries[0].envelope is None and log.entries[-1].envelope is not None
    late = next(d for d in h.deliveries if d.client == "d")
    assert late.items and late.items[0][0] > 0
    assert len({json.dumps(s, sort_keys=True) for c in h.states.values()
                for s in c.values()}) == 1
    assert ck.check_history(h, world.logs) == []


async def test_good_database_is_fsck_clean(world: World) -> None:
    report = await fsck(f"sqlite:///{world.db}")
    assert report.ok, [str(f) for f in report.findings]
    assert (report.accounts, report.spaces) == (1, 1) and report.ops == len(world.logs[0].entries)
    assert await ck.check_relay(world.history, f"sqlite:///{world.db}") == []


def test_fsck_cli_on_a_good_database_exits_0(world: World) -> None:
    result = CliRunner().invoke(cli, ["relay", "fsck", "--db", f"sqlite:///{world.db}",
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ok"] is True


# -------------------------------------------------------------- each checker


def test_no_lost_ack_catches_a_missing_and_a_replaced_op(world: World) -> None:
    ack = world.history.acks[-1]
    beyond = dataclasses.replace(ack, space_seq=len(world.logs[0].entries))
    other = dataclasses.replace(ack, space_seq=ack.space_seq - 1)
    found = ck.no_lost_ack(replaced(world.history, acks=[ack, beyond, other]), world.logs)
    assert [v.message.split(": ")[-1] for v in found] == [
        f"op {ack.device.hex()[:12]}#{ack.device_seq} acked to {ack.client} at "
        f"{ack.space.hex()[:12]}:{beyond.space_seq} is not in the log (lost)",
        "the log holds another op there"]
    # an ack whose leaf is not what the log holds at that offset is lost too
    forged = dataclasses.replace(ack, leaf_hash=bytes(32))
    assert len(ck.no_lost_ack(replaced(world.history, acks=[forged]), world.logs)) == 1


def test_no_duplicates_catches_a_repeated_op_and_a_double_ack(world: World) -> None:
    [log] = world.logs
    entries = list(log.entries)
    twice = dataclasses.replace(entries[3], offset=len(entries))
    logs = [dataclasses.replace(log, entries=(*entries, twice))]
    found = ck.no_duplicates(world.history, logs)
    assert {v.message.split(": ", 1)[1] for v in found} == {
        f"device seq of offset {len(entries)} repeats offset 3",
        f"op of offset {len(entries)} repeats offset 3"}
    ack = world.history.acks[0]
    moved = dataclasses.replace(ack, space_seq=ack.space_seq + 1)
    found = ck.no_duplicates(replaced(world.history, acks=[ack, moved]), world.logs)
    assert len(found) == 1 and "acknowledged at offsets" in found[0].message


def test_gap_free_catches_a_hole(world: World) -> None:
    [log] = world.logs
    holed = dataclasses.replace(log, entries=log.entries[:5] + log.entries[6:])
    assert ck.gap_free(world.logs) == []
    [v] = ck.gap_free([holed])
    assert v.checker == "gap_free" and f"{len(log.entries) - 1} entries" in v.message


def test_monotonic_delivery_catches_reorder_skip_and_foreign_entries(world: World) -> None:
    [log] = world.logs
    leaves = [(e.offset, e.leaf_hash) for e in log.entries]
    good = Delivery("x", world.space, tuple(leaves[:8]))
    assert ck.monotonic_delivery(replaced(world.history, deliveries=[good]), world.logs) == []
    bad = [Delivery("back", world.space, (leaves[0], leaves[1], leaves[2], leaves[1])),
           Delivery("skip", world.space, (leaves[0], leaves[2])),
           Delivery("foreign", world.space, (leaves[0], (1, bytes(32)))),
           Delivery("beyond", world.space, ((len(leaves), bytes(32)),))]
    found = ck.monotonic_delivery(replaced(world.history, deliveries=bad), world.logs)
    assert [v.message.split(":")[0].split()[0] for v in found] == [
        "back", "skip", "foreign", "beyond"]
    assert "went back from offset 2 to 1" in found[0].message


def test_consistent_checkpoints_catches_split_view_fork_and_rollback(world: World) -> None:
    [log] = world.logs
    leaves = [e.leaf_hash for e in log.entries]
    n = len(leaves)
    honest = merkle.MerkleTree(leaves)
    # another history that agrees on the first 4 entries, then differs
    forked = merkle.MerkleTree([*leaves[:4], merkle.leaf_hash(b"forged"), *leaves[5:]])

    def heads(*pairs: tuple[int, bytes]) -> History:
        return replaced(world.history, heads=[ObservedHead("x", world.space, s, r)
                                              for s, r in pairs])

    assert ck.consistent_checkpoints(heads((3, honest.root(3)), (n, honest.root(n))),
                                     world.logs) == []
    same_size = ck.consistent_checkpoints(heads((6, honest.root(6)), (6, forked.root(6))),
                                          world.logs)
    assert len(same_size) == 1 and "not consistent" in same_size[0].message
    # two different sizes: only a consistency proof can tell, and it fails
    fork = ck.consistent_checkpoints(heads((4, honest.root(4)), (7, forked.root(7))),
                                     world.logs)
    assert len(fork) == 1 and "(4, " in fork[0].message and "(7, " in fork[0].message
    assert ck.consistent_checkpoints(heads((4, forked.root(4)), (7, honest.root(7))),
                                     world.logs) == []  # the shared prefix is consistent
    rollback = ck.consistent_checkpoints(heads((n + 2, bytes(32))), world.logs)
    assert len(rollback) == 1 and "rolled back" in rollback[0].message


def test_chains_verify_catches_a_removed_op_and_a_broken_registry(world: World) -> None:
    [log] = world.logs
    kept = [e for e in log.entries if e.envelope is not None]
    victim = next(e for e in kept if any(k.author == e.author and k.seq > e.seq for k in kept))
    # drop one op of an author and renumber: the log stays gap-free, the chain does not
    rest = [e for e in log.entries if e is not victim]
    renumbered = tuple(dataclasses.replace(e, offset=i) for i, e in enumerate(rest))
    found = ck.chains_verify([dataclasses.replace(log, entries=renumbered)])
    assert found and all(v.checker == "chains_verify" for v in found)
    assert "[chain_gap]" in found[0].message
    broken = dataclasses.replace(log, registry=log.registry[1:])
    found = ck.chains_verify([broken])
    assert "registry of account" in found[0].message


def test_strong_convergence_catches_one_diverged_client(world: World) -> None:
    states = {c: dict(s) for c, s in world.history.states.items()}
    states["c"][world.space] = {**states["c"][world.space], "extra": 1}  # type: ignore[dict-item]
    [v] = ck.strong_convergence(replaced(world.history, states=states))
    assert v.message.endswith("c differ from a")


async def test_fsck_clean_checker_reports_a_tampered_database(db_copy: Path) -> None:
    sql(db_copy, "UPDATE spaces SET root = zeroblob(32)")
    found = await ck.fsck_clean(f"sqlite:///{db_copy}")
    assert [v.message.split(" ")[0] for v in found] == ["root_mismatch"]


# ------------------------------------------------------------ fsck findings


def _last_kept(world: World) -> int:
    return next(e.offset for e in reversed(world.logs[0].entries) if e.envelope is not None)


@pytest.mark.parametrize(("statements", "expected"), [
    (["UPDATE spaces SET root = zeroblob(32)"], {"root_mismatch"}),
    (["UPDATE spaces SET frontier = zeroblob(32) || substr(frontier, 33)"],
     {"frontier_mismatch"}),
    (["UPDATE spaces SET size = size + 1"], {"size_mismatch"}),
    (["UPDATE merkle_nodes SET hash = zeroblob(32) WHERE level = 1 AND idx = 2"],
     {"node_mismatch"}),
    (["DELETE FROM merkle_nodes WHERE level = 2 AND idx = 0"], {"node_missing"}),
    (["INSERT INTO merkle_nodes SELECT space_id, 9, 99, zeroblob(32) FROM spaces"],
     {"node_extra"}),
    (["UPDATE spaces SET epoch = epoch + 1"], {"epoch_mismatch"}),
    (["UPDATE key_packages SET package = zeroblob(length(package)) WHERE epoch = 1"],
     {"key_package_invalid"}),
    (["UPDATE registry_entries SET entry = zeroblob(length(entry)) WHERE seq = 1"],
     {"registry_invalid"}),
    (["UPDATE acks SET acked_offset = 10000"], {"ack_beyond_log"}),
    (["UPDATE snapshots SET covers_offset = 10000"], {"snapshot_beyond_log"}),
    (["UPDATE snapshot_chunks SET blob = zeroblob(length(blob))"], {"chunk_mismatch"}),
    (["DELETE FROM snapshot_chunks"], {"chunk_missing"}),
    (["INSERT INTO op_envelopes SELECT space_id, size + 5, x'00' FROM spaces"],
     {"envelope_orphan"}),
])
async def test_fsck_finds_each_kind_of_tampering(db_copy: Path, statements: list[str],
                                                 expected: set[str]) -> None:
    sql(db_copy, *statements)
    report = await fsck(f"sqlite:///{db_copy}")
    assert codes(report) == expected, [str(f) for f in report.findings]


async def test_fsck_replays_op_rows_against_the_signed_envelopes(world: World,
                                                                 db_copy: Path) -> None:
    last = _last_kept(world)
    # a flipped signature byte, with the leaf hash recomputed: only the rules catch it
    conn = sqlite3.connect(db_copy, isolation_level=None)
    env = bytearray(conn.execute("SELECT envelope FROM op_envelopes WHERE log_offset = ?",
                                 (last,)).fetchone()[0])
    env[-1] ^= 1
    conn.execute("UPDATE op_envelopes SET envelope = ? WHERE log_offset = ?",
                 (bytes(env), last))
    conn.execute("UPDATE ops SET leaf_hash = ? WHERE log_offset = ?",
                 (merkle.leaf_hash(bytes(env)), last))
    conn.execute("UPDATE ops SET leaf_hash = zeroblob(32) WHERE log_offset = ?", (last - 1,))
    conn.execute("UPDATE ops SET deps = x'80' WHERE log_offset = ?", (last - 2,))
    conn.close()
    report = await fsck(f"sqlite:///{db_copy}")
    by_offset = {(f.code.value, f.offset) for f in report.findings}
    assert ("op_invalid", last) in by_offset and ("leaf_mismatch", last - 1) in by_offset
    assert ("row_mismatch", last - 2) in by_offset
    assert any("[sig_invalid]" in f.message for f in report.findings)


async def test_fsck_finds_gaps_unpruned_holes_and_duplicate_rows(world: World,
                                                                 db_copy: Path) -> None:
    last = _last_kept(world)
    # Rebuild the ops table without its keys, as a damaged or hand-edited database could be.
    sql(db_copy, "CREATE TABLE ops_copy AS SELECT * FROM ops", "DROP TABLE ops",
        "ALTER TABLE ops_copy RENAME TO ops",
        ("INSERT INTO ops SELECT * FROM ops WHERE log_offset = ?", (last,)),
        ("DELETE FROM op_envelopes WHERE log_offset = ?", (last - 5,)),
        ("DELETE FROM ops WHERE log_offset = ?", (last - 2,)))
    report = await fsck(f"sqlite:///{db_copy}")
    found = codes(report)
    assert {"duplicate_offset", "duplicate_seq", "offset_gap", "size_mismatch",
            "prune_not_prefix", "envelope_orphan"} <= found, [str(f) for f in report.findings]


def test_fsck_cli_reports_findings_and_exits_1(db_copy: Path) -> None:
    sql(db_copy, "UPDATE spaces SET root = zeroblob(32)")
    result = CliRunner().invoke(cli, ["relay", "fsck", "--db", f"sqlite:///{db_copy}"])
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith("root_mismatch space=")
    assert result.output.splitlines()[-1].endswith("1 finding(s)")


async def test_fsck_refuses_what_is_not_a_relay_database(tmp_path: Path) -> None:
    from sddsf.errors import ConfigError

    with pytest.raises(ConfigError, match="no SQLite database"):
        await fsck(f"sqlite:///{tmp_path / 'missing.db'}")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ConfigError, match="no relay schema"):
        await fsck(f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(ConfigError, match="unsupported database URL"):
        await fsck("mysql://x")
    assert not (tmp_path / "missing.db").exists()  # fsck never creates a database


def test_fsck_codes_are_stable() -> None:
    assert {c.value for c in FsckCode} >= {"root_mismatch", "offset_gap", "duplicate_seq",
                                           "op_invalid", "registry_invalid"}


def test_recorded_acks_carry_the_device_seq(world: World) -> None:
    # what record_device stores is what the checkers need: device, seq and leaf
    [log] = world.logs
    by_key = {(e.author, e.seq): e for e in log.entries}
    for ack in world.history.acks:
        assert isinstance(ack, Ack)
        assert by_key[(ack.device, ack.device_seq)].offset == ack.space_seq


async def test_fsck_reads_postgresql_too(tmp_path: Path) -> None:
    """The same checks through the PostgreSQL reader: clean, then two tampered rows."""
    import asyncpg
    from livekit import fresh_postgres_database

    async with fresh_postgres_database() as dsn:
        storage = open_storage(dsn)
        await storage.open()
        app = make_app(storage, lambda: time.time_ns() // 1_000_000,
                       **permissive_policy(tmp_path))
        device, _ = await Device.create_account(
            tmp_path / "a", URL, "a", passphrase=None, insecure_plaintext=True,
            transport=httpx.ASGITransport(app=app))
        space = await device.create_space("notes")
        for i in range(9):
            device.doc(space, "kv").get("kv", type=pycrdt.Map)[f"k{i}"] = i
            await device.sync()
        await device.close()
        await storage.close()
        report = await fsck(dsn)
        assert report.ok and report.ops == 10 and report.nodes == 10 - 2
        [log] = await read_logs(dsn)
        assert [e.offset for e in log.entries] == list(range(10))
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("UPDATE merkle_nodes SET hash = $1 WHERE level = 3", bytes(32))
            await conn.execute("UPDATE ops SET seq = seq + 100 WHERE log_offset = 9")
        finally:
            await conn.close()
        report = await fsck(dsn)
        assert codes(report) == {"node_mismatch", "row_mismatch"}, [
            str(f) for f in report.findings]


def test_journal_lines_round_trip_and_refuse_garbage(world: World) -> None:
    records = [*world.history.acks[:5], *world.history.heads[:5]]
    lines = [ck.record_to_json(r) for r in records] + [""]
    again = ck.history_from_journal(lines)
    assert again.acks == world.history.acks[:5] and again.heads == world.history.heads[:5]
    from sddsf.errors import DecodeError

    with pytest.raises(DecodeError, match="journal line 2"):
        ck.history_from_journal([lines[0], '{"ack": [1]}'])


def test_consistent_checkpoints_with_many_heads_checks_neighbours(world: World) -> None:
    """Past 500 distinct heads only neighbours get a proof (transitivity): a
    forged head among many honest ones is still caught."""
    [log] = world.logs
    leaves = [e.leaf_hash for e in log.entries] * 30  # a longer log, same leaves
    tree = merkle.MerkleTree(leaves)
    long_log = dataclasses.replace(log, entries=tuple(
        dataclasses.replace(log.entries[i % len(log.entries)], offset=i)
        for i in range(len(leaves))))
    honest = [ObservedHead("x", world.space, s, tree.root(s)) for s in range(1, tree.size + 1)]
    assert len(honest) > 500
    assert ck.consistent_checkpoints(replaced(world.history, heads=honest), [long_log]) == []
    forged = [*honest, ObservedHead("y", world.space, 300, bytes(32))]
    found = ck.consistent_checkpoints(replaced(world.history, heads=forged), [long_log])
    assert found and all("(300, " in v.message for v in found)
