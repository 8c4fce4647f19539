"""Versioned schema migrations for the relay storage backends.

Each backend has an ordered list of :class:`Migration` (version, description,
SQL statements). ``open()`` applies the pending ones in order, each in its own
transaction together with its ``schema_migrations`` row, so a crash leaves the
schema at a whole version. Applying is idempotent: a version already recorded
is never run again, even when several relay processes open the same database
at once (SQLite: ``BEGIN IMMEDIATE`` serialises them; PostgreSQL: a
transaction-scoped advisory lock per schema, and the version is re-read under it).

A database whose schema is newer than this code refuses to open
(:class:`~sddsf.errors.ConfigError`): an older relay must not write rows whose
meaning it does not know.

Schema (both backends; ``log_offset`` because ``offset`` is an SQL keyword):

* ``registry_entries(account_id, seq, entry, stored_ms)``: seq 0 is the genesis.
* ``spaces(space_id, account_id, created_ms, size, root, frontier, epoch,
  epoch_started_ms)``: ``size`` is the per-space counter (next offset) that the
  append transaction locks; ``frontier`` is the concatenated RFC 9162 frontier.
* ``ops(space_id, log_offset, op_id, author, seq, deps, leaf_hash,
  received_ms, kind)``: the leaves of each space's log, unique ``(space_id,
  author, seq)``; kept forever (proofs). ``kind`` (since version 12) is 0 for
  an op, 1 for a membership entry (``LeafKind``: its op id and author are the
  entry hash, seq 1); the partial index ``ops_membership`` finds a space's
  entries without scanning its ops.
* ``op_envelopes(space_id, log_offset, envelope)`` (since version 11; before, an
  ``ops.envelope`` column set to NULL by pruning): the envelope of each leaf not
  yet pruned; pruning deletes the rows of ops (never of membership entries), so
  the op envelopes held are a suffix of the log.
* ``space_members(space_id, account_id, role)`` (since version 12): the current
  member set of each shared space, rewritten with each membership entry; the
  index ``space_members_by_account`` lists an account's shared spaces.
* ``merkle_nodes(space_id, level, idx, hash)``: perfect nodes of level >= 1
  (level 0 is ``ops.leaf_hash``).
* ``key_packages``, ``snapshots``, ``fork_evidence``, ``pairing_channels``,
  ``pairing_messages``.
* ``snapshot_chunks(space_id, chunk_id, blob, stored_ms)`` (since version 10): the chunks of
  chunked (version 2) snapshots, by content id; ``snapshot_attestations(space_id,
  doc_id, snapshot_id, attester, verdict, attestation, stored_ms)``: devices'
  signed verdicts on the stored snapshot (pruning waits for a ``match`` by a
  device other than the author, protocol.md 18.7).
* ``acks(space_id, device_id, acked_offset, updated_ms)``: how far each device
  has applied the log (pruning waits for every active device).
* ``backups(account_id, kdf_alg, kdf_t, kdf_m, kdf_p, kdf_salt, verifier_hash,
  blob, stored_ms, failures, lockouts, locked_until_ms)``: one passphrase backup
  per account and its attempt state (lockouts survive restarts).
* ``device_posture``, ``controller_signals``, ``controller_state``, ``alerts``,
  ``audit_heads(account_id, size)`` (the per-account audit counter row) and
  ``audit_log(account_id, seq, entry, leaf_hash, stored_ms)``: the security
  controller (docs/controller.md).
* ``pairing_channels`` since version 8 (pairing version 2): ``nameplate`` (the
  channel's number, NULL once released; unique among the others),
  ``nameplate_until_ms``, the BLAKE2b-256 of the two slot tokens
  (``initiator_token``, ``joiner_token``), ``burnt_reason`` and ``burnt_by``.
  Channels of version 1 (no tokens) are refused.
* ``report_digests(account_id, device_id, digest, seen_ms)`` since version 9: the
  reports each device had accepted within the freshness window (a copy is a replay), and
  ``backup_sources(account_id, source, failures, lockouts, locked_until_ms,
  updated_ms)``: the passphrase-backup attempt state per source address.

Size: the schema history of both engines, one numbered migration after another;
a migration is never edited once released, so the file only grows and is read
in order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sddsf.errors import ConfigError
from sddsf.relay.storage._common import now_ms

__all__ = [
    "LATEST_VERSION",
    "POSTGRES_MIGRATIONS",
    "SQLITE_MIGRATIONS",
    "Migration",
    "apply_postgres",
    "apply_sqlite",
    "check_not_newer",
]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its number, a description and its SQL statements."""

    version: int
    description: str
    sql: tuple[str, ...]


_SQLITE_TRACKING: Final = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_ms INTEGER NOT NULL)"""

_PG_TRACKING: Final = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    description text NOT NULL,
    applied_ms bigint NOT NULL)"""

SQLITE_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "device registries and spaces", (
        """CREATE TABLE registry_entries (
            account_id BLOB NOT NULL,
            seq INTEGER NOT NULL CHECK (seq >= 0),
            entry BLOB NOT NULL,
            stored_ms INTEGER NOT NULL,
            PRIMARY KEY (account_id, seq))""",
        """CREATE TABLE spaces (
            space_id BLOB PRIMARY KEY,
            account_id BLOB NOT NULL,
            created_ms INTEGER NOT NULL,
            size INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),
            root BLOB NOT NULL,
            frontier BLOB NOT NULL DEFAULT x'',
            epoch INTEGER NOT NULL DEFAULT -1 CHECK (epoch >= -1),
            epoch_started_ms INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX spaces_by_account ON spaces (account_id, created_ms)",
    )),
    Migration(2, "op log and Merkle nodes", (
        """CREATE TABLE ops (
            space_id BLOB NOT NULL REFERENCES spaces (space_id),
            log_offset INTEGER NOT NULL CHECK (log_offset >= 0),
            op_id BLOB NOT NULL,
            author BLOB NOT NULL,
            seq INTEGER NOT NULL CHECK (seq >= 1),
            deps BLOB NOT NULL,
            leaf_hash BLOB NOT NULL,
            envelope BLOB,
            received_ms INTEGER NOT NULL,
            PRIMARY KEY (space_id, log_offset),
            UNIQUE (space_id, author, seq))""",
        """CREATE TABLE merkle_nodes (
            space_id BLOB NOT NULL REFERENCES spaces (space_id),
            level INTEGER NOT NULL CHECK (level >= 1),
            idx INTEGER NOT NULL CHECK (idx >= 0),
            hash BLOB NOT NULL,
            PRIMARY KEY (space_id, level, idx)) WITHOUT ROWID""",
    )),
    Migration(3, "key packages, snapshots and fork evidence", (
        """CREATE TABLE key_packages (
            space_id BLOB NOT NULL REFERENCES spaces (space_id),
            epoch INTEGER NOT NULL CHECK (epoch >= 0),
            package BLOB NOT NULL,
            stored_ms INTEGER NOT NULL,
            PRIMARY KEY (space_id, epoch))""",
        """CREATE TABLE snapshots (
            space_id BLOB NOT NULL REFERENCES spaces (space_id),
            doc_id BLOB NOT NULL,
            covers_offset INTEGER NOT NULL,
            blob BLOB NOT NULL,
            stored_ms INTEGER NOT NULL,
            PRIMARY KEY (space_id, doc_id))""",
        """CREATE TABLE fork_evidence (
            id INTEGER PRIMARY KEY,
            space_id BLOB NOT NULL REFERENCES spaces (space_id),
            author BLOB NOT NULL,
            seq INTEGER NOT NULL,
            pair_digest BLOB NOT NULL,
            accepted_envelope BLOB NOT NULL,
            refused_envelope BLOB NOT NULL,
            recorded_ms INTEGER NOT NULL,
            UNIQUE (space_id, pair_digest))""",
    )),
    Migration(4, "pairing mailbox", (
        """CREATE TABLE pairing_channels (
            channel_id BLOB PRIMARY KEY,
            expires_ms INTEGER NOT NULL,
            burnt INTEGER NOT NULL DEFAULT 0,
            message_count INTEGER NOT NULL DEFAULT 0)""",
        """CREATE TABLE pairing_messages (
            channel_id BLOB NOT NULL REFERENCES pairing_channels (channel_id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            sender TEXT NOT NULL CHECK (sender IN ('initiator', 'joiner')),
            body BLOB NOT NULL,
            PRIMARY KEY (channel_id, idx))""",
    )),
    Migration(5, "device acknowledgements for pruning", (
        """CREATE TABLE acks (
            space_id BLOB NOT NULL REFERENCES spaces (space_id),
            device_id BLOB NOT NULL,
            acked_offset INTEGER NOT NULL CHECK (acked_offset >= -1),
            updated_ms INTEGER NOT NULL,
            PRIMARY KEY (space_id, device_id))""",
    )),
    Migration(6, "passphrase backups", (
        """CREATE TABLE backups (
            account_id BLOB PRIMARY KEY,
            kdf_alg TEXT NOT NULL,
            kdf_t INTEGER NOT NULL CHECK (kdf_t >= 1),
            kdf_m INTEGER NOT NULL CHECK (kdf_m >= 1),
            kdf_p INTEGER NOT NULL CHECK (kdf_p >= 1),
            kdf_salt BLOB NOT NULL,
            verifier_hash BLOB NOT NULL,
            blob BLOB NOT NULL,
            stored_ms INTEGER NOT NULL,
            failures INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
            lockouts INTEGER NOT NULL DEFAULT 0 CHECK (lockouts >= 0),
            locked_until_ms INTEGER NOT NULL DEFAULT 0)""",
    )),
    Migration(7, "security controller", (
        """CREATE TABLE device_posture (
            account_id BLOB NOT NULL,
            device_id BLOB NOT NULL,
            report BLOB NOT NULL,
            ts_ms INTEGER NOT NULL,
            received_ms INTEGER NOT NULL,
            PRIMARY KEY (account_id, device_id))""",
        """CREATE TABLE controller_signals (
            id INTEGER PRIMARY KEY,
            account_id BLOB NOT NULL,
            device_id BLOB NOT NULL,
            kind TEXT NOT NULL,
            ts_ms INTEGER NOT NULL,
            count INTEGER NOT NULL CHECK (count >= 1))""",
        "CREATE INDEX controller_signals_by_device ON controller_signals "
        "(account_id, device_id, ts_ms)",
        "CREATE INDEX controller_signals_by_time ON controller_signals (ts_ms)",
        """CREATE TABLE controller_state (
            account_id BLOB NOT NULL,
            device_id BLOB NOT NULL,
            state BLOB NOT NULL,
            updated_ms INTEGER NOT NULL,
            PRIMARY KEY (account_id, device_id))""",
        """CREATE TABLE alerts (
            alert_id BLOB PRIMARY KEY,
            account_id BLOB NOT NULL,
            device_id BLOB NOT NULL,
            rule TEXT NOT NULL,
            severity TEXT NOT NULL,
            message TEXT NOT NULL,
            quarantine INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            acked_ms INTEGER,
            acked_by BLOB)""",
        "CREATE INDEX alerts_by_account ON alerts (account_id, created_ms)",
        """CREATE TABLE audit_heads (
            account_id BLOB PRIMARY KEY,
            size INTEGER NOT NULL CHECK (size >= 0))""",
        """CREATE TABLE audit_log (
            account_id BLOB NOT NULL,
            seq INTEGER NOT NULL CHECK (seq >= 0),
            entry BLOB NOT NULL,
            leaf_hash BLOB NOT NULL,
            stored_ms INTEGER NOT NULL,
            PRIMARY KEY (account_id, seq))""",
    )),
    Migration(8, "pairing version 2", (
        "ALTER TABLE pairing_channels ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE pairing_channels ADD COLUMN nameplate INTEGER",
        "ALTER TABLE pairing_channels ADD COLUMN nameplate_until_ms INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE pairing_channels ADD COLUMN initiator_token BLOB",
        "ALTER TABLE pairing_channels ADD COLUMN joiner_token BLOB",
        "ALTER TABLE pairing_channels ADD COLUMN burnt_reason TEXT",
        "ALTER TABLE pairing_channels ADD COLUMN burnt_by TEXT",
        "CREATE UNIQUE INDEX pairing_channels_nameplate ON pairing_channels (nameplate) "
        "WHERE nameplate IS NOT NULL",
    )),
    Migration(9, "report digests and per-source backup attempts", (
        """CREATE TABLE report_digests (
            account_id BLOB NOT NULL,
            device_id BLOB NOT NULL,
            digest BLOB NOT NULL,
            seen_ms INTEGER NOT NULL,
            PRIMARY KEY (account_id, device_id, digest))""",
        "CREATE INDEX report_digests_by_time ON report_digests (account_id, device_id, seen_ms)",
        """CREATE TABLE backup_sources (
            account_id BLOB NOT NULL,
            source BLOB NOT NULL,
            failures INTEGER NOT NULL CHECK (failures >= 0),
            lockouts INTEGER NOT NULL CHECK (lockouts >= 0),
            locked_until_ms INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL,
            PRIMARY KEY (account_id, source))""",
    )),
    Migration(10, "snapshot chunks and attestations", (
        """CREATE TABLE snapshot_chunks (
            space_id BLOB NOT NULL REFERENCES spaces (space_id),
            chunk_id BLOB NOT NULL,
            blob BLOB NOT NULL,
            stored_ms INTEGER NOT NULL,
            PRIMARY KEY (space_id, chunk_id))""",
        """CREATE TABLE snapshot_attestations (
            space_id BLOB NOT NULL REFERENCES spaces (space_id),
            doc_id BLOB NOT NULL,
            snapshot_id BLOB NOT NULL,
            attester BLOB NOT NULL,
            verdict TEXT NOT NULL CHECK (verdict IN ('match', 'mismatch')),
            attestation BLOB NOT NULL,
            stored_ms INTEGER NOT NULL,
            PRIMARY KEY (space_id, doc_id, snapshot_id, attester))""",
    )),
    # Envelopes leave the ops rows: pruning then DELETEs whole rows, whose
    # pages go to the free list (appends reuse them; incremental vacuum returns
    # them to the filesystem), instead of leaving every ops page mostly empty.
    # The copy and the DROP COLUMN (a rewrite of ``ops``) are one transaction.
    # No foreign key to ``ops``: the relay writes an op and its envelope in one
    # transaction, fsck reports an envelope without its op (envelope_orphan),
    # and on PostgreSQL the per-row check cost 13 % of the append rate.
    Migration(11, "envelopes in a table of their own", (
        """CREATE TABLE op_envelopes (
            space_id BLOB NOT NULL,
            log_offset INTEGER NOT NULL,
            envelope BLOB NOT NULL,
            PRIMARY KEY (space_id, log_offset))""",
        "INSERT INTO op_envelopes (space_id, log_offset, envelope) SELECT space_id, "
        "log_offset, envelope FROM ops WHERE envelope IS NOT NULL ORDER BY space_id, log_offset",
        "ALTER TABLE ops DROP COLUMN envelope",
    )),
    # Membership entries become leaves of the space's log. The column's
    # constant default changes no existing row (each reads as an op) and
    # rewrites nothing; SQLite checks the CHECK against the existing rows.
    Migration(12, "membership entries in the space log", (
        "ALTER TABLE ops ADD COLUMN kind INTEGER NOT NULL DEFAULT 0 CHECK (kind IN (0, 1))",
        "CREATE INDEX ops_membership ON ops (space_id, log_offset) WHERE kind = 1",
        """CREATE TABLE space_members (
            space_id BLOB NOT NULL REFERENCES spaces (space_id),
            account_id BLOB NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
            PRIMARY KEY (space_id, account_id)) WITHOUT ROWID""",
        "CREATE INDEX space_members_by_account ON space_members (account_id)",
    )),
)

POSTGRES_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "device registries and spaces", (
        """CREATE TABLE registry_entries (
            account_id bytea NOT NULL,
            seq bigint NOT NULL CHECK (seq >= 0),
            entry bytea NOT NULL,
            stored_ms bigint NOT NULL,
            PRIMARY KEY (account_id, seq))""",
        """CREATE TABLE spaces (
            space_id bytea PRIMARY KEY,
            account_id bytea NOT NULL,
            created_ms bigint NOT NULL,
            size bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
            root bytea NOT NULL,
            frontier bytea NOT NULL DEFAULT '\\x',
            epoch bigint NOT NULL DEFAULT -1 CHECK (epoch >= -1),
            epoch_started_ms bigint NOT NULL DEFAULT 0)""",
        "CREATE INDEX spaces_by_account ON spaces (account_id, created_ms)",
    )),
    Migration(2, "op log and Merkle nodes", (
        """CREATE TABLE ops (
            space_id bytea NOT NULL REFERENCES spaces (space_id),
            log_offset bigint NOT NULL CHECK (log_offset >= 0),
            op_id bytea NOT NULL,
            author bytea NOT NULL,
            seq bigint NOT NULL CHECK (seq >= 1),
            deps bytea NOT NULL,
            leaf_hash bytea NOT NULL,
            envelope bytea,
            received_ms bigint NOT NULL,
            PRIMARY KEY (space_id, log_offset),
            UNIQUE (space_id, author, seq))""",
        """CREATE TABLE merkle_nodes (
            space_id bytea NOT NULL REFERENCES spaces (space_id),
            level smallint NOT NULL CHECK (level >= 1),
            idx bigint NOT NULL CHECK (idx >= 0),
            hash bytea NOT NULL,
            PRIMARY KEY (space_id, level, idx))""",
    )),
    Migration(3, "key packages, snapshots and fork evidence", (
        """CREATE TABLE key_packages (
            space_id bytea NOT NULL REFERENCES spaces (space_id),
            epoch bigint NOT NULL CHECK (epoch >= 0),
            package bytea NOT NULL,
            stored_ms bigint NOT NULL,
            PRIMARY KEY (space_id, epoch))""",
        """CREATE TABLE snapshots (
            space_id bytea NOT NULL REFERENCES spaces (space_id),
            doc_id bytea NOT NULL,
            covers_offset bigint NOT NULL,
            blob bytea NOT NULL,
            stored_ms bigint NOT NULL,
            PRIMARY KEY (space_id, doc_id))""",
        """CREATE TABLE fork_evidence (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            space_id bytea NOT NULL REFERENCES spaces (space_id),
            author bytea NOT NULL,
            seq bigint NOT NULL,
            pair_digest bytea NOT NULL,
            accepted_envelope bytea NOT NULL,
            refused_envelope bytea NOT NULL,
            recorded_ms bigint NOT NULL,
            UNIQUE (space_id, pair_digest))""",
    )),
    Migration(4, "pairing mailbox", (
        """CREATE TABLE pairing_channels (
            channel_id bytea PRIMARY KEY,
            expires_ms bigint NOT NULL,
            burnt boolean NOT NULL DEFAULT false,
            message_count bigint NOT NULL DEFAULT 0)""",
        """CREATE TABLE pairing_messages (
            channel_id bytea NOT NULL REFERENCES pairing_channels (channel_id) ON DELETE CASCADE,
            idx bigint NOT NULL,
            sender text NOT NULL CHECK (sender IN ('initiator', 'joiner')),
            body bytea NOT NULL,
            PRIMARY KEY (channel_id, idx))""",
    )),
    Migration(5, "device acknowledgements for pruning", (
        """CREATE TABLE acks (
            space_id bytea NOT NULL REFERENCES spaces (space_id),
            device_id bytea NOT NULL,
            acked_offset bigint NOT NULL CHECK (acked_offset >= -1),
            updated_ms bigint NOT NULL,
            PRIMARY KEY (space_id, device_id))""",
    )),
    Migration(6, "passphrase backups", (
        """CREATE TABLE backups (
            account_id bytea PRIMARY KEY,
            kdf_alg text NOT NULL,
            kdf_t bigint NOT NULL CHECK (kdf_t >= 1),
            kdf_m bigint NOT NULL CHECK (kdf_m >= 1),
            kdf_p bigint NOT NULL CHECK (kdf_p >= 1),
            kdf_salt bytea NOT NULL,
            verifier_hash bytea NOT NULL,
            blob bytea NOT NULL,
            stored_ms bigint NOT NULL,
            failures bigint NOT NULL DEFAULT 0 CHECK (failures >= 0),
            lockouts bigint NOT NULL DEFAULT 0 CHECK (lockouts >= 0),
            locked_until_ms bigint NOT NULL DEFAULT 0)""",
    )),
    Migration(7, "security controller", (
        """CREATE TABLE device_posture (
            account_id bytea NOT NULL,
            device_id bytea NOT NULL,
            report bytea NOT NULL,
            ts_ms bigint NOT NULL,
            received_ms bigint NOT NULL,
            PRIMARY KEY (account_id, device_id))""",
        """CREATE TABLE controller_signals (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            account_id bytea NOT NULL,
            device_id bytea NOT NULL,
            kind text NOT NULL,
            ts_ms bigint NOT NULL,
            count bigint NOT NULL CHECK (count >= 1))""",
        "CREATE INDEX controller_signals_by_device ON controller_signals "
        "(account_id, device_id, ts_ms)",
        "CREATE INDEX controller_signals_by_time ON controller_signals (ts_ms)",
        """CREATE TABLE controller_state (
            account_id bytea NOT NULL,
            device_id bytea NOT NULL,
            state bytea NOT NULL,
            updated_ms bigint NOT NULL,
            PRIMARY KEY (account_id, device_id))""",
        """CREATE TABLE alerts (
            alert_id bytea PRIMARY KEY,
            account_id bytea NOT NULL,
            device_id bytea NOT NULL,
            rule text NOT NULL,
            severity text NOT NULL,
            message text NOT NULL,
            quarantine boolean NOT NULL,
            created_ms bigint NOT NULL,
            acked_ms bigint,
            acked_by bytea)""",
        "CREATE INDEX alerts_by_account ON alerts (account_id, created_ms)",
        """CREATE TABLE audit_heads (
            account_id bytea PRIMARY KEY,
            size bigint NOT NULL CHECK (size >= 0))""",
        """CREATE TABLE audit_log (
            account_id bytea NOT NULL,
            seq bigint NOT NULL CHECK (seq >= 0),
            entry bytea NOT NULL,
            leaf_hash bytea NOT NULL,
            stored_ms bigint NOT NULL,
            PRIMARY KEY (account_id, seq))""",
    )),
    Migration(8, "pairing version 2", (
        """ALTER TABLE pairing_channels
            ADD COLUMN version bigint NOT NULL DEFAULT 1,
            ADD COLUMN nameplate bigint,
            ADD COLUMN nameplate_until_ms bigint NOT NULL DEFAULT 0,
            ADD COLUMN initiator_token bytea,
            ADD COLUMN joiner_token bytea,
            ADD COLUMN burnt_reason text,
            ADD COLUMN burnt_by text""",
        "CREATE UNIQUE INDEX pairing_channels_nameplate ON pairing_channels (nameplate) "
        "WHERE nameplate IS NOT NULL",
    )),
    Migration(9, "report digests and per-source backup attempts", (
        """CREATE TABLE report_digests (
            account_id bytea NOT NULL,
            device_id bytea NOT NULL,
            digest bytea NOT NULL,
            seen_ms bigint NOT NULL,
            PRIMARY KEY (account_id, device_id, digest))""",
        "CREATE INDEX report_digests_by_time ON report_digests (account_id, device_id, seen_ms)",
        """CREATE TABLE backup_sources (
            account_id bytea NOT NULL,
            source bytea NOT NULL,
            failures bigint NOT NULL CHECK (failures >= 0),
            lockouts bigint NOT NULL CHECK (lockouts >= 0),
            locked_until_ms bigint NOT NULL,
            updated_ms bigint NOT NULL,
            PRIMARY KEY (account_id, source))""",
    )),
    Migration(10, "snapshot chunks and attestations", (
        """CREATE TABLE snapshot_chunks (
            space_id bytea NOT NULL REFERENCES spaces (space_id),
            chunk_id bytea NOT NULL,
            blob bytea NOT NULL,
            stored_ms bigint NOT NULL,
            PRIMARY KEY (space_id, chunk_id))""",
        """CREATE TABLE snapshot_attestations (
            space_id bytea NOT NULL REFERENCES spaces (space_id),
            doc_id bytea NOT NULL,
            snapshot_id bytea NOT NULL,
            attester bytea NOT NULL,
            verdict text NOT NULL CHECK (verdict IN ('match', 'mismatch')),
            attestation bytea NOT NULL,
            stored_ms bigint NOT NULL,
            PRIMARY KEY (space_id, doc_id, snapshot_id, attester))""",
    )),
    # As for SQLite; DROP COLUMN does not rewrite ``ops`` here: the old values'
    # space is reclaimed as rows are vacuumed (docs/operations.md).
    Migration(11, "envelopes in a table of their own", (
        """CREATE TABLE op_envelopes (
            space_id bytea NOT NULL,
            log_offset bigint NOT NULL,
            envelope bytea NOT NULL,
            PRIMARY KEY (space_id, log_offset))""",
        "INSERT INTO op_envelopes (space_id, log_offset, envelope) SELECT space_id, "
        "log_offset, envelope FROM ops WHERE envelope IS NOT NULL ORDER BY space_id, log_offset",
        "ALTER TABLE ops DROP COLUMN envelope",
    )),
    # As for SQLite (PostgreSQL 11+ adds a column with a constant default
    # without rewriting the table; the CHECK reads it once).
    Migration(12, "membership entries in the space log", (
        "ALTER TABLE ops ADD COLUMN kind smallint NOT NULL DEFAULT 0 CHECK (kind IN (0, 1))",
        "CREATE INDEX ops_membership ON ops (space_id, log_offset) WHERE kind = 1",
        """CREATE TABLE space_members (
            space_id bytea NOT NULL REFERENCES spaces (space_id),
            account_id bytea NOT NULL,
            role text NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
            PRIMARY KEY (space_id, account_id))""",
        "CREATE INDEX space_members_by_account ON space_members (account_id)",
    )),
)

#: The schema version this code writes. Both backends always have the same list.
LATEST_VERSION: Final = SQLITE_MIGRATIONS[-1].version


def _check_list(migrations: Sequence[Migration]) -> None:
    """Versions are 1, 2, 3, ... so "applied up to N" is a complete description."""
    for i, m in enumerate(migrations, start=1):
        if m.version != i:
            raise AssertionError(f"migration #{i} has version {m.version}")  # pragma: no cover


_check_list(SQLITE_MIGRATIONS)
_check_list(POSTGRES_MIGRATIONS)
if POSTGRES_MIGRATIONS[-1].version != LATEST_VERSION:  # pragma: no cover - import-time invariant
    raise AssertionError("the SQLite and PostgreSQL migration lists must end at one version")


def check_not_newer(applied: int, latest: int = LATEST_VERSION) -> None:
    """Refuse a database that a newer relay has migrated.

    Raises:
        ConfigError: ``applied > latest``.
    """
    if applied > latest:
        raise ConfigError(f"database schema version {applied} is newer than this relay "
                          f"({latest}); upgrade the relay")


def _sqlite_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0])


def apply_sqlite(conn: sqlite3.Connection, *, up_to: int = LATEST_VERSION) -> int:
    """Apply pending SQLite migrations; returns the schema version.

    ``conn`` must be in autocommit mode (``isolation_level=None``): this
    function opens and ends its own transactions. ``up_to`` stops at an older
    version (tests build the databases an older relay left behind).

    Raises:
        ConfigError: the database is newer than this code.
        sqlite3.Error: for the caller to translate.
    """
    conn.execute(_SQLITE_TRACKING)
    for m in SQLITE_MIGRATIONS[:up_to]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have just applied it.
            applied = _sqlite_version(conn)
            check_not_newer(applied)
            if m.version <= applied:
                conn.execute("COMMIT")
                continue
            for statement in m.sql:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version, description, applied_ms) "
                         "VALUES (?, ?, ?)", (m.version, m.description, now_ms()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    version = _sqlite_version(conn)
    check_not_newer(version)
    return version


# Advisory lock key (two int4) for migrations; the second half is the schema,
# so tests running in separate schemas of one database do not wait on each other.
_PG_LOCK: Final = ("SELECT pg_advisory_xact_lock(hashtext('sddsf.relay.migrations'), "
                   "hashtext(current_schema()))")


async def apply_postgres(conn: Any, *, up_to: int = LATEST_VERSION) -> int:
    """Apply pending PostgreSQL migrations on an asyncpg connection; returns the
    version (``up_to``: as for :func:`apply_sqlite`).

    Raises:
        ConfigError: the database is newer than this code.
        asyncpg.PostgresError: for the caller to translate.
    """
    async def version() -> int:
        return int(await conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM schema_migrations"))

    async def lock() -> None:
        # A migration may wait for another node's; it must not hit the
        # request-sized lock/statement timeouts of the relay's connections.
        await conn.execute("SET LOCAL lock_timeout = '60s'")
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute(_PG_LOCK)

    async with conn.transaction():
        await lock()
        await conn.execute(_PG_TRACKING)
    for m in POSTGRES_MIGRATIONS[:up_to]:
        async with conn.transaction():
            await lock()
            applied = await version()
            check_not_newer(applied)
            if m.version <= applied:
                continue
            for statement in m.sql:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations (version, description, applied_ms)"
                               " VALUES ($1, $2, $3)", m.version, m.description, now_ms())
    applied = await version()
    check_not_newer(applied)
    return applied
