"""Recovery material for the 32-byte account secret.

Three forms, any of which recovers the account (``sddsf recover``):

* the **recovery phrase**: the secret as 24 BIP39 English words (the
  ``mnemonic`` library, the reference implementation of BIP39);
* **Shamir shares**: SLIP-39 mnemonics, any ``threshold`` of which rebuild the
  secret (``shamir-mnemonic`` through :mod:`sddsf.crypto`), optionally
  protected by a SLIP-39 passphrase;
* a **passphrase backup** on the relay (:mod:`sddsf.protocol.backup`): the
  secret encrypted under Argon2id(passphrase), released by the relay only for
  the right verifier, with a lockout after repeated wrong ones.

Errors are :class:`~sddsf.errors.UsageError` with a message that says what is
wrong (a word's position, never the word itself: it is part of a secret).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

import httpx
from mnemonic import Mnemonic

from sddsf.client.relay_client import RelayClient
from sddsf.crypto import random_bytes, slip39_combine, slip39_split
from sddsf.errors import ContextError, UsageError
from sddsf.protocol.backup import (
    PRODUCTION_MINIMUMS,
    KdfMinimums,
    KdfParams,
    check_kdf_params,
    derive_keys,
    make_backup,
    open_backup_with_keys,
)
from sddsf.protocol.identity import AccountKeys, fingerprint

__all__ = [
    "MIN_BACKUP_PASSPHRASE",
    "PHRASE_WORDS",
    "check_secret_account",
    "combine_shares",
    "enable_backup",
    "fetch_backup_secret",
    "format_account_id",
    "normalize_passphrase",
    "normalize_words",
    "parse_account_id",
    "phrase_from_secret",
    "read_words_file",
    "secret_from_phrase",
    "split_shares",
]

PHRASE_WORDS: Final = 24
#: BIP39 entropy sizes (bytes) and the phrase length of each.
_BIP39_WORDS: Final = {16: 12, 20: 15, 24: 18, 28: 21, 32: 24}
#: The relay can try passphrases offline against the blob it stores (at the
#: cost of one Argon2id each), so a backup passphrase must not be short.
MIN_BACKUP_PASSPHRASE: Final = 12
#: Lengths of SLIP-39 shares: 7 words of metadata and checksum plus the value,
#: for secrets of 16, 18, ..., 32 bytes (20 words for 128 bits, 33 for 256).
_SHARE_WORDS: Final = frozenset(7 + -(-8 * n // 10) for n in range(16, 33, 2))


@functools.cache
def _bip39() -> Mnemonic:
    return Mnemonic("english")


@functools.cache
def _wordset() -> frozenset[str]:
    return frozenset(_bip39().wordlist)


def normalize_words(text: str) -> str:
    """Unicode NFKD, lower case, single spaces: how phrases and shares are compared."""
    return " ".join(unicodedata.normalize("NFKD", text).lower().split())


def normalize_passphrase(passphrase: str) -> str:
    """Unicode NFKC of a backup passphrase (the same typed text gives the same
    bytes on every platform); nothing else is changed."""
    return unicodedata.normalize("NFKC", passphrase)


# ------------------------------------------------------------- BIP39 phrase


def phrase_from_secret(secret: bytes) -> str:
    """The BIP39 English phrase of ``secret`` (24 words for the 32-byte account secret).

    Raises:
        UsageError: ``secret`` is not 16, 20, 24, 28 or 32 bytes.
    """
    if len(secret) not in _BIP39_WORDS:
        raise UsageError("a BIP39 phrase encodes 16, 20, 24, 28 or 32 bytes")
    return str(_bip39().to_mnemonic(bytes(secret)))


def secret_from_phrase(phrase: str, *, words: int | None = PHRASE_WORDS) -> bytes:
    """The bytes a BIP39 English phrase encodes (whitespace and case do not matter).

    ``words`` is the required length (None: any BIP39 length).

    Raises:
        UsageError: wrong number of words, a word not in the list (its position
            is named), or a checksum that does not match.
    """
    ws = normalize_words(phrase).split()
    allowed = sorted(_BIP39_WORDS.values()) if words is None else [words]
    if len(ws) not in allowed:
        expected = f"{words}" if words is not None else "12, 15, 18, 21 or 24"
        raise UsageError(f"a recovery phrase has {expected} words, this one has {len(ws)}")
    for position, word in enumerate(ws, start=1):
        if word not in _wordset():
            raise UsageError(f"word {position} of the recovery phrase is not in the BIP39 "
                             "English word list; check its spelling")
    try:
        return bytes(_bip39().to_entropy(ws))
    except (ValueError, LookupError):
        raise UsageError("the recovery phrase's checksum does not match: a word is wrong "
                         "or two words are swapped") from None


def check_secret_account(secret: bytes, account_id: bytes) -> None:
    """Refuse a secret that is not the secret of ``account_id``.

    Raises:
        UsageError: the secret derives another account (both fingerprints are named).
    """
    other = AccountKeys.from_secret(secret).account_id
    if other != account_id:
        raise UsageError(f"this recovery phrase belongs to account {fingerprint(other)}, "
                         f"not to this device's account {fingerprint(account_id)}")


# ---------------------------------------------------------- SLIP-39 shares


def _share_passphrase(passphrase: str) -> bytes:
    if not all(32 <= ord(c) <= 126 for c in passphrase):
        raise UsageError("a SLIP-39 passphrase may contain only printable ASCII characters")
    return passphrase.encode("ascii")


def split_shares(secret: bytes, threshold: int, shares: int, passphrase: str = "") -> list[str]:
    """Split ``secret`` into ``shares`` SLIP-39 mnemonics; any ``threshold`` recover it.

    With a ``passphrase`` (printable ASCII), the shares recover the secret only
    together with it; a wrong passphrase gives *another* secret (SLIP-39 has no
    passphrase check), which then derives an account that does not exist.

    Raises:
        UsageError: bad counts (1 < threshold <= shares <= 16), secret length or
            passphrase characters.
    """
    return slip39_split(secret, threshold=threshold, shares=shares,
                        passphrase=_share_passphrase(passphrase))


def combine_shares(mnemonics: Sequence[str], passphrase: str = "") -> bytes:
    """Rebuild the secret from at least ``threshold`` SLIP-39 shares.

    Raises:
        UsageError: an invalid share (word, checksum, length), shares of
            different sets, too few shares; the message says which.
    """
    if not mnemonics:
        raise UsageError("no shares given")
    return slip39_combine([normalize_words(m) for m in mnemonics],
                          passphrase=_share_passphrase(passphrase))


def read_words_file(path: str | Path, *, kind: Literal["phrase", "share"] = "phrase") -> str:
    """Read one recovery phrase (``kind="phrase"``) or one SLIP-39 share from a file.

    Returns the normalised words. A phrase is fully checked (24 words, word
    list, checksum); a share's shape is checked here (a SLIP-39 length of 20 to
    33 words) and its checksum by :func:`combine_shares`.

    Raises:
        UsageError: naming the file: unreadable, empty, or not a phrase/share.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    words = normalize_words(text)
    if not words:
        raise UsageError(f"{path} is empty")
    if kind == "phrase":
        try:
            secret_from_phrase(words)
        except UsageError as exc:
            raise UsageError(f"{path}: {exc.message}") from None
        return words
    count = len(words.split())
    if count not in _SHARE_WORDS or not all(w.isascii() and w.isalpha()
                                            for w in words.split()):
        raise UsageError(f"{path} does not hold one SLIP-39 share (20 to 33 words, of a "
                         f"SLIP-39 length; got {count})")
    return words


# ------------------------------------------------------------- account ids


def format_account_id(account_id: bytes) -> str:
    """How the CLI shows an account id: 64 hex digits."""
    return account_id.hex()


def parse_account_id(text: str) -> bytes:
    """Parse an account id: 64 hex digits (as shown by the CLI) or the API's base64.

    Raises:
        UsageError: neither form of 32 bytes.
    """
    value = text.strip()
    try:
        raw = bytes.fromhex(value) if len(value) == 64 else None
    except ValueError:
        raw = None
    if raw is None and len(value) == 44:
        try:
            raw = base64.b64decode(value.encode("ascii"), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raw = None
    if raw is None or len(raw) != 32:
        raise UsageError("an account id is 64 hex digits (as `sddsf backup enable` prints it)")
    return raw


# -------------------------------------------------------- passphrase backup


async def enable_backup(relay_client: RelayClient, account_id: bytes, secret: bytes,
                        passphrase: str, *, minimums: KdfMinimums | None = None) -> KdfParams:
    """Encrypt the account secret under ``passphrase`` and store it on the relay
    (replacing any earlier backup). ``relay_client`` must be a device's client
    (the upload is signed). Returns the KDF parameters used: the defaults,
    raised to ``minimums`` (the relay's published encryption policy, see
    :func:`sddsf.client.controller.backup_minimums`), which they must meet.

    Raises:
        UsageError: a passphrase shorter than :data:`MIN_BACKUP_PASSPHRASE`
            characters, or a secret of another account.
        DecodeError: ``minimums`` beyond the protocol's maxima.
    """
    check_secret_account(secret, account_id)
    text = normalize_passphrase(passphrase)
    if len(text) < MIN_BACKUP_PASSPHRASE:
        raise UsageError(f"a backup passphrase needs at least {MIN_BACKUP_PASSPHRASE} "
                         "characters (the relay could try guesses offline against the blob)")
    low = minimums or PRODUCTION_MINIMUMS
    t, m_kib, p = max(3, low.t), max(64 * 1024, low.m_kib), max(4, low.p)
    salt, nonce = random_bytes(16), random_bytes(24)
    # Argon2id (64 MiB or more) off the event loop; parameters weaker than the
    # minimums are refused before anything is derived.
    backup = await asyncio.to_thread(make_backup, secret, text, account_id, salt=salt,
                                     nonce=nonce, t=t, m_kib=max(m_kib, 8 * p), p=p,
                                     minimums=low)
    await relay_client.put_backup(account_id, backup)
    return backup.kdf


async def fetch_backup_secret(relay_url: str, account_id: bytes, passphrase: str,
                              transport: httpx.AsyncBaseTransport | None = None) -> bytes:
    """Recover the account secret from the relay's passphrase backup.

    Steps: fetch the KDF parameters, **check them before deriving anything**,
    run Argon2id once, send the verifier, open the blob, and check that the
    secret derives ``account_id``.

    Raises:
        NotFoundError: the account has no backup on this relay.
        DecodeError: weak, absurd or inconsistent KDF parameters, a malformed blob.
        AuthenticationError: wrong passphrase (the relay counted the attempt).
        RateLimitedError: the backup is locked after too many wrong passphrases.
        DecryptError, ContextError: the relay served a blob that does not open
            for this account.
    """
    text = normalize_passphrase(passphrase)
    async with RelayClient(relay_url, transport=transport) as client:
        params = check_kdf_params(await client.backup_kdf(account_id))
        keys = await asyncio.to_thread(derive_keys, text, params)
        blob = await client.fetch_backup(account_id, keys.verifier)
    secret = open_backup_with_keys(blob, keys, account_id)
    if AccountKeys.from_secret(secret).account_id != account_id:
        raise ContextError("the backup holds the secret of another account")
    return secret
