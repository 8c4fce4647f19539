"""Pairing a new device: the code, SPAKE2 keys, the short authentication
string, key confirmation and the sealed messages (sans-IO).

The approving device (``initiator``) opens a relay mailbox and shows a
pairing code: ``channel_id (16) || password (6) || check (2)`` in base32,
grouped by four. The new device (``joiner``) types it (or scans the QR code).
Both run SPAKE2 on ``password`` through the mailbox, so the relay, which sees
the channel id and the SPAKE2 messages, learns nothing that allows an offline
guess; an online guess burns the channel. From the SPAKE2 key ``K`` and the
two SPAKE2 messages (the transcript) both derive:

* two AEAD keys, one per direction (``PAIRING_KEY``);
* the short authentication string: five words of the BIP39 English list
  (55 bits, ``PAIRING_SAS``) that the person compares on both screens;
* confirmation tags ``tagged_hash(PAIRING_CONFIRM, K, role, transcript)``.

Messages through the mailbox (canonical CBOR maps, ``v`` = 1):

1. initiator ``{"v","t":"pake","m"}``; joiner ``{"v","t":"pake","m"}``
2. joiner ``{"v","t":"hello","c": confirm(joiner),"box"}``, where ``box`` seals
   ``{"sign","kx","name"}`` (its public keys and name)
3. initiator ``{"v","t":"offer","c": confirm(initiator),"box"}``, where ``box``
   seals ``{"body","account_sign","account_recovery","relay_key"}``: the
   add-device registry entry body it signed, the account's public keys, and
   the relay key it pinned
4. joiner ``{"v","t":"cosign","box"}``, where ``box`` seals ``{"cosig"}``, its
   countersignature over the body
5. initiator ``{"v","t":"done","box"}``, where ``box`` seals ``{"seq"}``: the
   registry seq at which the entry was appended

A wrong code gives different keys, so the first confirmation tag fails: the
initiator burns the channel and both sides stop.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final

from sddsf.crypto import (
    AEAD_NONCE_SIZE,
    aead_decrypt,
    aead_encrypt,
    blake2b_256,
    constant_time_equal,
    hkdf_sha256,
)
from sddsf.errors import AuthenticationError, Code, DecodeError, UsageError
from sddsf.protocol import labels
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.labels import labelled, tagged_hash
from sddsf.protocol.schema import Fields, expect_map

__all__ = [
    "CHANNEL_ID_SIZE",
    "PAIRING_VERSION",
    "PASSWORD_SIZE",
    "PairingCode",
    "PairingKeys",
    "decode_code",
    "encode_code",
    "open_message",
    "pairing_keys",
    "seal_message",
]

PAIRING_VERSION: Final = 1
CHANNEL_ID_SIZE: Final = 16
PASSWORD_SIZE: Final = 6  # 48 bits: online guessing only, and one guess burns the channel
_CHECK_SIZE: Final = 2
_SAS_WORDS: Final = 5
_MAX_MESSAGE: Final = 64 * 1024
_ROLES: Final = ("initiator", "joiner")


@dataclass(frozen=True, slots=True)
class PairingCode:
    """What the pairing code carries."""

    channel_id: bytes
    password: bytes


def encode_code(channel_id: bytes, password: bytes) -> str:
    """The human-typable pairing code (base32 groups of four, with a checksum)."""
    if len(channel_id) != CHANNEL_ID_SIZE or len(password) != PASSWORD_SIZE:
        raise UsageError("a pairing code holds a 16-byte channel id and a 6-byte password")
    raw = channel_id + password
    text = base64.b32encode(raw + blake2b_256(raw)[:_CHECK_SIZE]).decode().rstrip("=")
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def decode_code(code: str) -> PairingCode:
    """Parse a pairing code typed or scanned by a person.

    Raises:
        UsageError: not a pairing code, or a typo (the checksum does not match).
    """
    text = "".join(code.split()).replace("-", "").upper()
    size = CHANNEL_ID_SIZE + PASSWORD_SIZE + _CHECK_SIZE
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise UsageError("that is not a pairing code: copy it exactly as `sddsf device add` "
                         "shows it (groups of letters and digits 2-7)")
    body, check = raw[:-_CHECK_SIZE], raw[-_CHECK_SIZE:]
    if not constant_time_equal(blake2b_256(body)[:_CHECK_SIZE], check):
        raise UsageError("the pairing code has a typo (its checksum does not match); "
                         "check it against the other device's screen")
    return PairingCode(body[:CHANNEL_ID_SIZE], body[CHANNEL_ID_SIZE:])


@dataclass(frozen=True, slots=True, repr=False)
class PairingKeys:
    """Everything derived from the SPAKE2 key and the transcript."""

    send: bytes
    receive: bytes
    my_confirm: bytes
    peer_confirm: bytes
    sas: tuple[str, ...]

    def check_peer(self, tag: bytes) -> None:
        """Check the peer's confirmation tag.

        Raises:
            AuthenticationError: the peer derived another key (``unauthenticated``):
                a wrong pairing code, or someone in the middle.
        """
        if not constant_time_equal(tag, self.peer_confirm):
            raise AuthenticationError("the pairing code did not match on the other device "
                                      "(a wrong code or an interception); the channel is "
                                      "burnt: start again with a new code",
                                      Code.UNAUTHENTICATED)


def pairing_keys(role: str, key: bytes, initiator_msg: bytes, joiner_msg: bytes,
                 wordlist: list[str]) -> PairingKeys:
    """Derive the channel keys, confirmation tags and SAS for ``role``."""
    if role not in _ROLES:
        raise UsageError("a pairing role is 'initiator' or 'joiner'")
    if len(wordlist) != 2048:
        raise UsageError("the SAS word list has 2048 words")
    transcript = tagged_hash(labels.PAIRING_KEY, initiator_msg, joiner_msg)

    def direction(sender: str) -> bytes:
        return hkdf_sha256(key, salt=labels.PAIRING_KEY.encode(),
                           info=labelled(labels.PAIRING_KEY, sender, transcript))

    def confirm(sender: str) -> bytes:
        return tagged_hash(labels.PAIRING_CONFIRM, key, sender, transcript)

    sas_bits = int.from_bytes(tagged_hash(labels.PAIRING_SAS, key, transcript), "big")
    words = tuple(wordlist[(sas_bits >> (11 * i)) & 0x7FF] for i in range(_SAS_WORDS))
    peer = "joiner" if role == "initiator" else "initiator"
    return PairingKeys(send=direction(role), receive=direction(peer),
                       my_confirm=confirm(role), peer_confirm=confirm(peer), sas=words)


def seal_message(kind: str, key: bytes | None, nonce: bytes, *, payload: dict[str, object]
                 | None = None, extra: dict[str, object] | None = None) -> bytes:
    """A mailbox message of type ``kind``; ``payload`` is sealed under ``key``.

    ``extra`` fields travel in the clear (only ``m``, the SPAKE2 message, and
    ``c``, a confirmation tag).
    """
    msg: dict[str, object] = {"v": PAIRING_VERSION, "t": kind, **(extra or {})}
    if payload is not None:
        if key is None or len(nonce) != AEAD_NONCE_SIZE:
            raise UsageError("a sealed pairing message needs a key and a 24-byte nonce")
        ad = labelled(labels.PAIRING_KEY, kind)
        msg["box"] = nonce + aead_encrypt(key, nonce, encode(payload), ad)
    return encode(msg)


def open_message(data: bytes, kind: str, key: bytes | None, *,
                 clear: tuple[str, ...] = ()) -> tuple[Fields, Fields]:
    """Decode a mailbox message of the expected ``kind``; open its box with ``key``.

    Returns the outer fields and the opened payload (None without a box).

    Raises:
        DecodeError: malformed, too large, or not the expected message type.
        DecryptError: the box does not open (another key: a wrong code).
    """
    if len(data) > _MAX_MESSAGE:
        raise DecodeError("pairing message too large", Code.TOO_LARGE)
    value = decode(data)
    if isinstance(value, dict) and value.get("t") != kind:
        raise DecodeError(f"expected a pairing {kind!r} message, got {value.get('t')!r}")
    outer = expect_map(value, "pairing message",
                       ("v", "t", *clear, *(("box",) if key is not None else ())))
    if outer.int_("v") != PAIRING_VERSION:
        raise DecodeError("unsupported pairing message version", Code.UNSUPPORTED_VERSION)
    if key is None:
        return outer, Fields({}, f"pairing {kind}")
    box = outer.bytes_("box", max_size=_MAX_MESSAGE)
    if len(box) < AEAD_NONCE_SIZE + 16:
        raise DecodeError("pairing message box is too short")
    plain = aead_decrypt(key, box[:AEAD_NONCE_SIZE], box[AEAD_NONCE_SIZE:],
                         labelled(labels.PAIRING_KEY, kind))
    inner = decode(plain)
    if not isinstance(inner, dict):
        raise DecodeError("pairing payload: expected a map")
    return outer, Fields({k: v for k, v in inner.items()}, f"pairing {kind}")
