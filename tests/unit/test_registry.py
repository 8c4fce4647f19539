"""The device registry / sigchain (sddsf.protocol.registry).

Covers: a full chain genesis -> add -> policy -> revoke -> recover verified from
genesis, with the resulting device statuses, policy and head; trust on first
use; idempotent re-application; purity of apply; and every rejection: wrong
pinned account key, empty or genesis-less chain, forged genesis, gap, broken
prev link, fork at a known seq, second genesis, unauthorised signers (revoked
device, stranger, device signing a recover), a "by" signature from the wrong
key, bad or missing or superfluous countersignatures, re-adding a device,
revoking a non-active device, low-order device keys, unknown entry types and
versions, entries of another account, size and field-shape limits; the
device caps (active devices, with the last slot kept for the account key;
device records; additions per window of entry dates).
"""

from __future__ import annotations

import pytest

from factories import (
    ACCOUNT,
    D1,
    D2,
    D3,
    D4,
    NOW_MS,
    OTHER_ACCOUNT,
    STRANGER,
    ZERO32,
    Registry,
    base_registry,
    build_entry,
    entry_by_hand,
    genesis_registry,
    revoked_registry,
)
from sddsf.errors import (
    AuthorizationError,
    Code,
    DecodeError,
    KeyValidationError,
    RegistryError,
    SignatureError,
    UsageError,
    error_from_wire,
)
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import DeviceKeys
from sddsf.protocol.limits import ProtocolLimits
from sddsf.protocol.registry import (
    DeviceStatus,
    EntryType,
    RegistryState,
    add_device,
    assemble_entry,
    build_body,
    countersign_body,
    decode_entry,
    device_fields,
    entry_hash,
    genesis,
    recover,
    revoke_device,
    set_policy,
    sign_body,
    verify_registry,
)

POLICY = {"max_devices": 5, "require_approval": True, "label": "home"}
LOW_ORDER_ED = bytes.fromhex("0100000000000000000000000000000000000000000000000000000000000000")


def full_chain() -> Registry:
    """genesis(D1) -> add(D2 by D1) -> policy(by D2) -> revoke(D2 by D1) -> recover(D3, -D1)."""
    r = base_registry()
    r = r.then(set_policy(r.state, D2, POLICY, NOW_MS + 2))
    r = r.then(revoke_device(r.state, D1, D2.device_id, "stolen", NOW_MS + 3))
    return r.then(recover(r.state, ACCOUNT, D3, "new laptop", [D1.device_id], NOW_MS + 4))


def rejects(state: RegistryState, entry: bytes, exc: type[Exception], code: Code) -> None:
    with pytest.raises(exc) as info:
        state.apply(entry)
    assert info.value.code is code  # type: ignore[attr-defined]


# --------------------------------------------------------------- valid chains


def test_full_chain_verifies_from_genesis() -> None:
    chain = full_chain()
    state = verify_registry(chain.entries, pinned=ACCOUNT.public)
    assert state == chain.state
    assert state.seq == 4
    assert state.head == entry_hash(chain.entries[-1])
    assert state.policy == POLICY
    assert [r.device_id for r in state.active_devices()] == [D3.device_id]


def test_full_chain_device_records() -> None:
    state = full_chain().state
    d1, d2, d3 = (state.device(d.device_id) for d in (D1, D2, D3))
    assert d1 is not None and d2 is not None and d3 is not None
    assert (d1.status, d1.revoked_seq, d1.revoked_by) == (DeviceStatus.REVOKED, 4,
                                                          ACCOUNT.account_id)
    assert (d2.status, d2.revoked_seq, d2.revoked_by) == (DeviceStatus.REVOKED, 3, D1.device_id)
    assert (d3.status, d3.added_seq, d3.added_by) == (DeviceStatus.ACTIVE, 4, ACCOUNT.account_id)
    assert (d1.name, d2.name, d3.name) == ("laptop", "phone", "new laptop")
    assert d2.added_by == D1.device_id
    assert not state.is_active(D1.device_id)
    assert state.is_active(D3.device_id)
    assert state.device(STRANGER.device_id) is None


def test_trust_on_first_use_without_pin() -> None:
    state = verify_registry(full_chain().entries, pinned=None)
    assert state.account == ACCOUNT.public
    assert state.account_id == ACCOUNT.account_id


def test_account_key_may_sign_add_revoke_and_policy() -> None:
    r = base_registry()
    r = r.then(add_device(r.state, ACCOUNT, D3, "tablet", NOW_MS))
    r = r.then(revoke_device(r.state, ACCOUNT, D2.device_id, "old", NOW_MS))
    r = r.then(set_policy(r.state, ACCOUNT, {"x": 1}, NOW_MS))
    assert r.state.is_active(D3.device_id)
    assert not r.state.is_active(D2.device_id)
    assert r.state.policy == {"x": 1}


def test_reapplying_any_known_entry_returns_the_same_state() -> None:
    chain = full_chain()
    for entry in chain.entries:
        assert chain.state.apply(entry) is chain.state


def test_apply_does_not_mutate_the_previous_state() -> None:
    base = base_registry().state
    before = (dict(base.devices), base.seq, base.head)
    base.apply(revoke_device(base, D1, D2.device_id, "x", NOW_MS))
    assert (dict(base.devices), base.seq, base.head) == before
    assert base.is_active(D2.device_id)


def test_decode_entry_fields() -> None:
    entry = decode_entry(base_registry().entries[1])
    assert entry.type is EntryType.ADD
    assert (entry.seq, entry.prev, entry.signer) == (1, entry_hash(genesis_registry().entries[0]),
                                                     D1.device_id)
    assert entry.account == ACCOUNT.account_id
    assert entry.countersignature is not None


# ------------------------------------------------------------- genesis checks


def test_wrong_pinned_account_key() -> None:
    with pytest.raises(AuthorizationError) as info:
        verify_registry(base_registry().entries, pinned=OTHER_ACCOUNT.public)
    assert info.value.code is Code.NOT_AUTHORIZED


def test_empty_registry() -> None:
    with pytest.raises(RegistryError) as info:
        verify_registry([], pinned=ACCOUNT.public)
    assert info.value.code is Code.REGISTRY_INVALID


def test_chain_must_start_with_genesis() -> None:
    with pytest.raises(RegistryError) as info:
        verify_registry(base_registry().entries[1:], pinned=ACCOUNT.public)
    assert info.value.code is Code.REGISTRY_INVALID


def test_genesis_signed_by_another_key() -> None:
    body = build_body(EntryType.GENESIS, account_id=ACCOUNT.account_id, seq=0, prev=ZERO32,
                      ts_ms=NOW_MS, signer_id=ACCOUNT.account_id, fields={
                          "account_key": ACCOUNT.signing.public.raw,
                          "recovery_key": ACCOUNT.recovery.public,
                          "device": device_fields(D1.public, "laptop")})
    forged = assemble_entry(body, sign_body(body, OTHER_ACCOUNT), countersign_body(body, D1))
    with pytest.raises(SignatureError) as info:
        verify_registry([forged], pinned=ACCOUNT.public)
    assert info.value.code is Code.SIG_INVALID


def test_genesis_account_field_must_match_its_key() -> None:
    body = build_body(EntryType.GENESIS, account_id=OTHER_ACCOUNT.account_id, seq=0, prev=ZERO32,
                      ts_ms=NOW_MS, signer_id=ACCOUNT.account_id, fields={
                          "account_key": ACCOUNT.signing.public.raw,
                          "recovery_key": ACCOUNT.recovery.public,
                          "device": device_fields(D1.public, "laptop")})
    entry = assemble_entry(body, sign_body(body, ACCOUNT), countersign_body(body, D1))
    with pytest.raises(RegistryError) as info:
        verify_registry([entry], pinned=None)
    assert info.value.code is Code.REGISTRY_INVALID


def test_second_genesis() -> None:
    state = base_registry().state
    entry = entry_by_hand(state, EntryType.GENESIS, signer=ACCOUNT, signer_id=ACCOUNT.account_id,
                          fields={"account_key": ACCOUNT.signing.public.raw,
                                  "recovery_key": ACCOUNT.recovery.public,
                                  "device": device_fields(D3.public, "x")}, cosigner=D3)
    rejects(state, entry, RegistryError, Code.REGISTRY_INVALID)


def test_genesis_of_another_account_does_not_replace_the_pin() -> None:
    other = genesis(OTHER_ACCOUNT, D1, "laptop", NOW_MS)
    with pytest.raises(AuthorizationError) as info:
        verify_registry([other], pinned=ACCOUNT.public)
    assert info.value.code is Code.NOT_AUTHORIZED


# ---------------------------------------------------------------- chain links


def test_gap() -> None:
    state = base_registry().state
    entry = entry_by_hand(state, EntryType.POLICY, signer=D1, signer_id=D1.device_id,
                          fields={"policy": {}}, seq=state.seq + 2)
    rejects(state, entry, RegistryError, Code.REGISTRY_INVALID)


def test_broken_prev_link() -> None:
    state = base_registry().state
    entry = entry_by_hand(state, EntryType.POLICY, signer=D1, signer_id=D1.device_id,
                          fields={"policy": {}}, prev=bytes([7]) * 32)
    rejects(state, entry, RegistryError, Code.REGISTRY_FORK)


def test_fork_at_a_known_seq() -> None:
    g = genesis_registry()
    first = add_device(g.state, D1, D2, "phone", NOW_MS)
    other = add_device(g.state, D1, D3, "tablet", NOW_MS)
    state = g.state.apply(first)
    rejects(state, other, RegistryError, Code.REGISTRY_FORK)


def test_verify_registry_refuses_a_chain_with_a_forked_entry() -> None:
    g = genesis_registry()
    first = add_device(g.state, D1, D2, "phone", NOW_MS)
    other = add_device(g.state, D1, D3, "tablet", NOW_MS)
    with pytest.raises(RegistryError) as info:
        verify_registry([*g.entries, first, other], pinned=ACCOUNT.public)
    assert info.value.code is Code.REGISTRY_FORK


def test_entry_of_another_account() -> None:
    state = base_registry().state
    entry = entry_by_hand(state, EntryType.POLICY, signer=D1, signer_id=D1.device_id,
                          fields={"policy": {}}, account_id=OTHER_ACCOUNT.account_id)
    rejects(state, entry, RegistryError, Code.REGISTRY_INVALID)


# ---------------------------------------------------------------- authorisation


def test_add_signed_by_revoked_device() -> None:
    state = revoked_registry().state
    rejects(state, add_device(state, D3, D4, "x", NOW_MS), AuthorizationError, Code.NOT_AUTHORIZED)


def test_add_signed_by_stranger() -> None:
    state = base_registry().state
    rejects(state, add_device(state, STRANGER, D4, "x", NOW_MS), AuthorizationError,
            Code.NOT_AUTHORIZED)


def test_stranger_cannot_revoke() -> None:
    state = base_registry().state
    entry = revoke_device(state, STRANGER, D2.device_id, "x", NOW_MS)
    rejects(state, entry, AuthorizationError, Code.NOT_AUTHORIZED)


def test_by_signature_from_another_device_than_the_named_signer() -> None:
    state = base_registry().state
    entry = build_entry(state, EntryType.ADD, signer=D2, signer_id=D1.device_id,
                        fields={"device": device_fields(D4.public, "x")}, cosigner=D4)
    rejects(state, entry, SignatureError, Code.SIG_INVALID)


def test_recover_signed_by_a_device() -> None:
    state = base_registry().state
    entry = build_entry(state, EntryType.RECOVER, signer=D1, signer_id=D1.device_id,
                        fields={"device": device_fields(D4.public, "x"), "revoke": []},
                        cosigner=D4)
    rejects(state, entry, AuthorizationError, Code.NOT_AUTHORIZED)


def test_recover_naming_the_account_but_signed_by_a_device() -> None:
    state = base_registry().state
    entry = build_entry(state, EntryType.RECOVER, signer=D1, signer_id=ACCOUNT.account_id,
                        fields={"device": device_fields(D4.public, "x"), "revoke": []},
                        cosigner=D4)
    rejects(state, entry, SignatureError, Code.SIG_INVALID)


def test_not_authorized_registry_rejection_keeps_its_class_over_the_wire() -> None:
    # errors.py: "the client maps the code back to the same class with error_from_wire".
    state = base_registry().state
    with pytest.raises(AuthorizationError) as info:
        state.apply(add_device(state, STRANGER, D4, "x", NOW_MS))
    remote = error_from_wire(info.value.code.value, info.value.message)
    assert type(remote) is type(info.value)


# ------------------------------------------------------------ countersignatures


def test_bad_countersignature() -> None:
    state = base_registry().state
    entry = build_entry(state, EntryType.ADD, signer=D1, signer_id=D1.device_id,
                        fields={"device": device_fields(D4.public, "x")}, cosigner=D3)
    rejects(state, entry, SignatureError, Code.SIG_INVALID)


def test_countersignature_over_another_label_is_refused() -> None:
    # The new device's REGISTRY_SIG signature must not serve as its countersignature.
    state = base_registry().state
    body = build_body(EntryType.ADD, account_id=state.account_id, seq=state.seq + 1,
                      prev=state.head, ts_ms=NOW_MS, signer_id=D1.device_id,
                      fields={"device": device_fields(D4.public, "x")})
    entry = assemble_entry(body, sign_body(body, D1), sign_body(body, D4))
    rejects(state, entry, SignatureError, Code.SIG_INVALID)


def test_missing_countersignature() -> None:
    state = base_registry().state
    entry = build_entry(state, EntryType.ADD, signer=D1, signer_id=D1.device_id,
                        fields={"device": device_fields(D4.public, "x")})
    with pytest.raises(DecodeError) as info:
        state.apply(entry)
    assert info.value.code is Code.MALFORMED


def test_countersignature_on_revoke_is_refused() -> None:
    state = base_registry().state
    entry = build_entry(state, EntryType.REVOKE, signer=D1, signer_id=D1.device_id,
                        fields={"target": D2.device_id, "reason": "x", "cutoff": []},
                        cosigner=D2)
    with pytest.raises(DecodeError) as info:
        state.apply(entry)
    assert info.value.code is Code.MALFORMED


# ------------------------------------------------------------- device changes


def test_readding_a_revoked_device() -> None:
    state = revoked_registry().state
    rejects(state, add_device(state, D1, D3, "again", NOW_MS), RegistryError,
            Code.REGISTRY_INVALID)


def test_readding_an_active_device() -> None:
    state = base_registry().state
    rejects(state, add_device(state, D1, D2, "again", NOW_MS), RegistryError,
            Code.REGISTRY_INVALID)


def test_revoking_a_revoked_device() -> None:
    state = revoked_registry().state
    rejects(state, revoke_device(state, D1, D3.device_id, "again", NOW_MS), RegistryError,
            Code.REGISTRY_INVALID)


def test_revoking_an_unknown_device() -> None:
    state = base_registry().state
    rejects(state, revoke_device(state, D1, STRANGER.device_id, "x", NOW_MS), RegistryError,
            Code.REGISTRY_INVALID)


def test_recover_revoking_a_non_active_device() -> None:
    state = revoked_registry().state
    entry = recover(state, ACCOUNT, D4, "x", [D3.device_id], NOW_MS)
    rejects(state, entry, RegistryError, Code.REGISTRY_INVALID)


def test_recover_listing_a_device_twice() -> None:
    state = base_registry().state
    body = build_body(EntryType.RECOVER, account_id=ACCOUNT.account_id, seq=state.seq + 1,
                      prev=state.head, ts_ms=NOW_MS, signer_id=ACCOUNT.account_id, fields={
                          "device": device_fields(D4.public, "x"),
                          "revoke": [[D1.device_id, []], [D1.device_id, []]]})
    entry = assemble_entry(body, sign_body(body, ACCOUNT), countersign_body(body, D4))
    rejects(state, entry, RegistryError, Code.REGISTRY_INVALID)


def test_revocation_cutoff_keeps_earlier_history_valid() -> None:
    state = base_registry().state
    space = bytes(range(16))
    after = state.apply(revoke_device(state, D1, D2.device_id, "lost", NOW_MS,
                                      cutoff={space: 3, bytes(16): 1}))
    rec = after.device(D2.device_id)
    assert rec is not None and dict(rec.cutoff) == {space: 3, bytes(16): 1}


def test_unsorted_cutoff_is_malformed() -> None:
    state = base_registry().state
    body = build_body(EntryType.REVOKE, account_id=ACCOUNT.account_id, seq=state.seq + 1,
                      prev=state.head, ts_ms=NOW_MS, signer_id=D1.device_id, fields={
                          "target": D2.device_id, "reason": "x",
                          "cutoff": [[bytes([2]) * 16, 1], [bytes([1]) * 16, 1]]})
    with pytest.raises(DecodeError):
        state.apply(assemble_entry(body, sign_body(body, D1)))


@pytest.mark.parametrize(
    ("sign", "kx"),
    [(LOW_ORDER_ED, D4.kx.public), (bytes(32), D4.kx.public),
     (D4.signing.public.raw, bytes(32)), (D4.signing.public.raw, bytes([1]) + bytes(31))],
    ids=["ed-identity", "ed-zero", "x-zero", "x-one"],
)
def test_low_order_device_key_in_add(sign: bytes, kx: bytes) -> None:
    state = base_registry().state
    entry = build_entry(state, EntryType.ADD, signer=D1, signer_id=D1.device_id,
                        fields={"device": {"sign": sign, "kx": kx, "name": "evil"}},
                        cosigner=D4)
    rejects(state, entry, KeyValidationError, Code.BAD_KEY)


def test_device_name_over_the_limit() -> None:
    state = base_registry().state
    long_name = "n" * (ProtocolLimits().max_name + 1)
    with pytest.raises(DecodeError) as info:
        state.apply(add_device(state, D1, D4, long_name, NOW_MS))
    assert info.value.code is Code.MALFORMED


@pytest.mark.parametrize("policy", [[1, 2], {"a": [1]}, {"a": b"x"}, {"a": None},
                                    {str(i): i for i in range(65)}])
def test_malformed_policy(policy: object) -> None:
    state = base_registry().state
    entry = build_entry(state, EntryType.POLICY, signer=D1, signer_id=D1.device_id,
                        fields={"policy": policy})
    with pytest.raises(DecodeError):
        state.apply(entry)


# ----------------------------------------------------------- decode refusals


def test_unknown_entry_type() -> None:
    state = base_registry().state
    entry = entry_by_hand(state, "promote_admin", signer=D1, signer_id=D1.device_id,
                          fields={"device": device_fields(D4.public, "x")})
    with pytest.raises(DecodeError) as info:
        state.apply(entry)
    assert info.value.code is Code.UNSUPPORTED_VERSION


def test_unsupported_body_version() -> None:
    state = base_registry().state
    body = decode(decode(base_registry().entries[1])[1])  # type: ignore[index]
    assert isinstance(body, dict)
    body["v"] = 2
    with pytest.raises(DecodeError) as info:
        state.apply(assemble_entry(encode(body), bytes(64), bytes(64)))
    assert info.value.code is Code.UNSUPPORTED_VERSION


@pytest.mark.parametrize("version", [0, 2, True])
def test_unsupported_outer_version(version: object) -> None:
    outer = decode(base_registry().entries[1])
    assert isinstance(outer, list)
    with pytest.raises(DecodeError) as info:
        decode_entry(encode([version, *outer[1:]]))
    assert info.value.code is (Code.MALFORMED if version is True else Code.UNSUPPORTED_VERSION)


def test_too_large_entry() -> None:
    data = base_registry().entries[1]
    decode_entry(data, limits=ProtocolLimits(max_registry_entry=len(data)))
    with pytest.raises(DecodeError) as info:
        decode_entry(data, limits=ProtocolLimits(max_registry_entry=len(data) - 1))
    assert info.value.code is Code.TOO_LARGE


@pytest.mark.parametrize("field", ["v", "account", "seq", "prev", "type", "ts", "signer",
                                   "device"])
def test_missing_body_field(field: str) -> None:
    body = decode(decode(base_registry().entries[1])[1])  # type: ignore[index]
    assert isinstance(body, dict)
    del body[field]
    with pytest.raises(DecodeError) as info:
        decode_entry(assemble_entry(encode(body), bytes(64), bytes(64)))
    assert info.value.code in (Code.MALFORMED, Code.UNSUPPORTED_VERSION)


def test_unknown_body_field() -> None:
    body = decode(decode(base_registry().entries[1])[1])  # type: ignore[index]
    assert isinstance(body, dict)
    body["admin"] = True
    with pytest.raises(DecodeError) as info:
        decode_entry(assemble_entry(encode(body), bytes(64), bytes(64)))
    assert info.value.code is Code.MALFORMED


@pytest.mark.parametrize(
    "outer",
    [[1, b"body"], [1, "body", {"by": bytes(64)}], [1, b"\xa0", {"by": bytes(63)}],
     [1, b"\xa0", {"by": bytes(64), "extra": bytes(64)}], [1, b"\xa0", {}], {"v": 1}],
    ids=["two", "text-body", "short-sig", "extra-sig", "no-sig", "map"],
)
def test_malformed_outer_entry(outer: object) -> None:
    with pytest.raises(DecodeError) as info:
        decode_entry(encode(outer))
    assert info.value.code is Code.MALFORMED


def test_build_body_checks_fields_for_the_type() -> None:
    with pytest.raises(UsageError):
        build_body(EntryType.REVOKE, account_id=ACCOUNT.account_id, seq=1, prev=ZERO32,
                   ts_ms=NOW_MS, signer_id=D1.device_id, fields={"target": D2.device_id})


# ------------------------------------------------ device caps (registry fill)


def _capped(**limits: int) -> RegistryState:
    first = genesis(ACCOUNT, D1, "laptop", NOW_MS)
    return verify_registry([first], pinned=ACCOUNT.public, limits=ProtocolLimits(**limits))


def _fresh(i: int) -> DeviceKeys:
    return DeviceKeys.from_seeds(bytes([i, 1]) * 16, bytes([i, 2]) * 16)


def test_devices_leave_the_last_active_slot_to_the_account_key() -> None:
    state = _capped(max_devices=4)
    for i in range(2):
        state = state.apply(add_device(state, D1, _fresh(i), f"d{i}", NOW_MS))
    with pytest.raises(RegistryError) as info:
        state.apply(add_device(state, D1, _fresh(9), "one too many", NOW_MS))
    assert info.value.code is Code.REGISTRY_INVALID and "active" in info.value.message
    state = state.apply(recover(state, ACCOUNT, D4, "recovered", [], NOW_MS))  # the 4th
    assert len(state.active_devices()) == 4
    with pytest.raises(RegistryError):
        state.apply(recover(state, ACCOUNT, _fresh(8), "fifth", [], NOW_MS))


def test_revoked_devices_do_not_count_against_the_cap() -> None:
    state = _capped(max_devices=3)
    state = state.apply(add_device(state, D1, _fresh(0), "d0", NOW_MS))
    state = state.apply(revoke_device(state, D1, _fresh(0).device_id, "old", NOW_MS))
    state = state.apply(add_device(state, D1, _fresh(1), "d1", NOW_MS))
    assert len(state.devices) == 3 and len(state.active_devices()) == 2


def test_device_records_are_bounded_but_not_for_the_account_key() -> None:
    state = _capped(max_device_records=3)
    for i in range(2):
        state = state.apply(add_device(state, D1, _fresh(i), f"d{i}", NOW_MS))
        state = state.apply(revoke_device(state, D1, _fresh(i).device_id, "old", NOW_MS))
    with pytest.raises(RegistryError) as info:
        state.apply(add_device(state, D1, _fresh(5), "more", NOW_MS))
    assert "only the account key" in info.value.message
    state = state.apply(add_device(state, ACCOUNT, _fresh(5), "by the owner", NOW_MS))
    assert state.is_active(_fresh(5).device_id)


def test_device_additions_are_bounded_per_window_of_entry_dates() -> None:
    state = _capped(max_adds_per_window=2, add_window_ms=1000)
    state = state.apply(add_device(state, D1, _fresh(0), "d0", NOW_MS))
    state = state.apply(add_device(state, D1, _fresh(1), "d1", NOW_MS + 500))
    for ts in (NOW_MS + 900, NOW_MS - 400, NOW_MS + 999):  # both within 1 s of it
        with pytest.raises(RegistryError) as info:
            state.apply(add_device(state, D1, _fresh(2), "d2", ts))
        assert "within" in info.value.message
    state = state.apply(add_device(state, ACCOUNT, _fresh(3), "owner", NOW_MS + 600))
    state = state.apply(add_device(state, D1, _fresh(2), "d2", NOW_MS + 1500))
    assert state.recent_adds == (NOW_MS + 500, NOW_MS + 1500)
    assert len(state.active_devices()) == 5


def test_revocations_are_indexed_by_registry_seq() -> None:
    state = full_chain().state  # D2 revoked at 3, D1 at 4
    assert state.revoked_seqs == (3, 4)
    assert state.revoked_between(2, 3) and state.revoked_between(3, 4)
    assert not state.revoked_between(4, 9) and not state.revoked_between(0, 2)
