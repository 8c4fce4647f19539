"""The envelope decoder's fast path accepts nothing the generic strict decoder
refuses, returns what it returns, and covers the envelopes clients produce.

``decode_envelope`` tries ``_decode_fast`` (one pass over the fixed layout)
and falls back to ``_decode_generic`` (canonical CBOR decode, then the schema
checks) whenever the fast path does not recognise the input.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sddsf.errors import DecodeError
from sddsf.protocol.clock import HLCTimestamp
from sddsf.protocol.encoding import encode
from sddsf.protocol.envelope import (
    GENESIS_PREV,
    OpEnvelope,
    OpHeader,
    TreeHeadRef,
    _decode_fast,
    _decode_generic,
    decode_envelope,
)
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.vv import VersionVector

L = DEFAULT_PROTOCOL_LIMITS


def generic(data: bytes, limits: ProtocolLimits = L) -> OpEnvelope | DecodeError:
    try:
        return _decode_generic(data, limits)
    except DecodeError as exc:
        return exc


def check_same(data: bytes, limits: ProtocolLimits = L) -> OpEnvelope | None:
    """The fast path is None or equal to the generic result; decode_envelope
    behaves exactly as the generic decoder. Returns the fast result."""
    slow = generic(data, limits)
    fast = _decode_fast(data, limits)
    if fast is not None:
        assert isinstance(slow, OpEnvelope), (data.hex(), slow)
        assert fast == slow
        assert fast.op_id == slow.op_id
        assert fast.header.deps.encoded() == slow.header.deps.encoded() \
            == encode(slow.header.deps.to_wire())
        assert dict(fast.header.deps) == dict(slow.header.deps)
    if len(data) <= limits.max_op:
        try:
            public: OpEnvelope | DecodeError = decode_envelope(data, limits=limits)
        except DecodeError as exc:
            public = exc
        if isinstance(slow, DecodeError):
            assert isinstance(public, DecodeError)
            assert (public.code, str(public)) == (slow.code, str(slow))
        else:
            assert public == slow
    return fast


u64 = st.integers(0, 2**64 - 1)
small_or_big = st.one_of(st.integers(0, 30), st.integers(0, 70_000), u64)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([1, 2]))
    seq = draw(st.one_of(st.just(1), st.integers(1, 300), st.integers(1, 2**64 - 1)))
    prev = GENESIS_PREV if seq == 1 else draw(st.binary(min_size=32, max_size=32))
    ids = draw(st.lists(st.binary(min_size=32, max_size=32), max_size=30, unique=True))
    deps = VersionVector({i: draw(st.integers(1, 2**64 - 1)) for i in ids})
    seen = draw(st.one_of(st.none(), st.builds(TreeHeadRef, st.integers(1, 2**64 - 1),
                                               st.binary(min_size=32, max_size=32))))
    header = OpHeader(
        space=draw(st.binary(min_size=16, max_size=16)),
        doc=draw(st.binary(min_size=16, max_size=16)),
        author=draw(st.binary(min_size=32, max_size=32)), seq=seq, prev=prev, deps=deps,
        epoch=draw(small_or_big),
        ts=HLCTimestamp(draw(st.integers(0, 2**48 - 1)), draw(st.integers(0, 0xFFFF))),
        seen=seen, nonce=draw(st.binary(min_size=24, max_size=24)), version=version,
        reg=draw(small_or_big) if version == 2 else None)
    ciphertext = draw(st.one_of(st.binary(min_size=16, max_size=40),
                                st.binary(min_size=250, max_size=300),
                                # A 4-byte length head: built from a drawn size and
                                # byte (older Hypothesis cannot draw 64 KiB directly).
                                st.builds(lambda n, b: bytes([b]) * n,
                                          st.integers(65_536, 65_540), st.integers(0, 255))))
    signature = draw(st.binary(min_size=64, max_size=64))
    return encode([1, encode(header.to_wire()), ciphertext, signature])


@settings(max_examples=300, deadline=None)
@given(envelopes())
def test_fast_path_covers_well_formed_envelopes(data: bytes) -> None:
    assert check_same(data) is not None


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(envelopes()))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 3))]
        else:
            del data[at:]
        if not data:
            data = bytearray(b"\x84")
    return bytes(data)


@settings(max_examples=1500, deadline=None)
@given(mutated())
def test_fast_path_never_accepts_what_the_generic_path_refuses(data: bytes) -> None:
    check_same(data)


def _header_map(**changes: object) -> bytes:
    header = OpHeader(space=bytes(16), doc=bytes(16), author=bytes(range(32)), seq=2,
                      prev=bytes(range(1, 33)), deps=VersionVector({bytes(32): 1}),
                      epoch=0, ts=HLCTimestamp(1, 0), seen=None, nonce=bytes(24))
    wire = header.to_wire()
    wire.update(changes)
    return encode(wire)


@pytest.mark.parametrize("changes", [
    {"v": 3}, {"suite": 2}, {"seq": 0}, {"seq": 1}, {"epoch": -1}, {"reg": -1},
    {"ts": [2**48, 0]}, {"ts": [1, 0x10000]}, {"ts": [1]}, {"seen": [0, bytes(32)]},
    {"seen": [1, bytes(31)]}, {"nonce": bytes(23)}, {"space": bytes(17)},
    {"doc": bytes(15)}, {"author": bytes(31)}, {"deps": [[bytes(32), 0]]},
    {"deps": [[bytes([1] * 32), 1], [bytes(32), 1]]}, {"deps": [[bytes(32), 1]] * 2},
    {"deps": [[bytes(31), 1]]}, {"extra": 1}, {"v": 1}, {"seq": True},
])
def test_hand_made_deviations(changes: dict[str, object]) -> None:
    data = encode([1, _header_map(**changes), bytes(16), bytes(64)])
    check_same(data)
    assert isinstance(generic(data), DecodeError) or changes == {}


def test_non_canonical_forms_are_refused_by_both() -> None:
    good = encode([1, _header_map(), bytes(16), bytes(64)])
    assert check_same(good) is not None
    header = _header_map()
    # "seq": 2 written as 0x18 0x02 (not its shortest form).
    bad_header = header.replace(b"\x63seq\x02", b"\x63seq\x18\x02")
    assert bad_header != header
    wide = [header.replace(b"\x65epoch\x00", b"\x65epoch" + form)
            for form in (b"\x19\x00\x00", b"\x19\x00\xff", b"\x1a\x00\x00\xff\xff",
                         b"\x1b\x00\x00\x00\x00\xff\xff\xff\xff")]
    assert all(w != header for w in wide)
    for data in (encode([1, bad_header, bytes(16), bytes(64)]),
                 *(encode([1, w, bytes(16), bytes(64)]) for w in wide),
                 good + b"\x00",  # trailing byte
                 b"\x84\x01\x59\x00" + good[3:],  # header length in a wider form
                 encode([1, header, bytes(15), bytes(64)]),  # ciphertext below its tag
                 encode([2, header, bytes(16), bytes(64)])):
        assert isinstance(generic(data), DecodeError)
        check_same(data)


@given(envelopes(), st.integers(0, 4), st.integers(1, 64))
@settings(max_examples=100, deadline=None)
def test_tight_limits_behave_the_same(data: bytes, depth: int, deps: int) -> None:
    limits = ProtocolLimits(max_depth=depth, max_deps=deps)
    assume(len(data) <= limits.max_op)
    check_same(data, limits)
