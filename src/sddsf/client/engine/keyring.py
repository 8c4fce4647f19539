"""The keyring: a space's key epochs, their packages, and rotation.

Key packages are verified as a chain (each names the previous one's hash) and
stored; a stored package is never replaced (another one for the same epoch is
fork evidence: ``key_package_fork``). A device reads every epoch key its
packages wrap for it, and the earlier keys each package carries (key history).

Rotation opens the next epoch for the current active devices. A device revoked
since the newest epoch was made holds that epoch's key, so nothing may be
written under it: when the relay refuses this device's new package and serves
no newer one without the revoked device, rotation fails with
``rotation_blocked`` (and the caller keeps its edits).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from sddsf.client.engine.common import EngineObserver, notify
from sddsf.client.engine.identity import DeviceIdentity
from sddsf.client.engine.members import Members
from sddsf.client.engine.registry import RegistryView
from sddsf.client.transport.base import Transport
from sddsf.crypto import random_bytes
from sddsf.errors import Code, ConflictError, EpochError, ProofError, SddsfError, UsageError
from sddsf.protocol import keypackage as kp
from sddsf.protocol import registry as reg
from sddsf.protocol.keypackage_v3 import (
    RotationDue,
    build_key_package_v3,
    rotation_due_v3,
    verify_key_package_v3,
)
from sddsf.protocol.sharing import check_epoch_holders, holders_of

__all__ = ["Keyring", "previous_keys"]


class Keyring:
    """One device's key epochs of every space (see the module docstring)."""

    def __init__(self, ident: DeviceIdentity, registry: RegistryView, transport: Transport, *,
                 max_epoch_age_s: Callable[[], int | None], members: Members,
                 observer: EngineObserver | None = None) -> None:
        self.ident = ident
        self.store = ident.store
        self.reg = registry
        #: Shared spaces: the membership and the member accounts' registries.
        self.members = members
        self.transport = transport
        #: The relay's published maximum epoch age (clamped), None if none.
        self.max_epoch_age_s = max_epoch_age_s
        self.observer = observer
        self._key_cache: dict[bytes, dict[int, bytes]] = {}
        self._seq_cache: dict[bytes, tuple[int, ...]] = {}

    def forget_all(self) -> None:
        """Drop every cached key (another process may have stored packages)."""
        self._key_cache.clear()
        self._seq_cache.clear()

    def package(self, space_id: bytes, epoch: int, prev: bytes) -> bytes:
        """A new key package for ``epoch`` (a fresh key wrapped for every active device)."""
        # The new epoch's package wraps the earlier keys a device added later
        # needs: the previous epoch's key (whose package leads further back), or,
        # after version 1 packages, every earlier key this device holds.
        state = self.reg.state()
        previous: list[bytes] = []
        if epoch:
            known = self.keys_cached(space_id)
            last = self.stored_package(space_id, epoch - 1)
            if last is None or epoch - 1 not in known:
                raise UsageError("this device lacks the space's previous key; sync first")
            previous = previous_keys(known, last)
        if self.members.shared(space_id):
            # A shared space's key goes to every member's active devices and
            # recovery key, as the membership and registries stand (10.8).
            fold = self.members.current(space_id)
            return build_key_package_v3(
                creator=self.ident.keys, creator_account=self.ident.account.account_id,
                registries=self.members.members(space_id, fold).registries,
                members=fold.state.members, membership_head=fold.state.head, space=space_id,
                epoch=epoch, prev=prev, epoch_key=random_bytes(32), ts_ms=self.ident.clock(),
                previous_keys=previous)
        return kp.build_key_package(
            creator=self.ident.keys, registry=state, space=space_id, epoch=epoch, prev=prev,
            epoch_key=random_bytes(32), ts_ms=self.ident.clock(),
            previous_keys=previous)

    async def try_rotate(self, space_id: bytes, *, again: bool = True) -> bool:
        """Open the next epoch; True when this device stored it (see below)."""
        # True when this device stored the new epoch. A refused upload (409:
        # another device's package holds the epoch, or the relay claims so) is
        # accepted only if the package the relay then serves is safe to write
        # under; otherwise nothing may be written: rotation_blocked.
        packages = await self.refresh(space_id)
        last = packages[-1]
        pkg = self.package(space_id, last.epoch + 1, last.hash)
        try:
            await self.transport.put_key_package(space_id, pkg)
        except (ConflictError, EpochError) as exc:
            newest = (await self.refresh(space_id))[-1]
            if again and isinstance(exc, ConflictError) and newest.epoch == last.epoch \
                    and self.members.shared(space_id):
                # Nobody opened the epoch: the space's membership moved on since
                # this device folded it. Read it ahead and build again, once.
                await self.members.ahead(space_id)
                return await self.try_rotate(space_id, again=False)
            self.check_not_blocked(space_id, newest, exc)
            return False
        self.store.put("kp", space_id + (last.epoch + 1).to_bytes(4, "big"), pkg)
        self.forget(space_id)
        notify(self.observer, lambda o: o.on_rotation(space_id, last.epoch + 1,
                                                   self.ident.device_id))
        return True

    def check_not_blocked(self, space_id: bytes, newest: kp.KeyPackage,
                           cause: SddsfError | None = None) -> None:
        """Raise ``rotation_blocked`` when ``newest`` predates a revocation (or, in a
        shared space, a membership change or another member's revocation)."""
        revoked = kp.revoked_since(newest, self.reg.state())
        removed: list[str] = []
        if self.members.shared(space_id):
            # Not blocking: a member added or a device not yet a recipient (they
            # only lack the key); blocking: anyone who holds it and should not.
            due = self.rotation_due(space_id, newest)
            revoked = list(due.revoked)
            removed = [f"member {a.hex()[:12]}" for a in due.removed]
        if not revoked and not removed:
            return
        names = ", ".join([*(repr(r.name) for r in revoked), *removed])
        why = f" ([{cause.code.value}] {cause.message})" if cause is not None else ""
        raise EpochError(
            f"cannot rotate the key of space {self.ident.space_label(space_id)} after the "
            f"revocation of {names}: the relay refused this device's new key package{why} "
            f"and serves no newer epoch without the revoked device (its newest is epoch "
            f"{newest.epoch}). Nothing is written under the old key, which the revoked "
            "device holds: your edits stay on this device. Sync again later; if this "
            "persists, the relay is suppressing the rotation (it may be colluding with the "
            "revoked device): move the account to another relay", Code.ROTATION_BLOCKED)

    async def refresh(self, space_id: bytes) -> list[kp.KeyPackage]:
        """Fetch, verify (as a chain) and store the space's key packages.

        Raises:
            ProofError: ``key_package_fork`` when the relay serves another package
                for an epoch this device stored (a stored package is never
                replaced), ``proof_invalid`` when it no longer serves one this
                device stored, or serves none.
        """
        raw = await self.transport.key_packages(space_id, 0)
        state = await self.reg.refresh()
        verify = await self.verifier(space_id, state, raw)
        stored = dict(self.store.scan("kp", space_id))
        held_keys = bool(stored)  # a space this device already held keys of
        verified: list[kp.KeyPackage] = []
        opened: list[kp.KeyPackage] = []  # epochs new to this device (observer)
        unchanged = True  # every package so far is the stored one of its epoch
        for epoch, data in enumerate(raw):
            previous = verified[-1] if verified else None
            unchanged = unchanged and stored.get(space_id + epoch.to_bytes(4, "big")) == data
            # A package byte-identical to the stored one of its epoch, after a run
            # of such packages, passed these checks when it was stored (or this
            # device made it): they depend only on the package, the previous one
            # and the registry up to its registry_seq, none of which changed.
            pkg = kp.decode_key_package(data) if unchanged else verify(data, previous)
            mine = stored.pop(space_id + pkg.epoch.to_bytes(4, "big"), None)
            if mine is not None and mine != data:
                raise ProofError(
                    f"the relay serves another key package for epoch {pkg.epoch} of space "
                    f"{self.ident.space_label(space_id)} than the one this device stored: two "
                    "packages for one epoch are fork evidence (the relay, or a device, "
                    "equivocates); the stored one is kept", Code.KEY_PACKAGE_FORK)
            if mine is None and pkg.epoch > 0 and held_keys:
                opened.append(pkg)
            verified.append(pkg)
        if stored:
            epochs = sorted(int.from_bytes(k[16:], "big") for k in stored)
            raise ProofError(f"the relay no longer serves the key package(s) of epoch(s) "
                             f"{epochs} of space {self.ident.space_label(space_id)} that this "
                             "device stored: it is hiding or rolling back key packages")
        if not verified:
            raise ProofError("the relay has no key package for this space")
        with self.store.batch() as b:
            for pkg in verified:
                b.put("kp", space_id + pkg.epoch.to_bytes(4, "big"), pkg.raw)
        self.forget(space_id)
        for pkg in opened:
            notify(self.observer, functools.partial(_tell_rotation, space_id, pkg))
        return verified

    async def verifier(self, space_id: bytes, state: reg.RegistryState, raw: list[bytes]
                       ) -> Callable[[bytes, kp.KeyPackage | None], kp.KeyPackage]:
        """How this space's packages verify: one-account packages against the
        owner's registry (this account's, or a shared space owner's, verified
        from its pinned key); shared ones (version 3) against the member
        registries and the membership, read ahead of the log when a package
        names entries this device has not pulled yet (10.8, 21.7)."""
        owner = self.members.owner(space_id)
        owner_state = state if owner == self.ident.account.account_id else \
            await self.members.refresh_registry(owner)
        fold = self.members.fold(space_id)
        if any(kp.decode_key_package(p).version >= kp.KEY_PACKAGE_VERSION_SHARED for p in raw):
            fold = await self.members.ahead(space_id)
        stated = [(a, seq) for p in raw for a, seq in kp.decode_key_package(p).members or ()]
        # Every account a package was sealed for: former members too (history).
        accounts = {owner, *fold.state.members, *(a for a, _ in stated)}
        regs = await self.members.refresh_all(accounts, force={
            a for a, seq in stated if (s := self.members.registry_of(a)) is None or s.seq < seq
        }) if fold.state.applied else {}

        def verify(data: bytes, previous: kp.KeyPackage | None) -> kp.KeyPackage:
            if kp.decode_key_package(data).version >= kp.KEY_PACKAGE_VERSION_SHARED:
                return verify_key_package_v3(data, space=space_id, previous=previous,
                                             registries=regs, members_at=fold.sets.get)
            return kp.verify_key_package(data, registry=owner_state, space=space_id,
                                         previous=previous)

        return verify

    def stored_packages(self, space_id: bytes) -> list[kp.KeyPackage]:
        """The space's key packages this device stored, by epoch."""
        return [kp.decode_key_package(data) for _, data in self.store.scan("kp", space_id)]

    def stored_package(self, space_id: bytes, epoch: int) -> kp.KeyPackage | None:
        """The stored package of ``epoch``, if any."""
        raw = self.store.get("kp", space_id + epoch.to_bytes(4, "big"))
        return None if raw is None else kp.decode_key_package(raw)

    def epoch_keys(self, space_id: bytes) -> dict[int, bytes]:
        """Every epoch key of the space this device can read (uncached)."""
        # Every key this device can read: the packages that list it, and the
        # earlier keys their chain wraps (keypackage.open_key_history).
        return kp.open_key_history(self.stored_packages(space_id), self.ident.device_id,
                                   self.ident.keys.kx)

    def package_seqs(self, space_id: bytes, account: bytes | None = None) -> tuple[int, ...]:
        """Per epoch, the registry seq its package took ``account``'s devices at
        (default: this device's account; 0 for an account it was not sealed for)."""
        # Epoch -> the registry_seq of its package, for the rules' EpochWindow.
        account = account or self.ident.account.account_id
        key = space_id + account
        seqs = self._seq_cache.get(key)
        if seqs is None:
            seqs = self._seq_cache[key] = tuple(
                h.get(account, 0) for h in self.holders(space_id))
        return seqs

    def holders(self, space_id: bytes) -> list[dict[bytes, int]]:
        """Per epoch, the accounts its key was sealed for, each with its registry
        position (``protocol.sharing.holders_of``)."""
        packages = self.stored_packages(space_id)
        if [p.epoch for p in packages] != list(range(len(packages))):
            raise ProofError("this device's stored key packages are not a chain from "
                             "epoch 0; the device store is damaged")
        owner = self.members.owner(space_id)
        return [holders_of(p.members, owner, p.registry_seq) for p in packages]

    def forget(self, space_id: bytes) -> None:
        """Drop the space's cached keys (new packages were stored)."""
        self._key_cache.pop(space_id, None)
        for key in [k for k in self._seq_cache if k[:len(space_id)] == space_id]:
            del self._seq_cache[key]

    def keys_cached(self, space_id: bytes) -> dict[int, bytes]:
        """:meth:`epoch_keys`, computed once per change."""
        keys = self._key_cache.get(space_id)
        if keys is None:
            keys = self._key_cache[space_id] = self.epoch_keys(space_id)
        return keys

    def compromised(self, space_id: bytes, epoch: int, state: reg.RegistryState) -> bool:
        """Whether a device revoked (in ``state``) after ``epoch``'s package was made
        may hold its key: no new op may be sealed or pushed under it."""
        seqs = self.package_seqs(space_id)
        if epoch >= len(seqs) or state.revoked_between(seqs[epoch], state.seq):
            return True
        if not self.members.shared(space_id):
            return False
        # Shared: also held by a member removed since, or by another member's
        # device revoked since (21.7; this account's own is the check above).
        try:
            check_epoch_holders(self.holders(space_id)[epoch],
                                self.members.members(space_id),
                                skip=self.ident.account.account_id)
        except EpochError:
            return True
        return False

    def epoch_due(self, last: kp.KeyPackage) -> bool:
        """Whether a new epoch is due: the newest is older than the policy allows
        (the account's, or the relay's published one when stricter), or an active
        device is not a recipient / a device was revoked since it was made."""
        max_age = self.reg.state().policy.get("max_epoch_age_s")
        published = self.max_epoch_age_s()  # the relay's, clamped, never weaker
        if published is not None and not (isinstance(max_age, int) and 0 < max_age
                                          <= published):
            max_age = published
        aged = isinstance(max_age, int) and not isinstance(max_age, bool) and max_age > 0 \
            and self.ident.clock() - last.ts > max_age * 1000
        if self.members.shared(last.space):
            return aged or bool(self.rotation_due(last.space, last))
        return aged or kp.needs_rotation(last, self.reg.state())

    def rotation_due(self, space_id: bytes, last: kp.KeyPackage) -> RotationDue:
        """What makes a shared space's newest package out of date (10.8)."""
        fold = self.members.current(space_id)
        return rotation_due_v3(last, self.members.members(space_id, fold).registries,
                               fold.state.members)


def previous_keys(known: dict[int, bytes], last: kp.KeyPackage) -> list[bytes]:
    """The earlier keys the package after ``last`` wraps: ``last``'s key (a version
    2 package leads further back itself), or, after a version 1 package, the
    contiguous run of keys ending at ``last``'s epoch that this device holds."""
    if last.version >= 2:
        return [known[last.epoch]]
    run: list[bytes] = []
    epoch = last.epoch
    while epoch in known:
        run.append(known[epoch])
        epoch -= 1
    return run[::-1]


def _tell_rotation(space_id: bytes, pkg: kp.KeyPackage, observer: EngineObserver) -> None:
    observer.on_rotation(space_id, pkg.epoch, pkg.creator)
