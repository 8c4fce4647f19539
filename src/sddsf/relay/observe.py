"""What an operator sees of each request: its request id, one access-log line,
and its HTTP metrics; and the log formats (``text`` or ``json``).

* **Request id**: the client's ``X-Request-Id`` if it is sane (1 to 128 of
  ``A-Z a-z 0-9 . _ : - / + =``), else 32 random hex digits. It is echoed in
  the ``X-Request-Id`` response header, in every error body (``request_id``)
  and on every log line written while the request is served (a context
  variable read by the formatters).
* **Access log**: one line per HTTP request or WebSocket connection (logger
  ``sddsf.relay.access``, INFO), written by :class:`RequestObserver` instead of
  uvicorn's access log. Its path keeps the query string with secret parameters
  (``ticket``, ``token``) masked.
* **Masking**: both formatters mask ``ticket=``/``token=`` query values and
  ``Bearer`` credentials in *every* message, so a line written by a library
  (uvicorn's WebSocket ``[accepted]`` line quotes the URL) cannot leak them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from sddsf.relay.metrics import RelayMetrics

__all__ = ["REQUEST_ID", "JsonFormatter", "RequestObserver", "TextFormatter",
           "current_request_id", "log_config", "mask"]

#: The id of the request being served in this context ("" outside a request).
REQUEST_ID: Final[contextvars.ContextVar[str]] = contextvars.ContextVar("sddsf_request_id",
                                                                         default="")
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Query values and credentials that must never reach a log (single-use WebSocket
# tickets, pairing/bearer tokens), raw or percent-encoded.
_SECRET_QUERY = re.compile(r"(?i)\b(ticket|token|access_token)=[^&\s\"']*")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
access_log = logging.getLogger("sddsf.relay.access")


def current_request_id() -> str:
    """The request id of the request being served, or "" outside one."""
    return REQUEST_ID.get()


def mask(text: str) -> str:
    """``text`` with secret query values and bearer credentials replaced by ``***``."""
    return _BEARER.sub(r"\1 ***", _SECRET_QUERY.sub(r"\1=***", text))


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            try:
                text = bytes(value).decode("ascii")
            except UnicodeDecodeError:
                break
            if _SANE_ID.fullmatch(text):
                return text
            break
    return secrets.token_hex(16)


class RequestObserver:
    """Outermost ASGI middleware: request id, access line, HTTP metrics."""

    def __init__(self, app: ASGIApp, metrics: RelayMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        status = 0
        header = (b"x-request-id", rid.encode("ascii"))

        async def observed(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif kind == "websocket.accept":
                status = 101
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif kind in ("websocket.close", "websocket.http.response.start") and not status:
                status = 403 if kind == "websocket.close" else int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed)
        except BaseException:
            status = status or 500  # a bug; ServerErrorMiddleware answers 500
            raise
        finally:
            self._record(scope, status, time.perf_counter() - started)
            REQUEST_ID.reset(token)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        method = "WEBSOCKET" if scope["type"] == "websocket" else str(scope.get("method"))
        query = scope.get("query_string", b"").decode("latin-1")
        path = mask(scope.get("path", "") + (f"?{query}" if query else ""))
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "-"
        if self.metrics is not None and scope["type"] == "http":
            self.metrics.observe_request(method, route, status, seconds)
        access_log.info('%s "%s %s" %d %.1f ms', peer, method, path, status, seconds * 1000,
                        extra={"method": method, "path": path, "route": route,
                               "status": status, "duration_ms": round(seconds * 1000, 3),
                               "client": peer})


# ------------------------------------------------------------------- formats

_ACCESS_FIELDS: Final = ("method", "path", "route", "status", "duration_ms", "client")


class TextFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,000 INFO sddsf.relay: message request_id=...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = mask(super().format(record))
        rid = current_request_id()
        return f"{line} request_id={rid}" if rid else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ms), ``level``, ``logger``,
    ``message``, ``request_id`` inside a request, the access fields on access
    lines, ``exc`` with the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        rid = current_request_id()
        if rid:
            out["request_id"] = rid
        for name in _ACCESS_FIELDS:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["exc"] = mask(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def log_config(fmt: str, level: str) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for the relay and uvicorn: one stderr
    handler in ``fmt`` (``text`` or ``json``) at ``level``; uvicorn's own access
    log off (:class:`RequestObserver` writes one)."""
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"relay": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "relay",
                                "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "sddsf": {"handlers": ["stderr"], "level": upper, "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
