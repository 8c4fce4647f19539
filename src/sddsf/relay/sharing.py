"""The relay's side of shared spaces: fold the stored membership, append entries,
answer who may read a space and which registry judges an op.

Membership entries are leaves of the space's log (``docs/protocol.md`` 21.7):
the relay verifies each with the clients' own rule code
(:meth:`MembershipState.apply`) plus the relay checks of 21.4, and storage
appends it only if no other entry was appended since the state it was
verified against (``expected_head``), so two admins racing see one order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from sddsf.errors import (
    AuthorizationError,
    Code,
    ConflictError,
    ContextError,
    NotFoundError,
    SddsfError,
)
from sddsf.protocol.membership import (
    EntryType,
    MembershipEntry,
    MembershipState,
    decode_entry,
)
from sddsf.protocol.registry import RegistryState
from sddsf.protocol.sharing import SpaceMembers, check_create_owner
from sddsf.relay.storage.base import AppendOutcome, AppendStatus, RelayStorage, SpaceRecord

__all__ = ["Folded", "RegistryGetter", "SharedSpaces"]

#: ``await registry_of(account_id)``: the verified registry (NotFoundError if none).
RegistryGetter = Callable[[bytes], Awaitable[RegistryState]]


@dataclass(frozen=True, slots=True)
class Folded:
    """A space's membership after its first ``count`` stored entries, and the member
    set after each applied entry (by entry hash) for checking key packages."""

    count: int
    state: MembershipState
    sets: dict[bytes, frozenset[bytes]]
    #: The hash of the newest stored entry (what storage compares appends with;
    #: the fold's head unless that entry was refused, which the relay never stores).
    last: bytes = bytes(32)


class SharedSpaces:
    """Membership of the relay's spaces, folded from storage and cached per process.

    The cache is keyed by the number of stored entries: an entry appended by
    another process only lengthens the list, so a stale fold is never used.
    """

    def __init__(self, storage: RelayStorage, registry_of: RegistryGetter) -> None:
        self._storage = storage
        self._registry = registry_of
        self._folded: dict[bytes, Folded] = {}

    async def folded(self, space: SpaceRecord) -> Folded | None:
        """The folded membership, or None for a space that was never shared."""
        entries = await self._storage.membership_entries(space.space_id)
        if not entries:
            return None
        cached = self._folded.get(space.space_id)
        if cached is not None and cached.count == len(entries):
            return cached
        decoded = [decode_entry(raw) for _, raw in entries]
        registries = await self._registries({a for e in decoded for a in (e.signer, e.member)})
        state = MembershipState.empty(space.space_id)
        sets: dict[bytes, frozenset[bytes]] = {}
        for e in decoded:
            # Stored entries were verified when appended, and registries only
            # grow (a later revocation does not undo an entry signed before it),
            # so the fold refuses nothing; a refusal would be skipped by every
            # client alike (21.4), and is skipped here the same way.
            try:
                state = state.apply(e, registries.get)
            except SddsfError:
                continue
            sets[e.hash] = frozenset(state.members)
        out = Folded(len(entries), state, sets, decoded[-1].hash)
        self._folded[space.space_id] = out
        return out

    async def members(self, space: SpaceRecord) -> tuple[SpaceMembers, bytes] | None:
        """The current membership with every member's fresh registry, and the hash
        of the newest stored entry (None: a space never shared)."""
        folded = await self.folded(space)
        if folded is None:
            return None
        registries = await self._registries(folded.state.members)
        return SpaceMembers(folded.state, registries), folded.last

    async def _registries(self, accounts: Iterable[bytes]) -> dict[bytes, RegistryState]:
        out: dict[bytes, RegistryState] = {}
        for account in sorted(accounts):
            try:
                out[account] = await self._registry(account)
            except NotFoundError:
                continue  # the fold reports the missing registry as wrong_context
        return out

    async def append(self, space: SpaceRecord, entry: bytes,
                     now_ms: int) -> tuple[AppendOutcome, MembershipState]:
        """Verify ``entry`` against the current membership and append it to the log.

        Idempotent: an entry already stored answers with its offset (DUPLICATE).

        Raises:
            DecodeError, ContextError, AuthorizationError, SignatureError,
            MembershipError: the entry is refused (nothing stored).
            NotFoundError: the added account has no registry on this relay.
            ConflictError: another entry was appended twice while verifying.
        """
        e = decode_entry(entry)
        for attempt in (0, 1):
            folded = await self.folded(space)
            state = folded.state if folded is not None else MembershipState.empty(space.space_id)
            last = folded.last if folded is not None else bytes(32)
            if e.hash in state.applied_set:
                stored = await self._storage.append_membership(
                    space.space_id, entry, e.hash, now_ms, expected_head=last,
                    members={a: m.role.value for a, m in state.members.items()})
                return stored, state
            after = await self._verify(space, state, e)
            try:
                outcome = await self._storage.append_membership(
                    space.space_id, entry, e.hash, now_ms, expected_head=last,
                    members={a: m.role.value for a, m in after.members.items()})
            except ConflictError:
                if attempt:
                    raise
                continue  # another entry landed first: fold again and re-judge
            if outcome.status is AppendStatus.ACCEPTED:
                # Stored right after the entries folded (expected_head held): the
                # new fold is this one, no need to verify them all again.
                count, sets = (folded.count, folded.sets) if folded is not None else (0, {})
                self._folded[space.space_id] = Folded(
                    count + 1, after, {**sets, e.hash: frozenset(after.members)}, e.hash)
            return outcome, after
        raise AssertionError("unreachable")  # pragma: no cover

    async def _verify(self, space: SpaceRecord, state: MembershipState,
                      e: MembershipEntry) -> MembershipState:
        check_create_owner(e, space.account_id)
        accounts = {e.signer, e.member}
        registries = await self._registries(accounts | set(state.members))
        signer = registries.get(e.signer)
        # 21.4: the clients' rule accepts a device active at the entry's stated
        # registry position; the relay appends only entries of devices active
        # now, so a revoked device cannot back-date a change into the log.
        if signer is not None and not signer.is_active(e.device):
            raise AuthorizationError("the signing device is not active in its account's "
                                     "registry", Code.REVOKED)
        if e.type in (EntryType.CREATE, EntryType.ADD):
            _check_member_registry(e, registries.get(e.member))
        return state.apply(e, registries.get)


def _check_member_registry(e: MembershipEntry, reg: RegistryState | None) -> None:
    # The key pinned for a new member must be the one its registry on this
    # relay is verified from, or its devices could never be resolved.
    if reg is None:
        raise NotFoundError("the account to add has no registry on this relay; it must "
                            "create its account here first")
    key = e.member_key
    if key is None or reg.account.signing_key.raw != key.signing_key.raw \
            or reg.account.recovery_key != key.recovery_key:
        raise ContextError("the account key in the entry is not the key of that account's "
                           "registry on this relay; compare fingerprints again")
