"""What a relay backup copies: every table of the relay schema, column by column.

The backup is backend-neutral: each value is normalised to one CBOR type per
column kind (``bytes``, ``int``, ``str``, ``bool``, or ``None``), so a backup
of a SQLite relay restores into PostgreSQL and back. The list is checked
against the live database before anything is read (:func:`check_columns`):
a schema migration that adds a table or a column without teaching the backup
about it makes the backup refuse, rather than silently leave data out.

Not copied: ``schema_migrations`` (the restore runs the migrations itself) and
``merkle_nodes`` (derived data: the restore recomputes every perfect node from
the leaf hashes, with the same :class:`~sddsf.protocol.merkle.Frontier` that
the relay uses, and fsck checks them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sddsf.errors import Code, ConfigError, DecodeError

__all__ = [
    "DERIVED_TABLES",
    "OLDER_COLUMNS",
    "SAME_ROWS_SINCE",
    "STORED_COLUMNS",
    "TABLES",
    "TABLE_BY_NAME",
    "Column",
    "Table",
    "check_columns",
    "piece_rows",
    "space_fields",
]

#: Column kinds and the Python type a value of that kind has in a backup.
_KINDS: Final = {"b": bytes, "i": int, "s": str, "t": bool}


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its name and kind (``b`` bytes, ``i`` integer, ``s`` text, ``t`` boolean)."""

    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class Table:
    """One table of the relay schema as the backup copies it.

    ``incremental`` names the key of an append-only table: ``(group, position)``
    columns such that a later backup copies only the rows whose position is at
    or beyond the size recorded by the previous backup for that group (the op
    log of each space, the audit log of each account). Other tables are copied
    whole, in pieces, and a piece whose content did not change since the
    previous backup is referenced rather than written again.
    """

    name: str
    columns: tuple[Column, ...]
    order_by: str
    incremental: tuple[str, str] | None = None
    identity: str | None = None  # PostgreSQL ``GENERATED ALWAYS AS IDENTITY`` column
    source: str = ""  # what a backup reads the rows from, when not the table itself

    @property
    def from_(self) -> str:
        """The FROM item that yields the rows, with these column names."""
        return self.source or self.name

    @property
    def names(self) -> tuple[str, ...]:
        """The column names, in backup order."""
        return tuple(c.name for c in self.columns)

    def normalise(self, row: Sequence[object]) -> list[object]:
        """One database row as backup values (SQLite integers for booleans become
        booleans, PostgreSQL ``memoryview``/``bytearray`` become ``bytes``).

        Raises:
            DecodeError: a value that is not of its column's kind (a database
                altered by hand; run ``sddsf relay fsck``).
        """
        return [_normalise(self.name, c, v) for c, v in zip(self.columns, row, strict=True)]

    def check_row(self, row: object) -> list[object]:
        """Validate one row read back from a backup piece.

        Raises:
            DecodeError: not a list of the right length, or a value of the wrong kind.
        """
        if not isinstance(row, list) or len(row) != len(self.columns):
            raise DecodeError(f"a backup row of table {self.name} does not have its "
                              f"{len(self.columns)} columns", Code.MALFORMED)
        for c, v in zip(self.columns, row, strict=True):
            if v is not None and type(v) is not _KINDS[c.kind]:
                raise DecodeError(f"backup column {self.name}.{c.name} holds a "
                                  f"{type(v).__name__}, expected {c.kind!r}", Code.MALFORMED)
        return row


def _normalise(table: str, column: Column, value: object) -> object:
    if value is None:
        return None
    kind = column.kind
    if kind == "b" and isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if kind == "i" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "t" and isinstance(value, int):  # SQLite stores booleans as 0/1
        return bool(value)
    if kind == "s" and isinstance(value, str):
        return value
    if kind == "s" and isinstance(value, bytes):  # SQLite read with text_factory=bytes
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    raise DecodeError(f"column {table}.{column.name} holds a {type(value).__name__} "
                      f"where the schema has kind {kind!r}; the database was altered by hand "
                      "(run sddsf relay fsck)", Code.MALFORMED)


def _t(name: str, spec: str, order_by: str, *, incremental: tuple[str, str] | None = None,
       identity: str | None = None, source: str = "") -> Table:
    cols = tuple(Column(*part.split(":")) for part in spec.split())
    return Table(name, cols, order_by, incremental, identity, source)


#: Where the database keeps what differs from the backup's rows: an op's
#: envelope is a column of the backup's ``ops`` rows (as it was of the table
#: until schema version 10), and in the table ``op_envelopes`` since version 11
#: (no row once pruned: the backup's column is NULL).
STORED_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "ops": ("space_id", "log_offset", "op_id", "author", "seq", "deps", "leaf_hash",
            "received_ms", "kind"),
    "op_envelopes": ("space_id", "log_offset", "envelope"),
}
#: The oldest schema version whose backups a restore or an incremental backup
#: still reads (version 11 moved envelopes to a table of their own, not out of
#: the backup's ``ops`` rows; version 12 added ``ops.kind``, which the rows of
#: older backups lack: see :data:`OLDER_COLUMNS`).
SAME_ROWS_SINCE: Final = 10
_OPS_SOURCE: Final = (
    "(SELECT o.space_id, o.log_offset, o.op_id, o.author, o.seq, o.deps, o.leaf_hash, "
    "e.envelope, o.received_ms, o.kind FROM ops o LEFT JOIN op_envelopes e ON "
    "e.space_id = o.space_id AND e.log_offset = o.log_offset) AS ops")


#: Every copied table, in the order a restore inserts them (foreign keys first).
TABLES: Final[tuple[Table, ...]] = (
    _t("registry_entries", "account_id:b seq:i entry:b stored_ms:i", "account_id, seq"),
    _t("spaces", "space_id:b account_id:b created_ms:i size:i root:b frontier:b epoch:i "
       "epoch_started_ms:i", "space_id"),
    _t("space_members", "space_id:b account_id:b role:s", "space_id, account_id"),
    _t("ops", "space_id:b log_offset:i op_id:b author:b seq:i deps:b leaf_hash:b envelope:b "
       "received_ms:i kind:i", "space_id, log_offset", incremental=("space_id", "log_offset"),
       source=_OPS_SOURCE),
    _t("key_packages", "space_id:b epoch:i package:b stored_ms:i", "space_id, epoch"),
    _t("snapshots", "space_id:b doc_id:b covers_offset:i blob:b stored_ms:i",
       "space_id, doc_id"),
    _t("snapshot_chunks", "space_id:b chunk_id:b blob:b stored_ms:i", "space_id, chunk_id"),
    _t("snapshot_attestations", "space_id:b doc_id:b snapshot_id:b attester:b verdict:s "
       "attestation:b stored_ms:i", "space_id, doc_id, snapshot_id, attester"),
    _t("fork_evidence", "id:i space_id:b author:b seq:i pair_digest:b accepted_envelope:b "
       "refused_envelope:b recorded_ms:i", "id", identity="id"),
    _t("pairing_channels", "channel_id:b expires_ms:i burnt:t message_count:i version:i "
       "nameplate:i nameplate_until_ms:i initiator_token:b joiner_token:b burnt_reason:s "
       "burnt_by:s", "channel_id"),
    _t("pairing_messages", "channel_id:b idx:i sender:s body:b", "channel_id, idx"),
    _t("acks", "space_id:b device_id:b acked_offset:i updated_ms:i", "space_id, device_id"),
    _t("backups", "account_id:b kdf_alg:s kdf_t:i kdf_m:i kdf_p:i kdf_salt:b verifier_hash:b "
       "blob:b stored_ms:i failures:i lockouts:i locked_until_ms:i", "account_id"),
    _t("device_posture", "account_id:b device_id:b report:b ts_ms:i received_ms:i",
       "account_id, device_id"),
    _t("controller_signals", "id:i account_id:b device_id:b kind:s ts_ms:i count:i", "id",
       identity="id"),
    _t("controller_state", "account_id:b device_id:b state:b updated_ms:i",
       "account_id, device_id"),
    _t("alerts", "alert_id:b account_id:b device_id:b rule:s severity:s message:s "
       "quarantine:t created_ms:i acked_ms:i acked_by:b", "alert_id"),
    _t("audit_heads", "account_id:b size:i", "account_id"),
    _t("audit_log", "account_id:b seq:i entry:b leaf_hash:b stored_ms:i", "account_id, seq",
       incremental=("account_id", "seq")),
    _t("report_digests", "account_id:b device_id:b digest:b seen_ms:i",
       "account_id, device_id, digest"),
    _t("backup_sources", "account_id:b source:b failures:i lockouts:i locked_until_ms:i "
       "updated_ms:i", "account_id, source"),
)

TABLE_BY_NAME: Final[Mapping[str, Table]] = {t.name: t for t in TABLES}

#: The columns of older backups' pieces that a restore still reads, and the
#: values of the columns they lack (appended to each row): ``ops`` pieces
#: written before schema 12 have no ``kind``, and every leaf they hold is an op.
OLDER_COLUMNS: Final[Mapping[str, tuple[tuple[str, ...], tuple[object, ...]]]] = {
    "ops": (TABLE_BY_NAME["ops"].names[:-1], (0,)),
}

#: Tables of the schema that the backup deliberately does not copy (see the module doc).
DERIVED_TABLES: Final = frozenset({"schema_migrations", "merkle_nodes"})


def check_columns(actual: Mapping[str, Sequence[str]]) -> None:
    """Refuse a database whose tables or columns differ from what the backup copies.

    Args:
        actual: every table of the database and its column names.

    Raises:
        ConfigError: a table or column the backup does not know, or one it
            expects that is missing.
    """
    known = {t.name: set(t.names) for t in TABLES}
    known.update((name, set(cols)) for name, cols in STORED_COLUMNS.items())
    unknown = sorted(set(actual) - set(known) - DERIVED_TABLES)
    missing = sorted(set(known) - set(actual))
    problems = [f"table {t} is not covered by the backup" for t in unknown]
    problems += [f"table {t} is missing" for t in missing]
    for name, cols in sorted(known.items()):
        if name in actual and set(actual[name]) != cols:
            extra = sorted(set(actual[name]) - cols)
            lacking = sorted(cols - set(actual[name]))
            problems.append(f"table {name}: columns {extra} are not covered, {lacking} are "
                            "missing")
    if problems:
        raise ConfigError("this database's schema is not the one this version of sddsf "
                          "backs up (" + "; ".join(problems) + "); use the sddsf version "
                          "that matches the relay")


def piece_rows(table: Table, columns: Sequence[object], rows: Sequence[object],
               where: str) -> list[list[object]]:
    """The checked rows of a backup piece, in the table's current columns (rows
    of an older backup's columns, :data:`OLDER_COLUMNS`, are completed).

    Raises:
        DecodeError: columns of neither kind, or a malformed row (``where``
            names the piece).
    """
    names = tuple(columns)
    if names == table.names:
        return [table.check_row(r) for r in rows]
    older = OLDER_COLUMNS.get(table.name)
    if older is None or names != older[0]:
        raise DecodeError(f"{where}: columns {list(names)} are not those of table "
                          f"{table.name}", Code.MALFORMED)
    return [table.check_row([*r, *older[1]] if isinstance(r, list) else r) for r in rows]


def space_fields(row: Sequence[object]) -> tuple[bytes, int, bytes, bytes]:
    """``(space_id, size, root, frontier)`` of a normalised ``spaces`` row.

    Raises:
        DecodeError: one of them is NULL (a database altered by hand).
    """
    sid, size, root, frontier = row[0], row[3], row[4], row[5]
    if not (isinstance(sid, bytes) and isinstance(size, int) and isinstance(root, bytes)
            and isinstance(frontier, bytes)):
        raise DecodeError("a space row has NULL id, size, root or frontier; run sddsf relay "
                          "fsck", Code.MALFORMED)
    return sid, size, root, frontier
