"""The ``sddsf`` command line end to end: three device homes, one real relay process.

Every command runs as its own ``python -m sddsf --home DIR ...`` process against a
``sddsf relay serve`` subprocess on loopback (SQLite in a temp dir). Home A makes
an account and a space, B recovers from the phrase and writes, A converges, C
recovers with ``--revoke-others`` and A is locked out. Failures must exit 1 with
exactly one line on stderr (no traceback): wrong passphrase, ``init`` twice, a
home without a device, an unknown key, and the relay being down (whose offline
edits are pushed once it is back).

Home A keeps its store key in plaintext (``--insecure-plaintext-key``) where the
test is not about the passphrase, to avoid one Argon2id per command;
``recover`` always takes a passphrase, so B and C are passphrase homes.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clientkit  # noqa: F401 - puts tests/relay on sys.path for livekit and relaykit
import pytest
from livekit import RelayProcess, Relays, held_port, relay_env, write_key_file
from mnemonic import Mnemonic

PASS = "correct horse battery staple"  # noqa: S105 - a test passphrase
WRONG = "incorrect horse battery staple"
CLI_TIMEOUT_S = 60
#: What a command prints while another process holds its home's lock.
WAIT_NOTICE = re.compile(r"another sddsf process( \(pid \d+\))? is using this home "
                         r"\(.*\); waiting…$")


def relay_args(work: Path) -> tuple[list[str], dict[str, str]]:
    """``relay serve`` arguments (SQLite in ``work``) and the key-file environment."""
    key = write_key_file(work / "relay.key")
    return ["--db", f"sqlite:///{work / 'relay.db'}"], {"SDDSF_RELAY_KEY_FILE": str(key)}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay for the tests of this module that do not stop it (each makes its own
    account)."""
    work = tmp_path_factory.mktemp("cli-relay")
    started = Relays(work)
    args, env = relay_args(work)
    try:
        yield started.start(*args, env=env)
    finally:
        started.stop_all()


@dataclass
class Result:
    """What one finished command did."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Running:
    args: tuple[str, ...]
    proc: subprocess.Popen[str]

    def result(self) -> Result:
        try:
            out, err = self.proc.communicate(timeout=CLI_TIMEOUT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()
        return Result(self.args, self.proc.returncode, out, err)


def cli_env(passphrase: str | None = None, extra: dict[str, str] | None = None
            ) -> dict[str, str]:
    """The environment of one CLI process: no inherited secrets or home, the
    store passphrase if given, then ``extra``."""
    env = {k: v for k, v in relay_env().items()
           if k not in ("SDDSF_PASSPHRASE", "SDDSF_HOME", "SDDSF_DEBUG",
                        "SDDSF_BACKUP_PASSPHRASE", "SDDSF_SHARES_PASSPHRASE")}
    if passphrase is not None:
        env["SDDSF_PASSPHRASE"] = passphrase
    env.update(extra or {})
    return env


def spawn(home: Path, *args: str, passphrase: str | None = None) -> Running:
    """Start ``sddsf --home HOME ARGS`` in a fresh process (stdin closed: never a prompt)."""
    env = cli_env(passphrase)
    proc = subprocess.Popen([sys.executable, "-m", "sddsf", "--home", str(home), *args],
                            env=env, cwd=home.parent, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return Running(args, proc)


def together(*running: Running) -> list[Result]:
    """Wait for commands started concurrently (read-only ones, or on different homes)."""
    try:
        return [r.result() for r in running]
    finally:
        for r in running:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.communicate()


def succeeded(r: Result) -> str:
    """The stdout of a command that must have succeeded."""
    assert r.returncode == 0, (r.args, r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    return r.stdout


def failed(r: Result) -> str:
    """The one stderr line of a command that must have failed with exit code 1."""
    assert r.returncode == 1, (r.args, r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    # A command that waited for another one on the same home said so first.
    lines = [ln for ln in r.stderr.splitlines() if not WAIT_NOTICE.match(ln)]
    assert len(lines) == 1, (r.args, r.stderr)
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def ok(home: Path, *args: str, passphrase: str | None = None) -> str:
    return succeeded(spawn(home, *args, passphrase=passphrase).result())


def ok_json(home: Path, *args: str, passphrase: str | None = None) -> Any:
    return json.loads(ok(home, *args, "--json", passphrase=passphrase))


def fails(home: Path, *args: str, passphrase: str | None = None) -> str:
    return failed(spawn(home, *args, passphrase=passphrase).result())


def fingerprint(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.startswith("Account fingerprint: "):
            return line.split(": ", 1)[1].strip()
    raise AssertionError(f"no fingerprint in {stdout!r}")


def test_three_homes_converge_and_recovery_revokes_the_others(relay: RelayProcess,
                                                              tmp_path: Path) -> None:
    home_a, home_b, home_c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    phrase = tmp_path / "phrase.txt"
    url = relay.base_url

    # --- home A: account, space, an edit, sync
    out = ok(home_a, "init", "--relay", url, "--name", "laptop", "--phrase-out", str(phrase),
             "--insecure-plaintext-key")
    words = phrase.read_text().split()
    assert len(words) == 24
    assert Mnemonic("english").check(" ".join(words))
    assert stat.S_IMODE(phrase.stat().st_mode) == 0o600
    assert " ".join(words) not in out, "the phrase goes to the file, not to stdout"
    account = fingerprint(out)
    assert "created space 'groceries'" in ok(home_a, "space", "create", "groceries")
    ok(home_a, "put", "groceries", "milk", "2 l")
    assert ok_json(home_a, "status")["pending_ops"] == 2  # the space's name + the edit
    synced = ok_json(home_a, "sync")
    assert synced["pushed"] == 2 and synced["rejected"] == []
    ls, get_json, get_text, nope, status, spaces = together(
        spawn(home_a, "ls", "groceries", "--json"),
        spawn(home_a, "get", "groceries", "milk", "--json"),
        spawn(home_a, "get", "groceries", "milk"),
        spawn(home_a, "get", "groceries", "nope"),
        spawn(home_a, "status", "--json"),
        spawn(home_a, "space", "list", "--json"))
    assert json.loads(succeeded(ls)) == {"milk": "2 l"}
    assert json.loads(succeeded(get_json)) == {"key": "milk", "value": "2 l"}
    assert succeeded(get_text) == "2 l\n"
    line = failed(nope)
    assert "[usage]" in line and "'nope'" in line, line
    info = json.loads(succeeded(status))
    assert info["pending_ops"] == 0
    assert info["device"] == "laptop" and info["store_key"] == "plaintext"
    assert info["account_fingerprint"] == account and info["relay"] == url
    assert info["spaces"] == {"groceries": {"verified_log_size": 2}}
    assert [(d["name"], d["status"]) for d in info["devices"]] == [("laptop", "active")]
    assert info["device_id"].startswith(info["devices"][0]["id"])
    assert [r["name"] for r in json.loads(succeeded(spaces))] == ["groceries"]

    # --- home B: recover from the phrase file (others stay active), read, write
    out = ok(home_b, "recover", "--relay", url, "--phrase-file", str(phrase), "--name",
             "tablet", passphrase=PASS)
    assert f"Recovered account {account}; 1 space(s) readable." in out
    assert ok_json(home_b, "ls", "groceries", passphrase=PASS) == {"milk": "2 l"}
    ok(home_b, "put", "groceries", "eggs", "12", passphrase=PASS)
    assert ok_json(home_b, "sync", passphrase=PASS)["pushed"] == 1

    # --- home A converges through the relay
    synced = ok_json(home_a, "sync")
    assert synced["applied"] == 1 and synced["rejected"] == []
    ls, status = together(spawn(home_a, "ls", "groceries", "--json"),
                          spawn(home_a, "status", "--json"))
    assert json.loads(succeeded(ls)) == {"milk": "2 l", "eggs": "12"}
    assert {d["name"]: d["status"] for d in json.loads(succeeded(status))["devices"]} == {
        "laptop": "active", "tablet": "active"}

    # --- home C: recover and revoke every other device
    out = ok(home_c, "recover", "--relay", url, "--phrase-file", str(phrase), "--name",
             "phone", "--revoke-others", passphrase=PASS)
    assert f"Recovered account {account}; 1 space(s) readable." in out
    sync_a, sync_b, ls_c, status_c = together(
        spawn(home_a, "sync"), spawn(home_b, "sync", passphrase=PASS),
        spawn(home_c, "ls", "groceries", "--json", passphrase=PASS),
        spawn(home_c, "status", "--json", passphrase=PASS))
    for r in (sync_a, sync_b):
        line = failed(r)
        assert "revoked" in line or "unauthenticated" in line, line
    assert json.loads(succeeded(ls_c)) == {"milk": "2 l", "eggs": "12"}
    info = json.loads(succeeded(status_c))
    assert info["store_key"] == "passphrase" and info["pending_ops"] == 0
    assert info["device"] == "phone" and info["account_fingerprint"] == account
    assert {d["name"]: d["status"] for d in info["devices"]} == {
        "laptop": "revoked", "tablet": "revoked", "phone": "active"}


def test_wrong_passphrase_init_twice_and_no_device(relay: RelayProcess,
                                                   tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = ok(home, "init", "--relay", relay.base_url, "--name", "desk", passphrase=PASS)
    # without --phrase-out the phrase is shown, once, on stdout
    shown = [ln.strip() for ln in out.splitlines() if len(ln.split()) == 24]
    assert len(shown) == 1 and Mnemonic("english").check(shown[0]), out
    assert out.count(shown[0]) == 1 and "shown only once" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no phrase file
    ok(home, "space", "create", "notes", passphrase=PASS)
    ok(home, "put", "notes", "k", "v", passphrase=PASS)
    before = {p.name: p.read_bytes() for p in home.iterdir() if p.is_file()}

    # a wrong passphrase: exit 1, one line naming the passphrase, nothing written
    results = together(*(spawn(home, *args, passphrase=WRONG) for args in (
        ("ls", "notes"), ("put", "notes", "k", "w"), ("sync",), ("status", "--json"))))
    for r in results:
        line = failed(r)
        assert line == "error: wrong passphrase for this device [decrypt_failed]", line
    assert {p.name: p.read_bytes() for p in home.iterdir() if p.is_file()} == before
    right, twice, twice_plain, *no_device = together(
        spawn(home, "ls", "notes", "--json", passphrase=PASS),
        spawn(home, "init", "--relay", relay.base_url, passphrase=PASS),
        spawn(home, "init", "--relay", relay.base_url, "--insecure-plaintext-key"),
        *(spawn(tmp_path / "nothing-here", *args, passphrase=PASS)
          for args in (("ls", "notes"), ("sync",), ("status", "--json"))))
    # ... the right passphrase still opens it, with the edit made before
    assert json.loads(succeeded(right)) == {"k": "v"}
    # init into a home that already holds a device
    for r in (twice, twice_plain):
        line = failed(r)
        assert "already holds a device" in line and "[usage]" in line, line
    assert json.loads((home / "storage-key.json").read_text())["kind"] == "passphrase"
    # a home without a device says to run `sddsf init`
    for r in no_device:
        line = failed(r)
        assert "no device in" in line and "sddsf init" in line and "[config]" in line, line
    assert not (tmp_path / "nothing-here").exists()


def test_relay_down_then_back_pushes_the_offline_edits(tmp_path: Path) -> None:
    relays = Relays(tmp_path)
    # The port stays held while the relay is down: refused at once, and free for
    # no other process (held_port), so the relay comes back on it.
    with held_port() as port:
        try:
            args, env = relay_args(tmp_path)
            serve = [*args, "--port", str(port)]
            relay = relays.start(*serve, env=env, port=port)
            home, other = tmp_path / "a", tmp_path / "b"
            phrase = tmp_path / "phrase.txt"
            ok(home, "init", "--relay", relay.base_url, "--name", "laptop", "--phrase-out",
               str(phrase), "--insecure-plaintext-key")
            ok(home, "space", "create", "groceries")
            ok(home, "put", "groceries", "milk", "2 l")
            assert ok_json(home, "sync")["pushed"] == 2

            relay.stop()
            assert relay.proc.poll() is not None
            ok(home, "put", "groceries", "bread", "1")  # offline-first: works without a relay
            ok(home, "put", "groceries", "milk", "1 l")
            ls, sync_text, sync_json, status = together(
                spawn(home, "ls", "groceries", "--json"), spawn(home, "sync"),
                spawn(home, "sync", "--json"), spawn(home, "status", "--json"))
            assert json.loads(succeeded(ls)) == {"milk": "1 l", "bread": "1"}
            for r in (sync_text, sync_json):
                line = failed(r)
                assert "cannot reach the relay" in line and "[unavailable]" in line, line
            assert json.loads(succeeded(status))["pending_ops"] == 2  # kept, not sent

            back = relays.start(*serve, env=env, port=port)  # same port, database and key
            synced = ok_json(home, "sync")
            assert synced == {"pushed": 2, "pulled": 2, "applied": 0, "rejected": [],
                              "snapshots_loaded": 0, "skipped": [], "read_only": False,
                              "pending": 0}
            info = ok_json(home, "status")
            assert info["pending_ops"] == 0
            assert info["spaces"] == {"groceries": {"verified_log_size": 4}}

            # another home sees the edits made offline (converged through the relay)
            ok(other, "recover", "--relay", back.base_url, "--phrase-file", str(phrase),
               "--name", "tablet", passphrase=PASS)
            assert ok_json(other, "ls", "groceries", passphrase=PASS) == {"milk": "1 l",
                                                                          "bread": "1"}
        finally:
            relays.stop_all()
        assert all(r.proc.poll() is not None for r in relays.started)
