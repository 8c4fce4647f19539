"""Device authentication to a relay, as pure functions (the relay and client share them).

1. **Session.** The relay issues a random 32-byte challenge for ``(account,
   device)``. The device signs ``labelled(AUTH_SESSION, relay_id, account_id,
   device_id, challenge)``; the relay checks the signature with the device key
   of the verified registry and returns a short-lived bearer token.
2. **Signed requests.** Every mutating request carries a fresh random nonce and
   the device's clock reading, signed together with the request:
   ``labelled(REQUEST_SIG, method, target, sha256(body), nonce, ts_ms,
   token_hash)``. The relay refuses a timestamp outside the freshness window
   (``clock_skew``) and a nonce it has already seen (``replay``; nonces are kept
   for twice the window, so no timestamp still inside the window outlives its
   nonce): a captured request cannot be replayed (THREATS #5). The nonce cache
   is per relay process today; a shared cache (Redis) extends this to a cluster.

``relay_id`` binds a session signature to one relay deployment, and
``token_hash`` binds a request signature to one session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sddsf.crypto import Ed25519PublicKey, sha256
from sddsf.errors import AuthenticationError, ClockSkewError, Code, SignatureError
from sddsf.protocol import labels
from sddsf.protocol.labels import labelled

__all__ = [
    "NONCE_SIZE",
    "SignedRequest",
    "check_request",
    "request_message",
    "session_message",
    "token_hash",
]

NONCE_SIZE: Final = 16


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


def check_request(req: SignedRequest, device_key: Ed25519PublicKey, token_digest: bytes, *,
                  now_ms: int, window_ms: int) -> None:
    """Check a signed request's freshness and signature (the nonce cache is the caller's).

    Raises:
        AuthenticationError: ``unauthenticated`` for a malformed nonce or a bad signature.
        ClockSkewError: the timestamp is outside ``now_ms ± window_ms``.
    """
    if len(req.nonce) != NONCE_SIZE:
        raise AuthenticationError(f"request nonce must be {NONCE_SIZE} random bytes")
    if abs(req.ts_ms - now_ms) > window_ms:
        raise ClockSkewError(f"request timestamp is {abs(req.ts_ms - now_ms) // 1000} s away "
                             f"from the relay's clock (window {window_ms // 1000} s); check "
                             "this device's clock", Code.CLOCK_SKEW)
    try:
        device_key.verify(request_message(req.method, req.target, req.body, req.nonce,
                                          req.ts_ms, token_digest), req.signature)
    except SignatureError:
        raise AuthenticationError("request signature does not verify for this session"
                                  ) from None
