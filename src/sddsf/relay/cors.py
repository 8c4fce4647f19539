"""CORS for the relay's API: the ``cors_origins`` allow-list (docs/operations.md).

Off by default: with no origin listed, the app does not install this and no
answer carries a CORS header, so a page on another origin cannot read the API.
With origins listed, requests to ``/v1/`` from exactly those origins get:

* a preflight answer (204) when the method is one the API uses and every
  requested header is ``authorization``, ``content-type`` or ``x-sddsf-*``
  (signed requests, key-signed reads, the pairing token); any other preflight
  is 403 without CORS headers;
* on real answers (errors included): ``Access-Control-Allow-Origin`` with that
  origin and ``Retry-After`` exposed (the clients' back-off reads it).

No credentials: the API is authorized by its headers, never by cookies, so
``Access-Control-Allow-Credentials`` is never sent. The WebSocket live channel
needs no CORS (browsers do not preflight it); it is authorized by a ticket from
an authenticated request.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ApiCors"]

API_PREFIX: Final = "/v1/"
METHODS: Final = ("GET", "POST", "PUT", "DELETE")
NAMED_HEADERS: Final = frozenset({"authorization", "content-type"})
HEADER_PREFIX: Final = "x-sddsf-"
MAX_AGE_S: Final = 600


def _header_allowed(name: str) -> bool:
    if name in NAMED_HEADERS:
        return True
    return name.startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX)


class ApiCors:
    """ASGI middleware answering CORS for ``origins`` on the API paths."""

    def __init__(self, app: ASGIApp, origins: frozenset[str]) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        if origin is None or origin not in self.origins:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(origin, headers, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = [(k, v) for k, v in message.get("headers", [])
                       if k.lower() != b"vary"]
                vary = [v for k, v in message.get("headers", []) if k.lower() == b"vary"]
                out += [(b"access-control-allow-origin", origin.encode("latin-1")),
                        (b"access-control-expose-headers", b"retry-after"),
                        (b"vary", b", ".join([*vary, b"Origin"]))]
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, origin: str, headers: dict[str, str], send: Send) -> None:
        method = headers["access-control-request-method"].strip().upper()
        asked = [h.strip().lower() for h in headers.get("access-control-request-headers", "")
                 .split(",") if h.strip()]
        if method not in METHODS or not all(_header_allowed(h) for h in asked):
            await _answer(send, 403, [(b"vary", b"Origin")])
            return
        # The allowed headers: the named ones and those asked for (a pattern
        # cannot be sent, so every x-sddsf-* header asked for is echoed).
        allowed = sorted(NAMED_HEADERS | set(asked))
        await _answer(send, 204, [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", ", ".join(METHODS).encode()),
            (b"access-control-allow-headers", ", ".join(allowed).encode("latin-1")),
            (b"access-control-max-age", str(MAX_AGE_S).encode()),
            (b"vary", b"Origin")])


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
