"""Device authentication to a relay, as pure functions (the relay and client share them).

1. **Session.** The relay issues a 32-byte challenge for ``(account, device)``
   (stateless, item 4). The device signs ``labelled(AUTH_SESSION, relay_id,
   account_id, device_id, challenge)``; the relay checks the signature with the
   device key of the verified registry and returns a short-lived bearer token.
2. **Signed requests.** Every mutating request carries a fresh random nonce and
   the device's clock reading, signed together with the request:
   ``labelled(REQUEST_SIG, method, target, sha256(body), nonce, ts_ms,
   token_hash)``. The relay refuses a timestamp outside the freshness window
   (``clock_skew``) and a nonce it has already seen (``replay``; nonces are kept
   for twice the window, so no timestamp still inside the window outlives its
   nonce): a captured request cannot be replayed (THREATS #5). A replay, or a bad
   signature under a live token, ends that session (the token leaked).
3. **Key-signed requests.** A caller without a session (a device recovering with
   the account key, a device awaiting approval) signs a read with a key the
   account's registry knows: ``labelled(REQUEST_KEY_SIG, method, target,
   sha256(body), nonce, ts_ms, key_id)``, where ``key_id`` is the account id (the
   account key) or a device id. Freshness and nonces work as for signed requests.
4. **Stateless challenges.** A challenge is ``issued_ms (8 bytes) ‖ random (8) ‖
   tag (16)``, the tag a relay-keyed BLAKE2b over (account, device, the first 16
   bytes). The relay stores nothing when it issues one, so nobody can replace a
   device's outstanding challenge; it remembers a challenge only once it was
   used (single use).
5. **Account-key acknowledgements.** The owner lifts a quarantine with the account
   key: ``labelled(ALERT_ACK_SIG, account_id, ts_ms, [alert_id, ...])``.

``relay_id`` binds a session signature to one relay deployment, and
``token_hash`` binds a request signature to one session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sddsf.crypto import Ed25519PublicKey, constant_time_equal, hkdf_sha256, sha256
from sddsf.errors import AuthenticationError, ClockSkewError, Code, SignatureError, UsageError
from sddsf.protocol import labels
from sddsf.protocol.labels import labelled, tagged_hash

__all__ = [
    "CHALLENGE_NONCE_SIZE",
    "CHALLENGE_SIZE",
    "NONCE_SIZE",
    "SignedRequest",
    "alert_ack_message",
    "challenge_key",
    "check_challenge",
    "check_key_request",
    "check_request",
    "issue_challenge",
    "key_request_message",
    "request_message",
    "session_message",
    "token_hash",
]

NONCE_SIZE: Final = 16
CHALLENGE_SIZE: Final = 32
CHALLENGE_NONCE_SIZE: Final = 8
_CHALLENGE_HEAD: Final = 8 + CHALLENGE_NONCE_SIZE


def session_message(relay_id: bytes, account_id: bytes, device_id: bytes,
                    challenge: bytes) -> bytes:
    """What a device signs to open a session."""
    return labelled(labels.AUTH_SESSION, relay_id, account_id, device_id, challenge)


def token_hash(token: bytes) -> bytes:
    """The relay stores and signs over the hash of a bearer token, never the token."""
    return sha256(token)


def request_message(method: str, target: str, body: bytes, nonce: bytes, ts_ms: int,
                    token_digest: bytes) -> bytes:
    """What a device signs for one mutating request (``target`` = path and query)."""
    return labelled(labels.REQUEST_SIG, method.upper(), target, sha256(body), nonce, ts_ms,
                    token_digest)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The authentication fields of one request."""

    method: str
    target: str
    body: bytes
    nonce: bytes
    ts_ms: int
    signature: bytes


def _check_fresh(req: SignedRequest, now_ms: int, window_ms: int) -> None:
    if len(req.nonce) != NONCE_SIZE:
        raise AuthenticationError(f"request nonce must be {NONCE_SIZE} random bytes")
    if abs(req.ts_ms - now_ms) > window_ms:
        raise ClockSkewError(f"request timestamp is {abs(req.ts_ms - now_ms) // 1000} s away "
                             f"from the relay's clock (window {window_ms // 1000} s); check "
                             "this device's clock", Code.CLOCK_SKEW)


def check_request(req: SignedRequest, device_key: Ed25519PublicKey, token_digest: bytes, *,
                  now_ms: int, window_ms: int) -> None:
    """Check a signed request's freshness and signature (the nonce cache is the caller's).

    Raises:
        AuthenticationError: ``unauthenticated`` for a malformed nonce or a bad signature.
        ClockSkewError: the timestamp is outside ``now_ms ± window_ms``.
    """
    _check_fresh(req, now_ms, window_ms)
    try:
        device_key.verify(request_message(req.method, req.target, req.body, req.nonce,
                                          req.ts_ms, token_digest), req.signature)
    except SignatureError:
        raise AuthenticationError("request signature does not verify for this session"
                                  ) from None


def key_request_message(method: str, target: str, body: bytes, nonce: bytes, ts_ms: int,
                        key_id: bytes) -> bytes:
    """What a caller without a session signs with a key the registry knows
    (``key_id``: the account id for the account key, else the device id)."""
    return labelled(labels.REQUEST_KEY_SIG, method.upper(), target, sha256(body), nonce, ts_ms,
                    key_id)


def check_key_request(req: SignedRequest, key: Ed25519PublicKey, key_id: bytes, *,
                      now_ms: int, window_ms: int) -> None:
    """Check a key-signed request's freshness and signature (nonces are the caller's).

    Raises:
        AuthenticationError: ``unauthenticated`` for a malformed nonce or a bad signature.
        ClockSkewError: the timestamp is outside ``now_ms ± window_ms``.
    """
    _check_fresh(req, now_ms, window_ms)
    try:
        key.verify(key_request_message(req.method, req.target, req.body, req.nonce, req.ts_ms,
                                       key_id), req.signature)
    except SignatureError:
        raise AuthenticationError("request signature does not verify for this key") from None


def challenge_key(relay_seed: bytes) -> bytes:
    """The relay's challenge MAC key, derived from its tree-head key seed, so every
    node of a deployment (one key file) checks every node's challenges."""
    return hkdf_sha256(relay_seed, salt=labels.AUTH_CHALLENGE_MAC.encode(),
                       info=b"challenge key")


def _challenge_tag(key: bytes, account_id: bytes, device_id: bytes, head: bytes) -> bytes:
    return tagged_hash(labels.AUTH_CHALLENGE_MAC, key, account_id, device_id, head)[:16]


def issue_challenge(key: bytes, account_id: bytes, device_id: bytes, now_ms: int,
                    nonce: bytes) -> bytes:
    """A stateless 32-byte challenge for (account, device) issued at ``now_ms``
    (``nonce``: 8 fresh random bytes from the caller)."""
    if len(nonce) != CHALLENGE_NONCE_SIZE:
        raise UsageError(f"a challenge nonce is {CHALLENGE_NONCE_SIZE} bytes")
    head = now_ms.to_bytes(8, "big") + nonce
    return head + _challenge_tag(key, account_id, device_id, head)


def check_challenge(key: bytes, account_id: bytes, device_id: bytes, challenge: bytes, *,
                    now_ms: int, ttl_ms: int, skew_ms: int) -> int:
    """Check that this relay issued ``challenge`` for (account, device) at most
    ``ttl_ms`` ago; ``skew_ms`` tolerates clock differences between the relay's
    nodes. Single use is the caller's (remember it once it was used).

    Returns:
        The time the challenge was issued (ms, the issuing node's clock).
    Raises:
        AuthenticationError: ``unauthenticated``: not issued here for this pair, or
            expired.
    """
    if len(challenge) != CHALLENGE_SIZE or not constant_time_equal(
            challenge[_CHALLENGE_HEAD:],
            _challenge_tag(key, account_id, device_id, challenge[:_CHALLENGE_HEAD])):
        raise AuthenticationError("challenge unknown (not issued by this relay for this "
                                  "account and device); request a new one")
    issued = int.from_bytes(challenge[:8], "big")
    if not now_ms - ttl_ms - skew_ms <= issued <= now_ms + skew_ms:
        raise AuthenticationError("challenge expired; request a new one")
    return issued


def alert_ack_message(account_id: bytes, ts_ms: int, alert_ids: Sequence[bytes]) -> bytes:
    """What the account key signs to acknowledge alerts (and lift their quarantine):
    the listed alerts, or with an empty list every open alert created at or before
    ``ts_ms``."""
    return labelled(labels.ALERT_ACK_SIG, account_id, ts_ms, list(alert_ids))
