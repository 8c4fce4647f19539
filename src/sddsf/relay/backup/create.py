"""``sddsf relay backup``: one consistent, incremental backup of a relay database.

One run reads one snapshot of the database (:func:`~sddsf.relay.backup.dbio.open_snapshot`)
and writes one backup folder:

* every table of :data:`~sddsf.relay.backup.tables.TABLES`, cut into pieces;
* for the append-only logs (``ops`` of each space, ``audit_log`` of each
  account) only the rows after what the previous backup of the chain copied.
  Before anything is written the run proves that the log still extends what
  that backup saw: the previous backup's Merkle frontier, extended with the new
  leaf hashes, must give the root and frontier stored in the space row now;
  otherwise the database was rolled back or rewritten since, and the run
  refuses (``log_rollback`` / ``proof_invalid``; take a ``--full`` backup);
* the prune watermark of each space (``pruned``: envelopes below it were
  dropped by the relay), so a restore drops them again;
* the relay's **signed tree heads** of every space log and account audit log
  at the snapshot (``heads``), signed now with the relay key;
* its own bookkeeping (``state``: sizes and frontiers of every log, and the
  content hashes of the pieces, to reuse unchanged pieces next time), sealed
  with a key derived from the relay key so that the next incremental backup
  can read it without the operator's private key;
* last, the manifest, signed by the relay key and written only if no other
  run wrote that number first.

A run that fails leaves a folder without a manifest, which every reader
ignores (and which can be deleted).

Size: one run is one snapshot read and one folder written; the steps share
the run's state (chain position, frontier proofs, pieces) and stay together.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from sddsf.crypto import Ed25519SigningKey, blake2b_256, random_bytes
from sddsf.errors import Code, ConfigError, DecodeError, ProofError, SddsfError
from sddsf.protocol.audit import audit_log_id
from sddsf.protocol.merkle import Frontier
from sddsf.protocol.treehead import sign_tree_head
from sddsf.relay.backup.dbio import Snapshot, open_snapshot
from sddsf.relay.backup.format import (
    Manifest,
    PieceRef,
    decode_manifest,
    decode_piece,
    encode_piece,
    folder_name,
    open_piece,
    piece_ad,
    piece_from_wire,
    seal_piece,
    sign_manifest,
)
from sddsf.relay.backup.store import BackupStore
from sddsf.relay.backup.tables import (
    SAME_ROWS_SINCE,
    TABLE_BY_NAME,
    TABLES,
    Table,
    check_columns,
    space_fields,
)
from sddsf.relay.storage.base import LeafKind
from sddsf.relay.storage.migrations import LATEST_VERSION

__all__ = ["BackupReport", "create_backup", "latest_complete", "list_numbers"]

#: A piece is cut when it reaches this many rows or (about) this many bytes.
PIECE_ROWS: Final = 10_000
PIECE_BYTES: Final = 4 << 20
#: Restore order of the piece kinds (foreign keys first; "pruned" before "ops").
KIND_ORDER: Final = ("registry_entries", "spaces", "pruned",
                     *(t.name for t in TABLES if t.name not in ("registry_entries", "spaces")),
                     "heads", "state")
_FOLDER: Final = re.compile(r"backup-(\d{6,})")
_OPS: Final = TABLE_BY_NAME["ops"]
_AUDIT: Final = TABLE_BY_NAME["audit_log"]


@dataclass(slots=True)
class BackupReport:
    """What one backup run did."""

    number: int
    parent: int | None
    location: str
    recipient: bytes | None
    spaces: int = 0
    audit_logs: int = 0
    ops: int = 0  # op rows copied by this run
    audit_entries: int = 0  # audit rows copied by this run
    rows: int = 0  # rows of the other tables copied by this run
    heads: int = 0
    written: int = 0  # pieces written by this run
    reused: int = 0  # unchanged pieces of earlier backups referred to again
    bytes_written: int = 0
    bytes_total: int = 0  # every piece the backup refers to (what a restore reads)

    @property
    def encrypted(self) -> bool:
        """Whether the pieces are encrypted to an operator key."""
        return self.recipient is not None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"number": self.number, "parent": self.parent, "location": self.location,
                "encrypted": self.encrypted,
                "recipient": self.recipient.hex() if self.recipient else None,
                "spaces": self.spaces, "audit_logs": self.audit_logs, "ops": self.ops,
                "audit_entries": self.audit_entries, "rows": self.rows, "heads": self.heads,
                "pieces_written": self.written, "pieces_reused": self.reused,
                "bytes_written": self.bytes_written, "bytes_total": self.bytes_total}


def list_numbers(store: BackupStore) -> list[int]:
    """The backup numbers present in a location (complete or not), ascending."""
    found = (_FOLDER.fullmatch(name) for name in store.folders())
    return sorted(int(m.group(1)) for m in found if m)


def latest_complete(store: BackupStore) -> int | None:
    """The highest backup number whose manifest exists."""
    for number in reversed(list_numbers(store)):
        if store.exists(f"{folder_name(number)}/manifest"):
            return number
    return None


@dataclass(slots=True)
class _State:
    """The previous backup's bookkeeping: what each log held, and its pieces."""

    logs: dict[bytes, Frontier] = field(default_factory=dict)
    audit: dict[bytes, Frontier] = field(default_factory=dict)
    pieces: dict[bytes, PieceRef] = field(default_factory=dict)

    def encode(self) -> dict[str, object]:
        return {"logs": [[k, f.size, b"".join(f.to_hashes())] for k, f in self.logs.items()],
                "audit": [[k, f.size, b"".join(f.to_hashes())] for k, f in self.audit.items()],
                "pieces": [[d, r.to_wire()] for d, r in self.pieces.items()]}

    @classmethod
    def decode(cls, plaintext: bytes) -> _State:
        f = decode_piece(plaintext, "state")
        state = cls()
        for key, target in (("logs", state.logs), ("audit", state.audit)):
            for item in f.list_(key, max_items=1 << 24):
                if (not isinstance(item, list) or len(item) != 3
                        or not isinstance(item[0], bytes) or not isinstance(item[1], int)
                        or not isinstance(item[2], bytes) or len(item[2]) % 32):
                    raise DecodeError(f"backup state.{key}: malformed entry", Code.MALFORMED)
                hashes = [item[2][i:i + 32] for i in range(0, len(item[2]), 32)]
                target[item[0]] = Frontier.from_hashes(item[1], hashes)
        for item in f.list_("pieces", max_items=1 << 24):
            if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes):
                raise DecodeError("backup state.pieces: malformed entry", Code.MALFORMED)
            state.pieces[item[0]] = piece_from_wire(item[1])
        return state


class _Writer:
    """Seals and writes pieces into the new folder; refers to an unchanged piece
    of the previous backup instead of writing it again."""

    def __init__(self, store: BackupStore, report: BackupReport, key: Ed25519SigningKey,
                 previous: dict[bytes, PieceRef]) -> None:
        self.store = store
        self.report = report
        self.key = key
        self.previous = previous
        self.seen: dict[bytes, PieceRef] = {}
        self.refs: dict[str, list[PieceRef]] = {}
        self._seq = 0

    async def put(self, kind: str, plaintext: bytes, *, seal_kind: str | None = None) -> None:
        digest = blake2b_256(plaintext)
        ref = self.previous.get(digest)
        if ref is not None and ref.kind == kind and seal_kind is None:
            self.report.reused += 1
        else:
            ref = await self._write(kind, plaintext, seal_kind or (
                "operator" if self.report.recipient else "none"))
        if seal_kind is None:
            self.seen[digest] = ref
        self.refs.setdefault(kind, []).append(ref)

    async def _write(self, kind: str, plaintext: bytes, seal_kind: str) -> PieceRef:
        number = self.report.number
        name = f"p{self._seq:06d}"
        self._seq += 1
        stored = seal_piece(plaintext, seal_kind=seal_kind,
                            ad=piece_ad(self.key.public.raw, number, name, kind),
                            recipient=self.report.recipient, relay_key=self.key)
        await asyncio.to_thread(self.store.put, f"{folder_name(number)}/{name}", stored)
        self.report.written += 1
        self.report.bytes_written += len(stored)
        return PieceRef(kind, number, name, blake2b_256(stored), len(stored), seal_kind)


class _Rows:
    """Rows of one kind, cut into pieces of bounded size."""

    def __init__(self, writer: _Writer, kind: str, columns: Sequence[str]) -> None:
        self.writer = writer
        self.kind = kind
        self.columns = list(columns)
        self.rows: list[list[object]] = []
        self.size = 0

    async def add(self, row: list[object]) -> None:
        self.rows.append(row)
        self.size += 8 + sum(len(v) if isinstance(v, bytes | str) else 9 for v in row)
        if len(self.rows) >= PIECE_ROWS or self.size >= PIECE_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if self.rows:
            await self.writer.put(self.kind, encode_piece(
                self.kind, {"columns": self.columns, "rows": self.rows}))
            self.rows, self.size = [], 0


class _Run:
    """One backup run over one snapshot."""

    def __init__(self, snap: Snapshot, writer: _Writer, previous: _State,
                 parent: Manifest | None, key: Ed25519SigningKey, clock: Callable[[], int]
                 ) -> None:
        self.snap = snap
        self.writer = writer
        self.report = writer.report
        self.previous = previous
        self.parent = parent
        self.key = key
        self.clock = clock
        self.state = _State()
        self.heads: list[bytes] = []

    async def run(self) -> None:
        spaces = await self._table_rows(TABLE_BY_NAME["spaces"])
        await self._pruned()
        await self._logs(spaces)
        for table in TABLES:
            if table.name not in ("spaces", "ops", "audit_log"):
                await self._table(table)
        await self._audit()
        now = self.clock()
        for space in spaces:
            sid, size, root, _ = space_fields(space)
            self.heads.append(sign_tree_head(self.key, log=sid, size=size, root=root,
                                             ts_ms=now))
        for account, frontier in self.state.audit.items():
            self.heads.append(sign_tree_head(self.key, log=audit_log_id(account),
                                             size=frontier.size, root=frontier.root(),
                                             ts_ms=now))
        self.report.heads = len(self.heads)
        await self.writer.put("heads", encode_piece("heads", {"heads": self.heads}))
        self.state.pieces = self.writer.seen
        await self.writer.put("state", encode_piece("state", self.state.encode()),
                              seal_kind="relay")

    def _select(self, table: Table, where: str = "") -> str:
        return (f"SELECT {', '.join(table.names)} FROM {table.from_} {where} "  # noqa: S608
                f"ORDER BY {table.order_by}")

    async def _table(self, table: Table) -> None:
        rows = _Rows(self.writer, table.name, table.names)
        async for batch in self.snap.stream(self._select(table)):
            for raw in batch:
                await rows.add(table.normalise(raw))
                self.report.rows += 1
        await rows.flush()

    async def _table_rows(self, table: Table) -> list[list[object]]:
        """Copy a table and also return its rows (the space rows drive the logs)."""
        out: list[list[object]] = []
        rows = _Rows(self.writer, table.name, table.names)
        async for batch in self.snap.stream(self._select(table)):
            for raw in batch:
                row = table.normalise(raw)
                out.append(row)
                await rows.add(row)
        await rows.flush()
        self.report.spaces = len(out)
        return out

    async def _pruned(self) -> None:
        """The prune watermark of each space: the envelopes of the ops below it
        were dropped (those of membership entries never are)."""
        rows = _Rows(self.writer, "pruned", ("space_id", "below"))
        for sid, count, last in await self.snap.fetch(
                f"SELECT space_id, count(*), max(log_offset) FROM {_OPS.from_} "  # noqa: S608
                "WHERE envelope IS NULL GROUP BY space_id ORDER BY space_id"):
            ((ops_below,),) = await self.snap.fetch(
                "SELECT count(*) FROM ops WHERE space_id = ? AND log_offset <= ? AND kind = ?",
                sid, last, int(LeafKind.OP))
            if int(count) != int(ops_below):
                raise ProofError(f"space {bytes(sid).hex()}: pruned envelopes are not the ops "
                                 "of a prefix of the log (or a membership entry lost its "
                                 "bytes); run sddsf relay fsck", Code.PROOF_INVALID)
            await rows.add([bytes(sid), int(last) + 1])
        await rows.flush()

    async def _logs(self, spaces: list[list[object]]) -> None:
        ops = _Rows(self.writer, "ops", _OPS.names)
        present = set()
        for space in spaces:
            sid, size, root, stored_frontier = space_fields(space)
            present.add(sid)
            frontier = self._start(self.previous.logs, sid, size, "space")
            async for batch in self.snap.stream(self._select(
                    _OPS, "WHERE space_id = ? AND log_offset >= ?"), sid, frontier.size):
                for raw in batch:
                    row = _OPS.normalise(raw)
                    _extend(frontier, row[1], row[6], f"space {sid.hex()}")
                    await ops.add(row)
                    self.report.ops += 1
            if (frontier.size != size or frontier.root() != root
                    or b"".join(frontier.to_hashes()) != stored_frontier):
                raise ProofError(self._mismatch(f"space {sid.hex()}", frontier.size, size),
                                 Code.PROOF_INVALID)
            self.state.logs[sid] = frontier
        await ops.flush()
        self._vanished(self.previous.logs, present, "space")

    async def _audit(self) -> None:
        heads = TABLE_BY_NAME["audit_heads"]
        rows = _Rows(self.writer, "audit_log", _AUDIT.names)
        present = set()
        for raw_account, raw_size in await self.snap.fetch(self._select(heads)):
            account, size = bytes(raw_account), int(raw_size)
            present.add(account)
            frontier = self._start(self.previous.audit, account, size, "audit log of account")
            async for batch in self.snap.stream(self._select(
                    _AUDIT, "WHERE account_id = ? AND seq >= ?"), account, frontier.size):
                for raw in batch:
                    row = _AUDIT.normalise(raw)
                    _extend(frontier, row[1], row[3], f"audit log of {account.hex()[:16]}")
                    await rows.add(row)
                    self.report.audit_entries += 1
            if frontier.size != size:
                raise ProofError(self._mismatch(f"audit log of account {account.hex()}",
                                                frontier.size, size), Code.PROOF_INVALID)
            self.state.audit[account] = frontier
        await rows.flush()
        self._vanished(self.previous.audit, present, "audit log of account")
        self.report.audit_logs = len(present)

    def _start(self, previous: dict[bytes, Frontier], key: bytes, size: int,
               what: str) -> Frontier:
        """Where this run's copy of a log starts: after the previous backup's."""
        before = previous.get(key)
        if before is None:
            return Frontier()
        if size < before.size:
            raise ProofError(f"{what} {key.hex()} has {size} entries, the previous backup "
                             f"saw {before.size}: the database was "
                             "rolled back or replaced since; take a full backup (--full) and "
                             "check the database with sddsf relay fsck", Code.LOG_ROLLBACK)
        return Frontier.from_hashes(before.size, before.to_hashes())

    def _mismatch(self, what: str, have: int, size: int) -> str:
        base = (f"{what}: the stored size and root ({size} entries) are not those of the "
                f"copied log ({have} entries)")
        if self.parent is not None:
            return (base + f" extending backup {self.parent.number}: the log was rewritten "
                    "since that backup, or the database is damaged; run sddsf relay fsck, "
                    "then take a full backup (--full)")
        return base + "; the database is damaged: run sddsf relay fsck"

    def _vanished(self, previous: dict[bytes, Frontier], present: set[bytes],
                  what: str) -> None:
        gone = [k for k in previous if k not in present]
        if gone:
            raise ProofError(f"{len(gone)} {what}(s) of the previous backup are gone from the "
                             f"database (e.g. {gone[0].hex()}): it was replaced since; take a "
                             "full backup (--full)", Code.LOG_ROLLBACK)


def _extend(frontier: Frontier, position: object, leaf: object, what: str) -> None:
    if position != frontier.size:
        raise ProofError(f"{what}: entry {position} where {frontier.size} was expected (a gap "
                         "or a duplicate); run sddsf relay fsck", Code.PROOF_INVALID)
    if not isinstance(leaf, bytes) or len(leaf) != 32:
        raise ProofError(f"{what}: entry {position} has a malformed leaf hash; run sddsf "
                         "relay fsck", Code.PROOF_INVALID)
    frontier.append(leaf)


async def _load_parent(store: BackupStore, number: int, key: Ed25519SigningKey,
                       recipient: bytes | None) -> tuple[Manifest, _State]:
    manifest = decode_manifest(await asyncio.to_thread(
        store.get, f"{folder_name(number)}/manifest"))
    if manifest.relay_id != key.public.raw:
        raise ConfigError(f"backup {number} in {store.location} was made with another relay "
                          "key; start a new chain with --full")
    manifest.verify(key.public)
    if manifest.recipient != recipient:
        was = manifest.recipient.hex() if manifest.recipient else "not encrypted"
        now = recipient.hex() if recipient else "not encrypted"
        raise ConfigError(f"backup {number} is {'encrypted to ' if manifest.recipient else ''}"
                          f"{was}, this one would be {'encrypted to ' if recipient else ''}"
                          f"{now}: an incremental backup keeps its chain's encryption; "
                          "pass --full to start a new chain")
    if not SAME_ROWS_SINCE <= manifest.schema <= LATEST_VERSION:
        raise ConfigError(f"backup {number} is of schema version {manifest.schema}, the "
                          f"database of {LATEST_VERSION}: take a full backup (--full)")
    states = [p for p in manifest.pieces if p.kind == "state"]
    if len(states) != 1:
        raise DecodeError(f"backup {number} has {len(states)} state pieces, expected 1",
                          Code.MALFORMED)
    ref = states[0]
    stored = await asyncio.to_thread(store.get, ref.key)
    if blake2b_256(stored) != ref.hash:
        raise ProofError(f"the state piece of backup {number} does not match its manifest: "
                         "the backup is damaged; take a full backup (--full)",
                         Code.PROOF_INVALID)
    plain = open_piece(stored, seal_kind=ref.seal, relay_key=key,
                       ad=piece_ad(key.public.raw, ref.folder, ref.name, ref.kind))
    return manifest, _State.decode(plain)


async def create_backup(url: str, store: BackupStore, relay_key: Ed25519SigningKey, *,
                        recipient: bytes | None = None, full: bool = False,
                        schema: str | None = None,
                        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                        ) -> BackupReport:
    """Back up a relay database (read only; safe while the relay runs).

    Args:
        url: the relay's ``--db`` URL.
        store: where to write (:func:`~sddsf.relay.backup.store.open_store`).
        relay_key: the relay's tree-head key (signs the heads and the manifest).
        recipient: the operator's X25519 public key; None writes the pieces
            unencrypted.
        full: start a new chain instead of extending the latest backup.
        schema: PostgreSQL schema of the relay's tables.
        clock: milliseconds since the epoch.

    Returns:
        What was written.

    Raises:
        ConfigError: not a relay database, another schema version, or a chain
            that cannot be extended (other relay key, other encryption).
        ProofError: the database contradicts itself or the previous backup
            (``proof_invalid``, ``log_rollback``).
        ConflictError: another backup took the same number.
        UnavailableError: the database or the location cannot be used.
    """
    parent_number = None if full else latest_complete(store)
    parent, previous = None, _State()
    if parent_number is not None:
        parent, previous = await _load_parent(store, parent_number, relay_key, recipient)
    async with open_snapshot(url, schema) as snap:
        await _check_database(snap)  # before taking a number: a wrong --db leaves nothing
        numbers = list_numbers(store)
        number = (numbers[-1] + 1) if numbers else 1
        await asyncio.to_thread(store.claim, folder_name(number))
        report = BackupReport(number, parent_number, store.location, recipient)
        writer = _Writer(store, report, relay_key, previous.pieces)
        await _Run(snap, writer, previous, parent, relay_key, clock).run()
        source = snap.source
    pieces = _ordered(writer.refs, parent)
    report.bytes_total = sum(p.size for p in pieces)
    data = sign_manifest(relay_key, number=number, backup_id=random_bytes(16),
                         created_ms=clock(), schema=LATEST_VERSION, source=source,
                         parent=None if parent is None else (parent.number, parent.digest),
                         recipient=recipient, pieces=pieces)
    await asyncio.to_thread(store.put, f"{folder_name(number)}/manifest", data, exclusive=True)
    return report


async def _check_database(snap: Snapshot) -> None:
    """A relay database of the schema this code copies, table by table.

    Raises:
        ConfigError: not a relay database, another version, another set of columns.
    """
    version = await snap.schema_version()
    if version != LATEST_VERSION:
        raise ConfigError(f"the database is at schema version {version}, this sddsf backs "
                          f"up version {LATEST_VERSION}; use the matching sddsf version")
    check_columns(await snap.columns())


def _ordered(refs: dict[str, list[PieceRef]], parent: Manifest | None) -> list[PieceRef]:
    """The manifest's pieces in restore order; the append-only logs keep the
    previous backups' pieces first (their rows come first in each log)."""
    out: list[PieceRef] = []
    for kind in KIND_ORDER:
        if parent is not None and kind in ("ops", "audit_log"):
            out.extend(p for p in parent.pieces if p.kind == kind)
        out.extend(refs.get(kind, []))
    unknown = set(refs) - set(KIND_ORDER)
    if unknown:  # pragma: no cover - a kind added without a place in the order
        raise SddsfError(f"piece kinds without a restore order: {sorted(unknown)}")
    return out
