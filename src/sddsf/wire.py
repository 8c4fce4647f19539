"""Binary values in the JSON API: URL-safe base64 (RFC 4648 §5) with padding.

One encoder and one strict decoder, used by the relay, the client and the test
harnesses alike, so that both ends agree on what a valid field is.
"""

from __future__ import annotations

import base64
import binascii

from sddsf.errors import DecodeError

__all__ = ["b64", "unb64"]


def b64(data: bytes) -> str:
    """Encode bytes for the JSON API."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def unb64(text: str, what: str = "value", *, size: int | None = None) -> bytes:
    """Decode a base64 field strictly.

    Raises:
        DecodeError: not URL-safe base64 with padding, or not ``size`` bytes.
    """
    # Strict URL-safe alphabet and padding. The bytes (not their transport text)
    # are what every signature and hash covers, so unused trailing bits are not
    # re-checked (that would cost a re-encode per field on the hot path).
    if "+" in text or "/" in text:
        raise DecodeError(f"{what}: use URL-safe base64 ('-' and '_', not '+' and '/')")
    try:
        raw = base64.b64decode(text.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise DecodeError(f"{what}: not valid URL-safe base64") from None
    if size is not None and len(raw) != size:
        raise DecodeError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw
