"""Op envelopes: signed, encrypted CRDT updates.

Wire form (canonical CBOR)::

    envelope = [version, header_bytes, ciphertext, signature]      version = 1
    header   = {"v", "suite", "space", "doc", "author", "seq", "prev", "deps",
                "epoch", "ts", "seen", "nonce", "reg"}      (all required; v = 2)

* ``reg`` (header version 2) is the registry seq the author had verified when
  it sealed the op. The rules use it to refuse an op written under an epoch
  that a device revoked by then could read (``epoch_compromised``). Header
  version 1 (without ``reg``) stays readable history; new ops use version 2.

* ``ciphertext`` = XChaCha20-Poly1305(doc_key, nonce, plaintext,
  ad = labelled(OP_AD, header_bytes)); the header is therefore bound to the
  ciphertext, and every context field (space, doc, author, seq, epoch) is in it.
* ``doc_key`` = HKDF-SHA256(epoch_key, salt=DOC_KEY, info=labelled(DOC_KEY,
  space, doc, epoch)).
* ``signature`` = Ed25519 by the author over
  ``labelled(OP_SIG, header_bytes, tagged_hash(OP_CIPHERTEXT, ciphertext))``.
* op id = ``tagged_hash(OP_ID, envelope_bytes)``; a Merkle leaf is the
  envelope bytes themselves.

:func:`decode_envelope` checks structure only; the rules in
:mod:`sddsf.protocol.rules` decide acceptance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from sddsf.crypto import AEAD_NONCE_SIZE, Ed25519PublicKey, aead_decrypt, aead_encrypt, hkdf_sha256
from sddsf.errors import Code, DecodeError, UsageError
from sddsf.protocol import labels
from sddsf.protocol.clock import HLCTimestamp
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import ID_SIZE, DeviceKeys
from sddsf.protocol.labels import labelled, tagged_hash
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.schema import check_version, expect_map, version_of_map
from sddsf.protocol.vv import VersionVector

__all__ = [
    "FORMAT_VERSION",
    "GENESIS_PREV",
    "HEADER_VERSION",
    "HEADER_VERSIONS",
    "SPACE_ID_SIZE",
    "SUITE_V1",
    "OpEnvelope",
    "OpHeader",
    "TreeHeadRef",
    "decode_envelope",
    "derive_doc_key",
    "open_op",
    "seal_op",
]

FORMAT_VERSION: Final = 1  # the outer envelope array
#: The header format new ops use (2 adds ``reg``); 1 is readable history only.
HEADER_VERSION: Final = 2
HEADER_VERSIONS: Final = frozenset({1, HEADER_VERSION})
#: Ed25519 + XChaCha20-Poly1305 + HKDF-SHA256 + BLAKE2b-256 + RFC 9162 SHA-256 log.
SUITE_V1: Final = 1
SUPPORTED_SUITES: Final = frozenset({SUITE_V1})
SPACE_ID_SIZE: Final = 16
DOC_ID_SIZE: Final = 16
HASH_SIZE: Final = 32
GENESIS_PREV: Final = bytes(HASH_SIZE)  # "prev" of an author's first op in a space
_HEADER_KEYS_V1: Final = ("v", "suite", "space", "doc", "author", "seq", "prev", "deps",
                          "epoch", "ts", "seen", "nonce")
_HEADER_KEYS: Final = {1: _HEADER_KEYS_V1, 2: (*_HEADER_KEYS_V1, "reg")}


@dataclass(frozen=True, slots=True)
class TreeHeadRef:
    """The last tree head (size, root) of the space log the author had verified."""

    size: int
    root: bytes

    def to_wire(self) -> list[object]:
        """``[size, root]``."""
        return [self.size, self.root]


@dataclass(frozen=True, slots=True)
class OpHeader:
    """The signed, authenticated (AD) header of an op."""

    space: bytes
    doc: bytes
    author: bytes
    seq: int
    prev: bytes
    deps: VersionVector
    epoch: int
    ts: HLCTimestamp
    seen: TreeHeadRef | None
    nonce: bytes
    version: int = HEADER_VERSION
    suite: int = SUITE_V1
    #: The registry seq the author had verified (header version 2; None in version 1).
    reg: int | None = 0

    def to_wire(self) -> dict[str, object]:
        """The header as a map, ready for :func:`encode`."""
        wire: dict[str, object] = {
            "v": self.version, "suite": self.suite, "space": self.space, "doc": self.doc,
            "author": self.author, "seq": self.seq, "prev": self.prev,
            "deps": self.deps.to_wire(), "epoch": self.epoch, "ts": self.ts.to_wire(),
            "seen": None if self.seen is None else self.seen.to_wire(), "nonce": self.nonce,
        }
        if self.version >= 2:
            wire["reg"] = self.reg
        return wire


@dataclass(frozen=True, slots=True)
class OpEnvelope:
    """A decoded envelope, with the exact bytes it came from."""

    header: OpHeader
    header_bytes: bytes
    ciphertext: bytes
    signature: bytes
    raw: bytes
    op_id: bytes = field(default=b"", compare=False)
    # The author keys this envelope's signature verified under. Its bytes never
    # change, so a signature that verified once verifies again: a device that
    # checks an op before it waits and again when it is judged (ops from peers)
    # pays for one check.
    _verified_under: list[bytes] = field(default_factory=list, init=False, compare=False,
                                         repr=False)

    def signed_message(self) -> bytes:
        """The bytes the author's signature covers."""
        return labelled(labels.OP_SIG, self.header_bytes,
                        tagged_hash(labels.OP_CIPHERTEXT, self.ciphertext))

    def verify_signature(self, author_key: Ed25519PublicKey) -> None:
        """Check the author's signature.

        Raises:
            SignatureError: the signature does not verify under ``author_key``.
        """
        if author_key.raw in self._verified_under:
            return
        author_key.verify(self.signed_message(), self.signature)
        self._verified_under.append(author_key.raw)


def derive_doc_key(epoch_key: bytes, space: bytes, doc: bytes, epoch: int) -> bytes:
    """Per-document AEAD key for one key epoch."""
    if len(epoch_key) != 32:
        raise UsageError("an epoch key is 32 bytes")
    return hkdf_sha256(epoch_key, salt=labels.DOC_KEY.encode(),
                       info=labelled(labels.DOC_KEY, space, doc, epoch))


def seal_op(author: DeviceKeys, header: OpHeader, plaintext: bytes, epoch_key: bytes, *,
            limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> OpEnvelope:
    """Encrypt and sign ``plaintext`` as an op.

    ``header.nonce`` must be 24 fresh random bytes (the caller supplies them), and
    ``header.reg`` the registry seq the author has verified. Only the current
    header version (:data:`HEADER_VERSION`) is produced.

    Raises:
        UsageError: the header does not belong to ``author``, is not of the current
            version, or the result is too large.
    """
    if header.author != author.device_id:
        raise UsageError("header.author is not this device")
    if header.version != HEADER_VERSION or header.reg is None or header.reg < 0:
        raise UsageError(f"new ops use header version {HEADER_VERSION} with the verified "
                         "registry seq in header.reg")
    if len(header.nonce) != AEAD_NONCE_SIZE:
        raise UsageError("header.nonce must be 24 random bytes")
    header_bytes = encode(header.to_wire())
    key = derive_doc_key(epoch_key, header.space, header.doc, header.epoch)
    ciphertext = aead_encrypt(key, header.nonce, plaintext,
                              labelled(labels.OP_AD, header_bytes))
    message = labelled(labels.OP_SIG, header_bytes,
                       tagged_hash(labels.OP_CIPHERTEXT, ciphertext))
    raw = encode([FORMAT_VERSION, header_bytes, ciphertext, author.sign(message)])
    if len(raw) > limits.max_op:
        raise UsageError(f"op of {len(raw)} bytes exceeds the limit of {limits.max_op}; "
                         "split the update")
    return decode_envelope(raw, limits=limits)


def open_op(envelope: OpEnvelope, epoch_key: bytes) -> bytes:
    """Decrypt an op's payload with the key of its epoch.

    Raises:
        DecryptError: wrong key, or tampered header or ciphertext.
    """
    h = envelope.header
    key = derive_doc_key(epoch_key, h.space, h.doc, h.epoch)
    return aead_decrypt(key, h.nonce, envelope.ciphertext,
                        labelled(labels.OP_AD, envelope.header_bytes))


def _decode_header(header_bytes: bytes, limits: ProtocolLimits) -> OpHeader:
    value = decode(header_bytes, limits=limits.decode_limits(limits.max_header))
    version_of_map(value, HEADER_VERSIONS, "op header")
    version = check_version(value.get("v") if isinstance(value, dict) else None,
                            HEADER_VERSIONS, "op header")
    f = expect_map(value, "op header", _HEADER_KEYS[version])
    suite = f.int_("suite")
    if suite not in SUPPORTED_SUITES:
        raise DecodeError(f"cipher suite {suite} is not allowed", Code.UNSUPPORTED_SUITE)
    seen_raw = f.raw("seen")
    seen: TreeHeadRef | None = None
    if seen_raw is not None:
        pair = seen_raw if isinstance(seen_raw, list) else []
        if (len(pair) != 2 or isinstance(pair[0], bool) or not isinstance(pair[0], int)
                or pair[0] < 1 or not isinstance(pair[1], bytes) or len(pair[1]) != HASH_SIZE):
            raise DecodeError("op header.seen: expected [size >= 1, 32-byte root] or null")
        seen = TreeHeadRef(pair[0], pair[1])
    seq = f.int_("seq", lo=1)
    prev = f.bytes_("prev", size=HASH_SIZE)
    if seq == 1 and prev != GENESIS_PREV:
        raise DecodeError("op header.prev must be all zeros for an author's first op")
    return OpHeader(
        space=f.bytes_("space", size=SPACE_ID_SIZE), doc=f.bytes_("doc", size=DOC_ID_SIZE),
        author=f.bytes_("author", size=ID_SIZE), seq=seq, prev=prev,
        deps=VersionVector.from_wire(f.raw("deps"), what="op header.deps", id_size=ID_SIZE,
                                     max_entries=limits.max_deps),
        epoch=f.int_("epoch"), ts=HLCTimestamp.from_wire(f.raw("ts"), what="op header.ts"),
        seen=seen, nonce=f.bytes_("nonce", size=AEAD_NONCE_SIZE), version=version, suite=suite,
        reg=f.int_("reg") if version >= 2 else None)


# ---------------------------------------------------------------- fast path
#
# The envelope has one fixed layout, and a header one fixed key order (canonical
# CBOR sorts keys by their encoding). ``_decode_fast`` reads exactly that layout
# in one pass, checking every rule the generic path checks (shortest-form
# integers and lengths, sizes, ranges, sorted unique deps, no trailing bytes).
# It never raises for bad input: anything it does not recognise - an error, or
# merely an unusual but valid form - makes it return None, and the generic
# strict decoder then decides (accepting it or raising the precise error). So
# the fast path can only make decoding faster, never change what is accepted
# (tests/unit/test_envelope_fast.py checks both directions, with mutated inputs).


class _Bail(Exception):
    """The fast path does not recognise the input (the generic path decides)."""


_U64: Final = 2**64 - 1
_KEY_V: Final = b"\x61v"
#: The map head of each header version: 13 fields (version 2), 12 (version 1).
_HEADER_HEADS: Final = {0xAD: 2, 0xAC: 1}
_BSTR24: Final = b"\x58\x18"
_BSTR32: Final = b"\x58\x20"
_BSTR64: Final = b"\x58\x40"
_MAX_WALL_MS: Final = 2**48 - 1
_MAX_COUNTER: Final = 0xFFFF


def _uint(d: bytes, p: int, end: int) -> tuple[int, int]:
    """A canonical unsigned integer at ``p``: (value, next position)."""
    if p >= end:
        raise _Bail
    b = d[p]
    if b < 24:
        return b, p + 1
    if b == 24:
        if p + 2 > end or d[p + 1] < 24:
            raise _Bail
        return d[p + 1], p + 2
    width = {25: 2, 26: 4, 27: 8}.get(b)
    if width is None or p + 1 + width > end:
        raise _Bail
    v = int.from_bytes(d[p + 1:p + 1 + width], "big")
    if v < (1 << (4 * width)):  # not the shortest form
        raise _Bail
    return v, p + 1 + width


def _bstr(d: bytes, p: int, end: int) -> tuple[bytes, int]:
    """A canonical byte string at ``p``: (value, next position)."""
    if p >= end:
        raise _Bail
    b = d[p]
    if 0x40 <= b < 0x58:
        n, p = b - 0x40, p + 1
    elif b == 0x58:
        if p + 2 > end or d[p + 1] < 24:
            raise _Bail
        n, p = d[p + 1], p + 2
    elif b == 0x59:
        if p + 3 > end:
            raise _Bail
        n, p = int.from_bytes(d[p + 1:p + 3], "big"), p + 3
        if n < 0x100:
            raise _Bail
    elif b == 0x5A:
        if p + 5 > end:
            raise _Bail
        n, p = int.from_bytes(d[p + 1:p + 5], "big"), p + 5
        if n < 0x10000:
            raise _Bail
    else:
        raise _Bail
    if p + n > end:
        raise _Bail
    return d[p:p + n], p + n


def _fixed(d: bytes, p: int, head: bytes, size: int) -> tuple[bytes, int]:
    """A byte string of exactly ``size`` bytes whose canonical head is ``head``."""
    q = p + len(head)
    if d[p:q] != head or q + size > len(d):
        raise _Bail
    return d[q:q + size], q + size


def _key(d: bytes, p: int, key: bytes) -> int:
    q = p + len(key)
    if d[p:q] != key:
        raise _Bail
    return q


def _deps_fast(h: bytes, p: int, end: int, max_deps: int) -> tuple[VersionVector, int]:
    start = p
    count, p = _array_len(h, p, end)
    if count > max_deps:
        raise _Bail
    entries: dict[bytes, int] = {}
    previous = b""
    for _ in range(count):
        if p >= end or h[p] != 0x82:
            raise _Bail
        dev, p = _fixed(h, p + 1, _BSTR32, ID_SIZE)
        n, p = _uint(h, p, end)
        if n < 1 or dev <= previous:
            raise _Bail
        entries[dev] = n
        previous = dev
    return VersionVector._from_checked(entries, h[start:p]), p


def _seen_fast(h: bytes, p: int, end: int) -> tuple[TreeHeadRef | None, int]:
    if p < end and h[p] == 0xF6:
        return None, p + 1
    p = _key(h, p, b"\x82")
    size, p = _uint(h, p, end)
    if size < 1:
        raise _Bail
    root, p = _fixed(h, p, _BSTR32, HASH_SIZE)
    return TreeHeadRef(size, root), p


def _header_fast(h: bytes, limits: ProtocolLimits) -> OpHeader:
    end = len(h)
    if end < 2 or end > limits.max_header or limits.max_depth < 3:
        raise _Bail
    version = _HEADER_HEADS.get(h[0])
    if version is None:
        raise _Bail
    p = _key(h, 1, _KEY_V)
    v, p = _uint(h, p, end)
    if v != version:
        raise _Bail
    p = _key(h, p, b"\x62ts\x82")
    wall, p = _uint(h, p, end)
    counter, p = _uint(h, p, end)
    if wall > _MAX_WALL_MS or counter > _MAX_COUNTER:
        raise _Bail
    p = _key(h, p, b"\x63doc\x50")
    doc, p = h[p:p + DOC_ID_SIZE], p + DOC_ID_SIZE
    reg: int | None = None
    if version == 2:
        p = _key(h, p, b"\x63reg")
        reg, p = _uint(h, p, end)
    p = _key(h, p, b"\x63seq")
    seq, p = _uint(h, p, end)
    if seq < 1:
        raise _Bail
    p = _key(h, p, b"\x64deps")
    deps, p = _deps_fast(h, p, end, limits.max_deps)
    p = _key(h, p, b"\x64prev")
    prev, p = _fixed(h, p, _BSTR32, HASH_SIZE)
    if seq == 1 and prev != GENESIS_PREV:
        raise _Bail
    p = _key(h, p, b"\x64seen")
    seen, p = _seen_fast(h, p, end)
    p = _key(h, p, b"\x65epoch")
    epoch, p = _uint(h, p, end)
    p = _key(h, p, b"\x65nonce")
    nonce, p = _fixed(h, p, _BSTR24, AEAD_NONCE_SIZE)
    p = _key(h, p, b"\x65space\x50")
    space, p = h[p:p + SPACE_ID_SIZE], p + SPACE_ID_SIZE
    p = _key(h, p, b"\x65suite")
    suite, p = _uint(h, p, end)
    if suite not in SUPPORTED_SUITES:
        raise _Bail
    p = _key(h, p, b"\x66author")
    author, p = _fixed(h, p, _BSTR32, ID_SIZE)
    if p != end:
        raise _Bail
    return OpHeader(space=space, doc=doc, author=author, seq=seq, prev=prev, deps=deps,
                    epoch=epoch, ts=HLCTimestamp(wall, counter), seen=seen, nonce=nonce,
                    version=version, suite=suite, reg=reg)


def _array_len(d: bytes, p: int, end: int) -> tuple[int, int]:
    """A canonical array head at ``p``: (item count, next position)."""
    if p >= end:
        raise _Bail
    b = d[p]
    if 0x80 <= b < 0x98:
        return b - 0x80, p + 1
    if b == 0x98:
        if p + 2 > end or d[p + 1] < 24:
            raise _Bail
        return d[p + 1], p + 2
    if b == 0x99:
        if p + 3 > end:
            raise _Bail
        n = int.from_bytes(d[p + 1:p + 3], "big")
        if n < 0x100:
            raise _Bail
        return n, p + 3
    raise _Bail


def _decode_fast(data: bytes, limits: ProtocolLimits) -> OpEnvelope | None:
    """The envelope, if it has the fixed layout read here; None to let the generic
    strict decoder decide (see the comment above)."""
    if type(data) is not bytes or len(data) < 2 or data[0] != 0x84 or data[1] != 0x01:
        return None
    dl = limits.decode_limits(limits.max_op)
    if dl.max_depth < 3 or dl.max_items < 13:
        return None
    end = len(data)
    try:
        header_bytes, p = _bstr(data, 2, end)
        ciphertext, p = _bstr(data, p, end)
        signature, p = _fixed(data, p, _BSTR64, 64)
        if p != end or len(ciphertext) < 16:
            return None
        header = _header_fast(header_bytes, limits)
    except (_Bail, IndexError):
        return None
    return OpEnvelope(header, header_bytes, ciphertext, signature, data,
                      tagged_hash(labels.OP_ID, data))


def decode_envelope(data: bytes, *,
                    limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> OpEnvelope:
    """Decode an envelope (structure only: no signature or rule checks).

    Raises:
        DecodeError: ``too_large``, ``malformed``, ``unsupported_version`` or
            ``unsupported_suite``, with the field at fault in the message.
    """
    if len(data) > limits.max_op:
        raise DecodeError(f"op of {len(data)} bytes exceeds the limit of {limits.max_op}",
                          Code.TOO_LARGE)
    fast = _decode_fast(data, limits)
    if fast is not None:
        return fast
    return _decode_generic(data, limits)


def _decode_generic(data: bytes, limits: ProtocolLimits) -> OpEnvelope:
    """The generic strict path: :func:`decode`, then the schema checks."""
    outer = decode(data, limits=limits.decode_limits(limits.max_op))
    if not isinstance(outer, list) or len(outer) != 4:
        raise DecodeError("op envelope: expected [version, header, ciphertext, signature]")
    version, header_bytes, ciphertext, signature = outer
    check_version(version, FORMAT_VERSION, "op envelope")
    if not isinstance(header_bytes, bytes) or not isinstance(ciphertext, bytes) \
            or not isinstance(signature, bytes):
        raise DecodeError("op envelope: header, ciphertext and signature are byte strings")
    if len(signature) != 64:
        raise DecodeError("op envelope: signature must be 64 bytes")
    if len(ciphertext) < 16:
        raise DecodeError("op envelope: ciphertext is shorter than its tag")
    header = _decode_header(header_bytes, limits)
    raw = bytes(data)
    return OpEnvelope(header, header_bytes, ciphertext, signature, raw,
                      tagged_hash(labels.OP_ID, raw))
