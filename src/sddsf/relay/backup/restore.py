"""``sddsf relay restore``: a new relay database from a backup, checked all the way.

Before anything is committed the restore proves that what it wrote is what
the relay signed:

* the manifest is signed by the relay key (the target relay's key, unless the
  operator explicitly accepts a new one), and every piece matches the hash
  and size the manifest lists (a missing piece, a truncated or altered one,
  is refused with the piece's name);
* every space's op log is gap-free, its Merkle root and frontier recomputed
  from the restored leaf hashes equal the restored space row, and every
  perfect node is recomputed (``merkle_nodes`` is not copied);
* every signed tree head of the backup verifies with the relay key, and the
  restored log at the head's size has the head's root (space logs and account
  audit logs alike).

One transaction: a restore that fails leaves the target empty. With no target
(``check``), the same reading and checks run without writing anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

from sddsf.crypto import Ed25519PublicKey, X25519KeyPair, blake2b_256
from sddsf.errors import Code, ConfigError, DecodeError, NotFoundError, ProofError
from sddsf.protocol.audit import audit_log_id
from sddsf.protocol.merkle import Frontier
from sddsf.protocol.treehead import TreeHead, decode_tree_head, verify_tree_head
from sddsf.relay.backup.create import latest_complete, list_numbers
from sddsf.relay.backup.dbio import RestoreTarget, open_target
from sddsf.relay.backup.format import (
    Manifest,
    PieceRef,
    decode_manifest,
    decode_piece,
    folder_name,
    open_piece,
    piece_ad,
)
from sddsf.relay.backup.store import BackupStore
from sddsf.relay.backup.tables import (
    SAME_ROWS_SINCE,
    STORED_COLUMNS,
    TABLE_BY_NAME,
    TABLES,
    Table,
    piece_rows,
    space_fields,
)
from sddsf.relay.storage.base import LeafKind
from sddsf.relay.storage.migrations import LATEST_VERSION

__all__ = ["RestoreReport", "read_manifest", "restore_backup"]

_AUDIT_PREFIX: Final = audit_log_id(b"")
_INSERT_BATCH: Final = 2000


@dataclass(slots=True)
class RestoreReport:
    """What a restore (or a check) read, wrote and verified."""

    number: int
    location: str
    relay_id: bytes
    encrypted: bool
    created_ms: int
    target: str | None = None  # None: checked only
    spaces: int = 0
    ops: int = 0
    audit_entries: int = 0
    rows: int = 0
    nodes: int = 0
    pieces: int = 0
    bytes_read: int = 0
    heads: list[bytes] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (without the heads themselves)."""
        return {"number": self.number, "location": self.location,
                "relay_id": self.relay_id.hex(), "encrypted": self.encrypted,
                "created_ms": self.created_ms, "restored": self.target is not None,
                "spaces": self.spaces, "ops": self.ops, "audit_entries": self.audit_entries,
                "rows": self.rows, "nodes": self.nodes, "heads": len(self.heads),
                "pieces": self.pieces, "bytes_read": self.bytes_read,
                "warnings": self.warnings}


async def read_manifest(store: BackupStore, number: int | None = None) -> Manifest:
    """The manifest of backup ``number`` (default: the latest backup).

    The latest backup must be complete: if the highest-numbered folder has no
    manifest (a backup that was interrupted, or is still running) this is an
    error rather than a silent fall-back to an older backup, which would be a
    rollback; name the number to restore an older one.

    Raises:
        NotFoundError: no backup, or the named/latest one is incomplete.
        DecodeError: the manifest is malformed.
    """
    numbers = list_numbers(store)
    if not numbers:
        raise NotFoundError(f"there is no backup in {store.location}")
    chosen = numbers[-1] if number is None else number
    try:
        data = await asyncio.to_thread(store.get, f"{folder_name(chosen)}/manifest")
    except NotFoundError:
        latest = latest_complete(store)
        hint = f"; the latest complete backup is {latest} (--backup {latest})" if latest else ""
        state = "does not exist" if chosen not in numbers else (
            "has no manifest: it is incomplete (interrupted, or still being written)")
        raise NotFoundError(f"backup {chosen} in {store.location} {state}{hint}") from None
    manifest = decode_manifest(data)
    if manifest.number != chosen:
        raise ProofError(f"the manifest in {folder_name(chosen)} names backup "
                         f"{manifest.number}", Code.PROOF_INVALID)
    return manifest


class _Discard(RestoreTarget):
    """The target of a check: everything is verified, nothing is written."""

    async def insert(self, table: str, columns: Sequence[str],
                     rows: Sequence[Sequence[object]]) -> None:
        """Nothing to write."""

    async def execute(self, sql: str, *args: object) -> None:
        """Nothing to write."""

    async def finish_identity(self, table: str, column: str) -> None:
        """Nothing to write."""


@asynccontextmanager
async def _discard() -> AsyncIterator[RestoreTarget]:
    yield _Discard()


class _Restore:
    """Reads the pieces in manifest order into a target, checking as it goes."""

    def __init__(self, store: BackupStore, manifest: Manifest, target: RestoreTarget,
                 operator: X25519KeyPair | None, verify_key: Ed25519PublicKey,
                 report: RestoreReport) -> None:
        self.store = store
        self.manifest = manifest
        self.target = target
        self.operator = operator
        self.verify_key = verify_key
        self.report = report
        self.pruned: dict[bytes, int] = {}
        self.logs: dict[bytes, Frontier] = {}
        self.audit: dict[bytes, Frontier] = {}
        self.space_rows: list[tuple[bytes, int, bytes, bytes]] = []
        self.audit_sizes: dict[bytes, int] = {}

    async def run(self) -> None:
        kinds = [p.kind for p in self.manifest.pieces]
        for kind in ("heads", "state"):
            if kinds.count(kind) != 1:
                raise DecodeError(f"backup {self.manifest.number} has {kinds.count(kind)} "
                                  f"{kind} pieces, expected 1", Code.MALFORMED)
        for ref in self.manifest.pieces:
            if ref.kind == "state":  # the backup's own bookkeeping: hash-checked only
                await self._fetch(ref)
                continue
            body = decode_piece(await self._open(ref), ref.kind)
            if ref.kind == "heads":
                heads = body.list_("heads", max_items=1 << 24)
                self.report.heads = [h for h in heads if isinstance(h, bytes)]
                if len(self.report.heads) != len(heads):
                    raise DecodeError("backup heads: expected byte strings", Code.MALFORMED)
                continue
            await self._rows(ref, body.list_("columns", max_items=64),
                             body.list_("rows", max_items=1 << 20))
        for table in TABLES:
            if table.identity:
                await self.target.finish_identity(table.name, table.identity)
        self._check_logs()
        self._check_heads()

    async def _fetch(self, ref: PieceRef) -> bytes:
        try:
            stored = await asyncio.to_thread(self.store.get, ref.key)
        except NotFoundError:
            raise NotFoundError(
                f"the backup set is incomplete: piece {ref.key} ({ref.kind}) of backup "
                f"{self.manifest.number} is missing from {self.store.location}; an "
                "incremental backup needs the pieces of the earlier backups of its chain "
                "(was one deleted?)") from None
        if len(stored) != ref.size or blake2b_256(stored) != ref.hash:
            raise ProofError(f"piece {ref.key} ({ref.kind}) does not match the hash and size "
                             f"in the manifest of backup {self.manifest.number}: it is "
                             "damaged or was altered", Code.PROOF_INVALID)
        self.report.pieces += 1
        self.report.bytes_read += len(stored)
        return stored

    async def _open(self, ref: PieceRef) -> bytes:
        stored = await self._fetch(ref)
        return open_piece(stored, seal_kind=ref.seal, operator=self.operator,
                          ad=piece_ad(self.manifest.relay_id, ref.folder, ref.name, ref.kind))

    async def _rows(self, ref: PieceRef, columns: list[object], rows: list[object]) -> None:
        if ref.kind == "pruned":
            self._pruned(columns, rows)
            return
        table = TABLE_BY_NAME.get(ref.kind)
        if table is None:
            raise DecodeError(f"piece {ref.key} is of unknown kind {ref.kind!r}",
                              Code.MALFORMED)
        checked = piece_rows(table, columns, rows, f"piece {ref.key}")
        if table.name == "ops":
            await self._ops(checked)
        else:
            if table.name == "audit_log":
                self._audit(checked)
            elif table.name == "spaces":
                self.space_rows.extend(space_fields(r) for r in checked)
            elif table.name == "audit_heads":
                self.audit_sizes.update((_b(r[0]), _i(r[1])) for r in checked)
            await self._insert(table, checked)
            if table.name not in ("audit_log",):
                self.report.rows += len(checked)

    async def _insert(self, table: Table, rows: list[list[object]]) -> None:
        for i in range(0, len(rows), _INSERT_BATCH):
            await self.target.insert(table.name, table.names, rows[i:i + _INSERT_BATCH])

    async def _insert_stored(self, name: str, rows: list[list[object]]) -> None:
        for i in range(0, len(rows), _INSERT_BATCH):
            await self.target.insert(name, STORED_COLUMNS[name], rows[i:i + _INSERT_BATCH])

    def _pruned(self, columns: list[object], rows: list[object]) -> None:
        if columns != ["space_id", "below"]:
            raise DecodeError("pruned piece: unexpected columns", Code.MALFORMED)
        for r in rows:
            if not isinstance(r, list) or len(r) != 2:
                raise DecodeError("pruned piece: malformed row", Code.MALFORMED)
            self.pruned[_b(r[0])] = _i(r[1])

    async def _ops(self, rows: list[list[object]]) -> None:
        nodes: list[list[object]] = []
        for row in rows:
            sid, offset = _b(row[0]), _i(row[1])
            frontier = self.logs.setdefault(sid, Frontier())
            completed = _extend(frontier, offset, row[6], f"space {sid.hex()}")
            nodes.extend([sid, lvl, idx, h] for lvl, idx, h in completed if lvl)
            if offset < self.pruned.get(sid, 0) and row[9] == LeafKind.OP:
                # Pruned by the relay after an earlier backup copied it (never a
                # membership entry: the relay keeps every one).
                row[7] = None
        # The backup's op rows carry the envelope; the database keeps it apart.
        await self._insert_stored("ops", [[*r[:7], r[8], r[9]] for r in rows])
        await self._insert_stored("op_envelopes",
                                  [[r[0], r[1], r[7]] for r in rows if r[7] is not None])
        for i in range(0, len(nodes), _INSERT_BATCH):
            await self.target.insert("merkle_nodes", ("space_id", "level", "idx", "hash"),
                                     nodes[i:i + _INSERT_BATCH])
        self.report.ops += len(rows)
        self.report.nodes += len(nodes)

    def _audit(self, rows: list[list[object]]) -> None:
        for row in rows:
            account = _b(row[0])
            _extend(self.audit.setdefault(account, Frontier()), _i(row[1]), row[3],
                    f"audit log of {account.hex()[:16]}")
        self.report.audit_entries += len(rows)

    def _check_logs(self) -> None:
        known = set()
        for sid, size, root, stored in self.space_rows:
            known.add(sid)
            f = self.logs.get(sid, Frontier())
            if f.size != size or f.root() != root or b"".join(f.to_hashes()) != stored:
                raise ProofError(f"space {sid.hex()}: the restored log ({f.size} ops) does not "
                                 f"reproduce its space row ({size} ops, its root and frontier):"
                                 " the backup set is damaged or incomplete", Code.PROOF_INVALID)
        stray = set(self.logs) - known
        if stray:
            raise ProofError(f"ops of {len(stray)} space(s) without a space row (e.g. "
                             f"{next(iter(stray)).hex()})", Code.PROOF_INVALID)
        for account, size in self.audit_sizes.items():
            if self.audit.get(account, Frontier()).size != size:
                raise ProofError(f"audit log of account {account.hex()}: "
                                 f"{self.audit.get(account, Frontier()).size} entries restored,"
                                 f" its head row says {size}", Code.PROOF_INVALID)
        self.report.spaces = len(self.space_rows)

    def _check_heads(self) -> None:
        """Every signed head verifies and matches the restored log at its size."""
        covered: set[bytes] = set()
        for raw in self.report.heads:
            head = _decode_head(raw, self.verify_key)
            covered.add(head.log)
            if head.log.startswith(_AUDIT_PREFIX):
                frontier = self.audit.get(head.log[len(_AUDIT_PREFIX):], Frontier())
            else:
                frontier = self.logs.get(head.log, Frontier())
            if head.size != frontier.size or head.root != frontier.root():
                raise ProofError(f"the signed head of log {head.log.hex()} (size {head.size}) "
                                 f"does not match the restored log ({frontier.size} entries)",
                                 Code.PROOF_INVALID)
        missing = [sid for sid, *_ in self.space_rows if sid not in covered]
        if missing:
            raise ProofError(f"{len(missing)} space(s) have no signed head in the backup (e.g. "
                             f"{missing[0].hex()})", Code.PROOF_INVALID)


def _decode_head(raw: bytes, key: Ed25519PublicKey) -> TreeHead:
    return verify_tree_head(raw, key, log=decode_tree_head(raw).log)


def _extend(frontier: Frontier, position: int, leaf: object,
            what: str) -> list[tuple[int, int, bytes]]:
    if position != frontier.size:
        raise ProofError(f"{what}: entry {position} where {frontier.size} was expected: the "
                         "backup set is damaged, incomplete or out of order",
                         Code.PROOF_INVALID)
    if not isinstance(leaf, bytes) or len(leaf) != 32:
        raise DecodeError(f"{what}: entry {position} has a malformed leaf hash",
                          Code.MALFORMED)
    return frontier.append(leaf)


def _b(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError("a backup key column is not a byte string", Code.MALFORMED)
    return value


def _i(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError("a backup position column is not an integer", Code.MALFORMED)
    return value


def _relay_decision(manifest: Manifest, relay_key: Ed25519PublicKey | None,
                    allow_new_relay_key: bool, report: RestoreReport) -> Ed25519PublicKey:
    """The key the manifest and heads are verified with (see :func:`restore_backup`)."""
    own = Ed25519PublicKey.from_bytes(manifest.relay_id)
    if relay_key is not None and relay_key.raw == manifest.relay_id:
        return relay_key
    target = "has no relay key yet (it would create a new one)" if relay_key is None else (
        f"uses the relay key {relay_key.raw.hex()}")
    if not allow_new_relay_key:
        raise ConfigError(
            f"backup {manifest.number} was made by the relay with key {manifest.relay_id.hex()}"
            f" and the target relay {target}. Every device pinned the relay key on first "
            "contact and refuses a relay whose key changed (tree_head_invalid): restoring "
            "under another key cuts off every device until it is re-set up. Put the original "
            "key file in place (SDDSF_RELAY_KEY_FILE), or pass --allow-new-relay-key if that "
            "is really what you want")
    report.warnings.append(
        f"restored under a relay key other than the backup's ({manifest.relay_id.hex()}): "
        "every device will refuse this relay (tree_head_invalid) until it is set up again; "
        "the backup's signatures were checked against the key named in its own manifest only")
    return own


async def restore_backup(store: BackupStore, target_url: str | None, *,
                         number: int | None = None, operator: X25519KeyPair | None = None,
                         relay_key: Ed25519PublicKey | None = None,
                         allow_new_relay_key: bool = False,
                         schema: str | None = None) -> RestoreReport:
    """Restore a backup into a new relay database, or only check it.

    Args:
        store: the backup location.
        target_url: the new database (``sqlite:///PATH`` or ``postgresql://...``);
            None checks the backup without writing anything.
        number: the backup to restore (default: the latest, which must be complete).
        operator: the operator's X25519 key, for an encrypted backup.
        relay_key: the public key of the relay that will serve the restored
            database (None: it has none yet). Restoring a backup of another relay
            key is refused unless ``allow_new_relay_key``; for a check, None
            verifies against the key named in the manifest.
        allow_new_relay_key: accept a relay key other than the backup's.
        schema: PostgreSQL schema for the target's tables.

    Returns:
        What was restored and verified, with the backup's signed heads.

    Raises:
        ConfigError: another relay key, a missing or wrong decryption key, a
            target that is not empty, or a backup of another schema version.
        NotFoundError: no such backup, or a piece missing (an incomplete set).
        ProofError, SignatureError, DecodeError, DecryptError: a damaged or
            altered backup (nothing is committed).
        UnavailableError: the location or the database cannot be used.
    """
    manifest = await read_manifest(store, number)
    report = RestoreReport(manifest.number, store.location, manifest.relay_id,
                           manifest.recipient is not None, manifest.created_ms, target_url)
    if target_url is None and relay_key is None:
        verify_key = Ed25519PublicKey.from_bytes(manifest.relay_id)
        report.warnings.append(
            "no relay key was given: the signatures were checked against the key named in "
            f"the manifest ({manifest.relay_id.hex()}); pass --key-file to check that it is "
            "your relay's")
    else:
        verify_key = _relay_decision(manifest, relay_key, allow_new_relay_key, report)
    manifest.verify(verify_key)
    if not SAME_ROWS_SINCE <= manifest.schema <= LATEST_VERSION:
        raise ConfigError(f"backup {manifest.number} holds a database of schema version "
                          f"{manifest.schema}; this sddsf restores version {LATEST_VERSION}: "
                          "restore with the sddsf version that wrote it, then upgrade")
    if manifest.recipient is not None:
        if operator is None:
            raise ConfigError(f"backup {manifest.number} is encrypted to the operator key "
                              f"{manifest.recipient.hex()}: pass --decrypt-key FILE")
        if operator.public != manifest.recipient:
            raise ConfigError(f"backup {manifest.number} is encrypted to "
                              f"{manifest.recipient.hex()}, the key given is "
                              f"{operator.public.hex()}")
    opener: AbstractAsyncContextManager[RestoreTarget] = (
        _discard() if target_url is None else open_target(target_url, schema))
    async with opener as target:
        await _Restore(store, manifest, target, operator, verify_key, report).run()
    return report
