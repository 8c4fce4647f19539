"""Detection and false-positive figures of the security controller.

Runs the benign synthetic workload of ``tests/controller/workload.py`` (several
devices of one account over simulated days, every request real: signed,
verified and stored by an in-process relay on SQLite, the relay's clock
injected) for several seeds, counts the alerts it raises (false positives), then
injects each attack once per seed and counts those its rule catches.

    python bench/controller_fp.py [--devices 5] [--days 30] [--seeds 3] [--no-ml]

Prints one JSON object. No figure here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for sub in ("src", "tests/relay", "tests/client", "tests/controller"):
    sys.path.insert(0, str(ROOT / sub))

from ctlkit import DAY_MS, HOUR_MS, Account, open_relay
from relaykit import T0, Clock
from workload import ATTACKS, benign

from sddsf.errors import AuthorizationError


async def one_seed(seed: int, devices: int, days: int, ml: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock(T0 + 7 * HOUR_MS)
        app, storage = await open_relay(Path(tmp), clock,
                                        "" if ml else "[detectors]\nml = { enabled = false }\n")
        a = await Account(app, storage, clock).start(devices)
        try:
            started = time.perf_counter()
            load = await benign(a, days, random.Random(seed))  # noqa: S311 - a workload
            false = [r for r, _ in await a.rules()]
            ml_trained = bool(a.controller.ml and a.controller.ml.trained)
            caught: dict[str, bool] = {}
            for n, (name, (attack, rule)) in enumerate(sorted(ATTACKS.items())):
                before = len(await a.rules())
                a.clock.now = max(a.clock.now, T0 + (days + 1 + n) * DAY_MS + 12 * HOUR_MS)
                # one fresh device per attack; one refused by an earlier quarantine
                # is counted by its rule only
                with contextlib.suppress(AuthorizationError):
                    await attack(a, (seed + n) % devices)
                new = [r for r, _ in (await a.rules())[before:]]
                caught[name] = rule in new
            return {"seed": seed, "device_days": load.device_days, "sessions": load.sessions,
                    "ops": load.ops, "false_alerts": false, "ml_trained": ml_trained,
                    "caught": caught, "seconds": round(time.perf_counter() - started, 1)}
        finally:
            await a.close()
            await storage.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=5, help="at most 5")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--no-ml", action="store_true")
    args = p.parse_args()
    runs = [asyncio.run(one_seed(s, args.devices, args.days, not args.no_ml))
            for s in range(args.seeds)]
    device_days = sum(int(r["device_days"]) for r in runs)  # type: ignore[call-overload]
    false = sum(len(r["false_alerts"]) for r in runs)  # type: ignore[arg-type]
    per_attack = {name: sum(bool(r["caught"][name]) for r in runs)  # type: ignore[index]
                  for name in sorted(ATTACKS)}
    print(json.dumps({
        "devices": args.devices, "days": args.days, "seeds": args.seeds,
        "ml": not args.no_ml, "device_days": device_days,
        "false_alerts": false,
        "false_alerts_per_1000_device_days": round(1000 * false / max(device_days, 1), 2),
        "false_alert_rules": sorted({x for r in runs for x in r["false_alerts"]}),  # type: ignore[attr-defined]
        "detected": per_attack,
        "detection_rate": round(sum(per_attack.values()) / (len(ATTACKS) * len(runs)), 3),
        "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
