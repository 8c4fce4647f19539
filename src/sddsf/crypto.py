"""Thin, typed wrappers over the cryptographic libraries (the only module importing
PyNaCl, argon2-cffi and pyca/cryptography; :mod:`hashlib` is the standard
library's and is also used directly by the RFC 9162 Merkle code).

Primitives and where they come from (we implement none of them):

* Ed25519 signatures, X25519, sealed boxes, XChaCha20-Poly1305: PyNaCl (libsodium).
  One Ed25519 library everywhere: relay and clients therefore take the same
  decision on every edge case (THREATS #2).
* BLAKE2b and SHA-256: :mod:`hashlib` (the same functions; PyNaCl's per-call
  overhead is 8-10 µs for a 1-2 µs hash, see PERFORMANCE-NOTES). A test checks
  that hashlib's BLAKE2b equals libsodium's.
* HKDF-SHA256 (RFC 5869): pyca/cryptography's ``HKDF``. That library is used for
  HKDF only and never for Ed25519 (the two Ed25519 implementations disagree on
  165 CCTV vectors).
* Argon2id: argon2-cffi.
* SPAKE2 (pairing): the ``spake2`` package (its own Ed25519 *group* arithmetic
  for the PAKE only; it never verifies a signature, so the one-Ed25519-library
  rule for signatures holds).
* secp256k1 (vault wallet keys only): ``coincurve`` (libsecp256k1).
* SLIP-39 Shamir shares of the account secret: ``shamir-mnemonic`` (the
  SatoshiLabs reference implementation).

Ed25519 policy (one policy, used by the relay and by every client):

1. A public key is accepted only through :meth:`Ed25519PublicKey.from_bytes`,
   which requires a canonical encoding of a point in the prime-order subgroup
   (``crypto_core_ed25519_is_valid_point``): low-order, mixed-order and
   non-canonical keys are refused.
2. A signature is checked with libsodium's ``crypto_sign_open``, which refuses
   S >= L, small-order and non-canonical R, and uses the cofactorless equation.

Randomness is read by :func:`random_bytes` and, inside libsodium, by
:func:`seal` (its ephemeral key); every other function here is deterministic,
so the protocol core can take random bytes as parameters. The deterministic
form of sealing (the ephemeral key from a given seed) exists for test vectors
only (:func:`_seal_seeded`, reached through ``sddsf.testing``): a reused seed
would reuse the ephemeral key and the nonce, so no normal code path can pass one.

Start-up self-test (:func:`self_test`, run once before the first public key is
checked): libsodium's ``crypto_core_ed25519_is_valid_point`` must refuse a
mixed-order point (a prime-order point plus the point of order 2). libsodium
before 1.0.21 (bundled by PyNaCl 1.6.0; CVE-2025-69277) accepts it; SDDSF then
refuses to run rather than accept such keys.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

import nacl.bindings as _sodium
import nacl.exceptions as _nacl_exc
import nacl.utils as _nacl_utils
from argon2.low_level import Type as _Argon2Type
from argon2.low_level import hash_secret_raw as _argon2_raw
from cryptography.hazmat.primitives import hashes as _hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF as _HKDF
from spake2 import SPAKE2_A as _SPAKE2_A
from spake2 import SPAKE2_B as _SPAKE2_B
from spake2.ed25519_basic import NotOnCurve as _NotOnCurve
from spake2.spake2 import SPAKEError as _SPAKEError

from sddsf.errors import (
    Code,
    ConfigError,
    DecryptError,
    KeyValidationError,
    SignatureError,
    UsageError,
)

__all__ = [
    "AEAD_KEY_SIZE",
    "AEAD_NONCE_SIZE",
    "AEAD_TAG_SIZE",
    "ED25519_SIG_SIZE",
    "SEAL_OVERHEAD",
    "Ed25519PublicKey",
    "Ed25519SigningKey",
    "Spake2",
    "X25519KeyPair",
    "aead_decrypt",
    "aead_encrypt",
    "argon2id",
    "blake2b_256",
    "constant_time_equal",
    "hkdf_sha256",
    "random_bytes",
    "seal",
    "seal_open",
    "secp256k1_public_key",
    "self_test",
    "sha256",
    "slip39_combine",
    "slip39_split",
    "validate_x25519_public",
    "x25519",
]

ED25519_SIG_SIZE: Final = 64
AEAD_KEY_SIZE: Final = 32
AEAD_NONCE_SIZE: Final = 24
AEAD_TAG_SIZE: Final = 16
SEAL_OVERHEAD: Final = 48  # ephemeral public key (32) + Poly1305 tag (16)
_P25519: Final = 2**255 - 19
# A clamped scalar is a multiple of the cofactor 8, so multiplying any point of
# small order by it gives the identity, which libsodium reports as an error.
_PROBE_SCALAR: Final = bytes([0x48]) + bytes(30) + bytes([0x40])


# The Ed25519 point of order 2: (0, -1), y = p - 1 little-endian.
_ORDER_2_POINT: Final = (_P25519 - 1).to_bytes(32, "little")
_self_tested = False


def self_test() -> None:
    """Refuse a libsodium whose public-key check accepts a mixed-order point.

    The probe is the base point plus the point of order 2: on the curve, not of
    prime order, so ``crypto_core_ed25519_is_valid_point`` must refuse it (the
    bug of CVE-2025-69277 accepts it, as PyNaCl 1.6.0 does). Runs once.

    Raises:
        ConfigError: the library accepts the probe (upgrade PyNaCl to 1.6.2 or
            later, or the system libsodium to 1.0.21 or later).
    """
    global _self_tested  # noqa: PLW0603 - a once-per-process check
    if _self_tested:
        return
    base = _sodium.crypto_scalarmult_ed25519_base_noclamp((1).to_bytes(32, "little"))
    mixed = _sodium.crypto_core_ed25519_add(base, _ORDER_2_POINT)
    if not _sodium.crypto_core_ed25519_is_valid_point(base) \
            or _sodium.crypto_core_ed25519_is_valid_point(mixed) \
            or _sodium.crypto_core_ed25519_is_valid_point(_ORDER_2_POINT):
        raise ConfigError("this libsodium accepts Ed25519 public keys that are not of prime "
                          "order (CVE-2025-69277); SDDSF refuses to run with it: upgrade "
                          "PyNaCl to 1.6.2 or later (or libsodium to 1.0.21 or later)")
    _self_tested = True


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG (libsodium ``randombytes``)."""
    return bytes(_nacl_utils.random(n))


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings without leaking where they differ."""
    return hmac.compare_digest(a, b)


# --------------------------------------------------------------------- hashing


def blake2b_256(data: bytes) -> bytes:
    """BLAKE2b with a 32-byte output (no key, no personalisation)."""
    return hashlib.blake2b(data, digest_size=32).digest()


def sha256(data: bytes) -> bytes:
    """SHA-256 (used by the RFC 9162 Merkle log)."""
    return hashlib.sha256(data).digest()


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) extract-and-expand.

    Args:
        ikm: input key material (a secret).
        salt: a public, domain-separating salt.
        info: context binding (encode it canonically).
        length: output length in bytes (at most 255 * 32).
    """
    return _HKDF(algorithm=_hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def argon2id(passphrase: bytes, salt: bytes, *, time_cost: int, memory_kib: int,
             parallelism: int, length: int = 32) -> bytes:
    """Argon2id raw hash (RFC 9106) of ``passphrase``; the parameters are the caller's."""
    return bytes(_argon2_raw(secret=passphrase, salt=salt, time_cost=time_cost,
                             memory_cost=memory_kib, parallelism=parallelism,
                             hash_len=length, type=_Argon2Type.ID))


# --------------------------------------------------------------------- Ed25519


@dataclass(frozen=True, slots=True)
class Ed25519PublicKey:
    """A validated Ed25519 public key (canonical, prime-order subgroup).

    Construct with :meth:`from_bytes`; holding an instance means the key passed
    the registration policy, so :meth:`verify` need not re-check it.
    """

    raw: bytes

    @classmethod
    def from_bytes(cls, raw: bytes) -> Ed25519PublicKey:
        """Validate and wrap a 32-byte public key.

        Raises:
            KeyValidationError: wrong length, non-canonical, low-order or mixed-order point.
        """
        if len(raw) != 32:
            raise KeyValidationError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
        self_test()
        if not _sodium.crypto_core_ed25519_is_valid_point(raw):
            raise KeyValidationError(
                "Ed25519 public key is not a canonical point of prime order "
                "(low-order and non-canonical keys are refused)")
        return cls(bytes(raw))

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check ``signature`` over ``message``.

        Raises:
            SignatureError: for every kind of failure (one opaque error).
        """
        if len(signature) != ED25519_SIG_SIZE:
            raise SignatureError("signature is not 64 bytes")
        try:
            _sodium.crypto_sign_open(signature + message, self.raw)
        except _nacl_exc.BadSignatureError:
            raise SignatureError("signature does not verify") from None

    def is_valid_signature(self, message: bytes, signature: bytes) -> bool:
        """Boolean form of :meth:`verify`."""
        try:
            self.verify(message, signature)
        except SignatureError:
            return False
        return True


@dataclass(frozen=True, slots=True, repr=False)
class Ed25519SigningKey:
    """An Ed25519 signing key built deterministically from a 32-byte seed."""

    seed: bytes
    _secret: bytes
    public: Ed25519PublicKey

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519SigningKey:
        """Derive the key pair from ``seed`` (32 bytes; keep it secret)."""
        if len(seed) != 32:
            raise UsageError("an Ed25519 seed is 32 bytes")
        pk, sk = _sodium.crypto_sign_seed_keypair(seed)
        return cls(bytes(seed), bytes(sk), Ed25519PublicKey(bytes(pk)))

    def sign(self, message: bytes) -> bytes:
        """Detached Ed25519 signature (64 bytes)."""
        return bytes(_sodium.crypto_sign(message, self._secret)[:ED25519_SIG_SIZE])

    def __repr__(self) -> str:  # never print the secret
        return f"Ed25519SigningKey(public={self.public.raw.hex()})"


# ---------------------------------------------------------------------- X25519


def validate_x25519_public(raw: bytes) -> bytes:
    """Refuse X25519 public keys that are non-canonical or of small order.

    Raises:
        KeyValidationError: wrong length, u >= 2^255-19, or a small-order point.
    """
    if len(raw) != 32:
        raise KeyValidationError(f"an X25519 public key is 32 bytes, got {len(raw)}")
    if int.from_bytes(raw, "little") >= _P25519:
        raise KeyValidationError("X25519 public key is not canonically encoded")
    try:
        _sodium.crypto_scalarmult(_PROBE_SCALAR, raw)
    except _nacl_exc.RuntimeError:
        raise KeyValidationError("X25519 public key is a small-order point") from None
    return bytes(raw)


@dataclass(frozen=True, slots=True, repr=False)
class X25519KeyPair:
    """An X25519 key pair derived deterministically from a 32-byte seed."""

    secret: bytes
    public: bytes
    seed: bytes = b""

    @classmethod
    def from_seed(cls, seed: bytes) -> X25519KeyPair:
        """libsodium ``crypto_box_seed_keypair`` (secret = SHA-512(seed)[:32])."""
        if len(seed) != 32:
            raise UsageError("an X25519 seed is 32 bytes")
        pk, sk = _sodium.crypto_box_seed_keypair(seed)
        return cls(bytes(sk), bytes(pk), bytes(seed))

    def __repr__(self) -> str:
        return f"X25519KeyPair(public={self.public.hex()})"


def x25519(secret: bytes, public: bytes) -> bytes:
    """Raw X25519 shared secret.

    Raises:
        KeyValidationError: the result is all zeros (``public`` has small order).
    """
    try:
        return bytes(_sodium.crypto_scalarmult(secret, public))
    except _nacl_exc.RuntimeError:
        raise KeyValidationError("X25519 with a small-order public key") from None


def seal(recipient_public: bytes, message: bytes) -> bytes:
    """Anonymous public-key encryption: libsodium's ``crypto_box_seal`` (a fresh
    ephemeral key pair drawn by libsodium for every call).

    Raises:
        KeyValidationError: the recipient key is non-canonical or of small order.
    """
    validate_x25519_public(recipient_public)
    return bytes(_sodium.crypto_box_seal(message, recipient_public))


def _seal_seeded(recipient_public: bytes, message: bytes, ephemeral_seed: bytes) -> bytes:
    """TEST VECTORS ONLY: :func:`seal` with the ephemeral key pair derived from
    ``ephemeral_seed``, so that outputs can be pinned. Reached through
    ``sddsf.testing.seal_seeded`` and key packages built with explicit seeds
    (vector generation); a test checks that no other code path reaches it.

    The steps are libsodium's own (``ek || crypto_box_easy(m, BLAKE2b-192(ek ||
    pk), pk, esk)``) and the output opens with ``crypto_box_seal_open``.
    """
    validate_x25519_public(recipient_public)
    if len(ephemeral_seed) != 32:
        raise UsageError("the ephemeral seed is 32 bytes")
    epk, esk = _sodium.crypto_box_seed_keypair(ephemeral_seed)
    nonce = hashlib.blake2b(epk + recipient_public, digest_size=24).digest()
    return bytes(epk) + bytes(_sodium.crypto_box_easy(message, nonce, recipient_public, esk))


def seal_open(recipient: X25519KeyPair, sealed: bytes) -> bytes:
    """Open a sealed box with libsodium's ``crypto_box_seal_open``.

    Raises:
        DecryptError: not sealed for this key, or tampered.
    """
    if len(sealed) < SEAL_OVERHEAD:
        raise DecryptError("sealed box is too short")
    try:
        return bytes(_sodium.crypto_box_seal_open(sealed, recipient.public, recipient.secret))
    except _nacl_exc.CryptoError:
        raise DecryptError("sealed box does not open with this key") from None


# ------------------------------------------------------------------------ AEAD


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """XChaCha20-Poly1305 (IETF) encryption; returns ciphertext || 16-byte tag."""
    if len(key) != AEAD_KEY_SIZE or len(nonce) != AEAD_NONCE_SIZE:
        raise UsageError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce")
    return bytes(_sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, associated_data, nonce, key))


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """XChaCha20-Poly1305 (IETF) decryption.

    Raises:
        DecryptError: wrong key, nonce or associated data, or a tampered ciphertext.
    """
    if len(key) != AEAD_KEY_SIZE or len(nonce) != AEAD_NONCE_SIZE:
        raise DecryptError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce",
                           Code.DECRYPT_FAILED)
    if len(ciphertext) < AEAD_TAG_SIZE:
        raise DecryptError("ciphertext is shorter than its authentication tag")
    try:
        return bytes(_sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, associated_data, nonce, key))
    except _nacl_exc.CryptoError:
        raise DecryptError("authenticated decryption failed (wrong key or tampered data)"
                           ) from None


# ---------------------------------------------------------------------- SPAKE2


class Spake2:
    """One side of a SPAKE2 exchange (``initiator`` = side A, ``joiner`` = side B).

    ``message`` is sent to the peer; :meth:`finish` takes the peer's message and
    returns the shared key. Both sides get the same key only if they used the
    same password; a wrong password is noticed only by key confirmation (the
    caller's MACs), never here.
    """

    def __init__(self, role: str, password: bytes, *, id_a: bytes, id_b: bytes) -> None:
        if role not in ("initiator", "joiner"):
            raise UsageError("a SPAKE2 role is 'initiator' or 'joiner'")
        cls = _SPAKE2_A if role == "initiator" else _SPAKE2_B
        self._s = cls(password, idA=id_a, idB=id_b)
        self.message: bytes = self._s.start()

    def finish(self, peer_message: bytes) -> bytes:
        """The 32-byte shared key.

        Raises:
            KeyValidationError: the peer's message is malformed, from the wrong
                side, or a reflection of ours (``bad_key``).
        """
        try:
            return bytes(self._s.finish(peer_message))
        except (_SPAKEError, _NotOnCurve, ValueError) as exc:
            raise KeyValidationError(f"the pairing peer sent an invalid SPAKE2 message "
                                     f"({exc})", Code.BAD_KEY) from exc


# ------------------------------------------------------------------- secp256k1


def secp256k1_public_key(secret: bytes) -> bytes:
    """The 33-byte compressed secp256k1 public key of a 32-byte secret (vault keys).

    Raises:
        UsageError: ``secret`` is not a valid secp256k1 private key.
    """
    from coincurve import PrivateKey  # noqa: PLC0415 - only the vault needs it

    try:
        return bytes(PrivateKey(secret).public_key.format(compressed=True))
    except (ValueError, TypeError) as exc:
        raise UsageError("not a valid secp256k1 private key (32 bytes, 0 < k < n)") from exc


# --------------------------------------------------------------------- SLIP-39


def slip39_split(secret: bytes, *, threshold: int, shares: int,
                 passphrase: bytes = b"") -> list[str]:
    """Split ``secret`` into ``shares`` SLIP-39 mnemonics, any ``threshold`` of
    which recover it (one group; ``passphrase`` optional, SLIP-39 encryption).

    Raises:
        UsageError: bad threshold/share counts or secret length.
    """
    import shamir_mnemonic  # noqa: PLC0415 - only recovery needs it

    if not 1 <= threshold <= shares <= 16:
        raise UsageError("need 1 <= threshold <= shares <= 16")
    if threshold == 1 and shares > 1:
        raise UsageError("a threshold of 1 would make every share the whole secret; "
                         "use --threshold 2 or more (or the recovery phrase)")
    try:
        groups = shamir_mnemonic.generate_mnemonics(1, [(threshold, shares)], secret,
                                                    passphrase=passphrase)
    except (ValueError, shamir_mnemonic.MnemonicError) as exc:
        raise UsageError(f"cannot split the secret: {exc}") from exc
    return list(groups[0])


def slip39_combine(mnemonics: list[str], passphrase: bytes = b"") -> bytes:
    """Recover the secret from enough SLIP-39 mnemonics.

    Raises:
        UsageError: an invalid share (checksum, word, length), shares of
            different sets, or too few shares; the message says which.
    """
    import shamir_mnemonic  # noqa: PLC0415 - only recovery needs it

    try:
        return bytes(shamir_mnemonic.combine_mnemonics(mnemonics, passphrase=passphrase))
    except (ValueError, shamir_mnemonic.MnemonicError) as exc:
        raise UsageError(f"these shares do not recover a secret: {exc}") from exc
