"""Presence records: where a device of a space can be reached peer to peer.

In hybrid mode devices find each other through the relay: each device
publishes, per space, a short-lived record naming its libp2p peer id and
multiaddrs, and reads the records of the space's other devices
(``docs/protocol.md`` section 23.5). The relay stores and serves the records
(it checks the signature and the expiry) but cannot read them.

Wire form (canonical CBOR)::

    record    = [version, space, epoch, device, expires_ms, nonce, ciphertext, signature]
    plaintext = {"peer": tstr, "addrs": [tstr, ...], "ts": uint}

* ``key`` = HKDF-SHA256(ikm = the space's epoch key, salt = PRESENCE_KEY,
  info = labelled(PRESENCE_KEY, space, epoch)): every device holding the
  epoch key reads every record of that epoch; nobody else (the relay) can.
* ``ciphertext`` = XChaCha20-Poly1305(key, nonce, E(plaintext),
  ad = labelled(PRESENCE_AD, space, epoch, device, expires_ms, nonce)).
* ``signature`` = Ed25519 by ``device`` over
  labelled(PRESENCE_SIG, space, epoch, device, expires_ms, nonce, ciphertext):
  the relay checks it without the key, and a member cannot publish a record
  in another device's name.

Every field a relay could move is in both the AD and the signature, so a record
cannot be replayed into another space, epoch or device, nor its expiry
extended. This module is pure: time (``now_ms``) and the nonce are parameters.

Checks by step: :func:`decode_presence` (structure, bounded), then
:func:`verify_presence` (signer, signature, space, expiry: what the relay and
every reader check), then :func:`open_presence` (decryption, plaintext).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sddsf.crypto import (
    AEAD_KEY_SIZE,
    AEAD_NONCE_SIZE,
    AEAD_TAG_SIZE,
    ED25519_SIG_SIZE,
    aead_decrypt,
    aead_encrypt,
    hkdf_sha256,
)
from sddsf.errors import (
    AuthorizationError,
    ClockSkewError,
    Code,
    ContextError,
    DecodeError,
    SignatureError,
    UsageError,
)
from sddsf.protocol import labels
from sddsf.protocol.encoding import DecodeLimits, decode, encode
from sddsf.protocol.envelope import SPACE_ID_SIZE
from sddsf.protocol.identity import ID_SIZE, DeviceKeys, DevicePublic
from sddsf.protocol.labels import labelled
from sddsf.protocol.registry import RegistryState
from sddsf.protocol.schema import check_version, expect_map

__all__ = [
    "MAX_PRESENCE_ADDRS",
    "MAX_PRESENCE_ADDR_CHARS",
    "MAX_PRESENCE_PEER_CHARS",
    "MAX_PRESENCE_RECORD",
    "MAX_PRESENCE_TTL_MS",
    "PRESENCE_VERSION",
    "Presence",
    "PresenceRecord",
    "decode_presence",
    "open_presence",
    "presence_key",
    "seal_presence",
    "verify_presence",
]

PRESENCE_VERSION: Final = 1
#: The largest encoded record (checked before decoding; a seal that would
#: exceed it is refused).
MAX_PRESENCE_RECORD: Final = 2048
#: The longest a record may live: ``expires_ms`` is at most this far ahead of
#: the sealer's clock, and of the relay's when it stores the record.
MAX_PRESENCE_TTL_MS: Final = 3_600_000
MAX_PRESENCE_ADDRS: Final = 16
MAX_PRESENCE_ADDR_CHARS: Final = 256
MAX_PRESENCE_PEER_CHARS: Final = 128
_FIELDS: Final = 8
_U64: Final = 2**64 - 1
# The plaintext is one flat map; the record bound covers it (it is shorter).
_PLAIN_LIMITS: Final = DecodeLimits(max_size=MAX_PRESENCE_RECORD, max_depth=2,
                                    max_items=MAX_PRESENCE_ADDRS + 3)
# Room for a later version's extra fields, so that it is reported as such.
_RECORD_LIMITS: Final = DecodeLimits(max_size=MAX_PRESENCE_RECORD, max_depth=1,
                                     max_items=2 * _FIELDS)


@dataclass(frozen=True, slots=True)
class PresenceRecord:
    """A decoded, not yet verified, presence record (``raw``: its exact bytes)."""

    space: bytes
    epoch: int
    device: bytes
    expires_ms: int
    nonce: bytes
    ciphertext: bytes
    signature: bytes
    raw: bytes

    def signed_message(self) -> bytes:
        """What the device signs: every field but the version and the signature."""
        return _signed(self.space, self.epoch, self.device, self.expires_ms, self.nonce,
                       self.ciphertext)


@dataclass(frozen=True, slots=True)
class Presence:
    """Where the device can be reached: its libp2p peer id and multiaddrs, as of
    ``ts`` (the sealer's clock, ms)."""

    peer: str
    addrs: tuple[str, ...]
    ts: int


def presence_key(epoch_key: bytes, space: bytes, epoch: int) -> bytes:
    """The key that encrypts every presence record of ``space`` in ``epoch``.

    Args:
        epoch_key: the space's 32-byte key of ``epoch``.
        space: the 16-byte space id.
        epoch: the key epoch.

    Returns:
        HKDF-SHA256(epoch_key, salt = PRESENCE_KEY, info = labelled(PRESENCE_KEY,
        space, epoch)), 32 bytes.

    Raises:
        UsageError: an epoch key that is not 32 bytes.
    """
    if len(epoch_key) != AEAD_KEY_SIZE:
        raise UsageError("an epoch key is 32 bytes")
    return hkdf_sha256(epoch_key, salt=labels.PRESENCE_KEY.encode(),
                       info=labelled(labels.PRESENCE_KEY, space, epoch))


def _ad(space: bytes, epoch: int, device: bytes, expires_ms: int, nonce: bytes) -> bytes:
    return labelled(labels.PRESENCE_AD, space, epoch, device, expires_ms, nonce)


def _signed(space: bytes, epoch: int, device: bytes, expires_ms: int, nonce: bytes,
            ciphertext: bytes) -> bytes:
    return labelled(labels.PRESENCE_SIG, space, epoch, device, expires_ms, nonce, ciphertext)


def seal_presence(device: DeviceKeys, *, space: bytes, epoch: int, epoch_key: bytes,
                  peer: str, addrs: tuple[str, ...] | list[str], now_ms: int, ttl_ms: int,
                  nonce: bytes) -> bytes:
    """Encrypt and sign ``device``'s presence in ``space``, valid until ``now_ms + ttl_ms``.

    Args:
        device: the publishing device's keys (it signs the record).
        space: the 16-byte space id.
        epoch: the key epoch whose key encrypts the record (the current one).
        epoch_key: that epoch's 32-byte key.
        peer: the device's libp2p peer id (1 to 128 characters).
        addrs: its multiaddrs (at most 16, each at most 256 characters).
        now_ms: the device's clock (the plaintext's ``ts``).
        ttl_ms: how long the record is valid, 1 .. :data:`MAX_PRESENCE_TTL_MS`.
        nonce: 24 fresh random bytes.

    Returns:
        The encoded record, at most :data:`MAX_PRESENCE_RECORD` bytes.

    Raises:
        UsageError: an argument out of range or of the wrong size, or a record
            over :data:`MAX_PRESENCE_RECORD` bytes (fewer or shorter addresses).
    """
    addrs = tuple(addrs)
    _check_seal_args(space, epoch, nonce, peer, addrs, now_ms, ttl_ms)
    expires_ms = now_ms + ttl_ms
    plaintext = encode({"peer": peer, "addrs": list(addrs), "ts": now_ms})
    ciphertext = aead_encrypt(presence_key(epoch_key, space, epoch), nonce, plaintext,
                              _ad(space, epoch, device.device_id, expires_ms, nonce))
    signature = device.sign(_signed(space, epoch, device.device_id, expires_ms, nonce,
                                    ciphertext))
    raw = encode([PRESENCE_VERSION, space, epoch, device.device_id, expires_ms, nonce,
                  ciphertext, signature])
    if len(raw) > MAX_PRESENCE_RECORD:
        raise UsageError(f"a presence record of {len(raw)} bytes exceeds the limit of "
                         f"{MAX_PRESENCE_RECORD}: publish fewer or shorter addresses")
    return raw


def _check_seal_args(space: bytes, epoch: int, nonce: bytes, peer: str, addrs: tuple[str, ...],
                     now_ms: int, ttl_ms: int) -> None:
    if len(space) != SPACE_ID_SIZE or len(nonce) != AEAD_NONCE_SIZE:
        raise UsageError("a presence record takes a 16-byte space id and a 24-byte nonce")
    if not 0 <= epoch <= _U64 or now_ms < 0:
        raise UsageError("the epoch and the clock are unsigned integers")
    if not 0 < ttl_ms <= MAX_PRESENCE_TTL_MS or now_ms + ttl_ms > _U64:
        raise UsageError(f"a presence record lives 1 to {MAX_PRESENCE_TTL_MS} ms, "
                         f"not {ttl_ms}")
    if not isinstance(peer, str) or not 0 < len(peer) <= MAX_PRESENCE_PEER_CHARS:
        raise UsageError(f"a peer id has 1 to {MAX_PRESENCE_PEER_CHARS} characters")
    if len(addrs) > MAX_PRESENCE_ADDRS or any(
            not isinstance(a, str) or len(a) > MAX_PRESENCE_ADDR_CHARS for a in addrs):
        raise UsageError(f"at most {MAX_PRESENCE_ADDRS} addresses of at most "
                         f"{MAX_PRESENCE_ADDR_CHARS} characters each")


def decode_presence(data: bytes) -> PresenceRecord:
    """Decode a record's structure (no signature, expiry or decryption check).

    Args:
        data: the record's bytes, untrusted.

    Returns:
        The decoded record.

    Raises:
        DecodeError: ``too_large`` beyond :data:`MAX_PRESENCE_RECORD` bytes
            (checked first); ``unsupported_version`` for another version;
            ``malformed`` for anything else that is not a record.
    """
    if len(data) > MAX_PRESENCE_RECORD:
        raise DecodeError(f"a presence record of {len(data)} bytes exceeds the limit of "
                          f"{MAX_PRESENCE_RECORD}", Code.TOO_LARGE)
    value = decode(data, limits=_RECORD_LIMITS)
    if not isinstance(value, list) or not value:
        raise DecodeError("presence record: expected an array")
    # The version first: a later version with other fields is reported as such.
    check_version(value[0], PRESENCE_VERSION, "presence record")
    if len(value) != _FIELDS:
        raise DecodeError(f"presence record: expected {_FIELDS} items, got {len(value)}")
    _, space, epoch, device, expires_ms, nonce, ciphertext, signature = value
    if not (_bstr(space, SPACE_ID_SIZE) and _uint(epoch) and _bstr(device, ID_SIZE)
            and _uint(expires_ms) and _bstr(nonce, AEAD_NONCE_SIZE)
            and isinstance(ciphertext, bytes) and len(ciphertext) >= AEAD_TAG_SIZE
            and _bstr(signature, ED25519_SIG_SIZE)):
        raise DecodeError("presence record: expected [1, space bstr(16), epoch uint, device "
                          "bstr(32), expires_ms uint, nonce bstr(24), ciphertext bstr(>=16), "
                          "signature bstr(64)]")
    return PresenceRecord(space, epoch, device, expires_ms, nonce, ciphertext, signature,
                          bytes(data))


def _bstr(value: object, size: int) -> bool:
    return isinstance(value, bytes) and len(value) == size


def _uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64


def verify_presence(record: PresenceRecord, signer: DevicePublic | RegistryState, *,
                    space: bytes, now_ms: int, max_skew_ms: int = 0) -> None:
    """Check that ``record`` is ``signer``'s live presence in ``space``.

    Args:
        record: a decoded record.
        signer: the record's device (its public identity), or the verified
            registry of the account the device belongs to (the device must be
            active in it).
        space: the space the record was fetched for.
        now_ms: the verifier's clock.
        max_skew_ms: how far ahead of ``now_ms + MAX_PRESENCE_TTL_MS`` the
            expiry may be (the sealer's clock may run ahead of the verifier's;
            the relay allows none).

    Raises:
        AuthorizationError: ``unknown_device`` (the registry does not list the
            record's device, or ``signer`` is another device), ``revoked``.
        SignatureError: ``sig_invalid``.
        ContextError: ``wrong_context`` for a record of another space.
        ClockSkewError: ``presence_expired`` when ``expires_ms <= now_ms``;
            ``clock_skew`` when it is beyond ``now_ms + MAX_PRESENCE_TTL_MS +
            max_skew_ms``.
    """
    key = _signing_key(record.device, signer)
    if not key.signing_key.is_valid_signature(record.signed_message(), record.signature):
        raise SignatureError("the presence record's signature does not verify")
    if record.space != space:
        raise ContextError("the presence record belongs to another space")
    if record.expires_ms <= now_ms:
        raise ClockSkewError(f"the presence record expired {now_ms - record.expires_ms} ms "
                             "ago", Code.PRESENCE_EXPIRED)
    if record.expires_ms - now_ms > MAX_PRESENCE_TTL_MS + max_skew_ms:
        raise ClockSkewError(f"the presence record expires more than {MAX_PRESENCE_TTL_MS} ms "
                             "from now (is the device's clock ahead?)")


def _signing_key(device: bytes, signer: DevicePublic | RegistryState) -> DevicePublic:
    if isinstance(signer, DevicePublic):
        if signer.device_id != device:
            raise AuthorizationError("the presence record is another device's",
                                     Code.UNKNOWN_DEVICE)
        return signer
    entry = signer.device(device)
    if entry is None:
        raise AuthorizationError("the presence record's device is not in the account's "
                                 "registry", Code.UNKNOWN_DEVICE)
    if not signer.is_active(device):
        raise AuthorizationError("the presence record's device has been revoked", Code.REVOKED)
    return entry.public


def open_presence(record: PresenceRecord, epoch_key: bytes) -> Presence:
    """Decrypt a record (verify it first: decryption alone does not name the signer).

    Args:
        record: a decoded record.
        epoch_key: the space's key of ``record.epoch``.

    Returns:
        The device's peer id, addresses and the time it sealed them.

    Raises:
        DecryptError: ``decrypt_failed`` (another key, or a changed record).
        DecodeError: ``too_large`` for more than :data:`MAX_PRESENCE_ADDRS`
            addresses; ``malformed`` for any other plaintext that is not the
            map of protocol.md 23.5 (including a ``ts`` not within
            :data:`MAX_PRESENCE_TTL_MS` before ``expires_ms``).
        UsageError: an epoch key that is not 32 bytes.
    """
    plaintext = aead_decrypt(presence_key(epoch_key, record.space, record.epoch),
                             record.nonce, record.ciphertext,
                             _ad(record.space, record.epoch, record.device,
                                 record.expires_ms, record.nonce))
    f = expect_map(decode(plaintext, limits=_PLAIN_LIMITS), "presence", ("peer", "addrs", "ts"))
    peer = f.str_("peer", max_len=MAX_PRESENCE_PEER_CHARS)
    addrs = f.list_("addrs", max_items=MAX_PRESENCE_ADDRS)
    ts = f.int_("ts")
    if not peer:
        raise DecodeError("presence.peer: empty")
    if not all(isinstance(a, str) and len(a) <= MAX_PRESENCE_ADDR_CHARS for a in addrs):
        raise DecodeError(f"presence.addrs: text of at most {MAX_PRESENCE_ADDR_CHARS} "
                          "characters each")
    # An honest sealer writes expires_ms = ts + ttl with 0 < ttl <= the maximum.
    if not 0 < record.expires_ms - ts <= MAX_PRESENCE_TTL_MS:
        raise DecodeError("presence: its time is not within the record's lifetime")
    return Presence(peer, tuple(str(a) for a in addrs), ts)
