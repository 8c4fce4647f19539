"""Peer-to-peer sync messages (protocol.md section 23): the space topic of a key
epoch, what travels on it, and the catch-up exchange.

Everything here is structure and derivation only. What a message carries is
judged by the same rules as anything pulled from a relay: op envelopes by
:func:`sddsf.protocol.rules.verify_op`, registry entries by
:meth:`sddsf.protocol.registry.RegistryState.apply`, key packages by the key
package verifiers. A peer is trusted for nothing but availability, exactly as
the relay is; without the relay's log it cannot prove order or omission.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sddsf.crypto import hkdf_sha256
from sddsf.errors import Code, DecodeError, UsageError
from sddsf.protocol import labels
from sddsf.protocol.encoding import DecodeLimits, decode, encode
from sddsf.protocol.identity import ID_SIZE
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS
from sddsf.protocol.schema import check_version, expect_list

__all__ = [
    "MAX_AUTHORS",
    "MAX_GOSSIP_OPS",
    "MAX_MESSAGE",
    "MAX_RESPONSE_OPS",
    "SYNC_PROTOCOL",
    "TOPIC_PREFIX",
    "CatchUpRequest",
    "CatchUpResponse",
    "Gossip",
    "GossipKind",
    "decode_gossip",
    "decode_request",
    "decode_response",
    "encode_gossip",
    "encode_request",
    "encode_response",
    "pack_ops",
    "space_topic",
]

#: The libp2p protocol id of the catch-up exchange (one request, one response per stream).
SYNC_PROTOCOL = "/sddsf/sync/1.0.0"
#: Every space topic starts with this (the rest is secret: derived from the epoch key).
TOPIC_PREFIX = "sddsf/p2p/1/"
#: The largest gossip message or catch-up message, in bytes.
MAX_MESSAGE = 4 << 20
#: A gossip message carries at most this many ops (23.3).
MAX_GOSSIP_OPS = 1024
#: A catch-up response carries at most this many ops (``more`` says there are others).
MAX_RESPONSE_OPS = 1000
#: A catch-up request names at most this many authors.
MAX_AUTHORS = 4096
#: Registry entries or key packages in one message, at most.
_MAX_SIGNED = 1024
_LIMITS = DecodeLimits(max_size=MAX_MESSAGE, max_depth=4, max_items=8192)
_VERSION = 1
_SPACE = 16


def space_topic(space_id: bytes, epoch: int, epoch_key: bytes) -> str:
    """The pubsub topic of a space during one key epoch (23.2).

    Only holders of the epoch key can compute it, so outsiders (and devices
    revoked before the epoch) cannot find the topic, and it changes with
    every rotation.

    Args:
        space_id: The space (16 bytes).
        epoch: The key epoch.
        epoch_key: That epoch's 32-byte key.

    Returns:
        ``"sddsf/p2p/1/"`` followed by the hex of 16 derived bytes.

    Raises:
        Nothing of its own.
    """
    salt = labels.P2P_TOPIC.encode()
    derived = hkdf_sha256(epoch_key, salt=salt,
                          info=labels.labelled(labels.P2P_TOPIC, space_id, epoch), length=16)
    return TOPIC_PREFIX + derived.hex()


class GossipKind:
    """What a gossip message carries (its second item)."""

    OP = 0  #: signed, encrypted op envelopes (one or more, at most MAX_GOSSIP_OPS)
    REGISTRY = 1  #: registry entries of the sender's account, consecutive from ``first``


@dataclass(frozen=True, slots=True)
class Gossip:
    """One message on a space topic: ops, or registry entries from ``first``."""

    kind: int
    items: tuple[bytes, ...]
    first: int = 0


def encode_gossip(message: Gossip) -> bytes:
    """``[1, kind, first, [items]]`` (23.3).

    Raises:
        Nothing of its own.
    """
    return encode([_VERSION, message.kind, message.first, list(message.items)])


def decode_gossip(data: bytes) -> Gossip:
    """Decode a gossip message (structure only: judge what it carries).

    Raises:
        DecodeError: ``too_large``, ``malformed`` or ``unsupported_version``.
    """
    items = _outer(data, "gossip message", 4)
    kind, first = _uint(items[1], "gossip.kind"), _uint(items[2], "gossip.first")
    if kind not in (GossipKind.OP, GossipKind.REGISTRY):
        raise DecodeError(f"gossip message: unknown kind {kind}", Code.MALFORMED)
    carried = _bytes_list(items[3], "gossip.items",
                          MAX_GOSSIP_OPS if kind == GossipKind.OP else _MAX_SIGNED)
    if not carried:
        raise DecodeError("gossip message: carries nothing", Code.MALFORMED)
    return Gossip(kind, carried, first)


#: The encoding of an op gossip message around its items (array, version, kind,
#: first, the items' array header), and the most an item's header adds (CBOR).
_GOSSIP_FRAME = 8
_ITEM_HEADER = 5


def pack_ops(envelopes: Sequence[bytes], max_size: int) -> list[bytes]:
    """Op gossip messages (encoded) carrying ``envelopes`` in their order, as
    few as fit: each at most ``max_size`` bytes and ``MAX_GOSSIP_OPS`` ops.

    One message per burst instead of one per op: a pubsub message costs its
    sender a signature and its receiver a check and a store transaction.

    Raises:
        UsageError: an envelope does not fit in a message of ``max_size`` bytes.
    """
    out: list[bytes] = []
    batch: list[bytes] = []
    size = _GOSSIP_FRAME
    for raw in envelopes:
        cost = len(raw) + _ITEM_HEADER
        if _GOSSIP_FRAME + cost > max_size:
            raise UsageError(f"an op of {len(raw)} bytes does not fit in a gossip message "
                             f"of {max_size} bytes")
        if batch and (size + cost > max_size or len(batch) == MAX_GOSSIP_OPS):
            out.append(encode_gossip(Gossip(GossipKind.OP, tuple(batch))))
            batch, size = [], _GOSSIP_FRAME
        batch.append(raw)
        size += cost
    if batch:
        out.append(encode_gossip(Gossip(GossipKind.OP, tuple(batch))))
    return out


@dataclass(frozen=True, slots=True)
class CatchUpRequest:
    """What the asking device holds of a space (23.4): every author's last seq,
    its account and registry seq, and its newest key epoch."""

    space_id: bytes
    have: Mapping[bytes, int]
    account_id: bytes
    registry_seq: int
    epoch: int
    limit: int = MAX_RESPONSE_OPS


@dataclass(frozen=True, slots=True)
class CatchUpResponse:
    """Ops the asker lacks (per author in seq order), registry entries after its
    registry seq (same account only), key packages after its epoch, and whether
    more ops remain (ask again with the new heads)."""

    ops: tuple[bytes, ...]
    more: bool
    registry: tuple[bytes, ...] = ()
    packages: tuple[bytes, ...] = ()


def encode_request(r: CatchUpRequest) -> bytes:
    """``[1, space, [[author, seq]...], account, registry_seq, epoch, limit]``.

    Raises:
        Nothing of its own.
    """
    have = [[a, s] for a, s in sorted(r.have.items())]
    return encode([_VERSION, r.space_id, have, r.account_id, r.registry_seq, r.epoch, r.limit])


def decode_request(data: bytes) -> CatchUpRequest:
    """Decode a catch-up request.

    Raises:
        DecodeError: ``too_large``, ``malformed`` or ``unsupported_version``.
    """
    items = _outer(data, "catch-up request", 7)
    space = _fixed(items[1], "request.space", _SPACE)
    have: dict[bytes, int] = {}
    for pair in expect_list(items[2], "request.have", max_items=MAX_AUTHORS):
        author_seq = expect_list(pair, "request.have[]", max_items=2)
        if len(author_seq) != 2:
            raise DecodeError("request.have[]: expected [author, seq]", Code.MALFORMED)
        author = _fixed(author_seq[0], "request.have[].author", ID_SIZE)
        if author in have:
            raise DecodeError("request.have: an author is named twice", Code.MALFORMED)
        have[author] = _uint(author_seq[1], "request.have[].seq")
    limit = _uint(items[6], "request.limit")
    if not 1 <= limit <= MAX_RESPONSE_OPS:
        raise DecodeError(f"request.limit: {limit} is outside [1, {MAX_RESPONSE_OPS}]",
                          Code.MALFORMED)
    return CatchUpRequest(space, have, _fixed(items[3], "request.account", ID_SIZE),
                          _uint(items[4], "request.registry_seq"), _uint(items[5], "request.epoch"),
                          limit)


def encode_response(r: CatchUpResponse) -> bytes:
    """``[1, [ops], more, [registry entries], [key packages]]``.

    Raises:
        Nothing of its own.
    """
    return encode([_VERSION, list(r.ops), r.more, list(r.registry), list(r.packages)])


def decode_response(data: bytes) -> CatchUpResponse:
    """Decode a catch-up response.

    Raises:
        DecodeError: ``too_large``, ``malformed`` or ``unsupported_version``.
    """
    items = _outer(data, "catch-up response", 5)
    if not isinstance(items[2], bool):
        raise DecodeError("response.more: expected a boolean", Code.MALFORMED)
    return CatchUpResponse(_bytes_list(items[1], "response.ops", MAX_RESPONSE_OPS), items[2],
                           _bytes_list(items[3], "response.registry", _MAX_SIGNED),
                           _bytes_list(items[4], "response.packages", _MAX_SIGNED))


def fits(sizes: Sequence[int]) -> bool:
    """Whether items of these sizes fit one message (with room for its framing)."""
    return sum(n + 9 for n in sizes) + 64 <= MAX_MESSAGE


# ---------------------------------------------------------------- helpers
def _outer(data: bytes, what: str, count: int) -> list[object]:
    value = decode(data, limits=_LIMITS)
    if not isinstance(value, list) or len(value) != count:
        raise DecodeError(f"{what}: expected an array of {count} items", Code.MALFORMED)
    check_version(value[0], _VERSION, what)
    return value


def _uint(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise DecodeError(f"{what}: expected an unsigned integer", Code.MALFORMED)
    return value


def _fixed(value: object, what: str, size: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise DecodeError(f"{what}: expected {size} bytes", Code.MALFORMED)
    return value


def _bytes_list(value: object, what: str, max_items: int) -> tuple[bytes, ...]:
    out = expect_list(value, what, max_items=max_items)
    for item in out:
        if not isinstance(item, bytes) or not item:
            raise DecodeError(f"{what}: expected non-empty byte strings", Code.MALFORMED)
        if len(item) > DEFAULT_PROTOCOL_LIMITS.max_op:
            raise DecodeError(f"{what}: an item of {len(item)} bytes exceeds the op limit",
                              Code.TOO_LARGE)
    return tuple(out)  # type: ignore[arg-type]  # (each checked to be bytes above)
