"""Kept for compatibility: this module moved to :mod:`sddsf.protocol.encpolicy`.

The relay's signed encryption policy is a format that clients and the relay
both use, so it lives in the pure protocol core. This module only
re-exports it for code written against the old layout; import
:mod:`sddsf.protocol.encpolicy` instead. To be removed once nothing imports this path.
"""

from __future__ import annotations

from sddsf.protocol.encpolicy import (
    ENCRYPTION_POLICY_VERSION,
    MAX_KDF_M_KIB,
    MAX_KDF_P,
    MAX_KDF_T,
    MIN_EPOCH_AGE_S,
    EncryptionPolicy,
    clamp,
    sign_encryption_policy,
    strictest,
    verify_encryption_policy,
)

__all__ = [
    "ENCRYPTION_POLICY_VERSION",
    "MAX_KDF_M_KIB",
    "MAX_KDF_P",
    "MAX_KDF_T",
    "MIN_EPOCH_AGE_S",
    "EncryptionPolicy",
    "clamp",
    "sign_encryption_policy",
    "strictest",
    "verify_encryption_policy",
]
