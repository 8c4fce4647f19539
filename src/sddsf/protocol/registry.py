"""The device registry: the account's signed, hash-chained sigchain.

Wire form of one entry (canonical CBOR)::

    entry = [version, body_bytes, sigs]
    sigs  = {"by": signature} | {"by": signature, "new": countersignature}
    body  = {"v", "account", "seq", "prev", "type", "ts", "signer", ...type fields}

    genesis: "account_key", "recovery_key", "device"   signer = account id (account key)
    add:     "device"                                   signer = active device or account
    revoke:  "target", "reason", "cutoff"               signer = active device or account
    policy:  "policy"                                   signer = active device or account
    recover: "device", "revoke"                         signer = account id (account key)
    propose: "action"                                   signer = active device
    approve: "proposal"                                 signer = active device
    veto:    "proposal", "reason"                       signer = active device or account
    enact:   "proposal", "cutoff"                       signer = active device or account
    cutoff = [[space_id, seq], ...]   per space, the target's last op that stays valid
    revoke = [[device_id, cutoff], ...]
    device = {"sign": Ed25519 pk, "kx": X25519 pk, "name": text}

``"by"`` signs ``labelled(REGISTRY_SIG, body_bytes)``; entries that introduce a
device (genesis, add, recover, and a proposal to add one) carry ``"new"``, the
new device's signature over ``labelled(REGISTRY_COSIG, body_bytes)``, proving it
holds the key. ``seq``
starts at 0 (genesis); ``prev`` is the previous entry's hash
``tagged_hash(REGISTRY_ENTRY, entry_bytes)`` (zeros for genesis).

Every device and the relay verify the chain from genesis against the pinned
account key (:func:`verify_registry`); a gap, a fork, an unauthorised signer, a
re-added or low-order key is a :class:`~sddsf.errors.RegistryError` (or
``bad_key`` / ``sig_invalid``). When the policy requires approval, device
changes go through proposals (:mod:`sddsf.protocol.approval`).

Size: the sigchain is one state machine: the entry format, the per-type
authorisation rules and the verifier share the state they check, and splitting
them would scatter the rules that must be read together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final, Protocol

from sddsf.crypto import Ed25519PublicKey
from sddsf.errors import (
    AuthorizationError,
    Code,
    DecodeError,
    RegistryError,
    SignatureError,
    UsageError,
)
from sddsf.protocol import approval, labels
from sddsf.protocol.approval import Proposal
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import ID_SIZE, AccountKeys, AccountPublic, DeviceKeys, DevicePublic
from sddsf.protocol.labels import labelled, tagged_hash
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.schema import Fields, check_version, expect_map, version_of_map

__all__ = [
    "APPROVAL_TYPES",
    "REGISTRY_VERSION",
    "DeviceRecord",
    "DeviceStatus",
    "EntryType",
    "RegistryEntry",
    "RegistryState",
    "Signer",
    "add_device",
    "approve",
    "assemble_entry",
    "build_body",
    "countersign_body",
    "cutoff_field",
    "decode_entry",
    "device_fields",
    "enact",
    "entry_hash",
    "genesis",
    "propose",
    "recover",
    "revoke_device",
    "set_policy",
    "sign_body",
    "verify_registry",
    "veto",
]

REGISTRY_VERSION: Final = 1
_ZERO: Final = bytes(32)
_COMMON: Final = ("v", "account", "seq", "prev", "type", "ts", "signer")


class EntryType(StrEnum):
    """Kinds of registry entry."""

    GENESIS = "genesis"
    ADD = "add"
    REVOKE = "revoke"
    POLICY = "policy"
    RECOVER = "recover"
    PROPOSE = "propose"
    APPROVE = "approve"
    VETO = "veto"
    ENACT = "enact"


_TYPE_FIELDS: Final[dict[EntryType, tuple[str, ...]]] = {
    EntryType.GENESIS: ("account_key", "recovery_key", "device"),
    EntryType.ADD: ("device",),
    EntryType.REVOKE: ("target", "reason", "cutoff"),
    EntryType.POLICY: ("policy",),
    EntryType.RECOVER: ("device", "revoke"),
    EntryType.PROPOSE: ("action",),
    EntryType.APPROVE: ("proposal",),
    EntryType.VETO: ("proposal", "reason"),
    EntryType.ENACT: ("proposal", "cutoff"),
}
_INTRODUCES_DEVICE: Final = frozenset({EntryType.GENESIS, EntryType.ADD, EntryType.RECOVER})
_ACCOUNT_ONLY: Final = frozenset({EntryType.GENESIS, EntryType.RECOVER})
# Direct device changes; a device may not sign them while the policy governs them.
_GOVERNED: Final = frozenset({EntryType.ADD, EntryType.REVOKE, EntryType.POLICY})
APPROVAL_TYPES: Final = frozenset({EntryType.PROPOSE, EntryType.APPROVE, EntryType.VETO,
                                   EntryType.ENACT})


class DeviceStatus(StrEnum):
    """Whether a device may act for the account."""

    ACTIVE = "active"
    REVOKED = "revoked"


class Signer(Protocol):
    """Anything that signs: :class:`DeviceKeys` or :class:`AccountKeys`."""

    def sign(self, message: bytes) -> bytes:
        """Detached Ed25519 signature."""
        ...


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What the registry knows about one device."""

    public: DevicePublic
    name: str
    status: DeviceStatus
    added_by: bytes
    added_seq: int
    added_ts: int
    revoked_seq: int | None = None
    revoked_by: bytes | None = None
    # Per space: the last seq of this device that stays valid history after its
    # revocation (ops with a higher seq are refused everywhere, whenever seen).
    cutoff: Mapping[bytes, int] = field(default_factory=dict)

    @property
    def device_id(self) -> bytes:
        """The device id."""
        return self.public.device_id


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One decoded (not yet verified) entry."""

    type: EntryType
    account: bytes
    seq: int
    prev: bytes
    ts: int
    signer: bytes
    fields: Fields
    body_bytes: bytes
    signature: bytes
    countersignature: bytes | None
    raw: bytes
    hash: bytes


def entry_hash(entry_bytes: bytes) -> bytes:
    """The hash that links the next entry (``prev``) to this one."""
    return tagged_hash(labels.REGISTRY_ENTRY, entry_bytes)


def decode_entry(data: bytes, *,
                 limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> RegistryEntry:
    """Decode one entry's structure (signatures are checked by :meth:`RegistryState.apply`).

    Raises:
        DecodeError: malformed, too large or an unsupported version.
    """
    if len(data) > limits.max_registry_entry:
        raise DecodeError(f"registry entry of {len(data)} bytes exceeds the limit of "
                          f"{limits.max_registry_entry}", Code.TOO_LARGE)
    outer = decode(data, limits=limits.decode_limits(limits.max_registry_entry))
    if not isinstance(outer, list) or len(outer) != 3:
        raise DecodeError("registry entry: expected [version, body, signatures]")
    version, body_bytes, sigs = outer
    check_version(version, REGISTRY_VERSION, "registry entry")
    if not isinstance(body_bytes, bytes):
        raise DecodeError("registry entry: body must be a byte string")
    s = expect_map(sigs, "registry entry signatures", ("by",), ("new",))
    signature = s.bytes_("by", size=64)
    cosig = s.bytes_("new", size=64) if s.has("new") else None
    body = decode(body_bytes, limits=limits.decode_limits(limits.max_registry_entry))
    version_of_map(body, REGISTRY_VERSION, "registry entry body")
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise DecodeError("registry entry body: expected a map with a text 'type'")
    try:
        etype = EntryType(body["type"])
    except ValueError:
        raise DecodeError(f"registry entry type {body['type']!r} is unknown",
                          Code.UNSUPPORTED_VERSION) from None
    f = expect_map(body, f"registry {etype.value} entry", _COMMON + _TYPE_FIELDS[etype])
    introduces = etype in _INTRODUCES_DEVICE or (
        etype is EntryType.PROPOSE
        and approval.action_type_of(f.raw("action")) is approval.ActionType.ADD)
    if (cosig is None) == introduces:
        raise DecodeError(f"registry {etype.value} entry: a countersignature is "
                          f"{'required' if introduces else 'not allowed'}")
    raw = bytes(data)
    return RegistryEntry(etype, f.bytes_("account", size=ID_SIZE), f.int_("seq"),
                         f.bytes_("prev", size=32), f.int_("ts"),
                         f.bytes_("signer", size=ID_SIZE), f, body_bytes, signature, cosig,
                         raw, entry_hash(raw))


def _cutoff_of(value: object, what: str) -> dict[bytes, int]:
    # [[space_id, seq], ...] sorted by space id, unique, seq >= 1: one encoding.
    if not isinstance(value, list) or len(value) > 65_536:
        raise DecodeError(f"{what}: expected an array of [space id, seq] pairs")
    cutoff: dict[bytes, int] = {}
    previous = b""
    for item in value:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes)
                or len(item[0]) != 16 or isinstance(item[1], bool)
                or not isinstance(item[1], int) or item[1] < 1):
            raise DecodeError(f"{what}: each entry is [16-byte space id, seq >= 1]")
        if item[0] <= previous:
            raise DecodeError(f"{what}: entries must be sorted by space id, without repeats")
        previous = item[0]
        cutoff[item[0]] = item[1]
    return cutoff


def cutoff_field(cutoff: Mapping[bytes, int]) -> list[list[object]]:
    """Wire form of a revocation cutoff: ``[[space_id, last valid seq], ...]``."""
    return [[space, seq] for space, seq in sorted(cutoff.items()) if seq > 0]


@dataclass(frozen=True, slots=True)
class RegistryState:
    """The verified registry after applying entries ``0..seq``.

    Instances are immutable: :meth:`apply` returns a new state.
    """

    account: AccountPublic
    devices: Mapping[bytes, DeviceRecord]
    policy: Mapping[str, object]
    seq: int
    head: bytes
    entry_hashes: tuple[bytes, ...]
    limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS
    # Every proposal ever made (pending, vetoed or enacted), by proposal id.
    proposals: Mapping[bytes, Proposal] = field(default_factory=dict)
    last_ts: int = 0  # the largest entry ts so far (approval entries may not go back)
    #: Registry seqs of every revocation, ascending (one per revoked device).
    revoked_seqs: tuple[int, ...] = ()
    #: Dates of the last ``limits.max_adds_per_window`` device-signed introductions.
    recent_adds: tuple[int, ...] = ()

    @property
    def account_id(self) -> bytes:
        """The account id."""
        return self.account.account_id

    def device(self, device_id: bytes) -> DeviceRecord | None:
        """The record of ``device_id``, or None if the registry never had it."""
        return self.devices.get(device_id)

    def is_active(self, device_id: bytes) -> bool:
        """Whether ``device_id`` is a registered, non-revoked device."""
        rec = self.devices.get(device_id)
        return rec is not None and rec.status is DeviceStatus.ACTIVE

    def revoked_between(self, after: int, up_to: int) -> bool:
        """Whether some device was revoked at a registry seq ``r`` with
        ``after < r <= up_to`` (e.g. after a key package was made)."""
        seqs = self.revoked_seqs
        lo, hi = 0, len(seqs)
        while lo < hi:  # the first revocation after ``after`` (seqs ascend)
            mid = (lo + hi) // 2
            if seqs[mid] <= after:
                lo = mid + 1
            else:
                hi = mid
        return lo < len(seqs) and seqs[lo] <= up_to

    def active_devices(self) -> list[DeviceRecord]:
        """Active devices, in the order they were added."""
        return sorted((r for r in self.devices.values() if r.status is DeviceStatus.ACTIVE),
                      key=lambda r: r.added_seq)

    def rules(self) -> approval.ApprovalRules:
        """The policy's approval settings."""
        return approval.rules_of(self.policy)

    def open_proposals(self, now_ms: int) -> list[Proposal]:
        """Proposals still pending and not expired at ``now_ms``, oldest first."""
        return sorted((p for p in self.proposals.values() if p.open_at(now_ms)),
                      key=lambda p: p.seq)

    def signer_key(self, signer: bytes) -> Ed25519PublicKey | None:
        """Key of an identity allowed to sign entries: the account or an active device."""
        if signer == self.account_id:
            return self.account.signing_key
        rec = self.devices.get(signer)
        if rec is None or rec.status is not DeviceStatus.ACTIVE:
            return None
        return rec.public.signing_key

    def apply(self, data: bytes | RegistryEntry) -> RegistryState:
        """Verify the next entry against this state and return the new state.

        Re-applying an entry already in the chain returns ``self`` unchanged
        (idempotent). A fork is reported only for a correctly signed entry, so
        forged bytes never become evidence against a device. Raises:
            RegistryError: ``registry_fork`` (another signed entry at a known seq,
                or one that links elsewhere), ``registry_invalid`` (gap, ...).
            AuthorizationError: ``not_authorized`` (the signer may not sign this).
            SignatureError: a signature or countersignature does not verify.
            KeyValidationError: a new device key is low-order or non-canonical.
        """
        e = data if isinstance(data, RegistryEntry) else decode_entry(data, limits=self.limits)
        if e.seq <= self.seq and self.entry_hashes[e.seq] == e.hash:
            return self
        if e.seq > self.seq + 1:
            raise RegistryError(f"registry gap: expected seq {self.seq + 1}, got {e.seq}")
        if e.seq <= self.seq or e.prev != self.head:
            self._check_fork_evidence(e)
            raise RegistryError(f"registry fork: entry {e.seq} conflicts with the verified "
                                "chain", Code.REGISTRY_FORK)
        if e.account != self.account_id:
            raise RegistryError("registry entry belongs to another account")
        if e.type is EntryType.GENESIS:
            raise RegistryError("a second genesis entry is not allowed")
        if e.type in _ACCOUNT_ONLY and e.signer != self.account_id:
            raise AuthorizationError(f"a {e.type.value} entry must be signed by the account key",
                                     Code.NOT_AUTHORIZED)
        key = self.signer_key(e.signer)
        if key is None:
            raise AuthorizationError("registry entry signer is not an active device of this "
                                     "account", Code.NOT_AUTHORIZED)
        key.verify(labelled(labels.REGISTRY_SIG, e.body_bytes), e.signature)
        if e.type in _GOVERNED and e.signer != self.account_id and self.rules().governed:
            raise AuthorizationError(
                f"this account's policy requires approval for device changes: a {e.type.value} "
                "must be proposed and approved (sddsf device approve), or signed with the "
                "account key", Code.NOT_AUTHORIZED)
        return self._applied(e)

    def _check_fork_evidence(self, e: RegistryEntry) -> None:
        # The signer may have been revoked since the fork point: any key this
        # account ever certified can sign evidence of its own equivocation.
        if e.account != self.account_id:
            raise RegistryError("registry entry belongs to another account")
        if e.signer == self.account_id:
            key = self.account.signing_key
        elif (rec := self.devices.get(e.signer)) is not None:
            key = rec.public.signing_key
        else:
            raise AuthorizationError("registry entry signer is not a device of this account",
                                     Code.NOT_AUTHORIZED)
        key.verify(labelled(labels.REGISTRY_SIG, e.body_bytes), e.signature)

    def _applied(self, e: RegistryEntry) -> RegistryState:
        devices = dict(self.devices)
        policy = self.policy
        proposals = self.proposals
        f = e.fields
        targets: list[tuple[bytes, dict[bytes, int]]] = []
        revoked_by = e.signer
        before = len(devices)
        if e.type in _INTRODUCES_DEVICE:
            public, name = approval.parse_device(f, self.limits)
            self._introduce(devices, public, name, e.signer, e)
            try:
                public.signing_key.verify(labelled(labels.REGISTRY_COSIG, e.body_bytes),
                                          e.countersignature or b"")
            except SignatureError:
                raise SignatureError("new device's countersignature does not verify") from None
        if e.type is EntryType.REVOKE:
            f.str_("reason", max_len=256)
            targets = [(f.bytes_("target", size=ID_SIZE),
                        _cutoff_of(f.raw("cutoff"), "registry revoke entry.cutoff"))]
        elif e.type is EntryType.RECOVER:
            targets = _recover_targets(f, self.limits)
        elif e.type is EntryType.POLICY:
            policy = approval.parse_policy(f)
        elif e.type in APPROVAL_TYPES:
            proposals, enacted = approval.step(self, e)
            cutoff = _cutoff_of(f.raw("cutoff"), "registry enact entry.cutoff") \
                if e.type is EntryType.ENACT else {}
            if enacted is not None:
                policy, targets = self._carry_out(enacted, cutoff, devices, e)
                revoked_by = enacted.proposer
        for target, cut in targets:
            rec = devices.get(target)
            if rec is None or rec.status is not DeviceStatus.ACTIVE:
                raise RegistryError("revocation target is not an active device")
            devices[target] = replace(rec, status=DeviceStatus.REVOKED, revoked_seq=e.seq,
                                      revoked_by=revoked_by, cutoff=cut)
        recent = self.recent_adds
        if len(devices) > before and e.signer != self.account_id:
            recent = (*recent, e.ts)[-self.limits.max_adds_per_window:]
        return RegistryState(self.account, devices, policy, e.seq, e.hash,
                             (*self.entry_hashes, e.hash), self.limits, proposals,
                             max(self.last_ts, e.ts),
                             (*self.revoked_seqs, *(e.seq for _ in targets)), recent)

    def _introduce(self, devices: dict[bytes, DeviceRecord], public: DevicePublic, name: str,
                   added_by: bytes, e: RegistryEntry) -> None:
        if public.device_id in devices:
            raise RegistryError("device is already in the registry (a revoked device "
                                "cannot be re-added; pair it again with new keys)")
        self._check_device_caps(devices, e)
        devices[public.device_id] = DeviceRecord(public, name, DeviceStatus.ACTIVE,
                                                 added_by, e.seq, e.ts)

    def _check_device_caps(self, devices: Mapping[bytes, DeviceRecord],
                           e: RegistryEntry) -> None:
        # The account key may always introduce a device while fewer than
        # max_devices are active (recovery must work whatever a device did);
        # devices leave it that last slot and are bounded in number and rate.
        lim = self.limits
        active = sum(r.status is DeviceStatus.ACTIVE for r in devices.values())
        by_account = e.signer == self.account_id
        if active >= lim.max_devices - (0 if by_account else 1):
            raise RegistryError(
                f"account already has {active} active devices (limit {lim.max_devices}, the "
                "last one kept for the account key): revoke devices first"
                + ("" if by_account else ", or recover with the account secret"))
        if by_account:
            return
        if len(devices) >= lim.max_device_records:
            raise RegistryError(f"devices have introduced {len(devices)} devices to this "
                                f"account (limit {lim.max_device_records}); only the account "
                                "key may add more")
        recent = self.recent_adds
        if len(recent) >= lim.max_adds_per_window and all(
                abs(e.ts - ts) < lim.add_window_ms for ts in recent):
            raise RegistryError(
                f"devices already added {len(recent)} devices within "
                f"{lim.add_window_ms // 3_600_000} h of this entry's date (limit "
                f"{lim.max_adds_per_window}); wait, or add it with the account key")

    def _carry_out(self, p: Proposal, cutoff: dict[bytes, int],
                   devices: dict[bytes, DeviceRecord], e: RegistryEntry
                   ) -> tuple[Mapping[str, object], list[tuple[bytes, dict[bytes, int]]]]:
        # An enacted proposal has the effect of the direct entry, at the enact
        # entry's seq; the cutoff (the enactor's view) matters only for revoke.
        a = p.action
        if cutoff and a.type is not approval.ActionType.REVOKE:
            raise DecodeError("registry enact entry: a cutoff only goes with a revocation")
        if a.type is approval.ActionType.ADD and a.device is not None:
            self._introduce(devices, a.device, a.name, p.proposer, e)
        if a.type is approval.ActionType.REVOKE and a.target is not None:
            return self.policy, [(a.target, cutoff)]
        if a.type is approval.ActionType.POLICY and a.policy is not None:
            return a.policy, []
        return self.policy, []


def _recover_targets(f: Fields, limits: ProtocolLimits) -> list[tuple[bytes, dict[bytes, int]]]:
    targets: list[tuple[bytes, dict[bytes, int]]] = []
    for t in f.list_("revoke", max_items=limits.max_devices):
        if (not isinstance(t, list) or len(t) != 2 or not isinstance(t[0], bytes)
                or len(t[0]) != ID_SIZE):
            raise DecodeError("registry recover entry: revoke lists "
                              "[32-byte device id, cutoff] pairs")
        targets.append((t[0], _cutoff_of(t[1], "registry recover entry.revoke")))
    if len({t for t, _ in targets}) != len(targets):
        raise RegistryError("registry recover entry lists a device twice")
    return targets


def _genesis_state(e: RegistryEntry, pinned: AccountPublic | None,
                   limits: ProtocolLimits) -> RegistryState:
    if e.type is not EntryType.GENESIS or e.seq != 0 or e.prev != _ZERO:
        raise RegistryError("the registry must start with a genesis entry at seq 0")
    f = e.fields
    account = AccountPublic.from_keys(f.bytes_("account_key", size=32),
                                      f.bytes_("recovery_key", size=32))
    if pinned is not None and (account.signing_key != pinned.signing_key
                               or account.recovery_key != pinned.recovery_key):
        raise AuthorizationError("genesis names another account key than the pinned one; "
                                 "this registry does not belong to your account",
                                 Code.NOT_AUTHORIZED)
    if e.account != account.account_id or e.signer != account.account_id:
        raise RegistryError("genesis must be signed by the account key it introduces")
    account.signing_key.verify(labelled(labels.REGISTRY_SIG, e.body_bytes), e.signature)
    before_genesis = RegistryState(account, {}, {}, -1, _ZERO, (), limits, {}, e.ts, (), ())
    return before_genesis._applied(e)


def verify_registry(entries: Sequence[bytes], *, pinned: AccountPublic | None,
                    limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> RegistryState:
    """Verify a whole registry from genesis.

    Args:
        entries: entry bytes in seq order, starting with genesis.
        pinned: the account key this device trusts; ``None`` only on first
            contact (trust on first use: the caller must then pin the result's
            ``account`` and show its fingerprint to the person).

    Raises:
        RegistryError, SignatureError, KeyValidationError, DecodeError.
    """
    if not entries:
        raise RegistryError("the registry is empty (no genesis entry)")
    state = _genesis_state(decode_entry(entries[0], limits=limits), pinned, limits)
    for data in entries[1:]:
        state = state.apply(data)
    return state


def build_body(etype: EntryType, *, account_id: bytes, seq: int, prev: bytes, ts_ms: int,
               signer_id: bytes, fields: Mapping[str, object]) -> bytes:
    """Canonical body bytes of a new entry (sign them with :func:`assemble_entry`).

    Raises:
        UsageError: ``fields`` do not match the entry type.
    """
    if set(fields) != set(_TYPE_FIELDS[etype]):
        raise UsageError(f"a {etype.value} entry takes fields {_TYPE_FIELDS[etype]}")
    body: dict[str, object] = {"v": REGISTRY_VERSION, "account": account_id, "seq": seq,
                               "prev": prev, "type": etype.value, "ts": ts_ms,
                               "signer": signer_id}
    body.update(fields)
    return encode(body)


def device_fields(public: DevicePublic, name: str) -> dict[str, object]:
    """The ``device`` field for genesis, add and recover entries."""
    return {"sign": public.signing_key.raw, "kx": public.kx_key, "name": name}


def sign_body(body_bytes: bytes, signer: Signer) -> bytes:
    """The ``by`` signature over a body."""
    return signer.sign(labelled(labels.REGISTRY_SIG, body_bytes))


def countersign_body(body_bytes: bytes, new_device: Signer) -> bytes:
    """The new device's ``new`` countersignature over a body."""
    return new_device.sign(labelled(labels.REGISTRY_COSIG, body_bytes))


def assemble_entry(body_bytes: bytes, signature: bytes,
                   countersignature: bytes | None = None) -> bytes:
    """Entry bytes from a body and its signature(s)."""
    sigs: dict[str, object] = {"by": signature}
    if countersignature is not None:
        sigs["new"] = countersignature
    return encode([REGISTRY_VERSION, body_bytes, sigs])


# ------------------------------------------------------------------ recipes
# Whole entries when every private key involved is at hand. Pairing (where the
# new device countersigns on its own machine) uses build_body/countersign_body/
# sign_body/assemble_entry directly.


def _signer_id(signer: DeviceKeys | AccountKeys) -> bytes:
    return signer.account_id if isinstance(signer, AccountKeys) else signer.device_id


def genesis(account: AccountKeys, first_device: DeviceKeys, name: str, ts_ms: int) -> bytes:
    """The genesis entry: the account key certifies the first device."""
    body = build_body(EntryType.GENESIS, account_id=account.account_id, seq=0, prev=_ZERO,
                      ts_ms=ts_ms, signer_id=account.account_id, fields={
                          "account_key": account.signing.public.raw,
                          "recovery_key": account.recovery.public,
                          "device": device_fields(first_device.public, name)})
    return assemble_entry(body, sign_body(body, account), countersign_body(body, first_device))


def _next(state: RegistryState, etype: EntryType, signer: DeviceKeys | AccountKeys,
          ts_ms: int, fields: Mapping[str, object]) -> bytes:
    return build_body(etype, account_id=state.account_id, seq=state.seq + 1, prev=state.head,
                      ts_ms=ts_ms, signer_id=_signer_id(signer), fields=fields)


def add_device(state: RegistryState, signer: DeviceKeys | AccountKeys, new_device: DeviceKeys,
               name: str, ts_ms: int) -> bytes:
    """An add-device entry signed by ``signer`` and countersigned by ``new_device``."""
    body = _next(state, EntryType.ADD, signer, ts_ms,
                 {"device": device_fields(new_device.public, name)})
    return assemble_entry(body, sign_body(body, signer), countersign_body(body, new_device))


def revoke_device(state: RegistryState, signer: DeviceKeys | AccountKeys, target: bytes,
                  reason: str, ts_ms: int, cutoff: Mapping[bytes, int] | None = None) -> bytes:
    """A revoke-device entry.

    Args:
        cutoff: per space, the target's last op seq that stays valid history
            (what the revoker has seen); later ops of the target are refused.
    """
    body = _next(state, EntryType.REVOKE, signer, ts_ms, {
        "target": target, "reason": reason, "cutoff": cutoff_field(cutoff or {})})
    return assemble_entry(body, sign_body(body, signer))


def set_policy(state: RegistryState, signer: DeviceKeys | AccountKeys,
               policy: Mapping[str, bool | int | str], ts_ms: int) -> bytes:
    """A set-policy entry (replaces the whole policy map)."""
    body = _next(state, EntryType.POLICY, signer, ts_ms, {"policy": dict(policy)})
    return assemble_entry(body, sign_body(body, signer))


def recover(state: RegistryState, account: AccountKeys, new_device: DeviceKeys,
            name: str, revoke: Sequence[bytes] | Mapping[bytes, Mapping[bytes, int]],
            ts_ms: int) -> bytes:
    """A recover entry: the account key certifies a new device, optionally revoking
    others (a mapping gives each revoked device's cutoff, see :func:`revoke_device`)."""
    cutoffs = revoke if isinstance(revoke, Mapping) else {d: {} for d in revoke}
    body = _next(state, EntryType.RECOVER, account, ts_ms, {
        "device": device_fields(new_device.public, name),
        "revoke": [[d, cutoff_field(c)] for d, c in cutoffs.items()]})
    return assemble_entry(body, sign_body(body, account), countersign_body(body, new_device))


def propose(state: RegistryState, signer: DeviceKeys, kind: approval.ActionType,
            fields: Mapping[str, object], ts_ms: int,
            new_device: DeviceKeys | None = None) -> bytes:
    """A proposal (governed accounts): ``fields`` as the direct entry's, except a
    revocation's cutoff, which the enacting device supplies. An add proposal is
    countersigned by ``new_device``."""
    body = _next(state, EntryType.PROPOSE, signer, max(ts_ms, state.last_ts),
                 {"action": approval.action_field(kind, fields)})
    cosig = countersign_body(body, new_device) if new_device is not None else None
    return assemble_entry(body, sign_body(body, signer), cosig)


def approve(state: RegistryState, signer: DeviceKeys, proposal: bytes, ts_ms: int) -> bytes:
    """An approval of ``proposal`` (its id, the propose entry's hash)."""
    body = _next(state, EntryType.APPROVE, signer, max(ts_ms, state.last_ts),
                 {"proposal": proposal})
    return assemble_entry(body, sign_body(body, signer))


def veto(state: RegistryState, signer: DeviceKeys | AccountKeys, proposal: bytes,
         reason: str, ts_ms: int) -> bytes:
    """A veto: ``proposal`` can no longer be enacted."""
    body = _next(state, EntryType.VETO, signer, max(ts_ms, state.last_ts),
                 {"proposal": proposal, "reason": reason})
    return assemble_entry(body, sign_body(body, signer))


def enact(state: RegistryState, signer: DeviceKeys | AccountKeys, proposal: bytes,
          ts_ms: int, cutoff: Mapping[bytes, int] | None = None) -> bytes:
    """Carry out an approved proposal whose veto window has passed (``cutoff``: for a
    revocation, as in :func:`revoke_device`)."""
    body = _next(state, EntryType.ENACT, signer, max(ts_ms, state.last_ts),
                 {"proposal": proposal, "cutoff": cutoff_field(cutoff or {})})
    return assemble_entry(body, sign_body(body, signer))
