"""External primitive vectors through OUR wrappers (sddsf.crypto): Wycheproof
Ed25519 / XChaCha20-Poly1305 / X25519 and all 914 CCTV Ed25519 edge cases.

THREATS #2 and #16. The CCTV file carries no expected verdicts: the test
derives each vector's expected decision from its flags under our single
documented policy (docs/protocol.md §Ed25519 policy) and checks that the
verifier every component uses (relay and client both call
``Ed25519PublicKey.from_bytes(...).verify``) takes exactly that decision.
"""

from __future__ import annotations

from collections import Counter

import pytest

from sddsf import crypto
from sddsf.errors import DecryptError, KeyValidationError, SddsfError, SignatureError
from vectorkit import load, require_vectors

WYCHEPROOF_ED25519 = 151
WYCHEPROOF_XCHACHA = 315
WYCHEPROOF_X25519 = 518
CCTV_ED25519 = 914


def _wycheproof_cases(name: str) -> list[tuple[dict[str, object], dict[str, object]]]:
    require_vectors("wycheproof")
    data = load(f"wycheproof/{name}")
    return [(g, t) for g in data["testGroups"] for t in g["tests"]]


def _strict_verify(pk: bytes, msg: bytes, sig: bytes) -> bool:
    """The one Ed25519 policy: validated key, then libsodium verification."""
    try:
        crypto.Ed25519PublicKey.from_bytes(pk).verify(msg, sig)
    except (KeyValidationError, SignatureError):
        return False
    return True


def test_wycheproof_ed25519() -> None:
    cases = _wycheproof_cases("ed25519_test.json")
    assert len(cases) == WYCHEPROOF_ED25519
    outcomes: Counter[tuple[str, bool]] = Counter()
    for group, t in cases:
        pk = bytes.fromhex(group["publicKey"]["pk"])  # type: ignore[index]
        ok = _strict_verify(pk, bytes.fromhex(t["msg"]), bytes.fromhex(t["sig"]))  # type: ignore[arg-type]
        assert ok == (t["result"] == "valid"), f"tcId {t['tcId']} {t['comment']}"
        outcomes[(str(t["result"]), ok)] += 1
    assert outcomes == {("valid", True): 88, ("invalid", False): 63}


def test_wycheproof_xchacha20_poly1305() -> None:
    cases = _wycheproof_cases("xchacha20_poly1305_test.json")
    assert len(cases) == WYCHEPROOF_XCHACHA
    valid = 0
    for _, t in cases:
        key, iv, aad, msg, ct, tag = (bytes.fromhex(t[k]) for k in  # type: ignore[arg-type]
                                      ("key", "iv", "aad", "msg", "ct", "tag"))
        if t["result"] == "valid":
            assert crypto.aead_encrypt(key, iv, msg, aad) == ct + tag, t["tcId"]
            assert crypto.aead_decrypt(key, iv, ct + tag, aad) == msg, t["tcId"]
            valid += 1
        else:
            with pytest.raises(DecryptError):
                crypto.aead_decrypt(key, iv, ct + tag, aad)
    assert valid == 246


def test_wycheproof_x25519() -> None:
    """Policy: a shared secret of all zeros (small-order peer key) is refused."""
    cases = _wycheproof_cases("x25519_test.json")
    assert len(cases) == WYCHEPROOF_X25519
    refused = 0
    for _, t in cases:
        flags = set(t["flags"])  # type: ignore[arg-type]
        private, public = bytes.fromhex(t["private"]), bytes.fromhex(t["public"])  # type: ignore[arg-type]
        if "ZeroSharedSecret" in flags:
            with pytest.raises(KeyValidationError):
                crypto.x25519(private, public)
            with pytest.raises(KeyValidationError):
                crypto.validate_x25519_public(public)
            refused += 1
            continue
        assert t["result"] in ("valid", "acceptable")
        assert crypto.x25519(private, public) == bytes.fromhex(t["shared"]), t["tcId"]  # type: ignore[arg-type]
        if "NonCanonicalPublic" in flags:
            # accepted by the raw function (RFC 7748), refused as a device key
            with pytest.raises(KeyValidationError):
                crypto.validate_x25519_public(public)
    assert refused == 31


def _cctv_expected(flags: set[str]) -> bool:
    # Our policy accepts only signatures whose R and A are canonical, neither
    # is of low order, A is in the prime-order subgroup (no low-order
    # component), and the cofactorless equation holds (no low-order residue).
    # A mixed-order R alone does not break the cofactorless equation, so it is
    # the only flag that may remain on an accepted vector.
    return flags <= {"low_order_component_R"}


def test_cctv_ed25519_all_vectors_decided_by_one_policy() -> None:
    require_vectors("cctv")
    vectors = load("cctv/ed25519vectors.json")
    assert len(vectors) == CCTV_ED25519
    accepted = []
    for v in vectors:
        flags = set(v["flags"] or [])
        got = _strict_verify(bytes.fromhex(v["key"]), v["msg"].encode(), bytes.fromhex(v["sig"]))
        assert got == _cctv_expected(flags), f"vector {v['number']} flags={sorted(flags)}"
        if got:
            accepted.append(v["number"])
    # Exactly the flag-free vector is accepted; the other 913 are refused.
    assert len(accepted) == 1
    assert not vectors[accepted[0]]["flags"]


def test_cctv_registration_refuses_every_low_order_or_noncanonical_key() -> None:
    require_vectors("cctv")
    vectors = load("cctv/ed25519vectors.json")
    for v in vectors:
        flags = set(v["flags"] or [])
        bad_key = flags & {"low_order_A", "non_canonical_A", "low_order_component_A"}
        if bad_key:
            with pytest.raises(KeyValidationError):
                crypto.Ed25519PublicKey.from_bytes(bytes.fromhex(v["key"]))


def test_policy_errors_are_sddsf_errors() -> None:
    with pytest.raises(SddsfError):
        crypto.Ed25519PublicKey.from_bytes(bytes(32))
