"""The registry view: the account's device registry as this device verified it.

Entries are verified from genesis against the pinned account key (never
trusting the relay) and stored; every later refresh verifies only the new
ones on top of the stored state. The view also keeps what a recovery decided
about devices it is revoking (``distrusted``, ``cutoff_hint``).
"""

from __future__ import annotations

from collections.abc import Sequence

from sddsf.client.engine.common import EngineObserver, as_list, notify, u64
from sddsf.client.engine.identity import DeviceIdentity
from sddsf.client.transport.base import Transport
from sddsf.errors import Code, ProofError
from sddsf.protocol import registry as reg
from sddsf.protocol.envelope import OpEnvelope

__all__ = ["RegistryView"]


class RegistryView:
    """The verified registry of this device's account (see the module docstring)."""

    def __init__(self, ident: DeviceIdentity, transport: Transport,
                 observer: EngineObserver | None = None) -> None:
        self.ident = ident
        self.store = ident.store
        self.transport = transport
        self.observer = observer
        self._state: reg.RegistryState | None = None
        #: Devices whose snapshots are used only when corroborated, even while
        #: they are active: a recovery that revokes them sets this first.
        self.distrusted: set[bytes] = set()
        #: Per device and space, the last seq a recovery's dry pull verified.
        self.cutoff_hint: dict[bytes, dict[bytes, int]] = {}

    def forget(self) -> None:
        """Drop the cached state (another process may have appended entries)."""
        self._state = None

    def state(self) -> reg.RegistryState:
        """The locally verified registry."""
        if self._state is None:
            entries = [v for _, v in self.store.scan("reg")]
            self._state = reg.verify_registry(entries, pinned=self.ident.account)
        return self._state

    async def refresh(self) -> reg.RegistryState:
        """Fetch and verify new registry entries (against the pinned account key)."""
        if self.store.count("reg") == 0:
            # A new device: the whole chain, verified from genesis against the
            # account key it was given when it joined.
            entries = await self.transport.registry(self.ident.account.account_id, 0)
            state = reg.verify_registry(entries, pinned=self.ident.account)
            with self.store.batch() as b:
                for seq, entry in enumerate(entries):
                    b.put("reg", u64(seq), entry)
            self._state = state
            return state
        old = state = self.state()
        new = await self.transport.registry(self.ident.account.account_id, state.seq + 1)
        with self.store.batch() as b:
            for entry in new:
                state = state.apply(entry)
                b.put("reg", u64(state.seq), entry)
        self._state = state
        if new:
            notify(self.observer, lambda o: o.on_registry_change(old, state))
        return state

    def extend(self, first: int, entries: Sequence[bytes]) -> bool:
        """Apply registry entries from seq ``first`` learnt from a peer (signed,
        so a peer can withhold entries but never forge them); the ones already
        held are skipped.

        Returns:
            Whether the registry grew.

        Raises:
            RegistryError, SignatureError: an entry does not apply (nothing stored).
        """
        old = state = self.state()
        new = list(entries)[max(0, state.seq + 1 - first):] if first <= state.seq + 1 else []
        if not new:
            return False
        for entry in new:
            state = state.apply(entry)
        with self.store.batch() as b:
            for seq in range(old.seq + 1, state.seq + 1):
                b.put("reg", u64(seq), new[seq - old.seq - 1])
        self._state = state
        notify(self.observer, lambda o: o.on_registry_change(old, state))
        return True

    def cutoff_for(self, device_id: bytes) -> dict[bytes, int]:
        """Per space, the last seq of ``device_id`` this device has verified."""
        cutoff: dict[bytes, int] = dict(self.cutoff_hint.get(device_id, {}))
        for space_id, _ in self.ident.spaces():
            raw = self.store.get("chain", space_id + device_id)
            if raw is not None:
                cutoff[space_id] = max(cutoff.get(space_id, 0), int(as_list(raw)[0]))
        return cutoff

    def trusted(self, device_id: bytes) -> bool:
        """Active, and not distrusted by a recovery that is revoking it."""
        return self.state().is_active(device_id) and device_id not in self.distrusted

    def label(self, device_id: bytes) -> str:
        """A device as messages name it: its name and an id prefix."""
        rec = self.state().device(device_id)
        name = f"{rec.name!r} " if rec is not None else ""
        return f"{name}({device_id.hex()[:12]})"

    async def covering(self, envs: list[OpEnvelope | bytes | None]) -> reg.RegistryState:
        """The registry, refreshed when an op names a later entry than this device has.

        Raises:
            ProofError: ``registry_withheld`` when the relay does not serve it.
        """
        # Each op names the registry seq its author had verified (header.reg): this
        # device needs at least that much of the registry to judge it. A relay
        # that serves such ops but not the entries is withholding the registry.
        state = self.state()
        wanted = max((e.header.reg for e in envs
                      if isinstance(e, OpEnvelope) and e.header.reg is not None), default=-1)
        if wanted <= state.seq:
            return state
        state = await self.refresh()
        if wanted > state.seq:
            raise ProofError(f"an op was written after registry entry {wanted}, but the relay "
                             f"serves the registry only up to entry {state.seq}: it is "
                             "withholding registry entries (a revocation?) from this device",
                             Code.REGISTRY_WITHHELD)
        return state
