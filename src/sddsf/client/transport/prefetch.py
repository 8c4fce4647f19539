"""A first-sync bundle (protocol 17.9) answering a transport's reads.

:class:`Prefetched` holds one bundle whose relay signature and request binding
were checked, and answers the reads a new device's first sync makes (registry,
spaces, key packages, snapshots, attestations, chunks, pages of the log) with
exactly the bytes the per-endpoint reads would have returned. It answers only
what the bundle holds; for anything else (a component the relay left out, a
page beyond the bundled tail) it returns None and the transport asks the
endpoint. The engine verifies every answer as it verifies an endpoint's: the
bundle changes how many requests a first sync makes, never what is checked.
"""

from __future__ import annotations

from sddsf.client.transport.base import (
    Attestations,
    PulledOp,
    PullPage,
    SnapshotBlob,
    SpaceInfo,
)
from sddsf.errors import NotFoundError
from sddsf.protocol.bootstrap import Bootstrap, BundledSnapshot, BundledSpace

__all__ = ["Prefetched"]


class Prefetched:
    """The reads one bundle answers (see the module docstring)."""

    def __init__(self, bundle: Bootstrap) -> None:
        self.bundle = bundle
        self._spaces = {s.space_id: s for s in bundle.spaces}

    def registry(self, account_id: bytes, since: int) -> list[bytes] | None:
        """The account's entries from seq ``since`` (the bundle holds them all)."""
        if account_id != self.bundle.account or self.bundle.registry is None:
            return None
        return list(self.bundle.registry[since:])

    def spaces(self) -> list[SpaceInfo]:
        """The spaces the account reads (a space without an owner is its own)."""
        return [SpaceInfo(s.space_id, s.size, s.root, s.epoch, s.owner or self.bundle.account)
                for s in self.bundle.spaces]

    def key_packages(self, space_id: bytes, since_epoch: int) -> list[bytes] | None:
        """The space's packages from ``since_epoch`` (bundled from epoch 0)."""
        space = self._spaces.get(space_id)
        if space is None or space.keys is None:
            return None
        return list(space.keys[since_epoch:])

    def _snapshot(self, space_id: bytes, doc_id: bytes) -> BundledSnapshot | None:
        space = self._spaces.get(space_id)
        return next((n for n in space.snapshots if n.doc == doc_id), None) if space else None

    def snapshot(self, space_id: bytes, doc_id: bytes) -> SnapshotBlob | None:
        """The snapshot stored under ``doc_id``.

        Raises:
            NotFoundError: the bundle says none is stored (as the endpoint would).
        """
        snap = self._snapshot(space_id, doc_id)
        if snap is None:
            return None
        if snap.blob is None:
            raise NotFoundError("no snapshot for this doc")
        return SnapshotBlob(snap.covers_offset, snap.blob)

    def attestations(self, space_id: bytes, doc_id: bytes) -> Attestations | None:
        """The verdicts about the snapshot stored under ``doc_id``."""
        snap = self._snapshot(space_id, doc_id)
        return None if snap is None else Attestations(snap.snapshot_id, snap.attestations)

    def chunk(self, space_id: bytes, chunk_id: bytes) -> bytes | None:
        """A bundled snapshot chunk."""
        space = self._spaces.get(space_id)
        return space.chunks.get(chunk_id) if space is not None else None

    def pull(self, space_id: bytes, after: int, limit: int) -> PullPage | None:
        """The page after ``after`` when the bundled tail holds its start (a page
        may be shorter than ``limit``, as the endpoint's may)."""
        space = self._spaces.get(space_id)
        if space is None or space.after is None:
            return None
        start = after - space.after
        if start < 0 or start > len(space.ops) or (start == len(space.ops)
                                                   and not _reaches_head(space)):
            return None
        ops = tuple(PulledOp(o.offset, o.op_id, o.leaf_hash, o.envelope)
                    for o in space.ops[start:start + limit])
        return PullPage(ops, space.head)


def _reaches_head(space: BundledSpace) -> bool:
    # An empty page is the log's end only if the tail reaches the listed size.
    end = space.ops[-1].offset + 1 if space.ops else space.after + 1 if space.after is not None \
        else 0
    return end >= space.size
