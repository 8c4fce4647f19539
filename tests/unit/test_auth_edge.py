"""The pure parts of the relay edge's authentication (``sddsf.protocol.auth``):
stateless challenges, key-signed requests and account-key acknowledgements."""

from __future__ import annotations

import pytest

from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import AuthenticationError, ClockSkewError, UsageError
from sddsf.protocol import auth

KEY = auth.challenge_key(bytes(range(32)))
ACCOUNT, DEVICE, OTHER = b"a" * 32, b"d" * 32, b"o" * 32
NOW, TTL, SKEW = 1_767_225_600_000, 60_000, 120_000


def check(challenge: bytes, *, now: int = NOW, account: bytes = ACCOUNT,
          device: bytes = DEVICE, key: bytes = KEY) -> int:
    return auth.check_challenge(key, account, device, challenge, now_ms=now, ttl_ms=TTL,
                                skew_ms=SKEW)


def test_a_challenge_is_bound_to_the_relay_account_device_and_time() -> None:
    challenge = auth.issue_challenge(KEY, ACCOUNT, DEVICE, NOW, b"n" * 8)
    assert len(challenge) == auth.CHALLENGE_SIZE
    assert check(challenge) == NOW
    assert check(challenge, now=NOW + TTL + SKEW) == NOW  # the last valid moment
    refusals = [
        lambda: check(challenge, device=OTHER),
        lambda: check(challenge, account=OTHER),
        lambda: check(challenge, key=auth.challenge_key(bytes(32))),  # another deployment
        lambda: check(challenge[:-1] + bytes([challenge[-1] ^ 1])),  # a forged tag
        lambda: check((NOW + 10**6).to_bytes(8, "big") + challenge[8:]),  # a moved time
        lambda: check(challenge, now=NOW + TTL + SKEW + 1),  # expired
        lambda: check(challenge, now=NOW - SKEW - 1),  # from too far in the future
        lambda: check(challenge[:31]),
    ]
    for refuse in refusals:
        with pytest.raises(AuthenticationError):
            refuse()
    with pytest.raises(UsageError):
        auth.issue_challenge(KEY, ACCOUNT, DEVICE, NOW, b"short")


def test_a_key_signed_request_binds_the_key_id_and_the_request() -> None:
    signer = Ed25519SigningKey.from_seed(b"k" * 32)
    nonce = b"n" * auth.NONCE_SIZE
    sig = signer.sign(auth.key_request_message("GET", "/v1/x?since=0", b"", nonce, NOW, DEVICE))
    req = auth.SignedRequest("GET", "/v1/x?since=0", b"", nonce, NOW, sig)
    auth.check_key_request(req, signer.public, DEVICE, now_ms=NOW, window_ms=SKEW)
    with pytest.raises(AuthenticationError):  # claimed as another key id
        auth.check_key_request(req, signer.public, OTHER, now_ms=NOW, window_ms=SKEW)
    moved = auth.SignedRequest("GET", "/v1/x?since=1", b"", nonce, NOW, sig)
    with pytest.raises(AuthenticationError):
        auth.check_key_request(moved, signer.public, DEVICE, now_ms=NOW, window_ms=SKEW)
    with pytest.raises(ClockSkewError):
        auth.check_key_request(req, signer.public, DEVICE, now_ms=NOW + SKEW + 1,
                               window_ms=SKEW)
    # a session-bound request signature is not a key-signed one (distinct labels)
    session_sig = signer.sign(auth.request_message("GET", "/v1/x?since=0", b"", nonce, NOW,
                                                   DEVICE))
    with pytest.raises(AuthenticationError):
        auth.check_key_request(auth.SignedRequest("GET", "/v1/x?since=0", b"", nonce, NOW,
                                                  session_sig), signer.public, DEVICE,
                               now_ms=NOW, window_ms=SKEW)


def test_an_acknowledgement_names_its_account_time_and_alerts() -> None:
    base = auth.alert_ack_message(ACCOUNT, NOW, [b"x" * 16])
    assert base != auth.alert_ack_message(OTHER, NOW, [b"x" * 16])
    assert base != auth.alert_ack_message(ACCOUNT, NOW + 1, [b"x" * 16])
    assert base != auth.alert_ack_message(ACCOUNT, NOW, [])
    assert base != auth.alert_ack_message(ACCOUNT, NOW, [b"y" * 16])
