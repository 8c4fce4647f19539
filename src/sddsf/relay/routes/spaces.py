"""Spaces, key packages, ops (upload and pull), proofs and snapshots."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from sddsf.errors import (
    Code,
    ConflictError,
    DecodeError,
    NotFoundError,
)
from sddsf.protocol.keypackage import decode_key_package, verify_key_package
from sddsf.relay import models as m
from sddsf.relay.deps import (
    DOC_ID_SIZE,
    SPACE_ID_SIZE,
    Authed,
    Ctx,
    Pusher,
    rate_limit,
    space_of,
    space_out,
    tree_head_out,
)
from sddsf.relay.fabric import consistency_proof, inclusion_proof, root_at

router = APIRouter()


@router.get("/v1/spaces", response_model=m.SpacesOut, tags=["spaces"])
async def list_spaces(caller: Authed, ctx: Ctx) -> m.SpacesOut:
    """The caller's account's spaces."""
    spaces = await ctx.storage.list_spaces(caller.session.account_id)
    return m.SpacesOut(spaces=[space_out(s) for s in spaces])


@router.post("/v1/spaces", response_model=m.SpaceOut, tags=["spaces"])
async def create_space(body: m.CreateSpace, caller: Pusher, ctx: Ctx) -> m.SpaceOut:
    """Create a space with its epoch-0 key package (idempotent)."""
    sid = m.unb64(body.space_id, "space id", size=SPACE_ID_SIZE)
    raw = m.unb64(body.key_package, "key package")
    registry = await ctx.fabric.registries.get(caller.session.account_id)
    verify_key_package(raw, registry=registry, space=sid, previous=None,
                       limits=ctx.settings.rules.limits)
    now = ctx.clock()
    await ctx.storage.create_space(sid, caller.session.account_id, now)
    await ctx.storage.put_key_package(sid, 0, raw, now)
    return space_out(await ctx.fabric.space_for(sid, caller.session.account_id))


@router.post("/v1/spaces/{space_id}/keys", response_model=m.SpaceOut, tags=["spaces"])
async def put_keys(space_id: str, body: m.KeyPackageIn, caller: Pusher,
                   ctx: Ctx) -> m.SpaceOut:
    """Open the next key epoch (verified against the previous package)."""
    space = await space_of(ctx, caller, space_id)
    raw = m.unb64(body.key_package, "key package")
    registry = await ctx.fabric.registries.get(caller.session.account_id)
    packages = await ctx.storage.key_packages(space.space_id, max(space.epoch, 0))
    previous = decode_key_package(packages[-1]) if packages else None
    pkg = verify_key_package(raw, registry=registry, space=space.space_id,
                             previous=previous, limits=ctx.settings.rules.limits)
    if await ctx.storage.put_key_package(space.space_id, pkg.epoch, raw, ctx.clock()):
        await ctx.controller.on_key_package(caller.session.account_id,
                                            caller.session.device_id, space.space_id, pkg.epoch)
    return space_out(await ctx.fabric.space_for(space.space_id, caller.session.account_id))


@router.get("/v1/spaces/{space_id}/keys", response_model=m.KeyPackages, tags=["spaces"])
async def get_keys(space_id: str, caller: Authed, ctx: Ctx,
                   since_epoch: Annotated[int, Query(ge=0, le=m.INT64_MAX)] = 0
                   ) -> m.KeyPackages:
    """Key packages from ``since_epoch`` on (verify them as a chain)."""
    space = await space_of(ctx, caller, space_id)
    packages = await ctx.storage.key_packages(space.space_id, since_epoch)
    return m.KeyPackages(key_packages=[m.b64(p) for p in packages])


@router.post("/v1/spaces/{space_id}/ops", response_model=m.OpsOut, tags=["ops"])
async def upload(space_id: str, body: m.OpsIn, caller: Pusher, ctx: Ctx) -> JSONResponse:
    """Upload a batch; each op gets accepted/duplicate/rejected on its own."""
    if len(body.ops) > ctx.settings.max_batch_ops:
        raise DecodeError(f"{len(body.ops)} ops exceed the batch limit of "
                          f"{ctx.settings.max_batch_ops}", Code.TOO_LARGE)
    space = await space_of(ctx, caller, space_id)
    s = ctx.settings
    await rate_limit(ctx, f"ops:{caller.session.device_id.hex()}", max(1, len(body.ops)),
                 s.rate_ops_per_s, s.rate_ops_burst)
    envelopes = [m.unb64(op, f"ops[{i}]") for i, op in enumerate(body.ops)]
    results, head = await ctx.fabric.submit(caller.session.account_id, space.space_id,
                                            envelopes, proofs=body.proofs)
    for (status, code), count in Counter((r.status, r.code or "") for r in results).items():
        ctx.metrics.ops.labels(status, code).inc(count)
    # Built as plain JSON (the shape of m.OpsOut, which documents it): validating
    # a thousand result models again on the way out would cost more than the
    # signatures (PERFORMANCE-NOTES: the relay's ceiling is the verify rate).
    return JSONResponse({"results": [{
        "status": r.status, "offset": r.offset,
        "op_id": m.b64(r.op_id) if r.op_id else None,
        "proof": [m.b64(p) for p in r.proof] if r.proof is not None else None,
        "code": r.code, "message": r.message} for r in results],
        "tree_head": tree_head_out(head).model_dump()})


@router.get("/v1/spaces/{space_id}/ops", response_model=m.OpsPage, tags=["ops"])
async def pull(space_id: str, caller: Authed, ctx: Ctx,
               after: Annotated[int, Query(ge=-1, le=m.INT64_MAX)] = -1,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> JSONResponse:
    """Ops with offset > ``after``, with the current signed tree head."""
    space = await space_of(ctx, caller, space_id)
    ops = await ctx.storage.read_ops(space.space_id, after,
                                     min(limit, ctx.settings.max_page_ops))
    # Read the log state after the page, so the signed head covers every op in it.
    space = await space_of(ctx, caller, space_id)
    head = ctx.fabric.tree_head(space, space.size, space.root)
    return JSONResponse({"ops": [{  # the shape of m.OpsPage (see upload)
        "offset": o.offset, "op_id": m.b64(o.op_id), "leaf_hash": m.b64(o.leaf_hash),
        "envelope": m.b64(o.envelope) if o.envelope is not None else None} for o in ops],
        "tree_head": tree_head_out(head).model_dump(),
        "next_after": ops[-1].offset if ops else after})


@router.get("/v1/spaces/{space_id}/tree-head", response_model=m.TreeHeadOut, tags=["proofs"])
async def tree_head(space_id: str, caller: Authed, ctx: Ctx) -> m.TreeHeadOut:
    """The current signed tree head."""
    space = await space_of(ctx, caller, space_id)
    return tree_head_out(ctx.fabric.tree_head(space, space.size, space.root))


@router.get("/v1/spaces/{space_id}/proofs/inclusion", response_model=m.Proof,
         tags=["proofs"])
async def prove_inclusion(space_id: str, caller: Authed, ctx: Ctx,
                          index: Annotated[int, Query(ge=0)],
                          size: Annotated[int | None, Query(ge=1)] = None) -> m.Proof:
    """Inclusion proof of leaf ``index`` in the tree of ``size`` (default: current)."""
    space = await space_of(ctx, caller, space_id)
    n = space.size if size is None else size
    if n > space.size or index >= n:
        raise NotFoundError(f"the log has {space.size} leaves; index must be < size "
                            "<= that")
    root = space.root if n == space.size else await root_at(ctx.storage, space.space_id, n)
    proof = await inclusion_proof(ctx.storage, space.space_id, index, n)
    return m.Proof(proof=[m.b64(p) for p in proof],
                   tree_head=tree_head_out(ctx.fabric.tree_head(space, n, root)))


@router.get("/v1/spaces/{space_id}/proofs/consistency", response_model=m.Proof,
         tags=["proofs"])
async def prove_consistency(space_id: str, caller: Authed, ctx: Ctx,
                            first: Annotated[int, Query(ge=1)],
                            second: Annotated[int | None, Query(ge=1)] = None) -> m.Proof:
    """Consistency proof between tree sizes ``first`` and ``second`` (default: current)."""
    space = await space_of(ctx, caller, space_id)
    n = space.size if second is None else second
    if not first <= n <= space.size:
        raise NotFoundError(f"need 1 <= first <= second <= {space.size}")
    root = space.root if n == space.size else await root_at(ctx.storage, space.space_id, n)
    proof = await consistency_proof(ctx.storage, space.space_id, first, n)
    return m.Proof(proof=[m.b64(p) for p in proof],
                   tree_head=tree_head_out(ctx.fabric.tree_head(space, n, root)))


@router.put("/v1/spaces/{space_id}/docs/{doc_id}/snapshot", response_model=m.SnapshotOut,
         tags=["snapshots"])
async def put_snapshot(space_id: str, doc_id: str, body: m.SnapshotIn, caller: Pusher,
                       ctx: Ctx) -> m.SnapshotOut:
    """Store a doc's signed encrypted snapshot (opaque to the relay)."""
    space = await space_of(ctx, caller, space_id)
    did = m.unb64(doc_id, "doc id", size=DOC_ID_SIZE)
    if body.covers_offset >= space.size:
        raise DecodeError("snapshot covers offsets the log does not have yet")
    blob = m.unb64(body.blob, "blob")
    await ctx.storage.put_snapshot(space.space_id, did, body.covers_offset, blob,
                                   ctx.clock())
    stored = await ctx.storage.get_snapshot(space.space_id, did)
    if stored is None:  # pragma: no cover - just written
        raise ConflictError("snapshot vanished")
    await ctx.fabric.maybe_prune(space)
    return m.SnapshotOut(covers_offset=stored[0], blob=m.b64(stored[1]))


@router.post("/v1/spaces/{space_id}/ack", response_model=m.AckOut, tags=["snapshots"])
async def acknowledge(space_id: str, body: m.AckIn, caller: Authed, ctx: Ctx) -> m.AckOut:
    """Record how far this device has applied the log; prunes what every active
    device has applied and a snapshot covers (proofs stay valid)."""
    space = await space_of(ctx, caller, space_id)
    acked = await ctx.storage.set_ack(space.space_id, caller.session.device_id, body.offset,
                                      ctx.clock())
    return m.AckOut(acked=acked, pruned_before=await ctx.fabric.maybe_prune(space))


@router.get("/v1/spaces/{space_id}/docs/{doc_id}/snapshot", response_model=m.SnapshotOut,
         tags=["snapshots"])
async def get_snapshot(space_id: str, doc_id: str, caller: Authed,
                       ctx: Ctx) -> m.SnapshotOut:
    """The doc's latest snapshot."""
    space = await space_of(ctx, caller, space_id)
    stored = await ctx.storage.get_snapshot(space.space_id,
                                            m.unb64(doc_id, "doc id", size=DOC_ID_SIZE))
    if stored is None:
        raise NotFoundError("no snapshot for this doc")
    return m.SnapshotOut(covers_offset=stored[0], blob=m.b64(stored[1]))


