"""Load: many simulated devices pushing and pulling against ONE relay process
(THREATS #18 and #27 territory; results go to docs/reliability.md).

Every simulated device is a real :class:`sddsf.client.device.Device` (its own
encrypted SQLite store, pycrdt documents, signed encrypted ops, full
verification of everything it pulls) driven by asyncio over loopback HTTP.
``--procs`` worker processes share the devices (one event loop each), so the
load generator is not one GIL.

Phases: start the relay (``sddsf relay serve`` with a settings TOML: the
per-device and per-account limits stay at their defaults; the per-address
limit is lifted because every simulated device shares 127.0.0.1; the
controller runs with a policy that never restricts, so a device added during
its quiet hours is not read-only); set up ``--accounts`` accounts of
``--devices`` devices sharing one space each; then the measured phase:
``--rounds`` rounds in which every device edits its own key and syncs (push +
pull), at most ``--concurrency`` syncs in flight (a closed loop: the latency
is the relay's service time under that concurrency, not an ever-growing
queue); then every device syncs twice more and the history is checked (no lost
ACK, no duplicates, gap-free, monotonic delivery, consistent checkpoints,
chains, strong convergence, fsck). The workers run at nice 10, so on a small
machine the relay gets the CPU first.

Reported: ops/s and the relay's requests/s over the measured phase; p50/p99 of
push (upload) and pull requests as the devices saw them and as the relay's
``sddsf_http_request_duration_seconds`` histogram saw them (bucket upper bounds); 429s
(deliberate rate limiting, retried) apart from errors; the relay's RSS (at the
end, peak, and the largest 0.25 s sample) from /proc.

Usage:
    python bench/load.py [--accounts 100] [--devices 10] [--rounds 2] [--procs 2]
                         [--concurrency 64] [--backend sqlite|postgres] [--deadline 400]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import os
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pycrdt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sddsf.client.device import Device
from sddsf.errors import RateLimitedError, SddsfError
from sddsf.relay.settings import RelaySettings
from sddsf.testing.checkers import History, check_relay, record_device, record_final

#: The per-address bucket is lifted (one loopback address stands for 1,000
#: devices); device and account buckets keep the relay's defaults.
LIMITS = {"rate_ip_per_s": 1e6, "rate_ip_burst": 1e6}
SPACE = "load"


#: One TLS context for every device: building one loads the CA bundle (~50 ms
#: of CPU each, which 1,000 devices would spend at set-up for nothing on http).
_TLS = ssl.create_default_context()


def transport() -> httpx.AsyncBaseTransport:
    """Loopback HTTP for one device, no proxies from the environment.

    Idle connections are dropped after 2 s, before the relay's (uvicorn's 5 s
    keep-alive timeout): with httpx's default expiry of 5 s a device can send a
    request on a connection the relay is closing at that moment, and the
    request fails ("Server disconnected", UnavailableError). That race is a
    finding of this benchmark (see docs/reliability.md); this avoids it here.
    """
    return httpx.AsyncHTTPTransport(limits=httpx.Limits(keepalive_expiry=2.0), verify=_TLS)



def kv_state(device: Device, space: bytes) -> dict[str, Any]:
    """The decrypted "kv" document of a space (what must converge)."""
    return dict(device.doc(space, "kv").get("kv", type=pycrdt.Map))


# ------------------------------------------------------------------ the relay


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


@dataclass
class RelayHandle:
    """A running relay: its URL, process and a RSS sampler."""

    url: str
    proc: subprocess.Popen[bytes]
    samples: list[int] = field(default_factory=list)

    def sample(self) -> None:
        with contextlib.suppress(OSError, KeyError):
            self.samples.append(rss_kib(self.proc.pid)[0])


@contextlib.contextmanager
def relay_process(work: Path, db_url: str, limits: dict[str, float] | None = None,
                  ) -> Iterator[RelayHandle]:
    """``sddsf relay serve --config relay.toml`` on a free loopback port; stopped after."""
    port = free_port()
    settings = {"db": db_url, "port": port, "key_file": str(work / "relay.key"),
                **(LIMITS if limits is None else limits)}
    if "policy_file" in {f.name for f in dataclasses.fields(RelaySettings)}:
        # Measure sync, not the controller's verdicts: with the default policy a
        # device added during the quiet hours is read-only (time-of-day dependent).
        # The controller still runs (signals, detectors); it never restricts.
        policy = work / "controller-policy.toml"
        policy.write_text("[thresholds]\nfull = 0\nread_only = 0\n")
        settings["policy_file"] = str(policy)
    config = work / "relay.toml"
    config.write_text("[relay]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                            for k, v in settings.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDDSF_RELAY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    with (work / "relay.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sddsf", "relay", "serve", "--config",
                                 str(config)], env=env, stdout=log, stderr=subprocess.STDOUT)
    handle = RelayHandle(f"http://127.0.0.1:{port}", proc)
    stop = threading.Event()

    def sampler() -> None:
        while not stop.wait(0.25):
            handle.sample()

    thread = threading.Thread(target=sampler, daemon=True)
    try:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{handle.url}/healthz", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the relay did not become healthy")
        if proc.poll() is not None:
            raise RuntimeError(f"the relay exited:\n{(work / 'relay.log').read_text()}")
        thread.start()
        yield handle
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---------------------------------------------------------------- the devices


@dataclass
class WorkerResult:
    """What one group of devices did and saw."""

    devices: int = 0
    setup_s: float = 0.0
    load_s: float = 0.0
    pushed: int = 0
    push_ms: list[float] = field(default_factory=list)
    pull_ms: list[float] = field(default_factory=list)
    rate_limited: int = 0
    errors: list[str] = field(default_factory=list)
    history: History = field(default_factory=History)

    def merge(self, other: WorkerResult) -> None:
        self.devices += other.devices
        self.setup_s = max(self.setup_s, other.setup_s)
        self.load_s = max(self.load_s, other.load_s)
        self.pushed += other.pushed
        self.push_ms += other.push_ms
        self.pull_ms += other.pull_ms
        self.rate_limited += other.rate_limited
        self.errors += other.errors
        self.history.merge(other.history)


def _timed(device: Device, result: WorkerResult) -> None:
    """Time the device's upload and pull requests (wrapping its relay client)."""
    relay = device.relay
    upload, pull = relay.upload, relay.pull

    async def timed_upload(*args: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        out = await upload(*args, **kw)
        result.push_ms.append((time.perf_counter() - t) * 1000)
        return out

    async def timed_pull(*args: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        out = await pull(*args, **kw)
        result.pull_ms.append((time.perf_counter() - t) * 1000)
        return out

    setattr(relay, "upload", timed_upload)  # noqa: B010 - instance-level wrap
    setattr(relay, "pull", timed_pull)  # noqa: B010


async def _sync(device: Device, result: WorkerResult, rng: random.Random) -> None:
    """Sync, retrying deliberate rate limiting (counted apart from errors)."""
    for _ in range(50):
        try:
            report = await device.sync()
        except RateLimitedError:
            result.rate_limited += 1
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            continue
        result.pushed += report.pushed
        if report.rejected:
            result.errors.append(f"{device.name}: rejected {report.rejected}")
        return
    result.errors.append(f"{device.name}: still rate limited after 50 attempts")


async def _account(relay_url: str, work: Path, index: int, devices: int,
                   result: WorkerResult) -> list[Device]:
    name = f"acct{index}"
    first, _ = await Device.create_account(work / f"{name}-0", relay_url, f"{name}-0",
                                           passphrase=None, insecure_plaintext=True,
                                           transport=transport())
    await first.create_space(SPACE)
    await first.sync()  # push the space's first op before new key epochs
    out = [first]
    for i in range(1, devices):
        out.append(await Device.add_local(first, work / f"{name}-{i}", f"{name}-{i}",
                                          passphrase=None, insecure_plaintext=True,
                                          transport=transport()))
    rng = random.Random(index)  # noqa: S311 - jitter, not secrets
    for d in out:
        await _sync(d, result, rng)
    return out


async def run_devices(relay_url: str, work: Path, accounts: range, devices: int, rounds: int,
                      *, concurrency: int = 32,
                      barrier: Callable[[str], Awaitable[None]] | None = None,
                      setup_concurrency: int = 16) -> WorkerResult:
    """Set up ``accounts`` (each ``devices`` devices, one space), run the load
    rounds with at most ``concurrency`` syncs in flight, quiesce, and record the
    history. ``barrier(phase)`` is awaited after setup ("ready") and after the
    last push ("pushed") to line up processes."""
    result = WorkerResult()
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(setup_concurrency)

    async def setup(i: int) -> list[Device]:
        async with gate:
            return await _account(relay_url, work, i, devices, result)

    groups = await asyncio.gather(*(setup(i) for i in accounts))
    everyone = [d for g in groups for d in g]
    result.devices = len(everyone)
    for d in everyone:
        record_device(result.history.add, d.name, d)
        _timed(d, result)
    result.setup_s = time.perf_counter() - t0
    result.push_ms.clear()
    result.pull_ms.clear()
    result.pushed = 0
    if barrier is not None:
        await barrier("ready")
    t1 = time.perf_counter()
    in_flight = asyncio.Semaphore(concurrency)

    async def sync(d: Device, rng: random.Random) -> None:
        async with in_flight:
            try:
                await _sync(d, result, rng)
            except SddsfError as exc:
                result.errors.append(f"{d.name}: [{exc.code.value}] {exc.message}")

    async def drive(d: Device, seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - jitter, not secrets
        [(space, _)] = d.spaces()
        kv = d.doc(space, "kv").get("kv", type=pycrdt.Map)
        for r in range(rounds):
            await asyncio.sleep(rng.uniform(0, 0.05))
            kv[f"{d.name}:{r}"] = r
            await sync(d, rng)

    await asyncio.gather(*(drive(d, i) for i, d in enumerate(everyone)))
    result.load_s = time.perf_counter() - t1
    if barrier is not None:
        await barrier("pushed")
    rng = random.Random(0)  # noqa: S311 - jitter, not secrets
    # Quiesce: one pass pushes anything left after an error, the next pulls it
    # everywhere (all devices of an account live in this process).
    for _ in range(2):
        await asyncio.gather(*(sync(d, rng) for d in everyone))
    for d in everyone:
        if d.pending_count():
            result.errors.append(f"{d.name}: {d.pending_count()} ops still pending")
        record_final(result.history, d.name, d, kv_state)
        await d.close()
    return result


def _worker(relay_url: str, work: str, start: int, stop: int, devices: int, rounds: int,
            concurrency: int, barrier: Any, out: Any) -> None:
    # The load generator yields the CPU to the relay it measures (2 cores).
    os.nice(10)

    async def wait(_: str) -> None:
        await asyncio.to_thread(barrier.wait)

    try:
        result = asyncio.run(run_devices(relay_url, Path(work), range(start, stop), devices,
                                         rounds, concurrency=concurrency, barrier=wait))
    except BaseException as exc:  # report, and free the others from the barrier
        barrier.abort()
        out.put(("error", f"{type(exc).__name__}: {exc}"))
        raise
    out.put(("ok", result))


# -------------------------------------------------------------------- the run


def scrape_latency(url: str) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """The relay's ``sddsf_http_request_duration_seconds`` histogram, every status
    summed: (method, route) -> [(le, count)]."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    prefix = "sddsf_http_request_duration_seconds_bucket{"
    sums: dict[tuple[str, str], dict[float, float]] = {}
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, value = line[len(prefix):].rsplit("} ", 1)
        fields = dict(part.split("=", 1) for part in labels.split('",') if "=" in part)
        key = (fields["method"].strip('"'), fields["route"].strip('"'))
        le = float(fields["le"].strip('"'))
        per_le = sums.setdefault(key, {})
        per_le[le] = per_le.get(le, 0.0) + float(value)
    return {key: sorted(per_le.items()) for key, per_le in sums.items()}


def relay_quantile(before: dict[tuple[str, str], list[tuple[float, float]]],
                   after: dict[tuple[str, str], list[tuple[float, float]]],
                   method: str, route: str, q: float) -> float | None:
    """The q-quantile (ms, as a bucket upper bound) of a route between two scrapes."""
    now = sorted(after.get((method, route), []))
    then = dict(before.get((method, route), []))
    counts = [(le, n - then.get(le, 0.0)) for le, n in now]
    if not counts or counts[-1][1] <= 0:
        return None
    for le, n in counts:
        if n >= q * counts[-1][1]:
            return le * 1000
    return None


def relay_requests(before: dict[tuple[str, str], list[tuple[float, float]]],
                   after: dict[tuple[str, str], list[tuple[float, float]]]) -> int:
    """Requests the relay served between two scrapes (every route)."""
    def total(m: dict[tuple[str, str], list[tuple[float, float]]]) -> float:
        return sum(max(n for _, n in buckets) for buckets in m.values())

    return int(total(after) - total(before))


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values (nearest rank), 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summary(result: WorkerResult, handle: RelayHandle, violations: list[str],
            wall_s: float, server: dict[str, float | None], requests: int) -> dict[str, Any]:
    """The figures of one run."""
    rss, hwm = rss_kib(handle.proc.pid) if handle.proc.poll() is None else (0, 0)
    return {
        "devices": result.devices, "setup_s": round(result.setup_s, 1),
        "load_s": round(result.load_s, 2), "ops_pushed": result.pushed,
        "ops_per_s": round(result.pushed / result.load_s, 1) if result.load_s else 0.0,
        "relay_requests_per_s": round(requests / result.load_s, 1) if result.load_s else 0.0,
        "push_requests": len(result.push_ms), "pull_requests": len(result.pull_ms),
        "push_p50_ms": round(percentile(result.push_ms, 0.5), 1),
        "push_p99_ms": round(percentile(result.push_ms, 0.99), 1),
        "pull_p50_ms": round(percentile(result.pull_ms, 0.5), 1),
        "pull_p99_ms": round(percentile(result.pull_ms, 0.99), 1),
        **{f"relay_{k}_ms": v for k, v in server.items()},
        "rate_limited_429": result.rate_limited, "errors": result.errors[:20],
        "error_count": len(result.errors),
        "relay_rss_mib": round(rss / 1024, 1), "relay_peak_rss_mib": round(hwm / 1024, 1),
        "relay_rss_samples_max_mib": round(max(handle.samples, default=0) / 1024, 1),
        "violations": violations[:20], "violation_count": len(violations),
        "wall_s": round(wall_s, 1),
    }


def run(args: argparse.Namespace, work: Path, db_url: str) -> dict[str, Any]:
    """One load run against a fresh relay; returns the figures."""
    started = time.perf_counter()
    with relay_process(work, db_url) as handle:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(args.procs + 1)  # the workers and this process
        out = ctx.Queue()
        per = -(-args.accounts // args.procs)
        procs = [ctx.Process(target=_worker, args=(
            handle.url, str(work), i * per, min(args.accounts, (i + 1) * per), args.devices,
            args.rounds, max(1, args.concurrency // args.procs), barrier, out))
            for i in range(args.procs)]
        for p in procs:
            p.start()
        total = WorkerResult()
        done = threading.Event()

        def watch() -> None:  # a worker that dies must not leave us at the barrier
            while not done.wait(0.5):
                if any(p.exitcode not in (None, 0) for p in procs):
                    barrier.abort()
                    return

        threading.Thread(target=watch, daemon=True).start()
        try:
            try:
                barrier.wait(timeout=args.deadline)  # every device is set up
                before, t0 = scrape_latency(handle.url), time.perf_counter()
                barrier.wait(timeout=args.deadline)  # every device pushed every round
                load_s, after = time.perf_counter() - t0, scrape_latency(handle.url)
            except threading.BrokenBarrierError:
                codes = [p.exitcode for p in procs]
                detail = out.get(timeout=5)[1] if not out.empty() else f"exit codes {codes}"
                raise RuntimeError(f"a worker failed: {detail}") from None
            for _ in procs:
                kind, value = out.get(timeout=args.deadline)
                if kind != "ok":
                    raise RuntimeError(f"a worker failed: {value}")
                total.merge(value)
        finally:
            done.set()
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
        total.load_s = load_s  # the wall time between the two barriers
        if total.pushed != total.devices * args.rounds:
            total.errors.append(f"{total.pushed} ops acknowledged, "
                                f"{total.devices * args.rounds} made")
        ops = "/v1/spaces/{space_id}/ops"
        server: dict[str, float | None] = {
            f"{name}_{tag}": relay_quantile(before, after, method, ops, q)
            for name, method in (("push", "POST"), ("pull", "GET"))
            for tag, q in (("p50", 0.5), ("p99", 0.99))}
        violations = [str(v) for v in asyncio.run(check_relay(total.history, db_url))]
        return summary(total, handle, violations, time.perf_counter() - started, server,
                       relay_requests(before, after))


@contextlib.asynccontextmanager
async def _postgres_database(dsn: str) -> Any:
    admin = await asyncpg.connect(dsn)
    name = f"sddsf_load_{os.getpid()}"
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--devices", type=int, default=10, help="devices per account")
    ap.add_argument("--rounds", type=int, default=2, help="edit + sync rounds per device")
    ap.add_argument("--procs", type=int, default=2, help="load-generator processes")
    ap.add_argument("--concurrency", type=int, default=64,
                    help="syncs in flight at once, over all processes")
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--dsn", default=os.environ.get(
        "SDDSF_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--deadline", type=float, default=400.0,
                    help="seconds a worker may take before the run is abandoned")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.backend == "sqlite":
            report = run(args, work, f"sqlite:///{work / 'relay.db'}")
        else:
            async def with_pg() -> dict[str, Any]:
                async with _postgres_database(args.dsn) as url:
                    return await asyncio.to_thread(run, args, work, url)

            report = asyncio.run(with_pg())
    report = {"backend": args.backend, "accounts": args.accounts,
              "devices_per_account": args.devices, "rounds": args.rounds,
              "procs": args.procs, "concurrency": args.concurrency, **report}
    print(json.dumps(report, indent=2))
    if report["error_count"] or report["violation_count"]:
        raise SystemExit("errors or violations (see above)")


if __name__ == "__main__":
    main()
