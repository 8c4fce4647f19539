"""What a new user hit with the ``sddsf`` command, each through the real command
against a real ``sddsf relay serve`` process on loopback.

* ``init`` never loses the recovery phrase and leaves nothing behind when it
  fails (an existing ``--phrase-out`` file, a wrong relay URL); a device's relay
  URL can be changed, checked against the pinned relay key.
* Data (values, keys, space and device names) is printed as text, never as
  terminal markup, by every command.
* Names and values that are not UTF-8 are refused before anything is created.
* Without a terminal and without ``SDDSF_PASSPHRASE`` a command says what to do.
* The CLI process runs with core dumps disabled.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import test_cli_homes as homes
from livekit import RelayProcess, Relays, free_port, held_port
from test_cli_homes import (
    CLI_TIMEOUT_S,
    PASS,
    Result,
    cli_env,
    failed,
    fingerprint,
    ok,
    ok_json,
    relay_args,
    spawn,
    succeeded,
)

relay = homes.relay  # the module's relay-process fixture


def run_bytes(home: Path, *args: str | bytes, passphrase: str | None = None) -> Result:
    """``sddsf --home HOME ARGS`` where an argument may be raw bytes (not UTF-8)."""
    proc = subprocess.run([sys.executable, "-m", "sddsf", "--home", str(home), *args],
                          env=cli_env(passphrase), cwd=home.parent, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=CLI_TIMEOUT_S, check=False)
    return Result(tuple(str(a) for a in args), proc.returncode,
                  proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


def accounts_on(relay_db: Path) -> int:
    """How many accounts the relay's SQLite database holds."""
    with sqlite3.connect(relay_db) as db:
        return int(db.execute("SELECT COUNT(DISTINCT account_id) FROM registry_entries"
                              ).fetchone()[0])


def relay_db(relay: RelayProcess) -> Path:
    return relay.log_path.parent / "relay.db"


def plain_init(home: Path, url: str, *extra: str) -> str:
    return ok(home, "init", "--relay", url, "--insecure-plaintext-key", *extra)


# ------------------------------------------------------------------ 13.5 / 13.6


def test_init_with_an_existing_phrase_file_creates_nothing(relay: RelayProcess,
                                                           tmp_path: Path) -> None:
    home, phrase = tmp_path / "home", tmp_path / "phrase.txt"
    phrase.write_text("my shopping list\n")
    before = accounts_on(relay_db(relay))
    line = failed(spawn(home, "init", "--relay", relay.base_url, "--phrase-out", str(phrase),
                        "--insecure-plaintext-key").result())
    assert "phrase.txt" in line and "exists" in line and "[usage]" in line, line
    assert "unexpected" not in line
    assert phrase.read_text() == "my shopping list\n"  # not overwritten
    assert not home.exists(), sorted(p.name for p in home.rglob("*"))
    assert accounts_on(relay_db(relay)) == before  # no account without its phrase
    # a directory that does not exist, or a directory: refused before anything too
    for bad in (tmp_path / "no-such-dir" / "phrase.txt", tmp_path):
        line = failed(spawn(home, "init", "--relay", relay.base_url, "--phrase-out", str(bad),
                            "--insecure-plaintext-key").result())
        assert "--phrase-out" in line and "unexpected" not in line, line
    assert not home.exists()
    assert accounts_on(relay_db(relay)) == before
    # the same command with a free path then works, and the phrase is in the file
    phrase.unlink()
    out = plain_init(home, relay.base_url, "--phrase-out", str(phrase))
    assert len(phrase.read_text().split()) == 24
    assert fingerprint(out)
    assert accounts_on(relay_db(relay)) == before + 1


def test_init_against_a_wrong_relay_leaves_nothing_and_can_be_retried(
        relay: RelayProcess, tmp_path: Path) -> None:
    home, phrase = tmp_path / "home", tmp_path / "phrase.txt"
    wrong = f"http://127.0.0.1:{free_port()}"
    line = failed(spawn(home, "init", "--relay", wrong, "--phrase-out", str(phrase),
                        "--insecure-plaintext-key").result())
    assert wrong in line and "[unavailable]" in line, line
    assert "ConnectError" not in line and "nothing was created" in line, line
    assert not home.exists() and not phrase.exists()
    # the retry with the right URL works in the same home
    plain_init(home, relay.base_url, "--phrase-out", str(phrase))
    assert ok_json(home, "status")["relay"] == relay.base_url
    # a passphrase home too (its key file is the marker of a device)
    other = tmp_path / "other"
    failed(spawn(other, "init", "--relay", wrong, passphrase=PASS).result())
    assert not other.exists()
    ok(other, "init", "--relay", relay.base_url, passphrase=PASS)


def test_relay_set_url_checks_the_pinned_relay_key(tmp_path: Path) -> None:
    relays = Relays(tmp_path)
    try:
        args, env = relay_args(tmp_path)
        first = relays.start(*args, env=env)
        home = tmp_path / "home"
        plain_init(home, first.base_url)
        ok(home, "space", "create", "notes")
        ok(home, "put", "notes", "k", "v")
        ok(home, "sync")
        first.stop()
        # the same relay (database and key) moved to another port
        moved = relays.start(*args, env=env)
        assert "cannot reach the relay" in failed(spawn(home, "sync").result())
        out = ok(home, "relay", "set-url", moved.base_url)
        assert moved.base_url in out
        assert ok_json(home, "status")["relay"] == moved.base_url
        ok(home, "put", "notes", "k2", "v2")
        assert ok_json(home, "sync")["pushed"] == 1
        # the same database served with another key (not the relay this device pinned):
        # refused, the URL stays
        impostor_dir = tmp_path / "impostor"
        impostor_dir.mkdir()
        with sqlite3.connect(tmp_path / "relay.db") as src, \
                sqlite3.connect(impostor_dir / "relay.db") as dst:
            src.backup(dst)
        impostor = Relays(impostor_dir).start(
            "--db", f"sqlite:///{impostor_dir / 'relay.db'}",
            env={"SDDSF_RELAY_KEY_HEX": "11" * 32})
        relays.started.append(impostor)
        line = failed(spawn(home, "relay", "set-url", impostor.base_url).result())
        assert "another key" in line and impostor.base_url in line, line
        assert "[tree_head_invalid]" in line, line
        assert ok_json(home, "status")["relay"] == moved.base_url
        # a relay without this account: refused, the URL stays
        empty_dir = tmp_path / "empty"
        empty_dir.mkdir()
        empty = Relays(empty_dir).start("--db", f"sqlite:///{empty_dir / 'relay.db'}",
                                        env={"SDDSF_RELAY_KEY_HEX": "22" * 32})
        relays.started.append(empty)
        line = failed(spawn(home, "relay", "set-url", empty.base_url).result())
        assert "stays" in line and "[not_found]" in line, line
        # an unreachable URL: refused, the URL stays
        line = failed(spawn(home, "relay", "set-url", f"http://127.0.0.1:{free_port()}"
                            ).result())
        assert "cannot reach" in line and "ConnectError" not in line, line
        assert ok_json(home, "status")["relay"] == moved.base_url
    finally:
        relays.stop_all()


# ------------------------------------------------------------------------ 13.9


def test_names_and_values_that_are_not_utf8_are_refused_before_anything(
        relay: RelayProcess, tmp_path: Path) -> None:
    home = tmp_path / "home"
    plain_init(home, relay.base_url)
    ok(home, "space", "create", "s")
    before = ok_json(home, "status")["pending_ops"]
    for args in ((b"put", b"s", b"\xff", b"v"), (b"put", b"s", b"k", b"v\xff"),
                 (b"space", b"create", b"sp\xffce"), (b"get", b"s", b"\xfe"),
                 (b"ls", b"\xff")):
        r = run_bytes(home, *args)
        line = failed(r)
        assert "UTF-8" in line and "[usage]" in line and "unexpected" not in line, line
    # nothing was created or queued: no unnamed space, no pending op
    assert [s["name"] for s in ok_json(home, "space", "list")] == ["s"]
    assert ok_json(home, "status")["pending_ops"] == before
    # a name with control characters is refused too (values may hold any text)
    line = failed(spawn(home, "space", "create", "a\x1b[2Jb").result())
    assert "control character" in line and "[usage]" in line, line
    ok(home, "put", "s", "multi", "line 1\nline 2")
    assert ok_json(home, "get", "s", "multi")["value"] == "line 1\nline 2"
    # init --name is checked before the account exists
    other = tmp_path / "other"
    line = failed(run_bytes(other, b"init", b"--relay", relay.base_url.encode(), b"--name",
                            b"ph\xffne", b"--insecure-plaintext-key"))
    assert "UTF-8" in line, line
    assert not other.exists()


# ----------------------------------------------------------------------- 13.14


def test_without_a_terminal_a_locked_store_says_what_to_do(relay: RelayProcess,
                                                           tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init", "--relay", relay.base_url, passphrase=PASS)
    for args in (("status",), ("space", "list")):
        line = failed(spawn(home, *args).result())  # stdin closed, no SDDSF_PASSPHRASE
        assert "SDDSF_PASSPHRASE" in line and "sddsf unlock" in line, line
        assert "[config]" in line, line


# ----------------------------------------------------------------------- 12.19


def test_the_cli_process_runs_without_core_dumps(relay: RelayProcess, tmp_path: Path) -> None:
    home = tmp_path / "home"
    plain_init(home, relay.base_url)
    watcher = spawn(home, "sync", "--watch")
    try:
        limits = Path(f"/proc/{watcher.proc.pid}/limits")
        deadline = time.monotonic() + CLI_TIMEOUT_S
        line = ""
        while time.monotonic() < deadline and watcher.proc.poll() is None:
            # the limit is set at CLI start; wait until the interpreter got there
            line = next(ln for ln in limits.read_text().splitlines()
                        if ln.startswith("Max core file size"))
            if line.split()[4:6] == ["0", "0"]:
                break
            time.sleep(0.05)
        assert line.split()[4:6] == ["0", "0"], line
    finally:
        watcher.proc.send_signal(signal.SIGINT)
        watcher.result()


def test_core_dump_limit_test_sees_the_limit_of_a_child() -> None:
    """The probe above reads the real limit: a child with a soft limit is seen."""
    proc = subprocess.Popen([sys.executable, "-c", "import resource, time;"
                             "resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); time.sleep(5)"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = Path(f"/proc/{proc.pid}/limits").read_text()
            if "Max core file size        0                    0" in text:
                break
            time.sleep(0.05)
        assert any(ln.split()[4:6] == ["0", "0"] for ln in text.splitlines()
                   if ln.startswith("Max core file size"))
    finally:
        proc.kill()
        proc.wait()



# ----------------------------------------------------------------------- 13.17


def test_status_says_when_the_relay_is_unreachable_and_when_it_last_synced(
        tmp_path: Path) -> None:
    relays = Relays(tmp_path)
    # The test holds the relay's port throughout: once the relay stops, a
    # connection there is refused at once, and no other process can have taken
    # the port (one that accepts and never answers reads as "did not answer").
    with held_port() as port:
        try:
            args, env = relay_args(tmp_path)
            up = relays.start(*args, "--port", str(port), env=env, port=port)
            home = tmp_path / "home"
            plain_init(home, up.base_url)
            info = ok_json(home, "status")
            assert info["relay_reachable"] is True and info["relay_error"] is None
            assert info["last_sync"] is None
            ok(home, "sync")
            synced = ok_json(home, "status")["last_sync"]
            assert synced.endswith("Z") and "T" in synced, synced
            up.stop()
            info = ok_json(home, "status")
            assert info["relay_reachable"] is False, info
            assert "cannot reach the relay" in info["relay_error"], info
            assert "ConnectError" not in info["relay_error"]
            assert info["last_sync"] == synced
            text = ok(home, "status")
            assert "unreachable" in text and f"last successful sync: {synced}" in text, text
        finally:
            relays.stop_all()


def test_vault_put_warns_once_when_the_relay_is_down(tmp_path: Path) -> None:
    relays = Relays(tmp_path)
    try:
        args, env = relay_args(tmp_path)
        up = relays.start(*args, env=env)
        home = tmp_path / "home"
        plain_init(home, up.base_url)

        def vault_put(secret: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "sddsf", "--home", str(home), "vault",
                                   "put", "wifi", "--kind", "password"], input=secret + "\n",
                                  text=True, env=cli_env(), capture_output=True,
                                  timeout=CLI_TIMEOUT_S, check=False)

        assert vault_put("hunter2").returncode == 0  # the vault exists (made online)
        up.stop()
        done = vault_put("hunter3")
        assert done.returncode == 0, done.stderr
        warnings = [ln for ln in done.stderr.splitlines() if ln.startswith("warning:")]
        assert len(warnings) == 1, done.stderr
        assert "ConnectError" not in done.stderr
    finally:
        relays.stop_all()


def test_relay_serve_on_a_missing_postgresql_database_is_one_line(tmp_path: Path) -> None:
    from livekit import postgres_dsn

    base = postgres_dsn().rsplit("/", 1)[0]
    missing = f"{base}/sddsf_cli_no_such_db_{os.getpid()}"
    done = subprocess.run([sys.executable, "-m", "sddsf", "relay", "serve", "--db", missing,
                           "--port", str(free_port())], env=cli_env(), cwd=tmp_path,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, check=False)
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "does not exist" in lines[0], lines
    assert "createdb" in lines[0], lines


def test_recover_from_the_backup_with_the_fingerprint_shown_by_init(relay: RelayProcess,
                                                                   tmp_path: Path) -> None:
    home, phrase = tmp_path / "home", tmp_path / "phrase.txt"
    account = fingerprint(plain_init(home, relay.base_url, "--phrase-out", str(phrase)))
    ok(home, "space", "create", "notes")
    ok(home, "put", "notes", "k", "v")
    ok(home, "sync")
    backup = {"SDDSF_BACKUP_PASSPHRASE": "a long and unique backup passphrase"}

    def run(where: Path, *args: str) -> Result:
        proc = subprocess.run([sys.executable, "-m", "sddsf", "--home", str(where), *args],
                              env=cli_env(None, backup), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                              check=False)
        return Result(args, proc.returncode, proc.stdout, proc.stderr)

    succeeded(run(home, "backup", "enable", "--phrase-file", str(phrase)))
    # the fingerprint as shown, and typed loosely (lower case, spaces for dashes)
    for i, given in enumerate((account, account.lower().replace("-", " "))):
        out = succeeded(run(tmp_path / f"new{i}", "recover", "--relay", relay.base_url,
                            "--passphrase", "--account", given, "--name", f"new{i}",
                            "--insecure-plaintext-key"))
        assert f"Recovered account {account}" in out, out
    # a fingerprint no backup has: one clear line
    other = "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH"
    line = failed(run(tmp_path / "none", "recover", "--relay", relay.base_url, "--passphrase",
                      "--account", other, "--insecure-plaintext-key"))
    assert "no account with this fingerprint" in line and "[not_found]" in line, line
    assert not (tmp_path / "none").exists()
