"""The error tree's invariants, and regressions for review findings:
fork evidence needs a valid signature, tree heads of another log are refused
even from an empty start, and rotation is due after a revocation."""

from __future__ import annotations

import pytest

from factories import (
    ACCOUNT,
    D1,
    D2,
    D3,
    D4,
    NOW_MS,
    SPACE,
    STRANGER,
    base_registry,
    ephemeral_seeds,
    revoked_registry,
)
from sddsf import errors
from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import Code, SddsfError, error_from_wire
from sddsf.protocol import keypackage as kp
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.merkle import EMPTY_ROOT, MerkleTree
from sddsf.protocol.registry import add_device, verify_registry
from sddsf.protocol.treehead import check_progress, sign_tree_head, verify_tree_head


@pytest.mark.parametrize("code", list(Code))
def test_every_code_round_trips_to_the_same_class(code: Code) -> None:
    cls = errors._CLASS_FOR_CODE[code]
    err = cls("why", code)
    back = error_from_wire(**err.to_wire())
    assert type(back) is cls and back.code is code and back.message == "why"
    # A peer's fault is never a 5xx; only "unavailable" and "internal" are.
    assert (err.http_status >= 500) == (code in (Code.UNAVAILABLE, Code.INTERNAL))


def test_a_code_cannot_be_raised_with_another_class() -> None:
    with pytest.raises(TypeError):
        errors.RegistryError("x", Code.NOT_AUTHORIZED)


def test_unknown_wire_code_is_a_decode_error() -> None:
    err = error_from_wire("from_the_future", "hi")
    assert isinstance(err, errors.DecodeError) and "from_the_future" in err.message


def _with_bad_signature(entry: bytes) -> bytes:
    version, body, sigs = decode(entry)  # type: ignore[misc]
    return encode([version, body, {**sigs, "by": bytes(64)}])


def test_registry_fork_is_reported_only_for_a_signed_entry() -> None:
    reg = base_registry()
    genesis_state = verify_registry(reg.entries[:1], pinned=ACCOUNT.public)
    rival = add_device(genesis_state, D1, D4, "rival", NOW_MS)  # same seq as the real entry 1
    with pytest.raises(errors.RegistryError) as info:
        reg.state.apply(rival)
    assert info.value.code is Code.REGISTRY_FORK
    with pytest.raises(errors.SignatureError):
        reg.state.apply(_with_bad_signature(rival))
    with pytest.raises(errors.AuthorizationError):
        reg.state.apply(add_device(genesis_state, STRANGER, D4, "x", NOW_MS))


def test_check_progress_refuses_another_log_even_from_size_zero() -> None:
    relay = Ed25519SigningKey.from_seed(bytes([5]) * 32)
    empty = verify_tree_head(sign_tree_head(relay, log=SPACE, size=0, root=EMPTY_ROOT,
                                            ts_ms=NOW_MS), relay.public, log=SPACE)
    tree = MerkleTree()
    tree.append_leaf(b"x")
    other = bytes(16)
    head = verify_tree_head(sign_tree_head(relay, log=other, size=1, root=tree.root(),
                                           ts_ms=NOW_MS), relay.public, log=other)
    with pytest.raises(errors.ProofError) as info:
        check_progress(empty, head, [])
    assert info.value.code is Code.TREE_HEAD_INVALID


def test_rotation_is_due_after_a_revocation() -> None:
    before = base_registry().state
    pkg = kp.verify_key_package(
        kp.build_key_package(creator=D1, registry=before, space=SPACE, epoch=0, prev=bytes(32),
                             epoch_key=bytes([1]) * 32, ts_ms=NOW_MS,
                             ephemeral_seeds=ephemeral_seeds(before)),
        registry=before, space=SPACE, previous=None)
    assert not kp.needs_rotation(pkg, before)
    after = revoked_registry().state  # D3 added then revoked after the package
    assert kp.needs_rotation(pkg, after)
    assert D2.device_id in pkg.recipients and D3.device_id not in pkg.recipients


def test_errors_are_all_sddsf_errors() -> None:
    assert all(issubclass(c, SddsfError) for c in errors._CLASS_FOR_CODE.values())


def test_revoked_author_history_is_valid_up_to_its_cutoff_only() -> None:
    """History mode accepts a revoked author's ops up to the revocation's cutoff for
    that space; later ops, and anything in live mode, are refused."""
    from factories import make_op
    from sddsf.protocol.envelope import decode_envelope
    from sddsf.protocol.registry import revoke_device
    from sddsf.protocol.rules import EpochWindow, MemoryChainView, verify_op

    state = base_registry().state
    ops, prev = [], bytes(32)
    for seq in (1, 2, 3):
        raw = make_op(D2, seq=seq, prev=prev)
        ops.append(raw)
        prev = decode_envelope(raw).op_id
    revoked = state.apply(revoke_device(state, D1, D2.device_id, "lost", NOW_MS,
                                        cutoff={SPACE: 2}))
    chains = MemoryChainView()

    def check(raw: bytes, now: int | None) -> object:
        return verify_op(raw, space=SPACE, registry=revoked, epochs=EpochWindow(0, 0),
                         chains=chains, now_ms=now)

    for raw in ops[:2]:
        chains.record(check(raw, None).envelope)  # type: ignore[attr-defined]
    with pytest.raises(errors.AuthorizationError) as info:
        check(ops[2], None)  # seq 3 > cutoff 2
    assert info.value.code is Code.REVOKED
    with pytest.raises(errors.AuthorizationError):
        check(make_op(D2, seq=3, prev=prev, plaintext=b"new"), NOW_MS)  # live mode: never
