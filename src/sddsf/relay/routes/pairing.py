"""The pairing mailbox: short-lived, single-use channels of opaque messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from sddsf.crypto import random_bytes
from sddsf.relay import models as m
from sddsf.relay.deps import (
    Ctx,
    limit_ip,
)

router = APIRouter()


@router.post("/v1/pairing", response_model=m.ChannelCreated, tags=["pairing"],
          dependencies=[Depends(limit_ip)])
async def open_channel(ctx: Ctx) -> m.ChannelCreated:
    """Open a short-lived, single-use mailbox for two devices to run SPAKE2."""
    cid = random_bytes(16)
    expires = ctx.clock() + ctx.settings.pairing_ttl_s * 1000
    await ctx.storage.create_channel(cid, expires)
    return m.ChannelCreated(channel_id=m.b64(cid), expires_ms=expires)


@router.post("/v1/pairing/{channel_id}/messages", response_model=m.ChannelMessages,
          tags=["pairing"], dependencies=[Depends(limit_ip)])
async def post_message(channel_id: str, body: m.ChannelMessageIn,
                       ctx: Ctx) -> m.ChannelMessages:
    """Append an opaque message."""
    cid = m.unb64(channel_id, "channel id", size=16)
    index = await ctx.storage.post_channel_message(
        cid, body.sender, m.unb64(body.body, "body"), ctx.clock(),
        ctx.settings.pairing_max_messages)
    return m.ChannelMessages(messages=[m.ChannelMessage(index=index, sender=body.sender,
                                                        body=body.body)])


@router.get("/v1/pairing/{channel_id}/messages", response_model=m.ChannelMessages,
         tags=["pairing"], dependencies=[Depends(limit_ip)])
async def read_messages(channel_id: str, ctx: Ctx,
                        after: Annotated[int, Query(ge=-1, le=m.INT64_MAX)] = -1
                        ) -> m.ChannelMessages:
    """Messages after ``after``."""
    msgs = await ctx.storage.channel_messages(m.unb64(channel_id, "channel id", size=16),
                                              after, ctx.clock())
    return m.ChannelMessages(messages=[m.ChannelMessage(
        index=x.index, sender=x.sender, body=m.b64(x.body)) for x in msgs])


@router.post("/v1/pairing/{channel_id}/burn", response_model=m.ChannelMessages,
          tags=["pairing"], dependencies=[Depends(limit_ip)])
async def burn(channel_id: str, ctx: Ctx) -> m.ChannelMessages:
    """Burn the channel (after a failed confirmation, or when done)."""
    await ctx.storage.burn_channel(m.unb64(channel_id, "channel id", size=16))
    return m.ChannelMessages(messages=[])


