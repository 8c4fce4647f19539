"""``sddsf encryption-policy show|reset`` and the relay's published minimums, end to end.

A real ``sddsf relay serve`` publishes a hostile encryption policy (rotate every
second, Argon2id t = 4); each command is its own process. The person sees what
the relay published and what this device applies (clamped to the documented
floors), can forget the merged values, and ``backup enable`` derives with at
least the published KDF minimums.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import clientkit  # noqa: F401 - puts tests/relay on sys.path for livekit and relaykit
import pytest
from livekit import RelayProcess, Relays, write_key_file
from test_cli_homes import ok, ok_json
from test_cli_recovery import ok as ok_env

BACKUP_PASS = "a long and unique backup passphrase"  # noqa: S105 - a test passphrase


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("encpolicy-relay")
    policy = work / "policy.toml"
    policy.write_text("[encryption]\nmax_epoch_age_s = 1\nmin_kdf_t = 4\n")
    relays = Relays(work)
    key = write_key_file(work / "relay.key")
    try:
        yield relays.start("--db", f"sqlite:///{work / 'relay.db'}",
                           env={"SDDSF_RELAY_KEY_FILE": str(key),
                                "SDDSF_RELAY_POLICY_FILE": str(policy)})
    finally:
        relays.stop_all()


def test_show_and_reset_the_encryption_policy(hostile: RelayProcess, tmp_path: Path) -> None:
    home = tmp_path / "desk"
    ok(home, "init", "--relay", hostile.base_url, "--name", "desk", "--phrase-out",
       str(tmp_path / "phrase.txt"), "--insecure-plaintext-key")
    ok(home, "space", "create", "notes")
    ok(home, "sync")
    shown = ok_json(home, "encryption-policy", "show")
    assert shown["published"]["max_epoch_age_s"] == 1
    assert shown["effective"]["max_epoch_age_s"] == shown["limits"]["max_epoch_age_s"] >= 3600
    assert shown["effective"]["min_kdf_t"] == 4
    assert "max_epoch_age_s" in shown["clamped"]
    text = ok(home, "encryption-policy", "show")
    assert "clamped" in text and "max_epoch_age_s" in text
    assert "forgot" in ok(home, "encryption-policy", "reset")
    assert ok_json(home, "encryption-policy", "show")["effective"] is None
    ok(home, "sync")
    assert ok_json(home, "encryption-policy", "show")["effective"]["max_epoch_age_s"] >= 3600


def test_backup_enable_applies_the_published_kdf_minimums(hostile: RelayProcess,
                                                          tmp_path: Path) -> None:
    home, phrase = tmp_path / "desk", tmp_path / "phrase.txt"
    ok(home, "init", "--relay", hostile.base_url, "--name", "desk", "--phrase-out", str(phrase),
       "--insecure-plaintext-key")
    ok(home, "sync")
    out = ok_env(home, "backup", "enable", "--phrase-file", str(phrase),
                 env={"SDDSF_BACKUP_PASSPHRASE": BACKUP_PASS})
    assert "Argon2id t=4" in out, out
