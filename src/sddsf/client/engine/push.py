"""Push: pending ops go to the transport in batches that fit its limits.

Each accepted (or duplicate) op's inclusion proof is checked against the signed
tree head of its push and remembered (``acked``: offset -> leaf hash), so a
later pull can tell if the log dropped it. A refused op moves to ``failed``;
on ``chain_fork``, ``stale_epoch`` or ``chain_gap`` its edit is re-queued and
sealed again on the log's chain head. An op sealed for a relay with larger
limits than this one is sealed again in ops that fit (never dropped).
"""

from __future__ import annotations

from collections.abc import Iterator

from sddsf.client.engine.common import MAX_BATCH, SyncReport, u64
from sddsf.client.engine.identity import DeviceIdentity
from sddsf.client.engine.members import Members
from sddsf.client.engine.outbox import Outbox, parted_edits
from sddsf.client.transport.base import UPLOAD_FRAME, RelayLimits, Transport, upload_len
from sddsf.errors import Code, ProofError
from sddsf.protocol import merkle
from sddsf.protocol.envelope import OpEnvelope, decode_envelope
from sddsf.protocol.treehead import verify_tree_head

__all__ = ["RESEAL", "SHARED_RESEAL", "Pusher", "upload_batches"]

#: Refusals of an own op whose edits are sealed again.
RESEAL = frozenset({Code.CHAIN_FORK.value, Code.STALE_EPOCH.value, Code.CHAIN_GAP.value})
#: Refusals that, in a shared space only, re-queue the edit too (protocol 21.7).
SHARED_RESEAL = frozenset({Code.NOT_AUTHORIZED.value, Code.EPOCH_COMPROMISED.value})


class Pusher:
    """Pushes one device's pending ops (see the module docstring)."""

    def __init__(self, ident: DeviceIdentity, outbox: Outbox, transport: Transport,
                 members: Members) -> None:
        self.ident = ident
        self.members = members
        self.store = ident.store
        self.outbox = outbox
        self.transport = transport

    async def push(self, space_id: bytes, report: SyncReport) -> None:
        """Push the space's pending ops (see the module docstring)."""
        rows = self.store.scan("pending", space_id)
        if not rows:
            return
        self.store.make_durable()  # the relay must never hold an op we could forget
        limits = await self.outbox.refresh_limits()
        parted = parted_edits(self.store, space_id)
        last_ok_raw: bytes | None = None  # decoded only when the head moves back
        reset = False
        requeued: set[bytes] = set()
        for chunk, unsendable in upload_batches(rows, limits):
            if unsendable:
                # Queued for a relay with larger limits: sealed again in ops that
                # fit this one (on top of the last op it accepted), never dropped.
                with self.store.batch() as b:
                    self.outbox.reset_head(b, space_id, _decoded(last_ok_raw))
                    for key, env in unsendable:
                        b.put("failed", key, env)
                        b.delete("pending", key)
                        self.outbox.requeue(space_id, env, b, requeued)
                return
            pushed = await self.transport.push(space_id, [v for _, v in chunk])
            results, head_raw = pushed.acks, pushed.tree_head
            head = verify_tree_head(head_raw, self.ident.relay_key_or_raise(), log=space_id)
            with self.store.batch() as b:
                for (key, env), r in zip(chunk, results, strict=True):
                    if r.status in ("accepted", "duplicate"):
                        if r.offset is None or r.proof is None:
                            raise ProofError("the relay acknowledged an op without a proof")
                        leaf = merkle.leaf_hash(env)
                        merkle.verify_inclusion(leaf, r.offset, head.size, r.proof, head.root)
                        b.put("acked", space_id + u64(r.offset), leaf)
                        # Kept until pulled: the relay then omits it (omit_own).
                        b.put("ownop", space_id + u64(r.offset), env)
                        b.delete("pending", key)
                        if key in parted:  # the last part of an edit is logged
                            b.delete("edit", parted[key])
                            b.delete("editdata", parted[key])
                        last_ok_raw = env
                        report.pushed += 1
                        continue
                    report.rejected.append((r.code or "", r.message or ""))
                    b.put("failed", key, env)
                    b.delete("pending", key)
                    if r.code in RESEAL or (r.code in SHARED_RESEAL
                                            and self.members.shared(space_id)):
                        # (In a shared space, not_authorized: demoted to reader
                        # meanwhile, the edit waits, held, until it may write;
                        # epoch_compromised: another member revoked a device or
                        # someone was removed since, the edit is sealed again
                        # under the epoch that follows.)
                        # Keep the edit: re-queue its updates, to be sealed again
                        # under the current epoch on top of this device's last
                        # accepted op (a chain fork: restored from an older copy;
                        # stale epoch: it waited through two rotations; chain gap:
                        # an earlier op of this push was refused). The chain head
                        # moves back so the new ops link to what the log holds.
                        if not reset:
                            self.outbox.reset_head(b, space_id, _decoded(last_ok_raw))
                            reset = True
                        self.outbox.requeue(space_id, env, b, requeued)


    async def carry(self, space_id: bytes, report: SyncReport) -> None:
        """Upload other devices' ops that peers carried here and the log lacks
        (protocol 23.6): each is signed by its author, so any device may carry
        it and the log holder judges it as usual.

        A carried op is forgotten here once the log refuses it for good; one
        refused with ``chain_gap`` waits for its author's earlier op (carried
        later, or pushed by its author). Accepted ones are forgotten by the pull
        that finds them in the log.
        """
        rows = self.store.scan("pop", space_id)
        if not rows:
            return
        limits = await self.outbox.refresh_limits()
        for chunk, unsendable in upload_batches(rows, limits):
            sendable = chunk
            if sendable:
                pushed = await self.transport.push(space_id, [v for _, v in sendable])
                with self.store.batch() as b:
                    for (key, _), r in zip(sendable, pushed.acks, strict=True):
                        if r.status in ("accepted", "duplicate"):
                            report.carried += r.status == "accepted"
                        elif r.code != Code.CHAIN_GAP.value:
                            report.rejected.append((r.code or "", "a carried op of another "
                                                    f"device was refused: {r.message or ''}"))
                            b.delete("pop", key)
            if unsendable:  # (larger than this relay takes: its author re-seals it)
                with self.store.batch() as b:
                    for key, _ in unsendable:
                        b.delete("pop", key)


def _decoded(raw: bytes | None) -> OpEnvelope | None:
    return None if raw is None else decode_envelope(raw)


def upload_batches(rows: list[tuple[bytes, bytes]], limits: RelayLimits
                    ) -> Iterator[tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]]:
    """Pending rows in uploads that each fit one request, in order: ``(batch, [])``;
    from the first op that cannot fit even alone, ``([], it and every later one)``."""
    # The body length is kept as the batch grows (each envelope's own fit is
    # checked alone): request_fits over the whole batch at every op was
    # quadratic in the batch.
    batch: list[tuple[bytes, bytes]] = []
    body = UPLOAD_FRAME
    for i, (key, env) in enumerate(rows):
        if not limits.request_fits([len(env)]):
            if batch:
                yield batch, []
            yield [], rows[i:]
            return
        more = upload_len(len(env))
        if len(batch) >= min(MAX_BATCH, limits.max_batch_ops) or \
                body + more > limits.max_request_bytes:
            yield batch, []
            batch, body = [], UPLOAD_FRAME
        batch.append((key, env))
        body += more
    if batch:
        yield batch, []
