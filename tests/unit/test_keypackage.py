"""Key epochs and key packages (sddsf.protocol.keypackage).

Covers: build/verify/open for every recipient including the account recovery
key; the epoch chain (epoch 0 -> 1 linked by ``prev``); packages from before a
revocation or an addition staying valid history; rotation locking a revoked
device out; and every rejection: other space (wrong_context), wrong epoch
(unknown_epoch), broken prev link, registry_seq ahead of the verifier, creator
unknown or revoked, recovery key or an active device missing, a revoked or
unknown device included, tampered or misattributed signature, a sealed key
transplanted from another space's or epoch's package, a device not in the
package, the wrong X25519 key; decode refusals (version, sorting, size).
Version 2: the key commitment (a recipient given another key than the others
refuses it), earlier keys wrapped under each epoch's key so that a device
added after 300 epochs (or the recovery key) opens every key down to epoch 0,
version 1 packages staying readable and leading into version 2, and
``revoked_since`` / ``needs_rotation``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from factories import (
    ACCOUNT,
    D1,
    D2,
    D3,
    D4,
    EPOCH_KEY,
    NOW_MS,
    OTHER_EPOCH_KEY,
    OTHER_SPACE,
    SPACE,
    STRANGER,
    ZERO32,
    base_registry,
    ephemeral_seeds,
    raw_key_package,
    recipients_of,
    revoked_registry,
)
from sddsf.crypto import seal
from sddsf.errors import (
    AuthorizationError,
    Code,
    ContextError,
    DecodeError,
    DecryptError,
    EpochError,
    SignatureError,
    UsageError,
    error_from_wire,
)
from sddsf.protocol import labels
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import DeviceKeys
from sddsf.protocol.keypackage import (
    KEY_PACKAGE_VERSION,
    KeyPackage,
    build_key_package,
    decode_key_package,
    key_commitment,
    needs_rotation,
    open_epoch_key,
    open_epoch_keys,
    open_key_history,
    package_hash,
    revoked_since,
    unwrap_previous_keys,
    verify_key_package,
)
from sddsf.protocol.labels import labelled
from sddsf.protocol.limits import ProtocolLimits
from sddsf.protocol.registry import RegistryState, add_device, verify_registry


def build(state: RegistryState, *, creator: DeviceKeys = D1, space: bytes = SPACE,
          epoch: int = 0, prev: bytes = ZERO32, key: bytes = EPOCH_KEY) -> bytes:
    return build_key_package(creator=creator, registry=state, space=space, epoch=epoch,
                             prev=prev, epoch_key=key, ts_ms=NOW_MS,
                             ephemeral_seeds=ephemeral_seeds(state))


def verify(data: bytes, state: RegistryState | None = None, *, space: bytes = SPACE,
           previous: KeyPackage | None = None) -> KeyPackage:
    return verify_key_package(data, registry=state or base_registry().state, space=space,
                              previous=previous)


def p0() -> KeyPackage:
    return verify(build(base_registry().state))


# ------------------------------------------------------------------ happy path


def test_every_recipient_opens_the_epoch_key() -> None:
    pkg = p0()
    assert open_epoch_key(pkg, D1.device_id, D1.kx) == EPOCH_KEY
    assert open_epoch_key(pkg, D2.device_id, D2.kx) == EPOCH_KEY
    assert open_epoch_key(pkg, ACCOUNT.account_id, ACCOUNT.recovery) == EPOCH_KEY


def test_package_fields() -> None:
    data = build(base_registry().state)
    pkg = verify(data)
    assert set(pkg.recipients) == {D1.device_id, D2.device_id, ACCOUNT.account_id}
    assert (pkg.space, pkg.epoch, pkg.prev, pkg.creator) == (SPACE, 0, ZERO32, D1.device_id)
    assert pkg.registry_seq == base_registry().state.seq
    assert pkg.hash == package_hash(data)
    assert decode_key_package(data) == pkg


def test_epoch_chain_links_by_prev() -> None:
    first = p0()
    data = build(base_registry().state, creator=D2, epoch=1, prev=first.hash,
                 key=OTHER_EPOCH_KEY)
    second = verify(data, previous=first)
    assert second.epoch == 1
    assert open_epoch_key(second, D1.device_id, D1.kx) == OTHER_EPOCH_KEY


def test_epoch_0_prev_is_forced_to_zero_by_the_builder() -> None:
    pkg = verify(build(base_registry().state, prev=bytes([5]) * 32))
    assert pkg.prev == ZERO32


def test_rotation_after_revocation_locks_out_the_revoked_device() -> None:
    state = revoked_registry().state
    pkg = verify(build(state), state)
    assert D3.device_id not in pkg.recipients
    with pytest.raises(AuthorizationError) as info:
        open_epoch_key(pkg, D3.device_id, D3.kx)
    assert info.value.code is Code.NOT_AUTHORIZED


def test_package_from_before_a_revocation_stays_valid_history() -> None:
    r = base_registry()
    r = r.then(add_device(r.state, D1, D3, "tablet", NOW_MS))
    old = build(r.state)  # D3 is a recipient
    later = revoked_registry().state
    pkg = verify(old, later)
    assert open_epoch_key(pkg, D3.device_id, D3.kx) == EPOCH_KEY


def test_package_from_before_an_addition_does_not_need_the_new_device() -> None:
    old = build(base_registry().state)
    pkg = verify(old, revoked_registry().state)
    with pytest.raises(AuthorizationError) as info:
        open_epoch_key(pkg, D3.device_id, D3.kx)
    assert info.value.code is Code.NOT_AUTHORIZED


def test_hand_built_package_matching_the_builder_verifies() -> None:
    state = base_registry().state
    data = raw_key_package(D1, recipients=recipients_of(state), registry_seq=state.seq)
    assert open_epoch_key(verify(data), D2.device_id, D2.kx) == EPOCH_KEY


# ---------------------------------------------------------------- builder refusals


def test_builder_refuses_inactive_creator_and_bad_sizes() -> None:
    state = revoked_registry().state
    with pytest.raises(UsageError):
        build(state, creator=D3)
    with pytest.raises(UsageError):
        build(state, key=bytes(16))
    with pytest.raises(UsageError):
        build(state, space=bytes(15))
    with pytest.raises(UsageError):
        build_key_package(creator=D1, registry=state, space=SPACE, epoch=0, prev=ZERO32,
                          epoch_key=EPOCH_KEY, ts_ms=NOW_MS, ephemeral_seeds=[bytes(32)])


# --------------------------------------------------------------- context checks


def test_other_space() -> None:
    with pytest.raises(ContextError) as info:
        verify(build(base_registry().state, space=OTHER_SPACE))
    assert info.value.code is Code.WRONG_CONTEXT


def test_epoch_1_without_previous() -> None:
    first = p0()
    data = build(base_registry().state, epoch=1, prev=first.hash)
    with pytest.raises(EpochError) as info:
        verify(data, previous=None)
    assert info.value.code is Code.UNKNOWN_EPOCH


def test_epoch_skipping_ahead_of_previous() -> None:
    first = p0()
    data = build(base_registry().state, epoch=2, prev=first.hash)
    with pytest.raises(EpochError) as info:
        verify(data, previous=first)
    assert info.value.code is Code.UNKNOWN_EPOCH


def test_epoch_0_when_a_previous_exists() -> None:
    with pytest.raises(EpochError) as info:
        verify(build(base_registry().state), previous=p0())
    assert info.value.code is Code.UNKNOWN_EPOCH


def test_broken_prev_chain() -> None:
    data = build(base_registry().state, epoch=1, prev=bytes([9]) * 32)
    with pytest.raises(ContextError) as info:
        verify(data, previous=p0())
    assert info.value.code is Code.WRONG_CONTEXT


def test_registry_seq_ahead_of_the_verifier() -> None:
    data = build(revoked_registry().state)
    with pytest.raises(ContextError) as info:
        verify(data, base_registry().state)
    assert info.value.code is Code.WRONG_CONTEXT


def test_epoch_rejection_keeps_its_class_over_the_wire() -> None:
    # errors.py: "the client maps the code back to the same class with error_from_wire".
    with pytest.raises(EpochError) as info:
        verify(build(base_registry().state, epoch=1, prev=p0().hash), previous=None)
    remote = error_from_wire(info.value.code.value, info.value.message)
    assert type(remote) is type(info.value)


# ------------------------------------------------------------ creator checks


def test_unknown_creator() -> None:
    state = base_registry().state
    data = raw_key_package(STRANGER, recipients=recipients_of(state), registry_seq=state.seq)
    with pytest.raises(AuthorizationError) as info:
        verify(data)
    assert info.value.code is Code.UNKNOWN_DEVICE


def test_revoked_creator() -> None:
    state = revoked_registry().state
    data = raw_key_package(D3, recipients=recipients_of(state), registry_seq=state.seq)
    with pytest.raises(AuthorizationError) as info:
        verify(data, state)
    assert info.value.code is Code.REVOKED


def test_revoked_creator_cannot_backdate_a_new_epoch_before_its_revocation() -> None:
    # D3 was added at seq 2 and revoked at seq 3. Epoch 0 was created at seq 3 (after the
    # revocation). D3 then signs epoch 1 claiming registry_seq 2, when it was still active,
    # and wraps the key for itself: accepting it would let a revoked device keep reading
    # (THREATS #15). A new epoch must not refer to an older registry state than its
    # predecessor.
    r = base_registry()
    at_2 = r.then(add_device(r.state, D1, D3, "tablet", NOW_MS)).state
    state = revoked_registry().state
    first = verify(build(state), state)
    data = raw_key_package(D3, recipients=recipients_of(at_2), epoch=1, prev=first.hash,
                           registry_seq=at_2.seq, epoch_key=OTHER_EPOCH_KEY)
    with pytest.raises((AuthorizationError, ContextError)):
        verify(data, state, previous=first)


def test_tampered_signature() -> None:
    outer = decode(build(base_registry().state))
    assert isinstance(outer, list)
    sig = bytearray(outer[2])
    sig[10] ^= 1
    with pytest.raises(SignatureError) as info:
        verify(encode([outer[0], outer[1], bytes(sig)]))
    assert info.value.code is Code.SIG_INVALID


def test_signature_by_another_active_device() -> None:
    outer = decode(build(base_registry().state))
    assert isinstance(outer, list)
    forged = D2.sign(labelled(labels.KEY_PACKAGE_SIG, outer[1]))
    with pytest.raises(SignatureError):
        verify(encode([outer[0], outer[1], forged]))


# ---------------------------------------------------------- recipient checks


def test_recovery_key_missing() -> None:
    state = base_registry().state
    recipients = recipients_of(state)
    del recipients[ACCOUNT.account_id]
    data = raw_key_package(D1, recipients=recipients, registry_seq=state.seq)
    with pytest.raises(AuthorizationError) as info:
        verify(data)
    assert info.value.code is Code.NOT_AUTHORIZED


def test_active_device_missing() -> None:
    state = base_registry().state
    recipients = recipients_of(state)
    del recipients[D2.device_id]
    data = raw_key_package(D1, recipients=recipients, registry_seq=state.seq)
    with pytest.raises(AuthorizationError) as info:
        verify(data)
    assert info.value.code is Code.NOT_AUTHORIZED


def test_revoked_device_included() -> None:
    state = revoked_registry().state
    data = raw_key_package(D1, recipients=recipients_of(state, D3), registry_seq=state.seq)
    with pytest.raises(AuthorizationError) as info:
        verify(data, state)
    assert info.value.code is Code.REVOKED


def test_unknown_device_included() -> None:
    state = base_registry().state
    data = raw_key_package(D1, recipients=recipients_of(state, STRANGER),
                           registry_seq=state.seq)
    with pytest.raises(AuthorizationError):
        verify(data)


def test_device_added_after_registry_seq_included() -> None:
    r = base_registry()
    later = r.then(add_device(r.state, D1, D4, "x", NOW_MS)).state
    data = raw_key_package(D1, recipients=recipients_of(later), registry_seq=r.state.seq)
    with pytest.raises(AuthorizationError):
        verify(data, later)


# --------------------------------------------------------------- opening keys


def test_device_not_in_package() -> None:
    with pytest.raises(AuthorizationError) as info:
        open_epoch_key(p0(), STRANGER.device_id, STRANGER.kx)
    assert info.value.code is Code.NOT_AUTHORIZED


def test_wrong_x25519_key_for_the_slot() -> None:
    with pytest.raises(DecryptError) as info:
        open_epoch_key(p0(), D1.device_id, D2.kx)
    assert info.value.code is Code.DECRYPT_FAILED


def test_sealed_key_transplanted_from_another_space_in_a_signed_package() -> None:
    state = base_registry().state
    other = verify(build(state, space=OTHER_SPACE, key=OTHER_EPOCH_KEY), space=OTHER_SPACE)
    data = raw_key_package(D1, recipients=recipients_of(state), registry_seq=state.seq,
                           sealed_override={D2.device_id: other.recipients[D2.device_id]})
    pkg = verify(data)
    with pytest.raises((ContextError, DecryptError)) as info:
        open_epoch_key(pkg, D2.device_id, D2.kx)
    assert info.value.code in (Code.WRONG_CONTEXT, Code.DECRYPT_FAILED)


def test_sealed_key_transplanted_from_another_space() -> None:
    state = base_registry().state
    other = verify(build(state, space=OTHER_SPACE), space=OTHER_SPACE)
    moved = replace(p0(), recipients={**p0().recipients,
                                      D1.device_id: other.recipients[D1.device_id]})
    with pytest.raises(ContextError) as info:
        open_epoch_key(moved, D1.device_id, D1.kx)
    assert info.value.code is Code.WRONG_CONTEXT


def test_sealed_key_transplanted_from_another_epoch() -> None:
    first = p0()
    second = verify(build(base_registry().state, epoch=1, prev=first.hash,
                          key=OTHER_EPOCH_KEY), previous=first)
    moved = replace(second, recipients={**second.recipients,
                                        D1.device_id: first.recipients[D1.device_id]})
    with pytest.raises(ContextError):
        open_epoch_key(moved, D1.device_id, D1.kx)


def test_sealed_key_of_another_recipient_does_not_open() -> None:
    pkg = p0()
    moved = replace(pkg, recipients={**pkg.recipients,
                                     D1.device_id: pkg.recipients[D2.device_id]})
    with pytest.raises(DecryptError):
        open_epoch_key(moved, D1.device_id, D1.kx)


# ------------------------------------------------------------ decode refusals


def _body(data: bytes) -> dict[str, object]:
    outer = decode(data)
    assert isinstance(outer, list)
    body = decode(outer[1])
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("version", [0, 1, 3, True])
def test_unsupported_outer_version(version: object) -> None:
    # 1 is a supported version, but not of this (version 2) body.
    outer = decode(build(base_registry().state))
    assert isinstance(outer, list)
    with pytest.raises(DecodeError) as info:
        decode_key_package(encode([version, outer[1], outer[2]]))
    assert info.value.code is (Code.MALFORMED if version is True else Code.UNSUPPORTED_VERSION)


def test_unsupported_body_version() -> None:
    body = _body(build(base_registry().state))
    body["v"] = 3
    with pytest.raises(DecodeError) as info:
        decode_key_package(encode([KEY_PACKAGE_VERSION, encode(body), bytes(64)]))
    assert info.value.code is Code.UNSUPPORTED_VERSION


def test_unsorted_recipients() -> None:
    body = _body(build(base_registry().state))
    rows = body["recipients"]
    assert isinstance(rows, list)
    body["recipients"] = list(reversed(rows))
    with pytest.raises(DecodeError) as info:
        decode_key_package(encode([KEY_PACKAGE_VERSION, encode(body), bytes(64)]))
    assert info.value.code is Code.MALFORMED


def test_duplicate_recipient() -> None:
    body = _body(build(base_registry().state))
    rows = body["recipients"]
    assert isinstance(rows, list)
    body["recipients"] = [rows[0], rows[0]]
    with pytest.raises(DecodeError):
        decode_key_package(encode([KEY_PACKAGE_VERSION, encode(body), bytes(64)]))


def test_epoch_0_with_non_zero_prev() -> None:
    body = _body(build(base_registry().state))
    body["prev"] = bytes([1]) * 32
    with pytest.raises(DecodeError) as info:
        decode_key_package(encode([KEY_PACKAGE_VERSION, encode(body), bytes(64)]))
    assert info.value.code is Code.MALFORMED


@pytest.mark.parametrize(("field", "value"), [("space", bytes(15)), ("creator", bytes(31)),
                                               ("epoch", -1), ("recipients", {}),
                                               ("prev", bytes(31))])
def test_malformed_body_fields(field: str, value: object) -> None:
    body = _body(build(base_registry().state))
    body[field] = value
    with pytest.raises(DecodeError) as info:
        decode_key_package(encode([KEY_PACKAGE_VERSION, encode(body), bytes(64)]))
    assert info.value.code is Code.MALFORMED


def test_too_large_package() -> None:
    data = build(base_registry().state)
    decode_key_package(data, limits=ProtocolLimits(max_key_package=len(data)))
    with pytest.raises(DecodeError) as info:
        decode_key_package(data, limits=ProtocolLimits(max_key_package=len(data) - 1))
    assert info.value.code is Code.TOO_LARGE


def test_a_decoded_package_is_kept_and_the_limits_still_apply() -> None:
    # A first sync read each stored package a couple of dozen times (keys,
    # holders, the chain's check): the same bytes are decoded once.
    data = build(base_registry().state)
    first = decode_key_package(data)
    assert decode_key_package(bytes(bytearray(data))) is first
    with pytest.raises(DecodeError) as info:  # a caller's own limits are not bypassed
        decode_key_package(data, limits=ProtocolLimits(max_key_package=len(data) - 1))
    assert info.value.code is Code.TOO_LARGE
    for _ in range(2):  # a damaged copy is refused every time
        with pytest.raises(DecodeError):
            decode_key_package(data[:-1])


# ------------------------------------- version 2: key commitment, key history


def chain(state: RegistryState, count: int, *, previous: int = 1) -> tuple[list[KeyPackage],
                                                                        list[bytes]]:
    """``count`` epochs built by D1 on ``state``, each wrapping the last ``previous``
    earlier keys; returns the verified packages and their keys."""
    packages: list[KeyPackage] = []
    keys: list[bytes] = []
    for epoch in range(count):
        key = bytes([epoch % 251 + 1]) * 32
        data = build_key_package(creator=D1, registry=state, space=SPACE, epoch=epoch,
                                 prev=packages[-1].hash if packages else ZERO32,
                                 epoch_key=key, ts_ms=NOW_MS,
                                 ephemeral_seeds=ephemeral_seeds(state, 100 + epoch % 100),
                                 previous_keys=keys[-previous:] if previous else [])
        packages.append(verify(data, state, previous=packages[-1] if packages else None))
        keys.append(key)
    return packages, keys


def v1_package(state: RegistryState, *, epoch: int, prev: bytes, key: bytes,
               history: list[bytes]) -> bytes:
    """A version 1 package (old history: the earlier keys sealed with the key)."""
    plaintext = labelled(labels.KEY_PACKAGE_SEALED, SPACE, epoch, key, history)
    rows = [[rid, seal(pk, plaintext)]
            for i, (rid, pk) in enumerate(sorted(recipients_of(state).items()))]
    body = encode({"v": 1, "space": SPACE, "epoch": epoch, "prev": prev, "creator": D1.device_id,
                   "ts": NOW_MS, "registry_seq": state.seq, "recipients": rows})
    return encode([1, body, D1.sign(labelled(labels.KEY_PACKAGE_SIG, body))])


def test_a_version_2_package_wraps_the_previous_key_under_its_own() -> None:
    packages, keys = chain(base_registry().state, 3)
    assert [p.version for p in packages] == [2, 2, 2]
    assert packages[0].prev_keys is None
    assert packages[2].key_commit == key_commitment(SPACE, 2, keys[2])
    assert unwrap_previous_keys(packages[2], keys[2]) == {1: keys[1]}
    with pytest.raises(DecryptError):
        unwrap_previous_keys(packages[2], keys[1])  # not its key
    assert open_epoch_keys(packages[2], D2.device_id, D2.kx) == {2: keys[2]}


def test_key_history_reaches_epoch_0_for_any_number_of_epochs() -> None:
    state = base_registry().state
    packages, keys = chain(state, 300)
    later = state.apply(add_device(state, D1, D3, "tablet", NOW_MS + 5))
    last = verify(build_key_package(
        creator=D1, registry=later, space=SPACE, epoch=300, prev=packages[-1].hash,
        epoch_key=EPOCH_KEY, ts_ms=NOW_MS, ephemeral_seeds=ephemeral_seeds(later),
        previous_keys=keys[-1:]), later, previous=packages[-1])
    everything = dict(enumerate([*keys, EPOCH_KEY]))
    assert open_key_history([*packages, last], D3.device_id, D3.kx) == everything
    assert open_key_history([*packages, last], ACCOUNT.account_id,
                            ACCOUNT.recovery) == everything


def test_version_1_history_stays_readable_and_leads_into_version_2() -> None:
    state = base_registry().state
    keys = [bytes([i + 1]) * 32 for i in range(4)]
    first = verify(v1_package(state, epoch=0, prev=ZERO32, key=keys[0], history=[]), state)
    second = verify(v1_package(state, epoch=1, prev=first.hash, key=keys[1],
                               history=keys[:1]), state, previous=first)
    assert second.version == 1 and second.key_commit is None
    assert open_epoch_keys(second, D2.device_id, D2.kx) == {0: keys[0], 1: keys[1]}
    # The first version 2 package wraps every earlier key its creator holds.
    third = verify(build_key_package(creator=D1, registry=state, space=SPACE, epoch=2,
                                     prev=second.hash, epoch_key=keys[2], ts_ms=NOW_MS,
                                     ephemeral_seeds=ephemeral_seeds(state),
                                     previous_keys=keys[:2]), state, previous=second)
    later = state.apply(add_device(state, D1, D3, "tablet", NOW_MS + 5))
    fourth = verify(build_key_package(creator=D1, registry=later, space=SPACE, epoch=3,
                                      prev=third.hash, epoch_key=keys[3], ts_ms=NOW_MS,
                                      ephemeral_seeds=ephemeral_seeds(later),
                                      previous_keys=keys[2:3]), later, previous=third)
    assert open_key_history([first, second, third, fourth], D3.device_id,
                            D3.kx) == dict(enumerate(keys))


def test_a_sealed_key_that_differs_from_the_commitment_is_refused() -> None:
    # The creator seals another key to D2 than it committed to (and gave D1).
    state = base_registry().state
    liar = raw_key_package(D1, recipients=recipients_of(state), registry_seq=state.seq)
    other = raw_key_package(D1, recipients=recipients_of(state), registry_seq=state.seq,
                            epoch_key=OTHER_EPOCH_KEY)
    mixed = raw_key_package(D1, recipients=recipients_of(state), registry_seq=state.seq,
                            sealed_override={D2.device_id: decode_key_package(other)
                                             .recipients[D2.device_id]})
    assert open_epoch_key(verify(liar), D2.device_id, D2.kx) == EPOCH_KEY
    pkg = verify(mixed)
    assert open_epoch_key(pkg, D1.device_id, D1.kx) == EPOCH_KEY
    with pytest.raises(DecryptError) as info:
        open_epoch_key(pkg, D2.device_id, D2.kx)
    assert "commitment" in info.value.message


def test_wrapped_keys_are_refused_at_epoch_0_and_must_fit() -> None:
    body = _body(build(base_registry().state))
    for wrapped in (bytes(60), bytes(10), "x"):
        body["prev_keys"] = wrapped
        with pytest.raises(DecodeError):
            decode_key_package(encode([KEY_PACKAGE_VERSION, encode(body), bytes(64)]))


def test_revoked_since_names_devices_revoked_after_the_package() -> None:
    r = revoked_registry()  # D3 added at entry 2, revoked at 3
    at_2 = verify_registry(list(r.entries[:3]), pinned=ACCOUNT.public)
    before = verify(build(at_2), r.state)
    assert [d.device_id for d in revoked_since(before, r.state)] == [D3.device_id]
    assert needs_rotation(before, r.state)
    after = verify(build(r.state), r.state)
    assert revoked_since(after, r.state) == [] and not needs_rotation(after, r.state)
