"""THREATS #25: a relay process paused (SIGSTOP) while it holds a space's counter
row lock in PostgreSQL.

Node 0 uploads a large batch; the test watches ``pg_locks`` and stops node 0
the moment its append transaction holds the space row, then checks that the
lock is still held (else it resumes and tries again). Meanwhile a writer on
node 1 must fail fast with 503 ``unavailable`` (``lock_timeout``) instead of
hanging, and a reader on node 1 is not blocked at all. After SIGCONT node 0's
upload completes, node 1's retry is accepted, and the log is gap-free with a
root that matches its leaves.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncpg
import pytest
from clusterkit import Cluster, fsck, new_world

from sddsf.errors import UnavailableError

ATTEMPTS = 12
# Every relay connection runs with lock_timeout = 2 s (PostgresStorage default).
LOCK_TIMEOUT_S = 2.0

_HELD = """
SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
WHERE c.relname = 'spaces' AND l.mode = 'RowShareLock' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.pid <> pg_backend_pid()"""


async def _stop_while_locked(pid: int, watcher: asyncpg.Connection,
                             upload: asyncio.Task[object]) -> bool:
    """SIGSTOP ``pid`` as soon as a space row lock is held; True if it still is."""
    while not upload.done():
        if await watcher.fetchval(_HELD):
            os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(0.2)  # anything in flight has landed in PostgreSQL
            if await watcher.fetchval(_HELD):
                return True
            os.kill(pid, signal.SIGCONT)  # it committed just before the stop
            return False
    return False


async def test_paused_lock_holder_makes_other_writers_fail_fast(cluster: Cluster) -> None:
    paused, other = cluster.nodes[1], cluster.nodes[2]
    watcher = await asyncpg.connect(cluster.dsn, timeout=5)
    try:
        for _attempt in range(ATTEMPTS):
            world = await new_world(cluster.nodes[0], devices=3)
            holder, writer = paused.client(world, 1), other.client(world, 2)
            async with holder, writer:
                await holder.list_spaces()
                await writer.list_spaces()
                big = [world.op(1, text=bytes(2000)) for _ in range(150)]
                upload = asyncio.create_task(holder.upload(world.space, [o.raw for o in big]))
                try:
                    stopped = await _stop_while_locked(paused.pid, watcher, upload)
                    if not stopped:
                        await upload
                        continue
                    started = time.monotonic()
                    with pytest.raises(UnavailableError) as info:
                        await writer.upload(world.space, [world.op(2, record=False).raw])
                    waited = time.monotonic() - started
                    assert "locked" in info.value.message, info.value
                    # Bounded: the lock timeout plus the relay's one re-verify, not a hang.
                    assert LOCK_TIMEOUT_S * 0.9 <= waited < 4 * LOCK_TIMEOUT_S + 2, waited
                    pulled, _ = await writer.pull(world.space)  # reads are not blocked
                    assert pulled == []
                finally:
                    os.kill(paused.pid, signal.SIGCONT)
                results, _ = await upload
                assert {r.status for r in results} == {"accepted"}
                (retry,), _ = await writer.upload(world.space, [world.op(2).raw])
                assert (retry.status, retry.offset) == ("accepted", len(big))
            log = await fsck(cluster.dsn, world.space)
            assert [r.op_id for r in log] == [o.op_id for o in big] + [retry.op_id]
            return
        pytest.fail(f"never caught the node holding the lock in {ATTEMPTS} attempts")
    finally:
        await watcher.close()
