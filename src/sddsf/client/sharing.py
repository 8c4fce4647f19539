"""Spaces shared between people: the device's side of membership (``device.sharing``).

A space is shared by appending signed membership entries to its log
(``docs/protocol.md`` 21): its owner's ``create``, then an admin's ``add`` for
each person, whose account key the people compared first (its fingerprint, or
an account code). Every change that takes someone's access away opens a new
key epoch for those who remain; one that gives access opens one that includes
the newcomer (the sync after the change does both, ``rotate_if_due``).

A person joins another account's space with :meth:`Sharing.join`, naming the
owner's account key: the device never takes an owner's key from the relay.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from sddsf.client.engine.common import SyncReport
from sddsf.client.engine.members import Members
from sddsf.client.hosts import SharingHost
from sddsf.errors import Code, NotFoundError, ProofError, SddsfError, UsageError
from sddsf.protocol import membership as ms
from sddsf.protocol import registry as reg
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import AccountPublic, fingerprint, fingerprint_bytes
from sddsf.protocol.membership import Role

__all__ = ["ACCOUNT_CODE_PREFIX", "MemberView", "Sharing", "account_code", "parse_account"]

#: Prefix of an account code: the account's two public keys, for a person to
#: pass on (text or QR) instead of a fingerprint the relay must resolve.
ACCOUNT_CODE_PREFIX = "sddsf-account-"


def account_code(account: AccountPublic) -> str:
    """The account's public keys as one copyable string (both keys, base32).

    Args:
        account: The account.

    Returns:
        ``sddsf-account-`` followed by the keys.

    Raises:
        Nothing of its own.
    """
    raw = encode([account.signing_key.raw, account.recovery_key])
    return ACCOUNT_CODE_PREFIX + base64.b32encode(raw).decode().rstrip("=").lower()


def parse_account(code: str) -> AccountPublic:
    """The account of an account code.

    Args:
        code: What :func:`account_code` made (spaces around it are ignored).

    Returns:
        The account's public keys.

    Raises:
        UsageError: not an account code.
    """
    text = code.strip()
    if not text.startswith(ACCOUNT_CODE_PREFIX):
        raise UsageError(f"an account code starts with {ACCOUNT_CODE_PREFIX!r}")
    body = text[len(ACCOUNT_CODE_PREFIX):].upper()
    try:
        keys = decode(base64.b32decode(body + "=" * (-len(body) % 8)))
        if not isinstance(keys, list) or len(keys) != 2:
            raise ValueError("not two keys")
        return AccountPublic.from_keys(bytes(keys[0]), bytes(keys[1]))
    except (ValueError, SddsfError) as exc:  # binascii.Error is a ValueError
        raise UsageError("this account code is damaged; ask for it again") from exc


@dataclass(frozen=True, slots=True)
class MemberView:
    """One member of a shared space as this device verified it."""

    account_id: bytes
    fingerprint: str
    role: str
    owner: bool
    you: bool
    #: (device id, name, active) from the member's registry as verified here.
    devices: tuple[tuple[bytes, str, bool], ...]


class Sharing:
    """Share, join and manage the membership of spaces (see the module docstring)."""

    def __init__(self, device: SharingHost) -> None:
        self._d = device

    @property
    def _members(self) -> Members:
        return self._d.engine.members


    # ------------------------------------------------------------ changes
    # Each holds the home's lock throughout (re-entrant: its syncs take it too).
    async def share(self, space_id: bytes, member: AccountPublic,
                    role: Role = Role.WRITER) -> SyncReport:
        """Add ``member`` (its key as the people compared it) with ``role``.

        The first share of a space also appends its ``create`` entry. The sync
        that follows opens a key epoch that includes the member's devices.

        Args:
            space_id: A space this account administers (its own, or one where
                it is an admin).
            member: The other account's public keys (:meth:`resolve`).
            role: ``reader``, ``writer`` or ``admin``.

        Returns:
            The report of the sync that followed.

        Raises:
            UsageError: the member is this account, or already a member.
            AuthorizationError: this account is not an admin of the space.
            SddsfError: the relay's refusal (its code says why).
        """
        async with self._d.exclusive():
            return await self._share(space_id, member, role)

    async def set_role(self, space_id: bytes, account_id: bytes, role: Role) -> SyncReport:
        """Give a member another role (admins only).

        Args:
            space_id: The shared space.
            account_id: The member's account id.
            role: Its new role.

        Returns:
            The report of the sync that followed.

        Raises:
            UsageError: the space is not shared.
            AuthorizationError: this account is not an admin.
            MembershipError: ``membership_invalid`` (not a member, the same
                role, or the last admin demoted).
        """
        async with self._d.exclusive():
            return await self._set_role(space_id, account_id, role)

    async def remove(self, space_id: bytes, account_id: bytes) -> SyncReport:
        """Remove a member (admins only). The sync that follows opens an epoch
        without it, so nothing written afterwards is readable by its devices.

        Args:
            space_id: The shared space.
            account_id: The member's account id.

        Returns:
            The report of the sync that followed (``rotated`` counts the new epoch).

        Raises:
            UsageError: the space is not shared.
            AuthorizationError: this account is not an admin.
            MembershipError: ``membership_invalid`` (not a member, or the last admin).
            EpochError: ``rotation_blocked`` when the relay refuses the new epoch.
        """
        async with self._d.exclusive():
            return await self._remove(space_id, account_id)

    async def leave(self, space_id: bytes) -> None:
        """Leave another account's space. What was synced stays on this device,
        read only; nothing more is pulled or pushed.

        Args:
            space_id: The shared space.

        Raises:
            UsageError: the space is not shared.
            MembershipError: ``membership_invalid`` for the last admin.
        """
        async with self._d.exclusive():
            await self._leave(space_id)

    async def join(self, space_id: bytes, owner: AccountPublic, name: str = "") -> SyncReport:
        """Hold another account's space, shared with this one: pin the owner's key
        (as the people compared it) and sync it.

        Args:
            space_id: The space's id (the owner's ``space share`` prints it).
            owner: The owner's public keys (:meth:`resolve`).
            name: What to call the space here until its own name is synced.

        Returns:
            The report of the sync that read the space.

        Raises:
            UsageError: the space is this device's already.
            ProofError: the owner's key differs from one pinned before, or the
                relay names another owner.
            NotFoundError: the space is not shared with this account (yet).
        """
        async with self._d.exclusive():
            return await self._join(space_id, owner, name)

    # ------------------------------------------------------ implementations
    async def _share(self, space_id: bytes, member: AccountPublic,
                    role: Role = Role.WRITER) -> SyncReport:
        """Add ``member`` (its key as the people compared it) with ``role``.

        The first share of a space also appends its ``create`` entry. The sync
        that follows opens a key epoch that includes the member's devices.

        Raises:
            UsageError: the member is this account, or already a member.
            AuthorizationError: this account is not an admin of the space.
            SddsfError: the relay's refusal (its code says why).
        """
        if member.account_id == self._d.account.account_id:
            raise UsageError("this account owns the space already; share it with another one")
        await self._d.sync()
        self._members.pin(member)
        state = self._members.fold(space_id).state
        if not state.applied:
            await self._append(space_id, ms.create(space_id, self._d.keys,
                                                   self._d.registry(), self._d.clock()))
            state = self._members.current(space_id).state
        if state.role_of(member.account_id) is not None:
            raise UsageError("that account is already a member; change its role instead")
        await self._append(space_id, ms.add_member(state, self._d.keys, self._d.registry(),
                                                   member, role, self._d.clock()))
        return await self._d.sync()

    async def _set_role(self, space_id: bytes, account_id: bytes, role: Role) -> SyncReport:
        """Give a member another role (admins only)."""
        state = await self._current(space_id)
        await self._append(space_id, ms.change_role(state, self._d.keys, self._d.registry(),
                                                    account_id, role, self._d.clock()))
        return await self._d.sync()

    async def _remove(self, space_id: bytes, account_id: bytes) -> SyncReport:
        """Remove a member (admins only); the sync opens an epoch without it."""
        state = await self._current(space_id)
        await self._append(space_id, ms.remove_member(state, self._d.keys, self._d.registry(),
                                                      account_id, self._d.clock()))
        return await self._d.sync()

    async def _leave(self, space_id: bytes) -> None:
        """Leave another account's space (its data synced so far stays here)."""
        state = await self._current(space_id)
        # (Not read ahead: once appended, the space is out of this account's reach.)
        await self._append(space_id, ms.leave(state, self._d.keys, self._d.registry(),
                                              self._d.clock()), ahead=False)
        self._d.store.put("gone", space_id, encode(True))

    async def _join(self, space_id: bytes, owner: AccountPublic, name: str = "") -> SyncReport:
        """Hold another account's space, shared with this one: pin the owner's key
        (as the people compared it) and sync it.

        Raises:
            UsageError: the space is this device's already.
            ProofError: the owner's key differs from one pinned before.
            NotFoundError: the space is not shared with this account (yet).
        """
        if any(s == space_id for s, _ in self._d.spaces()):
            raise UsageError("this device holds that space already")
        self._members.pin(owner)
        listed = {s.space_id: s for s in await self._d.transport.spaces()}
        space = listed.get(space_id)
        if space is None:
            raise NotFoundError("no space with that id is shared with this account; ask its "
                                "owner to share it first")
        if space.owner != owner.account_id:
            raise ProofError("the relay says another account owns this space than the one "
                             "you named: compare the owner's fingerprint again",
                             Code.PROOF_INVALID)
        with self._d.store.batch() as b:
            b.put("owner", space_id, owner.account_id)
            b.put("space", space_id, encode(name))
        self._members.forget()
        return await self._d.sync()

    async def resolve(self, text: str) -> AccountPublic:
        """The account named by an account code, or by a fingerprint that the relay
        resolves: it answers with the account's genesis registry entry, whose
        signature and id this device checks against the fingerprint (160 bits),
        so the relay cannot answer with another account's keys.

        Args:
            text: An account code (``sddsf-account-...``) or a fingerprint.

        Returns:
            The account's public keys.

        Raises:
            UsageError: neither a code nor a fingerprint.
            NotFoundError: no account with that fingerprint on this relay.
            ProofError: the relay answered with another account.
        """
        if text.strip().startswith(ACCOUNT_CODE_PREFIX):
            return parse_account(text)
        prefix = fingerprint_bytes(text)
        if prefix is None:
            raise UsageError("name the account by its fingerprint (XXXX-XXXX-..., as `sddsf "
                             "account fingerprint` shows it) or its account code")
        genesis = await self._d.relay.account_by_fingerprint(prefix)
        state = reg.verify_registry([genesis], pinned=None)
        if state.account_id[:len(prefix)] != prefix:
            raise ProofError("the relay answered with an account of another fingerprint",
                             Code.PROOF_INVALID)
        return state.account

    def owner_key(self, space_id: bytes) -> AccountPublic:
        """The space owner's account key as pinned on this device.

        Args:
            space_id: A space this device holds.

        Returns:
            The owner's public keys (this account's for its own spaces).

        Raises:
            UsageError: no key is pinned for the owner (the space is not held here).
        """
        key = self._members.pinned(self._members.owner(space_id))
        if key is None:
            raise UsageError("this device does not hold that space's owner key; join it first")
        return key

    # ------------------------------------------------------------- reads
    def members(self, space_id: bytes) -> list[MemberView]:
        """The space's members as this device verified them.

        Args:
            space_id: The space.

        Returns:
            One view per member, by account id (empty: the space is not shared).

        Raises:
            Nothing of its own.
        """
        view = self._members.members(space_id)
        owner = self._members.owner(space_id)
        me = self._d.account.account_id
        out = []
        for account_id in sorted(view.membership.members):
            reg = view.registries.get(account_id)
            devices = () if reg is None else tuple(
                (d.device_id, d.name, reg.is_active(d.device_id)) for d in reg.devices.values())
            role = view.membership.members[account_id].role.value
            out.append(MemberView(account_id, fingerprint(account_id), role,
                                  account_id == owner, account_id == me, devices))
        return out

    async def _current(self, space_id: bytes) -> ms.MembershipState:
        await self._d.sync()
        state = self._members.current(space_id).state
        if not state.applied:
            raise UsageError("this space is not shared; share it first")
        return state

    async def _append(self, space_id: bytes, entry: bytes, *, ahead: bool = True) -> None:
        await self._d.transport.append_membership(space_id, entry)
        if ahead:
            # Read the membership ahead of the log, so that the next sync opens
            # the epoch it calls for at once (before its pull reaches the entry).
            await self._members.ahead(space_id)
