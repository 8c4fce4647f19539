"""Unit and property tests for :mod:`sddsf.protocol.merkle` (RFC 9162 Merkle log).

Reference implementations here are written straight from the definitions
(RFC 9162 section 2.1 MTH/PATH/SUBPROOF, and SUBTREE_PROOF from the Merkle Tree
Certificates draft) with ``hashlib`` only, so they share no code with the module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sddsf.errors import Code, ProofError, UsageError
from sddsf.protocol.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Frontier,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    range_hash_from_nodes,
    root_from_inclusion,
    root_of,
    verify_consistency,
    verify_inclusion,
    verify_subtree_consistency,
    verify_subtree_inclusion,
)

# ---------------------------------------------------------------------------
# independent reference implementation
# ---------------------------------------------------------------------------


def ref_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """k: the largest power of two smaller than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(hs: Sequence[bytes]) -> bytes:
    if not hs:
        return hashlib.sha256(b"").digest()
    if len(hs) == 1:
        return hs[0]
    k = split(len(hs))
    return ref_node(ref_mth(hs[:k]), ref_mth(hs[k:]))


def ref_path(m: int, hs: Sequence[bytes]) -> list[bytes]:
    if len(hs) <= 1:
        return []
    k = split(len(hs))
    if m < k:
        return [*ref_path(m, hs[:k]), ref_mth(hs[k:])]
    return [*ref_path(m - k, hs[k:]), ref_mth(hs[:k])]


def ref_subproof(m: int, hs: Sequence[bytes], known: bool = True) -> list[bytes]:
    n = len(hs)
    if m == n:
        return [] if known else [ref_mth(hs)]
    k = split(n)
    if m <= k:
        return [*ref_subproof(m, hs[:k], known), ref_mth(hs[k:])]
    return [*ref_subproof(m - k, hs[k:], False), ref_mth(hs[:k])]


def ref_subtree_proof(start: int, end: int, hs: Sequence[bytes], known: bool = True) -> list[bytes]:
    """SUBTREE_PROOF / SUBTREE_SUBPROOF (Merkle Tree Certificates draft)."""
    n = len(hs)
    if start == 0 and end == n:
        return [] if known else [ref_mth(hs)]
    k = split(n)
    if end <= k:
        return [*ref_subtree_proof(start, end, hs[:k], known), ref_mth(hs[k:])]
    if start >= k:
        return [*ref_subtree_proof(start - k, end - k, hs[k:], known), ref_mth(hs[:k])]
    assert start == 0  # a valid subtree that straddles k starts at 0
    return [*ref_subtree_proof(0, end - k, hs[k:], False), ref_mth(hs[:k])]


def directions(index: int, size: int) -> list[str]:
    """Side of each audit-path sibling, lowest level first."""
    out: list[str] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + split(hi - lo)
        if index < mid:
            out.append("R")
            hi = mid
        else:
            out.append("L")
            lo = mid
    return out[::-1]


def is_subtree(start: int, end: int) -> bool:
    size = end - start
    ceil = 1
    while ceil < size:
        ceil *= 2
    return 0 <= start < end and start % ceil == 0


def leaves(n: int, salt: bytes = b"") -> list[bytes]:
    """n distinct leaf hashes."""
    return [ref_leaf(salt + i.to_bytes(4, "big")) for i in range(n)]


def flip(h: bytes, bit: int = 0) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


def rejects(fn: Callable[..., object], *args: object) -> ProofError:
    """Call ``fn(*args)`` and return the ProofError it must raise."""
    with pytest.raises(ProofError) as info:
        fn(*args)
    assert info.value.code is Code.PROOF_INVALID
    return info.value


# ---------------------------------------------------------------------------
# RFC 6962 reference data (also transparency-dev/merkle testonly)
# ---------------------------------------------------------------------------

RFC6962_LEAVES = [
    bytes.fromhex(x)
    for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f")
]
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
H = {  # named interior hashes of the reference tree
    "l0": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "l1": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "l4": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "l5": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "l6": "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "01": "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "23": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "67": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "0-4": "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4-8": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
}
RFC6962_INCLUSION = [  # (index, size, proof)
    (0, 1, []),
    (0, 8, ["l1", "23", "4-8"]),
    (5, 8, ["l4", "67", "0-4"]),
    (2, 3, ["01"]),
    (1, 5, ["l0", "23", "l4"]),
]
RFC6962_CONSISTENCY = [  # (size1, size2, proof)
    (1, 1, []),
    (1, 8, ["l1", "23", "4-8"]),
    (6, 8, ["l5", "67", "0-4"]),
    (2, 5, ["23", "l4"]),
    (6, 7, ["l5", "l6", "0-4"]),
]


@pytest.fixture(scope="module")
def ref_tree() -> MerkleTree:
    return MerkleTree(leaf_hash(d) for d in RFC6962_LEAVES)


def test_empty_root() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_of([]) == EMPTY_ROOT
    assert MerkleTree().root() == EMPTY_ROOT
    assert Frontier().root() == EMPTY_ROOT
    assert HASH_SIZE == 32


def test_leaf_and_node_hash_are_domain_separated() -> None:
    a, b = ref_leaf(b"a"), ref_leaf(b"b")
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert leaf_hash(b"a") == a
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert node_hash(a, b) != node_hash(b, a)
    # a 64-byte leaf equal to two concatenated hashes does not collide with their node
    assert leaf_hash(a + b) != node_hash(a, b)
    assert root_of([a]) == a  # MTH of one leaf is the leaf hash itself


@pytest.mark.parametrize("size", range(1, 9))
def test_rfc6962_reference_roots(size: int, ref_tree: MerkleTree) -> None:
    want = bytes.fromhex(RFC6962_ROOTS[size - 1])
    hs = [leaf_hash(d) for d in RFC6962_LEAVES[:size]]
    assert root_of(hs) == want
    assert ref_tree.root(size) == want
    assert ref_mth(hs) == want  # the reference itself is right


@pytest.mark.parametrize(("index", "size", "names"), RFC6962_INCLUSION)
def test_rfc6962_reference_inclusion_proofs(
    index: int, size: int, names: list[str], ref_tree: MerkleTree
) -> None:
    want = [bytes.fromhex(H[n]) for n in names]
    assert ref_tree.inclusion_proof(index, size) == want
    root = bytes.fromhex(RFC6962_ROOTS[size - 1])
    verify_inclusion(leaf_hash(RFC6962_LEAVES[index]), index, size, want, root)


@pytest.mark.parametrize(("size1", "size2", "names"), RFC6962_CONSISTENCY)
def test_rfc6962_reference_consistency_proofs(
    size1: int, size2: int, names: list[str], ref_tree: MerkleTree
) -> None:
    want = [bytes.fromhex(H[n]) for n in names]
    assert ref_tree.consistency_proof(size1, size2) == want
    verify_consistency(size1, size2, bytes.fromhex(RFC6962_ROOTS[size1 - 1]),
                       bytes.fromhex(RFC6962_ROOTS[size2 - 1]), want)


# ---------------------------------------------------------------------------
# roots, frontier, ranges
# ---------------------------------------------------------------------------


@given(n=st.integers(1, 300), salt=st.binary(max_size=4), data=st.data())
def test_root_matches_naive_mth(n: int, salt: bytes, data: st.DataObject) -> None:
    hs = leaves(n, salt)
    tree = MerkleTree(hs)
    assert tree.size == n
    assert root_of(hs) == ref_mth(hs) == tree.root()
    m = data.draw(st.integers(0, n), label="past size")
    assert tree.root(m) == ref_mth(hs[:m])


@given(n=st.integers(0, 300))
def test_frontier_matches_tree_at_every_size_and_round_trips(n: int) -> None:
    hs = leaves(n)
    tree, frontier = MerkleTree(), Frontier()
    for i, h in enumerate(hs):
        completed = frontier.append(h)
        tree.append(h)
        # the leaf, then one node per trailing one bit of i
        assert [(lvl, idx) for lvl, idx, _ in completed] == [
            (lvl, i >> lvl) for lvl in range(len(completed))
        ]
        assert len(completed) == 1 + ((i + 1) & -(i + 1)).bit_length() - 1
        for lvl, idx, h2 in completed:
            assert tree.node(lvl, idx) == h2
        assert frontier.size == i + 1
        assert frontier.root() == tree.root()
        saved = frontier.to_hashes()
        assert len(saved) == (i + 1).bit_count()
        again = Frontier.from_hashes(i + 1, saved)
        assert again.size == frontier.size
        assert again.to_hashes() == saved
        assert again.root() == frontier.root()
    # a restored frontier keeps appending correctly
    restored = Frontier.from_hashes(n, frontier.to_hashes())
    extra = ref_leaf(b"one more")
    restored.append(extra)
    assert restored.root() == ref_mth([*hs, extra])


def test_frontier_from_hashes_rejects_untrusted_garbage() -> None:
    good = leaves(1)[0]
    assert "2 hashes" in rejects(Frontier.from_hashes, 5, [good]).message
    rejects(Frontier.from_hashes, 5, [good, good, good])
    rejects(Frontier.from_hashes, 1, [good[:31]])
    rejects(Frontier.from_hashes, 1, [b""])
    rejects(Frontier.from_hashes, -1, [])
    rejects(Frontier.from_hashes, 0, None)
    rejects(Frontier.from_hashes, 1, good)  # bytes is not a list of hashes
    assert Frontier.from_hashes(0, []).root() == EMPTY_ROOT


def test_range_hash_from_nodes_covers_every_node_range() -> None:
    n = 37
    hs = leaves(n)
    tree = MerkleTree(hs)
    calls: list[tuple[int, int]] = []

    def node(level: int, index: int) -> bytes:
        calls.append((level, index))
        return tree.node(level, index)

    checked = 0
    for start in range(n + 1):
        for end in range(start, n + 1):
            calls.clear()
            if start == end or is_subtree(start, end):
                assert range_hash_from_nodes(node, start, end) == ref_mth(hs[start:end])
                assert len(calls) <= max(1, (end - start).bit_length())
                checked += 1
            else:
                with pytest.raises(UsageError):
                    range_hash_from_nodes(node, start, end)
    assert checked > n  # the loop did test something
    with pytest.raises(UsageError):
        tree.hash_range(0, n + 1)


# ---------------------------------------------------------------------------
# inclusion proofs
# ---------------------------------------------------------------------------


def test_every_inclusion_proof_of_small_trees() -> None:
    hs = leaves(40)
    tree = MerkleTree(hs)
    for n in range(1, 41):
        root = ref_mth(hs[:n])
        for i in range(n):
            proof = tree.inclusion_proof(i, n)
            assert proof == ref_path(i, hs[:n])
            verify_inclusion(hs[i], i, n, proof, root)
            assert root_from_inclusion(hs[i], i, n, proof) == root


def test_generation_only_asks_for_node_ranges() -> None:
    n = 53
    tree = MerkleTree(leaves(n))
    asked: list[tuple[int, int]] = []

    def hash_range(start: int, end: int) -> bytes:
        asked.append((start, end))
        return tree.hash_range(start, end)

    for i in range(n):
        asked.clear()
        proof = inclusion_proof(hash_range, i, n)
        assert len(asked) == len(proof)
        assert all(is_subtree(a, b) and b <= n for a, b in asked)
    for m in range(1, n + 1):
        asked.clear()
        proof = consistency_proof(hash_range, m, n)
        assert len(asked) == len(proof)
        assert all(is_subtree(a, b) and b <= n for a, b in asked)


@given(n=st.integers(1, 300), data=st.data())
def test_inclusion_proofs_verify_and_tampering_fails(n: int, data: st.DataObject) -> None:
    hs = leaves(n)
    tree = MerkleTree(hs)
    root = tree.root()
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = tree.inclusion_proof(i)
    verify_inclusion(hs[i], i, n, proof, root)

    rejects(verify_inclusion, flip(hs[i]), i, n, proof, root)
    rejects(verify_inclusion, hs[i], i, n, proof, flip(root))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1), label="element")
        byte = data.draw(st.integers(0, HASH_SIZE - 1), label="byte")
        bit = data.draw(st.integers(0, 7), label="bit")
        bad = list(proof)
        bad[k] = bad[k][:byte] + bytes([bad[k][byte] ^ (1 << bit)]) + bad[k][byte + 1:]
        rejects(verify_inclusion, hs[i], i, n, bad, root)
        rejects(verify_inclusion, hs[i], i, n, proof[:k] + proof[k + 1:], root)
    extra = data.draw(st.sampled_from([root, hs[i], EMPTY_ROOT]), label="extra")
    pos = data.draw(st.integers(0, len(proof)), label="insert at")
    rejects(verify_inclusion, hs[i], i, n, [*proof[:pos], extra, *proof[pos:]], root)

    # another index of the same tree never verifies with the same leaf and root
    j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="other index") \
        if n > 1 else None
    if j is not None:
        rejects(verify_inclusion, hs[i], j, n, proof, root)

    # Another size: a root does not commit to the tree size (tree heads sign the
    # size for that reason), so the same hashes verify exactly when the audit path
    # has the same shape. Against the true root of that size, the proof verifies
    # exactly when it IS that size's proof.
    n2 = data.draw(st.integers(i + 1, n + 40).filter(lambda s: s != n), label="other size")
    same_shape = directions(i, n2) == directions(i, n)
    if same_shape:
        verify_inclusion(hs[i], i, n2, proof, root)
    else:
        rejects(verify_inclusion, hs[i], i, n2, proof, root)
    big = MerkleTree(leaves(n + 40))
    honest = big.inclusion_proof(i, n2) == proof
    if honest:
        verify_inclusion(hs[i], i, n2, proof, big.root(n2))
    else:
        rejects(verify_inclusion, hs[i], i, n2, proof, big.root(n2))


def test_inclusion_error_messages_say_what_was_expected() -> None:
    hs = leaves(8)
    tree = MerkleTree(hs)
    proof = tree.inclusion_proof(0)
    e = rejects(verify_inclusion, hs[0], 0, 8, [*proof, proof[0]], tree.root())
    assert e.message == "inclusion proof has 4 hashes, expected 3 for leaf 0 in a tree of 8"
    e = rejects(verify_inclusion, hs[0], 8, 8, proof, tree.root())
    assert "outside a tree of 8" in e.message
    e = rejects(verify_inclusion, hs[0], 0, 8, [proof[0], b"", proof[2]], tree.root())
    assert "hash #1 is 0 bytes, expected a 32-byte" in e.message
    e = rejects(verify_inclusion, hs[1], 0, 8, proof, tree.root())
    assert "leads to root" in e.message


# ---------------------------------------------------------------------------
# consistency proofs
# ---------------------------------------------------------------------------


def test_every_consistency_proof_of_small_trees() -> None:
    hs = leaves(40)
    tree = MerkleTree(hs)
    for n in range(1, 41):
        for m in range(1, n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == ref_subproof(m, hs[:n])
            verify_consistency(m, n, ref_mth(hs[:m]), ref_mth(hs[:n]), proof)


@given(n=st.integers(2, 300), data=st.data())
def test_consistency_proofs_verify_and_tampering_fails(n: int, data: st.DataObject) -> None:
    hs = leaves(n + 40)
    tree = MerkleTree(hs)
    m = data.draw(st.integers(1, n - 1), label="size1")
    r1, r2 = tree.root(m), tree.root(n)
    proof = tree.consistency_proof(m, n)
    verify_consistency(m, n, r1, r2, proof)

    rejects(verify_consistency, m, n, r2, r1, proof)
    rejects(verify_consistency, m, n, flip(r1), r2, proof)
    rejects(verify_consistency, m, n, r1, flip(r2), proof)
    rejects(verify_consistency, m, n, r1, r2, [])
    k = data.draw(st.integers(0, len(proof) - 1), label="element")
    bit = data.draw(st.integers(0, 7), label="bit")
    byte = data.draw(st.integers(0, HASH_SIZE - 1), label="byte")
    bad = list(proof)
    bad[k] = bad[k][:byte] + bytes([bad[k][byte] ^ (1 << bit)]) + bad[k][byte + 1:]
    rejects(verify_consistency, m, n, r1, r2, bad)
    rejects(verify_consistency, m, n, r1, r2, proof[:k] + proof[k + 1:])
    extra = data.draw(st.sampled_from([r1, r2, proof[0], EMPTY_ROOT]), label="extra")
    pos = data.draw(st.integers(0, len(proof)), label="insert at")
    rejects(verify_consistency, m, n, r1, r2, [*proof[:pos], extra, *proof[pos:]])

    # Other sizes, with the true roots at those sizes: the hashes verify exactly
    # when they are the proof for those sizes.
    n2 = data.draw(st.integers(1, n + 40), label="other size2")
    m2 = data.draw(st.integers(1, n2), label="other size1")
    if (m2, n2) != (m, n):
        if tree.consistency_proof(m2, n2) == proof:
            verify_consistency(m2, n2, tree.root(m2), tree.root(n2), proof)
        else:
            rejects(verify_consistency, m2, n2, tree.root(m2), tree.root(n2), proof)


def test_consistency_edge_cases() -> None:
    hs = leaves(5)
    tree = MerkleTree(hs)
    r3, r5 = tree.root(3), tree.root(5)
    verify_consistency(3, 3, r3, r3, [])
    verify_consistency(3, 3, r3, r3, ())
    assert "must be empty" in rejects(verify_consistency, 3, 3, r3, r3, [r3]).message
    assert "different roots" in rejects(verify_consistency, 3, 3, r3, r5, []).message
    assert "shrank" in rejects(verify_consistency, 5, 3, r5, r3, []).message
    assert "empty tree" in rejects(verify_consistency, 0, 5, EMPTY_ROOT, r5, []).message
    rejects(verify_consistency, 0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert "is empty" in rejects(verify_consistency, 3, 5, r3, r5, []).message
    e = rejects(verify_consistency, 3, 5, r3, r5, tree.consistency_proof(3)[:-1])
    assert e.message == "consistency proof has 3 hashes, expected 4 from size 3 to size 5"


# ---------------------------------------------------------------------------
# malformed input and misuse
# ---------------------------------------------------------------------------

_L, _R = ref_leaf(b"x"), ref_leaf(b"y")
MALFORMED: list[tuple[str, Callable[[], object]]] = [
    ("short leaf hash", lambda: verify_inclusion(_L[:31], 0, 1, [], _L)),
    ("long root", lambda: verify_inclusion(_L, 0, 1, [], _L + b"\0")),
    ("str leaf", lambda: verify_inclusion("ab" * 16, 0, 1, [], _L)),  # type: ignore[arg-type]
    ("empty string in proof", lambda: verify_inclusion(_L, 0, 2, [b""], _L)),
    ("str in proof", lambda: verify_inclusion(_L, 0, 2, ["x"], _L)),  # type: ignore[list-item]
    ("proof is None", lambda: verify_inclusion(_L, 0, 1, None, _L)),  # type: ignore[arg-type]
    ("proof is bytes", lambda: verify_inclusion(_L, 0, 2, _R, _L)),  # type: ignore[arg-type]
    ("negative index", lambda: verify_inclusion(_L, -1, 1, [], _L)),
    ("negative size", lambda: verify_inclusion(_L, 0, -1, [], _L)),
    ("huge size", lambda: verify_inclusion(_L, 0, 1 << 64, [], _L)),
    ("float size", lambda: verify_inclusion(_L, 0, 1.0, [], _L)),  # type: ignore[arg-type]
    ("bool index", lambda: verify_inclusion(_L, False, 1, [], _L)),
    ("size zero", lambda: root_from_inclusion(_L, 0, 0, [])),
    ("size1 > size2", lambda: verify_consistency(2, 1, _L, _R, [])),
    ("negative size1", lambda: verify_consistency(-1, 1, _L, _R, [])),
    ("short root1", lambda: verify_consistency(1, 2, _L[:1], _R, [_R])),
    ("garbage in consistency proof", lambda: verify_consistency(1, 2, _L, _R, [b"\0" * 9])),
    ("subtree start > end", lambda: verify_subtree_inclusion(_L, 0, 2, 1, [], _L)),
    ("subtree not aligned", lambda: verify_subtree_inclusion(_L, 3, 3, 5, [_L], _L)),
    ("leaf outside subtree", lambda: verify_subtree_inclusion(_L, 0, 2, 4, [_L], _L)),
    ("empty subtree inclusion", lambda: verify_subtree_inclusion(_L, 1, 1, 1, [], _L)),
    ("subtree past size", lambda: verify_subtree_consistency(0, 4, 3, _L, _R, [])),
    ("subtree cons misaligned", lambda: verify_subtree_consistency(2, 5, 8, _L, _R, [_L])),
    ("subtree cons none", lambda: verify_subtree_consistency(0, 1, 2, _L, _R, None)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("call", [c for _, c in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_input_is_a_proof_error(call: Callable[[], object]) -> None:
    rejects(call)


def test_misuse_is_a_usage_error() -> None:
    tree = MerkleTree(leaves(5))
    with pytest.raises(UsageError):
        tree.inclusion_proof(5)
    with pytest.raises(UsageError):
        tree.inclusion_proof(0, 6)
    with pytest.raises(UsageError):
        tree.consistency_proof(0, 5)
    with pytest.raises(UsageError):
        tree.consistency_proof(4, 3)
    with pytest.raises(UsageError):
        tree.root(6)
    with pytest.raises(UsageError):
        tree.append(b"\0" * 31)
    with pytest.raises(UsageError):
        tree.node(3, 0)  # [0, 8) is not complete in a tree of 5
    with pytest.raises(UsageError):
        Frontier().append(b"short")
    with pytest.raises(UsageError):
        node_hash(b"a", _R)
    with pytest.raises(UsageError):
        leaf_hash("text")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        root_of([_L, b"x"])
    with pytest.raises(UsageError):
        inclusion_proof(tree.hash_range, -1, 5)
    assert tree.append_leaf(b"six") == 5
    assert tree.node(0, 5) == ref_leaf(b"six")
    assert tree.consistency_proof(6) == []


# ---------------------------------------------------------------------------
# subtree proofs (Merkle Tree Certificates draft)
# ---------------------------------------------------------------------------


def shifted(tree: MerkleTree, offset: int) -> Callable[[int, int], bytes]:
    """hash_range of the subtree that starts at ``offset``, in its own coordinates."""
    return lambda a, b: tree.hash_range(offset + a, offset + b)


def test_every_subtree_inclusion_proof_of_a_small_tree() -> None:
    n = 24
    hs = leaves(n)
    tree = MerkleTree(hs)
    checked = 0
    for start in range(n):
        for end in range(start + 1, n + 1):
            if not is_subtree(start, end):
                for i in (start, end - 1):
                    rejects(verify_subtree_inclusion, hs[i], i, start, end, [],
                            ref_mth(hs[start:end]))
                continue
            sub_root = ref_mth(hs[start:end])
            for i in range(start, end):
                proof = inclusion_proof(shifted(tree, start), i - start, end - start)
                assert proof == ref_path(i - start, hs[start:end])
                verify_subtree_inclusion(hs[i], i, start, end, proof, sub_root)
                rejects(verify_subtree_inclusion, hs[i], i, start, end, proof, flip(sub_root))
                if end - start > 1:
                    j = start + (i - start + 1) % (end - start)
                    rejects(verify_subtree_inclusion, hs[i], j, start, end, proof, sub_root)
                checked += 1
    assert checked > 100


def test_every_subtree_consistency_proof_of_small_trees() -> None:
    hs = leaves(24)
    checked = 0
    for n in range(1, 25):
        root = ref_mth(hs[:n])
        for start in range(n):
            for end in range(start + 1, n + 1):
                if not is_subtree(start, end):
                    continue
                sub_root = ref_mth(hs[start:end])
                proof = ref_subtree_proof(start, end, hs[:n])
                verify_subtree_consistency(start, end, n, sub_root, root, proof)
                if start == 0:  # it is then an RFC 9162 consistency proof
                    assert proof == ref_subproof(end, hs[:n])
                rejects(verify_subtree_consistency, start, end, n, flip(sub_root), root, proof)
                rejects(verify_subtree_consistency, start, end, n, sub_root, flip(root), proof)
                for k in range(len(proof)):
                    bad = [*proof[:k], flip(proof[k], 3), *proof[k + 1:]]
                    rejects(verify_subtree_consistency, start, end, n, sub_root, root, bad)
                    rejects(verify_subtree_consistency, start, end, n, sub_root, root,
                            proof[:k] + proof[k + 1:])
                rejects(verify_subtree_consistency, start, end, n, sub_root, root, [*proof, root])
                checked += 1
    assert checked > 500


def test_subtree_consistency_edge_cases() -> None:
    hs = leaves(8)
    r8 = ref_mth(hs)
    # an empty subtree is in every tree: empty proof, root of the empty list
    verify_subtree_consistency(0, 0, 0, EMPTY_ROOT, r8, [])
    verify_subtree_consistency(3, 3, 8, EMPTY_ROOT, r8, [])
    rejects(verify_subtree_consistency, 3, 3, 8, r8, r8, [])
    rejects(verify_subtree_consistency, 3, 3, 8, EMPTY_ROOT, r8, [r8])
    rejects(verify_subtree_consistency, 9, 9, 8, EMPTY_ROOT, r8, [])
    # the whole tree
    verify_subtree_consistency(0, 8, 8, r8, r8, [])
    rejects(verify_subtree_consistency, 0, 8, 8, r8, r8, [r8])
    rejects(verify_subtree_consistency, 0, 8, 8, r8, flip(r8), [])
    e = rejects(verify_subtree_consistency, 4, 6, 8, ref_mth(hs[4:6]), r8, [])
    assert "is empty" in e.message
