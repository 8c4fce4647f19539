"""Shared pieces of the relay's HTTP handlers: the per-app context, the edge
checks (authentication, signed requests, anti-replay, rate limits, body size)
and small converters. Third-party exceptions are translated here, once."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sddsf.crypto import Ed25519PublicKey, Ed25519SigningKey
from sddsf.errors import (
    AuthenticationError,
    AuthorizationError,
    Code,
    DecodeError,
    RateLimitedError,
    SddsfError,
    UnavailableError,
)
from sddsf.protocol import auth
from sddsf.protocol.registry import RegistryState
from sddsf.protocol.treehead import decode_tree_head
from sddsf.relay import models as m
from sddsf.relay.cluster import ClusterLive
from sddsf.relay.controller.service import CALLER, Controller
from sddsf.relay.edge import EdgeState, Session
from sddsf.relay.fabric import Fabric
from sddsf.relay.fanout import Hub
from sddsf.relay.metrics import RelayMetrics
from sddsf.relay.observe import current_request_id
from sddsf.relay.settings import RelaySettings
from sddsf.relay.storage.base import RelayStorage, SpaceRecord

__all__ = [
    "DOC_ID_SIZE",
    "SPACE_ID_SIZE",
    "Authed",
    "Caller",
    "Ctx",
    "Pusher",
    "RelayContext",
    "authenticated",
    "client_ip",
    "error_body",
    "error_response",
    "limit_ip",
    "log",
    "now_ms",
    "rate_limit",
    "registry_reader",
    "shares_space",
    "space_of",
    "space_out",
    "tree_head_out",
]

log = logging.getLogger("sddsf.relay")
SPACE_ID_SIZE = 16
DOC_ID_SIZE = 16
MAX_WS_FRAME = 64 * 1024
#: A byte-identical copy of a signed request within this long of the original is
#: a duplicate (a retrying proxy), not a replay: refused, but not held against
#: the session or counted for ``replay_burst``.
DUPLICATE_GRACE_MS = 10_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class RelayContext:
    """Everything the handlers share, for one app instance."""

    settings: RelaySettings
    storage: RelayStorage
    relay_key: Ed25519SigningKey
    edge: EdgeState
    hub: Hub
    fabric: Fabric
    metrics: RelayMetrics
    clock: Callable[[], int]
    controller: Controller
    live: ClusterLive

    @property
    def relay_id(self) -> bytes:
        """This relay deployment's id: its tree-head signing key."""
        return self.relay_key.public.raw

    @functools.cached_property
    def challenge_key(self) -> bytes:
        """The key of the stateless session challenges (shared by every node that
        has the deployment's relay key)."""
        return auth.challenge_key(self.relay_key.seed)


async def _ctx(request: Request) -> RelayContext:
    # A coroutine: FastAPI runs a plain function dependency in its thread pool,
    # a hand-over and back on every request for one attribute read.
    ctx: RelayContext = request.app.state.relay
    return ctx


Ctx = Annotated[RelayContext, Depends(_ctx)]


# ------------------------------------------------------------------- edge: limits


class BodyLimit:
    """Refuse request bodies over the limit before reading them (HTTP 413), and
    bodies that do not arrive within ``timeout_s`` of the first read (HTTP 408
    ``request_timeout``, connection closed: a slow-loris body)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 60.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _send_error(send, DecodeError(
                f"request body exceeds the limit of {self.max_bytes} bytes", Code.TOO_LARGE))
            return
        seen, deadline, done = 0, 0.0, False
        started = refused = False

        async def refuse(err: SddsfError) -> Message:
            # Answer here (the handler may have caught an exception from receive
            # and turned it into something else), close the connection, and tell
            # the handler the client has gone; whatever it sends is dropped.
            nonlocal refused
            if not started and not refused:
                refused = True
                await _send_error(send, err, close=True)
            return {"type": "http.disconnect"}

        async def limited() -> Message:
            nonlocal seen, deadline, done
            if done or refused:  # later reads wait for a disconnect, unbounded
                return await receive() if not refused else {"type": "http.disconnect"}
            deadline = deadline or asyncio.get_running_loop().time() + self.timeout_s
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                return await refuse(UnavailableError(
                    f"the request body did not arrive within {self.timeout_s:g} s; nothing "
                    "was stored", Code.REQUEST_TIMEOUT))
            done = message["type"] != "http.request" or not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                return await refuse(DecodeError(
                    f"request body exceeds the limit of {self.max_bytes} bytes",
                    Code.TOO_LARGE))
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited, watched)


async def _send_error(send: Send, err: SddsfError, *, close: bool = False) -> None:
    response = JSONResponse(error_body(err.to_wire()), status_code=err.http_status,
                            headers={"connection": "close"} if close else None)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - responses never read
    return {"type": "http.disconnect"}


def client_ip(request: Request, ctx: RelayContext) -> str:
    """The client's address for per-address limits.

    The TCP peer, unless ``trust_proxy_headers`` is on and the peer is one of
    ``trusted_proxies``: then the rightmost ``X-Forwarded-For`` address that is not
    a trusted proxy. Entries left of it are whatever the client wrote; the one a
    trusted proxy appended is the address it saw.
    """
    peer = request.client.host if request.client else "unknown"
    s = ctx.settings
    if not s.trust_proxy_headers or not _is_proxy(peer, s):
        return peer
    hops = [_host(hop) for value in request.headers.getlist("x-forwarded-for")
            for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_proxy(hop, s):
            return hop
    return hops[0] if hops else peer


def _host(hop: str) -> str:
    # Some proxies write "1.2.3.4:5678" or "[2001:db8::1]:5678": the port is not
    # part of the client's address (else every connection had its own bucket).
    hop = hop.strip()
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


def _is_proxy(address: str, settings: RelaySettings) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in settings.proxy_networks)


async def rate_limit(ctx: RelayContext, bucket: str, cost: float, rate: float,
                 burst: float) -> None:
    wait = await ctx.edge.take_tokens(bucket, cost, rate, burst, ctx.clock())
    if wait > 0:
        ctx.metrics.rate_limited.labels(bucket.split(":", 1)[0]).inc()
        await ctx.controller.rate_limited()  # attributed to the authenticated caller, if any
        raise RateLimitedError(f"rate limit reached ({bucket.split(':', 1)[0]}); retry in "
                               f"{wait:.1f} s", retry_after_s=wait)


async def limit_ip(request: Request, ctx: Ctx) -> None:
    """Per-address bucket for unauthenticated endpoints."""
    s = ctx.settings
    await rate_limit(ctx, f"ip:{client_ip(request, ctx)}", 1, s.rate_ip_per_s, s.rate_ip_burst)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated device."""

    session: Session
    token_digest: bytes


async def authenticated(request: Request, ctx: Ctx) -> Caller:
    """Bearer session + (for mutating requests) a fresh signed nonce; rate limited."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise AuthenticationError("missing bearer token; open a session first "
                                  "(POST /v1/auth/challenge, then /v1/auth/session)")
    token = m.unb64(header[7:].strip(), "bearer token")
    digest = auth.token_hash(token)
    now = ctx.clock()
    session = await ctx.edge.get_session(digest, now)
    if session is None:
        raise AuthenticationError("session expired or unknown; open a new session")
    registry = await ctx.fabric.registries.get(session.account_id)
    record = registry.device(session.device_id)
    if record is None or not registry.is_active(session.device_id):
        await ctx.edge.drop_device(session.device_id)
        raise AuthorizationError("this device has been revoked", Code.REVOKED)
    # From here on the controller attributes what it observes to this device.
    CALLER.set((session.account_id, session.device_id))
    if request.method in ("POST", "PUT", "DELETE"):
        await _check_signed_request(request, ctx, session, digest, record.public.signing_key)
    await ctx.controller.require_access(session.account_id, session.device_id, write=False)
    s = ctx.settings
    await rate_limit(ctx, f"device:{session.device_id.hex()}", 1, s.rate_device_per_s,
                 s.rate_device_burst)
    await rate_limit(ctx, f"account:{session.account_id.hex()}", 1, s.rate_account_per_s,
                 s.rate_account_burst)
    return Caller(session, digest)


async def _check_signed_request(request: Request, ctx: RelayContext, session: Session,
                                digest: bytes, key: Any) -> None:
    nonce, ts_ms, sig = _signature_headers(request)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    body = await request.body()
    now = ctx.clock()
    window = ctx.settings.request_window_s * 1000
    try:
        auth.check_request(auth.SignedRequest(request.method, target, body, nonce, ts_ms, sig),
                           key, digest, now_ms=now, window_ms=window)
    except AuthenticationError:
        # A bad signature under a valid session token: the token leaked (the
        # device signs everything it sends), or the device is broken.
        await _session_leaked(ctx, session, digest)
        raise
    # Keep each nonce for twice the window: any timestamp still inside the
    # window on either side cannot outlive its nonce (THREATS #5).
    # The signature covers method, target, body, nonce and timestamp: the same
    # signature is the same request, byte for byte.
    seen = await ctx.edge.remember_request(session.device_id + nonce, sig[:24],
                                           now + 2 * window, now)
    if seen is not None:
        tag, first_ms = seen
        if tag == sig[:24] and 0 <= now - first_ms <= DUPLICATE_GRACE_MS:
            # A byte-identical copy shortly after the original: a retrying proxy
            # or client, not evidence of a leak. Refused (nothing is done
            # twice), not counted, the session kept.
            raise AuthenticationError("this request was already received (a duplicate of a "
                                      "request of the last seconds); nothing was done twice",
                                      Code.REPLAY)
        await _session_leaked(ctx, session, digest)
        raise AuthenticationError("this request was already received (replayed nonce); the "
                                  "session it came with has been ended", Code.REPLAY)


async def _session_leaked(ctx: RelayContext, session: Session, digest: bytes) -> None:
    # A replayed or forged request is evidence that this session's token leaked,
    # not that the device misbehaved: end the session (its holder can do nothing
    # more with it; the device opens a new one) and count it for the account's
    # replay_burst alert, not against the device's trust. (Session-opening
    # failures are not counted: anyone can ask for a challenge.)
    await ctx.edge.drop_session(digest)
    log.warning("session of device %s ended: a replayed or forged request came with its "
                "token", session.device_id.hex()[:12])
    await ctx.controller.session_misused(session.account_id, session.device_id)


Authed = Annotated[Caller, Depends(authenticated)]


async def shares_space(ctx: RelayContext, account_id: bytes, other: bytes) -> bool:
    """Whether ``other`` is, or was, a member of a space ``account_id`` is a member
    of (protocol.md 21.7: members verify each other's devices, and the key
    packages of the space's history, from each other's registries)."""
    for space in await ctx.storage.shared_spaces(account_id):
        folded = await ctx.fabric.shared.folded(space)
        if folded is not None and any(other in s for s in folded.sets.values()):
            return True
    return False


async def registry_reader(request: Request, ctx: RelayContext, account_id: bytes) -> None:
    """Who may read an account's registry (docs/protocol.md 17.3.4): a session of
    the account, or a request signed by a key the registry knows (the account
    key, an active device, or the device an open proposal would add).

    Raises:
        AuthenticationError: no credential, a bad signature, ``replay``;
        AuthorizationError: ``not_authorized`` (another account's session),
        ``revoked``, ``unknown_device``, ``policy_denied``; NotFoundError.
    """
    if request.headers.get("authorization"):
        caller = await authenticated(request, ctx)
        if caller.session.account_id != account_id and not await shares_space(
                ctx, caller.session.account_id, account_id):
            raise AuthorizationError("a session reads its own account's registry and those "
                                     "of accounts it shares a space with", Code.NOT_AUTHORIZED)
        return
    raw_id = request.headers.get("x-sddsf-key-id")
    if raw_id is None:
        raise AuthenticationError(
            "reading an account's registry needs a session of the account, or a request "
            "signed by the account key or one of its devices (X-Sddsf-Key-Id, X-Sddsf-Nonce, "
            "X-Sddsf-Timestamp, X-Sddsf-Signature)")
    key_id = m.unb64(raw_id, "X-Sddsf-Key-Id", size=32)
    state = await ctx.fabric.registries.get(account_id)
    key = _reader_key(state, key_id, ctx.clock())
    nonce, ts_ms, sig = _signature_headers(request)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    now, window = ctx.clock(), ctx.settings.request_window_s * 1000
    auth.check_key_request(auth.SignedRequest(request.method, target, await request.body(),
                                              nonce, ts_ms, sig), key, key_id,
                           now_ms=now, window_ms=window)
    if not await ctx.edge.remember_nonce(b"key/" + key_id + nonce, now + 2 * window, now):
        raise AuthenticationError("this request was already received (replayed nonce)",
                                  Code.REPLAY)
    if state.is_active(key_id):  # the controller's verdict holds here as for a session
        await ctx.controller.require_access(account_id, key_id, write=False)


def _reader_key(state: RegistryState, key_id: bytes, now_ms: int) -> Ed25519PublicKey:
    if key_id == state.account_id:
        return state.account.signing_key
    record = state.device(key_id)
    if record is not None:
        if not state.is_active(key_id):
            raise AuthorizationError("this device has been revoked", Code.REVOKED)
        return record.public.signing_key
    for p in state.open_proposals(now_ms):
        if p.action.device is not None and p.action.device.device_id == key_id:
            return p.action.device.signing_key  # a joiner awaiting approval
    raise AuthorizationError("this key is not the account key, nor a device of the account "
                             "or one it proposes to add", Code.UNKNOWN_DEVICE)


def _signature_headers(request: Request) -> tuple[bytes, int, bytes]:
    h = request.headers
    try:
        return (m.unb64(h["x-sddsf-nonce"], "X-Sddsf-Nonce", size=auth.NONCE_SIZE),
                int(h["x-sddsf-timestamp"]),
                m.unb64(h["x-sddsf-signature"], "X-Sddsf-Signature", size=64))
    except (KeyError, ValueError):
        raise AuthenticationError("signed requests need X-Sddsf-Nonce, X-Sddsf-Timestamp "
                                  "(integer ms) and X-Sddsf-Signature headers") from None


async def pusher(caller: Annotated[Caller, Depends(authenticated)], ctx: Ctx) -> Caller:
    """An authenticated device the controller lets write (``policy_read_only`` otherwise)."""
    await ctx.controller.require_access(caller.session.account_id, caller.session.device_id,
                                        write=True)
    return caller


Pusher = Annotated[Caller, Depends(pusher)]


# -------------------------------------------------------------------- helpers


def tree_head_out(head: bytes) -> m.TreeHeadOut:
    th = decode_tree_head(head)
    return m.TreeHeadOut(tree_head=m.b64(head), size=th.size, root=m.b64(th.root))


def space_out(space: SpaceRecord) -> m.SpaceOut:
    return m.SpaceOut(space_id=m.b64(space.space_id), size=space.size,
                      root=m.b64(space.root), epoch=space.epoch, owner=m.b64(space.account_id))


async def space_of(ctx: RelayContext, caller: Caller, space_b64: str) -> SpaceRecord:
    return await ctx.fabric.space_for(m.unb64(space_b64, "space id", size=SPACE_ID_SIZE),
                                      caller.session.account_id)


def error_body(wire: dict[str, str]) -> dict[str, str]:
    """An error body ``{code, message}`` with the request's id (``request_id``),
    so a user can quote it and an operator find the request's log lines."""
    rid = current_request_id()
    return {**wire, "request_id": rid} if rid else wire


def error_response(err: SddsfError, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if isinstance(err, RateLimitedError):
        headers["Retry-After"] = str(max(1, int(err.retry_after_s + 0.999)))
    elif err.http_status == 503:  # a hint: clients back off by their own policy too
        headers.setdefault("Retry-After", "1")
    return JSONResponse(error_body(err.to_wire()), status_code=err.http_status,
                        headers=headers)


