"""Signed, encrypted space snapshots: state at a log size, so a new device loads
state + tail instead of replaying the whole history (protocol.md section 18).

Two wire forms; the relay stores either opaquely under the reserved doc id
:data:`SPACE_SNAPSHOT_DOC`:

* **version 1, one blob** (:func:`seal_snapshot`; still read)::

    snapshot = [1, body_bytes, signature]
    body     = header + {"ct": ciphertext}
    header   = {"v", "space", "author", "epoch", "size", "root", "frontier",
                "chains", "ts", "nonce"}

* **version 2, chunked** (:func:`seal_chunked_snapshot`; what clients write)::

    manifest = [2, body_bytes, signature]
    body     = {"v", "space", "author", "epoch", "size", "root", "frontier",
                "chains", "ts", "nonce", "plain", "chunks"}
    chunk_i  = AEAD(snapshot_key, chunk_nonce(nonce, i), plaintext[i*512 KiB ...],
                    labelled(SNAPSHOT_CHUNK_AD, space, author, epoch, size, nonce, i, n))

  ``chunks`` lists the id (``tagged_hash(SNAPSHOT_CHUNK_ID, chunk)``) of every
  chunk in order and ``plain`` the plaintext length, so the signed manifest
  binds every chunk; each chunk fits one relay request, so a space's state is
  bounded by ``max_snapshot_chunks`` x 512 KiB (256 MiB), not by one request.

In both: ``chains = [[author, seq, op_id, deps], ...]`` sorted by author, and
the plaintext is ``{"docs": [[name, yjs_state], ...]}`` sorted by name.
``size`` >= 1 is the number of log entries the snapshot covers (offsets
``0..size-1``); ``frontier`` holds the RFC 9162 perfect-subtree roots of
those entries and must fold to ``root``: a device that starts from the
snapshot extends the frontier with the leaves after it and checks the relay's
signed root, so the relay cannot pair a snapshot with a log it does not
extend. ``chains`` are every author's chain head at ``size``, so the ops after
it are verified with the ordinary rules.

A valid signature and frontier do NOT show that the documents are what the
log says: a device of the account (for example a stolen one) can sign any
state. That is what **attestations** are for (:func:`attest_snapshot`): a
device that holds the log recomputes the state, compares, and signs
``match`` or ``mismatch`` for the snapshot's id; the relay prunes only under a
snapshot another device attested, and readers decide with them whether a
snapshot of a since-revoked device may still be used (section 18.7).

Size: the two snapshot wire forms (inline and chunked manifest), their
verification and the attestations over them are protocol.md section 18, one
format read together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
from sddsf.protocol.encoding import DecodeLimits, decode, encode
from sddsf.protocol.envelope import DOC_ID_SIZE, HASH_SIZE, SPACE_ID_SIZE
from sddsf.protocol.identity import ID_SIZE, DeviceKeys
from sddsf.protocol.labels import labelled, tagged_hash
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.merkle import Frontier
from sddsf.protocol.registry import DeviceRecord, RegistryState
from sddsf.protocol.rules import ChainHead
from sddsf.protocol.schema import Fields, decode_signed, expect_list, expect_map
from sddsf.protocol.vv import VersionVector

__all__ = [
    "ATTESTATION_VERSION",
    "CHUNKED_SNAPSHOT_VERSION",
    "CORROBORATED_SNAPSHOT_DOC",
    "MATCH",
    "MAX_ATTESTATION",
    "MAX_DOC_NAME",
    "MAX_SNAPSHOT_DOCS",
    "MISMATCH",
    "SNAPSHOT_CHUNK_PLAIN",
    "SNAPSHOT_VERSION",
    "SPACE_SNAPSHOT_DOC",
    "Attestation",
    "SealedSnapshot",
    "Snapshot",
    "SnapshotClaims",
    "SnapshotManifest",
    "attest_snapshot",
    "check_snapshot_signature",
    "chunk_id",
    "decode_attestation",
    "decode_snapshot",
    "load_snapshot",
    "open_snapshot",
    "seal_chunked_snapshot",
    "seal_snapshot",
    "snapshot_claims",
    "snapshot_id",
    "verify_attestation",
    "verify_snapshot",
]

#: The single-blob form (read; :func:`seal_snapshot` writes it for old readers).
SNAPSHOT_VERSION: Final = 1
#: The chunked form: a signed manifest and encrypted chunks (what clients write).
CHUNKED_SNAPSHOT_VERSION: Final = 2
#: Plaintext bytes per chunk (the last one may be shorter): a chunk is this
#: plus the 16-byte tag, well inside one relay request once base64-encoded.
SNAPSHOT_CHUNK_PLAIN: Final = 512 * 1024
#: The doc id under which a whole-space snapshot is stored on the relay. Real
#: doc ids are 16-byte hashes of (space, name), so they never collide with it.
SPACE_SNAPSHOT_DOC: Final = bytes(16)
#: Where the relay keeps a copy of the newest whole-space snapshot that a device
#: other than its author attested (18.7): history is pruned only under it, so a
#: later, uncorroborated snapshot never strands new devices. Only the relay writes it.
CORROBORATED_SNAPSHOT_DOC: Final = bytes(15) + b"\x01"
_HEADER_KEYS: Final = ("v", "space", "author", "epoch", "size", "root", "frontier",
                       "chains", "ts", "nonce")
_MANIFEST_KEYS: Final = (*_HEADER_KEYS, "plain", "chunks")
#: The first two bytes of every canonical version 2 manifest: an array of 3, then 2.
_CHUNKED_PREFIX: Final = encode([CHUNKED_SNAPSHOT_VERSION, None, None])[:2]
#: Bounds a reader enforces, so a writer checks them too (a snapshot nobody
#: can load must never be published: readers would not fall back to replay).
MAX_SNAPSHOT_DOCS: Final = 1024
MAX_DOC_NAME: Final = 256

ATTESTATION_VERSION: Final = 1
MATCH: Final = "match"
MISMATCH: Final = "mismatch"
#: An attestation is a few hundred bytes; anything larger is refused unread.
MAX_ATTESTATION: Final = 1024
_ATTEST_KEYS: Final = ("v", "space", "doc", "snapshot", "size", "verdict", "attester", "ts")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A verified, decrypted snapshot (``raw`` is the blob or the v2 manifest)."""

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
    id: bytes = b""
    version: int = SNAPSHOT_VERSION


@dataclass(frozen=True, slots=True)
class SnapshotManifest:
    """A snapshot whose signature, frontier and epoch were checked, documents not
    yet decrypted (:func:`open_snapshot`; :func:`load_snapshot` finishes)."""

    version: int
    id: bytes
    space: bytes
    author: bytes
    author_active: bool
    epoch: int
    size: int
    root: bytes
    frontier: tuple[bytes, ...]
    chains: Mapping[bytes, ChainHead]
    ts: int
    nonce: bytes
    plain: int
    chunk_ids: tuple[bytes, ...]
    raw: bytes
    inline_docs: Mapping[str, bytes] | None = None  # version 1: decrypted already


@dataclass(frozen=True, slots=True)
class SealedSnapshot:
    """What :func:`seal_chunked_snapshot` makes: upload the chunks, then the manifest."""

    manifest: bytes
    chunks: tuple[bytes, ...]
    chunk_ids: tuple[bytes, ...]
    id: bytes
    size: int


@dataclass(frozen=True, slots=True)
class Attestation:
    """A device's signed verdict on a snapshot, after recomputing it from the log."""

    space: bytes
    doc: bytes
    snapshot: bytes
    size: int
    verdict: str
    attester: bytes
    ts: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class _Decoded:
    version: int
    fields: Fields
    header_bytes: bytes
    body_bytes: bytes
    signature: bytes
    ciphertext: bytes


def snapshot_id(data: bytes) -> bytes:
    """The id attestations name a snapshot by: ``tagged_hash(SNAPSHOT_ID, bytes)`` of
    the whole blob (version 1) or of the manifest (version 2)."""
    return tagged_hash(labels.SNAPSHOT_ID, data)


def chunk_id(chunk: bytes) -> bytes:
    """A chunk's id, as listed in its manifest: ``tagged_hash(SNAPSHOT_CHUNK_ID, chunk)``."""
    return tagged_hash(labels.SNAPSHOT_CHUNK_ID, chunk)


def _snapshot_key(epoch_key: bytes, space: bytes, epoch: int) -> bytes:
    if len(epoch_key) != 32:
        raise UsageError("an epoch key is 32 bytes")
    return hkdf_sha256(epoch_key, salt=labels.SNAPSHOT_KEY.encode(),
                       info=labelled(labels.SNAPSHOT_KEY, space, epoch))


def _chunk_nonce(nonce: bytes, index: int) -> bytes:
    # Distinct per chunk; the snapshot nonce is fresh per snapshot and key.
    return tagged_hash(labels.SNAPSHOT_CHUNK_NONCE, nonce, index)[:AEAD_NONCE_SIZE]


def _chunk_ad(space: bytes, author: bytes, epoch: int, size: int, nonce: bytes, index: int,
              count: int) -> bytes:
    return labelled(labels.SNAPSHOT_CHUNK_AD, space, author, epoch, size, nonce, index, count)


def _check_seal_args(frontier: Frontier, size: int, nonce: bytes, docs: Mapping[str, bytes],
                     chains: Mapping[bytes, ChainHead], limits: ProtocolLimits) -> None:
    if frontier.size != size or size < 1:
        raise UsageError("a snapshot covers at least one entry and its frontier has its size")
    if len(nonce) != AEAD_NONCE_SIZE:
        raise UsageError("the snapshot nonce must be 24 random bytes")
    if len(docs) > MAX_SNAPSHOT_DOCS or any(len(n) > MAX_DOC_NAME for n in docs):
        raise UsageError(f"a snapshot holds at most {MAX_SNAPSHOT_DOCS} documents with names "
                         f"of at most {MAX_DOC_NAME} characters")
    if len(chains) > limits.max_devices:
        raise UsageError(f"a snapshot holds at most {limits.max_devices} chains")


def _header(author: DeviceKeys, version: int, space: bytes, epoch: int, size: int,
            frontier: Frontier, chains: Mapping[bytes, ChainHead], ts_ms: int,
            nonce: bytes) -> dict[str, object]:
    return {
        "v": version, "space": space, "author": author.device_id, "epoch": epoch,
        "size": size, "root": frontier.root(), "frontier": frontier.to_hashes(),
        "chains": [[a, h.seq, h.op_id, h.deps.to_wire()] for a, h in sorted(chains.items())],
        "ts": ts_ms, "nonce": nonce,
    }


def _payload(docs: Mapping[str, bytes]) -> bytes:
    return encode({"docs": [[n, docs[n]] for n in sorted(docs)]})


def seal_snapshot(author: DeviceKeys, *, space: bytes, epoch: int, epoch_key: bytes,
                  size: int, frontier: Frontier, chains: Mapping[bytes, ChainHead],
                  docs: Mapping[str, bytes], ts_ms: int, nonce: bytes,
                  limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> bytes:
    """Encrypt and sign the state of a space at log size ``size`` as ONE blob
    (version 1, at most ``limits.max_snapshot`` bytes).

    Clients write :func:`seal_chunked_snapshot`; this form stays for readers
    and tools that only speak version 1. ``nonce`` must be 24 fresh random bytes.

    Raises:
        UsageError: inconsistent arguments, or the snapshot exceeds ``limits.max_snapshot``.
    """
    _check_seal_args(frontier, size, nonce, docs, chains, limits)
    header = _header(author, SNAPSHOT_VERSION, space, epoch, size, frontier, chains, ts_ms,
                     nonce)
    header_bytes = encode(header)
    ct = aead_encrypt(_snapshot_key(epoch_key, space, epoch), nonce, _payload(docs),
                      labelled(labels.SNAPSHOT_AD, header_bytes))
    body = encode({**header, "ct": ct})
    raw = encode([SNAPSHOT_VERSION, body, author.sign(labelled(labels.SNAPSHOT_SIG, body))])
    if len(raw) > limits.max_snapshot:
        raise UsageError(f"snapshot of {len(raw)} bytes exceeds the limit of "
                         f"{limits.max_snapshot}")
    return raw


def seal_chunked_snapshot(author: DeviceKeys, *, space: bytes, epoch: int, epoch_key: bytes,
                          size: int, frontier: Frontier, chains: Mapping[bytes, ChainHead],
                          docs: Mapping[str, bytes], ts_ms: int, nonce: bytes,
                          limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> SealedSnapshot:
    """Encrypt the state of a space at log size ``size`` in chunks of
    :data:`SNAPSHOT_CHUNK_PLAIN` bytes and sign a manifest that binds them (version 2).

    ``nonce`` must be 24 fresh random bytes (each chunk's nonce is derived from it).

    Raises:
        UsageError: inconsistent arguments, a state over ``max_snapshot_chunks``
            chunks, or a manifest over ``max_snapshot`` bytes.
    """
    _check_seal_args(frontier, size, nonce, docs, chains, limits)
    plaintext = _payload(docs)
    count = -(-len(plaintext) // SNAPSHOT_CHUNK_PLAIN)
    if count > limits.max_snapshot_chunks:
        raise UsageError(f"a space state of {len(plaintext)} bytes needs {count} snapshot "
                         f"chunks; the limit is {limits.max_snapshot_chunks}")
    key = _snapshot_key(epoch_key, space, epoch)
    view = memoryview(plaintext)
    chunks = tuple(
        aead_encrypt(key, _chunk_nonce(nonce, i),
                     bytes(view[i * SNAPSHOT_CHUNK_PLAIN:(i + 1) * SNAPSHOT_CHUNK_PLAIN]),
                     _chunk_ad(space, author.device_id, epoch, size, nonce, i, count))
        for i in range(count))
    ids = tuple(chunk_id(c) for c in chunks)
    body = encode({**_header(author, CHUNKED_SNAPSHOT_VERSION, space, epoch, size, frontier,
                             chains, ts_ms, nonce),
                   "plain": len(plaintext), "chunks": list(ids)})
    manifest = encode([CHUNKED_SNAPSHOT_VERSION, body,
                       author.sign(labelled(labels.SNAPSHOT_SIG, body))])
    if len(manifest) > limits.max_snapshot:
        raise UsageError(f"snapshot manifest of {len(manifest)} bytes exceeds the limit of "
                         f"{limits.max_snapshot}")
    return SealedSnapshot(manifest, chunks, ids, snapshot_id(manifest), size)


def _outer_version(data: bytes) -> int:
    # Which layout to expect; decode_signed then checks everything (size,
    # canonical form, version, keys). The canonical encoding of
    # [2, body, signature] is the only one that starts with these two bytes,
    # so a blob that does not is either version 1 or refused by decode_signed
    # exactly as a full decode here would have refused it.
    return CHUNKED_SNAPSHOT_VERSION if data[:2] == _CHUNKED_PREFIX else SNAPSHOT_VERSION


def _decode(data: bytes, limits: ProtocolLimits) -> _Decoded:
    dl = limits.decode_limits(limits.max_snapshot)
    version = _outer_version(data)
    keys = _MANIFEST_KEYS if version == CHUNKED_SNAPSHOT_VERSION else (*_HEADER_KEYS, "ct")
    f, body, sig = decode_signed(data, what="snapshot", version=version, fields=keys,
                                 limits=dl)
    if version == CHUNKED_SNAPSHOT_VERSION:
        return _Decoded(version, f, b"", body, sig, b"")
    value = decode(body, limits=dl)
    if not isinstance(value, dict):  # pragma: no cover - decode_signed checked it
        raise DecodeError("snapshot body: expected a map")
    header = {k: v for k, v in value.items() if k != "ct"}
    return _Decoded(version, f, encode(header), body, sig, f.bytes_("ct"))


@dataclass(frozen=True, slots=True)
class SnapshotClaims:
    """What a snapshot says about itself (:func:`snapshot_claims`; nothing checked
    unless it came from :func:`check_snapshot_signature`)."""

    version: int
    id: bytes
    space: bytes
    author: bytes
    size: int
    root: bytes
    chunk_ids: tuple[bytes, ...]
    #: Set by :func:`check_snapshot_signature` only: the decoded snapshot whose
    #: signature and frontier it checked, so that :func:`open_snapshot` of the
    #: same bytes (``checked=``) does not decode and verify them again.
    _checked: _Decoded | None = field(default=None, repr=False, compare=False)


def decode_snapshot(data: bytes, *,
                    limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> tuple[bytes, bytes, int]:
    """The ``(space, author, size)`` a snapshot (either version) claims:
    structure only, no checks.

    Raises:
        DecodeError: malformed, too large or unsupported version.
    """
    d = _decode(data, limits)
    return (d.fields.bytes_("space", size=SPACE_ID_SIZE), d.fields.bytes_("author", size=ID_SIZE),
            d.fields.int_("size", lo=1))


def _claims(data: bytes, d: _Decoded, limits: ProtocolLimits) -> SnapshotClaims:
    f = d.fields
    ids = _chunk_list(f, limits)[1] if d.version == CHUNKED_SNAPSHOT_VERSION else ()
    return SnapshotClaims(d.version, snapshot_id(data), f.bytes_("space", size=SPACE_ID_SIZE),
                          f.bytes_("author", size=ID_SIZE), f.int_("size", lo=1),
                          f.bytes_("root", size=HASH_SIZE), ids)


def snapshot_claims(data: bytes, *,
                    limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> SnapshotClaims:
    """A snapshot's id, space, author, size, root and chunk ids (structure only).

    Raises:
        DecodeError: malformed, too large or unsupported version.
    """
    return _claims(data, _decode(data, limits), limits)


def check_snapshot_signature(data: bytes, *, registry: RegistryState,
                             accept_revoked: bool = False,
                             limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS
                             ) -> SnapshotClaims:
    """What a party without the space's keys (the relay) can check: the structure,
    that an active device (or, with ``accept_revoked``, any device of the
    account) signed it, and that its frontier folds to its root.

    Raises:
        DecodeError: malformed.
        AuthorizationError: the author is unknown or revoked.
        SignatureError: the signature does not verify.
        ProofError: the frontier does not fold to the root.
    """
    d = _decode(data, limits)
    claims = _claims(data, d, limits)
    record = _author(registry, claims.author, accept_revoked)
    record.public.signing_key.verify(labelled(labels.SNAPSHOT_SIG, d.body_bytes), d.signature)
    if _frontier(d.fields, claims.size).root() != claims.root:
        raise ProofError("the snapshot's Merkle frontier does not fold to its root")
    return dataclasses.replace(claims, _checked=d)


def _frontier(f: Fields, size: int) -> Frontier:
    frontier_raw = f.list_("frontier", max_items=64)
    if not all(isinstance(h, bytes) for h in frontier_raw):
        raise DecodeError("snapshot.frontier: expected 32-byte hashes")
    return Frontier.from_hashes(size, [h for h in frontier_raw if isinstance(h, bytes)])


def _chunk_list(f: Fields, limits: ProtocolLimits) -> tuple[int, tuple[bytes, ...]]:
    plain = f.int_("plain", lo=1)
    items = f.list_("chunks", max_items=limits.max_snapshot_chunks)
    if not all(isinstance(c, bytes) and len(c) == HASH_SIZE for c in items):
        raise DecodeError("snapshot.chunks: expected 32-byte chunk ids")
    if len(items) != -(-plain // SNAPSHOT_CHUNK_PLAIN):
        raise DecodeError(f"snapshot.chunks: {plain} bytes of plaintext are "
                          f"{-(-plain // SNAPSHOT_CHUNK_PLAIN)} chunks, not {len(items)}")
    return plain, tuple(c for c in items if isinstance(c, bytes))


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


def _docs(plaintext: bytes, limits: DecodeLimits) -> dict[str, bytes]:
    value = decode(plaintext, limits=limits)
    f = expect_map(value, "snapshot payload", ("docs",))
    docs: dict[str, bytes] = {}
    for item in f.list_("docs", max_items=MAX_SNAPSHOT_DOCS):
        row = expect_list(item, "snapshot payload.docs[]", max_items=2)
        if (len(row) != 2 or not isinstance(row[0], str) or len(row[0]) > MAX_DOC_NAME
                or not isinstance(row[1], bytes) or row[0] in docs):
            raise DecodeError("snapshot payload.docs: expected unique [name, state] pairs")
        docs[row[0]] = row[1]
    return docs


def _author(registry: RegistryState, author: bytes, accept_revoked: bool) -> DeviceRecord:
    record = registry.device(author)
    if record is None:
        raise AuthorizationError("the snapshot's author is not a device of this account",
                                 Code.UNKNOWN_DEVICE)
    if not accept_revoked and not registry.is_active(author):
        raise AuthorizationError("the snapshot's author has been revoked; its snapshots are "
                                 "not trusted", Code.REVOKED)
    return record


def open_snapshot(data: bytes, *, registry: RegistryState, space: bytes,
                  epoch_keys: Mapping[int, bytes], accept_revoked: bool = False,
                  limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS,
                  checked: SnapshotClaims | None = None) -> SnapshotManifest:
    """Check a snapshot's (or manifest's) author, signature, frontier and epoch.

    ``checked``: what :func:`check_snapshot_signature` returned for these same
    bytes; their signature and frontier are then not checked twice (claims
    from anywhere else, or about other bytes, change nothing).

    A version 1 blob is decrypted here too (it is one blob); a version 2
    manifest's chunks are checked and decrypted by :func:`load_snapshot`.
    ``accept_revoked`` admits a revoked author's snapshot (its signature still
    verifies): the caller then decides with attestations (section 18.7).

    Raises:
        DecodeError: malformed.
        ContextError: another space (``wrong_context``).
        AuthorizationError: the author is not a device of the account
            (``unknown_device``), or revoked without ``accept_revoked`` (``revoked``).
        SignatureError: the signature does not verify.
        ProofError: the frontier does not fold to the root (``proof_invalid``).
        EpochError: no key for its epoch (``unknown_epoch``).
        DecryptError: a version 1 ciphertext does not open.
    """
    sid = snapshot_id(data)
    # The id hashes the whole blob: equal ids, same bytes, same checks passed.
    done = checked._checked if checked is not None and checked.id == sid else None
    d = done or _decode(data, limits)
    f = d.fields
    if f.bytes_("space", size=SPACE_ID_SIZE) != space:
        raise ContextError("the snapshot belongs to another space")
    author = f.bytes_("author", size=ID_SIZE)
    record = _author(registry, author, accept_revoked)
    if done is None:
        record.public.signing_key.verify(labelled(labels.SNAPSHOT_SIG, d.body_bytes),
                                         d.signature)
    size = f.int_("size", lo=1)
    frontier = _frontier(f, size)
    root = f.bytes_("root", size=HASH_SIZE)
    if done is None and frontier.root() != root:
        raise ProofError("the snapshot's Merkle frontier does not fold to its root")
    epoch = f.int_("epoch")
    if epoch not in epoch_keys:
        raise EpochError(f"no key for the snapshot's epoch {epoch}; sync the space's keys",
                         Code.UNKNOWN_EPOCH)
    nonce = f.bytes_("nonce", size=AEAD_NONCE_SIZE)
    inline: dict[str, bytes] | None = None
    plain, ids = 0, tuple[bytes, ...]()
    if d.version == SNAPSHOT_VERSION:
        # Order of the version 1 checks: decryption (10), chains (11), docs (12).
        plaintext = aead_decrypt(_snapshot_key(epoch_keys[epoch], space, epoch), nonce,
                                 d.ciphertext, labelled(labels.SNAPSHOT_AD, d.header_bytes))
        chains = _chains(f, limits)
        inline = _docs(plaintext, limits.decode_limits(limits.max_snapshot))
        plain = len(plaintext)
    else:
        chains = _chains(f, limits)
        plain, ids = _chunk_list(f, limits)
    return SnapshotManifest(
        version=d.version, id=sid, space=space, author=author,
        author_active=registry.is_active(author), epoch=epoch, size=size, root=root,
        frontier=tuple(frontier.to_hashes()), chains=chains, ts=f.int_("ts"), nonce=nonce,
        plain=plain, chunk_ids=ids, raw=bytes(data), inline_docs=inline)


def load_snapshot(manifest: SnapshotManifest, chunks: Sequence[bytes], *,
                  epoch_keys: Mapping[int, bytes],
                  limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> Snapshot:
    """Check a manifest's chunks against it, decrypt and decode the documents.

    ``chunks`` are the chunk blobs in manifest order (empty for version 1).

    Raises:
        ProofError: a chunk is missing, extra or not the one the manifest names
            (``proof_invalid``).
        DecryptError: a chunk does not open.
        DecodeError: the plaintext is malformed.
    """
    m = manifest
    if m.inline_docs is not None:
        docs: Mapping[str, bytes] = m.inline_docs
    else:
        if len(chunks) != len(m.chunk_ids):
            raise ProofError(f"the snapshot has {len(m.chunk_ids)} chunks; {len(chunks)} "
                             "were given")
        key = _snapshot_key(epoch_keys[m.epoch], m.space, m.epoch)
        parts: list[bytes] = []
        for i, (blob, want) in enumerate(zip(chunks, m.chunk_ids, strict=True)):
            if chunk_id(blob) != want:
                raise ProofError(f"snapshot chunk {i} is not the one its signed manifest names")
            part = aead_decrypt(key, _chunk_nonce(m.nonce, i), blob,
                                _chunk_ad(m.space, m.author, m.epoch, m.size, m.nonce, i,
                                          len(m.chunk_ids)))
            expected = min(SNAPSHOT_CHUNK_PLAIN, m.plain - i * SNAPSHOT_CHUNK_PLAIN)
            if len(part) != expected:
                raise DecodeError(f"snapshot chunk {i} holds {len(part)} bytes, not {expected}")
            parts.append(part)
        plaintext = b"".join(parts)
        docs = _docs(plaintext, limits.decode_limits(m.plain))
    return Snapshot(space=m.space, author=m.author, epoch=m.epoch, size=m.size, root=m.root,
                    frontier=m.frontier, chains=m.chains, ts=m.ts, docs=docs, raw=m.raw,
                    id=m.id, version=m.version)


def verify_snapshot(data: bytes, *, registry: RegistryState, space: bytes,
                    epoch_keys: Mapping[int, bytes], chunks: Sequence[bytes] = (),
                    accept_revoked: bool = False,
                    limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> Snapshot:
    """Decode, authenticate and decrypt a snapshot: :func:`open_snapshot` then
    :func:`load_snapshot` (``chunks``: a version 2 manifest's chunks, in order).

    Raises:
        See :func:`open_snapshot` and :func:`load_snapshot`.
    """
    manifest = open_snapshot(data, registry=registry, space=space, epoch_keys=epoch_keys,
                             accept_revoked=accept_revoked, limits=limits)
    return load_snapshot(manifest, chunks, epoch_keys=epoch_keys, limits=limits)


# ------------------------------------------------------------- attestations


def attest_snapshot(attester: DeviceKeys, *, space: bytes, doc: bytes, snapshot: bytes,
                    size: int, verdict: str, ts_ms: int) -> bytes:
    """Sign a verdict on the snapshot whose id is ``snapshot`` (:func:`snapshot_id`):
    ``match`` when the state recomputed from the log equals its documents.

    Raises:
        UsageError: a verdict other than ``match``/``mismatch``, or bad sizes.
    """
    if verdict not in (MATCH, MISMATCH):
        raise UsageError("an attestation's verdict is 'match' or 'mismatch'")
    if len(space) != SPACE_ID_SIZE or len(doc) != DOC_ID_SIZE or len(snapshot) != HASH_SIZE \
            or size < 1:
        raise UsageError("an attestation names a space, a doc, a 32-byte snapshot id and a "
                         "size >= 1")
    body = encode({"v": ATTESTATION_VERSION, "space": space, "doc": doc, "snapshot": snapshot,
                   "size": size, "verdict": verdict, "attester": attester.device_id,
                   "ts": ts_ms})
    return encode([ATTESTATION_VERSION, body,
                   attester.sign(labelled(labels.SNAPSHOT_ATTEST_SIG, body))])


def _attestation(data: bytes) -> tuple[Attestation, bytes, bytes]:
    f, body, sig = decode_signed(
        data, what="snapshot attestation", version=ATTESTATION_VERSION, fields=_ATTEST_KEYS,
        limits=DecodeLimits(max_size=MAX_ATTESTATION, max_depth=2, max_items=16))
    verdict = f.str_("verdict", max_len=16)
    if verdict not in (MATCH, MISMATCH):
        raise DecodeError("snapshot attestation: verdict is 'match' or 'mismatch'")
    return Attestation(
        space=f.bytes_("space", size=SPACE_ID_SIZE), doc=f.bytes_("doc", size=DOC_ID_SIZE),
        snapshot=f.bytes_("snapshot", size=HASH_SIZE), size=f.int_("size", lo=1),
        verdict=verdict, attester=f.bytes_("attester", size=ID_SIZE), ts=f.int_("ts"),
        raw=bytes(data)), body, sig


def decode_attestation(data: bytes) -> Attestation:
    """An attestation's claims: structure only, no signature check.

    Raises:
        DecodeError: malformed, too large or unsupported version.
    """
    return _attestation(data)[0]


def verify_attestation(data: bytes, *, registry: RegistryState, space: bytes,
                       accept_revoked: bool = False) -> Attestation:
    """Decode an attestation and check its space, attester and signature.

    Raises:
        DecodeError: malformed.
        ContextError: another space (``wrong_context``).
        AuthorizationError: the attester is unknown (``unknown_device``) or revoked
            without ``accept_revoked`` (``revoked``).
        SignatureError: the signature does not verify.
    """
    att, body, sig = _attestation(data)
    if att.space != space:
        raise ContextError("the attestation belongs to another space")
    record = registry.device(att.attester)
    if record is None:
        raise AuthorizationError("the attestation's device is not a device of this account",
                                 Code.UNKNOWN_DEVICE)
    if not accept_revoked and not registry.is_active(att.attester):
        raise AuthorizationError("the attestation's device has been revoked", Code.REVOKED)
    record.public.signing_key.verify(labelled(labels.SNAPSHOT_ATTEST_SIG, body), sig)
    return att
