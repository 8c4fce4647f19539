"""Crash loops: a real relay process and device processes, kill -9 at random moments.

:func:`run_crash_loop` is shared by ``test_crash_loop.py`` (a few iterations per
backend in CI) and ``scripts/crash_loop.py`` (long runs with figures):

1. start ``sddsf relay serve`` (SQLite file or PostgreSQL database) on a fixed
   loopback port with a key file, so a restarted relay has the same URL and
   tree-head key that the devices pinned;
2. create one account with ``clients`` devices sharing one space (in this
   process, then closed);
3. start one ``_crash_child.py`` process per device: each edits and syncs in a
   loop, journaling every acknowledgement and tree head it receives;
4. ``iterations`` times, after a random pause, SIGKILL the relay, one device
   process, or both, and restart what was killed (same home, same port);
5. stop the children (they push what is pending and exit), sync every device
   once more in this process so all have pulled the whole log, and record
   what each applied and its final document;
6. run every checker of :mod:`sddsf.testing.checkers` (including fsck) on the
   journals and the relay database, and check that each device's own keys in
   the converged document are contiguous (an edit persisted locally was never
   lost, whatever was killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pycrdt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))

from livekit import (
    RelayProcess,
    Relays,
    free_port,
    fresh_postgres_database,
    relay_env,
    write_key_file,
)

from sddsf.client.device import Device
from sddsf.relay.settings import RelaySettings
from sddsf.testing.checkers import (
    History,
    Violation,
    check_relay,
    history_from_journal,
    record_device,
    record_final,
)

CHILD = Path(__file__).resolve().parent / "_crash_child.py"
FINISH_TIMEOUT_S = 120.0
#: Generous request limits: the loops hammer one relay from three devices on one address.
RELAY_LIMITS = {"SDDSF_RELAY_RATE_DEVICE_PER_S": "1e6", "SDDSF_RELAY_RATE_DEVICE_BURST": "1e6",
                "SDDSF_RELAY_RATE_ACCOUNT_PER_S": "1e6", "SDDSF_RELAY_RATE_ACCOUNT_BURST": "1e6",
                "SDDSF_RELAY_RATE_IP_PER_S": "1e6", "SDDSF_RELAY_RATE_IP_BURST": "1e6"}


def permissive_policy(work: Path) -> dict[str, str]:
    """Relay settings pinning a controller policy that never restricts a device
    (empty if this relay has no controller policy setting).

    These tests check sync, not the security controller (its own tests do):
    with the default policy a device added during the quiet hours is
    read-only, so the outcome would depend on the time of day.
    """
    if "policy_file" not in {f.name for f in dataclasses.fields(RelaySettings)}:
        return {}
    path = work / "controller-policy.toml"
    path.write_text("[thresholds]\nfull = 0\nread_only = 0\n")
    return {"policy_file": str(path)}


def permissive_controller(work: Path) -> dict[str, str]:
    """:func:`permissive_policy` as ``SDDSF_RELAY_*`` environment variables."""
    return {f"SDDSF_RELAY_{k.upper()}": v for k, v in permissive_policy(work).items()}


def kv_state(device: Device, space: bytes) -> dict[str, Any]:
    """The decrypted "kv" document of a space (what must converge)."""
    return dict(device.doc(space, "kv").get("kv", type=pycrdt.Map))


@dataclass
class CrashLoopResult:
    """Figures and verdict of one run."""

    backend: str
    iterations: int
    seed: int
    relay_kills: int = 0
    client_kills: int = 0
    log_ops: int = 0
    acks: int = 0
    resent_acks: int = 0  # re-sends the relay answered "duplicate" (it had the op already)
    heads: int = 0
    edits: dict[str, int] = field(default_factory=dict)
    acked_ops: int = 0  # distinct ops acknowledged (every op of the log, once pushed)
    violations: list[Violation] = field(default_factory=list)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        """The run as a flat, JSON-ready dict."""
        return {"backend": self.backend, "iterations": self.iterations, "seed": self.seed,
                "relay_kills": self.relay_kills, "client_kills": self.client_kills,
                "log_ops": self.log_ops, "acks": self.acks, "resent_acks": self.resent_acks,
                "acked_ops": self.acked_ops, "heads_observed": self.heads,
                "edits": self.edits, "phases_s": {k: round(v, 1) for k, v in self.phases.items()},
                "violations": [str(v) for v in self.violations],
                "seconds": round(self.seconds, 1)}


class Child:
    """One device process; restarted on the same home after each kill."""

    def __init__(self, work: Path, name: str, home: Path, seed: int) -> None:
        self.work, self.name, self.home, self.seed = work, name, home, seed
        self.journal = work / f"{name}.journal"
        self.stop_file = work / "stop"
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.runs += 1
        log = self.work / f"{self.name}-{self.runs}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), str(self.home), self.name, str(self.journal),
                 str(self.stop_file), str(self.seed)],
                env=relay_env(), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=self.work)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.work.glob(f"{self.name}-*.log")))


class RelaySupervisor:
    """The relay process: same database, port and key file across restarts."""

    def __init__(self, work: Path, db_url: str) -> None:
        self.relays = Relays(work)
        self.port = free_port()
        self.db_url = db_url
        self.env = {"SDDSF_RELAY_KEY_FILE": str(write_key_file(work / "relay.key")),
                    **RELAY_LIMITS, **permissive_controller(work)}
        self.current: RelayProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.current = self.relays.start("--db", self.db_url, "--port", str(self.port),
                                         env=self.env, port=self.port)

    def kill9(self) -> None:
        if self.current is not None and self.current.proc.poll() is None:
            os.kill(self.current.proc.pid, signal.SIGKILL)
            self.current.proc.wait(timeout=10)

    def stop_all(self) -> None:
        self.relays.stop_all()


async def _setup(relay_url: str, work: Path, clients: int,
                 history: History) -> list[tuple[str, Path]]:
    """One account, ``clients`` devices and one space; every device synced once
    (what they observe goes to ``history``)."""
    def transport() -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport()

    homes = [(f"d{i}", work / f"home-d{i}") for i in range(clients)]
    first, _ = await Device.create_account(homes[0][1], relay_url, "d0", passphrase=None,
                                           insecure_plaintext=True, transport=transport())
    record_device(history.add, "d0", first)
    await first.create_space("crash")
    await first.sync()  # the space's first op, before new epochs (see test_checkers)
    devices = [first]
    for name, home in homes[1:]:
        devices.append(await Device.add_local(first, home, name, passphrase=None,
                                              insecure_plaintext=True, transport=transport()))
    for d in devices:
        await d.sync()
    for d in devices:
        await d.close()
    return homes


async def _quiesce(homes: list[tuple[str, Path]], history: History) -> None:
    """Every device syncs once more (all children have pushed), then is recorded."""
    for _, home in homes:
        device = Device.open(home, passphrase=None, transport=httpx.AsyncHTTPTransport())
        try:
            report = await device.sync()
            if report.rejected:
                raise AssertionError(f"{home.name}: the relay rejected {report.rejected}")
        finally:
            await device.close()
    for name, home in homes:
        device = Device.open(home, passphrase=None, transport=httpx.AsyncHTTPTransport())
        try:
            record_final(history, name, device, kv_state)
        finally:
            await device.close()


def _own_keys_contiguous(history: History) -> list[Violation]:
    out = []
    for client, states in history.states.items():
        for state in states.values():
            if not isinstance(state, dict):
                continue
            for name in {k.split(":")[0] for k in state if ":" in k}:
                got = sorted(int(k.split(":")[1]) for k in state if k.startswith(f"{name}:"))
                if got != list(range(len(got))):
                    out.append(Violation("no_lost_edit", f"{client} sees {name}'s edits "
                                         f"{got[:5]}...: a persisted edit is missing"))
    return out


@contextlib.contextmanager
def _cleanup(relay: RelaySupervisor, children: list[Child]) -> Iterator[None]:
    try:
        yield
    finally:
        for c in children:
            c.kill9()
        relay.stop_all()


async def run_crash_loop(work: Path, db_url: str, *, backend: str, iterations: int,
                         seed: int, clients: int = 3,
                         pause_s: tuple[float, float] = (0.3, 1.2)) -> CrashLoopResult:
    """Run one crash loop (see the module docstring); never leaves a process behind."""
    rng = random.Random(seed)
    started = time.monotonic()
    result = CrashLoopResult(backend, iterations, seed)
    relay = RelaySupervisor(work, db_url)
    children: list[Child] = []
    history = History()
    clock = _Phases(result.phases)
    with _cleanup(relay, children):
        relay.start()
        homes = await _setup(relay.url, work, clients, history)
        children.extend(Child(work, name, home, seed) for name, home in homes)
        for c in children:
            c.start()
        clock.lap("setup")
        for target in _schedule(rng, iterations):
            await asyncio.sleep(rng.uniform(*pause_s))  # the devices sync meanwhile
            _fail_if_a_child_died(children)
            victim = rng.choice(children)
            if target in ("relay", "both"):
                relay.kill9()
                result.relay_kills += 1
            if target in ("client", "both"):
                victim.kill9()
                result.client_kills += 1
            await asyncio.sleep(rng.uniform(0, 0.3))
            if target in ("relay", "both"):
                relay.start()
            if target in ("client", "both"):
                victim.start()
        clock.lap("kill_loop")
        (work / "stop").touch()
        _wait_finished(children)
        clock.lap("finish")
        for c in children:
            history.merge(history_from_journal(c.journal.read_text().splitlines()))
        await _quiesce(homes, history)
        clock.lap("quiesce")
    result.violations = [*await check_relay(history, db_url), *_own_keys_contiguous(history)]
    clock.lap("check")
    result.acks = len(history.acks)
    result.acked_ops = len({(a.space, a.device, a.device_seq) for a in history.acks})
    result.resent_acks = sum(1 for a in history.acks if a.duplicate)
    result.heads = len(history.heads)
    result.log_ops = max((d.items[-1][0] + 1 for d in history.deliveries if d.items),
                         default=0)
    final = next(iter(history.states.values()), {})
    for state in final.values():
        if isinstance(state, dict):
            for name in {k.split(":")[0] for k in state if ":" in k}:
                result.edits[name] = sum(1 for k in state if k.startswith(f"{name}:"))
    result.seconds = time.monotonic() - started
    return result


def _schedule(rng: random.Random, iterations: int) -> list[str]:
    """What to kill at each iteration: every kind at least once (from 3 iterations
    on), the rest at random, in a random order."""
    kinds = ["relay", "client", "both"]
    plan = kinds[:iterations] + [rng.choice(kinds) for _ in range(iterations - len(kinds))]
    rng.shuffle(plan)
    return plan


class _Phases:
    """Wall-clock seconds of each phase, into ``into``."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into = into
        self.last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.into[name] = now - self.last
        self.last = now


def _fail_if_a_child_died(children: list[Child]) -> None:
    for c in children:
        if c.proc is not None and c.proc.poll() not in (None, -signal.SIGKILL):
            raise AssertionError(f"device {c.name} exited with {c.proc.returncode} during "
                                 f"the loop:\n{c.logs()}")


def _wait_finished(children: list[Child]) -> None:
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    for c in children:
        assert c.proc is not None
        try:
            rc = c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"device {c.name} did not finish:\n{c.logs()}") from None
        if rc != 0:
            raise AssertionError(f"device {c.name} exited with {rc}:\n{c.logs()}")


async def run_on_backend(work: Path, backend: str, *, iterations: int,
                         seed: int) -> CrashLoopResult:
    """:func:`run_crash_loop` on a fresh SQLite file in ``work`` or a fresh
    PostgreSQL database (skipped, or failed under ``SDDSF_REQUIRE_POSTGRES=1``,
    when the server is unreachable)."""
    if backend == "sqlite":
        return await run_crash_loop(work, f"sqlite:///{work / 'relay.db'}", backend=backend,
                                    iterations=iterations, seed=seed)
    async with fresh_postgres_database() as dsn:
        return await run_crash_loop(work, dsn, backend=backend, iterations=iterations,
                                    seed=seed)
