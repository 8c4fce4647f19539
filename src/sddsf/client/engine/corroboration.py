"""Corroboration (protocol.md 18.7) and the per-sync upkeep that lets a relay prune.

A state that started from another device's snapshot rests on that device's
word until a trusted device other than its author corroborates it. This part
keeps such a state only while its author is trusted and nobody trusted
disputes it, becomes grounded when a trusted device attests a match, and
otherwise re-derives the space from the log (or a snapshot the rules still
trust), alerting when the rebuilt documents differ. Grounded devices recompute
other devices' snapshots from the log they hold and attest the verdict; the
relay prunes only under corroborated snapshots. :meth:`Corroboration.maintain`
does all of it once per sync, then writes a snapshot when one is due and
acknowledges progress.
"""

from __future__ import annotations

import functools
from typing import Any

import pycrdt

from sddsf.client.engine.common import EngineSettings, SyncReport, as_dict, as_int, u64
from sddsf.client.engine.documents import Documents
from sddsf.client.engine.identity import DeviceIdentity
from sddsf.client.engine.keyring import Keyring
from sddsf.client.engine.outbox import NoKey, Outbox
from sddsf.client.engine.pull import Puller
from sddsf.client.engine.registry import RegistryView
from sddsf.client.engine.snapshots import Snapshots, bounded, same_states
from sddsf.client.engine.verified import VerifiedLog
from sddsf.client.parts import PartsReader
from sddsf.client.transport.base import Transport
from sddsf.errors import ConflictError, EpochError, NotFoundError, ProofError, SddsfError
from sddsf.protocol.encoding import encode
from sddsf.protocol.snapshot import (
    CORROBORATED_SNAPSHOT_DOC,
    MATCH,
    MISMATCH,
    SPACE_SNAPSHOT_DOC,
    SnapshotClaims,
    attest_snapshot,
    load_snapshot,
    open_snapshot,
)

__all__ = ["Corroboration"]


class Corroboration:
    """Snapshot trust and upkeep for one device (see the module docstring)."""

    def __init__(self, ident: DeviceIdentity, registry: RegistryView, keyring: Keyring,
                 docs: Documents, log: VerifiedLog, outbox: Outbox, snaps: Snapshots,
                 puller: Puller, transport: Transport, settings: EngineSettings) -> None:
        self.ident = ident
        self.store = ident.store
        self.reg = registry
        self.keyring = keyring
        self.docs = docs
        self.log = log
        self.outbox = outbox
        self.snaps = snaps
        self.puller = puller
        self.transport = transport
        self.settings = settings

    async def maintain(self, space_id: bytes, report: SyncReport) -> None:
        """Corroborate, snapshot and acknowledge the space (see the module docstring)."""
        # Corroborate, snapshot and acknowledge: together they let the relay prune.
        size = self.log.tree(space_id).size
        if not size:
            return
        # Look at the relay's snapshots at the first sync of a session and
        # whenever the log grew by check_every (each look costs a request).
        last = self.snaps.checked_at.get(space_id)
        look = self.settings.check_snapshots and (
            last is None or size - last >= self.settings.check_every)
        if look:
            self.snaps.checked_at[space_id] = size
        base = self.snaps.snapbase(space_id)
        if base is not None:
            rederived = len(report.rederived)
            await self.check_base(space_id, base, report, look=look)
            look = look or len(report.rederived) > rederived  # a new state: check it too
        if look and self.snaps.grounded(space_id):
            await self.cross_check(space_id, report)
        size = self.log.tree(space_id).size
        if self.snaps.due(space_id) and await self.snaps.write(space_id) is not None:
            report.snapshots_written += 1
        last_ack = self.store.get("ackmark", space_id)
        if self.settings.ack_every and (last_ack is None or report.snapshots_written
                               or size - 1 - as_int(last_ack) >= self.settings.ack_every):
            await self.transport.acknowledge(space_id, size - 1)
            self.store.put("ackmark", space_id, encode(size - 1))

    async def check_base(self, space_id: bytes, base: dict[str, Any], report: SyncReport, *,
                          look: bool) -> None:
        """Keep, ground or re-derive a state that rests on one device's snapshot."""
        # A state that rests on one device's word: keep it only while that device
        # is trusted and nobody trusted disputes it; become grounded when a
        # trusted device corroborates it; re-derive otherwise (18.7).
        bid, author = bytes(base["id"]), bytes(base["author"])
        if author and not self.reg.trusted(author):
            await self.rederive(space_id, report, exclude=bid, author=author,
                                 why="its author is no longer trusted")
            return
        for doc in (SPACE_SNAPSHOT_DOC, CORROBORATED_SNAPSHOT_DOC) if look else ():
            try:
                raw = (await self.transport.get_snapshot(space_id, doc)).blob
            except NotFoundError:
                continue
            claims = self.snaps.claims_of(space_id, raw)
            if claims is None or claims.id != bid:
                continue
            verdicts = await self.snaps.verdicts(space_id, doc, claims)
            if verdicts.dissent:
                await self.rederive(space_id, report, exclude=bid, author=author,
                                     why=f"device {self.reg.label(verdicts.dissent[0])} reports "
                                     "that it does not match the log")
                return
            if verdicts.matchers:
                self.snaps.set_grounded(space_id, verdicts.matchers)
                return
        if self.snaps.due(space_id) and await self.snaps.log_complete(space_id):
            # Due to publish, but this device signs only what it can check: check
            # its start against the log it can still replay.
            await self.rederive(space_id, report, exclude=None, author=author or None,
                                 why="it was never corroborated", replay=True)

    async def cross_check(self, space_id: bytes, report: SyncReport) -> None:
        """Recompute the relay's current snapshot from the log and attest the verdict."""
        # Recompute the relay's current snapshot from the log this device holds
        # and attest the verdict: the relay prunes only under a corroborated
        # snapshot, and readers use the verdicts (18.7).
        served = await self.transport.snapshot_attestations(space_id, SPACE_SNAPSHOT_DOC)
        sid, _ = served.snapshot_id, list(served.attestations)
        if sid is None or sid == self.store.get("snapcheck", space_id):
            return
        try:
            raw = (await self.transport.get_snapshot(space_id, SPACE_SNAPSHOT_DOC)).blob
            claims = self.snaps.claims_of(space_id, raw)
        except (NotFoundError, ProofError):
            return  # gone, or bad: refused where it is read
        tree = self.log.tree(space_id)
        if claims is None or claims.id != sid or claims.size > tree.size \
                or self.outbox.has_unsent(space_id):
            return  # another one meanwhile, not pulled that far yet, or edits unsent
        if claims.author == self.ident.device_id or claims.size < tree.base:
            self.store.put("snapcheck", space_id, sid)  # its own, or before what it holds
            return
        verdict = await self.recompute(space_id, raw, claims)
        if verdict is None:
            return
        att = attest_snapshot(self.ident.keys, space=space_id, doc=SPACE_SNAPSHOT_DOC,
                              snapshot=claims.id, size=claims.size, verdict=verdict,
                              ts_ms=self.ident.clock())
        try:
            await self.transport.attest_snapshot(space_id, SPACE_SNAPSHOT_DOC, att)
        except ConflictError:
            return  # replaced meanwhile: the next sync checks the new one
        self.store.put("snapcheck", space_id, sid)
        report.attested += 1
        if verdict == MISMATCH:
            self.snaps.alert(report, f"the snapshot of space {space_id.hex()[:12]} written by "
                             f"device {self.reg.label(claims.author)} does not match the log: "
                             "that device may be compromised; revoke it (`sddsf device revoke`). "
                             "This device attested the mismatch and publishes its own snapshot")
            await self.snaps.write(space_id)

    async def recompute(self, space_id: bytes, raw: bytes,
                         claims: SnapshotClaims) -> str | None:
        """``match`` if the snapshot's documents plus the logged ops after it give
        this device's documents, ``mismatch`` if not (or if its author signed
        something unreadable), None if this device cannot tell."""
        keys = self.keyring.keys_cached(space_id)
        try:
            manifest = open_snapshot(raw, registry=self.reg.state(), space=space_id,
                                     epoch_keys=keys, accept_revoked=True)
            chunks = await bounded([functools.partial(self.transport.get_snapshot_chunk, space_id,
                                                       cid) for cid in manifest.chunk_ids])
            snap = load_snapshot(manifest, chunks, epoch_keys=keys)
        except (EpochError, ProofError, NotFoundError):
            return None  # no key, or the relay's fault (a wrong or missing chunk)
        except SddsfError:
            return MISMATCH
        docs: dict[str, pycrdt.Doc[Any]] = {}
        try:
            for name, state in snap.docs.items():
                docs[name] = pycrdt.Doc()
                docs[name].apply_update(state)
        except ValueError:
            return MISMATCH  # not Yjs: no log gives that
        # The logged ops after it, as this device applied them: a revoked device's
        # ops beyond its cutoff skipped, multi-part edits joined (a snapshot is
        # never written while an active author's edit is half logged).
        parts = PartsReader(self.store, space_id, fresh=True)
        skipped = {int.from_bytes(k[16:], "big") for k in self.store.keys("skipped", space_id)}
        for offset in range(claims.size, self.log.tree(space_id).size):
            if offset in skipped:
                continue
            env = self.store.get("op", space_id + u64(offset))
            if env is None:
                return None
            try:
                body = self.outbox.op_body(space_id, env, parts)
            except NoKey:
                return None
            if body is None:
                continue  # a part of an edit that is not complete yet
            name, updates = body
            doc = docs.setdefault(name, pycrdt.Doc())
            for update in updates:
                doc.apply_update(update)
        mine = {n: self.docs.doc(space_id, n).get_update() for n in self.docs.doc_names(space_id)}
        theirs = {n: d.get_update() for n, d in docs.items()}
        return MATCH if same_states(mine, theirs) else MISMATCH

    async def rederive(self, space_id: bytes, report: SyncReport, *, exclude: bytes | None,
                        author: bytes | None, why: str, replay: bool = False) -> None:
        """Rebuild the space's state from the log (or from a snapshot the rules of
        18.7 still trust, never ``exclude``), keeping unsent local edits; alert
        when the rebuilt documents differ from the ones held."""
        if not await self.snaps.log_complete(space_id) and (
                replay or await self.snaps.fetch(space_id, SyncReport(), docs=False,
                                                     exclude=exclude) is None):
            if await self.only_record(space_id, exclude):
                return
            # Nothing to rebuild it from: keep it, but it stays ungrounded (never
            # published nor used to attest) until something corroborates it.
            where = space_id.hex()[:12]
            self.snaps.alert(report, f"this device's state of space {where} rests on a "
                        f"snapshot ({why}) and the relay holds nothing trusted to re-derive "
                        "it from: it is kept, but this device will not publish it")
            return
        before = {n: self.docs.doc(space_id, n).get_update()
                  for n in self.docs.doc_names(space_id)}
        self.puller.reset_space(space_id, exclude)
        saved = self.settings.use_snapshots
        self.settings.use_snapshots = saved and not replay
        try:
            await self.puller.pull(space_id, report)
        finally:
            self.settings.use_snapshots = saved
        report.rederived.append(space_id)
        after = {n: self.docs.doc(space_id, n).get_update()
                 for n in self.docs.doc_names(space_id)}
        if not same_states(before, after):
            who = f"device {self.reg.label(author)}" if author else "another device"
            where = space_id.hex()[:12]
            self.snaps.alert(report, f"this device's state of space {where} came from a "
                        f"snapshot written by {who} that does not match the log ({why}); it "
                        "was re-derived from the log and trusted snapshots")

    async def only_record(self, space_id: bytes, base: bytes | None) -> bool:
        """Whether the state rests on the only record of a pruned history."""
        # With history pruned, a snapshot that a device other than its author
        # attested is what a new device would start from too (18.7 rule 3): the
        # state resting on it is as good as the relay can offer; say so once.
        start = await self.snaps.fetch(space_id, SyncReport(), docs=False)
        if base is None or start is None or start[0].id != base or not start[1].get("final"):
            return False
        row = as_dict(self.store.get("snapbase", space_id) or encode({}))
        self.store.put("snapbase", space_id, encode({**row, "final": True}))
        return True
