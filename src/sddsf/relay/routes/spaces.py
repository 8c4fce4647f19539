"""Spaces, key packages, ops (upload and pull), proofs and snapshots."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from sddsf.errors import (
    AuthorizationError,
    Code,
    ConflictError,
    ContextError,
    DecodeError,
    NotFoundError,
)
from sddsf.protocol.keypackage import KeyPackage, decode_key_package, verify_key_package
from sddsf.protocol.keypackage_v3 import verify_key_package_v3
from sddsf.protocol.snapshot import (
    CORROBORATED_SNAPSHOT_DOC,
    MISMATCH,
    SNAPSHOT_CHUNK_PLAIN,
    SPACE_SNAPSHOT_DOC,
    SnapshotClaims,
    check_snapshot_signature,
    chunk_id,
    snapshot_claims,
    snapshot_id,
    verify_attestation,
)
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
from sddsf.relay.proofs import consistency_proof, inclusion_proof, root_at
from sddsf.relay.storage.base import LeafKind, SpaceRecord, StoredOp

router = APIRouter()
#: An optional tree size in a query (default: the current size).
OptionalSize = Annotated[m.DecimalInt | None, Query(ge=1, le=m.INT64_MAX)]

#: A chunk no stored manifest names is dropped once it is this old (its
#: uploader had this long to publish the manifest that names it).
CHUNK_GRACE_MS = 15 * 60 * 1000


@router.get("/v1/spaces", response_model=m.SpacesOut, tags=["spaces"])
async def list_spaces(caller: Authed, ctx: Ctx) -> m.SpacesOut:
    """The spaces the caller's account may read: its own that are not shared
    (or shared and it is still a member) and those shared with it."""
    spaces = await ctx.fabric.readable_spaces(caller.session.account_id)
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
    packages = await ctx.storage.key_packages(space.space_id, max(space.epoch, 0))
    previous = decode_key_package(packages[-1]) if packages else None
    pkg = await _verify_next_package(ctx, space, raw, previous)
    if await ctx.storage.put_key_package(space.space_id, pkg.epoch, raw, ctx.clock()):
        await ctx.controller.on_key_package(caller.session.account_id,
                                            caller.session.device_id, space.space_id, pkg.epoch)
    return space_out(await ctx.fabric.space_for(space.space_id, caller.session.account_id))


async def _verify_next_package(ctx: Ctx, space: SpaceRecord, raw: bytes,
                               previous: KeyPackage | None) -> KeyPackage:
    # A one-account space: a version 2 package for the owner's devices. A
    # shared one: version 3, for the members at the relay's current membership
    # head exactly (one built before a removal would give the removed member the
    # new key), checked against every member's current registry (10.8, 21.7).
    limits = ctx.settings.rules.limits
    folded = await ctx.fabric.shared.folded(space)
    if folded is None:
        registry = await ctx.fabric.registries.get(space.account_id)
        return verify_key_package(raw, registry=registry, space=space.space_id,
                                  previous=previous, limits=limits)
    shared = await ctx.fabric.shared.members(space)
    if shared is None:  # pragma: no cover - folded above
        raise AssertionError("membership vanished")
    pkg = verify_key_package_v3(raw, space=space.space_id, previous=previous,
                                registries=shared[0].registries, members_at=folded.sets.get,
                                limits=limits)
    if pkg.membership != folded.state.head:
        raise ConflictError("the key package was built for an earlier membership of the "
                            "space; sync and build it again")
    return pkg


@router.get("/v1/spaces/{space_id}/keys", response_model=m.KeyPackages, tags=["spaces"])
async def get_keys(space_id: str, caller: Authed, ctx: Ctx,
                   since_epoch: Annotated[m.DecimalInt, Query(ge=0, le=m.INT64_MAX)] = 0
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
    # The proofs of one batch share most of their hashes: each is encoded once.
    encoded: dict[bytes, str] = {}

    def hash_b64(h: bytes) -> str:
        text = encoded.get(h)
        if text is None:
            text = encoded[h] = m.b64(h)
        return text

    return JSONResponse({"results": [{
        "status": r.status, "offset": r.offset,
        "op_id": m.b64(r.op_id) if r.op_id else None,
        "proof": [hash_b64(p) for p in r.proof] if r.proof is not None else None,
        "code": r.code, "message": r.message} for r in results],
        "tree_head": tree_head_out(head).model_dump()})


@router.get("/v1/spaces/{space_id}/ops", response_model=m.OpsPage, tags=["ops"])
async def pull(space_id: str, caller: Authed, ctx: Ctx,
               after: Annotated[m.DecimalInt, Query(ge=-1, le=m.INT64_MAX)] = -1,
               limit: Annotated[m.DecimalInt, Query(ge=1, le=10_000)] = 500,
               omit_own: bool = False) -> JSONResponse:
    """Ops with offset > ``after``, with the current signed tree head.

    ``omit_own``: the caller's own ops come without their envelope (``"own":
    true``): it made them and keeps a copy since their acknowledgement.
    """
    space = await space_of(ctx, caller, space_id)
    ops = await ctx.storage.read_ops(space.space_id, after,
                                     min(limit, ctx.settings.max_page_ops))
    # Read the log state after the page, so the signed head covers every op in it.
    space = await space_of(ctx, caller, space_id)
    head = ctx.fabric.tree_head(space, space.size, space.root)
    me = caller.session.device_id if omit_own else None
    return JSONResponse({"ops": [_pulled(o, me) for o in ops],
        "tree_head": tree_head_out(head).model_dump(),
        "next_after": ops[-1].offset if ops else after})


def _pulled(o: StoredOp, omit_author: bytes | None) -> dict[str, object]:
    # The shape of m.StoredOpOut; "own" appears only on an omitted entry, so a
    # client that never asks for omissions sees the same shape as before.
    out: dict[str, object] = {"offset": o.offset, "op_id": m.b64(o.op_id),
                              "leaf_hash": m.b64(o.leaf_hash)}
    if o.envelope is not None and o.author == omit_author:
        out["envelope"], out["own"] = None, True
    else:
        out["envelope"] = m.b64(o.envelope) if o.envelope is not None else None
    if o.kind is LeafKind.MEMBERSHIP:
        out["kind"] = "member"
    return out


@router.get("/v1/spaces/{space_id}/tree-head", response_model=m.TreeHeadOut, tags=["proofs"])
async def tree_head(space_id: str, caller: Authed, ctx: Ctx) -> m.TreeHeadOut:
    """The current signed tree head."""
    space = await space_of(ctx, caller, space_id)
    return tree_head_out(ctx.fabric.tree_head(space, space.size, space.root))


@router.get("/v1/spaces/{space_id}/proofs/inclusion", response_model=m.Proof,
         tags=["proofs"])
async def prove_inclusion(space_id: str, caller: Authed, ctx: Ctx,
                          index: Annotated[m.DecimalInt, Query(ge=0, le=m.INT64_MAX)],
                          size: OptionalSize = None
                          ) -> m.Proof:
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
                            first: Annotated[m.DecimalInt, Query(ge=1, le=m.INT64_MAX)],
                            second: OptionalSize = None
                            ) -> m.Proof:
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
    """Store a doc's signed encrypted snapshot. A whole-space snapshot (doc id 0)
    is checked as far as the relay can (signed by the caller, its root is this
    log's root at its size, every chunk uploaded); its contents stay opaque."""
    space = await space_of(ctx, caller, space_id)
    did = m.unb64(doc_id, "doc id", size=DOC_ID_SIZE)
    if body.covers_offset >= space.size:
        raise DecodeError("snapshot covers offsets the log does not have yet")
    blob = m.unb64(body.blob, "blob")
    if did == CORROBORATED_SNAPSHOT_DOC:
        raise AuthorizationError("this doc id is reserved for the relay's copy of the "
                                 "corroborated space snapshot", Code.NOT_AUTHORIZED)
    if did == SPACE_SNAPSHOT_DOC:
        await _check_space_snapshot(ctx, space, caller.session.account_id,
                                    caller.session.device_id, body.covers_offset, blob)
    await ctx.storage.put_snapshot(space.space_id, did, body.covers_offset, blob,
                                   ctx.clock())
    stored = await ctx.storage.get_snapshot(space.space_id, did)
    if stored is None:  # pragma: no cover - just written
        raise ConflictError("snapshot vanished")
    if did == SPACE_SNAPSHOT_DOC:
        await _collect_chunks(ctx, space.space_id)
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


async def _check_space_snapshot(ctx: Ctx, space: SpaceRecord, account_id: bytes,
                                device_id: bytes, covers_offset: int, blob: bytes) -> None:
    # What a relay without the keys can check, so that a device cannot strand
    # new devices with a snapshot that every reader refuses.
    registry = await ctx.fabric.registries.get(account_id)
    claims = check_snapshot_signature(blob, registry=registry,
                                      limits=ctx.settings.rules.limits)
    if claims.space != space.space_id:
        raise ContextError("the snapshot belongs to another space")
    if claims.author != device_id:
        raise AuthorizationError("a device publishes only snapshots it signed itself",
                                 Code.NOT_AUTHORIZED)
    if claims.size != covers_offset + 1:
        raise DecodeError(f"covers_offset must be the snapshot's size - 1 "
                          f"({claims.size - 1}), not {covers_offset}")
    root = space.root if claims.size == space.size else await root_at(
        ctx.storage, space.space_id, claims.size)
    if root != claims.root:
        raise ConflictError(f"the snapshot's Merkle root is not this log's root at size "
                            f"{claims.size}: it does not describe this log")
    stored = await ctx.storage.snapshot_chunks(space.space_id)
    missing = [c for c in claims.chunk_ids if c not in stored]
    if missing:
        raise NotFoundError(f"{len(missing)} of the snapshot's {len(claims.chunk_ids)} chunks "
                            "are not on the relay: upload them, then the manifest")


async def _collect_chunks(ctx: Ctx, space_id: bytes) -> int:
    # Drop chunks that neither stored manifest (the current and the corroborated
    # snapshot) names and that are older than the grace period (younger ones
    # may belong to a manifest being uploaded).
    keep: set[bytes] = set()
    for doc in (SPACE_SNAPSHOT_DOC, CORROBORATED_SNAPSHOT_DOC):
        stored = await ctx.storage.get_snapshot(space_id, doc)
        if stored is not None:
            with contextlib.suppress(DecodeError):  # a legacy blob names no chunks
                keep.update(_claims(ctx, stored[1]).chunk_ids)
    cutoff = ctx.clock() - CHUNK_GRACE_MS
    stale = [c for c, t in (await ctx.storage.snapshot_chunks(space_id)).items()
             if c not in keep and t < cutoff]
    return await ctx.storage.delete_snapshot_chunks(space_id, stale) if stale else 0


def _claims(ctx: Ctx, blob: bytes) -> SnapshotClaims:
    return snapshot_claims(blob, limits=ctx.settings.rules.limits)


@router.put("/v1/spaces/{space_id}/snapshot-chunks/{chunk}", response_model=m.ChunkStored,
         tags=["snapshots"])
async def put_chunk(space_id: str, chunk: str, body: m.ChunkIn, caller: Pusher,
                    ctx: Ctx) -> m.ChunkStored:
    """Store one chunk of a chunked snapshot under its content id (idempotent)."""
    space = await space_of(ctx, caller, space_id)
    cid = m.unb64(chunk, "chunk id", size=32)
    blob = m.unb64(body.blob, "blob")
    if len(blob) > SNAPSHOT_CHUNK_PLAIN + 16:
        raise DecodeError(f"a snapshot chunk is at most {SNAPSHOT_CHUNK_PLAIN + 16} bytes",
                          Code.TOO_LARGE)
    if chunk_id(blob) != cid:
        raise DecodeError("the chunk id is not the hash of the chunk's bytes")
    quota = 2 * ctx.settings.rules.limits.max_snapshot_chunks
    if len(await ctx.storage.snapshot_chunks(space.space_id)) >= quota:
        await _collect_chunks(ctx, space.space_id)
        if len(await ctx.storage.snapshot_chunks(space.space_id)) >= quota:
            raise DecodeError(f"the space holds {quota} snapshot chunks; publish the manifest "
                              "that names them, or retry later", Code.TOO_LARGE)
    await ctx.storage.put_snapshot_chunk(space.space_id, cid, blob, ctx.clock())
    return m.ChunkStored(chunk_id=m.b64(cid))


@router.get("/v1/spaces/{space_id}/snapshot-chunks/{chunk}", response_model=m.ChunkOut,
         tags=["snapshots"])
async def get_chunk(space_id: str, chunk: str, caller: Authed, ctx: Ctx) -> m.ChunkOut:
    """One stored snapshot chunk."""
    space = await space_of(ctx, caller, space_id)
    blob = await ctx.storage.get_snapshot_chunk(space.space_id,
                                                m.unb64(chunk, "chunk id", size=32))
    if blob is None:
        raise NotFoundError("no such snapshot chunk in this space")
    return m.ChunkOut(blob=m.b64(blob))


@router.post("/v1/spaces/{space_id}/docs/{doc_id}/snapshot/attestations",
          response_model=m.AttestationsOut, tags=["snapshots"])
async def attest(space_id: str, doc_id: str, body: m.AttestationIn, caller: Pusher,
                 ctx: Ctx) -> m.AttestationsOut:
    """Store the caller's signed verdict on the space's current (or corroborated)
    snapshot. Once a device other than the author attested ``match`` (and no
    active device ``mismatch``), the relay keeps a copy of it as the corroborated
    snapshot and may prune the history under it."""
    space = await space_of(ctx, caller, space_id)
    if m.unb64(doc_id, "doc id", size=DOC_ID_SIZE) != SPACE_SNAPSHOT_DOC:
        raise NotFoundError("attestations are about the whole-space snapshot (doc id 0)")
    raw = m.unb64(body.attestation, "attestation")
    registry = await ctx.fabric.registries.get(caller.session.account_id)
    att = verify_attestation(raw, registry=registry, space=space.space_id)
    if att.attester != caller.session.device_id:
        raise AuthorizationError("a device sends only its own attestations",
                                 Code.NOT_AUTHORIZED)
    if att.doc != SPACE_SNAPSHOT_DOC:
        raise ContextError("the attestation is about another document")
    sid = space.space_id
    current = await ctx.storage.get_snapshot(sid, SPACE_SNAPSHOT_DOC)
    copy = await ctx.storage.get_snapshot(sid, CORROBORATED_SNAPSHOT_DOC)
    about = next((s for s in (current, copy) if s is not None
                  and snapshot_id(s[1]) == att.snapshot and s[0] + 1 == att.size), None)
    if about is None:
        raise ConflictError("the attestation is about another snapshot than the stored one "
                            "(it was replaced): check the current one")
    await ctx.storage.put_snapshot_attestation(sid, SPACE_SNAPSHOT_DOC, att.snapshot,
                                               att.attester, att.verdict, raw, ctx.clock())
    if att.verdict == MISMATCH:
        await ctx.controller.on_snapshot_mismatch(caller.session.account_id,
                                                  _claims(ctx, about[1]).author,
                                                  att.attester, sid)
    if current is not None and await ctx.fabric.is_corroborated(sid, registry, current[1]):
        await ctx.storage.put_snapshot(sid, CORROBORATED_SNAPSHOT_DOC, current[0], current[1],
                                       ctx.clock())
        copy = current
    keep = [snapshot_id(s[1]) for s in (current, copy) if s is not None]
    await ctx.storage.delete_snapshot_attestations(sid, SPACE_SNAPSHOT_DOC, keep)
    await ctx.fabric.maybe_prune(space)
    return await _attestations(ctx, sid, SPACE_SNAPSHOT_DOC)


@router.get("/v1/spaces/{space_id}/docs/{doc_id}/snapshot/attestations",
         response_model=m.AttestationsOut, tags=["snapshots"])
async def attestations(space_id: str, doc_id: str, caller: Authed,
                       ctx: Ctx) -> m.AttestationsOut:
    """Every device's signed verdict on the snapshot stored under ``doc_id``: the
    current one (doc id 0) or the corroborated copy (doc id 0...01)."""
    space = await space_of(ctx, caller, space_id)
    did = m.unb64(doc_id, "doc id", size=DOC_ID_SIZE)
    if did not in (SPACE_SNAPSHOT_DOC, CORROBORATED_SNAPSHOT_DOC):
        raise NotFoundError("attestations are about the whole-space snapshot (doc id 0)")
    return await _attestations(ctx, space.space_id, did)


async def _attestations(ctx: Ctx, space_id: bytes, doc_id: bytes) -> m.AttestationsOut:
    sid, raws = await stored_attestations(ctx, space_id, doc_id)
    return m.AttestationsOut(snapshot_id=m.b64(sid) if sid is not None else None,
                             attestations=[m.b64(r) for r in raws])


async def stored_attestations(ctx: Ctx, space_id: bytes,
                              doc_id: bytes) -> tuple[bytes | None, list[bytes]]:
    """The id of the snapshot stored under ``doc_id`` (None: none) and the signed
    verdicts about it (attestations are kept under the whole-space doc id)."""
    stored = await ctx.storage.get_snapshot(space_id, doc_id)
    if stored is None:
        return None, []
    sid = snapshot_id(stored[1])
    rows = await ctx.storage.snapshot_attestations(space_id, SPACE_SNAPSHOT_DOC, sid)
    return sid, [r[2] for r in rows]
