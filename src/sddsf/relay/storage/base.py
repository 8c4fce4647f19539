"""The relay's storage interface: one contract, two real backends (SQLite, PostgreSQL).

Every backend passes the conformance suite in :mod:`sddsf.testing.storage_conformance`.
The relay keeps no state outside this interface and the edge-state interface,
so several relay processes can share one PostgreSQL database.

Invariants every backend keeps (the conformance suite checks each):

* **Durability before acknowledgement.** A method that stores something returns
  only after its transaction is durable (SQLite: WAL with ``synchronous=FULL``;
  PostgreSQL: ``synchronous_commit=on``).
* **Atomic append.** :meth:`RelayStorage.append_ops` stores a batch's ops, the
  per-space counter and the Merkle nodes in ONE transaction: all or nothing.
* **Gap-free offsets equal to commit order.** Offsets are 0, 1, 2, ... per space,
  assigned from a per-space counter row that the append transaction locks
  (never from an auto-increment id, which can commit out of order). The offset
  of an op is also its leaf index in the space's Merkle log.
* **Idempotence.** Appending an op whose ``(author, seq)`` is already stored with
  the same op id yields ``duplicate`` with the original offset; with another op
  id it yields ``fork`` and nothing is appended (the caller stores evidence).
* **Proofs survive pruning.** :meth:`RelayStorage.prune_ops` drops envelopes but
  never leaf hashes or nodes, so every inclusion and consistency proof stays
  valid; it never drops a membership entry's bytes.
* **One log, two kinds of leaf** (schema 12). A space's Merkle log holds ops
  and the signed membership entries of a shared space (``docs/protocol.md``
  section 21), interleaved in commit order (:class:`LeafKind`), so every member
  sees one order of both. :meth:`RelayStorage.append_membership` appends an
  entry through the same counter row, Merkle update and locking as
  :meth:`RelayStorage.append_ops`, and replaces the space's stored member set
  in the same transaction.
* **Backup attempts are atomic and durable.** :meth:`RelayStorage.backup_attempt`
  reads the attempt state (the account's and, given a source, the source's),
  compares the verifier hash, decides with :func:`decide_backup_attempt` or
  :func:`decide_sourced_attempt` and writes the new state in ONE transaction
  that holds the backup's row, so concurrent guesses cannot exceed the
  failure limit, and the state survives a restart.
* **Revocations and appends are serialised per account** (THREATS #14). An
  append given ``registry_seq`` is refused (StorageConflict, nothing stored)
  when the account's registry has moved past the state the batch was verified
  against; a registry entry given ``revoked_cutoffs`` is refused when the log
  already holds an op of a revoked device beyond its cutoff. Both checks run
  inside the transaction that stores, under one ordering of the two (SQLite's
  database write lock; PostgreSQL: an account-level advisory lock, shared by
  appends, exclusive for registry entries), so an op can never be stored after
  a revocation whose cutoff excludes it.

Errors: backends raise :class:`~sddsf.errors.SddsfError` subclasses only;
driver exceptions are translated once, here at the adapter. A unique-key race
on registry entries, key packages or spaces surfaces as
:class:`~sddsf.errors.ConflictError` (``StorageConflict``, code ``conflict``).
A database that is unreachable raises :class:`~sddsf.errors.UnavailableError`
(``StorageUnavailable``, code ``unavailable``, HTTP 503).

Size: the storage contract: about fifty methods whose docstrings are the
written contract (Args, Returns, Raises) every backend and the conformance
suite follow, and the pure backup-lockout decisions they share.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

from sddsf.crypto import constant_time_equal
from sddsf.errors import ConfigError, ConflictError, UnavailableError, UsageError
from sddsf.protocol import merkle

__all__ = [
    "AlertRecord",
    "AppendOutcome",
    "AppendStatus",
    "BackupAttempt",
    "BackupAttemptState",
    "BackupAttemptStatus",
    "BackupLockPolicy",
    "ChainSnapshot",
    "ForkEvidence",
    "LeafKind",
    "OpToAppend",
    "PairingChannel",
    "PairingMessage",
    "PostureRecord",
    "RelayStorage",
    "SignalRow",
    "SourcedAttempt",
    "SpaceRecord",
    "StorageConflict",
    "StorageUnavailable",
    "StoredBackup",
    "StoredOp",
    "decide_backup_attempt",
    "decide_sourced_attempt",
    "verifier_matches",
]


# Backends raise these two (from sddsf.errors) for storage conditions.
StorageUnavailable = UnavailableError
StorageConflict = ConflictError


@dataclass(frozen=True, slots=True)
class SpaceRecord:
    """A space and its log state."""

    space_id: bytes
    account_id: bytes
    size: int  # number of leaves (= next offset)
    root: bytes  # RFC 9162 root of the whole log
    epoch: int  # current key epoch (highest stored key package), -1 if none
    epoch_started_ms: int  # when the current epoch's package was stored
    created_ms: int


@dataclass(frozen=True, slots=True)
class OpToAppend:
    """A verified op, ready to append."""

    envelope: bytes
    op_id: bytes
    author: bytes
    seq: int
    deps: bytes  # canonical encoding of the op's deps (for ChainSnapshot)
    #: RFC 9162 leaf hash of ``envelope``: computed here when not given, checked when
    #: given. This constructor is the one place the relay hashes a leaf, so no
    #: caller can hand storage a wrong one (which would corrupt every later proof
    #: of the space beyond repair) and storage need not hash it again.
    leaf_hash: bytes = b""

    def __post_init__(self) -> None:
        computed = merkle.leaf_hash(self.envelope)
        if not self.leaf_hash:
            object.__setattr__(self, "leaf_hash", computed)
        elif self.leaf_hash != computed:
            raise UsageError("leaf_hash is not the RFC 9162 leaf hash of the envelope; "
                             "refusing to corrupt the space's Merkle log")


class LeafKind(IntEnum):
    """What a leaf of a space's log is (the ``ops.kind`` column).

    A MEMBERSHIP leaf's row: ``op_id`` and ``author`` are the entry hash
    (:func:`sddsf.protocol.membership.entry_hash`), ``seq`` is 1, ``deps`` the
    canonical encoding of an empty map (``b"\\xa0"``), ``leaf_hash`` the RFC 9162
    leaf hash of the entry bytes, and the envelope is the entry bytes. The entry
    hash as author keeps UNIQUE (space, author, seq) meaningful: one entry is
    stored at most once per space.
    """

    OP = 0
    MEMBERSHIP = 1


class AppendStatus(Enum):
    """What happened to one op of a batch."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    FORK = "fork"


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    """Result for one op: its offset (original offset for a duplicate; the
    existing op's offset for a fork)."""

    status: AppendStatus
    offset: int
    existing_op_id: bytes


@dataclass(frozen=True, slots=True)
class StoredOp:
    """A leaf as served to readers: an op, or a membership entry (``kind``; see
    :class:`LeafKind` for its columns). ``envelope`` is None once pruned (never
    for a membership entry)."""

    offset: int
    op_id: bytes
    author: bytes
    seq: int
    leaf_hash: bytes
    envelope: bytes | None
    received_ms: int
    kind: LeafKind = LeafKind.OP


@dataclass(frozen=True, slots=True)
class FirstSyncReads:
    """What a new device's first sync reads of one space (see
    :meth:`RelayStorage.first_sync_reads`)."""

    #: The space as it was when the ops were read (its size covers all of them).
    space: SpaceRecord
    #: Every key package, in epoch order.
    key_packages: list[bytes]
    #: Requested doc id -> ``(covers_offset, blob)``, for those that have a snapshot.
    snapshots: dict[bytes, tuple[int, bytes]]
    #: ``(doc id, snapshot id)`` -> the attestations stored under them (requested
    #: doc ids only), ordered by attester.
    attestations: dict[tuple[bytes, bytes], list[bytes]]
    #: The offset the ops start after: the lowest ``covers_offset`` of
    #: ``snapshots`` (-1 when there is none).
    after: int
    #: The leaves after ``after``, ascending, at most the limit asked for.
    ops: list[StoredOp]


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    """Per-author chain state of one space, prefetched for verifying a batch.

    ``heads[author] = (seq, op_id, deps_bytes)``; ``ids[(author, seq)] = op_id``
    for every requested ``(author, seq)`` that is stored.
    """

    heads: dict[bytes, tuple[int, bytes, bytes]]
    ids: dict[tuple[bytes, int], bytes]


@dataclass(frozen=True, slots=True)
class ForkEvidence:
    """Two signed ops by one author at one seq: the stored one and the refused one."""

    space_id: bytes
    author: bytes
    seq: int
    accepted_envelope: bytes
    refused_envelope: bytes
    recorded_ms: int


@dataclass(frozen=True, slots=True)
class PairingMessage:
    """One opaque message in a pairing channel."""

    index: int
    sender: str  # "initiator" or "joiner"
    body: bytes


@dataclass(frozen=True, slots=True)
class PairingChannel:
    """A claimed pairing channel: its id and when it expires."""

    channel_id: bytes
    expires_ms: int


@dataclass(frozen=True, slots=True)
class StoredBackup:
    """An account's passphrase backup (``docs/protocol.md`` section 19): the public
    Argon2id parameters, ``BLAKE2b-256(verifier)`` (never the verifier) and the
    opaque blob."""

    account_id: bytes
    alg: str
    t: int
    m_kib: int
    p: int
    salt: bytes
    verifier_hash: bytes
    blob: bytes
    stored_ms: int


@dataclass(frozen=True, slots=True)
class BackupLockPolicy:
    """When wrong verifiers lock a backup: after ``max_failures`` consecutive
    failures, for ``lockout_ms`` doubled on each further lockout, at most
    ``max_lockout_ms``."""

    max_failures: int
    lockout_ms: int
    max_lockout_ms: int


@dataclass(frozen=True, slots=True)
class BackupAttemptState:
    """The persisted attempt state of one backup."""

    failures: int = 0  # consecutive wrong verifiers since the last success or lockout
    lockouts: int = 0  # lockouts since the last success (each one doubles the next)
    locked_until_ms: int = 0  # refused (even a right verifier) before this time


@dataclass(frozen=True, slots=True)
class PostureRecord:
    """A device's latest posture report (the signed bytes) and when it was stated
    (``ts_ms``, the report's own time) and received."""

    device_id: bytes
    report: bytes
    ts_ms: int
    received_ms: int


@dataclass(frozen=True, slots=True)
class SignalRow:
    """One controller signal of a device: ``count`` events of ``kind`` at ``ts_ms``."""

    kind: str
    ts_ms: int
    count: int


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A stored alert. ``device_id`` is empty for an account-level alert;
    ``acked_ms``/``acked_by`` are set once a device acknowledged it."""

    alert_id: bytes
    account_id: bytes
    device_id: bytes
    rule: str
    severity: str
    message: str
    quarantine: bool
    created_ms: int
    acked_ms: int | None = None
    acked_by: bytes | None = None


class BackupAttemptStatus(Enum):
    """The outcome of one fetch attempt."""

    OK = "ok"  # the verifier is right: here is the blob
    WRONG = "wrong"  # a wrong verifier (counted)
    LOCKED = "locked"  # refused unchecked, the backup is locked (not counted)


@dataclass(frozen=True, slots=True)
class BackupAttempt:
    """What :meth:`RelayStorage.backup_attempt` decided.

    ``retry_after_ms`` is the remaining lockout for LOCKED, and for a WRONG
    attempt that has just locked the backup (0 otherwise). ``blob`` is set for OK.
    """

    status: BackupAttemptStatus
    state: BackupAttemptState
    retry_after_ms: int = 0
    blob: bytes | None = None


def decide_backup_attempt(state: BackupAttemptState, matches: bool, now_ms: int,
                          policy: BackupLockPolicy) -> BackupAttempt:
    """The one lockout rule, shared by every backend (pure).

    * locked (``locked_until_ms > now``): LOCKED, nothing changes, whether or
      not the verifier is right;
    * right verifier: OK, and the state is reset (failures and lockouts);
    * wrong verifier: WRONG, one more failure; the ``max_failures``-th locks the
      backup for ``lockout_ms * 2**(lockouts)`` (capped at ``max_lockout_ms``) and
      starts counting failures from zero again.
    """
    if state.locked_until_ms > now_ms:
        return BackupAttempt(BackupAttemptStatus.LOCKED, state, state.locked_until_ms - now_ms)
    if matches:
        return BackupAttempt(BackupAttemptStatus.OK, BackupAttemptState())
    failures = state.failures + 1
    if failures < policy.max_failures:
        return BackupAttempt(BackupAttemptStatus.WRONG,
                             BackupAttemptState(failures, state.lockouts, state.locked_until_ms))
    lockouts = state.lockouts + 1
    duration = min(policy.lockout_ms << min(lockouts - 1, 40), policy.max_lockout_ms)
    return BackupAttempt(BackupAttemptStatus.WRONG,
                         BackupAttemptState(0, lockouts, now_ms + duration), duration)


@dataclass(frozen=True, slots=True)
class SourcedAttempt:
    """What :func:`decide_sourced_attempt` decided: the attempt (its ``state`` is
    the account-wide one) and the source's new state."""

    attempt: BackupAttempt
    source: BackupAttemptState


def decide_sourced_attempt(account: BackupAttemptState, source: BackupAttemptState,
                           matches: bool, now_ms: int,
                           policy: BackupLockPolicy) -> SourcedAttempt:
    """The lockout rule with per-source state (pure), so that a stranger's wrong
    guesses cannot lock the owner out:

    * the source is locked: LOCKED, nothing changes;
    * the account is locked (its own count of wrong guesses from every source
      reached ``max_failures``) and this source has guessed wrong before: LOCKED;
      a source that has not may still try, once;
    * right verifier: OK; the account's state and this source's are reset;
    * wrong verifier: WRONG, counted for the source (which locks by itself as in
      :func:`decide_backup_attempt`) and, unless it is already locked, for the
      account. ``retry_after_ms`` is the lock this guess started, if any.
    """
    if source.locked_until_ms > now_ms:
        return SourcedAttempt(BackupAttempt(BackupAttemptStatus.LOCKED, account,
                                            source.locked_until_ms - now_ms), source)
    account_locked = account.locked_until_ms > now_ms
    if account_locked and source != BackupAttemptState():
        return SourcedAttempt(BackupAttempt(BackupAttemptStatus.LOCKED, account,
                                            account.locked_until_ms - now_ms), source)
    if matches:
        return SourcedAttempt(BackupAttempt(BackupAttemptStatus.OK, BackupAttemptState()),
                              BackupAttemptState())
    by_source = decide_backup_attempt(source, False, now_ms, policy)
    by_account = (BackupAttempt(BackupAttemptStatus.WRONG, account) if account_locked
                  else decide_backup_attempt(account, False, now_ms, policy))
    retry = max(by_source.retry_after_ms, by_account.retry_after_ms)
    return SourcedAttempt(BackupAttempt(BackupAttemptStatus.WRONG, by_account.state, retry),
                          by_source.state)


def verifier_matches(stored_hash: bytes, candidate_hash: bytes) -> bool:
    """Constant-time comparison of two verifier hashes."""
    return constant_time_equal(stored_hash, candidate_hash)


class RelayStorage(ABC):
    """The storage contract. All methods are coroutines; all are safe to call
    concurrently from several tasks (and, for PostgreSQL, several processes)."""

    # ---------------------------------------------------------------- lifecycle
    @abstractmethod
    async def open(self) -> None:
        """Connect and apply pending schema migrations (versioned, in order).

        Raises:
            StorageUnavailable: the database cannot be reached.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    @abstractmethod
    async def schema_version(self) -> int:
        """The applied schema version (the number of the last migration)."""

    @abstractmethod
    async def ping(self) -> None:
        """Cheap round trip for readiness checks. Raises StorageUnavailable."""

    async def not_ready(self) -> list[str]:
        """Why the database cannot serve writes now, for ``/readyz`` (empty: ready).

        Raises:
            StorageUnavailable: the round trip itself failed.
        """
        await self.ping()
        return []

    # ----------------------------------------------------------------- registry
    @abstractmethod
    async def create_account(self, account_id: bytes, genesis: bytes, now_ms: int) -> bool:
        """Store a verified genesis entry as registry seq 0.

        Returns True if created, False if the identical genesis is already stored.
        Raises:
            StorageConflict: the account exists with another genesis.
        """

    @abstractmethod
    async def registry_entries(self, account_id: bytes, since: int = 0) -> list[bytes]:
        """Entries with seq >= ``since`` in seq order ([] for an unknown account)."""

    @abstractmethod
    async def accounts_by_prefix(self, prefix: bytes, limit: int = 2) -> list[bytes]:
        """Ids (ascending, at most ``limit``) of the accounts whose id starts with
        ``prefix`` (a fingerprint's 20 bytes): a range scan of the registry."""

    @abstractmethod
    async def registry_entry_stored_ms(self, account_id: bytes, seq: int) -> int | None:
        """When the relay stored the entry at ``seq`` (its own clock), or None."""

    @abstractmethod
    async def append_registry_entry(
            self, account_id: bytes, seq: int, entry: bytes, now_ms: int, *,
            revoked_cutoffs: Mapping[bytes, Mapping[bytes, int]] | None = None) -> bool:
        """Store a verified entry at ``seq`` (must be the next seq).

        Args:
            revoked_cutoffs: for an entry that revokes devices, per revoked device
                id its cutoff (space id -> last seq kept; a space not named keeps
                none). Checked against the stored ops in the storing transaction.

        Returns True if stored, False if the identical entry is already at ``seq``
        (the cutoffs are not checked again then).
        Raises:
            StorageConflict: ``seq`` is taken by another entry, ``seq`` is not
                the next one (the caller re-reads and re-verifies), or a revoked
                device has an op beyond its cutoff (the revoker pulls and
                revokes again with the cutoff it then sees).
        """

    # ------------------------------------------------------------------- spaces
    @abstractmethod
    async def create_space(self, space_id: bytes, account_id: bytes, now_ms: int) -> bool:
        """Create an empty space owned by ``account_id``.

        Returns True if created, False if it already exists for this account.
        Raises:
            StorageConflict: the space id belongs to another account.
        """

    @abstractmethod
    async def get_space(self, space_id: bytes) -> SpaceRecord | None:
        """The space, or None."""

    @abstractmethod
    async def list_spaces(self, account_id: bytes) -> list[SpaceRecord]:
        """The account's spaces, oldest first."""

    # ------------------------------------------------------------- key packages
    @abstractmethod
    async def put_key_package(self, space_id: bytes, epoch: int, package: bytes,
                              now_ms: int) -> bool:
        """Store the verified package of ``epoch`` (must be current epoch + 1).

        Updates the space's ``epoch`` and ``epoch_started_ms`` in the same
        transaction. Returns False if the identical package is already stored.
        Raises:
            StorageConflict: the epoch is taken by another package, or is not next.
        """

    @abstractmethod
    async def key_packages(self, space_id: bytes, since_epoch: int = 0) -> list[bytes]:
        """Packages with epoch >= ``since_epoch``, in epoch order."""

    # ---------------------------------------------------------------------- ops
    @abstractmethod
    async def chain_snapshot(self, space_id: bytes,
                             wanted: Sequence[tuple[bytes, int]]) -> ChainSnapshot:
        """Heads of the authors in ``wanted`` and the op ids stored at those seqs."""

    @abstractmethod
    async def append_ops(self, space_id: bytes, ops: Sequence[OpToAppend], now_ms: int, *,
                         registry_seq: int | None = None,
                         membership_head: bytes | None = None) -> list[AppendOutcome]:
        """Append a batch in one transaction (see the module invariants).

        ``registry_seq`` is the last registry seq of the space's account that the
        batch was verified against: if the stored registry has moved on (e.g. a
        revocation was stored meanwhile), raise StorageConflict so the caller
        verifies again. None skips the check (tools and tests only).

        ``membership_head`` is the hash of the newest membership entry the batch
        was judged against (32 zero bytes: none): if another entry was appended
        meanwhile (a removal, say), raise StorageConflict, so that no op is
        appended after an entry that would have refused it. None skips it.

        Ops are processed in order; an op whose (author, seq) is already stored
        (possibly by an earlier op of the same batch) is DUPLICATE or FORK and
        takes no offset. An op whose seq is not its author's head + 1 at commit
        time (a concurrent writer got there first) is reported as FORK if that
        seq holds another op, else it must not be appended: raise StorageConflict
        for the whole batch so the caller re-verifies (nothing is stored).

        Raises:
            NotFoundError: unknown space.
            StorageConflict: see above (also for a moved registry); nothing was stored.
            StorageUnavailable: nothing was stored.
        """

    @abstractmethod
    async def op_by_author_seq(self, space_id: bytes, author: bytes,
                               seq: int) -> StoredOp | None:
        """The stored op of ``author`` at ``seq`` (for fork evidence), or None."""

    @abstractmethod
    async def read_ops(self, space_id: bytes, after: int, limit: int) -> list[StoredOp]:
        """Leaves with offset > ``after`` (use -1 for all), ascending, at most
        ``limit``: ops and membership entries alike, each with its ``kind``."""

    @abstractmethod
    async def leaf_hashes(self, space_id: bytes, start: int, end: int) -> list[bytes]:
        """Leaf hashes of offsets [start, end)."""

    @abstractmethod
    async def merkle_nodes(self, space_id: bytes,
                           keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored perfect-subtree nodes ``(level, index) -> hash`` (level 0 = leaves)."""

    @abstractmethod
    async def record_fork(self, evidence: ForkEvidence) -> None:
        """Keep both signed ops as evidence (idempotent for the same pair)."""

    @abstractmethod
    async def fork_evidence(self, space_id: bytes) -> list[ForkEvidence]:
        """All evidence recorded for the space, oldest first."""

    @abstractmethod
    async def prune_ops(self, space_id: bytes, before_offset: int) -> int:
        """Drop the envelopes of the ops at offsets < ``before_offset``; keep leaf
        hashes and nodes. Membership entries are never dropped: a client needs
        every one of them to fold the space's membership.

        Returns the number of envelopes dropped.
        """

    @abstractmethod
    async def set_ack(self, space_id: bytes, device_id: bytes, offset: int,
                      now_ms: int) -> int:
        """Record that a device has applied every op up to ``offset``.

        Acknowledgements only move forward: the stored value becomes
        ``max(stored, offset)``, which is returned. Raises NotFoundError for an
        unknown space and UsageError for an offset beyond the log.
        """

    @abstractmethod
    async def acks(self, space_id: bytes) -> dict[bytes, int]:
        """Every device's acknowledged offset in the space."""

    # --------------------------------------------------------------- membership
    # A shared space's signed membership entries (docs/protocol.md section 21)
    # are leaves of the space's own log (LeafKind.MEMBERSHIP). Storage orders
    # and keeps them; the caller verifies and folds them.
    @abstractmethod
    async def append_membership(self, space_id: bytes, entry: bytes, entry_hash: bytes,
                                now_ms: int, *, expected_head: bytes,
                                members: Mapping[bytes, str]) -> AppendOutcome:
        """Append a verified membership entry as the next leaf of the space's log.

        In ONE transaction, under the same lock as :meth:`append_ops` (so ops and
        entries appended concurrently get consecutive offsets in commit order):

        1. an entry with this hash already stored in the space: return
           ``AppendOutcome(DUPLICATE, its offset, entry_hash)``, change nothing;
        2. the hash of the space's newest membership entry (32 zero bytes if it
           has none) is not ``expected_head``: raise StorageConflict (another
           entry was appended meanwhile: the caller folds again and retries);
        3. append the leaf at the next offset (its row as in :class:`LeafKind`;
           Merkle nodes, root, frontier and size updated as for an op) and
           replace the space's stored member set with ``members``;
        4. return ``AppendOutcome(ACCEPTED, offset, entry_hash)``.

        Args:
            entry: the entry's bytes (the leaf's envelope).
            entry_hash: :func:`sddsf.protocol.membership.entry_hash` of ``entry``.
            expected_head: the newest entry's hash the caller folded up to.
            members: the member set after this entry, account id -> role
                (``reader``, ``writer`` or ``admin``).

        Raises:
            NotFoundError: unknown space.
            StorageConflict: see 2 (nothing was stored).
            UsageError: ``entry_hash`` is not the entry's hash, or a malformed
                argument (a role not listed above).
            StorageUnavailable: nothing was stored.
        """

    @abstractmethod
    async def membership_entries(self, space_id: bytes) -> list[tuple[int, bytes]]:
        """``(offset, entry bytes)`` of every membership entry of the space, by offset.

        Raises:
            NotFoundError: unknown space.
        """

    @abstractmethod
    async def space_members(self, space_id: bytes) -> dict[bytes, str]:
        """The space's stored member set, account id -> role (``{}`` for a space
        that was never shared): what the last :meth:`append_membership` wrote.

        Raises:
            NotFoundError: unknown space.
        """

    @abstractmethod
    async def shared_spaces(self, account_id: bytes) -> list[SpaceRecord]:
        """The spaces whose stored member set lists ``account_id`` (whoever owns
        them, the account itself included), oldest first."""

    @abstractmethod
    async def first_sync_reads(self, space_id: bytes, docs: Sequence[bytes],
                               limit: int) -> FirstSyncReads:
        """What a first-sync bundle (protocol 17.9) holds of the space: its key
        packages, the snapshots of ``docs`` with the attestations stored under
        those doc ids, and the log after the oldest of those snapshots (at most
        ``limit`` leaves), with the space read after the leaves. These are the
        values :meth:`key_packages`, :meth:`get_snapshot`,
        :meth:`snapshot_attestations`, :meth:`read_ops` and :meth:`get_space`
        give; a backend answers them in as few round trips as it can (one
        transaction on SQLite), since every new device asks.

        Raises:
            NotFoundError: unknown space.
            UsageError: a negative limit.
        """

    @abstractmethod
    async def readable_spaces(self, account_id: bytes) -> list[SpaceRecord]:
        """The spaces ``account_id`` may read, ordered by ``(created_ms, space_id)``:
        those whose stored member set lists it (whoever owns them), and those it
        owns that were never shared. A space it owns whose member set no longer
        lists it is not included.

        One read (one consistent view, one call), since every authenticated
        listing and every first-sync bundle asks it.
        """

    # ---------------------------------------------------------------- snapshots
    @abstractmethod
    async def put_snapshot(self, space_id: bytes, doc_id: bytes, covers_offset: int,
                           blob: bytes, now_ms: int) -> None:
        """Store (replace) the signed encrypted snapshot of a doc covering offsets
        <= ``covers_offset``. An older snapshot (lower offset) never replaces a newer one."""

    @abstractmethod
    async def get_snapshot(self, space_id: bytes, doc_id: bytes) -> tuple[int, bytes] | None:
        """``(covers_offset, blob)`` of the doc's snapshot, or None."""

    @abstractmethod
    async def put_snapshot_chunk(self, space_id: bytes, chunk_id: bytes, blob: bytes,
                                 now_ms: int) -> None:
        """Store one chunk of a chunked snapshot under its content id (the caller
        checked ``chunk_id`` is the blob's). Storing it again is a no-op.
        Raises NotFoundError for an unknown space."""

    @abstractmethod
    async def get_snapshot_chunk(self, space_id: bytes, chunk_id: bytes) -> bytes | None:
        """A stored chunk, or None."""

    @abstractmethod
    async def snapshot_chunks(self, space_id: bytes) -> dict[bytes, int]:
        """Every stored chunk id of the space and when it was stored (ms)."""

    @abstractmethod
    async def delete_snapshot_chunks(self, space_id: bytes, chunk_ids: Sequence[bytes]) -> int:
        """Drop chunks (absent ids are ignored); returns how many were dropped."""

    @abstractmethod
    async def put_snapshot_attestation(self, space_id: bytes, doc_id: bytes,
                                       snapshot_id: bytes, attester: bytes, verdict: str,
                                       attestation: bytes, now_ms: int) -> None:
        """Store a device's verdict (``match``/``mismatch``) on the doc's snapshot
        ``snapshot_id``, replacing that device's earlier one on it.
        Raises NotFoundError for an unknown space."""

    @abstractmethod
    async def delete_snapshot_attestations(self, space_id: bytes, doc_id: bytes,
                                           keep: Sequence[bytes]) -> int:
        """Drop the doc's attestations of every snapshot id not in ``keep`` (ones
        about replaced snapshots); returns how many were dropped."""

    @abstractmethod
    async def snapshot_attestations(self, space_id: bytes, doc_id: bytes,
                                    snapshot_id: bytes) -> list[tuple[bytes, str, bytes]]:
        """``(attester, verdict, attestation)`` of every stored verdict on the
        snapshot, ordered by attester."""

    # ---------------------------------------------------------- pairing mailbox
    # Rules in ``_pairing.py`` (docs/protocol.md 17.4.7); tokens are stored as
    # their BLAKE2b-256 only.
    @abstractmethod
    async def create_channel(self, channel_id: bytes, token_hash: bytes, now_ms: int,
                             expires_ms: int, reserve_until_ms: int) -> int:
        """Open a pairing channel whose initiator slot is ``token_hash``; returns its
        number (nameplate): the smallest positive one not reserved by another
        channel. A number stays reserved until ``reserve_until_ms``, so a late
        claim of an old code finds the old channel (expired or burnt), not a new one.

        Raises:
            StorageConflict: the id exists.
            UnavailableError: every number up to ``NAMEPLATE_MAX`` is reserved.
        """

    @abstractmethod
    async def claim_channel(self, nameplate: int, token_hash: bytes,
                            now_ms: int) -> PairingChannel:
        """Bind the joiner slot of the channel numbered ``nameplate`` to ``token_hash``
        (again: the same answer). A claim with another token burns the channel
        (reason ``contested``) and is refused.

        Raises:
            NotFoundError: no channel reserves this number.
            StorageConflict: burnt, expired, or claimed by another token.
            UsageError: the initiator's own token.
        """

    @abstractmethod
    async def post_channel_message(self, channel_id: bytes, token_hash: bytes, index: int,
                                   body: bytes, now_ms: int, max_messages: int
                                   ) -> PairingMessage:
        """Post message ``index`` in the slot of ``token_hash``; the same message at
        the same index again is answered as stored. A post out of order, in the
        other side's turn, changing a posted message or beyond ``max_messages``
        burns the channel (reason ``violation``) and is refused.

        Raises:
            StorageConflict: unknown, expired, burnt channel, or a refused post.
            AuthenticationError: the token holds no slot.
        """

    @abstractmethod
    async def channel_messages(self, channel_id: bytes, token_hash: bytes, after: int,
                               now_ms: int) -> list[PairingMessage]:
        """Messages with index > ``after``, for a participant.

        Raises:
            StorageConflict: unknown, expired or burnt (saying why).
            AuthenticationError: the token holds no slot.
        """

    @abstractmethod
    async def burn_channel(self, channel_id: bytes, token_hash: bytes, reason: str) -> None:
        """Make the channel unusable and delete its messages, recording the first
        ``reason`` and the burner's side; a no-op for an unknown or burnt channel.

        Raises:
            AuthenticationError: the token holds no slot.
            UsageError: a reason not in ``CLIENT_REASONS``.
        """

    # ---------------------------------------------------------- passphrase backups
    @abstractmethod
    async def put_backup(self, backup: StoredBackup) -> None:
        """Store (or replace) the account's backup.

        Replacing keeps the attempt state: failures and a running lockout survive
        a new upload.
        """

    @abstractmethod
    async def backup_accounts(self, prefix: bytes, limit: int = 2) -> list[bytes]:
        """Ids (ascending, at most ``limit``) of the accounts with a backup whose id
        starts with ``prefix`` (a fingerprint's 20 bytes)."""

    @abstractmethod
    async def get_backup(self, account_id: bytes) -> StoredBackup | None:
        """The account's backup, or None."""

    @abstractmethod
    async def delete_backup(self, account_id: bytes) -> bool:
        """Delete the backup and its attempt state; False if there was none."""

    @abstractmethod
    async def backup_attempt(self, account_id: bytes, verifier_hash: bytes, now_ms: int,
                             policy: BackupLockPolicy, *, source: bytes = b"") -> BackupAttempt:
        """One fetch attempt, atomically: read the attempt state, compare
        ``verifier_hash`` with the stored one in constant time, decide, store the
        new state and return the decision (with the blob when OK).

        Without ``source`` the account-wide state alone decides
        (:func:`decide_backup_attempt`). With ``source`` (a client address) the
        source's own state counts too (:func:`decide_sourced_attempt`); a source's
        state is kept until ``policy.max_lockout_ms`` after its last failure and
        lock, then forgotten (the source may try again).

        Raises:
            NotFoundError: the account has no backup.
        """


    # ------------------------------------------------------------- controller
    # Posture, signals, detector state, alerts and the per-account audit log
    # of the security controller (docs/controller.md).
    @abstractmethod
    async def put_posture(self, account_id: bytes, device_id: bytes, report: bytes,
                          ts_ms: int, now_ms: int) -> bool:
        """Store a verified posture report unless a report with a later or equal
        ``ts_ms`` is stored (an older report never replaces a newer one).

        Returns True if stored.
        """

    @abstractmethod
    async def remember_report(self, account_id: bytes, device_id: bytes, digest: bytes,
                              now_ms: int, keep_ms: int) -> bool:
        """Remember that the device's report with ``digest`` was accepted; True if it
        was new, False if it is a copy. Digests older than ``keep_ms`` (by
        ``now_ms``) are forgotten: a report that old is refused by its time."""

    @abstractmethod
    async def postures(self, account_id: bytes) -> dict[bytes, PostureRecord]:
        """The latest posture report of every device of the account."""

    @abstractmethod
    async def record_signal(self, account_id: bytes, device_id: bytes, kind: str,
                            ts_ms: int, count: int = 1) -> None:
        """Record ``count`` >= 1 events of ``kind`` (a short text) for a device."""

    @abstractmethod
    async def signals(self, account_id: bytes, device_id: bytes,
                      since_ms: int) -> list[SignalRow]:
        """The device's signals with ``ts_ms >= since_ms``, oldest first."""

    @abstractmethod
    async def prune_signals(self, before_ms: int) -> int:
        """Drop every signal older than ``before_ms``; returns how many."""

    @abstractmethod
    async def get_controller_state(self, account_id: bytes, device_id: bytes) -> bytes | None:
        """The opaque detector state of a device (``device_id`` empty: the account's)."""

    @abstractmethod
    async def put_controller_state(self, account_id: bytes, device_id: bytes, state: bytes,
                                   now_ms: int) -> None:
        """Store (replace) the opaque detector state."""

    @abstractmethod
    async def put_alert(self, alert: AlertRecord) -> bool:
        """Store a new alert; False (and nothing changes) if its id is already stored."""

    @abstractmethod
    async def alerts(self, account_id: bytes, *, include_acked: bool = False,
                     since_ms: int = 0) -> list[AlertRecord]:
        """The account's alerts created at or after ``since_ms``, oldest first;
        acknowledged ones only with ``include_acked``."""

    @abstractmethod
    async def ack_alert(self, account_id: bytes, alert_id: bytes, by: bytes,
                        now_ms: int) -> AlertRecord | None:
        """Acknowledge an alert of the account (the first acknowledgement stays).

        Returns the stored alert, or None when the account has no such alert.
        """

    @abstractmethod
    async def append_audit(self, account_id: bytes, entry: bytes, now_ms: int) -> int:
        """Append an entry to the account's audit log; returns its seq (leaf index).

        Seqs are 0, 1, 2, ... per account, gap-free and in commit order (a
        per-account counter row taken in the append transaction), like op offsets.
        """

    @abstractmethod
    async def audit_entries(self, account_id: bytes, start: int,
                            limit: int) -> list[tuple[int, bytes]]:
        """``(seq, entry)`` with seq >= ``start``, ascending, at most ``limit``."""

    @abstractmethod
    async def audit_leaf_hashes(self, account_id: bytes, end: int) -> list[bytes]:
        """RFC 9162 leaf hashes of the entries with seq < ``end``, in order."""

    @abstractmethod
    async def audit_size(self, account_id: bytes) -> int:
        """Number of entries in the account's audit log."""


def require_backend_url(url: str) -> str:
    """Validate a ``--db`` URL scheme: ``sqlite:///path`` or ``postgresql://...``.

    Raises:
        ConfigError: any other scheme.
    """
    if url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        return url
    raise ConfigError(f"unsupported database URL {url!r}: use sqlite:///PATH or "
                      "postgresql://USER@HOST/DB")
