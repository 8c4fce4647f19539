"""Space membership: who (which accounts, in which role) shares a space.

Wire form of one entry (canonical CBOR, ``docs/protocol.md`` section 21)::

    entry = [version, body_bytes, signature]
    body  = {"v", "space", "type", "prev", "member", "signer", "device",
             "registry_seq", "ts", ...type fields}

    create: "account_key", "recovery_key", "role"   member = signer (the owner), role admin
    add:    "account_key", "recovery_key", "role"   signer is an admin
    role:   "role"                                  signer is an admin
    remove: (none)                                  signer is an admin
    leave:  (none)                                  member = signer

``signature`` is the signer *device*'s Ed25519 signature over
``labelled(MEMBERSHIP_SIG, body_bytes)``; the device must be active in the
signer account's registry at ``registry_seq``. ``prev`` is the hash
(:func:`entry_hash`) of the newest entry the signer had applied (zeros for
``create``), so an entry only applies after what its signer saw.

Entries are applied in the order of the space's Merkle log (that order is
authoritative) by :meth:`MembershipState.apply`; an entry whose signer is not
allowed *at its position* is refused and changes nothing
(:func:`fold`). This module is pure: registries come in through a resolver
whose states the caller has verified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from sddsf.crypto import Ed25519PublicKey
from sddsf.errors import (
    AuthorizationError,
    Code,
    ContextError,
    DecodeError,
    MembershipError,
    SddsfError,
)
from sddsf.protocol import labels
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.envelope import SPACE_ID_SIZE
from sddsf.protocol.identity import ID_SIZE, AccountPublic, DeviceKeys
from sddsf.protocol.labels import labelled, tagged_hash
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.registry import RegistryState
from sddsf.protocol.schema import check_version, expect_map, version_of_map

__all__ = [
    "MAX_MEMBERSHIP_ENTRY",
    "MEMBERSHIP_VERSION",
    "EntryType",
    "FoldResult",
    "Member",
    "MembershipEntry",
    "MembershipState",
    "RegistryResolver",
    "Role",
    "add_member",
    "assemble_entry",
    "build_body",
    "can_read",
    "can_write",
    "change_role",
    "check_write",
    "create",
    "decode_entry",
    "entry_hash",
    "fold",
    "is_admin",
    "leave",
    "remove_member",
    "sign_body",
]

MEMBERSHIP_VERSION: Final = 1
#: Bytes of one encoded entry (the largest, ``add``, is about 400 bytes).
MAX_MEMBERSHIP_ENTRY: Final = 2048
_ZERO: Final = bytes(32)
_COMMON: Final = ("v", "space", "type", "prev", "member", "signer", "device", "registry_seq",
                  "ts")


class EntryType(StrEnum):
    """Kinds of membership entry."""

    CREATE = "create"
    ADD = "add"
    ROLE = "role"
    REMOVE = "remove"
    LEAVE = "leave"


class Role(StrEnum):
    """What a member may do: read; read and write; and change membership."""

    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"


_TYPE_FIELDS: Final[dict[EntryType, tuple[str, ...]]] = {
    EntryType.CREATE: ("account_key", "recovery_key", "role"),
    EntryType.ADD: ("account_key", "recovery_key", "role"),
    EntryType.ROLE: ("role",),
    EntryType.REMOVE: (),
    EntryType.LEAVE: (),
}
_BY_ADMIN: Final = frozenset({EntryType.ADD, EntryType.ROLE, EntryType.REMOVE})

#: ``registry_of(account_id)``: that account's registry, verified by the caller
#: from the account key pinned in the membership, or None if not at hand.
RegistryResolver = Callable[[bytes], RegistryState | None]


@dataclass(frozen=True, slots=True)
class MembershipEntry:
    """One decoded (not yet verified) entry."""

    type: EntryType
    space: bytes
    prev: bytes
    member: bytes
    signer: bytes
    device: bytes
    registry_seq: int
    ts: int
    role: Role | None
    member_key: AccountPublic | None  # create and add: the member's pinned account key
    body_bytes: bytes
    signature: bytes
    raw: bytes
    hash: bytes


def entry_hash(entry_bytes: bytes) -> bytes:
    """An entry's hash: what a later entry's ``prev`` names."""
    return tagged_hash(labels.MEMBERSHIP_ENTRY, entry_bytes)


def decode_entry(data: bytes, *,
                 limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> MembershipEntry:
    """Decode one entry's structure (the signature and rules are checked by
    :meth:`MembershipState.apply`).

    Raises:
        DecodeError: malformed, too large, an unsupported version or type.
        KeyValidationError: an unusable member account key.
        MembershipError: a member id that is not its key's.
    """
    if len(data) > MAX_MEMBERSHIP_ENTRY:
        raise DecodeError(f"membership entry of {len(data)} bytes exceeds the limit of "
                          f"{MAX_MEMBERSHIP_ENTRY}", Code.TOO_LARGE)
    dl = limits.decode_limits(MAX_MEMBERSHIP_ENTRY)
    outer = decode(data, limits=dl)
    if not isinstance(outer, list) or len(outer) != 3:
        raise DecodeError("membership entry: expected [version, body, signature]")
    version, body_bytes, signature = outer
    check_version(version, MEMBERSHIP_VERSION, "membership entry")
    if not isinstance(body_bytes, bytes) or not isinstance(signature, bytes) \
            or len(signature) != 64:
        raise DecodeError("membership entry: the body is a byte string and the signature "
                          "64 bytes")
    body = decode(body_bytes, limits=dl)
    version_of_map(body, MEMBERSHIP_VERSION, "membership entry body")
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise DecodeError("membership entry body: expected a map with a text 'type'")
    try:
        etype = EntryType(body["type"])
    except ValueError:
        raise DecodeError(f"membership entry type {body['type']!r} is unknown",
                          Code.UNSUPPORTED_VERSION) from None
    f = expect_map(body, f"membership {etype.value} entry", _COMMON + _TYPE_FIELDS[etype])
    role: Role | None = None
    if f.has("role"):
        try:
            role = Role(f.str_("role", max_len=16))
        except ValueError:
            raise DecodeError(f"membership {etype.value} entry: role must be reader, writer "
                              "or admin") from None
    member = f.bytes_("member", size=ID_SIZE)
    key = None
    if f.has("account_key"):
        key = AccountPublic.from_keys(f.bytes_("account_key", size=32),
                                      f.bytes_("recovery_key", size=32))
        if key.account_id != member:
            raise MembershipError(f"membership {etype.value} entry: the member id is not the "
                                  "id of the account key it carries")
    raw = bytes(data)
    return MembershipEntry(etype, f.bytes_("space", size=SPACE_ID_SIZE),
                           f.bytes_("prev", size=32), member, f.bytes_("signer", size=ID_SIZE),
                           f.bytes_("device", size=ID_SIZE), f.int_("registry_seq"),
                           f.int_("ts"), role, key, body_bytes, signature, raw,
                           entry_hash(raw))


@dataclass(frozen=True, slots=True)
class Member:
    """One member account: its role and the account key pinned when it was added."""

    role: Role
    key: AccountPublic


@dataclass(frozen=True, slots=True)
class MembershipState:
    """The verified membership of one space after the entries in ``applied``.

    Immutable: :meth:`apply` returns a new state. Invariant: once created, at
    least one member is an admin.
    """

    space: bytes
    members: Mapping[bytes, Member] = field(default_factory=dict)
    #: Hashes of the applied entries, in log order (refused entries are absent).
    applied: tuple[bytes, ...] = ()
    #: Per signer account, the largest ``registry_seq`` an applied entry stated.
    registry_seqs: Mapping[bytes, int] = field(default_factory=dict)
    #: ``applied`` as a set (replay and ``prev`` checks).
    applied_set: frozenset[bytes] = frozenset()

    @classmethod
    def empty(cls, space: bytes) -> MembershipState:
        """The state before ``create``."""
        if len(space) != SPACE_ID_SIZE:
            raise DecodeError(f"a space id is {SPACE_ID_SIZE} bytes")
        return cls(space)

    @property
    def head(self) -> bytes:
        """The newest applied entry's hash (zeros before ``create``): a new entry's ``prev``."""
        return self.applied[-1] if self.applied else _ZERO

    def role_of(self, account: bytes) -> Role | None:
        """The member's role, or None for a non-member."""
        m = self.members.get(account)
        return None if m is None else m.role

    def admins(self) -> list[bytes]:
        """Account ids of the admins, sorted."""
        return sorted(a for a, m in self.members.items() if m.role is Role.ADMIN)

    def apply(self, data: bytes | MembershipEntry, registry_of: RegistryResolver) -> \
            MembershipState:
        """Verify the next entry of the log against this state; return the new state.

        Raises (and then this state stays as it is):
            DecodeError, KeyValidationError: the entry does not decode.
            ContextError: ``wrong_context`` (another space; ``prev`` not applied
                here; the signer's registry not at hand or not that far; a
                ``registry_seq`` older than one the account stated before).
            AuthorizationError: ``not_authorized`` (signer not a member, not an
                admin, leaving for someone else, registry of another key),
                ``unknown_device``, ``revoked`` (device not active at ``registry_seq``).
            SignatureError: the signature does not verify.
            MembershipError: ``membership_invalid`` (see :func:`_check_rules`).
        """
        e = data if isinstance(data, MembershipEntry) else decode_entry(data)
        if e.space != self.space:
            raise ContextError("membership entry belongs to another space")
        if e.hash in self.applied_set:
            raise MembershipError("membership entry was already applied (a replay)")
        device_key = _device_key(e, self._signer_key(e), registry_of)
        if e.registry_seq < self.registry_seqs.get(e.signer, 0):
            # Registry positions only move forward per account: a device revoked
            # since cannot back-date an entry to when it was still active.
            raise ContextError("membership entry states an older registry position than an "
                               "earlier entry of its signer account")
        device_key.verify(labelled(labels.MEMBERSHIP_SIG, e.body_bytes), e.signature)
        self._check_rules(e)
        return self._applied(e)

    def _signer_key(self, e: MembershipEntry) -> AccountPublic:
        # create: the owner introduces its own key; otherwise the signer must be
        # a member now (at this log position), with the key pinned when added.
        if e.type is EntryType.CREATE:
            if e.member != e.signer or e.member_key is None:
                raise MembershipError("a create entry makes its signer account the owner")
            return e.member_key
        m = self.members.get(e.signer)
        if m is None:
            raise AuthorizationError("membership entry signer is not a member of this space",
                                     Code.NOT_AUTHORIZED)
        if e.type in _BY_ADMIN and m.role is not Role.ADMIN:
            raise AuthorizationError(f"only an admin may sign a {e.type.value} entry",
                                     Code.NOT_AUTHORIZED)
        if e.type is EntryType.LEAVE and e.member != e.signer:
            raise AuthorizationError("a leave entry is signed by the leaving member",
                                     Code.NOT_AUTHORIZED)
        return m.key

    def _check_rules(self, e: MembershipEntry) -> None:
        # The state rules, after the signer is known to be allowed this type.
        if e.type is EntryType.CREATE:
            if self.applied:
                raise MembershipError("create must be the first membership entry")
            if e.prev != _ZERO or e.role is not Role.ADMIN:
                raise MembershipError("create has prev zeros and makes the owner an admin")
            return
        if e.prev not in self.applied_set:
            raise ContextError("membership entry builds on an entry this membership did not "
                               "apply")
        target = self.members.get(e.member)
        if e.type is EntryType.ADD:
            if target is not None:
                raise MembershipError("account is already a member (change its role instead)")
            return
        if target is None:
            raise MembershipError(f"{e.type.value}: the account is not a member")
        if e.type is EntryType.ROLE and e.role is target.role:
            raise MembershipError(f"member already has the role {target.role.value}")
        if target.role is Role.ADMIN and e.role is not Role.ADMIN and self.admins() == [
                e.member]:
            raise MembershipError("the last admin cannot be removed, demoted or leave: "
                                  "make another member admin first")

    def _applied(self, e: MembershipEntry) -> MembershipState:
        members = dict(self.members)
        # decode_entry gives create/add a role and a key, role a role, and
        # remove/leave neither.
        if e.role is not None and e.member_key is not None:
            members[e.member] = Member(e.role, e.member_key)
        elif e.role is not None:
            members[e.member] = Member(e.role, members[e.member].key)
        else:
            del members[e.member]
        seqs = {**self.registry_seqs, e.signer: e.registry_seq}
        return MembershipState(self.space, members, (*self.applied, e.hash), seqs,
                               self.applied_set | {e.hash})


def _device_key(e: MembershipEntry, key: AccountPublic,
                registry_of: RegistryResolver) -> Ed25519PublicKey:
    # The signer device must be active in its account's registry at the stated
    # position. Device ids are never re-added (9.6), so added_seq/revoked_seq
    # of the current verified state answer for any earlier position.
    reg = registry_of(e.signer)
    if reg is None:
        raise ContextError("the signer account's registry is not at hand; sync it first")
    if reg.account.signing_key.raw != key.signing_key.raw \
            or reg.account.recovery_key != key.recovery_key:
        raise AuthorizationError("the signer's registry belongs to another account key than "
                                 "the one pinned in the membership", Code.NOT_AUTHORIZED)
    if e.registry_seq > reg.seq:
        raise ContextError("membership entry refers to registry entries this device has not "
                           "seen; sync the registry first")
    rec = reg.device(e.device)
    if rec is None or rec.added_seq > e.registry_seq:
        raise AuthorizationError("membership entry device is not a device of its signer "
                                 "account at the stated registry position",
                                 Code.UNKNOWN_DEVICE)
    if rec.revoked_seq is not None and rec.revoked_seq <= e.registry_seq:
        raise AuthorizationError("membership entry device was revoked by the stated registry "
                                 "position", Code.REVOKED)
    return rec.public.signing_key


@dataclass(frozen=True, slots=True)
class FoldResult:
    """The state after a log, and the entries refused on the way (log index, error)."""

    state: MembershipState
    refused: tuple[tuple[int, SddsfError], ...]


def fold(space: bytes, entries: Iterable[bytes], registry_of: RegistryResolver,
         start: MembershipState | None = None) -> FoldResult:
    """Apply ``entries`` in log order; a refused entry changes nothing and the
    fold goes on (the log is the relay's, every member folds it the same way)."""
    state = start if start is not None else MembershipState.empty(space)
    refused: list[tuple[int, SddsfError]] = []
    for i, data in enumerate(entries):
        try:
            state = state.apply(data, registry_of)
        except SddsfError as exc:
            refused.append((i, exc))
    return FoldResult(state, tuple(refused))


# ------------------------------------------------------------------ queries
# One rule for the relay (refusing writes) and clients (refusing to apply).


def is_admin(state: MembershipState, account: bytes) -> bool:
    """Whether ``account`` is an admin of the space."""
    return state.role_of(account) is Role.ADMIN


def can_read(state: MembershipState, account: bytes) -> bool:
    """Whether ``account`` is a member (every role reads)."""
    return state.role_of(account) is not None


def can_write(state: MembershipState, account: bytes) -> bool:
    """Whether ``account`` is a writer or an admin."""
    return state.role_of(account) in (Role.WRITER, Role.ADMIN)


def check_write(state: MembershipState, account: bytes) -> None:
    """Refuse a write by a non-member or a reader.

    Raises:
        AuthorizationError: ``not_authorized``.
    """
    role = state.role_of(account)
    if role is None:
        raise AuthorizationError("the account is not a member of this space",
                                 Code.NOT_AUTHORIZED)
    if role is Role.READER:
        raise AuthorizationError("the account is a reader of this space and may not write",
                                 Code.NOT_AUTHORIZED)


# ------------------------------------------------------------------ builders


def build_body(etype: EntryType, *, space: bytes, prev: bytes, member: bytes,
               registry: RegistryState, device_id: bytes, ts_ms: int,
               fields: Mapping[str, object]) -> bytes:
    """Canonical body bytes of an entry signed by ``device_id`` of ``registry``'s
    account, stating the registry's current position."""
    body: dict[str, object] = {
        "v": MEMBERSHIP_VERSION, "space": space, "type": etype.value, "prev": prev,
        "member": member, "signer": registry.account_id, "device": device_id,
        "registry_seq": registry.seq, "ts": ts_ms}
    body.update(fields)
    return encode(body)


def sign_body(body_bytes: bytes, device: DeviceKeys) -> bytes:
    """The device's signature over a body."""
    return device.sign(labelled(labels.MEMBERSHIP_SIG, body_bytes))


def assemble_entry(body_bytes: bytes, signature: bytes) -> bytes:
    """Entry bytes from a body and its signature."""
    return encode([MEMBERSHIP_VERSION, body_bytes, signature])


def _entry(etype: EntryType, state: MembershipState, device: DeviceKeys,
           registry: RegistryState, member: bytes, ts_ms: int,
           fields: Mapping[str, object]) -> bytes:
    body = build_body(etype, space=state.space, prev=state.head, member=member,
                      registry=registry, device_id=device.device_id, ts_ms=ts_ms, fields=fields)
    return assemble_entry(body, sign_body(body, device))


def _key_fields(account: AccountPublic, role: Role) -> dict[str, object]:
    return {"account_key": account.signing_key.raw, "recovery_key": account.recovery_key,
            "role": role.value}


def create(space: bytes, device: DeviceKeys, registry: RegistryState, ts_ms: int) -> bytes:
    """The first entry: ``registry``'s account (the owner) becomes the first admin."""
    return _entry(EntryType.CREATE, MembershipState.empty(space), device, registry,
                  registry.account_id, ts_ms, _key_fields(registry.account, Role.ADMIN))


def add_member(state: MembershipState, device: DeviceKeys, registry: RegistryState,
               member: AccountPublic, role: Role, ts_ms: int) -> bytes:
    """Add ``member`` (its account key, as the people compared it) with ``role``."""
    return _entry(EntryType.ADD, state, device, registry, member.account_id, ts_ms,
                  _key_fields(member, role))


def change_role(state: MembershipState, device: DeviceKeys, registry: RegistryState,
                member: bytes, role: Role, ts_ms: int) -> bytes:
    """Give ``member`` another role."""
    return _entry(EntryType.ROLE, state, device, registry, member, ts_ms,
                  {"role": role.value})


def remove_member(state: MembershipState, device: DeviceKeys, registry: RegistryState,
                  member: bytes, ts_ms: int) -> bytes:
    """Remove ``member`` from the space."""
    return _entry(EntryType.REMOVE, state, device, registry, member, ts_ms, {})


def leave(state: MembershipState, device: DeviceKeys, registry: RegistryState,
          ts_ms: int) -> bytes:
    """``registry``'s account leaves the space."""
    return _entry(EntryType.LEAVE, state, device, registry, registry.account_id, ts_ms, {})
