"""Version 3 key packages: epoch keys for a space shared between accounts.

A shared space's members are accounts (:mod:`sddsf.protocol.membership`);
each has its own device registry. A version 3 package seals the epoch key for
every device active in every member's registry, and for every member's
recovery key::

    package = [3, body_bytes, signature]
    body    = {"v": 3, "space", "epoch", "prev", "creator", "ts", "recipients",
               "key_commit", "prev_keys",                  as in version 2
               "creator_account",                          the creator device's account
               "members": [[account_id, registry_seq], ...],  sorted by account id
               "membership"}                               membership head hash

``registry_seq`` of version 2 becomes one position per member account: the
package's recipients for that account are its devices active at that
position, plus the account id (its recovery key). ``membership`` is the hash
(:func:`sddsf.protocol.membership.entry_hash`) of the newest membership entry
the creator had applied when it read the member set; the verifier compares
``members`` with the member set after that entry, which the caller computes
by folding the space's membership log. Sealed keys, ``key_commit`` and
``prev_keys`` are exactly version 2's, so opening (:func:`open_epoch_key`,
:func:`unwrap_previous_keys`, :func:`open_key_history`) is unchanged.

Registries passed in must be verified by the caller from the account keys
pinned in the membership (as for :data:`sddsf.protocol.membership.RegistryResolver`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from sddsf.errors import AuthorizationError, Code, ContextError, UsageError
from sddsf.protocol import labels
from sddsf.protocol.envelope import SPACE_ID_SIZE
from sddsf.protocol.identity import DeviceKeys
from sddsf.protocol.keypackage import (
    KEY_PACKAGE_VERSION_SHARED,
    MAX_PACKAGE_MEMBERS,
    MAX_PACKAGE_RECIPIENTS,
    KeyPackage,
    active_at,
    check_chain,
    decode_key_package,
    sealed_fields,
    sign_package,
)
from sddsf.protocol.labels import labelled
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.registry import DeviceRecord, RegistryState

__all__ = [
    "MembersAt",
    "RotationDue",
    "build_key_package_v3",
    "needs_rotation_v3",
    "rotation_due_v3",
    "verify_key_package_v3",
]

_ZERO = bytes(32)

#: ``members_at(membership_hash)``: the member account ids after the applied
#: membership entry with that hash, or None if no applied entry has it.
MembersAt = Callable[[bytes], Collection[bytes] | None]


def _member_registry(registries: Mapping[bytes, RegistryState], account: bytes) -> RegistryState:
    reg = registries.get(account)
    if reg is None:
        raise ContextError("a member account's registry is not at hand; sync that member's "
                           "registry first")
    if reg.account_id != account:
        raise UsageError("registries must map each account id to that account's registry")
    return reg


def build_key_package_v3(*, creator: DeviceKeys, creator_account: bytes,
                         registries: Mapping[bytes, RegistryState], members: Collection[bytes],
                         membership_head: bytes, space: bytes, epoch: int, prev: bytes,
                         epoch_key: bytes, ts_ms: int, previous_keys: Sequence[bytes] = (),
                         ephemeral_seeds: Sequence[bytes] | None = None) -> bytes:
    """Seal ``epoch_key`` for every active device and the recovery key of every
    member account, and sign as ``creator``.

    Each member's devices are taken at its registry's current seq, which the
    package states per member.

    Args:
        registries: one verified registry state per member account (others are ignored).
        members: the member account ids after the membership entry ``membership_head``.
        membership_head: hash of the newest membership entry the creator applied.
        previous_keys: as for :func:`sddsf.protocol.keypackage.build_key_package`.
        ephemeral_seeds: TEST VECTORS ONLY: one 32-byte seed per recipient, in
            recipient-id order (see ``build_key_package``).

    Raises:
        UsageError: wrong sizes; no members or more than :data:`MAX_PACKAGE_MEMBERS`;
            the creator account not a member or the creator not active in it; a
            registry of another account; a device id in two member registries;
            more than :data:`MAX_PACKAGE_RECIPIENTS` recipients.
        ContextError: a member's registry is missing.
    """
    if len(epoch_key) != 32 or len(space) != SPACE_ID_SIZE or len(membership_head) != 32:
        raise UsageError("epoch key and membership head are 32 bytes, space id 16 bytes")
    accounts = sorted(set(members))
    if not 1 <= len(accounts) <= MAX_PACKAGE_MEMBERS:
        raise UsageError(f"a shared package lists 1 to {MAX_PACKAGE_MEMBERS} member accounts")
    if creator_account not in accounts:
        raise UsageError("the creator's account must be a member of the space")
    states = [_member_registry(registries, a) for a in accounts]
    if not registries[creator_account].is_active(creator.device_id):
        raise UsageError("only an active device of the creator account can create a package")
    targets: dict[bytes, bytes] = {}
    for reg in states:
        for rec in reg.active_devices():
            if rec.device_id in targets:
                raise UsageError("a device id is in two member registries")
            targets[rec.device_id] = rec.public.kx_key
        targets[reg.account_id] = reg.account.recovery_key
    if len(targets) > MAX_PACKAGE_RECIPIENTS:
        raise UsageError(f"a shared package has at most {MAX_PACKAGE_RECIPIENTS} recipients")
    return sign_package(creator, {
        "v": KEY_PACKAGE_VERSION_SHARED, "space": space, "epoch": epoch,
        "prev": prev if epoch else _ZERO, "creator": creator.device_id, "ts": ts_ms,
        "creator_account": creator_account,
        "members": [[reg.account_id, reg.seq] for reg in states],
        "membership": membership_head,
        **sealed_fields(targets, space=space, epoch=epoch, epoch_key=epoch_key,
                        previous_keys=previous_keys, ephemeral_seeds=ephemeral_seeds)})


def verify_key_package_v3(data: bytes, *, space: bytes, previous: KeyPackage | None,
                          registries: Mapping[bytes, RegistryState], members_at: MembersAt,
                          limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> KeyPackage:
    """Verify a shared space's key package (docs/protocol.md 10.8, in that order).

    Args:
        previous: the verified package of epoch ``epoch - 1`` (any version; None
            for epoch 0).
        registries: a verified registry state per member account, at or after
            the position the package states for it.
        members_at: the member set after a membership entry (see :data:`MembersAt`).

    Raises:
        DecodeError; ContextError (not version 3, other space, broken chain,
        membership head not applied, a member registry missing or behind, a
        position older than the previous package's); EpochError
        (``unknown_epoch``); AuthorizationError (``not_authorized``: members
        differ from the membership, the creator account not a member, a recovery
        key or an active device missing; ``unknown_device`` / ``revoked``: the
        creator or a recipient not active at its account's position);
        SignatureError; UsageError (a registry of another account).
    """
    pkg = decode_key_package(data, limits=limits)
    if pkg.version != KEY_PACKAGE_VERSION_SHARED or pkg.members is None \
            or pkg.membership is None or pkg.creator_account is None:
        raise ContextError("key package is a one-account package (version "
                           f"{pkg.version}); verify it with verify_key_package")
    check_chain(pkg, space, previous)
    expected = members_at(pkg.membership)
    if expected is None:
        raise ContextError("key package names a membership entry this device has not "
                           "applied; sync the membership log first")
    stated = dict(pkg.members)
    if set(stated) != set(expected):
        raise AuthorizationError("key package members are not the space's members at its "
                                 "membership entry", Code.NOT_AUTHORIZED)
    _check_positions(stated, registries, _stated_seqs(previous, registries))
    _check_creator(pkg, stated, registries)
    reg = registries[pkg.creator_account]
    creator = reg.devices[pkg.creator]
    creator.public.signing_key.verify(labelled(labels.KEY_PACKAGE_SIG, pkg.body_bytes),
                                      pkg.signature)
    _check_recipients(pkg, stated, registries)
    return pkg


def _stated_seqs(pkg: KeyPackage | None,
                 registries: Mapping[bytes, RegistryState]) -> dict[bytes, int]:
    # Per account, the registry position a package took its devices at. A
    # version 1/2 package names one: its creator device's account.
    if pkg is None:
        return {}
    if pkg.members is not None:
        return dict(pkg.members)
    return next(({a: pkg.registry_seq} for a, reg in registries.items()
                 if reg.device(pkg.creator) is not None), {})


def _check_positions(stated: Mapping[bytes, int], registries: Mapping[bytes, RegistryState],
                     before: Mapping[bytes, int]) -> None:
    for account, seq in stated.items():
        reg = _member_registry(registries, account)
        if seq > reg.seq:
            raise ContextError("key package refers to registry entries of a member this "
                               "device has not seen; sync that member's registry first")
        # Registry positions only move forward along the epoch chain: a device
        # revoked after epoch e cannot back-date epoch e+1 to when it was active.
        if seq < before.get(account, 0):
            raise ContextError("key package states an older registry position for a member "
                               "than the previous epoch's package")


def _check_creator(pkg: KeyPackage, stated: Mapping[bytes, int],
                   registries: Mapping[bytes, RegistryState]) -> None:
    account = pkg.creator_account
    if account is None or account not in stated:
        raise AuthorizationError("key package creator account is not a member",
                                 Code.NOT_AUTHORIZED)
    seq = stated[account]
    rec = registries[account].device(pkg.creator)
    if rec is None or rec.added_seq > seq:
        raise AuthorizationError("key package creator is not a device of its account at the "
                                 "stated registry position", Code.UNKNOWN_DEVICE)
    if rec.revoked_seq is not None and rec.revoked_seq <= seq:
        raise AuthorizationError("key package creator was revoked", Code.REVOKED)


def _check_recipients(pkg: KeyPackage, stated: Mapping[bytes, int],
                      registries: Mapping[bytes, RegistryState]) -> None:
    if any(account not in pkg.recipients for account in stated):
        raise AuthorizationError("key package omits a member's recovery key",
                                 Code.NOT_AUTHORIZED)
    active = {rec.device_id for account, seq in stated.items()
              for rec in active_at(registries[account], seq)}
    for rid in pkg.recipients:
        if rid in stated or rid in active:
            continue
        if any(registries[a].device(rid) is not None for a in stated):
            raise AuthorizationError("key package wraps the key for a device that was not "
                                     "active at its account's stated position", Code.REVOKED)
        raise AuthorizationError("key package wraps the key for a device of no member",
                                 Code.UNKNOWN_DEVICE)
    # Completeness: no member's device can quietly lock the others out.
    if any(d not in pkg.recipients for d in active):
        raise AuthorizationError("key package leaves out a device that was active at its "
                                 "account's stated position", Code.NOT_AUTHORIZED)


@dataclass(frozen=True, slots=True)
class RotationDue:
    """Why a shared space needs a new epoch (true when any part is non-empty)."""

    added: tuple[bytes, ...] = ()  # members the package does not list
    removed: tuple[bytes, ...] = ()  # accounts it lists that are no longer members
    # Devices of listed members revoked after the package's position for their
    # account: they may hold the epoch key, so the epoch is compromised.
    revoked: tuple[DeviceRecord, ...] = ()
    missing: tuple[DeviceRecord, ...] = ()  # active devices of members, not recipients

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.revoked or self.missing)


def rotation_due_v3(pkg: KeyPackage, registries: Mapping[bytes, RegistryState],
                    members: Collection[bytes]) -> RotationDue:
    """What makes ``pkg`` (the newest verified package, any version) out of date
    for the current ``members`` and their current ``registries``.

    A version 1/2 package counts as listing its creator's account alone.

    Raises:
        ContextError: a current member's registry is missing.
    """
    stated = _stated_seqs(pkg, registries)
    current = set(members)
    regs = {a: _member_registry(registries, a) for a in sorted(current)}
    revoked = tuple(rec for a in sorted(current & set(stated))
                    for rec in regs[a].devices.values()
                    if rec.revoked_seq is not None and rec.revoked_seq > stated[a])
    missing = tuple(rec for reg in regs.values() for rec in reg.active_devices()
                    if rec.device_id not in pkg.recipients)
    return RotationDue(tuple(sorted(current - set(stated))),
                       tuple(sorted(set(stated) - current)), revoked, missing)


def needs_rotation_v3(pkg: KeyPackage, registries: Mapping[bytes, RegistryState],
                      members: Collection[bytes]) -> bool:
    """Whether a shared space needs a new epoch: a member was added or removed
    since ``pkg``, a member's device was revoked after the package's position
    for that account, or an active device of a member is not a recipient.

    A writer must not encrypt under the epoch while this is true (10.7).
    """
    return bool(rotation_due_v3(pkg, registries, members))
