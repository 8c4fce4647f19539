"""Version 3 key packages for shared spaces (sddsf.protocol.keypackage_v3).

Covers: build/decode/verify with 3 member accounts x 2 devices, every member
device and member recovery key opening the key and a non-member's device
refused; a one-account space moving to version 3 (and a new member reading
history back to epoch 0); ``registry_seq_for``; each verification refusal in
order: a version 2 package given to the shared verifier and a version 3 one to
the one-account verifier, a version 2 package after a version 3 one, other
space, wrong epoch, broken prev, membership head not applied, a member
missing or extra, a member registry missing or of another account, a
registry behind the package, a position moving backwards (after version 2
and version 3 packages), the creator account not a member, the creator
device unknown, added later or revoked, tampered or misattributed signature,
a recovery key missing, a device of no member, a revoked or not yet added
device included, an active device left out; decode refusals of the new
fields and the larger recipient bound; builder refusals; ``needs_rotation_v3``
after a member removal, a member add, a revocation in a non-creator account,
a new device. Hypothesis: for random member sets and revocations the honest
package verifies and dropping any one recipient (re-signed) is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import EPOCH_KEY, NOW_MS, OTHER_EPOCH_KEY, OTHER_SPACE, SPACE, ZERO32
from sddsf.errors import (
    AuthorizationError,
    Code,
    ContextError,
    DecodeError,
    EpochError,
    SignatureError,
    UsageError,
)
from sddsf.protocol import keypackage_v3, labels
from sddsf.protocol import membership as ms
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import AccountKeys, DeviceKeys
from sddsf.protocol.keypackage import (
    MAX_PACKAGE_MEMBERS,
    MAX_PACKAGE_RECIPIENTS,
    KeyPackage,
    active_at,
    build_key_package,
    decode_key_package,
    key_commitment,
    open_epoch_key,
    open_key_history,
    registry_seq_for,
    unwrap_previous_keys,
    verify_key_package,
)
from sddsf.protocol.keypackage_v3 import (
    build_key_package_v3,
    needs_rotation_v3,
    rotation_due_v3,
    verify_key_package_v3,
)
from sddsf.protocol.labels import labelled
from sddsf.protocol.membership import MembershipState, Role
from sddsf.protocol.registry import (
    RegistryState,
    add_device,
    genesis,
    revoke_device,
    verify_registry,
)
from sddsf.testing.seeded import seal_seeded

Regs = dict[bytes, RegistryState]


# ------------------------------------------------------------------ the world


def _seed(*parts: object) -> bytes:
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()


@cache
def acct(i: int) -> AccountKeys:
    return AccountKeys.from_secret(_seed("kp3/account", i))


@cache
def dev(i: int, j: int) -> DeviceKeys:
    """Device ``j`` of account ``i``."""
    return DeviceKeys.from_seeds(_seed("kp3/sign", i, j), _seed("kp3/kx", i, j))


def aid(i: int) -> bytes:
    return acct(i).account_id


@cache
def reg(i: int, n: int = 2, revoked: tuple[int, ...] = ()) -> RegistryState:
    """Account ``i``: device ``j`` added at seq ``j`` for j < n (by the account
    key), then each of ``revoked`` revoked in turn (seq n, n + 1, ...)."""
    state = verify_registry([genesis(acct(i), dev(i, 0), "d0", NOW_MS)], pinned=acct(i).public)
    for j in range(1, n):
        state = state.apply(add_device(state, acct(i), dev(i, j), f"d{j}", NOW_MS + j))
    for j in revoked:
        state = state.apply(revoke_device(state, acct(i), dev(i, j).device_id, "lost",
                                          NOW_MS + 100 + j))
    return state


def regs(*states: RegistryState) -> Regs:
    return {s.account_id: s for s in states}


REGS: Regs = regs(reg(1), reg(2), reg(3))


@dataclass(frozen=True)
class Members:
    """A folded membership log and the member set after each applied entry."""

    state: MembershipState
    sets: Mapping[bytes, frozenset[bytes]]

    def members_at(self, head: bytes) -> frozenset[bytes] | None:
        return self.sets.get(head)

    def then(self, entry: bytes, registries: Regs) -> Members:
        state = self.state.apply(entry, registries.get)
        return Members(state, {**self.sets, state.head: frozenset(state.members)})


def membership(accounts: Sequence[int], registries: Regs = REGS) -> Members:
    """Account ``accounts[0]`` (device 0) creates the space and adds the others."""
    owner = accounts[0]
    owner_reg = registries[aid(owner)]
    m = Members(MembershipState.empty(SPACE), {}).then(
        ms.create(SPACE, dev(owner, 0), owner_reg, NOW_MS), registries)
    for i in accounts[1:]:
        m = m.then(ms.add_member(m.state, dev(owner, 0), owner_reg, acct(i).public,
                                 Role.WRITER, NOW_MS), registries)
    return m


M3 = membership([1, 2, 3])


def seeds_for(registries: Regs, members: Collection[bytes], start: int = 0) -> list[bytes]:
    count = sum(len(registries[a].active_devices()) + 1 for a in set(members) if a in registries)
    return [_seed("kp3/ephemeral", start + k) for k in range(count)]


def build(registries: Regs = REGS, *, members: Collection[bytes] | None = None,
          m: Members = M3, creator: tuple[int, int] = (1, 0), epoch: int = 0,
          prev: bytes = ZERO32, key: bytes = EPOCH_KEY, space: bytes = SPACE,
          previous_keys: Sequence[bytes] = ()) -> bytes:
    chosen = set(m.state.members) if members is None else set(members)
    return build_key_package_v3(
        creator=dev(*creator), creator_account=aid(creator[0]), registries=registries,
        members=chosen, membership_head=m.state.head, space=space, epoch=epoch, prev=prev,
        epoch_key=key, ts_ms=NOW_MS, previous_keys=previous_keys,
        ephemeral_seeds=seeds_for(registries, chosen))


def verify(data: bytes, registries: Regs = REGS, *, m: Members = M3,
           previous: KeyPackage | None = None, space: bytes = SPACE) -> KeyPackage:
    return verify_key_package_v3(data, space=space, previous=previous, registries=registries,
                                 members_at=m.members_at)


def honest_targets(stated: Mapping[bytes, int], registries: Regs = REGS) -> dict[bytes, bytes]:
    """Recipient id -> X25519 key: every device active at its account's stated
    seq, plus every member's recovery key."""
    out: dict[bytes, bytes] = {}
    for account, seq in stated.items():
        out.update({r.device_id: r.public.kx_key for r in active_at(registries[account], seq)})
        out[account] = registries[account].account.recovery_key
    return out


def current(registries: Regs = REGS, accounts: Sequence[int] = (1, 2, 3)) -> dict[bytes, int]:
    return {aid(i): registries[aid(i)].seq for i in accounts}


def by_hand(stated: Mapping[bytes, int], *, targets: Mapping[bytes, bytes] | None = None,
            creator: DeviceKeys | None = None, creator_account: bytes | None = None,
            signer: DeviceKeys | None = None, membership_head: bytes = M3.state.head,
            registries: Regs = REGS, epoch: int = 0, prev: bytes = ZERO32) -> bytes:
    """A version 3 package assembled field by field and signed by ``signer``
    (default: the creator, default dev(1, 0) of account 1)."""
    creator = creator or dev(1, 0)
    rcpt = honest_targets(stated, registries) if targets is None else targets
    plaintext = labelled(labels.KEY_PACKAGE_SEALED, SPACE, epoch, EPOCH_KEY)
    rows = [[rid, seal_seeded(rcpt[rid], plaintext, _seed("kp3/hand", k))]
            for k, rid in enumerate(sorted(rcpt))]
    body = encode({"v": 3, "space": SPACE, "epoch": epoch, "prev": prev,
                   "creator": creator.device_id, "ts": NOW_MS,
                   "creator_account": aid(1) if creator_account is None else creator_account,
                   "members": [[a, s] for a, s in sorted(stated.items())],
                   "membership": membership_head, "recipients": rows,
                   "key_commit": key_commitment(SPACE, epoch, EPOCH_KEY), "prev_keys": None})
    return encode([3, body, (signer or creator).sign(labelled(labels.KEY_PACKAGE_SIG, body))])


def refused(data: bytes, exc: type[Exception], code: Code, registries: Regs = REGS, *,
            m: Members = M3, previous: KeyPackage | None = None,
            space: bytes = SPACE) -> None:
    with pytest.raises(exc) as info:
        verify(data, registries, m=m, previous=previous, space=space)
    assert getattr(info.value, "code", None) is code


# ------------------------------------------------------------------ happy path


def test_round_trip_three_accounts_two_devices_each() -> None:
    data = build()
    pkg = verify(data)
    assert pkg == decode_key_package(data)
    assert pkg.version == 3
    assert pkg.creator_account == aid(1) and pkg.membership == M3.state.head
    assert pkg.members == tuple(sorted((aid(i), 1) for i in (1, 2, 3)))
    assert set(pkg.recipients) == {aid(i) for i in (1, 2, 3)} | {
        dev(i, j).device_id for i in (1, 2, 3) for j in (0, 1)}
    assert pkg.registry_seq == 1  # the creator account's position
    for i in (1, 2, 3):
        assert open_epoch_key(pkg, aid(i), acct(i).recovery) == EPOCH_KEY
        for j in (0, 1):
            assert open_epoch_key(pkg, dev(i, j).device_id, dev(i, j).kx) == EPOCH_KEY


def test_a_device_of_an_account_not_in_the_package_cannot_open_it() -> None:
    pkg = verify(build())
    for rid, keys in ((dev(4, 0).device_id, dev(4, 0).kx), (aid(4), acct(4).recovery)):
        with pytest.raises(AuthorizationError) as info:
            open_epoch_key(pkg, rid, keys)
        assert info.value.code is Code.NOT_AUTHORIZED


def test_without_seeds_each_recipient_gets_a_fresh_ephemeral_key() -> None:
    def fresh() -> KeyPackage:
        return verify(build_key_package_v3(
            creator=dev(1, 0), creator_account=aid(1), registries=REGS, members=set(REGS),
            membership_head=M3.state.head, space=SPACE, epoch=0, prev=ZERO32,
            epoch_key=EPOCH_KEY, ts_ms=NOW_MS))

    one, two = fresh(), fresh()
    assert set(one.recipients) == set(two.recipients)
    assert all(one.recipients[r][:32] != two.recipients[r][:32] for r in one.recipients)
    assert open_epoch_key(one, dev(3, 1).device_id, dev(3, 1).kx) == EPOCH_KEY


def test_registry_seq_for_each_version() -> None:
    registries = regs(reg(1), reg(2, 3), reg(3))
    pkg = verify(build(registries), registries)
    assert [registry_seq_for(pkg, aid(i)) for i in (1, 2, 3, 4)] == [1, 2, 1, None]
    v2 = decode_key_package(build_key_package(creator=dev(1, 0), registry=reg(1), space=SPACE,
                                              epoch=0, prev=ZERO32, epoch_key=EPOCH_KEY,
                                              ts_ms=NOW_MS))
    assert (v2.members, v2.creator_account, v2.membership) == (None, None, None)
    assert registry_seq_for(v2, aid(1)) == registry_seq_for(v2, aid(4)) == v2.registry_seq


def test_hand_built_package_matching_the_builder_verifies() -> None:
    assert verify(by_hand(current())).members == tuple(sorted(current().items()))


def test_a_one_account_space_moves_to_version_3_and_a_new_member_reads_its_history() -> None:
    v2 = verify_key_package(build_key_package(
        creator=dev(1, 0), registry=reg(1), space=SPACE, epoch=0, prev=ZERO32,
        epoch_key=EPOCH_KEY, ts_ms=NOW_MS), registry=reg(1), space=SPACE, previous=None)
    m2 = membership([1, 2])
    v3 = verify(build(m=m2, creator=(2, 1), epoch=1, prev=v2.hash, key=OTHER_EPOCH_KEY,
                      previous_keys=[EPOCH_KEY]), m=m2, previous=v2)
    assert unwrap_previous_keys(v3, OTHER_EPOCH_KEY) == {0: EPOCH_KEY}
    assert open_key_history([v2, v3], dev(2, 0).device_id, dev(2, 0).kx) == {
        0: EPOCH_KEY, 1: OTHER_EPOCH_KEY}
    assert open_key_history([v2, v3], aid(2), acct(2).recovery) == {
        0: EPOCH_KEY, 1: OTHER_EPOCH_KEY}


def test_a_rotation_after_a_removal_locks_the_removed_member_out() -> None:
    first = verify(build())
    m = M3.then(ms.remove_member(M3.state, dev(1, 0), reg(1), aid(3), NOW_MS), REGS)
    assert needs_rotation_v3(first, REGS, m.state.members)
    second = verify(build(m=m, epoch=1, prev=first.hash, key=OTHER_EPOCH_KEY,
                          previous_keys=[EPOCH_KEY]), m=m, previous=first)
    assert not needs_rotation_v3(second, REGS, m.state.members)
    for rid, keys in ((dev(3, 0).device_id, dev(3, 0).kx), (aid(3), acct(3).recovery)):
        with pytest.raises(AuthorizationError) as info:
            open_epoch_key(second, rid, keys)
        assert info.value.code is Code.NOT_AUTHORIZED


# ------------------------------------------------------- refusals, in order


def test_a_one_account_package_is_refused_by_the_shared_verifier() -> None:
    v2 = build_key_package(creator=dev(1, 0), registry=reg(1), space=SPACE, epoch=0,
                           prev=ZERO32, epoch_key=EPOCH_KEY, ts_ms=NOW_MS)
    with pytest.raises(ContextError) as info:  # refused before the membership is asked
        verify_key_package_v3(v2, space=SPACE, previous=None, registries=regs(reg(1)),
                              members_at=lambda _head: {aid(1)})
    assert info.value.code is Code.WRONG_CONTEXT


def test_a_shared_package_is_refused_by_the_one_account_verifier() -> None:
    # A package listing one member would otherwise pass every version 2 check.
    solo = membership([1], regs(reg(1)))
    data = build(regs(reg(1)), m=solo)
    verify(data, regs(reg(1)), m=solo)
    with pytest.raises(ContextError) as info:
        verify_key_package(data, registry=reg(1), space=SPACE, previous=None)
    assert info.value.code is Code.WRONG_CONTEXT


def test_a_version_2_package_after_a_version_3_one_is_refused() -> None:
    solo = membership([1], regs(reg(1)))
    first = verify(build(regs(reg(1)), m=solo), regs(reg(1)), m=solo)
    v2 = build_key_package(creator=dev(1, 0), registry=reg(1), space=SPACE, epoch=1,
                           prev=first.hash, epoch_key=OTHER_EPOCH_KEY, ts_ms=NOW_MS)
    with pytest.raises(ContextError) as info:
        verify_key_package(v2, registry=reg(1), space=SPACE, previous=first)
    assert info.value.code is Code.WRONG_CONTEXT
    refused(v2, ContextError, Code.WRONG_CONTEXT, previous=first)


def test_other_space() -> None:
    refused(build(), ContextError, Code.WRONG_CONTEXT, space=OTHER_SPACE)


def test_wrong_epoch_and_prev() -> None:
    first = verify(build())
    refused(build(epoch=1, prev=first.hash), EpochError, Code.UNKNOWN_EPOCH)
    refused(build(), EpochError, Code.UNKNOWN_EPOCH, previous=first)
    refused(build(epoch=1, prev=bytes([3]) * 32), ContextError, Code.WRONG_CONTEXT,
            previous=first)


def test_membership_head_not_applied() -> None:
    refused(by_hand(current(), membership_head=bytes([9]) * 32), ContextError,
            Code.WRONG_CONTEXT)


def test_a_member_missing() -> None:
    refused(build(members={aid(1), aid(2)}), AuthorizationError, Code.NOT_AUTHORIZED)


def test_an_extra_account() -> None:
    registries = {**REGS, aid(4): reg(4)}
    refused(build(registries, members={aid(i) for i in (1, 2, 3, 4)}), AuthorizationError,
            Code.NOT_AUTHORIZED, registries)


def test_an_older_membership_set_is_refused_at_the_newer_head() -> None:
    # The package lists 3 members but names the head after which only 1 and 2 were.
    m2 = membership([1, 2])
    refused(by_hand(current(), membership_head=m2.state.head), AuthorizationError,
            Code.NOT_AUTHORIZED)


def test_a_member_registry_missing() -> None:
    refused(build(), ContextError, Code.WRONG_CONTEXT, regs(reg(1), reg(2)))


def test_a_registry_of_another_account() -> None:
    with pytest.raises(UsageError):
        verify(build(), {**REGS, aid(3): reg(4)})


def test_a_member_registry_behind_the_package() -> None:
    ahead = regs(reg(1), reg(2, 3), reg(3))
    refused(build(ahead), ContextError, Code.WRONG_CONTEXT)


def test_a_member_position_moving_backwards_after_a_version_3_package() -> None:
    ahead = regs(reg(1), reg(2, 3), reg(3))
    first = verify(build(ahead), ahead)
    back = build(REGS, epoch=1, prev=first.hash, key=OTHER_EPOCH_KEY)
    refused(back, ContextError, Code.WRONG_CONTEXT, ahead, previous=first)
    verify(build(ahead, epoch=1, prev=first.hash, key=OTHER_EPOCH_KEY), ahead, previous=first)


def test_a_member_position_moving_backwards_after_a_version_2_package() -> None:
    v2 = verify_key_package(build_key_package(
        creator=dev(1, 0), registry=reg(1), space=SPACE, epoch=0, prev=ZERO32,
        epoch_key=EPOCH_KEY, ts_ms=NOW_MS), registry=reg(1), space=SPACE, previous=None)
    back = by_hand({**current(), aid(1): 0}, epoch=1, prev=v2.hash)
    refused(back, ContextError, Code.WRONG_CONTEXT, previous=v2)
    verify(by_hand(current(), epoch=1, prev=v2.hash), previous=v2)


def test_the_creator_account_not_a_member() -> None:
    registries = {**REGS, aid(4): reg(4)}
    data = by_hand(current(), creator=dev(4, 0), creator_account=aid(4), registries=registries)
    refused(data, AuthorizationError, Code.NOT_AUTHORIZED, registries)


def test_the_creator_not_a_device_of_its_account() -> None:
    refused(by_hand(current(), creator=dev(2, 0)), AuthorizationError, Code.UNKNOWN_DEVICE)


def test_the_creator_added_after_the_stated_position() -> None:
    registries = regs(reg(1, 3), reg(2), reg(3))
    data = by_hand({**current(registries), aid(1): 1}, creator=dev(1, 2),
                   registries=registries)
    refused(data, AuthorizationError, Code.UNKNOWN_DEVICE, registries)


def test_the_creator_revoked() -> None:
    registries = regs(reg(1, 2, (1,)), reg(2), reg(3))
    data = by_hand(current(registries), creator=dev(1, 1), registries=registries)
    refused(data, AuthorizationError, Code.REVOKED, registries)


def test_tampered_signature() -> None:
    outer = decode(build())
    assert isinstance(outer, list)
    sig = bytearray(outer[2])
    sig[0] ^= 1
    refused(encode([outer[0], outer[1], bytes(sig)]), SignatureError, Code.SIG_INVALID)


def test_signature_by_another_device_of_the_creator_account() -> None:
    refused(by_hand(current(), signer=dev(1, 1)), SignatureError, Code.SIG_INVALID)


def test_a_member_recovery_key_missing() -> None:
    targets = honest_targets(current())
    del targets[aid(2)]
    refused(by_hand(current(), targets=targets), AuthorizationError, Code.NOT_AUTHORIZED)


def test_a_device_left_out() -> None:
    targets = honest_targets(current())
    del targets[dev(3, 1).device_id]
    refused(by_hand(current(), targets=targets), AuthorizationError, Code.NOT_AUTHORIZED)


def test_a_device_of_no_member_included() -> None:
    targets = {**honest_targets(current()), dev(4, 0).device_id: dev(4, 0).kx.public}
    refused(by_hand(current(), targets=targets), AuthorizationError, Code.UNKNOWN_DEVICE)


def test_a_revoked_device_included() -> None:
    registries = regs(reg(1), reg(2, 2, (1,)), reg(3))
    stated = current(registries)
    targets = {**honest_targets(stated, registries), dev(2, 1).device_id: dev(2, 1).kx.public}
    refused(by_hand(stated, targets=targets, registries=registries), AuthorizationError,
            Code.REVOKED, registries)


def test_a_device_added_after_its_account_position_included() -> None:
    registries = regs(reg(1), reg(2, 3), reg(3))
    stated = {**current(registries), aid(2): 1}
    targets = {**honest_targets(stated, registries), dev(2, 2).device_id: dev(2, 2).kx.public}
    refused(by_hand(stated, targets=targets, registries=registries), AuthorizationError,
            Code.REVOKED, registries)


# ------------------------------------------------------------------ decoding


def _body(data: bytes) -> dict[object, object]:
    outer = decode(data)
    assert isinstance(outer, list)
    body = decode(outer[1])
    assert isinstance(body, dict)
    return body


def _decode_with(**changes: object) -> KeyPackage:
    body = _body(build())
    body.update(changes)
    return decode_key_package(encode([3, encode(body), bytes(64)]))


@pytest.mark.parametrize("members", [
    [], "members", [[a, 1] for a in sorted((aid(1), aid(2)), reverse=True)],
    [[aid(1), 1], [aid(1), 1]],
    [[aid(1)[:31], 1]], [[aid(1), -1]], [[aid(1), True]], [[aid(1), 1, 0]]])
def test_malformed_members(members: object) -> None:
    with pytest.raises(DecodeError) as info:
        _decode_with(members=members)
    assert info.value.code is Code.MALFORMED


def test_too_many_members() -> None:
    rows = [[i.to_bytes(32, "big"), 0] for i in range(1, MAX_PACKAGE_MEMBERS + 2)]
    with pytest.raises(DecodeError) as info:
        _decode_with(members=rows)
    assert info.value.code is Code.TOO_LARGE


@pytest.mark.parametrize(("field", "value"), [("membership", bytes(31)),
                                               ("creator_account", bytes(33)),
                                               ("registry_seq", 1)])
def test_malformed_version_3_fields(field: str, value: object) -> None:
    with pytest.raises(DecodeError) as info:
        _decode_with(**{field: value})
    assert info.value.code is Code.MALFORMED


def test_a_missing_version_3_field() -> None:
    body = _body(build())
    del body["membership"]
    with pytest.raises(DecodeError) as info:
        decode_key_package(encode([3, encode(body), bytes(64)]))
    assert info.value.code is Code.MALFORMED


def test_version_3_recipient_bound() -> None:
    def rows(n: int) -> list[list[bytes]]:
        return [[i.to_bytes(32, "big"), b""] for i in range(1, n + 1)]
    # More than one account may hold (max_devices + 1 = 1025), within the shared bound.
    assert len(_decode_with(recipients=rows(1100)).recipients) == 1100
    with pytest.raises(DecodeError) as info:
        _decode_with(recipients=rows(MAX_PACKAGE_RECIPIENTS + 1))
    assert info.value.code is Code.TOO_LARGE
    v2 = _body(build_key_package(creator=dev(1, 0), registry=reg(1), space=SPACE, epoch=0,
                                 prev=ZERO32, epoch_key=EPOCH_KEY, ts_ms=NOW_MS))
    v2["recipients"] = rows(1026)
    with pytest.raises(DecodeError) as info:
        decode_key_package(encode([2, encode(v2), bytes(64)]))
    assert info.value.code is Code.TOO_LARGE


# ------------------------------------------------------------------ builder


def test_builder_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError):
        build(members=set())
    with pytest.raises(UsageError):  # creator account not a member
        build(members={aid(2), aid(3)})
    with pytest.raises(UsageError):  # creator not active
        build(regs(reg(1, 2, (1,)), reg(2), reg(3)), creator=(1, 1))
    with pytest.raises(ContextError):
        build(regs(reg(1), reg(2)))
    with pytest.raises(UsageError):
        build({**REGS, aid(3): reg(4)})
    with pytest.raises(UsageError):
        build_key_package_v3(creator=dev(1, 0), creator_account=aid(1), registries=REGS,
                             members=set(REGS), membership_head=bytes(31), space=SPACE,
                             epoch=0, prev=ZERO32, epoch_key=EPOCH_KEY, ts_ms=NOW_MS)
    with pytest.raises(UsageError):
        build_key_package_v3(creator=dev(1, 0), creator_account=aid(1), registries=REGS,
                             members=set(REGS), membership_head=M3.state.head, space=SPACE,
                             epoch=0, prev=ZERO32, epoch_key=EPOCH_KEY, ts_ms=NOW_MS,
                             ephemeral_seeds=[bytes(32)])
    monkeypatch.setattr(keypackage_v3, "MAX_PACKAGE_MEMBERS", 2)
    with pytest.raises(UsageError):
        build()
    monkeypatch.setattr(keypackage_v3, "MAX_PACKAGE_MEMBERS", MAX_PACKAGE_MEMBERS)
    monkeypatch.setattr(keypackage_v3, "MAX_PACKAGE_RECIPIENTS", 8)
    with pytest.raises(UsageError):
        build()


def test_builder_refuses_a_device_in_two_member_registries() -> None:
    shared = reg(2).apply(add_device(reg(2), acct(2), dev(1, 1), "borrowed", NOW_MS + 50))
    with pytest.raises(UsageError):
        build_key_package_v3(creator=dev(1, 0), creator_account=aid(1),
                             registries=regs(reg(1), shared, reg(3)), members=set(REGS),
                             membership_head=M3.state.head, space=SPACE, epoch=0,
                             prev=ZERO32, epoch_key=EPOCH_KEY, ts_ms=NOW_MS)


# ------------------------------------------------------------------ rotation


def test_no_rotation_for_a_fresh_package() -> None:
    pkg = verify(build())
    assert not rotation_due_v3(pkg, REGS, M3.state.members)
    assert not needs_rotation_v3(pkg, REGS, M3.state.members)


def test_rotation_after_a_member_removal() -> None:
    due = rotation_due_v3(verify(build()), REGS, {aid(1), aid(2)})
    assert due.removed == (aid(3),) and not due.added and not due.revoked and not due.missing


def test_rotation_after_a_member_add() -> None:
    registries = {**REGS, aid(4): reg(4)}
    members = {aid(i) for i in (1, 2, 3, 4)}
    due = rotation_due_v3(verify(build()), registries, members)
    assert due.added == (aid(4),)
    assert {r.device_id for r in due.missing} == {dev(4, 0).device_id, dev(4, 1).device_id}
    assert needs_rotation_v3(verify(build()), registries, members)


def test_rotation_after_a_revocation_in_a_non_creator_account() -> None:
    later = regs(reg(1), reg(2, 2, (1,)), reg(3))
    due = rotation_due_v3(verify(build(), later), later, M3.state.members)
    assert [r.device_id for r in due.revoked] == [dev(2, 1).device_id] and not due.missing
    assert needs_rotation_v3(verify(build(), later), later, M3.state.members)


def test_rotation_after_a_new_device_in_a_member_account() -> None:
    later = regs(reg(1), reg(2), reg(3, 3))
    due = rotation_due_v3(verify(build(), later), later, M3.state.members)
    assert [r.device_id for r in due.missing] == [dev(3, 2).device_id] and not due.revoked
    assert needs_rotation_v3(verify(build(), later), later, M3.state.members)


def test_rotation_from_a_one_account_package() -> None:
    v2 = decode_key_package(build_key_package(creator=dev(1, 0), registry=reg(1), space=SPACE,
                                              epoch=0, prev=ZERO32, epoch_key=EPOCH_KEY,
                                              ts_ms=NOW_MS))
    assert not needs_rotation_v3(v2, REGS, {aid(1)})
    assert rotation_due_v3(v2, REGS, {aid(1), aid(2)}).added == (aid(2),)
    assert needs_rotation_v3(v2, regs(reg(1, 2, (1,))), {aid(1)})


def test_rotation_needs_every_member_registry() -> None:
    with pytest.raises(ContextError):
        needs_rotation_v3(verify(build()), regs(reg(1), reg(2)), M3.state.members)


# ------------------------------------------------------------------ property

_account_shape = st.tuples(st.integers(1, 3), st.sets(st.integers(1, 2)))


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.integers(1, 4), _account_shape, min_size=1, max_size=4),
       st.data())
def test_only_the_honest_package_verifies(shapes: dict[int, tuple[int, set[int]]],
                                          data: st.DataObject) -> None:
    # Each account: n devices, some of devices 1..n-1 revoked (device 0 stays
    # active: it may create). Dropping any recipient, re-signed, is refused.
    registries = regs(*(reg(i, n, tuple(sorted(j for j in rev if j < n)))
                        for i, (n, rev) in shapes.items()))
    accounts = sorted(shapes)
    m = membership(accounts, registries)
    creator = data.draw(st.sampled_from(accounts))
    honest = build(registries, m=m, creator=(creator, 0))
    pkg = verify(honest, registries, m=m)
    assert set(pkg.recipients) == set(honest_targets(current(registries, accounts),
                                                     registries))
    stated = dict(pkg.members or ())
    targets = honest_targets(stated, registries)
    for rid in sorted(targets):
        rest = {k: v for k, v in targets.items() if k != rid}
        forged = by_hand(stated, targets=rest, creator=dev(creator, 0),
                         creator_account=aid(creator), membership_head=m.state.head,
                         registries=registries)
        refused(forged, AuthorizationError, Code.NOT_AUTHORIZED, registries, m=m)
