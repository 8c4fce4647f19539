"""Op payloads (protocol section 8.11): what the plaintext of an op carries.

Two forms, each the canonical encoding of a map::

    edit = {"n": tstr, "u": [* bstr]}     ; an edit of document n: CRDT updates
    part = {"n": tstr, "p": [index: uint, count: uint, total: uint,
                             digest: bstr .size 32, chunk: bstr]}

An edit whose encoding does not fit one op is sealed as ``count`` >= 2 *parts*:
consecutive ops of its author's chain (seq s, s+1, ..., s+count-1), all on the
document's id, part ``i`` carrying bytes ``[i*c, ...)`` of ``whole`` = the
edit's encoding, and every part the same ``total`` = ``len(whole)`` and
``digest`` = ``tagged_hash(OP_PARTS, whole)``. A reader keeps at most one open
*assembly* per author and space (:class:`Assembly`, advanced by
:func:`advance`): part 0 opens one, each next part must continue it exactly,
and the last one completes it (:func:`finish`). Any other op of the author
abandons an open assembly (its author re-sent the edit after a refusal).
Readers bound what they buffer by ``max_edit`` and ``max_parts``.

Pure functions over bytes: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sddsf.errors import Code, DecodeError, UsageError
from sddsf.protocol import labels
from sddsf.protocol.encoding import DEFAULT_LIMITS, DecodeLimits, decode, encode
from sddsf.protocol.labels import tagged_hash
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits

__all__ = [
    "Assembly",
    "Edit",
    "Part",
    "advance",
    "assemble",
    "decode_payload",
    "encode_edit",
    "finish",
    "parts_digest",
    "split_edit",
]

DIGEST_SIZE: Final = 32
_PART_FRAME_SLACK: Final = 64  # map, keys, array and integer heads of a part (bounded)


@dataclass(frozen=True, slots=True)
class Edit:
    """An edit of one document: its name and CRDT updates."""

    name: str
    updates: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a multi-part edit."""

    name: str
    index: int
    count: int
    total: int
    digest: bytes
    chunk: bytes


@dataclass(frozen=True, slots=True)
class Assembly:
    """A multi-part edit whose first parts a reader has seen (one per author and space)."""

    name: str
    doc: bytes
    count: int
    total: int
    digest: bytes
    next_index: int
    next_seq: int
    received: int

    @property
    def complete(self) -> bool:
        """Whether every part has arrived."""
        return self.next_index == self.count

    def to_wire(self) -> list[object]:
        """``[name, doc, count, total, digest, next_index, next_seq, received]``."""
        return [self.name, self.doc, self.count, self.total, self.digest, self.next_index,
                self.next_seq, self.received]

    @classmethod
    def from_wire(cls, value: object) -> Assembly:
        """The inverse of :meth:`to_wire` (local storage only).

        Raises:
            DecodeError: not an assembly record.
        """
        if not isinstance(value, list) or len(value) != 8:
            raise DecodeError("an assembly record is malformed")
        name, doc, count, total, digest, next_index, next_seq, received = value
        if not (isinstance(name, str) and isinstance(doc, bytes) and isinstance(digest, bytes)
                and all(isinstance(x, int) and not isinstance(x, bool)
                        for x in (count, total, next_index, next_seq, received))):
            raise DecodeError("an assembly record is malformed")
        return cls(name, doc, count, total, digest, next_index, next_seq, received)


def parts_digest(whole: bytes) -> bytes:
    """The digest every part of a multi-part edit carries."""
    return tagged_hash(labels.OP_PARTS, whole)


def encode_edit(name: str, updates: list[bytes] | tuple[bytes, ...]) -> bytes:
    """The payload of a one-op edit: ``{"n": name, "u": updates}``."""
    return encode({"n": name, "u": list(updates)})


def split_edit(name: str, updates: list[bytes] | tuple[bytes, ...], *, max_payload: int,
               max_edit: int | None = None,
               limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> list[bytes]:
    """The payloads of the ops that carry one edit: one edit payload when it fits
    ``max_payload`` bytes, else parts of at most ``max_payload`` bytes each.

    Args:
        name: the document's name.
        updates: the edit's CRDT updates.
        max_payload: the largest plaintext one op may carry.
        max_edit: the largest edit to seal (default and ceiling: ``limits.max_edit``).
        limits: the protocol limits readers apply.

    Raises:
        UsageError: the edit exceeds ``max_edit`` or needs more than
            ``limits.max_parts`` parts; nothing is returned for it.
    """
    whole = encode_edit(name, updates)
    if len(whole) <= max_payload:
        return [whole]
    ceiling = min(limits.max_edit, max_edit) if max_edit is not None else limits.max_edit
    if len(whole) > ceiling:
        raise UsageError(f"an edit of document {name!r} is {len(whole)} bytes, more than the "
                         f"largest edit that syncs (max_edit = {ceiling} bytes)")
    frame = len(encode({"n": name, "p": [0, 0, 0, bytes(DIGEST_SIZE), b""]}))
    chunk = max_payload - frame - _PART_FRAME_SLACK
    if chunk < 1024:
        raise UsageError(f"ops of at most {max_payload} bytes are too small to carry parts")
    count = -(-len(whole) // chunk)
    if count > limits.max_parts:
        raise UsageError(f"an edit of document {name!r} needs {count} parts, more than "
                         f"max_parts = {limits.max_parts}")
    digest = parts_digest(whole)
    return [encode({"n": name, "p": [i, count, len(whole), digest,
                                     whole[i * chunk:(i + 1) * chunk]]})
            for i in range(count)]


def decode_payload(data: bytes, *, decode_limits: DecodeLimits = DEFAULT_LIMITS) -> Edit | Part:
    """Decode one op's plaintext.

    Raises:
        DecodeError: ``malformed`` (neither form, a wrong type, an index out of
            range), or ``too_large``.
    """
    value = decode(data, limits=decode_limits)
    if not isinstance(value, dict) or not isinstance(value.get("n"), str):
        raise DecodeError("op payload: expected a map with a document name \"n\"")
    name = str(value["n"])
    if set(value) == {"n", "u"}:
        updates = value["u"]
        if not isinstance(updates, list) or not all(isinstance(u, bytes) for u in updates):
            raise DecodeError("op payload \"u\": expected an array of byte strings")
        return Edit(name, tuple(updates))
    if set(value) == {"n", "p"}:
        return _part(name, value["p"])
    raise DecodeError(f"op payload: unexpected fields {sorted(str(k) for k in value)}")


def _part(name: str, raw: object) -> Part:
    if not isinstance(raw, list) or len(raw) != 5:
        raise DecodeError("op payload \"p\": expected [index, count, total, digest, chunk]")
    index, count, total, digest, chunk = raw
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (index, count, total)):
        raise DecodeError("op payload \"p\": index, count and total are integers")
    if not isinstance(digest, bytes) or len(digest) != DIGEST_SIZE \
            or not isinstance(chunk, bytes):
        raise DecodeError("op payload \"p\": expected a 32-byte digest and a byte-string chunk")
    if count < 2 or not 0 <= index < count or not chunk or len(chunk) > total:
        raise DecodeError(f"op payload \"p\": part {index} of {count} with {len(chunk)} of "
                          f"{total} bytes is out of range")
    return Part(name, index, count, total, digest, chunk)


def advance(current: Assembly | None, payload: Edit | Part, *, doc: bytes, seq: int,
            limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> Assembly | None:
    """A reader's open assembly of one author after that author's op ``seq`` on
    document ``doc`` carrying ``payload``.

    An edit, or part 0, abandons ``current``; part 0 opens a new assembly. A
    later part must continue ``current`` exactly (same name, document, count,
    total and digest; the next index at the next seq).

    Raises:
        DecodeError: ``too_large`` (beyond ``max_edit`` or ``max_parts``), or
            ``malformed`` (a part that does not continue the open assembly).
    """
    if isinstance(payload, Edit):
        return None
    p = payload
    if p.index == 0:
        if p.total > limits.max_edit or p.count > limits.max_parts:
            raise DecodeError(f"a multi-part edit of {p.total} bytes in {p.count} parts exceeds "
                              f"max_edit = {limits.max_edit} or max_parts = {limits.max_parts}",
                              Code.TOO_LARGE)
        return Assembly(p.name, doc, p.count, p.total, p.digest, 1, seq + 1, len(p.chunk))
    c = current
    if c is None or (c.name, c.doc, c.count, c.total, c.digest) != (
            p.name, doc, p.count, p.total, p.digest) \
            or (c.next_index, c.next_seq) != (p.index, seq):
        raise DecodeError(f"part {p.index} of a multi-part edit does not continue its "
                          "author's previous part")
    received = c.received + len(p.chunk)
    last = p.index == p.count - 1
    if received > c.total or (last and received != c.total):
        raise DecodeError(f"the parts of a multi-part edit carry {received} bytes, not the "
                          f"{c.total} they declare")
    return Assembly(c.name, c.doc, c.count, c.total, c.digest, p.index + 1, seq + 1, received)


def finish(assembly: Assembly, chunks: list[bytes]) -> Edit:
    """The edit a complete assembly carries, from its parts' chunks in order.

    Raises:
        DecodeError: the chunks do not hash to the digest, or do not decode as an
            edit of the assembly's document.
    """
    whole = b"".join(chunks)
    if not assembly.complete or len(chunks) != assembly.count or len(whole) != assembly.total:
        raise DecodeError("a multi-part edit is incomplete")
    if parts_digest(whole) != assembly.digest:
        raise DecodeError("the parts of a multi-part edit do not match their digest")
    edit = decode_payload(whole, decode_limits=DecodeLimits(
        max_size=assembly.total, max_depth=DEFAULT_LIMITS.max_depth,
        max_items=DEFAULT_LIMITS.max_items))
    if not isinstance(edit, Edit) or edit.name != assembly.name:
        raise DecodeError("the parts of a multi-part edit do not hold an edit of their document")
    return edit


def assemble(ops: list[tuple[int, bytes]], *, doc: bytes,
             limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> list[Edit]:
    """The reference reader of one author's ops on ``doc``: ``(seq, plaintext)`` in
    chain order in, the edits they complete out (in memory; a device keeps the
    open assembly in its store between syncs).

    Raises:
        DecodeError: as :func:`decode_payload`, :func:`advance` and :func:`finish`.
    """
    edits: list[Edit] = []
    current: Assembly | None = None
    chunks: list[bytes] = []
    for seq, plaintext in ops:
        payload = decode_payload(plaintext)
        current = advance(current, payload, doc=doc, seq=seq, limits=limits)
        if isinstance(payload, Edit):
            edits.append(payload)
            chunks = []
            continue
        chunks = [payload.chunk] if payload.index == 0 else [*chunks, payload.chunk]
        if current is not None and current.complete:
            edits.append(finish(current, chunks))
            current, chunks = None, []
    return edits
