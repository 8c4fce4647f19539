"""Backend-neutral pieces of the relay storage: batch planning and validation.

Both backends run the same append algorithm; only the way they read the
chain state and write rows differs. Keeping the decision logic here, pure and
synchronous, means SQLite and PostgreSQL cannot disagree on which op of a batch
is accepted, duplicate or a fork, and which batch must be refused whole.

The append algorithm, inside ONE transaction that holds the space's counter row:

1. read the counter row (``size``, frontier) of the space;
2. read each batch author's head seq, and the stored ``(op_id, offset)`` at the
   batch's ``(author, seq)`` pairs that can already be stored (``seq <= head``);
3. :func:`plan_append` decides each op in order and computes the new rows, the
   Merkle nodes completed by the new leaves, and the new counter row;
4. write everything with batch inserts and commit.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sddsf.errors import ConfigError, ConflictError, UsageError
from sddsf.protocol.encoding import encode
from sddsf.protocol.membership import Role
from sddsf.protocol.membership import entry_hash as hash_entry
from sddsf.protocol.merkle import HASH_SIZE, Frontier, leaf_hash
from sddsf.relay.storage.base import (
    AlertRecord,
    AppendOutcome,
    AppendStatus,
    ForkEvidence,
    LeafKind,
    OpToAppend,
    SpaceRecord,
    StoredOp,
)

__all__ = [
    "FIRST_OP_SEQ",
    "MEMBERSHIP_DEPS",
    "NO_MEMBERSHIP_HEAD",
    "PAIRING_SENDERS",
    "AppendPlan",
    "alert_record",
    "attestations_by_id",
    "audit_leaf",
    "check_cutoffs",
    "check_membership_head",
    "check_registry_seq",
    "decode_frontier",
    "duplicate_membership",
    "encode_frontier",
    "evidence_digest",
    "first_sync_after",
    "membership_leaf",
    "now_ms",
    "pairs_to_look_up",
    "plan_append",
    "prefix_range",
    "space_record",
    "stored_op",
    "validate_batch",
    "validate_sender",
    "validate_sql_identifier",
]

#: Op chains start at seq 1 (``rules.verify_op``: no head means head seq 0).
FIRST_OP_SEQ: Final = 1
PAIRING_SENDERS: Final = ("initiator", "joiner")
#: ``deps`` of a membership leaf's row: the canonical encoding of an empty map.
MEMBERSHIP_DEPS: Final = encode({})
#: The membership head of a space that holds no entry yet.
NO_MEMBERSHIP_HEAD: Final = bytes(HASH_SIZE)
_ROLES: Final = frozenset(r.value for r in Role)
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def prefix_range(prefix: bytes, size: int = 32) -> tuple[bytes, bytes]:
    """The lowest and highest ``size``-byte ids that start with ``prefix`` (for a
    range scan of a primary key)."""
    pad = size - len(prefix)
    return prefix + bytes(pad), prefix + b"\xff" * pad


def now_ms() -> int:
    """Wall-clock milliseconds, for bookkeeping columns only (never for protocol rules)."""
    return time.time_ns() // 1_000_000


def encode_frontier(hashes: Sequence[bytes]) -> bytes:
    """Frontier hashes as one column value: the concatenated 32-byte hashes."""
    return b"".join(hashes)


def decode_frontier(size: int, blob: bytes) -> Frontier:
    """Rebuild the stored frontier (validated: a tampered row raises ProofError)."""
    hashes = [bytes(blob[i:i + HASH_SIZE]) for i in range(0, len(blob), HASH_SIZE)]
    return Frontier.from_hashes(size, hashes)


def first_sync_after(snapshots: Mapping[bytes, tuple[int, bytes]]) -> int:
    """The offset a first sync's tail starts after: the oldest snapshot's cover."""
    return min((covers for covers, _ in snapshots.values()), default=-1)


def attestations_by_id(rows: Sequence[Sequence[Any]], docs: Sequence[bytes],
                       ) -> dict[tuple[bytes, bytes], list[bytes]]:
    """Rows ``(doc id, snapshot id, attestation)`` of ``docs``, by ``(doc id,
    snapshot id)`` (drivers return memoryview or bytes)."""
    wanted = set(docs)
    out: dict[tuple[bytes, bytes], list[bytes]] = {}
    for doc, sid, raw in rows:
        key = (bytes(doc), bytes(sid))
        if key[0] in wanted:
            out.setdefault(key, []).append(bytes(raw))
    return out


def space_record(space_id: bytes, account_id: bytes, size: int, root: bytes, epoch: int,
                 epoch_started_ms: int, created_ms: int) -> SpaceRecord:
    """A :class:`SpaceRecord` from column values (drivers return memoryview/bytes)."""
    return SpaceRecord(bytes(space_id), bytes(account_id), int(size), bytes(root), int(epoch),
                       int(epoch_started_ms), int(created_ms))


def stored_op(offset: int, op_id: bytes, author: bytes, seq: int, leaf: bytes,
              envelope: bytes | None, received_ms: int, kind: int) -> StoredOp:
    """A :class:`StoredOp` from column values (``envelope`` is NULL once pruned)."""
    return StoredOp(int(offset), bytes(op_id), bytes(author), int(seq), bytes(leaf),
                    None if envelope is None else bytes(envelope), int(received_ms),
                    LeafKind(kind))


def check_registry_seq(stored: int | None, expected: int | None) -> None:
    """Refuse an append verified against a registry the store has moved past
    (THREATS #14: a revocation stored while the batch was being verified)."""
    if expected is not None and stored is not None and stored != expected:
        raise ConflictError(f"the account's registry changed while this batch was verified "
                            f"(seq {expected} -> {stored}); verify the batch again")


def check_cutoffs(heads: Sequence[tuple[bytes, bytes, int]],
                  revoked_cutoffs: Mapping[bytes, Mapping[bytes, int]]) -> None:
    """Refuse a revocation whose cutoff the stored log has outgrown.

    Args:
        heads: ``(space_id, author, highest stored seq)`` for the revoked authors
            in the account's spaces, read in the storing transaction.
        revoked_cutoffs: per revoked device, space id -> last seq it keeps.
    """
    for space_id, author, head in heads:
        cutoff = revoked_cutoffs.get(author, {}).get(space_id, 0)
        if head > cutoff:
            raise ConflictError(
                f"device {author.hex()[:12]} wrote op {head} in space {space_id.hex()[:12]} "
                f"after the revocation's cutoff ({cutoff}): pull, then revoke again so the "
                "cutoff keeps every op the log holds")


def validate_batch(ops: Sequence[OpToAppend]) -> None:
    """Refuse ops that would corrupt the log if stored.

    The leaf hash is not recomputed here: :class:`OpToAppend`'s constructor is
    the one place it is computed (or checked, when a caller gives one), so an
    ``OpToAppend`` always carries the leaf hash of its envelope (a wrong one
    would make every later proof of the space fail beyond repair). Its type
    and size are checked.

    Raises:
        UsageError: a field of the wrong type, a seq below 1, or a leaf hash
            that is not 32 bytes.
    """
    for i, op in enumerate(ops):
        if not isinstance(op, OpToAppend):
            raise UsageError(f"op #{i} of the batch is a {type(op).__name__}, not an OpToAppend")
        for name in ("envelope", "op_id", "author", "deps", "leaf_hash"):
            if not isinstance(getattr(op, name), bytes):
                raise UsageError(f"op #{i}: {name} must be bytes")
        if not isinstance(op.seq, int) or isinstance(op.seq, bool) or op.seq < FIRST_OP_SEQ:
            raise UsageError(f"op #{i}: seq must be an integer >= {FIRST_OP_SEQ}, got {op.seq!r}")
        if len(op.leaf_hash) != HASH_SIZE:
            raise UsageError(f"op #{i}: leaf_hash must be {HASH_SIZE} bytes")


def pairs_to_look_up(ops: Sequence[OpToAppend],
                     heads: Mapping[bytes, int]) -> list[tuple[bytes, int]]:
    """The distinct ``(author, seq)`` pairs of the batch that may already be stored.

    Only a seq at or below the author's stored head can be taken, so a batch of
    new ops (the common case) needs no lookups at all.
    """
    seen: set[tuple[bytes, int]] = set()
    out: list[tuple[bytes, int]] = []
    for op in ops:
        key = (op.author, op.seq)
        if op.seq <= heads.get(op.author, FIRST_OP_SEQ - 1) and key not in seen:
            seen.add(key)
            out.append(key)
    return out


@dataclass(slots=True)
class AppendPlan:
    """What one append transaction writes.

    ``op_rows`` are ``(offset, op_id, author, seq, deps, leaf_hash, envelope)``;
    ``node_rows`` are the completed perfect nodes ``(level, index, hash)`` of
    level >= 1 (level 0 is the op row's ``leaf_hash``, never stored twice).
    """

    outcomes: list[AppendOutcome] = field(default_factory=list)
    op_rows: list[tuple[int, bytes, bytes, int, bytes, bytes, bytes]] = field(default_factory=list)
    node_rows: list[tuple[int, int, bytes]] = field(default_factory=list)
    size: int = 0
    root: bytes = b""
    frontier: bytes = b""


def plan_append(size: int, frontier_blob: bytes, heads: Mapping[bytes, int],
                stored: Mapping[tuple[bytes, int], tuple[bytes, int]],
                ops: Sequence[OpToAppend]) -> AppendPlan:
    """Decide every op of a batch, in order, against the locked chain state.

    Args:
        size: the space's counter (next offset) read under the lock.
        frontier_blob: the stored frontier at ``size``.
        heads: each batch author's stored head seq (absent: no ops yet).
        stored: ``(author, seq) -> (op_id, offset)`` for the pairs of
            :func:`pairs_to_look_up` that are stored.
        ops: the validated batch.

    Returns:
        The plan; ``outcomes`` has one entry per op.

    Raises:
        ConflictError: an op's seq is free but not its author's head + 1 (a
            concurrent writer moved the chain since the caller verified it);
            the whole batch must be refused so that nothing is stored.
    """
    frontier = decode_frontier(size, frontier_blob)
    plan = AppendPlan()
    head_now = dict(heads)
    # (author, seq) -> (op_id, offset) of everything taken, stored or in this batch.
    taken = dict(stored)
    for op in ops:
        key = (op.author, op.seq)
        existing = taken.get(key)
        if existing is not None:
            ex_id, ex_offset = existing
            status = AppendStatus.DUPLICATE if ex_id == op.op_id else AppendStatus.FORK
            plan.outcomes.append(AppendOutcome(status, ex_offset, ex_id))
            continue
        expected = head_now.get(op.author, FIRST_OP_SEQ - 1) + 1
        if op.seq != expected:
            raise ConflictError(
                f"op seq {op.seq} of author {op.author.hex()[:16]}... is not the author's next "
                f"seq ({expected}): the chain changed since the batch was verified; re-read "
                "the chain state and verify the batch again (nothing was stored)")
        offset = frontier.size
        for level, index, h in frontier.append(op.leaf_hash):
            if level:
                plan.node_rows.append((level, index, h))
        plan.op_rows.append((offset, op.op_id, op.author, op.seq, op.deps, op.leaf_hash,
                             op.envelope))
        plan.outcomes.append(AppendOutcome(AppendStatus.ACCEPTED, offset, op.op_id))
        taken[key] = (op.op_id, offset)
        head_now[op.author] = op.seq
    plan.size = frontier.size
    plan.root = frontier.root()
    plan.frontier = encode_frontier(frontier.to_hashes())
    return plan


def membership_leaf(entry: bytes, entry_hash: bytes, expected_head: bytes,
                    members: Mapping[bytes, str]) -> tuple[OpToAppend, list[tuple[bytes, str]]]:
    """Check :meth:`RelayStorage.append_membership`'s arguments; the entry's leaf
    row (as an op to append: see :class:`LeafKind`) and the member rows.

    Raises:
        UsageError: ``entry_hash`` is not the entry's hash (it is the row's op id
            and author, and the ``prev`` of later entries: a wrong one would
            break the space's membership chain), an ``expected_head`` that is not
            32 bytes, or a member that is not ``bytes -> role``.
    """
    if not isinstance(entry, bytes) or not entry:
        raise UsageError("a membership entry is a non-empty byte string")
    if entry_hash != hash_entry(entry):
        raise UsageError("entry_hash is not the hash of the membership entry")
    if not isinstance(expected_head, bytes) or len(expected_head) != HASH_SIZE:
        raise UsageError(f"expected_head must be {HASH_SIZE} bytes")
    rows = []
    for account, role in members.items():
        if not isinstance(account, bytes) or role not in _ROLES:
            raise UsageError(f"a member is an account id (bytes) and one of the roles "
                             f"{sorted(_ROLES)}, got {account!r}: {role!r}")
        rows.append((account, str(role)))
    leaf = OpToAppend(envelope=entry, op_id=entry_hash, author=entry_hash, seq=FIRST_OP_SEQ,
                      deps=MEMBERSHIP_DEPS)
    return leaf, rows


def duplicate_membership(offset: int, entry_hash: bytes) -> AppendOutcome:
    """The outcome of an entry already stored at ``offset``."""
    return AppendOutcome(AppendStatus.DUPLICATE, offset, entry_hash)


def check_membership_head(stored: bytes | None, expected: bytes) -> None:
    """Refuse an entry folded against an older membership than the stored one.

    Args:
        stored: the hash of the space's newest membership entry, None if none.
        expected: the caller's ``expected_head``.

    Raises:
        ConflictError: they differ.
    """
    head = NO_MEMBERSHIP_HEAD if stored is None else bytes(stored)
    if head != expected:
        raise ConflictError("another membership entry was stored meanwhile (the space's "
                            f"newest entry is {head.hex()[:16]}..., not "
                            f"{expected.hex()[:16]}...): fold the membership again and retry "
                            "(nothing was stored)")


def evidence_digest(evidence: ForkEvidence) -> bytes:
    """Identity of a fork-evidence pair, so recording it twice stores it once.

    Length-prefixed so that no two different pairs share a digest input.
    """
    h = hashlib.sha256()
    for part in (evidence.accepted_envelope, evidence.refused_envelope):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def alert_record(alert_id: bytes, account_id: bytes, device_id: bytes, rule: str,
                 severity: str, message: str, quarantine: object, created_ms: int,
                 acked_ms: int | None, acked_by: bytes | None) -> AlertRecord:
    """An :class:`AlertRecord` from column values (SQLite stores booleans as 0/1)."""
    return AlertRecord(bytes(alert_id), bytes(account_id), bytes(device_id), str(rule),
                       str(severity), str(message), bool(quarantine), int(created_ms),
                       None if acked_ms is None else int(acked_ms),
                       None if acked_by is None else bytes(acked_by))


def audit_leaf(entry: bytes) -> bytes:
    """The RFC 9162 leaf hash of an audit entry (refusing a non-bytes entry).

    Raises:
        UsageError: ``entry`` is not a non-empty byte string.
    """
    if not isinstance(entry, bytes) or not entry:
        raise UsageError("an audit entry is a non-empty byte string")
    return leaf_hash(entry)


def validate_sender(sender: str) -> None:
    """Pairing messages come from one of the two ends of the channel.

    Raises:
        UsageError: any other sender name.
    """
    if sender not in PAIRING_SENDERS:
        raise UsageError(f"pairing sender must be 'initiator' or 'joiner', not {sender!r}")


def validate_sql_identifier(name: str, what: str) -> str:
    """An identifier safe to quote into SQL (schema names are not bind parameters).

    Raises:
        ConfigError: not ``[A-Za-z_][A-Za-z0-9_]*`` of at most 63 characters.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ConfigError(f"{what} {name!r} must be letters, digits and underscores "
                          "(at most 63, not starting with a digit)")
    return name
