"""``sddsf recovery split`` and ``sddsf backup enable|disable`` end to end: each
command is its own process against a real ``sddsf relay serve`` (SQLite).

The home keeps its store key in plaintext (no Argon2id per command); the only
real-parameter Argon2id runs are ``backup enable`` and the recovery of the
secret from the relay with :func:`sddsf.recovery.fetch_backup_secret`.

"""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import clientkit  # noqa: F401 - puts tests/relay on sys.path for livekit and relaykit
import httpx
import pytest
from livekit import RelayProcess, Relays, write_key_file
from test_cli_homes import cli_env

from sddsf import recovery
from sddsf.errors import AuthenticationError
from sddsf.protocol.identity import AccountKeys

BACKUP_PASS = "a long and unique backup passphrase"  # noqa: S105 - a test passphrase
SHARES_PASS = "SHARES PASSPHRASE"  # noqa: S105 - a test passphrase
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("recovery-relay")
    relays = Relays(work)
    key = write_key_file(work / "relay.key")
    try:
        yield relays.start("--db", f"sqlite:///{work / 'relay.db'}",
                           env={"SDDSF_RELAY_KEY_FILE": str(key)})
    finally:
        relays.stop_all()


def run(home: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """``sddsf --home HOME ARGS`` in a fresh process (stdin closed: never a prompt)."""
    return subprocess.run([sys.executable, "-m", "sddsf", "--home", str(home), *args],
                          env=cli_env(extra=env), cwd=home.parent, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def ok(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    r = run(home, *args, env=env)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    return r.stdout


def fails(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """The one ``error: ...`` line of a command that exits 1."""
    r = run(home, *args, env=env)
    assert r.returncode == 1, (args, r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def new_home(relay: RelayProcess, tmp_path: Path, name: str) -> tuple[Path, Path, bytes]:
    home, phrase = tmp_path / name, tmp_path / f"{name}-phrase.txt"
    ok(home, "init", "--relay", relay.base_url, "--name", name, "--phrase-out", str(phrase),
       "--insecure-plaintext-key")
    return home, phrase, recovery.secret_from_phrase(phrase.read_text())


def test_recovery_split_writes_or_shows_shares(relay: RelayProcess, tmp_path: Path) -> None:
    home, phrase, secret = new_home(relay, tmp_path, "laptop")
    out_dir = tmp_path / "shares"
    out = ok(home, "recovery", "split", "--threshold", "2", "--shares", "3",
             "--phrase-file", str(phrase), "--out-dir", str(out_dir))
    files = sorted(out_dir.iterdir())
    assert [f.name for f in files] == ["share-1.txt", "share-2.txt", "share-3.txt"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o700
    assert "any 2 of the 3 shares recover the account" in out
    shares = [recovery.read_words_file(f, kind="share") for f in files]
    assert not any(s in out for s in shares), "the shares go to the files, not to stdout"
    for pair in ((0, 1), (1, 2), (0, 2)):
        assert recovery.combine_shares([shares[i] for i in pair]) == secret
    # a second run into the same directory overwrites nothing
    line = fails(home, "recovery", "split", "--phrase-file", str(phrase), "--out-dir",
                 str(out_dir))
    assert "already exists" in line and "[usage]" in line, line
    assert [recovery.read_words_file(f, kind="share") for f in files] == shares

    # on stdout, protected by a passphrase, 3 of 5
    out = ok(home, "recovery", "split", "--threshold", "3", "--shares", "5", "--passphrase",
             "--phrase-file", str(phrase), env={"SDDSF_SHARES_PASSPHRASE": SHARES_PASS})
    lines = out.splitlines()
    shown = [lines[i + 1].strip() for i, ln in enumerate(lines) if ln.startswith("Share ")]
    assert len(shown) == 5 and all(len(s.split()) == 33 for s in shown)
    assert "together with the passphrase" in out
    assert recovery.combine_shares(shown[2:], passphrase=SHARES_PASS) == secret
    assert recovery.combine_shares(shown[:3]) != secret  # the passphrase is needed

    # refusals: a phrase of another account, a broken phrase file, a bad threshold
    _, other_phrase, _ = new_home(relay, tmp_path, "other")
    line = fails(home, "recovery", "split", "--phrase-file", str(other_phrase))
    assert "belongs to account" in line and "[usage]" in line, line
    broken = tmp_path / "broken.txt"
    words = phrase.read_text().split()
    broken.write_text(" ".join([*words[:6], "qqqzz", *words[7:]]))
    line = fails(home, "recovery", "split", "--phrase-file", str(broken))
    assert str(broken) in line and "word 7" in line and "[usage]" in line, line
    assert "qqqzz" not in line
    line = fails(home, "recovery", "split", "--threshold", "1", "--phrase-file", str(phrase))
    assert "threshold of 1" in line, line


def test_backup_enable_recover_and_disable(relay: RelayProcess, tmp_path: Path) -> None:
    home, phrase, secret = new_home(relay, tmp_path, "desk")
    line = fails(home, "backup", "enable", "--phrase-file", str(phrase),
                 env={"SDDSF_BACKUP_PASSPHRASE": "too short"})
    assert "at least 12 characters" in line, line
    out = ok(home, "backup", "enable", "--phrase-file", str(phrase),
             env={"SDDSF_BACKUP_PASSPHRASE": BACKUP_PASS})
    assert "Argon2id t=3, m=64 MiB, p=4" in out
    shown = next(ln.rsplit(" ", 1)[1] for ln in out.splitlines()
                 if ln.startswith("Account id"))
    account_id = recovery.parse_account_id(shown)
    assert f"sddsf recover --relay {relay.base_url} --passphrase --account {shown}" in out
    assert account_id == AccountKeys.from_secret(secret).account_id

    async def fetch(passphrase: str) -> bytes:
        return await recovery.fetch_backup_secret(relay.base_url, account_id, passphrase,
                                                  transport=httpx.AsyncHTTPTransport())

    assert asyncio.run(fetch(BACKUP_PASS)) == secret
    with pytest.raises(AuthenticationError, match="wrong passphrase"):
        asyncio.run(fetch(BACKUP_PASS.upper()))

    assert "deleted" in ok(home, "backup", "disable")
    assert "no passphrase backup" in ok(home, "backup", "disable")
    _, other_phrase, _ = new_home(relay, tmp_path, "stranger")
    line = fails(home, "backup", "enable", "--phrase-file", str(other_phrase),
                 env={"SDDSF_BACKUP_PASSPHRASE": BACKUP_PASS})
    assert "belongs to account" in line, line


def test_recover_from_two_of_three_shares_and_from_the_passphrase_backup(
        relay: RelayProcess, tmp_path: Path) -> None:
    home, phrase, _ = new_home(relay, tmp_path, "lost-laptop")
    ok(home, "space", "create", "notes")
    ok(home, "put", "notes", "wifi", "hunter2")
    ok(home, "sync")
    ok(home, "recovery", "split", "--threshold", "2", "--shares", "3",
       "--phrase-file", str(phrase), "--out-dir", str(tmp_path / "shares"))
    out = ok(home, "backup", "enable", "--phrase-file", str(phrase),
             env={"SDDSF_BACKUP_PASSPHRASE": BACKUP_PASS})
    account = next(ln.rsplit(" ", 1)[1] for ln in out.splitlines()
                   if ln.startswith("Account id"))
    # Every device lost: recover from shares 1 and 3 on a new home.
    tablet = tmp_path / "tablet"
    ok(tablet, "recover", "--relay", relay.base_url, "--shares",
       str(tmp_path / "shares" / "share-1.txt"), "--shares",
       str(tmp_path / "shares" / "share-3.txt"), "--name", "tablet",
       "--insecure-plaintext-key")
    assert "wifi = hunter2" in ok(tablet, "ls", "notes")
    # One share is not enough, and says so.
    line = fails(tmp_path / "x", "recover", "--relay", relay.base_url, "--shares",
                 str(tmp_path / "shares" / "share-2.txt"), "--insecure-plaintext-key")
    assert "[usage]" in line, line
    # From the passphrase backup, on another new home; a wrong passphrase is refused.
    line = fails(tmp_path / "y", "recover", "--relay", relay.base_url, "--passphrase",
                 "--account", account, "--insecure-plaintext-key",
                 env={"SDDSF_BACKUP_PASSPHRASE": "not the passphrase at all"})
    assert "wrong passphrase" in line, line
    watch = tmp_path / "watch"
    ok(watch, "recover", "--relay", relay.base_url, "--passphrase", "--account", account,
       "--name", "watch", "--revoke-others", "--insecure-plaintext-key",
       env={"SDDSF_BACKUP_PASSPHRASE": BACKUP_PASS})
    assert "wifi = hunter2" in ok(watch, "ls", "notes")
    # Exactly one source is required.
    line = fails(tmp_path / "z", "recover", "--relay", relay.base_url, "--phrase-file",
                 str(phrase), "--passphrase", "--account", account)
    assert "exactly one of" in line, line
