"""Signed, encrypted space snapshots: state at a log size, so a new device loads
state + tail instead of replaying the whole history.

Wire form (the relay stores it opaquely, under the reserved doc id
:data:`SPACE_SNAPSHOT_DOC`)::

    snapshot = [version, body_bytes, signature]
    body     = header + {"ct": ciphertext}
    header   = {"v", "space", "author", "epoch", "size", "root", "frontier",
                "chains", "ts", "nonce"}
    chains   = [[author, seq, op_id, deps], ...]   sorted by author, unique
    plaintext = {"docs": [[name, yjs_state], ...]}  sorted by name, unique

``size`` ≥ 1 is the number of log entries the snapshot covers (offsets
``0..size-1``); ``frontier`` holds the RFC 9162 perfect-subtree roots of
those entries (one per set bit of ``size``, largest first) and must fold to
``root``: a device that starts from the snapshot extends the frontier with the
leaves after it and checks the relay's signed root, so the relay cannot pair a
snapshot with a log it does not extend. ``chains`` are every author's chain
head at ``size``, so the ops after it are verified with the ordinary rules.

The ciphertext is XChaCha20-Poly1305 under a key derived from the space's
epoch key; the associated data is ``labelled(SNAPSHOT_AD, header_bytes)``
(``header_bytes`` = the canonical header map, i.e. the body without ``ct``),
and the author signs ``labelled(SNAPSHOT_SIG, body_bytes)``. The author must
be an **active** device of the registry the reader verified: a revoked
device's snapshot is ignored even if it still holds old keys. Trusting a
snapshot means trusting a co-device, exactly as applying its ops does; the
frontier check means it cannot hide or rewrite what the relay logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sddsf.crypto import AEAD_NONCE_SIZE, aead_decrypt, aead_encrypt, hkdf_sha256
from sddsf.errors import (
    AuthorizationError,
    Code,
    ContextError,
    DecodeError,
    EpochError,
    ProofError,
    UsageError,
)
from sddsf.protocol import labels
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.envelope import HASH_SIZE, SPACE_ID_SIZE
from sddsf.protocol.identity import ID_SIZE, DeviceKeys
from sddsf.protocol.labels import labelled
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.merkle import Frontier
from sddsf.protocol.registry import RegistryState
from sddsf.protocol.rules import ChainHead
from sddsf.protocol.schema import Fields, decode_signed, expect_list, expect_map
from sddsf.protocol.vv import VersionVector

__all__ = [
    "MAX_DOC_NAME",
    "MAX_SNAPSHOT_DOCS",
    "SNAPSHOT_VERSION",
    "SPACE_SNAPSHOT_DOC",
    "Snapshot",
    "decode_snapshot",
    "seal_snapshot",
    "verify_snapshot",
]

SNAPSHOT_VERSION: Final = 1
#: The doc id under which a whole-space snapshot is stored on the relay. Real
#: doc ids are 16-byte hashes of (space, name), so they never collide with it.
SPACE_SNAPSHOT_DOC: Final = bytes(16)
_HEADER_KEYS: Final = ("v", "space", "author", "epoch", "size", "root", "frontier",
                       "chains", "ts", "nonce")
#: Bounds a reader enforces, so a writer checks them too (a snapshot nobody
#: can load must never be published: readers would not fall back to replay).
MAX_SNAPSHOT_DOCS: Final = 1024
MAX_DOC_NAME: Final = 256


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A verified, decrypted snapshot."""

    space: bytes
    author: bytes
    epoch: int
    size: int
    root: bytes
    frontier: tuple[bytes, ...]
    chains: Mapping[bytes, ChainHead]
    ts: int
    docs: Mapping[str, bytes]
    raw: bytes


@dataclass(frozen=True, slots=True)
class _Decoded:
    fields: Fields
    header_bytes: bytes
    body_bytes: bytes
    signature: bytes
    ciphertext: bytes


def _snapshot_key(epoch_key: bytes, space: bytes, epoch: int) -> bytes:
    if len(epoch_key) != 32:
        raise UsageError("an epoch key is 32 bytes")
    return hkdf_sha256(epoch_key, salt=labels.SNAPSHOT_KEY.encode(),
                       info=labelled(labels.SNAPSHOT_KEY, space, epoch))


def seal_snapshot(author: DeviceKeys, *, space: bytes, epoch: int, epoch_key: bytes,
                  size: int, frontier: Frontier, chains: Mapping[bytes, ChainHead],
                  docs: Mapping[str, bytes], ts_ms: int, nonce: bytes,
                  limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> bytes:
    """Encrypt and sign the state of a space at log size ``size``.

    ``nonce`` must be 24 fresh random bytes (the caller supplies them).

    Raises:
        UsageError: inconsistent arguments, or the snapshot exceeds ``limits.max_snapshot``.
    """
    if frontier.size != size or size < 1:
        raise UsageError("a snapshot covers at least one entry and its frontier has its size")
    if len(nonce) != AEAD_NONCE_SIZE:
        raise UsageError("the snapshot nonce must be 24 random bytes")
    if len(docs) > MAX_SNAPSHOT_DOCS or any(len(n) > MAX_DOC_NAME for n in docs):
        raise UsageError(f"a snapshot holds at most {MAX_SNAPSHOT_DOCS} documents with names "
                         f"of at most {MAX_DOC_NAME} characters")
    if len(chains) > limits.max_devices:
        raise UsageError(f"a snapshot holds at most {limits.max_devices} chains")
    header = {
        "v": SNAPSHOT_VERSION, "space": space, "author": author.device_id, "epoch": epoch,
        "size": size, "root": frontier.root(), "frontier": frontier.to_hashes(),
        "chains": [[a, h.seq, h.op_id, h.deps.to_wire()] for a, h in sorted(chains.items())],
        "ts": ts_ms, "nonce": nonce,
    }
    header_bytes = encode(header)
    plaintext = encode({"docs": [[n, docs[n]] for n in sorted(docs)]})
    ct = aead_encrypt(_snapshot_key(epoch_key, space, epoch), nonce, plaintext,
                      labelled(labels.SNAPSHOT_AD, header_bytes))
    body = encode({**header, "ct": ct})
    raw = encode([SNAPSHOT_VERSION, body, author.sign(labelled(labels.SNAPSHOT_SIG, body))])
    if len(raw) > limits.max_snapshot:
        raise UsageError(f"snapshot of {len(raw)} bytes exceeds the limit of "
                         f"{limits.max_snapshot}")
    return raw


def _decode(data: bytes, limits: ProtocolLimits) -> _Decoded:
    f, body, sig = decode_signed(data, what="snapshot", version=SNAPSHOT_VERSION,
                                 fields=(*_HEADER_KEYS, "ct"),
                                 limits=limits.decode_limits(limits.max_snapshot))
    value = decode(body, limits=limits.decode_limits(limits.max_snapshot))
    if not isinstance(value, dict):  # pragma: no cover - decode_signed checked it
        raise DecodeError("snapshot body: expected a map")
    header = {k: v for k, v in value.items() if k != "ct"}
    return _Decoded(f, encode(header), body, sig, f.bytes_("ct"))


def decode_snapshot(data: bytes, *,
                    limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> tuple[bytes, bytes, int]:
    """The ``(space, author, size)`` a snapshot claims (structure only, no checks).

    Raises:
        DecodeError: malformed, too large or unsupported version.
    """
    d = _decode(data, limits)
    return (d.fields.bytes_("space", size=SPACE_ID_SIZE), d.fields.bytes_("author", size=ID_SIZE),
            d.fields.int_("size", lo=1))


def _chains(f: Fields, limits: ProtocolLimits) -> dict[bytes, ChainHead]:
    out: dict[bytes, ChainHead] = {}
    last = b""
    for item in f.list_("chains", max_items=limits.max_devices):
        row = expect_list(item, "snapshot.chains[]", max_items=4)
        if len(row) != 4:
            raise DecodeError("snapshot.chains[]: expected [author, seq, op_id, deps]")
        author, seq, op_id, deps = row
        if not isinstance(author, bytes) or len(author) != ID_SIZE or author <= last:
            raise DecodeError("snapshot.chains: authors are 32-byte ids in strictly "
                              "increasing order")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise DecodeError("snapshot.chains[]: seq must be an integer >= 1")
        if not isinstance(op_id, bytes) or len(op_id) != HASH_SIZE:
            raise DecodeError("snapshot.chains[]: op_id must be 32 bytes")
        out[author] = ChainHead(seq, op_id, VersionVector.from_wire(
            deps, what="snapshot.chains[].deps", id_size=ID_SIZE, max_entries=limits.max_deps))
        last = author
    return out


def _docs(plaintext: bytes, limits: ProtocolLimits) -> dict[str, bytes]:
    value = decode(plaintext, limits=limits.decode_limits(limits.max_snapshot))
    f = expect_map(value, "snapshot payload", ("docs",))
    docs: dict[str, bytes] = {}
    for item in f.list_("docs", max_items=MAX_SNAPSHOT_DOCS):
        row = expect_list(item, "snapshot payload.docs[]", max_items=2)
        if (len(row) != 2 or not isinstance(row[0], str) or len(row[0]) > MAX_DOC_NAME
                or not isinstance(row[1], bytes) or row[0] in docs):
            raise DecodeError("snapshot payload.docs: expected unique [name, state] pairs")
        docs[row[0]] = row[1]
    return docs


def verify_snapshot(data: bytes, *, registry: RegistryState, space: bytes,
                    epoch_keys: Mapping[int, bytes],
                    limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> Snapshot:
    """Decode, authenticate and decrypt a snapshot.

    Raises:
        DecodeError: malformed.
        ContextError: another space (``wrong_context``).
        AuthorizationError: the author is not an active device (``unknown_device``,
            ``revoked``).
        SignatureError: the signature does not verify.
        ProofError: the frontier does not fold to the root (``proof_invalid``).
        EpochError: no key for its epoch (``unknown_epoch``).
        DecryptError: the ciphertext does not open.
    """
    d = _decode(data, limits)
    f = d.fields
    snap_space = f.bytes_("space", size=SPACE_ID_SIZE)
    if snap_space != space:
        raise ContextError("the snapshot belongs to another space")
    author = f.bytes_("author", size=ID_SIZE)
    record = registry.device(author)
    if record is None:
        raise AuthorizationError("the snapshot's author is not a device of this account",
                                 Code.UNKNOWN_DEVICE)
    if not registry.is_active(author):
        raise AuthorizationError("the snapshot's author has been revoked; its snapshots are "
                                 "not trusted", Code.REVOKED)
    record.public.signing_key.verify(labelled(labels.SNAPSHOT_SIG, d.body_bytes), d.signature)
    size = f.int_("size", lo=1)
    frontier_raw = f.list_("frontier", max_items=64)
    if not all(isinstance(h, bytes) for h in frontier_raw):
        raise DecodeError("snapshot.frontier: expected 32-byte hashes")
    frontier = Frontier.from_hashes(size, [h for h in frontier_raw if isinstance(h, bytes)])
    root = f.bytes_("root", size=HASH_SIZE)
    if frontier.root() != root:
        raise ProofError("the snapshot's Merkle frontier does not fold to its root")
    epoch = f.int_("epoch")
    if epoch not in epoch_keys:
        raise EpochError(f"no key for the snapshot's epoch {epoch}; sync the space's keys",
                         Code.UNKNOWN_EPOCH)
    nonce = f.bytes_("nonce", size=AEAD_NONCE_SIZE)
    plaintext = aead_decrypt(_snapshot_key(epoch_keys[epoch], space, epoch), nonce,
                             d.ciphertext, labelled(labels.SNAPSHOT_AD, d.header_bytes))
    return Snapshot(space=space, author=author, epoch=epoch, size=size, root=root,
                    frontier=tuple(frontier.to_hashes()), chains=_chains(f, limits),
                    ts=f.int_("ts"), docs=_docs(plaintext, limits), raw=bytes(data))
