"""The contract between a device's sync engine and whatever carries its ops.

A :class:`Transport` moves signed, encrypted envelopes and the relay's signed
answers between a device and a log; the engine verifies everything it gets
(tree heads, proofs, registries, key packages, snapshots) with
:mod:`sddsf.protocol`, so a transport is trusted for availability only. The
relay's HTTP + WebSocket client is one implementation
(:class:`~sddsf.client.transport.relay.RelayTransport`), the relay's own logic
run in-process another (:class:`~sddsf.testing.memory_transport.MemoryTransport`),
and a tampering wrapper for tests a third
(:class:`~sddsf.testing.tampering.TamperingTransport`). Every implementation
passes :mod:`sddsf.testing.transport_conformance`.

Contract (every method):

* **Errors** are :class:`~sddsf.errors.SddsfError` subclasses with a stable
  code, never a third-party exception: :class:`~sddsf.errors.UnavailableError`
  (``unavailable``) when the other side cannot be reached,
  :class:`~sddsf.errors.NotFoundError` (``not_found``) for an unknown space,
  snapshot or chunk, :class:`~sddsf.errors.RateLimitedError`, and the relay's
  refusals with their own codes. A transport translates once, at its edge.
* **Sessions** are opened on demand (the first call that needs one) or with
  :meth:`Transport.open_session`; concurrent openings for one transport share
  one handshake (single flight). A session the other side forgot is opened
  again once, transparently.
* **Idempotence**: pushing an envelope that is already in the log answers
  ``duplicate`` with its offset and an inclusion proof; every other write may be
  repeated with the same effect.
* **Order**: a space's log is append-only with offsets ``0, 1, 2, ...``;
  :meth:`Transport.pull` returns the entries after ``after`` in offset order,
  at most ``limit`` of them, and the tree head signed when they were read.
* **Untrusted results**: every byte string returned is unverified.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

__all__ = [
    "AckResult",
    "Attestations",
    "Notification",
    "OpNotice",
    "Proof",
    "PullPage",
    "PulledOp",
    "PushResult",
    "RelayLimits",
    "ResyncNotice",
    "SessionInfo",
    "SnapshotBlob",
    "SpaceInfo",
    "SubscribedNotice",
    "Transport",
    "UploadResult",
]


# ----------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class SessionInfo:
    """An open session: who signs the log (the relay key to pin) and until when."""

    relay_id: bytes
    expires_ms: int


@dataclass(frozen=True, slots=True)
class UploadResult:
    """One pushed op's acknowledgement (unverified: check the proof yourself).

    ``status`` is ``accepted`` or ``duplicate`` (then ``offset`` and ``proof``
    are set), or ``rejected`` (then ``code`` and ``message`` say why).
    """

    status: str
    offset: int | None
    op_id: bytes | None
    proof: list[bytes] | None
    code: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class PushResult:
    """The acknowledgements of one pushed batch, in order, and the signed tree
    head their proofs are relative to."""

    acks: tuple[UploadResult, ...]
    tree_head: bytes


@dataclass(frozen=True, slots=True)
class PulledOp:
    """One op from the log (``envelope`` None once pruned under a snapshot)."""

    offset: int
    op_id: bytes
    leaf_hash: bytes
    envelope: bytes | None


@dataclass(frozen=True, slots=True)
class PullPage:
    """Entries after a cursor, in offset order, and the signed tree head."""

    ops: tuple[PulledOp, ...]
    tree_head: bytes


@dataclass(frozen=True, slots=True)
class SpaceInfo:
    """A space of the account as the log holder reports it (unverified)."""

    space_id: bytes
    size: int
    root: bytes
    epoch: int


@dataclass(frozen=True, slots=True)
class Proof:
    """A Merkle proof (inclusion or consistency) and the signed head it ends at."""

    hashes: tuple[bytes, ...]
    tree_head: bytes


@dataclass(frozen=True, slots=True)
class SnapshotBlob:
    """A stored snapshot (or manifest) and the log offset it covers."""

    covers_offset: int
    blob: bytes


@dataclass(frozen=True, slots=True)
class Attestations:
    """The verdicts stored about a document's current snapshot (unverified)."""

    snapshot_id: bytes | None
    attestations: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class AckResult:
    """A stored acknowledgement and the offset below which envelopes are pruned."""

    acked: int
    pruned_before: int


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """What one request may carry (``GET /v1/limits``; the defaults of a relay
    that predates the endpoint)."""

    max_request_bytes: int = 1 << 20
    max_batch_ops: int = 1000
    max_page_ops: int = 1000
    max_op: int = 512 * 1024
    max_field_chars: int = 1_500_000  # base64 characters in one body field

    def request_fits(self, envelope_sizes: Sequence[int]) -> bool:
        """Whether an upload of envelopes of these sizes fits one request."""
        return (len(envelope_sizes) <= self.max_batch_ops
                and all(_b64_len(n) <= self.max_field_chars for n in envelope_sizes)
                and _upload_body_len(envelope_sizes) <= self.max_request_bytes)

    @property
    def max_envelope(self) -> int:
        """The largest op envelope this relay takes, alone in one request."""
        fit_request = (self.max_request_bytes - _upload_body_len([])) // 4 * 3 - 3
        fit_field = self.max_field_chars // 4 * 3
        return max(0, min(self.max_op, fit_request, fit_field))


def _b64_len(n: int) -> int:
    return (n + 2) // 3 * 4


def _upload_body_len(envelope_sizes: Sequence[int]) -> int:
    # json.dumps({"ops": ["...", "..."], "proofs": true}): 27 bytes of frame, then
    # per op its base64 in quotes and a ", " separator (bounded above).
    return 27 + sum(_b64_len(n) + 4 for n in envelope_sizes)


# ------------------------------------------------------------ notifications
@dataclass(frozen=True, slots=True)
class SubscribedNotice:
    """A subscription is live; the log had ``size`` entries when it started."""

    space_id: bytes
    size: int


@dataclass(frozen=True, slots=True)
class OpNotice:
    """An op was appended at ``offset`` (a hint: pull and verify it)."""

    space_id: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class ResyncNotice:
    """Notifications were dropped (a full queue): pull from the cursor."""

    space_id: bytes


Notification = SubscribedNotice | OpNotice | ResyncNotice


# ---------------------------------------------------------------- the ABC
class Transport(ABC):
    """Carries a device's ops and reads a log holder's signed state.

    See the module docstring for the contract shared by every method; each
    method's docstring adds what is particular to it.
    """

    @property
    @abstractmethod
    def relay_id(self) -> bytes | None:
        """The log signer's public key learnt at the last session opening (None
        before one). Compare it with the pinned key before trusting a session."""

    @abstractmethod
    async def open_session(self) -> SessionInfo:
        """Authenticate this device (challenge-response) unless a session is open.

        Concurrent calls share one handshake.

        Raises:
            AuthenticationError: the device could not prove its key.
            AuthorizationError: it is revoked, unknown, or denied.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    def forget_session(self) -> None:
        """Drop the session (the next call that needs one opens a new one)."""

    @abstractmethod
    async def limits(self) -> RelayLimits:
        """What one push may carry (asked once per transport)."""

    # ----------------------------------------------------------- registry
    @abstractmethod
    async def create_account(self, genesis: bytes) -> bytes:
        """Store an account's genesis entry; returns the account id (idempotent)."""

    @abstractmethod
    async def registry(self, account_id: bytes, since: int = 0) -> list[bytes]:
        """The account's registry entries from seq ``since`` (verify them)."""

    @abstractmethod
    async def append_registry(self, account_id: bytes, entry: bytes) -> int:
        """Append a signed registry entry; returns the next seq.

        Raises:
            RegistryError: ``registry_fork`` when another entry took that seq.
        """

    # ------------------------------------------------------------- spaces
    @abstractmethod
    async def spaces(self) -> list[SpaceInfo]:
        """The account's spaces."""

    @abstractmethod
    async def create_space(self, space_id: bytes, key_package: bytes) -> SpaceInfo:
        """Create a space with its epoch-0 key package (idempotent)."""

    @abstractmethod
    async def key_packages(self, space_id: bytes, since_epoch: int = 0) -> list[bytes]:
        """The space's key packages from ``since_epoch`` (verify them as a chain).

        Raises:
            NotFoundError: no such space for this account.
        """

    @abstractmethod
    async def put_key_package(self, space_id: bytes, key_package: bytes) -> SpaceInfo:
        """Open the next key epoch.

        Raises:
            ConflictError: another package holds that epoch.
        """

    # ---------------------------------------------------------------- log
    @abstractmethod
    async def push(self, space_id: bytes, envelopes: Sequence[bytes]) -> PushResult:
        """Append a batch of op envelopes; one acknowledgement per envelope, in
        order. An envelope already logged is ``duplicate`` (idempotent); a
        refused one is ``rejected`` with the rule's code. A batch larger than
        :meth:`limits` allows is refused as a whole (``too_large``)."""

    @abstractmethod
    async def pull(self, space_id: bytes, after: int = -1, limit: int = 500) -> PullPage:
        """At most ``limit`` entries with offsets greater than ``after``, in order,
        and the current signed tree head.

        Raises:
            NotFoundError: no such space for this account.
        """

    @abstractmethod
    async def tree_head(self, space_id: bytes) -> bytes:
        """The space's current signed tree head."""

    @abstractmethod
    async def inclusion_proof(self, space_id: bytes, index: int,
                              size: int | None = None) -> Proof:
        """The inclusion proof of entry ``index`` in the log of ``size`` entries
        (default: the current size)."""

    @abstractmethod
    async def consistency_proof(self, space_id: bytes, first: int,
                                second: int | None = None) -> Proof:
        """The consistency proof from size ``first`` to ``second`` (default: current)."""

    @abstractmethod
    async def acknowledge(self, space_id: bytes, offset: int) -> AckResult:
        """Record that this device applied every entry up to ``offset`` (lets the
        log holder prune under a corroborated snapshot)."""

    # ---------------------------------------------------------- snapshots
    @abstractmethod
    async def get_snapshot(self, space_id: bytes, doc_id: bytes) -> SnapshotBlob:
        """The document's stored snapshot.

        Raises:
            NotFoundError: there is none.
        """

    @abstractmethod
    async def put_snapshot(self, space_id: bytes, doc_id: bytes, covers_offset: int,
                           blob: bytes) -> int:
        """Store a signed encrypted snapshot (or chunked manifest); returns the
        stored cover offset."""

    @abstractmethod
    async def get_snapshot_chunk(self, space_id: bytes, chunk_id: bytes) -> bytes:
        """One chunk of a chunked snapshot (check it against its manifest).

        Raises:
            NotFoundError: no such chunk.
        """

    @abstractmethod
    async def put_snapshot_chunk(self, space_id: bytes, chunk_id: bytes, blob: bytes) -> None:
        """Store one chunk (upload every chunk before the manifest naming it)."""

    @abstractmethod
    async def attest_snapshot(self, space_id: bytes, doc_id: bytes, attestation: bytes) -> None:
        """Store this device's signed verdict on the document's current snapshot.

        Raises:
            ConflictError: the snapshot it names was replaced meanwhile.
        """

    @abstractmethod
    async def snapshot_attestations(self, space_id: bytes, doc_id: bytes) -> Attestations:
        """The verdicts stored about the document's current snapshot."""

    # --------------------------------------------------------------- live
    @abstractmethod
    def subscribe(self, space_ids: Sequence[bytes]) -> AsyncIterator[Notification]:
        """Live notifications for the spaces, until the caller stops iterating or
        the connection ends (then the iterator ends or raises
        :class:`~sddsf.errors.UnavailableError`). First one
        :class:`SubscribedNotice` per space, then :class:`OpNotice` per appended
        entry (hints only: pull and verify) and :class:`ResyncNotice` when some
        were dropped."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections; the transport is not used afterwards."""
