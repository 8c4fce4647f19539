"""Shared-space membership: append a signed entry to the space log, read them all."""

from __future__ import annotations

from fastapi import APIRouter

from sddsf.errors import NotFoundError
from sddsf.protocol.membership import MembershipState, decode_entry
from sddsf.relay import models as m
from sddsf.relay.deps import (
    SPACE_ID_SIZE,
    Authed,
    Ctx,
    Pusher,
    rate_limit,
    space_of,
    tree_head_out,
)
from sddsf.relay.storage.base import AppendStatus

router = APIRouter()
#: Bytes of an account id a fingerprint shows (protocol.md 5.3).
FINGERPRINT_SIZE = 20


def _members_out(state: MembershipState) -> list[m.MemberOut]:
    return [m.MemberOut(account_id=m.b64(a), role=state.members[a].role.value)
            for a in sorted(state.members)]


@router.get("/v1/accounts/by-fingerprint/{fingerprint}", response_model=m.AccountGenesis,
            tags=["registry"])
async def account_by_fingerprint(fingerprint: str, caller: Authed,
                                 ctx: Ctx) -> m.AccountGenesis:
    """The account whose fingerprint (the first 20 bytes of its id, base64url) is
    given, with its genesis registry entry: the signed account key and recovery
    key a person needs to share a space with it. The client verifies the entry
    and checks its id against the fingerprint, so a wrong answer fails."""
    prefix = m.unb64(fingerprint, "fingerprint", size=FINGERPRINT_SIZE)
    await rate_limit(ctx, f"lookup:{caller.session.device_id.hex()}", 1,
                     ctx.settings.rate_ops_per_s, ctx.settings.rate_ops_burst)
    found = await ctx.storage.accounts_by_prefix(prefix, limit=2)
    if len(found) != 1:
        raise NotFoundError("no single account with this fingerprint on this relay")
    genesis = await ctx.storage.registry_entries(found[0], 0)
    return m.AccountGenesis(account_id=m.b64(found[0]), genesis=m.b64(genesis[0]))


@router.post("/v1/spaces/{space_id}/members", response_model=m.MembershipAppended,
             tags=["spaces"])
async def append_entry(space_id: str, body: m.MembershipIn, caller: Pusher,
                       ctx: Ctx) -> m.MembershipAppended:
    """Append one membership entry (create, add, role, remove, leave) to the space
    log, verified with the clients' rules (protocol.md 21.3) and the relay's
    (21.7). Idempotent: a stored entry answers ``duplicate`` with its offset."""
    sid = m.unb64(space_id, "space id", size=SPACE_ID_SIZE)
    # Before create only the owner reaches the space; after it, its members.
    space = await ctx.fabric.space_for(sid, caller.session.account_id)
    entry = m.unb64(body.entry, "membership entry")
    before = await ctx.fabric.shared.folded(space)
    outcome, state = await ctx.fabric.shared.append(space, entry, ctx.clock())
    # Read directly: a member who just left or removed itself no longer passes
    # space_of, but still gets its answer.
    after = await ctx.storage.get_space(sid)
    if after is None:  # pragma: no cover - spaces are never deleted
        raise AssertionError("space disappeared")
    accepted = outcome.status is AppendStatus.ACCEPTED
    if accepted:
        if ctx.fabric.publish is not None:
            await ctx.fabric.publish(sid, [(outcome.offset, entry)])
        # Audited for the members before and after it (a removed one included).
        earlier = before.state.members if before is not None else {}
        await ctx.controller.on_membership(sid, decode_entry(entry),
                                           {*earlier, *state.members})
    return m.MembershipAppended(
        status="accepted" if accepted else "duplicate", offset=outcome.offset,
        members=_members_out(state),
        tree_head=tree_head_out(ctx.fabric.tree_head(after, after.size, after.root)))


@router.get("/v1/spaces/{space_id}/members", response_model=m.MembershipLog, tags=["spaces"])
async def membership(space_id: str, caller: Authed, ctx: Ctx) -> m.MembershipLog:
    """Every membership entry with its log offset (verify each leaf against the tree
    head with an inclusion proof, and fold them in order), the relay's member set
    and the space's owner account."""
    space = await space_of(ctx, caller, space_id)
    entries = await ctx.storage.membership_entries(space.space_id)
    folded = await ctx.fabric.shared.folded(space)
    state = folded.state if folded is not None else MembershipState.empty(space.space_id)
    return m.MembershipLog(
        entries=[m.MembershipEntryOut(offset=o, entry=m.b64(e)) for o, e in entries],
        members=_members_out(state), owner=m.b64(space.account_id),
        tree_head=tree_head_out(ctx.fabric.tree_head(space, space.size, space.root)))
