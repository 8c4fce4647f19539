"""Op envelopes (sddsf.protocol.envelope).

Covers: seal_op/open_op round trip and the decoded fields; op ids; the
author's signature; seal_op refusals; per-document keys; open_op with the
wrong epoch key; every header field bound in the AEAD associated data and the
signature (a header rebuilt with one field changed no longer opens or
verifies); and decode_envelope's structural refusals: too_large (whole op,
header, deps), unsupported_version (outer and header), unsupported_suite,
missing/unknown header fields, wrong sizes and types, seq 1 with a non-zero
prev, malformed seen/ts/deps, non-canonical header bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from factories import (
    D1,
    D2,
    DOC,
    EPOCH_KEY,
    NOW_MS,
    OTHER_EPOCH_KEY,
    SPACE,
    make_header,
    make_op,
    raw_envelope,
)
from sddsf.errors import Code, DecodeError, DecryptError, SignatureError, UsageError
from sddsf.protocol.encoding import encode
from sddsf.protocol.envelope import (
    GENESIS_PREV,
    OpHeader,
    TreeHeadRef,
    decode_envelope,
    derive_doc_key,
    open_op,
    seal_op,
)
from sddsf.protocol.limits import ProtocolLimits

ROOT = bytes([0x5A]) * 32
FULL_HEADER = make_header(D1, seq=3, prev=bytes([1]) * 32, deps={D2.device_id: 4}, epoch=2,
                          ts_ms=NOW_MS, counter=5, seen=TreeHeadRef(9, ROOT))


def header_wire(**changes: object) -> dict[str, object]:
    wire = FULL_HEADER.to_wire()
    wire.update(changes)
    return wire


def assert_decode_error(data: bytes, code: Code = Code.MALFORMED,
                        limits: ProtocolLimits | None = None) -> None:
    with pytest.raises(DecodeError) as info:
        if limits is None:
            decode_envelope(data)
        else:
            decode_envelope(data, limits=limits)
    assert info.value.code is code


# ------------------------------------------------------------------ round trip


def test_seal_open_round_trip() -> None:
    env = seal_op(D1, FULL_HEADER, b"crdt update", EPOCH_KEY)
    assert open_op(env, EPOCH_KEY) == b"crdt update"
    assert env.header == FULL_HEADER


def test_decode_of_sealed_bytes_gives_the_same_envelope() -> None:
    env = seal_op(D1, FULL_HEADER, b"crdt update", EPOCH_KEY)
    again = decode_envelope(env.raw)
    assert again == env
    assert again.op_id == env.op_id
    assert open_op(again, EPOCH_KEY) == b"crdt update"


def test_empty_plaintext_round_trips() -> None:
    env = decode_envelope(make_op(D1, plaintext=b""))
    assert open_op(env, EPOCH_KEY) == b""


def test_op_id_is_32_bytes_and_distinct_per_op() -> None:
    a = decode_envelope(make_op(D1, plaintext=b"a"))
    b = decode_envelope(make_op(D1, plaintext=b"b"))
    assert len(a.op_id) == 32
    assert a.op_id != b.op_id
    assert decode_envelope(a.raw).op_id == a.op_id


def test_signature_verifies_under_author_key_only() -> None:
    env = decode_envelope(make_op(D1))
    env.verify_signature(D1.signing.public)
    with pytest.raises(SignatureError) as info:
        env.verify_signature(D2.signing.public)
    assert info.value.code is Code.SIG_INVALID


def test_a_verified_signature_is_remembered_per_key_and_never_across_envelopes() -> None:
    # The memo that spares a second check (ops from peers are checked before
    # they wait and again when judged) must not turn into an acceptance: a
    # success under D1's key says nothing about D2's key, nor about an envelope
    # built from this one with other bytes.
    env = decode_envelope(make_op(D1))
    env.verify_signature(D1.signing.public)
    env.verify_signature(D1.signing.public)
    with pytest.raises(SignatureError):
        env.verify_signature(D2.signing.public)
    other = seal_op(D1, FULL_HEADER, b"other", EPOCH_KEY)
    forged = replace(env, ciphertext=other.ciphertext)
    with pytest.raises(SignatureError):
        forged.verify_signature(D1.signing.public)
    assert forged == replace(forged) and env != forged


def test_ciphertext_does_not_contain_plaintext() -> None:
    env = decode_envelope(make_op(D1, plaintext=b"secret-password-123"))
    assert b"secret-password-123" not in env.raw


def test_seal_refuses_header_of_another_author() -> None:
    with pytest.raises(UsageError):
        seal_op(D2, make_header(D1), b"x", EPOCH_KEY)


def test_seal_refuses_bad_nonce_size() -> None:
    with pytest.raises(UsageError):
        seal_op(D1, make_header(D1, nonce=bytes(12)), b"x", EPOCH_KEY)


def test_seal_refuses_an_op_over_the_size_limit() -> None:
    limits = ProtocolLimits(max_op=1024)
    seal_op(D1, make_header(D1), b"x" * 100, EPOCH_KEY, limits=limits)
    with pytest.raises(UsageError):
        seal_op(D1, make_header(D1), b"x" * 2000, EPOCH_KEY, limits=limits)


def test_doc_keys_differ_per_space_doc_and_epoch() -> None:
    base = derive_doc_key(EPOCH_KEY, SPACE, DOC, 0)
    assert len(base) == 32
    assert base == derive_doc_key(EPOCH_KEY, SPACE, DOC, 0)
    others = {derive_doc_key(EPOCH_KEY, bytes(16), DOC, 0),
              derive_doc_key(EPOCH_KEY, SPACE, bytes(16), 0),
              derive_doc_key(EPOCH_KEY, SPACE, DOC, 1),
              derive_doc_key(OTHER_EPOCH_KEY, SPACE, DOC, 0)}
    assert base not in others
    assert len(others) == 4


def test_doc_key_refuses_wrong_epoch_key_size() -> None:
    with pytest.raises(UsageError):
        derive_doc_key(bytes(16), SPACE, DOC, 0)


def test_open_with_wrong_epoch_key_fails() -> None:
    env = decode_envelope(make_op(D1))
    with pytest.raises(DecryptError) as info:
        open_op(env, OTHER_EPOCH_KEY)
    assert info.value.code is Code.DECRYPT_FAILED


# ------------------------------------------- header bound in AD and signature

CHANGES: dict[str, Callable[[OpHeader], object]] = {
    "space": lambda h: bytes(16),
    "doc": lambda h: bytes(16),
    "author": lambda h: D2.device_id,
    "seq": lambda h: h.seq + 1,
    "prev": lambda h: bytes([2]) * 32,
    "deps": lambda h: [[D2.device_id, 5]],
    "epoch": lambda h: h.epoch + 1,
    "ts": lambda h: [h.ts.wall_ms + 1, h.ts.counter],
    "seen": lambda h: None,
    "nonce": lambda h: bytes(24),
}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_every_header_field_is_bound_in_ad_and_signature(field: str) -> None:
    env = seal_op(D1, FULL_HEADER, b"crdt update", EPOCH_KEY)
    moved = decode_envelope(raw_envelope(header_wire(**{field: CHANGES[field](FULL_HEADER)}),
                                         ciphertext=env.ciphertext, signature=env.signature))
    assert moved.header != env.header
    with pytest.raises(DecryptError):
        open_op(moved, EPOCH_KEY)
    with pytest.raises(SignatureError):
        moved.verify_signature(D1.signing.public)


def test_ciphertext_is_bound_in_signature() -> None:
    a = seal_op(D1, FULL_HEADER, b"one", EPOCH_KEY)
    b = seal_op(D1, FULL_HEADER, b"two", EPOCH_KEY)
    mixed = decode_envelope(raw_envelope(a.header_bytes, ciphertext=b.ciphertext,
                                         signature=a.signature))
    with pytest.raises(SignatureError):
        mixed.verify_signature(D1.signing.public)


# ------------------------------------------------------------ decode refusals


def test_valid_hand_built_envelope_decodes() -> None:
    env = decode_envelope(raw_envelope(header_wire()))
    assert env.header == FULL_HEADER


def test_too_large_op() -> None:
    limits = ProtocolLimits()
    assert_decode_error(bytes(limits.max_op + 1), Code.TOO_LARGE)


def test_too_large_op_with_custom_limit() -> None:
    data = make_op(D1)
    decode_envelope(data, limits=ProtocolLimits(max_op=len(data)))
    assert_decode_error(data, Code.TOO_LARGE, ProtocolLimits(max_op=len(data) - 1))


def test_too_large_header() -> None:
    data = raw_envelope(header_wire())
    assert_decode_error(data, Code.TOO_LARGE, ProtocolLimits(max_header=64))


def test_too_many_deps() -> None:
    deps = [[bytes([i]) * 32, 1] for i in range(1, 4)]
    data = raw_envelope(header_wire(deps=deps))
    decode_envelope(data, limits=ProtocolLimits(max_deps=3))
    assert_decode_error(data, Code.TOO_LARGE, ProtocolLimits(max_deps=2))


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unsupported_outer_version(version: int) -> None:
    assert_decode_error(raw_envelope(header_wire(), version=version), Code.UNSUPPORTED_VERSION)


@pytest.mark.parametrize("version", [True, "1", b"\x01", None])
def test_outer_version_of_wrong_type_is_malformed(version: object) -> None:
    assert_decode_error(raw_envelope(header_wire(), version=version))


@pytest.mark.parametrize("version", [0, 3])
def test_unsupported_header_version(version: int) -> None:
    assert_decode_error(raw_envelope(header_wire(v=version)), Code.UNSUPPORTED_VERSION)


def test_header_version_1_without_reg_is_readable_history() -> None:
    wire = header_wire(v=1)
    del wire["reg"]
    env = decode_envelope(raw_envelope(wire))
    assert env.header.version == 1 and env.header.reg is None
    assert env.header.to_wire() == wire


def test_header_version_2_carries_reg_and_each_version_has_its_exact_fields() -> None:
    env = seal_op(D1, replace(FULL_HEADER, reg=7), b"x", EPOCH_KEY)
    assert decode_envelope(env.raw).header.reg == 7
    assert_decode_error(raw_envelope(header_wire(v=1)))  # version 1 has no reg
    wire = header_wire()
    del wire["reg"]
    assert_decode_error(raw_envelope(wire))  # version 2 needs it
    assert_decode_error(raw_envelope(header_wire(reg=-1)))
    assert_decode_error(raw_envelope(header_wire(reg="3")))


def test_seal_makes_only_the_current_header_version() -> None:
    with pytest.raises(UsageError):
        seal_op(D1, replace(FULL_HEADER, version=1, reg=None), b"x", EPOCH_KEY)
    with pytest.raises(UsageError):
        seal_op(D1, replace(FULL_HEADER, reg=None), b"x", EPOCH_KEY)


@pytest.mark.parametrize("suite", [0, 2, 99])
def test_unsupported_suite(suite: int) -> None:
    assert_decode_error(raw_envelope(header_wire(suite=suite)), Code.UNSUPPORTED_SUITE)


@pytest.mark.parametrize("field", sorted(FULL_HEADER.to_wire()))
def test_missing_header_field(field: str) -> None:
    wire = header_wire()
    del wire[field]
    assert_decode_error(raw_envelope(wire))


@pytest.mark.parametrize("extra", [{"flags": 0}, {"ignore_if_unsupported": True}, {1: 1}])
def test_unknown_header_field(extra: dict[object, object]) -> None:
    wire: dict[object, object] = dict(header_wire())
    wire.update(extra)
    assert_decode_error(encode([1, encode(wire), bytes(16), bytes(64)]))


@pytest.mark.parametrize(
    ("field", "value"),
    [("space", bytes(15)), ("space", bytes(17)), ("doc", bytes(15)), ("author", bytes(31)),
     ("author", bytes(33)), ("prev", bytes(31)), ("nonce", bytes(23)), ("nonce", bytes(25)),
     ("space", "x" * 16), ("seq", 0), ("seq", -1), ("seq", True), ("seq", b"\x01"),
     ("epoch", -1), ("epoch", "0"), ("v", "1"), ("suite", None)],
)
def test_wrong_field_sizes_and_types(field: str, value: object) -> None:
    assert_decode_error(raw_envelope(header_wire(**{field: value})))


def test_seq_1_with_non_zero_prev_is_refused() -> None:
    assert_decode_error(raw_envelope(header_wire(seq=1, prev=bytes([1]) * 32)))


def test_seq_1_with_zero_prev_decodes() -> None:
    env = decode_envelope(raw_envelope(header_wire(seq=1, prev=GENESIS_PREV)))
    assert env.header.seq == 1


@pytest.mark.parametrize("seen", [[0, ROOT], [1, ROOT[:31]], [1], 5, [True, ROOT], ["1", ROOT]])
def test_malformed_seen(seen: object) -> None:
    assert_decode_error(raw_envelope(header_wire(seen=seen)))


def test_seen_with_three_items_is_refused() -> None:
    with pytest.raises(DecodeError) as info:
        decode_envelope(raw_envelope(header_wire(seen=[1, ROOT, 2])))
    assert info.value.code in (Code.MALFORMED, Code.TOO_LARGE)


@pytest.mark.parametrize("ts", [[1], [-1, 0], [2**48, 0], [0, 2**16], "now"])
def test_malformed_ts(ts: object) -> None:
    assert_decode_error(raw_envelope(header_wire(ts=ts)))


@pytest.mark.parametrize(
    "deps",
    [[[bytes([2]) * 32, 1], [bytes([1]) * 32, 1]], [[bytes([1]) * 32, 0]],
     [[bytes([1]) * 31, 1]], {"a": 1}],
    ids=["unsorted", "zero", "short-id", "map"],
)
def test_malformed_deps(deps: object) -> None:
    assert_decode_error(raw_envelope(header_wire(deps=deps)))


@pytest.mark.parametrize(
    "outer",
    [[1, b"", bytes(16)], [1, b"", bytes(16), bytes(64), b""], {"v": 1}, b"envelope", None],
    ids=["three", "five", "map", "bytes", "null"],
)
def test_outer_shape(outer: object) -> None:
    assert_decode_error(encode(outer))


@pytest.mark.parametrize(
    ("ciphertext", "signature"),
    [(bytes(16), bytes(63)), (bytes(16), bytes(65)), (bytes(15), bytes(64)), ("ct", bytes(64)),
     (bytes(16), None)],
)
def test_outer_ciphertext_and_signature_sizes(ciphertext: object, signature: object) -> None:
    assert_decode_error(encode([1, encode(header_wire()), ciphertext, signature]))


def test_header_that_is_not_a_map() -> None:
    assert_decode_error(raw_envelope(encode([1, 2, 3])))


def test_non_canonical_header_bytes_are_refused() -> None:
    canonical = encode(header_wire())
    # Same map with the "v" key's integer in a non-shortest form (0x18 0x02 instead of 0x02).
    idx = canonical.index(b"\x61v\x02")
    tampered = canonical[:idx] + b"\x61v\x18\x02" + canonical[idx + 3:]
    assert_decode_error(raw_envelope(tampered))


def test_header_with_trailing_bytes_is_refused() -> None:
    assert_decode_error(raw_envelope(encode(header_wire()) + b"\x00"))
