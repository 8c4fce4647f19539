"""Live fan-out over WebSocket, authenticated with single-use tickets.

A connection lives only while its device may read: revocation and the controller
denying the device close it (4403); the controller's verdict is also checked when
the connection opens and on every subscription."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import cast

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from sddsf.crypto import random_bytes
from sddsf.errors import (
    AuthorizationError,
    DecodeError,
    SddsfError,
)
from sddsf.relay import models as m
from sddsf.relay.deps import (
    MAX_WS_FRAME,
    SPACE_ID_SIZE,
    Authed,
    Ctx,
    RelayContext,
)
from sddsf.relay.fanout import DIRECT_WRITE, Subscriber

router = APIRouter()


@router.post("/v1/ws/ticket", response_model=m.TicketResponse, tags=["live"])
async def ticket(caller: Authed, ctx: Ctx) -> m.TicketResponse:
    """A single-use ticket for ``GET /v1/ws?ticket=...`` (WebSocket)."""
    value = random_bytes(32)
    now = ctx.clock()
    expires = now + ctx.settings.ticket_ttl_s * 1000
    await ctx.edge.put_ticket(value, caller.session, expires, now)
    return m.TicketResponse(ticket=m.b64(value), expires_ms=expires)


@router.websocket("/v1/ws")
async def live(ws: WebSocket, ticket: str = "") -> None:
    """Live fan-out: send {"type": "subscribe", "space": b64}; receive op/resync/close."""
    ctx: RelayContext = ws.app.state.relay
    try:
        session = await ctx.edge.take_ticket(m.unb64(ticket, "ticket", size=32),
                                             ctx.clock())
    except DecodeError:
        session = None
    if session is None:
        # Accept first: a close before accept is an HTTP 403 without a reason;
        # an accepted-then-closed socket tells the client why (code 4401).
        await ws.accept()
        await ws.close(code=4401, reason="ticket unknown, expired or used")
        return
    await ws.accept()
    refused = await refusal(ctx, session.account_id, session.device_id)
    if refused:  # revoked or denied since the ticket was issued
        await ws.close(code=4403, reason=refused)
        return
    sub = Subscriber(session.account_id, session.device_id, ctx.settings.ws_queue_max)
    writer = ws.scope.get("extensions", {}).get(DIRECT_WRITE)
    if callable(writer):  # served by the relay's own uvicorn protocol
        sub.direct = cast(Callable[[bytes], bool], writer)
    ctx.hub.add(sub)
    sender = asyncio.create_task(_ws_send(ws, sub))
    try:
        await _ws_receive(ws, sub, ctx)
    except WebSocketDisconnect:
        pass
    finally:
        ctx.hub.remove(sub)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def refusal(ctx: RelayContext, account_id: bytes, device_id: bytes) -> str:
    """Why the device may not read now (a close reason), or "" if it may."""
    registry = await ctx.fabric.registries.get(account_id)
    if not registry.is_active(device_id):
        return "revoked"
    try:
        await ctx.controller.require_access(account_id, device_id, write=False)
    except AuthorizationError as exc:
        return exc.code.value
    return ""


async def _ws_send(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        message = await sub.next_message()
        try:
            if message.get("type") == "close":
                await ws.close(code=4403, reason=str(message.get("reason", "closed")))
                return
            encoded = message.get("frame")
            if isinstance(encoded, str):  # encoded once for every subscriber
                await ws.send_text(encoded)
                continue
            await ws.send_json({k: m.b64(v) if isinstance(v, bytes) else v
                                for k, v in message.items()})
        finally:
            sub.sent()


async def _ws_receive(ws: WebSocket, sub: Subscriber, ctx: RelayContext) -> None:
    while True:
        frame = await ws.receive()
        if frame["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(frame.get("code", 1000))
        text = frame.get("text")
        if text is None:
            await ws.close(code=1003, reason="send JSON text frames")
            return
        if len(text) > MAX_WS_FRAME:
            await ws.close(code=1009, reason="frame too large")
            return
        refused = await refusal(ctx, sub.account_id, sub.device_id)
        if refused:
            await ws.close(code=4403, reason=refused)
            return
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict) or msg.get("type") != "subscribe":
                raise DecodeError("expected {\"type\": \"subscribe\", \"space\": ...}")
            space = await ctx.fabric.space_for(
                m.unb64(str(msg.get("space", "")), "space id", size=SPACE_ID_SIZE),
                sub.account_id)
        except (ValueError, SddsfError) as exc:
            err = exc if isinstance(exc, SddsfError) else DecodeError("malformed JSON frame")
            await ws.send_json({"type": "error", **err.to_wire()})
            continue
        # Subscribe first, then read the size: an op committed in between is
        # then both below the reported size and pushed (the client dedupes by
        # offset), never missing from both.
        ctx.hub.subscribe(sub, space.space_id)
        space = await ctx.fabric.space_for(space.space_id, sub.account_id)
        ctx.live.subscribed(space.space_id, space.size)
        await ws.send_json({"type": "subscribed", "space": m.b64(space.space_id),
                            "size": space.size})
