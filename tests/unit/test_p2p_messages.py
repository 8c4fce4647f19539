"""Peer-to-peer messages (sddsf.protocol.p2p, protocol.md 23.2-23.4): the codecs
of gossip, catch-up requests and responses, the space topic, and their bounds.

Properties: any bytes either decode or raise a :class:`DecodeError` with one of
the three decoding codes (never another exception); every valid value
round-trips; whatever decodes is the canonical encoding of what it decoded to;
an encoding with one integer or length head in a longer form than needed is
refused. This module needs no libp2p (the minimum-versions stage runs
tests/unit without it).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sddsf.errors import Code, DecodeError, UsageError
from sddsf.protocol import p2p
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS
from sddsf.protocol.p2p import (
    MAX_AUTHORS,
    MAX_GOSSIP_OPS,
    MAX_MESSAGE,
    MAX_RESPONSE_OPS,
    TOPIC_PREFIX,
    CatchUpRequest,
    CatchUpResponse,
    Gossip,
    GossipKind,
)

DECODING_CODES = {Code.MALFORMED, Code.TOO_LARGE, Code.UNSUPPORTED_VERSION}
SPACE = bytes(range(16))
ACCOUNT = bytes(range(100, 132))
KEY = bytes(range(32, 64))
U64 = st.integers(0, 2**64 - 1)


def author(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(4, "big")).digest()


def code_of(call: Any, *args: Any) -> Code:
    with pytest.raises(DecodeError) as info:
        call(*args)
    return info.value.code


# ---------------------------------------------------------------- strategies
items = st.binary(min_size=1, max_size=64)
gossips = st.one_of(
    st.builds(lambda ops, first: Gossip(GossipKind.OP, tuple(ops), first),
              st.lists(items, min_size=1, max_size=8), U64),
    st.builds(lambda many, first: Gossip(GossipKind.REGISTRY, tuple(many), first),
              st.lists(items, min_size=1, max_size=8), U64))
requests = st.builds(
    CatchUpRequest, st.binary(min_size=16, max_size=16),
    st.dictionaries(st.binary(min_size=32, max_size=32), U64, max_size=6),
    st.binary(min_size=32, max_size=32), U64, U64, st.integers(1, MAX_RESPONSE_OPS))
responses = st.builds(
    lambda ops, more, registry, packages: CatchUpResponse(tuple(ops), more, tuple(registry),
                                                          tuple(packages)),
    st.lists(items, max_size=6), st.booleans(), st.lists(items, max_size=4),
    st.lists(items, max_size=4))

Codec = tuple[Callable[[Any], bytes], Callable[[bytes], Any]]
CODECS: dict[str, Codec] = {
    "gossip": (p2p.encode_gossip, p2p.decode_gossip),
    "request": (p2p.encode_request, p2p.decode_request),
    "response": (p2p.encode_response, p2p.decode_response),
}


def _any_message() -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(
        gossips.map(lambda g: ("gossip", p2p.encode_gossip(g))),
        requests.map(lambda r: ("request", p2p.encode_request(r))),
        responses.map(lambda r: ("response", p2p.encode_response(r))))


# Values shaped like the messages (arrays of integers, byte strings, booleans,
# nested a little), so that random inputs get past the outer checks.
cbor_values = st.recursive(
    st.one_of(st.integers(-(2**64), 2**64 - 1), st.binary(max_size=40), st.booleans(),
              st.none(), st.text(max_size=4)),
    lambda inner: st.lists(inner, max_size=8), max_leaves=30)


def _shaped(version: int, rest: list[object]) -> bytes:
    return encode([version, *rest])


# ----------------------------------------------------------------- properties
@given(data=st.binary(max_size=300), which=st.sampled_from(sorted(CODECS)))
def test_any_bytes_decode_or_raise_a_decoding_error(data: bytes, which: str) -> None:
    _, decoder = CODECS[which]
    try:
        decoder(data)
    except DecodeError as exc:
        assert exc.code in DECODING_CODES, exc.code


@given(rest=st.lists(cbor_values, max_size=8), version=st.sampled_from([0, 1, 1, 1, 2]),
       which=st.sampled_from(sorted(CODECS)))
def test_structured_inputs_decode_or_raise_a_decoding_error(rest: list[object], version: int,
                                                             which: str) -> None:
    encoder, decoder = CODECS[which]
    data = _shaped(version, rest)
    try:
        value = decoder(data)
    except DecodeError as exc:
        assert exc.code in DECODING_CODES, exc.code
        return
    # What decodes is the canonical encoding of its value (the request's
    # authors may come in any order; the encoder sorts them).
    again = encoder(value)
    assert decoder(again) == value
    if which != "request" or list(value.have) == sorted(value.have):
        assert again == data


@given(message=gossips)
def test_gossip_round_trips(message: Gossip) -> None:
    raw = p2p.encode_gossip(message)
    assert p2p.decode_gossip(raw) == message
    assert p2p.encode_gossip(p2p.decode_gossip(raw)) == raw


@given(request=requests)
def test_request_round_trips(request: CatchUpRequest) -> None:
    raw = p2p.encode_request(request)
    decoded = p2p.decode_request(raw)
    assert decoded == request
    assert p2p.encode_request(decoded) == raw


@given(response=responses)
def test_response_round_trips(response: CatchUpResponse) -> None:
    raw = p2p.encode_response(response)
    assert p2p.decode_response(raw) == response
    assert p2p.encode_response(p2p.decode_response(raw)) == raw


@given(message=_any_message(), pos=st.integers(0, 10_000), xor=st.integers(1, 255))
def test_a_flipped_byte_decodes_or_is_refused_cleanly(message: tuple[str, bytes], pos: int,
                                                      xor: int) -> None:
    which, raw = message
    data = bytearray(raw)
    data[pos % len(data)] ^= xor
    try:
        CODECS[which][1](bytes(data))
    except DecodeError as exc:
        assert exc.code in DECODING_CODES


# ------------------------------------------------------ canonical form only
def _loose(value: object, widen: Any) -> tuple[bytes, bool]:
    """Encode ``value`` like the canonical encoder, except that ``widen()`` may
    choose, head by head, a longer form than needed. Returns the bytes and
    whether any head was widened."""
    out = bytearray()
    widened = False

    def head(major: int, arg: int) -> None:
        nonlocal widened
        sizes = [w for w, limit in ((0, 24), (1, 1 << 8), (2, 1 << 16), (4, 1 << 32),
                                    (8, 1 << 64)) if arg < limit]
        width = sizes[0]
        if len(sizes) > 1 and widen():
            width, widened = sizes[1], True
        if width == 0:
            out.append(major << 5 | arg)
        else:
            out.append(major << 5 | {1: 24, 2: 25, 4: 26, 8: 27}[width])
            out.extend(arg.to_bytes(width, "big"))

    def walk(v: object) -> None:
        if isinstance(v, bool):
            out.append(0xF5 if v else 0xF4)
        elif isinstance(v, int):
            head(0, v)
        elif isinstance(v, bytes):
            head(2, len(v))
            out.extend(v)
        elif isinstance(v, list):
            head(4, len(v))
            for x in v:
                walk(x)
        else:  # pragma: no cover - the messages hold nothing else
            raise AssertionError(type(v))

    walk(value)
    return bytes(out), widened


@given(message=_any_message(), data=st.data())
def test_a_non_canonical_encoding_is_refused(message: tuple[str, bytes],
                                             data: st.DataObject) -> None:
    which, raw = message
    loose, widened = _loose(decode(raw), lambda: data.draw(st.booleans()))
    if not widened:
        assert loose == raw  # the loose encoder agrees with the canonical one
        return
    assert code_of(CODECS[which][1], loose) is Code.MALFORMED


def test_one_widened_head_is_enough() -> None:
    raw = p2p.encode_gossip(Gossip(GossipKind.OP, (b"op",)))
    assert raw[1] == 0x01  # the version, in its one-byte form
    assert code_of(p2p.decode_gossip, raw[:1] + b"\x18\x01" + raw[2:]) is Code.MALFORMED
    trailing = raw + b"\x00"
    assert code_of(p2p.decode_gossip, trailing) is Code.MALFORMED


# --------------------------------------------------------------------- topics
def test_topic_is_deterministic_secret_looking_and_prefixed() -> None:
    topic = p2p.space_topic(SPACE, 3, KEY)
    assert topic == p2p.space_topic(SPACE, 3, KEY)
    assert topic.startswith(TOPIC_PREFIX)
    suffix = topic[len(TOPIC_PREFIX):]
    assert len(suffix) == 32 and int(suffix, 16) >= 0  # hex of 16 bytes
    assert TOPIC_PREFIX == "sddsf/p2p/1/"


def test_topic_differs_per_space_epoch_and_key() -> None:
    base = p2p.space_topic(SPACE, 3, KEY)
    others = {p2p.space_topic(bytes(16), 3, KEY), p2p.space_topic(SPACE, 4, KEY),
              p2p.space_topic(SPACE, 3, bytes(32)), p2p.space_topic(SPACE, 2, KEY)}
    assert base not in others and len(others) == 4
    # The topic is not the key, the space or the epoch in disguise.
    assert KEY.hex()[:32] not in base and SPACE.hex() not in base


@given(a=st.tuples(st.binary(min_size=16, max_size=16), U64, st.binary(min_size=32,
                                                                     max_size=32)),
       b=st.tuples(st.binary(min_size=16, max_size=16), U64, st.binary(min_size=32,
                                                                     max_size=32)))
def test_distinct_inputs_give_distinct_topics(a: tuple[bytes, int, bytes],
                                              b: tuple[bytes, int, bytes]) -> None:
    same = p2p.space_topic(*a) == p2p.space_topic(*b)
    assert same == (a == b)


# --------------------------------------------------------------------- limits
def _request_bytes(*, limit: int = 10, have: list[Any] | None = None) -> bytes:
    return encode([1, SPACE, have or [], ACCOUNT, 0, 0, limit])


def test_request_limit_bounds() -> None:
    assert p2p.decode_request(_request_bytes(limit=1)).limit == 1
    assert p2p.decode_request(_request_bytes(limit=MAX_RESPONSE_OPS)).limit == MAX_RESPONSE_OPS
    assert code_of(p2p.decode_request, _request_bytes(limit=0)) is Code.MALFORMED
    assert code_of(p2p.decode_request,
                   _request_bytes(limit=MAX_RESPONSE_OPS + 1)) is Code.MALFORMED
    assert code_of(p2p.decode_request, _request_bytes(limit=2**64 - 1)) is Code.MALFORMED


def test_request_names_at_most_4096_authors_each_once() -> None:
    most = [[author(i), i] for i in range(MAX_AUTHORS)]
    assert len(p2p.decode_request(_request_bytes(have=most)).have) == MAX_AUTHORS
    too_many = [*most, [author(MAX_AUTHORS), 1]]
    assert code_of(p2p.decode_request, _request_bytes(have=too_many)) is Code.TOO_LARGE
    twice = [[author(1), 5], [author(2), 1], [author(1), 7]]
    assert code_of(p2p.decode_request, _request_bytes(have=twice)) is Code.MALFORMED


@pytest.mark.parametrize("have", [
    [[author(1)]],                      # no seq
    [[author(1), 1, 2]],                # three items
    [[b"short", 1]],                    # not a device id
    [[author(1), -1]],                  # negative seq
    [[author(1), True]],                # a boolean is no seq
    [author(1)],                        # not a pair
])
def test_request_have_entries_are_checked(have: list[object]) -> None:
    assert code_of(p2p.decode_request, _request_bytes(have=have)) in {Code.MALFORMED,
                                                                      Code.TOO_LARGE}


def test_request_fields_are_checked() -> None:
    for bad in ([1, SPACE[:15], [], ACCOUNT, 0, 0, 1], [1, SPACE, [], ACCOUNT[:31], 0, 0, 1],
                [1, SPACE, [], ACCOUNT, -1, 0, 1], [1, SPACE, [], ACCOUNT, 0, b"", 1],
                [1, SPACE, [], ACCOUNT, 0, 0], [1, SPACE, {}, ACCOUNT, 0, 0, 1]):
        assert code_of(p2p.decode_request, encode(bad)) is Code.MALFORMED


def test_gossip_shape() -> None:
    one = p2p.decode_gossip(encode([1, GossipKind.OP, 0, [b"op"]]))
    assert one == Gossip(GossipKind.OP, (b"op",))
    entries = [b"e%d" % i for i in range(1024)]
    assert len(p2p.decode_gossip(encode([1, GossipKind.REGISTRY, 7, entries])).items) == 1024
    assert len(p2p.decode_gossip(encode([1, GossipKind.OP, 0, entries])).items) == MAX_GOSSIP_OPS
    cases = {
        Code.TOO_LARGE: [[1, GossipKind.OP, 0, [*entries, b"x"]],        # 1,025 ops
                         [1, GossipKind.REGISTRY, 0, [*entries, b"x"]],  # 1,025 entries
                         [1, GossipKind.OP, 0,
                          [b"x" * (DEFAULT_PROTOCOL_LIMITS.max_op + 1)]]],
        Code.MALFORMED: [[1, 2, 0, [b"op"]],                           # unknown kind
                         [1, GossipKind.OP, 0, []],                    # carries nothing
                         [1, GossipKind.OP, 0, [b""]],                 # an empty item
                         [1, GossipKind.OP, 0, ["text"]],
                         [1, GossipKind.OP, -1, [b"op"]],
                         [1, GossipKind.OP, 0, b"op"],
                         [1, GossipKind.OP, [b"op"]],                  # three items
                         ["1", GossipKind.OP, 0, [b"op"]]],
        Code.UNSUPPORTED_VERSION: [[2, GossipKind.OP, 0, [b"op"]], [0, 0, 0, [b"op"]]],
    }
    for code, values in cases.items():
        for value in values:
            assert code_of(p2p.decode_gossip, encode(value)) is code, value


def test_messages_are_at_most_4_mib() -> None:
    # Size is checked before decoding anything: a longer input is too_large even
    # when its content would be refused for another reason.
    huge = b"\x00" * (MAX_MESSAGE + 1)
    for _, decoder in CODECS.values():
        assert code_of(decoder, huge) is Code.TOO_LARGE
    assert p2p.fits([DEFAULT_PROTOCOL_LIMITS.max_op] * 7)
    assert not p2p.fits([DEFAULT_PROTOCOL_LIMITS.max_op] * 8)


def test_response_shape() -> None:
    ok = [1, [b"op"], False, [b"reg"], [b"kp"]]
    assert p2p.decode_response(encode(ok)) == CatchUpResponse((b"op",), False, (b"reg",),
                                                              (b"kp",))
    ops = [b"o"] * MAX_RESPONSE_OPS
    assert len(p2p.decode_response(encode([1, ops, True, [], []])).ops) == MAX_RESPONSE_OPS
    assert code_of(p2p.decode_response, encode([1, [*ops, b"o"], True, [], []])
                   ) is Code.TOO_LARGE
    assert code_of(p2p.decode_response, encode([1, [], 1, [], []])) is Code.MALFORMED
    assert code_of(p2p.decode_response, encode([1, [], None, [], []])) is Code.MALFORMED
    assert code_of(p2p.decode_response, encode([1, [b""], False, [], []])) is Code.MALFORMED
    assert code_of(p2p.decode_response, encode([1, [], False, [b"r"] * 1025, []])
                   ) is Code.TOO_LARGE
    assert code_of(p2p.decode_response, encode([2, [], False, [], []])
                   ) is Code.UNSUPPORTED_VERSION



@given(ops=st.lists(st.binary(min_size=1, max_size=3000), max_size=60),
       max_size=st.integers(3100, 20000))
def test_packed_ops_keep_their_order_and_fit(ops: list[bytes], max_size: int) -> None:
    messages = p2p.pack_ops(ops, max_size)
    carried = [p2p.decode_gossip(m) for m in messages]
    assert all(g.kind == GossipKind.OP for g in carried)
    assert [op for g in carried for op in g.items] == ops
    assert all(len(m) <= max_size for m in messages)
    # As few as fit: a message ends only when the next op would not have fitted
    # (the packer counts every item's header as 5 bytes and the frame as 8).
    for left, right in itertools.pairwise(carried):
        n = len(left.items) + 1
        joined = p2p.encode_gossip(Gossip(GossipKind.OP, (*left.items, right.items[0])))
        assert len(joined) + 4 * n + 8 > max_size or n > MAX_GOSSIP_OPS


def test_packing_respects_the_op_count_and_refuses_an_op_that_cannot_fit() -> None:
    ops = [b"%d" % i for i in range(2 * MAX_GOSSIP_OPS + 1)]
    sizes = [len(p2p.decode_gossip(m).items) for m in p2p.pack_ops(ops, 1 << 20)]
    assert sizes == [MAX_GOSSIP_OPS, MAX_GOSSIP_OPS, 1]
    assert p2p.pack_ops([], 1000) == []
    with pytest.raises(UsageError, match="does not fit"):
        p2p.pack_ops([b"x" * 1000], 1000)
