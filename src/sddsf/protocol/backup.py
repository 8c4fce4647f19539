"""Passphrase backups of the account secret (sans-IO): the blob, the KDF and the verifier.

A backup lets a person recover the 32-byte account secret from the relay with
a passphrase instead of the 24-word phrase. The relay stores three things and
can read none of the secret:

* the Argon2id parameters ``kdf = {alg, t, m, p, salt}`` (public: a client
  fetches them first, unauthenticated);
* ``BLAKE2b-256(verifier)``: proof of knowledge of the passphrase. The relay
  releases the blob only to a caller that sends the verifier, and locks the
  backup after repeated wrong ones, so a third party can only guess online;
* the opaque blob, which holds the secret encrypted under a key derived from
  the same passphrase.

Derivations (``K`` is never stored or sent)::

    K        = Argon2id(UTF-8(passphrase), salt, t, m KiB, p, 32 bytes)
    enc_key  = HKDF-SHA256(K, salt = UTF-8(BACKUP_KEY),      info = labelled(BACKUP_KEY))
    verifier = HKDF-SHA256(K, salt = UTF-8(BACKUP_VERIFIER), info = labelled(BACKUP_VERIFIER))

Blob (canonical CBOR map)::

    blob   = header + {"ct": ct}
    header = {"v": 1, "account": account_id, "kdf": {"alg": "argon2id", "t", "m", "p",
              "salt"}, "nonce": 24 bytes}
    ct     = XChaCha20-Poly1305(enc_key, nonce, secret, AD = labelled(BACKUP_AD, E(header)))

**KDF parameters are checked before anything is derived**, from any source
(the relay's answer, a blob, a caller): ``alg`` must be ``"argon2id"``, ``t``
in [3, 64], ``m`` in [65536, 4194304] KiB (64 MiB to 4 GiB), ``p`` in [1, 64],
salt 16 to 64 bytes. Weaker parameters would make a guess cheap; absurd ones
would let a malicious relay make the client allocate unbounded memory or
spin for hours. Anything else is a :class:`~sddsf.errors.DecodeError` with code
``malformed`` whose message names the parameter. Tests may lower the minimums
only through the explicit ``minimums=`` argument; the reference client never
passes it.

The passphrase is encoded as UTF-8 exactly as given; the reference client
(:mod:`sddsf.recovery`) normalises it to Unicode NFKC first, so that the same
typed passphrase gives the same bytes on every platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sddsf.crypto import (
    AEAD_NONCE_SIZE,
    aead_decrypt,
    aead_encrypt,
    argon2id,
    blake2b_256,
    hkdf_sha256,
)
from sddsf.errors import Code, ContextError, DecodeError, DecryptError, UsageError
from sddsf.protocol import labels
from sddsf.protocol.encoding import DecodeLimits, decode, encode
from sddsf.protocol.labels import labelled
from sddsf.protocol.schema import Fields, expect_map, version_of_map

__all__ = [
    "BACKUP_VERSION",
    "KDF_ALG",
    "MAX_BACKUP_BLOB",
    "PRODUCTION_MINIMUMS",
    "SECRET_SIZE",
    "VERIFIER_SIZE",
    "Backup",
    "BackupHeader",
    "BackupKeys",
    "KdfMinimums",
    "KdfParams",
    "check_kdf_params",
    "decode_backup",
    "derive_keys",
    "derive_verifier",
    "kdf_params_ok",
    "make_backup",
    "open_backup",
    "open_backup_with_keys",
    "verifier_digest",
]

BACKUP_VERSION: Final = 1
KDF_ALG: Final = "argon2id"
SECRET_SIZE: Final = 32
VERIFIER_SIZE: Final = 32
SALT_MIN: Final = 16
SALT_MAX: Final = 64
#: Upper bounds, so that a malicious relay cannot make a client allocate
#: absurd memory or compute for hours before it notices anything.
MAX_TIME: Final = 64
MAX_MEMORY_KIB: Final = 4 * 1024 * 1024  # 4 GiB
MAX_PARALLELISM: Final = 64
#: A backup of a 32-byte secret is about 150 bytes; refuse anything far larger.
MAX_BACKUP_BLOB: Final = 4096
_LIMITS: Final = DecodeLimits(max_size=MAX_BACKUP_BLOB, max_depth=4, max_items=16)
_HEADER_KEYS: Final = ("v", "account", "kdf", "nonce")
_KDF_KEYS: Final = ("alg", "t", "m", "p", "salt")


@dataclass(frozen=True, slots=True)
class KdfMinimums:
    """The weakest Argon2id parameters a client accepts."""

    t: int
    m_kib: int
    p: int


#: The pinned minimums of protocol version 1 (t = 3, m = 64 MiB, p = 1).
PRODUCTION_MINIMUMS: Final = KdfMinimums(t=3, m_kib=64 * 1024, p=1)


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id parameters of one backup (public)."""

    t: int
    m_kib: int
    p: int
    salt: bytes
    alg: str = KDF_ALG

    def to_wire(self) -> dict[str, object]:
        """The canonical map ``{alg, t, m, p, salt}`` (also the JSON API's shape)."""
        return {"alg": self.alg, "t": self.t, "m": self.m_kib, "p": self.p, "salt": self.salt}


@dataclass(frozen=True, slots=True, repr=False)
class BackupKeys:
    """The two keys derived from one passphrase and one set of KDF parameters."""

    params: KdfParams
    enc_key: bytes
    verifier: bytes

    def __repr__(self) -> str:  # never print key material
        return "BackupKeys(<secret>)"


@dataclass(frozen=True, slots=True, repr=False)
class Backup:
    """What a device uploads: the KDF parameters, the verifier and the blob."""

    kdf: KdfParams
    verifier: bytes
    blob: bytes

    def __repr__(self) -> str:
        return f"Backup(kdf={self.kdf!r}, blob={len(self.blob)} bytes)"


@dataclass(frozen=True, slots=True)
class BackupHeader:
    """A decoded blob: what it claims, before anything is derived."""

    account: bytes
    kdf: KdfParams
    nonce: bytes
    ct: bytes
    header_bytes: bytes


def _bad(message: str) -> DecodeError:
    return DecodeError(message, Code.MALFORMED)


def check_kdf_params(params: KdfParams, *, minimums: KdfMinimums | None = None) -> KdfParams:
    """Refuse weak or absurd Argon2id parameters (before deriving anything).

    ``minimums`` is for tests only; None means :data:`PRODUCTION_MINIMUMS`.

    Raises:
        DecodeError: ``malformed``, naming the parameter that is out of range.
    """
    low = PRODUCTION_MINIMUMS if minimums is None else minimums
    if params.alg != KDF_ALG:
        raise _bad(f"backup KDF: algorithm {params.alg!r} is not allowed (only {KDF_ALG!r})")
    for name, value, lo, hi, unit in (("t", params.t, low.t, MAX_TIME, ""),
                                      ("m", params.m_kib, low.m_kib, MAX_MEMORY_KIB, " KiB"),
                                      ("p", params.p, low.p, MAX_PARALLELISM, "")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(f"backup KDF: {name} must be an integer")
        if value < lo:
            raise _bad(f"backup KDF: {name} = {value}{unit} is weaker than the minimum "
                       f"{lo}{unit}; refused before deriving anything")
        if value > hi:
            raise _bad(f"backup KDF: {name} = {value}{unit} exceeds the maximum {hi}{unit}; "
                       "refused before deriving anything")
    if params.m_kib < 8 * params.p:
        raise _bad("backup KDF: Argon2 needs m >= 8 * p KiB")
    if not isinstance(params.salt, bytes) or not SALT_MIN <= len(params.salt) <= SALT_MAX:
        raise _bad(f"backup KDF: the salt must be {SALT_MIN} to {SALT_MAX} bytes")
    return params


def kdf_params_ok(params: KdfParams, *, minimums: KdfMinimums | None = None) -> bool:
    """Whether :func:`check_kdf_params` accepts ``params``."""
    try:
        check_kdf_params(params, minimums=minimums)
    except DecodeError:
        return False
    return True


def _passphrase_bytes(passphrase: str) -> bytes:
    if not isinstance(passphrase, str) or not passphrase:
        raise UsageError("the backup passphrase must be a non-empty string")
    return passphrase.encode("utf-8")


def derive_keys(passphrase: str, params: KdfParams, *,
                minimums: KdfMinimums | None = None) -> BackupKeys:
    """Check ``params``, then run Argon2id once and derive both keys.

    Raises:
        DecodeError: weak or absurd parameters (nothing was derived).
        UsageError: an empty passphrase.
    """
    check_kdf_params(params, minimums=minimums)
    k = argon2id(_passphrase_bytes(passphrase), params.salt, time_cost=params.t,
                 memory_kib=params.m_kib, parallelism=params.p)
    return BackupKeys(params,
                      hkdf_sha256(k, salt=labels.BACKUP_KEY.encode(),
                                  info=labelled(labels.BACKUP_KEY)),
                      hkdf_sha256(k, salt=labels.BACKUP_VERIFIER.encode(),
                                  info=labelled(labels.BACKUP_VERIFIER)))


def derive_verifier(passphrase: str, params: KdfParams, *,
                    minimums: KdfMinimums | None = None) -> bytes:
    """The 32-byte verifier the relay asks for (see :func:`derive_keys`)."""
    return derive_keys(passphrase, params, minimums=minimums).verifier


def verifier_digest(verifier: bytes) -> bytes:
    """What the relay stores instead of the verifier: ``BLAKE2b-256(verifier)``."""
    return blake2b_256(verifier)


def _header(account_id: bytes, params: KdfParams, nonce: bytes) -> dict[str, object]:
    return {"v": BACKUP_VERSION, "account": account_id, "kdf": params.to_wire(),
            "nonce": nonce}


def make_backup(secret: bytes, passphrase: str, account_id: bytes, *, salt: bytes,
                nonce: bytes, t: int = 3, m_kib: int = 64 * 1024, p: int = 4,
                minimums: KdfMinimums | None = None) -> Backup:
    """Encrypt the account secret under ``passphrase``.

    ``salt`` (16 to 64 bytes) and ``nonce`` (24 bytes) must be fresh random bytes
    (the caller supplies them: this module reads no randomness).

    Raises:
        UsageError: wrong sizes or an empty passphrase.
        DecodeError: parameters below the minimums or above the maxima.
    """
    if len(secret) != SECRET_SIZE:
        raise UsageError("the account secret is 32 bytes")
    if len(account_id) != 32:
        raise UsageError("an account id is 32 bytes")
    if len(nonce) != AEAD_NONCE_SIZE:
        raise UsageError("the backup nonce must be 24 random bytes")
    params = KdfParams(t=t, m_kib=m_kib, p=p, salt=bytes(salt))
    keys = derive_keys(passphrase, params, minimums=minimums)
    header = _header(account_id, params, nonce)
    ct = aead_encrypt(keys.enc_key, nonce, secret,
                      labelled(labels.BACKUP_AD, encode(header)))
    return Backup(params, keys.verifier, encode({**header, "ct": ct}))


def _kdf_from(f: Fields) -> KdfParams:
    return KdfParams(alg=f.str_("alg", max_len=32), t=f.int_("t", hi=2**32 - 1),
                     m_kib=f.int_("m", hi=2**32 - 1), p=f.int_("p", hi=2**24 - 1),
                     salt=f.bytes_("salt", max_size=SALT_MAX))


def decode_backup(blob: bytes) -> BackupHeader:
    """Decode a blob's structure (no parameter check, nothing derived).

    The relay uses this to check that a blob matches the parameters and the
    account it is stored under.

    Raises:
        DecodeError: ``too_large`` over :data:`MAX_BACKUP_BLOB`;
            ``unsupported_version``; ``malformed`` for any other shape error.
    """
    if len(blob) > MAX_BACKUP_BLOB:
        raise DecodeError(f"backup blob of {len(blob)} bytes exceeds the limit of "
                          f"{MAX_BACKUP_BLOB}", Code.TOO_LARGE)
    value = decode(blob, limits=_LIMITS)
    version_of_map(value, BACKUP_VERSION, "backup")
    f = expect_map(value, "backup", (*_HEADER_KEYS, "ct"))
    kdf = _kdf_from(f.map_("kdf", _KDF_KEYS))
    account = f.bytes_("account", size=32)
    nonce = f.bytes_("nonce", size=AEAD_NONCE_SIZE)
    ct = f.bytes_("ct", size=SECRET_SIZE + 16)
    return BackupHeader(account, kdf, nonce, ct, encode(_header(account, kdf, nonce)))


def open_backup_with_keys(blob: bytes, keys: BackupKeys, account_id: bytes) -> bytes:
    """Decrypt a blob with keys already derived (from ``keys.params``).

    Raises:
        DecodeError: a malformed blob, or one whose KDF parameters are not those
            the keys were derived with.
        ContextError: ``wrong_context``, the blob is for another account.
        DecryptError: wrong passphrase, or a tampered blob.
    """
    h = decode_backup(blob)
    if h.account != account_id:
        raise ContextError("this backup belongs to another account")
    if h.kdf != keys.params:
        raise _bad("the backup's KDF parameters differ from the ones the relay announced")
    try:
        return aead_decrypt(keys.enc_key, h.nonce, h.ct,
                            labelled(labels.BACKUP_AD, h.header_bytes))
    except DecryptError:
        raise DecryptError("the backup does not open: wrong passphrase, or the blob was "
                           "tampered with") from None


def open_backup(blob: bytes, passphrase: str, account_id: bytes, *,
                minimums: KdfMinimums | None = None) -> bytes:
    """Recover the 32-byte account secret from a blob and its passphrase.

    The blob's account and KDF parameters are checked before Argon2id runs.

    Raises:
        DecodeError: malformed blob, or weak or absurd KDF parameters.
        ContextError: the blob is for another account.
        DecryptError: wrong passphrase, or a tampered blob.
    """
    h = decode_backup(blob)
    if h.account != account_id:
        raise ContextError("this backup belongs to another account")
    return open_backup_with_keys(blob, derive_keys(passphrase, h.kdf, minimums=minimums),
                                 account_id)
