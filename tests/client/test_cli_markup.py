"""Data is text, never markup, in every command (issue 13 item 8).

One account whose every name and value is hostile: rich markup (``[/]``,
``[bold]x``), emoji codes, and, in the name of a device added by another
program (not through the CLI, which refuses it), terminal escapes and a fake
second line. Every command that prints data runs through the real ``sddsf``
command against a real relay, in text and ``--json`` form: it must succeed,
print the markup literally, and never pass a control character to the
terminal. A last test walks the click command tree so that a command added
later must be listed here (covered, or exempt with a reason).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import test_cli_homes as homes
from livekit import RelayProcess
from test_cli_homes import cli_env, ok, ok_json, spawn, succeeded

from sddsf.cli import cli
from sddsf.client.device import Device
from sddsf.protocol.encoding import encode

relay = homes.relay  # the module's relay-process fixture

DEVICE = "[/]evil [bold]x :smile:"
OTHER = "\x1b[2J\x1b[31mphone[/]\ndevice laptop (000000000000): revoked"
SPACE = "[red]groceries[/]"
KEY = "[/]"
VALUE = "[bold]x"
ITEM = "[/]item [link=http://x]y"

# Every leaf command, by its path: the arguments that make it print data.
COVERED: dict[str, list[tuple[str, ...]]] = {
    "status": [()],
    "space list": [()],
    "space policy": [(SPACE,)],
    "ls": [(SPACE,)],
    "get": [(SPACE, KEY)],
    "sync": [()],
    "device list": [()],
    "device pending": [()],
    "device policy": [()],
    "audit": [(), ("--verify",)],
    "alerts": [("--all",)],
    "vault list": [()],
    "vault history": [(ITEM,)],
    "vault conflicts": [()],
    "vault get": [(ITEM,)],
    "vault alerts": [()],
    "account fingerprint": [()],
    "space members": [(SPACE,)],
    "peers": [()],
}
# Commands that print no data of the account, or are run by the setup below.
EXEMPT = {
    "demo": "its own fixed data", "init": "run by the setup", "recover": "tested in "
    "test_cli_homes; prints a fingerprint", "space create": "run by the setup",
    "put": "run by the setup", "relay serve": "a server", "relay fsck": "a relay database",
    "relay set-url": "prints URLs", "web": "a server; prints its URL",
    "bridge": "a server; prints through sync --watch's view (covered by sync) and its "
    "URL; test_bridge checks its output",
    "device add": "pairing (test_cli_pairing)",
    "device join": "pairing (test_cli_pairing)", "device revoke": "run by the setup",
    "device approve": "prints a proposal (as device pending)", "device veto": "as approve",
    "recovery split": "prints shares", "backup enable": "prints ids",
    "backup disable": "no data", "vault put": "run by the setup", "vault rm": "as put",
    "vault restore": "as put", "vault generate": "as put", "vault resolve": "as put",
    "vault purge": "as put", "vault share": "as put (test_vault_share)", "unlock": "no data",
    "lock": "no data", "rm": "as put",
    "encryption-policy show": "the relay's signed numbers only",
    "encryption-policy reset": "no data",
    "relay backup": "a relay database", "relay restore": "a relay database",
    "relay backup-keygen": "prints key file paths",
    **dict.fromkeys(("space share", "space join", "space role", "space remove", "space leave"),
                    "changes a shared space's membership; prints fingerprints, ids and the "
                    "space's name (test_cli_sharing)"),
}


def leaves(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            out += leaves(command, path + " ")
        else:
            out.append(path)
    return out


def test_every_command_is_covered_or_exempt() -> None:
    missing = sorted(set(leaves(cli)) - set(COVERED) - set(EXEMPT))
    assert not missing, f"commands that print data but are not tested for markup: {missing}"
    assert not (set(COVERED) | set(EXEMPT)) - set(leaves(cli)), "stale entries"


async def add_hostile_device(home: Path, url_home: Path) -> None:
    """A second device whose name holds terminal escapes (made by the library, as
    another program could)."""
    laptop = Device.open(url_home, passphrase=None)
    try:
        other = await Device.add_local(laptop, home, OTHER, passphrase=None,
                                       insecure_plaintext=True)
        await other.close()
        await laptop.sync()
    finally:
        await laptop.close()


async def add_peer_rows(home: Path) -> None:
    """Peer rows as a watcher stores them: the hostile device seen by mDNS."""
    laptop = Device.open(home, passphrase=None)
    try:
        other = next(r for r in laptop.registry().active_devices()
                     if r.device_id != laptop.device_id)
        fake = "12D3KooWFakeFakeFake"
        laptop.store.put("peers", other.device_id, encode(
            [fake, [f"/ip4/127.0.0.1/tcp/1/p2p/{fake}"], True, "mdns", 1_700_000_000_000]))
        laptop.store.put("peers", b"self", encode(["12D3KooWSelf", [], False, "self", 0]))
    finally:
        await laptop.close()


def run_vault_put(home: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "sddsf", "--home", str(home), "vault", "put",
                           ITEM, "--kind", "password"], input=VALUE + "\n", text=True,
                          env=cli_env(), capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def hostile_home(relay: RelayProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("markup")
    home = work / "laptop"
    ok(home, "init", "--relay", relay.base_url, "--name", DEVICE, "--insecure-plaintext-key")
    ok(home, "space", "create", SPACE)
    ok(home, "put", SPACE, KEY, VALUE)
    ok(home, "put", SPACE, "emoji :smile:", ":smile: [/]")
    ok(home, "sync")
    asyncio.run(add_hostile_device(work / "phone", home))
    run_vault_put(home)
    asyncio.run(add_peer_rows(home))
    ok(home, "device", "policy", "--approvals", "2")
    other = next(d for d in ok_json(home, "device", "list") if not d["this_device"])
    assert other["name"] == OTHER
    # an open proposal (made by the device with the hostile name) for `device pending`
    assert "Proposed" in ok(home, "device", "policy", "--veto-window", "60")
    return home


@pytest.mark.parametrize("path", sorted(COVERED))
def test_markup_in_data_is_printed_as_text(hostile_home: Path, path: str) -> None:
    for args in COVERED[path]:
        for as_json in (False, True):
            argv = (*path.split(), *args, *(("--json",) if as_json else ()))
            if as_json and path in ("audit",) and "--verify" in args:
                continue
            result = spawn(hostile_home, *argv).result()
            out = succeeded(result)
            assert "unexpected" not in result.stderr, result.stderr
            assert "\x1b" not in out and "\x1b" not in result.stderr, (argv, out)
            if as_json:
                check_json_formats(json.loads(out))
            elif "--verify" not in args:
                check_text_output(path, out)


ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
HEX = re.compile(r"^[0-9a-f]+$")


def check_json_formats(data: object, key: str = "") -> None:
    """One id format (full hex) and one time format (ISO 8601 UTC) everywhere."""
    if isinstance(data, dict):
        for k, v in data.items():
            assert not k.endswith("_ms"), f"a time in milliseconds: {k}={v}"
            check_json_formats(v, k)
    elif isinstance(data, list):
        for v in data:
            check_json_formats(v, key)
    elif isinstance(data, str):
        if key == "at" or key.endswith("_at") or key in ("last_seen", "last_sync",
                                                          "expires", "unlocked_until"):
            assert ISO.match(data), (key, data)
        if key == "id" or key.endswith("_id") or key in ("version", "author"):
            assert HEX.match(data) and len(data) in (32, 64), (key, data)


def check_text_output(path: str, out: str) -> None:
    expected = {
        "status": [DEVICE, "\\x1b[2J"], "space list": [SPACE], "space policy": [SPACE],
        "ls": [f"{KEY} = {VALUE}", ":smile: [/]"], "get": [VALUE],
        "device list": [DEVICE, "\\x1b[2J\\x1b[31mphone[/]\\ndevice laptop"],
        "vault list": [ITEM], "vault history": [], "vault get": [VALUE],
        "audit": [DEVICE], "device pending": [DEVICE], "space members": [SPACE],
        "peers": ["\\x1b[2J\\x1b[31mphone[/]\\ndevice laptop"],
    }.get(path, [])
    for text in expected:
        assert text in out, (path, text, out)
    # the fake line in the other device's name never becomes a line of its own
    assert not any(line.startswith("device laptop (000000000000)") for line in out.splitlines())
