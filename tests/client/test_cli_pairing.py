"""``sddsf device add/join/list/revoke`` across separate homes against a real
``sddsf relay serve`` process."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import test_cli_homes as homes
from livekit import RelayProcess
from test_cli_homes import PASS, failed, spawn, succeeded

relay = homes.relay  # the module's relay-process fixture


def ok_json(home: Path, *args: str, passphrase: str | None = None) -> object:
    return json.loads(succeeded(spawn(home, *args, "--json", passphrase=passphrase).result()))


def wait_for(path: Path, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_pair_list_and_revoke_across_homes(relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone = tmp_path / "laptop", tmp_path / "phone"
    succeeded(spawn(laptop, "init", "--relay", relay.base_url, "--name", "laptop",
                    "--phrase-out", str(tmp_path / "phrase"),
                    "--insecure-plaintext-key").result())
    succeeded(spawn(laptop, "space", "create", "notes").result())
    succeeded(spawn(laptop, "put", "notes", "milk", "1 l").result())  # pushed by `device add`
    code_file = tmp_path / "code"
    adding = spawn(laptop, "device", "add", "--code-out", str(code_file), "--yes",
                   "--timeout", "60")
    code = wait_for(code_file)
    assert stat.S_IMODE(code_file.stat().st_mode) == 0o600
    joined = spawn(phone, "device", "join", code, "--relay", relay.base_url, "--name", "phone",
                   "--yes", "--timeout", "60", passphrase=PASS).result()
    added = adding.result()
    assert "Joined account" in succeeded(joined), joined.stdout
    assert "Added device 'phone'" in succeeded(added)
    # Both screens showed the same five words.
    words = [line.strip() for r in (added, joined) for line in r.stderr.splitlines()
             if line.startswith("    ") and len(line.split()) == 5]
    assert len(words) == 2 and words[0] == words[1], (added.stderr, joined.stderr)
    assert json.loads(succeeded(spawn(phone, "get", "notes", "milk", "--json",
                                      passphrase=PASS).result()))["value"] == "1 l"
    rows = ok_json(laptop, "device", "list")
    assert isinstance(rows, list)
    by_name = {r["name"]: r for r in rows}
    assert by_name["phone"]["status"] == "active" and by_name["phone"]["added_by"] == "laptop"
    assert by_name["laptop"]["this_device"] and by_name["laptop"]["added_by"] == "the account key"
    # A pairing code is single use.
    line = failed(spawn(tmp_path / "again", "device", "join", code, "--relay", relay.base_url,
                        "--name", "x", "--yes", "--timeout", "5",
                        "--insecure-plaintext-key").result())
    assert "closed" in line or "expired" in line
    # Revoke the phone: its writes are refused from then on.
    succeeded(spawn(phone, "put", "notes", "eggs", "12", passphrase=PASS).result())
    succeeded(spawn(phone, "sync", passphrase=PASS).result())
    out = succeeded(spawn(laptop, "device", "revoke", "phone", "--yes").result())
    assert "Revoked 'phone'" in out
    rows = ok_json(laptop, "device", "list")
    assert {r["name"]: r["status"] for r in rows} == {"laptop": "active", "phone": "revoked"}
    assert {r["name"]: r for r in rows}["phone"]["last_seen"] is not None
    succeeded(spawn(phone, "put", "notes", "late", "x", passphrase=PASS).result())  # local
    line = failed(spawn(phone, "sync", passphrase=PASS).result())
    assert "revoked" in line
    succeeded(spawn(laptop, "sync").result())
    assert json.loads(succeeded(spawn(laptop, "get", "notes", "eggs", "--json").result())
                      )["value"] == "12"  # written before the revocation: kept
    line = failed(spawn(laptop, "get", "notes", "late", "--json").result())
    assert "late" in line


def test_join_with_a_typo_or_wrong_code_fails_with_one_line(relay: RelayProcess,
                                                           tmp_path: Path) -> None:
    line = failed(spawn(tmp_path / "x", "device", "join", "AAAA-BBBB", "--relay", relay.base_url,
                        "--name", "x", "--yes", "--insecure-plaintext-key").result())
    assert "not a pairing code" in line
