"""Signed tree heads of the relay's Merkle logs, and the client's progress check.

Wire form::

    tree_head = [version, body_bytes, signature]
    body      = {"v", "log", "size", "root", "ts"}

``log`` names the log (a space id, or another log id of up to 64 bytes);
``root`` is the RFC 9162 root of the first ``size`` leaves; the relay signs
``labelled(TREE_HEAD_SIG, body_bytes)`` with its Ed25519 key. The signature
gives no trust in the relay: it makes a relay's statement attributable, so two
different heads of the same size are evidence of a split view (THREATS #10-12).

:func:`check_progress` is what a client runs for every new head: the log may
only grow, and the new head must be consistent with the last one it verified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sddsf.crypto import Ed25519PublicKey, Ed25519SigningKey
from sddsf.errors import Code, ProofError
from sddsf.protocol import labels
from sddsf.protocol.encoding import encode
from sddsf.protocol.labels import labelled
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.merkle import verify_consistency
from sddsf.protocol.schema import decode_signed

__all__ = ["EMPTY_PAGE_RETRIES", "TREE_HEAD_VERSION", "TreeHead", "check_progress",
           "decode_tree_head", "sign_tree_head", "verify_tree_head"]

TREE_HEAD_VERSION: Final = 1
#: A log holder answers a page of entries with the head it read *after* the
#: page (protocol 17.6), so an append between its two reads serves no entry
#: under a longer head. A reader asks again this many times in a row before
#: it treats the log as withholding entries (its root check then fails).
EMPTY_PAGE_RETRIES: Final = 3


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A decoded tree head."""

    log: bytes
    size: int
    root: bytes
    ts: int
    body_bytes: bytes
    signature: bytes
    raw: bytes


def sign_tree_head(key: Ed25519SigningKey, *, log: bytes, size: int, root: bytes,
                   ts_ms: int) -> bytes:
    """Sign a tree head (relay side)."""
    body = encode({"v": TREE_HEAD_VERSION, "log": log, "size": size, "root": root,
                   "ts": ts_ms})
    return encode([TREE_HEAD_VERSION, body, key.sign(labelled(labels.TREE_HEAD_SIG, body))])


def decode_tree_head(data: bytes, *,
                     limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> TreeHead:
    """Decode a tree head's structure.

    Raises:
        DecodeError: malformed, too large or unsupported version.
    """
    f, body, sig = decode_signed(data, what="tree head", version=TREE_HEAD_VERSION,
                                 fields=("v", "log", "size", "root", "ts"),
                                 limits=limits.decode_limits(limits.max_tree_head))
    return TreeHead(f.bytes_("log", max_size=64), f.int_("size"), f.bytes_("root", size=32),
                    f.int_("ts"), body, sig, bytes(data))


def verify_tree_head(data: bytes, relay_key: Ed25519PublicKey, *, log: bytes,
                     limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> TreeHead:
    """Decode and check a tree head's signature and log id.

    Raises:
        DecodeError; ProofError (``tree_head_invalid``) for a bad signature or another log.
    """
    th = decode_tree_head(data, limits=limits)
    if th.log != log:
        raise ProofError("tree head is for another log", Code.TREE_HEAD_INVALID)
    if not relay_key.is_valid_signature(labelled(labels.TREE_HEAD_SIG, th.body_bytes),
                                        th.signature):
        raise ProofError("tree head signature does not verify", Code.TREE_HEAD_INVALID)
    return th


def check_progress(old: TreeHead | None, new: TreeHead, consistency: Sequence[bytes]) -> None:
    """Accept ``new`` only if the log grew consistently from ``old``.

    Raises:
        ProofError: ``log_rollback`` when ``new`` is smaller than ``old`` (time
            travel to the past), ``proof_invalid`` when they are not consistent
            (a forked or rewritten log), ``tree_head_invalid`` for another log.
    """
    if old is None:
        return
    if new.log != old.log:
        raise ProofError("tree heads of two different logs", Code.TREE_HEAD_INVALID)
    if old.size == 0:
        return
    if new.size < old.size:
        raise ProofError(f"the relay's log went back from {old.size} to {new.size} entries; "
                         "it is rolling back history", Code.LOG_ROLLBACK)
    verify_consistency(old.size, new.size, old.root, new.root, consistency)
