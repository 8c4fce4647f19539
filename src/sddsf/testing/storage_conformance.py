"""The one conformance suite for :class:`~sddsf.relay.storage.base.RelayStorage` backends.

Every check is a plain coroutine taking a :class:`Harness` (a fresh, opened,
empty storage plus two ways to reach the same database) and asserting; a
backend's tests run every entry of :data:`CHECKS`. Checks only use the public
contract, plus portable SQL on ``schema_migrations`` for the migration checks.

Ops are synthesised with random envelopes but real hashes: ``leaf_hash`` is the
RFC 9162 leaf hash and ``op_id`` the tagged op-id hash of the envelope, so the
Merkle checks recompute everything independently of the backend.

Size: the conformance suite is one list of checks every storage backend must
pass; keeping them in one module keeps the list, its fixtures and its order in
one place.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sddsf.errors import AuthenticationError, ConfigError, NotFoundError, SddsfError, UsageError
from sddsf.protocol import merkle
from sddsf.protocol.encoding import encode
from sddsf.protocol.labels import OP_ID, tagged_hash
from sddsf.protocol.membership import entry_hash
from sddsf.relay.storage import migrations
from sddsf.relay.storage.base import (
    AlertRecord,
    AppendOutcome,
    AppendStatus,
    BackupAttemptState,
    BackupAttemptStatus,
    BackupLockPolicy,
    ForkEvidence,
    LeafKind,
    OpToAppend,
    PairingChannel,
    PairingMessage,
    RelayStorage,
    StorageConflict,
    StoredBackup,
)

__all__ = ["CHECKS", "Check", "Harness", "expect", "expect_eq", "make_entry", "make_op",
           "verify_log"]

ACCEPTED, DUPLICATE, FORK = AppendStatus.ACCEPTED, AppendStatus.DUPLICATE, AppendStatus.FORK
NOW = 1_700_000_000_000
T = TypeVar("T")


@dataclass(frozen=True)
class Harness:
    """What a check gets.

    Attributes:
        storage: opened, on an empty database.
        new_peer: builds another, unopened storage on the same database (a
            reopened SQLite file, or another PostgreSQL pool: a second relay node).
            The check opens and closes it.
        sql: runs one portable SQL statement on the same database through an
            independent connection and returns its rows.
    """

    storage: RelayStorage
    new_peer: Callable[[], RelayStorage]
    sql: Callable[[str], Awaitable[list[tuple[Any, ...]]]]


Check = Callable[[Harness], Awaitable[None]]


# --------------------------------------------------------------------- helpers
def present(value: T | None, what: str = "a stored value") -> T:
    """``value``, failing the check if it is None."""
    if value is None:
        raise AssertionError(f"expected {what}, got None")
    return value


def expect_eq(actual: object, expected: object, what: str = "value") -> None:
    """Fail the check unless ``actual == expected``, showing both."""
    if actual != expected:
        raise AssertionError(f"{what}: got {_short(actual)}, expected {_short(expected)}")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 600 else text[:600] + "..."


def expect(condition: object, message: str = "storage contract violated") -> None:
    """Fail the check unless ``condition`` holds.

    Not ``assert``: the suite must still check under ``python -O``.
    """
    if not condition:
        raise AssertionError(message)


def rid(n: int = 16) -> bytes:
    """A random id."""
    return os.urandom(n)


def make_op(author: bytes, seq: int, size: int = 160, deps: object = ()) -> OpToAppend:
    """A storage-ready op with a random envelope and its real hashes."""
    envelope = os.urandom(size)
    return OpToAppend(envelope=envelope, op_id=tagged_hash(OP_ID, envelope), author=author,
                      seq=seq, deps=encode(list(deps) if isinstance(deps, tuple) else deps),
                      leaf_hash=merkle.leaf_hash(envelope))


def make_entry(size: int = 300) -> tuple[bytes, bytes]:
    """``(entry, entry_hash)``: random bytes standing for a signed membership
    entry (storage never decodes one) and their real entry hash."""
    entry = os.urandom(size)
    return entry, entry_hash(entry)


#: The membership head of a space without entries.
NO_HEAD = bytes(32)


def chain(author: bytes, first: int, count: int) -> list[OpToAppend]:
    """``count`` consecutive ops of one author from seq ``first``."""
    return [make_op(author, s) for s in range(first, first + count)]


async def new_space(storage: RelayStorage) -> bytes:
    """Create a space for a fresh account and return its id."""
    space = rid()
    expect(await storage.create_space(space, rid(), NOW))
    return space


async def raises(exc_type: type[BaseException], awaitable: Awaitable[object],
                 match: str = "") -> BaseException:
    """Assert that ``awaitable`` raises ``exc_type`` (with ``match`` in its text)."""
    try:
        await awaitable
    except exc_type as exc:
        expect(match.lower() in str(exc).lower(), f"{exc!r} does not mention {match!r}")
        return exc
    raise AssertionError(f"expected {exc_type.__name__}")


def statuses(outcomes: Sequence[AppendOutcome]) -> list[AppendStatus]:
    """The status of each outcome."""
    return [o.status for o in outcomes]


async def verify_log(storage: RelayStorage, space: bytes,
                     history: Sequence[tuple[int, bytes]] = ()) -> merkle.MerkleTree:
    """Recompute the space's log from its leaf hashes and check it all.

    Checks: ``get_space`` size and root equal a :class:`MerkleTree` rebuilt from
    ``leaf_hashes``; every stored perfect node equals the recomputed one and no
    node beyond the tree is returned; for the current size and every
    ``(size, root)`` in ``history``, inclusion proofs of every leaf and
    consistency proofs between all those sizes, generated only from
    ``merkle_nodes`` (as the relay does), verify against the recorded roots.
    """
    record = present(await storage.get_space(space))
    n = record.size
    leaves = await storage.leaf_hashes(space, 0, n)
    expect_eq(len(leaves), n)
    tree = merkle.MerkleTree(leaves)
    expect(record.root == tree.root() == merkle.root_of(leaves))
    keys = [(lv, i) for lv in range(max(n, 1).bit_length()) for i in range(n >> lv)]
    outside = [(0, n), (1, n // 2 + 1), (n.bit_length() + 1, 0)]
    nodes = await storage.merkle_nodes(space, keys + outside)
    expect_eq(set(nodes), set(keys), "merkle_nodes returned missing or extra nodes")
    for (lv, i), h in nodes.items():
        expect_eq(h, tree.node(lv, i), f"stored node ({lv}, {i}) is wrong")

    def hash_range(start: int, end: int) -> bytes:
        return merkle.range_hash_from_nodes(lambda lv, i: nodes[(lv, i)], start, end)

    points = sorted({*history, (n, record.root)})
    for size, root in points:
        if size == 0:
            expect_eq(root, merkle.EMPTY_ROOT)
            continue
        expect_eq(hash_range(0, size), root, f"root at size {size} changed")
        for index in range(size):
            proof = merkle.inclusion_proof(hash_range, index, size)
            merkle.verify_inclusion(leaves[index], index, size, proof, root)
    for size1, root1 in points:
        for size2, root2 in points:
            if 0 < size1 <= size2:
                proof = merkle.consistency_proof(hash_range, size1, size2)
                merkle.verify_consistency(size1, size2, root1, root2, proof)
    return tree


async def tail(storage: RelayStorage, space: bytes, stop: asyncio.Event) -> list[int]:
    """Follow the log like a reader, asserting that it never skips an offset."""
    seen: list[int] = []
    while True:
        done = stop.is_set()
        batch = await storage.read_ops(space, seen[-1] if seen else -1, 64)
        for op in batch:
            expect_eq(op.offset, len(seen), f"reader skipped from {len(seen) - 1} to {op.offset}")
            seen.append(op.offset)
        if done and not batch:
            return seen
        if not batch:
            await asyncio.sleep(0.002)


async def check_concurrent(storages: Sequence[RelayStorage], space: bytes, tasks: int,
                           per_task: int) -> None:
    """Barrier-synchronised single-op appends by ``tasks`` authors, spread over
    ``storages``; then count == max offset + 1, gap-free, root recomputes."""
    start, stop = asyncio.Event(), asyncio.Event()
    authors = [rid() for _ in range(tasks)]

    async def writer(k: int) -> list[int]:
        storage = storages[k % len(storages)]
        await start.wait()
        offsets = []
        for op in chain(authors[k], 1, per_task):
            (out,) = await storage.append_ops(space, [op], NOW)
            expect(out.status is ACCEPTED)
            offsets.append(out.offset)
        return offsets

    reader = asyncio.create_task(tail(storages[-1], space, stop))
    writers = [asyncio.create_task(writer(k)) for k in range(tasks)]
    await asyncio.sleep(0)
    start.set()
    try:
        results = await asyncio.gather(*writers)
    except BaseException:
        for task in (reader, *writers):
            task.cancel()
        raise
    stop.set()
    seen = await reader
    total = tasks * per_task
    offsets = sorted(o for r in results for o in r)
    expect_eq(offsets, list(range(total)), "offsets are not unique and gap-free")
    for r in results:
        expect_eq(r, sorted(r), "one author's ops were not appended in order")
    expect_eq(seen, list(range(total)))
    ops = await storages[0].read_ops(space, -1, total + 10)
    expect(len(ops) == total == max(o.offset for o in ops) + 1)
    for author in authors:
        mine = [o.seq for o in ops if o.author == author]
        expect_eq(mine, list(range(1, per_task + 1)))
    await verify_log(storages[0], space)


# ----------------------------------------------------------------- lifecycle
async def check_migrations_applied(h: Harness) -> None:
    """Every migration is recorded once, in order; schema_version is the latest."""
    expect_eq(await h.storage.schema_version(), migrations.LATEST_VERSION)
    rows = await h.sql("SELECT version, description FROM schema_migrations ORDER BY version")
    expect_eq([(int(v), str(d)) for v, d in rows], [
        (m.version, m.description) for m in migrations.SQLITE_MIGRATIONS])
    await h.storage.ping()


async def check_reopen_is_idempotent(h: Harness) -> None:
    """Close/open keeps the data and does not re-apply migrations; open and close
    are idempotent; a closed storage raises an SddsfError, not a driver error."""
    before = await h.sql("SELECT version, applied_ms FROM schema_migrations ORDER BY version")
    account, space = rid(), rid()
    await h.storage.create_account(account, b"genesis", NOW)
    await h.storage.create_space(space, account, NOW)
    await h.storage.append_ops(space, chain(rid(), 1, 5), NOW)
    record = await h.storage.get_space(space)
    ops = await h.storage.read_ops(space, -1, 10)
    await h.storage.open()  # already open: no-op
    await h.storage.close()
    await h.storage.close()
    await raises(SddsfError, h.storage.get_space(space))
    peer = h.new_peer()
    try:
        await peer.open()
        await peer.open()
        expect_eq(await peer.schema_version(), migrations.LATEST_VERSION)
        expect_eq(await h.sql("SELECT version, applied_ms FROM schema_migrations "
                           "ORDER BY version"), before)
        expect_eq(await peer.get_space(space), record)
        expect_eq(await peer.read_ops(space, -1, 10), ops)
        expect_eq(await peer.registry_entries(account), [b"genesis"])
        await verify_log(peer, space)
    finally:
        await peer.close()


async def check_newer_schema_is_refused(h: Harness) -> None:
    """A database migrated by a newer relay refuses to open with ConfigError."""
    future = migrations.LATEST_VERSION + 1
    await h.sql("INSERT INTO schema_migrations (version, description, applied_ms) "  # noqa: S608
                f"VALUES ({future}, 'from a newer relay', 0)")  # an int, not user input
    peer = h.new_peer()
    try:
        exc = await raises(ConfigError, peer.open(), "newer than this relay")
        expect(f"version {future}" in str(exc))
        expect(f"({migrations.LATEST_VERSION})" in str(exc))
        await h.sql(f"DELETE FROM schema_migrations WHERE version = {future}")  # noqa: S608
        await peer.open()
        expect_eq(await peer.schema_version(), migrations.LATEST_VERSION)
    finally:
        await peer.close()


# ------------------------------------------------------------------ registry
async def check_create_account(h: Harness) -> None:
    """Genesis is seq 0; identical repeat is False; another genesis conflicts."""
    s, account = h.storage, rid()
    expect_eq(await s.registry_entries(account), [])
    expect(await s.create_account(account, b"genesis-a", NOW) is True)
    expect(await s.create_account(account, b"genesis-a", NOW + 1) is False)
    await raises(StorageConflict, s.create_account(account, b"genesis-b", NOW))
    expect_eq(await s.registry_entries(account), [b"genesis-a"])
    expect_eq(await s.registry_entries(rid()), [])


async def check_registry_append(h: Harness) -> None:
    """Only the next seq is stored; repeats are idempotent; taken seqs conflict."""
    s, account = h.storage, rid()
    await raises(NotFoundError, s.append_registry_entry(account, 1, b"e1", NOW))
    await s.create_account(account, b"g", NOW)
    expect(await s.append_registry_entry(account, 1, b"e1", NOW) is True)
    expect(await s.append_registry_entry(account, 1, b"e1", NOW) is False)
    await raises(StorageConflict, s.append_registry_entry(account, 1, b"other", NOW))
    await raises(StorageConflict, s.append_registry_entry(account, 0, b"other", NOW))
    await raises(StorageConflict, s.append_registry_entry(account, 3, b"e3", NOW), "next seq")
    expect(await s.append_registry_entry(account, 2, b"e2", NOW) is True)
    expect_eq(await s.registry_entries(account), [b"g", b"e1", b"e2"])
    expect_eq(await s.registry_entries(account, since=2), [b"e2"])
    expect_eq(await s.registry_entries(account, since=3), [])


async def check_revocation_and_append_are_ordered(h: Harness) -> None:
    """THREATS #14: an append verified against an older registry is refused; a
    revocation whose cutoff the log has outgrown is refused; both store nothing."""
    s, account, space, target = h.storage, rid(), rid(), rid()
    await s.create_account(account, b"g", NOW)
    expect(await s.create_space(space, account, NOW))
    await s.append_ops(space, chain(target, 1, 2), NOW, registry_seq=0)
    expect(await s.append_registry_entry(account, 1, b"add", NOW) is True)
    await raises(StorageConflict, s.append_ops(space, [make_op(target, 3)], NOW,
                                               registry_seq=0), "registry")
    expect_eq(present(await s.get_space(space)).size, 2)
    await raises(StorageConflict, s.append_registry_entry(
        account, 2, b"revoke", NOW, revoked_cutoffs={target: {space: 1}}), "cutoff")
    await raises(StorageConflict, s.append_registry_entry(
        account, 2, b"revoke", NOW, revoked_cutoffs={target: {}}), "cutoff")
    expect_eq(await s.registry_entries(account, since=2), [])
    expect(await s.append_registry_entry(
        account, 2, b"revoke", NOW, revoked_cutoffs={target: {space: 2}, rid(): {}}) is True)
    out = await s.append_ops(space, [make_op(rid(), 1)], NOW, registry_seq=2)
    expect_eq(statuses(out), [ACCEPTED])


# -------------------------------------------------------------------- spaces
async def check_spaces(h: Harness) -> None:
    """Create/get/list; the same id for another account conflicts."""
    s, account, other = h.storage, rid(), rid()
    ids = [rid() for _ in range(3)]
    for k, space in enumerate(ids):
        expect(await s.create_space(space, account, NOW + 10 * k) is True)
    expect(await s.create_space(ids[0], account, NOW + 99) is False)
    await raises(StorageConflict, s.create_space(ids[0], other, NOW))
    record = present(await s.get_space(ids[1]))
    expect_eq((record.space_id, record.account_id, record.size, record.root, record.epoch,
            record.epoch_started_ms, record.created_ms), (
        ids[1], account, 0, merkle.EMPTY_ROOT, -1, 0, NOW + 10))
    expect_eq([r.space_id for r in await s.list_spaces(account)], ids)
    expect_eq(await s.list_spaces(other), [])
    expect(await s.get_space(rid()) is None)


async def check_key_packages(h: Harness) -> None:
    """Epochs go 0, 1, 2 ... with idempotent repeats; the space's epoch follows."""
    s = h.storage
    space = await new_space(s)
    await raises(NotFoundError, s.put_key_package(rid(), 0, b"p", NOW))
    expect_eq(await s.key_packages(rid()), [])
    await raises(StorageConflict, s.put_key_package(space, 1, b"p1", NOW), "next epoch")
    expect(await s.put_key_package(space, 0, b"p0", NOW + 5) is True)
    expect(await s.put_key_package(space, 0, b"p0", NOW + 6) is False)
    await raises(StorageConflict, s.put_key_package(space, 0, b"other", NOW))
    await raises(StorageConflict, s.put_key_package(space, 2, b"p2", NOW))
    record = present(await s.get_space(space))
    expect_eq((record.epoch, record.epoch_started_ms), (0, NOW + 5))
    expect(await s.put_key_package(space, 1, b"p1", NOW + 9) is True)
    record = present(await s.get_space(space))
    expect_eq((record.epoch, record.epoch_started_ms), (1, NOW + 9))
    expect_eq(await s.key_packages(space), [b"p0", b"p1"])
    expect_eq(await s.key_packages(space, since_epoch=1), [b"p1"])


# ----------------------------------------------------------------------- ops
async def check_append_offsets(h: Harness) -> None:
    """Accepted ops get offsets 0..n-1 in batch order, across batches and authors."""
    s = h.storage
    space = await new_space(s)
    a, b = rid(), rid()
    out = await s.append_ops(space, [*chain(a, 1, 3), *chain(b, 1, 2)], NOW)
    expect(statuses(out) == [ACCEPTED] * 5 and [o.offset for o in out] == list(range(5)))
    batch = [make_op(b, 3), make_op(a, 4)]
    out = await s.append_ops(space, batch, NOW + 1)
    expect_eq([(o.status, o.offset, o.existing_op_id) for o in out], [
        (ACCEPTED, 5, batch[0].op_id), (ACCEPTED, 6, batch[1].op_id)])
    expect_eq(await s.append_ops(space, [], NOW), [])
    ops = await s.read_ops(space, -1, 100)
    expect_eq([o.offset for o in ops], list(range(7)))
    expect_eq([(o.author, o.seq) for o in ops[5:]], [(b, 3), (a, 4)])
    expect(ops[5].envelope == batch[0].envelope and ops[5].leaf_hash == batch[0].leaf_hash)
    expect_eq(ops[6].received_ms, NOW + 1)
    record = present(await s.get_space(space))
    expect_eq(record.size, 7)
    await verify_log(s, space)


async def check_append_duplicates(h: Harness) -> None:
    """A repeated op (same batch or later batch) is DUPLICATE at its original offset."""
    s = h.storage
    space = await new_space(s)
    a = rid()
    ops = chain(a, 1, 3)
    out = await s.append_ops(space, [ops[0], ops[1], ops[1], ops[2]], NOW)
    expect_eq(statuses(out), [ACCEPTED, ACCEPTED, DUPLICATE, ACCEPTED])
    expect_eq([o.offset for o in out], [0, 1, 1, 2])
    expect_eq(out[2].existing_op_id, ops[1].op_id)
    before = await s.get_space(space)
    out = await s.append_ops(space, ops, NOW)
    expect_eq([(o.status, o.offset, o.existing_op_id) for o in out], [
        (DUPLICATE, k, op.op_id) for k, op in enumerate(ops)])
    expect_eq(await s.get_space(space), before)
    expect_eq(len(await s.read_ops(space, -1, 10)), 3)


async def check_append_forks(h: Harness) -> None:
    """Another op at a taken (author, seq) is FORK with the stored op's id and offset."""
    s = h.storage
    space = await new_space(s)
    a = rid()
    first = chain(a, 1, 2)
    await s.append_ops(space, first, NOW)
    before = await s.get_space(space)
    rival = make_op(a, 2)
    (out,) = await s.append_ops(space, [rival], NOW)
    expect_eq((out.status, out.offset, out.existing_op_id), (FORK, 1, first[1].op_id))
    expect_eq(await s.get_space(space), before)
    # A fork inside one batch: the earlier op of the batch holds the seq.
    x, y = make_op(a, 3), make_op(a, 3)
    out2 = await s.append_ops(space, [x, y], NOW)
    expect_eq([(o.status, o.offset, o.existing_op_id) for o in out2], [
        (ACCEPTED, 2, x.op_id), (FORK, 2, x.op_id)])
    expect_eq(len(await s.read_ops(space, -1, 10)), 3)


async def check_append_mixed_batch(h: Harness) -> None:
    """Duplicates and forks in a batch take no offset; the good ops are appended."""
    s = h.storage
    space = await new_space(s)
    a, b = rid(), rid()
    base = chain(a, 1, 2)
    await s.append_ops(space, base, NOW)
    batch = [base[0], make_op(b, 1), make_op(a, 2), make_op(a, 3), make_op(b, 2)]
    out = await s.append_ops(space, batch, NOW)
    expect_eq([(o.status, o.offset) for o in out], [
        (DUPLICATE, 0), (ACCEPTED, 2), (FORK, 1), (ACCEPTED, 3), (ACCEPTED, 4)])
    expect_eq(out[2].existing_op_id, base[1].op_id)
    ops = await s.read_ops(space, -1, 10)
    expect_eq([o.op_id for o in ops], [base[0].op_id, base[1].op_id, batch[1].op_id,
                                      batch[3].op_id, batch[4].op_id])
    await verify_log(s, space)


async def check_append_refuses_chain_gaps(h: Harness) -> None:
    """A free seq that is not head + 1 refuses the whole batch; nothing is stored."""
    s = h.storage
    space = await new_space(s)
    a, b = rid(), rid()
    await raises(StorageConflict, s.append_ops(space, [make_op(a, 1), make_op(b, 2)], NOW),
                 "next seq")
    await raises(StorageConflict, s.append_ops(space, [make_op(a, 1), make_op(a, 3)], NOW))
    record = present(await s.get_space(space))
    expect_eq((record.size, record.root), (0, merkle.EMPTY_ROOT))
    expect_eq(await s.read_ops(space, -1, 10), [])
    snap = await s.chain_snapshot(space, [(a, 1), (b, 1)])
    expect_eq((snap.heads, snap.ids), ({}, {}))
    await s.append_ops(space, chain(a, 1, 2), NOW)
    await raises(StorageConflict, s.append_ops(space, [make_op(b, 1), make_op(a, 4)], NOW))
    expect_eq(len(await s.read_ops(space, -1, 10)), 2)
    await verify_log(s, space)


async def check_append_validates_ops(h: Harness) -> None:
    """A leaf hash that is not the envelope's, or a seq below 1, is a UsageError
    (the first when the op is built: ``OpToAppend`` computes or checks it)."""
    s = h.storage
    space = await new_space(s)
    good = make_op(rid(), 1)
    expect_eq(good.leaf_hash, merkle.leaf_hash(good.envelope))
    expect_eq(OpToAppend(good.envelope, good.op_id, good.author, 1, good.deps).leaf_hash,
              good.leaf_hash)
    try:
        OpToAppend(good.envelope, good.op_id, good.author, 1, good.deps, bytes(32))
    except UsageError as exc:
        if "leaf" not in str(exc):
            raise AssertionError(f"unexpected message: {exc}") from exc
    else:
        raise AssertionError("an OpToAppend with a wrong leaf hash was built")
    zero = make_op(rid(), 1)
    zero = OpToAppend(zero.envelope, zero.op_id, zero.author, 0, zero.deps, zero.leaf_hash)
    await raises(UsageError, s.append_ops(space, [zero], NOW), "seq")
    expect_eq(await s.read_ops(space, -1, 10), [])


async def check_unknown_space(h: Harness) -> None:
    """Ops, proofs, evidence and snapshot writes on an unknown space: NotFoundError."""
    s, space = h.storage, rid()
    evidence = ForkEvidence(space, rid(), 1, b"a", b"b", NOW)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: s.append_ops(space, [make_op(rid(), 1)], NOW),
        lambda: s.read_ops(space, -1, 10),
        lambda: s.leaf_hashes(space, 0, 0),
        lambda: s.merkle_nodes(space, [(0, 0)]),
        lambda: s.chain_snapshot(space, [(rid(), 1)]),
        lambda: s.prune_ops(space, 1),
        lambda: s.record_fork(evidence),
        lambda: s.fork_evidence(space),
        lambda: s.put_snapshot(space, rid(), 0, b"x", NOW),
    ]
    for call in calls:
        await raises(NotFoundError, call())
    expect(await s.get_space(space) is None)
    expect(await s.get_snapshot(space, rid()) is None)


async def check_merkle_log_and_proofs(h: Harness) -> None:
    """After batches of many sizes, the root, nodes and every inclusion and
    consistency proof built from merkle_nodes match an independent recomputation."""
    s = h.storage
    space = await new_space(s)
    authors = [rid() for _ in range(3)]
    seqs = dict.fromkeys(authors, 1)
    history: list[tuple[int, bytes]] = [(0, merkle.EMPTY_ROOT)]
    for k, count in enumerate((1, 1, 2, 3, 5, 8, 13, 1, 7)):
        author = authors[k % 3]
        await s.append_ops(space, chain(author, seqs[author], count), NOW)
        seqs[author] += count
        record = present(await s.get_space(space))
        history.append((record.size, record.root))
    expect_eq(history[-1][0], 41)
    await verify_log(s, space, history)


async def check_large_batch(h: Harness) -> None:
    """A 1000-op batch is one append; the log recomputes."""
    s = h.storage
    space = await new_space(s)
    authors = [rid() for _ in range(10)]
    batch = [make_op(authors[i % 10], i // 10 + 1, 64) for i in range(1000)]
    out = await s.append_ops(space, batch, NOW)
    expect_eq([o.offset for o in out], list(range(1000)))
    record = present(await s.get_space(space))
    expect_eq(record.size, 1000)
    leaves = await s.leaf_hashes(space, 0, 1000)
    expect_eq(leaves, [op.leaf_hash for op in batch])
    expect_eq(record.root, merkle.root_of(leaves))


async def check_concurrent_appends(h: Harness) -> None:
    """THREATS #24 within one instance: 8 tasks x 25 single-op batches."""
    space = await new_space(h.storage)
    await check_concurrent([h.storage], space, 8, 25)


async def check_concurrent_appends_two_nodes(h: Harness) -> None:
    """THREATS #24 across two instances (two pools / connections, like two relay
    nodes); and one op or two rival ops raced through both nodes."""
    space = await new_space(h.storage)
    peer = h.new_peer()
    await peer.open()
    try:
        await check_concurrent([h.storage, peer], space, 8, 12)
        a = rid()
        for seq in range(1, 11, 2):
            same = make_op(a, seq)
            outs = await asyncio.gather(h.storage.append_ops(space, [same], NOW),
                                        peer.append_ops(space, [same], NOW))
            got = sorted((o.status.value, o.offset) for (o,) in outs)
            expect([st for st, _ in got] == ["accepted", "duplicate"] and got[0][1] == got[1][1])
            x, y = make_op(a, seq + 1), make_op(a, seq + 1)
            (ox,), (oy,) = await asyncio.gather(h.storage.append_ops(space, [x], NOW),
                                                peer.append_ops(space, [y], NOW))
            expect_eq({ox.status, oy.status}, {ACCEPTED, FORK})
            winner = x if ox.status is ACCEPTED else y
            expect(ox.existing_op_id == oy.existing_op_id == winner.op_id)
            expect_eq(ox.offset, oy.offset)
        await verify_log(peer, space)
    finally:
        await peer.close()


async def check_chain_snapshot(h: Harness) -> None:
    """Heads are each author's last (seq, op_id, deps); ids only for stored pairs."""
    s = h.storage
    space = await new_space(s)
    a, b, c = rid(), rid(), rid()
    ops_a = chain(a, 1, 3)
    last_b = make_op(b, 2, deps={"x": 1})
    first_b = make_op(b, 1)
    await s.append_ops(space, [*ops_a, first_b, last_b], NOW)
    snap = await s.chain_snapshot(space, [(a, 2), (a, 4), (b, 1), (c, 1), (a, 2)])
    expect_eq(snap.heads, {a: (3, ops_a[2].op_id, ops_a[2].deps),
                          b: (2, last_b.op_id, encode({"x": 1}))})
    expect_eq(snap.ids, {(a, 2): ops_a[1].op_id, (b, 1): first_b.op_id})
    empty = await s.chain_snapshot(space, [])
    expect_eq((empty.heads, empty.ids), ({}, {}))


async def check_op_by_author_seq(h: Harness) -> None:
    """The stored op at (author, seq) for fork evidence; None when absent; pruned
    ops come back without their envelope."""
    s = h.storage
    space = await new_space(s)
    a = rid()
    ops = chain(a, 1, 3)
    await s.append_ops(space, [make_op(rid(), 1), *ops], NOW + 4)
    got = present(await s.op_by_author_seq(space, a, 2))
    expect_eq((got.offset, got.op_id, got.author, got.seq, got.leaf_hash, got.envelope,
            got.received_ms), (2, ops[1].op_id, a, 2, ops[1].leaf_hash, ops[1].envelope,
                                 NOW + 4))
    expect(await s.op_by_author_seq(space, a, 4) is None)
    expect(await s.op_by_author_seq(space, rid(), 1) is None)
    await s.prune_ops(space, 3)
    pruned = present(await s.op_by_author_seq(space, a, 2))
    expect(pruned.envelope is None and pruned.op_id == ops[1].op_id)
    await raises(NotFoundError, s.op_by_author_seq(rid(), a, 1))


async def check_read_ops_pagination(h: Harness) -> None:
    """read_ops(after, limit) pages through the log in ascending order."""
    s = h.storage
    space = await new_space(s)
    await s.append_ops(space, chain(rid(), 1, 23), NOW)
    pages, after = [], -1
    while page := await s.read_ops(space, after, 5):
        expect(len(page) <= 5)
        pages.append([o.offset for o in page])
        after = page[-1].offset
    expect_eq(pages, [list(range(i, min(i + 5, 23))) for i in range(0, 23, 5)])
    expect_eq(await s.read_ops(space, -1, 0), [])
    expect_eq([o.offset for o in await s.read_ops(space, 20, 100)], [21, 22])
    expect_eq(await s.read_ops(space, 22, 100), [])
    expect_eq(await s.leaf_hashes(space, 3, 3), [])
    expect_eq(len(await s.leaf_hashes(space, 3, 23)), 20)
    await raises(UsageError, s.leaf_hashes(space, 0, 24))
    await raises(UsageError, s.leaf_hashes(space, 5, 4))


async def check_prune_keeps_proofs(h: Harness) -> None:
    """prune_ops drops envelopes only; hashes, nodes, root and proofs survive."""
    s = h.storage
    space = await new_space(s)
    ops = chain(rid(), 1, 21)
    await s.append_ops(space, ops, NOW)
    before = present(await s.get_space(space))
    tree = await verify_log(s, space)
    expect_eq(await s.prune_ops(space, 13), 13)
    expect_eq(await s.prune_ops(space, 13), 0)
    stored = await s.read_ops(space, -1, 100)
    expect_eq([o.envelope for o in stored[:13]], [None] * 13)
    expect_eq([o.envelope for o in stored[13:]], [op.envelope for op in ops[13:]])
    expect_eq([o.leaf_hash for o in stored], [op.leaf_hash for op in ops])
    expect_eq(await s.get_space(space), before)
    expect_eq((await verify_log(s, space, [(before.size, before.root)])).root(), tree.root())
    snap = await s.chain_snapshot(space, [(ops[0].author, 1)])
    expect_eq(snap.ids, {(ops[0].author, 1): ops[0].op_id})
    expect_eq(await s.prune_ops(space, 1000), 8)
    await s.append_ops(space, [make_op(ops[0].author, 22)], NOW)
    await verify_log(s, space, [(before.size, before.root)])


async def check_fork_evidence(h: Harness) -> None:
    """Evidence round-trips, oldest first; recording the same pair twice keeps one."""
    s = h.storage
    space = await new_space(s)
    expect_eq(await s.fork_evidence(space), [])
    author = rid()
    first = ForkEvidence(space, author, 3, b"accepted" * 20, b"refused-1", NOW + 2)
    second = ForkEvidence(space, author, 3, b"accepted" * 20, b"refused-2", NOW + 7)
    await s.record_fork(first)
    await s.record_fork(second)
    await s.record_fork(first)
    expect_eq(await s.fork_evidence(space), [first, second])
    other = await new_space(s)
    expect_eq(await s.fork_evidence(other), [])


async def check_snapshots(h: Harness) -> None:
    """A snapshot is replaced by one covering at least as much, never by an older one."""
    s = h.storage
    space = await new_space(s)
    doc, doc2 = rid(), rid()
    expect(await s.get_snapshot(space, doc) is None)
    await s.put_snapshot(space, doc, 5, b"five", NOW)
    await s.put_snapshot(space, doc, 3, b"three", NOW + 1)
    expect_eq(await s.get_snapshot(space, doc), (5, b"five"))
    await s.put_snapshot(space, doc, 9, b"nine", NOW + 2)
    expect_eq(await s.get_snapshot(space, doc), (9, b"nine"))
    await s.put_snapshot(space, doc, 9, b"nine-rekeyed", NOW + 3)
    expect_eq(await s.get_snapshot(space, doc), (9, b"nine-rekeyed"))
    await s.put_snapshot(space, doc2, 1, b"other doc", NOW)
    expect_eq(await s.get_snapshot(space, doc), (9, b"nine-rekeyed"))
    expect_eq(await s.get_snapshot(space, doc2), (1, b"other doc"))


async def check_snapshot_chunks(h: Harness) -> None:
    """Chunks are stored once per (space, id), listed with their time, read back,
    deleted by id (absent ids ignored), and kept apart per space."""
    s = h.storage
    space, other = await new_space(s), await new_space(s)
    a, b = rid(32), rid(32)
    expect(await s.get_snapshot_chunk(space, a) is None)
    expect_eq(await s.snapshot_chunks(space), {})
    await s.put_snapshot_chunk(space, a, b"chunk a", NOW)
    await s.put_snapshot_chunk(space, a, b"chunk a", NOW + 5)  # again: a no-op
    await s.put_snapshot_chunk(space, b, b"chunk b" * 1000, NOW + 1)
    expect_eq(await s.get_snapshot_chunk(space, a), b"chunk a")
    expect_eq(await s.get_snapshot_chunk(space, b), b"chunk b" * 1000)
    expect_eq(await s.snapshot_chunks(space), {a: NOW, b: NOW + 1})
    expect(await s.get_snapshot_chunk(other, a) is None, "chunks are per space")
    expect_eq(await s.delete_snapshot_chunks(space, [a, rid(32)]), 1)
    expect_eq(await s.delete_snapshot_chunks(space, []), 0)
    expect_eq(await s.snapshot_chunks(space), {b: NOW + 1})
    await raises(NotFoundError, s.put_snapshot_chunk(rid(), a, b"x", NOW))


async def check_snapshot_attestations(h: Harness) -> None:
    """A device's verdict on a snapshot replaces its earlier one; verdicts are
    read per (space, doc, snapshot) ordered by attester; stale ones are dropped
    by keeping a list of snapshot ids."""
    s = h.storage
    space = await new_space(s)
    doc, snap1, snap2 = rid(), rid(32), rid(32)
    x, y = sorted([rid(32), rid(32)])
    expect_eq(await s.snapshot_attestations(space, doc, snap1), [])
    await s.put_snapshot_attestation(space, doc, snap1, y, "match", b"y says match", NOW)
    await s.put_snapshot_attestation(space, doc, snap1, x, "match", b"x says match", NOW)
    await s.put_snapshot_attestation(space, doc, snap1, x, "mismatch", b"x changed", NOW + 1)
    await s.put_snapshot_attestation(space, doc, snap2, x, "match", b"x on snap2", NOW + 2)
    expect_eq(await s.snapshot_attestations(space, doc, snap1),
              [(x, "mismatch", b"x changed"), (y, "match", b"y says match")])
    expect_eq(await s.snapshot_attestations(space, rid(), snap1), [], "per doc")
    expect_eq(await s.delete_snapshot_attestations(space, doc, [snap2]), 2)
    expect_eq(await s.snapshot_attestations(space, doc, snap1), [])
    expect_eq(await s.snapshot_attestations(space, doc, snap2), [(x, "match", b"x on snap2")])
    expect_eq(await s.delete_snapshot_attestations(space, doc, [snap2]), 0)
    await raises(NotFoundError, s.put_snapshot_attestation(rid(), doc, snap1, x, "match",
                                                           b"a", NOW))


async def check_first_sync_reads(h: Harness) -> None:
    """first_sync_reads gives what the separate reads give: the key packages,
    the requested docs' snapshots, their doc ids' attestations by snapshot id,
    the log after the oldest snapshot (bounded), and the space after them."""
    s = h.storage
    space = await new_space(s)
    author, x, y = rid(), *sorted([rid(32), rid(32)])
    current, copy, absent, other = rid(), rid(), rid(), rid()
    await raises(NotFoundError, s.first_sync_reads(rid(), [current], 10))
    await raises(UsageError, s.first_sync_reads(space, [current], -1))
    empty = await s.first_sync_reads(space, [current, copy], 10)
    expect_eq((empty.key_packages, empty.snapshots, empty.attestations, empty.after,
               empty.ops), ([], {}, {}, -1, []))
    expect_eq(empty.space, await s.get_space(space))
    for epoch in range(3):
        await s.put_key_package(space, epoch, b"p%d" % epoch, NOW + epoch)
    await s.append_ops(space, chain(author, 1, 12), NOW)
    await s.put_snapshot(space, current, 8, b"current", NOW)
    await s.put_snapshot(space, copy, 4, b"older copy", NOW)
    await s.put_snapshot(space, other, 1, b"not asked for", NOW)
    snap = rid(32)
    await s.put_snapshot_attestation(space, current, snap, y, "match", b"y", NOW)
    await s.put_snapshot_attestation(space, current, snap, x, "mismatch", b"x", NOW)
    await s.put_snapshot_attestation(space, other, snap, x, "match", b"elsewhere", NOW)
    for limit in (0, 3, 100):
        got = await s.first_sync_reads(space, [current, copy, absent], limit)
        expect_eq(got.key_packages, await s.key_packages(space))
        expect_eq(got.snapshots, {current: (8, b"current"), copy: (4, b"older copy")})
        expect_eq(got.attestations, {(current, snap): [b"x", b"y"]}, "by attester")
        expect_eq(got.after, 4, "the oldest snapshot's cover")
        expect_eq(got.ops, await s.read_ops(space, 4, limit), "after the oldest snapshot")
        expect_eq(got.space, await s.get_space(space))
    only = await s.first_sync_reads(space, [current], 100)
    expect_eq((only.after, [o.offset for o in only.ops]), (8, [9, 10, 11]))


async def check_acks_only_move_forward(h: Harness) -> None:
    """Acknowledgements are per device, monotonic, and bounded by the log."""
    s = h.storage
    space = await new_space(s)
    author, dev_a, dev_b = rid(), rid(), rid()
    await s.append_ops(space, [make_op(author, i) for i in range(1, 6)], NOW)
    expect_eq(await s.acks(space), {}, "acks of a new space")
    expect_eq(await s.set_ack(space, dev_a, 3, NOW), 3, "first ack")
    expect_eq(await s.set_ack(space, dev_a, 1, NOW + 1), 3, "an older ack does not win")
    expect_eq(await s.set_ack(space, dev_b, -1, NOW), -1, "nothing applied yet")
    expect_eq(await s.acks(space), {dev_a: 3, dev_b: -1}, "acks")
    await raises(UsageError, s.set_ack(space, dev_a, 5, NOW), "5")  # the log has 0..4
    await raises(NotFoundError, s.set_ack(rid(), dev_a, 0, NOW))
    await raises(NotFoundError, s.acks(rid()))


async def _open_pairing(s: RelayStorage, now: int = NOW, ttl: int = 60_000
                        ) -> tuple[bytes, int, bytes, bytes]:
    """A channel claimed by a joiner: ``(channel, nameplate, initiator, joiner)`` tokens."""
    channel, initiator, joiner = rid(), rid(32), rid(32)
    nameplate = await s.create_channel(channel, initiator, now, now + ttl, now + 2 * ttl)
    expect_eq(await s.claim_channel(nameplate, joiner, now),
              PairingChannel(channel, now + ttl), "claim")
    return channel, nameplate, initiator, joiner


async def check_pairing_channel(h: Harness) -> None:
    """Numbered channels; the joiner slot goes to the first claim (a retry of it
    is answered again); messages alternate joiner first, each in its slot; a
    repeated post is answered as stored; a stranger's token holds no slot."""
    s = h.storage
    channel, nameplate, initiator, joiner = await _open_pairing(s)
    expect_eq(nameplate, 1, "the first number")
    await raises(StorageConflict, s.create_channel(channel, rid(32), NOW, NOW + 1, NOW + 2))
    second = rid(32)
    expect_eq(await s.create_channel(rid(), second, NOW, NOW + 60_000, NOW + 120_000), 2,
              "the next free number")
    await raises(UsageError, s.claim_channel(2, second, NOW), "its own")
    expect_eq(await s.claim_channel(nameplate, joiner, NOW + 1),
              PairingChannel(channel, NOW + 60_000), "a retried claim")
    expect_eq(await s.channel_messages(channel, initiator, -1, NOW), [])
    sent = [(0, joiner, "joiner", b"commit"), (1, initiator, "initiator", b"pake"),
            (2, joiner, "joiner", b"reveal")]
    for index, token, role, body in sent:
        expect_eq(await s.post_channel_message(channel, token, index, body, NOW, 16),
                  PairingMessage(index, role, body), f"post {index}")
    expect_eq(await s.post_channel_message(channel, initiator, 1, b"pake", NOW, 16),
              PairingMessage(1, "initiator", b"pake"), "a retried post")
    for token in (initiator, joiner):
        msgs = await s.channel_messages(channel, token, -1, NOW)
        expect_eq([(m.index, m.sender, m.body) for m in msgs],
                  [(i, r, b) for i, _, r, b in sent], "messages")
    expect_eq([m.index for m in await s.channel_messages(channel, joiner, 0, NOW)], [1, 2])
    await raises(AuthenticationError, s.channel_messages(channel, rid(32), -1, NOW))
    await raises(AuthenticationError, s.post_channel_message(channel, rid(32), 3, b"x", NOW,
                                                             16))
    await raises(StorageConflict, s.post_channel_message(rid(), joiner, 0, b"x", NOW, 16))
    await raises(StorageConflict, s.channel_messages(rid(), joiner, -1, NOW))
    await raises(NotFoundError, s.claim_channel(999, rid(32), NOW), "no pairing numbered")


async def check_pairing_out_of_order_or_changed_burns(h: Harness) -> None:
    """A post out of turn, ahead of the next index, changing a posted message or
    beyond the limit is refused and burns the channel: nothing can be chosen
    after seeing the other side's message, and one code is one attempt."""
    s = h.storage
    attempts = [  # (messages posted first, then the refused post), by slot
        ([], ("initiator", 0, b"pake first"), "the new device's to send"),
        ([("joiner", 0, b"commit")], ("joiner", 1, b"reveal early"), "approving device's to"),
        ([("joiner", 0, b"commit")], ("joiner", 2, b"reveal early"), "before message 1"),
        ([("joiner", 0, b"commit"), ("initiator", 1, b"pake")],
         ("joiner", 0, b"another commit"), "cannot be changed"),
        ([("joiner", 0, b"commit"), ("initiator", 1, b"pake")],
         ("initiator", 1, b"another pake"), "cannot be changed"),
        ([("joiner", 0, b"a"), ("initiator", 1, b"b")], ("joiner", 2, b"c"), "full"),
    ]
    for before, (role, index, body), why in attempts:
        channel, _, initiator, joiner = await _open_pairing(s)
        token = {"initiator": initiator, "joiner": joiner}
        for r, i, b in before:
            await s.post_channel_message(channel, token[r], i, b, NOW, 2)
        await raises(StorageConflict, s.post_channel_message(channel, token[role], index, body,
                                                             NOW, 2), why)
        for t in (initiator, joiner):  # burnt: both sides are told why
            await raises(StorageConflict, s.channel_messages(channel, t, -1, NOW),
                         "out of order or changed")
        await raises(StorageConflict, s.post_channel_message(channel, joiner, len(before),
                                                             b"x", NOW, 2))


async def check_pairing_second_claim_burns(h: Harness) -> None:
    """A second device claiming a claimed number is refused ("someone else used
    this pairing code") and burns the channel for everyone."""
    s = h.storage
    channel, nameplate, initiator, joiner = await _open_pairing(s)
    await s.post_channel_message(channel, joiner, 0, b"commit", NOW, 16)
    await raises(StorageConflict, s.claim_channel(nameplate, rid(32), NOW), "someone else")
    for token in (initiator, joiner):
        await raises(StorageConflict, s.channel_messages(channel, token, -1, NOW),
                     "someone else used this pairing code")
    await raises(StorageConflict, s.post_channel_message(channel, initiator, 1, b"p", NOW, 16))
    await raises(StorageConflict, s.claim_channel(nameplate, joiner, NOW), "someone else")


async def check_pairing_numbers_unique_across_nodes(h: Harness) -> None:
    """Channels opened at once through two instances (two relay nodes) get
    distinct numbers, 1 to n; two claims of one number at once: one slot holder."""
    peer = h.new_peer()
    await peer.open()
    try:
        opened = await asyncio.gather(*(
            node.create_channel(rid(), rid(32), NOW, NOW + 60_000, NOW + 120_000)
            for _ in range(6) for node in (h.storage, peer)))
        expect_eq(sorted(opened), list(range(1, 13)), "numbers")
        claims = await asyncio.gather(h.storage.claim_channel(1, rid(32), NOW),
                                      peer.claim_channel(1, rid(32), NOW),
                                      return_exceptions=True)
        refused = [c for c in claims if isinstance(c, StorageConflict)]
        expect_eq(len(refused), 1, f"refused claims of {claims!r}")
    finally:
        await peer.close()


async def check_pairing_expiry_and_burn(h: Harness) -> None:
    """Expired and burnt channels refuse claims, reads and posts, saying why; the
    first burn's reason and side stay; numbers are reused only once released."""
    s = h.storage
    short, nameplate, initiator, joiner = await _open_pairing(s, ttl=100)
    expect_eq((await s.post_channel_message(short, joiner, 0, b"m", NOW + 99, 5)).index, 0)
    await raises(StorageConflict, s.post_channel_message(short, initiator, 1, b"m", NOW + 100,
                                                         5), "expired")
    await raises(StorageConflict, s.channel_messages(short, joiner, -1, NOW + 100), "expired")
    await raises(StorageConflict, s.claim_channel(nameplate, rid(32), NOW + 100), "expired")
    expect_eq(len(await s.channel_messages(short, joiner, -1, NOW + 99)), 1)
    # The number stays reserved until the reservation ends, then is reused.
    expect_eq(await s.create_channel(rid(), rid(32), NOW + 150, NOW + 1_000, NOW + 2_000), 2)
    expect_eq(await s.create_channel(rid(), rid(32), NOW + 200, NOW + 1_000, NOW + 2_000), 1)
    burnt, nameplate, initiator, joiner = await _open_pairing(s)
    await raises(UsageError, s.burn_channel(burnt, joiner, "nonsense"))
    await raises(AuthenticationError, s.burn_channel(burnt, rid(32), "failed"))
    await s.burn_channel(burnt, joiner, "cancelled")
    await s.burn_channel(burnt, initiator, "failed")
    await s.burn_channel(rid(), joiner, "done")
    for token in (initiator, joiner):
        await raises(StorageConflict, s.channel_messages(burnt, token, -1, NOW),
                     "cancelled on the new device")
    await raises(StorageConflict, s.post_channel_message(burnt, initiator, 0, b"m", NOW, 5))
    await raises(StorageConflict, s.claim_channel(nameplate, rid(32), NOW), "cancelled")
    await raises(StorageConflict, s.create_channel(burnt, rid(32), NOW, NOW + 1, NOW + 2))


# ------------------------------------------------------------ passphrase backups
OK_, WRONG, LOCKED = BackupAttemptStatus.OK, BackupAttemptStatus.WRONG, BackupAttemptStatus.LOCKED


def make_backup_record(account: bytes, blob: bytes = b"blob", verifier_hash: bytes = b"v" * 32,
                       stored_ms: int = NOW) -> StoredBackup:
    """A backup row (the storage does not interpret the blob)."""
    return StoredBackup(account, "argon2id", 3, 65536, 4, b"s" * 16, verifier_hash, blob,
                        stored_ms)


async def check_backup_put_get_delete(h: Harness) -> None:
    """One backup per account; a put replaces it; delete removes it (idempotent)."""
    s, account, other = h.storage, rid(32), rid(32)
    expect(await s.get_backup(account) is None, "no backup yet")
    first = make_backup_record(account)
    await s.put_backup(first)
    expect_eq(await s.get_backup(account), first, "stored backup")
    second = StoredBackup(account, "argon2id", 4, 131072, 2, b"t" * 32, b"w" * 32,
                          b"blob-2" * 100, NOW + 5)
    await s.put_backup(second)
    expect_eq(await s.get_backup(account), second, "replaced backup")
    expect(await s.get_backup(other) is None, "backups are per account")
    policy = BackupLockPolicy(5, 1000, 8000)
    await raises(NotFoundError, s.backup_attempt(other, b"w" * 32, NOW, policy))
    ok = await s.backup_attempt(account, b"w" * 32, NOW, policy)
    expect_eq((ok.status, ok.blob, ok.state), (OK_, second.blob, BackupAttemptState()))
    expect(await s.delete_backup(account) is True, "deleted")
    expect(await s.delete_backup(account) is False, "second delete is a no-op")
    expect(await s.get_backup(account) is None, "gone")
    await raises(NotFoundError, s.backup_attempt(account, b"w" * 32, NOW, policy))


async def check_backup_accounts_by_prefix(h: Harness) -> None:
    """A fingerprint's 20 bytes find the accounts with a backup whose id starts with
    them, in id order, at most ``limit``; ids that only share a shorter prefix, and
    accounts without a backup, are not found."""
    s = h.storage
    prefix = rid(20)
    low, high = prefix + bytes(12), prefix + b"\xff" * 12
    near = prefix[:19] + bytes([(prefix[19] + 1) % 256]) + bytes(12)  # another prefix
    for account in (high, low, near):
        await s.put_backup(make_backup_record(account))
    expect_eq(await s.backup_accounts(prefix, limit=2), [low, high], "both, in order")
    expect_eq(await s.backup_accounts(prefix, limit=1), [low], "limit")
    expect_eq(await s.backup_accounts(rid(20)), [], "no backup with that prefix")
    await s.delete_backup(low)
    expect_eq(await s.backup_accounts(prefix), [high], "a deleted backup is not found")


async def check_accounts_by_prefix(h: Harness) -> None:
    """A fingerprint's 20 bytes find the accounts whose id starts with them, in id
    order, at most ``limit``; an id sharing a shorter prefix is not found."""
    s = h.storage
    prefix = rid(20)
    low, high = prefix + bytes(12), prefix + b"\xff" * 12
    near = prefix[:19] + bytes([(prefix[19] + 1) % 256]) + bytes(12)
    for account in (high, low, near):
        expect(await s.create_account(account, b"genesis", NOW), "created")
    expect_eq(await s.accounts_by_prefix(prefix, limit=2), [low, high], "both, in order")
    expect_eq(await s.accounts_by_prefix(prefix, limit=1), [low], "limit")
    expect_eq(await s.accounts_by_prefix(rid(20)), [], "no account with that prefix")


async def check_backup_lockout_doubles_and_persists(h: Harness) -> None:
    """Wrong verifiers lock the backup after max_failures, for a duration that
    doubles up to the cap; a locked backup refuses even the right verifier; the
    state survives a reopen (another node) and a replacement, and a success
    resets it."""
    s, account = h.storage, rid(32)
    right, wrong = b"r" * 32, b"x" * 32
    await s.put_backup(make_backup_record(account, verifier_hash=right))
    policy = BackupLockPolicy(3, 1000, 5000)
    now = NOW
    a = await s.backup_attempt(account, wrong, now, policy)
    expect_eq((a.status, a.retry_after_ms, a.blob, a.state.failures), (WRONG, 0, None, 1))
    a = await s.backup_attempt(account, wrong, now, policy)
    expect_eq((a.status, a.retry_after_ms, a.state.failures), (WRONG, 0, 2))
    a = await s.backup_attempt(account, wrong, now, policy)
    expect_eq((a.status, a.retry_after_ms, a.state), (WRONG, 1000,
                                                      BackupAttemptState(0, 1, now + 1000)))
    a = await s.backup_attempt(account, right, now + 400, policy)
    expect_eq((a.status, a.retry_after_ms, a.blob), (LOCKED, 600, None), "right but locked")
    # the lock is in the database: another node (a restarted relay) sees it
    peer = h.new_peer()
    try:
        await peer.open()
        a = await peer.backup_attempt(account, right, now + 500, policy)
        expect_eq((a.status, a.retry_after_ms), (LOCKED, 500), "lock after reopen")
        # replacing the backup keeps the lock
        await peer.put_backup(make_backup_record(account, b"new blob", right, now + 600))
        a = await peer.backup_attempt(account, right, now + 600, policy)
        expect_eq((a.status, a.retry_after_ms), (LOCKED, 400), "lock after replacement")
    finally:
        await peer.close()
    # after the lock: three more failures lock for twice as long, then the cap
    for lockouts, duration in ((2, 2000), (3, 4000), (4, 5000), (5, 5000)):
        now = a.state.locked_until_ms  # the previous lock has just ended
        for _ in range(2):
            a = await s.backup_attempt(account, wrong, now, policy)
            expect_eq((a.status, a.retry_after_ms), (WRONG, 0))
        a = await s.backup_attempt(account, wrong, now, policy)
        expect_eq((a.status, a.retry_after_ms, a.state),
                  (WRONG, duration, BackupAttemptState(0, lockouts, now + duration)),
                  f"lockout {lockouts}")
    a = await s.backup_attempt(account, right, a.state.locked_until_ms, policy)
    expect_eq((a.status, a.blob, a.state), (OK_, b"new blob", BackupAttemptState()),
              "a success resets failures and lockouts")
    a = await s.backup_attempt(account, wrong, now, policy)
    expect_eq((a.status, a.state.failures, a.state.lockouts), (WRONG, 1, 0))
    # deleting drops the attempt state with the backup
    await s.delete_backup(account)
    await s.put_backup(make_backup_record(account, verifier_hash=right))
    for _ in range(2):
        await s.backup_attempt(account, wrong, now, policy)
    await s.delete_backup(account)
    await s.put_backup(make_backup_record(account, verifier_hash=right))
    a = await s.backup_attempt(account, wrong, now, policy)
    expect_eq((a.status, a.state.failures), (WRONG, 1), "fresh state after delete")


async def check_backup_concurrent_attempts(h: Harness) -> None:
    """Concurrent wrong guesses, from two nodes, are counted one by one: exactly
    max_failures are checked, every later one is refused as locked."""
    s, account = h.storage, rid(32)
    await s.put_backup(make_backup_record(account, verifier_hash=b"r" * 32))
    policy = BackupLockPolicy(3, 60_000, 60_000)
    peer = h.new_peer()
    try:
        await peer.open()
        attempts = await asyncio.gather(*(
            (s if i % 2 else peer).backup_attempt(account, bytes([i]) * 32, NOW, policy)
            for i in range(12)))
    finally:
        await peer.close()
    statuses_ = sorted(a.status.value for a in attempts)
    expect_eq(statuses_, ["locked"] * 9 + ["wrong"] * 3, "attempt outcomes")
    expect_eq(sum(1 for a in attempts if a.status is WRONG and a.retry_after_ms), 1,
              "exactly one attempt locked the backup")
    a = await s.backup_attempt(account, b"r" * 32, NOW + 1, policy)
    expect_eq(a.status, LOCKED)


async def check_backup_sources(h: Harness) -> None:
    """Per-source attempts: a source that guessed wrong locks itself and, with the
    account-wide count, the account; while the account is locked a source that has
    not guessed wrong still gets one attempt (the owner's way in); the state is
    in the database (another node sees it); a success resets the account and that
    source; old source state is forgotten; deleting the backup drops it."""
    s, account = h.storage, rid(32)
    right, wrong = b"r" * 32, b"x" * 32
    await s.put_backup(make_backup_record(account, verifier_hash=right))
    policy = BackupLockPolicy(3, 1000, 5000)
    a_src, b_src, c_src, d_src = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", b"c", b"d"
    outcomes = [await s.backup_attempt(account, wrong, NOW, policy, source=a_src)
                for _ in range(4)]
    expect_eq([o.status for o in outcomes], [WRONG, WRONG, WRONG, LOCKED], "one source")
    expect_eq(outcomes[2].retry_after_ms, 1000, "the third wrong guess locks")
    expect_eq(outcomes[2].state, BackupAttemptState(0, 1, NOW + 1000), "account state")
    peer = h.new_peer()
    try:
        await peer.open()
        first = await peer.backup_attempt(account, wrong, NOW + 1, policy, source=b_src)
        again = await peer.backup_attempt(account, wrong, NOW + 2, policy, source=b_src)
    finally:
        await peer.close()
    expect_eq((first.status, again.status, again.retry_after_ms), (WRONG, LOCKED, 998),
              "a clean source gets one guess during the account lock")
    ok = await s.backup_attempt(account, right, NOW + 3, policy, source=c_src)
    expect_eq((ok.status, ok.state), (OK_, BackupAttemptState()), "the owner gets in")
    expect(ok.blob is not None, "with the blob")
    still = await s.backup_attempt(account, right, NOW + 4, policy, source=a_src)
    expect_eq((still.status, still.retry_after_ms), (LOCKED, 996), "a locked source stays locked")
    later = NOW + 1000 + policy.max_lockout_ms + 1  # a's lock and the memory of it are over
    back = await s.backup_attempt(account, right, later, policy, source=a_src)
    expect_eq(back.status, OK_, "forgotten after max_lockout_ms")
    await s.backup_attempt(account, wrong, later, policy, source=d_src)
    expect(await s.delete_backup(account), "deleted")
    await s.put_backup(make_backup_record(account, verifier_hash=right))
    fresh = await s.backup_attempt(account, wrong, later, policy, source=d_src)
    expect_eq((fresh.status, fresh.state.failures), (WRONG, 1), "fresh state after delete")


# ------------------------------------------------------------------ controller
async def check_report_digests(h: Harness) -> None:
    """A report digest is new once per device; another node sees it; digests older
    than keep_ms are forgotten; concurrent inserts of one digest have one winner."""
    s, account, dev, other = h.storage, rid(32), rid(32), rid(32)
    expect(await s.remember_report(account, dev, b"d1", NOW, 1000), "new")
    expect(not await s.remember_report(account, dev, b"d1", NOW + 1, 1000), "a copy")
    expect(await s.remember_report(account, other, b"d1", NOW + 1, 1000), "per device")
    peer = h.new_peer()
    try:
        await peer.open()
        expect(not await peer.remember_report(account, dev, b"d1", NOW + 2, 1000),
               "a copy on another node")
        wins = await asyncio.gather(*(
            (s if i % 2 else peer).remember_report(account, dev, b"race", NOW + 3, 1000)
            for i in range(8)))
    finally:
        await peer.close()
    expect_eq(sorted(wins), [False] * 7 + [True], "one winner")
    expect(await s.remember_report(account, dev, b"d1", NOW + 1001, 1000), "forgotten")


async def check_registry_entry_times(h: Harness) -> None:
    """The relay's time of storing each registry entry is kept."""
    s, account = h.storage, rid()
    await s.create_account(account, b"g", NOW)
    await s.append_registry_entry(account, 1, b"e1", NOW + 7)
    expect_eq(await s.registry_entry_stored_ms(account, 0), NOW)
    expect_eq(await s.registry_entry_stored_ms(account, 1), NOW + 7)
    expect(await s.registry_entry_stored_ms(account, 2) is None, "no such entry")
    expect(await s.registry_entry_stored_ms(rid(), 0) is None, "no such account")


async def check_posture_newer_wins(h: Harness) -> None:
    """A posture report replaces the stored one only if it is newer; per device."""
    s = h.storage
    account, d1, d2 = rid(32), rid(32), rid(32)
    expect(await s.put_posture(account, d1, b"first", NOW, NOW))
    expect(not await s.put_posture(account, d1, b"older", NOW - 1, NOW + 1))
    expect(not await s.put_posture(account, d1, b"same-ts", NOW, NOW + 1))
    expect(await s.put_posture(account, d1, b"newer", NOW + 5, NOW + 6))
    expect(await s.put_posture(account, d2, b"other", NOW, NOW))
    got = await s.postures(account)
    expect_eq(sorted(got), sorted([d1, d2]))
    expect_eq((got[d1].report, got[d1].ts_ms, got[d1].received_ms), (b"newer", NOW + 5, NOW + 6))
    expect_eq(await s.postures(rid(32)), {})


async def check_signals_window_and_prune(h: Harness) -> None:
    """Signals come back per device, from a time on, oldest first; pruning drops old ones."""
    s = h.storage
    account, dev, other = rid(32), rid(32), rid(32)
    await s.record_signal(account, dev, "ops", NOW + 20, 7)
    await s.record_signal(account, dev, "fork", NOW)
    await s.record_signal(account, dev, "sig_failure", NOW + 10, 2)
    await s.record_signal(account, other, "ops", NOW + 10, 1)
    got = await s.signals(account, dev, NOW + 5)
    expect_eq([(r.kind, r.ts_ms, r.count) for r in got],
              [("sig_failure", NOW + 10, 2), ("ops", NOW + 20, 7)])
    await raises(UsageError, s.record_signal(account, dev, "ops", NOW, 0))
    expect_eq(await s.prune_signals(NOW + 15), 3)
    expect_eq([r.kind for r in await s.signals(account, dev, 0)], ["ops"])


async def check_controller_state(h: Harness) -> None:
    """Detector state is stored per (account, device) and replaced whole."""
    s = h.storage
    account, dev = rid(32), rid(32)
    expect(await s.get_controller_state(account, dev) is None)
    await s.put_controller_state(account, dev, b"one", NOW)
    await s.put_controller_state(account, b"", b"account", NOW)
    await s.put_controller_state(account, dev, b"two", NOW + 1)
    expect_eq(await s.get_controller_state(account, dev), b"two")
    expect_eq(await s.get_controller_state(account, b""), b"account")


async def check_alerts_and_ack(h: Harness) -> None:
    """Alerts are stored once, listed oldest first, and the first acknowledgement stays."""
    s = h.storage
    account, dev, acker = rid(32), rid(32), rid(32)
    a1 = AlertRecord(rid(16), account, dev, "fork", "critical", "two ops at seq 3", True, NOW)
    a2 = AlertRecord(rid(16), account, b"", "correlated", "high", "two devices", False, NOW + 1)
    expect(await s.put_alert(a2))
    expect(await s.put_alert(a1))
    expect(not await s.put_alert(a1))
    expect_eq(await s.alerts(account), [a1, a2])
    expect_eq(await s.alerts(account, since_ms=NOW + 1), [a2])
    acked = present(await s.ack_alert(account, a1.alert_id, acker, NOW + 9))
    expect_eq((acked.acked_ms, acked.acked_by), (NOW + 9, acker))
    again = present(await s.ack_alert(account, a1.alert_id, rid(32), NOW + 20))
    expect_eq((again.acked_ms, again.acked_by), (NOW + 9, acker))
    expect(await s.ack_alert(rid(32), a1.alert_id, acker, NOW) is None)
    expect_eq(await s.alerts(account), [a2])
    expect_eq(len(await s.alerts(account, include_acked=True)), 2)


async def check_audit_log(h: Harness) -> None:
    """Per-account audit logs: seqs 0, 1, ... and RFC 9162 leaf hashes; paging."""
    s = h.storage
    a, b = rid(32), rid(32)
    entries = [os.urandom(40 + i) for i in range(7)]
    seqs = [await s.append_audit(a, e, NOW) for e in entries]
    expect_eq(seqs, list(range(7)))
    expect_eq(await s.append_audit(b, b"other account", NOW), 0)
    expect_eq(await s.audit_size(a), 7)
    expect_eq(await s.audit_size(rid(32)), 0)
    expect_eq(await s.audit_entries(a, 2, 3), [(2, entries[2]), (3, entries[3]),
                                               (4, entries[4])])
    expect_eq(await s.audit_leaf_hashes(a, 5), [merkle.leaf_hash(e) for e in entries[:5]])
    await raises(UsageError, s.append_audit(a, b"", NOW))


async def check_audit_concurrent_two_nodes(h: Harness) -> None:
    """Concurrent appends to one account's audit log through two nodes stay gap-free."""
    peer = h.new_peer()
    await peer.open()
    try:
        account = rid(32)
        entries = [os.urandom(24) for _ in range(24)]
        seqs = await asyncio.gather(*((h.storage if i % 2 else peer).append_audit(
            account, e, NOW) for i, e in enumerate(entries)))
        expect_eq(sorted(seqs), list(range(24)))
        stored = dict(await peer.audit_entries(account, 0, 100))
        expect_eq({stored[q] for q in seqs}, set(entries))
        expect(all(stored[q] == e for q, e in zip(seqs, entries, strict=True)))
    finally:
        await peer.close()


# ---------------------------------------------------------------- membership
async def check_membership_append(h: Harness) -> None:
    """append_membership: ACCEPTED at the next offset with its leaf row, DUPLICATE
    (nothing changes) for a stored entry, StorageConflict on a stale expected
    head; the member set is replaced by each accepted entry."""
    s = h.storage
    space = await new_space(s)
    alice, bob, carol = rid(32), rid(32), rid(32)
    await s.append_ops(space, chain(rid(), 1, 2), NOW)
    expect_eq(await s.space_members(space), {})
    expect_eq(await s.membership_entries(space), [])
    first, h1 = make_entry()
    out = await s.append_membership(space, first, h1, NOW + 1, expected_head=NO_HEAD,
                                    members={alice: "admin"})
    expect_eq(out, AppendOutcome(ACCEPTED, 2, h1))
    second, h2 = make_entry()
    out = await s.append_membership(space, second, h2, NOW + 2, expected_head=h1,
                                    members={alice: "admin", bob: "writer", carol: "reader"})
    expect_eq(out, AppendOutcome(ACCEPTED, 3, h2))
    expect_eq(await s.space_members(space), {alice: "admin", bob: "writer", carol: "reader"})
    before = present(await s.get_space(space))
    # The same entry again, whatever the caller's head and members: nothing changes.
    for head in (h2, h1, NO_HEAD):
        again = await s.append_membership(space, first, h1, NOW + 3, expected_head=head,
                                          members={})
        expect_eq(again, AppendOutcome(DUPLICATE, 2, h1))
    stale, h3 = make_entry()
    await raises(StorageConflict, s.append_membership(space, stale, h3, NOW, expected_head=h1,
                                                      members={bob: "admin"}), "fold")
    await raises(StorageConflict, s.append_membership(space, stale, h3, NOW,
                                                      expected_head=NO_HEAD, members={}))
    expect_eq(await s.get_space(space), before)
    expect_eq(await s.space_members(space), {alice: "admin", bob: "writer", carol: "reader"})
    expect_eq(await s.membership_entries(space), [(2, first), (3, second)])
    # A removal: the stored set is replaced, not merged.
    out = await s.append_membership(space, stale, h3, NOW + 4, expected_head=h2,
                                    members={alice: "admin", carol: "writer"})
    expect_eq(out, AppendOutcome(ACCEPTED, 4, h3))
    expect_eq(await s.space_members(space), {alice: "admin", carol: "writer"})
    leaves = await s.read_ops(space, 1, 10)
    stored = [(first, h1, NOW + 1), (second, h2, NOW + 2), (stale, h3, NOW + 4)]
    expect_eq([(o.offset, o.op_id, o.author, o.seq, o.leaf_hash, o.envelope, o.received_ms,
                o.kind) for o in leaves], [
        (k + 2, eh, eh, 1, merkle.leaf_hash(e), e, ms, LeafKind.MEMBERSHIP)
        for k, (e, eh, ms) in enumerate(stored)])
    expect(all(o.kind is LeafKind.OP for o in await s.read_ops(space, -1, 2)))
    await verify_log(s, space)


async def check_ops_refused_after_a_newer_membership(h: Harness) -> None:
    """append_ops with ``membership_head``: a batch judged at an older membership
    than the stored one (an entry landed meanwhile: a removal, say) is a
    StorageConflict and nothing is stored; at the stored head it is appended;
    zeros stand for a space with no entry."""
    s = h.storage
    space = await new_space(s)
    author = rid()
    out = await s.append_ops(space, chain(author, 1, 1), NOW, membership_head=NO_HEAD)
    expect_eq([o.status for o in out], [ACCEPTED])
    entry, eh = make_entry()
    await s.append_membership(space, entry, eh, NOW, expected_head=NO_HEAD,
                              members={rid(32): "admin"})
    before = present(await s.get_space(space))
    await raises(StorageConflict, s.append_ops(space, chain(author, 2, 1), NOW,
                                               membership_head=NO_HEAD), "stored meanwhile")
    expect_eq(await s.get_space(space), before)
    out = await s.append_ops(space, chain(author, 2, 1), NOW, membership_head=eh)
    expect_eq([(o.status, o.offset) for o in out], [(ACCEPTED, 2)])
    await verify_log(s, space)


async def check_membership_refuses_bad_arguments(h: Harness) -> None:
    """A wrong entry hash, a role not in the list or a malformed head is a
    UsageError; an unknown space is NotFoundError; nothing is stored."""
    s = h.storage
    space = await new_space(s)
    entry, eh = make_entry()
    bad = [
        s.append_membership(space, entry, bytes(32), NOW, expected_head=NO_HEAD, members={}),
        s.append_membership(space, entry, eh, NOW, expected_head=b"short", members={}),
        s.append_membership(space, entry, eh, NOW, expected_head=NO_HEAD,
                            members={rid(32): "owner"}),
        s.append_membership(space, b"", entry_hash(b""), NOW, expected_head=NO_HEAD,
                            members={}),
    ]
    for call in bad:
        await raises(UsageError, call)
    expect_eq(present(await s.get_space(space)).size, 0)
    unknown = rid()
    await raises(NotFoundError, s.append_membership(unknown, entry, eh, NOW,
                                                    expected_head=NO_HEAD, members={}))
    await raises(NotFoundError, s.membership_entries(unknown))
    await raises(NotFoundError, s.space_members(unknown))
    expect_eq(await s.shared_spaces(rid(32)), [])


async def check_membership_interleaved_with_ops(h: Harness) -> None:
    """Entries between op batches take the next offsets; the root is the RFC 9162
    root of every leaf hash, ops and entries alike, and every proof verifies."""
    s = h.storage
    space = await new_space(s)
    authors = [rid(), rid()]
    seqs = dict.fromkeys(authors, 1)
    leaves: list[bytes] = []
    history: list[tuple[int, bytes]] = [(0, merkle.EMPTY_ROOT)]
    head = NO_HEAD
    entries: list[tuple[int, bytes]] = []
    for k, count in enumerate((3, 0, 1, 4, 2, 0, 7)):
        author = authors[k % 2]
        ops = chain(author, seqs[author], count)
        seqs[author] += count
        out = await s.append_ops(space, ops, NOW)
        expect_eq([o.offset for o in out], list(range(len(leaves), len(leaves) + count)))
        leaves += [op.leaf_hash for op in ops]
        entry, eh = make_entry(200 + 50 * k)
        got = await s.append_membership(space, entry, eh, NOW, expected_head=head,
                                        members={rid(32): "admin"})
        expect_eq((got.status, got.offset), (ACCEPTED, len(leaves)))
        entries.append((len(leaves), entry))
        leaves.append(merkle.leaf_hash(entry))
        head = eh
        record = present(await s.get_space(space))
        expect_eq((record.size, record.root), (len(leaves), merkle.root_of(leaves)))
        history.append((record.size, record.root))
    expect_eq(await s.leaf_hashes(space, 0, len(leaves)), leaves)
    expect_eq(await s.membership_entries(space), entries)
    kinds = {o.offset: o.kind for o in await s.read_ops(space, -1, 100)}
    expect_eq(sorted(o for o, k in kinds.items() if k is LeafKind.MEMBERSHIP),
              [o for o, _ in entries])
    await verify_log(s, space, history)


async def check_membership_concurrent_with_ops(h: Harness) -> None:
    """Entries and op batches appended at once through two nodes serialise on the
    same lock: offsets gap-free, entries in their order, the log recomputes. Two
    entries racing on one head: one is stored, the other is a conflict."""
    space = await new_space(h.storage)
    peer = h.new_peer()
    await peer.open()
    try:
        author = rid()

        async def writer() -> None:
            for seq in range(1, 31, 3):
                await h.storage.append_ops(space, chain(author, seq, 3), NOW)

        async def admin() -> list[int]:
            head, offsets = NO_HEAD, []
            for _ in range(8):
                entry, eh = make_entry()
                out = await peer.append_membership(space, entry, eh, NOW, expected_head=head,
                                                   members={eh: "admin"})
                offsets.append(out.offset)
                head = eh
            return offsets

        _, offsets = await asyncio.gather(writer(), admin())
        log = await peer.read_ops(space, -1, 100)
        expect_eq([o.offset for o in log], list(range(38)))
        expect_eq([o.offset for o in log if o.kind is LeafKind.MEMBERSHIP], offsets)
        expect_eq([o.seq for o in log if o.kind is LeafKind.OP], list(range(1, 31)))
        head = log[offsets[-1]].op_id
        (a, ha), (b, hb) = make_entry(), make_entry()
        outcomes = await asyncio.gather(
            h.storage.append_membership(space, a, ha, NOW, expected_head=head, members={}),
            peer.append_membership(space, b, hb, NOW, expected_head=head, members={}),
            return_exceptions=True)
        won = [o for o in outcomes if isinstance(o, AppendOutcome)]
        lost = [o for o in outcomes if isinstance(o, StorageConflict)]
        expect(len(won) == 1 and len(lost) == 1, f"expected one winner: {outcomes!r}")
        expect_eq(won[0].offset, 38)
        await verify_log(h.storage, space)
    finally:
        await peer.close()


async def check_prune_keeps_membership(h: Harness) -> None:
    """prune_ops drops op envelopes only: every membership entry stays readable."""
    s = h.storage
    space = await new_space(s)
    author = rid()
    await s.append_ops(space, chain(author, 1, 3), NOW)
    e1, h1 = make_entry()
    await s.append_membership(space, e1, h1, NOW, expected_head=NO_HEAD, members={})
    await s.append_ops(space, chain(author, 4, 3), NOW)
    e2, h2 = make_entry()
    await s.append_membership(space, e2, h2, NOW, expected_head=h1, members={})
    await s.append_ops(space, chain(author, 7, 2), NOW)
    before = present(await s.get_space(space))
    expect_eq(await s.prune_ops(space, 8), 6)
    log = await s.read_ops(space, -1, 100)
    expect_eq([o.offset for o in log if o.envelope is not None], [3, 7, 8, 9])
    expect_eq((log[3].envelope, log[7].envelope), (e1, e2))
    expect_eq(await s.membership_entries(space), [(3, e1), (7, e2)])
    expect_eq(await s.prune_ops(space, 100), 2)
    expect_eq(await s.membership_entries(space), [(3, e1), (7, e2)])
    expect_eq(await s.get_space(space), before)
    await verify_log(s, space)


async def check_shared_spaces(h: Harness) -> None:
    """shared_spaces lists, oldest first, the spaces whose member set names the
    account (its own included), and drops one once it is removed."""
    s = h.storage
    owner, member, stranger = rid(32), rid(32), rid(32)
    first, second, unshared = rid(), rid(), rid()
    for k, space in enumerate((second, first, unshared)):
        await s.create_space(space, owner, NOW + (10 if space == second else k))
    for space in (second, first):
        entry, eh = make_entry()
        await s.append_membership(space, entry, eh, NOW, expected_head=NO_HEAD,
                                  members={owner: "admin", member: "reader"})
    expect_eq([r.space_id for r in await s.shared_spaces(member)], [first, second])
    expect_eq([r.space_id for r in await s.shared_spaces(owner)], [first, second])
    expect_eq(await s.shared_spaces(stranger), [])
    expect_eq(await s.space_members(unshared), {})
    shared = await s.shared_spaces(member)
    expect_eq(shared, [present(await s.get_space(first)), present(await s.get_space(second))])
    ((_, last),) = await s.membership_entries(first)
    entry, eh = make_entry()
    await s.append_membership(first, entry, eh, NOW, expected_head=entry_hash(last),
                              members={owner: "admin"})
    expect_eq([r.space_id for r in await s.shared_spaces(member)], [second])


async def check_readable_spaces(h: Harness) -> None:
    """readable_spaces: the spaces shared with the account (whoever owns them)
    and its own never shared, by (created_ms, space_id); not its own once it is
    no longer a member; the same as the per-space reads say."""
    s = h.storage
    owner, member, stranger = rid(32), rid(32), rid(32)
    mine, shared, left, theirs, tie = rid(), rid(), rid(), rid(), rid()
    for k, space in enumerate((mine, shared, left)):
        await s.create_space(space, owner, NOW + 10 - k)
    await s.create_space(theirs, member, NOW)
    await s.create_space(tie, owner, NOW)  # same time as `theirs`: ordered by id
    for space, members in ((shared, {owner: "admin", member: "writer"}),
                           (left, {member: "admin"}), (theirs, {member: "admin",
                                                               owner: "reader"})):
        entry, eh = make_entry()
        await s.append_membership(space, entry, eh, NOW, expected_head=NO_HEAD,
                                  members=members)

    async def composed(account: bytes) -> list[bytes]:
        listed = {r.space_id: r for r in await s.shared_spaces(account)}
        for r in await s.list_spaces(account):
            if not await s.space_members(r.space_id):
                listed[r.space_id] = r
        return [r.space_id for r in sorted(listed.values(),
                                            key=lambda r: (r.created_ms, r.space_id))]

    expect_eq({r.space_id for r in await s.readable_spaces(owner)},
              {mine, shared, theirs, tie})
    expect_eq({r.space_id for r in await s.readable_spaces(member)}, {shared, left, theirs})
    expect_eq(await s.readable_spaces(stranger), [])
    for account in (owner, member, stranger):
        got = await s.readable_spaces(account)
        expect_eq([r.space_id for r in got], await composed(account))
        expect_eq(got, [present(await s.get_space(r.space_id)) for r in got])


CHECKS: list[Check] = [
    check_migrations_applied,
    check_reopen_is_idempotent,
    check_newer_schema_is_refused,
    check_create_account,
    check_registry_append,
    check_revocation_and_append_are_ordered,
    check_spaces,
    check_key_packages,
    check_append_offsets,
    check_append_duplicates,
    check_append_forks,
    check_append_mixed_batch,
    check_append_refuses_chain_gaps,
    check_append_validates_ops,
    check_unknown_space,
    check_merkle_log_and_proofs,
    check_large_batch,
    check_concurrent_appends,
    check_concurrent_appends_two_nodes,
    check_chain_snapshot,
    check_op_by_author_seq,
    check_read_ops_pagination,
    check_prune_keeps_proofs,
    check_membership_append,
    check_membership_refuses_bad_arguments,
    check_membership_interleaved_with_ops,
    check_membership_concurrent_with_ops,
    check_prune_keeps_membership,
    check_shared_spaces,
    check_readable_spaces,
    check_fork_evidence,
    check_snapshots,
    check_snapshot_chunks,
    check_snapshot_attestations,
    check_first_sync_reads,
    check_acks_only_move_forward,
    check_pairing_channel,
    check_pairing_out_of_order_or_changed_burns,
    check_pairing_second_claim_burns,
    check_pairing_numbers_unique_across_nodes,
    check_pairing_expiry_and_burn,
    check_backup_put_get_delete,
    check_backup_accounts_by_prefix,
    check_accounts_by_prefix,
    check_ops_refused_after_a_newer_membership,
    check_backup_lockout_doubles_and_persists,
    check_backup_concurrent_attempts,
    check_backup_sources,
    check_report_digests,
    check_registry_entry_times,
    check_posture_newer_wins,
    check_signals_window_and_prune,
    check_controller_state,
    check_alerts_and_ack,
    check_audit_log,
    check_audit_concurrent_two_nodes,
]
