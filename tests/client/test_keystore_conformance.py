"""Every KeyStore implementation passes the one conformance suite
(sddsf.testing.keystore_conformance); then what is particular to each kind."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail

from sddsf.client import keystore
from sddsf.client.keystore import (
    KEY_FILE,
    KeyringKeyStore,
    KeyStore,
    PassphraseKeyStore,
    PlaintextKeyStore,
    passphrase_source,
)
from sddsf.errors import Code, ConfigError, DecryptError, UnavailableError, UsageError
from sddsf.testing.keystore_conformance import CHECKS, KeyStoreCheck, KeyStoreHarness

PASS = "correct horse battery staple"  # noqa: S105 - a test passphrase


def file_keyring(tmp_path: Path) -> KeyringBackend:
    """A real keyring backend (keyrings.alt's file keyring) kept in ``tmp_path``:
    this machine has no OS keyring, and the user's own must not be touched."""
    alt = pytest.importorskip("keyrings.alt.file",
                              reason="no keyring backend: install the test extra (keyrings.alt)")
    backend = alt.PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring.cfg")
    return backend  # type: ignore[no-any-return]


def homes(tmp_path: Path) -> Callable[[], Path]:
    counter = itertools.count()

    def new_home() -> Path:
        home = tmp_path / f"home{next(counter)}"
        home.mkdir()
        return home
    return new_home


def maker(kind: str, tmp_path: Path) -> Callable[[], KeyStore]:
    if kind == "plaintext":
        return PlaintextKeyStore
    if kind == "passphrase-str":
        return lambda: PassphraseKeyStore(PASS)
    if kind == "passphrase-callable":
        return lambda: PassphraseKeyStore(lambda: PASS)
    backend = file_keyring(tmp_path)
    return lambda: KeyringKeyStore(backend)


KINDS = ["plaintext", "passphrase-str", "passphrase-callable", "keyring"]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
@pytest.mark.parametrize("kind", KINDS)
def test_conformance(kind: str, check: KeyStoreCheck, tmp_path: Path) -> None:
    check(KeyStoreHarness(new=maker(kind, tmp_path), new_home=homes(tmp_path)))


# ------------------------------------------------------------------ passphrase
def test_passphrase_source_takes_a_str_or_a_function() -> None:
    given = passphrase_source(PASS)
    assert given is not None and given() == PASS
    asked = passphrase_source(lambda: "typed")
    assert asked is not None and asked() == "typed"
    assert passphrase_source(None) is None
    with pytest.raises(UsageError):
        passphrase_source(b"bytes")  # type: ignore[arg-type]


def test_a_wrong_passphrase_is_decrypt_failed(tmp_path: Path) -> None:
    key = PassphraseKeyStore(PASS).create(tmp_path)
    with pytest.raises(DecryptError) as caught:
        PassphraseKeyStore("another passphrase").load(tmp_path)
    assert caught.value.code == Code.DECRYPT_FAILED
    assert PassphraseKeyStore(lambda: PASS).load(tmp_path) == key


def test_passphrase_refusals_leave_no_key_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="at least 8"):
        PassphraseKeyStore("short").create(tmp_path)
    with pytest.raises(ConfigError):
        PassphraseKeyStore(None).create(tmp_path)
    assert not (tmp_path / KEY_FILE).exists()
    PassphraseKeyStore(PASS).create(tmp_path)
    with pytest.raises(ConfigError, match="protected by a passphrase"):
        PassphraseKeyStore(None).load(tmp_path)


def test_weaker_stored_kdf_parameters_are_refused(tmp_path: Path) -> None:
    PassphraseKeyStore(PASS).create(tmp_path)
    record = json.loads((tmp_path / KEY_FILE).read_text())
    record["m"] = 1024
    (tmp_path / KEY_FILE).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="weaker KDF"):
        PassphraseKeyStore(PASS).load(tmp_path)


class _Cache:
    def __init__(self, key: bytes) -> None:
        self.key = key

    def get(self, home: Path, record: dict[str, object]) -> bytes | None:
        return self.key


def test_the_key_cache_serves_without_asking(tmp_path: Path) -> None:
    key = PassphraseKeyStore(PASS).create(tmp_path)

    def never() -> str:
        raise AssertionError("the passphrase was asked for")

    keystore.set_key_cache(_Cache(key))
    try:
        assert PassphraseKeyStore(never).load(tmp_path) == key
        with pytest.raises(DecryptError):  # unlock never uses the cache
            PassphraseKeyStore("another passphrase", use_cache=False).load(tmp_path)
    finally:
        keystore.set_key_cache(None)


# --------------------------------------------------------------------- keyring
def test_a_key_gone_from_the_keyring_is_a_config_error(tmp_path: Path) -> None:
    backend = file_keyring(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    KeyringKeyStore(backend).create(home)
    record = json.loads((home / KEY_FILE).read_text())
    assert backend.get_password(record["service"], record["user"]) is not None
    KeyringKeyStore(backend).discard(home)
    assert backend.get_password(record["service"], record["user"]) is None
    (home / KEY_FILE).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="missing from the OS keyring"):
        KeyringKeyStore(backend).load(home)


def test_a_failing_keyring_is_unavailable_and_leaves_nothing(tmp_path: Path) -> None:
    refusing = fail.Keyring()  # type: ignore[no-untyped-call]
    with pytest.raises(UnavailableError) as caught:
        KeyringKeyStore(refusing).create(tmp_path)
    assert caught.value.code == Code.UNAVAILABLE
    assert not (tmp_path / KEY_FILE).exists()


@pytest.mark.parametrize(("field", "value"), [
    ("p", 0), ("p", 1 << 24), ("m", 1 << 40), ("t", 1 << 31), ("t", -1)])
def test_out_of_range_stored_kdf_parameters_are_a_config_error(
        tmp_path: Path, field: str, value: int) -> None:
    """An edited key file with a zero, negative or absurd Argon2 setting is refused
    before any work: a ConfigError, never an argon2 exception or an hour of hashing."""
    PassphraseKeyStore(PASS).create(tmp_path)
    record = json.loads((tmp_path / KEY_FILE).read_text())
    record[field] = value
    (tmp_path / KEY_FILE).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="KDF"):
        PassphraseKeyStore(PASS).load(tmp_path)


def test_a_key_file_that_cannot_be_removed_is_unavailable(tmp_path: Path) -> None:
    """discard raises only SddsfError types: a key file the OS will not remove is
    UnavailableError naming the file, not a bare OSError."""
    home = tmp_path / "home"
    home.mkdir()
    PlaintextKeyStore().create(home)
    (home / KEY_FILE).unlink()
    (home / KEY_FILE).mkdir()  # a directory where the file was: unlink fails
    with pytest.raises(UnavailableError, match=KEY_FILE):
        PlaintextKeyStore().discard(home)
