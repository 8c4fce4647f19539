"""Shared spaces in the protocol core (sddsf.protocol.sharing, protocol.md 21.7).

Covers: leaf kinds told apart by their bytes; an op's author resolved to the
one member account listing it (none, two, a missing registry); readers and
removed members refused as writers; an epoch held by a removed account or by
a revoked device of another member refused, the author's own account left to
rule 7c; ``create`` bound to the space's owner; the holders of v2 and v3
packages.
"""

from __future__ import annotations

import pytest
from test_membership import D1, account, aid, person, registry_of, with_members

from factories import D2, D3, SPACE, make_op
from sddsf.errors import AuthorizationError, Code, ContextError, DecodeError, EpochError
from sddsf.protocol import membership as ms
from sddsf.protocol.membership import MembershipState, Role, decode_entry
from sddsf.protocol.registry import RegistryState, genesis, verify_registry
from sddsf.protocol.sharing import (
    LeafKind,
    SpaceMembers,
    check_create_owner,
    check_epoch_holders,
    holders_of,
    leaf_kind,
)


def members(state: MembershipState) -> SpaceMembers:
    regs = {a: r for a in state.members if (r := registry_of(a)) is not None}
    return SpaceMembers(state, regs)


def test_leaf_kinds_are_told_apart_by_their_bytes() -> None:
    entry = ms.create(SPACE, D1, person(1)[1], 0)
    assert leaf_kind(entry) is LeafKind.MEMBERSHIP
    assert leaf_kind(make_op(D1)) is LeafKind.OP
    for bad in (b"", b"\x82\x01\x02", b"\xa0", b"\x85" + bytes(4)):
        with pytest.raises(DecodeError):
            leaf_kind(bad)


def test_an_op_author_resolves_to_its_member_account() -> None:
    state = with_members((2, Role.WRITER), (3, Role.READER))
    m = members(state)
    dev2, _ = person(2)
    assert m.author_account(D1.device_id) == aid(1)
    assert m.author_account(D3.device_id) == aid(1)  # revoked devices still resolve (rule 6)
    assert m.writer(dev2.device_id)[0] == aid(2)
    with pytest.raises(AuthorizationError) as info:  # a reader may not write
        m.writer(person(3)[0].device_id)
    assert info.value.code is Code.NOT_AUTHORIZED
    with pytest.raises(AuthorizationError) as info:  # nobody's device
        m.author_account(person(4)[0].device_id)
    assert info.value.code is Code.NOT_AUTHORIZED


def test_a_missing_member_registry_is_a_context_error() -> None:
    state = with_members((2, Role.WRITER))
    m = SpaceMembers(state, {aid(1): person(1)[1]})
    with pytest.raises(ContextError):
        m.author_account(person(2)[0].device_id)
    assert m.author_account(D2.device_id) == aid(1)  # found where it is known


def test_a_device_listed_by_two_members_has_no_author() -> None:
    state = with_members((2, Role.WRITER))
    # Account 2 lists the owner's laptop D1 too (it holds no proof of ownership
    # beyond the countersignature, which D1's holder could give twice).
    twice = verify_registry([genesis(account(2), D1, "borrowed", 0)],
                            pinned=account(2).public)
    m = SpaceMembers(state, {aid(1): person(1)[1], aid(2): twice})
    with pytest.raises(AuthorizationError) as info:
        m.author_account(D1.device_id)
    assert info.value.code is Code.NOT_AUTHORIZED


def test_a_removed_member_cannot_write() -> None:
    state = with_members((2, Role.WRITER))
    state = state.apply(ms.remove_member(state, D1, person(1)[1], aid(2), 0), registry_of)
    with pytest.raises(AuthorizationError):
        members(state).writer(person(2)[0].device_id)


def test_epoch_holders_must_all_still_be_members() -> None:
    state = with_members((2, Role.WRITER), (3, Role.READER))
    m = members(state)
    check_epoch_holders({aid(1): 3, aid(2): 0, aid(3): 0}, m)
    after = state.apply(ms.remove_member(state, D1, person(1)[1], aid(3), 0), registry_of)
    with pytest.raises(EpochError) as info:
        check_epoch_holders({aid(1): 3, aid(2): 0, aid(3): 0}, members(after))
    assert info.value.code is Code.EPOCH_COMPROMISED
    check_epoch_holders({aid(1): 3, aid(2): 0}, members(after))


def test_a_revocation_in_another_member_account_compromises_the_epoch() -> None:
    state = with_members((2, Role.WRITER))
    m = members(state)
    owner: RegistryState = person(1)[1]  # D3 revoked at its last seq
    revoked_at = owner.revoked_seqs[-1]
    # Sealed before the revocation: refused for account 2's writers ...
    with pytest.raises(EpochError) as info:
        check_epoch_holders({aid(1): revoked_at - 1, aid(2): 0}, m, skip=aid(2))
    assert info.value.code is Code.EPOCH_COMPROMISED
    # ... but the owner's own writers are judged by rule 7c, through their reg.
    check_epoch_holders({aid(1): revoked_at - 1, aid(2): 0}, m, skip=aid(1))
    # Sealed after it: fine for everyone.
    check_epoch_holders({aid(1): revoked_at, aid(2): 0}, m, skip=aid(2))


def test_create_names_the_space_owner() -> None:
    own = decode_entry(ms.create(SPACE, D1, person(1)[1], 0))
    check_create_owner(own, aid(1))
    with pytest.raises(AuthorizationError) as info:
        check_create_owner(own, aid(2))
    assert info.value.code is Code.NOT_AUTHORIZED
    add = decode_entry(ms.add_member(with_members(), D1, person(1)[1], account(2).public,
                                     Role.WRITER, 0))
    check_create_owner(add, aid(2))  # only create is bound to the owner


def test_holders_of_v2_and_v3_packages() -> None:
    assert holders_of(None, aid(1), 4) == {aid(1): 4}
    assert holders_of(((aid(1), 4), (aid(2), 7)), aid(1), 0) == {aid(1): 4, aid(2): 7}
