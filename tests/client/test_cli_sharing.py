"""Sharing a space between three people from the command line: each command is its
own ``sddsf`` process, each person has their own home, against a real ``sddsf
relay serve`` process (SQLite).

Covers ``account fingerprint`` (fingerprint, account code, QR), ``space share``
by fingerprint and by account code, ``space join``, ``space members``, a
reader's refused write, ``space role``, ``space remove`` (the removed person's
next sync says so; what it synced stays readable) and ``space leave``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import clientkit  # noqa: F401 - puts tests/relay on sys.path for livekit
import pytest
from livekit import RelayProcess, Relays
from test_cli_homes import cli_env
from test_cli_recovery import ok, run


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("sharing-relay")
    relays = Relays(work)
    try:
        yield relays.start("--db", f"sqlite:///{work / 'relay.db'}")
    finally:
        relays.stop_all()


def person(relay: RelayProcess, tmp_path: Path, name: str) -> tuple[Path, dict[str, str]]:
    home = tmp_path / name
    ok(home, "init", "--relay", relay.base_url, "--name", f"{name}-laptop",
       "--insecure-plaintext-key")
    return home, json.loads(ok(home, "account", "fingerprint", "--json"))


def test_three_people_share_a_space_from_the_command_line(  # noqa: PLR0915 - one story
        relay: RelayProcess, tmp_path: Path) -> None:
    (alice, a), (bob, b), (carol, c) = (person(relay, tmp_path, n)
                                        for n in ("alice", "bob", "carol"))
    assert re.fullmatch(r"([A-Z2-7]{4}-){7}[A-Z2-7]{4}", a["fingerprint"])
    assert c["account_code"].startswith("sddsf-account-")
    shown = run(alice, "account", "fingerprint", "--qr")
    assert a["account_code"] in shown.stdout and "█" in shown.stderr  # the QR code
    ok(alice, "space", "create", "plans")
    ok(alice, "put", "plans", "where", "the river")
    ok(alice, "sync")

    # Bob by his fingerprint (the relay finds the account, alice's device checks
    # it), Carol by her account code, as a reader.
    out = ok(alice, "space", "share", "plans", "--with", b["fingerprint"])
    join = re.search(r"sddsf space join ([0-9a-f]{32}) --owner (\S+)", out)
    assert join is not None, out
    space_id, owner = join.groups()
    assert owner == a["fingerprint"]
    ok(alice, "space", "share", "plans", "--with", c["account_code"], "--role", "reader")
    ok(bob, "space", "join", space_id, "--owner", a["fingerprint"], "--name", "plans")
    ok(carol, "space", "join", space_id, "--owner", a["account_code"], "--name", "plans")
    assert json.loads(ok(bob, "get", "plans", "where", "--json"))["value"] == "the river"

    ok(bob, "put", "plans", "when", "saturday")
    ok(bob, "sync")
    ok(alice, "sync")
    assert json.loads(ok(alice, "get", "plans", "when", "--json"))["value"] == "saturday"
    shown = run(alice, "get", "plans", "when")  # Bob's signed record: checked, no alarm
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr

    members = json.loads(ok(carol, "space", "members", "plans", "--json"))
    roles = {m["fingerprint"]: (m["role"], m["owner"], m["you"]) for m in members}
    assert roles == {a["fingerprint"]: ("admin", True, False),
                     b["fingerprint"]: ("writer", False, False),
                     c["fingerprint"]: ("reader", False, True)}
    assert {d["name"] for m in members for d in m["devices"]} == {
        "alice-laptop", "bob-laptop", "carol-laptop"}
    # Trust scores are the relay's, of Carol's own devices; every device is verified.
    scores = {d["name"]: d["trust"] for m in members for d in m["devices"]}
    assert isinstance(scores["carol-laptop"], int) and scores["bob-laptop"] is None
    assert all(d["verified"] for m in members for d in m["devices"])

    # A reader's edit stays on its device (the relay would refuse it) ...
    ok(carol, "put", "plans", "who", "carol")
    synced = run(carol, "sync")
    assert synced.returncode == 0 and "is a reader of space 'plans'" in synced.stderr, synced
    ok(alice, "sync")
    assert "who" not in json.loads(ok(alice, "ls", "plans", "--json"))

    # ... and is sent once an admin makes it a writer.
    ok(alice, "space", "role", "plans", c["fingerprint"], "writer")
    ok(carol, "sync")
    ok(alice, "sync")
    assert json.loads(ok(alice, "get", "plans", "who", "--json"))["value"] == "carol"

    # Two people set one key at once: both values stay, each named by its device.
    ok(alice, "put", "plans", "dish", "soup")
    ok(bob, "put", "plans", "dish", "pasta")
    for home in (alice, bob, alice):
        ok(home, "sync")
    shown = run(alice, "get", "plans", "dish")
    assert shown.returncode == 0 and "2 concurrent values" in shown.stderr, shown
    assert set(shown.stdout.splitlines()) == {
        "alice-laptop: soup", f"bob-laptop (account {b['fingerprint'][:9]}): pasta"}

    # Removed, Bob is told and keeps what he had.
    out = ok(alice, "space", "remove", "plans", b["fingerprint"][:9])
    assert "moved to a new key" in out
    ok(alice, "put", "plans", "after", "bob left")
    ok(alice, "sync")
    synced = run(bob, "sync")
    assert synced.returncode == 0, synced.stderr
    assert "no longer shared with this account" in synced.stderr
    assert json.loads(ok(bob, "get", "plans", "when", "--json"))["value"] == "saturday"
    assert "after" not in json.dumps(json.loads(ok(bob, "ls", "plans", "--json")))

    # Carol leaves; Alice's view of the members follows.
    ok(carol, "sync")
    ok(carol, "space", "leave", "plans")
    ok(alice, "sync")
    left = json.loads(ok(alice, "space", "members", "plans", "--json"))
    assert [m["fingerprint"] for m in left] == [a["fingerprint"]]


def test_an_invitation_code_shares_a_space_between_two_homes(relay: RelayProcess,
                                                             tmp_path: Path) -> None:
    (alice, a), (dora, d) = (person(relay, tmp_path, n) for n in ("alice", "dora"))
    ok(alice, "space", "create", "trip")
    ok(alice, "put", "trip", "train", "9:05")
    ok(alice, "sync")
    admin = subprocess.Popen(
        [sys.executable, "-m", "sddsf", "--home", str(alice), "space", "share", "trip",
         "--invite", "--role", "reader", "--yes", "--timeout", "60"],
        env=cli_env(), cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        code = None
        assert admin.stderr is not None
        for line in admin.stderr:
            found = re.fullmatch(r"\s+(\d+(?:-[a-z]+)+)\s*", line)
            if found:
                code = found.group(1)
                break
        assert code is not None, "the admin showed no invitation code"
        joined = ok(dora, "space", "join", code, "--yes", "--name", "trip")
        assert re.search(r"joined space 'trip' \([0-9a-f]{32}\), 2 member\(s\)", joined), joined
        out, err = admin.communicate(timeout=60)
    finally:
        if admin.poll() is None:
            admin.kill()
    assert admin.returncode == 0, err
    assert f"shared 'trip' with {d['fingerprint']} as reader" in out
    assert json.loads(ok(dora, "get", "trip", "train", "--json"))["value"] == "9:05"
    roles = {m["fingerprint"]: m["role"]
             for m in json.loads(ok(alice, "space", "members", "trip", "--json"))}
    assert roles == {a["fingerprint"]: "admin", d["fingerprint"]: "reader"}
