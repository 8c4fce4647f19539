"""Passphrase backup blobs (sddsf.protocol.backup, docs/protocol.md section 19).

Most tests use cheap Argon2id parameters through the explicit, test-only
``minimums=`` argument; one round trip uses the production parameters (64 MiB),
and a test checks that without ``minimums=`` cheap parameters are refused.
"""

from __future__ import annotations

from typing import Any

import pytest

from sddsf import crypto
from sddsf.errors import Code, ContextError, DecodeError, DecryptError, UsageError
from sddsf.protocol import backup as bk
from sddsf.protocol import labels
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.labels import labelled

CHEAP = bk.KdfMinimums(t=1, m_kib=8, p=1)
SECRET = bytes(range(32))
ACCOUNT = bytes([7]) * 32
OTHER = bytes([8]) * 32
SALT = bytes([1]) * 16
NONCE = bytes([2]) * 24
PASS = "correct horse battery staple"  # noqa: S105 - a test passphrase


def cheap(secret: bytes = SECRET, passphrase: str = PASS, account: bytes = ACCOUNT,
          **kw: Any) -> bk.Backup:
    args: dict[str, Any] = {"salt": SALT, "nonce": NONCE, "t": 1, "m_kib": 8, "p": 1}
    args.update(kw)
    return bk.make_backup(secret, passphrase, account, minimums=CHEAP, **args)


def reencode(blob: bytes, **changes: Any) -> bytes:
    value = decode(blob)
    assert isinstance(value, dict)
    value.update(changes)
    return encode(value)


@pytest.fixture
def no_argon(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record (and forbid) every Argon2id call made by the backup module."""
    calls: list[int] = []

    def forbidden(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        raise AssertionError("Argon2id ran with parameters that should have been refused")

    monkeypatch.setattr(bk, "argon2id", forbidden)
    return calls


def test_round_trip_with_production_parameters() -> None:
    """The one real-parameter round trip (two Argon2id runs at 64 MiB)."""
    b = bk.make_backup(SECRET, PASS, ACCOUNT, salt=SALT, nonce=NONCE)
    assert b.kdf == bk.KdfParams(t=3, m_kib=65536, p=4, salt=SALT)
    assert bk.open_backup(b.blob, PASS, ACCOUNT) == SECRET
    assert len(b.verifier) == 32 and "verifier" not in repr(b)


def test_round_trip_and_verifier_with_cheap_parameters() -> None:
    b = cheap()
    assert bk.open_backup(b.blob, PASS, ACCOUNT, minimums=CHEAP) == SECRET
    assert bk.derive_verifier(PASS, b.kdf, minimums=CHEAP) == b.verifier
    assert bk.derive_verifier(PASS + "!", b.kdf, minimums=CHEAP) != b.verifier
    keys = bk.derive_keys(PASS, b.kdf, minimums=CHEAP)
    assert keys.verifier != keys.enc_key and "secret" in repr(keys)
    assert bk.open_backup_with_keys(b.blob, keys, ACCOUNT) == SECRET
    assert bk.verifier_digest(b.verifier) == crypto.blake2b_256(b.verifier)
    # the same inputs give the same blob (no randomness inside)
    assert cheap().blob == b.blob
    assert cheap(salt=bytes([3]) * 16).blob != b.blob


def test_blob_layout_matches_the_spec() -> None:
    """Recompute every step from the primitives, independently of the module."""
    b = cheap()
    value = decode(b.blob)
    assert isinstance(value, dict)
    assert sorted(value) == ["account", "ct", "kdf", "nonce", "v"]
    assert value["v"] == 1 and value["account"] == ACCOUNT and value["nonce"] == NONCE
    assert value["kdf"] == {"alg": "argon2id", "t": 1, "m": 8, "p": 1, "salt": SALT}
    k = crypto.argon2id(PASS.encode(), SALT, time_cost=1, memory_kib=8, parallelism=1)
    enc_key = crypto.hkdf_sha256(k, salt=b"sddsf/v1/backup/key",
                                 info=encode(["sddsf/v1/backup/key"]))
    verifier = crypto.hkdf_sha256(k, salt=b"sddsf/v1/backup/verifier",
                                  info=encode(["sddsf/v1/backup/verifier"]))
    assert verifier == b.verifier
    header = encode({k: v for k, v in value.items() if k != "ct"})
    ad = encode(["sddsf/v1/backup/ad", header])
    assert ad == labelled(labels.BACKUP_AD, header)
    assert crypto.aead_decrypt(enc_key, NONCE, value["ct"], ad) == SECRET
    assert len(value["ct"]) == 48 and len(b.blob) < 200


def test_wrong_passphrase_is_decrypt_failed() -> None:
    b = cheap()
    with pytest.raises(DecryptError, match="wrong passphrase") as info:
        bk.open_backup(b.blob, "incorrect horse battery staple", ACCOUNT, minimums=CHEAP)
    assert info.value.code is Code.DECRYPT_FAILED


@pytest.mark.parametrize(("change", "why"), [
    ({"t": 2}, "t"), ({"m_kib": 32 * 1024}, "m"), ({"p": 0}, "p"), ({"t": 65}, "t"),
    ({"m_kib": 4 * 1024 * 1024 + 1}, "m"), ({"p": 65}, "p"), ({"alg": "scrypt"}, "algorithm"),
    ({"salt": bytes(15)}, "salt"), ({"salt": bytes(65)}, "salt")])
def test_weak_or_absurd_parameters_are_refused_before_deriving(
        change: dict[str, Any], why: str, no_argon: list[int]) -> None:
    good = {"t": 3, "m_kib": 65536, "p": 4, "salt": SALT}
    params = bk.KdfParams(**{**good, **change})
    assert bk.kdf_params_ok(bk.KdfParams(**good))
    assert not bk.kdf_params_ok(params)
    for attempt in (lambda: bk.check_kdf_params(params),
                    lambda: bk.derive_verifier(PASS, params),
                    lambda: bk.derive_keys(PASS, params)):
        with pytest.raises(DecodeError, match=why) as info:
            attempt()
        assert info.value.code is Code.MALFORMED
        assert "backup KDF" in info.value.message
    if "alg" not in change:
        make_args = {"t": params.t, "m_kib": params.m_kib, "p": params.p, "salt": params.salt}
        with pytest.raises(DecodeError, match=why):
            bk.make_backup(SECRET, PASS, ACCOUNT, nonce=NONCE, **make_args)
    assert no_argon == []


def test_cheap_parameters_need_the_explicit_test_override(no_argon: list[int]) -> None:
    """Production paths (no ``minimums=``) refuse what the tests use, also when a
    relay serves a blob made with them; nothing is derived."""
    with pytest.raises(DecodeError, match="weaker than the minimum"):
        bk.make_backup(SECRET, PASS, ACCOUNT, salt=SALT, nonce=NONCE, t=1, m_kib=8, p=1)
    with pytest.raises(DecodeError, match="weaker than the minimum"):
        bk.derive_verifier(PASS, bk.KdfParams(t=1, m_kib=8, p=1, salt=SALT))
    assert no_argon == []


def test_blob_with_weak_parameters_is_refused_before_deriving(
        monkeypatch: pytest.MonkeyPatch) -> None:
    b = cheap()
    calls: list[int] = []
    monkeypatch.setattr(bk, "argon2id", lambda *a, **k: calls.append(1) or bytes(32))
    with pytest.raises(DecodeError, match="weaker than the minimum"):
        bk.open_backup(b.blob, PASS, ACCOUNT)
    huge = reencode(b.blob, kdf={"alg": "argon2id", "t": 3, "m": 2**31, "p": 4, "salt": SALT})
    with pytest.raises(DecodeError, match="exceeds the maximum"):
        bk.open_backup(huge, PASS, ACCOUNT)
    assert calls == []


def test_tampered_blob_does_not_open() -> None:
    b = cheap()
    value = decode(b.blob)
    assert isinstance(value, dict)
    for i in (0, 31, 47):  # a byte of the ciphertext, its last byte, the tag's last byte
        ct = bytearray(value["ct"])
        ct[i] ^= 1
        with pytest.raises(DecryptError):
            bk.open_backup(reencode(b.blob, ct=bytes(ct)), PASS, ACCOUNT, minimums=CHEAP)
    for change in ({"nonce": bytes([9]) * 24}, {"ct": bytes(48)}):
        with pytest.raises(DecryptError):
            bk.open_backup(reencode(b.blob, **change), PASS, ACCOUNT, minimums=CHEAP)
    # other KDF parameters derive another key: the blob does not open
    other_kdf = {"alg": "argon2id", "t": 2, "m": 8, "p": 1, "salt": SALT}
    with pytest.raises(DecryptError):
        bk.open_backup(reencode(b.blob, kdf=other_kdf), PASS, ACCOUNT, minimums=CHEAP)


def test_account_binding() -> None:
    b = cheap()
    with pytest.raises(ContextError, match="another account") as info:
        bk.open_backup(b.blob, PASS, OTHER, minimums=CHEAP)
    assert info.value.code is Code.WRONG_CONTEXT
    # a relay that relabels A's blob as B's: the header is the associated data
    moved = reencode(b.blob, account=OTHER)
    with pytest.raises(DecryptError):
        bk.open_backup(moved, PASS, OTHER, minimums=CHEAP)
    keys = bk.derive_keys(PASS, b.kdf, minimums=CHEAP)
    with pytest.raises(ContextError):
        bk.open_backup_with_keys(b.blob, keys, OTHER)
    other_keys = bk.derive_keys(PASS, bk.KdfParams(t=2, m_kib=8, p=1, salt=SALT),
                                minimums=CHEAP)
    with pytest.raises(DecodeError, match="differ"):
        bk.open_backup_with_keys(b.blob, other_keys, ACCOUNT)


def test_malformed_blobs_are_refused() -> None:
    b = cheap()
    cases: list[tuple[bytes, Code]] = [
        (b"\x00garbage", Code.MALFORMED),
        (reencode(b.blob, extra=1), Code.MALFORMED),
        (reencode(b.blob, v=2), Code.UNSUPPORTED_VERSION),
        (reencode(b.blob, account=bytes(31)), Code.MALFORMED),
        (reencode(b.blob, nonce=bytes(23)), Code.MALFORMED),
        (reencode(b.blob, ct=bytes(47)), Code.MALFORMED),
        (reencode(b.blob, kdf={"alg": "argon2id", "t": 1, "m": 8, "p": 1}), Code.MALFORMED),
        (reencode(b.blob, kdf={"alg": "argon2id", "t": "3", "m": 8, "p": 1, "salt": SALT}),
         Code.MALFORMED),
        (encode([1, 2, 3]), Code.MALFORMED),
        (b.blob + bytes(bk.MAX_BACKUP_BLOB), Code.TOO_LARGE),
    ]
    for blob, code in cases:
        with pytest.raises(DecodeError) as info:
            bk.open_backup(blob, PASS, ACCOUNT, minimums=CHEAP)
        assert info.value.code is code, (blob[:20], info.value)


def test_usage_errors() -> None:
    with pytest.raises(UsageError, match="32 bytes"):
        cheap(secret=bytes(31))
    with pytest.raises(UsageError, match="account id"):
        cheap(account=bytes(16))
    with pytest.raises(UsageError, match="nonce"):
        cheap(nonce=bytes(12))
    with pytest.raises(UsageError, match="non-empty"):
        cheap(passphrase="")
