"""Key epochs and key packages.

Each space has a sequence of key epochs 0, 1, 2, ... Epoch ``e`` has a random
32-byte epoch key. A key package distributes it::

    package    = [version, body_bytes, signature]
    body       = {"v", "space", "epoch", "prev", "creator", "ts", "registry_seq",
                  "recipients"}
    recipients = [[recipient_id, sealed_key], ...]    sorted by recipient_id, unique
    sealed_key = seal(recipient_x25519_pk, labelled(KEY_PACKAGE_SEALED, space, epoch, key))

``prev`` is the previous epoch's package hash ``tagged_hash(KEY_PACKAGE_HASH,
package_bytes)`` (zeros for epoch 0), so epochs form a chain. The creator (an
active device) signs ``labelled(KEY_PACKAGE_SIG, body_bytes)``. Recipients are
active devices of the registry at ``registry_seq`` plus the account recovery
key (recipient id = account id), which must always be present so that
recovery can read history. The sealed plaintext names its space and epoch, so
a sealed key moved into another package is refused when opened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sddsf.crypto import X25519KeyPair, _seal_seeded, seal, seal_open
from sddsf.errors import (
    AuthorizationError,
    Code,
    ContextError,
    DecodeError,
    DecryptError,
    EpochError,
    UsageError,
)
from sddsf.protocol import labels
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.envelope import SPACE_ID_SIZE
from sddsf.protocol.identity import ID_SIZE, DeviceKeys
from sddsf.protocol.labels import labelled, tagged_hash
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.registry import RegistryState
from sddsf.protocol.schema import decode_signed

__all__ = [
    "KEY_PACKAGE_VERSION",
    "MAX_KEY_HISTORY",
    "KeyPackage",
    "build_key_package",
    "decode_key_package",
    "needs_rotation",
    "open_epoch_key",
    "open_epoch_keys",
    "package_hash",
    "verify_key_package",
]

KEY_PACKAGE_VERSION: Final = 1
_ZERO: Final = bytes(32)
_FIELDS: Final = ("v", "space", "epoch", "prev", "creator", "ts", "registry_seq", "recipients")
MAX_KEY_HISTORY: Final = 255  # previous epoch keys carried in one sealed key
# Seal overhead + the labelled plaintext with a full key history.
_SEALED_SIZE: Final = 48 + 100 + 34 * MAX_KEY_HISTORY


@dataclass(frozen=True, slots=True)
class KeyPackage:
    """A decoded key package."""

    space: bytes
    epoch: int
    prev: bytes
    creator: bytes
    ts: int
    registry_seq: int
    recipients: Mapping[bytes, bytes]  # recipient id -> sealed key
    body_bytes: bytes
    signature: bytes
    raw: bytes
    hash: bytes


def package_hash(package_bytes: bytes) -> bytes:
    """Hash that the next epoch's package names as ``prev``."""
    return tagged_hash(labels.KEY_PACKAGE_HASH, package_bytes)


def _sealed_plaintext(space: bytes, epoch: int, key: bytes,
                      history: Sequence[bytes]) -> bytes:
    return labelled(labels.KEY_PACKAGE_SEALED, space, epoch, key, list(history))


def build_key_package(*, creator: DeviceKeys, registry: RegistryState, space: bytes, epoch: int,
                      prev: bytes, epoch_key: bytes, ts_ms: int,
                      previous_keys: Sequence[bytes] = (),
                      ephemeral_seeds: Sequence[bytes] | None = None) -> bytes:
    """Wrap ``epoch_key`` for every active device and the recovery key, and sign.

    Each key is sealed with :func:`sddsf.crypto.seal`, whose ephemeral key
    libsodium draws for every recipient.

    Args:
        ephemeral_seeds: TEST VECTORS ONLY: one 32-byte seed per recipient
            (``len(registry.active_devices()) + 1``, in recipient-id order) to
            make the output reproducible. Never pass it elsewhere: a reused seed
            reuses the ephemeral key and nonce.
        previous_keys: the keys of the epochs before ``epoch`` (oldest first, at
            most the last :data:`MAX_KEY_HISTORY`), so a device added now can read
            the space's history.

    Raises:
        UsageError: wrong key or seed sizes, or the creator is not active.
    """
    if len(epoch_key) != 32 or len(space) != SPACE_ID_SIZE:
        raise UsageError("epoch key is 32 bytes and space id 16 bytes")
    if not registry.is_active(creator.device_id):
        raise UsageError("only an active device can create a key package")
    targets = {r.device_id: r.public.kx_key for r in registry.active_devices()}
    targets[registry.account_id] = registry.account.recovery_key
    if ephemeral_seeds is not None and len(ephemeral_seeds) != len(targets):
        raise UsageError(f"need {len(targets)} ephemeral seeds, got {len(ephemeral_seeds)}")
    history = list(previous_keys)[-MAX_KEY_HISTORY:]
    if any(len(k) != 32 for k in history) or len(history) > epoch:
        raise UsageError("previous keys are 32 bytes each, at most one per earlier epoch")
    plaintext = _sealed_plaintext(space, epoch, epoch_key, history)
    if ephemeral_seeds is None:
        recipients = [[rid, seal(targets[rid], plaintext)] for rid in sorted(targets)]
    else:
        recipients = [[rid, _seal_seeded(targets[rid], plaintext, seed)]
                      for rid, seed in zip(sorted(targets), ephemeral_seeds, strict=True)]
    body = encode({"v": KEY_PACKAGE_VERSION, "space": space, "epoch": epoch,
                   "prev": prev if epoch else _ZERO, "creator": creator.device_id, "ts": ts_ms,
                   "registry_seq": registry.seq, "recipients": recipients})
    return encode([KEY_PACKAGE_VERSION, body,
                   creator.sign(labelled(labels.KEY_PACKAGE_SIG, body))])


def decode_key_package(data: bytes, *,
                       limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> KeyPackage:
    """Decode a key package's structure (no signature or membership checks).

    Raises:
        DecodeError: malformed, too large or an unsupported version.
    """
    f, body_bytes, signature = decode_signed(
        data, what="key package", version=KEY_PACKAGE_VERSION, fields=_FIELDS,
        limits=limits.decode_limits(limits.max_key_package))
    recipients: dict[bytes, bytes] = {}
    previous = b""
    for item in f.list_("recipients", max_items=limits.max_devices + 1):
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes)
                or len(item[0]) != ID_SIZE or not isinstance(item[1], bytes)
                or len(item[1]) > _SEALED_SIZE):
            raise DecodeError("key package: each recipient is [32-byte id, sealed key]")
        if item[0] <= previous:
            raise DecodeError("key package: recipients must be sorted and unique")
        previous = item[0]
        recipients[item[0]] = item[1]
    epoch = f.int_("epoch")
    prev = f.bytes_("prev", size=32)
    if epoch == 0 and prev != _ZERO:
        raise DecodeError("key package: epoch 0 has an all-zero prev")
    raw = bytes(data)
    return KeyPackage(f.bytes_("space", size=SPACE_ID_SIZE), epoch, prev,
                      f.bytes_("creator", size=ID_SIZE), f.int_("ts"), f.int_("registry_seq"),
                      recipients, body_bytes, signature, raw, package_hash(raw))


def verify_key_package(data: bytes, *, registry: RegistryState, space: bytes,
                       previous: KeyPackage | None,
                       limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> KeyPackage:
    """Verify a key package against the verified registry and the previous epoch.

    Args:
        registry: the registry state at (or after) the package's ``registry_seq``.
        previous: the verified package of epoch ``epoch - 1`` (None for epoch 0).

    Raises:
        DecodeError, ContextError (other space, broken epoch chain),
        AuthorizationError (creator or a recipient not active, an active device
        or the recovery key missing),
        SignatureError.
    """
    pkg = decode_key_package(data, limits=limits)
    if pkg.space != space:
        raise ContextError("key package belongs to another space")
    expected_epoch = 0 if previous is None else previous.epoch + 1
    if pkg.epoch != expected_epoch:
        raise EpochError(f"key package is for epoch {pkg.epoch}, expected {expected_epoch}",
                         Code.UNKNOWN_EPOCH)
    if pkg.prev != (_ZERO if previous is None else previous.hash):
        raise ContextError("key package does not link to the previous epoch's package")
    if pkg.registry_seq > registry.seq:
        raise ContextError("key package refers to registry entries this device has not seen; "
                           "sync the registry first")
    # Registry states only move forward along the epoch chain: a device revoked
    # after epoch e cannot back-date epoch e+1 to a time it was still active.
    if previous is not None and pkg.registry_seq < previous.registry_seq:
        raise ContextError("key package claims an older registry state than the previous "
                           "epoch's package")
    creator = registry.device(pkg.creator)
    if creator is None or creator.added_seq > pkg.registry_seq:
        raise AuthorizationError("key package creator is not a device of this account at the "
                                 "package's registry state", Code.UNKNOWN_DEVICE)
    if creator.revoked_seq is not None and creator.revoked_seq <= pkg.registry_seq:
        raise AuthorizationError("key package creator was revoked", Code.REVOKED)
    creator.public.signing_key.verify(labelled(labels.KEY_PACKAGE_SIG, pkg.body_bytes),
                                      pkg.signature)
    if registry.account_id not in pkg.recipients:
        raise AuthorizationError("key package omits the account recovery key")
    for rid in pkg.recipients:
        if rid == registry.account_id:
            continue
        rec = registry.device(rid)
        if rec is None:
            raise AuthorizationError("key package wraps the key for a device that is not in "
                                     "the registry", Code.UNKNOWN_DEVICE)
        if rec.added_seq > pkg.registry_seq or (
                rec.revoked_seq is not None and rec.revoked_seq <= pkg.registry_seq):
            raise AuthorizationError("key package wraps the key for a device that was not "
                                     "active at its registry state", Code.REVOKED)
    # Completeness: a device of the owner's cannot quietly lock the others out.
    for rec in registry.devices.values():
        active_then = rec.added_seq <= pkg.registry_seq and (
            rec.revoked_seq is None or rec.revoked_seq > pkg.registry_seq)
        if active_then and rec.device_id not in pkg.recipients:
            raise AuthorizationError("key package leaves out a device that was active at its "
                                     "registry state", Code.NOT_AUTHORIZED)
    return pkg


def needs_rotation(pkg: KeyPackage, registry: RegistryState) -> bool:
    """Whether a new epoch is due: a device was revoked after ``pkg`` was made, or a
    device added since is not one of its recipients.

    Writers must not encrypt under an epoch that a revoked device may know:
    when this returns True, create the next epoch's package first. The second
    case is catch-up for a device whose adder (or enactor, §9.8) stopped before
    opening the epoch that includes it.
    """
    return any((r.revoked_seq is not None and r.revoked_seq > pkg.registry_seq)
               or (r.revoked_seq is None and r.added_seq > pkg.registry_seq
                   and r.device_id not in pkg.recipients)
               for r in registry.devices.values())


def open_epoch_keys(pkg: KeyPackage, recipient_id: bytes,
                    keypair: X25519KeyPair) -> dict[int, bytes]:
    """Unwrap this package's epoch key and the key history it carries.

    Returns ``{epoch: key}`` for the package's epoch and the earlier epochs whose
    keys it carries. Raises as :func:`open_epoch_key`.
    """
    sealed = pkg.recipients.get(recipient_id)
    if sealed is None:
        raise AuthorizationError("this key package has no key for this device "
                                 "(it was created after the device was revoked, or before "
                                 "it was added)", Code.NOT_AUTHORIZED)
    plaintext = seal_open(keypair, sealed)
    try:
        value = decode(plaintext)
    except DecodeError:
        raise DecryptError("sealed epoch key has the wrong format") from None
    if (not isinstance(value, list) or len(value) != 5
            or value[0] != labels.KEY_PACKAGE_SEALED or not isinstance(value[3], bytes)
            or len(value[3]) != 32 or not isinstance(value[4], list)
            or len(value[4]) > min(pkg.epoch, MAX_KEY_HISTORY)
            or any(not isinstance(k, bytes) or len(k) != 32 for k in value[4])):
        raise DecryptError("sealed epoch key has the wrong format")
    if value[1] != pkg.space or type(value[2]) is not int or value[2] != pkg.epoch:
        raise ContextError("sealed epoch key was made for another space or epoch")
    history: list[bytes] = value[4]
    keys = {pkg.epoch - len(history) + i: k for i, k in enumerate(history)}
    keys[pkg.epoch] = value[3]
    return keys


def open_epoch_key(pkg: KeyPackage, recipient_id: bytes, keypair: X25519KeyPair) -> bytes:
    """Unwrap the epoch key for ``recipient_id`` (a device id, or the account id).

    Raises:
        AuthorizationError: the package has no key for this recipient.
        DecryptError: the sealed key does not open or is not in the sealed-key format.
        ContextError: the sealed key names another space or epoch.
    """
    return open_epoch_keys(pkg, recipient_id, keypair)[pkg.epoch]
