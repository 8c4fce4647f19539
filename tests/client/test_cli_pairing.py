"""``sddsf device add/join/list/revoke`` across separate homes against a real
``sddsf relay serve`` process."""

from __future__ import annotations

import json
import re
import stat
import time
import urllib.parse
from pathlib import Path

import test_cli_homes as homes
from livekit import RelayProcess, free_port
from mnemonic import Mnemonic
from pairkit import Live, last_error, wait_for_file
from test_cli_homes import PASS, failed, spawn, succeeded

from sddsf.errors import UsageError
from sddsf.protocol import pairing as pp

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


def pair(relay: RelayProcess, approver: Path, home: Path, name: str, tmp_path: Path
         ) -> tuple[str, str]:
    """``device add`` on ``approver`` and ``device join`` on ``home``; their stdouts."""
    code_file = tmp_path / f"code-{name}"
    adding = spawn(approver, "device", "add", "--code-out", str(code_file), "--yes",
                   "--timeout", "60")
    joined = spawn(home, "device", "join", wait_for(code_file), "--relay", relay.base_url,
                   "--name", name, "--yes", "--timeout", "60", "--insecure-plaintext-key")
    return succeeded(adding.result()), succeeded(joined.result())


def test_k_of_n_approval_across_homes(relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone, tablet, watch = (tmp_path / n for n in ("laptop", "phone", "tablet", "watch"))
    succeeded(spawn(laptop, "init", "--relay", relay.base_url, "--name", "laptop",
                    "--phrase-out", str(tmp_path / "phrase"),
                    "--insecure-plaintext-key").result())
    succeeded(spawn(laptop, "space", "create", "notes").result())
    succeeded(spawn(laptop, "put", "notes", "milk", "1 l").result())
    pair(relay, laptop, phone, "phone", tmp_path)
    pair(relay, laptop, tablet, "tablet", tmp_path)
    out = ok_json(laptop, "device", "policy", "--approvals", "2")
    assert isinstance(out, dict) and out["policy"] == {"approvals": 2} and not out["pending"]
    # One device alone can no longer revoke: it proposes.
    out_text = succeeded(spawn(laptop, "device", "revoke", "phone", "--yes").result())
    assert "Proposed revoking 'phone'" in out_text and "1 of 2 approvals" in out_text
    rows = ok_json(tablet, "device", "pending")
    assert isinstance(rows, list) and len(rows) == 1
    assert (rows[0]["action"], rows[0]["have"], rows[0]["need"]) == ("revoke", 1, 2)
    # The phone cannot veto its own revocation; the tablet approves it.
    assert "may not" in failed(spawn(phone, "device", "veto", "phone").result())
    out_text = succeeded(spawn(tablet, "device", "approve", rows[0]["id"][:10],
                               "--yes").result())
    assert "Approved and carried out" in out_text
    assert "revoked" in failed(spawn(phone, "sync").result())
    # Adding a device is a proposal too; the new device waits until approved.
    added, joined = pair(relay, laptop, watch, "watch", tmp_path)
    assert "Proposed adding device 'watch'" in added
    assert "requires approval" in joined
    assert "awaits approval" in failed(spawn(watch, "sync").result())
    assert "Approved and carried out" in succeeded(
        spawn(tablet, "device", "approve", "watch", "--yes").result())
    succeeded(spawn(watch, "sync").result())
    assert json.loads(succeeded(spawn(watch, "get", "notes", "milk", "--json").result())
                      )["value"] == "1 l"
    statuses = {r["name"]: r["status"] for r in ok_json(watch, "device", "list")}
    assert statuses == {"laptop": "active", "phone": "revoked", "tablet": "active",
                        "watch": "active"}


# ------------------------------- Ctrl-C on the joiner never leaves a phantom device


def _laptop(relay: RelayProcess, tmp_path: Path) -> Path:
    laptop = tmp_path / "laptop"
    succeeded(spawn(laptop, "init", "--relay", relay.base_url, "--name", "laptop",
                    "--phrase-out", str(tmp_path / "phrase"),
                    "--insecure-plaintext-key").result())
    return laptop


def _only_the_laptop(laptop: Path, *homes_left: Path) -> None:
    rows = ok_json(laptop, "device", "list")
    assert isinstance(rows, list)
    assert [(r["name"], r["status"]) for r in rows] == [("laptop", "active")], rows
    for home in homes_left:
        assert not (home / "storage-key.json").exists(), f"{home} kept a half-made device"


def _stop(*running: Live) -> None:
    for live in running:
        if live.proc.poll() is None:
            live.proc.kill()
            live.result()


def test_ctrl_c_at_the_joiners_passphrase_prompt_leaves_no_device(relay: RelayProcess,
                                                                  tmp_path: Path) -> None:
    laptop, phone = _laptop(relay, tmp_path), tmp_path / "phone"
    code_file = tmp_path / "code"
    adding = Live(laptop, "device", "add", "--code-out", str(code_file), "--yes",
                  "--timeout", "60")
    # No SDDSF_PASSPHRASE and no plaintext flag: the joiner asks for a passphrase
    # at its terminal, and the person presses Ctrl-C there.
    joining = Live(phone, "device", "join", wait_for_file(code_file), "--relay",
                   relay.base_url, "--name", "phone", "--yes", tty=True)
    try:
        joining.wait_for("Passphrase for this device's store", stream="any")
        joining.interrupt()
        assert last_error(joining.result(), 130).endswith(("aborted", "interrupted"))
        # The approving side never added anything; its person stops it too.
        adding.interrupt()
        assert last_error(adding.result(), 130).endswith(("aborted", "interrupted"))
    finally:
        _stop(joining, adding)
    _only_the_laptop(laptop, phone)


def test_ctrl_c_at_the_joiners_words_prompt_cancels_the_pairing_on_both_sides(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone = _laptop(relay, tmp_path), tmp_path / "phone"
    code_file = tmp_path / "code"
    adding = Live(laptop, "device", "add", "--code-out", str(code_file), "--yes",
                  "--timeout", "20")
    joining = Live(phone, "device", "join", wait_for_file(code_file), "--relay",
                   relay.base_url, "--name", "phone", "--insecure-plaintext-key")
    try:
        joining.wait_for(r"\[y/N\]: $")
        joining.interrupt()
        assert last_error(joining.result(), 130).endswith("aborted")
        line = last_error(adding.result())
        assert "cancelled on the new device" in line, line
    finally:
        _stop(joining, adding)
    _only_the_laptop(laptop, phone)


# ------------------------------------------------ short word codes, the QR link


def test_the_default_code_is_a_short_word_code_and_join_takes_the_qr_uri(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone = _laptop(relay, tmp_path), tmp_path / "phone"
    adding = Live(laptop, "device", "add", "--yes", "--timeout", "60")
    try:
        code = adding.wait_for(r"^ {4}(\d{1,6}(?:-[a-z]{3,8}){3})\s*$").group(1)
        uri = adding.wait_for(r"sddsf://pair\?\S+").group(0)
        parsed = urllib.parse.urlsplit(uri)
        query = urllib.parse.parse_qs(parsed.query)
        assert query == {"relay": [relay.base_url], "code": [code]}, uri
        # The URI alone (what the QR code holds) is enough: no --relay.
        joined = spawn(phone, "device", "join", uri, "--name", "phone", "--yes",
                       "--insecure-plaintext-key").result()
        assert "Joined account" in succeeded(joined), joined
        assert "Added device 'phone'" in succeeded(adding.result())
    finally:
        _stop(adding)


def _mistypes(code: str) -> dict[str, str]:
    """A misspelt word, a wrong word of the list, and a wrong number, each of which
    the checksum (or the word list) catches."""
    number, *words = code.split("-")
    wordlist = Mnemonic("english").wordlist
    misspelt = "-".join([number, words[0][:-1] + ("x" if words[0][-1] != "x" else "y"),
                         *words[1:]])

    def caught(candidate: str) -> bool:
        try:
            pp.decode_code(candidate, wordlist)
        except UsageError:
            return True
        return False

    other_word = next(c for w in wordlist if w != words[1]
                      and caught(c := "-".join([number, words[0], w, *words[2:]])))
    other_number = next(c for n in range(1, 1000) if str(n) != number
                        and caught(c := "-".join([str(n), *words])))
    return {"misspelt": misspelt, "other_word": other_word, "other_number": other_number}


def test_a_mistyped_short_code_is_caught_before_contacting_the_relay(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone = _laptop(relay, tmp_path), tmp_path / "phone"
    code_file = tmp_path / "code"
    adding = Live(laptop, "device", "add", "--code-out", str(code_file), "--yes",
                  "--timeout", "60")
    try:
        code = wait_for_file(code_file)
        assert re.fullmatch(r"\d{1,6}(?:-[a-z]{3,8}){3}", code), code
        nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: contacting it fails
        for kind, typo in _mistypes(code).items():
            line = failed(spawn(tmp_path / kind, "device", "join", typo, "--relay", nowhere,
                                "--name", "x", "--yes", "--insecure-plaintext-key").result())
            assert "cannot reach" not in line and "[usage]" in line, (kind, line)
            if kind == "misspelt":
                assert "is not a pairing word" in line and "did you mean" in line, line
            else:
                assert "typo" in line, (kind, line)
        # The typos touched nothing: the right code still pairs.
        joined = spawn(phone, "device", "join", code, "--relay", relay.base_url, "--name",
                       "phone", "--yes", "--insecure-plaintext-key").result()
        assert "Joined account" in succeeded(joined)
        assert "Added device 'phone'" in succeeded(adding.result())
    finally:
        _stop(adding)
