"""Inclusion and consistency proofs of a space's log, from stored Merkle nodes.

The stored-node functions read the perfect nodes a proof needs in one query
(:func:`inclusion_proofs`, :func:`root_at`, :func:`consistency_proof`);
:func:`batch_inclusion_proofs` proves a just-appended batch from its leaves in
memory and reads only the nodes outside them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence

from sddsf.errors import ProofError, UsageError
from sddsf.protocol import merkle
from sddsf.relay.storage.base import RelayStorage

__all__ = ["batch_inclusion_proofs", "consistency_proof", "inclusion_proof",
           "inclusion_proofs", "root_at"]


_Builder = Callable[[Callable[[int, int], bytes]], list[bytes]]


async def _fetch_then(storage: RelayStorage, space_id: bytes,
                      builders: Sequence[_Builder]) -> list[list[bytes]]:
    """Run proof builders twice: once to learn which stored nodes they read (which
    does not depend on the nodes' values), then with all of them fetched in one query."""
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return bytes(32)

    for build in builders:
        build(lambda s, e: merkle.range_hash_from_nodes(record, s, e))
    nodes = await storage.merkle_nodes(space_id, sorted(wanted))
    cache: dict[tuple[int, int], bytes] = {}

    def range_hash(s: int, e: int) -> bytes:
        # Ranges repeat across the proofs of one batch; hash each once.
        if (s, e) not in cache:
            cache[(s, e)] = merkle.range_hash_from_nodes(lambda lv, ix: nodes[(lv, ix)], s, e)
        return cache[(s, e)]

    return [build(range_hash) for build in builders]


async def inclusion_proofs(storage: RelayStorage, space_id: bytes, indices: Sequence[int],
                           size: int) -> list[list[bytes]]:
    """RFC 9162 inclusion proofs of several leaves in the tree of ``size`` leaves."""
    def builder(index: int) -> _Builder:
        return lambda hr: merkle.inclusion_proof(hr, index, size)

    return await _fetch_then(storage, space_id, [builder(i) for i in indices])


def _batch_nodes(known: Mapping[int, bytes]) -> dict[tuple[int, int], bytes]:
    """Every perfect node ``(level, index)`` whose leaves all have a hash in ``known``
    (leaf index -> leaf hash), computed from them: one SHA-256 per node."""
    nodes: dict[tuple[int, int], bytes] = {(0, i): h for i, h in known.items()}
    level, below = 0, dict(known)
    while len(below) > 1:
        above: dict[int, bytes] = {}
        for i, h in below.items():
            if not i & 1 and (right := below.get(i + 1)) is not None:
                above[i >> 1] = merkle.node_hash(h, right)
        level += 1
        for i, h in above.items():
            nodes[(level, i)] = h
        below = above
    return nodes


def _proof_ranges(indices: Sequence[int], size: int) -> dict[int, list[tuple[int, int]]]:
    """Per leaf index, the ranges ``[lo, hi)`` whose hashes form its RFC 9162 audit
    path in the tree of ``size`` leaves, lowest first (the ranges
    :func:`merkle.inclusion_proof` asks for). One walk down the tree serves
    every index: the upper levels of neighbouring paths are visited once."""
    wanted = sorted(set(indices))
    if wanted and (wanted[0] < 0 or wanted[-1] >= size):
        raise UsageError(f"cannot prove leaves {wanted[0]}..{wanted[-1]} in a tree of "
                         f"{size} leaves")
    out: dict[int, list[tuple[int, int]]] = {}

    def walk(lo: int, hi: int, above: list[tuple[int, int]], i0: int, i1: int) -> None:
        # wanted[i0:i1] are the indices in [lo, hi); ``above`` the siblings above, top first.
        if hi - lo == 1:
            out[lo] = above[::-1]
            return
        mid = lo + (1 << ((hi - lo - 1).bit_length() - 1))
        j = bisect_left(wanted, mid, i0, i1)
        if j > i0:
            walk(lo, mid, [*above, (mid, hi)], i0, j)
        if j < i1:
            walk(mid, hi, [*above, (lo, mid)], j, i1)

    if wanted:
        walk(0, size, [], 0, len(wanted))
    return out


async def batch_inclusion_proofs(storage: RelayStorage, space_id: bytes,
                                 indices: Sequence[int], size: int, root: bytes,
                                 known: Mapping[int, bytes]) -> list[list[bytes]]:
    """:func:`inclusion_proofs`, with the leaves the caller just appended in memory.

    ``known`` maps leaf indices to the leaf hashes the caller appended (a batch's
    accepted ops). Every perfect node made of known leaves is hashed here; only
    the nodes outside them (the frontier before the batch, leaves appended after
    it, older leaves of duplicates) are read from storage, in one query. The
    proofs are the ones :func:`inclusion_proofs` returns for the same tree.

    As a guard against a ``known`` that is not what storage holds (a caller
    bug), the root of the ``size`` leaves is rebuilt from the same nodes and
    compared with ``root``, the stored root at ``size``: a wrong leaf hash
    cannot yield proofs that look valid for a signed tree head.

    Raises:
        ProofError: the rebuilt root is not ``root``.
    """
    ranges = _proof_ranges(indices, size)
    mem = _batch_nodes(known)

    def perfect(lo: int, hi: int) -> bytes | None:
        width = hi - lo
        if width & (width - 1):
            return None
        level = width.bit_length() - 1
        return mem.get((level, lo >> level))

    distinct = {r for path in ranges.values() for r in path}
    distinct.add((0, size))
    known_sorted = sorted(known)

    def mixed(node: Callable[[int, int], bytes], lo: int, hi: int) -> bytes:
        # MTH(D[lo:hi]) from the largest in-memory nodes, the rest from stored ones:
        # every known leaf inside the range enters the hash.
        h = perfect(lo, hi)
        if h is not None:
            return h
        j = bisect_left(known_sorted, lo)
        if j == len(known_sorted) or known_sorted[j] >= hi:
            return merkle.range_hash_from_nodes(node, lo, hi)
        mid = lo + (1 << ((hi - lo - 1).bit_length() - 1))
        return merkle.node_hash(mixed(node, lo, mid), mixed(node, mid, hi))

    stored_ranges = [r for r in distinct if perfect(*r) is None]
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return bytes(32)

    for lo, hi in stored_ranges:
        mixed(record, lo, hi)
    fetched = await storage.merkle_nodes(space_id, sorted(wanted)) if wanted else {}

    def node(level: int, index: int) -> bytes:
        return fetched[(level, index)]

    hashes: dict[tuple[int, int], bytes] = {r: mixed(node, *r) for r in stored_ranges}
    for r in distinct:
        if r not in hashes:
            hashes[r] = perfect(*r) or b""
    if hashes[(0, size)] != root:
        raise ProofError(f"the space's tree of {size} leaves does not have the root its "
                         "stored nodes and this batch's leaves give; refusing to send proofs")
    return [[hashes[r] for r in ranges[i]] for i in indices]


async def inclusion_proof(storage: RelayStorage, space_id: bytes, index: int,
                          size: int) -> list[bytes]:
    """RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    return (await inclusion_proofs(storage, space_id, [index], size))[0]


async def root_at(storage: RelayStorage, space_id: bytes, size: int) -> bytes:
    """The root of the first ``size`` leaves, from stored nodes (an older tree head)."""
    return (await _fetch_then(storage, space_id, [lambda hr: [hr(0, size)]]))[0][0]


async def consistency_proof(storage: RelayStorage, space_id: bytes, size1: int,
                            size2: int) -> list[bytes]:
    """RFC 9162 consistency proof between two tree sizes."""
    return (await _fetch_then(storage, space_id, [
        lambda hr: merkle.consistency_proof(hr, size1, size2)]))[0]
