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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import pycrdt

from sddsf.client.appapi import ApplicationApi
from sddsf.client.controller import (
    DeviceReporter,
    effective_encryption_policy,
    refresh_encryption_policy,
    report_tombstones,
)
from sddsf.client.events import EventBus
from sddsf.client.governance import REENCRYPT_POLICIES, Change, Governance, ProposalView
from sddsf.client.home import open_home
from sddsf.client.homelock import DEFAULT_TIMEOUT_S, HomeLock, WaitNotice
from sddsf.client.keystore import KeyStore, Passphrase
from sddsf.client.parts import PartsReader, open_assemblies
from sddsf.client.records import Provenance
from sddsf.client.relay_client import RelayClient, RelayLimits
from sddsf.client.store import LocalStore, StoreBatch, StoreFactory
from sddsf.crypto import Ed25519PublicKey, random_bytes
from sddsf.errors import (
    AuthorizationError,
    Code,
    ConfigError,
    ConflictError,
    DecodeError,
    EpochError,
    NotFoundError,
    ProofError,
    SddsfError,
    UsageError,
)
from sddsf.protocol import keypackage as kp
from sddsf.protocol import labels, merkle
from sddsf.protocol import registry as reg
from sddsf.protocol.approval import ActionType
from sddsf.protocol.clock import HLCTimestamp, HybridLogicalClock
from sddsf.protocol.encoding import DecodeLimits, decode, encode
from sddsf.protocol.envelope import (
    GENESIS_PREV,
    OpEnvelope,
    OpHeader,
    TreeHeadRef,
    decode_envelope,
    open_op,
    seal_op,
)
from sddsf.protocol.identity import ID_SIZE, AccountKeys, AccountPublic, DeviceKeys
from sddsf.protocol.labels import tagged_hash
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS
from sddsf.protocol.payload import Edit, Part, decode_payload, encode_edit, split_edit
from sddsf.protocol.rules import ChainHead, EpochWindow, MemoryChainView, Outcome, verify_op
from sddsf.protocol.snapshot import (
    CORROBORATED_SNAPSHOT_DOC,
    MATCH,
    MAX_DOC_NAME,
    MISMATCH,
    SPACE_SNAPSHOT_DOC,
    Snapshot,
    SnapshotClaims,
    attest_snapshot,
    check_snapshot_signature,
    load_snapshot,
    open_snapshot,
    seal_chunked_snapshot,
    snapshot_claims,
    verify_attestation,
)
from sddsf.protocol.treehead import TreeHead, verify_tree_head
from sddsf.protocol.vv import VersionVector
from sddsf.wire import unb64 as _unb64

__all__ = ["Device", "LockMode", "Progress", "SkippedOp", "SyncReport", "doc_id_for"]

log = logging.getLogger("sddsf.client")

#: ``progress(space_id, entries verified or fetched so far, log size)``.
Progress = Callable[[bytes, int, int], None]
#: How a device holds its home's lock: for as long as it is open (``session``),
#: or only while an operation runs, reloading what other processes changed
#: (``operation``; long-running processes such as ``sddsf sync --watch``).
LockMode = Literal["session", "operation"]
#: Bytes an op envelope adds around its header and payload (CBOR heads, AEAD tag,
#: signature), rounded up.
_ENVELOPE_OVERHEAD = 128
#: Decoder bounds for rows of the device's own (encrypted) store, which may hold
#: an edit or a document far larger than anything one network message carries.
_LOCAL_ROWS = DecodeLimits(max_size=1 << 40, max_depth=16, max_items=1 << 20)

_MAX_BATCH = 500
#: Refusals of an own op whose edits are sealed again (see Device._push).
_RESEAL = frozenset({Code.CHAIN_FORK.value, Code.STALE_EPOCH.value, Code.CHAIN_GAP.value})
#: First byte of the key suffix of held edits (seq-keyed rows use 8-byte seqs < 2^63).
_HELD = b"\xff"
#: Write a space snapshot once the log grew this much since the last one.
SNAPSHOT_EVERY = 1000
#: Acknowledge progress to the relay (which lets it prune) every this many ops.
ACK_EVERY = 256
#: A document's stored state is kept in rows ("pieces") of this many bytes, so
#: no local row grows with the document (nor has to fit the wire's 1 MiB).
DOC_PIECE = 512 * 1024
#: Fold a document's appended updates into its stored pieces once there are
#: more than this many of them, or more bytes than max(COMPACT_MIN_BYTES, a
#: quarter of the stored state): amortised O(edit), not O(document) per sync.
COMPACT_ROWS = 256
COMPACT_MIN_BYTES = 1 << 20
T = TypeVar("T")
#: Snapshot chunks up- and downloaded at once (the relay serves requests in parallel).
_CHUNK_REQUESTS = 4
#: Look for another device's new snapshot to check once the log grew this much.
CHECK_EVERY = 16
#: Local rows are sealed by this device's storage key (authenticated), so they
#: are decoded with this bound instead of the one for untrusted wire input.
_LOCAL_LIMITS = DecodeLimits(max_size=1 << 31)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def doc_id_for(space_id: bytes, name: str) -> bytes:
    """Every device names a document the same way: a 16-byte hash of (space, name)."""
    return tagged_hash(labels.DOC_ID, space_id, name)[:16]


@dataclass(frozen=True, slots=True)
class SkippedOp:
    """An op in the verified log that this device did not apply (see
    :attr:`SyncReport.skipped`): its leaf stays in the tree for the proofs."""

    offset: int
    author: bytes
    seq: int
    code: str
    message: str


@dataclass
class SyncReport:
    """What one :meth:`Device.sync` did."""

    pushed: int = 0
    pulled: int = 0
    applied: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (code, message) per op
    tree_size: dict[bytes, int] = field(default_factory=dict)
    rotated: int = 0  # spaces moved to a new key epoch (policy age or a late revocation)
    snapshots_loaded: int = 0
    snapshots_written: int = 0
    #: ``(code, message)`` of what this device found wrong with another device,
    #: e.g. ``snapshot_mismatch`` naming the author of a forged snapshot (18.7).
    alerts: list[tuple[str, str]] = field(default_factory=list)
    rederived: list[bytes] = field(default_factory=list)  # spaces rebuilt from the log
    attested: int = 0  # verdicts on other devices' snapshots sent to the relay
    enacted: int = 0  # approved proposals this device carried out (§9.8)
    read_only: bool = False  # the relay's controller refused pushes (policy_read_only)
    #: Ops of a revoked device beyond its revocation cutoff: a relay must never
    #: store them (THREATS #14); if one did, they are reported here and not
    #: applied, and the rest of the space stays readable.
    skipped: list[SkippedOp] = field(default_factory=list)
    #: Errors raised by the application's document observers while updates were
    #: applied (the updates were applied and stored all the same).
    app_errors: list[SddsfError] = field(default_factory=list)


class Device(ApplicationApi):
    """One device of an account, bound to one home directory and one relay."""

    def __init__(self, store: LocalStore, key_kind: str, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], int] = _now_ms, lock: LockMode = "session",
                 lock_timeout_s: float = DEFAULT_TIMEOUT_S,
                 on_lock_wait: WaitNotice | None = None) -> None:
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
            self._init_state(store, key_kind, transport, clock)
        except BaseException:
            self._release_session()
            raise

    def _init_state(self, store: LocalStore, key_kind: str,
                    transport: httpx.AsyncBaseTransport | None,
                    clock: Callable[[], int]) -> None:
        self._data_version = store.data_version()
        self.key_kind = key_kind
        self._clock = clock
        ident = _as_dict(self._need("id", b"device"))
        acct = _as_dict(self._need("id", b"account"))
        relay = _as_dict(self._need("id", b"relay"))
        self.keys = DeviceKeys.from_seeds(ident["sign"], ident["kx"])
        self.name = str(ident["name"])
        self.account = AccountPublic.from_keys(acct["sign"], acct["recovery"])
        self.relay_url = str(relay["url"])
        self.relay_key = (Ed25519PublicKey.from_bytes(relay["key"])
                          if relay.get("key") else None)
        self.relay = RelayClient(self.relay_url, device=self.keys,
                                 account_id=self.account.account_id, transport=transport,
                                 clock=clock)
        # Every session opening first sends a signed posture report (controller).
        self.relay.reporter = DeviceReporter(self)
        last = self.store.get("id", b"hlc")
        self.hlc = HybridLogicalClock(
            HLCTimestamp.from_wire(decode(last), what="hlc") if last else None)
        self._docs: dict[tuple[bytes, bytes], pycrdt.Doc[Any]] = {}
        self._buffers: dict[tuple[bytes, bytes], list[bytes]] = {}
        self._subs: dict[tuple[bytes, bytes], Any] = {}
        self._applying = False
        #: Who carried each vault and key-value record (see sddsf.client.records).
        self.provenance = Provenance(store, self.keys.device_id, clock)
        self._registry: reg.RegistryState | None = None
        self._names: dict[bytes, str] = {}
        self._key_cache: dict[bytes, dict[int, bytes]] = {}
        self._seq_cache: dict[bytes, tuple[int, ...]] = {}
        self._seen_cache: dict[bytes, TreeHeadRef | None] = {}
        self._trees: dict[bytes, merkle.MerkleTree] = {}
        #: Start new spaces from the relay's snapshot (False: replay every op).
        self.use_snapshots = True
        #: Log growth after which :meth:`sync` writes a snapshot (0: never).
        self.snapshot_every = SNAPSHOT_EVERY
        #: Acknowledge progress every this many ops (0: never, so the relay
        #: keeps the whole history; e.g. an archive device).
        self.ack_every = ACK_EVERY
        self._gossip_ok: set[tuple[int, bytes]] = set()
        self._progress: Progress | None = None
        #: The largest edit :meth:`flush` seals (as a multi-part op when it does
        #: not fit one); a larger one is refused (at most the protocol's max_edit).
        self.max_edit = DEFAULT_PROTOCOL_LIMITS.max_edit
        self._limits: RelayLimits | None = None
        #: Recompute other devices' snapshots from the log this device holds and
        #: attest the verdict (the relay prunes only under corroborated ones).
        self.check_snapshots = True
        #: Look for a new snapshot at the first sync of a session, then once the
        #: log grew this much (each look costs a request; 0: at every sync).
        self.check_every = CHECK_EVERY
        self._checked_at: dict[bytes, int] = {}
        #: Devices whose snapshots are used only when corroborated, even while
        #: they are active: a recovery that revokes them sets this first.
        self._distrusted: set[bytes] = set()
        self._cutoff_hint: dict[bytes, dict[bytes, int]] = {}
        #: Every alert of this session's syncs (each SyncReport has its own).
        self.alerts: list[tuple[str, str]] = []
        # --- events hook: what the application hears (sddsf.client.events) ---
        self.events = EventBus()

    # ----------------------------------------------------------- lifecycle
    @classmethod
    async def create_account(cls, home: Path, relay_url: str, name: str, *,
                             passphrase: Passphrase | None,
                             insecure_plaintext: bool = False,
                             transport: httpx.AsyncBaseTransport | None = None,
                             clock: Callable[[], int] = _now_ms,
                             key_store: KeyStore | None = None,
                             store_factory: StoreFactory | None = None) -> tuple[Device, bytes]:
        """Create an account and this device (its first). Returns the device and the
        32-byte account secret, which the caller shows ONCE (recovery phrase).
        ``key_store`` and ``store_factory`` plug in where the storage key and the
        store are kept (see :func:`sddsf.client.home.open_home`)."""
        secret = random_bytes(32)
        account = AccountKeys.from_secret(secret)
        keys = DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))
        genesis = reg.genesis(account, keys, name, clock())
        # --- pluggable stores (issue 14): the store is made here
        store = cls._new_home(home, keys, name, account.public, relay_url, passphrase,
                              insecure_plaintext, key_store=key_store,
                              store_factory=store_factory)
        # --- end pluggable stores
        store.put("reg", _u64(0), genesis)
        device = cls(store, store_kind(home), transport=transport, clock=clock)
        await device.relay.create_account(genesis)
        await device._pin_relay()
        return device, secret

    @classmethod
    async def add_local(cls, approver: Device, home: Path, name: str, *,
                        passphrase: Passphrase | None,
                        insecure_plaintext: bool = False,
                        transport: httpx.AsyncBaseTransport | None = None,
                        clock: Callable[[], int] = _now_ms) -> Device:
        """Add a new device whose home is on this machine, approved by ``approver``.

        Both key sets are at hand, so the add entry is signed and countersigned
        here; pairing between two machines (SPAKE2 over the relay's mailbox) is
        the key-lifecycle milestone. The approver also wraps every space key for
        the new device (a new epoch that includes it).
        """
        keys = DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))
        change = await approver.governance.change(
            ActionType.ADD, {"device": reg.device_fields(keys.public, name)},
            direct=lambda s: reg.add_device(s, approver.keys, keys, name, clock()),
            new_device=keys)
        store = cls._new_home(home, keys, name, approver.account, approver.relay_url,
                              passphrase, insecure_plaintext)
        device = cls(store, store_kind(home), transport=transport, clock=clock)
        if change.done:  # else it awaits approval: it can open a session once enacted
            await device._pin_relay()
        await device.refresh_registry()
        return device

    @classmethod
    async def recover(cls, home: Path, relay_url: str, secret: bytes, name: str, *,
                      passphrase: Passphrase | None, revoke_others: bool = False,
                      insecure_plaintext: bool = False,
                      transport: httpx.AsyncBaseTransport | None = None,
                      clock: Callable[[], int] = _now_ms) -> Device:
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
        store = cls._new_home(home, keys, name, account.public, relay_url, passphrase,
                              insecure_plaintext)
        device = cls(store, store_kind(home), transport=transport, clock=clock)
        await device.relay.append_registry(account.account_id, entry)
        await device._pin_relay()
        await device.refresh_registry()
        others = [d.device_id for d in device.registry().active_devices()
                  if d.device_id != device.device_id] if revoke_others else []
        device._distrusted.update(others)
        for space in await device.relay.list_spaces():
            space_id = _unb64(space["space_id"])
            packages = await device.refresh_keys(space_id)
            # The recovery key is a recipient of every package: it opens the
            # newest one, whose chain leads to every earlier key.
            known = kp.open_key_history(packages, account.account_id, account.recovery)
            last = packages[-1]
            pkg_bytes = kp.build_key_package(
                creator=keys, registry=device.registry(), space=space_id,
                epoch=last.epoch + 1, prev=last.hash, epoch_key=random_bytes(32),
                ts_ms=clock(), previous_keys=_previous_keys(known, last))
            await device.relay.put_key_package(space_id, pkg_bytes)
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
        for space_id, _ in self.spaces():
            await self.refresh_keys(space_id)  # the epoch this recovery just opened
            heads = await self._pull(space_id, SyncReport(), dry=True) or {}
            for author, head in heads.items():
                self._cutoff_hint.setdefault(author, {})[space_id] = head.seq
        for other in others:
            if self.registry().is_active(other):
                await self.revoke(other, "recovered on a new device", signer=account)

    @classmethod
    def open(cls, home: Path, *, passphrase: Passphrase | None,
             transport: httpx.AsyncBaseTransport | None = None,
             clock: Callable[[], int] = _now_ms, lock: LockMode = "session",
             lock_timeout_s: float = DEFAULT_TIMEOUT_S,
             on_lock_wait: WaitNotice | None = None,
             key_store: KeyStore | None = None,
             store_factory: StoreFactory | None = None) -> Device:
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

        Raises:
            UnavailableError: another process kept the home locked for
                ``lock_timeout_s`` seconds.
        """
        # --- pluggable stores (issue 14): the store is made here
        store, kind = open_home(home, passphrase=passphrase, key_store=key_store,
                                store_factory=store_factory)
        # --- end pluggable stores
        try:
            return cls(store, kind, transport=transport, clock=clock, lock=lock,
                       lock_timeout_s=lock_timeout_s, on_lock_wait=on_lock_wait)
        except BaseException:
            store.close()
            raise

    @staticmethod
    def _new_home(home: Path, keys: DeviceKeys, name: str, account: AccountPublic,
                  relay_url: str, passphrase: Passphrase | None,
                  insecure_plaintext: bool, *, key_store: KeyStore | None = None,
                  store_factory: StoreFactory | None = None) -> LocalStore:
        # --- pluggable stores (issue 14): the store is made here
        store, _ = open_home(home, passphrase=passphrase, create=True,
                             insecure_plaintext=insecure_plaintext, key_store=key_store,
                             store_factory=store_factory)
        # --- end pluggable stores
        with store.batch() as b:
            b.put("id", b"device", encode({"sign": keys.signing.seed, "kx": keys.kx.seed,
                                           "name": name}))
            b.put("id", b"account", encode({"sign": account.signing_key.raw,
                                            "recovery": account.recovery_key}))
            b.put("id", b"relay", encode({"url": relay_url, "key": b""}))
        return store

    async def close(self) -> None:
        """Flush buffered edits to the pending queue and close everything.

        The store, the connections and the home's lock are released even when
        the flush refuses an edit (whose error is then raised).
        """
        try:
            async with self._exclusive_async():
                try:
                    self._flush()
                finally:
                    self._compact_docs()
        finally:
            try:
                await self.relay.aclose()
                self.store.close()
            finally:
                self._release_session()

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
        self._registry = None
        self._key_cache.clear()
        self._seen_cache.clear()
        self._trees.clear()
        self._gossip_ok.clear()
        self._limits = None
        relay = _as_dict(self._need("id", b"relay"))
        if relay.get("key"):
            self.relay_key = Ed25519PublicKey.from_bytes(relay["key"])
        last = self.store.get("id", b"hlc")
        if last is not None:
            stored = HLCTimestamp.from_wire(decode(last), what="hlc")
            self.hlc.last = max(self.hlc.last, stored)
        errors: list[SddsfError] = []
        self._applying = True
        try:
            for (space_id, doc_id), doc in self._docs.items():
                for update in self._stored_doc_updates(space_id, doc_id):
                    self._apply_update(doc, update, self._names[doc_id], errors)
        finally:
            self._applying = False
        for error in errors:
            log.warning("%s", error.message)

    def _need(self, ns: str, key: bytes) -> bytes:
        value = self.store.get(ns, key)
        if value is None:
            raise ConfigError(f"the device store lacks {ns}/{key.decode(errors='replace')}; "
                              "was this home initialised?")
        return value

    async def pin_relay(self) -> None:
        """Pin the relay's key on first contact, and refuse another key later.

        Raises:
            ProofError: ``tree_head_invalid`` when the relay's key changed.
        """
        await self._pin_relay()

    def set_relay_url(self, url: str, relay_key: bytes) -> None:
        """Store a new URL for this device's relay (it moved). The caller opened a
        session at ``url`` and got ``relay_key``; it must be the pinned key. Takes
        effect when the device is next opened.

        Raises:
            ProofError: ``tree_head_invalid`` when ``relay_key`` is not the pinned key.
        """
        if self.relay_key is not None and relay_key != self.relay_key.raw:
            raise ProofError("the relay at the new URL signs with another key than the "
                             "pinned one", Code.TREE_HEAD_INVALID)
        self.store.put("id", b"relay", encode({"url": url, "key": relay_key}))
        self.relay_url = url
        self.relay_key = Ed25519PublicKey.from_bytes(relay_key)

    async def _pin_relay(self) -> None:
        # Trust on first use of the relay key, checked on every later session.
        await self.relay.list_spaces()
        rid = self.relay.relay_id
        if rid is None:
            raise ConfigError("the relay did not identify itself")
        if self.relay_key is None:
            self.relay_key = Ed25519PublicKey.from_bytes(rid)
            self.store.put("id", b"relay", encode({"url": self.relay_url, "key": rid}))
        elif rid != self.relay_key.raw:
            self.relay.forget_session()  # never reuse a session opened with an impostor
            raise ProofError("the relay's tree-head key changed since this device first "
                             "connected; refusing to trust it", Code.TREE_HEAD_INVALID)

    # ------------------------------------------------------------ registry
    @property
    def device_id(self) -> bytes:
        """This device's id."""
        return self.keys.device_id

    def registry(self) -> reg.RegistryState:
        """The locally verified registry."""
        if self._registry is None:
            entries = [v for _, v in self.store.scan("reg")]
            self._registry = reg.verify_registry(entries, pinned=self.account)
        return self._registry

    async def refresh_registry(self) -> reg.RegistryState:
        """Fetch and verify new registry entries (against the pinned account key)."""
        if self.store.count("reg") == 0:
            # A new device: the whole chain, verified from genesis against the
            # account key it was given when it joined.
            entries = await self.relay.registry(self.account.account_id, 0)
            state = reg.verify_registry(entries, pinned=self.account)
            with self.store.batch() as b:
                for seq, entry in enumerate(entries):
                    b.put("reg", _u64(seq), entry)
            self._registry = state
            return state
        old = state = self.registry()
        new = await self.relay.registry(self.account.account_id, state.seq + 1)
        with self.store.batch() as b:
            for entry in new:
                state = state.apply(entry)
                b.put("reg", _u64(state.seq), entry)
        self._registry = state
        self.events.registry_changed(old, state, self._clock())  # events hook
        return state

    def cutoff_for(self, device_id: bytes) -> dict[bytes, int]:
        """Per space, the last seq of ``device_id`` this device has verified."""
        cutoff: dict[bytes, int] = dict(self._cutoff_hint.get(device_id, {}))
        for space_id, _ in self.spaces():
            raw = self.store.get("chain", space_id + device_id)
            if raw is not None:
                cutoff[space_id] = max(cutoff.get(space_id, 0), int(_as_list(raw)[0]))
        return cutoff

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
        device has seen (later ones are refused as history too).
        """
        if device_id == self.device_id:
            raise UsageError("a device cannot revoke itself here; revoke it from another one")

        def direct(state: reg.RegistryState) -> bytes:
            return reg.revoke_device(state, signer or self.keys, device_id, reason,
                                     self._clock(), cutoff=self.cutoff_for(device_id))
        if signer is not None:  # the account key is never governed
            await self.governance._append(direct)
            await self.governance.after(ActionType.REVOKE, device_id)
            return Change(done=True)
        return await self.governance.change(
            ActionType.REVOKE, {"target": device_id, "reason": reason}, direct=direct)

    def space_policy(self, space_id: bytes) -> str:
        """The space's re-encryption policy after a revocation: ``lazy`` (default:
        snapshots re-encrypted at the next compaction) or ``eager`` (at once)."""
        value = self.doc(space_id, "_meta").get("meta", type=pycrdt.Map).get("reencrypt")
        return value if value in REENCRYPT_POLICIES else "lazy"

    def set_space_policy(self, space_id: bytes, reencrypt: str) -> None:
        """Set the space's re-encryption policy (synced, encrypted, in its meta doc)."""
        if reencrypt not in REENCRYPT_POLICIES:
            raise UsageError(f"re-encryption policy must be one of {REENCRYPT_POLICIES}")
        self.doc(space_id, "_meta").get("meta", type=pycrdt.Map)["reencrypt"] = reencrypt
        self.flush()

    async def snapshot_unusable(self, space_id: bytes) -> bool:
        """Whether the relay's snapshot of the space is by a device that is no
        longer active: new devices then start from the log or the corroborated
        copy (18.7), so a fresh snapshot should be written now."""
        try:
            _, raw = await self.relay.get_snapshot(space_id, SPACE_SNAPSHOT_DOC)
        except NotFoundError:
            return False
        try:
            author = snapshot_claims(raw).author
        except SddsfError:
            return False  # a bad snapshot is refused (proof_invalid) where it is read
        return not self.registry().is_active(author)

    # -------------------------------------------------------------- spaces
    def spaces(self) -> list[tuple[bytes, str]]:
        """``(space_id, name)`` of the spaces this device holds keys for."""
        return [(k, str(decode(v))) for k, v in self.store.scan("space")]

    def space_by_name(self, name: str) -> bytes:
        """The id of the space called ``name``.

        Raises:
            UsageError: no such space here (sync first?).
        """
        for space_id, space_name in self.spaces():
            if space_name == name:
                return space_id
        raise UsageError(f"no space named {name!r} on this device; run `sddsf sync` or "
                         "`sddsf space list`")

    async def create_space(self, name: str) -> bytes:
        """Create a space (its epoch-0 key wrapped for every device and the recovery key)."""
        if any(n == name for _, n in self.spaces()):
            raise UsageError(f"a space named {name!r} already exists")
        space_id = random_bytes(16)
        pkg = self._package(space_id, 0, bytes(32))
        await self.relay.create_space(space_id, pkg)
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

    def _package(self, space_id: bytes, epoch: int, prev: bytes) -> bytes:
        # The new epoch's package wraps the earlier keys a device added later
        # needs: the previous epoch's key (whose package leads further back), or,
        # after version 1 packages, every earlier key this device holds.
        state = self.registry()
        previous: list[bytes] = []
        if epoch:
            known = self._keys_cached(space_id)
            last = self._stored_package(space_id, epoch - 1)
            if last is None or epoch - 1 not in known:
                raise UsageError("this device lacks the space's previous key; sync first")
            previous = _previous_keys(known, last)
        return kp.build_key_package(
            creator=self.keys, registry=state, space=space_id, epoch=epoch, prev=prev,
            epoch_key=random_bytes(32), ts_ms=self._clock(),
            previous_keys=previous)

    async def rotate(self, space_id: bytes) -> int:
        """Open the next key epoch for the current set of active devices.

        Returns the space's newest epoch: this device's new one, or the one another
        device opened first (a lost race).

        Raises:
            EpochError: ``rotation_blocked`` when a device was revoked since the
                newest epoch was made and the relay neither stores this device's
                new package nor serves a newer one without the revoked device.
        """
        await self._try_rotate(space_id)
        return max(self._keys_cached(space_id))

    async def _try_rotate(self, space_id: bytes) -> bool:
        # True when this device stored the new epoch. A refused upload (409:
        # another device's package holds the epoch, or the relay claims so) is
        # accepted only if the package the relay then serves is safe to write
        # under; otherwise nothing may be written: rotation_blocked.
        packages = await self.refresh_keys(space_id)
        last = packages[-1]
        pkg = self._package(space_id, last.epoch + 1, last.hash)
        try:
            await self.relay.put_key_package(space_id, pkg)
        except (ConflictError, EpochError) as exc:
            newest = (await self.refresh_keys(space_id))[-1]
            self._check_not_blocked(space_id, newest, exc)
            return False
        self.store.put("kp", space_id + (last.epoch + 1).to_bytes(4, "big"), pkg)
        self._forget_keys(space_id)
        self.events.rotated(space_id, last.epoch + 1, self.device_id)  # events hook
        return True

    def _check_not_blocked(self, space_id: bytes, newest: kp.KeyPackage,
                           cause: SddsfError | None = None) -> None:
        revoked = kp.revoked_since(newest, self.registry())
        if not revoked:
            return
        names = ", ".join(repr(r.name) for r in revoked)
        why = f" ([{cause.code.value}] {cause.message})" if cause is not None else ""
        raise EpochError(
            f"cannot rotate the key of space {self._space_label(space_id)} after the "
            f"revocation of {names}: the relay refused this device's new key package{why} "
            f"and serves no newer epoch without the revoked device (its newest is epoch "
            f"{newest.epoch}). Nothing is written under the old key, which the revoked "
            "device holds: your edits stay on this device. Sync again later; if this "
            "persists, the relay is suppressing the rotation (it may be colluding with the "
            "revoked device): move the account to another relay", Code.ROTATION_BLOCKED)

    def _space_label(self, space_id: bytes) -> str:
        name = self.store.get("space", space_id)
        label = str(decode(name)) if name is not None else ""
        return repr(label) if label else space_id.hex()[:12]

    async def refresh_keys(self, space_id: bytes) -> list[kp.KeyPackage]:
        """Fetch, verify (as a chain) and store the space's key packages.

        Raises:
            ProofError: ``key_package_fork`` when the relay serves another package
                for an epoch this device stored (a stored package is never
                replaced), ``proof_invalid`` when it no longer serves one this
                device stored, or serves none.
        """
        raw = await self.relay.key_packages(space_id, 0)
        state = await self.refresh_registry()
        stored = dict(self.store.scan("kp", space_id))
        stored_before = bool(stored)  # a space this device already held keys of
        verified: list[kp.KeyPackage] = []
        opened: list[kp.KeyPackage] = []  # new epochs (events hook)
        for data in raw:
            previous = verified[-1] if verified else None
            pkg = kp.verify_key_package(data, registry=state, space=space_id,
                                        previous=previous)
            mine = stored.pop(space_id + pkg.epoch.to_bytes(4, "big"), None)
            if mine is not None and mine != data:
                raise ProofError(
                    f"the relay serves another key package for epoch {pkg.epoch} of space "
                    f"{self._space_label(space_id)} than the one this device stored: two "
                    "packages for one epoch are fork evidence (the relay, or a device, "
                    "equivocates); the stored one is kept", Code.KEY_PACKAGE_FORK)
            if mine is None and pkg.epoch > 0 and stored_before:
                opened.append(pkg)
            verified.append(pkg)
        if stored:
            epochs = sorted(int.from_bytes(k[16:], "big") for k in stored)
            raise ProofError(f"the relay no longer serves the key package(s) of epoch(s) "
                             f"{epochs} of space {self._space_label(space_id)} that this "
                             "device stored: it is hiding or rolling back key packages")
        if not verified:
            raise ProofError("the relay has no key package for this space")
        with self.store.batch() as b:
            for pkg in verified:
                b.put("kp", space_id + pkg.epoch.to_bytes(4, "big"), pkg.raw)
        self._forget_keys(space_id)
        for pkg in opened:  # events hook
            self.events.rotated(space_id, pkg.epoch, pkg.creator)
        return verified

    def _stored_packages(self, space_id: bytes) -> list[kp.KeyPackage]:
        return [kp.decode_key_package(data) for _, data in self.store.scan("kp", space_id)]

    def _stored_package(self, space_id: bytes, epoch: int) -> kp.KeyPackage | None:
        raw = self.store.get("kp", space_id + epoch.to_bytes(4, "big"))
        return None if raw is None else kp.decode_key_package(raw)

    def _epoch_keys(self, space_id: bytes) -> dict[int, bytes]:
        # Every key this device can read: the packages that list it, and the
        # earlier keys their chain wraps (keypackage.open_key_history).
        return kp.open_key_history(self._stored_packages(space_id), self.device_id,
                                   self.keys.kx)

    def _package_seqs(self, space_id: bytes) -> tuple[int, ...]:
        # Epoch -> the registry_seq of its package, for the rules' EpochWindow.
        seqs = self._seq_cache.get(space_id)
        if seqs is None:
            packages = self._stored_packages(space_id)
            if [p.epoch for p in packages] != list(range(len(packages))):
                raise ProofError("this device's stored key packages are not a chain from "
                                 "epoch 0; the device store is damaged")
            seqs = self._seq_cache[space_id] = tuple(p.registry_seq for p in packages)
        return seqs

    def _forget_keys(self, space_id: bytes) -> None:
        self._key_cache.pop(space_id, None)
        self._seq_cache.pop(space_id, None)

    # ---------------------------------------------------------------- docs
    def doc(self, space_id: bytes, name: str) -> pycrdt.Doc[Any]:
        """The document ``name`` of a space, as a live :class:`pycrdt.Doc`.

        Local transactions are captured and become ops at the next :meth:`flush`.
        """
        if not name or len(name) > MAX_DOC_NAME:
            raise UsageError(f"a document name has 1 to {MAX_DOC_NAME} characters")
        doc_id = doc_id_for(space_id, name)
        key = (space_id, doc_id)
        if key not in self._docs:
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            for update in self._stored_doc_updates(space_id, doc_id):
                doc.apply_update(update)
            self._docs[key] = doc
            self._buffers[key] = []

            def capture(event: Any, key: tuple[bytes, bytes] = key) -> None:
                if not self._applying:
                    self._buffers[key].append(bytes(event.update))

            self._subs[key] = doc.observe(capture)
            self.provenance.attach(space_id + doc_id, name, doc)
            self._names[doc_id] = name
        return self._docs[key]

    def _stored_doc_updates(self, space_id: bytes, doc_id: bytes) -> list[bytes]:
        # A document as stored: its folded state (in pieces), then the updates
        # appended since: this device's own ops (docupd) and the ones pulled
        # (docrem); order is irrelevant. Rows of this device's own store are
        # decoded without the network's size bound.
        updates: list[bytes] = []
        state = self._stored_state(space_id, doc_id)
        if state:
            updates.append(state)
        for ns in ("docupd", "docrem"):
            for _, rows in self.store.scan(ns, space_id + doc_id):
                updates.extend(u for u in _as_local_list(rows) if isinstance(u, bytes))
        return updates

    def _apply_update(self, doc: pycrdt.Doc[Any], update: bytes, name: str,
                      errors: list[SddsfError]) -> None:
        # pycrdt applies the update, then runs the application's observers and
        # raises what they raised as one ExceptionGroup: the update is in, so an
        # application bug is reported and never stops or undoes a sync.
        try:
            doc.apply_update(update)
        except ExceptionGroup as group:
            causes = "; ".join(f"{type(e).__name__}: {e}" for e in group.exceptions)
            error = UsageError(f"an observer of document {name!r} raised ({causes}); the "
                               "update was applied and stored anyway (an observer must not "
                               "read or change its document while it is being updated)")
            error.__cause__ = group
            errors.append(error)

    def flush(self) -> int:
        """Turn buffered local edits into pending ops (one edit per document; an
        edit larger than one op becomes a multi-part op). Returns how many
        documents had edits.

        Raises:
            UsageError: an edit is larger than :attr:`max_edit`. It is not synced
                and is undone in this device's copy (with the edits of that
                document made after it in the same flush): get the document again
                with :meth:`doc`. Every other document's edits were queued.
        """
        with self._exclusive():
            return self._flush()

    def _flush(self) -> int:
        made = 0
        refused: list[str] = []
        for key, updates in list(self._buffers.items()):
            if not updates:
                continue
            edits = list(updates)
            updates.clear()
            try:
                self._seal_edits(key, edits)
            except _EditRefused as exc:
                refused.append(exc.message)
                self._forget_doc(key)
            except BaseException:
                updates[:0] = edits  # not sealed: keep them for the next flush
                raise
            made += 1
        if refused:
            raise UsageError(" ".join(refused))
        return made

    def _seal_edits(self, key: tuple[bytes, bytes], updates: list[bytes]) -> None:
        # One merged Yjs update per edit (merging a debounce window's worth is
        # cheap, shrinks the op and applies ~8x faster than the parts). When the
        # merge is too large, the updates are sealed one by one up to the first
        # one that is too large itself: it and the later ones (which may build on
        # it) are refused together.
        space_id, doc_id = key
        name = self._names[doc_id]
        merged = updates[0] if len(updates) == 1 else pycrdt.merge_updates(*updates)
        try:
            self._seal(space_id, doc_id, name, [merged])
            return
        except _EditRefused:
            if len(updates) == 1:
                raise
        for i, update in enumerate(updates):
            try:
                self._seal(space_id, doc_id, name, [update])
            except _EditRefused as exc:
                later = len(updates) - i - 1
                raise _EditRefused(exc.message + (f" ({later} later edit(s) of the document "
                                                  "were refused with it)" if later else "")
                                   ) from None

    def _forget_doc(self, key: tuple[bytes, bytes]) -> None:
        # Undo a refused edit here: the next doc() loads the document as stored
        # (without it); the object the application holds no longer syncs.
        doc = self._docs.pop(key, None)
        sub = self._subs.pop(key, None)
        if doc is not None and sub is not None:
            doc.unobserve(sub)
        self._buffers.pop(key, None)

    def _seal(self, space_id: bytes, doc_id: bytes, name: str, updates: list[bytes], *,
              release: tuple[bytes, ...] = ()) -> None:
        keys = self._keys_cached(space_id)
        if not keys:
            raise UsageError("this device has no key for the space yet; sync first")
        epoch = max(keys)
        state = self.registry()
        if self._compromised(space_id, epoch, state):
            # A device revoked since this epoch was made holds its key: nothing is
            # sealed under it. The edit is kept (persisted) until sync opens a new
            # epoch (_rotate_if_due), or says why it cannot (rotation_blocked).
            if not release:
                self._hold(space_id, doc_id, name, updates)
            return
        mine = self.store.get("mine", space_id)
        seq, prev = (1, GENESIS_PREV)
        if mine is not None:
            last = _as_list(mine)
            seq, prev = int(last[0]) + 1, bytes(last[1])
        deps = self._deps(space_id)
        seen = self._seen_cached(space_id)
        payloads = self._payloads(name, updates, OpHeader(
            space=space_id, doc=doc_id, author=self.device_id, seq=seq, prev=prev, deps=deps,
            epoch=epoch, ts=self.hlc.last, seen=seen, nonce=bytes(24), reg=state.seq))
        envs: list[OpEnvelope] = []
        for payload in payloads:  # parts of one edit: consecutive ops of the chain
            ts = self.hlc.tick(self._clock())
            header = OpHeader(space=space_id, doc=doc_id, author=self.device_id, seq=seq,
                              prev=prev, deps=deps, epoch=epoch, ts=ts, seen=seen,
                              nonce=random_bytes(24), reg=state.seq)
            env = seal_op(self.keys, header, payload, keys[epoch])
            envs.append(env)
            seq, prev = seq + 1, env.op_id
        # Persist the ops, the chain head and the doc's new updates in one
        # transaction BEFORE sending (THREATS #6): a crash can only re-send these
        # same ops, and an edit's parts are queued all together or not at all.
        # The updates are appended (O(edit), not O(document)); they are folded
        # into the stored state when the device closes or syncs.
        first, last_env = envs[0], envs[-1]
        with self.store.batch() as b:
            for env in envs:
                b.put("pending", space_id + _u64(env.header.seq), env.raw)
                b.put("sent", space_id + _u64(env.header.seq), env.op_id)
            b.put("mine", space_id, encode([last_env.header.seq, last_env.op_id]))
            b.put("docupd", space_id + doc_id + _u64(first.header.seq), encode(updates))
            self.provenance.persist(b, space_id + doc_id)
            b.put("id", b"hlc", encode(last_env.header.ts.to_wire()))
            if len(envs) > 1:
                _keep_parted_edit(b, space_id, payloads[0], last_env.header.seq, name, updates)
            for key in release:
                b.delete("held", key)

    def _payloads(self, name: str, updates: list[bytes], probe: OpHeader) -> list[bytes]:
        # The plaintexts of the ops that carry one edit, each small enough that
        # its envelope fits one op and one request of the relay (its advertised
        # limits, remembered from the last sync; the defaults before).
        largest = min(self._relay_limits_cached().max_envelope, DEFAULT_PROTOCOL_LIMITS.max_op)
        room = largest - len(encode(probe.to_wire())) - _ENVELOPE_OVERHEAD
        try:
            return split_edit(name, updates, max_payload=room, max_edit=self.max_edit)
        except UsageError as exc:
            raise _EditRefused(f"{exc.message}: it was not synced and was undone on this "
                               "device (get the document again with Device.doc(); the object "
                               "you hold keeps it but no longer syncs); make smaller edits"
                               ) from None

    def _relay_limits_cached(self) -> RelayLimits:
        if self._limits is None:
            raw = self.store.get("id", b"limits")
            known = RelayLimits.__dataclass_fields__
            self._limits = RelayLimits(**{k: int(v) for k, v in _as_dict(raw).items()
                                          if k in known}) if raw is not None else RelayLimits()
        return self._limits

    async def _refresh_relay_limits(self) -> RelayLimits:
        # Asked once per connection; remembered so that offline flushes size ops
        # for the relay they will be sent to.
        limits = await self.relay.limits()
        if limits != self._relay_limits_cached():
            self.store.put("id", b"limits", encode({
                "max_request_bytes": limits.max_request_bytes,
                "max_batch_ops": limits.max_batch_ops, "max_page_ops": limits.max_page_ops,
                "max_op": limits.max_op, "max_field_chars": limits.max_field_chars}))
            self._limits = limits
        return limits

    def _compromised(self, space_id: bytes, epoch: int, state: reg.RegistryState) -> bool:
        """Whether a device revoked (in ``state``) after ``epoch``'s package was made
        may hold its key: no new op may be sealed or pushed under it."""
        seqs = self._package_seqs(space_id)
        return epoch >= len(seqs) or state.revoked_between(seqs[epoch], state.seq)

    def _hold(self, space_id: bytes, doc_id: bytes, name: str, updates: list[bytes]) -> None:
        tag = _HELD + random_bytes(7)
        with self.store.batch() as b:
            b.put("held", space_id + doc_id + tag, encode({"n": name, "u": updates}))
            # Like a sealed op's updates: the document shows the edit after a restart.
            b.put("docupd", space_id + doc_id + tag, encode(updates))

    def held_count(self) -> int:
        """Edits kept back because their space's key must be rotated first."""
        return self.store.count("held")

    def _release_held(self, space_id: bytes) -> None:
        # Seal the held edits of each document as one op (the epoch is safe now).
        docs: dict[bytes, tuple[str, list[bytes], list[bytes]]] = {}
        for key, raw in self.store.scan("held", space_id):
            row = _as_dict(raw)
            name, updates, keys = docs.setdefault(key[16:32], (str(row["n"]), [], []))
            updates.extend(bytes(u) for u in row["u"])
            keys.append(key)
        for doc_id, (name, updates, keys) in docs.items():
            merged = updates[0] if len(updates) == 1 else pycrdt.merge_updates(*updates)
            self._seal(space_id, doc_id, name, [merged], release=tuple(keys))

    def _hold_compromised_pending(self, space_id: bytes) -> None:
        # Pending ops sealed under an epoch that a device revoked since can read
        # are never pushed: in one transaction they become held edits again and
        # the chain head goes back to what the log holds (every pending op is
        # re-sealed, since they form one chain after it).
        rows = self.store.scan("pending", space_id)
        state = self.registry()
        envs = [decode_envelope(raw) for _, raw in rows]
        if not any(self._compromised(space_id, e.header.epoch, state) for e in envs):
            return
        keys = self._keys_cached(space_id)
        parted: set[bytes] = set()  # the parts of one edit are held once, as the edit
        with self.store.batch() as b:
            for (key, _), env in zip(rows, envs, strict=True):
                edit = self._pending_edit(space_id, env, keys, b, parted)
                if edit is not None:
                    b.put("held", space_id + env.header.doc + _HELD + random_bytes(7),
                          encode({"n": edit.name, "u": list(edit.updates)}))
                b.delete("pending", key)
            self._reset_head(b, space_id, None)

    def _pending_edit(self, space_id: bytes, env: OpEnvelope, keys: dict[int, bytes],
                      b: StoreBatch, parted: set[bytes]) -> Edit | None:
        # The edit a pending op of this device carries: itself, or for a part of
        # a multi-part edit the whole edit kept when it was sealed (once).
        payload = decode_payload(open_op(env, keys[env.header.epoch]))
        if not isinstance(payload, Part):
            return payload
        if payload.digest in parted:
            return None
        parted.add(payload.digest)
        whole = self.store.get("editdata", space_id + payload.digest)
        if whole is None:
            return None
        b.delete("edit", space_id + payload.digest)
        b.delete("editdata", space_id + payload.digest)
        edit = decode_payload(whole, decode_limits=_LOCAL_ROWS)
        return edit if isinstance(edit, Edit) else None

    def _verified_tree(self, space_id: bytes) -> merkle.MerkleTree:
        """The Merkle tree of the leaves this device verified (loaded once)."""
        tree = self._trees.get(space_id)
        if tree is None:
            base = self.store.get("base", space_id)
            if base is None:
                tree = merkle.MerkleTree()
            else:  # started from a snapshot: the history before it is a frontier
                size, hashes = _as_list(base)
                tree = merkle.MerkleTree.from_frontier(
                    merkle.Frontier.from_hashes(int(size), list(hashes)))
            for _, leaf in self.store.scan("leaf", space_id):
                tree.append(leaf)
            self._trees[space_id] = tree
        return tree

    def _keys_cached(self, space_id: bytes) -> dict[int, bytes]:
        keys = self._key_cache.get(space_id)
        if keys is None:
            keys = self._key_cache[space_id] = self._epoch_keys(space_id)
        return keys

    def _seen_cached(self, space_id: bytes) -> TreeHeadRef | None:
        if space_id not in self._seen_cache:
            head = self.store.get("head", space_id)
            seen = None
            if head is not None:
                th = verify_tree_head(head, self._relay_key(), log=space_id)
                seen = TreeHeadRef(th.size, th.root) if th.size else None
            self._seen_cache[space_id] = seen
        return self._seen_cache[space_id]

    def _doc_row(self, space_id: bytes, doc_id: bytes) -> dict[str, Any] | None:
        # {"name", "pieces", "size"}; homes written before pieces hold
        # {"name", "state"} (read here, rewritten at the next compaction).
        raw = self.store.get("doc", space_id + doc_id)
        return None if raw is None else _as_local_dict(raw)

    def _stored_state(self, space_id: bytes, doc_id: bytes) -> bytes:
        """The document's folded state: its pieces joined (b"" if none)."""
        row = self._doc_row(space_id, doc_id)
        if row is None:
            return b""
        if "state" in row:
            return bytes(row["state"])
        pieces = self.store.scan("docpiece", space_id + doc_id)
        if len(pieces) != int(row["pieces"]):
            raise DecodeError(f"the device store holds {len(pieces)} of the {row['pieces']} "
                              "pieces of a document: the store is damaged")
        return b"".join(v for _, v in pieces)

    def _write_state(self, b: Any, space_id: bytes, doc_id: bytes, name: str,
                     state: bytes) -> None:
        # Replace the stored state by ``state`` in pieces (one transaction: b).
        row = self._doc_row(space_id, doc_id)
        old = 0 if row is None or "state" in row else int(row["pieces"])
        count = -(-len(state) // DOC_PIECE)
        for i in range(count):
            b.put("docpiece", space_id + doc_id + i.to_bytes(4, "big"),
                  state[i * DOC_PIECE:(i + 1) * DOC_PIECE])
        for i in range(count, old):
            b.delete("docpiece", space_id + doc_id + i.to_bytes(4, "big"))
        b.put("doc", space_id + doc_id, encode({"name": name, "pieces": count,
                                                "size": len(state)}))

    def _compact_docs(self) -> None:
        # Fold appended updates into each open document's stored pieces once
        # they are many or large compared with it; record every open document
        # that has content by name, so snapshots find it.
        with self.store.batch() as b:
            for (space_id, doc_id), doc in self._docs.items():
                prefix = space_id + doc_id
                rows = self.store.count("docupd", prefix) + self.store.count("docrem", prefix)
                row = self._doc_row(space_id, doc_id)
                if not rows and (row is None or "state" not in row):
                    continue
                appended = (self.store.stored_bytes("docupd", prefix)
                            + self.store.stored_bytes("docrem", prefix))
                size = int(row.get("size", 0)) if row is not None else 0
                if (row is not None and "state" not in row and rows <= COMPACT_ROWS
                        and appended <= max(COMPACT_MIN_BYTES, size // 4)):
                    continue
                if row is None and rows <= COMPACT_ROWS and appended <= COMPACT_MIN_BYTES:
                    b.put("doc", prefix, encode({"name": self._names[doc_id], "pieces": 0,
                                                 "size": 0}))
                    continue
                self._write_state(b, space_id, doc_id, self._names[doc_id], doc.get_update())
                b.delete_prefix("docupd", prefix)
                b.delete_prefix("docrem", prefix)

    def _deps(self, space_id: bytes) -> VersionVector:
        entries = {}
        for key, value in self.store.scan("chain", space_id):
            author = key[16:]
            if author != self.device_id:
                entries[author] = int(_as_list(value)[0])
        return VersionVector(entries)

    def verified_size(self, space_id: bytes) -> int:
        """Entries of the space's log this device has verified."""
        return self._verified_tree(space_id).size

    def last_seen(self) -> dict[bytes, int]:
        """Per device, the newest op timestamp (ms) this device has verified."""
        return {k: _as_int(v) for k, v in self.store.scan("lastseen")}

    def pending_count(self) -> int:
        """Ops waiting to be pushed (after :meth:`flush`)."""
        return self.store.count("pending")

    def _relay_key(self) -> Ed25519PublicKey:
        if self.relay_key is None:
            raise ConfigError("the relay key is not pinned yet; sync once while online")
        return self.relay_key

    # ---------------------------------------------------------------- sync
    async def sync(self, progress: Progress | None = None) -> SyncReport:
        """Push pending ops and pull, verifying everything (see the module docstring).

        ``progress(space_id, done, total)`` is called after each page of a pull
        (``total`` is the log size the relay reports), for progress bars.
        """
        async with self._exclusive_async():
            return await self._sync(progress)

    async def _sync(self, progress: Progress | None) -> SyncReport:
        self.flush()
        report = SyncReport()
        self._progress = progress
        state = await self.refresh_registry()
        if not state.is_active(self.device_id):
            self._refuse_inactive(state)
        await self._pin_relay()
        known = {s for s, _ in self.spaces()}
        for space in await self.relay.list_spaces():
            sid = _unb64(space["space_id"])
            if sid not in known:
                with self.store.batch() as b:
                    b.put("space", sid, encode(""))  # name learnt from its _meta doc
        await refresh_encryption_policy(self)
        for space_id, _ in self.spaces():
            packages = await self.refresh_keys(space_id)
            # A device the relay's controller made read-only keeps its pending
            # ops and only pulls (and acknowledges) until it is trusted again.
            if not report.read_only:
                await self._unless_read_only(self._rotate_if_due(space_id, packages, report),
                                             report)
            if not report.read_only:
                await self._unless_read_only(self._push(space_id, report), report)
            await self._pull(space_id, report)
            if not report.read_only and self.flush():  # re-queued after a chain fork
                await self._unless_read_only(self._push(space_id, report), report)
                await self._pull(space_id, report)
        self._compact_docs()
        for space_id, _ in self.spaces():
            if not report.read_only:
                await self._unless_read_only(self._maintain(space_id, report), report)
        report.enacted = await self.governance.enact_ready()
        if any(name == "vault" for _, name in self.spaces()):
            await report_tombstones(self)
        return report

    @staticmethod
    async def _unless_read_only(step: Awaitable[None], report: SyncReport) -> None:
        try:
            await step
        except AuthorizationError as exc:
            if exc.code is not Code.POLICY_READ_ONLY:
                raise
            report.read_only = True

    def awaiting_approval(self) -> ProposalView | None:
        """The open proposal to add this device, if it is waiting for approvals."""
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

    async def _rotate_if_due(self, space_id: bytes, packages: list[kp.KeyPackage],
                             report: SyncReport) -> None:
        # A new epoch is due when a device was revoked after the current one
        # was made (its revoker may have crashed before rotating, or the relay
        # refused its package), when an active device is not a recipient
        # (catch-up), or when the current one is older than the policy's
        # max_epoch_age_s. On return the newest epoch is one no revoked device
        # holds (else rotation_blocked is raised and nothing is pushed), pending
        # ops sealed under a compromised epoch are held again, and held edits
        # are sealed under the new epoch.
        last = packages[-1]
        if self._epoch_due(last) and await self._try_rotate(space_id):
            report.rotated += 1
        self._hold_compromised_pending(space_id)
        self._release_held(space_id)

    def _epoch_due(self, last: kp.KeyPackage) -> bool:
        max_age = self.registry().policy.get("max_epoch_age_s")
        published = effective_encryption_policy(self)  # the relay's, clamped, never weaker
        if published is not None and not (isinstance(max_age, int) and 0 < max_age
                                          <= published.max_epoch_age_s):
            max_age = published.max_epoch_age_s
        aged = isinstance(max_age, int) and not isinstance(max_age, bool) and max_age > 0 \
            and self._clock() - last.ts > max_age * 1000
        return aged or kp.needs_rotation(last, self.registry())

    async def set_policy(self, policy: dict[str, bool | int | str]) -> Change:
        """Replace the account's registry policy (e.g. ``{"max_epoch_age_s": 86400}``,
        ``{"approvals": 2, "veto_window_s": 3600}``); a proposal when the current
        policy requires approval."""
        return await self.governance.change(
            ActionType.POLICY, {"policy": dict(policy)},
            direct=lambda s: reg.set_policy(s, self.keys, policy, self._clock()))

    async def _maintain(self, space_id: bytes, report: SyncReport) -> None:
        # Corroborate, snapshot and acknowledge: together they let the relay prune.
        size = self._verified_tree(space_id).size
        if not size:
            return
        # Look at the relay's snapshots at the first sync of a session and
        # whenever the log grew by check_every (each look costs a request).
        last = self._checked_at.get(space_id)
        look = self.check_snapshots and (last is None or size - last >= self.check_every)
        if look:
            self._checked_at[space_id] = size
        base = self._snapbase(space_id)
        if base is not None:
            rederived = len(report.rederived)
            await self._check_base(space_id, base, report, look=look)
            look = look or len(report.rederived) > rederived  # a new state: check it too
        if look and self._grounded(space_id):
            await self._cross_check(space_id, report)
        size = self._verified_tree(space_id).size
        if self._snapshot_due(space_id) and await self._snapshot(space_id) is not None:
            report.snapshots_written += 1
        last_ack = self.store.get("ackmark", space_id)
        if self.ack_every and (last_ack is None or report.snapshots_written
                               or size - 1 - _as_int(last_ack) >= self.ack_every):
            await self.relay.acknowledge(space_id, size - 1)
            self.store.put("ackmark", space_id, encode(size - 1))

    def _assembly_open(self, space_id: bytes) -> bool:
        # A snapshot at a size where an active author's multi-part edit is half
        # logged would hold neither its first parts (not applied yet) nor let a
        # reader that starts from it join the remaining parts (section 8.11).
        state = self.registry()
        return any(state.is_active(author) for author in open_assemblies(self.store, space_id))

    def _snapshot_due(self, space_id: bytes) -> bool:
        last = self.store.get("snapmark", space_id)
        return bool(self.snapshot_every) and self._verified_tree(space_id).size - (
            _as_int(last) if last else 0) >= self.snapshot_every

    def _has_unsent(self, space_id: bytes) -> bool:
        # Pending ops, edits held for a rotation, or edits not flushed yet.
        return bool(self.store.count("pending", space_id) or self.store.count("held", space_id)
                    ) or any(buf for (sid, _), buf in self._buffers.items()
                             if sid == space_id and buf)

    def snapshot_state(self, space_id: bytes) -> dict[str, bytes] | None:
        """Every document of a space as Yjs state, or None while local edits are
        not yet in the log (a snapshot must hold exactly the logged state)."""
        if self._has_unsent(space_id):
            return None
        if self._assembly_open(space_id):
            return None  # a multi-part edit is half logged: its first parts are in no doc
        return {name: self.doc(space_id, name).get_update()
                for name in self._doc_names(space_id)}

    def _doc_names(self, space_id: bytes) -> list[str]:
        # Documents with stored content, and open ones (which may be newer).
        names = {str(_as_local_dict(raw)["name"]) for _, raw in self.store.scan("doc", space_id)}
        names.update(self._names[d] for (sid, d) in self._docs if sid == space_id)
        return sorted(names)

    async def snapshot(self, space_id: bytes) -> int | None:
        """Write a signed encrypted (chunked) snapshot of the space at the log size
        this device verified. Returns that size, or None when there is nothing to
        snapshot, local edits are still pending (sync first), this device's
        state rests on a snapshot nobody corroborated (it never signs state it
        could not check against the log, 18.7), or the space exceeds the
        snapshot limit (new devices then replay the ops)."""
        async with self._exclusive_async():
            return await self._snapshot(space_id)

    async def _snapshot(self, space_id: bytes) -> int | None:
        tree = self._verified_tree(space_id)
        if not tree.size or not self._grounded(space_id):
            return None
        docs = self.snapshot_state(space_id)
        if docs is None:
            return None
        keys = self._keys_cached(space_id)
        chains = {k[16:]: _chain_head(v) for k, v in self.store.scan("chain", space_id)}
        try:
            sealed = seal_chunked_snapshot(
                self.keys, space=space_id, epoch=max(keys), epoch_key=keys[max(keys)],
                size=tree.size, frontier=tree.frontier(), chains=chains, docs=docs,
                ts_ms=self._clock(), nonce=random_bytes(24))
        except UsageError:
            self.store.put("snapmark", space_id, encode(tree.size))  # do not retry each sync
            return None
        await _bounded([functools.partial(self.relay.put_snapshot_chunk, space_id, cid, chunk)
                        for cid, chunk in zip(sealed.chunk_ids, sealed.chunks, strict=True)])
        await self.relay.put_snapshot(space_id, SPACE_SNAPSHOT_DOC, tree.size - 1,
                                      sealed.manifest)
        with self.store.batch() as b:
            b.put("snapmark", space_id, encode(tree.size))
            b.put("snapcheck", space_id, sealed.id)  # its own: nothing to check
        return tree.size

    # ------------------------------------------- snapshot trust (18.7)
    def _trusted(self, device_id: bytes) -> bool:
        return self.registry().is_active(device_id) and device_id not in self._distrusted

    def _label(self, device_id: bytes) -> str:
        rec = self.registry().device(device_id)
        name = f"{rec.name!r} " if rec is not None else ""
        return f"{name}({device_id.hex()[:12]})"

    def _alert(self, report: SyncReport, message: str) -> None:
        entry = (Code.SNAPSHOT_MISMATCH.value, message)
        report.alerts.append(entry)
        self.alerts.append(entry)
        self.events.device_alert(*entry)  # events hook

    def _claims_of(self, space_id: bytes, raw: bytes) -> SnapshotClaims | None:
        """A served snapshot's claims, its signature checked (any device of the
        account); None if its author is not one. A bad signature or another
        space means the relay served something no device wrote."""
        try:
            claims = check_snapshot_signature(raw, registry=self.registry(),
                                              accept_revoked=True)
        except AuthorizationError:
            return None
        except SddsfError as exc:
            raise ProofError(f"the relay served a snapshot that fails verification: "
                             f"[{exc.code.value}] {exc.message}") from exc
        if claims.space != space_id:
            raise ProofError("the relay served a snapshot that fails verification: "
                             "[wrong_context] it belongs to another space")
        return claims

    async def _verdicts(self, space_id: bytes, doc: bytes,
                        claims: SnapshotClaims) -> _Verdicts:
        """The verified attestations the relay holds about the snapshot under ``doc``
        (signatures checked; ones about another snapshot or forged are ignored)."""
        sid, raws = await self.relay.snapshot_attestations(space_id, doc)
        v = _Verdicts()
        if sid != claims.id:
            return v
        for raw in raws:
            try:
                att = verify_attestation(raw, registry=self.registry(), space=space_id,
                                         accept_revoked=True)
            except SddsfError:
                continue
            if att.snapshot != claims.id or att.size != claims.size or att.doc != \
                    SPACE_SNAPSHOT_DOC or att.attester == claims.author:
                continue
            # Its own earlier verdict rested on the state now in question.
            trusted = self._trusted(att.attester) and att.attester != self.device_id
            if att.verdict == MISMATCH and trusted:
                v.dissent.append(att.attester)
            elif att.verdict == MATCH:
                v.match = True
                if trusted:
                    v.matchers.append(att.attester)
        return v

    async def _log_complete(self, space_id: bytes) -> bool:
        # Pruning drops a prefix, so the log can be replayed iff entry 0 is there.
        page, _ = await self.relay.pull(space_id, after=-1, limit=1)
        return not page or page[0].envelope is not None

    async def _fetch_snapshot(self, space_id: bytes, report: SyncReport, *,
                              docs: bool = True, exclude: bytes | None = None
                              ) -> tuple[Snapshot, dict[str, Any]] | None:
        """The snapshot a new device starts from and what vouches for it (``by``:
        the trusted devices that attested it; ``final``: nothing else records
        the history under it), or None to replay the log (protocol.md 18.7).

        In order: the current or the corroborated snapshot, if no trusted device
        disputes it and its author is trusted or a trusted device (not its
        author) attested it; else the log, when it is complete; else (history
        pruned) a snapshot that a device other than its author attested. A
        snapshot whose author is revoked or, during a recovery, suspect is thus
        never loaded on its author's word alone. ``docs=False`` skips fetching
        and decrypting the documents (a dry pull needs the frontier and chains).
        """
        banned = set(_as_list(self.store.get("snapdistrust", space_id) or encode([])))
        banned.add(exclude or b"")
        judged: list[tuple[SnapshotClaims, _Verdicts, bytes]] = []
        for doc in (SPACE_SNAPSHOT_DOC, CORROBORATED_SNAPSHOT_DOC):
            try:
                _, raw = await self.relay.get_snapshot(space_id, doc)
            except NotFoundError:
                continue
            claims = self._claims_of(space_id, raw)
            if claims is None or claims.id in banned or any(c.id == claims.id
                                                            for c, _, _ in judged):
                continue
            verdicts = await self._verdicts(space_id, doc, claims)
            if verdicts.dissent:
                self._alert(report, f"device {self._label(verdicts.dissent[0])} reports that "
                            f"the snapshot of space {space_id.hex()[:12]} written by device "
                            f"{self._label(claims.author)} does not match the log; not used")
                continue
            judged.append((claims, verdicts, raw))
        for claims, v, raw in judged:
            if v.matchers or self._trusted(claims.author):
                return await self._load_snapshot(space_id, raw, claims,
                                                 {"by": v.matchers, "final": False}, report,
                                                 docs)
        if not judged or await self._log_complete(space_id):
            return None
        for claims, v, raw in judged:  # history is pruned: a corroborated one is all there is
            if v.match:
                return await self._load_snapshot(space_id, raw, claims,
                                                 {"by": [], "final": True}, report, docs)
        return None

    async def _load_snapshot(self, space_id: bytes, raw: bytes, claims: SnapshotClaims,
                             basis: dict[str, Any], report: SyncReport,
                             docs: bool) -> tuple[Snapshot, dict[str, Any]] | None:
        keys = self._keys_cached(space_id)
        try:
            manifest = open_snapshot(raw, registry=self.registry(), space=space_id,
                                     epoch_keys=keys, accept_revoked=True)
            if not docs:
                return load_snapshot(dataclasses.replace(manifest, inline_docs={}), (),
                                     epoch_keys=keys), basis
            chunks = await _bounded([functools.partial(self._chunk, space_id, cid)
                                     for cid in manifest.chunk_ids])
            return load_snapshot(manifest, chunks, epoch_keys=keys), basis
        except EpochError:
            return None  # no key for its epoch: replay instead
        except ProofError as exc:  # a chunk that is not the one the signed manifest names
            raise ProofError(f"the relay served a snapshot that fails verification: "
                             f"{exc.message}") from exc
        except SddsfError as exc:
            # Signed by a device of the account, yet unreadable: its author wrote it so.
            self._alert(report, f"the snapshot of space {space_id.hex()[:12]} written by device "
                        f"{self._label(claims.author)} is unreadable ([{exc.code.value}] "
                        f"{exc.message}); not used")
            return None

    async def _chunk(self, space_id: bytes, cid: bytes) -> bytes:
        try:
            return await self.relay.get_snapshot_chunk(space_id, cid)
        except NotFoundError:
            raise ProofError("the relay withheld a chunk of the snapshot it served") from None

    # --------------------------------------- corroboration and re-derivation
    def _snapbase(self, space_id: bytes) -> dict[str, Any] | None:
        """The snapshot this device's state of the space started from, while no
        trusted device vouches for it: ``{"id", "author", "size", "by"}`` (empty
        id and author: a home that started from a snapshot before this was
        recorded). None when the state rests on the log: replayed, or started
        from a snapshot that a device other than its author corroborated while
        that device or the author is still trusted (or that is the only record
        of a pruned history: ``final``)."""
        raw = self.store.get("snapbase", space_id)
        if raw is not None:
            row = _as_dict(raw)
            by = [bytes(d) for d in row.get("by", [])]
            if row.get("final") or (by and (self._trusted(bytes(row["author"]))
                                             or any(self._trusted(d) for d in by))):
                return None  # corroborated, and someone who vouched is still trusted
            return row
        base = self.store.get("base", space_id)
        if base is None:
            return None
        return {"id": b"", "author": b"", "size": int(_as_list(base)[0])}

    def _grounded(self, space_id: bytes) -> bool:
        """Whether this device's state of the space rests on the log: replayed, or
        started from a snapshot that a device other than its author corroborated.
        Only then does it publish snapshots or attest other devices' (18.7)."""
        return self._snapbase(space_id) is None

    def _set_grounded(self, space_id: bytes, by: list[bytes]) -> None:
        row = _as_dict(self.store.get("snapbase", space_id) or encode({}))
        self.store.put("snapbase", space_id, encode({**row, "by": by}))

    async def _check_base(self, space_id: bytes, base: dict[str, Any], report: SyncReport, *,
                          look: bool) -> None:
        # A state that rests on one device's word: keep it only while that device
        # is trusted and nobody trusted disputes it; become grounded when a
        # trusted device corroborates it; re-derive otherwise (18.7).
        bid, author = bytes(base["id"]), bytes(base["author"])
        if author and not self._trusted(author):
            await self._rederive(space_id, report, exclude=bid, author=author,
                                 why="its author is no longer trusted")
            return
        for doc in (SPACE_SNAPSHOT_DOC, CORROBORATED_SNAPSHOT_DOC) if look else ():
            try:
                _, raw = await self.relay.get_snapshot(space_id, doc)
            except NotFoundError:
                continue
            claims = self._claims_of(space_id, raw)
            if claims is None or claims.id != bid:
                continue
            verdicts = await self._verdicts(space_id, doc, claims)
            if verdicts.dissent:
                await self._rederive(space_id, report, exclude=bid, author=author,
                                     why=f"device {self._label(verdicts.dissent[0])} reports "
                                     "that it does not match the log")
                return
            if verdicts.matchers:
                self._set_grounded(space_id, verdicts.matchers)
                return
        if self._snapshot_due(space_id) and await self._log_complete(space_id):
            # Due to publish, but this device signs only what it can check: check
            # its start against the log it can still replay.
            await self._rederive(space_id, report, exclude=None, author=author or None,
                                 why="it was never corroborated", replay=True)

    async def _cross_check(self, space_id: bytes, report: SyncReport) -> None:
        # Recompute the relay's current snapshot from the log this device holds
        # and attest the verdict: the relay prunes only under a corroborated
        # snapshot, and readers use the verdicts (18.7).
        sid, _ = await self.relay.snapshot_attestations(space_id, SPACE_SNAPSHOT_DOC)
        if sid is None or sid == self.store.get("snapcheck", space_id):
            return
        try:
            _, raw = await self.relay.get_snapshot(space_id, SPACE_SNAPSHOT_DOC)
            claims = self._claims_of(space_id, raw)
        except (NotFoundError, ProofError):
            return  # gone, or bad: refused where it is read
        tree = self._verified_tree(space_id)
        if claims is None or claims.id != sid or claims.size > tree.size \
                or self._has_unsent(space_id):
            return  # another one meanwhile, not pulled that far yet, or edits unsent
        if claims.author == self.device_id or claims.size < tree.base:
            self.store.put("snapcheck", space_id, sid)  # its own, or before what it holds
            return
        verdict = await self._recompute(space_id, raw, claims)
        if verdict is None:
            return
        att = attest_snapshot(self.keys, space=space_id, doc=SPACE_SNAPSHOT_DOC,
                              snapshot=claims.id, size=claims.size, verdict=verdict,
                              ts_ms=self._clock())
        try:
            await self.relay.attest_snapshot(space_id, SPACE_SNAPSHOT_DOC, att)
        except ConflictError:
            return  # replaced meanwhile: the next sync checks the new one
        self.store.put("snapcheck", space_id, sid)
        report.attested += 1
        if verdict == MISMATCH:
            self._alert(report, f"the snapshot of space {space_id.hex()[:12]} written by device "
                        f"{self._label(claims.author)} does not match the log: that device "
                        "may be compromised; revoke it (`sddsf device revoke`). This device "
                        "attested the mismatch and publishes its own snapshot")
            await self.snapshot(space_id)

    async def _recompute(self, space_id: bytes, raw: bytes,
                         claims: SnapshotClaims) -> str | None:
        """``match`` if the snapshot's documents plus the logged ops after it give
        this device's documents, ``mismatch`` if not (or if its author signed
        something unreadable), None if this device cannot tell."""
        keys = self._keys_cached(space_id)
        try:
            manifest = open_snapshot(raw, registry=self.registry(), space=space_id,
                                     epoch_keys=keys, accept_revoked=True)
            chunks = await _bounded([functools.partial(self.relay.get_snapshot_chunk, space_id,
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
        for offset in range(claims.size, self._verified_tree(space_id).size):
            if offset in skipped:
                continue
            env = self.store.get("op", space_id + _u64(offset))
            if env is None:
                return None
            try:
                body = self._op_body(space_id, env, parts)
            except _NoKey:
                return None
            if body is None:
                continue  # a part of an edit that is not complete yet
            name, updates = body
            doc = docs.setdefault(name, pycrdt.Doc())
            for update in updates:
                doc.apply_update(update)
        mine = {n: self.doc(space_id, n).get_update() for n in self._doc_names(space_id)}
        theirs = {n: d.get_update() for n, d in docs.items()}
        return MATCH if _same_states(mine, theirs) else MISMATCH

    def _op_body(self, space_id: bytes, raw: bytes,
                 parts: PartsReader | None = None) -> tuple[str, list[bytes]] | None:
        """The document name and updates of a stored op: of the edit it completes
        when ``parts`` joins multi-part edits, else None for a part.

        Raises:
            _NoKey: this device has no key for the op's epoch.
        """
        env = decode_envelope(raw)
        key = self._keys_cached(space_id).get(env.header.epoch)
        if key is None:
            raise _NoKey
        try:
            payload = decode_payload(open_op(env, key))
        except SddsfError:
            return None
        if isinstance(payload, Part):
            if parts is None:
                return None
            try:
                edit = parts.feed(env.header.author, env.header.seq, env.header.doc, payload)
            except SddsfError:
                return None
            if edit is None:
                return None
            payload = edit
        return payload.name, list(payload.updates)

    async def _rederive(self, space_id: bytes, report: SyncReport, *, exclude: bytes | None,
                        author: bytes | None, why: str, replay: bool = False) -> None:
        """Rebuild the space's state from the log (or from a snapshot the rules of
        18.7 still trust, never ``exclude``), keeping unsent local edits; alert
        when the rebuilt documents differ from the ones held."""
        if not await self._log_complete(space_id) and (
                replay or await self._fetch_snapshot(space_id, SyncReport(), docs=False,
                                                     exclude=exclude) is None):
            if await self._only_record(space_id, exclude):
                return
            # Nothing to rebuild it from: keep it, but it stays ungrounded (never
            # published nor used to attest) until something corroborates it.
            self._alert(report, f"this device's state of space {space_id.hex()[:12]} rests on a "
                        f"snapshot ({why}) and the relay holds nothing trusted to re-derive "
                        "it from: it is kept, but this device will not publish it")
            return
        before = {n: self.doc(space_id, n).get_update() for n in self._doc_names(space_id)}
        self._reset_space(space_id, exclude)
        saved, self.use_snapshots = self.use_snapshots, self.use_snapshots and not replay
        try:
            await self._pull(space_id, report)
        finally:
            self.use_snapshots = saved
        report.rederived.append(space_id)
        after = {n: self.doc(space_id, n).get_update() for n in self._doc_names(space_id)}
        if not _same_states(before, after):
            who = f"device {self._label(author)}" if author else "another device"
            self._alert(report, f"this device's state of space {space_id.hex()[:12]} came from a "
                        f"snapshot written by {who} that does not match the log ({why}); it "
                        "was re-derived from the log and trusted snapshots")

    async def _only_record(self, space_id: bytes, base: bytes | None) -> bool:
        # With history pruned, a snapshot that a device other than its author
        # attested is what a new device would start from too (18.7 rule 3): the
        # state resting on it is as good as the relay can offer; say so once.
        start = await self._fetch_snapshot(space_id, SyncReport(), docs=False)
        if base is None or start is None or start[0].id != base or not start[1].get("final"):
            return False
        row = _as_dict(self.store.get("snapbase", space_id) or encode({}))
        self.store.put("snapbase", space_id, encode({**row, "final": True}))
        return True

    def _reset_space(self, space_id: bytes, exclude: bytes | None) -> None:
        # Forget everything derived from the space's log (leaves, ops, chains,
        # documents, the snapshot start), as for a new device; keep what this
        # device made and has not sent (pending ops, their updates re-stored),
        # the newest verified tree head (rollback check) and its acknowledgements.
        pending = {int.from_bytes(k[16:], "big"): v for k, v in self.store.scan("pending",
                                                                                 space_id)}
        banned = _as_list(self.store.get("snapdistrust", space_id) or encode([]))
        with self.store.batch() as b:
            for ns in ("leaf", "op", "chain", "doc", "docpiece", "docrem", "skipped", "asm",
                       "asmpart"):
                b.delete_prefix(ns, space_id)
            for ns in ("base", "snapbase", "snapmark", "snapcheck"):
                b.delete(ns, space_id)
            for key in self.store.keys("docupd", space_id):
                # Kept: the updates of pending ops and of edits held for a rotation.
                if not key[32:].startswith(_HELD) and \
                        int.from_bytes(key[32:], "big") not in pending:
                    b.delete("docupd", key)
            for key in self.store.keys("sent", space_id):  # own logged ops: re-applied
                if int.from_bytes(key[16:], "big") not in pending:
                    b.delete("sent", key)
            for seq, env in pending.items():
                try:
                    body = self._op_body(space_id, env)
                except _NoKey:
                    continue
                if body is not None:
                    b.put("docupd", space_id + doc_id_for(space_id, body[0]) + _u64(seq),
                          encode(body[1]))
            if exclude:
                b.put("snapdistrust", space_id, encode([*banned, exclude][-16:]))
        self._trees.pop(space_id, None)
        for open_key in [k for k in self._docs if k[0] == space_id]:
            # A caller still holding the old document holds a detached copy.
            self._docs.pop(open_key).unobserve(self._subs.pop(open_key))
            del self._buffers[open_key]

    async def _push(self, space_id: bytes, report: SyncReport) -> None:
        rows = self.store.scan("pending", space_id)
        if not rows:
            return
        self.store.make_durable()  # the relay must never hold an op we could forget
        limits = await self._refresh_relay_limits()
        parted = _parted_edits(self.store, space_id)
        last_ok: OpEnvelope | None = None
        reset = False
        requeued: set[bytes] = set()
        for chunk, unsendable in _upload_batches(rows, limits):
            if unsendable:
                # Queued for a relay with larger limits: sealed again in ops that
                # fit this one (on top of the last op it accepted), never dropped.
                with self.store.batch() as b:
                    self._reset_head(b, space_id, last_ok)
                    for key, env in unsendable:
                        b.put("failed", key, env)
                        b.delete("pending", key)
                        self._requeue(space_id, env, b, requeued)
                return
            results, head_raw = await self.relay.upload(space_id, [v for _, v in chunk])
            head = verify_tree_head(head_raw, self._relay_key(), log=space_id)
            with self.store.batch() as b:
                for (key, env), r in zip(chunk, results, strict=True):
                    if r.status in ("accepted", "duplicate"):
                        if r.offset is None or r.proof is None:
                            raise ProofError("the relay acknowledged an op without a proof")
                        merkle.verify_inclusion(merkle.leaf_hash(env), r.offset, head.size,
                                                r.proof, head.root)
                        b.put("acked", space_id + _u64(r.offset), merkle.leaf_hash(env))
                        b.delete("pending", key)
                        if key in parted:  # the last part of an edit is logged
                            b.delete("edit", parted[key])
                            b.delete("editdata", parted[key])
                        last_ok = decode_envelope(env)
                        report.pushed += 1
                        continue
                    report.rejected.append((r.code or "", r.message or ""))
                    b.put("failed", key, env)
                    b.delete("pending", key)
                    if r.code in _RESEAL:
                        # Keep the edit: re-queue its updates, to be sealed again
                        # under the current epoch on top of this device's last
                        # accepted op (a chain fork: restored from an older copy;
                        # stale epoch: it waited through two rotations; chain gap:
                        # an earlier op of this push was refused). The chain head
                        # moves back so the new ops link to what the log holds.
                        if not reset:
                            self._reset_head(b, space_id, last_ok)
                            reset = True
                        self._requeue(space_id, env, b, requeued)

    def _reset_head(self, b: Any, space_id: bytes, last_ok: OpEnvelope | None) -> None:
        # This device's chain head after a refusal: the last op of it accepted in
        # this push, else the last one the verified log holds, else genesis.
        if last_ok is not None:
            b.put("mine", space_id, encode([last_ok.header.seq, last_ok.op_id]))
            return
        logged = self.store.get("chain", space_id + self.device_id)
        if logged is None:
            b.delete("mine", space_id)
        else:
            head = _chain_head(logged)
            b.put("mine", space_id, encode([head.seq, head.op_id]))

    def _requeue(self, space_id: bytes, raw: bytes, b: StoreBatch,
                 requeued: set[bytes]) -> None:
        env = decode_envelope(raw)
        key = self._epoch_keys(space_id).get(env.header.epoch)
        if key is None:
            return
        try:
            payload = decode_payload(open_op(env, key))
        except SddsfError:
            return  # not an edit this device can read back (kept under 'failed')
        if isinstance(payload, Part):
            # The whole edit was kept when its parts were sealed: queue it once.
            if payload.digest in requeued:
                return
            requeued.add(payload.digest)
            whole = self.store.get("editdata", space_id + payload.digest)
            if whole is None:
                return
            b.delete("edit", space_id + payload.digest)
            b.delete("editdata", space_id + payload.digest)
            payload = decode_payload(whole, decode_limits=_LOCAL_ROWS)
            if not isinstance(payload, Edit):
                return
        self.doc(space_id, payload.name)  # ensure the buffer exists
        self._buffers[(space_id, doc_id_for(space_id, payload.name))].extend(payload.updates)

    async def _pull(self, space_id: bytes, report: SyncReport, *,
                    dry: bool = False) -> dict[bytes, ChainHead] | None:
        """Pull, verify and apply the space's new entries. ``dry``: verify only,
        store and apply nothing, and return every author's chain head."""
        verified = self._verified_tree(space_id)
        snap: Snapshot | None = None
        basis: dict[str, Any] = {}
        if not verified.size and self.use_snapshots:
            # A new device: start from a snapshot it may trust (18.7) and pull
            # only the tail, which must extend its frontier to the signed root.
            start = await self._fetch_snapshot(space_id, report, docs=not dry)
            if start is not None:
                snap, basis = start
                verified = merkle.MerkleTree.from_frontier(
                    merkle.Frontier.from_hashes(snap.size, snap.frontier))
        have = verified.size
        old_head_raw = self.store.get("head", space_id)
        old = (verify_tree_head(old_head_raw, self._relay_key(), log=space_id)
               if old_head_raw else None)
        fetched: list[tuple[int, bytes, bytes | None]] = []
        head: TreeHead | None = None
        cursor = have
        for _ in range(10_000):  # bounded: at most 10k pages per sync
            page, head_raw = await self.relay.pull(space_id, after=cursor - 1, limit=_MAX_BATCH)
            head = verify_tree_head(head_raw, self._relay_key(), log=space_id)
            if self._progress is not None:
                self._progress(space_id, cursor + len(page), head.size)
            for op in page:
                if op.offset != cursor:
                    raise ProofError(f"the relay skipped or repeated log offsets (expected "
                                     f"{cursor}, got {op.offset}): it is omitting history")
                if op.envelope is None:
                    # Pruned ops are served only under a snapshot that covers them;
                    # this device starts from a snapshot only when it is new.
                    raise ProofError(f"the relay withheld the op at offset {op.offset} "
                                     "(no snapshot this device trusts covers it)")
                if merkle.leaf_hash(op.envelope) != op.leaf_hash:
                    raise ProofError(f"op at offset {op.offset} does not match its leaf hash")
                fetched.append((op.offset, op.leaf_hash, op.envelope))
                cursor += 1
            if not page or cursor >= head.size:
                break
        if head is None:
            return None
        if head.size < have or (old is not None and head.size < old.size):
            raise ProofError(f"the relay's log went back from {max(have, old.size if old else 0)}"
                             f" to {head.size} entries: it is rolling back history",
                             Code.LOG_ROLLBACK)
        # Extend a copy: the cached tree only ever holds leaves that were stored.
        tree = verified.copy() if fetched else verified
        for _, leaf, _ in fetched:
            tree.append(leaf)
        if tree.size < head.size or tree.root(head.size) != head.root:
            raise ProofError("the ops the relay served do not reproduce its signed tree head: "
                             "history was omitted, reordered or rewritten")
        for key, acked in self.store.scan("acked", space_id):
            offset = int.from_bytes(key[16:], "big")
            if offset < tree.base:
                continue  # inside a snapshot's frontier: covered by the root check
            if offset >= head.size:
                raise ProofError(f"the relay's log ({head.size} entries) no longer holds this "
                                 f"device's acknowledged op at offset {offset}: it is rolling "
                                 "back history", Code.LOG_ROLLBACK)
            if leaves_at(tree, offset) != acked:
                raise ProofError(f"the relay dropped or replaced this device's acknowledged op "
                                 f"at offset {offset}")
        try:
            return await self._apply_verified(space_id, fetched, tree, head, report, snap,
                                              basis=basis, dry=dry)
        except _UnreadableSnapshot as exc:
            # Nothing was stored: forget the documents it touched, never use it again.
            self._alert(report, f"the snapshot of space {space_id.hex()[:12]} written by device "
                        f"{self._label(exc.snap.author)} is unreadable ({exc.why}); not used")
            self._reset_space(space_id, exc.snap.id)
            return await self._pull(space_id, report, dry=dry)

    async def _apply_verified(  # noqa: PLR0915 - one verified transaction, kept in one place
            self, space_id: bytes, fetched: list[tuple[int, bytes, bytes | None]],
            tree: merkle.MerkleTree, head: TreeHead, report: SyncReport,
            snap: Snapshot | None, *, basis: dict[str, Any] | None = None,
            dry: bool = False) -> dict[bytes, ChainHead] | None:
        keys = self._epoch_keys(space_id)
        chains = MemoryChainView(heads=dict(snap.chains) if snap is not None else {
            k[16:]: _chain_head(v) for k, v in self.store.scan("chain", space_id)})
        older: list[tuple[bytes, TreeHeadRef]] = []  # gossip about sizes before tree.base
        envs = [_decoded_or_raw(raw) for _, _, raw in fetched]
        state = await self._registry_covering(envs)
        # package_seqs: the compromised-epoch rule (epoch_compromised) needs them.
        window = EpochWindow(max(keys) if keys else 0, 0, self._package_seqs(space_id))
        parts = PartsReader(self.store, space_id)  # (a snapshot is never taken mid-edit)
        applied: list[tuple[OpEnvelope, dict[str, object] | None]] = []
        for (offset, _, raw), item in zip(fetched, envs, strict=True):
            if raw is None or item is None:
                continue  # pruned: covered by a snapshot (client snapshots: next milestone)
            try:
                verdict = verify_op(item, space=space_id, registry=state, epochs=window,
                                    chains=chains, now_ms=None)
            except SddsfError as exc:
                skipped = _beyond_cutoff(raw, offset, exc, state)
                if skipped is None:
                    raise ProofError(f"the relay served an op (offset {offset}) that fails "
                                     f"the rules: [{exc.code.value}] {exc.message}") from exc
                report.skipped.append(skipped)
                continue
            if verdict.outcome is not Outcome.ACCEPT:
                raise ProofError(f"the relay served a duplicate op at offset {offset}")
            env = verdict.envelope
            chains.record(env)
            self._check_gossip(env, offset, tree, older)
            if env.header.epoch not in keys:
                raise ProofError(f"op at offset {offset} uses an epoch this device has no key for")
            applied.append((env, _edit_body(parts, space_id, env, offset,
                                            open_op(env, keys[env.header.epoch]))))
        if dry:
            return dict(chains.heads)
        report.pulled += len(fetched)
        for author, seen in older:
            await self._check_older_gossip(space_id, tree, author, seen)
        # Everything verified: apply and persist in one local transaction.
        remote: list[tuple[OpEnvelope, dict[str, object]]] = []
        self._applying = True
        try:
            if snap is not None:
                self.provenance.applying(None)  # records of a snapshot: carrier unknown
                for name, doc_state in snap.docs.items():
                    try:
                        self._apply_update(self.doc(space_id, name), doc_state, name,
                                           report.app_errors)
                    except ValueError as exc:  # not a Yjs update: its author wrote it so
                        raise _UnreadableSnapshot(snap, str(exc)) from None
                report.snapshots_loaded += 1
            for env, body in applied:
                if body is None:
                    continue  # a part of an edit whose last part is not logged yet
                if env.header.author == self.device_id and self.store.get(
                        "sent", space_id + _u64(env.header.seq)) == env.op_id:
                    continue  # made here: already applied locally
                name = str(body.get("n", ""))
                doc = self.doc(space_id, name)
                self.provenance.applying(env.header.author, doc, body.get("u", []))  # type: ignore[arg-type]
                for update in body.get("u", []):  # type: ignore[attr-defined]
                    self._apply_update(doc, update, name, report.app_errors)
                remote.append((env, body))
                report.applied += 1
        finally:
            self._applying = False
            self.provenance.applied()
        own = [env for env, _ in applied if env.header.author == self.device_id]
        with self.store.batch() as b:
            if own:
                # The log holds ops of this device that this copy did not make (it
                # was restored from an older copy): adopt the log's chain head.
                last = max(own, key=lambda e: e.header.seq)
                mine = self.store.get("mine", space_id)
                if mine is None or int(_as_list(mine)[0]) <= last.header.seq:
                    b.put("mine", space_id, encode([last.header.seq, last.op_id]))
                for env in own:
                    b.put("sent", space_id + _u64(env.header.seq), env.op_id)
            parts.commit(b)
            if snap is not None:
                b.put("base", space_id, encode([snap.size, list(snap.frontier)]))
                b.put("snapmark", space_id, encode(snap.size))
                # Until a trusted device other than its author corroborates it,
                # this state rests on the author's word (18.7).
                b.put("snapbase", space_id, encode({"id": snap.id, "author": snap.author,
                                                    "size": snap.size, **(basis or {})}))
                for name, doc_state in snap.docs.items():
                    self._write_state(b, space_id, doc_id_for(space_id, name), name, doc_state)
            for offset, leaf, raw in fetched:
                b.put("leaf", space_id + _u64(offset), leaf)
                if raw is not None:
                    b.put("op", space_id + _u64(offset), raw)
            for k in report.skipped:  # not applied: a replay of the log skips them too
                b.put("skipped", space_id + _u64(k.offset), encode(k.code))
            for author, ch in chains.heads.items():
                b.put("chain", space_id + author, encode([ch.seq, ch.op_id, ch.deps.encoded()]))
            seen_ms: dict[bytes, int] = {}
            for env, _ in applied:
                a = env.header.author
                seen_ms[a] = max(seen_ms.get(a, 0), env.header.ts.wall_ms)
            for author, ms in seen_ms.items():
                old_ms = self.store.get("lastseen", author)
                if old_ms is None or _as_int(old_ms) < ms:
                    b.put("lastseen", author, encode(ms))
            b.put("head", space_id, head.raw)
            self.provenance.persist(b)
            self._seen_cache[space_id] = TreeHeadRef(head.size, head.root) if head.size else None
            # Pulled updates are appended (O(op), not O(document)) and folded
            # into the stored pieces by _compact_docs.
            for env, body in remote:
                b.put("docrem", space_id + env.header.doc + env.op_id, encode(body["u"]))
            # Every logged document is known by name (own ones too), so that a
            # snapshot, which holds exactly the logged state, finds them all.
            named: set[bytes] = set()
            for env, body in applied:
                if body is None:
                    continue  # a part of an edit that is not complete yet
                doc_key = space_id + env.header.doc
                if env.header.doc not in named and self.store.get("doc", doc_key) is None:
                    b.put("doc", doc_key, encode({"name": str(body["n"]), "pieces": 0,
                                                  "size": 0}))
                named.add(env.header.doc)
            meta = self._docs.get((space_id, doc_id_for(space_id, "_meta")))
            if meta is not None:
                space_name = meta.get("meta", type=pycrdt.Map).get("name")
                if isinstance(space_name, str) and space_name:
                    b.put("space", space_id, encode(space_name))
        self._trees[space_id] = tree  # only after the leaves were committed
        self.events.remote_applied(space_id, (  # events hook: applied and stored
            (str(body["n"]), env.header.author, body["u"]) for env, body in remote))  # type: ignore[misc]
        report.tree_size[space_id] = head.size
        if snap is not None:  # its verdicts were just read: the next look can wait
            self._checked_at[space_id] = head.size
        return None

    async def _registry_covering(self, envs: list[OpEnvelope | bytes | None]
                                 ) -> reg.RegistryState:
        # Each op names the registry seq its author had verified (header.reg): this
        # device needs at least that much of the registry to judge it. A relay
        # that serves such ops but not the entries is withholding the registry.
        state = self.registry()
        wanted = max((e.header.reg for e in envs
                      if isinstance(e, OpEnvelope) and e.header.reg is not None), default=-1)
        if wanted <= state.seq:
            return state
        state = await self.refresh_registry()
        if wanted > state.seq:
            raise ProofError(f"an op was written after registry entry {wanted}, but the relay "
                             f"serves the registry only up to entry {state.seq}: it is "
                             "withholding registry entries (a revocation?) from this device",
                             Code.REGISTRY_WITHHELD)
        return state

    def _check_gossip(self, env: OpEnvelope, offset: int, tree: merkle.MerkleTree,
                      older: list[tuple[bytes, TreeHeadRef]]) -> None:
        # Fork consistency (THREATS #12): a tree head another device verified
        # must be a prefix of the log this device verified. An op is written
        # after its author verified `seen`, so an honest relay places it at an
        # offset >= seen.size: an op placed earlier means the relay showed its
        # author a log this device was not shown (ops hidden from this device).
        seen = env.header.seen
        if seen is None or env.header.author == self.device_id:
            return
        if seen.size > offset:
            raise ProofError(f"device {env.header.author.hex()[:12]} had verified {seen.size} "
                             f"entries of this space before writing the op this relay put at "
                             f"offset {offset}: the relay is hiding entries from this device "
                             "(split view)", Code.SPLIT_VIEW)
        if seen.size < tree.base:
            older.append((env.header.author, seen))  # checked with a proof from the relay
            return
        if seen.size <= tree.size and tree.root(seen.size) != seen.root:
            raise ProofError(f"device {env.header.author.hex()[:12]} saw a different history "
                             f"of this space at size {seen.size}: the relay is showing devices "
                             "different logs (split view)", Code.SPLIT_VIEW)


    async def _check_older_gossip(self, space_id: bytes, tree: merkle.MerkleTree,
                                  author: bytes, seen: TreeHeadRef) -> None:
        # This device knows the history before its snapshot only as a frontier,
        # so a tree head gossiped about that history is checked with a
        # consistency proof from seen.size to the snapshot's size.
        if (seen.size, seen.root) in self._gossip_ok:
            return
        proof, head_raw = await self.relay.consistency_proof(space_id, seen.size, tree.base)
        head = verify_tree_head(head_raw, self._relay_key(), log=space_id)
        try:
            if head.size != tree.base or head.root != tree.root(tree.base):
                raise ProofError("the relay's head at the snapshot's size is not the snapshot's")
            merkle.verify_consistency(seen.size, tree.base, seen.root, head.root, proof)
        except ProofError as exc:
            raise ProofError(f"device {author.hex()[:12]} saw a history of this space at size "
                             f"{seen.size} that is not a prefix of this device's: the relay is "
                             f"showing devices different logs (split view; {exc.message})",
                             Code.SPLIT_VIEW) from exc
        self._gossip_ok.add((seen.size, seen.root))


def _beyond_cutoff(raw: bytes, offset: int, exc: SddsfError,
                   state: reg.RegistryState) -> SkippedOp | None:
    """A refusal that must not make the whole log unreadable: an op of a revoked
    device beyond its cutoff (the relay stored it after the revocation, by a bug
    or on purpose). Every device skips exactly these ops, so all converge."""
    if exc.code is not Code.REVOKED:
        return None
    h = decode_envelope(raw).header
    rec = state.device(h.author)
    if rec is None or rec.revoked_seq is None or h.seq <= rec.cutoff.get(h.space, 0):
        return None
    return SkippedOp(offset, h.author, h.seq, Code.REVOKED.value,
                     f"op {h.seq} of revoked device {rec.name!r} is beyond its revocation "
                     f"cutoff ({rec.cutoff.get(h.space, 0)}); not applied")


class _EditRefused(UsageError):
    """An edit too large to sync (see :meth:`Device.flush`)."""


def _edit_body(parts: PartsReader, space_id: bytes, env: OpEnvelope, offset: int,
               plaintext: bytes) -> dict[str, object] | None:
    # The edit an op completes ({"n", "u"}), or None for a part that does not
    # complete one yet (section 8.11).
    try:
        payload = decode_payload(plaintext)
        edit = parts.feed(env.header.author, env.header.seq, env.header.doc, payload)
    except SddsfError as exc:
        raise ProofError(f"op at offset {offset} has a malformed payload: {exc.message}"
                         ) from exc
    if edit is None:
        return None
    if doc_id_for(space_id, edit.name) != env.header.doc:
        raise ProofError(f"op at offset {offset} has a malformed payload: its document name "
                         "does not match its document id")
    return {"n": edit.name, "u": list(edit.updates)}


def _keep_parted_edit(b: StoreBatch, space_id: bytes, first_part: bytes, last_seq: int,
                      name: str, updates: list[bytes]) -> None:
    # A multi-part edit is kept whole until its last part is logged, so that a
    # refusal of any part re-queues the whole edit (Device._requeue).
    part = decode_payload(first_part)
    assert isinstance(part, Part)  # noqa: S101 - split_edit made it
    b.put("edit", space_id + part.digest, encode([last_seq, name]))
    b.put("editdata", space_id + part.digest, encode_edit(name, updates))


def _parted_edits(store: LocalStore, space_id: bytes) -> dict[bytes, bytes]:
    """``pending`` key of each kept edit's last part -> the ``edit`` row's key."""
    return {space_id + _u64(int(_as_list(value)[0])): key
            for key, value in store.scan("edit", space_id)}


def _upload_batches(rows: list[tuple[bytes, bytes]], limits: RelayLimits
                    ) -> Iterator[tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]]:
    """Pending rows in uploads that each fit one request, in order: ``(batch, [])``;
    from the first op that cannot fit even alone, ``([], it and every later one)``."""
    batch: list[tuple[bytes, bytes]] = []
    sizes: list[int] = []
    for i, (key, env) in enumerate(rows):
        if not limits.request_fits([len(env)]):
            if batch:
                yield batch, []
            yield [], rows[i:]
            return
        if len(batch) >= _MAX_BATCH or not limits.request_fits([*sizes, len(env)]):
            yield batch, []
            batch, sizes = [], []
        batch.append((key, env))
        sizes.append(len(env))
    if batch:
        yield batch, []


async def _bounded(calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run request-making calls with at most _CHUNK_REQUESTS in flight; results in order."""
    gate = asyncio.Semaphore(_CHUNK_REQUESTS)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()
    return list(await asyncio.gather(*(one(c) for c in calls)))


class _NoKey(Exception):  # an internal signal: never escapes Device
    """This device has no key for a stored op's epoch."""


class _UnreadableSnapshot(Exception):  # an internal signal: never escapes _pull
    """A verified snapshot whose documents are not Yjs updates."""

    def __init__(self, snap: Snapshot, why: str) -> None:
        super().__init__(why)
        self.snap = snap
        self.why = why


@dataclass
class _Verdicts:
    """Verified attestations of one snapshot (by devices other than its author)."""

    match: bool = False  # some device attested ``match``
    matchers: list[bytes] = field(default_factory=list)  # trusted ones that did
    dissent: list[bytes] = field(default_factory=list)  # trusted devices: ``mismatch``


def _normalised(state: bytes) -> bytes:
    # Equal Yjs stores encode differently depending on how their blocks were
    # merged; loading each into a fresh document first gives one encoding
    # (an empty document's for b"").
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    if state:
        doc.apply_update(state)
    return doc.get_update()


def _same_states(a: dict[str, bytes], b: dict[str, bytes]) -> bool:
    """Whether two sets of documents hold the same Yjs stores (a missing one is empty)."""
    return all(_normalised(a.get(n, b"")) == _normalised(b.get(n, b"")) for n in set(a) | set(b))


def leaves_at(tree: merkle.MerkleTree, offset: int) -> bytes:
    """The leaf hash at ``offset`` (a perfect node of level 0)."""
    return tree.hash_range(offset, offset + 1)


def _decoded_or_raw(raw: bytes | None) -> OpEnvelope | bytes | None:
    # Decoded once for the registry check; a decoding failure is reported by the
    # rules, in order, when they get the raw bytes.
    if raw is None:
        return None
    try:
        return decode_envelope(raw)
    except SddsfError:
        return raw


def _previous_keys(known: dict[int, bytes], last: kp.KeyPackage) -> list[bytes]:
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


def _as_dict(raw: bytes) -> dict[str, Any]:
    value = decode(raw)
    if not isinstance(value, dict):
        raise DecodeError("a device store record is malformed (expected a map)")
    return {str(k): v for k, v in value.items()}


def _as_list(raw: bytes) -> list[Any]:
    value = decode(raw)
    if not isinstance(value, list):
        raise DecodeError("a device store record is malformed (expected an array)")
    return value


def _as_local_dict(raw: bytes) -> dict[str, Any]:
    # A row this device wrote (authenticated by the storage key): not bound by
    # the wire's 1 MiB limit, so a document state of any size decodes.
    value = decode(raw, limits=_LOCAL_LIMITS)
    if not isinstance(value, dict):
        raise DecodeError("a device store record is malformed (expected a map)")
    return {str(k): v for k, v in value.items()}


def _as_local_list(raw: bytes) -> list[Any]:
    value = decode(raw, limits=_LOCAL_LIMITS)
    if not isinstance(value, list):
        raise DecodeError("a device store record is malformed (expected an array)")
    return value


def _as_int(raw: bytes) -> int:
    value = decode(raw)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError("a device store record is malformed (expected an integer)")
    return value


def _chain_head(raw: bytes) -> ChainHead:
    seq, op_id, deps = _as_list(raw)
    return ChainHead(int(seq), bytes(op_id),
                     VersionVector.from_wire(decode(deps), what="deps", id_size=ID_SIZE,
                                             max_entries=1 << 16))


def store_kind(home: Path) -> str:
    """The storage key kind recorded in a home."""
    import json  # noqa: PLC0415

    return str(json.loads((home / "storage-key.json").read_text())["kind"])
