"""The relay's OpenAPI document, completed from what the handlers depend on.

FastAPI generates the paths and schemas from the real models; this module adds
what it cannot know: readable operation ids, the security schemes (a bearer
session; the signed-request headers of docs/protocol.md 17.3.2) applied to
each operation, and the error responses each operation can give (derived
from its dependencies: an authenticated handler can answer 401/403, a rate
limited one 429, one with path parameters (or a log index in its query) 404,
one with a body 408/413/409),
with ``Retry-After`` on 429 and 503. Validation failures are 400 ``malformed``
(never FastAPI's 422), so 422 is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from fastapi.routing import APIRoute

__all__ = ["OPERATION_IDS", "complete_openapi"]

#: Operation ids where the handler's name alone would be ambiguous or terse.
OPERATION_IDS: Final[dict[tuple[str, str], str]] = {
    ("POST", "/v1/spaces/{space_id}/ops"): "upload_ops",
    ("GET", "/v1/spaces/{space_id}/ops"): "pull_ops",
    ("POST", "/v1/auth/challenge"): "session_challenge",
    ("POST", "/v1/auth/session"): "open_session",
    ("POST", "/v1/ws/ticket"): "ws_ticket",
    ("POST", "/v1/spaces/{space_id}/ack"): "acknowledge_ops",
    ("POST", "/v1/controller/alerts/{alert_id}/ack"): "acknowledge_alert",
    ("POST", "/v1/accounts/{account_id}/alerts/ack"): "acknowledge_alerts_as_account",
    ("GET", "/v1/controller/devices"): "device_trust",
    ("GET", "/v1/controller/alerts"): "list_alerts",
    ("GET", "/v1/controller/encryption-policy"): "get_encryption_policy",
    ("POST", "/v1/spaces/{space_id}/docs/{doc_id}/snapshot/attestations"): "attest_snapshot",
    ("GET", "/v1/spaces/{space_id}/docs/{doc_id}/snapshot/attestations"):
        "snapshot_attestations",
    ("POST", "/v1/spaces/{space_id}/keys"): "put_key_package",
    ("GET", "/v1/spaces/{space_id}/keys"): "get_key_packages",
    ("GET", "/v1/spaces/{space_id}/tree-head"): "get_tree_head",
    ("POST", "/v1/pairing/{channel_id}/messages"): "post_channel_message",
    ("GET", "/v1/pairing/{channel_id}/messages"): "read_channel_messages",
    ("POST", "/v1/pairing/{channel_id}/burn"): "burn_channel",
    ("GET", "/v1/accounts/{account_id}/backup/kdf"): "get_backup_kdf",
    ("GET", "/v1/backups/by-fingerprint/{fingerprint}"): "find_backup_by_fingerprint",
    ("GET", "/v1/limits"): "get_limits",
    ("GET", "/metrics"): "metrics",
}

_SIGNED = ("requestNonce", "requestTimestamp", "requestSignature")
SECURITY_SCHEMES: Final[dict[str, dict[str, str]]] = {
    "session": {"type": "http", "scheme": "bearer",
                "description": "a session token from POST /v1/auth/session (protocol 17.3.1)"},
    "requestNonce": {"type": "apiKey", "in": "header", "name": "X-Sddsf-Nonce",
                     "description": "signed requests (17.3.2): a fresh random nonce, base64"},
    "requestTimestamp": {"type": "apiKey", "in": "header", "name": "X-Sddsf-Timestamp",
                         "description": "signed requests: the signer's clock, integer ms"},
    "requestSignature": {"type": "apiKey", "in": "header", "name": "X-Sddsf-Signature",
                         "description": "signed requests: Ed25519 signature over method, "
                                        "target, body, nonce, timestamp and the session "
                                        "token's hash (or the key id), base64"},
    "signingKeyId": {"type": "apiKey", "in": "header", "name": "X-Sddsf-Key-Id",
                     "description": "requests signed without a session: the account key's "
                                    "or a device's id, base64 (17.3.4)"},
}
# Operations that answer 404 for a query value past the end of a log (an entry
# index or a size the log has not reached); other 404s come from path parameters.
_NOT_FOUND_BY_QUERY: Final = {("GET", "/v1/controller/audit/proofs/inclusion"),
                              ("GET", "/v1/controller/audit/proofs/consistency")}
# Readers of an account's registry: a session of the account, or a key-signed request.
_KEY_SIGNED_READERS: Final = {("GET", "/v1/accounts/{account_id}/registry")}
_RETRY_AFTER: Final = {"Retry-After": {
    "description": "seconds to wait before retrying (429: until the rate-limit bucket "
                   "has a token; 503: a hint, the relay or its database is busy)",
    "schema": {"type": "integer", "minimum": 1}}}
_WHY: Final = {
    "400": "malformed: a body, path or query value that does not parse (code malformed)",
    "401": "no, an expired or a bad credential (unauthenticated, replay, clock_skew)",
    "403": "the caller may not do this (revoked, not_authorized, policy_denied, ...)",
    "404": "no such account, space, document, channel or log entry (not_found)",
    "408": "the request body did not arrive in time (request_timeout)",
    "409": "conflicts with stored state (conflict, chain_fork, ...)",
    "413": "the body or batch exceeds the relay's limits (too_large)",
    "429": "a rate limit (rate_limited)",
    "500": "a bug in the relay (internal); nothing was acknowledged",
    "503": "the database or a dependency is unavailable (unavailable); retry",
}


def _security(method: str, path: str, calls: set[str]) -> list[dict[str, list[str]]] | None:
    if (method, path) in _KEY_SIGNED_READERS:
        return [{"session": []}, {"signingKeyId": [], **{s: [] for s in _SIGNED}}]
    if calls & {"authenticated", "pusher"}:
        # authenticated() checks the signature headers of every mutating request.
        if method in ("POST", "PUT", "DELETE"):
            return [{"session": [], **{s: [] for s in _SIGNED}}]
        return [{"session": []}]
    return None


def _statuses(method: str, path: str, calls: set[str], security: bool,
              pairing: bool) -> set[str]:
    if not path.startswith("/v1"):
        return {"500"}
    codes = {"400", "500", "503"}
    if security or pairing:
        codes |= {"401", "403"}
    if pairing:  # a slot token names a channel that may be gone or claimed
        codes |= {"404", "409"}
    if calls & {"authenticated", "pusher", "limit_ip"}:
        codes.add("429")
    if "{" in path or (method, path) in _NOT_FOUND_BY_QUERY:
        codes.add("404")
    if method in ("POST", "PUT", "DELETE"):
        codes |= {"408", "413"}
    if method in ("POST", "PUT"):
        codes.add("409")
    return codes


def _calls(route: APIRoute) -> set[str]:
    out: set[str] = set()
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        out.add(getattr(dep.call, "__name__", ""))
        stack.extend(dep.dependencies)
    return out


def complete_openapi(schema: dict[str, Any], routes: Iterable[APIRoute]) -> dict[str, Any]:
    """Add operation ids, security and per-operation error responses to ``schema``."""
    components = schema.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for route in routes:
        calls = _calls(route)
        pairing = any(p.alias == "x-sddsf-pairing-token" for p in route.dependant.header_params)
        for method in sorted(route.methods or ()):
            op = schema["paths"].get(route.path, {}).get(method.lower())
            if op is None:
                continue
            op["operationId"] = OPERATION_IDS.get((method, route.path), route.name)
            security = _security(method, route.path, calls)
            if security is not None:
                op["security"] = security
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            for status in sorted(_statuses(method, route.path, calls, security is not None,
                                           pairing) | ({"503"} & set(responses))):
                entry = responses.setdefault(status, {"description": _WHY[status]})
                entry.setdefault("content", error_ref)
                if status in ("429", "503"):
                    entry["headers"] = _RETRY_AFTER
    return schema
