"""``sddsf vault`` end to end: two device homes, one real ``sddsf relay serve`` process.

Each command runs in its own process. Home A makes the account and stores,
generates and reads secrets; home B recovers from the phrase and reads them.
With the relay stopped both write the same item (offline: a warning, not a
failure); once it is back the conflict shows on both homes, is resolved on one
and is gone on both. A deletion made offline is restored from the other home.
No command but ``vault get`` ever prints a secret, and failures are one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clientkit  # noqa: F401 - puts tests/relay on sys.path for livekit
from livekit import Relays, free_port, write_key_file
from mnemonic import Mnemonic
from test_cli_homes import cli_env

from sddsf.crypto import Ed25519SigningKey, secp256k1_public_key

PASS = "correct horse battery staple"  # noqa: S105 - a test passphrase
PHRASE = Mnemonic("english").to_mnemonic(bytes(range(32)))
BAD_PHRASE = " ".join([*PHRASE.split()[:-1], "zoo"])


@dataclass
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Homes:
    """Runs CLI commands and keeps every output, to check none leaks a secret."""

    def __init__(self) -> None:
        self.results: list[Result] = []

    def run(self, home: Path, *args: str, stdin: str = "", passphrase: str | None = None,
            ) -> Result:
        proc = subprocess.run([sys.executable, "-m", "sddsf", "--home", str(home), *args],
                              input=stdin, capture_output=True, text=True,
                              env=cli_env(passphrase),
                              cwd=home.parent, timeout=60, check=False)
        result = Result(args, proc.returncode, proc.stdout, proc.stderr)
        self.results.append(result)
        return result

    def ok(self, home: Path, *args: str, stdin: str = "", passphrase: str | None = None,
           warns: bool = False) -> str:
        r = self.run(home, *args, stdin=stdin, passphrase=passphrase)
        assert r.returncode == 0, (r.args, r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert ("warning: not synced" in r.stderr) == warns, r.stderr
        return r.stdout

    def json(self, home: Path, *args: str, passphrase: str | None = None) -> Any:
        return json.loads(self.ok(home, *args, "--json", passphrase=passphrase))

    def fails(self, home: Path, *args: str, stdin: str = "",
              passphrase: str | None = None) -> str:
        r = self.run(home, *args, stdin=stdin, passphrase=passphrase)
        assert r.returncode == 1, (r.args, r.returncode, r.stdout, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        return lines[0]


def by_author(item: dict[str, Any], name: str) -> str:
    (version,) = [v["version"] for v in item["versions"] if v["author_name"] == name]
    return str(version)


def store_generate_and_read(cli: Homes, a: Path, tmp_path: Path) -> list[str]:
    """Home A stores (stdin, file), generates each kind and reads back; the secrets."""
    assert "stored 'mail' (password" in cli.ok(a, "vault", "put", "mail", "--kind",
                                                "password", stdin="pw-ORIGINAL-1\n")
    seed_file = tmp_path / "seed.txt"
    seed_file.write_text(PHRASE + "\n")
    cli.ok(a, "vault", "put", "seed", "--kind", "bip39", "--from-file", str(seed_file))
    out = cli.ok(a, "vault", "generate", "ed", "--kind", "ed25519")
    ed_public = out.split("public key: ")[1].strip()
    k1 = cli.json(a, "vault", "generate", "k1", "--kind", "secp256k1")
    words_out = cli.ok(a, "vault", "generate", "words", "--kind", "bip39")
    assert "24-word BIP39 phrase as 'words'" in words_out
    ed_secret = cli.ok(a, "vault", "get", "ed").strip()
    k1_secret = cli.json(a, "vault", "get", "k1")["secret"]
    words = cli.ok(a, "vault", "get", "words").strip()
    assert Ed25519SigningKey.from_seed(bytes.fromhex(ed_secret)).public.raw.hex() == ed_public
    assert secp256k1_public_key(bytes.fromhex(k1_secret)).hex() == k1["public_key"]
    assert len(words.split()) == 24 and Mnemonic("english").check(words)
    assert cli.ok(a, "vault", "get", "seed") == PHRASE + "\n"
    return [ed_secret, k1_secret, words]


def refuse_invalid_input(cli: Homes, a: Path) -> None:
    """One line each, helpful, without the secret."""
    line = cli.fails(a, "vault", "put", "bad", "--kind", "bip39", stdin=BAD_PHRASE)
    assert "checksum does not match" in line and "[usage]" in line
    line = cli.fails(a, "vault", "put", "bad", "--kind", "ed25519", stdin="zz" * 32)
    assert "not hex" in line
    assert "the password is empty" in cli.fails(a, "vault", "put", "x", "--kind", "password")
    assert "unknown secret kind 'pgp'" in cli.fails(a, "vault", "put", "x", "--kind", "pgp",
                                                    stdin="x")
    assert "no secret named 'nope'" in cli.fails(a, "vault", "get", "nope")


def resolve_the_conflict(cli: Homes, a: Path, b: Path) -> None:
    """Both homes list the offline conflict; A keeps B's version; gone on both."""
    (item,) = cli.json(a, "vault", "conflicts")
    assert item["name"] == "mail" and item["conflict"] and len(item["versions"]) == 2
    from_b = by_author(item, "tablet")
    assert by_author(item, "laptop") != from_b
    text = cli.ok(b, "vault", "conflicts", passphrase=PASS)
    assert "mail: 2 versions" in text and from_b[:12] in text
    line = cli.fails(a, "vault", "get", "mail")
    assert "2 conflicting versions" in line and "vault resolve mail --keep" in line
    assert cli.ok(a, "vault", "get", "mail", "--version", from_b[:8]) == "pw-FROM-B\n"
    assert "resolved 'mail'" in cli.ok(a, "vault", "resolve", "mail", "--keep", from_b[:8])
    assert cli.json(b, "vault", "conflicts", passphrase=PASS) == []
    assert cli.json(a, "vault", "conflicts") == []
    assert cli.ok(b, "vault", "get", "mail", passphrase=PASS) == "pw-FROM-B\n"
    history = cli.json(a, "vault", "history", "mail")
    assert [v["author_name"] for v in history].count("laptop") == 3 and len(history) == 4


def test_vault_across_two_homes_with_offline_conflict(tmp_path: Path) -> None:
    relays = Relays(tmp_path)
    cli = Homes()
    a, b = tmp_path / "a", tmp_path / "b"
    try:
        port = free_port()
        key = write_key_file(tmp_path / "relay.key")
        serve = ["--db", f"sqlite:///{tmp_path / 'relay.db'}", "--port", str(port)]
        env = {"SDDSF_RELAY_KEY_FILE": str(key)}
        relay = relays.start(*serve, env=env, port=port)
        phrase_file = tmp_path / "phrase.txt"
        cli.ok(a, "init", "--relay", relay.base_url, "--name", "laptop", "--phrase-out",
               str(phrase_file), "--insecure-plaintext-key")
        # reading an absent vault creates nothing
        assert cli.json(a, "vault", "list") == []
        assert "no secret named 'nope'" in cli.fails(a, "vault", "rm", "nope")
        assert cli.json(a, "space", "list") == []
        generated = store_generate_and_read(cli, a, tmp_path)
        refuse_invalid_input(cli, a)

        # --- home B recovers the account and reads the vault
        cli.ok(b, "recover", "--relay", relay.base_url, "--phrase-file", str(phrase_file),
               "--name", "tablet", passphrase=PASS)
        listed = cli.json(b, "vault", "list", passphrase=PASS)
        assert {i["name"]: i["kind"] for i in listed} == {
            "mail": "password", "seed": "bip39", "ed": "ed25519", "k1": "secp256k1",
            "words": "bip39"}
        assert cli.ok(b, "vault", "get", "mail", passphrase=PASS) == "pw-ORIGINAL-1\n"

        # --- relay down: both homes write the same item, A deletes another
        relay.stop()
        cli.ok(a, "vault", "put", "mail", "--kind", "password", stdin="pw-FROM-A",
               warns=True)
        cli.ok(b, "vault", "put", "mail", "--kind", "password", stdin="pw-FROM-B",
               passphrase=PASS, warns=True)
        assert "restore words" in cli.ok(a, "vault", "rm", "words", warns=True)

        # --- relay back: B pushes; the conflict shows on both homes and is resolved
        relays.start(*serve, env=env, port=port)
        cli.ok(b, "sync", passphrase=PASS)
        resolve_the_conflict(cli, a, b)

        # --- A's offline deletion reached B, which restores it
        assert "words" not in [i["name"] for i in cli.json(b, "vault", "list",
                                                            passphrase=PASS)]
        deleted = cli.json(b, "vault", "list", "--deleted", passphrase=PASS)
        assert [i["deleted"] for i in deleted if i["name"] == "words"] == [True]
        assert "restored 'words'" in cli.ok(b, "vault", "restore", "words", passphrase=PASS)
        assert cli.ok(a, "vault", "get", "words").strip() == generated[2]
        assert "purged 0 item(s)" in cli.ok(a, "vault", "purge")
    finally:
        relays.stop_all()

    # --- only `vault get` ever printed a secret
    secrets = ["pw-ORIGINAL-1", "pw-FROM-A", "pw-FROM-B", PHRASE, BAD_PHRASE, "zz" * 32,
               *generated]
    for r in cli.results:
        if r.args[:2] == ("vault", "get"):
            continue
        for secret in secrets:
            assert secret not in r.stdout and secret not in r.stderr, (r.args, secret)
