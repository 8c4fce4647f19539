"""A device home directory and the storage key that encrypts its store at rest.

Layout of ``<home>`` (``--home``, ``SDDSF_HOME``, or the platform's user data dir):

* ``device.db``: the :class:`~sddsf.client.store.LocalStore`;
* ``storage-key.json``: where the 32-byte storage key lives, one of:

  - ``keyring``: in the OS keyring (service ``sddsf``, user = this home's id);
  - ``passphrase``: wrapped with XChaCha20-Poly1305 under Argon2id(passphrase)
    (t = 3, m = 64 MiB, p = 4; the parameters are stored with the salt); the
    passphrase comes from ``SDDSF_PASSPHRASE`` or a prompt;
  - ``plaintext``: the key itself, only with the explicit insecure flag (the
    file says so, and ``sddsf status`` shows it).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

import platformdirs

from sddsf.client.store import LocalStore
from sddsf.crypto import aead_decrypt, aead_encrypt, argon2id, random_bytes
from sddsf.errors import ConfigError, DecryptError, UsageError

__all__ = ["KDF_MEMORY_KIB", "KDF_PARALLELISM", "KDF_TIME", "default_home", "discard_home",
           "open_home"]

KDF_TIME: Final = 3
KDF_MEMORY_KIB: Final = 64 * 1024
KDF_PARALLELISM: Final = 4
_KEY_FILE: Final = "storage-key.json"
_AD: Final = b"sddsf/v1/storage-key"


def default_home() -> Path:
    """``SDDSF_HOME`` or the platform's user data dir."""
    env = os.environ.get("SDDSF_HOME")
    return Path(env) if env else Path(platformdirs.user_data_dir("sddsf")) / "device"


def _keyring_usable() -> bool:
    try:
        import keyring  # noqa: PLC0415 - optional at run time
        from keyring.backends import fail  # noqa: PLC0415
    except ImportError:
        return False
    backend = keyring.get_keyring()
    return not isinstance(backend, fail.Keyring) and "null" not in type(backend).__name__.lower()


def _kek(passphrase: str, salt: bytes, t: int, m: int, p: int) -> bytes:
    return argon2id(passphrase.encode(), salt, time_cost=t, memory_kib=m, parallelism=p)


def _create_key_file(home: Path, passphrase: Callable[[], str] | None,
                     insecure_plaintext: bool) -> bytes:
    key = random_bytes(32)
    path = home / _KEY_FILE
    record: dict[str, object]
    if insecure_plaintext:
        record = {"kind": "plaintext", "key": key.hex(),
                  "warning": "INSECURE: the storage key is stored in plaintext"}
    elif _keyring_usable() and passphrase is None:
        import keyring  # noqa: PLC0415

        user = random_bytes(16).hex()
        keyring.set_password("sddsf", user, key.hex())
        record = {"kind": "keyring", "service": "sddsf", "user": user}
    else:
        if passphrase is None:
            raise ConfigError("no OS keyring is available: set SDDSF_PASSPHRASE (or answer the "
                              "prompt) to protect this device's store, or pass the insecure "
                              "plaintext-key flag")
        secret = passphrase()
        if len(secret) < 8:
            raise UsageError("the passphrase must have at least 8 characters")
        salt, nonce = random_bytes(16), random_bytes(24)
        kek = _kek(secret, salt, KDF_TIME, KDF_MEMORY_KIB, KDF_PARALLELISM)
        record = {"kind": "passphrase", "kdf": "argon2id", "t": KDF_TIME, "m": KDF_MEMORY_KIB,
                  "p": KDF_PARALLELISM, "salt": salt.hex(),
                  "wrapped": (nonce + aead_encrypt(kek, nonce, key, _AD)).hex()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return key


def _read_key_file(home: Path, passphrase: Callable[[], str] | None) -> tuple[bytes, str]:
    try:
        record = json.loads((home / _KEY_FILE).read_text())
        kind = str(record["kind"])
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read {home / _KEY_FILE}: {exc}") from None
    if kind == "plaintext":
        return bytes.fromhex(record["key"]), kind
    if kind == "keyring":
        import keyring  # noqa: PLC0415

        value = keyring.get_password(record["service"], record["user"])
        if value is None:
            raise ConfigError("the storage key is missing from the OS keyring")
        return bytes.fromhex(value), kind
    if kind != "passphrase":
        raise ConfigError(f"unknown storage key kind {kind!r} in {home / _KEY_FILE}")
    if passphrase is None:
        raise ConfigError("this device's store is protected by a passphrase: set "
                          "SDDSF_PASSPHRASE or run interactively")
    if int(record["m"]) < KDF_MEMORY_KIB or int(record["t"]) < KDF_TIME:
        raise ConfigError("the storage key file has weaker KDF parameters than allowed")
    kek = _kek(passphrase(), bytes.fromhex(record["salt"]), int(record["t"]), int(record["m"]),
               int(record["p"]))
    wrapped = bytes.fromhex(record["wrapped"])
    try:
        return aead_decrypt(kek, wrapped[:24], wrapped[24:], _AD), kind
    except DecryptError:
        raise DecryptError("wrong passphrase for this device") from None


def open_home(home: Path, *, passphrase: Callable[[], str] | None, create: bool = False,
              insecure_plaintext: bool = False) -> tuple[LocalStore, str]:
    """Open (or create) a device home; returns the store and the key storage kind.

    Raises:
        ConfigError: no home (and not ``create``), or no way to get the key.
        UsageError: ``create`` on a home that already holds a device.
        DecryptError: wrong passphrase.
    """
    exists = (home / _KEY_FILE).exists()
    if create and exists:
        raise UsageError(f"{home} already holds a device; use another --home")
    if not create and not exists:
        raise ConfigError(f"no device in {home}: run `sddsf init` (or pass --home)")
    if create:
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        key = _create_key_file(home, passphrase, insecure_plaintext)
        kind = json.loads((home / _KEY_FILE).read_text())["kind"]
    else:
        key, kind = _read_key_file(home, passphrase)
    return LocalStore(home / "device.db", key), str(kind)


def discard_home(home: Path, *, remove_dir: bool) -> None:
    """Remove a home :func:`open_home` just created (a pairing that did not
    finish): its store files, its key file and keyring entry, and the directory
    itself when ``remove_dir`` (it did not exist before). Nothing else in
    ``home`` is touched; the store must be closed first."""
    key_file = home / _KEY_FILE
    try:
        record = json.loads(key_file.read_text())
    except (OSError, ValueError):
        record = {}
    if isinstance(record, dict) and record.get("kind") == "keyring":
        # Best effort: the key file goes anyway, and without it the entry is unused.
        with contextlib.suppress(Exception):
            import keyring  # noqa: PLC0415

            keyring.delete_password(str(record["service"]), str(record["user"]))
    for name in ("device.db", "device.db-wal", "device.db-shm", "device.db-journal", _KEY_FILE):
        (home / name).unlink(missing_ok=True)
    if remove_dir:
        with contextlib.suppress(OSError):  # not empty: something else was put there
            home.rmdir()
