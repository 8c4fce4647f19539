"""The malicious-relay attacks as a :class:`~sddsf.client.transport.base.Transport` wrapper.

:class:`TamperingTransport` wraps any transport (the relay over HTTP, the
in-process relay, ...) and lies to the device that uses it exactly as
:class:`~sddsf.testing.malicious_relay.MaliciousRelay` does at the HTTP layer:
with an :class:`~sddsf.testing.malicious_relay.Attack` set, each pull is cut
from the attack's view of the whole genuine log (read through the inner
transport with this device's own session); with a
:class:`~sddsf.testing.malicious_relay.KeyAttack` set, key packages are hidden,
substituted, or uploads refused. So one scripted attack runs against every
transport. With no attack set it is honest: every call passes through.

Attacks that re-sign tree heads need the relay's signing key (``relay_key``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from sddsf.client.transport.base import (
    AckResult,
    Attestations,
    MembershipAppended,
    MembershipLog,
    Notification,
    Proof,
    PulledOp,
    PullPage,
    PushResult,
    RelayLimits,
    SessionInfo,
    SnapshotBlob,
    SpaceInfo,
    Transport,
)
from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import ConflictError
from sddsf.protocol.treehead import decode_tree_head
from sddsf.testing.malicious_relay import Attack, AttackTools, KeyAttack, LogEntry

__all__ = ["TamperingTransport"]

_PAGE = 1000


class TamperingTransport(Transport):
    """A transport that lies to its device when told to (see the module docstring).

    Args:
        inner: the honest transport underneath (owned: closed with this one).
        relay_key: the relay's signing key, for attacks that re-sign heads.

    Attributes:
        served: pulls answered by an attack. key_served: key answers changed.
    """

    def __init__(self, inner: Transport, *, relay_key: Ed25519SigningKey | None = None) -> None:
        self.inner = inner
        self.relay_key = relay_key
        self.attack: Attack | None = None
        self.key_attack: KeyAttack | None = None
        self.spaces_attacked: frozenset[bytes] | None = None
        self.served = 0
        self.key_served = 0
        self._recorded: dict[bytes, dict[int, bytes]] = {}

    # ------------------------------------------------------------ control
    def set_attack(self, attack: Attack, *, spaces: Sequence[bytes] | None = None) -> None:
        """Lie about the logs of ``spaces`` (every space if None) from the next pull."""
        self.attack = attack
        self.spaces_attacked = None if spaces is None else frozenset(spaces)

    def set_key_attack(self, attack: KeyAttack) -> None:
        """Lie about key packages from the next request."""
        self.key_attack = attack

    def honest(self) -> None:
        """Stop lying."""
        self.attack = None
        self.key_attack = None
        self.spaces_attacked = None

    def _attacks(self, space_id: bytes) -> bool:
        return self.attack is not None and (self.spaces_attacked is None
                                            or space_id in self.spaces_attacked)

    # ---------------------------------------------------------- the log
    async def pull(self, space_id: bytes, after: int = -1, limit: int = 500, *,
                   omit_own: bool = False) -> PullPage:
        """The inner pull, or a page of the attack's view of the whole log
        (an attack serves every envelope: it never omits)."""
        if not self._attacks(space_id):
            page = await self.inner.pull(space_id, after, limit, omit_own=omit_own)
            self._record(space_id, page.tree_head)
            return page
        assert self.attack is not None  # noqa: S101 - _attacks checked it
        log, head_raw = await self._whole_log(space_id)
        tools = AttackTools(space_id, decode_tree_head(head_raw), self.relay_key,
                            dict(self._recorded.get(space_id, {})))
        served = self.attack.serve(log, tools)
        self.served += 1
        entries = self.attack.page(served, after, limit)
        return PullPage(tuple(PulledOp(e.offset, e.op_id, e.leaf_hash, e.envelope)
                              for e in entries), served.head)

    async def _whole_log(self, space_id: bytes) -> tuple[list[LogEntry], bytes]:
        log: list[LogEntry] = []
        head = b""
        for _ in range(100_000):
            page = await self.inner.pull(space_id, len(log) - 1, _PAGE)
            head = page.tree_head
            log.extend(LogEntry(o.offset, o.op_id, o.leaf_hash, o.envelope) for o in page.ops)
            if not page.ops or len(log) >= decode_tree_head(head).size:
                break
        self._record(space_id, head)
        return log, head

    def _record(self, space_id: bytes, head: bytes) -> None:
        size = decode_tree_head(head).size
        self._recorded.setdefault(space_id, {}).setdefault(size, head)

    # ------------------------------------------------------ membership
    async def membership(self, space_id: bytes) -> MembershipLog:
        """The inner membership log (membership leaves in pulls are what attacks alter)."""
        return await self.inner.membership(space_id)

    async def append_membership(self, space_id: bytes, entry: bytes) -> MembershipAppended:
        """Passed through."""
        return await self.inner.append_membership(space_id, entry)

    # ------------------------------------------------------ key packages
    async def key_packages(self, space_id: bytes, since_epoch: int = 0) -> list[bytes]:
        """The inner packages, as the key attack shows them."""
        packages = await self.inner.key_packages(space_id, since_epoch)
        if self.key_attack is None:
            return packages
        shown = self.key_attack.packages(packages)
        self.key_served += shown != packages
        return shown

    async def put_key_package(self, space_id: bytes, key_package: bytes) -> SpaceInfo:
        """Refused (``conflict``) when the key attack says so, else the inner upload."""
        if self.key_attack is not None and self.key_attack.refuse_upload():
            self.key_served += 1
            raise ConflictError("another device opened this epoch first")
        return await self.inner.put_key_package(space_id, key_package)

    # --------------------------------------------------- passed through
    @property
    def relay_id(self) -> bytes | None:
        """The inner transport's relay id."""
        return self.inner.relay_id

    async def open_session(self) -> SessionInfo:
        """Passed through."""
        return await self.inner.open_session()

    def forget_session(self) -> None:
        """Passed through."""
        self.inner.forget_session()

    async def limits(self) -> RelayLimits:
        """Passed through."""
        return await self.inner.limits()

    async def create_account(self, genesis: bytes) -> bytes:
        """Passed through."""
        return await self.inner.create_account(genesis)

    async def registry(self, account_id: bytes, since: int = 0) -> list[bytes]:
        """Passed through."""
        return await self.inner.registry(account_id, since)

    async def append_registry(self, account_id: bytes, entry: bytes) -> int:
        """Passed through."""
        return await self.inner.append_registry(account_id, entry)

    async def spaces(self) -> list[SpaceInfo]:
        """Passed through."""
        return await self.inner.spaces()

    async def create_space(self, space_id: bytes, key_package: bytes) -> SpaceInfo:
        """Passed through."""
        return await self.inner.create_space(space_id, key_package)

    async def push(self, space_id: bytes, envelopes: Sequence[bytes]) -> PushResult:
        """Passed through."""
        return await self.inner.push(space_id, envelopes)

    async def tree_head(self, space_id: bytes) -> bytes:
        """Passed through."""
        return await self.inner.tree_head(space_id)

    async def inclusion_proof(self, space_id: bytes, index: int,
                              size: int | None = None) -> Proof:
        """Passed through."""
        return await self.inner.inclusion_proof(space_id, index, size)

    async def consistency_proof(self, space_id: bytes, first: int,
                                second: int | None = None) -> Proof:
        """Passed through."""
        return await self.inner.consistency_proof(space_id, first, second)

    async def acknowledge(self, space_id: bytes, offset: int) -> AckResult:
        """Passed through."""
        return await self.inner.acknowledge(space_id, offset)

    async def get_snapshot(self, space_id: bytes, doc_id: bytes) -> SnapshotBlob:
        """Passed through."""
        return await self.inner.get_snapshot(space_id, doc_id)

    async def put_snapshot(self, space_id: bytes, doc_id: bytes, covers_offset: int,
                           blob: bytes) -> int:
        """Passed through."""
        return await self.inner.put_snapshot(space_id, doc_id, covers_offset, blob)

    async def get_snapshot_chunk(self, space_id: bytes, chunk_id: bytes) -> bytes:
        """Passed through."""
        return await self.inner.get_snapshot_chunk(space_id, chunk_id)

    async def put_snapshot_chunk(self, space_id: bytes, chunk_id: bytes, blob: bytes) -> None:
        """Passed through."""
        await self.inner.put_snapshot_chunk(space_id, chunk_id, blob)

    async def attest_snapshot(self, space_id: bytes, doc_id: bytes, attestation: bytes) -> None:
        """Passed through."""
        await self.inner.attest_snapshot(space_id, doc_id, attestation)

    async def snapshot_attestations(self, space_id: bytes, doc_id: bytes) -> Attestations:
        """Passed through."""
        return await self.inner.snapshot_attestations(space_id, doc_id)

    async def put_presence(self, space_id: bytes, record: bytes) -> None:
        """Passed through."""
        await self.inner.put_presence(space_id, record)

    async def presence(self, space_id: bytes) -> list[bytes]:
        """Passed through (records are verified by their readers)."""
        return await self.inner.presence(space_id)

    async def subscribe(self, space_ids: Sequence[bytes]) -> AsyncIterator[Notification]:
        """Passed through (notifications are hints; pulls are what lie)."""
        async for notice in self.inner.subscribe(space_ids):
            yield notice

    async def aclose(self) -> None:
        """Closes the inner transport."""
        await self.inner.aclose()
