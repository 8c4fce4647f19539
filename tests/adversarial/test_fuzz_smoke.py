"""Fuzzing in CI (THREATS catalogue, method "atheris"): a short, reproducible
run of every fuzz target, and a replay of every input that once crashed one.

* Each target of ``fuzz/targets`` runs under atheris (libFuzzer) in its own
  process for a fixed number of executions with a fixed seed, from its seed
  corpus; any untyped exception, oracle failure, hang or memory blow-up fails it.
* Every file in ``fuzz/regressions/<target>/`` is fed to its target in this
  process and must keep the contract (only typed ``SddsfError``s).
* The harness itself is checked: a deliberately broken target fails the run.

A crash in a file this suite may not change waits in :data:`KNOWN_OPEN` for
its fix: its regression replay is an expected failure, and
``test_known_open_crashes_still_reproduce`` fails once the fix lands (remove
the entry then). Any other crash fails.

Longer runs: ``python fuzz/run.py --all --seconds 60`` (figures, saved crashes).
``SDDSF_FUZZ_RUNS`` scales the executions per target here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz.contract import crash_signature, within_contract  # noqa: E402 - needs the path above
from fuzz.targets import TARGETS, load  # noqa: E402

DRIVER = ROOT / "fuzz" / "driver.py"
REGRESSIONS = ROOT / "fuzz" / "regressions"
_SCALE = float(os.environ.get("SDDSF_FUZZ_RUNS", "1"))
#: Executions per target: under a second of fuzzing each (the relay's HTTP
#: target is ~20x slower per input than the pure decoders).
RUNS = {name: int(_SCALE * (200 if name == "http_bodies" else 1000)) for name in TARGETS}
#: Crashes found in files this suite may not change: ``Type@file`` -> the fix it waits for.
KNOWN_OPEN: dict[str, str] = {}


def _known_open(signature: str) -> str | None:
    return KNOWN_OPEN.get(signature.rsplit(":", 1)[0])


def _fuzz(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DRIVER), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)


def _libfuzzer(runs: int, artifacts: Path) -> list[str]:
    return [f"-runs={runs}", "-seed=1", "-max_total_time=60", "-timeout=10",
            "-rss_limit_mb=2048", "-print_final_stats=1", f"-artifact_prefix={artifacts}/"]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """Every target's short run (two at a time, one per core): its exit status and
    output, in which each distinct crash is a ``CRASH <signature> <file>`` line
    (``--keep-going``); the crashes' tracebacks follow."""
    base = tmp_path_factory.mktemp("fuzz")

    def one(name: str) -> tuple[int, str]:
        started = time.monotonic()
        work = base / name
        (work / "artifacts").mkdir(parents=True)
        proc = _fuzz([name, "--corpus", str(work / "corpus"), "--keep-going", "--crash-dir",
                      str(work / "crashes"), "--tmp-dir", str(work / "tmp"), "--",
                      *_libfuzzer(RUNS[name], work / "artifacts")], work)
        tracebacks = [p.read_text() for p in (work / "crashes").glob("*.txt")]
        took = f"{name}: {time.monotonic() - started:.1f} s"
        return proc.returncode, "\n".join([proc.stdout, proc.stderr, *tracebacks, took])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(TARGETS, pool.map(one, TARGETS), strict=True))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_a_short_run(name: str,
                                     smoke_runs: dict[str, tuple[int, str]]) -> None:
    status, output = smoke_runs[name]
    assert status == 0, f"fuzz target {name} hung or blew up:\n{output[-4000:]}"
    done = re.search(r"^Done (\d+) runs", output, re.MULTILINE)
    # libFuzzer stops at the first check past -runs; a corpus RELOAD (once a
    # second) can run a few units beyond it, so the count is a floor.
    assert done is not None and int(done.group(1)) >= RUNS[name], output[-2000:]
    crashes = [line.split(" ", 2)[1] for line in output.splitlines()
               if line.startswith("CRASH ")]
    new = [c for c in crashes if _known_open(c) is None]
    assert not new, f"fuzz target {name} crashed: {new}\n{output[-6000:]}"


def _regressions() -> Iterator[object]:
    for path in sorted(REGRESSIONS.glob("*/*")):
        yield pytest.param(path, id=f"{path.parent.name}/{path.name}")


@pytest.fixture(scope="module")
def _close_relay() -> Iterator[None]:
    yield
    if "fuzz.targets.http" in sys.modules:
        sys.modules["fuzz.targets.http"].close()


@pytest.mark.usefixtures("_close_relay")
@pytest.mark.parametrize("path", list(_regressions()))
def test_regression_keeps_the_contract(path: Path) -> None:
    try:
        _replay(path)
    except Exception as exc:
        reason = _known_open(crash_signature(exc))
        if reason is None:
            raise
        pytest.xfail(reason)


def _replay(path: Path) -> None:
    target = load(path.parent.name)
    target.prepare()
    within_contract(target.run, path.read_bytes())


@pytest.mark.usefixtures("_close_relay")
def test_known_open_crashes_still_reproduce() -> None:
    reproduced = set()
    for path in REGRESSIONS.glob("*/*"):
        try:
            _replay(path)
        except Exception as exc:
            reproduced.add(crash_signature(exc).rsplit(":", 1)[0])
    fixed = set(KNOWN_OPEN) - reproduced
    assert not fixed, f"fixed now: remove {sorted(fixed)} from KNOWN_OPEN"


def test_every_regression_belongs_to_a_target() -> None:
    assert {p.name for p in REGRESSIONS.iterdir() if p.is_dir()} <= set(TARGETS)


_BROKEN = '''
from sddsf.errors import DecodeError

def run(data: bytes) -> None:
    if b"*" in data:
        raise IndexError("a bug the fuzzer must find")
    raise DecodeError("a typed rejection is within the contract")
'''


def test_a_broken_target_fails_the_run(tmp_path: Path) -> None:
    canary = tmp_path / "canary.py"
    canary.write_text(_BROKEN)
    (tmp_path / "artifacts").mkdir()
    stopped = _fuzz(["--entry", f"{canary}:run", "--",
                     *_libfuzzer(100_000, tmp_path / "artifacts")], tmp_path)
    assert stopped.returncode != 0
    assert "IndexError: a bug the fuzzer must find" in stopped.stdout + stopped.stderr
    crash = next((tmp_path / "artifacts").glob("crash-*"))
    assert b"*" in crash.read_bytes()

    kept = _fuzz(["--entry", f"{canary}:run", "--keep-going", "--crash-dir",
                  str(tmp_path / "saved"), "--", *_libfuzzer(5_000, tmp_path / "artifacts")],
                 tmp_path)
    assert kept.returncode == 0, kept.stderr[-2000:]
    assert kept.stderr.count("CRASH IndexError@") == 1  # one report per distinct crash
    saved = [p for p in (tmp_path / "saved").glob("crash-*") if p.suffix != ".txt"]
    assert len(saved) == 1
    assert b"*" in saved[0].read_bytes()
