"""libp2p peer ids of SDDSF devices, and the device id behind a peer id.

A device's libp2p identity is its Ed25519 signing key, so its peer id is the
standard identity-multihash Ed25519 peer id (``12D3KooW...``): the base58btc text
of the 38 bytes::

    00 24                  identity multihash, 36 bytes of digest
    08 01 12 20 <key 32>   protobuf PublicKey{Type: Ed25519, Data: key}

The peer id therefore *contains* the public key, and the device id is
``tagged_hash(DEVICE_ID, key)`` (:func:`sddsf.protocol.identity.device_id_of`).
Noise proves the remote holds that key, so a connection's peer id names its device.

This module does no I/O and does not import libp2p (only the base58 codec it
brings): it is the bounded decoder at
the edge for peer id text that arrives from the network (mDNS records, dialled
addresses, pubsub ``from`` fields).
"""

from __future__ import annotations

from typing import Final

import base58  # (a dependency of libp2p and its multiaddr)

from sddsf.crypto import Ed25519PublicKey
from sddsf.errors import Code, DecodeError
from sddsf.protocol.identity import device_id_of

__all__ = ["device_of", "peer_id_bytes_of", "peer_id_of", "signing_public_of"]

#: The 6 bytes before the key in an Ed25519 identity-multihash peer id.
_ED25519_PREFIX: Final = bytes((0x00, 0x24, 0x08, 0x01, 0x12, 0x20))
_PEER_ID_SIZE: Final = len(_ED25519_PREFIX) + 32
#: Longest base58 text of 38 bytes is 52 characters; anything longer is refused
#: before decoding (the decoder is quadratic in the length).
_MAX_TEXT: Final = 60


def _b58encode(data: bytes) -> str:
    return base58.b58encode(data).decode("ascii")


def _b58decode(text: str) -> bytes:
    try:
        return base58.b58decode(text)
    except ValueError:
        raise DecodeError("peer id has a character outside base58", Code.MALFORMED) from None


def peer_id_bytes_of(signing_public: bytes) -> bytes:
    """The binary peer id (identity multihash) of a device signing public key.

    Args:
        signing_public: The device's 32-byte Ed25519 public key.

    Returns:
        The 38 bytes of the peer id.

    Raises:
        KeyValidationError: the key is not a usable Ed25519 key.
    """
    return _ED25519_PREFIX + Ed25519PublicKey.from_bytes(signing_public).raw


def peer_id_of(signing_public: bytes) -> str:
    """The peer id text (base58btc, ``12D3KooW...``) of a device signing public key.

    Args:
        signing_public: The device's 32-byte Ed25519 public key.

    Returns:
        The peer id as libp2p prints it.

    Raises:
        KeyValidationError: the key is not a usable Ed25519 key.
    """
    return _b58encode(peer_id_bytes_of(signing_public))


def _key_of_bytes(raw: bytes) -> bytes:
    if len(raw) != _PEER_ID_SIZE or not raw.startswith(_ED25519_PREFIX):
        raise DecodeError("peer id is not an Ed25519 identity-multihash peer id "
                          "(SDDSF devices use Ed25519 keys)", Code.UNSUPPORTED_SUITE)
    return Ed25519PublicKey.from_bytes(raw[len(_ED25519_PREFIX):]).raw


def signing_public_of(peer_id: str | bytes) -> bytes:
    """The Ed25519 public key inside a peer id.

    Args:
        peer_id: The peer id as text (base58btc) or as its binary multihash.

    Returns:
        The 32-byte public key, validated (canonical, prime order).

    Raises:
        DecodeError: not base58 or too long (``malformed``), or not an Ed25519
            identity-multihash peer id (``unsupported_suite``: RSA, secp256k1 and
            hashed peer ids do not carry an SDDSF device key).
        KeyValidationError: the embedded key is low-order or non-canonical.
    """
    if isinstance(peer_id, bytes):
        return _key_of_bytes(peer_id)
    if len(peer_id) > _MAX_TEXT:
        raise DecodeError(f"peer id is longer than {_MAX_TEXT} characters", Code.MALFORMED)
    return _key_of_bytes(_b58decode(peer_id))


def device_of(peer_id: str | bytes) -> bytes:
    """The SDDSF device id of the device behind a peer id.

    Args:
        peer_id: The peer id as text (base58btc) or as its binary multihash.

    Returns:
        ``tagged_hash(DEVICE_ID, key)`` of the Ed25519 key the peer id carries
        (32 bytes), the id the device registry knows the device by.

    Raises:
        DecodeError: not an Ed25519 identity-multihash peer id (see
            :func:`signing_public_of`).
        KeyValidationError: the embedded key is low-order or non-canonical.
    """
    return device_id_of(signing_public_of(peer_id))
