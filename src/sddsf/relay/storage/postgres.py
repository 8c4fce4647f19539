"""PostgreSQL backend of the relay storage (asyncpg pool).

Several relay nodes may share one database. What keeps them correct:

* **Per-space counter row.** ``append_ops`` starts with ``SELECT ... FROM spaces
  ... FOR UPDATE``: appends to one space are serialised by that row lock, and
  offsets come from its ``size`` column, so they are gap-free and equal to
  commit order (a serial id could commit out of order and make readers skip,
  THREATS #24). Statements after the lock run in READ COMMITTED with a fresh
  snapshot, so they see everything the previous lock holder committed.
* **Fail fast on a stalled lock holder.** Every connection runs with
  ``lock_timeout`` and ``statement_timeout``: a writer stuck behind a paused
  node gets ``StorageUnavailable`` ("space is locked by a stalled writer;
  retry") instead of hanging (THREATS #25).
* **Durability.** ``synchronous_commit=on`` is set explicitly on every
  connection, whatever the server default (THREATS #21).
* Driver errors are translated once, in :meth:`PostgresStorage._conn`.

Size: one class implements the whole storage contract on PostgreSQL; each
remaining method is a transaction whose statements or locking (row locks,
advisory locks, array parameters) differ from SQLite (what both engines run
identically is in ._sql).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg

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
    audit_leaf,
    check_cutoffs,
    check_membership_head,
    check_registry_seq,
    duplicate_membership,
    membership_leaf,
    pairs_to_look_up,
    plan_append,
    space_record,
    stored_op,
    validate_batch,
    validate_sql_identifier,
)
from sddsf.relay.storage._sql import (
    ALERT_COLUMNS,
    APPEND_AUDIT,
    CHANNEL_COLUMNS,
    FREE_NAMEPLATE,
    MEMBERSHIP_HEAD,
    MEMBERSHIP_OFFSET,
    OP_SELECT,
    SPACE_COLUMNS,
    Row,
    SqlStorage,
    channel_row,
    check_limit,
)
from sddsf.relay.storage.base import (
    AlertRecord,
    AppendOutcome,
    BackupAttempt,
    BackupAttemptState,
    BackupAttemptStatus,
    BackupLockPolicy,
    ChainSnapshot,
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

__all__ = ["PostgresStorage"]

_STALLED: Final = "space is locked by a stalled writer; retry"
# Revocations and op appends of one account are ordered by an advisory lock
# (THREATS #14): appends hold it shared, registry appends exclusively. Keyed by
# (this constant, the account id's first 4 bytes as a signed int); a collision
# between accounts only serialises them a little more.
_ACCOUNT_LOCK: Final = 0x5DD5
_LOCK_SPACE_ACCOUNT: Final = (
    "SELECT pg_advisory_xact_lock_shared($2, ('x' || encode(substring(account_id from 1 "
    "for 4), 'hex'))::bit(32)::int) FROM spaces WHERE space_id = $1")
_SPACE_WITH_REGISTRY: Final = (
    "SELECT size, frontier, (SELECT max(r.seq) FROM registry_entries r WHERE r.account_id = "
    "spaces.account_id) FROM spaces WHERE space_id = $1 FOR UPDATE")
# The rows of one append: the leaves (all of one kind, $16), the completed
# Merkle nodes and the counter row.
_WRITE_BATCH: Final = """
WITH new_ops AS (
    INSERT INTO ops (space_id, log_offset, op_id, author, seq, deps, leaf_hash, received_ms,
        kind)
    SELECT $1, u.*, $9::bigint, $16::smallint FROM unnest($2::bigint[], $3::bytea[],
        $4::bytea[], $5::bigint[], $6::bytea[], $7::bytea[]) AS u
), new_envelopes AS (
    INSERT INTO op_envelopes (space_id, log_offset, envelope)
    SELECT $1, e.* FROM unnest($2::bigint[], $8::bytea[]) AS e
), new_nodes AS (
    INSERT INTO merkle_nodes (space_id, level, idx, hash)
    SELECT $1, n.* FROM unnest($10::smallint[], $11::bigint[], $12::bytea[]) AS n
)
UPDATE spaces SET size = $13, root = $14, frontier = $15 WHERE space_id = $1"""

# A page of ops, then the envelopes of its offsets: two range scans, where a
# join's plan varied with the planner's statistics (an index probe per op, or
# a hash join) and pulls took up to 3x as long as before schema 11. A prune
# between the two reads leaves an envelope out, as a read just after the
# prune would (the ops themselves never change).
_READ_PAGE: Final = (
    "SELECT log_offset, op_id, author, seq, leaf_hash, received_ms, kind FROM ops "
    "WHERE space_id = $1 AND log_offset > $2 ORDER BY log_offset LIMIT $3")
_READ_ENVELOPES: Final = (
    "SELECT log_offset, envelope FROM op_envelopes WHERE space_id = $1 "
    "AND log_offset >= $2 AND log_offset <= $3")


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for error messages and logs."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable DSN>"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _count(status: str) -> int:
    """Row count from a command tag such as ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresStorage(SqlStorage):
    """Relay storage in PostgreSQL, shareable by several relay processes.

    Args:
        dsn: ``postgresql://user@host:port/db`` (libpq URL).
        schema: keep the tables in this schema (created if missing) by setting
            ``search_path`` on every connection; None uses the server default.
        min_size: connections opened up front.
        max_size: pool size.
        lock_timeout_ms: how long a statement waits for a row lock before the
            call fails with ``StorageUnavailable``.
        statement_timeout_ms: the longest any statement may run.
        connect_timeout_s: how long opening a connection may take.
        command_timeout_s: client-side bound on each statement (asyncpg's
            ``command_timeout``): a connection that stops answering (a black-holed
            network, a paused server) fails the call with ``StorageUnavailable``
            instead of hanging until TCP gives up. None: no client-side bound.
    """

    def __init__(self, dsn: str, *, schema: str | None = None, min_size: int = 1,
                 max_size: int = 4, lock_timeout_ms: int = 2000,
                 statement_timeout_ms: int = 10000, connect_timeout_s: float = 5.0,
                 command_timeout_s: float | None = None) -> None:
        """Configure; nothing connects before :meth:`open`."""
        if schema is not None:
            validate_sql_identifier(schema, "PostgreSQL schema")
        if not 1 <= min_size <= max_size:
            raise ConfigError(f"need 1 <= min_size <= max_size, got {min_size} and {max_size}")
        self.dsn = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.lock_timeout_ms = lock_timeout_ms
        self.statement_timeout_ms = statement_timeout_ms
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self._pool: Any = None

    def __repr__(self) -> str:
        return f"PostgresStorage({redact_dsn(self.dsn)!r}, schema={self.schema!r})"

    # ------------------------------------------------------------ plumbing
    def _translate(self, exc: BaseException, lock_message: str) -> SddsfError:
        """Map a driver or socket error to the storage contract's errors."""
        where = redact_dsn(self.dsn)
        state = getattr(exc, "sqlstate", None) or ""
        text = str(exc) or type(exc).__name__
        if state == "55P03":  # lock_not_available: lock_timeout fired
            return UnavailableError(f"{lock_message} (waited {self.lock_timeout_ms} ms)")
        if isinstance(exc, TimeoutError) and self.command_timeout_s is not None:
            return UnavailableError(f"PostgreSQL at {where} did not answer within "
                                    f"{self.command_timeout_s:g} s; retry")
        if state == "57014":  # query_canceled: statement_timeout fired
            return UnavailableError(f"a database statement took longer than "
                                    f"{self.statement_timeout_ms} ms; retry")
        if state.startswith("23"):  # integrity: a concurrent writer won a unique key
            return ConflictError(f"a concurrent writer stored a conflicting row ({text}); "
                                 "re-read and retry")
        if state in ("40001", "40P01"):
            return UnavailableError(f"transaction aborted by the database ({text}); retry")
        if isinstance(exc, asyncpg.exceptions.DataError):
            return UsageError(f"invalid value for the database: {text}")
        if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError) or \
                state.startswith(("08", "53", "57P", "28", "3D")):
            return UnavailableError(f"PostgreSQL at {where} is unavailable ({text}); check that "
                                    "it is running and reachable, then retry")
        return UnavailableError(f"PostgreSQL error at {where}: {text}")

    @asynccontextmanager
    async def _conn(self, lock_message: str = "a row is locked by a stalled writer; retry",
                    ) -> AsyncIterator[Any]:
        """A pooled connection; every driver error raised inside becomes an SddsfError."""
        pool = self._pool
        if pool is None:
            raise UsageError("the PostgreSQL storage is not open: call open() first")
        try:
            async with pool.acquire(timeout=self.statement_timeout_ms / 1000) as conn:
                yield conn
        except SddsfError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise self._translate(exc, lock_message) from exc

    # The primitives of the statements both backends share (:mod:`._sql`).
    async def _fetch(self, sql: str, *args: object) -> list[Row]:
        async with self._conn() as conn:
            return list(await conn.fetch(sql, *args))

    async def _execute(self, sql: str, *args: object) -> int:
        async with self._conn() as conn:
            return _count(await conn.execute(sql, *args))

    async def _execute_in_space(self, space_id: bytes, sql: str, *args: object) -> int:
        async with self._conn() as conn, conn.transaction():
            await _space_size(conn, space_id)
            return _count(await conn.execute(sql, *args))

    # ------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Create the pool (and the schema), then apply migrations.

        Raises:
            StorageUnavailable: the database cannot be reached.
            ConfigError: the schema is newer than this relay.
        """
        if self._pool is not None:
            return
        settings = {
            "synchronous_commit": "on",
            "lock_timeout": str(int(self.lock_timeout_ms)),
            "statement_timeout": str(int(self.statement_timeout_ms)),
            "application_name": "sddsf-relay",
        }
        if self.schema is not None:
            settings["search_path"] = f'"{self.schema}"'
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self.min_size, max_size=self.max_size,
                timeout=self.connect_timeout_s, server_settings=settings,
                command_timeout=self.command_timeout_s)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise self._translate(exc, "") from exc
        except ValueError as exc:  # a malformed DSN
            raise UnavailableError(f"cannot use the PostgreSQL DSN {redact_dsn(self.dsn)!r}: "
                                   f"{exc}") from exc
        try:
            async with self._conn() as conn:
                if self.schema is not None:
                    await _create_schema(conn, self.schema)
                await migrations.apply_postgres(conn)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the pool (terminating connections that do not close in time). Idempotent."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pool.terminate()

    async def schema_version(self) -> int:
        """The number of the last applied migration."""
        async with self._conn() as conn:
            return int(await conn.fetchval(
                "SELECT coalesce(max(version), 0) FROM schema_migrations"))

    async def ping(self) -> None:
        """``SELECT 1`` through the pool."""
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1")

    async def not_ready(self) -> list[str]:
        """A round trip; a server in recovery (a standby) or read-only is not ready.
        (A full disk on the server shows as failing writes, not here.)"""
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT pg_is_in_recovery(), "
                                      "current_setting('transaction_read_only')")
        reasons = []
        if row[0]:
            reasons.append("PostgreSQL is in recovery (a standby): it refuses writes")
        elif row[1] == "on":
            reasons.append("PostgreSQL sessions are read-only (default_transaction_read_only)")
        return reasons

    # ------------------------------------------------------------- registry
    async def create_account(self, account_id: bytes, genesis: bytes, now_ms: int) -> bool:
        """See :meth:`RelayStorage.create_account`."""
        async with self._conn() as conn, conn.transaction():
            if await conn.fetchval(
                    "INSERT INTO registry_entries (account_id, seq, entry, stored_ms) VALUES "
                    "($1, 0, $2, $3) ON CONFLICT DO NOTHING RETURNING true",
                    account_id, genesis, now_ms):
                return True
            stored = await conn.fetchval("SELECT entry FROM registry_entries WHERE "
                                         "account_id = $1 AND seq = 0", account_id)
            if bytes(stored) == genesis:
                return False
            raise ConflictError("this account already exists with another genesis entry")

    async def append_registry_entry(
            self, account_id: bytes, seq: int, entry: bytes, now_ms: int, *,
            revoked_cutoffs: Mapping[bytes, Mapping[bytes, int]] | None = None) -> bool:
        """See :meth:`RelayStorage.append_registry_entry`. An unknown account
        raises NotFoundError (it has no next seq: create it first). Holds the
        account's advisory lock exclusively: in-flight op appends of the account
        (which hold it shared) commit first and are seen by the cutoff check."""
        select = "SELECT entry FROM registry_entries WHERE account_id = $1 AND seq = $2"
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _ACCOUNT_LOCK,
                               _account_lock_key(account_id))
            stored = await conn.fetchval(select, account_id, seq)
            if stored is None:
                head = await conn.fetchval("SELECT max(seq) FROM registry_entries WHERE "
                                           "account_id = $1", account_id)
                if head is None:
                    raise NotFoundError("unknown account: store its genesis entry first")
                if seq != head + 1:
                    raise ConflictError(f"registry seq {seq} is not the next seq ({head + 1}); "
                                        "re-read the registry and verify again")
                if revoked_cutoffs:
                    check_cutoffs(await _revoked_heads(conn, account_id, list(revoked_cutoffs)),
                                  revoked_cutoffs)
                # Unique (account_id, seq) settles a race with another node: the
                # loser's insert waits for the winner's commit, then does nothing.
                if await conn.fetchval(
                        "INSERT INTO registry_entries (account_id, seq, entry, stored_ms) VALUES "
                        "($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
                        account_id, seq, entry, now_ms):
                    return True
                stored = await conn.fetchval(select, account_id, seq)
            if bytes(stored) == entry:
                return False
            raise ConflictError(f"registry seq {seq} already holds another entry; re-read "
                                "the registry and verify again")

    # --------------------------------------------------------------- spaces
    async def create_space(self, space_id: bytes, account_id: bytes, now_ms: int) -> bool:
        """See :meth:`RelayStorage.create_space`."""
        async with self._conn() as conn, conn.transaction():
            if await conn.fetchval(
                    "INSERT INTO spaces (space_id, account_id, created_ms, root) VALUES "
                    "($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
                    space_id, account_id, now_ms, EMPTY_ROOT):
                return True
            owner = await conn.fetchval("SELECT account_id FROM spaces WHERE space_id = $1",
                                        space_id)
        if bytes(owner) == account_id:
            return False
        raise ConflictError("this space id belongs to another account")

    async def list_spaces(self, account_id: bytes) -> list[SpaceRecord]:
        """See :meth:`RelayStorage.list_spaces`."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {SPACE_COLUMNS} FROM spaces WHERE account_id = $1 "  # noqa: S608
                "ORDER BY created_ms, space_id", account_id)
        return [space_record(*r) for r in rows]

    # --------------------------------------------------------- key packages
    async def put_key_package(self, space_id: bytes, epoch: int, package: bytes,
                              now_ms: int) -> bool:
        """See :meth:`RelayStorage.put_key_package`. Unknown space: NotFoundError."""
        async with self._conn(_STALLED) as conn, conn.transaction():
            current = await conn.fetchval("SELECT epoch FROM spaces WHERE space_id = $1 "
                                          "FOR UPDATE", space_id)
            if current is None:
                raise NotFoundError("unknown space")
            stored = await conn.fetchval("SELECT package FROM key_packages WHERE space_id = $1 "
                                         "AND epoch = $2", space_id, epoch)
            if stored is not None:
                if bytes(stored) == package:
                    return False
                raise ConflictError(f"key epoch {epoch} already has another package")
            if epoch != current + 1:
                raise ConflictError(f"key epoch {epoch} is not the next epoch ({current + 1}); "
                                    "re-read the key packages")
            await conn.execute("INSERT INTO key_packages (space_id, epoch, package, stored_ms) "
                               "VALUES ($1, $2, $3, $4)", space_id, epoch, package, now_ms)
            await conn.execute("UPDATE spaces SET epoch = $2, epoch_started_ms = $3 "
                               "WHERE space_id = $1", space_id, epoch, now_ms)
            return True

    # ------------------------------------------------------------------ ops
    async def chain_snapshot(self, space_id: bytes,
                             wanted: Sequence[tuple[bytes, int]]) -> ChainSnapshot:
        """See :meth:`RelayStorage.chain_snapshot` (one consistent snapshot)."""
        authors = list(dict.fromkeys(a for a, _ in wanted))
        pairs = list(dict.fromkeys(wanted))
        async with self._conn() as conn, conn.transaction(isolation="repeatable_read",
                                                          readonly=True):
            await _space_size(conn, space_id)
            head_rows = await conn.fetch(
                "SELECT a.author, h.seq, h.op_id, h.deps FROM unnest($2::bytea[]) AS a(author) "
                "CROSS JOIN LATERAL (SELECT seq, op_id, deps FROM ops WHERE space_id = $1 "
                "AND author = a.author ORDER BY seq DESC LIMIT 1) AS h", space_id, authors)
            id_rows = await conn.fetch(
                "SELECT o.author, o.seq, o.op_id FROM unnest($2::bytea[], $3::bigint[]) "
                "AS w(author, seq) JOIN ops o ON o.space_id = $1 AND o.author = w.author "
                "AND o.seq = w.seq", space_id, [a for a, _ in pairs], [s for _, s in pairs])
        return ChainSnapshot(
            {bytes(r[0]): (int(r[1]), bytes(r[2]), bytes(r[3])) for r in head_rows},
            {(bytes(r[0]), int(r[1])): bytes(r[2]) for r in id_rows})

    async def append_ops(self, space_id: bytes, ops: Sequence[OpToAppend], now_ms: int, *,
                         registry_seq: int | None = None,
                         membership_head: bytes | None = None) -> list[AppendOutcome]:
        """See :meth:`RelayStorage.append_ops`: one transaction holding the counter row
        (and, with ``registry_seq``, the account's advisory lock shared)."""
        ops = list(ops)
        validate_batch(ops)
        authors = list(dict.fromkeys(op.author for op in ops))
        async with self._conn(_STALLED) as conn, conn.transaction():
            if registry_seq is None:
                size, frontier = await _space_size(conn, space_id, lock=True)
            else:
                # The lock first, in its own statement: the next one's snapshot
                # then includes any registry entry committed before we got it.
                await conn.execute(_LOCK_SPACE_ACCOUNT, space_id, _ACCOUNT_LOCK)
                row = await conn.fetchrow(_SPACE_WITH_REGISTRY, space_id)
                if row is None:
                    raise NotFoundError("unknown space")
                size, frontier = int(row[0]), bytes(row[1])
                check_registry_seq(row[2], registry_seq)
            if membership_head is not None:
                head = await conn.fetchval(MEMBERSHIP_HEAD, space_id)
                check_membership_head(None if head is None else bytes(head), membership_head)
            head_rows = await conn.fetch(
                "SELECT a.author, (SELECT max(seq) FROM ops WHERE space_id = $1 AND "
                "author = a.author) FROM unnest($2::bytea[]) AS a(author)", space_id, authors)
            heads = {bytes(r[0]): int(r[1]) for r in head_rows if r[1] is not None}
            pairs = pairs_to_look_up(ops, heads)
            stored: dict[tuple[bytes, int], tuple[bytes, int]] = {}
            if pairs:
                rows = await conn.fetch(
                    "SELECT o.author, o.seq, o.op_id, o.log_offset FROM unnest($2::bytea[], "
                    "$3::bigint[]) AS w(author, seq) JOIN ops o ON o.space_id = $1 AND "
                    "o.author = w.author AND o.seq = w.seq",
                    space_id, [a for a, _ in pairs], [s for _, s in pairs])
                stored = {(bytes(r[0]), int(r[1])): (bytes(r[2]), int(r[3])) for r in rows}
            return await _append_planned(conn, space_id, plan_append(
                size, frontier, heads, stored, ops), now_ms, LeafKind.OP)

    async def append_membership(self, space_id: bytes, entry: bytes, entry_hash: bytes,
                                now_ms: int, *, expected_head: bytes,
                                members: Mapping[bytes, str]) -> AppendOutcome:
        """See :meth:`RelayStorage.append_membership`: one transaction holding the
        counter row, as every append does."""
        leaf, member_rows = membership_leaf(entry, entry_hash, expected_head, members)
        async with self._conn(_STALLED) as conn, conn.transaction():
            size, frontier = await _space_size(conn, space_id, lock=True)
            offset = await conn.fetchval(MEMBERSHIP_OFFSET, space_id, entry_hash)
            if offset is not None:
                return duplicate_membership(int(offset), entry_hash)
            head = await conn.fetchval(MEMBERSHIP_HEAD, space_id)
            check_membership_head(None if head is None else bytes(head), expected_head)
            (outcome,) = await _append_planned(conn, space_id, plan_append(
                size, frontier, {}, {}, [leaf]), now_ms, LeafKind.MEMBERSHIP)
            await conn.execute("DELETE FROM space_members WHERE space_id = $1", space_id)
            await conn.execute(
                "INSERT INTO space_members (space_id, account_id, role) SELECT $1, m.* FROM "
                "unnest($2::bytea[], $3::text[]) AS m", space_id,
                [a for a, _ in member_rows], [r for _, r in member_rows])
        return outcome

    # Hot read paths run ONE statement (one snapshot, one round trip) and look
    # the space up only when the answer is empty, to tell "unknown space" apart.
    async def op_by_author_seq(self, space_id: bytes, author: bytes,
                               seq: int) -> StoredOp | None:
        """See :meth:`RelayStorage.op_by_author_seq`."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"{OP_SELECT} WHERE o.space_id = $1 AND "
                "o.author = $2 AND o.seq = $3", space_id, author, seq)
            if row is None:
                await _space_size(conn, space_id)
        return None if row is None else stored_op(*row)

    async def read_ops(self, space_id: bytes, after: int, limit: int) -> list[StoredOp]:
        """See :meth:`RelayStorage.read_ops`."""
        check_limit(limit)
        async with self._conn() as conn:
            rows = await conn.fetch(_READ_PAGE, space_id, after, limit)
            if not rows:
                await _space_size(conn, space_id)
                return []
            held = dict(await conn.fetch(_READ_ENVELOPES, space_id, rows[0][0], rows[-1][0]))
        return [stored_op(o, i, a, s, h, held.get(o), ms, k) for o, i, a, s, h, ms, k in rows]

    async def leaf_hashes(self, space_id: bytes, start: int, end: int) -> list[bytes]:
        """See :meth:`RelayStorage.leaf_hashes`. A range past the log is a UsageError."""
        async with self._conn() as conn, conn.transaction(isolation="repeatable_read",
                                                          readonly=True):
            size, _ = await _space_size(conn, space_id)
            if not 0 <= start <= end <= size:
                raise UsageError(f"leaf range [{start}, {end}) is outside the log of {size}")
            rows = await conn.fetch("SELECT leaf_hash FROM ops WHERE space_id = $1 AND "
                                    "log_offset >= $2 AND log_offset < $3 ORDER BY log_offset",
                                    space_id, start, end)
        return [bytes(r[0]) for r in rows]

    async def merkle_nodes(self, space_id: bytes,
                           keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """See :meth:`RelayStorage.merkle_nodes`; keys not stored are absent."""
        wanted = list(dict.fromkeys(keys))
        leaves = [i for lv, i in wanted if lv == 0]  # leaves live in the ops rows
        inner = [(lv, i) for lv, i in wanted if lv != 0]
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT 0::smallint, log_offset, leaf_hash FROM ops WHERE space_id = $1 AND "
                "log_offset = ANY($2::bigint[]) UNION ALL "
                "SELECT n.level, n.idx, n.hash FROM unnest($3::smallint[], $4::bigint[]) "
                "AS k(level, idx) JOIN merkle_nodes n ON n.space_id = $1 AND "
                "n.level = k.level AND n.idx = k.idx",
                space_id, leaves, [lv for lv, _ in inner], [i for _, i in inner])
            if len(rows) < len(wanted):
                await _space_size(conn, space_id)
        return {(int(r[0]), int(r[1])): bytes(r[2]) for r in rows}

    async def fork_evidence(self, space_id: bytes) -> list[ForkEvidence]:
        """See :meth:`RelayStorage.fork_evidence`."""
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT author, seq, accepted_envelope, refused_envelope, "
                                    "recorded_ms FROM fork_evidence WHERE space_id = $1 "
                                    "ORDER BY recorded_ms, id", space_id)
            if not rows:
                await _space_size(conn, space_id)
        return [ForkEvidence(space_id, bytes(r[0]), int(r[1]), bytes(r[2]), bytes(r[3]),
                             int(r[4])) for r in rows]

    # ------------------------------------------------------------ snapshots
    async def set_ack(self, space_id: bytes, device_id: bytes, offset: int,
                      now_ms: int) -> int:
        """See :meth:`RelayStorage.set_ack` (monotonic: the larger value wins)."""
        async with self._conn() as conn, conn.transaction():
            size, _ = await _space_size(conn, space_id)
            if not -1 <= offset < size:
                raise UsageError(f"cannot acknowledge offset {offset}: the log has {size} ops")
            value = await conn.fetchval(
                "INSERT INTO acks (space_id, device_id, acked_offset, updated_ms) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (space_id, device_id) DO UPDATE SET "
                "acked_offset = GREATEST(acks.acked_offset, excluded.acked_offset), "
                "updated_ms = excluded.updated_ms RETURNING acked_offset",
                space_id, device_id, offset, now_ms)
        return int(value)

    async def acks(self, space_id: bytes) -> dict[bytes, int]:
        """See :meth:`RelayStorage.acks`."""
        async with self._conn() as conn:
            await _space_size(conn, space_id)
            rows = await conn.fetch("SELECT device_id, acked_offset FROM acks WHERE "
                                    "space_id = $1", space_id)
        return {bytes(r[0]): int(r[1]) for r in rows}

    async def delete_snapshot_chunks(self, space_id: bytes, chunk_ids: Sequence[bytes]) -> int:
        """See :meth:`RelayStorage.delete_snapshot_chunks`."""
        async with self._conn() as conn:
            status = await conn.execute("DELETE FROM snapshot_chunks WHERE space_id = $1 AND "
                                        "chunk_id = ANY($2::bytea[])", space_id,
                                        list(chunk_ids))
        return _count(status)

    async def delete_snapshot_attestations(self, space_id: bytes, doc_id: bytes,
                                           keep: Sequence[bytes]) -> int:
        """See :meth:`RelayStorage.delete_snapshot_attestations`."""
        async with self._conn() as conn:
            status = await conn.execute("DELETE FROM snapshot_attestations WHERE space_id = $1 "
                                        "AND doc_id = $2 AND NOT (snapshot_id = ANY($3::bytea[]))",
                                        space_id, doc_id, list(keep))
        return _count(status)

    # ------------------------------------------------------ pairing mailbox
    async def create_channel(self, channel_id: bytes, token_hash: bytes, now_ms: int,
                             expires_ms: int, reserve_until_ms: int) -> int:
        """See :meth:`RelayStorage.create_channel`. Relay processes opening channels
        at once take turns (a transaction-scoped advisory lock per schema), so each
        gets the smallest free number; the unique index is the backstop."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || "
                               "'/sddsf-pairing-nameplates'))")
            return await _create_channel(conn, channel_id, token_hash, now_ms, expires_ms,
                                         reserve_until_ms)

    async def claim_channel(self, nameplate: int, token_hash: bytes,
                            now_ms: int) -> PairingChannel:
        """See :meth:`RelayStorage.claim_channel`."""
        async with self._conn() as conn, conn.transaction():
            found = await conn.fetchrow(
                f"SELECT {CHANNEL_COLUMNS} FROM pairing_channels WHERE nameplate = $1 AND "  # noqa: S608
                "nameplate_until_ms > $2 FOR UPDATE", nameplate, now_ms)
            if found is None:
                raise NotFoundError(f"no pairing numbered {nameplate} on this relay: it "
                                    "expired, or the number is mistyped; check the code")
            row = channel_row(found)
            verdict = pairing.claim_verdict(row, token_hash, now_ms)
            if verdict is pairing.ClaimVerdict.TAKE:
                await conn.execute("UPDATE pairing_channels SET joiner_token = $2 WHERE "
                                   "channel_id = $1", row.channel_id, token_hash)
            elif verdict is pairing.ClaimVerdict.CONTESTED:
                await _burn(conn, row.channel_id, pairing.CONTESTED, None)
        if verdict is pairing.ClaimVerdict.CONTESTED:  # after the commit: the burn stays
            raise ConflictError(pairing.contested_message())
        return PairingChannel(row.channel_id, row.expires_ms)

    async def post_channel_message(self, channel_id: bytes, token_hash: bytes, index: int,
                                   body: bytes, now_ms: int, max_messages: int
                                   ) -> PairingMessage:
        """See :meth:`RelayStorage.post_channel_message`."""
        async with self._conn() as conn, conn.transaction():
            found = await _channel(conn, channel_id, lock=True)
            row, role = pairing.role_of(found, token_hash)
            pairing.check_usable(row, now_ms)
            stored = await conn.fetchrow("SELECT sender, body FROM pairing_messages WHERE "
                                         "channel_id = $1 AND idx = $2", channel_id, index)
            existing = None if stored is None else (str(stored[0]), bytes(stored[1]))
            verdict, why = pairing.judge_post(row, role, index, body, existing, max_messages)
            if verdict is pairing.PostVerdict.APPEND:
                await conn.execute("INSERT INTO pairing_messages (channel_id, idx, sender, "
                                   "body) VALUES ($1, $2, $3, $4)", channel_id, index, role,
                                   body)
                await conn.execute("UPDATE pairing_channels SET message_count = $2 "
                                   "WHERE channel_id = $1", channel_id, index + 1)
            elif verdict is pairing.PostVerdict.REFUSE:
                await _burn(conn, channel_id, pairing.VIOLATION, role)
        if why:  # after the commit: the burn stays
            raise ConflictError(why)
        return PairingMessage(index, role, body)

    async def channel_messages(self, channel_id: bytes, token_hash: bytes, after: int,
                               now_ms: int) -> list[PairingMessage]:
        """See :meth:`RelayStorage.channel_messages`."""
        async with self._conn() as conn, conn.transaction(isolation="repeatable_read",
                                                          readonly=True):
            found = await _channel(conn, channel_id)
            row, _ = pairing.role_of(found, token_hash)
            pairing.check_usable(row, now_ms)
            rows = await conn.fetch("SELECT idx, sender, body FROM pairing_messages WHERE "
                                    "channel_id = $1 AND idx > $2 ORDER BY idx",
                                    channel_id, after)
        return [PairingMessage(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    async def burn_channel(self, channel_id: bytes, token_hash: bytes, reason: str) -> None:
        """See :meth:`RelayStorage.burn_channel`."""
        pairing.validate_reason(reason)
        async with self._conn() as conn, conn.transaction():
            row = await _channel(conn, channel_id, lock=True)
            if row is None or row.initiator_token is None:
                return
            row, role = pairing.role_of(row, token_hash)
            if not row.burnt:
                await _burn(conn, channel_id, reason, role)

    # --------------------------------------------------- passphrase backups
    async def delete_backup(self, account_id: bytes) -> bool:
        """See :meth:`RelayStorage.delete_backup`."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("DELETE FROM backup_sources WHERE account_id = $1", account_id)
            status = await conn.execute("DELETE FROM backups WHERE account_id = $1", account_id)
        return _count(status) == 1

    async def backup_attempt(self, account_id: bytes, verifier_hash: bytes, now_ms: int,
                             policy: BackupLockPolicy, *, source: bytes = b"") -> BackupAttempt:
        """See :meth:`RelayStorage.backup_attempt`: one transaction holding the
        backup's row (``FOR UPDATE``), so concurrent guesses on several nodes are
        counted one after another."""
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT verifier_hash, blob, failures, lockouts, locked_until_ms FROM backups "
                "WHERE account_id = $1 FOR UPDATE", account_id)
            if row is None:
                raise NotFoundError("this account has no passphrase backup on this relay")
            before = BackupAttemptState(int(row[2]), int(row[3]), int(row[4]))
            matches = verifier_matches(bytes(row[0]), verifier_hash)
            if source:
                decision = await self._sourced_attempt(conn, account_id, source, before,
                                                       matches, now_ms, policy)
            else:
                decision = decide_backup_attempt(before, matches, now_ms, policy)
            after = decision.state
            if after != before:
                await conn.execute(
                    "UPDATE backups SET failures = $2, lockouts = $3, locked_until_ms = $4 "
                    "WHERE account_id = $1", account_id, after.failures, after.lockouts,
                    after.locked_until_ms)
        if decision.status is BackupAttemptStatus.OK:
            return BackupAttempt(decision.status, after, 0, bytes(row[1]))
        return decision

    @staticmethod
    async def _sourced_attempt(conn: Any, account_id: bytes, source: bytes,
                               account: BackupAttemptState, matches: bool, now_ms: int,
                               policy: BackupLockPolicy) -> BackupAttempt:
        # Under the backup's row lock. Forget sources whose last failure and lock
        # are older than the longest lockout (bounded rows per account).
        await conn.execute("DELETE FROM backup_sources WHERE account_id = $1 AND "
                           "updated_ms < $2 AND locked_until_ms < $3", account_id,
                           now_ms - policy.max_lockout_ms, now_ms)
        row = await conn.fetchrow("SELECT failures, lockouts, locked_until_ms FROM "
                                  "backup_sources WHERE account_id = $1 AND source = $2",
                                  account_id, source)
        before = BackupAttemptState() if row is None else BackupAttemptState(
            int(row[0]), int(row[1]), int(row[2]))
        decided = decide_sourced_attempt(account, before, matches, now_ms, policy)
        if decided.source == BackupAttemptState():
            await conn.execute("DELETE FROM backup_sources WHERE account_id = $1 AND "
                               "source = $2", account_id, source)
        elif decided.source != before:
            s = decided.source
            await conn.execute(
                "INSERT INTO backup_sources (account_id, source, failures, lockouts, "
                "locked_until_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (account_id, source) DO UPDATE SET failures = excluded.failures, "
                "lockouts = excluded.lockouts, locked_until_ms = excluded.locked_until_ms, "
                "updated_ms = excluded.updated_ms",
                account_id, source, s.failures, s.lockouts, s.locked_until_ms, now_ms)
        return decided.attempt

    # ----------------------------------------------------------- controller
    async def remember_report(self, account_id: bytes, device_id: bytes, digest: bytes,
                              now_ms: int, keep_ms: int) -> bool:
        """See :meth:`RelayStorage.remember_report`."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("DELETE FROM report_digests WHERE account_id = $1 AND "
                               "device_id = $2 AND seen_ms < $3", account_id, device_id,
                               now_ms - keep_ms)
            stored = await conn.fetchval(
                "INSERT INTO report_digests (account_id, device_id, digest, seen_ms) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
                account_id, device_id, digest, now_ms)
        return bool(stored)

    async def ack_alert(self, account_id: bytes, alert_id: bytes, by: bytes,
                        now_ms: int) -> AlertRecord | None:
        """See :meth:`RelayStorage.ack_alert`."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("UPDATE alerts SET acked_ms = $1, acked_by = $2 WHERE "
                               "account_id = $3 AND alert_id = $4 AND acked_ms IS NULL",
                               now_ms, by, account_id, alert_id)
            row = await conn.fetchrow(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE "  # noqa: S608
                                      "account_id = $1 AND alert_id = $2", account_id, alert_id)
        return None if row is None else alert_record(*row)

    async def append_audit(self, account_id: bytes, entry: bytes, now_ms: int) -> int:
        """See :meth:`RelayStorage.append_audit`: the upsert of the counter row
        holds its lock until commit, so seqs are gap-free and in commit order."""
        leaf = audit_leaf(entry)
        async with self._conn() as conn, conn.transaction():
            size = int(await conn.fetchval(APPEND_AUDIT[0], account_id))
            await conn.execute(APPEND_AUDIT[1], account_id, size - 1, entry, leaf, now_ms)
        return size - 1


async def _append_planned(conn: Any, space_id: bytes, plan: AppendPlan, now_ms: int,
                          kind: LeafKind) -> list[AppendOutcome]:
    """Store a planned append (ops or a membership entry alike): its leaves, the
    Merkle nodes they complete and the counter row, in ONE statement (arrays
    in): fewer round trips while the counter row is locked means more appends
    per second on a busy space."""
    if plan.op_rows:
        op_columns = list(map(list, zip(*plan.op_rows, strict=True)))
        node_columns = (list(map(list, zip(*plan.node_rows, strict=True)))
                        if plan.node_rows else [[], [], []])
        await conn.execute(_WRITE_BATCH, space_id, *op_columns, now_ms, *node_columns,
                           plan.size, plan.root, plan.frontier, int(kind))
    return plan.outcomes


async def _create_schema(conn: Any, schema: str) -> None:
    """``CREATE SCHEMA IF NOT EXISTS``, tolerating a concurrent creator (which can
    win between the existence check and the catalog insert)."""
    with suppress(asyncpg.exceptions.UniqueViolationError,
                  asyncpg.exceptions.DuplicateSchemaError):
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


def _account_lock_key(account_id: bytes) -> int:
    """The second key of the account's advisory lock (as :data:`_LOCK_SPACE_ACCOUNT`)."""
    return int.from_bytes(account_id[:4], "big", signed=True)


async def _revoked_heads(conn: Any, account_id: bytes,
                         authors: Sequence[bytes]) -> list[tuple[bytes, bytes, int]]:
    """The highest stored seq of each revoked author in each of the account's spaces."""
    rows = await conn.fetch(
        "SELECT o.space_id, o.author, max(o.seq) FROM ops o JOIN spaces s ON "
        "s.space_id = o.space_id WHERE s.account_id = $1 AND o.author = ANY($2::bytea[]) "
        "GROUP BY o.space_id, o.author", account_id, list(authors))
    return [(bytes(r[0]), bytes(r[1]), int(r[2])) for r in rows]


async def _space_size(conn: Any, space_id: bytes, *, lock: bool = False) -> tuple[int, bytes]:
    """``(size, frontier)`` of the space, optionally locking its counter row."""
    query = ("SELECT size, frontier FROM spaces WHERE space_id = $1 FOR UPDATE" if lock
             else "SELECT size, frontier FROM spaces WHERE space_id = $1")
    row = await conn.fetchrow(query, space_id)
    if row is None:
        raise NotFoundError("unknown space")
    return int(row[0]), bytes(row[1])


async def _channel(conn: Any, channel_id: bytes, *,
                   lock: bool = False) -> pairing.ChannelRow | None:
    query = f"SELECT {CHANNEL_COLUMNS} FROM pairing_channels WHERE channel_id = $1"  # noqa: S608
    found = await conn.fetchrow(query + " FOR UPDATE" if lock else query, channel_id)
    return None if found is None else channel_row(found)


async def _create_channel(conn: Any, channel_id: bytes, token_hash: bytes, now_ms: int,
                          expires_ms: int, reserve_until_ms: int) -> int:
    # Release the numbers whose reservation ended, then take the smallest free.
    await conn.execute("UPDATE pairing_channels SET nameplate = NULL WHERE nameplate IS NOT "
                       "NULL AND nameplate_until_ms <= $1", now_ms)
    nameplate = int(await conn.fetchval(FREE_NAMEPLATE))
    if nameplate > NAMEPLATE_MAX:
        raise UnavailableError("too many pairings at once on this relay; retry later")
    created = await conn.fetchval(
        "INSERT INTO pairing_channels (channel_id, expires_ms, version, nameplate, "
        "nameplate_until_ms, initiator_token) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (channel_id) DO NOTHING RETURNING true", channel_id, expires_ms,
        PAIRING_VERSION, nameplate, reserve_until_ms, token_hash)
    if not created:
        raise ConflictError("a pairing channel with this id already exists")
    return nameplate


async def _burn(conn: Any, channel_id: bytes, reason: str, by: str | None) -> None:
    """Burn a channel (the first reason stays) and delete its messages."""
    await conn.execute("UPDATE pairing_channels SET burnt = true, burnt_reason = "
                       "coalesce(burnt_reason, $2), burnt_by = coalesce(burnt_by, $3) "
                       "WHERE channel_id = $1", channel_id, reason, by)
    await conn.execute("DELETE FROM pairing_messages WHERE channel_id = $1", channel_id)
