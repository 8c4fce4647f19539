"""Device changes on an account whose policy requires approval (§9.8), client side.

:class:`Governance` turns a device change into a direct registry entry when the
policy allows it, or into a proposal otherwise; approves, vetoes, and enacts
proposals whose approvals are complete and whose veto window has passed. After
any change takes effect it does what the change requires: a new key epoch in
every space (so an added device can read and a revoked one cannot), and, after
a revocation, fresh snapshots per the space's re-encryption policy.

Appends race with other devices (two enact the same proposal, say); the relay
refuses the loser with ``registry_fork``. Every append here therefore rebuilds
its entry on the refreshed registry and retries, or stops when the refreshed
registry shows the work already done. Every operation is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sddsf.client.hosts import GovernanceHost
from sddsf.errors import ClockSkewError, Code, ConflictError, RegistryError, UsageError
from sddsf.protocol import registry as reg
from sddsf.protocol.approval import ActionType, Proposal, ProposalStatus, tally
from sddsf.protocol.identity import DeviceKeys

__all__ = ["REENCRYPT_POLICIES", "Change", "Governance", "ProposalView"]

#: Per space: ``lazy`` re-encrypts snapshots at the next compaction, ``eager``
#: at once. Either way new data uses the new epoch key immediately.
REENCRYPT_POLICIES = ("lazy", "eager")
_RETRIES = 3


@dataclass(frozen=True, slots=True)
class ProposalView:
    """A proposal as a person needs to see it."""

    proposal: Proposal
    have: int
    need: int
    opens_at: int  # ms; the veto window ends
    expires: int

    @property
    def id_hex(self) -> str:
        """The proposal id in hex (a prefix is enough on the command line)."""
        return self.proposal.id.hex()

    def ready(self, now_ms: int) -> bool:
        """Whether any active device may enact it now."""
        return (self.proposal.open_at(now_ms) and self.have >= self.need
                and now_ms >= self.opens_at)


@dataclass(frozen=True, slots=True)
class Change:
    """The outcome of a requested device change."""

    done: bool                       # took effect (directly or by enacting)
    pending: ProposalView | None = None  # awaiting approvals or its veto window


class Governance:
    """Device changes for one :class:`Device` (see the module docstring)."""

    def __init__(self, device: GovernanceHost) -> None:
        self.d = device

    # ------------------------------------------------------------ queries
    def view(self, p: Proposal, state: reg.RegistryState | None = None) -> ProposalView:
        """Tally and timing of ``p`` against ``state`` (default: the local registry)."""
        state = state or self.d.registry()
        have, need = tally(state, p)
        return ProposalView(p, have, need, p.ts + state.rules().veto_window_ms, p.expires)

    def open(self) -> list[ProposalView]:
        """Open proposals (pending, not expired), oldest first."""
        state = self.d.registry()
        return [self.view(p, state) for p in state.open_proposals(self.d.clock())]

    def find(self, ref: str) -> Proposal:
        """The open proposal that ``ref`` names: a prefix (≥ 4 hex digits) of its id,
        or the name or id prefix of the device it would add or revoke.

        Raises:
            UsageError: none or several match.
        """
        ref_l = ref.lower()
        found = []
        for v in self.open():
            a = v.proposal.action
            subject = a.target if a.target is not None else (
                a.device.device_id if a.device is not None else b"")
            if ((len(ref_l) >= 4 and v.id_hex.startswith(ref_l))
                    or (a.type is ActionType.ADD and a.name == ref)
                    or (len(ref_l) >= 4 and subject.hex().startswith(ref_l))
                    or (a.target is not None and self._name(a.target) == ref)):
                found.append(v.proposal)
        if len(found) != 1:
            raise UsageError(f"{'no' if not found else 'more than one'} open proposal matches "
                             f"{ref!r}; `sddsf device pending` lists them")
        return found[0]

    def _name(self, device_id: bytes) -> str:
        rec = self.d.registry().device(device_id)
        return rec.name if rec is not None else ""

    # ------------------------------------------------------------ changes
    async def change(self, kind: ActionType, fields: Mapping[str, object], *,
                     direct: Callable[[reg.RegistryState], bytes],
                     new_device: DeviceKeys | None = None) -> Change:
        """Carry out a device change: directly when the policy allows it, else as
        a proposal, enacted at once if it needs nothing more."""
        state = await self.d.refresh_registry()
        if not state.rules().governed:
            await self._append(direct)
            await self.after(kind)
            return Change(done=True)
        entry = await self._append(
            lambda s: reg.propose(s, self.d.keys, kind, fields, self.d.clock(), new_device))
        assert entry is not None  # noqa: S101 - no still_needed: appended or raised
        p = self.d.registry().proposals[reg.entry_hash(entry)]
        if await self.enact(p):
            return Change(done=True)
        return Change(done=False, pending=self.view(self.d.registry().proposals[p.id]))

    async def approve(self, p: Proposal) -> Change:
        """Approve ``p`` (another device's proposal) and enact it if that completes it."""
        state = await self.d.refresh_registry()
        current = state.proposals[p.id]
        if self.d.device_id not in current.approvals:
            await self._append(lambda s: reg.approve(s, self.d.keys, p.id, self.d.clock()))
        if await self.enact(p):
            return Change(done=True)
        return Change(done=False, pending=self.view(self.d.registry().proposals[p.id]))

    async def veto(self, p: Proposal, reason: str) -> None:
        """Veto ``p``: it can never be enacted."""
        await self._append(lambda s: reg.veto(s, self.d.keys, p.id, reason, self.d.clock()))

    async def enact(self, p: Proposal) -> bool:
        """Enact ``p`` if it is ready now. Returns whether it has taken effect
        (by this device or, in a race, by another)."""
        state = await self.d.refresh_registry()
        current = state.proposals[p.id]
        if current.status is ProposalStatus.ENACTED:
            return True
        if (not self.view(current, state).ready(self.d.clock())
                or self.d.device_id == current.action.target
                or not state.is_active(self.d.device_id)):
            return False
        target = current.action.target
        if target is not None and current.action.type is ActionType.REVOKE:
            await self.d.log_peer_ops(target)  # so that the cutoff keeps them
        cutoff = self.d.cutoff_for(target) if target is not None else {}
        try:
            done = await self._append(
                lambda s: reg.enact(s, self.d.keys, p.id, self.d.clock(), cutoff),
                still_needed=lambda s: s.proposals[p.id].status is ProposalStatus.PENDING)
        except ClockSkewError:
            return False  # the relay measures the veto window on its clock: not yet

        if done is not None:
            await self.after(current.action.type, target)
        return self.d.registry().proposals[p.id].status is ProposalStatus.ENACTED

    async def enact_ready(self) -> int:
        """Enact every open proposal that is ready (called by each sync)."""
        n = 0
        for v in self.open():
            if v.ready(self.d.clock()) and await self.enact(v.proposal):
                n += 1
        return n

    async def after(self, kind: ActionType, revoked: bytes | None = None) -> None:
        """What a change that took effect requires: a new epoch in every space
        for an added or revoked device; after a revocation, fresh snapshots
        where the space's policy is ``eager`` or where the stored snapshot
        can no longer be used (its author is the revoked device)."""
        if kind is ActionType.POLICY:
            return
        spaces = [s for s, _ in self.d.synced_spaces()]
        for space_id in spaces:
            await self.d.rotate(space_id)
        if kind is not ActionType.REVOKE:
            return
        await self.d.sync()
        for space_id in spaces:
            if (self.d.space_policy(space_id) == "eager"
                    or await self.d.snapshot_unusable(space_id)):
                await self.d.snapshot(space_id)

    # ----------------------------------------------------------- plumbing
    async def _append(self, build: Callable[[reg.RegistryState], bytes], *,
                      still_needed: Callable[[reg.RegistryState], bool] | None = None
                      ) -> bytes | None:
        # Build on the freshest registry; on a lost race, refresh and rebuild
        # (or stop when the refreshed registry no longer needs the entry).
        # Returns the entry this device appended, or None.
        for _ in range(_RETRIES):
            state = await self.d.refresh_registry()
            if still_needed is not None and not still_needed(state):
                return None
            entry = build(state)
            try:
                await self.d.relay.append_registry(self.d.account.account_id, entry)
            except RegistryError as exc:
                if exc.code is not Code.REGISTRY_FORK:
                    raise
                continue
            except ConflictError:
                # A revocation whose cutoff the log has outgrown (the target
                # wrote after our last pull): pull, so the rebuilt entry's
                # cutoff keeps every op the log holds.
                for space_id, _ in self.d.synced_spaces():
                    await self.d.pull_only(space_id)
                continue
            await self.d.refresh_registry()
            return entry
        raise RegistryError("other devices kept changing the registry; try again",
                            Code.REGISTRY_FORK)
