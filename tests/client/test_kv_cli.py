"""``sddsf put/get/ls/rm`` end to end: device homes and one real ``sddsf relay serve``.

Each command runs in its own process. Two homes write the same key without
syncing in between (offline writes): after both sync, neither value is lost
silently: ``ls`` marks the key on both homes, ``get`` shows both values with the
device that wrote each, and a later ``put`` ends the conflict everywhere.
Values go in from a file (``--from-file``) or stdin (``-``), so a secret need
never be on the command line; ``rm`` removes a key on every home.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import clientkit  # noqa: F401 - puts tests/relay on sys.path for livekit
import pytest
from livekit import RelayProcess, Relays
from test_cli_homes import relay_args
from test_vault_cli import Homes

PASS = "correct horse battery staple"  # noqa: S105 - a test passphrase


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("kv-relay")
    started = Relays(work)
    args, env = relay_args(work)
    try:
        yield started.start(*args, env=env)
    finally:
        started.stop_all()


def two_homes(cli: Homes, relay: RelayProcess, tmp_path: Path) -> tuple[Path, Path]:
    """Home A (laptop) with the space ``notes``, home B (tablet) recovered from it."""
    a, b = tmp_path / "a", tmp_path / "b"
    phrase_file = tmp_path / "phrase.txt"
    cli.ok(a, "init", "--relay", relay.base_url, "--name", "laptop", "--phrase-out",
           str(phrase_file), "--insecure-plaintext-key")
    cli.ok(a, "space", "create", "notes")
    cli.ok(a, "put", "notes", "motd", "hello")
    cli.ok(a, "sync")
    cli.ok(b, "recover", "--relay", relay.base_url, "--phrase-file", str(phrase_file),
           "--name", "tablet", passphrase=PASS)
    return a, b


def test_offline_writes_of_one_key_on_two_homes_are_both_shown(
        relay: RelayProcess, tmp_path: Path) -> None:
    cli = Homes()
    a, b = two_homes(cli, relay, tmp_path)
    cli.ok(a, "put", "notes", "wifi", "from-laptop")
    cli.ok(b, "put", "notes", "wifi", "from-tablet", passphrase=PASS)
    cli.ok(a, "sync")
    cli.ok(b, "sync", passphrase=PASS)
    cli.ok(a, "sync")

    for home, pw in ((a, None), (b, PASS)):
        listing = cli.ok(home, "ls", "notes", passphrase=pw)
        (wifi,) = [x for x in listing.splitlines() if x.startswith("wifi")]
        assert "CONFLICT" in wifi and "2 concurrent values" in wifi, \
            f"one of two concurrent values was dropped without notice: {listing!r}"
        assert "motd = hello" in listing
        got = cli.run(home, "get", "notes", "wifi", passphrase=pw)
        assert got.returncode == 0, got.stderr
        assert sorted(got.stdout.splitlines()) == ["laptop: from-laptop",
                                                   "tablet: from-tablet"]
        assert "2 concurrent values" in got.stderr and "sddsf put notes wifi" in got.stderr
        data = cli.json(home, "get", "notes", "wifi", passphrase=pw)
        assert data["conflict"] is True
        assert sorted((v["author_name"], v["value"]) for v in data["values"]) == [
            ("laptop", "from-laptop"), ("tablet", "from-tablet")]
        assert sorted(cli.json(home, "ls", "notes", passphrase=pw)["wifi"]) == [
            "from-laptop", "from-tablet"]

    # a put on one home keeps one value everywhere
    put = cli.run(b, "put", "notes", "wifi", "-", stdin="from-tablet", passphrase=PASS)
    assert put.returncode == 0 and "replaces 2 concurrent values" in put.stderr, put.stderr
    cli.ok(b, "sync", passphrase=PASS)
    cli.ok(a, "sync")
    assert cli.json(a, "get", "notes", "wifi") == {"key": "wifi", "value": "from-tablet"}
    assert "CONFLICT" not in cli.ok(a, "ls", "notes")


def test_put_reads_values_from_a_file_or_stdin_and_rm_removes_a_key(
        relay: RelayProcess, tmp_path: Path) -> None:
    cli = Homes()
    a, b = two_homes(cli, relay, tmp_path)
    secret_file = tmp_path / "wifi.txt"
    secret_file.write_text("wifi-pass-FROM-FILE\n")
    assert "wifi set" in cli.ok(a, "put", "notes", "wifi", "--from-file", str(secret_file))
    cli.ok(a, "put", "notes", "pin", "-", stdin="2468\n")
    assert cli.ok(a, "get", "notes", "wifi") == "wifi-pass-FROM-FILE\n"
    assert cli.json(a, "get", "notes", "pin") == {"key": "pin", "value": "2468"}
    help_text = " ".join(cli.ok(a, "put", "--help").split())
    assert "--from-file" in help_text and "stdin" in help_text
    assert "process list" in help_text and "shell history" in help_text
    line = cli.fails(a, "put", "notes", "x")
    assert "--from-file" in line and "`-`" in line, line
    line = cli.fails(a, "put", "notes", "x", "v", "--from-file", str(secret_file))
    assert "not both" in line, line
    cli.ok(a, "sync")
    cli.ok(b, "sync", passphrase=PASS)
    assert cli.json(b, "ls", "notes", passphrase=PASS) == {
        "wifi": "wifi-pass-FROM-FILE", "pin": "2468", "motd": "hello"}

    assert "pin removed" in cli.ok(a, "rm", "notes", "pin")
    assert "no key 'pin'" in cli.fails(a, "get", "notes", "pin")
    assert "no key 'pin'" in cli.fails(a, "rm", "notes", "pin")
    assert "pin" not in cli.json(a, "ls", "notes")
    cli.ok(a, "sync")
    cli.ok(b, "sync", passphrase=PASS)
    assert cli.json(b, "ls", "notes", passphrase=PASS) == {
        "wifi": "wifi-pass-FROM-FILE", "motd": "hello"}
    cli.ok(b, "put", "notes", "pin", "-", stdin="1357", passphrase=PASS)  # back again
    assert cli.ok(b, "get", "notes", "pin", passphrase=PASS) == "1357\n"

    # values given on stdin or in a file never appear in another command's output
    for r in cli.results:
        if r.args[:1] in (("get",), ("ls",)):
            continue
        for value in ("wifi-pass-FROM-FILE", "2468", "1357"):
            assert value not in r.stdout and value not in r.stderr, (r.args, value)
