"""Identities (sddsf.protocol.identity) and the crypto wrappers (sddsf.crypto).

Covers: device and account id derivation (deterministic, distinct, domain
separated), fingerprint format, AccountKeys.from_secret determinism; the
Ed25519 key policy (low-order, mixed-order and non-canonical keys refused with
``bad_key``; S >= L and other signature tampering refused with
``sig_invalid``); X25519 validation (zero, small-order and u >= 2^255-19
refused); sealed boxes interoperating with libsodium's crypto_box_seal in both
directions; XChaCha20-Poly1305 tamper detection; BLAKE2b equal to libsodium's;
HKDF-SHA256 against RFC 5869; SHA-256 known answer.
"""

from __future__ import annotations

import re

import nacl.bindings as sodium
import nacl.encoding
import nacl.hash
import pytest
from hypothesis import given
from hypothesis import strategies as st

from factories import ACCOUNT, D1, D2, OTHER_ACCOUNT, account, seed
from sddsf.crypto import (
    Ed25519PublicKey,
    Ed25519SigningKey,
    aead_decrypt,
    aead_encrypt,
    blake2b_256,
    constant_time_equal,
    hkdf_sha256,
    random_bytes,
    seal_open,
    sha256,
    validate_x25519_public,
    x25519,
)
from sddsf.errors import Code, DecryptError, KeyValidationError, SignatureError, UsageError
from sddsf.protocol.identity import (
    AccountKeys,
    AccountPublic,
    DeviceKeys,
    DevicePublic,
    account_id_of,
    device_id_of,
    fingerprint,
)
from sddsf.testing.seeded import seal_seeded

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493

ED25519_TORSION = [
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
]

X25519_SMALL_ORDER = [
    "0000000000000000000000000000000000000000000000000000000000000000",  # 0
    "0100000000000000000000000000000000000000000000000000000000000000",  # 1
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",  # order 8
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",  # order 8
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p - 1, order 2
]


def assert_bad_key(exc: pytest.ExceptionInfo[KeyValidationError]) -> None:
    assert exc.value.code is Code.BAD_KEY


# ------------------------------------------------------------------ identities


def test_device_id_is_deterministic_32_bytes_and_matches_public() -> None:
    again = DeviceKeys.from_seeds(seed(0x11), seed(0x81))  # the seeds of factories.D1
    assert len(D1.device_id) == 32
    assert D1.device_id == device_id_of(D1.signing.public.raw)
    assert D1.public.device_id == D1.device_id
    assert again.device_id == D1.device_id


def test_device_ids_differ_between_devices() -> None:
    assert D1.device_id != D2.device_id


def test_device_and_account_ids_are_domain_separated() -> None:
    key = D1.signing.public.raw
    assert device_id_of(key) != account_id_of(key)


def test_device_keys_refuse_identical_seeds() -> None:
    with pytest.raises(UsageError):
        DeviceKeys.from_seeds(seed(1), seed(1))


def test_device_public_from_keys_validates_both_keys() -> None:
    good = D1.public
    assert DevicePublic.from_keys(good.signing_key.raw, good.kx_key) == good
    with pytest.raises(KeyValidationError) as info:
        DevicePublic.from_keys(bytes(32), good.kx_key)
    assert_bad_key(info)
    with pytest.raises(KeyValidationError) as info:
        DevicePublic.from_keys(good.signing_key.raw, bytes(32))
    assert_bad_key(info)


def test_fingerprint_is_eight_groups_of_four_base32() -> None:
    fp = ACCOUNT.public.fingerprint
    assert re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){7}", fp)
    assert fp == fingerprint(ACCOUNT.account_id)


def test_fingerprints_differ_for_different_accounts() -> None:
    assert ACCOUNT.public.fingerprint != OTHER_ACCOUNT.public.fingerprint


def test_fingerprint_covers_160_bits() -> None:
    base = bytes(32)
    for i in range(20):  # a change in any of the first 20 bytes shows
        changed = bytearray(base)
        changed[i] = 1
        assert fingerprint(bytes(changed)) != fingerprint(base)


def test_account_keys_from_secret_are_deterministic() -> None:
    a, b = AccountKeys.from_secret(seed(1)), AccountKeys.from_secret(seed(1))
    assert a.signing.public == b.signing.public
    assert a.recovery.public == b.recovery.public
    assert a.account_id == b.account_id == a.public.account_id


def test_different_secrets_give_different_keys() -> None:
    a, b = account(1), account(2)
    assert a.signing.public != b.signing.public
    assert a.recovery.public != b.recovery.public
    assert a.account_id != b.account_id


def test_account_id_is_derived_once_per_public_identity(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Registry states, key packages and memberships read the account id many
    times per sync: it is derived when the public identity is built, not on
    every read."""
    from sddsf.protocol import identity

    pub = AccountPublic.from_keys(ACCOUNT.public.signing_key.raw, ACCOUNT.public.recovery_key)
    derived: list[bytes] = []
    real = identity.account_id_of
    monkeypatch.setattr(identity, "account_id_of",
                        lambda key: derived.append(key) or real(key))
    assert [pub.account_id for _ in range(3)] == [account_id_of(pub.signing_key.raw)] * 3
    assert derived == []  # read three times: derived when built, before the patch
    again = AccountPublic.from_keys(pub.signing_key.raw, pub.recovery_key)
    assert again == pub and again.account_id == pub.account_id and hash(again) == hash(pub)
    assert derived == [pub.signing_key.raw]  # built once more: derived once more
    assert "account_id" not in repr(pub)


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_account_secret_must_be_32_bytes(size: int) -> None:
    with pytest.raises(UsageError):
        AccountKeys.from_secret(bytes(size))


def test_account_public_from_keys_refuses_bad_keys() -> None:
    pub = ACCOUNT.public
    assert AccountPublic.from_keys(pub.signing_key.raw, pub.recovery_key) == pub
    with pytest.raises(KeyValidationError):
        AccountPublic.from_keys(bytes.fromhex(ED25519_TORSION[0]), pub.recovery_key)
    with pytest.raises(KeyValidationError):
        AccountPublic.from_keys(pub.signing_key.raw, bytes.fromhex(X25519_SMALL_ORDER[1]))


def test_reprs_do_not_leak_secrets() -> None:
    for obj, secret in [(D1, D1.signing.seed), (ACCOUNT, ACCOUNT.signing.seed),
                        (D1.signing, D1.signing.seed), (D1.kx, D1.kx.secret)]:
        assert secret.hex() not in repr(obj)


# --------------------------------------------------------------------- Ed25519


def test_valid_public_key_is_accepted() -> None:
    raw = D1.signing.public.raw
    assert Ed25519PublicKey.from_bytes(raw).raw == raw


@pytest.mark.parametrize("hex_", ED25519_TORSION)
def test_low_order_public_keys_are_refused(hex_: str) -> None:
    with pytest.raises(KeyValidationError) as info:
        Ed25519PublicKey.from_bytes(bytes.fromhex(hex_))
    assert_bad_key(info)


@pytest.mark.parametrize("k", range(19))
@pytest.mark.parametrize("sign", [0, 0x80])
def test_non_canonical_public_keys_are_refused(k: int, sign: int) -> None:
    raw = bytearray((P + k).to_bytes(32, "little"))
    raw[31] |= sign
    with pytest.raises(KeyValidationError) as info:
        Ed25519PublicKey.from_bytes(bytes(raw))
    assert_bad_key(info)


@pytest.mark.parametrize("torsion", ED25519_TORSION[1:])
def test_mixed_order_public_keys_are_refused(torsion: str) -> None:
    mixed = sodium.crypto_core_ed25519_add(D1.signing.public.raw, bytes.fromhex(torsion))
    assert mixed != D1.signing.public.raw
    with pytest.raises(KeyValidationError) as info:
        Ed25519PublicKey.from_bytes(mixed)
    assert_bad_key(info)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_public_key_of_wrong_length_is_refused(size: int) -> None:
    with pytest.raises(KeyValidationError) as info:
        Ed25519PublicKey.from_bytes(bytes([9]) * size)
    assert_bad_key(info)


def test_signature_verifies_and_is_deterministic() -> None:
    sig = D1.sign(b"message")
    assert sig == D1.sign(b"message")
    assert len(sig) == 64
    D1.signing.public.verify(b"message", sig)
    assert D1.signing.public.is_valid_signature(b"message", sig)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m, s: (m + b"!", s),
        lambda m, s: (m, s[:63]),
        lambda m, s: (m, s + b"\x00"),
        lambda m, s: (m, bytes([s[0] ^ 1]) + s[1:]),
        lambda m, s: (m, s[:32] + bytes([s[32] ^ 1]) + s[33:]),
        lambda m, s: (m, s[:32] + (int.from_bytes(s[32:], "little") + L).to_bytes(32, "little")),
        lambda m, s: (m, bytes(64)),
    ],
    ids=["other-message", "truncated", "extended", "R-flip", "S-flip", "S-plus-L", "zeros"],
)
def test_tampered_signatures_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    message, sig = mutate(b"message", D1.sign(b"message"))
    with pytest.raises(SignatureError) as info:
        D1.signing.public.verify(message, sig)
    assert info.value.code is Code.SIG_INVALID
    assert not D1.signing.public.is_valid_signature(message, sig)


def test_signature_by_another_key_is_refused() -> None:
    with pytest.raises(SignatureError):
        D1.signing.public.verify(b"message", D2.sign(b"message"))


def test_signing_seed_must_be_32_bytes() -> None:
    with pytest.raises(UsageError):
        Ed25519SigningKey.from_seed(bytes(31))


# ---------------------------------------------------------------------- X25519


def test_valid_x25519_public_key_is_accepted() -> None:
    assert validate_x25519_public(D1.kx.public) == D1.kx.public


@pytest.mark.parametrize("hex_", X25519_SMALL_ORDER)
def test_small_order_x25519_keys_are_refused(hex_: str) -> None:
    with pytest.raises(KeyValidationError) as info:
        validate_x25519_public(bytes.fromhex(hex_))
    assert_bad_key(info)


@pytest.mark.parametrize("u", [P, P + 1, P + 9, 2**255 - 1, 2**255, 2**256 - 1])
def test_non_canonical_x25519_keys_are_refused(u: int) -> None:
    with pytest.raises(KeyValidationError) as info:
        validate_x25519_public(u.to_bytes(32, "little"))
    assert_bad_key(info)


def test_x25519_high_bit_set_is_refused() -> None:
    raw = bytearray(D1.kx.public)
    raw[31] |= 0x80
    with pytest.raises(KeyValidationError):
        validate_x25519_public(bytes(raw))


@pytest.mark.parametrize("size", [0, 31, 33])
def test_x25519_key_of_wrong_length_is_refused(size: int) -> None:
    with pytest.raises(KeyValidationError):
        validate_x25519_public(bytes([9]) * size)


def test_x25519_agreement_is_symmetric_and_refuses_small_order() -> None:
    assert x25519(D1.kx.secret, D2.kx.public) == x25519(D2.kx.secret, D1.kx.public)
    with pytest.raises(KeyValidationError):
        x25519(D1.kx.secret, bytes(32))


# ----------------------------------------------------------------- sealed boxes


def test_seal_opens_with_libsodium() -> None:
    sealed = seal_seeded(D1.kx.public, b"epoch key", seed(50))
    assert sodium.crypto_box_seal_open(sealed, D1.kx.public, D1.kx.secret) == b"epoch key"


def test_libsodium_seal_opens_with_seal_open() -> None:
    sealed = sodium.crypto_box_seal(b"epoch key", D1.kx.public)
    assert seal_open(D1.kx, sealed) == b"epoch key"


@given(st.binary(max_size=200), st.binary(min_size=32, max_size=32))
def test_seal_round_trip_both_directions(message: bytes, ephemeral: bytes) -> None:
    ours = seal_seeded(D2.kx.public, message, ephemeral)
    assert len(ours) == len(message) + 48
    assert sodium.crypto_box_seal_open(ours, D2.kx.public, D2.kx.secret) == message
    assert seal_open(D2.kx, sodium.crypto_box_seal(message, D2.kx.public)) == message


def test_seal_is_deterministic_in_its_seed() -> None:
    a = seal_seeded(D1.kx.public, b"m", seed(50))
    assert a == seal_seeded(D1.kx.public, b"m", seed(50))
    assert seal_seeded(D1.kx.public, b"m", seed(50)) != seal_seeded(D1.kx.public, b"m", seed(51))


def test_seal_open_with_wrong_key_fails() -> None:
    sealed = seal_seeded(D1.kx.public, b"m", seed(50))
    with pytest.raises(DecryptError) as info:
        seal_open(D2.kx, sealed)
    assert info.value.code is Code.DECRYPT_FAILED


@pytest.mark.parametrize("pos", [0, 31, 32, 47, 48])
def test_seal_open_detects_tampering(pos: int) -> None:
    sealed = bytearray(seal_seeded(D1.kx.public, b"m", seed(50)))
    sealed[pos] ^= 1
    with pytest.raises(DecryptError):
        seal_open(D1.kx, bytes(sealed))


@pytest.mark.parametrize("size", [0, 47])
def test_seal_open_refuses_short_input(size: int) -> None:
    with pytest.raises(DecryptError):
        seal_open(D1.kx, bytes(size))


def test_seal_refuses_small_order_recipient_and_bad_seed() -> None:
    with pytest.raises(KeyValidationError):
        seal_seeded(bytes(32), b"m", seed(50))
    with pytest.raises(UsageError):
        seal_seeded(D1.kx.public, b"m", bytes(31))


# ------------------------------------------------------------------------ AEAD

KEY, NONCE, AD = bytes([1]) * 32, bytes([2]) * 24, b"associated"


def test_aead_round_trip() -> None:
    ct = aead_encrypt(KEY, NONCE, b"plaintext", AD)
    assert len(ct) == len(b"plaintext") + 16
    assert aead_decrypt(KEY, NONCE, ct, AD) == b"plaintext"


@given(st.data())
def test_aead_any_single_byte_change_is_detected(data: st.DataObject) -> None:
    ct = bytearray(aead_encrypt(KEY, NONCE, b"plaintext", AD))
    pos = data.draw(st.integers(0, len(ct) - 1))
    ct[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecryptError) as info:
        aead_decrypt(KEY, NONCE, bytes(ct), AD)
    assert info.value.code is Code.DECRYPT_FAILED


@pytest.mark.parametrize(
    ("key", "nonce", "ad", "cut"),
    [(bytes([9]) * 32, NONCE, AD, 0), (KEY, bytes([9]) * 24, AD, 0), (KEY, NONCE, b"other", 0),
     (KEY, NONCE, AD, 1), (KEY, NONCE, AD, 20)],
    ids=["key", "nonce", "ad", "truncated", "shorter-than-tag"],
)
def test_aead_wrong_inputs_fail(key: bytes, nonce: bytes, ad: bytes, cut: int) -> None:
    ct = aead_encrypt(KEY, NONCE, b"plaintext", AD)
    with pytest.raises(DecryptError):
        aead_decrypt(key, nonce, ct[: len(ct) - cut], ad)


def test_aead_wrong_sizes() -> None:
    with pytest.raises(UsageError):
        aead_encrypt(bytes(31), NONCE, b"", b"")
    with pytest.raises(UsageError):
        aead_encrypt(KEY, bytes(12), b"", b"")
    with pytest.raises(DecryptError):
        aead_decrypt(bytes(31), NONCE, bytes(16), b"")


# ---------------------------------------------------------------------- hashes


@given(st.binary(max_size=300))
def test_blake2b_equals_libsodium(data: bytes) -> None:
    expected = nacl.hash.blake2b(data, digest_size=32, encoder=nacl.encoding.RawEncoder)
    assert blake2b_256(data) == expected


def test_sha256_known_answer() -> None:
    assert sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_hkdf_rfc5869_test_case_1() -> None:
    okm = hkdf_sha256(bytes([0x0B]) * 22, salt=bytes(range(13)),
                      info=bytes(range(0xF0, 0xFA)), length=42)
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                         "34007208d5b887185865")


def test_hkdf_rfc5869_test_case_3_empty_salt_and_info() -> None:
    okm = hkdf_sha256(bytes([0x0B]) * 22, salt=b"", info=b"", length=42)
    assert okm.hex() == ("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
                         "9d201395faa4b61a96c8")


def test_constant_time_equal_and_random_bytes() -> None:
    assert constant_time_equal(b"abc", b"abc")
    assert not constant_time_equal(b"abc", b"abd")
    a, b = random_bytes(32), random_bytes(32)
    assert len(a) == 32
    assert a != b
