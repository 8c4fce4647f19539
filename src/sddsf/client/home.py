"""A device home directory and the storage key that encrypts its store at rest.

Layout of ``<home>`` (``--home``, ``SDDSF_HOME``, or the platform's user data dir):

* ``device.db``: the :class:`~sddsf.client.store.LocalStore` (a
  :class:`~sddsf.client.sqlite_store.SqliteStore` unless a store factory is
  given; a store without a file stands for this path);
* ``storage-key.json``: where the 32-byte storage key lives, written by a
  :class:`~sddsf.client.keystore.KeyStore`, one of:

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
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import platformdirs

from sddsf.client.homelock import LOCK_FILE
from sddsf.client.keystore import (
    KDF_MEMORY_KIB,
    KDF_PARALLELISM,
    KDF_TIME,
    KEY_FILE,
    KeyCache,
    KeyStore,
    Passphrase,
    PassphraseKeyStore,
    new_key_store,
    read_key_record,
    set_key_cache,
    stored_key_store,
)
from sddsf.client.sqlite_store import SqliteStore
from sddsf.client.store import STORE_FILE, LocalStore, StoreFactory
from sddsf.crypto import random_bytes
from sddsf.errors import ConfigError, UsageError

__all__ = ["KDF_MEMORY_KIB", "KDF_PARALLELISM", "KDF_TIME", "KeyCache", "default_home",
           "discard_home", "holds_device", "open_home", "passphrase_key", "set_key_cache",
           "staged_home"]


def default_home() -> Path:
    """``SDDSF_HOME`` or the platform's user data dir."""
    env = os.environ.get("SDDSF_HOME")
    return Path(env) if env else Path(platformdirs.user_data_dir("sddsf")) / "device"


def passphrase_key(home: Path, passphrase: Passphrase) -> tuple[bytes, dict[str, object]]:
    """The storage key of a passphrase home, from its passphrase (never a cache),
    with the key file's record (to unlock the home).

    Raises:
        ConfigError: no device, or its key is not protected by a passphrase.
        DecryptError: wrong passphrase.
    """
    record = read_key_record(home)
    if record["kind"] != PassphraseKeyStore.kind:
        kind = str(record["kind"])
        raise ConfigError(f"this device's store key is kept {_WHERE.get(kind, 'elsewhere')}"
                          "; there is no passphrase to unlock")
    return PassphraseKeyStore(passphrase, use_cache=False).load(home), record


_WHERE: Final = {"keyring": "in the OS keyring", "plaintext": "in plaintext (insecure)"}


def open_home(home: Path, *, passphrase: Passphrase | None, create: bool = False,
              insecure_plaintext: bool = False, key_store: KeyStore | None = None,
              store_factory: StoreFactory | None = None) -> tuple[LocalStore, str]:
    """Open (or create) a device home; returns the store and the key storage kind.

    Args:
        home: the device home.
        passphrase: the store's passphrase, or a function asking for it.
        create: make a new home (and a new storage key).
        insecure_plaintext: (``create``) keep the key in plaintext.
        key_store: where the storage key is kept; default: what the key file
            names (open), or as :func:`~sddsf.client.keystore.new_key_store`
            chooses (create).
        store_factory: makes the store from ``<home>/device.db`` and the key;
            default :class:`~sddsf.client.sqlite_store.SqliteStore`.

    Raises:
        ConfigError: no home (and not ``create``), or no way to get the key.
        UsageError: ``create`` on a home that already holds a device.
        DecryptError: wrong passphrase.
    """
    exists = (home / KEY_FILE).exists()
    if create and exists:
        raise UsageError(f"{home} already holds a device; use another --home")
    if not create and not exists:
        raise ConfigError(f"no device in {home}: run `sddsf init` (or pass --home)")
    if create:
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        keys = key_store or new_key_store(passphrase, insecure_plaintext=insecure_plaintext)
        key = keys.create(home)
    else:
        keys = key_store or stored_key_store(home, passphrase)
        key = keys.load(home)
    return (store_factory or SqliteStore)(home / STORE_FILE, key), keys.kind


def _forget_key(home: Path) -> None:
    """Remove the key file of ``home`` and its keyring entry (best effort)."""
    try:
        keys = stored_key_store(home, None)
    except ConfigError:  # unreadable or unknown: nothing else to find
        (home / KEY_FILE).unlink(missing_ok=True)
    else:
        keys.discard(home)


def discard_home(home: Path, *, remove_dir: bool) -> None:
    """Remove a home :func:`open_home` just created (a pairing that did not
    finish): its store files, its key file and keyring entry, and the directory
    itself when ``remove_dir`` (it did not exist before). Nothing else in
    ``home`` is touched; the store must be closed first."""
    _forget_key(home)
    for name in ("device.db", "device.db-wal", "device.db-shm", "device.db-journal", KEY_FILE,
                 LOCK_FILE):
        (home / name).unlink(missing_ok=True)
    if remove_dir:
        with contextlib.suppress(OSError):  # not empty: something else was put there
            home.rmdir()


def holds_device(home: Path) -> bool:
    """Whether ``home`` holds a (complete) device."""
    return (home / KEY_FILE).exists()


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
                   key=lambda p: p.name == KEY_FILE)
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
    with contextlib.suppress(OSError):
        _forget_key(stage)
    shutil.rmtree(stage, ignore_errors=True)
