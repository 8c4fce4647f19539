"""The direct frame writer (sddsf.relay.wsdirect) inside a real uvicorn server.

The fan-out only takes the direct path when the server offers it; if a uvicorn
release renamed the internals it reads, every frame would silently take the
slower ASGI path. These tests hold that the installed uvicorn offers the writer,
that a frame written through it arrives intact and in order after ASGI sends,
and that it refuses (writes nothing) once the connection is closing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import websockets
from tests.relay.livekit import free_port

from sddsf.relay.fanout import DIRECT_WRITE, text_frame
from sddsf.relay.wsdirect import LiveWebSocketProtocol

Scope = dict[str, Any]


class _App:
    """Accepts, sends one message through ASGI, then two frames through the
    direct writer; records what the writer returned, including after close."""

    def __init__(self) -> None:
        self.offered: list[bool] = []
        self.written: list[bool] = []
        self.after_close: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "through asgi"})
        writer = scope["extensions"].get(DIRECT_WRITE)
        self.offered.append(writer is not None)
        if writer is None:
            return
        self.written += [writer(text_frame("direct 1")), writer(text_frame("direct 2"))]
        while (await receive())["type"] != "websocket.disconnect":
            pass
        self.after_close.set_result(writer(text_frame("too late")))


@contextlib.asynccontextmanager
async def serving(app: _App, *, deflate: bool = False) -> AsyncIterator[int]:
    """A real uvicorn server with the relay's protocol on a free port; yields the port."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, ws=LiveWebSocketProtocol,
                            ws_per_message_deflate=deflate, lifespan="off", log_level="error")
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        srv.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def server() -> AsyncIterator[tuple[_App, int]]:
    app = _App()
    async with serving(app) as port:
        yield app, port


async def test_direct_frames_arrive_in_order_after_asgi_sends(
        server: tuple[_App, int]) -> None:
    app, port = server
    async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
    assert app.offered == [True]
    assert app.written == [True, True]
    assert got == ["through asgi", "direct 1", "direct 2"]


async def test_the_writer_refuses_once_the_connection_is_closed(
        server: tuple[_App, int]) -> None:
    app, port = server
    async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
        for _ in range(3):
            await asyncio.wait_for(ws.recv(), 5)
    assert await asyncio.wait_for(app.after_close, 5) is False


async def test_not_offered_when_compression_was_negotiated() -> None:
    # With permessage-deflate a pre-encoded frame is not valid on the wire.
    app = _App()
    async with serving(app, deflate=True) as port, \
            websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == "through asgi"
    assert app.offered == [False]
