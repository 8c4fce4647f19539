"""``sddsf web``: serve the built web app (clients/web) on loopback, with the
relay's API on the same origin.

The browser app talks to the relay at its own origin (docs/web-client.md), so
this command serves the app's files and forwards ``/v1/`` (HTTP, and the
WebSocket live channel) and ``/healthz`` to the relay: no CORS needed. It only
forwards bytes: the app verifies and decrypts everything itself, and the
forwarder never sees a key. Nothing is logged but the start line (no request
lines: an app's URLs carry no secret, but its traffic is nobody's business).

:class:`WebFront` is the ASGI application; it takes an httpx transport for the
relay, so tests can put a lying relay behind the same front.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
from pathlib import Path
from typing import Any, Final

import click
import httpx

from sddsf.cli.output import say
from sddsf.errors import UsageError

__all__ = ["WebFront", "default_dist", "register"]

DEFAULT_PORT: Final = 8788
MAX_BODY: Final = 16 << 20  # a request body larger than any relay limit is not forwarded
#: Hop-by-hop headers (RFC 9110 7.6.1), and those the forwarder sets itself.
_DROP: Final = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                          "te", "trailer", "transfer-encoding", "upgrade", "host",
                          "content-length", "content-encoding"})
_STATIC_HEADERS: Final = [(b"x-content-type-options", b"nosniff"),
                          (b"referrer-policy", b"no-referrer"),
                          (b"x-frame-options", b"DENY")]


def default_dist() -> Path:
    """``clients/web/dist`` of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[3] / "clients" / "web" / "dist"


def _relay_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/healthz"


class WebFront:
    """ASGI app: the files of ``dist``, and ``/v1/`` forwarded to ``upstream``.

    Args:
        dist: the built app (``index.html`` and its assets).
        upstream: the relay's base URL (``http://host:port``).
        transport: how HTTP reaches the relay (default: the network).
        websocket_app: an in-process ASGI relay app to hand WebSockets to
            (tests); default: a WebSocket client to ``upstream``.
    """

    def __init__(self, dist: Path, upstream: str, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 websocket_app: Any = None) -> None:
        self.dist = dist.resolve()
        self.upstream = upstream.rstrip("/")
        self.client = httpx.AsyncClient(transport=transport, timeout=120.0)
        self.websocket_app = websocket_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            if self.websocket_app is not None:
                await self.websocket_app(scope, receive, send)
            else:
                await self._tunnel(scope, receive, send)
        elif _relay_path(scope["path"]):
            await self._forward(scope, receive, send)
        else:
            await self._file(scope, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _file(self, scope: dict[str, Any], send: Any) -> None:
        path = scope["path"]
        name = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
        target = (self.dist / name).resolve()
        # Only files inside dist (no "..", no symlink out of it).
        if (scope["method"] not in ("GET", "HEAD") or not target.is_relative_to(self.dist)
                or not target.is_file()):
            await _plain(send, 404, b"not found")
            return
        body = target.read_bytes()
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        # Hashed asset names never change; index.html must always be fresh.
        cache = b"no-store" if name == "index.html" else b"public, max-age=3600"
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", kind.encode()), (b"content-length", str(len(body)).encode()),
            (b"cache-control", cache), *_STATIC_HEADERS]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})

    async def _forward(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY:
                await _plain(send, 413, b"request too large")
                return
            if not message.get("more_body", False):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                   if k.decode("latin-1").lower() not in _DROP]
        query = scope.get("query_string", b"").decode("latin-1")
        url = self.upstream + scope["path"] + (f"?{query}" if query else "")
        try:
            answer = await self.client.request(scope["method"], url, headers=headers,
                                               content=b"".join(chunks))
        except httpx.HTTPError:
            await _plain(send, 502, b'{"code":"unavailable","message":"the relay cannot '
                         b'be reached"}', b"application/json")
            return
        body = answer.content
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()
               if k.lower() not in _DROP]
        out.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": answer.status_code, "headers": out})
        await send({"type": "http.response.body", "body": body})

    async def _tunnel(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from websockets.asyncio.client import connect  # noqa: PLC0415 - only for live pages
        from websockets.exceptions import ConnectionClosed  # noqa: PLC0415

        first = await receive()
        if first["type"] != "websocket.connect" or not _relay_path(scope["path"]):
            await send({"type": "websocket.close", "code": 1008})
            return
        query = scope.get("query_string", b"").decode("latin-1")
        url = ("ws" + self.upstream.removeprefix("http")) + scope["path"] + (
            f"?{query}" if query else "")
        try:
            upstream = await connect(url, max_size=MAX_BODY, open_timeout=30)
        except (OSError, TimeoutError, ConnectionClosed, ValueError) as exc:
            # The relay refused the handshake (a bad ticket is 4401 after accept) or is down.
            say(f"web: the relay's live channel cannot be reached: {exc}", err=True)
            await send({"type": "websocket.close", "code": 1011})
            return
        await send({"type": "websocket.accept"})

        async def to_relay() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    await upstream.close()
                    return
                data = message.get("text") if message.get("text") is not None else message.get(
                    "bytes")
                if data is not None:
                    await upstream.send(data)

        async def to_browser() -> None:
            try:
                async for data in upstream:
                    key = "text" if isinstance(data, str) else "bytes"
                    await send({"type": "websocket.send", key: data})
            except ConnectionClosed:
                pass
            # The relay's close code (4401, 4403: revoked) reaches the page as is.
            code = upstream.close_code or 1000
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": code,
                            "reason": upstream.close_reason or ""})

        tasks = [asyncio.ensure_future(to_relay()), asyncio.ensure_future(to_browser())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await upstream.close()


async def _plain(send: Any, status: int, body: bytes, kind: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _home_relay(ctx: click.Context) -> str:
    from sddsf.cli.device_cmds import _with_device  # noqa: PLC0415 - opens the home only if needed

    async def url(device: Any) -> str:
        return str(device.relay_url)

    return await _with_device(ctx, url)


@click.command()
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1 to serve on (0: any free port).")
@click.option("--relay", "relay_url", default=None,
              help="The relay's URL (default: the relay of this home's device).")
@click.option("--dist", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The built web app (default: clients/web/dist of this checkout).")
@click.pass_context
def web(ctx: click.Context, port: int, relay_url: str | None, dist: Path | None) -> None:
    """Serve the web app on http://127.0.0.1:PORT, with the relay's API on the same origin.

    Open the printed URL in a browser and pair it with `sddsf device add`. The
    browser verifies and decrypts everything itself; this command only serves
    the app's files and forwards /v1/ (HTTP and the live WebSocket) to the
    relay. Build the app first: (cd clients/ts && npm ci && npm run build) and then
    (cd clients/web && npm ci && npm run build).
    """
    import uvicorn  # noqa: PLC0415 - only this command serves

    dist = dist or default_dist()
    if not (dist / "index.html").is_file():
        raise UsageError(f"no built web app in {dist}: run `npm ci && npm run build` in "
                         "clients/ts, then in clients/web, or give --dist")
    if relay_url is None:
        relay_url = asyncio.run(_home_relay(ctx))
    if not relay_url.startswith(("http://", "https://")):
        raise UsageError(f"--relay {relay_url!r}: give an http:// or https:// URL")
    front = WebFront(dist, relay_url)
    config = uvicorn.Config(front, host="127.0.0.1", port=port, log_level="warning",
                            access_log=False, lifespan="on", ws="websockets")
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.ensure_future(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1]
            say(f"web app on http://127.0.0.1:{bound}/ (relay {relay_url}); Ctrl-C stops")
        await task

    asyncio.run(serve())


def register(cli: click.Group) -> None:
    """Attach ``web`` to the top-level group."""
    cli.add_command(web)
