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
* **Optional parts** have defaults, so a log holder without them still
  implements the contract: the first-sync bundle (:meth:`Transport.prefetch_first_sync`
  reads nothing) and presence records (:meth:`Transport.put_presence` and
  :meth:`Transport.presence` raise :class:`~sddsf.errors.UnavailableError`).

Size: the contract in one place: the ABC with each method's arguments, result
and errors written out, and the frozen result types it returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from sddsf.errors import UnavailableError

__all__ = [
    "UPLOAD_FRAME",
    "AckResult",
    "AlertNotice",
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
    "upload_len",
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
    """One op from the log (``envelope`` None once pruned under a snapshot, or
    when ``own``: the puller's own op, omitted because it asked ``omit_own``)."""

    offset: int
    op_id: bytes
    leaf_hash: bytes
    envelope: bytes | None
    own: bool = False


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
    #: The account whose space it is (None from a log holder that does not say).
    owner: bytes | None = None


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
        """Whether an upload of envelopes of these sizes fits one request.

        Args:
            envelope_sizes: The byte length of each envelope of the upload.

        Returns:
            True when the batch is within :attr:`max_batch_ops`, each envelope's
            base64 within :attr:`max_field_chars` and the JSON body within
            :attr:`max_request_bytes`.

        Raises:
            Nothing of its own.
        """
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


#: The bytes of an upload's JSON body besides its envelopes.
UPLOAD_FRAME = 27


def upload_len(envelope_size: int) -> int:
    """What one envelope adds to an upload's JSON body, at most.

    Args:
        envelope_size: the envelope's length in bytes.

    Returns:
        Its base64 in quotes and a separator, in bytes (an upload's body is
        at most :data:`UPLOAD_FRAME` plus this for each of its envelopes).

    Raises:
        Nothing of its own.
    """
    return _b64_len(envelope_size) + 4


def _upload_body_len(envelope_sizes: Sequence[int]) -> int:
    # json.dumps({"ops": ["...", "..."], "proofs": true}): 27 bytes of frame, then
    # per op its base64 in quotes and a ", " separator (bounded above).
    return UPLOAD_FRAME + sum(upload_len(n) for n in envelope_sizes)


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


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """The relay's security controller raised an alert about the account
    (unauthenticated by any device: shown to the person, never acted on)."""

    rule: str
    message: str
    severity: str | None = None
    device: bytes | None = None


Notification = SubscribedNotice | OpNotice | ResyncNotice | AlertNotice


# ---------------------------------------------------------------- the ABC
@dataclass(frozen=True, slots=True)
class MembershipAppended:
    """Answer to a membership append: where the entry sits, and who is a member after it
    (the relay's view: a client folds the entries itself)."""

    status: str
    offset: int
    members: dict[bytes, str]
    tree_head: bytes


@dataclass(frozen=True, slots=True)
class MembershipLog:
    """A space's membership entries (offset, bytes), the relay's member set, the owner."""

    entries: list[tuple[int, bytes]]
    members: dict[bytes, str]
    owner: bytes
    tree_head: bytes


class Transport(ABC):
    """Carries a device's ops and reads a log holder's signed state.

    See the module docstring for the contract shared by every method; each
    method's docstring adds what is particular to it. Every method that reaches
    the other side may raise :class:`~sddsf.errors.UnavailableError` (it cannot
    be reached) and :class:`~sddsf.errors.RateLimitedError` (``rate_limited``,
    with ``retry_after_s`` when the other side said how long to wait); one that
    needs a session may also raise the errors of :meth:`open_session`. The
    ``Raises`` sections name these once more only where they mean something
    particular.
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

        Returns:
            The open session: the log signer's key (:attr:`relay_id`) and when
            the session ends (Unix ms).

        Raises:
            AuthenticationError: the device could not prove its key
                (``unauthenticated``, ``replay``).
            AuthorizationError: it is revoked (``revoked``), unknown to the
                account's registry (``unknown_device``), or denied by the log
                holder's policy (``policy_denied``).
            UnavailableError: the other side is unreachable, or this transport
                has no device identity to authenticate with.
        """

    @abstractmethod
    def forget_session(self) -> None:
        """Drop the session (the next call that needs one opens a new one).

        Raises:
            Nothing of its own.
        """

    @abstractmethod
    async def limits(self) -> RelayLimits:
        """What one push may carry (asked once per transport).

        Returns:
            The log holder's request limits; the defaults of
            :class:`RelayLimits` when it does not publish them.

        Raises:
            DecodeError: the limits it sent are malformed.
            UnavailableError: the other side is unreachable.
        """

    async def prefetch_first_sync(self) -> bool:
        """Read, in one request, what a new device's first sync reads (the
        first-sync bundle, protocol 17.9), where the other side offers it; until
        :meth:`end_prefetch`, or the first write, the reads it holds are answered
        from it (the same bytes, as unverified as any answer).

        Returns:
            Whether a bundle was read (False: not offered, the default, or
            offered but not served after all).

        Raises:
            ProofError: ``tree_head_invalid`` when the bundle's signature does not
                verify under the session's relay key or it answers another
                request (nothing of it is used).
            DecodeError: the bundle is malformed.
        """
        return False

    def end_prefetch(self) -> None:  # noqa: B027 - optional: a transport without bundles
        """Forget a prefetched bundle (every later read asks the other side).

        Raises:
            Nothing of its own.
        """

    # ----------------------------------------------------------- registry
    @abstractmethod
    async def create_account(self, genesis: bytes) -> bytes:
        """Store an account's genesis entry (idempotent; needs no session).

        Args:
            genesis: The account's signed genesis registry entry (seq 0).

        Returns:
            The account id the entry names.

        Raises:
            VerificationError: the entry does not verify as a genesis entry
                (e.g. :class:`~sddsf.errors.RegistryError` ``registry_invalid``,
                :class:`~sddsf.errors.SignatureError`).
            ConflictError: the account already exists with another genesis entry.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def registry(self, account_id: bytes, since: int = 0) -> list[bytes]:
        """The account's registry entries from seq ``since`` (verify them).

        Args:
            account_id: The account whose registry to read.
            since: The first seq wanted (0: from the genesis entry).

        Returns:
            The signed entries from ``since`` in seq order (unverified; empty
            when there are none after the head).

        Raises:
            NotFoundError: no such account (asked from seq 0).
            AuthorizationError: this device may not read the account's registry.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def append_registry(self, account_id: bytes, entry: bytes) -> int:
        """Append a signed registry entry (self-authenticating, idempotent).

        Args:
            account_id: The account whose registry the entry extends.
            entry: The signed entry, at the registry's next seq.

        Returns:
            The registry's next seq after the entry.

        Raises:
            RegistryError: ``registry_fork`` when another entry took that seq;
                ``registry_invalid`` when the entry does not apply.
            VerificationError: the entry fails another check (a bad signature,
                ``clock_skew`` for an entry dated too far from now).
            ConflictError: a concurrent append took the seq, or a revocation's
                cutoff is behind the log (pull, then revoke again).
            NotFoundError: no such account.
            UnavailableError: the other side is unreachable.
        """

    # ------------------------------------------------------------- spaces
    @abstractmethod
    async def spaces(self) -> list[SpaceInfo]:
        """The account's spaces.

        Returns:
            Every space of this device's account (unverified).

        Raises:
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def create_space(self, space_id: bytes, key_package: bytes) -> SpaceInfo:
        """Create a space with its epoch-0 key package (idempotent).

        Args:
            space_id: The new space's id (16 random bytes).
            key_package: The space's signed epoch-0 key package.

        Returns:
            The space as stored.

        Raises:
            VerificationError: the key package does not verify against the
                account's registry.
            ConflictError: the space id belongs to another account.
            AuthorizationError: this device may not write (``policy_read_only``,
                ``revoked``).
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def membership(self, space_id: bytes) -> MembershipLog:
        """The space's membership entries with their log offsets (protocol.md 21.7).

        Args:
            space_id: The space.

        Returns:
            The entries in log order, the log holder's member set and the space's
            owner (all unverified: fold the entries, and check each against the
            log at its offset).

        Raises:
            NotFoundError: no such space for this account (or not a member).
        """

    @abstractmethod
    async def append_membership(self, space_id: bytes, entry: bytes) -> MembershipAppended:
        """Append a signed membership entry to the space's log (idempotent).

        Args:
            space_id: The space.
            entry: The signed entry (protocol.md 21.1).

        Returns:
            Where the entry sits (``accepted``, or ``duplicate`` at its old offset).

        Raises:
            VerificationError: the entry is refused (``not_authorized``,
                ``membership_invalid``, ``revoked``, ...); nothing was stored.
            NotFoundError: no such space for this account, or the added account
                has no registry on the log holder.
            ConflictError: other entries kept landing first; fold again and retry.
        """

    @abstractmethod
    async def key_packages(self, space_id: bytes, since_epoch: int = 0) -> list[bytes]:
        """The space's key packages from ``since_epoch`` (verify them as a chain).

        Args:
            space_id: The space.
            since_epoch: The first epoch wanted.

        Returns:
            The signed key packages in epoch order (unverified).

        Raises:
            NotFoundError: no such space for this account.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def put_key_package(self, space_id: bytes, key_package: bytes) -> SpaceInfo:
        """Open the next key epoch (idempotent for the same package).

        Args:
            space_id: The space.
            key_package: The signed package of the epoch after the current one.

        Returns:
            The space as stored afterwards (its ``epoch`` the new one).

        Raises:
            ConflictError: another package holds that epoch, or it is not the
                next epoch.
            VerificationError: the package does not verify against the
                registry and the previous package.
            NotFoundError: no such space for this account.
            AuthorizationError: this device may not write (``policy_read_only``,
                ``revoked``).
            UnavailableError: the other side is unreachable.
        """

    # ---------------------------------------------------------------- log
    @abstractmethod
    async def push(self, space_id: bytes, envelopes: Sequence[bytes]) -> PushResult:
        """Append a batch of op envelopes; one acknowledgement per envelope, in order.

        An envelope already logged is ``duplicate`` (idempotent); a refused one
        is ``rejected`` with the rule's code (a per-op refusal is an
        acknowledgement, not an exception).

        Args:
            space_id: The space whose log to append to.
            envelopes: Signed, encrypted op envelopes, each within
                :attr:`RelayLimits.max_envelope`.

        Returns:
            The acknowledgements, in the order of ``envelopes``, and the signed
            tree head their inclusion proofs are relative to (unverified).

        Raises:
            DecodeError: ``too_large`` when the batch is larger than
                :meth:`limits` allows (refused as a whole).
            AuthorizationError: this device may not write (``policy_read_only``,
                ``revoked``).
            NotFoundError: no such space for this account.
            RateLimitedError: this device pushes faster than it may.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def pull(self, space_id: bytes, after: int = -1, limit: int = 500, *,
                   omit_own: bool = False) -> PullPage:
        """At most ``limit`` entries with offsets greater than ``after``, in order,
        and the current signed tree head.

        Args:
            space_id: The space whose log to read.
            after: The cursor: the offset of the last entry already held (-1:
                from the start).
            limit: The most entries wanted (the log holder may send fewer).
            omit_own: The log holder may send this device's own ops without
                their envelope (``PulledOp.own``); it may also ignore the wish.
                With False every entry that is not pruned carries its envelope.

        Returns:
            The page (empty at the end of the log) and the signed tree head
            (unverified).

        Raises:
            NotFoundError: no such space for this account.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def tree_head(self, space_id: bytes) -> bytes:
        """The space's current signed tree head.

        Args:
            space_id: The space.

        Returns:
            The encoded signed tree head (unverified).

        Raises:
            NotFoundError: no such space for this account.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def inclusion_proof(self, space_id: bytes, index: int,
                              size: int | None = None) -> Proof:
        """The inclusion proof of entry ``index`` in the log of ``size`` entries.

        Args:
            space_id: The space.
            index: The entry's offset.
            size: The log size the proof is relative to (default: the current size).

        Returns:
            The proof's hashes and the signed tree head of ``size`` (unverified).

        Raises:
            NotFoundError: no such space, or ``index`` is not below ``size``.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def consistency_proof(self, space_id: bytes, first: int,
                                second: int | None = None) -> Proof:
        """The consistency proof from size ``first`` to ``second``.

        Args:
            space_id: The space.
            first: The older log size (at least 1).
            second: The newer log size (default: the current size).

        Returns:
            The proof's hashes and the signed tree head of ``second`` (unverified).

        Raises:
            NotFoundError: no such space, or not ``1 <= first <= second <= size``.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def acknowledge(self, space_id: bytes, offset: int) -> AckResult:
        """Record that this device applied every entry up to ``offset`` (lets the
        log holder prune under a corroborated snapshot).

        Args:
            space_id: The space.
            offset: The last offset this device applied.

        Returns:
            The stored acknowledgement and the offset below which envelopes are
            now pruned.

        Raises:
            NotFoundError: no such space for this account.
            UnavailableError: the other side is unreachable.
        """

    # ---------------------------------------------------------- snapshots
    @abstractmethod
    async def get_snapshot(self, space_id: bytes, doc_id: bytes) -> SnapshotBlob:
        """The document's stored snapshot.

        Args:
            space_id: The space.
            doc_id: The document (the space snapshot's reserved id for the
                whole space).

        Returns:
            The stored blob (unverified) and the log offset it covers.

        Raises:
            NotFoundError: there is none (or no such space).
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def put_snapshot(self, space_id: bytes, doc_id: bytes, covers_offset: int,
                           blob: bytes) -> int:
        """Store a signed encrypted snapshot (or chunked manifest).

        Args:
            space_id: The space.
            doc_id: The document the snapshot is of.
            covers_offset: The last log offset the snapshot includes.
            blob: The signed, encrypted snapshot or manifest.

        Returns:
            The stored cover offset.

        Raises:
            DecodeError: ``covers_offset`` is beyond the log, or the blob is
                malformed.
            AuthorizationError: the doc id is reserved, the snapshot is not
                signed by this device, or this device may not write.
            ConflictError: a space snapshot's root is not the log's root at its size.
            ContextError: the snapshot belongs to another space.
            NotFoundError: no such space, or a chunk the manifest names is not
                uploaded yet.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def get_snapshot_chunk(self, space_id: bytes, chunk_id: bytes) -> bytes:
        """One chunk of a chunked snapshot (check it against its manifest).

        Args:
            space_id: The space.
            chunk_id: The chunk's id (the hash of its bytes).

        Returns:
            The chunk's bytes (unverified).

        Raises:
            NotFoundError: no such chunk.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def put_snapshot_chunk(self, space_id: bytes, chunk_id: bytes, blob: bytes) -> None:
        """Store one chunk (upload every chunk before the manifest naming it).

        Args:
            space_id: The space.
            chunk_id: The hash of ``blob``.
            blob: The encrypted chunk.

        Raises:
            DecodeError: the chunk is too large, ``chunk_id`` is not its hash, or
                the space holds as many unclaimed chunks as it may.
            AuthorizationError: this device may not write.
            NotFoundError: no such space for this account.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def attest_snapshot(self, space_id: bytes, doc_id: bytes, attestation: bytes) -> None:
        """Store this device's signed verdict on the document's current snapshot.

        Args:
            space_id: The space.
            doc_id: The document (attestations are about the whole-space snapshot).
            attestation: This device's signed verdict.

        Raises:
            ConflictError: the snapshot it names was replaced meanwhile.
            AuthorizationError: the attestation is not this device's own, or
                this device may not write.
            ContextError: the attestation is about another document.
            NotFoundError: no such space, or ``doc_id`` is not the whole-space
                snapshot's.
            UnavailableError: the other side is unreachable.
        """

    @abstractmethod
    async def snapshot_attestations(self, space_id: bytes, doc_id: bytes) -> Attestations:
        """The verdicts stored about the document's current snapshot.

        Args:
            space_id: The space.
            doc_id: The document (the whole-space snapshot's id).

        Returns:
            The current snapshot's id (None when there is none) and the signed
            verdicts about it (unverified).

        Raises:
            NotFoundError: no such space, or ``doc_id`` is not the whole-space
                snapshot's.
            UnavailableError: the other side is unreachable.
        """

    # ----------------------------------------------------------- presence
    async def put_presence(self, space_id: bytes, record: bytes) -> None:
        """Publish this device's presence record in the space (protocol.md 23.5),
        replacing its previous one, so the space's other devices can reach it
        peer to peer. Not every log holder keeps presence: the default answers
        that this one does not.

        Args:
            space_id: The space.
            record: This device's signed, encrypted presence record for the
                space (:func:`~sddsf.protocol.presence.seal_presence`).

        Raises:
            UnavailableError: this log holder publishes no presence (the
                default), or it cannot be reached.
            DecodeError: the record is malformed or too large, or the space
                already has as many devices present as the log holder keeps
                (``too_large``).
            ClockSkewError: the record has expired (``presence_expired``) or
                expires beyond the longest lifetime (``clock_skew``).
            VerificationError: the record is not this device's own
                (``not_authorized``), its signature does not verify, or it is of
                another space (``wrong_context``).
            NotFoundError: no such space for this account.
        """
        raise UnavailableError(f"this log holder ({type(self).__name__}) publishes no "
                               "presence records")

    async def presence(self, space_id: bytes) -> list[bytes]:
        """The live presence records of the space's devices (this device's own
        included).

        Args:
            space_id: The space.

        Returns:
            The records (unverified: decode, verify and open each with
            :mod:`sddsf.protocol.presence`, and ignore those that fail).

        Raises:
            UnavailableError: this log holder publishes no presence (the
                default), or it cannot be reached.
            NotFoundError: no such space for this account.
        """
        raise UnavailableError(f"this log holder ({type(self).__name__}) publishes no "
                               "presence records")

    # --------------------------------------------------------------- live
    @abstractmethod
    def subscribe(self, space_ids: Sequence[bytes]) -> AsyncIterator[Notification]:
        """Live notifications for the spaces, until the caller stops iterating or
        the connection ends.

        Args:
            space_ids: The spaces to follow.

        Returns:
            An async iterator of notifications: first one
            :class:`SubscribedNotice` per space, then an :class:`OpNotice` per
            appended entry (hints only: pull and verify), a
            :class:`ResyncNotice` when some were dropped, and an
            :class:`AlertNotice` per alert of the log holder's controller
            (where it has one). It ends, or raises, when the connection ends.

        Raises:
            UnavailableError: (while iterating) the connection could not be
                opened, or it ended abnormally (as when the other side closes
                the channel of a device it revoked or denied).
            NotFoundError: (while iterating) a space is not this account's.
            AuthorizationError: (while iterating) the device may not read
                (revoked, denied), where the implementation can tell so.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections; the transport is not used afterwards.

        Raises:
            Nothing of its own.
        """
