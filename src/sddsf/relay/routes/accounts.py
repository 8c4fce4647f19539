"""Accounts, the registry sigchain, and device sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from sddsf.crypto import random_bytes
from sddsf.errors import (
    AuthenticationError,
    AuthorizationError,
    Code,
    NotFoundError,
    RegistryError,
)
from sddsf.protocol import auth
from sddsf.protocol.approval import check_enact_on_clock
from sddsf.protocol.bootstrap import RELAY_FEATURES
from sddsf.protocol.identity import ID_SIZE
from sddsf.protocol.registry import (
    APPROVAL_TYPES,
    EntryType,
    RegistryEntry,
    RegistryState,
    decode_entry,
    verify_registry,
)
from sddsf.relay import models as m
from sddsf.relay.deps import (
    Ctx,
    limit_ip,
    log,
    rate_limit,
    registry_reader,
)
from sddsf.relay.edge import Session

router = APIRouter()


@router.post("/v1/accounts", response_model=m.AccountCreated, tags=["registry"],
          dependencies=[Depends(limit_ip)])
async def create_account(body: m.CreateAccount, ctx: Ctx) -> m.AccountCreated:
    """Create an account from its genesis entry (self-authenticating: signed by the
    account key and countersigned by the first device)."""
    genesis = m.unb64(body.genesis, "genesis")
    state = verify_registry([genesis], pinned=None)
    created = await ctx.storage.create_account(state.account_id, genesis, ctx.clock())
    return m.AccountCreated(account_id=m.b64(state.account_id), created=created)


@router.get("/v1/accounts/{account_id}/registry", response_model=m.RegistryEntries,
         tags=["registry"], dependencies=[Depends(limit_ip)])
async def get_registry(account_id: str, request: Request, ctx: Ctx,
                       since: Annotated[m.DecimalInt, Query(ge=0, le=m.INT64_MAX)] = 0
                       ) -> m.RegistryEntries:
    """Registry entries from ``since``; verify them from genesis against your pinned key.
    Needs a session of the account, or a request signed by the account key, one of
    its devices, or the device an open proposal would add (device names, revoke
    reasons and the policy are not public)."""
    aid = m.unb64(account_id, "account id", size=ID_SIZE)
    await registry_reader(request, ctx, aid)
    entries = await ctx.storage.registry_entries(aid, since)
    if not entries and since == 0:
        raise NotFoundError("no account with this id on this relay")
    return m.RegistryEntries(entries=[m.b64(e) for e in entries],
                             next_seq=since + len(entries))


@router.post("/v1/accounts/{account_id}/registry", response_model=m.RegistryEntries,
          tags=["registry"], dependencies=[Depends(limit_ip)])
async def append_registry(account_id: str, body: m.RegistryEntryIn,
                          ctx: Ctx) -> m.RegistryEntries:
    """Append one signed entry (self-authenticating; verified from genesis). A revoke
    closes the target's sessions and WebSockets at once."""
    aid = m.unb64(account_id, "account id", size=ID_SIZE)
    raw = m.unb64(body.entry, "entry")
    entry = decode_entry(raw)
    _check_entry_time(entry, aid, ctx)
    async with ctx.fabric.registries.lock(aid):
        state = await ctx.fabric.registries.get(aid)
        new_state = state.apply(entry)
        if new_state is not state:
            await _limit_device_entries(ctx, aid, entry)
            await _check_veto_window(ctx, aid, state, entry)
            await ctx.storage.append_registry_entry(
                aid, entry.seq, raw, ctx.clock(),
                revoked_cutoffs=_revoked_cutoffs(entry.seq, new_state))
    for device_id, rec in new_state.devices.items():
        if rec.revoked_seq == entry.seq:
            await ctx.edge.drop_device(device_id)
            ctx.live.close_device(device_id, "revoked")  # on every relay process
    if entry.type is EntryType.REVOKE or entry.type is EntryType.RECOVER:
        log.info("registry %s: seq %d revocation applied", aid.hex()[:12], entry.seq)
    if new_state is not state:  # new (a re-sent entry was audited when first stored)
        ctx.live.registry_changed(aid)
        await ctx.controller.on_registry_entry(aid, entry, new_state)
    return m.RegistryEntries(entries=[], next_seq=new_state.seq + 1)


def _revoked_cutoffs(seq: int, new_state: RegistryState) -> dict[bytes, dict[bytes, int]]:
    # A revocation's cutoff is the revoker's view of the target's chain. If the
    # log already holds a later op of the target (accepted after the revoker's
    # last pull), storing the entry would make that op invalid history
    # (THREATS #14): storage refuses it (409) in the same transaction that
    # would store it, ordered with every op append; the revoker pulls and
    # revokes again with the cutoff it then sees.
    return {r.device_id: dict(r.cutoff) for r in new_state.devices.values()
            if r.revoked_seq == seq}


async def _check_veto_window(ctx: Ctx, aid: bytes, state: RegistryState,
                             entry: RegistryEntry) -> None:
    # Entry timestamps are the devices' (bounded by max_skew_s each), so the
    # relay measures a veto window on its own clock too: from when it stored
    # the proposal (finding: skewed dates ended windows up to 2 x max_skew_s early).
    if entry.type is not EntryType.ENACT:
        return
    proposal = state.proposals.get(entry.fields.bytes_("proposal", size=32))
    stored = None if proposal is None else await ctx.storage.registry_entry_stored_ms(
        aid, proposal.seq)
    check_enact_on_clock(state, entry, stored, ctx.clock())


def _check_entry_time(entry: RegistryEntry, aid: bytes, ctx: Ctx) -> None:
    # Veto windows, proposal expiry and the device-addition window are measured
    # in entry timestamps, which devices set. The relay bounds those of approval
    # entries and of additions signed by a device by its own clock, so a stolen
    # device can neither date an enactment past a veto window (§9.8) nor spread
    # a mass addition over back-dated windows (§9.6).
    device_add = entry.type is EntryType.ADD and entry.signer != aid
    if entry.type not in APPROVAL_TYPES and not device_add:
        return
    now, skew = ctx.clock(), ctx.settings.max_skew_s * 1000
    if abs(entry.ts - now) > skew:
        raise RegistryError(f"registry {entry.type.value} entry is dated {entry.ts} ms, more "
                            f"than {ctx.settings.max_skew_s} s from the relay's clock ({now} "
                            "ms); check this device's clock")


async def _limit_device_entries(ctx: Ctx, aid: bytes, entry: RegistryEntry) -> None:
    # Per account, entries signed by its devices (a thief's churn) share one
    # bucket; entries signed by the account key (recover, revoke) never wait.
    if entry.signer == aid:
        return
    s = ctx.settings
    await rate_limit(ctx, f"registry:{aid.hex()}", 1, s.rate_registry_per_s,
                     s.rate_registry_burst)


@router.post("/v1/auth/challenge", response_model=m.ChallengeResponse, tags=["auth"],
          dependencies=[Depends(limit_ip)])
async def challenge(body: m.ChallengeRequest, ctx: Ctx) -> m.ChallengeResponse:
    """A single-use challenge for (account, device). Stateless: nothing is stored,
    so a flood of requests for a device replaces nothing (§17.3.1)."""
    aid = m.unb64(body.account_id, "account id", size=ID_SIZE)
    did = m.unb64(body.device_id, "device id", size=ID_SIZE)
    now = ctx.clock()
    value = auth.issue_challenge(ctx.challenge_key, aid, did, now,
                                 random_bytes(auth.CHALLENGE_NONCE_SIZE))
    return m.ChallengeResponse(challenge=m.b64(value), relay_id=m.b64(ctx.relay_id),
                               expires_ms=now + ctx.settings.challenge_ttl_s * 1000)


@router.post("/v1/auth/session", response_model=m.SessionResponse, tags=["auth"],
          dependencies=[Depends(limit_ip)])
async def session(body: m.SessionRequest, ctx: Ctx) -> m.SessionResponse:
    """Exchange a signed challenge for a short-lived bearer token."""
    aid = m.unb64(body.account_id, "account id", size=ID_SIZE)
    did = m.unb64(body.device_id, "device id", size=ID_SIZE)
    sig = m.unb64(body.signature, "signature", size=64)
    value = m.unb64(body.challenge, "challenge")
    now, s = ctx.clock(), ctx.settings
    window = s.request_window_s * 1000
    auth.check_challenge(ctx.challenge_key, aid, did, value, now_ms=now,
                         ttl_ms=s.challenge_ttl_s * 1000, skew_ms=window)
    registry = await ctx.fabric.registries.get(aid)
    record = registry.device(did)
    if record is None:
        raise AuthorizationError("device is not in this account's registry",
                                 Code.UNKNOWN_DEVICE)
    if not registry.is_active(did):
        raise AuthorizationError("this device has been revoked", Code.REVOKED)
    if not record.public.signing_key.is_valid_signature(
            auth.session_message(ctx.relay_id, aid, did, value), sig):
        raise AuthenticationError("challenge signature does not verify")
    # Single use, remembered only once the device's signature verified (so nobody
    # else can use up a device's challenge), for longer than it stays valid on
    # any node.
    if not await ctx.edge.remember_nonce(b"challenge/" + value,
                                         now + s.challenge_ttl_s * 1000 + 2 * window, now):
        raise AuthenticationError("challenge already used; request a new one")
    # Zero trust: a valid signature is not enough; the controller refuses a
    # denied device (policy_denied) and records the session in the audit log.
    await ctx.controller.require_session(aid, did)
    token = random_bytes(32)
    expires = now + s.session_ttl_s * 1000
    await ctx.edge.put_session(auth.token_hash(token), Session(aid, did, expires), now)
    return m.SessionResponse(token=m.b64(token), expires_ms=expires,
                             features=list(RELAY_FEATURES))
