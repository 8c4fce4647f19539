"""Presence records (protocol.md 17.4.14, 23.5): where the devices of a space can
be reached peer to peer.

A device publishes its own signed, encrypted record per space; the relay checks
what it can without the space's keys (the structure, that the caller signed it,
the space, the expiry) and keeps it in the edge state until it expires, never
in the database: presence is ephemeral, and a relay restart only means devices
publish again. Reading serves the live records of the devices of accounts that
may read the space now, so a removed member's or revoked device's record stops
being served at once.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter

from sddsf.errors import AuthorizationError, Code, DecodeError
from sddsf.protocol.identity import ID_SIZE
from sddsf.protocol.presence import decode_presence, verify_presence
from sddsf.protocol.registry import RegistryState
from sddsf.relay import models as m
from sddsf.relay.deps import Authed, Ctx, RelayContext, rate_limit, space_of
from sddsf.relay.storage.base import SpaceRecord

__all__ = ["MAX_PRESENCE_DEVICES", "router"]

router = APIRouter()
#: The most devices with a live record in one space (a further one is refused).
MAX_PRESENCE_DEVICES: Final = 256


@router.put("/v1/spaces/{space_id}/presence", response_model=m.PresenceStored,
            tags=["presence"])
async def put_presence(space_id: str, body: m.PresenceIn, caller: Authed,
                       ctx: Ctx) -> m.PresenceStored:
    """Store the calling device's presence record in the space, replacing its
    previous one, until the record's ``expires_ms`` (at most one hour ahead).

    Any device whose account may read the space publishes (a reader of a shared
    space too: it syncs peer to peer as well)."""
    space = await space_of(ctx, caller, space_id)
    device, account = caller.session.device_id, caller.session.account_id
    s = ctx.settings
    await rate_limit(ctx, f"presence:{device.hex()}", 1, s.rate_presence_per_s,
                     s.rate_presence_burst)
    raw = m.unb64(body.record, "presence record")
    record = decode_presence(raw)
    if record.device != device:
        raise AuthorizationError("a device publishes only its own presence record",
                                 Code.NOT_AUTHORIZED)
    now = ctx.clock()
    # No skew allowance: the lifetime is the relay's to bound (23.5).
    verify_presence(record, await ctx.fabric.registries.get(account), space=space.space_id,
                    now_ms=now)
    # Stored with its account, so reads can drop the records of accounts that
    # may no longer read the space, and of devices revoked since.
    if not await ctx.edge.put_presence(space.space_id, device, account + raw,
                                       record.expires_ms, now,
                                       max_devices=MAX_PRESENCE_DEVICES):
        raise DecodeError(f"the space already has {MAX_PRESENCE_DEVICES} devices present; "
                          "retry when one of their records expires", Code.TOO_LARGE)
    return m.PresenceStored(expires_ms=record.expires_ms)


@router.get("/v1/spaces/{space_id}/presence", response_model=m.PresenceRecords,
            tags=["presence"])
async def get_presence(space_id: str, caller: Authed, ctx: Ctx) -> m.PresenceRecords:
    """Every live presence record of the space (the caller's own included), of
    active devices of the accounts that may read the space; verify and open each."""
    space = await space_of(ctx, caller, space_id)
    readers = await _readers(ctx, space)
    registries: dict[bytes, RegistryState] = {}
    records = []
    for device, value in await ctx.edge.presence(space.space_id, ctx.clock()):
        account, raw = value[:ID_SIZE], value[ID_SIZE:]
        if account not in readers:
            continue
        if account not in registries:
            registries[account] = await ctx.fabric.registries.get(account)
        if registries[account].is_active(device):
            records.append(m.b64(raw))
    return m.PresenceRecords(records=records)


async def _readers(ctx: RelayContext, space: SpaceRecord) -> set[bytes]:
    # The accounts that reach the space (21.7): its members once shared, else its owner.
    members = await ctx.storage.space_members(space.space_id)
    return set(members) if members else {space.account_id}
