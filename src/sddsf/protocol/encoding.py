"""Canonical encoding: a strict subset of deterministic CBOR (RFC 8949 §4.2.1).

Every signed, hashed or AEAD-bound structure in SDDSF is one CBOR value
encoded here. The invariant this module keeps is *one byte string per value*:
:func:`encode` produces the only encoding :func:`decode` accepts, so a
signature over the bytes is a signature over the value.

Allowed data model: ``None``, ``bool``, ``int`` (-2^64 .. 2^64-1), ``bytes``,
``str`` (UTF-8), ``list`` and ``dict`` with ``str`` or ``int`` keys.
Rejected on decode (``DecodeError``, code ``malformed`` unless noted):
non-shortest integer or length arguments, indefinite lengths, tags, floats,
simple values other than false/true/null, unsorted or duplicate map keys,
invalid UTF-8, trailing bytes; input over ``max_size`` (code ``too_large``),
nesting deeper than ``max_depth``; containers with more than ``max_items``
(code ``too_large``).
Every declared length is checked against the bytes that remain *before*
anything is allocated, so a 9-byte header cannot ask for 2^64 items.

Map keys are ordered by their encoded bytes (bytewise lexicographic), which is
RFC 8949's core deterministic ordering. ``cbor2.dumps(v, canonical=True)`` uses
RFC 7049's length-first ordering instead; the two agree whenever all keys are
text, which is true of every SDDSF structure (tests cross-check both facts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sddsf.errors import Code, DecodeError, UsageError

__all__ = [
    "DEFAULT_LIMITS",
    "UINT64_MAX",
    "DecodeLimits",
    "byte_string_head",
    "decode",
    "encode",
    "unsigned_int",
]

#: The largest integer the encoding holds (unsigned 64 bits).
UINT64_MAX: Final = 2**64 - 1
_MAJOR_UINT, _MAJOR_NINT, _MAJOR_BYTES, _MAJOR_TEXT = 0, 1, 2, 3
_MAJOR_ARRAY, _MAJOR_MAP, _MAJOR_TAG, _MAJOR_SIMPLE = 4, 5, 6, 7
_FALSE, _TRUE, _NULL = 0xF4, 0xF5, 0xF6


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds applied while decoding untrusted bytes."""

    max_size: int = 1 << 20  # whole input, bytes
    max_depth: int = 16  # nesting of arrays and maps
    max_items: int = 10_000  # entries in one array or map


DEFAULT_LIMITS: Final = DecodeLimits()


# ---------------------------------------------------------------------- encode


def _head(major: int, arg: int) -> bytes:
    # Shortest form: the invariant that makes the encoding canonical.
    mt = major << 5
    if arg < 24:
        return bytes((mt | arg,))
    if arg <= 0xFF:
        return bytes((mt | 24, arg))
    if arg <= 0xFFFF:
        return bytes((mt | 25,)) + arg.to_bytes(2, "big")
    if arg <= 0xFFFFFFFF:
        return bytes((mt | 26,)) + arg.to_bytes(4, "big")
    return bytes((mt | 27,)) + arg.to_bytes(8, "big")


def byte_string_head(length: int) -> bytes:
    """The canonical head of a byte string of ``length`` bytes."""
    return _head(_MAJOR_BYTES, length)


def unsigned_int(value: int) -> bytes:
    """The canonical encoding of an integer in 0 .. 2^64-1 (the caller checks the range)."""
    return _head(_MAJOR_UINT, value)


def _encode_into(out: bytearray, value: object, depth: int) -> None:
    if depth > 64:
        raise UsageError("value nests too deeply to encode")
    if value is None:
        out.append(_NULL)
    elif value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif isinstance(value, int):
        if 0 <= value <= UINT64_MAX:
            out += _head(_MAJOR_UINT, value)
        elif -(2**64) <= value < 0:
            out += _head(_MAJOR_NINT, -1 - value)
        else:
            raise UsageError(f"integer {value} does not fit in 64 bits")
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out += _head(_MAJOR_BYTES, len(raw))
        out += raw
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out += _head(_MAJOR_TEXT, len(raw))
        out += raw
    elif isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, str | int):
                raise UsageError(f"map keys must be str or int, got {type(k).__name__}")
            encoded_key = bytearray()
            _encode_into(encoded_key, k, depth + 1)
            items.append((bytes(encoded_key), v))
        items.sort(key=lambda kv: kv[0])
        out += _head(_MAJOR_MAP, len(items))
        for key_bytes, v in items:
            out += key_bytes
            _encode_into(out, v, depth + 1)
    elif isinstance(value, Sequence):
        out += _head(_MAJOR_ARRAY, len(value))
        for item in value:
            _encode_into(out, item, depth + 1)
    else:
        raise UsageError(f"cannot encode values of type {type(value).__name__}")


def encode(value: object) -> bytes:
    """Encode ``value`` canonically.

    Raises:
        UsageError: a type outside the data model, a key that is not str/int,
            or an integer beyond 64 bits.
    """
    out = bytearray()
    _encode_into(out, value, 0)
    return bytes(out)


# ---------------------------------------------------------------------- decode


class _Reader:
    """Recursive-descent reader. Hot path: one method call per value, no slicing
    for integers, every length checked against the remaining input first."""

    __slots__ = ("data", "end", "limits", "pos")

    def __init__(self, data: bytes, limits: DecodeLimits) -> None:
        self.data = data
        self.end = len(data)
        self.pos = 0
        self.limits = limits

    def fail(self, why: str) -> DecodeError:
        return DecodeError(f"malformed encoding at byte {self.pos}: {why}", Code.MALFORMED)

    def value(self, depth: int) -> object:
        data, pos = self.data, self.pos
        if pos >= self.end:
            raise self.fail("unexpected end of input")
        initial = data[pos]
        pos += 1
        # Fast paths for the commonest items: small integers and short byte
        # strings (every id, hash and nonce is < 24 bytes or a 1-byte length).
        if initial < 0x18:
            self.pos = pos
            return initial
        if initial == 0x58 and pos < self.end:
            n = data[pos]
            if n >= 24 and pos + 1 + n <= self.end:
                self.pos = pos + 1 + n
                return data[pos + 1:pos + 1 + n]
        major, arg = initial >> 5, initial & 0x1F
        if major == _MAJOR_SIMPLE:
            self.pos = pos
            if initial == _FALSE:
                return False
            if initial == _TRUE:
                return True
            if initial == _NULL:
                return None
            raise self.fail("floats and simple values other than false/true/null are not "
                            "allowed")
        if arg >= 24:
            if arg > 27:
                # 28-30 reserved, 31 = indefinite length: neither is canonical.
                raise self.fail("indefinite lengths and reserved values are not allowed")
            width = 1 << (arg - 24)
            if pos + width > self.end:
                raise self.fail("truncated integer or length")
            arg = int.from_bytes(data[pos:pos + width], "big")
            pos += width
            # Shortest form only: each width must be needed.
            if arg < (24 if width == 1 else 1 << (4 * width)):
                self.pos = pos
                raise self.fail("integer or length not in its shortest form")
        self.pos = pos
        if major == _MAJOR_UINT:
            return arg
        if major == _MAJOR_NINT:
            return -1 - arg
        if major in (_MAJOR_BYTES, _MAJOR_TEXT):
            if arg > self.end - pos:
                raise self.fail(f"string of {arg} bytes is longer than the input")
            raw = data[pos:pos + arg]
            self.pos = pos + arg
            if major == _MAJOR_BYTES:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail("text string is not valid UTF-8") from None
        if major == _MAJOR_TAG:
            raise self.fail("tags are not allowed")
        # arrays and maps
        if depth >= self.limits.max_depth:
            raise self.fail(f"nesting deeper than {self.limits.max_depth}")
        if arg > self.limits.max_items:
            raise DecodeError(f"{arg} items exceed the limit of {self.limits.max_items}",
                              Code.TOO_LARGE)
        # Every item takes at least one byte (a map entry two): refuse
        # impossible counts before allocating anything for them.
        if arg * (1 if major == _MAJOR_ARRAY else 2) > self.end - pos:
            raise self.fail(f"declares {arg} items but the input is too short")
        if major == _MAJOR_ARRAY:
            return [self.value(depth + 1) for _ in range(arg)]
        return self.map(arg, depth + 1)

    def map(self, count: int, depth: int) -> dict[object, object]:
        result: dict[object, object] = {}
        previous_key = b""
        data = self.data
        for _ in range(count):
            key_start = self.pos
            first = data[key_start] if key_start < self.end else 0xFF
            if 0x61 <= first <= 0x77 and key_start + 1 + (first - 0x60) <= self.end:
                # Short text key (every SDDSF field name): decode inline.
                self.pos = key_start + 1 + (first - 0x60)
                try:
                    key: object = data[key_start + 1:self.pos].decode("utf-8")
                except UnicodeDecodeError:
                    raise self.fail("text string is not valid UTF-8") from None
            else:
                key = self.value(depth)
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise self.fail("map keys must be text or integers")
            key_bytes = data[key_start:self.pos]
            # RFC 8949 4.2.1: keys sorted bytewise by their encoding; equal = duplicate.
            if key_bytes <= previous_key:
                raise self.fail("map keys are duplicated or not in canonical order")
            previous_key = key_bytes
            result[key] = self.value(depth)
        return result


def decode(data: bytes | bytearray | memoryview, *,
           limits: DecodeLimits = DEFAULT_LIMITS) -> object:
    """Decode exactly one canonical value from ``data``.

    Returns an object in the data model described in the module docstring; the
    caller narrows its type with :mod:`sddsf.protocol.schema`.

    Raises:
        DecodeError: ``too_large`` when ``data`` exceeds ``limits.max_size``;
            ``malformed`` for anything that is not the canonical encoding.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > limits.max_size:
        raise DecodeError(f"input of {len(data)} bytes exceeds the limit of {limits.max_size}",
                          Code.TOO_LARGE)
    reader = _Reader(data, limits)
    value = reader.value(0)
    if reader.pos != len(data):
        raise reader.fail(f"{len(data) - reader.pos} trailing bytes after the value")
    return value
