"""The sync engine: one device's parts, wired together, and the order of a sync.

:class:`SyncEngine` owns the parts of a device (identity, registry view,
keyring, documents, verified log, outbox, snapshots, puller, pusher,
corroboration) and moves verified ops between the local store and a
:class:`~sddsf.client.transport.base.Transport`. It imports neither the
:class:`~sddsf.client.device.Device` facade nor the account layer above it
(controller reports, governance): those come in as :class:`EngineHooks`.

A sync (:meth:`SyncEngine.run`), under the caller's home lock:

1. seal buffered edits; on a device that never pulled a log, read the
   first-sync bundle (protocol 17.9) when the relay offers it, so that the
   reads below are answered from it (each part verified as from its own
   endpoint); refresh the registry (verified against the pinned
   account key) and refuse to go on when this device is not active;
2. pin the relay key; learn new spaces; ``hooks.before_spaces``;
3. per space: verify key packages; rotate when due (or fail with
   ``rotation_blocked`` and push nothing); push; pull, verify and apply; push
   and pull again if a refusal re-queued edits. A device the relay made
   read-only (``policy_read_only``) only pulls until trusted again;
4. compact documents; per space, corroborate, snapshot and acknowledge;
5. ``hooks.after_sync``.

Events for an SDK have one place each: :class:`~sddsf.client.engine.common.EngineObserver`
is told of every applied remote edit (after it is stored), registry change,
rotation and alert; an observer that raises is logged and never stops a sync.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable

from sddsf.client.engine.common import (
    EngineHooks,
    EngineSettings,
    Progress,
    SyncReport,
    TaskLock,
    notify,
)
from sddsf.client.engine.corroboration import Corroboration
from sddsf.client.engine.documents import Documents
from sddsf.client.engine.identity import DeviceIdentity
from sddsf.client.engine.keyring import Keyring
from sddsf.client.engine.members import Members
from sddsf.client.engine.mesh import MeshOps
from sddsf.client.engine.outbox import Outbox
from sddsf.client.engine.peer_rebuild import PeerRebuild
from sddsf.client.engine.pull import Puller
from sddsf.client.engine.push import Pusher
from sddsf.client.engine.registry import RegistryView
from sddsf.client.engine.snapshots import Snapshots
from sddsf.client.engine.verified import VerifiedLog
from sddsf.client.records import Provenance
from sddsf.client.transport.base import Transport
from sddsf.errors import AuthenticationError, AuthorizationError, Code, NotFoundError
from sddsf.protocol import keypackage as kp
from sddsf.protocol.encoding import encode

__all__ = ["SyncEngine"]


class SyncEngine:
    """A device's parts and its sync (see the module docstring).

    Args:
        ident: the device's identity, read from its store.
        transport: what carries ops to and from the log.
        hooks: the account layer's additions to a sync, and the observer.
        settings: tunables (shared with the facade).
    """

    def __init__(self, ident: DeviceIdentity, transport: Transport, *,
                 hooks: EngineHooks | None = None,
                 settings: EngineSettings | None = None) -> None:
        self.ident = ident
        self.store = ident.store
        self.transport = transport
        self.hooks = hooks or EngineHooks()
        self.settings = settings or EngineSettings()
        observer = self.hooks.observer
        self.reg = RegistryView(ident, transport, observer)
        self.members = Members(ident, self.reg, transport)
        self.keyring = Keyring(ident, self.reg, transport,
                               max_epoch_age_s=self.hooks.max_epoch_age_s,
                               members=self.members, observer=observer)
        self.docs = Documents(ident.store, Provenance(ident.store, ident.device_id, ident.clock))
        self.log = VerifiedLog(ident)
        self.outbox = Outbox(ident, self.reg, self.keyring, self.docs, self.log, transport,
                             self.settings)
        self.snaps = Snapshots(ident, self.reg, self.keyring, self.docs, self.log, self.outbox,
                               transport, self.settings, observer)
        self.puller = Puller(ident, self.reg, self.keyring, self.docs, self.log, self.outbox,
                             self.snaps, transport, self.settings, self.members, observer)
        self.pusher = Pusher(ident, self.outbox, transport, self.members)
        #: Held by a sync and by the peers' work for their whole duration (TaskLock).
        self.lock = TaskLock()
        self.mesh = MeshOps(ident, self.reg, self.keyring, self.docs, self.members, observer)
        self.rebuild = PeerRebuild(self.store, self.mesh, self.puller, self.reg, observer)
        self.corr = Corroboration(ident, self.reg, self.keyring, self.docs, self.log,
                                  self.outbox, self.snaps, self.puller, transport, self.settings)

    def forget_caches(self) -> None:
        """Drop everything derived from the store (another process changed it)."""
        self.reg.forget()
        self.members.forget()
        self.keyring.forget_all()
        self.log.forget_all()
        self.outbox.forget_limits()
        self.ident.reload()

    async def run(self, progress: Progress | None = None) -> SyncReport:
        """One sync (see the module docstring); the caller holds the home lock."""
        self.outbox.flush()
        if self.store.count("head") == 0 and self.settings.use_bootstrap:
            await self.prefetch()
        try:
            return await self.steps(progress)
        finally:
            self.transport.end_prefetch()

    async def prefetch(self) -> None:
        """A new device: one request reads what this sync reads (17.9); each part
        is verified where it is used, exactly as from its endpoint."""
        if self.store.count("reg") and not self.reg.state().is_active(self.ident.device_id):
            return  # awaiting approval (or revoked): it has no session to ask with
        # No session for this device (e.g. revoked meanwhile): the steps say why.
        with contextlib.suppress(AuthenticationError, AuthorizationError):
            await self.transport.prefetch_first_sync()

    async def steps(self, progress: Progress | None) -> SyncReport:
        """The steps of a sync, in order (see the module docstring)."""
        report = SyncReport()
        self.puller.progress = progress
        self.members.new_sync()
        state = await self.reg.refresh()
        if not state.is_active(self.ident.device_id):
            self.hooks.refuse_inactive(state)
        await self.ident.pin(self.transport)
        known = {s for s, _ in self.ident.spaces()}
        own = self.ident.account.account_id
        for space in await self.transport.spaces():
            # Another account's shared space is held only once joined (its
            # owner's key compared by the people, not taken from the relay).
            if space.space_id not in known and space.owner in (None, own):
                with self.store.batch() as b:
                    b.put("space", space.space_id, encode(""))  # name learnt from its _meta doc
        await self.hooks.before_spaces()
        from_peers = self.rebuild.any_from_peers()
        for space_id, _ in self.ident.synced_spaces():
            try:
                packages = await self.keyring.refresh(space_id)
            except NotFoundError:
                if self.members.owner(space_id) == own:
                    raise
                # Removed from another account's space (or it left): what it
                # synced stays readable here; nothing more is pulled or pushed.
                self.store.put("gone", space_id, encode(True))
                report.unreachable.append(space_id)
                continue
            if self.mesh.waiting:  # ops from peers that needed these keys or entries
                self.mesh.retry(space_id)
            if from_peers:  # edits of a revoked device beyond its cutoff: rebuilt away
                self.rebuild.drop_revoked(space_id, report)
            # A device the relay's controller made read-only keeps its pending
            # ops and only pulls (and acknowledges) until it is trusted again.
            if not report.read_only:
                await self.unless_read_only(self.rotate_if_due(space_id, packages, report),
                                            report)
            if not report.read_only:
                await self.unless_read_only(self.pusher.push(space_id, report), report)
                await self.unless_read_only(self.pusher.carry(space_id, report), report)
            await self.puller.pull(space_id, report)
            if not report.read_only and self.outbox.flush():  # re-queued after a chain fork
                await self.unless_read_only(self.pusher.push(space_id, report), report)
                await self.puller.pull(space_id, report)
        self.docs.compact()
        for space_id, _ in self.ident.synced_spaces():
            if not report.read_only:
                await self.unless_read_only(self.corr.maintain(space_id, report), report)
        self.rebuild.rejudge_all()  # (states rebuilt above, or re-derived, 18.7)
        await self.hooks.after_sync(report)
        if report.read_only:  # never silent: the application hears it as an alert
            notify(self.hooks.observer, lambda o: o.on_alert(Code.POLICY_READ_ONLY.value,
                                                             report.read_only_reason))
        return report

    async def log_peer_ops(self, author: bytes) -> list[bytes]:
        """Carry ``author``'s ops that peers brought here and the log lacks to the
        log, then pull each space that had some; the caller holds the home lock.

        Called before a revocation of ``author``: its cutoff is the log's chain
        head, so an op applied here from a peer but never logged would otherwise
        fall beyond it and stay in this device's documents alone (protocol 23.8).
        An op the log refuses stays out of the log (the push report says why).

        Returns:
            The spaces that held such ops.
        """
        spaces = [s for s, _ in self.ident.synced_spaces()
                  if self.store.count("pop", s + author)]
        for space_id in spaces:
            report = SyncReport()
            await self.unless_read_only(self.pusher.carry(space_id, report), report)
            await self.puller.pull(space_id, report)
        return spaces

    @staticmethod
    async def unless_read_only(step: Awaitable[None], report: SyncReport) -> None:
        """Run a step that writes; a ``policy_read_only`` refusal marks the report."""
        try:
            await step
        except AuthorizationError as exc:
            if exc.code is not Code.POLICY_READ_ONLY:
                raise
            report.read_only, report.read_only_reason = True, exc.message

    async def rotate_if_due(self, space_id: bytes, packages: list[kp.KeyPackage],
                            report: SyncReport) -> None:
        """Open a new epoch when one is due, then hold or release edits so that
        nothing is pushed under an epoch a revoked device can read."""
        # A new epoch is due when a device was revoked after the current one
        # was made (its revoker may have crashed before rotating, or the relay
        # refused its package), when an active device is not a recipient
        # (catch-up), or when the current one is older than the policy's
        # max_epoch_age_s. On return the newest epoch is one no revoked device
        # holds (else rotation_blocked is raised and nothing is pushed), pending
        # ops sealed under a compromised epoch are held again, and held edits
        # are sealed under the new epoch.
        last = packages[-1]
        if self.keyring.epoch_due(last) and await self.keyring.try_rotate(space_id):
            report.rotated += 1
        self.outbox.hold_compromised_pending(space_id)
        if not self.members.may_write(space_id):
            # A reader of a shared space (or demoted to one): its edits wait on
            # this device, never sent, until an admin makes it a writer again.
            self.outbox.hold_pending(space_id)
            if self.store.count("held", space_id):
                report.not_writable.append(space_id)
            return
        self.outbox.release_held(space_id)
