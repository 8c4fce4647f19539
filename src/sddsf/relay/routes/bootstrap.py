"""``GET /v1/bootstrap``: a new device's first sync in one response (protocol 17.9).

The bundle holds what the registry, spaces, key packages, snapshot, attestation,
chunk and ops endpoints would serve a device starting from nothing, read in the
same way and signed as one statement with the relay key. It is bounded by the
relay's request limit (``max_request_bytes``, the base64 text of the response
included) and its page size (``max_page_ops``): components are added in the
order a first sync reads them and, once one does not fit, it and everything
after it in its space are left out, to be read from their own endpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Query

from sddsf.errors import DecodeError
from sddsf.protocol.bootstrap import (
    BOOTSTRAP_MAX_BYTES,
    NONCE_SIZE,
    BundledOp,
    BundledSnapshot,
    BundledSpace,
    sign_bootstrap,
)
from sddsf.protocol.snapshot import (
    CORROBORATED_SNAPSHOT_DOC,
    SPACE_SNAPSHOT_DOC,
    snapshot_claims,
    snapshot_id,
)
from sddsf.relay import models as m
from sddsf.relay.deps import Authed, Ctx
from sddsf.relay.storage.base import FirstSyncReads, SpaceRecord

router = APIRouter()

#: What one item costs besides its bytes (CBOR heads, offsets, ids): a bound.
_ITEM = 64


class _Budget:
    """Bytes of bundle left (base64 makes the response 4/3 of the bundle)."""

    def __init__(self, response_bytes: int) -> None:
        self.left = response_bytes * 3 // 4 - 4096  # the JSON frame, the body's own fields

    def take(self, *items: bytes | None) -> bool:
        cost = sum(len(i or b"") + _ITEM for i in items)
        if cost > self.left:
            self.left = 0  # nothing after a component that did not fit
            return False
        self.left -= cost
        return True


@router.get("/v1/bootstrap", response_model=m.BootstrapOut, tags=["spaces"])
async def bootstrap(caller: Authed, ctx: Ctx,
                    nonce: Annotated[str, Query(max_length=64)]) -> m.BootstrapOut:
    """Everything a new device's first sync reads, signed by the relay: the
    registry, the signed encryption policy, and per space its key packages,
    signed tree head, current and corroborated snapshots with their attestations
    and chunks, and the ops after the snapshot (bounded; what does not fit is
    left out)."""
    raw_nonce = m.unb64(nonce, "nonce", size=NONCE_SIZE)
    aid, did = caller.session.account_id, caller.session.device_id
    budget = _Budget(min(ctx.settings.max_request_bytes, BOOTSTRAP_MAX_BYTES))
    registry: list[bytes] | None = await ctx.storage.registry_entries(aid, 0)
    if not budget.take(*registry or ()):
        registry = None  # read from its endpoint, like everything that does not fit
    # A space shared with the account by another one names its owner (17.9).
    spaces = [dataclasses.replace(await _space(ctx, s, budget),
                                  owner=None if s.account_id == aid else s.account_id)
              for s in await ctx.fabric.readable_spaces(aid)]
    bundle = sign_bootstrap(ctx.fabric.relay_key, account=aid, device=did, nonce=raw_nonce,
                            ts_ms=ctx.clock(), registry=registry,
                            policy=ctx.controller.encryption_policy(), spaces=spaces)
    return m.BootstrapOut(bundle=m.b64(bundle))


async def _space(ctx: Ctx, space: SpaceRecord, budget: _Budget) -> BundledSpace:
    sid = space.space_id
    docs = (SPACE_SNAPSHOT_DOC, CORROBORATED_SNAPSHOT_DOC)
    # One storage call for all but the chunks (their ids are inside the snapshots).
    read = await ctx.storage.first_sync_reads(sid, docs, ctx.settings.max_page_ops)
    keys = read.key_packages
    if not budget.take(*keys):
        return _head_only(ctx, read)
    snaps: list[BundledSnapshot] = []
    chunks: dict[bytes, bytes] = {}
    for doc in docs:
        stored = read.snapshots.get(doc)
        snap_id = None if stored is None else snapshot_id(stored[1])
        # Attestations are kept under the whole-space doc id (see stored_attestations).
        atts = read.attestations.get((SPACE_SNAPSHOT_DOC, snap_id or b""), [])
        if not budget.take(stored[1] if stored else None, *atts):
            return _head_only(ctx, read, keys)
        snaps.append(BundledSnapshot(doc, stored[0] if stored else -1,
                                     stored[1] if stored else None, snap_id, tuple(atts)))
    for snap in snaps:
        for cid in _chunk_ids(ctx, snap.blob):
            blob = chunks.get(cid) or await ctx.storage.get_snapshot_chunk(sid, cid)
            if blob is None or not (cid in chunks or budget.take(blob)):
                return _head_only(ctx, read, keys, snaps, chunks)
            chunks[cid] = blob
    tail = []
    for op in read.ops:
        if not budget.take(op.envelope):
            break
        tail.append(BundledOp(op.offset, op.op_id, op.leaf_hash, op.envelope))
    return _head_only(ctx, read, keys, snaps, chunks, read.after, tail)


def _head_only(ctx: Ctx, read: FirstSyncReads, keys: list[bytes] | None = None,
               snaps: list[BundledSnapshot] | None = None,
               chunks: dict[bytes, bytes] | None = None, after: int | None = None,
               ops: list[BundledOp] | None = None) -> BundledSpace:
    # The space was read after the ops, so the signed head covers every op in
    # the tail (as a pull's does).
    space = read.space
    head = ctx.fabric.tree_head(space, space.size, space.root)
    return BundledSpace(space.space_id, space.size, space.root, space.epoch, head,
                        tuple(keys) if keys is not None else None, tuple(snaps or ()),
                        chunks or {}, after, tuple(ops or ()))


def _chunk_ids(ctx: Ctx, blob: bytes | None) -> tuple[bytes, ...]:
    # A legacy (unchunked) blob names no chunks; a malformed one is the device's
    # to refuse (served as stored, like the snapshot endpoint does).
    if blob is None:
        return ()
    try:
        return tuple(snapshot_claims(blob, limits=ctx.settings.rules.limits).chunk_ids)
    except DecodeError:
        return ()
