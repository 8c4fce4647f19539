"""Shared spaces: which registry answers for a leaf of the space log, and who may write.

A space's log interleaves op envelopes and membership entries (section 21.7 of
``docs/protocol.md``). The two are told apart by their bytes alone: an
envelope is a canonical CBOR array of four items, a membership entry an array
of three (:func:`leaf_kind`), so a relay cannot pass one off as the other.

Before its ``create`` entry a space is its owner's alone and the op rules use
the owner's registry (section 13). From ``create`` on, an op's author must be
an active device of a member account that may write *at the op's log
position* (:meth:`SpaceMembers.writer`), and the rules run with that member's
registry. This module is pure: the caller supplies the membership it folded
and the member registries it verified.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from sddsf.errors import AuthorizationError, Code, ContextError, DecodeError, EpochError
from sddsf.protocol.membership import EntryType, MembershipEntry, MembershipState, check_write
from sddsf.protocol.registry import RegistryState

__all__ = [
    "LeafKind",
    "SpaceMembers",
    "check_create_owner",
    "check_epoch_holders",
    "holders_of",
    "leaf_kind",
]

#: First byte of a canonical CBOR array of 3 / 4 items (major type 4).
_ARRAY3: Final = 0x83
_ARRAY4: Final = 0x84


class LeafKind(Enum):
    """What a leaf of a space log holds."""

    OP = 0
    MEMBERSHIP = 1


def leaf_kind(leaf: bytes) -> LeafKind:
    """The kind of a log leaf, from its first byte.

    Both formats are canonical CBOR arrays with a fixed item count (an envelope
    has 4 items, section 8.1; a membership entry 3, section 21.1), so the first
    byte decides and full decoding then checks the rest.

    Raises:
        DecodeError: ``malformed``: neither.
    """
    if leaf[:1] == bytes((_ARRAY4,)):
        return LeafKind.OP
    if leaf[:1] == bytes((_ARRAY3,)):
        return LeafKind.MEMBERSHIP
    raise DecodeError("a space log leaf is neither an op envelope nor a membership entry")


def check_create_owner(entry: MembershipEntry, owner_account: bytes) -> None:
    """A space's ``create`` entry must make the space's owner its first admin.

    The membership rules (21.3) check that ``create`` is signed by the account
    it names; this binds that account to the space's owner, which the relay
    records at the space's creation and every member learns with the space.

    Raises:
        AuthorizationError: ``not_authorized``.
    """
    if entry.type is EntryType.CREATE and entry.member != owner_account:
        raise AuthorizationError("only the space's owner account may create its membership",
                                 Code.NOT_AUTHORIZED)


@dataclass(frozen=True, slots=True)
class SpaceMembers:
    """A shared space's membership at one log position and every member's verified registry.

    Invariant expected of the caller: ``registries[a]`` was verified from the
    account key pinned for ``a`` in ``membership`` (21.3 step 5 compares them).
    """

    membership: MembershipState
    registries: Mapping[bytes, RegistryState]

    def author_account(self, device: bytes) -> bytes:
        """The member account whose registry lists ``device`` (active or revoked).

        Raises:
            ContextError: ``wrong_context``: a member's registry is not at hand
                (sync it first) and no other member lists the device.
            AuthorizationError: ``not_authorized``: no member lists the device,
                or two do (an account may list a device it holds the key of; two
                accounts listing one device leave its ops without one author).
        """
        owners = [a for a in self.membership.members
                  if (reg := self.registries.get(a)) is not None
                  and reg.device(device) is not None]
        if len(owners) > 1:
            raise AuthorizationError("the device is listed by two member accounts; its ops "
                                     "have no single author", Code.NOT_AUTHORIZED)
        if owners:
            return owners[0]
        if any(a not in self.registries for a in self.membership.members):
            raise ContextError("a member's registry is not at hand; sync it first")
        raise AuthorizationError("the op's author is not a device of any member of this space",
                                 Code.NOT_AUTHORIZED)

    def writer(self, device: bytes) -> tuple[bytes, RegistryState]:
        """The author's account and registry, if that account may write here.

        Raises:
            ContextError, AuthorizationError: see :meth:`author_account`;
                ``not_authorized`` for a reader (:func:`check_write`).
        """
        account = self.author_account(device)
        check_write(self.membership, account)
        return account, self.registries[account]


def check_epoch_holders(holders: Mapping[bytes, int], members: SpaceMembers, *,
                        skip: bytes | None = None) -> None:
    """Refuse a write under an epoch whose key a non-member or a revoked device holds.

    ``holders`` maps each account the epoch's key package was sealed for to the
    registry position it was computed at (21.7). The key is held, beyond the
    current members, by an account removed (or departed) since, or by a device
    revoked after that position: a new op under it would be readable by them.
    ``skip`` is the author's own account, whose revocations the op rules
    already judge through the op's signed ``reg`` (13.2 rule 7c).

    Raises:
        EpochError: ``epoch_compromised``: open a new epoch for the current members.
    """
    for account, seq in sorted(holders.items()):
        if account not in members.membership.members:
            raise EpochError("the epoch's key was given to an account that is no longer a "
                             "member; open a new epoch first", Code.EPOCH_COMPROMISED)
        reg = members.registries.get(account)
        if account == skip or reg is None:
            continue
        if reg.revoked_seqs and reg.revoked_seqs[-1] > seq:
            raise EpochError("a device that holds the epoch's key was revoked since; open a "
                             "new epoch first", Code.EPOCH_COMPROMISED)


def holders_of(package_members: Collection[tuple[bytes, int]] | None, owner: bytes,
               registry_seq: int) -> dict[bytes, int]:
    """The accounts an epoch's key was sealed for, each with its registry position:
    a version 3 package's ``members``, else (versions 1 and 2) the owner alone."""
    if package_members is None:
        return {owner: registry_seq}
    return dict(package_members)
