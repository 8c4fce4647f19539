"""Key epochs and key packages.

Each space has a sequence of key epochs 0, 1, 2, ... Epoch ``e`` has a random
32-byte epoch key. A key package distributes it::

    package    = [version, body_bytes, signature]                 version = 2
    body       = {"v", "space", "epoch", "prev", "creator", "ts", "registry_seq",
                  "recipients", "key_commit", "prev_keys"}
    recipients = [[recipient_id, sealed_key], ...]    sorted by recipient_id, unique
    sealed_key = seal(recipient_x25519_pk, labelled(KEY_PACKAGE_SEALED, space, epoch, key))
    key_commit = tagged_hash(KEY_PACKAGE_COMMIT, space, epoch, key)
    prev_keys  = null | AEAD(wrap_key, wrap_nonce, encode([key_{e-n}, ..., key_{e-1}]),
                             ad = labelled(KEY_PACKAGE_WRAP, space, epoch))
    wrap_key || wrap_nonce = HKDF-SHA256(key, salt = KEY_PACKAGE_WRAP,
                                         info = labelled(KEY_PACKAGE_WRAP, space, epoch), 56)

``prev`` is the previous epoch's package hash ``tagged_hash(KEY_PACKAGE_HASH,
package_bytes)`` (zeros for epoch 0), so epochs form a chain. The creator (an
active device) signs ``labelled(KEY_PACKAGE_SIG, body_bytes)``. Recipients are
active devices of the registry at ``registry_seq`` plus the account recovery
key (recipient id = account id), which must always be present so that
recovery can read history. The sealed plaintext names its space and epoch, so
a sealed key moved into another package is refused when opened; the public
``key_commit`` makes every recipient check that it got the same key as the
others.

Key history: whoever holds epoch ``e``'s key opens ``prev_keys`` and gets the
earlier keys it wraps (normally just ``e - 1``'s), then ``e - 1``'s package
gives the ones before, and so on down to epoch 0 along the verified chain
(:func:`open_key_history`), however many epochs there are. Version 1 packages
(old history) carried up to :data:`MAX_KEY_HISTORY` earlier keys inside each
sealed key instead; they stay readable.

Version 3 packages (spaces shared between accounts) are decoded here and
built and verified by :mod:`sddsf.protocol.keypackage_v3`: the body drops
``registry_seq`` and adds ``creator_account``, ``members`` (each member
account with the registry position its devices were taken at) and
``membership`` (the membership head the members were read at).

Size: one format in three versions; the decoder, the version 2 builder and
verifier, and the openers every version shares are kept together, with their
private helpers (version 3's builder and verifier are in ``keypackage_v3``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from sddsf.crypto import (
    AEAD_NONCE_SIZE,
    X25519KeyPair,
    _seal_seeded,
    aead_decrypt,
    aead_encrypt,
    hkdf_sha256,
    seal,
    seal_open,
)
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
from sddsf.protocol.encoding import DecodeLimits, decode, encode
from sddsf.protocol.envelope import SPACE_ID_SIZE
from sddsf.protocol.identity import ID_SIZE, DeviceKeys
from sddsf.protocol.labels import labelled, tagged_hash
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.registry import DeviceRecord, RegistryState
from sddsf.protocol.schema import decode_signed

__all__ = [
    "KEY_PACKAGE_VERSION",
    "KEY_PACKAGE_VERSIONS",
    "KEY_PACKAGE_VERSION_SHARED",
    "MAX_KEY_HISTORY",
    "MAX_PACKAGE_MEMBERS",
    "MAX_PACKAGE_RECIPIENTS",
    "MAX_WRAPPED_KEYS",
    "KeyPackage",
    "build_key_package",
    "decode_key_package",
    "key_commitment",
    "needs_rotation",
    "open_epoch_key",
    "open_epoch_keys",
    "open_key_history",
    "package_hash",
    "registry_seq_for",
    "revoked_since",
    "unwrap_previous_keys",
    "verify_key_package",
]

#: The version new packages of a one-account space use; version 1 (sealed
#: history lists) is read only.
KEY_PACKAGE_VERSION: Final = 2
#: The version of a shared space's packages (:mod:`sddsf.protocol.keypackage_v3`).
KEY_PACKAGE_VERSION_SHARED: Final = 3
KEY_PACKAGE_VERSIONS: Final = frozenset({1, KEY_PACKAGE_VERSION, KEY_PACKAGE_VERSION_SHARED})
#: Member accounts one version 3 package may list.
MAX_PACKAGE_MEMBERS: Final = 1024
#: Recipients of one version 3 package: 1024 members with one device each plus
#: their recovery keys (one account alone keeps its own bound, max_devices + 1).
#: A package at both bounds that wraps one earlier key is 387,500 bytes, under
#: the default ``max_key_package`` (512 KiB).
MAX_PACKAGE_RECIPIENTS: Final = 2 * MAX_PACKAGE_MEMBERS
_ZERO: Final = bytes(32)
_FIELDS_V1: Final = ("v", "space", "epoch", "prev", "creator", "ts", "registry_seq",
                     "recipients")
_FIELDS_V2: Final = (*_FIELDS_V1, "key_commit", "prev_keys")
_FIELDS: Final = {1: _FIELDS_V1, 2: _FIELDS_V2,
                  3: (*(k for k in _FIELDS_V2 if k != "registry_seq"), "creator_account",
                      "members", "membership")}
#: Version 1 only: earlier epoch keys carried in one sealed key.
MAX_KEY_HISTORY: Final = 255
#: Earlier epoch keys one version 2 package may wrap (a package normally wraps
#: one; the first package after version 1 ones wraps what its creator holds).
MAX_WRAPPED_KEYS: Final = 4096
_WRAPPED_MAX_BYTES: Final = 16 + 3 + 34 * MAX_WRAPPED_KEYS
_WRAPPED_LIMITS: Final = DecodeLimits(max_size=_WRAPPED_MAX_BYTES, max_depth=2,
                                      max_items=MAX_WRAPPED_KEYS)
# Seal overhead + the labelled plaintext with a full (version 1) key history.
_SEALED_SIZE: Final = 48 + 100 + 34 * MAX_KEY_HISTORY


@dataclass(frozen=True, slots=True)
class KeyPackage:
    """A decoded key package (``key_commit`` and ``prev_keys`` are None in version 1).

    ``creator_account``, ``members`` and ``membership`` are set in version 3
    only (None before). A version 3 package has no single ``registry_seq``:
    there the field holds the creator account's stated position (0 if the
    creator account is not listed, which verification refuses); use
    :func:`registry_seq_for` for any member's.
    """

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
    version: int = KEY_PACKAGE_VERSION
    key_commit: bytes | None = None
    prev_keys: bytes | None = None  # the wrapped earlier keys (AEAD output)
    creator_account: bytes | None = None
    #: (member account id, registry seq), strictly increasing by account id.
    members: tuple[tuple[bytes, int], ...] | None = None
    membership: bytes | None = None  # hash of the membership head the members come from


def registry_seq_for(pkg: KeyPackage, account_id: bytes) -> int | None:
    """The registry position at which ``pkg`` took ``account_id``'s devices.

    Version 3: the member's stated seq, or None if the account is not a member
    of the package. Versions 1 and 2 name one account's position only, which
    this returns whatever ``account_id`` is (the caller knows the account).
    """
    if pkg.members is None:
        return pkg.registry_seq
    return dict(pkg.members).get(account_id)


def package_hash(package_bytes: bytes) -> bytes:
    """Hash that the next epoch's package names as ``prev``."""
    return tagged_hash(labels.KEY_PACKAGE_HASH, package_bytes)


def key_commitment(space: bytes, epoch: int, epoch_key: bytes) -> bytes:
    """The public commitment to an epoch key that a version 2 package carries."""
    return tagged_hash(labels.KEY_PACKAGE_COMMIT, space, epoch, epoch_key)


def _wrap_key_and_nonce(space: bytes, epoch: int, epoch_key: bytes) -> tuple[bytes, bytes]:
    # The wrap key is used for exactly one encryption (each epoch key is fresh
    # random and seals one package), so a nonce derived with it is never reused.
    out = hkdf_sha256(epoch_key, salt=labels.KEY_PACKAGE_WRAP.encode(),
                      info=labelled(labels.KEY_PACKAGE_WRAP, space, epoch),
                      length=32 + AEAD_NONCE_SIZE)
    return out[:32], out[32:]


def _wrap_ad(space: bytes, epoch: int) -> bytes:
    return labelled(labels.KEY_PACKAGE_WRAP, space, epoch)


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
        previous_keys: keys of the epochs just before ``epoch``, oldest first and
            ending with epoch ``epoch - 1``'s (normally just that one; after version
            1 packages, every earlier key the creator holds). The package wraps the
            last :data:`MAX_WRAPPED_KEYS` of them under a key derived from
            ``epoch_key``, so whoever reads this epoch can walk back to epoch 0.

    Raises:
        UsageError: wrong key or seed sizes, or the creator is not active.
    """
    if len(epoch_key) != 32 or len(space) != SPACE_ID_SIZE:
        raise UsageError("epoch key is 32 bytes and space id 16 bytes")
    if not registry.is_active(creator.device_id):
        raise UsageError("only an active device can create a key package")
    targets = {r.device_id: r.public.kx_key for r in registry.active_devices()}
    targets[registry.account_id] = registry.account.recovery_key
    return sign_package(creator, {
        "v": KEY_PACKAGE_VERSION, "space": space, "epoch": epoch,
        "prev": prev if epoch else _ZERO, "creator": creator.device_id, "ts": ts_ms,
        "registry_seq": registry.seq,
        **sealed_fields(targets, space=space, epoch=epoch, epoch_key=epoch_key,
                        previous_keys=previous_keys, ephemeral_seeds=ephemeral_seeds)})


# sealed_fields, sign_package, check_chain and active_at are shared with the
# version 3 builder and verifier (sddsf.protocol.keypackage_v3); not public API.


def sealed_fields(targets: Mapping[bytes, bytes], *, space: bytes, epoch: int,
                  epoch_key: bytes, previous_keys: Sequence[bytes],
                  ephemeral_seeds: Sequence[bytes] | None) -> dict[str, object]:
    """The ``recipients``, ``key_commit`` and ``prev_keys`` body fields (10.2),
    the same in versions 2 and 3.

    Args:
        targets: recipient id -> the X25519 public key its sealed key is for.
        ephemeral_seeds: see :func:`build_key_package` (one per target, in id order).

    Raises:
        UsageError: a wrong seed count or wrong previous keys.
    """
    if ephemeral_seeds is not None and len(ephemeral_seeds) != len(targets):
        raise UsageError(f"need {len(targets)} ephemeral seeds, got {len(ephemeral_seeds)}")
    history = list(previous_keys)[-MAX_WRAPPED_KEYS:]
    if any(len(k) != 32 for k in history) or len(history) > epoch:
        raise UsageError("previous keys are 32 bytes each, at most one per earlier epoch")
    plaintext = labelled(labels.KEY_PACKAGE_SEALED, space, epoch, epoch_key)
    if ephemeral_seeds is None:
        recipients = [[rid, seal(targets[rid], plaintext)] for rid in sorted(targets)]
    else:
        recipients = [[rid, _seal_seeded(targets[rid], plaintext, seed)]
                      for rid, seed in zip(sorted(targets), ephemeral_seeds, strict=True)]
    wrapped: bytes | None = None
    if history:
        key, nonce = _wrap_key_and_nonce(space, epoch, epoch_key)
        wrapped = aead_encrypt(key, nonce, encode(history), _wrap_ad(space, epoch))
    return {"recipients": recipients, "key_commit": key_commitment(space, epoch, epoch_key),
            "prev_keys": wrapped}


def sign_package(creator: DeviceKeys, body: Mapping[str, object]) -> bytes:
    """``[v, body_bytes, signature]``: the body encoded and signed by ``creator``."""
    body_bytes = encode(dict(body))
    return encode([body["v"], body_bytes,
                   creator.sign(labelled(labels.KEY_PACKAGE_SIG, body_bytes))])


def decode_key_package(data: bytes, *,
                       limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> KeyPackage:
    """Decode a key package's structure (no signature or membership checks).

    A device reads its space's stored packages many times per sync (keys,
    holders, the chain's check); the decoded value of a package of at most
    ``_CACHED_MAX`` bytes under the default limits is kept (a pure function of
    the bytes: the same bytes always give the same immutable result; a package
    that does not decode is decoded, and refused, every time).

    Raises:
        DecodeError: malformed, too large or an unsupported version.
    """
    if limits is DEFAULT_PROTOCOL_LIMITS and len(data) <= _CACHED_MAX:
        return _decode_cached(bytes(data))
    return _decode_key_package(data, limits)


#: Packages up to this size are kept decoded (at most _CACHED_COUNT of them:
#: a few MiB at most, whatever the packages).
_CACHED_MAX: Final = 32 * 1024
_CACHED_COUNT: Final = 128


def _decode_key_package(data: bytes, limits: ProtocolLimits) -> KeyPackage:
    dl = limits.decode_limits(limits.max_key_package)
    # A shared space's recipients array is longer than any other array in the
    # protocol; its own bound is checked right after decoding.
    f, body_bytes, signature = decode_signed(
        data, what="key package", version=KEY_PACKAGE_VERSIONS, fields=_FIELDS.__getitem__,
        limits=replace(dl, max_items=max(dl.max_items, MAX_PACKAGE_RECIPIENTS)))
    version = f.int_("v")
    recipients = _decode_recipients(f.list_(
        "recipients", max_items=MAX_PACKAGE_RECIPIENTS if version >= KEY_PACKAGE_VERSION_SHARED
        else limits.max_devices + 1))
    epoch = f.int_("epoch")
    prev = f.bytes_("prev", size=32)
    if epoch == 0 and prev != _ZERO:
        raise DecodeError("key package: epoch 0 has an all-zero prev")
    commit, wrapped = None, None
    if version >= 2:
        commit = f.bytes_("key_commit", size=32)
        raw_wrapped = f.raw("prev_keys")
        if raw_wrapped is not None and (not isinstance(raw_wrapped, bytes) or not
                                        34 + 16 <= len(raw_wrapped) <= _WRAPPED_MAX_BYTES):
            raise DecodeError("key package: prev_keys is null or the wrapped earlier keys "
                              f"(at most {MAX_WRAPPED_KEYS})")
        if epoch == 0 and raw_wrapped is not None:
            raise DecodeError("key package: epoch 0 has no earlier keys to wrap")
        wrapped = raw_wrapped
    space, creator, ts = (f.bytes_("space", size=SPACE_ID_SIZE),
                          f.bytes_("creator", size=ID_SIZE), f.int_("ts"))
    raw = bytes(data)
    if version < KEY_PACKAGE_VERSION_SHARED:
        return KeyPackage(space, epoch, prev, creator, ts, f.int_("registry_seq"), recipients,
                          body_bytes, signature, raw, package_hash(raw), version, commit,
                          wrapped)
    creator_account = f.bytes_("creator_account", size=ID_SIZE)
    members = _decode_members(f.list_("members", max_items=MAX_PACKAGE_MEMBERS))
    return KeyPackage(space, epoch, prev, creator, ts, dict(members).get(creator_account, 0),
                      recipients, body_bytes, signature, raw, package_hash(raw), version,
                      commit, wrapped, creator_account, members,
                      f.bytes_("membership", size=32))


@functools.lru_cache(maxsize=_CACHED_COUNT)
def _decode_cached(data: bytes) -> KeyPackage:
    return _decode_key_package(data, DEFAULT_PROTOCOL_LIMITS)


def _decode_recipients(items: list[object]) -> dict[bytes, bytes]:
    recipients: dict[bytes, bytes] = {}
    previous = b""
    for item in items:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes)
                or len(item[0]) != ID_SIZE or not isinstance(item[1], bytes)
                or len(item[1]) > _SEALED_SIZE):
            raise DecodeError("key package: each recipient is [32-byte id, sealed key]")
        if item[0] <= previous:
            raise DecodeError("key package: recipients must be sorted and unique")
        previous = item[0]
        recipients[item[0]] = item[1]
    return recipients


def _decode_members(items: list[object]) -> tuple[tuple[bytes, int], ...]:
    members: list[tuple[bytes, int]] = []
    previous = b""
    for item in items:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes)
                or len(item[0]) != ID_SIZE or type(item[1]) is not int or item[1] < 0):
            raise DecodeError("key package: each member is [32-byte account id, registry seq]")
        if item[0] <= previous:
            raise DecodeError("key package: members must be sorted and unique")
        previous = item[0]
        members.append((item[0], item[1]))
    if not members:
        raise DecodeError("key package: a version 3 package lists at least one member")
    return tuple(members)


def verify_key_package(data: bytes, *, registry: RegistryState, space: bytes,
                       previous: KeyPackage | None,
                       limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> KeyPackage:
    """Verify a key package against the verified registry and the previous epoch.

    Args:
        registry: the registry state at (or after) the package's ``registry_seq``.
        previous: the verified package of epoch ``epoch - 1`` (None for epoch 0).

    Raises:
        DecodeError, ContextError (a version 3 package, other space, broken epoch
        chain, a version 3 previous package),
        AuthorizationError (creator or a recipient not active, an active device
        or the recovery key missing),
        SignatureError.
    """
    pkg = decode_key_package(data, limits=limits)
    if pkg.version >= KEY_PACKAGE_VERSION_SHARED:
        raise ContextError("key package is a shared space's (version 3); verify it with "
                           "verify_key_package_v3")
    check_chain(pkg, space, previous)
    # A space moves to shared packages once; a one-account package after a
    # shared one would drop the other members without a membership change.
    if previous is not None and previous.version >= KEY_PACKAGE_VERSION_SHARED:
        raise ContextError("a one-account key package (version 2) cannot follow a shared "
                           "space's package (version 3)")
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


def check_chain(pkg: KeyPackage, space: bytes, previous: KeyPackage | None) -> None:
    """The space and epoch-chain checks every version shares (10.5 steps 2-4).

    Raises:
        ContextError: another space, or ``prev`` is not the previous package's hash.
        EpochError: ``unknown_epoch``: the epoch does not follow the previous one.
    """
    if pkg.space != space:
        raise ContextError("key package belongs to another space")
    expected_epoch = 0 if previous is None else previous.epoch + 1
    if pkg.epoch != expected_epoch:
        raise EpochError(f"key package is for epoch {pkg.epoch}, expected {expected_epoch}",
                         Code.UNKNOWN_EPOCH)
    if pkg.prev != (_ZERO if previous is None else previous.hash):
        raise ContextError("key package does not link to the previous epoch's package")


def active_at(registry: RegistryState, seq: int) -> Iterator[DeviceRecord]:
    """The devices active at registry position ``seq``. Device ids are never
    re-added (9.6), so the current verified state answers for any earlier ``seq``."""
    for rec in registry.devices.values():
        if rec.added_seq <= seq and (rec.revoked_seq is None or rec.revoked_seq > seq):
            yield rec


def needs_rotation(pkg: KeyPackage, registry: RegistryState) -> bool:
    """Whether a new epoch is due: a device was revoked after ``pkg`` was made, or a
    device added since is not one of its recipients.

    Writers must not encrypt under an epoch that a revoked device may know:
    when :func:`revoked_since` is not empty, create the next epoch's package
    first (and write nothing until it is stored). The second case is catch-up
    for a device whose adder (or enactor, §9.8) stopped before opening the
    epoch that includes it.
    """
    return bool(revoked_since(pkg, registry)) or any(
        r.revoked_seq is None and r.added_seq > pkg.registry_seq
        and r.device_id not in pkg.recipients for r in registry.devices.values())


def revoked_since(pkg: KeyPackage, registry: RegistryState) -> list[DeviceRecord]:
    """Devices revoked after ``pkg`` was made: each may hold its epoch key, so the
    epoch is compromised for new writes."""
    return [r for r in registry.devices.values()
            if r.revoked_seq is not None and r.revoked_seq > pkg.registry_seq]


def _open_sealed(pkg: KeyPackage, recipient_id: bytes, keypair: X25519KeyPair) -> list[object]:
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
    items = 5 if pkg.version == 1 else 4
    if (not isinstance(value, list) or len(value) != items
            or value[0] != labels.KEY_PACKAGE_SEALED or not isinstance(value[3], bytes)
            or len(value[3]) != 32):
        raise DecryptError("sealed epoch key has the wrong format")
    if value[1] != pkg.space or type(value[2]) is not int or value[2] != pkg.epoch:
        raise ContextError("sealed epoch key was made for another space or epoch")
    return value


def open_epoch_keys(pkg: KeyPackage, recipient_id: bytes,
                    keypair: X25519KeyPair) -> dict[int, bytes]:
    """Unwrap this package's epoch key (and, in version 1, the key history sealed
    with it).

    Returns ``{epoch: key}`` for the package's epoch and, for a version 1
    package, the earlier epochs whose keys it carries; the earlier keys of a
    version 2 package are opened with :func:`unwrap_previous_keys` (or all at
    once with :func:`open_key_history`). Raises as :func:`open_epoch_key`.
    """
    value = _open_sealed(pkg, recipient_id, keypair)
    key = value[3]
    if not isinstance(key, bytes):  # pragma: no cover - checked by _open_sealed
        raise DecryptError("sealed epoch key has the wrong format")
    if pkg.version >= 2:
        _check_commitment(pkg, key)
        return {pkg.epoch: key}
    history = value[4]
    if (not isinstance(history, list) or len(history) > min(pkg.epoch, MAX_KEY_HISTORY)
            or any(not isinstance(k, bytes) or len(k) != 32 for k in history)):
        raise DecryptError("sealed epoch key has the wrong format")
    keys: dict[int, bytes] = {pkg.epoch - len(history) + i: k for i, k in enumerate(history)}
    keys[pkg.epoch] = key
    return keys


def _check_commitment(pkg: KeyPackage, key: bytes) -> None:
    if pkg.key_commit is not None and key_commitment(pkg.space, pkg.epoch,
                                                     key) != pkg.key_commit:
        raise DecryptError(f"the key of epoch {pkg.epoch} does not match its package's "
                           "key commitment (its creator gave devices different keys)")


def open_epoch_key(pkg: KeyPackage, recipient_id: bytes, keypair: X25519KeyPair) -> bytes:
    """Unwrap the epoch key for ``recipient_id`` (a device id, or the account id).

    Raises:
        AuthorizationError: the package has no key for this recipient.
        DecryptError: the sealed key does not open, is not in the sealed-key
            format, or (version 2) does not match the package's key commitment.
        ContextError: the sealed key names another space or epoch.
    """
    return open_epoch_keys(pkg, recipient_id, keypair)[pkg.epoch]


def unwrap_previous_keys(pkg: KeyPackage, epoch_key: bytes) -> dict[int, bytes]:
    """The earlier epoch keys a version 2 package wraps, opened with its own epoch
    key: ``{epoch: key}`` for epochs ``pkg.epoch - n .. pkg.epoch - 1`` (empty for
    version 1 or when it wraps none).

    Raises:
        DecryptError: ``epoch_key`` is not this package's key, or the wrapped keys
            were tampered with or are not a list of 32-byte keys.
    """
    if pkg.version < 2 or pkg.prev_keys is None:
        return {}
    _check_commitment(pkg, epoch_key)
    key, nonce = _wrap_key_and_nonce(pkg.space, pkg.epoch, epoch_key)
    plaintext = aead_decrypt(key, nonce, pkg.prev_keys, _wrap_ad(pkg.space, pkg.epoch))
    try:
        value = decode(plaintext, limits=_WRAPPED_LIMITS)
    except DecodeError:
        raise DecryptError("the wrapped earlier keys have the wrong format") from None
    if (not isinstance(value, list) or not 0 < len(value) <= min(pkg.epoch, MAX_WRAPPED_KEYS)
            or any(not isinstance(k, bytes) or len(k) != 32 for k in value)):
        raise DecryptError("the wrapped earlier keys have the wrong format")
    return {pkg.epoch - len(value) + i: bytes(k) for i, k in enumerate(value)}


def open_key_history(packages: Sequence[KeyPackage], recipient_id: bytes,
                     keypair: X25519KeyPair) -> dict[int, bytes]:
    """Every epoch key of a space that ``recipient_id`` can read.

    ``packages`` is the space's verified chain (any order). The recipient opens
    each package that lists it; then, from the newest epoch down, each version 2
    package whose key is known unwraps the earlier keys it carries, until every
    epoch is known or the walk reaches a version 1 package it cannot open. A key
    learnt this way must match its own package's commitment.

    Raises:
        DecryptError, ContextError: a sealed or wrapped key that does not open or
            does not match its package (the creator misbehaved).
    """
    by_epoch = {p.epoch: p for p in packages}
    keys: dict[int, bytes] = {}
    for pkg in packages:
        if recipient_id in pkg.recipients:
            for epoch, key in open_epoch_keys(pkg, recipient_id, keypair).items():
                keys.setdefault(epoch, key)
    missing = {e for e in by_epoch if e not in keys}
    low = min(missing, default=None)
    for epoch in sorted(by_epoch, reverse=True):
        if low is None or epoch <= low:
            break  # every epoch is known, or none below this one can be learnt
        if epoch not in keys:
            continue
        for earlier, key in unwrap_previous_keys(by_epoch[epoch], keys[epoch]).items():
            if earlier in by_epoch:
                _check_commitment(by_epoch[earlier], key)
            keys.setdefault(earlier, key)
            missing.discard(earlier)
        if low not in missing:
            low = min(missing, default=None)
    return keys
