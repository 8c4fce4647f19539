"""Device and account identities.

* A **device** has an Ed25519 signing key and an X25519 key-agreement key,
  generated on the device and never exported. Its id is
  ``tagged_hash(DEVICE_ID, signing_public_key)`` (32 bytes).
* An **account** is rooted in a 32-byte account secret. HKDF-SHA256 derives
  from it the account signing key (Ed25519, the pinned trust anchor) and the
  account recovery key (X25519, a recipient of every key package). The account
  id is ``tagged_hash(ACCOUNT_ID, account_signing_public_key)``; people compare
  its :func:`fingerprint`.

Key material comes in as seeds (bytes): this module reads no randomness.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from sddsf.crypto import (
    Ed25519PublicKey,
    Ed25519SigningKey,
    X25519KeyPair,
    hkdf_sha256,
    validate_x25519_public,
)
from sddsf.errors import UsageError
from sddsf.protocol import labels
from sddsf.protocol.labels import tagged_hash

__all__ = [
    "ID_SIZE",
    "AccountKeys",
    "AccountPublic",
    "DeviceKeys",
    "DevicePublic",
    "account_id_of",
    "device_id_of",
    "fingerprint",
    "fingerprint_bytes",
]

ID_SIZE = 32
_HKDF_SALT = b"sddsf/v1/account-secret"


def device_id_of(signing_public: bytes) -> bytes:
    """The 32-byte device id of a device signing public key."""
    return tagged_hash(labels.DEVICE_ID, signing_public)


def account_id_of(account_signing_public: bytes) -> bytes:
    """The 32-byte account id of an account signing public key."""
    return tagged_hash(labels.ACCOUNT_ID, account_signing_public)


def fingerprint(identifier: bytes) -> str:
    """Human-comparable fingerprint: 160 bits as 8 groups of 4 base32 characters.

    Example: ``"Q3ZB-7KDM-2H4X-...``". Compare all groups, not just the first.
    """
    text = base64.b32encode(identifier[:20]).decode("ascii")
    return "-".join(text[i:i + 4] for i in range(0, 32, 4))


def fingerprint_bytes(text: str) -> bytes | None:
    """The 20 bytes a fingerprint (``XXXX-XXXX-...``, 8 groups of base32) shows, or
    None when ``text`` is not one (spaces, dashes and case are ignored)."""
    compact = "".join(text.split()).replace("-", "").upper()
    if len(compact) != 32 or not set(compact) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"):
        return None
    return base64.b32decode(compact)


@dataclass(frozen=True, slots=True)
class DevicePublic:
    """A device's public identity (what the registry records)."""

    device_id: bytes
    signing_key: Ed25519PublicKey
    kx_key: bytes

    @classmethod
    def from_keys(cls, signing_public: bytes, kx_public: bytes) -> DevicePublic:
        """Validate both public keys and derive the device id.

        Raises:
            KeyValidationError: an Ed25519 key that is low-order, mixed-order or
                non-canonical; an X25519 key that is small-order or non-canonical.
        """
        sk = Ed25519PublicKey.from_bytes(signing_public)
        return cls(device_id_of(sk.raw), sk, validate_x25519_public(kx_public))


@dataclass(frozen=True, slots=True, repr=False)
class DeviceKeys:
    """A device's private keys."""

    signing: Ed25519SigningKey
    kx: X25519KeyPair

    @classmethod
    def from_seeds(cls, signing_seed: bytes, kx_seed: bytes) -> DeviceKeys:
        """Build device keys from two independent 32-byte random seeds."""
        if signing_seed == kx_seed:
            raise UsageError("the signing and key-agreement seeds must be independent")
        return cls(Ed25519SigningKey.from_seed(signing_seed), X25519KeyPair.from_seed(kx_seed))

    @property
    def public(self) -> DevicePublic:
        """The public identity (validated)."""
        return DevicePublic.from_keys(self.signing.public.raw, self.kx.public)

    @property
    def device_id(self) -> bytes:
        """This device's id."""
        return device_id_of(self.signing.public.raw)

    def sign(self, message: bytes) -> bytes:
        """Sign with the device signing key."""
        return self.signing.sign(message)

    def __repr__(self) -> str:
        return f"DeviceKeys(id={self.device_id.hex()[:16]}...)"


@dataclass(frozen=True, slots=True)
class AccountPublic:
    """The account's public trust anchor, pinned by every device."""

    signing_key: Ed25519PublicKey
    recovery_key: bytes
    #: The 32-byte account id, derived once here: registry states, key packages
    #: and memberships read it many times per sync (a tagged hash each time
    #: before). Not compared: it follows from ``signing_key``.
    account_id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "account_id", account_id_of(self.signing_key.raw))

    @classmethod
    def from_keys(cls, signing_public: bytes, recovery_public: bytes) -> AccountPublic:
        """Validate both keys.

        Raises:
            KeyValidationError: an unusable public key.
        """
        return cls(Ed25519PublicKey.from_bytes(signing_public),
                   validate_x25519_public(recovery_public))

    @property
    def fingerprint(self) -> str:
        """What people compare to be sure they talk about the same account."""
        return fingerprint(self.account_id)


@dataclass(frozen=True, slots=True, repr=False)
class AccountKeys:
    """Keys derived from the 32-byte account secret (never synced, never sent)."""

    signing: Ed25519SigningKey
    recovery: X25519KeyPair

    @classmethod
    def from_secret(cls, secret: bytes) -> AccountKeys:
        """Derive the account keys: HKDF-SHA256(secret, salt, info=label) -> seeds."""
        if len(secret) != 32:
            raise UsageError("the account secret is 32 bytes")
        sign_seed = hkdf_sha256(secret, salt=_HKDF_SALT,
                                info=labels.ACCOUNT_SIGNING_KEY.encode())
        rec_seed = hkdf_sha256(secret, salt=_HKDF_SALT,
                               info=labels.ACCOUNT_RECOVERY_KEY.encode())
        return cls(Ed25519SigningKey.from_seed(sign_seed), X25519KeyPair.from_seed(rec_seed))

    @property
    def public(self) -> AccountPublic:
        """The public half."""
        return AccountPublic.from_keys(self.signing.public.raw, self.recovery.public)

    @property
    def account_id(self) -> bytes:
        """The 32-byte account id."""
        return account_id_of(self.signing.public.raw)

    def sign(self, message: bytes) -> bytes:
        """Sign with the account signing key."""
        return self.signing.sign(message)

    def __repr__(self) -> str:
        return f"AccountKeys(id={self.account_id.hex()[:16]}...)"
