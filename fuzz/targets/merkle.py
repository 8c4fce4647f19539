"""RFC 9162 proofs (:mod:`sddsf.protocol.merkle`): inclusion, consistency,
subtree inclusion and consistency, and frontiers, from a relay's (untrusted)
sizes, indices and hashes.

The input is read as a small program: a mode byte, then integers (up to 72
bits, so past 2**64), hashes (0-47 bytes) and proofs (0-79 hashes). Mode
``real`` builds a real tree, takes a real proof and optionally flips one bit.

Oracles beyond the contract: a real proof verifies, and a proof with one
flipped bit does not.
"""

from __future__ import annotations

from collections.abc import Iterator

from fuzz.targets import Target
from sddsf.errors import ProofError
from sddsf.protocol import merkle


class _Reader:
    """Values from fuzz bytes; past the end everything reads as zero."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        b = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return b

    def raw(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint(self) -> int:
        return int.from_bytes(self.raw(self.byte() % 10), "big")

    def hash(self) -> bytes:
        return self.raw(self.byte() % 48)

    def proof(self) -> list[bytes]:
        return [self.hash() for _ in range(self.byte() % 80)]


def _real(r: _Reader) -> None:
    leaves = 1 + r.uint() % 300
    tree = merkle.MerkleTree(merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(leaves))
    n = tree.size
    size2 = 1 + r.uint() % n
    size1 = 1 + r.uint() % size2
    index = r.uint() % size2
    leaf = tree.node(0, index)
    inclusion = tree.inclusion_proof(index, size2)
    consistency = tree.consistency_proof(size1, size2)
    merkle.verify_inclusion(leaf, index, size2, inclusion, tree.root(size2))
    merkle.verify_consistency(size1, size2, tree.root(size1), tree.root(size2), consistency)
    proof = inclusion if r.byte() % 2 else consistency
    if not proof:
        return
    k, bit = r.uint() % len(proof), r.byte() % 256
    proof[k] = bytes(b ^ (1 << (bit % 8)) if j == bit // 8 else b
                     for j, b in enumerate(proof[k]))
    try:
        if proof is inclusion:
            merkle.verify_inclusion(leaf, index, size2, proof, tree.root(size2))
        else:
            merkle.verify_consistency(size1, size2, tree.root(size1), tree.root(size2), proof)
    except ProofError:
        return
    raise AssertionError("a proof with a flipped bit still verifies")


def run(data: bytes) -> None:
    """One proof check chosen by the first byte."""
    r = _Reader(data)
    mode = r.byte() % 7
    if mode == 0:
        merkle.verify_inclusion(r.hash(), r.uint(), r.uint(), r.proof(), r.hash())
    elif mode == 1:
        merkle.root_from_inclusion(r.hash(), r.uint(), r.uint(), r.proof())
    elif mode == 2:
        merkle.verify_consistency(r.uint(), r.uint(), r.hash(), r.hash(), r.proof())
    elif mode == 3:
        merkle.verify_subtree_inclusion(r.hash(), r.uint(), r.uint(), r.uint(), r.proof(),
                                        r.hash())
    elif mode == 4:
        merkle.verify_subtree_consistency(r.uint(), r.uint(), r.uint(), r.hash(), r.hash(),
                                          r.proof())
    elif mode == 5:
        merkle.Frontier.from_hashes(r.uint(), r.proof()).root()
    else:
        _real(r)


def _u(n: int) -> bytes:
    raw = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    return bytes([len(raw)]) + raw


def _h(h: bytes) -> bytes:
    return bytes([len(h)]) + h


def _p(proof: list[bytes]) -> bytes:
    return bytes([len(proof)]) + b"".join(_h(h) for h in proof)


def seeds() -> Iterator[bytes]:
    """Honest inclusion and consistency proofs of a 7-leaf tree, in each mode."""
    tree = merkle.MerkleTree(merkle.leaf_hash(bytes([i])) for i in range(7))
    leaf, root = tree.node(0, 2), tree.root()
    yield b"\x00" + _h(leaf) + _u(2) + _u(7) + _p(tree.inclusion_proof(2)) + _h(root)
    yield b"\x01" + _h(leaf) + _u(2) + _u(7) + _p(tree.inclusion_proof(2))
    yield (b"\x02" + _u(3) + _u(7) + _h(tree.root(3)) + _h(root)
           + _p(tree.consistency_proof(3)))
    yield (b"\x03" + _h(tree.node(0, 5)) + _u(5) + _u(4) + _u(6) + _p([tree.node(0, 4)])
           + _h(tree.hash_range(4, 6)))
    yield (b"\x04" + _u(0) + _u(3) + _u(7) + _h(tree.root(3)) + _h(root)
           + _p(tree.consistency_proof(3)))
    yield b"\x05" + _u(7) + _p(tree.frontier().to_hashes())
    yield b"\x06" + _u(12) + _u(9) + _u(4) + _u(5) + b"\x01" + _u(1) + b"\x07"


TARGETS = {"merkle_proofs": Target("merkle_proofs", run, seeds)}
