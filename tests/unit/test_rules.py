"""The op verification rules (sddsf.protocol.rules.verify_op).

Covers: acceptance (first op, a chain of ops, several authors, bytes or a
decoded envelope); idempotent DUPLICATE for an identical resubmission, also
after the author is revoked, after the epoch moved on and in history mode; and
each rejection with its code: wrong space (wrong_context), unknown author
(unknown_device), revoked author (revoked), stale epoch beyond the grace window
(stale_epoch) vs. the previous epoch within it, future epoch (unknown_epoch),
clock skew in both directions (clock_skew) and its boundary, history mode
(now_ms=None) skipping the clock and staleness rules, forged signatures
(sig_invalid, and a forged fork reported as a bad signature rather than as
evidence), fork (chain_fork), gap (chain_gap), wrong prev (chain_fork), deps
regression and self-dependency (deps_regression), malformed bytes; the
compromised-epoch rule (epoch_compromised for an op whose author had seen a
revocation made after its epoch's package, in live and history mode; no grace
for such an epoch; ``reg`` beyond the verifier's registry: wrong_context) and
header version 1 (history only: unsupported_version in live mode).
"""

from __future__ import annotations

import pytest

from factories import (
    D1,
    D2,
    D3,
    NOW_MS,
    OTHER_SPACE,
    SPACE,
    STRANGER,
    base_registry,
    envelope_by_hand,
    make_header,
    make_op,
    revoked_registry,
)
from sddsf.errors import (
    AuthorizationError,
    ChainError,
    ClockSkewError,
    Code,
    ContextError,
    DecodeError,
    EpochError,
    SignatureError,
)
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.envelope import decode_envelope
from sddsf.protocol.registry import RegistryState, add_device
from sddsf.protocol.rules import (
    DEFAULT_RULES,
    EpochWindow,
    MemoryChainView,
    Outcome,
    RuleSettings,
    Verdict,
    verify_op,
)

EPOCH0 = EpochWindow(current=0, started_ms=NOW_MS - 1000)
SKEW = DEFAULT_RULES.max_skew_ms
GRACE = DEFAULT_RULES.epoch_grace_ms


def check(data: bytes, *, registry: RegistryState | None = None,
          epochs: EpochWindow = EPOCH0, chains: MemoryChainView | None = None,
          now_ms: int | None = NOW_MS, space: bytes = SPACE,
          settings: RuleSettings | None = None) -> Verdict:
    return verify_op(data, space=space, registry=registry or base_registry().state,
                     epochs=epochs, chains=chains if chains is not None else MemoryChainView(),
                     now_ms=now_ms, settings=settings)


def accept(data: bytes, chains: MemoryChainView, **kwargs: object) -> bytes:
    """Verify, assert ACCEPT, record, and return the op id."""
    verdict = check(data, chains=chains, **kwargs)  # type: ignore[arg-type]
    assert verdict.outcome is Outcome.ACCEPT
    chains.record(verdict.envelope)
    return verdict.envelope.op_id


def rejected(data: bytes, exc: type[Exception], code: Code, **kwargs: object) -> None:
    with pytest.raises(exc) as info:
        check(data, **kwargs)  # type: ignore[arg-type]
    assert info.value.code is code  # type: ignore[attr-defined]


def with_d3() -> RegistryState:
    r = base_registry()
    return r.then(add_device(r.state, D1, D3, "tablet", NOW_MS + 2)).state


# ------------------------------------------------------------------- accept


def test_first_op_is_accepted() -> None:
    data = make_op(D1)
    verdict = check(data)
    assert verdict.outcome is Outcome.ACCEPT
    assert verdict.envelope == decode_envelope(data)


def test_decoded_envelope_is_accepted() -> None:
    assert check(decode_envelope(make_op(D1))).outcome is Outcome.ACCEPT  # type: ignore[arg-type]


def test_a_chain_of_ops_is_accepted() -> None:
    chains = MemoryChainView()
    prev = accept(make_op(D1), chains)
    for seq in (2, 3, 4):
        prev = accept(make_op(D1, seq=seq, prev=prev, plaintext=bytes([seq])), chains)
    head = chains.head(D1.device_id)
    assert head is not None and head.seq == 4


def test_authors_have_independent_chains() -> None:
    chains = MemoryChainView()
    d1 = accept(make_op(D1), chains)
    accept(make_op(D2, deps={D1.device_id: 1}), chains)
    accept(make_op(D1, seq=2, prev=d1, deps={D2.device_id: 1}), chains)


def test_verify_op_does_not_record() -> None:
    chains = MemoryChainView()
    check(make_op(D1), chains=chains)
    assert chains.head(D1.device_id) is None


# ---------------------------------------------------------------- duplicates


def test_identical_resubmission_is_a_duplicate() -> None:
    chains = MemoryChainView()
    data = make_op(D1)
    accept(data, chains)
    verdict = check(data, chains=chains)
    assert verdict.outcome is Outcome.DUPLICATE
    assert verdict.envelope.op_id == decode_envelope(data).op_id


def test_duplicate_after_author_revoked() -> None:
    chains = MemoryChainView()
    data = make_op(D3)
    accept(data, chains, registry=with_d3())
    revoked = revoked_registry().state
    assert check(data, chains=chains, registry=revoked).outcome is Outcome.DUPLICATE
    rejected(make_op(D3, seq=2, prev=decode_envelope(data).op_id), AuthorizationError,
             Code.REVOKED, chains=chains, registry=revoked)


def test_duplicate_after_epoch_moved_on() -> None:
    chains = MemoryChainView()
    data = make_op(D1, epoch=0)
    accept(data, chains)
    later = EpochWindow(current=3, started_ms=NOW_MS - 10 * GRACE)
    assert check(data, chains=chains, epochs=later).outcome is Outcome.DUPLICATE


def test_duplicate_long_after_its_timestamp() -> None:
    chains = MemoryChainView()
    data = make_op(D1)
    accept(data, chains)
    verdict = check(data, chains=chains, now_ms=NOW_MS + 100 * SKEW)
    assert verdict.outcome is Outcome.DUPLICATE


def test_duplicate_in_history_mode() -> None:
    chains = MemoryChainView()
    data = make_op(D1)
    accept(data, chains)
    assert check(data, chains=chains, now_ms=None).outcome is Outcome.DUPLICATE


# ----------------------------------------------------------- context and author


def test_wrong_space() -> None:
    rejected(make_op(D1, space=OTHER_SPACE), ContextError, Code.WRONG_CONTEXT)
    rejected(make_op(D1), ContextError, Code.WRONG_CONTEXT, space=OTHER_SPACE)


def test_unknown_author() -> None:
    rejected(make_op(STRANGER), AuthorizationError, Code.UNKNOWN_DEVICE)


def test_revoked_author() -> None:
    rejected(make_op(D3), AuthorizationError, Code.REVOKED, registry=revoked_registry().state)


def test_revoked_author_history_mode() -> None:
    rejected(make_op(D3), AuthorizationError, Code.REVOKED, registry=revoked_registry().state,
             now_ms=None)


# ------------------------------------------------------------------- epochs


def test_stale_epoch_beyond_grace() -> None:
    window = EpochWindow(current=1, started_ms=NOW_MS - GRACE - 1)
    rejected(make_op(D1, epoch=0), EpochError, Code.STALE_EPOCH, epochs=window)


def test_epoch_two_behind_is_stale_even_within_grace() -> None:
    window = EpochWindow(current=2, started_ms=NOW_MS - 1000)
    rejected(make_op(D1, epoch=0), EpochError, Code.STALE_EPOCH, epochs=window)


def test_previous_epoch_within_grace_is_accepted() -> None:
    window = EpochWindow(current=1, started_ms=NOW_MS - 1000)
    assert check(make_op(D1, epoch=0), epochs=window).outcome is Outcome.ACCEPT


def test_previous_epoch_at_the_end_of_grace_is_accepted() -> None:
    window = EpochWindow(current=1, started_ms=NOW_MS - GRACE)
    assert check(make_op(D1, epoch=0), epochs=window).outcome is Outcome.ACCEPT


def test_current_epoch_is_accepted() -> None:
    window = EpochWindow(current=5, started_ms=NOW_MS - 10 * GRACE)
    assert check(make_op(D1, epoch=5), epochs=window).outcome is Outcome.ACCEPT


def test_future_epoch() -> None:
    rejected(make_op(D1, epoch=1), EpochError, Code.UNKNOWN_EPOCH)


def test_future_epoch_history_mode() -> None:
    rejected(make_op(D1, epoch=1), EpochError, Code.UNKNOWN_EPOCH, now_ms=None)


def test_history_mode_accepts_old_epochs() -> None:
    window = EpochWindow(current=4, started_ms=NOW_MS - 10 * GRACE)
    assert check(make_op(D1, epoch=0), epochs=window, now_ms=None).outcome is Outcome.ACCEPT


# -------------------------------------------------------------------- clock


@pytest.mark.parametrize("offset", [SKEW + 1, 10 * SKEW])
def test_clock_skew(offset: int) -> None:
    rejected(make_op(D1, ts_ms=NOW_MS + offset), ClockSkewError, Code.CLOCK_SKEW)


@pytest.mark.parametrize("offset", [-SKEW - 1, -10 * SKEW, -30 * 24 * 3_600_000])
def test_old_timestamps_are_accepted_offline_edits_arrive_late(offset: int) -> None:
    assert check(make_op(D1, ts_ms=NOW_MS + offset)).outcome is Outcome.ACCEPT


@pytest.mark.parametrize("offset", [SKEW, -SKEW, 0])
def test_clock_skew_boundary_is_accepted(offset: int) -> None:
    assert check(make_op(D1, ts_ms=NOW_MS + offset)).outcome is Outcome.ACCEPT


def test_custom_skew_window() -> None:
    settings = RuleSettings(max_skew_ms=1000)
    data = make_op(D1, ts_ms=NOW_MS + 1001)
    rejected(data, ClockSkewError, Code.CLOCK_SKEW, settings=settings)
    assert check(data).outcome is Outcome.ACCEPT


def test_history_mode_skips_the_clock_rule() -> None:
    assert check(make_op(D1, ts_ms=NOW_MS - 365 * 24 * 3600 * 1000),
                 now_ms=None).outcome is Outcome.ACCEPT


# ---------------------------------------------------------------- signatures


def test_signed_by_another_device_claiming_the_author() -> None:
    rejected(make_op(D1, signer=D2), SignatureError, Code.SIG_INVALID)


def test_signed_by_a_stranger_claiming_the_author() -> None:
    rejected(make_op(D1, signer=STRANGER), SignatureError, Code.SIG_INVALID)


@pytest.mark.parametrize("signature", [bytes(64), bytes([0xFF]) * 64])
def test_junk_signature(signature: bytes) -> None:
    outer = decode(make_op(D1))
    assert isinstance(outer, list)
    rejected(encode([outer[0], outer[1], outer[2], signature]), SignatureError, Code.SIG_INVALID)


def test_forged_fork_is_a_bad_signature_not_evidence() -> None:
    chains = MemoryChainView()
    accept(make_op(D1), chains)
    rejected(make_op(D1, plaintext=b"other", signer=D2), SignatureError, Code.SIG_INVALID,
             chains=chains)


# -------------------------------------------------------------------- chains


def test_fork_same_seq_other_content() -> None:
    chains = MemoryChainView()
    accept(make_op(D1, plaintext=b"one"), chains)
    rejected(make_op(D1, plaintext=b"two"), ChainError, Code.CHAIN_FORK, chains=chains)


def test_fork_below_the_head() -> None:
    chains = MemoryChainView()
    first = accept(make_op(D1), chains)
    accept(make_op(D1, seq=2, prev=first), chains)
    rejected(make_op(D1, plaintext=b"rollback"), ChainError, Code.CHAIN_FORK, chains=chains)


def test_gap_on_first_op() -> None:
    rejected(make_op(D1, seq=2, prev=bytes([1]) * 32), ChainError, Code.CHAIN_GAP)


@pytest.mark.parametrize("jump", [2, 3, 2**32])
def test_gap_after_head(jump: int) -> None:
    chains = MemoryChainView()
    first = accept(make_op(D1), chains)
    rejected(make_op(D1, seq=1 + jump, prev=first), ChainError, Code.CHAIN_GAP, chains=chains)


def test_wrong_prev() -> None:
    chains = MemoryChainView()
    accept(make_op(D1), chains)
    rejected(make_op(D1, seq=2, prev=bytes([3]) * 32), ChainError, Code.CHAIN_FORK,
             chains=chains)


def test_prev_pointing_at_another_authors_op() -> None:
    chains = MemoryChainView()
    accept(make_op(D1), chains)
    d2 = accept(make_op(D2), chains)
    rejected(make_op(D1, seq=2, prev=d2), ChainError, Code.CHAIN_FORK, chains=chains)


def test_deps_regression() -> None:
    chains = MemoryChainView()
    first = accept(make_op(D1, deps={D2.device_id: 3}), chains)
    rejected(make_op(D1, seq=2, prev=first, deps={D2.device_id: 2}), ChainError,
             Code.DEPS_REGRESSION, chains=chains)


def test_deps_dropping_an_author_is_a_regression() -> None:
    chains = MemoryChainView()
    first = accept(make_op(D1, deps={D2.device_id: 3}), chains)
    rejected(make_op(D1, seq=2, prev=first), ChainError, Code.DEPS_REGRESSION, chains=chains)


def test_deps_growing_is_accepted() -> None:
    chains = MemoryChainView()
    first = accept(make_op(D1, deps={D2.device_id: 3}), chains)
    accept(make_op(D1, seq=2, prev=first, deps={D2.device_id: 3, D3.device_id: 1}), chains)


def test_self_dependency() -> None:
    rejected(make_op(D1, deps={D1.device_id: 1}), ChainError, Code.DEPS_REGRESSION)


def test_self_dependency_later_in_chain() -> None:
    chains = MemoryChainView()
    first = accept(make_op(D1), chains)
    rejected(make_op(D1, seq=2, prev=first, deps={D1.device_id: 1}), ChainError,
             Code.DEPS_REGRESSION, chains=chains)


# ------------------------------------------------------------------ decoding


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x84\x01\x40\x40\x40"])
def test_malformed_bytes(data: bytes) -> None:
    rejected(data, DecodeError, Code.MALFORMED)


def test_too_large_op() -> None:
    rejected(bytes(DEFAULT_RULES.limits.max_op + 1), DecodeError, Code.TOO_LARGE)


# --------------------------------------------------- compromised epochs (reg)
# revoked_registry: genesis D1 (0), add D2 (1), add D3 (2), revoke D3 (3).
MADE_WITH_D3 = EpochWindow(current=0, started_ms=NOW_MS - 1000, package_seqs=(2,))


def test_op_sealed_after_a_revocation_under_the_revoked_devices_epoch_is_refused() -> None:
    state = revoked_registry().state
    late = make_op(D1, reg=3)  # its author had verified the revocation (entry 3)
    for now in (NOW_MS, None):  # live mode and history mode alike
        rejected(late, EpochError, Code.EPOCH_COMPROMISED, registry=state,
                 epochs=MADE_WITH_D3, now_ms=now)
    # Written before its author saw the revocation: valid (the revoker rotates).
    assert check(make_op(D1, reg=2), registry=state, epochs=MADE_WITH_D3,
                 now_ms=None).outcome is Outcome.ACCEPT
    # An epoch made after the revocation is not compromised by it.
    fresh = EpochWindow(current=0, started_ms=NOW_MS - 1000, package_seqs=(3,))
    assert check(late, registry=state, epochs=fresh).outcome is Outcome.ACCEPT


def test_op_naming_registry_entries_the_verifier_lacks_is_refused() -> None:
    rejected(make_op(D1, reg=4), ContextError, Code.WRONG_CONTEXT,
             registry=revoked_registry().state, epochs=MADE_WITH_D3)


def test_no_grace_for_a_previous_epoch_a_revoked_device_holds() -> None:
    state = revoked_registry().state
    old = make_op(D1, reg=2)  # sealed under epoch 0 before its author saw the revocation
    rotated = EpochWindow(current=1, started_ms=NOW_MS - 1000, package_seqs=(2, 3))
    rejected(old, EpochError, Code.STALE_EPOCH, registry=state, epochs=rotated)
    clean = EpochWindow(current=1, started_ms=NOW_MS - 1000, package_seqs=(3, 3))
    assert check(old, registry=state, epochs=clean).outcome is Outcome.ACCEPT
    assert check(old, registry=state, epochs=rotated, now_ms=None).outcome is Outcome.ACCEPT


def _v1_op() -> bytes:
    header = make_header(D1)
    wire = header.to_wire()
    del wire["reg"]
    wire["v"] = 1
    return envelope_by_hand(encode(wire), b"update", signer=D1, nonce=header.nonce,
                            space=header.space, doc=header.doc, epoch=header.epoch)


def test_header_version_1_is_history_only() -> None:
    old = _v1_op()
    rejected(old, DecodeError, Code.UNSUPPORTED_VERSION)
    verdict = check(old, now_ms=None)
    assert verdict.outcome is Outcome.ACCEPT and verdict.envelope.header.reg is None
    chains = MemoryChainView()
    chains.record(verdict.envelope)
    assert check(old, chains=chains).outcome is Outcome.DUPLICATE  # a retry stays idempotent
