"""A space's state rebuilt without the edits of a revoked device that reached this
device from peers beyond the revocation's cutoff (protocol.md 23.8).

Every other device refuses such an op, and a CRDT update cannot be taken back,
so a device that applied one drops the space's state and rebuilds it from the
log (``Puller.reset_space``, as a new device would, keeping its unsent edits);
the ops it learnt from peers that the log still lacks are then judged again on
top of the rebuilt state.

Rows (device store): ``prejudge`` space → empty, written by ``reset_space`` in
the transaction that drops the state (and the ``pchain`` and ``papplied`` rows
with it) when the space holds ``pop`` ops; deleted once they were judged again.
So an interrupted rebuild resumes: the next pull rebuilds the state, and the
end of that sync re-judges the ops. Every rebuild (the re-derivation of 18.7
too) goes through it, so an edit learnt from a peer is never lost by one.
"""

from __future__ import annotations

from collections.abc import Mapping

from sddsf.client.engine.common import EngineObserver, SyncReport, as_list, notify
from sddsf.client.engine.mesh import MeshOps
from sddsf.client.engine.pull import Puller
from sddsf.client.engine.registry import RegistryView
from sddsf.client.store import LocalStore
from sddsf.errors import Code, SddsfError

__all__ = ["PeerRebuild"]


class PeerRebuild:
    """Finds edits from peers beyond a revocation's cutoff and has them rebuilt away."""

    def __init__(self, store: LocalStore, mesh: MeshOps, puller: Puller,
                 registry: RegistryView, observer: EngineObserver | None) -> None:
        self.store = store
        self.mesh = mesh
        self.puller = puller
        self.reg = registry
        self.observer = observer

    def any_from_peers(self) -> bool:
        """Whether this device holds any op learnt from peers (one read)."""
        return self.store.count("pchain") > 0

    def beyond_cutoff(self, space_id: bytes) -> dict[bytes, int]:
        """Revoked authors (-> their cutoff in the space) some of whose ops this
        device applied from peers lie beyond that cutoff."""
        out: dict[bytes, int] = {}
        for key, raw in self.store.scan("pchain", space_id):
            author = key[len(space_id):]
            try:
                _, state = self.mesh.writer(space_id, author)
            except SddsfError:
                continue  # no longer a writer of the space: its ops are judged so
            rec = state.device(author)
            if rec is None or rec.revoked_seq is None:
                continue
            cutoff = rec.cutoff.get(space_id, 0)
            if int(as_list(raw)[0]) > cutoff:
                out[author] = cutoff
        return out

    def drop_revoked(self, space_id: bytes, report: SyncReport) -> None:
        """When the space holds such edits: forget those ops and drop the state,
        for the caller's pull to rebuild; say so (``rederived``, a ``revoked``
        alert)."""
        revoked = self.beyond_cutoff(space_id)
        if not revoked:
            return
        self._forget(space_id, revoked)
        self.puller.reset_space(space_id, None)
        report.rederived.append(space_id)
        who = ", ".join(f"revoked device {self.reg.label(a)}" for a in revoked)
        entry = (Code.REVOKED.value,
                 f"edits of {who} that reached this device from peers beyond the "
                 "revocation's cutoff were taken back: the state of space "
                 f"{space_id.hex()[:12]} is rebuilt from the log")
        report.alerts.append(entry)
        notify(self.observer, lambda o: o.on_alert(*entry))

    def _forget(self, space_id: bytes, revoked: Mapping[bytes, int]) -> None:
        with self.store.batch() as b:
            for author, cutoff in revoked.items():
                for key in self.store.keys("pop", space_id + author):
                    if int.from_bytes(key[-8:], "big") > cutoff:
                        b.delete("pop", key)

    def rejudge_all(self) -> None:
        """After the pulls that rebuilt states: judge each such space's ops learnt
        from peers again (the ones the log lacks are applied on top)."""
        for space_id in self.store.keys("prejudge"):
            self.mesh.accept(space_id, [raw for _, raw in self.store.scan("pop", space_id)])
            with self.store.batch() as b:
                b.delete("prejudge", space_id)
