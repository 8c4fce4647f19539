"""``sddsf vault`` when another home of the account tampers with a record, end to end.

Home A stores a seed with the real ``sddsf`` command; home M (recovered from the
phrase) is then driven as a library :class:`Device` over the same real relay
process and overwrites A's record in place, naming A as its author. Every
``sddsf vault`` command on A keeps showing A's seed and warns on stderr;
``vault alerts`` names the tablet; ``--ack`` stops the warning, not the listing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import clientkit  # noqa: F401 - puts tests/relay on sys.path for livekit
import pycrdt
import pytest
from livekit import RelayProcess, Relays
from mnemonic import Mnemonic
from test_cli_homes import relay_args
from test_vault_cli import Homes

from sddsf.client.device import Device

PASS = "correct horse battery staple"  # noqa: S105 - a test passphrase
PHRASE = Mnemonic("english").to_mnemonic(bytes(range(32)))
ATTACKER_PHRASE = Mnemonic("english").to_mnemonic(bytes(32))


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("vault-alerts-relay")
    started = Relays(work)
    args, env = relay_args(work)
    try:
        yield started.start(*args, env=env)
    finally:
        started.stop_all()


async def swap_in_place(home: Path, name: str, secret: str) -> None:
    """The malicious home rewrites the record of ``name`` in place (same id, same author)."""
    device = Device.open(home, passphrase=lambda: PASS)
    try:
        await device.sync()
        (space,) = [s for s, n in device.spaces() if n == "vault"]
        versions = device.doc(space, "vault").get("versions", type=pycrdt.Map)
        (vid,) = [k for k, raw in versions.items() if json.loads(raw)["name"] == name]
        record = json.loads(versions[vid])
        versions[vid] = json.dumps({**record, "secret": secret, "f": 1}, sort_keys=True)
        device.flush()
        await device.sync()
    finally:
        await device.close()


def test_a_record_swapped_by_another_home_is_refused_and_alerted(
        relay: RelayProcess, tmp_path: Path) -> None:
    cli = Homes()
    a, m = tmp_path / "a", tmp_path / "m"
    phrase_file = tmp_path / "phrase.txt"
    cli.ok(a, "init", "--relay", relay.base_url, "--name", "laptop", "--phrase-out",
           str(phrase_file), "--insecure-plaintext-key")
    cli.ok(a, "vault", "put", "wallet", "--kind", "bip39", stdin=PHRASE)
    cli.ok(m, "recover", "--relay", relay.base_url, "--phrase-file", str(phrase_file),
           "--name", "tablet", passphrase=PASS)
    assert cli.json(a, "vault", "alerts") == []
    asyncio.run(swap_in_place(m, "wallet", ATTACKER_PHRASE))

    got = cli.run(a, "vault", "get", "wallet")
    assert got.returncode == 0 and got.stdout == PHRASE + "\n", got.stdout
    assert "warning: 1 vault record(s) were changed" in got.stderr, got.stderr
    listing = cli.ok(a, "vault", "alerts")
    assert "'wallet': changed in place" in listing and "by tablet" in listing, listing
    (row,) = cli.json(a, "vault", "alerts")
    assert row["what"] == "changed" and row["name"] == "wallet"
    assert "acknowledged 1 alert(s)" in cli.ok(a, "vault", "alerts", "--ack")
    quiet = cli.run(a, "vault", "list")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr
    assert len(cli.json(a, "vault", "alerts")) == 1  # still listed
    for r in cli.results:
        if r.args[:2] != ("vault", "get"):
            assert ATTACKER_PHRASE not in r.stdout + r.stderr and PHRASE not in r.stdout
