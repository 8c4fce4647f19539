"""SQLite backend of the relay storage (stdlib :mod:`sqlite3`, no extra dependency).

Design:

* ONE connection, used only from ONE dedicated worker thread. Every public
  coroutine ships a function to that thread, so calls from many tasks are
  serialised in submission order without a lock of our own, and the event loop
  never blocks on disk.
* Every public method is one transaction: ``BEGIN IMMEDIATE`` for writes (takes
  the database write lock up front, so a read-then-write never fails with a
  stale snapshot), a deferred ``BEGIN`` for multi-statement reads (one
  consistent snapshot). Other processes on the same file wait up to
  ``busy_timeout_ms`` for the write lock.
* WAL with ``synchronous=FULL``: a commit is fsync'd before the method returns
  (durability before acknowledgement, THREATS #21).
* The write lock of ``BEGIN IMMEDIATE`` is what makes the space's counter row
  the only source of offsets: two appends can never read the same ``size``.

Size: one class implements the whole storage contract on SQLite; each remaining
method is a transaction whose statements or locking differ from PostgreSQL
(what both engines run identically is in ._sql).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from sddsf.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    SddsfError,
    UnavailableError,
    UsageError,
)
from sddsf.protocol.merkle import EMPTY_ROOT
from sddsf.protocol.pairing import NAMEPLATE_MAX, PAIRING_VERSION
from sddsf.relay.storage import _pairing as pairing
from sddsf.relay.storage import migrations
from sddsf.relay.storage._common import (
    AppendPlan,
    alert_record,
    attestations_by_id,
    audit_leaf,
    check_cutoffs,
    check_membership_head,
    check_registry_seq,
    duplicate_membership,
    first_sync_after,
    membership_leaf,
    pairs_to_look_up,
    plan_append,
    space_record,
    stored_op,
    validate_batch,
)
from sddsf.relay.storage._sql import (
    ALERT_COLUMNS,
    APPEND_AUDIT,
    ATTESTATIONS_OF_SPACE,
    CHANNEL_COLUMNS,
    FREE_NAMEPLATE,
    KEY_PACKAGES_SINCE,
    MEMBERSHIP_HEAD,
    MEMBERSHIP_OFFSET,
    OP_SELECT,
    SNAPSHOT_OF_DOC,
    SPACE_COLUMNS,
    Row,
    SqlStorage,
    channel_row,
    check_limit,
    sqlite_statement,
)
from sddsf.relay.storage.base import (
    AlertRecord,
    AppendOutcome,
    BackupAttempt,
    BackupAttemptState,
    BackupAttemptStatus,
    BackupLockPolicy,
    ChainSnapshot,
    FirstSyncReads,
    ForkEvidence,
    LeafKind,
    OpToAppend,
    PairingChannel,
    PairingMessage,
    SpaceRecord,
    StoredOp,
    decide_backup_attempt,
    decide_sourced_attempt,
    verifier_matches,
)

__all__ = ["SqliteStorage"]

T = TypeVar("T")
Conn = sqlite3.Connection

def _translate(exc: sqlite3.Error, path: str) -> SddsfError:
    """Map a driver error to the storage contract's errors (the only place that does)."""
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return UsageError(f"invalid value for the database: {text}")  # a caller's bug, not a 503
    if isinstance(exc, sqlite3.IntegrityError):
        return ConflictError(f"a concurrent writer stored a conflicting row ({text}); "
                             "re-read and retry")
    if "unable to open" in lowered:
        return UnavailableError(f"cannot open the SQLite database {path!r} ({text}): check that "
                                "the directory exists and is writable by the relay")
    if "locked" in lowered or "busy" in lowered:
        return UnavailableError(f"the SQLite database {path!r} is locked by another process "
                                f"({text}); retry, or stop the other writer")
    if "full" in lowered:
        return UnavailableError(f"the disk holding {path!r} is full ({text}); free space "
                                "and retry")
    if "i/o" in lowered or "readonly" in lowered or "read-only" in lowered:
        return UnavailableError(f"SQLite could not write {path!r} ({text}); check the disk "
                                "and the file's permissions")
    if "not a database" in lowered or "malformed" in lowered:
        return UnavailableError(f"{path!r} is not a readable SQLite database ({text}); restore "
                                "it from a backup or point --db at the right file")
    return UnavailableError(f"SQLite error on {path!r}: {text}")


def _observe(future: asyncio.Future[Any]) -> None:
    # The result of a call whose caller gave up: read it so it is not reported
    # as never retrieved (the caller already got its 503).
    if not future.cancelled():
        future.exception()


#: Below this much free space on the database's filesystem, /readyz says not ready.
MIN_FREE_BYTES: Final = 64 << 20
# Every leaf of a batch is of one kind, written out in the statement (one text
# per kind, each prepared once): the rows bound per op are those of before kinds.
_INSERT_LEAVES: Final = {
    kind: ("INSERT INTO ops (space_id, log_offset, op_id, author, seq, deps, "  # noqa: S608
           f"leaf_hash, received_ms, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, {kind:d})")
    for kind in LeafKind}
#: The page size of a new database (bytes).
PAGE_SIZE: Final = 16384
#: At most this many free pages (4 MiB) go back to the filesystem per prune:
#: the step stays short; the rest wait for the next prune, and appends reuse
#: free pages meanwhile.
VACUUM_PAGES_PER_PRUNE: Final = 256


class SqliteStorage(SqlStorage):
    """Relay storage in one SQLite file (WAL, ``synchronous=FULL``).

    Several processes may open the same file (SQLite's file locks serialise
    writers); for several relay *nodes* use PostgreSQL.

    Args:
        path: the database file; parent directories are created on :meth:`open`.
        busy_timeout_ms: how long a write waits for another process's write lock
            before failing with ``StorageUnavailable``.
        deadline_s: how long a caller waits for its call (queued behind others
            included) before it gets ``StorageUnavailable``; the call itself
            still runs to its end on the worker (a stalled disk or a lock held
            elsewhere). While a call has been running longer than this, new
            calls fail at once instead of queuing. None waits without bound.
    """

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000,
                 deadline_s: float | None = None) -> None:
        """Configure; nothing touches the disk before :meth:`open`."""
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ConfigError("the SQLite storage needs a file path (an in-memory database "
                              "is not durable)")
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        if deadline_s is not None and not deadline_s > 0:
            raise ConfigError(f"the SQLite deadline must be positive, got {deadline_s}")
        self.deadline_s = deadline_s
        # time.monotonic() when the worker's current call started (None: idle);
        # written on the worker, read on the event loop (a float store is atomic).
        self._busy_since: float | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._conn: Conn | None = None  # touched only on the worker thread

    def __repr__(self) -> str:
        return f"SqliteStorage({self.path!r})"

    # ------------------------------------------------------------ plumbing
    async def _run(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn(conn)`` on the worker thread; driver errors are translated here.

        If the awaiting task is cancelled, the transaction still runs to its
        end (commit or rollback) on the worker: it is never left half-done, and
        the caller's retry is answered idempotently.
        """
        executor = self._executor
        if executor is None:
            raise UsageError("the SQLite storage is not open: call open() first")
        deadline = self.deadline_s
        if deadline is None:
            return await asyncio.get_running_loop().run_in_executor(executor, self._call, fn)
        if self.stalled():
            raise self._stalled_error()
        future = asyncio.get_running_loop().run_in_executor(executor, self._call, fn)
        try:
            # shield: a caller that gives up does not cancel the call (it cannot
            # be stopped half-way on the worker anyway); it finishes, unobserved.
            return await asyncio.wait_for(asyncio.shield(future), deadline)
        except TimeoutError:
            future.add_done_callback(_observe)
            raise self._stalled_error() from None

    def stalled(self) -> bool:
        """Whether the worker's current call has run longer than the deadline."""
        since, deadline = self._busy_since, self.deadline_s
        return since is not None and deadline is not None and \
            time.monotonic() - since > deadline

    def _stalled_error(self) -> UnavailableError:
        return UnavailableError(f"the SQLite database {self.path!r} did not answer within "
                                f"{self.deadline_s:g} s (a stalled disk, or a write lock held "
                                "by another process); retry")

    def _call(self, fn: Callable[[Conn], T]) -> T:
        conn = self._conn
        if conn is None:
            raise UsageError("the SQLite storage is closed")
        self._busy_since = time.monotonic()
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc
        finally:
            self._busy_since = None

    @staticmethod
    def _tx(conn: Conn, body: Callable[[Conn], T], *, write: bool) -> T:
        """Run ``body`` in one transaction; any exception rolls the whole of it back.

        This is the atomicity guarantee: a failure after some rows of a batch
        were inserted (even a statement that failed half-way) leaves nothing.
        """
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = body(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def _write(self, body: Callable[[Conn], T]) -> T:
        return await self._run(lambda conn: self._tx(conn, body, write=True))

    async def _read(self, body: Callable[[Conn], T]) -> T:
        return await self._run(lambda conn: self._tx(conn, body, write=False))

    # The primitives of the statements both backends share (:mod:`._sql`).
    async def _fetch(self, sql: str, *args: object) -> list[Row]:
        statement = sqlite_statement(sql)
        return await self._read(lambda c: list(c.execute(statement, args).fetchall()))

    async def _execute(self, sql: str, *args: object) -> int:
        statement = sqlite_statement(sql)
        return await self._write(lambda c: int(c.execute(statement, args).rowcount))

    async def _execute_in_space(self, space_id: bytes, sql: str, *args: object) -> int:
        statement = sqlite_statement(sql)

        def body(c: Conn) -> int:
            _space_size(c, space_id)
            return int(c.execute(statement, args).rowcount)
        return await self._write(body)

    # ------------------------------------------------------------ lifecycle
    def _connect(self) -> None:
        if self._conn is not None:
            return
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise UnavailableError(f"cannot create the directory {parent!r} for the SQLite "
                                   f"database ({exc.strerror}); check its permissions") from exc
        try:
            conn = sqlite3.connect(self.path, isolation_level=None,
                                   timeout=self.busy_timeout_ms / 1000)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            # Op rows are 2-4 KB: in 4 KiB pages each would take a page of its
            # own (two never fit); 16 KiB pages hold several, 85-90 % full. It
            # takes effect only on a new file (before WAL mode writes the
            # header): an existing database keeps its page size.
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            # Pruning frees whole pages of envelopes; INCREMENTAL lets
            # prune_ops hand some back to the filesystem, a bounded number per
            # call. Like the page size, only a new file takes it (before its
            # first table); an existing one keeps its mode (docs/operations.md).
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise UnavailableError(f"SQLite refused WAL mode for {self.path!r} (got {mode}); "
                                       "put the database on a local filesystem")
            # FULL: the WAL is fsync'd at every commit, so an acknowledged op
            # survives power loss (NORMAL would only survive a process crash).
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrations.apply_sqlite(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def open(self) -> None:
        """Create the file if needed, set the pragmas, apply migrations.

        Raises:
            StorageUnavailable: the file cannot be created or opened.
            ConfigError: the schema is newer than this relay.
        """
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sddsf-sqlite")
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor,
                                                             self._connect_translated)
        except BaseException:
            await self.close()
            raise

    async def not_ready(self) -> list[str]:
        """Stalled worker, read-only or full filesystem, unwritable file; then a
        round trip (bounded by the deadline)."""
        if self.stalled():
            return [f"the database has not answered for more than {self.deadline_s:g} s"]
        reasons = []
        path = os.path.abspath(self.path)
        try:
            fs = os.statvfs(os.path.dirname(path))
        except OSError as exc:
            reasons.append(f"cannot inspect the database's filesystem ({exc.strerror})")
        else:
            if fs.f_flag & os.ST_RDONLY:
                reasons.append("the database's filesystem is read-only")
            elif fs.f_bavail * fs.f_frsize < MIN_FREE_BYTES:
                reasons.append(f"the database's disk is full (less than "
                               f"{MIN_FREE_BYTES >> 20} MiB free)")
        if not os.access(path, os.W_OK):
            reasons.append("the database file is not writable")
        await self.ping()
        return reasons

    def _connect_translated(self) -> None:
        try:
            self._connect()
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    async def close(self) -> None:
        """Close the connection and stop the worker thread. Idempotent."""
        executor, self._executor = self._executor, None
        if executor is None:
            return

        def shut() -> None:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

        try:
            await asyncio.get_running_loop().run_in_executor(executor, shut)
        finally:
            executor.shutdown(wait=True)

    async def schema_version(self) -> int:
        """The number of the last applied migration."""
        return await self._run(lambda c: int(c.execute(
            "SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]))

    async def ping(self) -> None:
        """Round trip to the worker thread and the database file."""
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    # ------------------------------------------------------------- registry
    async def create_account(self, account_id: bytes, genesis: bytes, now_ms: int) -> bool:
        """See :meth:`RelayStorage.create_account`."""
        def body(c: Conn) -> bool:
            row = c.execute("SELECT entry FROM registry_entries WHERE account_id = ? AND seq = 0",
                            (account_id,)).fetchone()
            if row is not None:
                if bytes(row[0]) == genesis:
                    return False
                raise ConflictError("this account already exists with another genesis entry")
            c.execute("INSERT INTO registry_entries (account_id, seq, entry, stored_ms) "
                      "VALUES (?, 0, ?, ?)", (account_id, genesis, now_ms))
            return True
        return await self._write(body)

    async def append_registry_entry(
            self, account_id: bytes, seq: int, entry: bytes, now_ms: int, *,
            revoked_cutoffs: Mapping[bytes, Mapping[bytes, int]] | None = None) -> bool:
        """See :meth:`RelayStorage.append_registry_entry`. An unknown account
        raises NotFoundError (it has no next seq: create it first). The cutoff
        check runs under the write lock that every op append also takes."""
        def body(c: Conn) -> bool:
            row = c.execute("SELECT entry FROM registry_entries WHERE account_id = ? AND seq = ?",
                            (account_id, seq)).fetchone()
            if row is not None:
                if bytes(row[0]) == entry:
                    return False
                raise ConflictError(f"registry seq {seq} already holds another entry; re-read "
                                    "the registry and verify again")
            head = c.execute("SELECT max(seq) FROM registry_entries WHERE account_id = ?",
                             (account_id,)).fetchone()[0]
            if head is None:
                raise NotFoundError("unknown account: store its genesis entry first")
            if seq != head + 1:
                raise ConflictError(f"registry seq {seq} is not the next seq ({head + 1}); "
                                    "re-read the registry and verify again")
            if revoked_cutoffs:
                check_cutoffs(_revoked_heads(c, account_id, list(revoked_cutoffs)),
                              revoked_cutoffs)
            c.execute("INSERT INTO registry_entries (account_id, seq, entry, stored_ms) "
                      "VALUES (?, ?, ?, ?)", (account_id, seq, entry, now_ms))
            return True
        return await self._write(body)

    # --------------------------------------------------------------- spaces
    async def create_space(self, space_id: bytes, account_id: bytes, now_ms: int) -> bool:
        """See :meth:`RelayStorage.create_space`."""
        def body(c: Conn) -> bool:
            row = c.execute("SELECT account_id FROM spaces WHERE space_id = ?",
                            (space_id,)).fetchone()
            if row is not None:
                if bytes(row[0]) == account_id:
                    return False
                raise ConflictError("this space id belongs to another account")
            c.execute("INSERT INTO spaces (space_id, account_id, created_ms, root) "
                      "VALUES (?, ?, ?, ?)", (space_id, account_id, now_ms, EMPTY_ROOT))
            return True
        return await self._write(body)

    async def list_spaces(self, account_id: bytes) -> list[SpaceRecord]:
        """See :meth:`RelayStorage.list_spaces`."""
        rows = await self._read(lambda c: c.execute(
            f"SELECT {SPACE_COLUMNS} FROM spaces WHERE account_id = ? "  # noqa: S608 - constant
            "ORDER BY created_ms, rowid", (account_id,)).fetchall())
        return [space_record(*r) for r in rows]

    # --------------------------------------------------------- key packages
    async def put_key_package(self, space_id: bytes, epoch: int, package: bytes,
                              now_ms: int) -> bool:
        """See :meth:`RelayStorage.put_key_package`. Unknown space: NotFoundError."""
        def body(c: Conn) -> bool:
            current = _space_epoch(c, space_id)
            row = c.execute("SELECT package FROM key_packages WHERE space_id = ? AND epoch = ?",
                            (space_id, epoch)).fetchone()
            if row is not None:
                if bytes(row[0]) == package:
                    return False
                raise ConflictError(f"key epoch {epoch} already has another package")
            if epoch != current + 1:
                raise ConflictError(f"key epoch {epoch} is not the next epoch ({current + 1}); "
                                    "re-read the key packages")
            c.execute("INSERT INTO key_packages (space_id, epoch, package, stored_ms) "
                      "VALUES (?, ?, ?, ?)", (space_id, epoch, package, now_ms))
            c.execute("UPDATE spaces SET epoch = ?, epoch_started_ms = ? WHERE space_id = ?",
                      (epoch, now_ms, space_id))
            return True
        return await self._write(body)

    # ------------------------------------------------------------------ ops
    async def chain_snapshot(self, space_id: bytes,
                             wanted: Sequence[tuple[bytes, int]]) -> ChainSnapshot:
        """See :meth:`RelayStorage.chain_snapshot`."""
        def body(c: Conn) -> ChainSnapshot:
            _space_size(c, space_id)
            heads: dict[bytes, tuple[int, bytes, bytes]] = {}
            for author in dict.fromkeys(a for a, _ in wanted):
                row = c.execute("SELECT seq, op_id, deps FROM ops WHERE space_id = ? AND "
                                "author = ? ORDER BY seq DESC LIMIT 1",
                                (space_id, author)).fetchone()
                if row is not None:
                    heads[author] = (int(row[0]), bytes(row[1]), bytes(row[2]))
            ids: dict[tuple[bytes, int], bytes] = {}
            for author, seq in dict.fromkeys(wanted):
                head = heads.get(author)
                if head is None or seq > head[0]:
                    continue
                row = c.execute("SELECT op_id FROM ops WHERE space_id = ? AND author = ? "
                                "AND seq = ?", (space_id, author, seq)).fetchone()
                if row is not None:
                    ids[(author, seq)] = bytes(row[0])
            return ChainSnapshot(heads, ids)
        return await self._read(body)

    def _store_batch(self, c: Conn, space_id: bytes, rows: list[tuple[object, ...]],
                     nodes: list[tuple[object, ...]], head: tuple[int, bytes, bytes],
                     kind: LeafKind) -> None:
        """Write one batch's rows (a separate step so tests can inject a fault here)."""
        c.executemany(_INSERT_LEAVES[kind], rows)
        c.executemany("INSERT INTO op_envelopes (space_id, log_offset, envelope) "
                      "VALUES (?, ?, ?)", [(r[0], r[1], r[7]) for r in rows])
        c.executemany("INSERT INTO merkle_nodes (space_id, level, idx, hash) VALUES (?, ?, ?, ?)",
                      nodes)
        c.execute("UPDATE spaces SET size = ?, root = ?, frontier = ? WHERE space_id = ?",
                  (*head, space_id))

    async def append_ops(self, space_id: bytes, ops: Sequence[OpToAppend], now_ms: int, *,
                         registry_seq: int | None = None,
                         membership_head: bytes | None = None) -> list[AppendOutcome]:
        """See :meth:`RelayStorage.append_ops`: one ``BEGIN IMMEDIATE`` transaction
        (the registry check runs under the same write lock as registry appends)."""
        ops = list(ops)
        validate_batch(ops)

        def body(c: Conn) -> list[AppendOutcome]:
            size, frontier = _space_size(c, space_id)
            if registry_seq is not None:
                check_registry_seq(c.execute(
                    "SELECT max(r.seq) FROM registry_entries r JOIN spaces s ON "
                    "s.account_id = r.account_id WHERE s.space_id = ?",
                    (space_id,)).fetchone()[0], registry_seq)
            if membership_head is not None:
                row = c.execute(sqlite_statement(MEMBERSHIP_HEAD), (space_id,)).fetchone()
                check_membership_head(None if row is None else bytes(row[0]), membership_head)
            heads: dict[bytes, int] = {}
            for author in dict.fromkeys(op.author for op in ops):
                head = c.execute("SELECT max(seq) FROM ops WHERE space_id = ? AND author = ?",
                                 (space_id, author)).fetchone()[0]
                if head is not None:
                    heads[author] = int(head)
            stored: dict[tuple[bytes, int], tuple[bytes, int]] = {}
            for author, seq in pairs_to_look_up(ops, heads):
                row = c.execute("SELECT op_id, log_offset FROM ops WHERE space_id = ? AND "
                                "author = ? AND seq = ?", (space_id, author, seq)).fetchone()
                if row is not None:
                    stored[(author, seq)] = (bytes(row[0]), int(row[1]))
            return self._append_planned(c, space_id, plan_append(size, frontier, heads, stored,
                                                                 ops), now_ms, LeafKind.OP)
        return await self._write(body)

    def _append_planned(self, c: Conn, space_id: bytes, plan: AppendPlan, now_ms: int,
                        kind: LeafKind) -> list[AppendOutcome]:
        """Store a planned append (ops or a membership entry alike): its leaves,
        the Merkle nodes they complete and the counter row."""
        if plan.op_rows:
            self._store_batch(
                c, space_id,
                [(space_id, *r, now_ms) for r in plan.op_rows],
                [(space_id, *n) for n in plan.node_rows],
                (plan.size, plan.root, plan.frontier), kind)
        return plan.outcomes

    async def append_membership(self, space_id: bytes, entry: bytes, entry_hash: bytes,
                                now_ms: int, *, expected_head: bytes,
                                members: Mapping[bytes, str]) -> AppendOutcome:
        """See :meth:`RelayStorage.append_membership`: one ``BEGIN IMMEDIATE``
        transaction, the write lock every append takes."""
        leaf, member_rows = membership_leaf(entry, entry_hash, expected_head, members)

        def body(c: Conn) -> AppendOutcome:
            size, frontier = _space_size(c, space_id)
            row = c.execute(sqlite_statement(MEMBERSHIP_OFFSET), (space_id, entry_hash)).fetchone()
            if row is not None:
                return duplicate_membership(int(row[0]), entry_hash)
            head = c.execute(sqlite_statement(MEMBERSHIP_HEAD), (space_id,)).fetchone()
            check_membership_head(None if head is None else bytes(head[0]), expected_head)
            (outcome,) = self._append_planned(c, space_id, plan_append(size, frontier, {}, {},
                                                                       [leaf]),
                                              now_ms, LeafKind.MEMBERSHIP)
            c.execute("DELETE FROM space_members WHERE space_id = ?", (space_id,))
            c.executemany("INSERT INTO space_members (space_id, account_id, role) "
                          "VALUES (?, ?, ?)", [(space_id, a, r) for a, r in member_rows])
            return outcome
        return await self._write(body)

    async def op_by_author_seq(self, space_id: bytes, author: bytes,
                               seq: int) -> StoredOp | None:
        """See :meth:`RelayStorage.op_by_author_seq`."""
        def body(c: Conn) -> StoredOp | None:
            _space_size(c, space_id)
            row = c.execute(f"{OP_SELECT} WHERE o.space_id = ? "
                            "AND o.author = ? AND o.seq = ?", (space_id, author, seq)).fetchone()
            return None if row is None else stored_op(*row)
        return await self._read(body)

    async def read_ops(self, space_id: bytes, after: int, limit: int) -> list[StoredOp]:
        """See :meth:`RelayStorage.read_ops`."""
        check_limit(limit)

        def body(c: Conn) -> list[StoredOp]:
            _space_size(c, space_id)
            rows = c.execute(f"{OP_SELECT} WHERE o.space_id = ? "
                             "AND o.log_offset > ? ORDER BY o.log_offset LIMIT ?",
                             (space_id, after, limit)).fetchall()
            return [stored_op(*r) for r in rows]
        return await self._read(body)

    async def first_sync_reads(self, space_id: bytes, docs: Sequence[bytes],
                               limit: int) -> FirstSyncReads:
        """See :meth:`RelayStorage.first_sync_reads`: one read transaction, so one
        hand-over to the worker instead of one per read."""
        check_limit(limit)

        def body(c: Conn) -> FirstSyncReads:
            _space_size(c, space_id)  # NotFoundError first, as read_ops raises it
            packages = [bytes(r[0]) for r in c.execute(
                sqlite_statement(KEY_PACKAGES_SINCE), (space_id, 0))]
            snapshots: dict[bytes, tuple[int, bytes]] = {}
            for doc in docs:
                row = c.execute(sqlite_statement(SNAPSHOT_OF_DOC), (space_id, doc)).fetchone()
                if row is not None:
                    snapshots[doc] = (int(row[0]), bytes(row[1]))
            attestations = attestations_by_id(c.execute(
                sqlite_statement(ATTESTATIONS_OF_SPACE), (space_id,)).fetchall(), docs)
            after = first_sync_after(snapshots)
            ops = [stored_op(*r) for r in c.execute(
                f"{OP_SELECT} WHERE o.space_id = ? AND o.log_offset > ? "
                "ORDER BY o.log_offset LIMIT ?", (space_id, after, limit))]
            space = space_record(*c.execute(
                f"SELECT {SPACE_COLUMNS} FROM spaces WHERE space_id = ?",  # noqa: S608 - constant
                (space_id,)).fetchone())
            return FirstSyncReads(space, packages, snapshots, attestations, after, ops)
        return await self._read(body)

    async def leaf_hashes(self, space_id: bytes, start: int, end: int) -> list[bytes]:
        """See :meth:`RelayStorage.leaf_hashes`. A range past the log is a UsageError."""
        def body(c: Conn) -> list[bytes]:
            size, _ = _space_size(c, space_id)
            if not 0 <= start <= end <= size:
                raise UsageError(f"leaf range [{start}, {end}) is outside the log of {size}")
            rows = c.execute("SELECT leaf_hash FROM ops WHERE space_id = ? AND log_offset >= ? "
                             "AND log_offset < ? ORDER BY log_offset",
                             (space_id, start, end)).fetchall()
            return [bytes(r[0]) for r in rows]
        return await self._read(body)

    async def merkle_nodes(self, space_id: bytes,
                           keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """See :meth:`RelayStorage.merkle_nodes`; keys not stored are absent."""
        def body(c: Conn) -> dict[tuple[int, int], bytes]:
            _space_size(c, space_id)
            out: dict[tuple[int, int], bytes] = {}
            for level, index in dict.fromkeys(keys):
                if level == 0:  # leaves live in the ops rows
                    row = c.execute("SELECT leaf_hash FROM ops WHERE space_id = ? AND "
                                    "log_offset = ?", (space_id, index)).fetchone()
                else:
                    row = c.execute("SELECT hash FROM merkle_nodes WHERE space_id = ? AND "
                                    "level = ? AND idx = ?", (space_id, level, index)).fetchone()
                if row is not None:
                    out[(level, index)] = bytes(row[0])
            return out
        return await self._read(body)

    async def fork_evidence(self, space_id: bytes) -> list[ForkEvidence]:
        """See :meth:`RelayStorage.fork_evidence`."""
        def body(c: Conn) -> list[ForkEvidence]:
            _space_size(c, space_id)
            rows = c.execute("SELECT author, seq, accepted_envelope, refused_envelope, "
                             "recorded_ms FROM fork_evidence WHERE space_id = ? "
                             "ORDER BY recorded_ms, id", (space_id,)).fetchall()
            return [ForkEvidence(space_id, bytes(r[0]), int(r[1]), bytes(r[2]), bytes(r[3]),
                                 int(r[4])) for r in rows]
        return await self._read(body)

    async def set_ack(self, space_id: bytes, device_id: bytes, offset: int,
                      now_ms: int) -> int:
        """See :meth:`RelayStorage.set_ack` (monotonic: the larger value wins)."""
        def body(c: Conn) -> int:
            size, _ = _space_size(c, space_id)
            if not -1 <= offset < size:
                raise UsageError(f"cannot acknowledge offset {offset}: the log has {size} ops")
            c.execute("INSERT INTO acks (space_id, device_id, acked_offset, updated_ms) "
                      "VALUES (?, ?, ?, ?) ON CONFLICT (space_id, device_id) DO UPDATE SET "
                      "acked_offset = MAX(acked_offset, excluded.acked_offset), "
                      "updated_ms = excluded.updated_ms", (space_id, device_id, offset, now_ms))
            row = c.execute("SELECT acked_offset FROM acks WHERE space_id = ? AND "
                            "device_id = ?", (space_id, device_id)).fetchone()
            return int(row[0])
        return await self._write(body)

    async def acks(self, space_id: bytes) -> dict[bytes, int]:
        """See :meth:`RelayStorage.acks`."""
        def body(c: Conn) -> dict[bytes, int]:
            _space_size(c, space_id)
            rows = c.execute("SELECT device_id, acked_offset FROM acks WHERE space_id = ?",
                             (space_id,)).fetchall()
            return {bytes(d): int(o) for d, o in rows}
        return await self._read(body)

    async def prune_ops(self, space_id: bytes, before_offset: int) -> int:
        """See :meth:`RelayStorage.prune_ops`; then a bounded incremental vacuum,
        in its own transaction (the prune is already committed)."""
        dropped = await super().prune_ops(space_id, before_offset)
        if dropped:
            await self._run(_vacuum_step)
        return dropped

    # ------------------------------------------------------------ snapshots
    async def delete_snapshot_chunks(self, space_id: bytes, chunk_ids: Sequence[bytes]) -> int:
        """See :meth:`RelayStorage.delete_snapshot_chunks`."""
        def body(c: Conn) -> int:
            return sum(c.execute("DELETE FROM snapshot_chunks WHERE space_id = ? AND "
                                 "chunk_id = ?", (space_id, i)).rowcount for i in chunk_ids)
        return await self._write(body)

    async def delete_snapshot_attestations(self, space_id: bytes, doc_id: bytes,
                                           keep: Sequence[bytes]) -> int:
        """See :meth:`RelayStorage.delete_snapshot_attestations`."""
        def body(c: Conn) -> int:
            rows = c.execute("SELECT DISTINCT snapshot_id FROM snapshot_attestations WHERE "
                             "space_id = ? AND doc_id = ?", (space_id, doc_id)).fetchall()
            stale = [bytes(r[0]) for r in rows if bytes(r[0]) not in set(keep)]
            return sum(c.execute("DELETE FROM snapshot_attestations WHERE space_id = ? AND "
                                 "doc_id = ? AND snapshot_id = ?",
                                 (space_id, doc_id, sid)).rowcount for sid in stale)
        return await self._write(body)

    # ------------------------------------------------------ pairing mailbox
    async def create_channel(self, channel_id: bytes, token_hash: bytes, now_ms: int,
                             expires_ms: int, reserve_until_ms: int) -> int:
        """See :meth:`RelayStorage.create_channel`."""
        def body(c: Conn) -> int:
            # Release the numbers whose reservation ended, then take the smallest free.
            c.execute("UPDATE pairing_channels SET nameplate = NULL WHERE nameplate IS NOT "
                      "NULL AND nameplate_until_ms <= ?", (now_ms,))
            nameplate = int(c.execute(FREE_NAMEPLATE).fetchone()[0])
            if nameplate > NAMEPLATE_MAX:
                raise UnavailableError("too many pairings at once on this relay; retry later")
            cur = c.execute(
                "INSERT INTO pairing_channels (channel_id, expires_ms, version, nameplate, "
                "nameplate_until_ms, initiator_token) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (channel_id) DO NOTHING",
                (channel_id, expires_ms, PAIRING_VERSION, nameplate, reserve_until_ms,
                 token_hash))
            if cur.rowcount != 1:
                raise ConflictError("a pairing channel with this id already exists")
            return nameplate
        return await self._write(body)

    async def claim_channel(self, nameplate: int, token_hash: bytes,
                            now_ms: int) -> PairingChannel:
        """See :meth:`RelayStorage.claim_channel`."""
        def body(c: Conn) -> tuple[PairingChannel, bool]:
            found = c.execute(f"SELECT {CHANNEL_COLUMNS} FROM pairing_channels WHERE "  # noqa: S608
                              "nameplate = ? AND nameplate_until_ms > ?",
                              (nameplate, now_ms)).fetchone()
            if found is None:
                raise NotFoundError(f"no pairing numbered {nameplate} on this relay: it "
                                    "expired, or the number is mistyped; check the code")
            row = channel_row(found)
            verdict = pairing.claim_verdict(row, token_hash, now_ms)
            if verdict is pairing.ClaimVerdict.TAKE:
                c.execute("UPDATE pairing_channels SET joiner_token = ? WHERE channel_id = ?",
                          (token_hash, row.channel_id))
            elif verdict is pairing.ClaimVerdict.CONTESTED:
                _burn(c, row.channel_id, pairing.CONTESTED, None)
            return (PairingChannel(row.channel_id, row.expires_ms),
                    verdict is pairing.ClaimVerdict.CONTESTED)
        claimed, contested = await self._write(body)
        if contested:  # raised after the commit: the burn stays
            raise ConflictError(pairing.contested_message())
        return claimed

    async def post_channel_message(self, channel_id: bytes, token_hash: bytes, index: int,
                                   body: bytes, now_ms: int, max_messages: int
                                   ) -> PairingMessage:
        """See :meth:`RelayStorage.post_channel_message`."""
        def tx(c: Conn) -> tuple[PairingMessage, str]:
            found = _channel(c, channel_id)
            row, role = pairing.role_of(found, token_hash)
            pairing.check_usable(row, now_ms)
            stored = c.execute("SELECT sender, body FROM pairing_messages WHERE channel_id = ? "
                               "AND idx = ?", (channel_id, index)).fetchone()
            existing = None if stored is None else (str(stored[0]), bytes(stored[1]))
            verdict, why = pairing.judge_post(row, role, index, body, existing, max_messages)
            if verdict is pairing.PostVerdict.APPEND:
                c.execute("INSERT INTO pairing_messages (channel_id, idx, sender, body) "
                          "VALUES (?, ?, ?, ?)", (channel_id, index, role, body))
                c.execute("UPDATE pairing_channels SET message_count = ? WHERE channel_id = ?",
                          (index + 1, channel_id))
            elif verdict is pairing.PostVerdict.REFUSE:
                _burn(c, channel_id, pairing.VIOLATION, role)
            return PairingMessage(index, role, body), why
        message, refused = await self._write(tx)
        if refused:  # raised after the commit: the burn stays
            raise ConflictError(refused)
        return message

    async def channel_messages(self, channel_id: bytes, token_hash: bytes, after: int,
                               now_ms: int) -> list[PairingMessage]:
        """See :meth:`RelayStorage.channel_messages`."""
        def body(c: Conn) -> list[PairingMessage]:
            found = _channel(c, channel_id)
            row, _ = pairing.role_of(found, token_hash)
            pairing.check_usable(row, now_ms)
            rows = c.execute("SELECT idx, sender, body FROM pairing_messages WHERE "
                             "channel_id = ? AND idx > ? ORDER BY idx",
                             (channel_id, after)).fetchall()
            return [PairingMessage(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]
        return await self._read(body)

    async def burn_channel(self, channel_id: bytes, token_hash: bytes, reason: str) -> None:
        """See :meth:`RelayStorage.burn_channel`."""
        pairing.validate_reason(reason)

        def body(c: Conn) -> None:
            row = _channel(c, channel_id)
            if row is None or row.initiator_token is None:
                return
            row, role = pairing.role_of(row, token_hash)
            if not row.burnt:
                _burn(c, channel_id, reason, role)
        await self._write(body)

    # --------------------------------------------------- passphrase backups
    async def delete_backup(self, account_id: bytes) -> bool:
        """See :meth:`RelayStorage.delete_backup`."""
        def body(c: Conn) -> bool:
            c.execute("DELETE FROM backup_sources WHERE account_id = ?", (account_id,))
            return c.execute("DELETE FROM backups WHERE account_id = ?",
                             (account_id,)).rowcount == 1
        return await self._write(body)

    async def backup_attempt(self, account_id: bytes, verifier_hash: bytes, now_ms: int,
                             policy: BackupLockPolicy, *, source: bytes = b"") -> BackupAttempt:
        """See :meth:`RelayStorage.backup_attempt`: one ``BEGIN IMMEDIATE`` transaction."""
        def body(c: Conn) -> BackupAttempt:
            row = c.execute("SELECT verifier_hash, blob, failures, lockouts, locked_until_ms "
                            "FROM backups WHERE account_id = ?", (account_id,)).fetchone()
            if row is None:
                raise NotFoundError("this account has no passphrase backup on this relay")
            before = BackupAttemptState(int(row[2]), int(row[3]), int(row[4]))
            matches = verifier_matches(bytes(row[0]), verifier_hash)
            if source:
                decision = self._sourced_attempt(c, account_id, source, before, matches,
                                                 now_ms, policy)
            else:
                decision = decide_backup_attempt(before, matches, now_ms, policy)
            after = decision.state
            if after != before:
                c.execute("UPDATE backups SET failures = ?, lockouts = ?, locked_until_ms = ? "
                          "WHERE account_id = ?",
                          (after.failures, after.lockouts, after.locked_until_ms, account_id))
            if decision.status is BackupAttemptStatus.OK:
                return BackupAttempt(decision.status, after, 0, bytes(row[1]))
            return decision
        return await self._write(body)

    @staticmethod
    def _sourced_attempt(c: Conn, account_id: bytes, source: bytes,
                         account: BackupAttemptState, matches: bool, now_ms: int,
                         policy: BackupLockPolicy) -> BackupAttempt:
        # Forget sources whose last failure and lock are older than the longest
        # lockout (bounded rows per account; such a source may try again).
        c.execute("DELETE FROM backup_sources WHERE account_id = ? AND updated_ms < ? AND "
                  "locked_until_ms < ?", (account_id, now_ms - policy.max_lockout_ms, now_ms))
        row = c.execute("SELECT failures, lockouts, locked_until_ms FROM backup_sources "
                        "WHERE account_id = ? AND source = ?", (account_id, source)).fetchone()
        before = BackupAttemptState() if row is None else BackupAttemptState(
            int(row[0]), int(row[1]), int(row[2]))
        decided = decide_sourced_attempt(account, before, matches, now_ms, policy)
        if decided.source == BackupAttemptState():
            c.execute("DELETE FROM backup_sources WHERE account_id = ? AND source = ?",
                      (account_id, source))
        elif decided.source != before:
            s = decided.source
            c.execute("INSERT INTO backup_sources (account_id, source, failures, lockouts, "
                      "locked_until_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT (account_id, source) DO UPDATE SET "
                      "failures = excluded.failures, lockouts = excluded.lockouts, "
                      "locked_until_ms = excluded.locked_until_ms, "
                      "updated_ms = excluded.updated_ms",
                      (account_id, source, s.failures, s.lockouts, s.locked_until_ms, now_ms))
        return decided.attempt

    # ----------------------------------------------------------- controller
    async def remember_report(self, account_id: bytes, device_id: bytes, digest: bytes,
                              now_ms: int, keep_ms: int) -> bool:
        """See :meth:`RelayStorage.remember_report`."""
        def body(c: Conn) -> bool:
            c.execute("DELETE FROM report_digests WHERE account_id = ? AND device_id = ? AND "
                      "seen_ms < ?", (account_id, device_id, now_ms - keep_ms))
            return c.execute("INSERT INTO report_digests (account_id, device_id, digest, "
                             "seen_ms) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                             (account_id, device_id, digest, now_ms)).rowcount == 1
        return await self._write(body)

    async def ack_alert(self, account_id: bytes, alert_id: bytes, by: bytes,
                        now_ms: int) -> AlertRecord | None:
        """See :meth:`RelayStorage.ack_alert`."""
        def body(c: Conn) -> AlertRecord | None:
            c.execute("UPDATE alerts SET acked_ms = ?, acked_by = ? WHERE account_id = ? AND "
                      "alert_id = ? AND acked_ms IS NULL", (now_ms, by, account_id, alert_id))
            row = c.execute(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE "  # noqa: S608
                            "account_id = ? AND alert_id = ?", (account_id, alert_id)).fetchone()
            return None if row is None else alert_record(*row)
        return await self._write(body)

    async def append_audit(self, account_id: bytes, entry: bytes, now_ms: int) -> int:
        """See :meth:`RelayStorage.append_audit`: the counter row and the entry in
        one ``BEGIN IMMEDIATE`` transaction."""
        leaf = audit_leaf(entry)

        counter, insert = (sqlite_statement(s) for s in APPEND_AUDIT)

        def body(c: Conn) -> int:
            size = int(c.execute(counter, (account_id,)).fetchone()[0])
            c.execute(insert, (account_id, size - 1, entry, leaf, now_ms))
            return size - 1
        return await self._write(body)


def _vacuum_step(c: Conn) -> None:
    """Return up to VACUUM_PAGES_PER_PRUNE free pages to the filesystem (a no-op
    unless the file is in ``auto_vacuum = INCREMENTAL`` mode)."""
    # Each step of the statement frees one page, and execute() steps it only
    # once (it returns no columns); executescript() runs it to the end, in one
    # transaction of its own.
    c.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES_PER_PRUNE})")


def _space_size(c: Conn, space_id: bytes) -> tuple[int, bytes]:
    """``(size, frontier)`` of the space; NotFoundError if there is none."""
    row = c.execute("SELECT size, frontier FROM spaces WHERE space_id = ?",
                    (space_id,)).fetchone()
    if row is None:
        raise NotFoundError("unknown space")
    return int(row[0]), bytes(row[1])


def _space_epoch(c: Conn, space_id: bytes) -> int:
    row = c.execute("SELECT epoch FROM spaces WHERE space_id = ?", (space_id,)).fetchone()
    if row is None:
        raise NotFoundError("unknown space")
    return int(row[0])


def _channel(c: Conn, channel_id: bytes) -> pairing.ChannelRow | None:
    found = c.execute(f"SELECT {CHANNEL_COLUMNS} FROM pairing_channels "  # noqa: S608 - constant
                      "WHERE channel_id = ?", (channel_id,)).fetchone()
    return None if found is None else channel_row(found)


def _burn(c: Conn, channel_id: bytes, reason: str, by: str | None) -> None:
    """Burn a channel (the first reason stays) and delete its messages."""
    c.execute("UPDATE pairing_channels SET burnt = 1, burnt_reason = coalesce(burnt_reason, ?), "
              "burnt_by = coalesce(burnt_by, ?) WHERE channel_id = ?", (reason, by, channel_id))
    c.execute("DELETE FROM pairing_messages WHERE channel_id = ?", (channel_id,))


def _revoked_heads(c: Conn, account_id: bytes,
                   authors: Sequence[bytes]) -> list[tuple[bytes, bytes, int]]:
    # The highest stored seq of each revoked author in each of the account's spaces.
    marks = ", ".join("?" * len(authors))
    rows = c.execute(
        f"SELECT o.space_id, o.author, max(o.seq) FROM ops o JOIN spaces s ON "  # noqa: S608
        f"s.space_id = o.space_id WHERE s.account_id = ? AND o.author IN ({marks}) "
        "GROUP BY o.space_id, o.author", (account_id, *authors)).fetchall()
    return [(bytes(r[0]), bytes(r[1]), int(r[2])) for r in rows]
