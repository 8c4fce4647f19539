"""Three relay processes over one PostgreSQL database (THREATS #4, #7, #24; the
nodes' clocks are skewed by ±90 s, #19).

* #4: one op submitted to all three nodes at once is one leaf: one ``accepted``,
  the others ``duplicate`` with the same offset, and it is fanned out once.
* #7: two different ops for one (device, seq) sent to two nodes at once: one is
  accepted, the other refused ``chain_fork``, and both signed ops are kept as
  evidence.
* every node's WebSocket gets each op exactly once, in log order (the appending
  node pushes it, the others learn of it from the cluster bus).
* #24: writers on all three nodes append to one space concurrently: offsets are
  gap-free and follow commit order, every acknowledged op is where its ACK said,
  the stored root equals the root recomputed from the leaves, and a reader
  tailing the log through every node never skips an offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any

from clusterkit import LONG, Cluster, fsck, new_world, sql
from livekit import b64, unb64, ws_connect
from relaykit import relay_key

from sddsf.protocol import merkle
from sddsf.protocol.treehead import verify_tree_head

ROUNDS = 40 if LONG else 6


async def _drain(ws: Any, seconds: float = 0.3) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError):
        while True:
            async with asyncio.timeout(seconds):
                got.append(json.loads(await ws.recv()))
    return got


async def test_one_op_sent_to_three_nodes_at_once_is_one_leaf(cluster: Cluster) -> None:
    world = await new_world(cluster.nodes[0])
    writers = [node.client(world, 0) for node in cluster.nodes]
    reader = cluster.nodes[1].client(world, 1)
    async with contextlib.AsyncExitStack() as stack:
        for c in [*writers, reader]:
            await stack.enter_async_context(c)
            await c.list_spaces()  # sessions first: the race below is the uploads only
        sockets = []
        for node in cluster.nodes:  # device 1 listens on every node
            url = f"{node.base_url.replace('http', 'ws')}/v1/ws?ticket=" \
                  f"{b64(await reader.ws_ticket())}"
            ws = await stack.enter_async_context(ws_connect(url))
            await ws.send(json.dumps({"type": "subscribe", "space": b64(world.space)}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            sockets.append(ws)
        ops = []
        for i in range(ROUNDS):
            op = world.op(0, text=f"once {i}".encode())
            ops.append(op)
            answers = await asyncio.gather(*(c.upload(world.space, [op.raw]) for c in writers))
            results = [r[0] for r, _ in answers]
            assert sorted(r.status for r in results) == ["accepted", "duplicate", "duplicate"]
            assert {r.offset for r in results} == {i}
            for (r,), head_raw in answers:  # every node's answer proves the same leaf
                head = verify_tree_head(head_raw, relay_key().public, log=world.space)
                assert r.proof is not None
                merkle.verify_inclusion(merkle.leaf_hash(op.raw), i, head.size, r.proof,
                                        head.root)
        pushed = [[m for m in await _drain(ws, 1.0) if m["type"] == "op"] for ws in sockets]
    log = await fsck(cluster.dsn, world.space)
    assert [row.op_id for row in log] == [op.op_id for op in ops]
    # Fanned out once on every node (cluster fan-out), in log order, never again
    # as a duplicate.
    for got in pushed:
        assert [m["offset"] for m in got] == list(range(ROUNDS))
        assert [unb64(m["envelope"]) for m in got] == [op.raw for op in ops]


async def test_fork_sent_to_two_nodes_at_once_keeps_one_and_the_evidence(
        cluster: Cluster) -> None:
    # One fork per device: after equivocating, a device is flagged by the
    # controller (THREATS #7), so each round uses another device of the account.
    worlds = [await new_world(cluster.nodes[0], devices=6) for _ in range(3 if LONG else 1)]
    for world in worlds:
        winners = []
        for dev in range(1, 6):
            a, b = cluster.nodes[dev % 3].client(world, dev), \
                cluster.nodes[(dev + 1) % 3].client(world, dev)
            async with a, b:
                await a.list_spaces()
                await b.list_spaces()
                left = world.op(dev, text=b"left", record=False)
                right = world.op(dev, text=b"right", record=False)
                assert (left.header.seq, left.header.prev) == (right.header.seq,
                                                               right.header.prev)
                answers = await asyncio.gather(a.upload(world.space, [left.raw]),
                                               b.upload(world.space, [right.raw]))
            results = [r[0] for r, _ in answers]
            assert sorted((r.status, r.code) for r in results) == [
                ("accepted", None), ("rejected", "chain_fork")], results
            winners.append(left if results[0].status == "accepted" else right)
        log = await fsck(cluster.dsn, world.space)
        assert sorted(row.op_id for row in log) == sorted(w.op_id for w in winners)
        evidence = await sql(cluster.dsn, "SELECT author, accepted_envelope, "
                                          "refused_envelope FROM fork_evidence WHERE "
                                          "space_id = $1", world.space)
        assert len(evidence) == len(winners)
        by_author = {bytes(r[0]): (bytes(r[1]), bytes(r[2])) for r in evidence}
        for winner in winners:
            accepted, refused = by_author[winner.header.author]
            assert accepted == winner.raw and refused != winner.raw


async def test_concurrent_writers_on_three_nodes_are_gap_free(cluster: Cluster) -> None:
    batches, size = (20, 10) if LONG else (6, 8)
    world = await new_world(cluster.nodes[0], devices=4)  # devices 1-3 write, 0 reads
    writers = [node.client(world, i + 1) for i, node in enumerate(cluster.nodes)]
    readers = [node.client(world, 0) for node in cluster.nodes]
    acks: dict[bytes, int] = {}  # op id -> offset the relay acknowledged
    tailed: list[bytes] = []  # what a reader tailing the log through every node saw
    done = asyncio.Event()

    async def write(i: int) -> None:
        c = writers[i]
        for b in range(batches):
            ops = [world.op(i + 1, text=f"w{i} b{b} o{k}".encode()) for k in range(size)]
            results, head_raw = await c.upload(world.space, [o.raw for o in ops])
            head = verify_tree_head(head_raw, relay_key().public, log=world.space)
            for op, r in zip(ops, results, strict=True):
                assert r.status == "accepted" and r.offset is not None and r.proof, r
                merkle.verify_inclusion(merkle.leaf_hash(op.raw), r.offset, head.size,
                                        r.proof, head.root)
                acks[op.op_id] = r.offset

    async def tail() -> None:
        turn = 0
        while True:
            finished = done.is_set()
            page, _ = await readers[turn % 3].pull(world.space, after=len(tailed) - 1)
            turn += 1
            for op in page:  # a reader must never see offset n+1 before offset n
                assert op.offset == len(tailed), (op.offset, len(tailed))
                tailed.append(op.op_id)
            if finished and not page:
                return
            await asyncio.sleep(0.02)

    async with contextlib.AsyncExitStack() as stack:
        for c in [*writers, *readers]:
            await stack.enter_async_context(c)
            await c.list_spaces()
        reader = asyncio.create_task(tail())
        await asyncio.gather(*(write(i) for i in range(3)))
        done.set()
        await reader
    log = await fsck(cluster.dsn, world.space)
    assert len(log) == 3 * batches * size
    assert {row.op_id: row.offset for row in log} == acks  # no lost or moved ACK
    assert tailed == [row.op_id for row in log]
    # Commit order: each writer's ops appear in the order of its seqs, and the
    # batches of different nodes really interleaved (the test raced).
    authors = [row.author for row in log]
    switches = sum(1 for x, y in itertools.pairwise(authors) if x != y)
    assert switches >= 2, "the writers never interleaved"
