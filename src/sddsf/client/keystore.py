"""Where a device home's storage key lives: the :class:`KeyStore` interface.

The storage key (32 random bytes) encrypts the device's store at rest
(:mod:`sddsf.client.store`). Every key store records itself in
``<home>/storage-key.json``, a JSON object whose ``kind`` names the
implementation; that file is the mark of a complete device (it is made with
``O_EXCL``, mode 0600, and moved into a new home last). Implementations (each
passes :mod:`sddsf.testing.keystore_conformance`):

* :class:`KeyringKeyStore` (``keyring``): the key in the OS keyring (service
  ``sddsf``, user = a random id the file names);
* :class:`PassphraseKeyStore` (``passphrase``): the key wrapped with
  XChaCha20-Poly1305 under Argon2id(passphrase) (t = 3, m = 64 MiB, p = 4,
  stored with the salt; weaker stored parameters are refused); a key cache
  (:func:`set_key_cache`, the CLI's unlock agent) may serve it instead;
* :class:`PlaintextKeyStore` (``plaintext``): the key itself, only on explicit
  request (the file says it is insecure).

A passphrase is given as a ``str`` or as a function returning one (asked only
when needed); :func:`passphrase_source` turns either into the function.

Size: the interface with its written contract and its three
implementations, kept together so the contract and every implementation
of it read side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final, Protocol

from sddsf.client.store import STORAGE_KEY_SIZE
from sddsf.crypto import aead_decrypt, aead_encrypt, argon2id, random_bytes
from sddsf.errors import ConfigError, DecryptError, UnavailableError, UsageError

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

__all__ = ["KDF_MEMORY_KIB", "KDF_PARALLELISM", "KDF_TIME", "KEY_FILE", "MIN_PASSPHRASE",
           "KeyCache", "KeyStore", "KeyringKeyStore", "Passphrase", "PassphraseKeyStore",
           "PlaintextKeyStore", "keyring_usable", "new_key_store", "passphrase_source",
           "read_key_record", "set_key_cache", "stored_key_store"]

#: Argon2id passes of a new passphrase key file (the least a stored one may have).
KDF_TIME: Final = 3
#: Argon2id memory in KiB, 64 MiB (the least a stored key file may have).
KDF_MEMORY_KIB: Final = 64 * 1024
#: Argon2id lanes of a new passphrase key file.
KDF_PARALLELISM: Final = 4
# Upper bounds for parameters read back from a key file (16 GiB, 64 passes, 64 lanes).
_KDF_MAX_MEMORY_KIB: Final = 16 * 1024 * 1024
_KDF_MAX_TIME: Final = 64
_KDF_MAX_PARALLELISM: Final = 64
#: The key file's name in a device home; it marks a complete device.
KEY_FILE: Final = "storage-key.json"
#: The fewest characters a new passphrase has.
MIN_PASSPHRASE: Final = 8
_AD: Final = b"sddsf/v1/storage-key"
_NONCE: Final = 24

#: A passphrase, or a function that asks for it (called only when it is needed).
Passphrase = str | Callable[[], str]


def passphrase_source(passphrase: Passphrase | None) -> Callable[[], str] | None:
    """The function that gives ``passphrase`` (None stays None).

    Args:
        passphrase: a passphrase, a function returning one, or None.

    Returns:
        ``passphrase`` itself if it is a function or None; else a function that
        returns the str.

    Raises:
        UsageError: neither a str, a callable nor None.
    """
    if passphrase is None or callable(passphrase):
        return passphrase
    if isinstance(passphrase, str):
        text = passphrase
        return lambda: text
    raise UsageError("a passphrase is a str or a function returning one")


# ------------------------------------------------------------------ key cache
class KeyCache(Protocol):
    """Serves the storage key of a passphrase home that was unlocked earlier."""

    def get(self, home: Path, record: dict[str, object]) -> bytes | None:
        """The storage key of ``home`` whose key file holds ``record``, or None.

        Args:
            home: the device home.
            record: the JSON object of its key file (to tell one key from another).

        Returns:
            The 32-byte storage key, or None when the cache does not hold it
            (the passphrase is then asked for).

        Raises:
            Nothing: an implementation returns None instead; an exception it
            raises is not caught, and leaves :meth:`KeyStore.load` as it is.
        """
        ...


_key_cache: KeyCache | None = None


def set_key_cache(cache: KeyCache | None) -> None:
    """Consult ``cache`` before asking for the passphrase of a passphrase home.

    One setting for the whole process; the CLI installs its unlock agent here.
    A :class:`PassphraseKeyStore` made with ``use_cache=False`` ignores it.

    Args:
        cache: the cache to consult (None: always ask).

    Raises:
        Nothing of its own.
    """
    global _key_cache  # noqa: PLW0603 - one process-wide setting, set at start-up
    _key_cache = cache


# ---------------------------------------------------------------- the record
def read_key_record(home: Path) -> dict[str, object]:
    """The JSON object of ``<home>/storage-key.json``.

    Args:
        home: the device home.

    Returns:
        The key file's object; its ``kind`` is a str.

    Raises:
        ConfigError: no key file (no device), or one that does not read.
    """
    path = home / KEY_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no device in {home}: run `sddsf init` (or pass --home)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
        raise ConfigError(f"cannot read {path}: not a storage key record")
    return record


_WHERE: Final = {"keyring": "in the OS keyring", "passphrase": "under a passphrase",
                 "plaintext": "in plaintext (insecure)"}


class KeyStore(ABC):
    """Keeps the storage key of device homes (the interface).

    Contract every implementation keeps (checked by
    :mod:`sddsf.testing.keystore_conformance`):

    * :meth:`create` makes a new random 32-byte key, keeps it, and writes
      ``<home>/storage-key.json`` (mode 0600, never replacing one) with
      ``kind`` = :attr:`kind`; it returns the key. A home that already has a
      key file is refused (``UsageError``, ``usage``) and left as it was.
    * :meth:`load` returns the key :meth:`create` made for that home, from any
      instance configured alike (same passphrase, same keyring), in any process.
    * :meth:`discard` removes the key file and whatever the store kept
      elsewhere for it; it never fails for what is already gone.
    * When :attr:`protects_at_rest`, neither the key nor its hex is in the file.
    * Errors: no key file, an unreadable one, one of another kind, or a key
      that is gone: ``ConfigError`` (``config``); a wrong passphrase:
      ``DecryptError`` (``decrypt_failed``); a keyring that fails:
      ``UnavailableError`` (``unavailable``). No other exception type leaves.
    """

    #: The ``kind`` this store writes in the key file.
    kind: ClassVar[str]
    #: Whether the key file alone does not reveal the key.
    protects_at_rest: ClassVar[bool] = True

    def create(self, home: Path) -> bytes:
        """Make, keep and return a new storage key for ``home``.

        If the key file cannot be written, what :meth:`wrap` kept elsewhere is
        forgotten again.

        Args:
            home: the device home, an existing directory without a key file.

        Returns:
            The new 32-byte storage key.

        Raises:
            UsageError: ``home`` already has a key file; or (passphrase) a
                passphrase shorter than 8 characters.
            ConfigError: (passphrase) no passphrase was given.
            UnavailableError: the key file or the keyring cannot be written.
        """
        path = home / KEY_FILE
        if path.exists():
            raise UsageError(f"{home} already holds a device; use another --home")
        key = random_bytes(STORAGE_KEY_SIZE)
        record: dict[str, object] = {"kind": self.kind, **self.wrap(key)}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
        except BaseException as exc:
            self.forget(record)
            if isinstance(exc, FileExistsError):
                raise UsageError(f"{home} already holds a device; use another --home") from None
            if isinstance(exc, OSError):
                raise UnavailableError(f"cannot write {path}: {exc}") from None
            raise
        return key

    def load(self, home: Path) -> bytes:
        """The storage key of ``home``.

        Args:
            home: the device home.

        Returns:
            The 32-byte storage key :meth:`create` made.

        Raises:
            ConfigError: no device, an unreadable key file, one of another kind,
                or the key is gone (keyring) or cannot be asked for (passphrase).
            DecryptError: a wrong passphrase.
            UnavailableError: the keyring failed.
        """
        record = read_key_record(home)
        kind = str(record["kind"])
        if kind != self.kind:
            raise ConfigError(f"this device's store key is kept {_WHERE.get(kind, 'elsewhere')}"
                              f", not {_WHERE[self.kind]}")
        key = self.unwrap(home, record)
        if len(key) != STORAGE_KEY_SIZE:
            raise ConfigError(f"the storage key of {home} is not {STORAGE_KEY_SIZE} bytes")
        return key

    def discard(self, home: Path) -> None:
        """Forget the key of ``home``: what is kept elsewhere (best effort), then the file.

        A missing or unreadable key file, or one of another kind, is no error.

        Args:
            home: the device home.

        Raises:
            UnavailableError: the key file exists but cannot be removed.
        """
        with contextlib.suppress(ConfigError):
            record = read_key_record(home)
            if record["kind"] == self.kind:
                self.forget(record)
        try:
            (home / KEY_FILE).unlink(missing_ok=True)
        except OSError as exc:
            raise UnavailableError(f"cannot remove {home / KEY_FILE}: "
                                   f"{exc.strerror or exc}") from exc

    @abstractmethod
    def wrap(self, key: bytes) -> dict[str, object]:
        """Keep ``key`` as this kind keeps it (the implementation's part of :meth:`create`).

        Args:
            key: the new storage key.

        Returns:
            The fields (besides ``kind``) the key file records.

        Raises:
            UsageError: (passphrase) a passphrase shorter than 8 characters.
            ConfigError: (passphrase) no passphrase was given.
            UnavailableError: (keyring) the keyring cannot be written.
        """

    @abstractmethod
    def unwrap(self, home: Path, record: dict[str, object]) -> bytes:
        """The key a record of this kind stands for (the implementation's part of
        :meth:`load`).

        Args:
            home: the device home (for messages, and the key cache).
            record: the key file's object, of this kind.

        Returns:
            The storage key (:meth:`load` checks its size).

        Raises:
            ConfigError: a record this kind cannot read, a key that is gone
                (keyring), or no passphrase to ask (passphrase).
            DecryptError: (passphrase) a wrong passphrase.
            UnavailableError: (keyring) the keyring failed.
        """

    def forget(self, record: dict[str, object]) -> None:
        """Drop what :meth:`wrap` kept outside the key file (best effort).

        Args:
            record: the key file's object whose key to drop.

        Raises:
            Nothing: it is best effort (nothing to drop by default).
        """
        del record  # nothing by default


class PlaintextKeyStore(KeyStore):
    """The key in the key file itself (insecure: only on explicit request).

    Its :meth:`~KeyStore.wrap` and :meth:`~KeyStore.unwrap` keep the contract of
    :class:`KeyStore` (their docstrings are its).
    """

    kind: ClassVar[str] = "plaintext"
    protects_at_rest: ClassVar[bool] = False

    def wrap(self, key: bytes) -> dict[str, object]:
        return {"key": key.hex(), "warning": "INSECURE: the storage key is stored in plaintext"}

    def unwrap(self, home: Path, record: dict[str, object]) -> bytes:
        try:
            return bytes.fromhex(str(record["key"]))
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read {home / KEY_FILE}: {exc}") from None


class PassphraseKeyStore(KeyStore):
    """The key wrapped under Argon2id(passphrase).

    The passphrase (or its function) is asked only when needed: by
    :meth:`~KeyStore.create`, and by :meth:`~KeyStore.load` when the key cache
    does not serve the key.

    Args:
        passphrase: the passphrase or a function asking for it (None: the key
            can be served only by the key cache).
        use_cache: whether :meth:`load` first asks the process's key cache.

    Raises:
        UsageError: ``passphrase`` is neither a str, a function nor None.
    """

    kind: ClassVar[str] = "passphrase"

    def __init__(self, passphrase: Passphrase | None, *, use_cache: bool = True) -> None:
        self._passphrase = passphrase_source(passphrase)
        self._use_cache = use_cache

    def _ask(self, why: str) -> str:
        if self._passphrase is None:
            raise ConfigError(why)
        return self._passphrase()

    def wrap(self, key: bytes) -> dict[str, object]:
        secret = self._ask("no passphrase was given to protect this device's store")
        if len(secret) < MIN_PASSPHRASE:
            raise UsageError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
        salt, nonce = random_bytes(16), random_bytes(_NONCE)
        kek = _kek(secret, salt, KDF_TIME, KDF_MEMORY_KIB, KDF_PARALLELISM)
        return {"kdf": "argon2id", "t": KDF_TIME, "m": KDF_MEMORY_KIB, "p": KDF_PARALLELISM,
                "salt": salt.hex(), "wrapped": (nonce + aead_encrypt(kek, nonce, key, _AD)).hex()}

    def unwrap(self, home: Path, record: dict[str, object]) -> bytes:
        cached = _key_cache.get(home, record) if self._use_cache and _key_cache else None
        if cached is not None:
            return cached
        try:
            t, m, p = int(str(record["t"])), int(str(record["m"])), int(str(record["p"]))
            salt = bytes.fromhex(str(record["salt"]))
            wrapped = bytes.fromhex(str(record["wrapped"]))
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read {home / KEY_FILE}: {exc}") from None
        if m < KDF_MEMORY_KIB or t < KDF_TIME:
            raise ConfigError("the storage key file has weaker KDF parameters than allowed")
        if m > _KDF_MAX_MEMORY_KIB or t > _KDF_MAX_TIME or not 1 <= p <= _KDF_MAX_PARALLELISM:
            # An edited file must not make the device hash for hours or ask for
            # terabytes (or reach argon2 with a value it rejects with its own type).
            raise ConfigError(f"the storage key file's KDF parameters (t={t}, m={m} KiB, "
                              f"p={p}) are out of range; restore the file from a backup")
        kek = _kek(self._ask("this device's store is protected by a passphrase: set "
                             "SDDSF_PASSPHRASE or run interactively"), salt, t, m, p)
        try:
            return aead_decrypt(kek, wrapped[:_NONCE], wrapped[_NONCE:], _AD)
        except DecryptError:
            raise DecryptError("wrong passphrase for this device") from None


def _kek(passphrase: str, salt: bytes, t: int, m: int, p: int) -> bytes:
    return argon2id(passphrase.encode(), salt, time_cost=t, memory_kib=m, parallelism=p)


class KeyringKeyStore(KeyStore):
    """The key in an OS keyring (the ``keyring`` library's backends).

    Args:
        backend: the keyring to use; None: the process's (``keyring.get_keyring()``).
        service: the keyring service name of new keys.
    """

    kind: ClassVar[str] = "keyring"

    def __init__(self, backend: KeyringBackend | None = None, service: str = "sddsf") -> None:
        self._given = backend
        self._service = service

    def _backend(self) -> KeyringBackend:
        if self._given is not None:
            return self._given
        import keyring  # noqa: PLC0415 - optional at run time

        return keyring.get_keyring()

    def wrap(self, key: bytes) -> dict[str, object]:
        user = random_bytes(16).hex()
        with _keyring_errors():
            self._backend().set_password(self._service, user, key.hex())
        return {"service": self._service, "user": user}

    def unwrap(self, home: Path, record: dict[str, object]) -> bytes:
        with _keyring_errors():
            value = self._backend().get_password(str(record.get("service")),
                                                 str(record.get("user")))
        if value is None:
            raise ConfigError("the storage key is missing from the OS keyring")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise ConfigError("the OS keyring holds no storage key for this device") from None

    def forget(self, record: dict[str, object]) -> None:
        # Best effort: the key file goes anyway, and without it the entry is unused.
        with contextlib.suppress(Exception):
            self._backend().delete_password(str(record["service"]), str(record["user"]))


@contextlib.contextmanager
def _keyring_errors() -> Iterator[None]:
    """Translate the keyring's errors (a locked or absent keyring) once, here."""
    from keyring.errors import KeyringError  # noqa: PLC0415 - optional at run time

    try:
        yield
    except (KeyringError, OSError) as exc:
        raise UnavailableError(f"the OS keyring failed: {exc}") from None


def keyring_usable() -> bool:
    """Whether this process has an OS keyring (not the library's fail/null backends).

    Returns:
        True when ``keyring`` is installed and its backend can keep a key.

    Raises:
        Nothing of its own.
    """
    try:
        import keyring  # noqa: PLC0415 - optional at run time
        from keyring.backends import fail  # noqa: PLC0415
    except ImportError:
        return False
    backend = keyring.get_keyring()
    return not isinstance(backend, fail.Keyring) and "null" not in type(backend).__name__.lower()


# ------------------------------------------------------------------ selection
def new_key_store(passphrase: Passphrase | None, *, insecure_plaintext: bool) -> KeyStore:
    """The key store of a new home: plaintext only when asked; else the OS keyring
    when there is one and no passphrase was given; else the passphrase.

    Args:
        passphrase: the passphrase or a function asking for it (None: none).
        insecure_plaintext: keep the key in plaintext in the key file.

    Returns:
        A :class:`PlaintextKeyStore`, :class:`KeyringKeyStore` or
        :class:`PassphraseKeyStore`.

    Raises:
        ConfigError: no keyring and no passphrase.
        UsageError: ``passphrase`` is neither a str, a function nor None.
    """
    if insecure_plaintext:
        return PlaintextKeyStore()
    if passphrase is None:
        if keyring_usable():
            return KeyringKeyStore()
        raise ConfigError("no OS keyring is available: set SDDSF_PASSPHRASE (or answer the "
                          "prompt) to protect this device's store, or pass the insecure "
                          "plaintext-key flag")
    return PassphraseKeyStore(passphrase)


def stored_key_store(home: Path, passphrase: Passphrase | None) -> KeyStore:
    """The key store that ``home``'s key file names.

    Args:
        home: the device home.
        passphrase: the passphrase or a function asking for it, for a
            passphrase home (None: only the key cache can serve the key).

    Returns:
        A key store of the kind the key file names (the process's default
        keyring for ``keyring``).

    Raises:
        ConfigError: no device, an unreadable key file, or an unknown kind.
        UsageError: ``passphrase`` is neither a str, a function nor None (a
            passphrase home).
    """
    kind = read_key_record(home)["kind"]
    if kind == PlaintextKeyStore.kind:
        return PlaintextKeyStore()
    if kind == KeyringKeyStore.kind:
        return KeyringKeyStore()
    if kind == PassphraseKeyStore.kind:
        return PassphraseKeyStore(passphrase)
    raise ConfigError(f"unknown storage key kind {kind!r} in {home / KEY_FILE}")
