"""The pairing mailbox (version 2): short-lived, single-use, numbered channels of
opaque messages between exactly two slot holders (docs/protocol.md 17.4.7).

The initiator opens a channel with a token of its choosing and gets its number;
the first joiner to claim the number binds the other slot to its token; a
second claim burns the channel. Every later request names its slot by its
token (``X-Sddsf-Pairing-Token``); the relay stores only their hashes.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Depends, Header, Query

from sddsf.crypto import blake2b_256, random_bytes
from sddsf.errors import AuthenticationError, Code, DecodeError
from sddsf.protocol.pairing import MESSAGE_COUNT, PAIRING_VERSION, TOKEN_SIZE
from sddsf.relay import models as m
from sddsf.relay.deps import (
    Ctx,
    limit_ip,
)

router = APIRouter()

TOKEN_HEADER: Final = "x-sddsf-pairing-token"  # noqa: S105 - a header name
Token = Annotated[str | None, Header(
    alias=TOKEN_HEADER, max_length=64, pattern=r"^[A-Za-z0-9_-]*={0,2}$",
    description="base64 of the caller's 32-byte slot token (the one it opened or claimed "
                "the channel with)")]


def _token_hash(token: str | None) -> bytes:
    """The stored form of a slot token. Raises AuthenticationError without one."""
    if token is None:
        raise AuthenticationError(f"missing {TOKEN_HEADER} header: the pairing channel's "
                                  "slot token")
    return blake2b_256(m.unb64(token, "pairing token", size=TOKEN_SIZE))


@router.post("/v1/pairing", response_model=m.ChannelCreated, tags=["pairing"],
             dependencies=[Depends(limit_ip)])
async def open_channel(ctx: Ctx, token: Token = None,
                       body: m.ChannelOpen | None = None) -> m.ChannelCreated:
    """Open a short-lived, single-use mailbox; its number starts the pairing code."""
    if body is None or body.version != PAIRING_VERSION:
        raise DecodeError(f"this relay speaks pairing version {PAIRING_VERSION} only: update "
                          "sddsf on both devices", Code.UNSUPPORTED_VERSION)
    digest = _token_hash(token)
    cid, now = random_bytes(16), ctx.clock()
    ttl_ms = ctx.settings.pairing_ttl_s * 1000
    # The number stays reserved for a second lifetime, so a late claim of an
    # old code finds the old channel instead of a stranger's new one.
    nameplate = await ctx.storage.create_channel(cid, digest, now, now + ttl_ms,
                                                 now + 2 * ttl_ms)
    return m.ChannelCreated(channel_id=m.b64(cid), nameplate=nameplate,
                            expires_ms=now + ttl_ms, version=PAIRING_VERSION)


@router.post("/v1/pairing/claim", response_model=m.ChannelClaimed, tags=["pairing"],
             dependencies=[Depends(limit_ip)])
async def claim_channel(body: m.ChannelClaim, ctx: Ctx,
                        token: Token = None) -> m.ChannelClaimed:
    """Claim the joiner slot of a numbered channel; a second claimer burns it."""
    claimed = await ctx.storage.claim_channel(body.nameplate, _token_hash(token), ctx.clock())
    return m.ChannelClaimed(channel_id=m.b64(claimed.channel_id),
                            expires_ms=claimed.expires_ms)


@router.post("/v1/pairing/{channel_id}/messages", response_model=m.ChannelMessages,
             tags=["pairing"], dependencies=[Depends(limit_ip)])
async def post_message(channel_id: str, body: m.ChannelMessageIn, ctx: Ctx,
                       token: Token = None) -> m.ChannelMessages:
    """Post message ``index`` in the caller's turn (retries are answered as stored)."""
    cid = m.unb64(channel_id, "channel id", size=16)
    limit = max(ctx.settings.pairing_max_messages, MESSAGE_COUNT)
    stored = await ctx.storage.post_channel_message(
        cid, _token_hash(token), body.index, m.unb64(body.body, "body"), ctx.clock(), limit)
    return m.ChannelMessages(messages=[m.ChannelMessage(
        index=stored.index, sender=stored.sender, body=m.b64(stored.body))])


@router.get("/v1/pairing/{channel_id}/messages", response_model=m.ChannelMessages,
            tags=["pairing"], dependencies=[Depends(limit_ip)])
async def read_messages(channel_id: str, ctx: Ctx,
                        after: Annotated[m.DecimalInt, Query(ge=-1, le=m.INT64_MAX)] = -1,
                        token: Token = None) -> m.ChannelMessages:
    """Messages after ``after``."""
    msgs = await ctx.storage.channel_messages(m.unb64(channel_id, "channel id", size=16),
                                              _token_hash(token), after, ctx.clock())
    return m.ChannelMessages(messages=[m.ChannelMessage(
        index=x.index, sender=x.sender, body=m.b64(x.body)) for x in msgs])


@router.post("/v1/pairing/{channel_id}/burn", response_model=m.ChannelMessages,
             tags=["pairing"], dependencies=[Depends(limit_ip)])
async def burn(channel_id: str, ctx: Ctx, token: Token = None,
               body: m.ChannelBurn | None = None) -> m.ChannelMessages:
    """Burn the channel (done, or stopped: the reason is shown to the other side)."""
    reason = body.reason if body is not None else "failed"
    await ctx.storage.burn_channel(m.unb64(channel_id, "channel id", size=16),
                                   _token_hash(token), reason)
    return m.ChannelMessages(messages=[])
