"""Canonical encoding (sddsf.protocol.encoding).

Covers: round trips and RFC 8949 Appendix A known encodings; RFC 8949 §4.2.1
bytewise key ordering; a cross-check against the independent ``cbor2`` encoder
(``canonical=True``) and decoder; encoder refusals (UsageError); every decoder
refusal (DecodeError ``malformed`` / ``too_large``: non-shortest heads,
indefinite lengths, tags, floats, simple values, key order and duplicates, bad
UTF-8, trailing or truncated input, impossible declared lengths, depth and
item limits); and the "one byte string per value" property on random bytes.

Note on cbor2: ``cbor2.dumps(..., canonical=True)`` sorts map keys length-first
(RFC 7049 §3.9 / RFC 8949 §4.2.3), while SDDSF sorts them bytewise (RFC 8949
§4.2.1). The two orders agree whenever all keys are text (or of one encoded
length), so the byte-for-byte cross-check uses text keys; mixed int/text keys
are checked against a bytewise reference built from cbor2's per-key encodings.
"""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sddsf.errors import Code, DecodeError, UsageError
from sddsf.protocol.encoding import DEFAULT_LIMITS, DecodeLimits, decode, encode
from sddsf.protocol.labels import labelled

INT = st.integers(min_value=-(2**64), max_value=2**64 - 1)
SCALARS = st.none() | st.booleans() | INT | st.binary(max_size=40) | st.text(max_size=20)


def values(keys: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Values of the data model, with map keys drawn from ``keys``."""
    return st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=5)
        | st.dictionaries(keys, inner, max_size=5),
        max_leaves=20,
    )


TEXT_KEYED = values(st.text(max_size=30))
MIXED_KEYED = values(st.text(max_size=30) | INT)


def _array_head(count: int) -> bytes:
    """cbor2's head for an array of ``count`` items (its items are ``count`` nulls)."""
    return cbor2.dumps([None] * count)[: len(cbor2.dumps([None] * count)) - count]


def reference_bytewise(value: object) -> bytes:
    """RFC 8949 §4.2.1 deterministic encoding built on cbor2's per-item encoder."""
    if isinstance(value, dict):
        items = sorted((reference_bytewise(k), reference_bytewise(v)) for k, v in value.items())
        head = _array_head(len(items))
        head = bytes([head[0] | 0x20]) + head[1:]  # major type 4 (array) -> 5 (map)
        return head + b"".join(k + v for k, v in items)
    if isinstance(value, list):
        return _array_head(len(value)) + b"".join(reference_bytewise(v) for v in value)
    return cbor2.dumps(value, canonical=True)


def assert_malformed(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> None:
    with pytest.raises(DecodeError) as info:
        decode(data, limits=limits)
    assert info.value.code is Code.MALFORMED


# ------------------------------------------------------------------ round trip


@given(MIXED_KEYED)
def test_round_trip(value: object) -> None:
    assert decode(encode(value)) == value


@given(MIXED_KEYED)
def test_encoding_is_deterministic_and_reencodes_identically(value: object) -> None:
    data = encode(value)
    assert encode(decode(data)) == data


@pytest.mark.parametrize(
    ("value", "hex_"),
    [
        (0, "00"), (1, "01"), (10, "0a"), (23, "17"), (24, "1818"), (25, "1819"),
        (100, "1864"), (1000, "1903e8"), (1_000_000, "1a000f4240"),
        (1_000_000_000_000, "1b000000e8d4a51000"), (2**64 - 1, "1bffffffffffffffff"),
        (-1, "20"), (-10, "29"), (-100, "3863"), (-1000, "3903e7"),
        (-(2**64), "3bffffffffffffffff"),
        (False, "f4"), (True, "f5"), (None, "f6"),
        (b"", "40"), (b"\x01\x02\x03\x04", "4401020304"),
        ("", "60"), ("a", "6161"), ("IETF", "6449455446"), ("\"\\", "62225c"),
        ("\u00fc", "62c3bc"), ("\u6c34", "63e6b0b4"), ("\U00010151", "64f0908591"),
        ([], "80"), ([1, 2, 3], "83010203"), ([1, [2, 3], [4, 5]], "8301820203820405"),
        (list(range(1, 26)),
         "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
        ({}, "a0"), ({1: 2, 3: 4}, "a201020304"), ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
        (["a", {"b": "c"}], "826161a161626163"),
        ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
         "a56161614161626142616361436164614461656145"),
    ],
)
def test_known_encodings_rfc8949_appendix_a(value: object, hex_: str) -> None:
    assert encode(value).hex() == hex_
    assert decode(bytes.fromhex(hex_)) == value


def test_map_keys_sorted_bytewise_not_length_first() -> None:
    # RFC 8949 §4.2.1: 24 (0x1818) sorts before -1 (0x20) although it is longer.
    assert encode({-1: 0, 24: 0}).hex() == "a2" + "181800" + "2000"
    assert encode({"a": 0, 1000: 0}).hex() == "a2" + "1903e800" + "616100"


def test_tuples_encode_as_arrays_and_bytearray_as_bytes() -> None:
    assert encode((1, 2)) == encode([1, 2])
    assert encode(bytearray(b"xy")) == encode(b"xy")


# --------------------------------------------------------------- cross-checks


@given(TEXT_KEYED)
def test_encode_equals_cbor2_canonical_with_text_keys(value: object) -> None:
    assert encode(value) == cbor2.dumps(value, canonical=True)


@given(MIXED_KEYED)
def test_encode_equals_bytewise_reference_with_mixed_keys(value: object) -> None:
    assert encode(value) == reference_bytewise(value)


@given(MIXED_KEYED)
def test_cbor2_decodes_our_encoding(value: object) -> None:
    assert cbor2.loads(encode(value)) == value


# ------------------------------------------------------------ encoder refusals


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**64) - 1, 1.5, {1, 2}, object(), {b"k": 1}, {True: 1}, {(1,): 2}, {None: 1}],
    ids=["uint-overflow", "nint-overflow", "float", "set", "object", "bytes-key", "bool-key",
         "tuple-key", "none-key"],
)
def test_encode_refuses_values_outside_the_data_model(value: object) -> None:
    with pytest.raises(UsageError) as info:
        encode(value)
    assert info.value.code is Code.USAGE


# ------------------------------------------------------------ decoder refusals


@pytest.mark.parametrize(
    "hex_",
    ["1817", "1900ff", "1a0000ffff", "1b00000000ffffffff", "3817", "390010",
     "580161", "780161", "9800", "b800", "59000161", "9a00000001" + "00"],
)
def test_rejects_non_shortest_integers_and_lengths(hex_: str) -> None:
    assert_malformed(bytes.fromhex(hex_))


@pytest.mark.parametrize("hex_", ["5fff", "7fff", "9fff", "bfff", "5f4101ff", "9f01ff",
                                  "1c", "1d", "1e", "1f", "ff"])
def test_rejects_indefinite_lengths_reserved_values_and_break(hex_: str) -> None:
    assert_malformed(bytes.fromhex(hex_))


@pytest.mark.parametrize("hex_", ["c074323031332d30332d32315432303a30343a30305a", "c11a514b67b0",
                                  "c249010000000000000000", "d82076687474703a2f2f7777772e6578",
                                  "d9d9f700"])
def test_rejects_tags(hex_: str) -> None:
    assert_malformed(bytes.fromhex(hex_))


@pytest.mark.parametrize("hex_", ["f93c00", "f97e00", "fa47c35000", "fb3ff199999999999a",
                                  "fb7ff0000000000000"])
def test_rejects_floats(hex_: str) -> None:
    assert_malformed(bytes.fromhex(hex_))


@pytest.mark.parametrize("hex_", ["f7", "e0", "f0", "f3", "f818", "f820", "f8ff"])
def test_rejects_undefined_and_other_simple_values(hex_: str) -> None:
    assert_malformed(bytes.fromhex(hex_))


@pytest.mark.parametrize(
    "hex_",
    ["a2616201616102",  # {"b": 1, "a": 2}
     "a201000000",  # {1: 0, 0: 0}
     "a22000181800",  # {-1: 0, 24: 0}: length-first order, not bytewise
     "a26161001903e800"],  # {"a": 0, 1000: 0}: length-first order
)
def test_rejects_unsorted_map_keys(hex_: str) -> None:
    assert_malformed(bytes.fromhex(hex_))


@pytest.mark.parametrize("hex_", ["a2616101616102", "a201000100", "a3000001000100"])
def test_rejects_duplicate_map_keys(hex_: str) -> None:
    assert_malformed(bytes.fromhex(hex_))


@pytest.mark.parametrize("hex_", ["a1f500", "a14000", "a18000", "a1a000", "a1f600"])
def test_rejects_map_keys_that_are_not_text_or_int(hex_: str) -> None:
    assert_malformed(bytes.fromhex(hex_))


@pytest.mark.parametrize("hex_", ["61ff", "62c328", "62c0af", "63eda080", "64f4908080",
                                  "6180"])
def test_rejects_invalid_utf8(hex_: str) -> None:
    assert_malformed(bytes.fromhex(hex_))


@pytest.mark.parametrize("hex_", ["0000", "f600", "8000", "4100ff", "a0a0"])
def test_rejects_trailing_bytes(hex_: str) -> None:
    assert_malformed(bytes.fromhex(hex_))


@pytest.mark.parametrize("hex_", ["", "18", "1901", "1a0000", "1b00000000", "4201", "6261",
                                  "8201", "a16161", "a1", "81", "9818"])
def test_rejects_truncated_input(hex_: str) -> None:
    assert_malformed(bytes.fromhex(hex_))


@pytest.mark.parametrize(
    "data",
    [b"\x5b" + b"\xff" * 8, b"\x7b" + b"\xff" * 8, b"\x9b" + b"\xff" * 8,
     b"\xbb" + b"\xff" * 8, b"\x5a\xff\xff\xff\xff", b"\x9a\x00\x00\x27\x10" + b"\x00" * 100,
     b"\x99\x01\x00" + b"\x00" * 200, b"\xb9\x00\x80" + b"\x00" * 200],
    ids=["bytes-2^64", "text-2^64", "array-2^64", "map-2^64", "bytes-2^32", "array-10000",
         "array-256-short", "map-128-short"],
)
def test_rejects_declared_lengths_longer_than_input(data: bytes) -> None:
    # Counts beyond max_items are "too large"; shorter impossible ones "malformed".
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert info.value.code in (Code.MALFORMED, Code.TOO_LARGE)
    if data[0] in (0x9B, 0xBB):  # 2^64 items: refused by the item bound
        assert info.value.code is Code.TOO_LARGE


def test_nesting_up_to_max_depth_is_accepted() -> None:
    depth = DEFAULT_LIMITS.max_depth
    assert decode(b"\x81" * depth + b"\x00") is not None


@pytest.mark.parametrize("opener", [b"\x81", b"\xa1\x00"])
def test_rejects_nesting_beyond_max_depth(opener: bytes) -> None:
    assert_malformed(opener * (DEFAULT_LIMITS.max_depth + 1) + b"\x00")


def test_rejects_nesting_beyond_custom_max_depth() -> None:
    limits = DecodeLimits(max_depth=2)
    assert decode(b"\x81\x81\x00", limits=limits) == [[0]]
    assert_malformed(b"\x81\x81\x81\x00", limits)


def test_rejects_more_items_than_max_items() -> None:
    limits = DecodeLimits(max_items=3)
    assert decode(encode([0, 0, 0]), limits=limits) == [0, 0, 0]
    for data in (encode([0, 0, 0, 0]), encode({str(i): 0 for i in range(4)})):
        with pytest.raises(DecodeError) as info:
            decode(data, limits=limits)
        assert info.value.code is Code.TOO_LARGE


def test_rejects_input_over_max_size_as_too_large() -> None:
    limits = DecodeLimits(max_size=10)
    assert decode(encode(b"x" * 8), limits=limits) == b"x" * 8
    with pytest.raises(DecodeError) as info:
        decode(encode(b"x" * 10), limits=limits)
    assert info.value.code is Code.TOO_LARGE


def test_accepts_bytearray_and_memoryview_input() -> None:
    assert decode(bytearray(b"\x83\x01\x02\x03")) == [1, 2, 3]
    assert decode(memoryview(b"\x41\x07")) == b"\x07"


# ------------------------------------------------------------------ properties


def _decode_or_reject(data: bytes) -> None:
    try:
        value = decode(data)
    except DecodeError as exc:
        assert exc.code in (Code.MALFORMED, Code.TOO_LARGE)
        return
    assert encode(value) == data  # one byte string per value


@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_decode_error_only(data: bytes) -> None:
    _decode_or_reject(data)


@given(MIXED_KEYED, st.data())
def test_mutated_encodings_decode_canonically_or_raise_decode_error(value: object,
                                                                    data: st.DataObject) -> None:
    raw = bytearray(encode(value))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(raw)))
    _decode_or_reject(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))


@given(st.text(min_size=1, max_size=40),
       st.lists(MIXED_KEYED | st.integers(min_value=-(2**70), max_value=2**70), max_size=8))
def test_labelled_is_the_canonical_encoding_of_label_and_parts(label: str,
                                                                parts: list[object]) -> None:
    # labelled() encodes byte strings and integers itself (the hot path of every
    # signature, id and AD) and sends any other part through encode(): the bytes
    # are encode([label, *parts]) either way, and what encode() refuses it refuses.
    try:
        expected = encode([label, *parts])
    except UsageError:
        with pytest.raises(UsageError):
            labelled(label, *parts)
        return
    assert labelled(label, *parts) == expected


@pytest.mark.parametrize("part", [True, False, 0, 23, 24, 255, 256, 2**64 - 1, 2**64, -1,
                                  bytearray(b"ab"), memoryview(b"ab"), "text", None])
def test_labelled_handles_each_part_kind_exactly_like_encode(part: object) -> None:
    if part == 2**64:
        with pytest.raises(UsageError):
            labelled("sddsf/v1/test", b"id", part)
        return
    assert labelled("sddsf/v1/test", b"id", part, 7) == encode(["sddsf/v1/test", b"id", part, 7])
