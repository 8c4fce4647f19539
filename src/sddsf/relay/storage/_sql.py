"""What the SQLite and PostgreSQL backends run identically: the same statement.

Most of the storage contract is one statement over one table, and the two
engines accept the same SQL for it. Those methods live here, once, in
:class:`SqlStorage`, over three primitives each backend implements with its
own connection handling (one transaction per call, driver errors translated
to the contract's errors):

* :meth:`SqlStorage._fetch` -- a read, all rows;
* :meth:`SqlStorage._execute` -- a write, the number of rows it changed;
* :meth:`SqlStorage._execute_in_space` -- a write to a space's rows, in one
  transaction that first checks the space exists (``NotFoundError``).

Statements are written in PostgreSQL's numbered form (``$1``, ``$2``, ...);
SQLite reads the same numbers as ``?1``, ``?2`` (:func:`sqlite_statement`). What
differs between the engines -- appends under the counter row's lock, the
advisory locks of PostgreSQL, its array parameters and one-round-trip reads,
SQLite's single writer -- stays in :mod:`.sqlite` and :mod:`.postgres`, which
share the remaining statement texts and row mappings below.
"""

from __future__ import annotations

import functools
import re
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Final

from sddsf.errors import InternalError, NotFoundError, UsageError
from sddsf.relay.storage import _pairing as pairing
from sddsf.relay.storage._common import (
    alert_record,
    attestations_by_id,
    evidence_digest,
    first_sync_after,
    prefix_range,
    space_record,
)
from sddsf.relay.storage.base import (
    AlertRecord,
    FirstSyncReads,
    ForkEvidence,
    LeafKind,
    PostureRecord,
    RelayStorage,
    SignalRow,
    SpaceRecord,
    StoredBackup,
)

__all__ = [
    "ALERT_COLUMNS",
    "APPEND_AUDIT",
    "ATTESTATIONS_OF_SPACE",
    "BACKUP_COLUMNS",
    "CHANNEL_COLUMNS",
    "FREE_NAMEPLATE",
    "KEY_PACKAGES_SINCE",
    "MEMBERSHIP_HEAD",
    "MEMBERSHIP_OFFSET",
    "OP_SELECT",
    "READABLE_SPACES",
    "SNAPSHOT_OF_DOC",
    "SPACE_COLUMNS",
    "Row",
    "SqlStorage",
    "channel_row",
    "check_limit",
    "sqlite_statement",
    "stored_backup",
]

#: A result row: a tuple (sqlite3) or an ``asyncpg.Record``; both index by position.
Row = Sequence[Any]

SPACE_COLUMNS: Final = "space_id, account_id, size, root, epoch, epoch_started_ms, created_ms"
# A leaf row with its envelope (NULL once pruned); callers add "WHERE o.space_id = ...".
OP_SELECT: Final = (
    "SELECT o.log_offset, o.op_id, o.author, o.seq, o.leaf_hash, e.envelope, o.received_ms, "
    "o.kind FROM ops o LEFT JOIN op_envelopes e ON e.space_id = o.space_id "
    "AND e.log_offset = o.log_offset")
# Membership leaves. ``kind = 1`` is written out, not a parameter: it is what
# lets both engines use the partial index ops_membership (the predicate must
# match the index's), so finding a space's entries never scans its ops.
_IS_MEMBERSHIP: Final = f"kind = {LeafKind.MEMBERSHIP:d}"
#: The hash (op id) of the space's newest membership entry.
MEMBERSHIP_HEAD: Final = (
    f"SELECT op_id FROM ops WHERE space_id = $1 AND {_IS_MEMBERSHIP} "  # noqa: S608
    "ORDER BY log_offset DESC LIMIT 1")
#: The offset of the space's membership entry whose hash is $2, if stored.
MEMBERSHIP_OFFSET: Final = (
    "SELECT log_offset FROM ops WHERE space_id = $1 AND author = $2 AND seq = 1 "  # noqa: S608
    f"AND {_IS_MEMBERSHIP}")
_MEMBERSHIP_ENTRIES: Final = (
    "SELECT o.log_offset, e.envelope FROM ops o LEFT JOIN op_envelopes e ON "  # noqa: S608
    "e.space_id = o.space_id AND e.log_offset = o.log_offset WHERE o.space_id = $1 AND "
    f"o.{_IS_MEMBERSHIP} ORDER BY o.log_offset")
# Pruning keeps the envelopes of membership leaves (one uncorrelated lookup
# through the partial index, not a probe per deleted row).
_PRUNE: Final = (
    "DELETE FROM op_envelopes WHERE space_id = $1 AND log_offset < $2 AND "  # noqa: S608
    f"log_offset NOT IN (SELECT log_offset FROM ops WHERE space_id = $1 AND {_IS_MEMBERSHIP} "
    "AND log_offset < $2)")
ALERT_COLUMNS: Final = ("alert_id, account_id, device_id, rule, severity, message, quarantine, "
                        "created_ms, acked_ms, acked_by")
BACKUP_COLUMNS: Final = ("account_id, kdf_alg, kdf_t, kdf_m, kdf_p, kdf_salt, verifier_hash, "
                         "blob, stored_ms")
CHANNEL_COLUMNS: Final = ("channel_id, expires_ms, burnt, burnt_reason, burnt_by, "
                          "initiator_token, joiner_token, message_count")
# The smallest positive nameplate no channel holds (the released ones are NULL).
FREE_NAMEPLATE: Final = (
    "SELECT coalesce(min(n), 1) FROM (SELECT 1 AS n WHERE NOT EXISTS (SELECT 1 FROM "
    "pairing_channels WHERE nameplate = 1) UNION ALL SELECT p.nameplate + 1 FROM "
    "pairing_channels p WHERE p.nameplate IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
    "pairing_channels q WHERE q.nameplate = p.nameplate + 1)) AS free")
# The audit log's counter row and entry (one transaction; the upsert's row lock,
# or SQLite's write lock, makes seqs gap-free and in commit order).
APPEND_AUDIT: Final = (
    "INSERT INTO audit_heads (account_id, size) VALUES ($1, 1) ON CONFLICT (account_id) "
    "DO UPDATE SET size = audit_heads.size + 1 RETURNING size",
    "INSERT INTO audit_log (account_id, seq, entry, leaf_hash, stored_ms) "
    "VALUES ($1, $2, $3, $4, $5)")

_NUMBERED: Final = re.compile(r"\$(\d+)")


KEY_PACKAGES_SINCE: Final = ("SELECT package FROM key_packages WHERE space_id = $1 AND "
                             "epoch >= $2 ORDER BY epoch")
SNAPSHOT_OF_DOC: Final = ("SELECT covers_offset, blob FROM snapshots WHERE space_id = $1 "
                          "AND doc_id = $2")
_S_COLUMNS: Final = ", ".join(f"s.{c}" for c in SPACE_COLUMNS.split(", "))
#: The spaces an account may read (RelayStorage.readable_spaces). Two
#: index-driven parts (an account's memberships; its own spaces never shared),
#: disjoint, so UNION ALL: written with OR, PostgreSQL scans the whole table.
READABLE_SPACES: Final = (
    f"SELECT {_S_COLUMNS} FROM space_members m JOIN spaces s "  # noqa: S608 - constant
    "ON s.space_id = m.space_id WHERE m.account_id = $1 UNION ALL "
    f"SELECT {_S_COLUMNS} FROM spaces s WHERE s.account_id = $1 AND NOT EXISTS "
    "(SELECT 1 FROM space_members o WHERE o.space_id = s.space_id) "
    "ORDER BY created_ms, space_id")
#: Every stored attestation of a space (grouped by ``_common.attestations_by_id``).
ATTESTATIONS_OF_SPACE: Final = (
    "SELECT doc_id, snapshot_id, attestation FROM snapshot_attestations WHERE space_id = $1 "
    "ORDER BY doc_id, snapshot_id, attester")



@functools.cache
def sqlite_statement(sql: str) -> str:
    """``sql`` with PostgreSQL's ``$n`` parameters as SQLite's ``?n`` (same numbers)."""
    return _NUMBERED.sub(r"?\1", sql)


def check_limit(limit: int) -> None:
    """Refuse a negative page size (a caller's bug)."""
    if limit < 0:
        raise UsageError(f"limit must be >= 0, got {limit}")


def channel_row(r: Row) -> pairing.ChannelRow:
    """A pairing channel from the :data:`CHANNEL_COLUMNS` of a row."""
    return pairing.ChannelRow(
        channel_id=bytes(r[0]), expires_ms=int(r[1]), burnt=bool(r[2]),
        reason=None if r[3] is None else str(r[3]), burnt_by=None if r[4] is None else str(r[4]),
        initiator_token=None if r[5] is None else bytes(r[5]),
        joiner_token=None if r[6] is None else bytes(r[6]), count=int(r[7]))


def stored_backup(r: Row) -> StoredBackup:
    """A backup from the :data:`BACKUP_COLUMNS` of a row."""
    return StoredBackup(bytes(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), bytes(r[5]),
                        bytes(r[6]), bytes(r[7]), int(r[8]))


class SqlStorage(RelayStorage):
    """The part of :class:`RelayStorage` both SQL backends implement with the same SQL."""

    # ------------------------------------------------------------ primitives
    @abstractmethod
    async def _fetch(self, sql: str, *args: object) -> list[Row]:
        """Run one read statement (``$n`` parameters); every row it returns."""

    @abstractmethod
    async def _execute(self, sql: str, *args: object) -> int:
        """Run one write statement in its own transaction; the rows it changed."""

    @abstractmethod
    async def _execute_in_space(self, space_id: bytes, sql: str, *args: object) -> int:
        """Check the space exists (else NotFoundError), then run one write
        statement, in one transaction; the rows it changed."""

    async def _fetchone(self, sql: str, *args: object) -> Row | None:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    # ------------------------------------------------------------- registry
    async def registry_entries(self, account_id: bytes, since: int = 0) -> list[bytes]:
        """See :meth:`RelayStorage.registry_entries`."""
        rows = await self._fetch("SELECT entry FROM registry_entries WHERE account_id = $1 "
                                 "AND seq >= $2 ORDER BY seq", account_id, since)
        return [bytes(r[0]) for r in rows]

    async def registry_entry_stored_ms(self, account_id: bytes, seq: int) -> int | None:
        """See :meth:`RelayStorage.registry_entry_stored_ms`."""
        row = await self._fetchone("SELECT stored_ms FROM registry_entries WHERE "
                                   "account_id = $1 AND seq = $2", account_id, seq)
        return None if row is None else int(row[0])

    # --------------------------------------------------------------- spaces
    async def get_space(self, space_id: bytes) -> SpaceRecord | None:
        """See :meth:`RelayStorage.get_space`."""
        row = await self._fetchone(
            f"SELECT {SPACE_COLUMNS} FROM spaces WHERE space_id = $1",  # noqa: S608 - constant
            space_id)
        return None if row is None else space_record(*row)

    async def key_packages(self, space_id: bytes, since_epoch: int = 0) -> list[bytes]:
        """See :meth:`RelayStorage.key_packages` ([] for an unknown space)."""
        rows = await self._fetch(KEY_PACKAGES_SINCE, space_id, since_epoch)
        return [bytes(r[0]) for r in rows]

    # ------------------------------------------------------------------ ops
    async def record_fork(self, evidence: ForkEvidence) -> None:
        """See :meth:`RelayStorage.record_fork`."""
        e = evidence
        await self._execute_in_space(
            e.space_id,
            "INSERT INTO fork_evidence (space_id, author, seq, pair_digest, accepted_envelope, "
            "refused_envelope, recorded_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            "ON CONFLICT (space_id, pair_digest) DO NOTHING",
            e.space_id, e.author, e.seq, evidence_digest(e), e.accepted_envelope,
            e.refused_envelope, e.recorded_ms)

    async def prune_ops(self, space_id: bytes, before_offset: int) -> int:
        """See :meth:`RelayStorage.prune_ops`."""
        # A DELETE, not an UPDATE to NULL: whole pages of envelopes become free
        # for later appends (or, on SQLite, for the incremental vacuum).
        return await self._execute_in_space(space_id, _PRUNE, space_id, before_offset)

    async def _require_space(self, space_id: bytes) -> None:
        """NotFoundError unless the space exists (asked only when an answer is
        empty, to tell an unknown space from an empty one)."""
        if await self.get_space(space_id) is None:
            raise NotFoundError("unknown space")

    # ----------------------------------------------------------- membership
    async def membership_entries(self, space_id: bytes) -> list[tuple[int, bytes]]:
        """See :meth:`RelayStorage.membership_entries`."""
        rows = await self._fetch(_MEMBERSHIP_ENTRIES, space_id)
        if not rows:
            await self._require_space(space_id)
        lost = [int(r[0]) for r in rows if r[1] is None]
        if lost:  # never pruned: only a damaged database lacks one
            raise InternalError(f"the membership entry at offset {lost[0]} of this space "
                                "has lost its bytes; run sddsf relay fsck")
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def space_members(self, space_id: bytes) -> dict[bytes, str]:
        """See :meth:`RelayStorage.space_members`."""
        rows = await self._fetch("SELECT account_id, role FROM space_members WHERE "
                                 "space_id = $1", space_id)
        if not rows:
            await self._require_space(space_id)
        return {bytes(r[0]): str(r[1]) for r in rows}

    async def shared_spaces(self, account_id: bytes) -> list[SpaceRecord]:
        """See :meth:`RelayStorage.shared_spaces`."""
        rows = await self._fetch(
            f"SELECT {_S_COLUMNS} FROM space_members m JOIN spaces s ON "  # noqa: S608 - constant
            "s.space_id = m.space_id WHERE m.account_id = $1 ORDER BY s.created_ms, s.space_id",
            account_id)
        return [space_record(*r) for r in rows]

    async def first_sync_reads(self, space_id: bytes, docs: Sequence[bytes],
                               limit: int) -> FirstSyncReads:
        """See :meth:`RelayStorage.first_sync_reads` (one call per read here;
        SQLite answers in one transaction)."""
        check_limit(limit)
        packages = await self.key_packages(space_id)
        snapshots = {doc: s for doc in docs
                     if (s := await self.get_snapshot(space_id, doc)) is not None}
        rows = await self._fetch(ATTESTATIONS_OF_SPACE, space_id)
        after = first_sync_after(snapshots)
        ops = await self.read_ops(space_id, after, limit)
        space = await self.get_space(space_id)
        if space is None:  # pragma: no cover - read_ops raised already; never deleted
            raise NotFoundError("unknown space")
        return FirstSyncReads(space, packages, snapshots, attestations_by_id(rows, docs),
                              after, ops)

    async def readable_spaces(self, account_id: bytes) -> list[SpaceRecord]:
        """See :meth:`RelayStorage.readable_spaces`."""
        return [space_record(*r) for r in await self._fetch(READABLE_SPACES, account_id)]

    # ------------------------------------------------------------ snapshots
    async def put_snapshot(self, space_id: bytes, doc_id: bytes, covers_offset: int,
                           blob: bytes, now_ms: int) -> None:
        """See :meth:`RelayStorage.put_snapshot`. A snapshot covering the same
        offset replaces the stored one (e.g. re-encrypted for a new epoch)."""
        await self._execute_in_space(
            space_id,
            "INSERT INTO snapshots (space_id, doc_id, covers_offset, blob, stored_ms) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (space_id, doc_id) DO UPDATE SET "
            "covers_offset = excluded.covers_offset, blob = excluded.blob, "
            "stored_ms = excluded.stored_ms "
            "WHERE excluded.covers_offset >= snapshots.covers_offset",
            space_id, doc_id, covers_offset, blob, now_ms)

    async def get_snapshot(self, space_id: bytes, doc_id: bytes) -> tuple[int, bytes] | None:
        """See :meth:`RelayStorage.get_snapshot`."""
        row = await self._fetchone(SNAPSHOT_OF_DOC, space_id, doc_id)
        return None if row is None else (int(row[0]), bytes(row[1]))

    async def put_snapshot_chunk(self, space_id: bytes, chunk_id: bytes, blob: bytes,
                                 now_ms: int) -> None:
        """See :meth:`RelayStorage.put_snapshot_chunk`."""
        await self._execute_in_space(
            space_id, "INSERT INTO snapshot_chunks (space_id, chunk_id, blob, stored_ms) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (space_id, chunk_id) DO NOTHING",
            space_id, chunk_id, blob, now_ms)

    async def get_snapshot_chunk(self, space_id: bytes, chunk_id: bytes) -> bytes | None:
        """See :meth:`RelayStorage.get_snapshot_chunk`."""
        row = await self._fetchone("SELECT blob FROM snapshot_chunks WHERE space_id = $1 "
                                   "AND chunk_id = $2", space_id, chunk_id)
        return None if row is None else bytes(row[0])

    async def snapshot_chunks(self, space_id: bytes) -> dict[bytes, int]:
        """See :meth:`RelayStorage.snapshot_chunks`."""
        rows = await self._fetch("SELECT chunk_id, stored_ms FROM snapshot_chunks WHERE "
                                 "space_id = $1", space_id)
        return {bytes(r[0]): int(r[1]) for r in rows}

    async def put_snapshot_attestation(self, space_id: bytes, doc_id: bytes,
                                       snapshot_id: bytes, attester: bytes, verdict: str,
                                       attestation: bytes, now_ms: int) -> None:
        """See :meth:`RelayStorage.put_snapshot_attestation`."""
        await self._execute_in_space(
            space_id,
            "INSERT INTO snapshot_attestations (space_id, doc_id, snapshot_id, attester, "
            "verdict, attestation, stored_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            "ON CONFLICT (space_id, doc_id, snapshot_id, attester) DO UPDATE SET "
            "verdict = excluded.verdict, attestation = excluded.attestation, "
            "stored_ms = excluded.stored_ms",
            space_id, doc_id, snapshot_id, attester, verdict, attestation, now_ms)

    async def snapshot_attestations(self, space_id: bytes, doc_id: bytes,
                                    snapshot_id: bytes) -> list[tuple[bytes, str, bytes]]:
        """See :meth:`RelayStorage.snapshot_attestations`."""
        rows = await self._fetch(
            "SELECT attester, verdict, attestation FROM snapshot_attestations WHERE "
            "space_id = $1 AND doc_id = $2 AND snapshot_id = $3 ORDER BY attester",
            space_id, doc_id, snapshot_id)
        return [(bytes(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    # --------------------------------------------------- passphrase backups
    async def put_backup(self, backup: StoredBackup) -> None:
        """See :meth:`RelayStorage.put_backup` (the attempt state is kept)."""
        b = backup
        await self._execute(
            f"INSERT INTO backups ({BACKUP_COLUMNS}) "  # noqa: S608 - constant
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (account_id) DO UPDATE "
            "SET kdf_alg = excluded.kdf_alg, kdf_t = excluded.kdf_t, "
            "kdf_m = excluded.kdf_m, kdf_p = excluded.kdf_p, "
            "kdf_salt = excluded.kdf_salt, verifier_hash = excluded.verifier_hash, "
            "blob = excluded.blob, stored_ms = excluded.stored_ms",
            b.account_id, b.alg, b.t, b.m_kib, b.p, b.salt, b.verifier_hash, b.blob,
            b.stored_ms)

    async def accounts_by_prefix(self, prefix: bytes, limit: int = 2) -> list[bytes]:
        """See :meth:`RelayStorage.accounts_by_prefix` (genesis rows: seq 0)."""
        low, high = prefix_range(prefix)
        rows = await self._fetch("SELECT account_id FROM registry_entries WHERE account_id >= $1 "
                                 "AND account_id <= $2 AND seq = 0 ORDER BY account_id LIMIT $3",
                                 low, high, limit)
        return [bytes(r[0]) for r in rows]

    async def backup_accounts(self, prefix: bytes, limit: int = 2) -> list[bytes]:
        """See :meth:`RelayStorage.backup_accounts` (a range scan of the primary key)."""
        low, high = prefix_range(prefix)
        rows = await self._fetch("SELECT account_id FROM backups WHERE account_id >= $1 "
                                 "AND account_id <= $2 ORDER BY account_id LIMIT $3",
                                 low, high, limit)
        return [bytes(r[0]) for r in rows]

    async def get_backup(self, account_id: bytes) -> StoredBackup | None:
        """See :meth:`RelayStorage.get_backup`."""
        row = await self._fetchone(
            f"SELECT {BACKUP_COLUMNS} FROM backups WHERE account_id = $1",  # noqa: S608
            account_id)
        return None if row is None else stored_backup(row)

    # ----------------------------------------------------------- controller
    async def put_posture(self, account_id: bytes, device_id: bytes, report: bytes,
                          ts_ms: int, now_ms: int) -> bool:
        """See :meth:`RelayStorage.put_posture` (an older report changes nothing)."""
        return await self._execute(
            "INSERT INTO device_posture (account_id, device_id, report, ts_ms, received_ms) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, device_id) DO UPDATE SET "
            "report = excluded.report, ts_ms = excluded.ts_ms, "
            "received_ms = excluded.received_ms WHERE excluded.ts_ms > device_posture.ts_ms",
            account_id, device_id, report, ts_ms, now_ms) == 1

    async def postures(self, account_id: bytes) -> dict[bytes, PostureRecord]:
        """See :meth:`RelayStorage.postures`."""
        rows = await self._fetch("SELECT device_id, report, ts_ms, received_ms FROM "
                                 "device_posture WHERE account_id = $1", account_id)
        return {bytes(r[0]): PostureRecord(bytes(r[0]), bytes(r[1]), int(r[2]), int(r[3]))
                for r in rows}

    async def record_signal(self, account_id: bytes, device_id: bytes, kind: str,
                            ts_ms: int, count: int = 1) -> None:
        """See :meth:`RelayStorage.record_signal`."""
        if count < 1:
            raise UsageError(f"a signal counts at least one event, got {count}")
        await self._execute("INSERT INTO controller_signals (account_id, device_id, kind, "
                            "ts_ms, count) VALUES ($1, $2, $3, $4, $5)",
                            account_id, device_id, kind, ts_ms, count)

    async def signals(self, account_id: bytes, device_id: bytes,
                      since_ms: int) -> list[SignalRow]:
        """See :meth:`RelayStorage.signals`."""
        rows = await self._fetch("SELECT kind, ts_ms, count FROM controller_signals WHERE "
                                 "account_id = $1 AND device_id = $2 AND ts_ms >= $3 "
                                 "ORDER BY ts_ms, id", account_id, device_id, since_ms)
        return [SignalRow(str(r[0]), int(r[1]), int(r[2])) for r in rows]

    async def prune_signals(self, before_ms: int) -> int:
        """See :meth:`RelayStorage.prune_signals`."""
        return await self._execute("DELETE FROM controller_signals WHERE ts_ms < $1", before_ms)

    async def get_controller_state(self, account_id: bytes, device_id: bytes) -> bytes | None:
        """See :meth:`RelayStorage.get_controller_state`."""
        row = await self._fetchone("SELECT state FROM controller_state WHERE "
                                   "account_id = $1 AND device_id = $2", account_id, device_id)
        return None if row is None else bytes(row[0])

    async def put_controller_state(self, account_id: bytes, device_id: bytes, state: bytes,
                                   now_ms: int) -> None:
        """See :meth:`RelayStorage.put_controller_state`."""
        await self._execute(
            "INSERT INTO controller_state (account_id, device_id, state, updated_ms) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, device_id) DO UPDATE SET "
            "state = excluded.state, updated_ms = excluded.updated_ms",
            account_id, device_id, state, now_ms)

    async def put_alert(self, alert: AlertRecord) -> bool:
        """See :meth:`RelayStorage.put_alert`."""
        a = alert
        return await self._execute(
            f"INSERT INTO alerts ({ALERT_COLUMNS}) VALUES "  # noqa: S608 - constant
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (alert_id) DO NOTHING",
            a.alert_id, a.account_id, a.device_id, a.rule, a.severity, a.message,
            a.quarantine, a.created_ms, a.acked_ms, a.acked_by) == 1

    async def alerts(self, account_id: bytes, *, include_acked: bool = False,
                     since_ms: int = 0) -> list[AlertRecord]:
        """See :meth:`RelayStorage.alerts`."""
        acked = "" if include_acked else " AND acked_ms IS NULL"
        rows = await self._fetch(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE account_id = $1 "  # noqa: S608
            f"AND created_ms >= $2{acked} ORDER BY created_ms, alert_id", account_id, since_ms)
        return [alert_record(*r) for r in rows]

    # ------------------------------------------------------------ audit log
    async def audit_entries(self, account_id: bytes, start: int,
                            limit: int) -> list[tuple[int, bytes]]:
        """See :meth:`RelayStorage.audit_entries`."""
        check_limit(limit)
        rows = await self._fetch("SELECT seq, entry FROM audit_log WHERE account_id = $1 "
                                 "AND seq >= $2 ORDER BY seq LIMIT $3", account_id, start, limit)
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def audit_leaf_hashes(self, account_id: bytes, end: int) -> list[bytes]:
        """See :meth:`RelayStorage.audit_leaf_hashes`."""
        rows = await self._fetch("SELECT leaf_hash FROM audit_log WHERE account_id = $1 "
                                 "AND seq < $2 ORDER BY seq", account_id, end)
        return [bytes(r[0]) for r in rows]

    async def audit_size(self, account_id: bytes) -> int:
        """See :meth:`RelayStorage.audit_size`."""
        row = await self._fetchone("SELECT size FROM audit_heads WHERE account_id = $1",
                                   account_id)
        return 0 if row is None else int(row[0])

