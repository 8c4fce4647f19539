"""Shared pieces of the relay's HTTP handlers: the per-app context, the edge
checks (authentication, signed requests, anti-replay, rate limits, body size)
and small converters. Third-party exceptions are translated here, once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sddsf.controller.detectors import SignalKind
from sddsf.controller.service import CALLER, Controller
from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import (
    AuthenticationError,
    AuthorizationError,
    Code,
    DecodeError,
    RateLimitedError,
    SddsfError,
)
from sddsf.protocol import auth
from sddsf.protocol.treehead import decode_tree_head
from sddsf.relay import models as m
from sddsf.relay.edge import EdgeState, Session
from sddsf.relay.fabric import Fabric
from sddsf.relay.fanout import Hub
from sddsf.relay.metrics import RelayMetrics
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
    "error_response",
    "limit_ip",
    "log",
    "now_ms",
    "rate_limit",
    "space_of",
    "space_out",
    "tree_head_out",
]

log = logging.getLogger("sddsf.relay")
SPACE_ID_SIZE = 16
DOC_ID_SIZE = 16
MAX_WS_FRAME = 64 * 1024


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

    @property
    def relay_id(self) -> bytes:
        """This relay deployment's id: its tree-head signing key."""
        return self.relay_key.public.raw


def _ctx(request: Request) -> RelayContext:
    ctx: RelayContext = request.app.state.relay
    return ctx


Ctx = Annotated[RelayContext, Depends(_ctx)]


# ------------------------------------------------------------------- edge: limits


class BodyLimit:
    """Refuse request bodies over the limit before reading them (HTTP 413)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _send_error(send, DecodeError(
                f"request body exceeds the limit of {self.max_bytes} bytes", Code.TOO_LARGE))
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _send_error(send, DecodeError(
                f"request body exceeds the limit of {self.max_bytes} bytes", Code.TOO_LARGE))


class _TooLarge(Exception):
    pass


async def _send_error(send: Send, err: SddsfError) -> None:
    response = JSONResponse(err.to_wire(), status_code=err.http_status)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - responses never read
    return {"type": "http.disconnect"}


def client_ip(request: Request, ctx: RelayContext) -> str:
    if ctx.settings.trust_proxy_headers:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.client.host if request.client else "unknown"


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
    h = request.headers
    try:
        nonce = m.unb64(h["x-sddsf-nonce"], "X-Sddsf-Nonce", size=auth.NONCE_SIZE)
        ts_ms = int(h["x-sddsf-timestamp"])
        sig = m.unb64(h["x-sddsf-signature"], "X-Sddsf-Signature", size=64)
    except (KeyError, ValueError):
        raise AuthenticationError("mutating requests need X-Sddsf-Nonce, X-Sddsf-Timestamp "
                                  "(integer ms) and X-Sddsf-Signature headers") from None
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    body = await request.body()
    now = ctx.clock()
    window = ctx.settings.request_window_s * 1000
    try:
        auth.check_request(auth.SignedRequest(request.method, target, body, nonce, ts_ms, sig),
                           key, digest, now_ms=now, window_ms=window)
    except AuthenticationError:
        # A bad signature under a valid session token: the token leaked, or the
        # device is broken. (Session-opening failures are not counted: anyone
        # can ask for a challenge, so they would let a stranger frame a device.)
        await ctx.controller.signal(session.account_id, session.device_id,
                                    SignalKind.SIG_FAILURE)
        raise
    # Keep each nonce for twice the window: any timestamp still inside the
    # window on either side cannot outlive its nonce (THREATS #5).
    if not await ctx.edge.remember_nonce(session.device_id + nonce, now + 2 * window, now):
        await ctx.controller.signal(session.account_id, session.device_id, SignalKind.REPLAY)
        raise AuthenticationError("this request was already received (replayed nonce)",
                                  Code.REPLAY)


Authed = Annotated[Caller, Depends(authenticated)]


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
                      root=m.b64(space.root), epoch=space.epoch)


async def space_of(ctx: RelayContext, caller: Caller, space_b64: str) -> SpaceRecord:
    return await ctx.fabric.space_for(m.unb64(space_b64, "space id", size=SPACE_ID_SIZE),
                                      caller.session.account_id)


def error_response(err: SddsfError) -> JSONResponse:
    headers = {}
    if isinstance(err, RateLimitedError):
        headers["Retry-After"] = str(max(1, int(err.retry_after_s + 0.999)))
    return JSONResponse(err.to_wire(), status_code=err.http_status, headers=headers)


