"""What an op costs on a SQLite relay's disk (issue 18: 3.7 KB stored for a
1.77 KB envelope).

With 4 KiB pages, an op row of 2-4 KB leaves most of a page empty: two such
rows never fit in one page, so each takes a page of its own. A new database
uses 16 KiB pages, where rows of these sizes fill pages to 80-90 %. Rows
between about 4 and 16 KB still waste up to half a page each (a table of
fixed-size envelope chunks would fix that: future work, docs/performance.md).

Pruning must give the envelopes' space back: envelopes live in a table of
their own and pruning deletes their rows, so whole pages go to the free list,
which appends reuse and the incremental vacuum after a prune hands back to the
filesystem. (Setting an envelope column to NULL in place, as before, left
every page of the log mostly empty and the file as large as if nothing had
been pruned.)
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from sddsf.relay.storage.sqlite import SqliteStorage
from sddsf.testing.storage_conformance import NOW, make_op, new_space, rid

OPS = 400
#: What an op keeps after its envelope is pruned (ids, hashes, deps, two index
#: entries, its Merkle nodes): the bound of the small-op test below.
OP_METADATA = 350


def _bytes_on_disk(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db.stat().st_size


async def bytes_per_op(tmp_path: Path, envelope: int) -> float:
    """Bytes the database file grows by per op, appending OPS ops of ``envelope``
    bytes in batches of 100."""
    db = tmp_path / "relay.db"
    storage = SqliteStorage(str(db))
    await storage.open()
    try:
        space = await new_space(storage)
        empty = _bytes_on_disk(db)
        author = rid()
        for first in range(1, OPS + 1, 100):
            await storage.append_ops(space, [make_op(author, s, size=envelope)
                                             for s in range(first, first + 100)], NOW)
        return (_bytes_on_disk(db) - empty) / OPS
    finally:
        await storage.close()


@pytest.mark.parametrize("envelope", [1_800, 2_400, 2_800, 3_500])
async def test_ops_take_at_most_1_3_times_their_envelopes(tmp_path: Path, envelope: int) -> None:
    # Everything an op adds: its row (ids, hashes, deps), its Merkle nodes and
    # the indexes; at most 30 % over the envelope itself.
    per_op = await bytes_per_op(tmp_path, envelope)
    assert per_op / envelope <= 1.3, f"{per_op:.0f} bytes per op"


async def test_a_small_op_costs_its_envelope_and_a_bounded_overhead(tmp_path: Path) -> None:
    # A keystroke's op (~400 bytes): the fixed part (op id, leaf hash, author,
    # deps, two index entries, its Merkle nodes) dominates; it stays bounded.
    per_op = await bytes_per_op(tmp_path, 400)
    assert per_op - 400 <= 350, f"{per_op:.0f} bytes per op"


async def test_an_existing_database_keeps_its_page_size(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    with sqlite3.connect(db) as conn:  # a relay created before: 4 KiB pages
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("CREATE TABLE before (x)")
    storage = SqliteStorage(str(db))
    await storage.open()
    await storage.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096


async def _prune_append_cycles(db: Path, *, cycles: int, append: int, keep: int,
                               envelope: int) -> tuple[int, int, int, list[int]]:
    """Append ``append`` ops, then prune all but the last ``keep``, ``cycles``
    times. Returns (empty file's bytes, ops in the log, live envelope bytes,
    the file's bytes after each cycle)."""
    storage = SqliteStorage(str(db))
    await storage.open()
    try:
        space = await new_space(storage)
        empty = _bytes_on_disk(db)
        author, seq, sizes = rid(), 1, []
        for _ in range(cycles):
            for first in range(seq, seq + append, 100):
                await storage.append_ops(space, [make_op(author, s, size=envelope)
                                                 for s in range(first, first + 100)], NOW)
            seq += append
            await storage.prune_ops(space, seq - 1 - keep)
            sizes.append(_bytes_on_disk(db))
        live = sum(len(op.envelope or b"") for op in await storage.read_ops(space, -1, seq))
        return empty, seq - 1, live, sizes
    finally:
        await storage.close()


@pytest.mark.parametrize("envelope", [1_800, 3_500])
async def test_pruned_envelopes_give_their_space_back(tmp_path: Path, envelope: int) -> None:
    # Five cycles of 400 appends, each followed by a prune down to the last 100
    # envelopes: the file holds 1.3x the live envelopes, what each op keeps
    # forever, and the empty database; nothing for the 1,900 pruned envelopes.
    empty, ops, live, sizes = await _prune_append_cycles(
        tmp_path / "relay.db", cycles=5, append=400, keep=100, envelope=envelope)
    assert live == 100 * envelope
    bound = empty + 1.3 * live + OP_METADATA * ops
    assert sizes[-1] <= bound, f"{sizes[-1]} bytes on disk, bound {bound:.0f}"


async def test_an_old_database_reuses_pruned_pages(tmp_path: Path) -> None:
    # A database created before auto_vacuum (as every relay upgraded from
    # schema 10 is): the incremental vacuum does nothing, but appends fill the
    # pages that prunes freed, so the file stops growing with the pruned log:
    # each later cycle adds about its ops' metadata, not their envelopes.
    db = tmp_path / "relay.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA page_size = 16384")
        conn.execute("PRAGMA auto_vacuum = NONE")
        conn.execute("CREATE TABLE before (x)")
    _, _, _, sizes = await _prune_append_cycles(db, cycles=5, append=400, keep=0,
                                                envelope=2_400)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    growth = [b - a for a, b in itertools.pairwise(sizes)]
    assert max(growth[1:]) <= 400 * OP_METADATA, f"growth per cycle {growth}"


async def test_a_new_database_vacuums_incrementally(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    await _prune_append_cycles(db, cycles=1, append=100, keep=0, envelope=400)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
