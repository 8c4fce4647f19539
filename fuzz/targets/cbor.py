"""The canonical CBOR decoder (:mod:`sddsf.protocol.encoding`).

Oracle beyond the contract: the decoder accepts exactly one encoding per
value, so whatever it accepts re-encodes to the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

from fuzz.targets import Target
from fuzz.world import hex_values
from sddsf.errors import DecodeError, UsageError
from sddsf.protocol.encoding import DEFAULT_LIMITS, DecodeLimits, decode, encode

_TIGHT = DecodeLimits(max_size=4096, max_depth=3, max_items=8)


def run(data: bytes) -> None:
    """Decode under the default and under tight limits; check the round trip."""
    for limits in (DEFAULT_LIMITS, _TIGHT):
        try:
            value = decode(data, limits=limits)
        except DecodeError:
            continue
        try:
            again = encode(value)
        except UsageError as exc:
            raise AssertionError(f"decoded a value the encoder refuses: {exc}") from exc
        if again != data:
            raise AssertionError("the decoder accepted a non-canonical encoding "
                                 f"({data.hex()} re-encodes as {again.hex()})")


def seeds() -> Iterator[bytes]:
    """Every structure in the vectors, plus small values of each major type."""
    yield from (b"\x00", b"\x17", b"\x18\x18", b"\x20", b"\x40", b"\x60", b"\x80", b"\xa0",
                b"\xf4", b"\xf5", b"\xf6", b"\x1b" + bytes(7) + b"\x01",
                encode({"a": [1, -2, b"x", "y", None, True, {"b": []}]}))
    yield from hex_values("envelope", "envelope")
    yield from hex_values("registry", "entries")
    yield from hex_values("key_package", "package")
    yield from hex_values("tree_head", "tree_head")


TARGETS = {"cbor": Target("cbor", run, seeds)}
