"""``MerkleTree.from_frontier``, ``base``, ``copy`` and ``frontier`` (protocol.md 11.5).

A device that starts from a snapshot knows the first ``S`` leaves only by their
frontier. Its tree, extended with the leaves after ``S``, must answer every
root, inclusion proof and consistency proof that involves only sizes ``>= S``
exactly as a tree built from every leaf; anything that needs a node inside
``[0, S)`` other than a frontier node raises ``UsageError`` (never a wrong hash).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sddsf.errors import UsageError
from sddsf.protocol.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    verify_consistency,
    verify_inclusion,
)


def hashes(n: int) -> list[bytes]:
    return [hashlib.sha256(b"\x00" + i.to_bytes(4, "big")).digest() for i in range(n)]


def full(n: int) -> MerkleTree:
    return MerkleTree(hashes(n))


def started(base: int, n: int) -> MerkleTree:
    """A tree of ``n`` leaves of which the first ``base`` are known by their frontier."""
    tree = MerkleTree.from_frontier(full(base).frontier())
    for h in hashes(n)[base:]:
        tree.append(h)
    return tree


def frontier_nodes(size: int) -> set[tuple[int, int]]:
    """(level, index) of the perfect nodes that tile [0, size), largest first."""
    out, start = set(), 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.add((level, start >> level))
            start += 1 << level
    return out


def same_or_usage_error(call: Callable[[MerkleTree], object], tree: MerkleTree,
                        ref: MerkleTree) -> bool:
    """True if ``call`` gives the reference answer, False if it raises UsageError."""
    try:
        got = call(tree)
    except UsageError:
        return False
    assert got == call(ref)
    return True


def check_above_base(base: int, n: int) -> None:
    tree, ref = started(base, n), full(n)
    assert (tree.size, tree.base, ref.base) == (n, base, 0)
    for m in range(base, n + 1):
        assert tree.root(m) == ref.root(m)
        for i in range(base, m):
            proof = tree.inclusion_proof(i, m)
            assert proof == ref.inclusion_proof(i, m)
            verify_inclusion(hashes(n)[i], i, m, proof, ref.root(m))
        if base:
            assert tree.consistency_proof(base, m) == ref.consistency_proof(base, m)
            verify_consistency(base, m, ref.root(base), ref.root(m),
                               tree.consistency_proof(base, m))
        for k in range(max(base, 1), m + 1):
            assert tree.consistency_proof(k, m) == ref.consistency_proof(k, m)
    assert tree.frontier().to_hashes() == ref.frontier().to_hashes()


def test_every_small_case_matches_a_full_tree() -> None:
    for base in range(0, 21):
        for n in range(base, 34):
            check_above_base(base, n)


@settings(max_examples=60)
@given(base=st.integers(0, 2000), extra=st.integers(0, 300), data=st.data())
def test_from_frontier_then_append_matches_a_full_tree(base: int, extra: int,
                                                       data: st.DataObject) -> None:
    n = base + extra
    tree, ref = started(base, n), full(n)
    for _ in range(5):
        m = data.draw(st.integers(base, n), label="m")
        assert tree.root(m) == ref.root(m)
        if base:
            assert tree.consistency_proof(base, m) == ref.consistency_proof(base, m)
        if m > base:
            i = data.draw(st.integers(base, m - 1), label="i")
            assert tree.inclusion_proof(i, m) == ref.inclusion_proof(i, m)
            k = data.draw(st.integers(max(base, 1), m), label="k")
            assert tree.consistency_proof(k, m) == ref.consistency_proof(k, m)
    assert tree.root() == ref.root()
    assert tree.frontier().to_hashes() == ref.frontier().to_hashes()


# ------------------------------------------------------------ below the base


@pytest.mark.parametrize("base", [1, 2, 3, 5, 6, 7, 8, 11, 16, 21])
def test_nodes_inside_the_base_are_the_frontier_nodes_only(base: int) -> None:
    tree, ref = started(base, base + 9), full(base + 9)
    keep = frontier_nodes(base)
    for level in range(base.bit_length()):
        for index in range(base >> level):  # every complete node inside [0, base)
            if (level, index) in keep:
                assert tree.node(level, index) == ref.node(level, index)
            else:
                with pytest.raises(UsageError, match="frontier"):
                    tree.node(level, index)


@pytest.mark.parametrize("base", range(1, 40))
def test_a_root_below_the_base_needs_a_prefix_of_the_frontier(base: int) -> None:
    # root(k) for k < base is known exactly when [0, k) is tiled by frontier
    # nodes of base, i.e. k is base with some of its low bits cleared.
    tree, ref = started(base, base + 5), full(base + 5)
    prefixes = {base >> j << j for j in range(base.bit_length() + 1)}
    for k in range(base):
        assert same_or_usage_error(lambda t, k=k: t.root(k), tree, ref) == (k in prefixes)


@settings(max_examples=60)
@given(base=st.integers(1, 200), extra=st.integers(0, 60), data=st.data())
def test_queries_below_the_base_never_give_a_wrong_answer(base: int, extra: int,
                                                          data: st.DataObject) -> None:
    n = base + extra
    tree, ref = started(base, n), full(n)
    m = data.draw(st.integers(base, n), label="m")
    i = data.draw(st.integers(0, base - 1), label="i")
    k = data.draw(st.integers(1, base), label="k")
    same_or_usage_error(lambda t: t.inclusion_proof(i, m), tree, ref)
    same_or_usage_error(lambda t: t.consistency_proof(k, m), tree, ref)
    same_or_usage_error(lambda t: t.root(k), tree, ref)
    same_or_usage_error(lambda t: t.hash_range(0, k), tree, ref)


@pytest.mark.parametrize(("name", "base", "call"), [
    ("root inside the last frontier node", 5, lambda t: t.root(3)),
    ("root inside the first frontier node", 8, lambda t: t.root(1)),
    ("inclusion of a leaf inside the base", 2, lambda t: t.inclusion_proof(0, 4)),
    ("inclusion of the base's last leaf", 6, lambda t: t.inclusion_proof(5, 8)),
    ("consistency from inside the base", 3, lambda t: t.consistency_proof(1, 4)),
    ("consistency from a size below the base", 12, lambda t: t.consistency_proof(9, 16)),
    ("a leaf inside the base", 4, lambda t: t.hash_range(2, 3)),
    ("a subtree inside a frontier node", 8, lambda t: t.hash_range(4, 8)),
    ("the frontier at a past size", 6, lambda t: t.hash_range(0, 2)),
])
def test_queries_that_need_a_node_below_the_base_raise(
        name: str, base: int, call: Callable[[MerkleTree], object]) -> None:
    tree = started(base, 16)
    with pytest.raises(UsageError):
        call(tree)
    call(full(16))  # the same query is fine on a tree that has every leaf


def test_inclusion_below_the_base_that_needs_no_hidden_node_is_answered() -> None:
    # Leaf 0 of a base of 1 is itself the frontier: its proof in a tree of 2
    # is leaf 1, which the tree has. Such answers must be the full tree's.
    tree, ref = started(1, 2), full(2)
    assert tree.inclusion_proof(0, 2) == ref.inclusion_proof(0, 2) == [hashes(2)[1]]


# ------------------------------------------------------- base, copy, frontier


def test_base_is_zero_for_a_tree_built_from_leaves() -> None:
    assert full(7).base == 0
    assert MerkleTree().base == 0
    assert full(7).copy().base == 0


def test_from_an_empty_frontier_is_an_ordinary_tree() -> None:
    tree = MerkleTree.from_frontier(Frontier())
    assert (tree.size, tree.base, tree.root()) == (0, 0, EMPTY_ROOT)
    for h in hashes(13):
        tree.append(h)
    ref = full(13)
    assert tree.root() == ref.root()
    assert all(tree.inclusion_proof(i) == ref.inclusion_proof(i) for i in range(13))
    assert all(tree.consistency_proof(k) == ref.consistency_proof(k) for k in range(1, 14))


@pytest.mark.parametrize("base", [0, 1, 6, 13])
def test_copy_is_independent(base: int) -> None:
    tree = started(base, base + 3)
    before = (tree.size, tree.root(), tree.frontier().to_hashes())
    twin = tree.copy()
    assert (twin.size, twin.base, twin.root()) == (tree.size, base, tree.root())
    twin.append(hashes(1)[0])
    assert (tree.size, tree.root(), tree.frontier().to_hashes()) == before
    assert twin.size == tree.size + 1 and twin.root() != tree.root()
    tree.append(hashes(2)[1])
    assert twin.root() != tree.root()  # different leaves appended to each
    assert twin.root(before[0]) == tree.root(before[0]) == before[1]


@pytest.mark.parametrize("base", [0, 1, 2, 3, 7, 8, 100, 1023, 1024, 1025])
def test_frontier_round_trips(base: int) -> None:
    ref = full(base)
    frontier = ref.frontier()
    assert frontier.size == base and frontier.root() == ref.root()
    incremental = Frontier()
    for h in hashes(base):
        incremental.append(h)
    assert frontier.to_hashes() == incremental.to_hashes()
    rebuilt = MerkleTree.from_frontier(frontier)
    assert (rebuilt.size, rebuilt.base, rebuilt.root()) == (base, base, ref.root())
    assert rebuilt.frontier().to_hashes() == frontier.to_hashes()
    again = Frontier.from_hashes(base, rebuilt.frontier().to_hashes())
    assert again.root() == ref.root()


@settings(max_examples=60)
@given(base=st.integers(0, 5000), extra=st.integers(0, 100))
def test_frontier_of_an_extended_tree_round_trips(base: int, extra: int) -> None:
    tree = started(base, base + extra)
    frontier = tree.frontier()
    assert (frontier.size, frontier.root()) == (base + extra, full(base + extra).root())
    assert MerkleTree.from_frontier(frontier).frontier().to_hashes() == frontier.to_hashes()
