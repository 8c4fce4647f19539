"""The one conformance suite for :class:`~sddsf.client.keystore.KeyStore` implementations.

Every check is a plain function taking a :class:`KeyStoreHarness` and asserting
(with :func:`expect`, not ``assert``); an implementation's tests run every entry
of :data:`CHECKS`, each on fresh homes.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sddsf.client.keystore import KEY_FILE, KeyStore
from sddsf.client.store import STORAGE_KEY_SIZE
from sddsf.errors import Code, ConfigError, UsageError
from sddsf.testing.store_conformance import expect_raises

__all__ = ["CHECKS", "KeyStoreCheck", "KeyStoreHarness", "expect"]


@dataclass(frozen=True)
class KeyStoreHarness:
    """What a check gets.

    Attributes:
        new: a new instance of the key store under test, configured alike each
            time (same passphrase, same keyring): what another process would use.
        new_home: a new, empty, existing directory for each call.
    """

    new: Callable[[], KeyStore]
    new_home: Callable[[], Path]


KeyStoreCheck = Callable[[KeyStoreHarness], None]


def expect(condition: object, message: str = "key store contract violated") -> None:
    """Fail the check unless ``condition`` holds (also under ``python -O``)."""
    if not condition:
        raise AssertionError(message)


def check_create_then_load(h: KeyStoreHarness) -> None:
    """create returns a 32-byte key that load returns, from this or a new instance;
    the key file is 0600 and names the store's kind."""
    home = h.new_home()
    keys = h.new()
    key = keys.create(home)
    expect(isinstance(key, bytes) and len(key) == STORAGE_KEY_SIZE, "a 32-byte key")
    expect(keys.load(home) == key, "load returns the created key")
    expect(h.new().load(home) == key, "another instance loads it too")
    path = home / KEY_FILE
    expect(stat.S_IMODE(path.stat().st_mode) == 0o600, "the key file is 0600")
    expect(json.loads(path.read_text())["kind"] == keys.kind, "the file names the kind")


def check_keys_are_random(h: KeyStoreHarness) -> None:
    """Two homes get two different keys."""
    expect(h.new().create(h.new_home()) != h.new().create(h.new_home()), "keys differ")


def check_create_refuses_an_existing_home(h: KeyStoreHarness) -> None:
    """A second create is UsageError and leaves the first key as it was."""
    home = h.new_home()
    key = h.new().create(home)
    before = (home / KEY_FILE).read_bytes()
    expect_raises(UsageError, Code.USAGE, lambda: h.new().create(home))
    expect((home / KEY_FILE).read_bytes() == before, "the key file is unchanged")
    expect(h.new().load(home) == key, "the first key still loads")


def check_load_errors(h: KeyStoreHarness) -> None:
    """No key file, an unreadable one, or one of another kind: ConfigError."""
    home = h.new_home()
    expect_raises(ConfigError, Code.CONFIG, lambda: h.new().load(home))
    (home / KEY_FILE).write_text("{not json")
    expect_raises(ConfigError, Code.CONFIG, lambda: h.new().load(home))
    (home / KEY_FILE).write_text(json.dumps({"kind": "carrier-pigeon"}))
    expect_raises(ConfigError, Code.CONFIG, lambda: h.new().load(home))
    (home / KEY_FILE).write_text(json.dumps(["a list"]))
    expect_raises(ConfigError, Code.CONFIG, lambda: h.new().load(home))


def check_discard(h: KeyStoreHarness) -> None:
    """discard removes the key (load is then ConfigError), is idempotent, and the
    home can take a new, different key."""
    home = h.new_home()
    keys = h.new()
    key = keys.create(home)
    keys.discard(home)
    expect(not (home / KEY_FILE).exists(), "the key file is gone")
    expect_raises(ConfigError, Code.CONFIG, lambda: h.new().load(home))
    keys.discard(home)
    again = h.new().create(home)
    expect(again != key and h.new().load(home) == again, "a new key after discard")


def check_key_not_in_file(h: KeyStoreHarness) -> None:
    """A store that protects the key at rest does not write it in the file."""
    keys = h.new()
    if not keys.protects_at_rest:
        return
    home = h.new_home()
    key = keys.create(home)
    raw = (home / KEY_FILE).read_bytes()
    expect(key not in raw and key.hex().encode() not in raw.lower(),
           "the key is in the key file")


CHECKS: list[KeyStoreCheck] = [
    check_create_then_load,
    check_keys_are_random,
    check_create_refuses_an_existing_home,
    check_load_errors,
    check_discard,
    check_key_not_in_file,
]
