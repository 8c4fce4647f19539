"""bench/shared_rotation.py at tiny sizes (4 members x 2 devices): the figures
it reports are the counts the protocol fixes (one seal per active device and
per member's recovery key; one registry request per member at each rotation;
every key package from epoch 0 downloaded again), the relay accepts every
entry and package it sends, and the relay module it instruments is left as it
was."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from sddsf.protocol.keypackage_v3 import verify_key_package_v3
from sddsf.relay.routes import spaces as spaces_mod

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "shared_rotation.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shared_rotation_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the dataclass decorator looks the module up
    spec.loader.exec_module(module)
    return module


def test_protocol_figures_count_one_seal_per_recipient(bench: ModuleType) -> None:
    run = bench.protocol_run(4, 2)
    assert run["recipients"] == 4 * 2 + 4
    assert run["removal_recipients"] == 3 * 2 + 3  # the removed member's 3 are gone
    assert run["removal_bytes"] < run["bytes"]
    rep = bench.report(4, 2, [run], None)
    assert rep["seals"] == rep["recipients"] == 12
    assert rep["bytes_to_all_devices"] == run["bytes"] * 8
    assert rep["protocol_ms"]["build"]["min"] > 0


async def test_relay_run_accepts_every_removal(bench: ModuleType) -> None:
    out = await bench.relay_run(4, 2, 2)
    assert out["membership_appends"]["entries"] == 4
    removals = out["removals"]
    assert [r["members_after"] for r in removals] == [3, 2]
    assert [r["recipients"] for r in removals] == [3 * 3, 2 * 3]
    # The membership log, one registry read per remaining member, the packages.
    assert [r["member_requests"] for r in removals] == [2 + 3, 2 + 2]
    # It asks for the key packages from epoch 0: each rotation adds to the download.
    assert removals[1]["member_key_bytes"] > removals[0]["member_key_bytes"]
    # The relay reads each member's registry (verifying the package) at each PUT.
    assert all(r["put"]["calls"]["SQLite registry_entries"] >= r["members_after"]
               for r in removals)
    assert out["default_limit_probe"] == {"reads": 4, "accepted": 4, "refused": 0,
                                          "rate_ip_burst": 100}
    assert spaces_mod.verify_key_package_v3 is verify_key_package_v3
