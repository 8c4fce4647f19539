"""Batch inclusion proofs built in memory (proofs.batch_inclusion_proofs): the same
proofs as the stored-node path (proofs.inclusion_proofs), valid under RFC 9162."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sddsf.errors import ProofError
from sddsf.protocol import merkle
from sddsf.relay.proofs import _proof_ranges, batch_inclusion_proofs, inclusion_proofs
from sddsf.relay.storage import SqliteStorage
from sddsf.testing.storage_conformance import NOW, chain, new_space, rid


@given(st.integers(1, 300), st.data())
def test_proof_ranges_are_the_ranges_inclusion_proof_asks_for(size: int,
                                                              data: st.DataObject) -> None:
    indices = data.draw(st.lists(st.integers(0, size - 1), max_size=40))
    ranges = _proof_ranges(indices, size)
    assert set(ranges) == set(indices)
    for i in indices:
        asked: list[tuple[int, int]] = []

        def record(lo: int, hi: int, asked: list[tuple[int, int]] = asked) -> bytes:
            asked.append((lo, hi))
            return bytes(32)

        merkle.inclusion_proof(record, i, size)
        assert ranges[i] == asked[::-1]


async def _scenario(before: int, batch: int, after: int, old: list[int],
                    wrong: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = SqliteStorage(str(Path(tmp) / "relay.db"))
        await storage.open()
        try:
            space = await new_space(storage)
            author = rid()
            ops = chain(author, 1, before + batch + after)
            # Three appends: the stored history, "this" batch, a concurrent writer's.
            for part in (ops[:before], ops[before:before + batch], ops[before + batch:]):
                if part:
                    await storage.append_ops(space, part, NOW)
            known = {before + k: ops[before + k].leaf_hash for k in range(batch)}
            if wrong:
                known[before] = merkle.leaf_hash(b"not the stored leaf")
            record = await storage.get_space(space)
            assert record is not None
            indices = [*known, *[o % max(before, 1) for o in old if before]]
            if wrong:
                with pytest.raises(ProofError):
                    await batch_inclusion_proofs(storage, space, indices, record.size,
                                                 record.root, known)
                return
            fast = await batch_inclusion_proofs(storage, space, indices, record.size,
                                                record.root, known)
            assert fast == await inclusion_proofs(storage, space, indices, record.size)
            for i, proof in zip(indices, fast, strict=True):
                merkle.verify_inclusion(ops[i].leaf_hash, i, record.size, proof, record.root)
        finally:
            await storage.close()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 70), st.integers(1, 70), st.integers(0, 20),
       st.lists(st.integers(0, 1000), max_size=5))
def test_batch_proofs_equal_stored_proofs_and_verify(before: int, batch: int, after: int,
                                                     old: list[int]) -> None:
    asyncio.run(_scenario(before, batch, after, old, wrong=False))


@pytest.mark.parametrize(("before", "batch", "after"), [(0, 1, 0), (5, 3, 0), (7, 9, 4)])
def test_a_wrong_known_leaf_is_refused(before: int, batch: int, after: int) -> None:
    asyncio.run(_scenario(before, batch, after, [], wrong=True))
