"""Signed tree heads: :func:`decode_tree_head`, :func:`verify_tree_head` with the
relay's key, and :func:`check_progress` from and to real heads with a real
consistency proof.

Each input is tried twice: as a whole tree head, and as a body that the relay
key signs (so a fuzzed body gets past the signature).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from fuzz.contract import attempt
from fuzz.targets import Target
from fuzz.world import hex_values, vectors, world
from sddsf.protocol import labels
from sddsf.protocol.encoding import encode
from sddsf.protocol.labels import labelled
from sddsf.protocol.treehead import (
    TREE_HEAD_VERSION,
    TreeHead,
    check_progress,
    decode_tree_head,
    verify_tree_head,
)


@cache
def _progress() -> tuple[TreeHead, TreeHead, tuple[bytes, ...]]:
    """The vectors' heads of size 3 and 7 and the consistency proof between them."""
    case = vectors("tree_head")["progress"][0]
    return (decode_tree_head(bytes.fromhex(case["old"])),
            decode_tree_head(bytes.fromhex(case["new"])),
            tuple(bytes.fromhex(p) for p in case["proof"]))


def _check(data: bytes) -> None:
    w = world()
    head = decode_tree_head(data)
    attempt(verify_tree_head, data, w.relay_key.public, log=w.log)
    small, large, proof = _progress()
    attempt(check_progress, small, head, list(proof))
    attempt(check_progress, head, large, list(proof))
    attempt(check_progress, head, head, [])


def run(data: bytes) -> None:
    """As a tree head, then as a body signed by the relay."""
    attempt(_check, data)
    key = world().relay_key
    _check(encode([TREE_HEAD_VERSION, data, key.sign(labelled(labels.TREE_HEAD_SIG, data))]))


def seeds() -> Iterator[bytes]:
    """The tree head vectors, and their bodies."""
    for raw in hex_values("tree_head", "tree_head", "old", "new"):
        yield raw
        yield decode_tree_head(raw).body_bytes


TARGETS = {"tree_head": Target("tree_head", run, seeds, max_len=2048)}
