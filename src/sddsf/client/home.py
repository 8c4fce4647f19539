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

A new home is built in a staging directory inside ``<home>`` and moved into
place only when everything worked (:func:`staged_home`): a failed ``init`` or
``recover`` leaves no half-made device behind. The key file is moved last, so
it is the mark of a complete device.

A passphrase-protected key may be served by a key cache (:func:`set_key_cache`,
the CLI's unlock agent) instead of asking for the passphrase every time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, Protocol

import platformdirs

from sddsf.client.homelock import LOCK_FILE
from sddsf.client.sqlite_store import SqliteStore
from sddsf.client.store import LocalStore
from sddsf.crypto import aead_decrypt, aead_encrypt, argon2id, random_bytes
from sddsf.errors import ConfigError, DecryptError, UsageError

__all__ = ["KDF_MEMORY_KIB", "KDF_PARALLELISM", "KDF_TIME", "KeyCache", "default_home",
           "discard_home", "holds_device", "open_home", "passphrase_key", "set_key_cache",
           "staged_home"]

KDF_TIME: Final = 3
KDF_MEMORY_KIB: Final = 64 * 1024
KDF_PARALLELISM: Final = 4
_KEY_FILE: Final = "storage-key.json"
_AD: Final = b"sddsf/v1/storage-key"


class KeyCache(Protocol):
    """Serves the storage key of a passphrase home that was unlocked earlier."""

    def get(self, home: Path, record: dict[str, object]) -> bytes | None:
        """The storage key of ``home`` whose key file holds ``record``, or None."""
        ...


_key_cache: KeyCache | None = None


def set_key_cache(cache: KeyCache | None) -> None:
    """Consult ``cache`` before asking for the passphrase of a passphrase home
    (None: always ask). The CLI installs its unlock agent here."""
    global _key_cache  # noqa: PLW0603 - one process-wide setting, set at start-up
    _key_cache = cache


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
    cached = _key_cache.get(home, record) if _key_cache is not None else None
    if cached is not None:
        return cached, kind
    if passphrase is None:
        raise ConfigError("this device's store is protected by a passphrase: set "
                          "SDDSF_PASSPHRASE or run interactively")
    return _unwrap(home, record, passphrase), kind


def passphrase_key(home: Path, passphrase: Callable[[], str]) -> tuple[bytes, dict[str, object]]:
    """The storage key of a passphrase home, from its passphrase (never a cache),
    with the key file's record (to unlock the home).

    Raises:
        ConfigError: no device, or its key is not protected by a passphrase.
        DecryptError: wrong passphrase.
    """
    try:
        record = json.loads((home / _KEY_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError(f"no device in {home}: run `sddsf init` (or pass --home)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {home / _KEY_FILE}: {exc}") from None
    if not isinstance(record, dict) or record.get("kind") != "passphrase":
        kind = record.get("kind") if isinstance(record, dict) else None
        raise ConfigError(f"this device's store key is kept {_WHERE.get(str(kind), 'elsewhere')}"
                          "; there is no passphrase to unlock")
    return _unwrap(home, record, passphrase), record


_WHERE: Final = {"keyring": "in the OS keyring", "plaintext": "in plaintext (insecure)"}


def _unwrap(home: Path, record: dict[str, object], passphrase: Callable[[], str]) -> bytes:
    try:
        t, m, p = int(str(record["t"])), int(str(record["m"])), int(str(record["p"]))
        salt, wrapped = bytes.fromhex(str(record["salt"])), bytes.fromhex(str(record["wrapped"]))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"cannot read {home / _KEY_FILE}: {exc}") from None
    if m < KDF_MEMORY_KIB or t < KDF_TIME:
        raise ConfigError("the storage key file has weaker KDF parameters than allowed")
    kek = _kek(passphrase(), salt, t, m, p)
    try:
        return aead_decrypt(kek, wrapped[:24], wrapped[24:], _AD)
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
    return SqliteStore(home / "device.db", key), str(kind)


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
    for name in ("device.db", "device.db-wal", "device.db-shm", "device.db-journal", _KEY_FILE,
                 LOCK_FILE):
        (home / name).unlink(missing_ok=True)
    if remove_dir:
        with contextlib.suppress(OSError):  # not empty: something else was put there
            home.rmdir()


def holds_device(home: Path) -> bool:
    """Whether ``home`` holds a (complete) device."""
    return (home / _KEY_FILE).exists()


@contextlib.contextmanager
def staged_home(home: Path) -> Iterator[Path]:
    """Build a new device home atomically.

    Yields a staging directory (inside ``home``, so on the same file system) in
    which the caller creates the device (:meth:`Device.create_account` with the
    staging path as its home) and closes it. When the block succeeds, every file
    is hard-linked into ``home`` without replacing anything (the key file last,
    so a device is complete or absent); when it fails, the staging directory,
    any keyring entry made for it, and ``home`` itself if this call created it
    are removed. Nothing is left behind either way.

    Raises:
        UsageError: ``home`` already holds a device (before anything is made), or
            another process completed a device there meanwhile.
    """
    if holds_device(home):
        raise UsageError(f"{home} already holds a device; use another --home")
    made = _make_dirs(home)
    stage = home / f".new-device-{random_bytes(8).hex()}"
    try:
        stage.mkdir(mode=0o700)
        yield stage
        _commit(stage, home)
    except BaseException:
        _discard(stage)
        for directory in made:  # innermost first; only if still empty
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def _make_dirs(home: Path) -> list[Path]:
    """Create ``home`` (mode 0700) and missing parents; the ones created, innermost first."""
    missing = [p for p in (home, *home.parents) if not p.exists()]
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if missing:
        os.chmod(home, 0o700)
    return missing


def _commit(stage: Path, home: Path) -> None:
    # The key file last; the lock file is not state (each home has its own).
    files = sorted((p for p in stage.iterdir() if p.name != LOCK_FILE),
                   key=lambda p: p.name == _KEY_FILE)
    linked: list[Path] = []
    try:
        for src in files:
            dst = home / src.name
            os.link(src, dst)  # never replaces: fails if a device appeared meanwhile
            linked.append(dst)
    except FileExistsError:
        for dst in linked:
            dst.unlink()
        raise UsageError(f"{home} already holds a device; use another --home") from None
    shutil.rmtree(stage)


def _discard(stage: Path) -> None:
    """Remove a staged home and the keyring entry its key file names."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        record = json.loads((stage / _KEY_FILE).read_text())
        if record.get("kind") == "keyring":
            import keyring  # noqa: PLC0415

            with contextlib.suppress(Exception):  # the keyring backend's own errors
                keyring.delete_password(record["service"], record["user"])
    shutil.rmtree(stage, ignore_errors=True)
