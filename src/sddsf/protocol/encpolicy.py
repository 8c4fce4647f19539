"""The encryption policy the relay publishes, signed, and how clients apply it (pure).

Wire form::

    policy = [version, body_bytes, signature]
    body   = {"v", "relay", "ts", "min_kdf_t", "min_kdf_m_kib", "min_kdf_p",
              "suites", "max_epoch_age_s"}

signed by the relay's tree-head key over ``labelled(ENCRYPTION_POLICY_SIG,
body_bytes)``. A client verifies it with the relay key it pinned and merges it
into its own settings with :func:`strictest`: minimums only go up, the allowed
suites only shrink (never to nothing), the rotation age only goes down. A relay
can therefore make clients stricter, never weaker.

Stricter is not always harmless: a relay publishing a one-second rotation age
would make every client rotate on every sync, and absurd KDF minimums would
make passphrase backups unusable. So what a relay publishes is first clamped
(:func:`clamp`) to :data:`MIN_EPOCH_AGE_S` and the KDF ceilings below; the
person can see the values (``sddsf encryption-policy show``) and forget the
merged ones (``... reset``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sddsf.crypto import Ed25519PublicKey, Ed25519SigningKey
from sddsf.errors import Code, ProofError
from sddsf.protocol import labels
from sddsf.protocol.encoding import DecodeLimits, encode
from sddsf.protocol.labels import labelled
from sddsf.protocol.schema import decode_signed

__all__ = ["ENCRYPTION_POLICY_VERSION", "MAX_KDF_M_KIB", "MAX_KDF_P", "MAX_KDF_T",
           "MIN_EPOCH_AGE_S", "EncryptionPolicy", "clamp", "sign_encryption_policy",
           "strictest", "verify_encryption_policy"]

ENCRYPTION_POLICY_VERSION: Final = 1
_LIMITS: Final = DecodeLimits(max_size=1024, max_depth=3, max_items=16)
_FIELDS: Final = ("v", "relay", "ts", "min_kdf_t", "min_kdf_m_kib", "min_kdf_p", "suites",
                  "max_epoch_age_s")
#: A relay cannot make clients rotate a space's key more often than hourly.
MIN_EPOCH_AGE_S: Final = 3600
#: Nor demand more of a passphrase backup's Argon2id than this (about ten seconds
#: and 1 GiB on a laptop): higher minimums would make backups unusable.
MAX_KDF_T: Final = 10
MAX_KDF_M_KIB: Final = 1024 * 1024
MAX_KDF_P: Final = 8


@dataclass(frozen=True, slots=True)
class EncryptionPolicy:
    """Minimum KDF parameters, allowed cipher suites and the key rotation age."""

    min_kdf_t: int
    min_kdf_m_kib: int
    min_kdf_p: int
    suites: tuple[int, ...]
    max_epoch_age_s: int
    ts: int = 0

    def to_json(self) -> dict[str, object]:
        """A JSON-able dict (for the CLI and the device's store)."""
        return {"min_kdf_t": self.min_kdf_t, "min_kdf_m_kib": self.min_kdf_m_kib,
                "min_kdf_p": self.min_kdf_p, "suites": list(self.suites),
                "max_epoch_age_s": self.max_epoch_age_s, "ts": self.ts}


def sign_encryption_policy(key: Ed25519SigningKey, policy: EncryptionPolicy) -> bytes:
    """The relay's signed statement of ``policy``."""
    body = encode({"v": ENCRYPTION_POLICY_VERSION, "relay": key.public.raw, "ts": policy.ts,
                   "min_kdf_t": policy.min_kdf_t, "min_kdf_m_kib": policy.min_kdf_m_kib,
                   "min_kdf_p": policy.min_kdf_p, "suites": list(policy.suites),
                   "max_epoch_age_s": policy.max_epoch_age_s})
    return encode([ENCRYPTION_POLICY_VERSION, body,
                   key.sign(labelled(labels.ENCRYPTION_POLICY_SIG, body))])


def verify_encryption_policy(data: bytes, relay_key: Ed25519PublicKey) -> EncryptionPolicy:
    """Decode and check a published policy against the pinned relay key.

    Raises:
        DecodeError: malformed. ProofError ``tree_head_invalid``: signed by
            another key or a bad signature.
    """
    f, body, sig = decode_signed(data, what="encryption policy",
                                 version=ENCRYPTION_POLICY_VERSION, fields=_FIELDS,
                                 limits=_LIMITS)
    if f.bytes_("relay", size=32) != relay_key.raw or not relay_key.is_valid_signature(
            labelled(labels.ENCRYPTION_POLICY_SIG, body), sig):
        raise ProofError("the encryption policy is not signed by this device's relay key",
                         Code.TREE_HEAD_INVALID)
    suites = tuple(int(s) for s in f.list_("suites", max_items=8) if isinstance(s, int))
    if len(suites) != len(f.list_("suites", max_items=8)):
        raise ProofError("encryption policy suites must be integers", Code.PROOF_INVALID)
    return EncryptionPolicy(f.int_("min_kdf_t", lo=1, hi=64), f.int_("min_kdf_m_kib", lo=8),
                            f.int_("min_kdf_p", lo=1, hi=64), suites,
                            f.int_("max_epoch_age_s", lo=1), f.int_("ts"))


def clamp(policy: EncryptionPolicy) -> tuple[EncryptionPolicy, tuple[str, ...]]:
    """``policy`` with its values brought within the floors and ceilings above, and
    the names of the values that were out of range."""
    bounded = EncryptionPolicy(min(policy.min_kdf_t, MAX_KDF_T),
                               min(policy.min_kdf_m_kib, MAX_KDF_M_KIB),
                               min(policy.min_kdf_p, MAX_KDF_P), policy.suites,
                               max(policy.max_epoch_age_s, MIN_EPOCH_AGE_S), policy.ts)
    changed = tuple(name for name in ("min_kdf_t", "min_kdf_m_kib", "min_kdf_p",
                                      "max_epoch_age_s")
                    if getattr(bounded, name) != getattr(policy, name))
    return bounded, changed


def strictest(own: EncryptionPolicy | None, published: EncryptionPolicy) -> EncryptionPolicy:
    """Merge a published policy, clamped (:func:`clamp`), into the device's own:
    never weaker than ``own``."""
    published = clamp(published)[0]
    if own is None:
        return published
    suites = tuple(s for s in own.suites if s in published.suites) or own.suites
    return EncryptionPolicy(max(own.min_kdf_t, published.min_kdf_t),
                            max(own.min_kdf_m_kib, published.min_kdf_m_kib),
                            max(own.min_kdf_p, published.min_kdf_p), suites,
                            min(own.max_epoch_age_s, published.max_epoch_age_s),
                            max(own.ts, published.ts))
