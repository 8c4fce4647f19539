"""Deterministic cryptography for test vectors only: never for real keys.

:func:`seal_seeded` is :func:`sddsf.crypto.seal` with the ephemeral key pair
derived from a given seed, so that a sealed box can be pinned in a vector. A
reused seed reuses the ephemeral key and nonce; the library never calls it
(``tests/unit/test_crypto_floor.py`` checks that no normal code path does).
"""

from __future__ import annotations

from sddsf.crypto import _seal_seeded

__all__ = ["seal_seeded"]


def seal_seeded(recipient_public: bytes, message: bytes, ephemeral_seed: bytes) -> bytes:
    """A sealed box (libsodium ``crypto_box_seal`` format) whose ephemeral key pair
    comes from ``ephemeral_seed`` (32 bytes). Tests and vectors only."""
    return _seal_seeded(recipient_public, message, ephemeral_seed)
