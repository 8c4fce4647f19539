"""The replication fabric: verify with the shared rules, append, prove, fan out.

The relay runs :func:`sddsf.protocol.rules.verify_op` - the same code every
client runs - on each op of a batch, appends the accepted ones in one storage
transaction (offsets gap-free, Merkle frontier updated in the same
transaction), and returns per-op results with a signed tree head and an
inclusion proof. A bad op never drops the good ones of its batch; a fork is
refused and both signed ops are kept as evidence.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import (
    ChainError,
    Code,
    ConflictError,
    EpochError,
    NotFoundError,
    SddsfError,
)
from sddsf.protocol.encoding import decode
from sddsf.protocol.envelope import OpEnvelope, decode_envelope
from sddsf.protocol.identity import ID_SIZE
from sddsf.protocol.keypackage import decode_key_package
from sddsf.protocol.limits import ProtocolLimits
from sddsf.protocol.registry import RegistryState, verify_registry
from sddsf.protocol.rules import (
    ChainHead,
    EpochWindow,
    MemoryChainView,
    Verdict,
    verify_batch,
)
from sddsf.protocol.sharing import SpaceMembers, check_epoch_holders, holders_of
from sddsf.protocol.snapshot import (
    CORROBORATED_SNAPSHOT_DOC,
    MATCH,
    MISMATCH,
    SPACE_SNAPSHOT_DOC,
    snapshot_claims,
)
from sddsf.protocol.treehead import sign_tree_head
from sddsf.protocol.vv import VersionVector
from sddsf.relay.proofs import (
    batch_inclusion_proofs,
    consistency_proof,
    inclusion_proof,
    inclusion_proofs,
    root_at,
)
from sddsf.relay.settings import RelaySettings
from sddsf.relay.sharing import SharedSpaces
from sddsf.relay.storage.base import (
    AppendStatus,
    ChainSnapshot,
    ForkEvidence,
    OpToAppend,
    RelayStorage,
    SpaceRecord,
)

# The proof functions live in sddsf.relay.proofs; re-exported here for older imports.
__all__ = ["Fabric", "OpResult", "RegistryCache", "batch_inclusion_proofs", "consistency_proof",
           "inclusion_proof", "inclusion_proofs", "root_at"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class OpResult:
    """Per-op outcome of a batch upload."""

    status: Literal["accepted", "duplicate", "rejected"]
    offset: int | None = None
    op_id: bytes | None = None
    proof: list[bytes] | None = None
    code: str | None = None
    message: str | None = None


class RegistryCache:
    """Verified registry per account, re-verified from genesis when it grows.

    Verification from genesis on every request would cost one signature per
    entry; the cache keeps the verified state and applies only new entries.
    """

    def __init__(self, storage: RelayStorage) -> None:
        self._storage = storage
        self._states: dict[bytes, RegistryState] = {}
        self._locks: dict[bytes, asyncio.Lock] = {}

    def lock(self, account_id: bytes) -> asyncio.Lock:
        """Serialises registry appends of one account within this process."""
        return self._locks.setdefault(account_id, asyncio.Lock())

    async def get(self, account_id: bytes) -> RegistryState:
        """The verified registry of ``account_id``, refreshed from storage.

        Raises:
            NotFoundError: no such account.
        """
        state = self._states.get(account_id)
        since = 0 if state is None else state.seq + 1
        entries = await self._storage.registry_entries(account_id, since)
        if state is None:
            if not entries:
                raise NotFoundError("no account with this id on this relay")
            state = verify_registry(entries, pinned=None)
            if state.account_id != account_id:
                raise ConflictError("stored registry does not match its account id")
        else:
            for entry in entries:
                state = state.apply(entry)
        self._states[account_id] = state
        return state

    def cached(self, account_id: bytes) -> RegistryState | None:
        """The last verified state, without asking storage (None if never read)."""
        return self._states.get(account_id)

    def forget(self, account_id: bytes) -> None:
        """Drop the cached state (after a storage conflict)."""
        self._states.pop(account_id, None)


BatchHook = Callable[[bytes, list[bytes | None], list[tuple[str, str | None]], list[bytes]],
                     Awaitable[None]]


class Fabric:
    """Verify-and-append for one relay process (stateless beyond storage)."""

    def __init__(self, storage: RelayStorage, settings: RelaySettings,
                 relay_key: Ed25519SigningKey,
                 publish: Callable[[bytes, list[tuple[int, bytes]]], Awaitable[None]] | None
                 = None, clock: Callable[[], int] = _now_ms) -> None:
        self.storage = storage
        self.settings = settings
        self.relay_key = relay_key
        self.registries = RegistryCache(storage)
        # Per-process memo of how far each space is pruned (a lower bound: a
        # restart only rescans, never prunes too much).
        self._pruned_to: dict[bytes, int] = {}
        # Per space, the registry_seq of each epoch's key package (a stored
        # package never changes, so the memo only grows).
        self._package_seqs: dict[bytes, tuple[int, ...]] = {}
        # Per space, per epoch: the accounts its key was sealed for, each with
        # the registry position it was computed at (grows like _package_seqs).
        self._holders: dict[bytes, tuple[dict[bytes, int], ...]] = {}
        self.shared = SharedSpaces(storage, self.registries.get)
        # Signature verification pool: one thread per core (PERFORMANCE-NOTES:
        # two PyNaCl threads give 1.6x one).
        self._pool_size = max(1, min(4, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(self._pool_size, thread_name_prefix="sddsf-verify")
        #: Called with the ops each stored batch appended (live fan-out).
        self.publish = publish
        self._clock = clock
        #: Called after each stored batch with (account, author per op or None,
        #: (status, code) per op, authors of refused forks): the controller's hook.
        self.on_batch: BatchHook | None = None

    def close(self) -> None:
        """Stop the verifier pool (the app calls this on shutdown)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def space_for(self, space_id: bytes, account_id: bytes) -> SpaceRecord:
        """The space, checked to belong to the caller's account.

        Raises:
            NotFoundError: unknown space, or one of another account (not revealed).
        """
        space = await self.storage.get_space(space_id)
        if space is None:
            raise NotFoundError("no such space in this account")
        # A shared space is open to its current members (the owner included
        # only while a member); any other space to its owner alone.
        members = await self.storage.space_members(space_id)
        if (account_id not in members) if members else space.account_id != account_id:
            raise NotFoundError("no such space in this account")
        return space

    async def readable_spaces(self, account_id: bytes) -> list[SpaceRecord]:
        """The spaces the account may read, oldest first: its own that are not
        shared (or shared with it still a member) and those shared with it."""
        return await self.storage.readable_spaces(account_id)

    async def maybe_prune(self, space: SpaceRecord) -> int:
        """Drop envelopes that every active device has applied and that the
        space's snapshot covers, once that snapshot is corroborated (see
        :meth:`corroborated_cover`); leaf hashes and nodes stay, so proofs stay valid.

        Returns the offset below which envelopes are now pruned.
        """
        registry = await self.registries.get(space.account_id)
        start = self._pruned_to.get(space.space_id, 0)
        if await self.storage.space_members(space.space_id):
            # A shared space keeps its whole log: a member's new device replays
            # it, since it trusts no snapshot of another account's devices yet.
            return start
        active = [d.device_id for d in registry.active_devices()]
        if not active:
            return start
        acks = await self.storage.acks(space.space_id)
        candidate = min(acks.get(d, -1) for d in active) + 1
        point = min(candidate, await self.corroborated_cover(space, registry) + 1)
        if point > start:
            await self.storage.prune_ops(space.space_id, point)
            self._pruned_to[space.space_id] = point
        return max(point, start)

    async def corroborated_cover(self, space: SpaceRecord, registry: RegistryState) -> int:
        """The last offset the space's corroborated snapshot covers, or -1.

        A snapshot's signature says who wrote it, not that its documents are
        what the log says (a stolen device can sign anything), so the history
        under it is kept until an active device other than its author has
        recomputed it from the log and attested ``match``, and no active device
        attested ``mismatch`` (protocol.md 18.7). The relay keeps the newest such
        snapshot under :data:`CORROBORATED_SNAPSHOT_DOC`. Per-document
        snapshots, which no reader loads, never allow pruning.
        """
        copy = await self.storage.get_snapshot(space.space_id, CORROBORATED_SNAPSHOT_DOC)
        if copy is None or not await self.is_corroborated(space.space_id, registry, copy[1]):
            return -1
        return copy[0]

    async def is_corroborated(self, space_id: bytes, registry: RegistryState,
                              blob: bytes) -> bool:
        """Whether an active device other than the snapshot's author attested that it
        matches the log, and no active device that it does not."""
        try:
            claims = snapshot_claims(blob, limits=self.settings.rules.limits)
        except SddsfError:
            return False
        verdicts = await self.storage.snapshot_attestations(space_id, SPACE_SNAPSHOT_DOC,
                                                            claims.id)
        active = {a for a, _, _ in verdicts if registry.is_active(a)}
        match = any(v == MATCH and a in active and a != claims.author for a, v, _ in verdicts)
        dissent = any(v == MISMATCH and a in active for a, v, _ in verdicts)
        return match and not dissent

    def tree_head(self, space: SpaceRecord, size: int, root: bytes) -> bytes:
        """A freshly signed tree head for the space's log."""
        return sign_tree_head(self.relay_key, log=space.space_id, size=size, root=root,
                              ts_ms=self._clock())

    async def submit(self, account_id: bytes, space_id: bytes, envelopes: Sequence[bytes],
                     *, proofs: bool = True) -> tuple[list[OpResult], bytes]:
        """Verify and append a batch. Returns per-op results and the signed tree head.

        Raises:
            NotFoundError, ConflictError (after one retry), UnavailableError.
        """
        for attempt in (0, 1):
            try:
                return await self._submit_once(account_id, space_id, envelopes, proofs)
            except ConflictError:
                # A concurrent writer (this node or another) appended first, or
                # the registry moved (a revocation) while the batch was being
                # verified: re-read registry and chains, re-verify everything once.
                self.registries.forget(account_id)
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _submit_once(self, account_id: bytes, space_id: bytes,
                           envelopes: Sequence[bytes],
                           proofs: bool) -> tuple[list[OpResult], bytes]:
        space = await self.space_for(space_id, account_id)
        # The owner's registry: the one append_ops re-checks for a concurrent
        # revocation (in a shared space, each op's own is in ``members``).
        registry = await self.registries.get(space.account_id)
        # Decoded on the event loop: it is pure Python, so a worker thread would
        # hold the GIL all the same and only add a hop.
        decoded = _decode_all(envelopes, self.settings.rules.limits)
        wanted = [(e.header.author, e.header.seq) for e in decoded if isinstance(e, OpEnvelope)]
        snap = await self.storage.chain_snapshot(space_id, wanted)
        now = self._clock()
        verdicts, membership_head = await self._judge(space, registry, decoded, snap, now)
        results: list[OpResult | None] = [None] * len(envelopes)
        to_append: list[tuple[int, OpEnvelope]] = []
        forks: list[tuple[OpEnvelope, bytes]] = []
        for i, v in enumerate(verdicts):
            if isinstance(v, Verdict):
                # DUPLICATE goes to storage too: it answers with the original offset.
                to_append.append((i, v.envelope))
                continue
            results[i] = OpResult("rejected", code=v.code.value, message=v.message)
            env = decoded[i]
            if (isinstance(v, ChainError) and v.code is Code.CHAIN_FORK
                    and isinstance(env, OpEnvelope)
                    and (existing := snap.ids.get((env.header.author, env.header.seq)))):
                forks.append((env, existing))
        # OpToAppend hashes each leaf (the only place it is hashed); the proofs
        # below reuse those hashes.
        rows = [OpToAppend(e.raw, e.op_id, e.header.author, e.header.seq,
                           e.header.deps.encoded()) for _, e in to_append]
        outcomes = await self.storage.append_ops(
            space_id, rows, now, registry_seq=registry.seq,
            membership_head=membership_head) if rows else []
        published: list[tuple[int, bytes]] = []
        appended: dict[int, bytes] = {}
        for (i, env), out, row in zip(to_append, outcomes, rows, strict=True):
            if out.status is AppendStatus.FORK:
                results[i] = OpResult("rejected", code=Code.CHAIN_FORK.value,
                                      message="a different op already holds this seq")
                forks.append((env, out.existing_op_id))
                continue
            accepted = out.status is AppendStatus.ACCEPTED
            results[i] = OpResult("accepted" if accepted else "duplicate", offset=out.offset,
                                  op_id=env.op_id)
            if accepted:
                published.append((out.offset, env.raw))
                appended[out.offset] = row.leaf_hash
        for env, existing_id in forks:
            await self._record_fork(space_id, env, existing_id, now)
        if self.on_batch is not None:
            await self.on_batch(
                account_id,
                [e.header.author if isinstance(e, OpEnvelope) else None for e in decoded],
                [(r.status, r.code) if r is not None else ("rejected", None) for r in results],
                [env.header.author for env, _ in forks])
        after = await self.storage.get_space(space_id)
        if after is None:
            raise NotFoundError("space disappeared")
        head = self.tree_head(after, after.size, after.root)
        final = [r for r in results if r is not None]
        if len(final) != len(results):  # pragma: no cover - every index is filled above
            raise AssertionError("missing result")
        if proofs:
            with_offset = [i for i, r in enumerate(final) if r.offset is not None]
            paths = await batch_inclusion_proofs(
                self.storage, space_id, [final[i].offset or 0 for i in with_offset],
                after.size, after.root, appended) if with_offset else []
            for i, path in zip(with_offset, paths, strict=True):
                r = final[i]
                final[i] = OpResult(r.status, r.offset, r.op_id, path)
        if published and self.publish is not None:
            await self.publish(space_id, published)
        return final, head

    async def _judge(self, space: SpaceRecord, registry: RegistryState,
                     decoded: Sequence[OpEnvelope | SddsfError], snap: ChainSnapshot,
                     now: int) -> tuple[list[SddsfError | Verdict], bytes]:
        # Also returns the membership head the ops were judged at (zeros: a
        # space never shared), which the append re-checks (21.7).
        chains = MemoryChainView(
            heads={a: ChainHead(s, oid, _deps(d)) for a, (s, oid, d) in snap.heads.items()},
            ids=dict(snap.ids))
        shared = await self.shared.members(space)
        if shared is not None:
            members, last = shared
            holders = await self.holders(space)
            return await asyncio.to_thread(self._verify_shared, decoded, space, members,
                                           holders, chains, now), last
        window = EpochWindow(space.epoch, space.epoch_started_ms,
                             await self.package_seqs(space))
        return await asyncio.to_thread(self._verify_all, decoded, space, registry, chains,
                                       window, now), bytes(32)

    async def holders(self, space: SpaceRecord) -> tuple[dict[bytes, int], ...]:
        """Per epoch (0..``space.epoch`` at least), the accounts its key package was
        sealed for, each with its registry position (``protocol.sharing.holders_of``)."""
        known = self._holders.get(space.space_id, ())
        if len(known) <= space.epoch:
            raw = await self.storage.key_packages(space.space_id, len(known))
            limits = self.settings.rules.limits

            def read() -> list[dict[bytes, int]]:
                pkgs = [decode_key_package(p, limits=limits) for p in raw]
                return [holders_of(p.members, space.account_id, p.registry_seq) for p in pkgs]

            known = (*known, *await asyncio.to_thread(read))
            self._holders[space.space_id] = known
        return known

    async def package_seqs(self, space: SpaceRecord) -> tuple[int, ...]:
        """The ``registry_seq`` of each epoch's key package (epochs 0..``space.epoch``
        at least): the input of the compromised-epoch rule (``EpochWindow``)."""
        known = self._package_seqs.get(space.space_id, ())
        if len(known) <= space.epoch:
            raw = await self.storage.key_packages(space.space_id, len(known))
            limits = self.settings.rules.limits
            seqs = await asyncio.to_thread(
                lambda: [decode_key_package(p, limits=limits).registry_seq for p in raw])
            known = (*known, *seqs)
            self._package_seqs[space.space_id] = known
        return known

    def _verify_all(self, decoded: Sequence[OpEnvelope | SddsfError], space: SpaceRecord,
                    registry: RegistryState, chains: MemoryChainView, window: EpochWindow,
                    now: int) -> list[SddsfError | Verdict]:
        # Runs in a worker thread. The state-free rules (signatures) of the two
        # halves of the batch run on the verifier pool: PyNaCl releases the GIL,
        # so both cores verify while the event loop keeps serving requests.
        if space.epoch < 0:
            return [env if isinstance(env, SddsfError) else EpochError(
                "the space has no key package yet; upload epoch 0 first", Code.UNKNOWN_EPOCH)
                for env in decoded]
        envs = [env for env in decoded if isinstance(env, OpEnvelope)]
        verdicts = iter(verify_batch(
            envs, space=space.space_id, registry=registry, epochs=window, chains=chains,
            now_ms=now, settings=self.settings.rules,
            parallel_map=lambda f, parts: list(self._pool.map(f, parts)),
            chunks=self._pool_size if len(envs) >= 64 else 1))
        return [env if isinstance(env, SddsfError) else next(verdicts) for env in decoded]

    def _verify_shared(self, decoded: Sequence[OpEnvelope | SddsfError], space: SpaceRecord,
                       members: SpaceMembers, holders: tuple[dict[bytes, int], ...],
                       chains: MemoryChainView, now: int) -> list[SddsfError | Verdict]:
        # Runs in a worker thread. Each op is judged with its author's member
        # registry (protocol.md 21.7): ops are grouped by author account, and
        # authors of different accounts never share a chain.
        out: list[SddsfError | Verdict | None] = [
            env if isinstance(env, SddsfError) else None for env in decoded]
        groups: dict[bytes, list[int]] = {}
        for i, env in enumerate(decoded):
            if isinstance(env, SddsfError):
                continue
            try:
                account, _ = members.writer(env.header.author)
                if chains.op_id_at(env.header.author, env.header.seq) != env.op_id \
                        and env.header.epoch < len(holders):
                    # Before the chain rules, so a refused op is never recorded
                    # as its author's head; a retry of an accepted op stays a
                    # duplicate (13.3).
                    check_epoch_holders(holders[env.header.epoch], members, skip=account)
            except SddsfError as exc:
                out[i] = exc
                continue
            groups.setdefault(account, []).append(i)
        for account, idx in groups.items():
            window = EpochWindow(space.epoch, space.epoch_started_ms,
                                 tuple(h.get(account, 0) for h in holders))
            group = self._verify_all([decoded[i] for i in idx], space,
                                     members.registries[account], chains, window, now)
            for i, verdict in zip(idx, group, strict=True):
                out[i] = verdict
        judged = [v for v in out if v is not None]
        if len(judged) != len(out):  # pragma: no cover - every op is judged above
            raise AssertionError("an op of the batch was not judged")
        return judged

    async def _record_fork(self, space_id: bytes, refused: OpEnvelope, existing_id: bytes,
                           now: int) -> None:
        accepted = await self.storage.op_by_author_seq(space_id, refused.header.author,
                                                       refused.header.seq)
        if accepted is None or accepted.envelope is None or accepted.op_id != existing_id:
            return  # pruned or raced: the refusal stands, evidence is best effort
        await self.storage.record_fork(ForkEvidence(space_id, refused.header.author,
                                                    refused.header.seq, accepted.envelope,
                                                    refused.raw, now))


def _decode_all(envelopes: Sequence[bytes],
                limits: ProtocolLimits) -> list[OpEnvelope | SddsfError]:
    out: list[OpEnvelope | SddsfError] = []
    for raw in envelopes:
        try:
            out.append(decode_envelope(raw, limits=limits))
        except SddsfError as exc:
            out.append(exc)
    return out


def _deps(raw: bytes) -> VersionVector:
    return VersionVector.from_wire(decode(raw), what="stored deps", id_size=ID_SIZE,
                                   max_entries=1 << 16)

