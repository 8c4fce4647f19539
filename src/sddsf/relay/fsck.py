"""Offline consistency check of a relay database (``sddsf relay fsck``).

The check trusts nothing the relay computed: it re-reads the raw rows of a
SQLite or PostgreSQL relay database (the URL of ``sddsf relay serve --db``) in
one read-only snapshot, and recomputes everything from the stored leaves and
signed bytes with the protocol core (THREATS #20, #24: Tessera fsck, the
Trillian "alternate tree"):

* **Merkle log** of every space: the root and the frontier rebuilt from the
  leaf hashes in offset order must equal the space row's ``root`` and
  ``frontier``, every stored perfect node must equal the recomputed one, and
  there must be no missing or extra node row;
* **offsets** are gap-free (``0..size-1``, ``count == size``); ``(space, offset)``
  and ``(space, author, seq)`` are unique;
* **ops**: every stored envelope hashes to its leaf, its columns (op id, author,
  seq, deps) match the signed bytes, and the whole log replays through
  :func:`sddsf.protocol.rules.verify_op` in history mode, so every device chain
  (seq contiguous, ``prev`` linked, deps monotonic, signature) verifies;
  pruned envelopes must be a prefix of the log's ops and keep their chains
  contiguous, and every stored envelope must belong to a leaf of the log;
* **membership entries** (leaves of kind 1, schema 12): each keeps its bytes
  (never pruned), hashes to its leaf, and its row's op id and author are its
  entry hash (seq 1, empty deps); the member sets stored for shared spaces
  belong to spaces that exist (folding the entries is the relay's work, not
  fsck's);
* **registries** verify from genesis (:func:`~sddsf.protocol.registry.verify_registry`)
  and **key packages** as a chain against them;
* acknowledgements and snapshots point inside the log; every stored snapshot
  chunk is the one its id names, and every chunk a stored whole-space
  snapshot's manifest lists is stored;
* the **audit log** of every account (the controller's tables): seqs 0..n-1
  matching the counter row, each leaf the hash of its entry, each entry the
  account's, with a device report that verifies where it needs one.

Every problem is a :class:`Finding` with a stable :class:`FsckCode`; the check
never stops at the first one. The SQL lives here, not in the storage backends:
fsck must not share the code it checks.

Errors: a database that cannot be opened raises
:class:`~sddsf.errors.UnavailableError`; an unsupported URL, a database that is
not a relay database, or one migrated by another version raises
:class:`~sddsf.errors.ConfigError`.

Size: fsck carries its own readers of the raw rows of both engines on purpose
(it must not share the code it checks) plus the chain and Merkle re-derivation;
splitting would spread one independent check over modules.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final
from urllib.parse import unquote

from sddsf.crypto import Ed25519PublicKey
from sddsf.errors import Code, ConfigError, ProofError, SddsfError, UnavailableError
from sddsf.protocol import keypackage as kp
from sddsf.protocol.audit import audit_log_id
from sddsf.protocol.audit import check_entry as check_audit_entry
from sddsf.protocol.audit import decode_entry as decode_audit_entry
from sddsf.protocol.encoding import decode
from sddsf.protocol.envelope import decode_envelope
from sddsf.protocol.identity import ID_SIZE
from sddsf.protocol.membership import entry_hash as membership_entry_hash
from sddsf.protocol.merkle import Frontier, leaf_hash
from sddsf.protocol.registry import RegistryState, verify_registry
from sddsf.protocol.rules import ChainHead, EpochWindow, MemoryChainView, Outcome, verify_op
from sddsf.protocol.snapshot import (
    CORROBORATED_SNAPSHOT_DOC,
    SPACE_SNAPSHOT_DOC,
    chunk_id,
    snapshot_claims,
)
from sddsf.protocol.treehead import decode_tree_head, verify_tree_head
from sddsf.protocol.vv import VersionVector
from sddsf.relay.storage.base import require_backend_url
from sddsf.relay.storage.migrations import LATEST_VERSION

__all__ = [
    "HEADS_FORMAT",
    "ChainVerifier",
    "Finding",
    "FsckCode",
    "FsckReport",
    "LogEntry",
    "SpaceLog",
    "check_heads",
    "describe",
    "fsck",
    "heads_document",
    "read_heads_file",
    "read_logs",
    "run_fsck",
]

_PAGE: Final = 5000
# ops.kind of a membership entry (storage's LeafKind.MEMBERSHIP; fsck keeps its
# own constants rather than share the code it checks) and its row's deps.
_MEMBERSHIP: Final = 1
_NO_DEPS: Final = b"\xa0"


class FsckCode(StrEnum):
    """What a finding is about (stable: scripts match on these)."""

    SIZE_MISMATCH = "size_mismatch"  # space row's size != number of ops
    OFFSET_GAP = "offset_gap"  # offsets are not 0, 1, 2, ...
    DUPLICATE_OFFSET = "duplicate_offset"  # UNIQUE (space, offset) violated
    DUPLICATE_SEQ = "duplicate_seq"  # UNIQUE (space, author, seq) violated, or one op twice
    ROOT_MISMATCH = "root_mismatch"  # stored root != root recomputed from the leaves
    FRONTIER_MISMATCH = "frontier_mismatch"
    NODE_MISMATCH = "node_mismatch"  # a stored perfect node != the recomputed one
    NODE_MISSING = "node_missing"
    NODE_EXTRA = "node_extra"  # node rows beyond the ones the log's leaves complete
    LEAF_MISMATCH = "leaf_mismatch"  # leaf_hash != RFC 9162 leaf hash of the envelope
    ROW_MISMATCH = "row_mismatch"  # op id / author / seq / deps columns != the envelope
    OP_INVALID = "op_invalid"  # the op fails the shared rules (chain, signature, epoch...)
    # An op of a revoked device beyond its revocation cutoff: the relay must
    # never store one (THREATS #14); clients skip and report it, so it does not
    # make the space unreadable, but it shows a relay bug or tampering.
    OP_AFTER_REVOCATION = "op_after_revocation"
    CHAIN_GAP = "chain_gap"  # a pruned op breaks its author's seq sequence
    PRUNE_NOT_PREFIX = "prune_not_prefix"  # a pruned envelope after a kept one
    ENVELOPE_ORPHAN = "envelope_orphan"  # an op_envelopes row without its ops row
    MEMBERSHIP_PRUNED = "membership_pruned"  # a membership entry's bytes are gone
    # A membership row's op id / author is not the entry hash of its bytes, or
    # its seq / deps are not 1 / the empty map.
    MEMBERSHIP_MISMATCH = "membership_mismatch"
    MEMBERS_ORPHAN = "members_orphan"  # space_members rows of a space that does not exist
    REGISTRY_INVALID = "registry_invalid"
    REGISTRY_MISSING = "registry_missing"  # spaces of an account without a registry
    KEY_PACKAGE_INVALID = "key_package_invalid"
    EPOCH_MISMATCH = "epoch_mismatch"  # space row's epoch != its last key package
    ACK_BEYOND_LOG = "ack_beyond_log"
    SNAPSHOT_BEYOND_LOG = "snapshot_beyond_log"
    CHUNK_MISMATCH = "chunk_mismatch"  # a snapshot chunk's bytes do not hash to its id
    CHUNK_MISSING = "chunk_missing"  # a stored manifest lists a chunk that is not stored
    # Signed heads given with --heads (a backup's): see check_heads.
    AUDIT_GAP = "audit_gap"  # an account's audit seqs are not 0, 1, 2, ...
    AUDIT_SIZE_MISMATCH = "audit_size_mismatch"  # audit_heads.size != the entries stored
    AUDIT_LEAF_MISMATCH = "audit_leaf_mismatch"  # leaf_hash != RFC 9162 leaf hash of the entry
    AUDIT_ENTRY_INVALID = "audit_entry_invalid"  # malformed, another account's, bad report
    HEAD_INVALID = "head_invalid"  # malformed, or its signature fails under the relay key
    HEAD_BEYOND_LOG = "head_beyond_log"  # the log is shorter than the signed size
    HEAD_MISMATCH = "head_mismatch"  # the log's root at the signed size != the signed root


@dataclass(frozen=True, slots=True)
class Finding:
    """One inconsistency."""

    code: FsckCode
    message: str
    space: bytes | None = None
    account: bytes | None = None
    offset: int | None = None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (ids in hex)."""
        return {"code": self.code.value, "message": self.message,
                "space": self.space.hex() if self.space is not None else None,
                "account": self.account.hex() if self.account is not None else None,
                "offset": self.offset}

    def __str__(self) -> str:
        where = "".join(f" {k}={v}" for k, v in (
            ("account", self.account.hex()[:16] if self.account else None),
            ("space", self.space.hex() if self.space else None),
            ("offset", self.offset)) if v is not None)
        return f"{self.code.value}{where}: {self.message}"


@dataclass(slots=True)
class FsckReport:
    """The result of a check: findings and what was covered."""

    findings: list[Finding] = field(default_factory=list)
    accounts: int = 0
    spaces: int = 0
    ops: int = 0
    nodes: int = 0
    audit_entries: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.findings

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"ok": self.ok, "accounts": self.accounts, "spaces": self.spaces,
                "ops": self.ops, "nodes": self.nodes, "audit_entries": self.audit_entries,
                "findings": [f.to_json() for f in self.findings]}


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One stored leaf row (``envelope`` None once pruned): an op, or a
    membership entry (``kind`` 1)."""

    offset: int
    op_id: bytes
    author: bytes
    seq: int
    deps: bytes
    leaf_hash: bytes
    envelope: bytes | None
    kind: int = 0


@dataclass(frozen=True, slots=True)
class SpaceLog:
    """A space's whole stored log and what verifies it (see :func:`read_logs`)."""

    space_id: bytes
    account_id: bytes
    epoch: int
    entries: tuple[LogEntry, ...]
    registry: tuple[bytes, ...]


class ChainVerifier:
    """Replays one space's log, in offset order, through the shared rules in
    history mode (what a client does with what it pulls), so every author's
    chain is checked from its first op: seq contiguous, ``prev`` linked, deps
    monotonic, signature by a registered device, epoch known.

    Args:
        space_id: the space.
        registry: the account's verified registry; None skips the rules that
            need it (its absence is reported on its own).
        epoch: the space's current key epoch.
    """

    def __init__(self, space_id: bytes, registry: RegistryState | None, epoch: int) -> None:
        self.space_id = space_id
        self.registry = registry
        self.window = EpochWindow(max(epoch, 0), 0)
        self.chains = MemoryChainView()
        self._kept_seen = False

    def _finding(self, code: FsckCode, entry: LogEntry, message: str) -> Finding:
        return Finding(code, message, space=self.space_id, offset=entry.offset)

    def feed(self, entry: LogEntry) -> list[Finding]:
        """Check the next leaf of the log; returns what is wrong with it."""
        if entry.kind == _MEMBERSHIP:
            return self._feed_membership(entry)
        if entry.envelope is None:
            return self._feed_pruned(entry)
        self._kept_seen = True
        out = self._leaf(entry, entry.envelope)
        try:
            env = decode_envelope(entry.envelope)
        except SddsfError as exc:
            return [*out, self._finding(FsckCode.OP_INVALID, entry,
                                        f"envelope does not decode: {exc.message}")]
        h = env.header
        if (env.op_id, h.author, h.seq, h.deps.encoded()) != (
                entry.op_id, entry.author, entry.seq, entry.deps):
            out.append(self._finding(FsckCode.ROW_MISMATCH, entry, "op id, author, seq or deps "
                                     "columns differ from the signed envelope"))
        if self.registry is not None:
            try:
                verdict = verify_op(env, space=self.space_id, registry=self.registry,
                                    epochs=self.window, chains=self.chains, now_ms=None)
                if verdict.outcome is Outcome.DUPLICATE:
                    out.append(self._finding(FsckCode.DUPLICATE_SEQ, entry, f"op seq {h.seq} "
                                             "of its author is in the log twice"))
                    return out
            except SddsfError as exc:
                out.append(self._refusal(entry, h.author, h.seq, exc))
        # Recorded even when invalid, so one bad op is reported once, not again
        # as a broken link by each of its author's later ops.
        self.chains.record(env)
        return out

    def _leaf(self, entry: LogEntry, envelope: bytes) -> list[Finding]:
        if leaf_hash(envelope) == entry.leaf_hash:
            return []
        return [self._finding(FsckCode.LEAF_MISMATCH, entry, "the stored leaf hash is not "
                              "the leaf hash of the stored envelope")]

    def _feed_membership(self, entry: LogEntry) -> list[Finding]:
        # Not an op: no author chain. Its bytes are kept for good (clients fold
        # every entry), and its row names it by its entry hash.
        if entry.envelope is None:
            return [self._finding(FsckCode.MEMBERSHIP_PRUNED, entry, "the bytes of this "
                                  "membership entry are gone (they are never pruned)")]
        out = self._leaf(entry, entry.envelope)
        ident = membership_entry_hash(entry.envelope)
        if (entry.op_id, entry.author, entry.seq, entry.deps) != (ident, ident, 1, _NO_DEPS):
            out.append(self._finding(FsckCode.MEMBERSHIP_MISMATCH, entry, "the row of this "
                                     "membership entry does not name it: op id and author "
                                     "must be its entry hash, seq 1, deps empty"))
        return out

    def _refusal(self, entry: LogEntry, author: bytes, seq: int, exc: SddsfError) -> Finding:
        rec = self.registry.device(author) if self.registry is not None else None
        if (exc.code is Code.REVOKED and rec is not None and rec.revoked_seq is not None
                and seq > rec.cutoff.get(self.space_id, 0)):
            return self._finding(FsckCode.OP_AFTER_REVOCATION, entry,
                                 f"op {seq} of revoked device {author.hex()[:12]} is beyond "
                                 f"its cutoff ({rec.cutoff.get(self.space_id, 0)}); clients "
                                 "skip it")
        return self._finding(FsckCode.OP_INVALID, entry, f"[{exc.code.value}] {exc.message}")

    def _feed_pruned(self, entry: LogEntry) -> list[Finding]:
        # A pruned op's signature is gone; its row still carries the chain link.
        out: list[Finding] = []
        if self._kept_seen:
            out.append(self._finding(FsckCode.PRUNE_NOT_PREFIX, entry, "a pruned envelope "
                                     "follows a kept one (pruning drops a prefix of the log)"))
        head = self.chains.head(entry.author)
        expected = (head.seq if head is not None else 0) + 1
        if entry.seq != expected:
            out.append(self._finding(FsckCode.CHAIN_GAP, entry, f"pruned op has seq "
                                     f"{entry.seq}, its author's next seq is {expected}"))
        try:
            deps = VersionVector.from_wire(decode(entry.deps), what="stored deps",
                                           id_size=ID_SIZE, max_entries=1 << 16)
        except SddsfError as exc:
            out.append(self._finding(FsckCode.ROW_MISMATCH, entry,
                                     f"stored deps do not decode: {exc.message}"))
            deps = VersionVector()
        self.chains.heads[entry.author] = ChainHead(entry.seq, entry.op_id, deps)
        self.chains.ids[(entry.author, entry.seq)] = entry.op_id
        return out


# ------------------------------------------------------------------ raw reads


@dataclass(frozen=True, slots=True)
class _SpaceRow:
    space_id: bytes
    account_id: bytes
    size: int
    root: bytes
    frontier: bytes
    epoch: int


class _Reader(ABC):
    """One read-only snapshot of a relay database. SQL is written with ``?``."""

    @abstractmethod
    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Rows of one query."""

    async def schema_version(self) -> int:
        try:
            rows = await self.fetch("SELECT coalesce(max(version), 0) FROM schema_migrations")
        except SddsfError:
            raise ConfigError("this database has no relay schema (no schema_migrations "
                              "table): is --db the relay's database?") from None
        return int(rows[0][0])

    async def accounts(self) -> list[bytes]:
        rows = await self.fetch("SELECT account_id FROM registry_entries UNION "
                                "SELECT account_id FROM spaces")
        return sorted(bytes(r[0]) for r in rows)

    async def registry(self, account_id: bytes) -> list[tuple[int, bytes]]:
        rows = await self.fetch("SELECT seq, entry FROM registry_entries WHERE account_id = ? "
                                "ORDER BY seq", account_id)
        return [(int(s), bytes(e)) for s, e in rows]

    async def spaces(self) -> list[_SpaceRow]:
        rows = await self.fetch("SELECT space_id, account_id, size, root, frontier, epoch "
                                "FROM spaces ORDER BY created_ms, space_id")
        return [_SpaceRow(bytes(s), bytes(a), int(n), bytes(r), bytes(f), int(e))
                for s, a, n, r, f, e in rows]

    async def ops(self, space_id: bytes, after: int, limit: int) -> list[LogEntry]:
        rows = await self.fetch(
            "SELECT o.log_offset, o.op_id, o.author, o.seq, o.deps, o.leaf_hash, e.envelope, "
            "o.kind FROM ops o LEFT JOIN op_envelopes e ON e.space_id = o.space_id AND "
            "e.log_offset = o.log_offset WHERE o.space_id = ? AND o.log_offset > ? "
            "ORDER BY o.log_offset LIMIT ?",
            space_id, after, limit)
        return [LogEntry(int(o), bytes(i), bytes(a), int(s), bytes(d), bytes(h),
                         None if e is None else bytes(e), int(k))
                for o, i, a, s, d, h, e, k in rows]

    async def nodes(self, space_id: bytes, level: int, lo: int, hi: int) -> dict[int, bytes]:
        rows = await self.fetch("SELECT idx, hash FROM merkle_nodes WHERE space_id = ? AND "
                                "level = ? AND idx >= ? AND idx <= ?", space_id, level, lo, hi)
        return {int(i): bytes(h) for i, h in rows}

    async def counts(self, space_id: bytes) -> tuple[int, int, int, int]:
        """(ops, node rows, duplicate offsets, duplicate (author, seq))."""
        n_ops = await self.fetch("SELECT count(*) FROM ops WHERE space_id = ?", space_id)
        n_nodes = await self.fetch("SELECT count(*) FROM merkle_nodes WHERE space_id = ?",
                                   space_id)
        dup_off = await self.fetch("SELECT count(*) FROM (SELECT log_offset FROM ops WHERE "
                                   "space_id = ? GROUP BY log_offset HAVING count(*) > 1) d",
                                   space_id)
        dup_seq = await self.fetch("SELECT count(*) FROM (SELECT author, seq FROM ops WHERE "
                                   "space_id = ? GROUP BY author, seq HAVING count(*) > 1) d",
                                   space_id)
        return (int(n_ops[0][0]), int(n_nodes[0][0]), int(dup_off[0][0]), int(dup_seq[0][0]))

    async def orphan_envelopes(self) -> list[tuple[bytes, int]]:
        """``(space, offset)`` of the envelopes whose op row is missing."""
        rows = await self.fetch("SELECT e.space_id, e.log_offset FROM op_envelopes e WHERE "
                                "NOT EXISTS (SELECT 1 FROM ops o WHERE o.space_id = e.space_id "
                                "AND o.log_offset = e.log_offset) ORDER BY 1, 2")
        return [(bytes(s), int(o)) for s, o in rows]

    async def orphan_members(self) -> list[bytes]:
        """The spaces named by ``space_members`` rows that do not exist."""
        rows = await self.fetch("SELECT DISTINCT m.space_id FROM space_members m WHERE NOT "
                                "EXISTS (SELECT 1 FROM spaces s WHERE s.space_id = m.space_id) "
                                "ORDER BY 1")
        return [bytes(r[0]) for r in rows]

    async def audit_accounts(self) -> list[tuple[bytes, int | None]]:
        """``(account, size)`` of every audit counter row, and ``(account, None)``
        for an account with audit entries but no counter row."""
        rows = await self.fetch("SELECT account_id, size FROM audit_heads UNION ALL SELECT "
                                "DISTINCT l.account_id, -1 FROM audit_log l WHERE NOT EXISTS "
                                "(SELECT 1 FROM audit_heads h WHERE h.account_id = "
                                "l.account_id)")  # -1: no counter row (sizes are >= 0)
        return sorted((bytes(a), None if int(n) < 0 else int(n)) for a, n in rows)

    async def audit_entries(self, account_id: bytes, after: int,
                            limit: int) -> list[tuple[int, bytes, bytes]]:
        """``(seq, entry, leaf_hash)`` of an account's audit log after ``after``."""
        rows = await self.fetch("SELECT seq, entry, leaf_hash FROM audit_log WHERE "
                                "account_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                                account_id, after, limit)
        return [(int(q), bytes(e), bytes(h)) for q, e, h in rows]

    async def key_packages(self, space_id: bytes) -> list[tuple[int, bytes]]:
        rows = await self.fetch("SELECT epoch, package FROM key_packages WHERE space_id = ? "
                                "ORDER BY epoch", space_id)
        return [(int(e), bytes(p)) for e, p in rows]

    async def pointers(self, space_id: bytes) -> list[tuple[str, int]]:
        """``("ack", offset)`` and ``("snapshot", covers_offset)`` rows of the space."""
        acks = await self.fetch("SELECT acked_offset FROM acks WHERE space_id = ?", space_id)
        snaps = await self.fetch("SELECT covers_offset FROM snapshots WHERE space_id = ?",
                                 space_id)
        return [("ack", int(r[0])) for r in acks] + [("snapshot", int(r[0])) for r in snaps]

    async def whole_space_snapshots(self, space_id: bytes) -> list[bytes]:
        """The current and the corroborated whole-space snapshot blobs."""
        rows = await self.fetch("SELECT blob FROM snapshots WHERE space_id = ? AND "
                                "(doc_id = ? OR doc_id = ?)", space_id, SPACE_SNAPSHOT_DOC,
                                CORROBORATED_SNAPSHOT_DOC)
        return [bytes(r[0]) for r in rows]

    async def chunk_ids(self, space_id: bytes) -> list[bytes]:
        rows = await self.fetch("SELECT chunk_id FROM snapshot_chunks WHERE space_id = ?",
                                space_id)
        return [bytes(r[0]) for r in rows]

    async def chunk(self, space_id: bytes, cid: bytes) -> bytes:
        rows = await self.fetch("SELECT blob FROM snapshot_chunks WHERE space_id = ? AND "
                                "chunk_id = ?", space_id, cid)
        return bytes(rows[0][0])


class _SqliteReader(_Reader):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise UnavailableError(f"SQLite read failed: {exc}") from exc


class _PostgresReader(_Reader):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        import asyncpg  # noqa: PLC0415 - the optional driver

        parts = sql.split("?")
        numbered = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], start=1))
        try:
            return [tuple(r) for r in await self._conn.fetch(numbered, *args)]
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise UnavailableError(f"PostgreSQL read failed: {exc}") from exc


@asynccontextmanager
async def _open_reader(url: str, schema: str | None) -> AsyncIterator[_Reader]:
    require_backend_url(url)
    if url.startswith("sqlite:///"):
        path = unquote(url[len("sqlite:///"):].split("?", 1)[0])
        if not path or not os.path.isfile(path):
            raise ConfigError(f"no SQLite database at {path!r}; pass the relay's --db URL")
        try:
            # mode=rw never creates a file; query_only forbids writes; one
            # deferred transaction gives one consistent snapshot of a live relay.
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None)
            conn.text_factory = bytes  # a tampered TEXT value is read, not a crash
            conn.execute("PRAGMA query_only = ON")
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise UnavailableError(f"cannot open the SQLite database {path!r}: {exc}") from exc
        try:
            yield _SqliteReader(conn)
        finally:
            conn.close()
        return
    async with _postgres_reader(url, schema) as reader:
        yield reader


@asynccontextmanager
async def _postgres_reader(url: str, schema: str | None) -> AsyncIterator[_Reader]:
    try:
        import asyncpg  # noqa: PLC0415 - the optional driver
    except ImportError as exc:
        raise ConfigError("PostgreSQL needs asyncpg: pip install 'sddsf[postgres]'") from exc
    from sddsf.relay.storage._common import validate_sql_identifier  # noqa: PLC0415
    from sddsf.relay.storage.postgres import redact_dsn  # noqa: PLC0415

    settings = {"application_name": "sddsf-fsck"}
    if schema is not None:
        settings["search_path"] = f'"{validate_sql_identifier(schema, "PostgreSQL schema")}"'
    try:
        conn = await asyncpg.connect(url, timeout=10, server_settings=settings)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError,
            ValueError) as exc:
        raise UnavailableError(f"cannot connect to {redact_dsn(url)}: {exc}") from exc
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            yield _PostgresReader(conn)
    finally:
        await conn.close()


# ------------------------------------------------------------------- checking


class _Fsck:
    def __init__(self, reader: _Reader, page: int) -> None:
        self.reader = reader
        self.page = page
        self.report = FsckReport()
        self.registries: dict[bytes, RegistryState | None] = {}

    def add(self, code: FsckCode, message: str, **where: Any) -> None:
        self.report.findings.append(Finding(code, message, **where))

    async def run(self) -> FsckReport:
        version = await self.reader.schema_version()
        if version != LATEST_VERSION:
            raise ConfigError(f"the database is at schema version {version}, this fsck reads "
                              f"version {LATEST_VERSION}; use the matching sddsf version "
                              "(or start the relay once to migrate)")
        for account in await self.reader.accounts():
            self.registries[account] = await self._registry(account)
        self.report.accounts = len(self.registries)
        for space in await self.reader.spaces():
            await self._space(space)
        for space_id, offset in await self.reader.orphan_envelopes():
            self.add(FsckCode.ENVELOPE_ORPHAN, "an envelope is stored for an op the log "
                     "does not have", space=space_id, offset=offset)
        for space_id in await self.reader.orphan_members():
            self.add(FsckCode.MEMBERS_ORPHAN, "a member set is stored for a space that does "
                     "not exist", space=space_id)
        for account, size in await self.reader.audit_accounts():
            await self._audit(account, size)
        return self.report

    async def _audit(self, account: bytes, size: int | None) -> None:
        # The controller's audit log of an account (docs/operations.md §14):
        # seqs 0..size-1, each leaf the hash of its entry, each entry the
        # account's, with a device report that verifies where it needs one.
        if account not in self.registries:
            self.registries[account] = await self._registry(account)
        registry, expected = self.registries[account], 0
        while page := await self.reader.audit_entries(account, expected - 1, self.page):
            for seq, raw, leaf in page:
                if seq != expected:
                    self.add(FsckCode.AUDIT_GAP, f"audit entry {expected} is missing (the "
                             f"next stored is {seq})", account=account, offset=expected)
                expected = seq + 1
                self.report.audit_entries += 1
                if leaf != leaf_hash(raw):
                    self.add(FsckCode.AUDIT_LEAF_MISMATCH, f"audit entry {seq}: the stored "
                             "leaf hash is not the entry's", account=account, offset=seq)
                try:
                    entry = decode_audit_entry(raw)
                    if registry is None and entry.account != account:
                        raise ProofError(f"audit entry {seq} belongs to another account")
                    if registry is not None:
                        check_audit_entry(entry, seq, registry)
                except SddsfError as exc:
                    self.add(FsckCode.AUDIT_ENTRY_INVALID, f"[{exc.code.value}] {exc.message}",
                             account=account, offset=seq)
        if size is None:
            self.add(FsckCode.AUDIT_SIZE_MISMATCH, f"{expected} audit entries are stored "
                     "without a counter row", account=account)
        elif size != expected:
            self.add(FsckCode.AUDIT_SIZE_MISMATCH, f"the audit counter says {size} entries, "
                     f"the log ends at {expected}", account=account)

    async def _registry(self, account: bytes) -> RegistryState | None:
        rows = await self.reader.registry(account)
        if not rows:
            self.add(FsckCode.REGISTRY_MISSING, "spaces of this account exist but it has no "
                     "registry entries", account=account)
            return None
        if [s for s, _ in rows] != list(range(len(rows))):
            self.add(FsckCode.REGISTRY_INVALID, "registry seqs are not 0, 1, 2, ...",
                     account=account)
            return None
        try:
            state = verify_registry([e for _, e in rows], pinned=None)
        except SddsfError as exc:
            self.add(FsckCode.REGISTRY_INVALID, f"[{exc.code.value}] {exc.message}",
                     account=account)
            return None
        if state.account_id != account:
            self.add(FsckCode.REGISTRY_INVALID, "the registry belongs to another account id",
                     account=account)
            return None
        return state

    async def _space(self, space: _SpaceRow) -> None:
        self.report.spaces += 1
        sid = space.space_id
        registry = self.registries.get(space.account_id)
        await self._key_packages(space, registry)
        n_ops, n_nodes, dup_off, dup_seq = await self.reader.counts(sid)
        if dup_off:
            self.add(FsckCode.DUPLICATE_OFFSET, f"{dup_off} offsets hold several ops", space=sid)
        if dup_seq:
            self.add(FsckCode.DUPLICATE_SEQ, f"{dup_seq} (author, seq) pairs hold several ops",
                     space=sid)
        frontier = await self._log(space, ChainVerifier(sid, registry, space.epoch))
        self.report.ops += n_ops
        self.report.nodes += n_nodes
        size = frontier.size
        if space.size != size or n_ops != size:
            self.add(FsckCode.SIZE_MISMATCH, f"the space row says {space.size} ops, {n_ops} are "
                     f"stored, {size} form a gap-free log", space=sid)
        expected_nodes = size - size.bit_count()  # perfect nodes of level >= 1
        if n_nodes > expected_nodes:
            self.add(FsckCode.NODE_EXTRA, f"{n_nodes} node rows, a log of {size} leaves "
                     f"completes {expected_nodes}", space=sid)
        if frontier.root() != space.root:
            self.add(FsckCode.ROOT_MISMATCH, f"the stored root is not the root of the "
                     f"{size} stored leaves", space=sid)
        if b"".join(frontier.to_hashes()) != space.frontier:
            self.add(FsckCode.FRONTIER_MISMATCH, "the stored frontier is not the frontier of "
                     "the stored leaves", space=sid)
        for kind, offset in await self.reader.pointers(sid):
            if offset >= size:
                code = FsckCode.ACK_BEYOND_LOG if kind == "ack" else FsckCode.SNAPSHOT_BEYOND_LOG
                self.add(code, f"a {kind} at offset {offset} is beyond the log ({size} ops)",
                         space=sid, offset=offset)
        await self._chunks(sid)

    async def _chunks(self, sid: bytes) -> None:
        # Chunks are content-addressed (one at a time: they may be large).
        stored = await self.reader.chunk_ids(sid)
        for cid in stored:
            if chunk_id(await self.reader.chunk(sid, cid)) != cid:
                self.add(FsckCode.CHUNK_MISMATCH, f"snapshot chunk {cid.hex()[:16]} does not "
                         "hash to its id", space=sid)
        have = set(stored)
        for blob in await self.reader.whole_space_snapshots(sid):
            try:
                listed = snapshot_claims(blob).chunk_ids
            except SddsfError:
                continue  # opaque to the relay beyond its structure; readers refuse it
            missing = [c for c in listed if c not in have]
            if missing:
                self.add(FsckCode.CHUNK_MISSING, f"a stored snapshot lists {len(missing)} "
                         f"chunk(s) that are not stored", space=sid)

    async def _log(self, space: _SpaceRow, chains: ChainVerifier) -> Frontier:
        sid, frontier, after = space.space_id, Frontier(), -1
        while True:
            page = await self.reader.ops(sid, after, self.page)
            if not page:
                return frontier
            computed: dict[int, dict[int, bytes]] = {}
            gap = False
            for entry in page:
                if entry.offset != frontier.size:
                    self.add(FsckCode.OFFSET_GAP, f"expected offset {frontier.size}, found "
                             f"{entry.offset}", space=sid, offset=entry.offset)
                    gap = True  # the rest cannot be placed in the tree
                    break
                self.report.findings.extend(chains.feed(entry))
                for level, index, h in frontier.append(entry.leaf_hash):
                    if level:
                        computed.setdefault(level, {})[index] = h
            await self._compare_nodes(sid, computed)
            if gap:
                return frontier
            after = page[-1].offset

    async def _compare_nodes(self, sid: bytes, computed: dict[int, dict[int, bytes]]) -> None:
        for level, wanted in computed.items():
            stored = await self.reader.nodes(sid, level, min(wanted), max(wanted))
            for index, h in sorted(wanted.items()):
                got = stored.get(index)
                if got is None:
                    self.add(FsckCode.NODE_MISSING, f"node ({level}, {index}) is not stored",
                             space=sid)
                elif got != h:
                    self.add(FsckCode.NODE_MISMATCH, f"stored node ({level}, {index}) differs "
                             "from the one recomputed from the leaves", space=sid)

    async def _key_packages(self, space: _SpaceRow, registry: RegistryState | None) -> None:
        rows = await self.reader.key_packages(space.space_id)
        last = rows[-1][0] if rows else -1
        if last != space.epoch:
            self.add(FsckCode.EPOCH_MISMATCH, f"the space row says epoch {space.epoch}, the "
                     f"last key package is epoch {last}", space=space.space_id)
        if registry is None:
            return
        previous: kp.KeyPackage | None = None
        for epoch, data in rows:
            try:
                previous = kp.verify_key_package(data, registry=registry,
                                                 space=space.space_id, previous=previous)
            except SddsfError as exc:
                self.add(FsckCode.KEY_PACKAGE_INVALID, f"epoch {epoch}: [{exc.code.value}] "
                         f"{exc.message}", space=space.space_id)
                return


async def fsck(url: str, *, schema: str | None = None, page: int = _PAGE) -> FsckReport:
    """Check a relay database (read only; safe while the relay runs).

    Args:
        url: ``sqlite:///PATH`` or ``postgresql://...`` (the relay's ``--db``).
        schema: PostgreSQL schema holding the tables (default: the search path).
        page: ops read per query.

    Returns:
        The report; ``report.ok`` when nothing was found.

    Raises:
        ConfigError: unsupported URL, missing file, not a relay database, or
            another schema version.
        UnavailableError: the database cannot be read.
    """
    async with _open_reader(url, schema) as reader:
        return await _Fsck(reader, max(1, page)).run()


async def read_logs(url: str, *, schema: str | None = None) -> list[SpaceLog]:
    """Every space's whole log with its account's registry, for the history
    checkers (:mod:`sddsf.testing.checkers`). Meant for test-sized databases:
    everything is held in memory.

    Raises:
        As :func:`fsck`.
    """
    async with _open_reader(url, schema) as reader:
        out = []
        for space in await reader.spaces():
            entries: list[LogEntry] = []
            while page := await reader.ops(space.space_id, entries[-1].offset if entries
                                           else -1, _PAGE):
                entries.extend(page)
            registry = tuple(e for _, e in await reader.registry(space.account_id))
            out.append(SpaceLog(space.space_id, space.account_id, space.epoch,
                                tuple(entries), registry))
        return out


def run_fsck(url: str, *, schema: str | None = None) -> FsckReport:
    """Blocking wrapper of :func:`fsck` for the CLI."""
    return asyncio.run(fsck(url, schema=schema))


def describe(report: FsckReport) -> list[str]:
    """Human-readable lines: one per finding, then a summary."""
    lines = [str(f) for f in report.findings]
    verdict = "clean" if report.ok else f"{len(report.findings)} finding(s)"
    lines.append(f"fsck: {report.accounts} accounts, {report.spaces} spaces, {report.ops} ops, "
                 f"{report.nodes} nodes checked: {verdict}")
    return lines


# ------------------------------------------------------- signed heads (--heads)
#
# A relay backup carries the relay's signed tree head of every log at the
# backup point. Checked against a database restored from it, each head must
# verify under the relay key and the log at the head's size must have the
# head's root. Kept apart from the checks above: those need no outside input.

#: The ``format`` of a heads file (JSON: written by ``sddsf relay restore --heads-out``).
HEADS_FORMAT: Final = "sddsf-relay-heads"


def heads_document(relay_id: bytes, heads: list[bytes], *, backup: int,
                   created_ms: int) -> dict[str, object]:
    """The JSON document of a heads file."""
    import base64  # noqa: PLC0415

    return {"format": HEADS_FORMAT, "version": 1, "relay_id": relay_id.hex(),
            "backup": backup, "created_ms": created_ms,
            "heads": [base64.b64encode(h).decode("ascii") for h in heads]}


def read_heads_file(path: str) -> tuple[bytes, list[bytes]]:
    """``(relay_id, heads)`` from a heads file.

    Raises:
        ConfigError: unreadable, or not a heads file.
    """
    import base64  # noqa: PLC0415
    import binascii  # noqa: PLC0415
    import json  # noqa: PLC0415

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or doc.get("format") != HEADS_FORMAT \
                or doc.get("version") != 1:
            raise ValueError(f"not a {HEADS_FORMAT} file of version 1")
        heads = [base64.b64decode(h, validate=True) for h in doc["heads"]]
        return bytes.fromhex(doc["relay_id"]), heads
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ConfigError(f"cannot read the heads file {path}: {exc}") from None


async def check_heads(url: str, heads: list[bytes], relay_key: Ed25519PublicKey, *,
                      schema: str | None = None) -> list[Finding]:
    """Check a database against signed tree heads (e.g. of the backup it was
    restored from): each head verifies under ``relay_key``, and the log it
    names (a space, or an account's audit log) has, at the head's size, the
    head's root, recomputed from the stored rows. The log may have grown since.

    Raises:
        As :func:`fsck`.
    """
    async with _open_reader(url, schema) as reader:
        out: list[Finding] = []
        for raw in heads:
            out.extend(await _check_head(reader, raw, relay_key))
        return out


async def _check_head(reader: _Reader, raw: bytes, key: Ed25519PublicKey) -> list[Finding]:
    try:
        head = verify_tree_head(raw, key, log=decode_tree_head(raw).log)
    except SddsfError as exc:
        return [Finding(FsckCode.HEAD_INVALID, f"a signed head does not verify with the relay "
                        f"key {key.raw.hex()[:16]}...: [{exc.code.value}] {exc.message}")]
    audit = audit_log_id(b"")
    if head.log.startswith(audit):
        account = head.log[len(audit):]
        where: dict[str, Any] = {"account": account}
        rows = await reader.fetch("SELECT seq, entry FROM audit_log WHERE account_id = ? AND "
                                  "seq < ? ORDER BY seq", account, head.size)
        leaves = [(int(s), leaf_hash(bytes(e))) for s, e in rows]
        what = "audit log"
    else:
        where = {"space": head.log}
        leaves = []
        while len(leaves) < head.size and (page := await reader.ops(
                head.log, leaves[-1][0] if leaves else -1, min(_PAGE, head.size))):
            leaves.extend((e.offset, e.leaf_hash) for e in page)
        del leaves[head.size:]
        what = "log"
    frontier = Frontier()
    for position, leaf in leaves:
        if position != frontier.size:
            break  # a gap: the main checks name it; the root below will not match
        frontier.append(leaf)
    if frontier.size < head.size:
        return [Finding(FsckCode.HEAD_BEYOND_LOG, f"the signed head has size {head.size}, the "
                        f"{what} holds {frontier.size} gap-free entries: entries the relay "
                        "had signed are missing", **where)]
    if frontier.root() != head.root:
        return [Finding(FsckCode.HEAD_MISMATCH, f"the {what}'s root at the signed size "
                        f"{head.size} is not the signed root: its entries differ from what "
                        "the relay signed", **where)]
    return []
