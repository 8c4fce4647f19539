"""A device: identity, spaces, CRDT documents, and sync that trusts no relay.

Every local change to a :class:`pycrdt.Doc` obtained from :meth:`Device.doc` is
captured as a Yjs update. :meth:`Device.flush` turns buffered updates into one
signed, encrypted op per document (so typing does not make one op per
keystroke) and persists it in the pending queue together with the new chain
head, *before* anything is sent. :meth:`Device.sync` then:

1. refreshes the registry (verified from genesis against the pinned account
   key) and the space's key packages (verified as a chain);
2. pushes pending ops; each accepted op's inclusion proof is checked against
   the relay's signed tree head, and the acknowledgement is remembered;
3. pulls every op after its cursor and, **before applying anything**, checks:
   the tree heads' signatures (pinned relay key); that offsets are contiguous;
   that each envelope hashes to its leaf; that the log extends what this device
   already verified and reproduces the signed root (so an omitted, reordered,
   rewritten or rolled-back history is refused: ``proof_invalid`` /
   ``log_rollback``); every op with the shared rules (history mode); that its
   own acknowledged ops are still where the relay put them; and that the tree
   heads other devices report in their ops (``seen``) agree with its own view
   (``split_view``). Only then are the updates decrypted and applied, in one
   local transaction; on any failure the local state stays as it was.

This module is the facade: the work is done by the parts of
:mod:`sddsf.client.engine` (``device.engine``), which never import it; the
facade adds the home's lock, the account's lifecycle (create, add, recover),
governance and the controller's hooks, and keeps every public name.

Size: the facade keeps every public name callers use (account lifecycle,
spaces, documents, sync, governance, the controller's hooks) as short
forwarding methods over the engine parts in :mod:`sddsf.client.engine`;
the work itself lives there.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pycrdt

from sddsf.client.appapi import ApplicationApi
from sddsf.client.controller import (
    DeviceReporter,
    effective_encryption_policy,
    refresh_encryption_policy,
    report_tombstones,
)
from sddsf.client.engine.common import (
    DOC_PIECE,
    EngineHooks,
    EngineObserver,
    EngineSettings,
    Progress,
    SkippedOp,
    SyncReport,
    as_int,
    chain_head,
    doc_id_for,
    now_ms,
    store_kind,
    u64,
)
from sddsf.client.engine.identity import DeviceIdentity, new_home
from sddsf.client.engine.keyring import previous_keys
from sddsf.client.engine.sync import SyncEngine
from sddsf.client.events import EventBus, MembershipChange
from sddsf.client.governance import REENCRYPT_POLICIES, Change, Governance, ProposalView
from sddsf.client.home import discard_home, open_home
from sddsf.client.homelock import DEFAULT_TIMEOUT_S, HomeLock, WaitNotice
from sddsf.client.keystore import KeyStore, Passphrase
from sddsf.client.records import Provenance
from sddsf.client.relay_client import RelayClient
from sddsf.client.sharing import Sharing
from sddsf.client.store import LocalStore, StoreFactory
from sddsf.client.transport.base import Transport
from sddsf.client.transport.relay import RelayTransport
from sddsf.crypto import Ed25519PublicKey, random_bytes
from sddsf.errors import AuthorizationError, Code, NotFoundError, SddsfError, UsageError
from sddsf.protocol import keypackage as kp
from sddsf.protocol import merkle
from sddsf.protocol import registry as reg
from sddsf.protocol.approval import ActionType
from sddsf.protocol.clock import HybridLogicalClock
from sddsf.protocol.encoding import encode
from sddsf.protocol.identity import AccountKeys, AccountPublic, DeviceKeys
from sddsf.protocol.keypackage_v3 import build_key_package_v3
from sddsf.protocol.rules import ChainHead
from sddsf.protocol.snapshot import SPACE_SNAPSHOT_DOC, snapshot_claims

__all__ = ["DOC_PIECE", "Device", "LockMode", "Progress", "SkippedOp", "SyncReport",
           "TransportFactory", "doc_id_for"]

log = logging.getLogger("sddsf.client")

#: How a device holds its home's lock: for as long as it is open (``session``),
#: or only while an operation runs, reloading what other processes changed
#: (``operation``; long-running processes such as ``sddsf sync --watch``).
LockMode = Literal["session", "operation"]

#: Builds the transport a device's sync and live updates run over from its
#: relay client and the relay's URL (the relay client still carries what only
#: a relay does: the registry, pairing, the controller's reports).
TransportFactory = Callable[[RelayClient, str], Transport]
#: Kept for callers of the earlier module layout.
_chain_head = chain_head
_now_ms = now_ms


class _BusObserver:
    """The engine's observer that publishes what a sync changed on the device's
    event bus (``device.events``, :mod:`sddsf.client.events`), then tells an
    optional extra observer. The engine logs and ignores what either raises."""

    def __init__(self, bus: EventBus, clock: Callable[[], int],
                 extra: EngineObserver | None) -> None:
        self._bus, self._clock, self._extra = bus, clock, extra

    def on_remote_update(self, space_id: bytes, doc: str, author: bytes,
                         updates: list[bytes]) -> None:
        self._bus.remote_applied(space_id, [(doc, author, updates)])
        if self._extra is not None:
            self._extra.on_remote_update(space_id, doc, author, updates)

    def on_registry_change(self, old: reg.RegistryState, new: reg.RegistryState) -> None:
        self._bus.registry_changed(old, new, self._clock())
        if self._extra is not None:
            self._extra.on_registry_change(old, new)

    def on_rotation(self, space_id: bytes, epoch: int, creator: bytes) -> None:
        self._bus.rotated(space_id, epoch, creator)
        if self._extra is not None:
            self._extra.on_rotation(space_id, epoch, creator)

    def on_alert(self, code: str, message: str) -> None:
        self._bus.device_alert(code, message)
        if self._extra is not None:
            self._extra.on_alert(code, message)

    def on_membership(self, space_id: bytes, change: str, account: bytes, role: str | None,
                      by: bytes) -> None:
        self._bus.membership_changed(MembershipChange(space_id, change, account, role, by))
        # An observer written before shared spaces may lack this method.
        told = getattr(self._extra, "on_membership", None)
        if told is not None:
            told(space_id, change, account, role, by)


class Device(ApplicationApi):
    """One device of an account, bound to one home directory and one relay.

    A facade over :class:`~sddsf.client.engine.sync.SyncEngine` and its parts
    (``device.engine``): this class adds the home's lock, the account's
    lifecycle (create, add, recover), governance and the controller's hooks,
    and keeps the public names every caller uses.

    Every method reads the device's encrypted store, so any of them may also
    raise ``DecryptError`` (a store file that was tampered with, or the wrong
    storage key); "Nothing of its own" below means only that. With
    ``lock="operation"``, the methods that take the home's lock raise
    ``UnavailableError`` when another process holds it for ``lock_timeout_s``.
    """

    def __init__(self, store: LocalStore, key_kind: str, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], int] = now_ms, lock: LockMode = "session",
                 lock_timeout_s: float = DEFAULT_TIMEOUT_S,
                 on_lock_wait: WaitNotice | None = None,
                 observer: EngineObserver | None = None,
                 engine_transport: TransportFactory | None = None) -> None:
        self.store = store
        #: The home's lock (shared by this process's devices on the home).
        self.home_lock = HomeLock.for_home(store.path.parent)
        self.lock_mode: LockMode = lock
        self.lock_timeout_s = lock_timeout_s
        self.on_lock_wait = on_lock_wait
        #: Whether this device holds one acquisition of the lock until close().
        self._holds_session = False
        if lock == "session":
            self.home_lock.acquire(timeout_s=lock_timeout_s, on_wait=on_lock_wait)
            self._holds_session = True
        try:
            self._init_state(store, key_kind, transport, clock, observer, engine_transport)
        except BaseException:
            self._release_session()
            raise

    def _init_state(self, store: LocalStore, key_kind: str,
                    transport: httpx.AsyncBaseTransport | None,
                    clock: Callable[[], int], observer: EngineObserver | None,
                    engine_transport: TransportFactory | None = None) -> None:
        self._data_version = store.data_version()
        #: What the application hears (``device.changes()``, ``on_change``).
        self.events = EventBus()
        observer = _BusObserver(self.events, clock, observer)
        self.ident = DeviceIdentity(store, key_kind, clock)
        self.relay = RelayClient(self.ident.relay_url, device=self.ident.keys,
                                 account_id=self.ident.account.account_id,
                                 transport=transport, clock=clock)
        # Every session opening first sends a signed posture report (controller).
        self.relay.reporter = DeviceReporter(self)
        #: The engine's transport (sync and live): the relay client as a
        #: Transport, or what ``engine_transport`` built from it.
        self.transport: Transport = (engine_transport or RelayTransport)(
            self.relay, self.ident.relay_url)
        self.engine = SyncEngine(self.ident, self.transport, settings=EngineSettings(),
                                 hooks=EngineHooks(
                                     before_spaces=self._before_spaces,
                                     after_sync=self._after_sync,
                                     refuse_inactive=self._refuse_inactive,
                                     max_epoch_age_s=self._published_max_epoch_age,
                                     observer=observer))
        #: Spaces shared between people: share, join, members, roles, removal.
        self.sharing = Sharing(self)

    # ------------------------------------------------------ identity (read)
    @property
    def key_kind(self) -> str:
        """How the store's key is kept (``keyring``, ``passphrase``, ``plaintext``)."""
        return self.ident.key_kind

    @property
    def keys(self) -> DeviceKeys:
        """This device's keys."""
        return self.ident.keys

    @property
    def name(self) -> str:
        """This device's name."""
        return self.ident.name

    @property
    def account(self) -> AccountPublic:
        """The account's public keys (the pinned trust anchor)."""
        return self.ident.account

    @property
    def relay_url(self) -> str:
        """The relay's URL."""
        return self.ident.relay_url

    @property
    def relay_key(self) -> Ed25519PublicKey | None:
        """The pinned relay key (None before the first session)."""
        return self.ident.relay_key

    @property
    def hlc(self) -> HybridLogicalClock:
        """This device's hybrid logical clock."""
        return self.ident.hlc

    @property
    def provenance(self) -> Provenance:
        """Who carried each vault and key-value record (see sddsf.client.records)."""
        return self.engine.docs.provenance

    @property
    def alerts(self) -> list[tuple[str, str]]:
        """Every alert of this session's syncs (each SyncReport has its own)."""
        return self.engine.snaps.alerts

    def clock(self) -> int:
        """Milliseconds since the epoch, by this device's clock.

        Returns:
            The current Unix time in milliseconds (the ``clock`` the device was
            opened with).

        Raises:
            Nothing of its own.
        """
        return self.ident.clock()

    def _clock(self) -> int:  # kept: callers of the earlier layout
        return self.ident.clock()

    @property
    def device_id(self) -> bytes:
        """This device's id."""
        return self.ident.device_id

    # ------------------------------------------------------------- settings
    @property
    def settings(self) -> EngineSettings:
        """The engine's tunables (also exposed one by one below)."""
        return self.engine.settings

    use_snapshots = property(lambda self: self.engine.settings.use_snapshots,
                             lambda self, v: setattr(self.engine.settings, "use_snapshots", v),
                             doc="Start new spaces from the relay's snapshot (False: replay).")
    snapshot_every = property(lambda self: self.engine.settings.snapshot_every,
                              lambda self, v: setattr(self.engine.settings, "snapshot_every", v),
                              doc="Log growth after which sync writes a snapshot (0: never).")
    ack_every = property(lambda self: self.engine.settings.ack_every,
                         lambda self, v: setattr(self.engine.settings, "ack_every", v),
                         doc="Acknowledge progress every this many ops (0: never).")
    max_edit = property(lambda self: self.engine.settings.max_edit,
                        lambda self, v: setattr(self.engine.settings, "max_edit", v),
                        doc="The largest edit flush() seals.")
    check_snapshots = property(lambda self: self.engine.settings.check_snapshots,
                               lambda self, v: setattr(self.engine.settings,
                                                       "check_snapshots", v),
                               doc="Recompute and attest other devices' snapshots.")
    check_every = property(lambda self: self.engine.settings.check_every,
                           lambda self, v: setattr(self.engine.settings, "check_every", v),
                           doc="Look for a new snapshot once the log grew this much.")

    # ----------------------------------------------------------- lifecycle
    @classmethod
    async def create_account(cls, home: Path, relay_url: str, name: str, *,
                             passphrase: Passphrase | None,
                             insecure_plaintext: bool = False,
                             transport: httpx.AsyncBaseTransport | None = None,
                             clock: Callable[[], int] = now_ms,
                             key_store: KeyStore | None = None,
                             store_factory: StoreFactory | None = None,
                             engine_transport: TransportFactory | None = None
                             ) -> tuple[Device, bytes]:
        """Create an account and this device, its first, on the relay.

        Args:
            home: A directory for the new device's home (created; must not hold a
                device already).
            relay_url: The relay's base URL.
            name: This device's name, shown to the other devices.
            passphrase: The store's passphrase (a str, or a function asking for it);
                None keeps the storage key in the OS keyring.
            insecure_plaintext: Keep the storage key in a plain file (tests and
                throw-away homes only).
            transport: An httpx transport (tests).
            clock: Unix milliseconds.
            key_store: Where the storage key is kept (default: chosen from
                ``passphrase`` and ``insecure_plaintext``; see
                :func:`sddsf.client.home.open_home`).
            store_factory: Makes the store from ``<home>/device.db`` and the storage
                key (default: the SQLite file; see :mod:`sddsf.client.store`).
            engine_transport: Builds the transport that sync and live updates
                run over from the device's relay client and the relay's URL
                (default: :class:`~sddsf.client.transport.relay.RelayTransport`).

        Returns:
            The open device (``lock="session"``) and the 32-byte account secret,
            which the caller shows ONCE (the recovery phrase) and never stores.

        Raises:
            UsageError: ``home`` already holds a device; a passphrase shorter
                than 8 characters.
            ConfigError: no OS keyring and no passphrase; the relay did not
                identify itself.
            UnavailableError: the relay cannot be reached.
            SddsfError: the relay refused the account (its code says why).
        """
        secret = random_bytes(32)
        account = AccountKeys.from_secret(secret)
        keys = DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))
        genesis = reg.genesis(account, keys, name, clock())
        store = new_home(home, keys, name, account.public, relay_url, passphrase,
                         insecure_plaintext, key_store=key_store, store_factory=store_factory)
        store.put("reg", u64(0), genesis)
        device = cls(store, store_kind(home), transport=transport, clock=clock,
                     engine_transport=engine_transport)
        await device.relay.create_account(genesis)
        await device.pin_relay()
        return device, secret

    @classmethod
    async def add_local(cls, approver: Device, home: Path, name: str, *,
                        passphrase: Passphrase | None,
                        insecure_plaintext: bool = False,
                        transport: httpx.AsyncBaseTransport | None = None,
                        clock: Callable[[], int] = now_ms) -> Device:
        """Add a new device whose home is on this machine, approved by ``approver``.

        Both key sets are at hand, so the add entry is signed and countersigned
        here (pairing between two machines, SPAKE2 over the relay's mailbox, is
        ``sddsf.client.pairing``). Once the addition takes effect the approver
        wraps every space key for the new device (a new epoch of each space that
        includes it). If the registry refuses the entry, the new home is removed
        again.

        Args:
            approver: An active device of the account, open.
            home: A directory for the new device's home (must not hold a device).
            name: The new device's name.
            passphrase: The new store's passphrase (a str, or a function asking for
                it); None: the OS keyring.
            insecure_plaintext: Keep the storage key in a plain file (tests only).
            transport: An httpx transport (tests).
            clock: Unix milliseconds.

        Returns:
            The new device, open. On an account whose policy requires approval it
            is only proposed: :meth:`awaiting_approval` shows the proposal, and it
            can sync once the other devices approved it.

        Raises:
            UsageError: ``home`` already holds a device; a passphrase shorter
                than 8 characters.
            ConfigError: no OS keyring and no passphrase.
            RegistryError: other devices kept changing the registry
                (``registry_fork`` after the retries), or the relay refused the
                entry.
            AuthorizationError: ``approver`` may not add devices (revoked, not
                active).
            EpochError: ``rotation_blocked`` when the approver's new epoch of a
                space is refused (see :meth:`rotate`).
            UnavailableError: the relay cannot be reached.
        """
        keys = DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))
        # The home first: a home that cannot be made (a short passphrase, one that
        # already holds a device) must not leave the account a registered device
        # whose keys are gone. If the registry refuses the entry, the new home goes.
        existed = home.exists()
        store = new_home(home, keys, name, approver.account, approver.relay_url,
                         passphrase, insecure_plaintext)
        try:
            change = await approver.governance.change(
                ActionType.ADD, {"device": reg.device_fields(keys.public, name)},
                direct=lambda s: reg.add_device(s, approver.keys, keys, name, clock()),
                new_device=keys)
        except BaseException:
            store.close()
            discard_home(home, remove_dir=not existed)
            raise
        device = cls(store, store_kind(home), transport=transport, clock=clock)
        if change.done:  # else it awaits approval: it can open a session once enacted
            await device.pin_relay()
        await device.refresh_registry()
        return device

    @classmethod
    async def recover(cls, home: Path, relay_url: str, secret: bytes, name: str, *,
                      passphrase: Passphrase | None, revoke_others: bool = False,
                      insecure_plaintext: bool = False,
                      transport: httpx.AsyncBaseTransport | None = None,
                      clock: Callable[[], int] = now_ms) -> Device:
        """Recover the account on a new device from the 32-byte account secret.

        The account key certifies the new device (a recover entry). The
        account recovery key is a recipient of every key package, so this
        device unwraps every space's whole key history with it, then opens a
        new epoch of each space that includes itself; the secret is not kept.
        With ``revoke_others`` every other device is revoked BEFORE this device
        loads any state: their cutoffs come from a verification of the log that
        applies nothing, and until the revocation no snapshot of theirs is
        trusted without corroboration, so a stolen device's forged snapshot is
        never loaded nor published again (protocol.md 18.7).

        Args:
            home: A directory for the new device's home (must not hold a device).
            relay_url: The account's relay.
            secret: The 32-byte account secret (from the recovery phrase or the
                Shamir shares).
            name: The new device's name.
            passphrase: The new store's passphrase (a str, or a function asking for
                it); None: the OS keyring.
            revoke_others: Revoke every other device of the account (a lost or
                stolen device).
            insecure_plaintext: Keep the storage key in a plain file (tests only).
            transport: An httpx transport (tests).
            clock: Unix milliseconds.

        Returns:
            The new device, open and synced, reading every space.

        Raises:
            NotFoundError: the relay holds no account for this secret (a mistyped
                phrase).
            RegistryError: the relay's registry does not verify against the
                account key (or forks), or it refused the recover entry.
            ProofError: the relay serves key packages that do not verify as a
                chain, or a log that fails verification in the first sync.
            UsageError: ``home`` already holds a device.
            ConfigError: no OS keyring and no passphrase.
            UnavailableError: the relay cannot be reached.
        """
        account = AccountKeys.from_secret(secret)
        keys = DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))
        probe = RelayClient(relay_url, transport=transport, clock=clock)
        try:
            entries = await probe.registry(account.account_id, 0, signer=account)
        finally:
            await probe.aclose()
        state = reg.verify_registry(entries, pinned=account.public)
        entry = reg.recover(state, account, keys, name, [], clock())
        store = new_home(home, keys, name, account.public, relay_url, passphrase,
                              insecure_plaintext)
        device = cls(store, store_kind(home), transport=transport, clock=clock)
        await device.relay.append_registry(account.account_id, entry)
        await device.pin_relay()
        await device.refresh_registry()
        others = [d.device_id for d in device.registry().active_devices()
                  if d.device_id != device.device_id] if revoke_others else []
        device.engine.reg.distrusted.update(others)
        for space in await device.transport.spaces():
            space_id = space.space_id
            if space.owner not in (None, account.account_id):
                continue  # another person's shared space: joined again by its id
            fold = await device.engine.members.ahead(space_id)
            packages = await device.refresh_keys(space_id)
            # The recovery key is a recipient of every package: it opens the
            # newest one, whose chain leads to every earlier key.
            known = kp.open_key_history(packages, account.account_id, account.recovery)
            last = packages[-1]
            epoch, key, earlier = last.epoch + 1, random_bytes(32), previous_keys(known, last)
            pkg_bytes = build_key_package_v3(
                creator=keys, creator_account=account.account_id,
                registries=device.engine.members.members(space_id, fold).registries,
                members=fold.state.members, membership_head=fold.state.head, space=space_id,
                epoch=epoch, prev=last.hash, epoch_key=key, ts_ms=clock(),
                previous_keys=earlier,
            ) if fold.state.applied else kp.build_key_package(
                creator=keys, registry=device.registry(), space=space_id, epoch=epoch,
                prev=last.hash, epoch_key=key, ts_ms=clock(), previous_keys=earlier)
            await device.transport.put_key_package(space_id, pkg_bytes)
            with store.batch() as b:
                b.put("space", space_id, encode(""))
        if others:
            await device._revoke_first(others, account)
        await device.sync()
        return device

    async def _revoke_first(self, others: list[bytes], account: AccountKeys) -> None:
        # The cutoffs keep every op of theirs the log holds: a dry pull verifies
        # the log (from the snapshot's frontier and chain heads where history
        # is pruned) and applies nothing, so no state is loaded before they are
        # revoked; the sync inside each revocation is this device's first load.
        for space_id, _ in self.ident.synced_spaces():
            await self.refresh_keys(space_id)  # the epoch this recovery just opened
            heads = await self.engine.puller.pull(space_id, SyncReport(), dry=True) or {}
            for author, head in heads.items():
                self.engine.reg.cutoff_hint.setdefault(author, {})[space_id] = head.seq
        for other in others:
            if self.registry().is_active(other):
                await self.revoke(other, "recovered on a new device", signer=account)

    @classmethod
    def open(cls, home: Path, *, passphrase: Passphrase | None,
             transport: httpx.AsyncBaseTransport | None = None,
             clock: Callable[[], int] = now_ms, lock: LockMode = "session",
             lock_timeout_s: float = DEFAULT_TIMEOUT_S,
             on_lock_wait: WaitNotice | None = None,
             key_store: KeyStore | None = None,
             store_factory: StoreFactory | None = None,
             engine_transport: TransportFactory | None = None) -> Device:
        """Open an existing device home.

        Args:
            home: the device home.
            passphrase: the store's passphrase (a str, or a function asking for
                it), if it has one.
            transport: an httpx transport (tests).
            clock: milliseconds since the epoch.
            lock: ``session`` holds the home's lock until :meth:`close` (other
                processes wait); ``operation`` takes it for each :meth:`sync`,
                :meth:`flush`, :meth:`snapshot` and :meth:`close` (and for
                ``async with device.exclusive():``), and first reloads whatever
                another process changed in the home.
            lock_timeout_s: how long to wait for another process.
            on_lock_wait: told once, after a second, that another process holds it.
            key_store: where the storage key is kept (default: what the home's
                key file names).
            store_factory: makes the store from ``<home>/device.db`` and the
                storage key (default: the SQLite file; see
                :mod:`sddsf.client.store`).
            engine_transport: builds the transport that sync and live updates
                run over from the device's relay client and the relay's URL
                (default: :class:`~sddsf.client.transport.relay.RelayTransport`).

        Returns:
            The device; :meth:`close` it (it holds the store, the relay
            connections and, with ``lock="session"``, the home's lock).

        Raises:
            ConfigError: ``home`` holds no device, or its storage key cannot be
                had (no keyring, no passphrase given where one is needed).
            DecryptError: a wrong passphrase.
            UnavailableError: another process kept the home locked for
                ``lock_timeout_s`` seconds.
        """
        store, kind = open_home(home, passphrase=passphrase, key_store=key_store,
                                store_factory=store_factory)
        try:
            return cls(store, kind, transport=transport, clock=clock, lock=lock,
                       lock_timeout_s=lock_timeout_s, on_lock_wait=on_lock_wait,
                       engine_transport=engine_transport)
        except BaseException:
            store.close()
            raise

    async def close(self) -> None:
        """Stop the live handles' background sync, flush buffered edits to the
        pending queue and close everything.

        The store, the connections and the home's lock are released even when
        the flush refuses an edit (whose error is then raised). An unexpected
        error of the background sync is raised after the edits were flushed.

        Raises:
            UsageError: the flush refused an edit (see :meth:`flush`); everything
                was closed all the same.
            UnavailableError: ``lock="operation"`` and another process held the
                home's lock for ``lock_timeout_s``; closed without flushing
                (edits made since the last flush are not queued).
            Exception: the first unexpected exception (a bug) of the live handles'
                background sync (as :meth:`sddsf.client.runner.Runner.stop` raises it).
        """
        from sddsf.client.live import stop_live  # noqa: PLC0415 - live imports the runner

        stop_error: Exception | None = None
        try:
            await stop_live(self)  # no background sync may outlive the device
        except Exception as exc:  # raised below, once nothing can be lost
            stop_error = exc
        try:
            async with self._exclusive_async():
                try:
                    self.engine.outbox.flush()
                finally:
                    self.engine.docs.compact()
        finally:
            try:
                self.engine.outbox.close()
                await self.relay.aclose()
                self.store.close()
            finally:
                self._release_session()
        if stop_error is not None:
            raise stop_error

    def _release_session(self) -> None:
        # Once per device: other devices of this process may share the lock.
        if self._holds_session:
            self._holds_session = False
            self.home_lock.release()

    # ------------------------------------------------------------- home lock
    def exclusive(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the home's lock for a block of calls (``async with device.exclusive():``).

        Devices opened with ``lock="operation"`` take it themselves for
        :meth:`sync`, :meth:`flush`, :meth:`snapshot` and :meth:`close`; wrap
        other state-changing calls (creating spaces, revoking, rotating) in it.
        With ``lock="session"`` the device holds it already.

        Returns:
            An async context manager; entering it takes the lock (and reloads
            what other processes changed), leaving it releases the lock.

        Raises:
            UnavailableError: on entering, another process held the lock for
                ``lock_timeout_s`` seconds (``lock="operation"`` only).
        """
        return self._exclusive_async()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        if self.lock_mode != "operation":
            yield
            return
        self.home_lock.acquire(timeout_s=self.lock_timeout_s, on_wait=self.on_lock_wait)
        try:
            self._reload_if_changed()
            yield
        finally:
            self.home_lock.release()

    @contextlib.asynccontextmanager
    async def _exclusive_async(self) -> AsyncIterator[None]:
        if self.lock_mode != "operation":
            yield
            return
        await self.home_lock.acquire_async(timeout_s=self.lock_timeout_s,
                                           on_wait=self.on_lock_wait)
        try:
            self._reload_if_changed()
            yield
        finally:
            self.home_lock.release()

    def _reload_if_changed(self) -> None:
        # Another process changed the home since this one last looked: drop every
        # cache derived from the store and merge the stored document state (its
        # edits and pulls) into the open documents, so nothing is folded away.
        version = self.store.data_version()
        if version == self._data_version:
            return
        self._data_version = version
        self.engine.forget_caches()
        for error in self.engine.docs.reload():
            log.warning("%s", error.message)

    async def pin_relay(self) -> None:
        """Pin the relay's key on first contact, and refuse another key later.

        Raises:
            ProofError: ``tree_head_invalid`` when the relay's key changed.
            ConfigError: the relay did not identify itself.
            UnavailableError: the relay cannot be reached.
        """
        await self.ident.pin(self.transport)

    async def _pin_relay(self) -> None:  # kept: callers of the earlier layout
        await self.pin_relay()

    def set_relay_url(self, url: str, relay_key: bytes) -> None:
        """Store a new URL for this device's relay (it moved). The caller opened a
        session at ``url`` and got ``relay_key``; it must be the pinned key. Takes
        effect when the device is next opened.

        Args:
            url: The relay's new base URL.
            relay_key: The 32-byte tree-head key the relay at ``url`` presented.

        Raises:
            ProofError: ``tree_head_invalid`` when ``relay_key`` is not the pinned key.
        """
        self.ident.set_relay_url(url, relay_key)

    # ------------------------------------------------------------ registry
    def registry(self) -> reg.RegistryState:
        """The locally verified registry (verified once from the stored entries,
        then cached; :meth:`refresh_registry` fetches new entries).

        Returns:
            The registry state: devices, policy, open proposals.

        Raises:
            RegistryError: the stored entries no longer verify (a damaged store).
        """
        return self.engine.reg.state()

    async def refresh_registry(self) -> reg.RegistryState:
        """Fetch and verify new registry entries (against the pinned account key).

        Returns:
            The registry state including the new entries, which are stored.

        Raises:
            RegistryError: the relay serves entries that do not extend the
                verified chain (``registry_fork``, a gap, another account).
            SignatureError: an entry's signature does not verify.
            AuthorizationError: an entry's signer may not sign it.
            UnavailableError: the relay cannot be reached.
        """
        return await self.engine.reg.refresh()

    def cutoff_for(self, device_id: bytes) -> dict[bytes, int]:
        """Per space, the last seq of ``device_id`` this device has verified: the
        cutoff a revocation of that device records.

        Args:
            device_id: The device's id.

        Returns:
            Space id -> the device's last verified op seq (spaces where it wrote
            nothing this device saw are absent).

        Raises:
            Nothing of its own.
        """
        return self.engine.reg.cutoff_for(device_id)

    async def log_peer_ops(self, device_id: bytes) -> list[bytes]:
        """Carry the ops of ``device_id`` that peers brought here and the relay's
        log lacks to the log, and pull them back: a revocation does this first,
        so that its cutoff keeps every op of the device that this device applied.

        Args:
            device_id: The device whose ops to carry.

        Returns:
            The ids of the spaces that held such ops.

        Raises:
            ProofError: the relay misbehaved on the pull (as for :meth:`sync`).
            UnavailableError: the relay cannot be reached, or the home's lock was
                busy (``lock="operation"``).
        """
        async with self._exclusive_async(), self.engine.lock:
            return await self.engine.log_peer_ops(device_id)

    @property
    def governance(self) -> Governance:
        """Device changes under the account's approval policy (§9.8)."""
        return Governance(self)

    async def revoke(self, device_id: bytes, reason: str, *,
                     signer: AccountKeys | None = None) -> Change:
        """Revoke a device: its later writes are refused everywhere, its sessions
        end, and every space moves to a new epoch it cannot read. On an account
        whose policy requires approval this makes a proposal (``Change.pending``)
        unless ``signer`` is the account key.

        Sync first, so that the cutoff keeps every op of the device that this
        device has seen (later ones are refused as history too). Ops of the
        device that peers brought here and the log lacks are carried to the log
        first (:meth:`log_peer_ops`), so the cutoff keeps them too.

        Args:
            device_id: The device to revoke (not this one).
            reason: Why, recorded in the registry.
            signer: The account keys (recovery): revokes directly, never a
                proposal. None: this device signs.

        Returns:
            ``Change(done=True)`` when the revocation took effect, else
            ``Change(done=False, pending=...)``, the proposal awaiting approvals
            or its veto window.

        Raises:
            UsageError: ``device_id`` is this device.
            RegistryError: the target is not an active device, or other devices
                kept changing the registry (``registry_fork``).
            AuthorizationError: this device may not sign registry entries
                (revoked, or not active).
            EpochError: ``rotation_blocked`` when the relay refuses the new epoch
                and serves none without the revoked device.
            UnavailableError: the relay cannot be reached.
        """
        if device_id == self.device_id:
            raise UsageError("a device cannot revoke itself here; revoke it from another one")
        await self.log_peer_ops(device_id)

        def direct(state: reg.RegistryState) -> bytes:
            return reg.revoke_device(state, signer or self.keys, device_id, reason,
                                     self.clock(), cutoff=self.cutoff_for(device_id))
        if signer is not None:  # the account key is never governed
            await self.governance._append(direct)
            await self.governance.after(ActionType.REVOKE, device_id)
            return Change(done=True)
        return await self.governance.change(
            ActionType.REVOKE, {"target": device_id, "reason": reason}, direct=direct)

    def space_policy(self, space_id: bytes) -> str:
        """The space's re-encryption policy after a revocation.

        Args:
            space_id: The space's id.

        Returns:
            ``lazy`` (default: snapshots re-encrypted at the next compaction) or
            ``eager`` (at once).

        Raises:
            Nothing of its own.
        """
        value = self.doc(space_id, "_meta").get("meta", type=pycrdt.Map).get("reencrypt")
        return value if value in REENCRYPT_POLICIES else "lazy"

    def set_space_policy(self, space_id: bytes, reencrypt: str) -> None:
        """Set the space's re-encryption policy (synced, encrypted, in its meta
        doc); queued now, sent at the next sync.

        Args:
            space_id: The space's id.
            reencrypt: ``lazy`` or ``eager``.

        Raises:
            UsageError: ``reencrypt`` is neither, or the flush refused the edit
                (see :meth:`flush`).
            UnavailableError: ``lock="operation"`` and the home's lock was busy
                for ``lock_timeout_s`` (the edit stays buffered).
        """
        if reencrypt not in REENCRYPT_POLICIES:
            raise UsageError(f"re-encryption policy must be one of {REENCRYPT_POLICIES}")
        self.doc(space_id, "_meta").get("meta", type=pycrdt.Map)["reencrypt"] = reencrypt
        self.flush()

    async def snapshot_unusable(self, space_id: bytes) -> bool:
        """Whether the relay's snapshot of the space is by a device that is no
        longer active: new devices then start from the log or the corroborated
        copy (18.7), so a fresh snapshot should be written now.

        Args:
            space_id: The space's id.

        Returns:
            True when the snapshot's author is not active; False when there is
            no snapshot, or it cannot be read (it is refused where it is read).

        Raises:
            UnavailableError: the relay cannot be reached.
        """
        try:
            raw = (await self.transport.get_snapshot(space_id, SPACE_SNAPSHOT_DOC)).blob
        except NotFoundError:
            return False
        try:
            author = snapshot_claims(raw).author
        except SddsfError:
            return False  # a bad snapshot is refused (proof_invalid) where it is read
        return not self.registry().is_active(author)

    # -------------------------------------------------------------- spaces
    def spaces(self) -> list[tuple[bytes, str]]:
        """The spaces this device holds keys for.

        Returns:
            ``(space_id, name)`` pairs, by id; a name is empty until the space's
            meta document was synced.

        Raises:
            Nothing of its own.
        """
        return self.ident.spaces()

    def synced_spaces(self) -> list[tuple[bytes, str]]:
        """The spaces that sync: :meth:`spaces` without the shared spaces of other
        accounts that this account left or was removed from (they stay readable
        here, read only).

        Returns:
            ``(space_id, name)`` pairs, by id.

        Raises:
            Nothing of its own.
        """
        return self.ident.synced_spaces()

    def space_by_name(self, name: str) -> bytes:
        """The id of the space called ``name``.

        Args:
            name: The space's name.

        Returns:
            The first (smallest) id of a space with that name.

        Raises:
            UsageError: no such space here (sync first?).
        """
        for space_id, space_name in self.spaces():
            if space_name == name:
                return space_id
        raise UsageError(f"no space named {name!r} on this device; run `sddsf sync` or "
                         "`sddsf space list`")

    async def create_space(self, name: str) -> bytes:
        """Create a space: its epoch-0 key wrapped for every active device and the
        account's recovery key, stored on the relay; the name travels encrypted
        in the space's meta document (queued; sent at the next sync).

        Args:
            name: The space's name (unique on this device).

        Returns:
            The new space's 16-byte id.

        Raises:
            UsageError: a space with that name exists here, or the flush of the
                name refused it (see :meth:`flush`).
            UnavailableError: the relay cannot be reached (nothing was created);
                or, with ``lock="operation"``, the home's lock was busy when the
                name was queued (the space exists; the name stays buffered).
            SddsfError: the relay refused the space (its code says why, e.g.
                ``AuthorizationError`` for a revoked or read-only device).
        """
        if any(n == name for _, n in self.spaces()):
            raise UsageError(f"a space named {name!r} already exists")
        space_id = random_bytes(16)
        pkg = self.engine.keyring.package(space_id, 0, bytes(32))
        await self.transport.create_space(space_id, pkg)
        with self.store.batch() as b:
            b.put("space", space_id, encode(name))
            b.put("kp", space_id + (0).to_bytes(4, "big"), pkg)
        await self._announce_name(space_id, name)
        return space_id

    async def _announce_name(self, space_id: bytes, name: str) -> None:
        # The space name travels encrypted, as the "meta" document of the space.
        meta = self.doc(space_id, "_meta")
        meta.get("meta", type=pycrdt.Map)["name"] = name
        self.flush()

    async def rotate(self, space_id: bytes) -> int:
        """Open the next key epoch for the current set of active devices.

        Args:
            space_id: The space's id.

        Returns:
            The space's newest epoch: this device's new one, or the one another
            device opened first (a lost race).

        Raises:
            EpochError: ``rotation_blocked`` when a device was revoked since the
                newest epoch was made and the relay neither stores this device's
                new package nor serves a newer one without the revoked device.
            ProofError: the relay's key packages do not verify (see
                :meth:`refresh_keys`).
            UsageError: this device lacks the space's previous key (sync first).
            UnavailableError: the relay cannot be reached.
        """
        await self.engine.keyring.try_rotate(space_id)
        return max(self.engine.keyring.keys_cached(space_id))

    async def refresh_keys(self, space_id: bytes) -> list[kp.KeyPackage]:
        """Fetch, verify (as a chain) and store the space's key packages.

        Args:
            space_id: The space's id.

        Returns:
            Every key package of the space, verified, oldest epoch first.

        Raises:
            ProofError: ``key_package_fork`` when the relay serves another package
                for an epoch this device stored (a stored package is never
                replaced), ``proof_invalid`` when it no longer serves one this
                device stored, or serves none.
            RegistryError: the registry refresh it makes fails (see
                :meth:`refresh_registry`).
            NotFoundError: the relay has no such space for this account.
            UnavailableError: the relay cannot be reached.
        """
        return await self.engine.keyring.refresh(space_id)

    # ---------------------------------------------------------------- docs
    def doc(self, space_id: bytes, name: str) -> pycrdt.Doc[Any]:
        """The document ``name`` of a space, as a live :class:`pycrdt.Doc`.

        Local transactions are captured and become ops at the next :meth:`flush`.

        Args:
            space_id: The space's id.
            name: The document's name: 1 to ``MAX_DOC_NAME`` characters.

        Returns:
            The document, loaded from the store once and then the same object
            (until a refused edit makes :meth:`flush` drop it).

        Raises:
            UsageError: an empty or too long name.
        """
        return self.engine.docs.doc(space_id, name)

    def flush(self) -> int:
        """Turn buffered local edits into pending ops (one edit per document; an
        edit larger than one op becomes a multi-part op).

        Returns:
            How many documents had edits.

        Raises:
            UsageError: an edit is larger than :attr:`max_edit`. It is not synced
                and is undone in this device's copy (with the edits of that
                document made after it in the same flush): get the document again
                with :meth:`doc`. Every other document's edits were queued. Also:
                no key for the space yet (sync first); those edits stay buffered.
            UnavailableError: ``lock="operation"`` and another process held the
                home's lock for ``lock_timeout_s``; nothing was queued.
        """
        with self._exclusive():
            return self.engine.outbox.flush()

    def held_count(self) -> int:
        """Edits kept back because their space's key must be rotated first.

        Returns:
            How many held edits there are (sealed at the sync that rotates).

        Raises:
            Nothing of its own.
        """
        return self.engine.outbox.held_count()

    def verified_size(self, space_id: bytes) -> int:
        """Entries of the space's log this device has verified.

        Args:
            space_id: The space's id.

        Returns:
            The size of the verified log (0: nothing pulled yet).

        Raises:
            Nothing of its own.
        """
        return self.engine.log.tree(space_id).size

    def last_seen(self) -> dict[bytes, int]:
        """Per device, the newest op timestamp this device has verified.

        Returns:
            Device id -> Unix milliseconds (as the op's author claims it).

        Raises:
            Nothing of its own.
        """
        return {k: as_int(v) for k, v in self.store.scan("lastseen")}

    def pending_count(self) -> int:
        """Ops waiting to be pushed (after :meth:`flush`).

        Returns:
            How many ops are in the pending queue.

        Raises:
            Nothing of its own.
        """
        return self.store.count("pending")

    # ---------------------------------------------------------------- sync
    async def sync(self, progress: Progress | None = None) -> SyncReport:
        """Push pending ops and pull, verifying everything (see the module docstring).

        Args:
            progress: Called as ``progress(space_id, done, total)`` after each page
                of a pull (``total`` is the log size the relay reports), for
                progress bars; None: not called.

        Returns:
            What the sync did: ops pushed, pulled and applied, ops rejected or
            skipped, rotations, snapshots, alerts about other devices and errors
            of the application's observers (``app_errors``). A device the relay
            made read-only only pulls (``read_only``).

        Raises:
            AuthorizationError: this device is revoked, unknown, or awaiting
                approval (the message names the proposal).
            ProofError: the relay misbehaved: a log that does not reproduce its
                signed head, omits, reorders, rewrites or rolls back history
                (``proof_invalid``, ``log_rollback``), a changed relay key
                (``tree_head_invalid``), forked key packages
                (``key_package_fork``), withheld registry entries
                (``registry_withheld``), or other devices that saw another
                history (``split_view``). Nothing is applied.
            RegistryError: the registry does not verify (see
                :meth:`refresh_registry`).
            EpochError: ``rotation_blocked`` (see :meth:`rotate`); pending edits
                are kept.
            UsageError: the flush at the start refused an edit (see :meth:`flush`).
            RateLimitedError: the relay asks to wait (``retry_after_s``).
            UnavailableError: the relay cannot be reached, or the home's lock
                was busy (``lock="operation"``); nothing is lost, sync again.
        """
        async with self._exclusive_async(), self.engine.lock:
            return await self.engine.run(progress)

    async def _before_spaces(self) -> None:
        await refresh_encryption_policy(self)

    async def _after_sync(self, report: SyncReport) -> None:
        report.enacted = await self.governance.enact_ready()
        if any(name == "vault" for _, name in self.spaces()):
            await report_tombstones(self)

    def _published_max_epoch_age(self) -> int | None:
        published = effective_encryption_policy(self)  # the relay's, clamped, never weaker
        return None if published is None else published.max_epoch_age_s

    def awaiting_approval(self) -> ProposalView | None:
        """The open proposal to add this device, if it is waiting for approvals.

        Returns:
            The proposal (approvals had and needed, when its veto window ends),
            or None when none is open for this device.

        Raises:
            Nothing of its own.
        """
        for v in self.governance.open():
            a = v.proposal.action
            if a.device is not None and a.device.device_id == self.device_id:
                return v
        return None

    def _refuse_inactive(self, state: reg.RegistryState) -> None:
        # A device proposed but not yet enacted cannot open a session: say why.
        if (v := self.awaiting_approval()) is not None:
            raise AuthorizationError(
                    f"this device awaits approval: proposal {v.id_hex[:12]} has {v.have} of "
                    f"{v.need} approvals; run `sddsf device approve {v.id_hex[:12]}` on your "
                    "other devices, then `sddsf sync` here", Code.NOT_AUTHORIZED)
        rec = state.device(self.device_id)
        if rec is not None:
            raise AuthorizationError("this device has been revoked", Code.REVOKED)
        raise AuthorizationError("this device is not in the account's registry (its "
                                 "proposal was vetoed or expired); pair it again",
                                 Code.UNKNOWN_DEVICE)

    async def set_policy(self, policy: dict[str, bool | int | str]) -> Change:
        """Replace the account's registry policy; a proposal when the current
        policy requires approval.

        Args:
            policy: The whole new policy map, e.g. ``{"max_epoch_age_s": 86400}``
                or ``{"approvals": 2, "veto_window_s": 3600}``.

        Returns:
            ``Change(done=True)`` when it took effect, else the pending proposal
            (``Change.pending``).

        Raises:
            RegistryError: the relay refused the entry (an invalid policy), or
                other devices kept changing the registry (``registry_fork``).
            AuthorizationError: this device may not sign registry entries.
            UnavailableError: the relay cannot be reached.
        """
        return await self.governance.change(
            ActionType.POLICY, {"policy": dict(policy)},
            direct=lambda s: reg.set_policy(s, self.keys, policy, self.clock()))

    def snapshot_state(self, space_id: bytes) -> dict[str, bytes] | None:
        """Every document of a space as Yjs state, or None while local edits are
        not yet in the log (a snapshot must hold exactly the logged state).

        Args:
            space_id: The space's id.

        Returns:
            Document name -> its full Yjs state; None while edits of the
            space are buffered, pending or held, or a multi-part edit is half
            logged.

        Raises:
            Nothing of its own.
        """
        return self.engine.snaps.state(space_id)

    async def snapshot(self, space_id: bytes) -> int | None:
        """Write a signed encrypted (chunked) snapshot of the space at the log size
        this device verified.

        Args:
            space_id: The space's id.

        Returns:
            The log size of the snapshot, or None when there is nothing to
            snapshot, local edits are still pending (sync first), this device's
            state rests on a snapshot nobody corroborated (it never signs state it
            could not check against the log, 18.7), or the space exceeds the
            snapshot limit (new devices then replay the ops).

        Raises:
            UnavailableError: the relay cannot be reached (the snapshot is not
                recorded as written; a later sync tries again), or the home's
                lock was busy (``lock="operation"``).
            SddsfError: the relay refused the snapshot or a chunk (its code says
                why).
        """
        async with self._exclusive_async():
            return await self.engine.snaps.write(space_id)

    # ------------------------------- the earlier private names (tests, tools)
    def _epoch_keys(self, space_id: bytes) -> dict[int, bytes]:
        return self.engine.keyring.epoch_keys(space_id)

    def _keys_cached(self, space_id: bytes) -> dict[int, bytes]:
        return self.engine.keyring.keys_cached(space_id)

    def _verified_tree(self, space_id: bytes) -> merkle.MerkleTree:
        return self.engine.log.tree(space_id)

    def _grounded(self, space_id: bytes) -> bool:
        return self.engine.snaps.grounded(space_id)

    def _doc_row(self, space_id: bytes, doc_id: bytes) -> dict[str, Any] | None:
        return self.engine.docs.doc_row(space_id, doc_id)

    async def pull_only(self, space_id: bytes) -> None:
        """Pull, verify and apply the space's new entries (nothing is pushed).

        Unlike :meth:`sync` it neither refreshes the registry and key packages
        first nor takes the home's lock (``lock="operation"``: wrap it in
        :meth:`exclusive`).

        Args:
            space_id: The space's id.

        Raises:
            ProofError: the relay misbehaved (as for :meth:`sync`); nothing is
                applied.
            UnavailableError: the relay cannot be reached.
        """
        await self.engine.puller.pull(space_id, SyncReport())

    async def _pull(self, space_id: bytes, report: SyncReport, *,
                    dry: bool = False) -> dict[bytes, ChainHead] | None:
        return await self.engine.puller.pull(space_id, report, dry=dry)

    @property
    def _buffers(self) -> dict[tuple[bytes, bytes], list[bytes]]:
        return self.engine.docs.buffers

    @property
    def _distrusted(self) -> set[bytes]:
        return self.engine.reg.distrusted
