"""Recovery helpers (sddsf.recovery): the BIP39 phrase, SLIP-39 shares, phrase and
share files, account ids, and what the backup client does with a relay's KDF
parameters (a malicious relay's weak or absurd ones are refused before any
derivation, and nothing else is requested)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from mnemonic import Mnemonic

from sddsf import recovery
from sddsf.client.relay_client import RelayClient
from sddsf.errors import DecodeError, UsageError
from sddsf.protocol import backup as bk
from sddsf.protocol.identity import AccountKeys
from sddsf.wire import b64

SECRET = bytes(range(32))
SHARES_PASS = "TREZOR"  # noqa: S105 - a test passphrase
ACCOUNT = AccountKeys.from_secret(SECRET).account_id


def test_phrase_round_trip_and_normalisation() -> None:
    phrase = recovery.phrase_from_secret(SECRET)
    assert len(phrase.split()) == 24 and Mnemonic("english").check(phrase)
    assert recovery.secret_from_phrase(phrase) == SECRET
    messy = "\n  " + "  ".join(w.upper() for w in phrase.split()) + " \t\n"
    assert recovery.secret_from_phrase(messy) == SECRET
    assert recovery.phrase_from_secret(bytes(16)).split()[-1] == "about"
    with pytest.raises(UsageError, match="16, 20, 24, 28 or 32 bytes"):
        recovery.phrase_from_secret(bytes(33))


def test_phrase_errors_are_clear_and_never_echo_words() -> None:
    words = recovery.phrase_from_secret(SECRET).split()
    misspelt = [*words[:4], "qqqzz", *words[5:]]
    with pytest.raises(UsageError, match="word 5 of the recovery phrase is not in the BIP39") \
            as info:
        recovery.secret_from_phrase(" ".join(misspelt))
    assert "qqqzz" not in str(info.value)
    with pytest.raises(UsageError, match="has 24 words, this one has 23"):
        recovery.secret_from_phrase(" ".join(words[:-1]))
    with pytest.raises(UsageError, match="has 24 words, this one has 12"):
        recovery.secret_from_phrase(recovery.phrase_from_secret(bytes(16)))
    swapped = [words[1], words[0], *words[2:]]
    if swapped != words:
        with pytest.raises(UsageError, match="checksum does not match"):
            recovery.secret_from_phrase(" ".join(swapped))
    last = "zoo" if words[-1] != "zoo" else "zone"
    with pytest.raises(UsageError, match="checksum"):
        recovery.secret_from_phrase(" ".join([*words[:-1], last]))
    assert recovery.secret_from_phrase(recovery.phrase_from_secret(bytes(16)),
                                       words=None) == bytes(16)


def test_secret_must_belong_to_the_account() -> None:
    recovery.check_secret_account(SECRET, ACCOUNT)
    with pytest.raises(UsageError, match=r"belongs to account .* not to this device's"):
        recovery.check_secret_account(bytes(32), ACCOUNT)


def test_shares_split_and_combine() -> None:
    shares = recovery.split_shares(SECRET, 2, 3)
    assert len(shares) == 3 and all(len(s.split()) == 33 for s in shares)
    for pair in ((0, 1), (1, 2), (0, 2)):
        assert recovery.combine_shares([shares[i] for i in pair]) == SECRET
    assert recovery.combine_shares(["  " + shares[2].upper() + "\n", shares[0]]) == SECRET
    protected = recovery.split_shares(SECRET, 3, 5, passphrase=SHARES_PASS)
    assert recovery.combine_shares(protected[1:4], passphrase=SHARES_PASS) == SECRET
    # SLIP-39 has no passphrase check: another passphrase gives another secret
    assert recovery.combine_shares(protected[:3], passphrase=SHARES_PASS.lower()) != SECRET
    with pytest.raises(UsageError, match="do not recover"):
        recovery.combine_shares(shares[:1])
    with pytest.raises(UsageError, match="do not recover"):
        recovery.combine_shares([shares[0], protected[0]])
    words = shares[0].split()
    bad = " ".join([*words[:-1], "academic" if words[-1] != "academic" else "acid"])
    with pytest.raises(UsageError, match="checksum"):
        recovery.combine_shares([bad, shares[1]])
    with pytest.raises(UsageError, match="no shares"):
        recovery.combine_shares([])
    with pytest.raises(UsageError, match="printable ASCII"):
        recovery.split_shares(SECRET, 2, 3, passphrase="p\u00e4ssword")  # noqa: S106
    with pytest.raises(UsageError, match="threshold of 1"):
        recovery.split_shares(SECRET, 1, 3)
    with pytest.raises(UsageError, match="threshold <= shares"):
        recovery.split_shares(SECRET, 4, 3)


def test_read_words_file(tmp_path: Path) -> None:
    phrase = recovery.phrase_from_secret(SECRET)
    good = tmp_path / "phrase.txt"
    good.write_text(phrase.upper().replace(" ", "\n") + "\n")
    assert recovery.read_words_file(good) == phrase
    cases = {
        "missing.txt": None,
        "empty.txt": " \n\n",
        "short.txt": " ".join(phrase.split()[:20]),
        "binary.txt": b"\xff\xfe\x00\x01",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(UsageError) as info:
            recovery.read_words_file(path)
        assert str(path) in info.value.message, info.value.message
    with pytest.raises(UsageError, match="cannot read"):
        recovery.read_words_file(tmp_path)  # a directory
    share = recovery.split_shares(SECRET, 2, 3)[0]
    share_file = tmp_path / "share-1.txt"
    share_file.write_text(share + "\n")
    assert recovery.read_words_file(share_file, kind="share") == share
    with pytest.raises(UsageError, match="does not hold one SLIP-39 share"):
        recovery.read_words_file(good, kind="share")  # 24 words is not a share length
    with pytest.raises(UsageError, match="phrase"):
        recovery.read_words_file(share_file)  # a share is not a phrase


def test_account_id_formats() -> None:
    text = recovery.format_account_id(ACCOUNT)
    assert len(text) == 64 and recovery.parse_account_id(f"  {text}\n") == ACCOUNT
    assert recovery.parse_account_id(text.upper()) == ACCOUNT
    assert recovery.parse_account_id(b64(ACCOUNT)) == ACCOUNT
    for bad in ("", "xyz", text[:-2], "g" * 64, b64(bytes(31)), "+" * 44):
        with pytest.raises(UsageError, match="64 hex digits"):
            recovery.parse_account_id(bad)


def test_passphrase_normalisation() -> None:
    composed, decomposed = "caf\u00e9 au lait!", "cafe\u0301 au lait!"
    assert composed != decomposed
    assert recovery.normalize_passphrase(composed) == recovery.normalize_passphrase(decomposed)
    assert recovery.normalize_passphrase(" x ") == " x "  # spaces are kept


# ------------------------------------------------- the client against a relay


def relay_serving(kdf: dict[str, Any], seen: list[str]) -> httpx.MockTransport:
    """A relay that answers the KDF request with ``kdf`` and records every path."""
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path.endswith("/backup/kdf"):
            return httpx.Response(200, json={"kdf": kdf})
        return httpx.Response(200, json={"blob": b64(b"x")})
    return httpx.MockTransport(handler)


@pytest.mark.parametrize(("kdf", "why"), [
    ({"alg": "argon2id", "t": 1, "m": 8, "p": 1}, "weaker than the minimum"),
    ({"alg": "argon2id", "t": 3, "m": 32768, "p": 4}, "weaker than the minimum"),
    ({"alg": "argon2id", "t": 3, "m": 2**32 - 1, "p": 4}, "exceeds the maximum"),
    ({"alg": "argon2id", "t": 100_000, "m": 65536, "p": 4}, "exceeds the maximum"),
    ({"alg": "argon2id", "t": 3, "m": 65536, "p": 1000}, "exceeds the maximum"),
    ({"alg": "argon2d", "t": 3, "m": 65536, "p": 4}, "not allowed"),
    ({"alg": "argon2id", "t": 3.5, "m": 65536, "p": 4}, "malformed backup KDF"),
    ({"alg": "argon2id", "t": True, "m": 65536, "p": 4}, "malformed backup KDF"),
    ({"alg": "argon2id", "m": 65536, "p": 4}, "malformed backup KDF"),
])
async def test_malicious_relay_kdf_is_refused_before_deriving(
        kdf: dict[str, Any], why: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(bk, "argon2id", lambda *a, **k: calls.append(1) or bytes(32))
    seen: list[str] = []
    body = {**kdf, "salt": b64(bytes(16))}
    with pytest.raises(DecodeError, match=why):
        await recovery.fetch_backup_secret("http://relay.test", ACCOUNT, "passphrase here",
                                           transport=relay_serving(body, seen))
    assert calls == [], "Argon2id ran on parameters the client must refuse"
    assert seen == [f"/v1/accounts/{b64(ACCOUNT)}/backup/kdf"], "no verifier was sent"


async def test_enable_backup_checks_before_uploading(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(bk, "argon2id", lambda *a, **k: calls.append(1) or bytes(32))
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return httpx.Response(500)

    async with RelayClient("http://relay.test",
                           transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UsageError, match="at least 12 characters"):
            await recovery.enable_backup(client, ACCOUNT, SECRET, "short pass")
        with pytest.raises(UsageError, match="belongs to account"):
            await recovery.enable_backup(client, ACCOUNT, bytes(32), "a long enough passphrase")
    assert calls == [] and sent == []
    assert bk.KdfMinimums(t=3, m_kib=65536, p=1) == bk.PRODUCTION_MINIMUMS
