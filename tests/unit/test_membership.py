"""Space membership entries (sddsf.protocol.membership).

Covers: each entry kind built, verified and folded; the signer device checked
in its account's registry at the stated position (unknown, revoked, ahead of
the verifier, back-dated below an earlier entry, registry of another key);
admin-only changes; leave by the member itself; create only first; duplicate
add; changes for non-members; the last admin kept; replays; ``prev`` that was
not applied; another space; decoding (unknown type, unknown field, bad role,
member id not its key, non-canonical bytes, version); the conflict rule (two
admins removing each other: the log's first wins); the write/read queries.
Hypothesis: any single change by a non-admin is refused; any sequence of
entries keeps an admin, folds deterministically, and a refused entry changes
nothing; a removed member's and a reader's ``check_write`` is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from factories import ACCOUNT, D1, D2, D3, NOW_MS, SPACE, account, base_registry, revoked_registry
from sddsf.errors import (
    AuthorizationError,
    Code,
    ContextError,
    DecodeError,
    MembershipError,
    SddsfError,
    SignatureError,
)
from sddsf.protocol import membership as ms
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import DeviceKeys
from sddsf.protocol.membership import EntryType, MembershipState, Role
from sddsf.protocol.registry import RegistryState, genesis, verify_registry

OTHER_SPACE_ID = bytes([0xAB]) * 16


@cache
def person(i: int) -> tuple[DeviceKeys, RegistryState]:
    """Account ``i``'s one device and its verified registry (account 1: D1, D2
    active, D3 revoked)."""
    if i == 1:
        return D1, revoked_registry().state
    dev = DeviceKeys.from_seeds(bytes([0x30 + i]) * 32, bytes([0x60 + i]) * 32)
    g = genesis(account(i), dev, "device", NOW_MS)
    return dev, verify_registry([g], pinned=account(i).public)


def aid(i: int) -> bytes:
    return account(i).account_id


def registry_of(account_id: bytes) -> RegistryState | None:
    for i in range(1, 6):
        if aid(i) == account_id:
            return person(i)[1]
    return None


def created() -> MembershipState:
    dev, reg = person(1)
    return MembershipState.empty(SPACE).apply(ms.create(SPACE, dev, reg, NOW_MS), registry_of)


def add(state: MembershipState, by: int, who: int, role: Role) -> bytes:
    dev, reg = person(by)
    return ms.add_member(state, dev, reg, account(who).public, role, NOW_MS)


def with_members(*roles: tuple[int, Role]) -> MembershipState:
    """Owner 1 (admin), then each (account, role) added by the owner."""
    state = created()
    for who, role in roles:
        state = state.apply(add(state, 1, who, role), registry_of)
    return state


def refused(state: MembershipState, entry: bytes, exc: type[SddsfError], code: Code) -> None:
    with pytest.raises(exc) as info:
        state.apply(entry, registry_of)
    assert info.value.code is code


# ---------------------------------------------------------------- each kind


def test_create_makes_the_owner_the_one_admin() -> None:
    state = created()
    assert state.admins() == [aid(1)]
    assert state.members[aid(1)].key.signing_key.raw == ACCOUNT.public.signing_key.raw
    assert len(state.applied) == 1 and state.head == state.applied[0]


def test_add_role_remove_leave_fold_to_the_expected_members() -> None:
    state = with_members((2, Role.WRITER), (3, Role.READER))
    d2, r2 = person(2)
    state = state.apply(ms.change_role(state, D1, person(1)[1], aid(2), Role.ADMIN, NOW_MS),
                        registry_of)
    state = state.apply(ms.remove_member(state, d2, r2, aid(3), NOW_MS), registry_of)
    state = state.apply(ms.leave(state, D1, person(1)[1], NOW_MS), registry_of)
    assert {a: m.role for a, m in state.members.items()} == {aid(2): Role.ADMIN}
    assert len(state.applied) == 6


def test_a_second_device_of_the_admin_signs_too() -> None:
    state = created()
    entry = ms.add_member(state, D2, person(1)[1], account(2).public, Role.WRITER, NOW_MS)
    assert state.apply(entry, registry_of).role_of(aid(2)) is Role.WRITER


def test_queries_and_check_write() -> None:
    state = with_members((2, Role.WRITER), (3, Role.READER))
    assert ms.is_admin(state, aid(1)) and not ms.is_admin(state, aid(2))
    assert ms.can_write(state, aid(1)) and ms.can_write(state, aid(2))
    assert not ms.can_write(state, aid(3)) and ms.can_read(state, aid(3))
    assert not ms.can_read(state, aid(4))
    ms.check_write(state, aid(2))
    for who in (3, 4):
        with pytest.raises(AuthorizationError) as info:
            ms.check_write(state, aid(who))
        assert info.value.code is Code.NOT_AUTHORIZED


# ---------------------------------------------------------------- signer device


def test_bad_signature_is_refused() -> None:
    state = created()
    body = ms.build_body(EntryType.ADD, space=SPACE, prev=state.head, member=aid(2),
                         registry=person(1)[1], device_id=D1.device_id, ts_ms=NOW_MS,
                         fields={"account_key": account(2).public.signing_key.raw,
                                 "recovery_key": account(2).public.recovery_key,
                                 "role": "writer"})
    refused(state, ms.assemble_entry(body, ms.sign_body(body, D2)), SignatureError,
            Code.SIG_INVALID)


def test_revoked_device_is_refused() -> None:
    state = created()
    entry = ms.add_member(state, D3, person(1)[1], account(2).public, Role.WRITER, NOW_MS)
    refused(state, entry, AuthorizationError, Code.REVOKED)


def test_device_of_another_account_is_unknown() -> None:
    state = created()
    entry = ms.add_member(state, person(2)[0], person(1)[1], account(3).public, Role.WRITER,
                          NOW_MS)
    refused(state, entry, AuthorizationError, Code.UNKNOWN_DEVICE)


def test_device_added_after_the_stated_position_is_unknown() -> None:
    state = created()
    at_genesis = verify_registry(base_registry().entries[:1], pinned=ACCOUNT.public)
    entry = ms.add_member(state, D2, at_genesis, account(2).public, Role.WRITER, NOW_MS)
    refused(state, entry, AuthorizationError, Code.UNKNOWN_DEVICE)


def test_registry_position_ahead_of_the_verifier_or_missing() -> None:
    state = created()
    entry = ms.add_member(state, D1, person(1)[1], account(2).public, Role.WRITER, NOW_MS)
    behind = base_registry().state  # seq 1 < the entry's 3
    with pytest.raises(ContextError):
        state.apply(entry, lambda a: behind if a == aid(1) else None)
    with pytest.raises(ContextError):
        state.apply(entry, lambda a: None)


def test_registry_of_another_account_key_is_refused() -> None:
    state = created()
    entry = ms.add_member(state, D1, person(1)[1], account(2).public, Role.WRITER, NOW_MS)
    with pytest.raises(AuthorizationError) as info:
        state.apply(entry, lambda a: person(2)[1])
    assert info.value.code is Code.NOT_AUTHORIZED


def test_registry_position_may_not_go_back_per_account() -> None:
    # After an entry at registry seq 3, the same account may not state seq 1:
    # a device revoked in between could otherwise back-date its entries.
    state = with_members((2, Role.WRITER))
    old = verify_registry(base_registry().entries, pinned=ACCOUNT.public)
    entry = ms.change_role(state, D1, old, aid(2), Role.READER, NOW_MS)
    refused(state, entry, ContextError, Code.WRONG_CONTEXT)


# ---------------------------------------------------------------- rules


def test_non_admin_changes_are_refused() -> None:
    state = with_members((2, Role.WRITER), (3, Role.READER))
    d2, r2 = person(2)
    for entry in (add(state, 2, 4, Role.READER),
                  ms.change_role(state, d2, r2, aid(3), Role.WRITER, NOW_MS),
                  ms.remove_member(state, d2, r2, aid(3), NOW_MS),
                  add(state, 4, 5, Role.READER)):  # 4 is not a member at all
        refused(state, entry, AuthorizationError, Code.NOT_AUTHORIZED)


def test_leave_is_signed_by_the_leaving_member() -> None:
    state = with_members((2, Role.WRITER), (3, Role.WRITER))
    d2, r2 = person(2)
    body = ms.build_body(EntryType.LEAVE, space=SPACE, prev=state.head, member=aid(3),
                         registry=r2, device_id=d2.device_id, ts_ms=NOW_MS, fields={})
    refused(state, ms.assemble_entry(body, ms.sign_body(body, d2)), AuthorizationError,
            Code.NOT_AUTHORIZED)
    assert state.apply(ms.leave(state, d2, r2, NOW_MS), registry_of).role_of(aid(2)) is None


def test_create_only_first_and_nothing_before_create() -> None:
    state = created()
    refused(state, ms.create(SPACE, D1, person(1)[1], NOW_MS + 1), MembershipError,
            Code.MEMBERSHIP_INVALID)
    refused(MembershipState.empty(SPACE), add(state, 1, 2, Role.WRITER), AuthorizationError,
            Code.NOT_AUTHORIZED)


def test_create_for_another_account_is_refused() -> None:
    body = ms.build_body(EntryType.CREATE, space=SPACE, prev=bytes(32), member=aid(2),
                         registry=person(1)[1], device_id=D1.device_id, ts_ms=NOW_MS,
                         fields={"account_key": account(2).public.signing_key.raw,
                                 "recovery_key": account(2).public.recovery_key,
                                 "role": "admin"})
    refused(MembershipState.empty(SPACE), ms.assemble_entry(body, ms.sign_body(body, D1)),
            MembershipError, Code.MEMBERSHIP_INVALID)


def test_duplicate_add_and_changes_for_non_members() -> None:
    state = with_members((2, Role.WRITER))
    reg = person(1)[1]
    for entry in (add(state, 1, 2, Role.READER),
                  ms.change_role(state, D1, reg, aid(3), Role.WRITER, NOW_MS),
                  ms.remove_member(state, D1, reg, aid(3), NOW_MS),
                  ms.change_role(state, D1, reg, aid(2), Role.WRITER, NOW_MS)):
        refused(state, entry, MembershipError, Code.MEMBERSHIP_INVALID)


def test_the_last_admin_stays() -> None:
    state = with_members((2, Role.WRITER))
    reg = person(1)[1]
    for entry in (ms.remove_member(state, D1, reg, aid(1), NOW_MS),
                  ms.change_role(state, D1, reg, aid(1), Role.WRITER, NOW_MS),
                  ms.leave(state, D1, reg, NOW_MS)):
        refused(state, entry, MembershipError, Code.MEMBERSHIP_INVALID)
    # With a second admin, the first may go.
    state = state.apply(ms.change_role(state, D1, reg, aid(2), Role.ADMIN, NOW_MS), registry_of)
    assert state.apply(ms.leave(state, D1, reg, NOW_MS), registry_of).admins() == [aid(2)]


def test_replay_prev_and_space_are_refused() -> None:
    state = with_members((2, Role.WRITER))
    first_add = add(created(), 1, 2, Role.WRITER)
    removed = state.apply(ms.remove_member(state, D1, person(1)[1], aid(2), NOW_MS),
                          registry_of)
    # Replaying the old add would silently bring the removed member back.
    refused(removed, first_add, MembershipError, Code.MEMBERSHIP_INVALID)
    # An add that builds on an entry this membership never applied.
    elsewhere = MembershipState(SPACE, state.members, (bytes([7]) * 32,), {},
                                frozenset({bytes([7]) * 32}))
    refused(state, add(elsewhere, 1, 3, Role.READER), ContextError, Code.WRONG_CONTEXT)
    other = MembershipState.empty(OTHER_SPACE_ID)
    refused(other, ms.create(SPACE, D1, person(1)[1], NOW_MS), ContextError,
            Code.WRONG_CONTEXT)
    # A re-add after removal is a new entry, and allowed.
    assert removed.apply(add(removed, 1, 2, Role.READER), registry_of).role_of(aid(2)) is \
        Role.READER


def test_two_admins_removing_each_other_the_first_in_the_log_wins() -> None:
    state = with_members((2, Role.ADMIN))
    d2, r2 = person(2)
    one_removes_two = ms.remove_member(state, D1, person(1)[1], aid(2), NOW_MS)
    two_removes_one = ms.remove_member(state, d2, r2, aid(1), NOW_MS)
    for first, second, winner in ((one_removes_two, two_removes_one, 1),
                                  (two_removes_one, one_removes_two, 2)):
        result = ms.fold(SPACE, [first, second], registry_of, start=state)
        assert result.state.admins() == [aid(winner)]
        assert [(i, e.code) for i, e in result.refused] == [(1, Code.NOT_AUTHORIZED)]


# ---------------------------------------------------------------- decoding


def _resigned(entry: bytes, **changes: object) -> bytes:
    _, body_bytes, _ = decode(entry)
    body = {**decode(body_bytes), **changes}  # type: ignore[dict-item]
    raw = encode(body)
    return ms.assemble_entry(raw, ms.sign_body(raw, D1))


@pytest.mark.parametrize(("changes", "code"), [
    ({"type": "invite"}, Code.UNSUPPORTED_VERSION),
    ({"v": 2}, Code.UNSUPPORTED_VERSION),
    ({"extra": 1}, Code.MALFORMED),
    ({"role": "owner"}, Code.MALFORMED),
    ({"space": bytes(32)}, Code.MALFORMED),
    ({"member": aid(3)}, Code.MEMBERSHIP_INVALID),
])
def test_decoding_refusals(changes: dict[str, object], code: Code) -> None:
    entry = _resigned(add(created(), 1, 2, Role.WRITER), **changes)
    with pytest.raises(SddsfError) as info:
        ms.decode_entry(entry)
    assert info.value.code is code


def test_non_canonical_and_oversized_bytes_are_refused() -> None:
    entry = add(created(), 1, 2, Role.WRITER)
    # The outer array head in its two-byte form (0x98 0x03) instead of 0x83.
    with pytest.raises(DecodeError) as info:
        ms.decode_entry(b"\x98\x03" + entry[1:])
    assert info.value.code is Code.MALFORMED
    with pytest.raises(DecodeError) as info:
        ms.decode_entry(entry + bytes(ms.MAX_MEMBERSHIP_ENTRY))
    assert info.value.code is Code.TOO_LARGE


def test_decoded_fields() -> None:
    e = ms.decode_entry(add(created(), 1, 2, Role.WRITER))
    assert (e.type, e.member, e.signer, e.device, e.role) == (
        EntryType.ADD, aid(2), aid(1), D1.device_id, Role.WRITER)
    assert e.registry_seq == person(1)[1].seq and e.hash == ms.entry_hash(e.raw)


# ---------------------------------------------------------------- properties

ACCOUNTS = (1, 2, 3, 4)
ROLES = tuple(Role)


def _make(state: MembershipState, kind: str, by: int, who: int, role: Role) -> bytes:
    dev, reg = person(by)
    builders: dict[str, Callable[[], bytes]] = {
        "add": lambda: ms.add_member(state, dev, reg, account(who).public, role, NOW_MS),
        "role": lambda: ms.change_role(state, dev, reg, aid(who), role, NOW_MS),
        "remove": lambda: ms.remove_member(state, dev, reg, aid(who), NOW_MS),
        "leave": lambda: ms.leave(state, dev, reg, NOW_MS),
    }
    return builders[kind]()


steps = st.lists(st.tuples(st.sampled_from(("add", "role", "remove", "leave")),
                           st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS),
                           st.sampled_from(ROLES), st.booleans()), max_size=12)


@settings(max_examples=60, deadline=None)
@given(setup=st.lists(st.tuples(st.sampled_from((2, 3, 4)), st.sampled_from(ROLES)),
                      max_size=3, unique_by=lambda t: t[0]),
       kind=st.sampled_from(("add", "role", "remove")), who=st.sampled_from(ACCOUNTS),
       role=st.sampled_from(ROLES), signer=st.sampled_from((2, 3, 4)))
def test_any_change_by_a_non_admin_is_refused(setup: list[tuple[int, Role]], kind: str,
                                              who: int, role: Role, signer: int) -> None:
    state = with_members(*setup)
    assume(not ms.is_admin(state, aid(signer)))
    entry = _make(state, kind, signer, who, role)
    with pytest.raises(AuthorizationError) as info:
        state.apply(entry, registry_of)
    assert info.value.code is Code.NOT_AUTHORIZED


@settings(max_examples=80, deadline=None)
@given(steps=steps)
def test_any_sequence_keeps_an_admin_and_folds_deterministically(
        steps: list[tuple[str, int, int, Role, bool]]) -> None:
    first = ms.create(SPACE, D1, person(1)[1], NOW_MS)
    state = MembershipState.empty(SPACE).apply(first, registry_of)
    log = [first]
    stale = state
    for kind, by, who, role, use_stale in steps:
        # Entries built on the current state or on an older one (an offline
        # signer's view): both kinds reach the log in this order.
        base = stale if use_stale else state
        entry = _make(base, kind, by, who, role)
        log.append(entry)
        try:
            after = state.apply(entry, registry_of)
        except SddsfError:
            after = state
        assert after.admins(), "an entry removed the last admin"
        stale, state = state, after
    folded = ms.fold(SPACE, log, registry_of)
    again = ms.fold(SPACE, log, registry_of)
    assert folded.state == again.state == state
    assert [i for i, _ in folded.refused] == [i for i, _ in again.refused]


@settings(max_examples=60, deadline=None)
@given(steps=steps)
def test_a_refused_entry_changes_nothing(steps: list[tuple[str, int, int, Role, bool]]) -> None:
    state = with_members((2, Role.ADMIN), (3, Role.WRITER))
    start, stale, log = state, state, []
    for kind, by, who, role, use_stale in steps:
        entry = _make(stale if use_stale else state, kind, by, who, role)
        log.append(entry)
        seen = (dict(state.members), state.applied, dict(state.registry_seqs))
        try:
            after = state.apply(entry, registry_of)
        except SddsfError:
            assert (dict(state.members), state.applied, dict(state.registry_seqs)) == seen
            continue
        assert after.applied == (*state.applied, ms.entry_hash(entry))
        stale, state = state, after
    # Folding the log without its refused entries gives the same state.
    result = ms.fold(SPACE, log, registry_of, start=start)
    skipped = {i for i, _ in result.refused}
    kept = ms.fold(SPACE, [e for i, e in enumerate(log) if i not in skipped], registry_of,
                   start=start)
    assert result.state == kept.state == state and not kept.refused


@settings(max_examples=40, deadline=None)
@given(role=st.sampled_from(ROLES), by_leave=st.booleans())
def test_a_removed_member_and_a_reader_cannot_write(role: Role, by_leave: bool) -> None:
    state = with_members((2, role), (3, Role.READER))
    d2, r2 = person(2)
    if role is not Role.READER:
        ms.check_write(state, aid(2))
    gone = state.apply(ms.leave(state, d2, r2, NOW_MS) if by_leave else
                       ms.remove_member(state, D1, person(1)[1], aid(2), NOW_MS), registry_of)
    for who in (2, 3):
        with pytest.raises(AuthorizationError) as info:
            ms.check_write(gone, aid(who))
        assert info.value.code is Code.NOT_AUTHORIZED
    # And a removed member's later entries are refused too.
    refused(gone, ms.leave(gone, d2, r2, NOW_MS + 1), AuthorizationError, Code.NOT_AUTHORIZED)
