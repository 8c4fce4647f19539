"""What every part of the device engine shares: store-row codecs, the sync
report, settings, hooks and the observer interface.

Rows of the device store are encoded with :func:`sddsf.protocol.encoding.encode`;
rows this device wrote are authenticated by its storage key, so the ``local``
decoders are not bound by the wire's 1 MiB limit (a document may be far larger).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sddsf.errors import DecodeError, SddsfError
from sddsf.protocol import labels, merkle
from sddsf.protocol.encoding import DecodeLimits, decode
from sddsf.protocol.identity import ID_SIZE
from sddsf.protocol.labels import tagged_hash
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS
from sddsf.protocol.registry import RegistryState
from sddsf.protocol.rules import ChainHead
from sddsf.protocol.vv import VersionVector

__all__ = ["ACK_EVERY", "CHECK_EVERY", "COMPACT_MIN_BYTES", "COMPACT_ROWS", "DOC_PIECE", "HELD",
           "LOCAL_LIMITS", "LOCAL_ROWS", "MAX_BATCH", "SNAPSHOT_EVERY", "EngineHooks",
           "EngineObserver", "EngineSettings", "Progress", "SkippedOp", "SyncReport", "TaskLock",
           "as_dict",
           "as_int", "as_list", "as_local_dict", "as_local_list", "chain_head", "doc_id_for",
           "leaves_at", "notify", "now_ms", "store_kind", "u64"]

log = logging.getLogger("sddsf.client")

#: ``progress(space_id, entries verified or fetched so far, log size)``.
Progress = Callable[[bytes, int, int], None]
#: Decoder bounds for rows of the device's own (encrypted) store, which may hold
#: an edit or a document far larger than anything one network message carries.
LOCAL_ROWS = DecodeLimits(max_size=1 << 40, max_depth=16, max_items=1 << 20)
#: Local rows are sealed by this device's storage key (authenticated), so they
#: are decoded with this bound instead of the one for untrusted wire input.
LOCAL_LIMITS = DecodeLimits(max_size=1 << 31)
#: First byte of the key suffix of held edits (seq-keyed rows use 8-byte seqs < 2^63).
HELD = b"\xff"
#: Ops per push request and per pull page.
MAX_BATCH = 500
#: Write a space snapshot once the log grew this much since the last one.
SNAPSHOT_EVERY = 1000
#: Acknowledge progress to the relay (which lets it prune) every this many ops.
ACK_EVERY = 256
#: A document's stored state is kept in rows ("pieces") of this many bytes, so
#: no local row grows with the document (nor has to fit the wire's 1 MiB).
DOC_PIECE = 512 * 1024
#: Fold a document's appended updates into its stored pieces once there are
#: more than this many of them, or more bytes than max(COMPACT_MIN_BYTES, a
#: quarter of the stored state): amortised O(edit), not O(document) per sync.
COMPACT_ROWS = 256
COMPACT_MIN_BYTES = 1 << 20
#: Look for another device's new snapshot to check once the log grew this much.
CHECK_EVERY = 16


def now_ms() -> int:
    """Milliseconds since the epoch (the default clock)."""
    return time.time_ns() // 1_000_000


def u64(n: int) -> bytes:
    """An 8-byte big-endian store key suffix (offsets, seqs)."""
    return n.to_bytes(8, "big")


def doc_id_for(space_id: bytes, name: str) -> bytes:
    """Every device names a document the same way: a 16-byte hash of (space, name).

    Args:
        space_id: The space's 16-byte id.
        name: The document's name.

    Returns:
        The document id (16 bytes), the same on every device.

    Raises:
        Nothing of its own.
    """
    return tagged_hash(labels.DOC_ID, space_id, name)[:16]


def leaves_at(tree: merkle.MerkleTree, offset: int) -> bytes:
    """The leaf hash at ``offset`` (a perfect node of level 0)."""
    return tree.hash_range(offset, offset + 1)


@dataclass(frozen=True, slots=True)
class SkippedOp:
    """An op in the verified log that this device did not apply (see
    :attr:`SyncReport.skipped`): its leaf stays in the tree for the proofs."""

    offset: int
    author: bytes
    seq: int
    code: str
    message: str


@dataclass
class SyncReport:
    """What one sync (:meth:`sddsf.client.device.Device.sync`) did."""

    pushed: int = 0
    #: Other devices' ops learnt from peers that this sync uploaded (section 23.6).
    carried: int = 0
    pulled: int = 0
    applied: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (code, message) per op
    tree_size: dict[bytes, int] = field(default_factory=dict)
    rotated: int = 0  # spaces moved to a new key epoch (policy age or a late revocation)
    snapshots_loaded: int = 0
    snapshots_written: int = 0
    #: ``(code, message)`` of what this device found wrong with another device,
    #: e.g. ``snapshot_mismatch`` naming the author of a forged snapshot (18.7).
    alerts: list[tuple[str, str]] = field(default_factory=list)
    rederived: list[bytes] = field(default_factory=list)  # spaces rebuilt from the log
    attested: int = 0  # verdicts on other devices' snapshots sent to the relay
    enacted: int = 0  # approved proposals this device carried out (§9.8)
    read_only: bool = False  # the relay's controller refused pushes (policy_read_only)
    read_only_reason: str = ""  # the relay's message when it did (what to tell the user)
    #: Ops of a revoked device beyond its revocation cutoff: a relay must never
    #: store them (THREATS #14); if one did, they are reported here and not
    #: applied, and the rest of the space stays readable.
    skipped: list[SkippedOp] = field(default_factory=list)
    #: Errors raised by the application's document observers while updates were
    #: applied (the updates were applied and stored all the same).
    app_errors: list[SddsfError] = field(default_factory=list)
    #: Shared spaces of other accounts that this sync found this account can no
    #: longer reach (removed): kept here, read only, no longer synced.
    unreachable: list[bytes] = field(default_factory=list)
    #: Shared spaces where this account is a reader and has edits of its own:
    #: they are kept on this device, not sent (the relay would refuse them).
    not_writable: list[bytes] = field(default_factory=list)

@dataclass
class EngineSettings:
    """Tunables of one device's engine (the facade exposes them as attributes)."""

    #: Start new spaces from the relay's snapshot (False: replay every op).
    use_snapshots: bool = True
    #: A device that never pulled a log reads its first sync in one request
    #: when the relay offers it (protocol 17.9; False: one request per read).
    use_bootstrap: bool = True
    #: Log growth after which a sync writes a snapshot (0: never).
    snapshot_every: int = SNAPSHOT_EVERY
    #: Acknowledge progress every this many ops (0: never, so the relay keeps
    #: the whole history; e.g. an archive device).
    ack_every: int = ACK_EVERY
    #: The largest edit a flush seals (as a multi-part op when it does not fit
    #: one); a larger one is refused (at most the protocol's max_edit).
    max_edit: int = DEFAULT_PROTOCOL_LIMITS.max_edit
    #: Recompute other devices' snapshots from the log this device holds and
    #: attest the verdict (the relay prunes only under corroborated ones).
    check_snapshots: bool = True
    #: Look for a new snapshot at the first sync of a session, then once the
    #: log grew this much (each look costs a request; 0: at every sync).
    check_every: int = CHECK_EVERY


class EngineObserver(Protocol):
    """Told what a sync changed, after it is stored (the SDK's event source).

    Every method is called synchronously from the engine; an exception it
    raises is logged and never stops or undoes a sync.
    """

    def on_remote_update(self, space_id: bytes, doc: str, author: bytes,
                         updates: list[bytes]) -> None:
        """Another device's edit of ``doc`` was applied."""

    def on_registry_change(self, old: RegistryState, new: RegistryState) -> None:
        """New registry entries were verified (a device added, revoked, a policy):
        the registry moved from ``old`` to ``new`` (not told for a new device's
        first fetch of the whole chain)."""

    def on_rotation(self, space_id: bytes, epoch: int, creator: bytes) -> None:
        """Key epoch ``epoch`` of a space was opened: by this device (``creator``
        is its id) or, seen when its key packages were refreshed, by another
        device in a space this device already held keys of."""

    def on_alert(self, code: str, message: str) -> None:
        """This device found something wrong with another device (an alert)."""

    def on_membership(self, space_id: bytes, change: str, account: bytes, role: str | None,
                      by: bytes) -> None:
        """A membership entry of a shared space was verified and stored: ``change``
        (its type) about ``account``, ``role`` after it, signed by account ``by``."""


async def _nothing() -> None:
    return None


async def _nothing_after(_report: SyncReport) -> None:
    return None


def _always_active(_state: RegistryState) -> None:
    return None


def _no_max_age() -> int | None:
    return None


@dataclass
class EngineHooks:
    """What the account layer above the engine adds to a sync (the facade wires
    the controller and governance in here, so the engine imports neither)."""

    #: Before the spaces are synced (e.g. refresh the relay's encryption policy).
    before_spaces: Callable[[], Awaitable[None]] = _nothing
    #: After every space was synced (e.g. enact approved proposals, report deletions).
    after_sync: Callable[[SyncReport], Awaitable[None]] = _nothing_after
    #: Raises why this device may not sync when the registry shows it inactive.
    refuse_inactive: Callable[[RegistryState], None] = _always_active
    #: The relay's published maximum epoch age (seconds), clamped; None: none.
    max_epoch_age_s: Callable[[], int | None] = _no_max_age
    #: Told what changed (see :class:`EngineObserver`); None: nobody listens.
    observer: EngineObserver | None = None


def notify(observer: EngineObserver | None, call: Callable[[EngineObserver], object]) -> None:
    """Call an observer method; its failure is logged, never raised."""
    if observer is None:
        return
    try:
        call(observer)
    except Exception:  # the application's error: logged, syncing goes on
        log.exception("an engine observer raised")


def as_dict(raw: bytes) -> dict[str, Any]:
    value = decode(raw)
    if not isinstance(value, dict):
        raise DecodeError("a device store record is malformed (expected a map)")
    return {str(k): v for k, v in value.items()}


def as_list(raw: bytes) -> list[Any]:
    value = decode(raw)
    if not isinstance(value, list):
        raise DecodeError("a device store record is malformed (expected an array)")
    return value


def as_local_dict(raw: bytes) -> dict[str, Any]:
    # A row this device wrote (authenticated by the storage key): not bound by
    # the wire's 1 MiB limit, so a document state of any size decodes.
    value = decode(raw, limits=LOCAL_LIMITS)
    if not isinstance(value, dict):
        raise DecodeError("a device store record is malformed (expected a map)")
    return {str(k): v for k, v in value.items()}


def as_local_list(raw: bytes) -> list[Any]:
    value = decode(raw, limits=LOCAL_LIMITS)
    if not isinstance(value, list):
        raise DecodeError("a device store record is malformed (expected an array)")
    return value


def as_int(raw: bytes) -> int:
    value = decode(raw)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError("a device store record is malformed (expected an integer)")
    return value


def chain_head(raw: bytes) -> ChainHead:
    seq, op_id, deps = as_list(raw)
    return ChainHead(int(seq), bytes(op_id),
                     VersionVector.from_wire(decode(deps), what="deps", id_size=ID_SIZE,
                                             max_entries=1 << 16))


def store_kind(home: Path) -> str:
    """The storage key kind recorded in a home."""
    import json  # noqa: PLC0415

    return str(json.loads((home / "storage-key.json").read_text())["kind"])


class TaskLock:
    """One task at a time uses the engine across its awaits (a sync, the peers'
    work); the task that holds it may enter again (a sync's own steps).

    The home's lock cannot do this: it excludes other processes, and every task
    of this process shares it.
    """

    def __init__(self) -> None:
        self._lock: asyncio.Lock | None = None  # made on first use, in the running loop
        self._owner: asyncio.Task[Any] | None = None
        self._depth = 0

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is not None and task is self._owner:
            self._depth += 1
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        await self._lock.acquire()
        self._owner, self._depth = task, 1

    async def __aexit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._lock is not None:
            self._owner = None
            self._lock.release()
