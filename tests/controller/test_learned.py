"""The learned detector (scikit-learn's IsolationForest, the ``ml`` extra) trains on
the relay's own closed per-device windows and isolates an odd one."""

from __future__ import annotations

from pathlib import Path

from ctlkit import Account, open_relay
from relaykit import T0, Clock

from sddsf.relay.controller.detectors import FEATURES, SignalKind
from sddsf.relay.controller.ml import IsolationDetector, isolation_available
from sddsf.relay.controller.policy import MlDetector

POLICY = """
[detectors]
stats = { window_s = 60, alpha = 0.1, z_threshold = 1000.0, min_windows = 1000, min_count = 1 }
volume = { factor = 1000.0, min_ops = 100000 }
ml = { enabled = true, min_samples = 48, retrain_every = 10000, contamination = 0.02, min_ops = 5 }
"""


def test_scikit_learn_is_installed_for_the_tests() -> None:
    assert isolation_available()  # the test extra installs it: this path is not skipped


def test_detector_learns_then_isolates() -> None:
    d = IsolationDetector(MlDetector(min_samples=40, contamination=0.02, min_ops=5))
    ops = FEATURES.index(SignalKind.OPS)
    for k in range(40):
        v = [0] * len(FEATURES)
        v[ops] = 6 + k % 4
        assert d.add(v) is None
    assert d.trained
    odd = [0] * len(FEATURES)
    odd[ops], odd[FEATURES.index(SignalKind.REJECTED)] = 80, 30
    found = d.add(odd)
    assert found is not None and found.rule == "learned_anomaly"


async def test_learned_anomaly_against_the_relay(tmp_path: Path) -> None:
    clock = Clock(T0)
    app, storage = await open_relay(tmp_path, clock, POLICY)
    a = await Account(app, storage, clock).start(3)
    try:
        for window in range(18):  # 3 devices x 18 one-minute windows of ordinary pushes
            clock.now = T0 + window * 60_000 + 1000
            for i in range(3):
                await a.push(i, 5 + (window + i) % 4)
        assert a.controller.ml is not None and a.controller.ml.trained
        assert await a.rules() == []
        clock.now += 60_000
        head = a.world.heads[a.device_id(2)][0]
        gaps = [a.world.op(2, ts=clock.now, seq=head + 10 + k, record=False).raw
                for k in range(25)]
        results, _ = await a.client(2).upload(a.world.space, gaps, proofs=False)
        assert {r.code for r in results} == {"chain_gap"}
        await a.push(2, 60)
        clock.now += 60_000
        await a.push(2, 1)  # opens the next window: the odd one is scored
        assert ("learned_anomaly", a.device_id(2)) in await a.rules()
    finally:
        await a.close()
        await storage.close()
