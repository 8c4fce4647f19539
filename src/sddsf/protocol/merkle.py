"""RFC 9162 Merkle log: hashes, proofs and an append frontier (pure, sans-IO).

A relay appends every accepted op to a per-space append-only log; clients check
inclusion and consistency proofs against signed tree heads. This module is the
shared core: no I/O, no clock, no randomness.

Hashing follows RFC 9162 section 2.1 with SHA-256:

* leaf hash ``SHA-256(0x00 || leaf)``, interior node ``SHA-256(0x01 || left || right)``;
* the empty tree's root is ``SHA-256("")`` (:data:`EMPTY_ROOT`);
* ``MTH(D[n])`` splits at ``k``, the largest power of two smaller than ``n``.

Vocabulary used below. A *perfect node* ``(level, index)`` is the hash of the
``2**level`` leaves ``[index * 2**level, (index + 1) * 2**level)``; a log stores
these. The *frontier* of a tree of size ``n`` is the list of perfect nodes that
tile ``[0, n)``, one per set bit of ``n``, largest first. Every range that proof
generation asks for is a node of the tree (``start`` is a multiple of the
smallest power of two ``>= end - start``), so it is the hash of O(log n) stored
perfect nodes (:func:`range_hash_from_nodes`).

Errors. A proof, hash, index or size that does not verify or is malformed raises
:class:`~sddsf.errors.ProofError` (code ``proof_invalid``) with a message that
says what was expected; it is never an ``IndexError``, ``ValueError`` or
``TypeError``. Misuse by our own caller (asking to prove a leaf past the end of
the tree, appending a 5-byte "hash") raises :class:`~sddsf.errors.UsageError`.
Hashes must be exactly 32 bytes everywhere, including the roots of the trivial
cases (equal sizes, empty subtree) that the transparency-dev/merkle Go verifier
compares without a length check: we reject those, so four of its "valid" probes
are refused here (see ``tests/vectors_ext/test_rfc9162_vectors.py``).

Size: the RFC 9162 algorithms (tree hash, inclusion and consistency proofs and
their verifiers, the compact frontier) are one specification section; keeping
them together lets each be checked against the RFC text and the vectors side by
side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from sddsf.errors import Code, ProofError, UsageError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "MerkleTree",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "range_hash_from_nodes",
    "root_from_inclusion",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
    "verify_subtree_consistency",
    "verify_subtree_inclusion",
]

HASH_SIZE: Final = 32
EMPTY_ROOT: Final[bytes] = hashlib.sha256(b"").digest()
#: Sizes and indices are uint64 on the wire (as in RFC 9162 and the Go verifier).
_MAX_SIZE: Final = (1 << 64) - 1

_sha256 = hashlib.sha256


# ---------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------


def _node(left: bytes, right: bytes) -> bytes:
    """Interior node hash, unchecked (callers have validated both inputs)."""
    return _sha256(b"\x01" + left + right).digest()


def leaf_hash(leaf: bytes) -> bytes:
    """Hash one log entry: ``SHA-256(0x00 || leaf)``.

    Args:
        leaf: the entry's bytes (any length, may be empty).

    Returns:
        The 32-byte leaf hash.

    Raises:
        UsageError: ``leaf`` is not bytes.
    """
    if not isinstance(leaf, bytes | bytearray | memoryview):
        raise UsageError(f"a log entry must be bytes, not {type(leaf).__name__}")
    return _sha256(b"\x00" + bytes(leaf)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two children: ``SHA-256(0x01 || left || right)``.

    Args:
        left: 32-byte hash of the left child.
        right: 32-byte hash of the right child.

    Returns:
        The 32-byte parent hash.

    Raises:
        UsageError: a child is not a 32-byte hash.
    """
    return _node(_own_hash(left, "left child"), _own_hash(right, "right child"))


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """``MTH`` over a list of leaf hashes (RFC 9162 section 2.1.1), in O(n).

    Args:
        leaf_hashes: the leaf hashes ``D[0:n]``, in log order.

    Returns:
        The 32-byte tree root; :data:`EMPTY_ROOT` for an empty list.

    Raises:
        UsageError: an element is not a 32-byte hash.
    """
    frontier: list[bytes] = []
    for i, h in enumerate(leaf_hashes):
        _push(frontier, i, _own_hash(h, f"leaf hash #{i}"))
    return _fold(frontier)


def _push(frontier: list[bytes], index: int, h: bytes) -> None:
    """Append leaf ``index`` to ``frontier`` (the perfect nodes tiling ``[0, index)``).

    Invariant: before the call ``len(frontier) == popcount(index)``, and bit ``l``
    of ``index`` is set exactly when a perfect node of level ``l`` waits on the
    right edge; each set low bit is merged away, carry-style.
    """
    while index & 1:
        h = _node(frontier.pop(), h)
        index >>= 1
    frontier.append(h)


def _fold(frontier: Sequence[bytes]) -> bytes:
    """Root from a frontier: right-fold ``H(P1, H(P2, ... H(Pk-1, Pk)))``.

    This equals ``MTH``: the left child of the root is the largest perfect
    subtree (size ``k``), the right child is the tree over the rest.
    """
    if not frontier:
        return EMPTY_ROOT
    r = frontier[-1]
    for h in reversed(frontier[:-1]):
        r = _node(h, r)
    return r


# ---------------------------------------------------------------------------
# validation helpers (untrusted input -> ProofError, own input -> UsageError)
# ---------------------------------------------------------------------------


def _err(message: str) -> ProofError:
    return ProofError(message, Code.PROOF_INVALID)


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return f"a {type(value).__name__}"


def _hash(value: object, what: str) -> bytes:
    """A 32-byte hash from untrusted input, else ProofError."""
    if isinstance(value, bytes | bytearray) and len(value) == HASH_SIZE:
        return bytes(value)
    raise _err(f"{what} is {_describe(value)}, expected a {HASH_SIZE}-byte SHA-256 hash")


def _own_hash(value: object, what: str) -> bytes:
    """A 32-byte hash from our own caller, else UsageError."""
    if isinstance(value, bytes | bytearray) and len(value) == HASH_SIZE:
        return bytes(value)
    raise UsageError(f"{what} is {_describe(value)}, expected a {HASH_SIZE}-byte SHA-256 hash")


def _uint(value: object, what: str) -> int:
    """A uint64 from untrusted input, else ProofError."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_SIZE:
        return value
    raise _err(f"{what} must be an integer in [0, 2**64), got {value!r}")


def _own_uint(value: object, what: str) -> int:
    """A uint64 from our own caller, else UsageError."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_SIZE:
        return value
    raise UsageError(f"{what} must be an integer in [0, 2**64), got {value!r}")


def _proof(value: object, what: str) -> list[bytes]:
    """A list of 32-byte hashes from untrusted input, else ProofError."""
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Sequence):
        raise _err(f"{what} must be a sequence of hashes, got {_describe(value)}")
    return [_hash(h, f"{what} hash #{i}") for i, h in enumerate(value)]


def _short(h: bytes) -> str:
    return h.hex()[:16] + "..."


def _bit_ceil(n: int) -> int:
    """Smallest power of two ``>= n`` (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _tz(n: int) -> int:
    """Trailing zero bits of ``n > 0``."""
    return (n & -n).bit_length() - 1


def _is_node_range(start: int, end: int) -> bool:
    """True if ``[start, end)``, non-empty, is a node of some RFC 9162 tree.

    That is the draft-ietf-plants-merkle-tree-certs "valid subtree" rule:
    ``start`` is a multiple of the smallest power of two ``>= end - start``.
    """
    return start < end and start % _bit_ceil(end - start) == 0


# ---------------------------------------------------------------------------
# inclusion proofs (RFC 9162 section 2.1.3)
# ---------------------------------------------------------------------------


def _root_from_path(seed: bytes, index: int, size: int, proof: list[bytes], where: str) -> bytes:
    """RFC 9162 section 2.1.3.2, steps 2-5, for ``0 <= index < size`` (checked by callers)."""
    # Expected length: `inner` hashes below the level where the paths to `index`
    # and `size - 1` meet (left or right siblings), then one left sibling per set
    # bit of `index` above it (the right border). Checked first for a useful message.
    inner = (index ^ (size - 1)).bit_length()
    want = inner + (index >> inner).bit_count()
    if len(proof) != want:
        raise _err(f"inclusion proof has {len(proof)} hashes, expected {want} for {where}")
    fn, sn, r = index, size - 1, seed
    for p in proof:
        if sn == 0:  # unreachable after the length check; kept as in the RFC
            raise _err(f"inclusion proof for {where} is too long")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _err(f"inclusion proof for {where} is too short")
    return r


def root_from_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Compute the root that an inclusion proof leads to (RFC 9162 section 2.1.3.2).

    Args:
        leaf_hash: the 32-byte leaf hash (see :func:`leaf_hash`).
        index: the leaf's 0-based index.
        size: the tree size the proof is for.
        proof: the audit path, lowest level first.

    Returns:
        The root of the tree of ``size`` that contains ``leaf_hash`` at ``index``,
        if the proof is honest. Compare it with a trusted root, or use
        :func:`verify_inclusion`.

    Raises:
        ProofError: a malformed input, ``index >= size``, or a proof of the wrong length.
    """
    seed = _hash(leaf_hash, "leaf hash")
    index = _uint(index, "leaf index")
    size = _uint(size, "tree size")
    if index >= size:
        raise _err(f"leaf index {index} is outside a tree of {size} leaves")
    hashes = _proof(proof, "inclusion proof")
    return _root_from_path(seed, index, size, hashes, f"leaf {index} in a tree of {size}")


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    Args:
        leaf_hash: the 32-byte leaf hash.
        index: the leaf's 0-based index.
        size: the tree size of the (signed) tree head.
        proof: the audit path, lowest level first.
        root: the trusted 32-byte root of that tree head.

    Raises:
        ProofError: the proof does not verify, or an input is malformed.
    """
    expected = _hash(root, "root")
    computed = root_from_inclusion(leaf_hash, index, size, proof)
    if computed != expected:  # roots are public: no constant-time need
        raise _err(
            f"inclusion proof for leaf {index} in a tree of {size} leads to root "
            f"{_short(computed)}, not the tree head's {_short(expected)}: the leaf, the "
            "proof or the tree head is wrong"
        )


# ---------------------------------------------------------------------------
# consistency proofs (RFC 9162 section 2.1.4)
# ---------------------------------------------------------------------------


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``size1`` is a prefix of the tree of ``size2``.

    Follows RFC 9162 section 2.1.4.2. Edge cases follow the transparency-dev/merkle
    Go verifier whose probes we run: ``size1 == size2`` needs an empty proof and
    equal roots; ``size1 == 0`` is always refused (a proof from the empty tree
    proves nothing; trust a first tree head through its signature instead).

    Args:
        size1: size of the older tree head.
        size2: size of the newer tree head.
        root1: 32-byte root of the older tree head.
        root2: 32-byte root of the newer tree head.
        proof: the consistency proof, lowest level first.

    Raises:
        ProofError: the proof does not verify, or an input is malformed.
    """
    size1 = _uint(size1, "size1")
    size2 = _uint(size2, "size2")
    root1 = _hash(root1, "root1")
    root2 = _hash(root2, "root2")
    hashes = _proof(proof, "consistency proof")
    if size1 > size2:
        raise _err(f"the log shrank: size1 {size1} is larger than size2 {size2}")
    if size1 == 0:
        raise _err(
            "a consistency proof from the empty tree (size1 = 0) proves nothing; "
            "accept a first tree head on its signature instead"
        )
    if size1 == size2:
        if hashes:
            raise _err(f"consistency proof between equal sizes ({size1}) must be empty, "
                       f"got {len(hashes)} hashes")
        if root1 != root2:
            raise _err(f"two tree heads of size {size1} have different roots "
                       f"({_short(root1)} and {_short(root2)}): a fork or a forged head")
        return
    if not hashes:
        raise _err(f"consistency proof from size {size1} to {size2} is empty")
    # Expected length (same decomposition as an inclusion proof of leaf size1 - 1,
    # minus the `shift` levels inside the old tree's last perfect subtree, plus
    # that subtree's root unless it is the whole old tree).
    inner = ((size1 - 1) ^ (size2 - 1)).bit_length()
    shift = _tz(size1)
    perfect = size1 == 1 << shift
    want = (0 if perfect else 1) + inner - shift + ((size1 - 1) >> inner).bit_count()
    if len(hashes) != want:
        raise _err(f"consistency proof has {len(hashes)} hashes, expected {want} "
                   f"from size {size1} to size {size2}")
    # RFC 9162 section 2.1.4.2, steps 2-7.
    path = [root1, *hashes] if perfect else hashes
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # unreachable after the length check; kept as in the RFC
            raise _err(f"consistency proof from size {size1} to {size2} is too long")
        if fn & 1 or fn == sn:
            fr = _node(c, fr)
            sr = _node(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _err(f"consistency proof from size {size1} to {size2} is too short")
    if fr != root1:
        raise _err(f"consistency proof does not rebuild the size-{size1} root "
                   f"{_short(root1)} (got {_short(fr)}): wrong proof or wrong old tree head")
    if sr != root2:
        raise _err(f"consistency proof leads to {_short(sr)}, not the size-{size2} root "
                   f"{_short(root2)}: the log is not an extension of the old tree head")


# ---------------------------------------------------------------------------
# subtree proofs (draft-ietf-plants-merkle-tree-certs, as in transparency-dev/merkle)
# ---------------------------------------------------------------------------


def verify_subtree_inclusion(
    leaf_hash: bytes, index: int, start: int, end: int, proof: Sequence[bytes],
    subtree_root: bytes,
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the subtree ``[start, end)``.

    A subtree in the Merkle Tree Certificates sense: ``start`` is a multiple of
    the smallest power of two ``>= end - start``, so ``[start, end)`` is a node of
    every tree of size ``>= end``. The proof is an RFC 9162 inclusion proof of
    leaf ``index - start`` in the tree over ``D[start:end]``.

    Args:
        leaf_hash: the 32-byte leaf hash.
        index: the leaf's 0-based index in the whole log.
        start: first leaf of the subtree.
        end: one past the last leaf of the subtree.
        proof: the audit path, lowest level first.
        subtree_root: the trusted 32-byte hash of ``MTH(D[start:end])``.

    Raises:
        ProofError: the proof does not verify, or an input is malformed.
    """
    seed = _hash(leaf_hash, "leaf hash")
    expected = _hash(subtree_root, "subtree root")
    index = _uint(index, "leaf index")
    start = _uint(start, "subtree start")
    end = _uint(end, "subtree end")
    if not _is_node_range(start, end):
        raise _err(f"[{start}, {end}) is not a subtree: it must be non-empty and start at a "
                   "multiple of the smallest power of two >= its size")
    if not start <= index < end:
        raise _err(f"leaf index {index} is outside the subtree [{start}, {end})")
    hashes = _proof(proof, "subtree inclusion proof")
    where = f"leaf {index} in the subtree [{start}, {end})"
    computed = _root_from_path(seed, index - start, end - start, hashes, where)
    if computed != expected:
        raise _err(f"inclusion proof for {where} leads to {_short(computed)}, not the "
                   f"subtree root {_short(expected)}")


def verify_subtree_consistency(
    start: int, end: int, size: int, subtree_root: bytes, root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the subtree ``[start, end)`` with ``subtree_root`` is in the tree of ``size``.

    Semantics of ``VerifySubtreeConsistency`` in transparency-dev/merkle (Merkle
    Tree Certificates draft). With ``start == 0`` this is an RFC 9162 consistency
    check from size ``end`` to ``size``. An empty subtree (``start == end <= size``)
    needs an empty proof and ``subtree_root == EMPTY_ROOT``; it is contained in
    every tree, so ``root`` is then only checked for its length.

    Args:
        start: first leaf of the subtree.
        end: one past its last leaf.
        size: size of the tree (head) it is claimed to be part of.
        subtree_root: the 32-byte ``MTH(D[start:end])``.
        root: the trusted 32-byte root of the tree of ``size``.
        proof: the subtree consistency proof, lowest level first.

    Raises:
        ProofError: the proof does not verify, or an input is malformed.
    """
    start = _uint(start, "subtree start")
    end = _uint(end, "subtree end")
    size = _uint(size, "tree size")
    sub = _hash(subtree_root, "subtree root")
    expected = _hash(root, "root")
    hashes = _proof(proof, "subtree consistency proof")
    if start > end:
        raise _err(f"subtree start {start} is after its end {end}")
    if start < end and not _is_node_range(start, end):
        raise _err(f"[{start}, {end}) is not a subtree: it must start at a multiple of the "
                   "smallest power of two >= its size")
    if end > size:
        raise _err(f"subtree [{start}, {end}) ends past the tree of {size} leaves")
    if start == end:
        if hashes:
            raise _err(f"the empty subtree [{start}, {end}) needs an empty proof, "
                       f"got {len(hashes)} hashes")
        if sub != EMPTY_ROOT:
            raise _err(f"the empty subtree's root must be SHA-256(\"\"), got {_short(sub)}")
        return
    if start == 0 and end == size:
        if hashes:
            raise _err(f"subtree [0, {size}) is the whole tree: the proof must be empty, "
                       f"got {len(hashes)} hashes")
        computed = sub
    elif not hashes:
        raise _err(f"subtree consistency proof for [{start}, {end}) in a tree of {size} "
                   "is empty")
    elif end == size:
        computed = _chain_right_edge_subtree(start, end, sub, hashes)
    else:
        computed = _chain_inner_subtree(start, end, size, sub, hashes)
    if computed != expected:
        raise _err(f"subtree consistency proof for [{start}, {end}) leads to "
                   f"{_short(computed)}, not the size-{size} root {_short(expected)}")


def _chain_right_edge_subtree(start: int, end: int, sub: bytes, proof: list[bytes]) -> bytes:
    """Root of the tree of size ``end`` from the node ``[start, end)`` on its right edge.

    The node sits at height ``level``; going up, each set bit of its index is a
    left sibling (a right child's parent), and a left child has no right sibling.
    """
    level = ((end - 1) ^ start).bit_length()
    want = (start >> level).bit_count()
    if len(proof) != want:
        raise _err(f"subtree consistency proof has {len(proof)} hashes, expected {want} "
                   f"for [{start}, {end}) in a tree of {end}")
    r = sub
    for p in proof:
        r = _node(p, r)
    return r


def _chain_inner_subtree(
    start: int, end: int, size: int, sub: bytes, proof: list[bytes]
) -> bytes:
    """Check ``sub`` against the proof and return the root of the tree of ``size``.

    ``end < size``. The proof is the tail of an inclusion proof of leaf ``end - 1``
    from level ``shift`` (the height of the last perfect node inside the subtree),
    preceded by that node's hash unless the subtree is itself perfect.
    """
    fork = ((end - 1) ^ (size - 1)).bit_length()  # where paths to end-1 and size-1 meet
    border = ((end - 1) >> fork).bit_count()  # left siblings above `fork`
    shift = _tz(end - start)
    inner = fork - shift  # siblings between `shift` and `fork` (left or right)
    perfect = end - start == 1 << shift
    lead = 0 if perfect else 1
    want = lead + inner + border
    if len(proof) != want:
        raise _err(f"subtree consistency proof has {len(proof)} hashes, expected {want} "
                   f"for [{start}, {end}) in a tree of {size}")
    seed = sub if perfect else proof[0]
    path = proof[lead:]
    mask = (end - 1) >> shift  # bit i set: the sibling at level shift + i is on the left
    if not perfect:
        # Rebuild the subtree's own root from the left siblings inside it: inner
        # ones below its height, then border ones up to its height.
        height = ((end - 1) ^ start).bit_length()
        sub_inner = min(height, fork) - shift
        sub_border = max(0, border - ((end - 1) >> height).bit_count())
        h1 = seed
        for i, p in enumerate(path[:sub_inner]):
            if (mask >> i) & 1:
                h1 = _node(p, h1)
        for p in path[inner:inner + sub_border]:
            h1 = _node(p, h1)
        if h1 != sub:
            raise _err(f"subtree consistency proof does not rebuild the root of [{start}, "
                       f"{end}) {_short(sub)} (got {_short(h1)})")
    r = seed
    for i, p in enumerate(path[:inner]):
        r = _node(p, r) if (mask >> i) & 1 else _node(r, p)
    for p in path[inner:]:
        r = _node(p, r)
    return r


# ---------------------------------------------------------------------------
# proof generation (RFC 9162 PATH and SUBPROOF)
# ---------------------------------------------------------------------------


def _largest_pow2_below(n: int) -> int:
    """``k``: the largest power of two strictly smaller than ``n >= 2``."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(hash_range: Callable[[int, int], bytes], index: int, size: int) -> list[bytes]:
    """Generate the audit path ``PATH(index, D[0:size])`` (RFC 9162 section 2.1.3.1).

    Args:
        hash_range: ``hash_range(start, end)`` returns ``MTH(D[start:end])``; it is
            only asked for nodes of the tree of ``size`` (see
            :func:`range_hash_from_nodes`), one call per returned hash.
        index: the leaf to prove, ``0 <= index < size``.
        size: the tree size.

    Returns:
        The proof, lowest level first.

    Raises:
        UsageError: ``index`` or ``size`` out of range.
    """
    index = _own_uint(index, "leaf index")
    size = _own_uint(size, "tree size")
    if index >= size:
        raise UsageError(f"cannot prove leaf {index} in a tree of {size} leaves")
    siblings: list[bytes] = []  # collected top-down, returned bottom-up
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _largest_pow2_below(hi - lo)
        if index < mid:
            siblings.append(hash_range(mid, hi))
            hi = mid
        else:
            siblings.append(hash_range(lo, mid))
            lo = mid
    siblings.reverse()
    return siblings


def consistency_proof(
    hash_range: Callable[[int, int], bytes], size1: int, size2: int
) -> list[bytes]:
    """Generate ``PROOF(size1, D[0:size2])`` (RFC 9162 section 2.1.4.1).

    Args:
        hash_range: as for :func:`inclusion_proof`.
        size1: the older size, ``0 < size1 <= size2``.
        size2: the newer size.

    Returns:
        The proof, lowest level first (empty when ``size1 == size2``).

    Raises:
        UsageError: ``size1 == 0`` (such a proof proves nothing and
            :func:`verify_consistency` refuses it) or ``size1 > size2``.
    """
    size1 = _own_uint(size1, "size1")
    size2 = _own_uint(size2, "size2")
    if not 0 < size1 <= size2:
        raise UsageError(f"cannot prove consistency from size {size1} to size {size2}: "
                         "need 0 < size1 <= size2")
    nodes: list[bytes] = []  # collected top-down, returned bottom-up
    lo, hi, m, known = 0, size2, size1, True  # SUBPROOF(m, D[lo:hi], known)
    while m != hi - lo:
        k = _largest_pow2_below(hi - lo)  # hi - lo > m >= 1, so hi - lo >= 2
        if m <= k:
            nodes.append(hash_range(lo + k, hi))
            hi = lo + k
        else:
            nodes.append(hash_range(lo, lo + k))
            lo, m, known = lo + k, m - k, False
    if not known:
        nodes.append(hash_range(lo, hi))
    nodes.reverse()
    return nodes


def range_hash_from_nodes(node: Callable[[int, int], bytes], start: int, end: int) -> bytes:
    """``MTH(D[start:end])`` for a node range, from stored perfect nodes.

    ``[start, end)`` must be empty or a node of an RFC 9162 tree: ``start`` a
    multiple of the smallest power of two ``>= end - start`` (every range that
    :func:`inclusion_proof` and :func:`consistency_proof` ask for is). Such a range
    splits into a perfect left part of ``k`` leaves and a smaller node range on the
    right, so at most ``log2(end - start) + 1`` nodes are read.

    Args:
        node: ``node(level, index)`` returns the hash of the perfect node covering
            ``[index * 2**level, (index + 1) * 2**level)``.
        start: first leaf.
        end: one past the last leaf.

    Returns:
        The 32-byte hash; :data:`EMPTY_ROOT` when ``start == end``.

    Raises:
        UsageError: the range is not a node range.
    """
    start = _own_uint(start, "range start")
    end = _own_uint(end, "range end")
    if start == end:
        return EMPTY_ROOT
    if not _is_node_range(start, end):
        raise UsageError(f"[{start}, {end}) is not a node range: start must be a multiple of "
                         "the smallest power of two >= its size")
    lefts: list[bytes] = []
    lo = start
    # Invariant: lo is a multiple of bit_ceil(end - lo), so every left part is a stored node.
    while (end - lo) & (end - lo - 1):
        k = _largest_pow2_below(end - lo)
        level = k.bit_length() - 1
        lefts.append(node(level, lo >> level))
        lo += k
    level = (end - lo).bit_length() - 1
    r = node(level, lo >> level)
    for h in reversed(lefts):
        r = _node(h, r)
    return r


# ---------------------------------------------------------------------------
# Frontier and MerkleTree
# ---------------------------------------------------------------------------


class Frontier:
    """Compact right edge of the tree: the roots of the perfect subtrees covering [0, size).

    At most ``log2(size) + 1`` hashes, largest subtree first (one per set bit of
    ``size``). Lets storage keep O(log n) state per log and update the root inside
    the append transaction.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        """Start an empty frontier (size 0)."""
        self._size = 0
        # Invariant: len(_hashes) == popcount(_size); _hashes[i] is the perfect node
        # for the i-th set bit of _size, from the highest bit down.
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def __repr__(self) -> str:
        return f"Frontier(size={self._size})"

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Append one leaf hash.

        Args:
            leaf_hash: the 32-byte leaf hash (see :func:`leaf_hash`).

        Returns:
            The perfect nodes completed by this append as ``(level, index, hash)``,
            the leaf itself first (``level`` 0, ``index`` = its position). Storage
            persists them so that ``hash_range`` can be answered in O(log n).

        Raises:
            UsageError: ``leaf_hash`` is not a 32-byte hash, or the log is full.
        """
        h = _own_hash(leaf_hash, "leaf hash")
        index = self._size
        if index >= _MAX_SIZE:
            raise UsageError("the log is full (2**64 - 1 leaves)")
        completed = [(0, index, h)]
        level = 0
        while (index >> level) & 1:  # a perfect node of this level waits: merge
            h = _node(self._hashes.pop(), h)
            level += 1
            completed.append((level, index >> level, h))
        self._hashes.append(h)
        self._size = index + 1
        return completed

    def root(self) -> bytes:
        """The tree root at the current size (:data:`EMPTY_ROOT` when empty).

        Returns:
            The 32-byte root.
        """
        return _fold(self._hashes)

    def to_hashes(self) -> list[bytes]:
        """The frontier's hashes, largest subtree first, for storage.

        Returns:
            A copy of the ``popcount(size)`` hashes.
        """
        return list(self._hashes)

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> Frontier:
        """Rebuild a frontier from :meth:`to_hashes` output.

        Input is validated as untrusted (it may come from a peer, or from a
        store that was tampered with): any mismatch is a :class:`ProofError`.

        Args:
            size: the tree size.
            hashes: one 32-byte hash per set bit of ``size``, largest subtree first.

        Returns:
            The frontier.

        Raises:
            ProofError: wrong number of hashes, a malformed hash, or a bad size.
        """
        size = _uint(size, "frontier size")
        items = _proof(hashes, "frontier")
        if len(items) != size.bit_count():
            raise _err(f"a frontier for size {size} has {size.bit_count()} hashes (one per "
                       f"set bit of the size), got {len(items)}")
        frontier = cls()
        frontier._size = size
        frontier._hashes = items
        return frontier


class MerkleTree:
    """In-memory append-only tree (used by tests, the client, and the SQLite-less paths).

    Stores perfect-subtree nodes by (level, index): ``2n - popcount(n)`` hashes
    (for a tree started from a frontier of size ``b``: its ``popcount(b)``
    nodes plus what was appended since, never O(b)).
    """

    __slots__ = ("_base", "_levels", "_starts")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        """Build a tree from leaf hashes (appended in order).

        Args:
            leaf_hashes: initial 32-byte leaf hashes.

        Raises:
            UsageError: an element is not a 32-byte hash.
        """
        # Invariant: _levels[l][i] is the perfect node (l, _starts[l] + i), and
        # _starts[l] + len(_levels[l]) == size >> l for every stored level. Nodes
        # below _starts[l] lie inside [0, _base) and are not kept: _starts[l] is
        # (_base >> l) minus one when the frontier of _base has a node at level l
        # (that node is kept), and all zeros for a tree built from leaves.
        self._levels: list[list[bytes]] = [[]]
        self._starts: list[int] = [0]
        self._base = 0
        for h in leaf_hashes:
            self.append(h)

    @classmethod
    def from_frontier(cls, frontier: Frontier) -> MerkleTree:
        """A tree whose first ``frontier.size`` leaves are known only by their frontier.

        Appending works as usual, and every root, range hash and proof that
        involves only sizes ``>= base`` is answered (a compact range holds every
        node those need); anything inside ``[0, base)`` raises
        :class:`UsageError`. This is how a device that starts from a snapshot
        keeps O(log n) state for the history the snapshot covers.
        """
        tree = cls()
        size = frontier.size
        levels = range(max(size.bit_length(), 1))
        tree._starts = [size >> level for level in levels]
        tree._levels = [[] for _ in levels]
        for level, h in zip((b for b in range(size.bit_length() - 1, -1, -1)
                             if size >> b & 1), frontier.to_hashes(), strict=True):
            tree._starts[level] -= 1  # this level's frontier node: ((size >> level) - 1)
            tree._levels[level].append(h)
        tree._base = size
        return tree

    @property
    def base(self) -> int:
        """Leaves known only through a frontier (0 for a tree built from leaves)."""
        return self._base

    def copy(self) -> MerkleTree:
        """An independent copy (appending to it leaves this tree unchanged)."""
        tree = MerkleTree()
        tree._levels = [list(level) for level in self._levels]
        tree._starts = list(self._starts)
        tree._base = self._base
        return tree

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._starts[0] + len(self._levels[0])

    def __repr__(self) -> str:
        return f"MerkleTree(size={self.size})"

    def append(self, leaf_hash: bytes) -> int:
        """Append a leaf hash.

        Args:
            leaf_hash: the 32-byte leaf hash.

        Returns:
            The new leaf's index.

        Raises:
            UsageError: ``leaf_hash`` is not a 32-byte hash.
        """
        h = _own_hash(leaf_hash, "leaf hash")
        levels, starts = self._levels, self._starts
        index = self.size
        levels[0].append(h)
        level, i = 0, index
        while i & 1:  # right child completed: its parent is complete too
            left = i - 1 - starts[level]
            if left < 0:  # pragma: no cover - a compact range always holds it
                raise UsageError("the tree's frontier lacks a node it needs")
            h = _node(levels[level][left], h)
            level += 1
            i >>= 1
            if level == len(levels):
                levels.append([])
                starts.append(i)
            levels[level].append(h)
        return index

    def append_leaf(self, leaf: bytes) -> int:
        """Hash a log entry and append it.

        Args:
            leaf: the entry's bytes.

        Returns:
            The new leaf's index.

        Raises:
            UsageError: ``leaf`` is not bytes.
        """
        return self.append(leaf_hash(leaf))

    def node(self, level: int, index: int) -> bytes:
        """The stored perfect node ``(level, index)``.

        Args:
            level: height (0 for leaves).
            index: position among the nodes of that level.

        Returns:
            Its 32-byte hash.

        Raises:
            UsageError: no such complete node yet.
        """
        if not (0 <= level < len(self._levels)
                and 0 <= index < self._starts[level] + len(self._levels[level])):
            raise UsageError(f"no complete node ({level}, {index}) in a tree of {self.size}")
        if index < self._starts[level]:
            raise UsageError(f"node ({level}, {index}) lies inside the first {self._base} "
                             "leaves, which this tree knows only by their frontier")
        return self._levels[level][index - self._starts[level]]

    def _size_arg(self, size: int | None) -> int:
        if size is None:
            return self.size
        size = _own_uint(size, "tree size")
        if size > self.size:
            raise UsageError(f"tree size {size} is larger than the tree ({self.size} leaves)")
        return size

    def root(self, size: int | None = None) -> bytes:
        """The root at ``size`` (default: now), any size up to the current one.

        Args:
            size: a past or current tree size.

        Returns:
            The 32-byte root.

        Raises:
            UsageError: ``size`` is larger than the tree.
        """
        return self.hash_range(0, self._size_arg(size))

    def hash_range(self, start: int, end: int) -> bytes:
        """``MTH(D[start:end])`` for a node range, in O(log n) (see :func:`range_hash_from_nodes`).

        Args:
            start: first leaf.
            end: one past the last leaf, at most the size.

        Returns:
            The 32-byte hash.

        Raises:
            UsageError: the range is past the end or not a node range.
        """
        if isinstance(end, int) and end > self.size:
            raise UsageError(f"range [{start}, {end}) is past the end of the tree ({self.size})")
        return range_hash_from_nodes(self.node, start, end)

    def frontier(self) -> Frontier:
        """The frontier of the tree at its current size (the perfect-subtree roots).

        Returns:
            A :class:`Frontier` that :meth:`from_frontier` accepts.
        """
        size, start, hashes = self.size, 0, []
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                hashes.append(self.node(level, start >> level))
                start += 1 << level
        return Frontier.from_hashes(size, hashes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Audit path of leaf ``index`` in the tree at ``size`` (default: now).

        Args:
            index: the leaf.
            size: a past or current tree size.

        Returns:
            The proof, lowest level first.

        Raises:
            UsageError: ``index`` or ``size`` out of range.
        """
        return inclusion_proof(self.hash_range, index, self._size_arg(size))

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Consistency proof from ``size1`` to ``size2`` (default: now).

        Args:
            size1: the older size, ``0 < size1 <= size2``.
            size2: a past or current tree size.

        Returns:
            The proof, lowest level first.

        Raises:
            UsageError: sizes out of range.
        """
        return consistency_proof(self.hash_range, size1, self._size_arg(size2))
