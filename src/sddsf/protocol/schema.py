"""Narrowing decoded values into typed fields, with errors that name the field.

Decoded structures are maps with a fixed set of text keys. Unknown keys are
refused (no "ignore if unsupported": THREATS #26) and so are missing ones, so
each structure has exactly one accepted shape.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Final

from sddsf.errors import Code, DecodeError
from sddsf.protocol.encoding import DecodeLimits, decode

__all__ = ["Fields", "check_version", "decode_signed", "expect_list", "expect_map",
           "version_of_map"]

_U64: Final = 2**64 - 1


def _bad(what: str, why: str) -> DecodeError:
    return DecodeError(f"{what}: {why}", Code.MALFORMED)


def check_version(value: object, supported: int | Collection[int], what: str) -> int:
    """Check a structure's version field before anything else about it
    (``supported``: the one version, or the versions, this build reads).

    Raises:
        DecodeError: ``malformed`` if it is not an integer,
            ``unsupported_version`` if it is another version.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(what, "version must be an integer")
    known = (supported,) if isinstance(supported, int) else tuple(sorted(supported))
    if value not in known:
        spoken = " or ".join(str(v) for v in known)
        raise DecodeError(f"{what}: version {value} is not supported (this build speaks "
                          f"version {spoken}); upgrade the software that sent it",
                          Code.UNSUPPORTED_VERSION)
    return value


def version_of_map(value: object, supported: int | Collection[int], what: str) -> None:
    """Check the ``"v"`` field of a decoded map first, so that a newer structure
    with new fields is reported as ``unsupported_version``, not ``malformed``."""
    if isinstance(value, dict) and "v" in value:
        check_version(value["v"], supported, what)


def expect_map(value: object, what: str, required: Iterable[str],
               optional: Iterable[str] = ()) -> Fields:
    """Check ``value`` is a map with exactly the ``required`` keys (plus any ``optional``).

    Raises:
        DecodeError: not a map, a missing key, or an unknown key.
    """
    if not isinstance(value, dict):
        raise _bad(what, f"expected a map, got {type(value).__name__}")
    req = set(required)
    allowed = req | set(optional)
    keys = set(value)
    if missing := req - keys:
        raise _bad(what, f"missing field(s) {sorted(missing)}")
    if unknown := keys - allowed:
        raise _bad(what, f"unknown field(s) {sorted(map(str, unknown))}")
    return Fields(value, what)


def expect_list(value: object, what: str, *, max_items: int) -> list[object]:
    """Check ``value`` is an array of at most ``max_items`` items."""
    if not isinstance(value, list):
        raise _bad(what, f"expected an array, got {type(value).__name__}")
    if len(value) > max_items:
        raise DecodeError(f"{what}: {len(value)} items exceed the limit of {max_items}",
                          Code.TOO_LARGE)
    return value


class Fields:
    """Typed accessors over one decoded map; every error names ``what.field``.

    A field that is absent is a :class:`DecodeError` too (``malformed``), never a
    ``KeyError``: not every map passed :func:`expect_map` (a pairing payload is
    opened as it comes), so each accessor checks presence itself.
    """

    __slots__ = ("_m", "_what")

    def __init__(self, m: dict[object, object], what: str) -> None:
        self._m = m
        self._what = what

    def has(self, key: str) -> bool:
        """Whether an optional field is present."""
        return key in self._m

    def _get(self, key: str) -> object:
        try:
            return self._m[key]
        except KeyError:
            raise _bad(f"{self._what}.{key}", "missing field") from None

    def raw(self, key: str) -> object:
        """The undecoded value of ``key``."""
        return self._get(key)

    def bytes_(self, key: str, *, size: int | None = None, max_size: int | None = None) -> bytes:
        """A byte string, of exactly ``size`` or at most ``max_size`` bytes."""
        v = self._get(key)
        if not isinstance(v, bytes):
            raise _bad(f"{self._what}.{key}", f"expected bytes, got {type(v).__name__}")
        if size is not None and len(v) != size:
            raise _bad(f"{self._what}.{key}", f"expected {size} bytes, got {len(v)}")
        if max_size is not None and len(v) > max_size:
            raise DecodeError(f"{self._what}.{key}: {len(v)} bytes exceed the limit of "
                              f"{max_size}", Code.TOO_LARGE)
        return v

    def int_(self, key: str, *, lo: int = 0, hi: int = _U64) -> int:
        """An integer in ``[lo, hi]``."""
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise _bad(f"{self._what}.{key}", f"expected an integer, got {type(v).__name__}")
        if not lo <= v <= hi:
            raise _bad(f"{self._what}.{key}", f"{v} is outside [{lo}, {hi}]")
        return v

    def str_(self, key: str, *, max_len: int = 256) -> str:
        """A text string of at most ``max_len`` characters."""
        v = self._get(key)
        if not isinstance(v, str):
            raise _bad(f"{self._what}.{key}", f"expected text, got {type(v).__name__}")
        if len(v) > max_len:
            raise _bad(f"{self._what}.{key}", f"text longer than {max_len} characters")
        return v

    def bool_(self, key: str) -> bool:
        """A boolean."""
        v = self._get(key)
        if not isinstance(v, bool):
            raise _bad(f"{self._what}.{key}", f"expected a boolean, got {type(v).__name__}")
        return v

    def list_(self, key: str, *, max_items: int) -> list[object]:
        """An array of at most ``max_items`` items."""
        return expect_list(self._get(key), f"{self._what}.{key}", max_items=max_items)

    def map_(self, key: str, required: Iterable[str], optional: Iterable[str] = ()) -> Fields:
        """A nested map with exactly the given keys."""
        return expect_map(self._get(key), f"{self._what}.{key}", required, optional)


def decode_signed(data: bytes, *, what: str, version: int | Collection[int],
                  fields: Iterable[str] | Callable[[int], Iterable[str]],
                  limits: DecodeLimits) -> tuple[Fields, bytes, bytes]:
    """Decode the common signed layout ``[version, body_bytes, signature]``.

    The body is itself a canonical map whose ``"v"`` equals the outer version
    (one of ``version``) and whose keys are exactly ``fields`` (or
    ``fields(version)`` for structures whose versions differ in their fields).
    Returns ``(body fields, body_bytes, signature)``.

    Raises:
        DecodeError: ``too_large`` over ``limits.max_size``; ``unsupported_version``;
            ``malformed`` for any other shape error.
    """
    if len(data) > limits.max_size:
        raise DecodeError(f"{what} of {len(data)} bytes exceeds the limit of "
                          f"{limits.max_size}", Code.TOO_LARGE)
    outer = decode(data, limits=limits)
    if not isinstance(outer, list) or len(outer) != 3:
        raise _bad(what, "expected [version, body, signature]")
    outer_version, body_bytes, signature = outer
    got = check_version(outer_version, version, what)
    if not isinstance(body_bytes, bytes) or not isinstance(signature, bytes) \
            or len(signature) != 64:
        raise _bad(what, "the body is a byte string and the signature 64 bytes")
    body = decode(body_bytes, limits=limits)
    version_of_map(body, got, f"{what} body")
    keys = fields(got) if callable(fields) else fields
    return expect_map(body, what, keys), body_bytes, signature
