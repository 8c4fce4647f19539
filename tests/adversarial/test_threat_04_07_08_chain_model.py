"""THREATS #4, #7, #8 in property form: a Hypothesis state machine drives the
relay's verify-and-append path (in process, SQLite) against a model of the
per-author chains and the log.

Rules: append the next op of an author (alone or in a batch), resubmit an op
already accepted (identical bytes: ``duplicate`` at its original offset, no new
leaf), fork an author at a seq it already used (``chain_fork``, the log keeps
the first, both ops kept as evidence), and jump ahead by any k (``chain_gap``,
nothing buffered). After every step the stored log equals the model's, and the
fork evidence has one row per fork.

Device 0 uploads everything; the ops are authored by devices 1-3 (an uploader
may relay another device's signed ops), so the controller's reaction to a
forking author never blocks the uploader.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from clusterkit import LONG
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from relaykit import Clock, World, client_for, make_app

from sddsf.protocol.envelope import OpEnvelope
from sddsf.relay.storage import open_storage

AUTHORS = (1, 2, 3)


class ChainModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="sddsf-chain-"))
        self.world = World()
        self.accepted: dict[int, list[OpEnvelope]] = {a: [] for a in AUTHORS}
        self.log: list[bytes] = []  # op ids in log order
        self.offsets: dict[bytes, int] = {}
        self.forks = 0
        self.loop.run_until_complete(self._setup())

    async def _setup(self) -> None:
        self.storage = open_storage(f"sqlite:///{self.tmp / 'relay.db'}")
        await self.storage.open()
        clock = Clock()
        self.client = client_for(make_app(self.storage, clock), self.world, 0, clock)
        await self.client.create_account(self.world.entries[0])
        for a in AUTHORS:
            await self.client.append_registry(self.world.account.account_id,
                                              self.world.add_device(a))
        await self.client.create_space(self.world.space, self.world.key_package())

    def upload(self, raws: list[bytes]) -> list[tuple[str, int | None, str | None]]:
        results, _ = self.loop.run_until_complete(self.client.upload(self.world.space, raws))
        return [(r.status, r.offset, r.code) for r in results]

    def next_op(self, author: int, text: str) -> OpEnvelope:
        op = self.world.op(author, text=text.encode())
        self.accepted[author].append(op)
        return op

    # --------------------------------------------------------------- rules
    @rule(author=st.sampled_from(AUTHORS), n=st.integers(1, 4))
    def append(self, author: int, n: int) -> None:
        ops = [self.next_op(author, f"a{len(self.log) + i}") for i in range(n)]
        expected = [("accepted", len(self.log) + i, None) for i in range(n)]
        assert self.upload([op.raw for op in ops]) == expected
        for op in ops:
            self.offsets[op.op_id] = len(self.log)
            self.log.append(op.op_id)

    @precondition(lambda self: any(self.accepted.values()))
    @rule(author=st.sampled_from(AUTHORS), pick=st.integers(0, 10_000), twice=st.booleans())
    def resubmit(self, author: int, pick: int, twice: bool) -> None:
        mine = self.accepted[author]
        if not mine:
            return
        op = mine[pick % len(mine)]
        raws = [op.raw, op.raw] if twice else [op.raw]
        assert self.upload(raws) == [("duplicate", self.offsets[op.op_id], None)] * len(raws)

    @rule(author=st.sampled_from(AUTHORS), pick=st.integers(0, 10_000))
    def fork(self, author: int, pick: int) -> None:
        mine = self.accepted[author]
        if not mine:
            return
        original = mine[pick % len(mine)]
        h = original.header
        other = self.world.op(author, text=b"equivocation", seq=h.seq, prev=h.prev,
                              record=False)
        assert other.op_id != original.op_id
        assert self.upload([other.raw]) == [("rejected", None, "chain_fork")]
        self.forks += 1

    @rule(author=st.sampled_from(AUTHORS), k=st.one_of(st.integers(1, 8),
                                                       st.integers(9, 2**62)))
    def jump(self, author: int, k: int) -> None:
        head = len(self.accepted[author])
        gap = self.world.op(author, seq=head + 1 + k, record=False)
        assert self.upload([gap.raw]) == [("rejected", None, "chain_gap")]

    # ---------------------------------------------------------- invariants
    @invariant()
    def log_matches_the_model(self) -> None:
        ops = self.loop.run_until_complete(self.storage.read_ops(self.world.space, -1,
                                                                 100_000))
        assert [o.op_id for o in ops] == self.log
        assert [o.offset for o in ops] == list(range(len(self.log)))

    @invariant()
    def one_evidence_row_per_fork(self) -> None:
        evidence: Any = self.loop.run_until_complete(
            self.storage.fork_evidence(self.world.space))
        assert len(evidence) == self.forks

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(self.client.aclose())
            self.loop.run_until_complete(self.storage.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


ChainModel.TestCase.settings = settings(
    max_examples=30 if LONG else 4, stateful_step_count=40 if LONG else 20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestChainModel = ChainModel.TestCase
