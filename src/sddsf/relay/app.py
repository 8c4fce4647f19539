"""The relay's ASGI application: ``create_app(settings, storage, relay_key)``.

No globals: everything a handler needs hangs off ``app.state.relay``
(:class:`~sddsf.relay.deps.RelayContext`). Third-party exceptions are
translated once, into ``{code, message}`` bodies; a peer's mistake is always a
4xx, never a 500, and no response carries a stack trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import (
    Code,
    DecodeError,
    NotFoundError,
    SddsfError,
    UnavailableError,
)
from sddsf.relay import models as m
from sddsf.relay.bus import Bus, open_bus
from sddsf.relay.cluster import ClusterLive
from sddsf.relay.controller.policy import load_policy
from sddsf.relay.controller.service import Controller
from sddsf.relay.cors import ApiCors
from sddsf.relay.deps import (
    BodyLimit,
    RelayContext,
    error_body,
    error_response,
    log,
    now_ms,
)
from sddsf.relay.edge import EdgeState, open_edge_state
from sddsf.relay.fabric import Fabric
from sddsf.relay.fanout import Hub
from sddsf.relay.metrics import RelayMetrics
from sddsf.relay.observe import RequestObserver
from sddsf.relay.openapi import complete_openapi
from sddsf.relay.routes import (
    accounts,
    backup,
    bootstrap,
    controller,
    limits,
    live,
    members,
    pairing,
    presence,
    spaces,
)
from sddsf.relay.settings import RelaySettings
from sddsf.relay.storage.base import RelayStorage

__all__ = ["create_app"]


# ------------------------------------------------------------------------ app


def create_app(settings: RelaySettings, storage: RelayStorage, relay_key: Ed25519SigningKey,
               *, edge: EdgeState | None = None,
               clock: Callable[[], int] = now_ms, bus: Bus | bool | None = True) -> FastAPI:
    """Build the relay application around a storage backend.

    The app opens ``storage`` on start-up (applying migrations) and closes it
    on shutdown. ``bus``: the cluster bus; True (the default) picks it from the
    settings (Redis pub/sub with ``redis_url``, else PostgreSQL LISTEN/NOTIFY
    for a PostgreSQL database, else none); False or None for none.
    """
    hub = Hub()
    # The pool gauge reads asyncpg's pool, when the storage has one (PostgreSQL).
    metrics = RelayMetrics(connected=lambda: hub.connected,
                           pool=lambda: getattr(storage, "_pool", None))
    chosen = open_bus(settings.db, settings.redis_url) if bus is True else (bus or None)
    fabric = Fabric(storage, settings, relay_key, clock=clock)
    live_conns = ClusterLive(hub, storage, chosen, fabric.registries)
    fabric.publish = live_conns.publish
    # The edge state comes from the settings (Redis when redis_url is set) unless
    # the caller passes one; the app closes only what it opened itself.
    own_edge = edge is None
    edge_state = edge or open_edge_state(settings.redis_url)

    async def audit_budget(_account_id: bytes, device_id: bytes) -> float:
        # Each device's reports and sessions add audit entries from one bucket.
        return await edge_state.take_tokens(f"audit:{device_id.hex()}", 1,
                                            settings.rate_audit_per_s,
                                            settings.rate_audit_burst, clock())

    # The security controller: trust, policy, detectors, alerts (pushed to the
    # account's WebSockets) and the audit log; it sees every stored op batch, and
    # closes the live connections of a device it denies.
    ctl = Controller(storage, load_policy(settings.policy_file), relay_key,
                     fabric.registries.get, clock=clock, publish=live_conns.publish_account,
                     max_skew_ms=settings.max_skew_s * 1000,
                     window_ms=settings.request_window_s * 1000, audit_budget=audit_budget,
                     live=live_conns)
    fabric.on_batch = ctl.on_batch
    ctx = RelayContext(settings, storage, relay_key, edge_state, hub, fabric, metrics, clock,
                       ctl, live_conns)
    live_conns.refusal = lambda account, device: live.refusal(ctx, account, device)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await storage.open()
        await live_conns.start()
        try:
            yield
        finally:
            await live_conns.close()
            fabric.close()
            if own_edge:
                await ctx.edge.close()
            await storage.close()

    app = FastAPI(title="SDDSF relay", version="1",
                  description="End-to-end encrypted sync relay. Binary fields are base64. "
                              "Errors are {code, message, request_id} with stable codes.",
                  lifespan=lifespan)
    app.state.relay = ctx
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes,
                       timeout_s=settings.body_timeout_s)

    if settings.cors_origin_set:  # off by default: no CORS header at all (sddsf.relay.cors)
        app.add_middleware(ApiCors, origins=settings.cors_origin_set)

    # Outermost (added last): the request id is set before anything else runs.
    app.add_middleware(RequestObserver, metrics=metrics)
    _error_handlers(app, lambda: api_routes)

    routers = (accounts.router, spaces.router, pairing.router, backup.router,
               live.router, controller.router, limits.router, bootstrap.router,
               members.router, presence.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            app.openapi_schema = complete_openapi(schema, api_routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    _routes_health(app, ctx)
    for router in routers:
        app.include_router(router)
    api_routes = [r for r in app.routes if isinstance(r, APIRoute)] + [
        r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    return app


def _error_handlers(app: FastAPI, routes: Callable[[], list[APIRoute]]) -> None:
    @app.exception_handler(SddsfError)
    async def on_sddsf(_: Request, exc: SddsfError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(DecodeError(f"malformed request: {where}: "
                                           f"{first.get('msg', 'invalid')}"))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFoundError("no such endpoint"))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method the path serves (the router names one route's)
            path = request.url.path
            allowed = {m for r in routes() if r.path_regex.match(path) for m in r.methods or ()}
            headers["Allow"] = ", ".join(sorted(allowed)) or headers.get("Allow", "")
        return JSONResponse(error_body({"code": Code.USAGE.value, "message": str(exc.detail)}),
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def on_bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in relay handler", exc_info=exc)
        return JSONResponse(error_body({"code": Code.INTERNAL.value,
                                        "message": "internal relay error; nothing was "
                                                   "acknowledged"}),
                            status_code=500)


def _routes_health(app: FastAPI, ctx: RelayContext) -> None:
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"model": m.ErrorBody}})
    async def readyz() -> dict[str, str]:
        """Readiness: the database answers within ``db_timeout_s`` and can take writes
        (not stalled, its disk neither full nor read-only), Redis answers (with
        ``redis_url``), and the cluster bus is connected (several processes).
        Otherwise 503 ``unavailable`` naming every reason."""
        reasons: list[str] = []
        try:
            reasons += await ctx.storage.not_ready()
        except SddsfError as exc:
            reasons.append(exc.message)
        try:
            await ctx.edge.ping()
        except SddsfError as exc:
            reasons.append(exc.message)
        if ctx.live.bus is not None and not ctx.live.bus.up:
            reasons.append("the cluster bus is disconnected (live updates from other "
                           "processes are delayed)")
        if reasons:
            raise UnavailableError("not ready: " + "; ".join(reasons))
        return {"status": "ready", "schema": str(await ctx.storage.schema_version())}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics_endpoint() -> PlainTextResponse:
        """Prometheus metrics."""
        body, content_type = ctx.metrics.render()
        return PlainTextResponse(body, media_type=content_type)
