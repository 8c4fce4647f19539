"""The CI-sized load run (THREATS #18): 50 simulated devices (10 accounts of 5
devices, each account sharing one space) push and pull concurrently against
one real relay process; nothing fails except deliberate rate limiting, and the
history passes every checker (no lost ACK, no duplicates, gap-free, monotonic
delivery, consistent checkpoints, chains, strong convergence, fsck).

No timing is asserted: ``bench/load.py`` measures throughput, latency and the
relay's memory with 1,000 devices.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from load import relay_process, rss_kib, run_devices

from sddsf.testing.checkers import check_relay

ACCOUNTS, DEVICES, ROUNDS = 10, 5, 2


async def test_fifty_devices_push_pull_and_converge(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'relay.db'}"
    with relay_process(tmp_path, db_url) as relay:
        result = await run_devices(relay.url, tmp_path, range(ACCOUNTS), DEVICES, ROUNDS)
        assert rss_kib(relay.proc.pid)[0] > 0
    assert result.errors == []  # 429s are retried and counted apart (result.rate_limited)
    assert result.devices == ACCOUNTS * DEVICES
    assert result.pushed == ACCOUNTS * DEVICES * ROUNDS  # every edit became one acked op
    history = result.history
    assert len(history.states) == ACCOUNTS * DEVICES
    # each account's devices converged on every device's every edit
    for client, states in history.states.items():
        [state] = states.values()
        account = client.rsplit("-", 1)[0]
        assert state == {f"{account}-{d}:{r}": r for d in range(DEVICES)
                         for r in range(ROUNDS)}, client
    assert await check_relay(history, db_url) == []
