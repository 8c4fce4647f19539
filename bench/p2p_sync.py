"""Peer-to-peer sync on a LAN made of network namespaces (protocol.md section 23),
against the relay, with real processes (results go to docs/performance.md).

Needs root (it builds a :class:`sddsf.testing.netns.NetLab`: namespaces on a
bridge, deleted at the end) and the ``p2p`` extra. The relay is a real ``sddsf
relay serve`` process (SQLite; rate limits lifted, the per-IP one included: a
runner without debounce makes up to 15 syncs a second of about 3.7 requests
each) in the root namespace, listening on the bridge's address. Each device
runs as a small driver process of this script (``--driver ROLE``) inside its
namespace, using the library (``Device.open``, ``Runner``, ``PeerSync``):
device A in namespace 0, B in 1, the new device of part 2 in 2. Every part
makes a fresh account (so no part sees another's ops), and peers find each
other by the address A prints (a bootstrap dial; mDNS off unless ``--mdns``).
Timestamps are ``time.monotonic()`` in the process that observes the event:
CLOCK_MONOTONIC is one clock for every process of the machine, whatever its
network namespace.

1. **Latency** (``--modes``): A makes ``--edits`` edits (one map key each),
   ``--gap-ms`` apart on a fixed schedule, and stamps each right after its
   transaction; B stamps each key when its map observer sees it (the document
   shows it). Modes: ``relay`` (both run the background ``Runner`` with its
   default 0.25 s debounce, as applications and ``sddsf sync --watch`` do),
   ``relay-d0`` (the same with no debounce: the transport's floor), ``p2p``
   (``PeerSync`` only) and ``hybrid`` (both, wired as ``sync --watch --mode
   hybrid`` does). Before timing, A makes warm-up edits until B has seen one
   (connections and the gossip mesh formed), then waits ``--settle-s``.
2. **A new device's first sync** (``--initial``): a fresh account with A and
   C; C syncs twice from the relay right after the account, the space and C
   exist (the log then holds only their set-up, so C holds the registry and
   the space's key packages); its home is then copied twice. A writes N small
   map edits (one key per op: ``k<i>`` = 7 characters) and syncs them to the
   relay. First copy: ``Device.sync()`` from the relay, timed. Then the relay
   is stopped; A runs ``PeerSync`` (serving) in namespace 0 and the second
   copy starts ``PeerSync`` in namespace 2 with A's address: timed from just
   before ``PeerSync.start()`` to the moment its document holds all N keys
   (checked in ``on_applied``, after every batch applied).
3. **Trace throughput** (``--trace-edits``): A types the first N edits of the
   automerge-paper trace (``bench/trace_sync.py``'s loader) into a text
   document, one transaction per edit, one ``flush()`` per ``--flush-every``
   edits followed by ``changed()`` of its transport (``PeerSync`` or
   ``Runner``), yielding to the event loop after each flush. B watches its
   text (``RemoteChange`` events) until it equals the trace's end; both
   print a hash of their final text and the script asserts they are equal.

Where the time goes: each driver reports the peer counters (``PeerSync.stats``),
the gossip messages py-libp2p dropped on the way out (its per-peer outbound
queue holds 32 RPCs; counted by wrapping its ``drop_rpc``), and the wall time of
a few library calls, wrapped on the instance (``timers``: catch-up round trips,
answering them, judging and applying ops, publishing), plus the span of every
relay sync. ``--json`` prints all of it; ``--keep DIR`` keeps homes, logs and
every event; ``--py-spy PATH`` records each driver with py-spy.

Usage (as root):
    python bench/p2p_sync.py [--parts latency,initial,trace] [--edits 200]
        [--gap-ms 50] [--modes relay,relay-d0,p2p,hybrid] [--initial 1000,10000]
        [--trace-edits 20000 (0: all)] [--trace-modes p2p,relay] [--flush-every 100]
        [--mdns] [--json] [--keep DIR] [--py-spy PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]

import httpx
import pycrdt
from trace_sync import TRACE, apply_edit, load

from sddsf.client.device import Device
from sddsf.client.runner import Runner, RunnerSettings

SPACE = "bench"
MODES = ("relay", "relay-d0", "p2p", "hybrid")
WAIT_S = 120.0  # the most any one step of a part may take before the run fails


# ===================================================================== drivers
# Each driver is one device in one namespace. It reads commands ("warm", "go",
# "stop"), one per line, from a FIFO the orchestrator made (its stdin), and
# writes events as JSON lines on stdout.


class Control:
    """The orchestrator's commands, read from stdin (the FIFO) by a thread."""

    def __init__(self) -> None:
        self.got: set[str] = set()
        self.event = asyncio.Event()
        loop = asyncio.get_running_loop()

        def read() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(self._take, line.strip())
            loop.call_soon_threadsafe(self._take, "stop")  # stdin closed: stop

        threading.Thread(target=read, daemon=True).start()

    def _take(self, word: str) -> None:
        self.got.add(word)
        self.event.set()

    async def wait(self, word: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while word not in self.got:
            self.event.clear()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), left)
        return True


_EMIT = threading.Lock()


def emit(kind: str, **fields: Any) -> None:
    line = json.dumps({"event": kind, **fields}) + "\n"
    with _EMIT:  # one whole line at a time (a thread reports counters too)
        sys.stdout.write(line)
        sys.stdout.flush()


class Transports:
    """A device's relay runner and/or peer-to-peer sync, as a mode asks."""

    def __init__(self, device: Device, cfg: dict[str, Any],
                 on_applied: Callable[[Any], None] | None = None) -> None:
        mode = cfg["mode"]
        self.device = device
        self.runner: Runner | None = None
        self.peer: Any = None
        if mode in ("relay", "relay-d0", "hybrid"):
            debounce = 0.0 if mode == "relay-d0" else RunnerSettings().debounce_s
            self.runner = Runner(device, RunnerSettings(debounce_s=debounce))
            TIMERS.wrap(device, "sync", "relay_sync", TIMERS.syncs)
        if mode in ("p2p", "hybrid", "serve"):
            from sddsf.p2p.sync import PeerSync, PeerSyncSettings  # noqa: PLC0415 - optional

            runner = self.runner

            def applied(report: Any) -> None:
                if runner is not None:  # hybrid: carry to the log (as sync --watch does)
                    runner.changed()
                if on_applied is not None:
                    on_applied(report)

            settings = PeerSyncSettings(listen=(f"/ip4/{cfg['ip']}/tcp/0",),
                                        mdns=cfg.get("mdns", False),
                                        bootstrap=tuple(cfg.get("bootstrap", ())),
                                        presence=mode == "hybrid")
            self.peer = PeerSync(device, settings, on_applied=applied)
            TIMERS.peer(self)

    async def start(self) -> None:
        if self.peer is not None:
            _count_gossip_drops()
            await self.peer.start()
        if self.runner is not None:
            await self.runner.start()
            self.runner.changed()

    def changed(self) -> None:
        if self.peer is not None:
            self.peer.changed()
        if self.runner is not None:
            self.runner.changed()

    def stats(self) -> dict[str, Any]:
        """The peer-to-peer counters and the relay syncs' spans."""
        syncs = {"relay_syncs": list(TIMERS.syncs), "timers": TIMERS.report()}
        if self.peer is None:
            return syncs
        st = self.peer.stats
        return {"published": st.published, "messages": st.messages,
                "applied": st.applied, "known": st.known,
                "catch_ups": st.catch_ups, "refused": len(st.refused),
                "gossip_dropped": GOSSIP_DROPPED[0], **syncs}

    def ready(self) -> bool:
        """Connected: to a peer (p2p), subscribed to the live channel (relay)."""
        if self.peer is not None and not any(p.connected for p in self.peer.peers()):
            return False
        return self.runner is None or self.runner.connected

    async def stop(self) -> None:
        if self.peer is not None:
            await self.peer.stop()
        if self.runner is not None:
            await self.runner.stop()
        await self.device.close()


#: Publish RPCs py-libp2p dropped in this process (its per-peer outbound queue
#: holds 32 RPCs and drops the rest, logging only at debug level).
GOSSIP_DROPPED = [0]


def _count_gossip_drops() -> None:
    """Count the pubsub publishes libp2p drops on the way out (by wrapping its
    ``drop_rpc``, which logs and meters each drop; the drop itself is unchanged)."""
    from libp2p.pubsub import gossipsub, pubsub, rpc_queue  # noqa: PLC0415 - the p2p extra

    original = rpc_queue.drop_rpc

    def counted(peer_id: Any, rpc: Any) -> None:
        GOSSIP_DROPPED[0] += len(rpc.publish)
        original(peer_id, rpc)

    for module in (pubsub, gossipsub):  # each imported the function by name
        if getattr(module, "drop_rpc", None) is original:
            setattr(module, "drop_rpc", counted)  # noqa: B010 - a name mypy cannot see


class Timers:
    """Wall time spent in a few library calls of this process (wrapped on the
    instance; the calls themselves are unchanged): where a peer's time goes."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}  # name -> [calls, seconds]
        #: (start, end) of every relay sync the runner made (``Device.sync``).
        self.syncs: list[tuple[float, float]] = []

    def wrap(self, obj: Any, method: str, name: str,
             spans: list[tuple[float, float]] | None = None) -> None:
        inner = getattr(obj, method)
        total = self.totals.setdefault(name, [0, 0.0])
        if asyncio.iscoroutinefunction(inner):
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                t0 = time.monotonic()
                try:
                    return await inner(*args, **kwargs)
                finally:
                    total[0] += 1
                    total[1] += time.monotonic() - t0
                    if spans is not None:
                        spans.append((t0, time.monotonic()))
            setattr(obj, method, timed_async)
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            try:
                return inner(*args, **kwargs)
            finally:
                total[0] += 1
                total[1] += time.monotonic() - t0
        setattr(obj, method, timed)

    def peer(self, link: Transports) -> None:
        """Time the peer side: requests sent (round trips), requests answered,
        ops judged and applied, own ops published."""
        if link.peer is None:
            return
        self.wrap(link.peer.node, "request", "request_round_trip")
        self.wrap(link.peer.mesh, "respond", "respond")
        self.wrap(link.peer.mesh, "accept", "accept_ops")
        self.wrap(link.peer, "publish_pending", "publish_pending")
        self.wrap(link.peer.node, "publish_many", "gossip_publish")

    def report(self) -> dict[str, dict[str, float]]:
        return {k: {"calls": v[0], "seconds": round(v[1], 4)} for k, v in self.totals.items()}


TIMERS = Timers()


def report_stats(link: Transports, every_s: float = 0.5) -> None:
    """Emit the counters from a thread every ``every_s`` seconds: a thread gets
    its turn even while the event loop is kept busy (the last report is the one
    the orchestrator keeps)."""

    def loop() -> None:
        while True:
            emit("stats", **link.stats())
            time.sleep(every_s)

    threading.Thread(target=loop, daemon=True).start()


def open_device(cfg: dict[str, Any]) -> tuple[Device, bytes]:
    device = Device.open(Path(cfg["home"]), passphrase=None)
    return device, device.space_by_name(SPACE)


async def until(check: Callable[[], bool], timeout: float, every: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("gave up waiting")
        await asyncio.sleep(every)


async def warm_up(ctl: Control, doc: Any, link: Transports) -> None:
    """Edit a warm-up key every 0.2 s until the orchestrator says "go"."""
    await ctl.wait("warm")
    warm = doc.get("w", type=pycrdt.Map)
    j = 0
    while not await ctl.wait("go", timeout=0.2):
        with doc.transaction():
            warm[str(j)] = j
        link.changed()
        j += 1


async def latency_writer(cfg: dict[str, Any]) -> None:
    ctl = Control()
    device, space = open_device(cfg)
    doc = device.doc(space, "lat")
    link = Transports(device, cfg)
    await link.start()
    emit("ready", addrs=link.peer.addrs if link.peer else [])
    report_stats(link)
    await warm_up(ctl, doc, link)
    await asyncio.sleep(cfg["settle_s"])
    edits = doc.get("m", type=pycrdt.Map)
    stamps: list[float] = []
    t0 = time.monotonic()
    for i in range(cfg["edits"]):
        await asyncio.sleep(max(0.0, t0 + i * cfg["gap_s"] - time.monotonic()))
        with doc.transaction():
            edits[f"e{i}"] = i
        stamps.append(time.monotonic())  # the edit is made: the transaction committed
        link.changed()
    emit("edits", stamps=stamps)
    await ctl.wait("stop")
    await link.stop()


async def latency_reader(cfg: dict[str, Any]) -> None:
    ctl = Control()
    device, space = open_device(cfg)
    doc = device.doc(space, "lat")
    seen: dict[int, float] = {}
    warmed = False

    def observed(event: Any) -> None:
        at = time.monotonic()
        for key in event.keys:
            if key.startswith("e"):
                seen.setdefault(int(key[1:]), at)

    def warm_seen(event: Any) -> None:
        nonlocal warmed
        if not warmed:
            warmed = True
            emit("warm")

    # pycrdt drops an observer with its subscription object: keep both.
    subs = [doc.get("m", type=pycrdt.Map).observe(observed),
            doc.get("w", type=pycrdt.Map).observe(warm_seen)]
    link = Transports(device, cfg)
    await link.start()
    await until(link.ready, WAIT_S, every=0.05)
    emit("ready")
    await until(lambda: len(seen) >= cfg["edits"] or "stop" in ctl.got, WAIT_S * 2)
    emit("seen", stamps={str(k): v for k, v in seen.items()}, **link.stats())
    await ctl.wait("stop")
    await link.stop()
    del subs


async def serve(cfg: dict[str, Any]) -> None:
    ctl = Control()
    device, _ = open_device(cfg)
    link = Transports(device, {**cfg, "mode": "serve"})
    await link.start()
    emit("ready", addrs=link.peer.addrs)
    await ctl.wait("stop")
    emit("stats", **link.stats())
    await link.stop()


def _kv(device: Device, space: bytes) -> Any:
    return device.doc(space, "kv").get("m", type=pycrdt.Map)


async def first_sync_relay(cfg: dict[str, Any]) -> None:
    device, space = open_device(cfg)
    kv = _kv(device, space)
    t0 = time.monotonic()
    syncs = applied = 0
    while len(kv) < cfg["n"] and syncs < 10:
        report = await device.sync()
        syncs += 1
        applied += report.applied
    elapsed = time.monotonic() - t0
    emit("result", seconds=elapsed, syncs=syncs, applied=applied, keys=len(kv),
         snapshots_loaded=report.snapshots_loaded)
    await device.close()


async def first_sync_p2p(cfg: dict[str, Any]) -> None:
    t_import = time.monotonic()
    import sddsf.p2p.sync  # noqa: F401, PLC0415 - loaded before the clock starts
    imported = time.monotonic() - t_import
    device, space = open_device(cfg)
    kv = _kv(device, space)
    n = cfg["n"]
    marks: dict[str, float] = {}
    done = asyncio.Event()

    def applied(report: Any) -> None:
        marks.setdefault("first_applied", time.monotonic())
        if len(kv) >= n:
            marks.setdefault("all", time.monotonic())
            done.set()

    t0 = time.monotonic()
    link = Transports(device, {**cfg, "mode": "p2p"}, on_applied=applied)
    await link.start()  # listens, subscribes, dials A (bootstrap)
    marks["started"] = time.monotonic()
    try:
        await asyncio.wait_for(done.wait(), WAIT_S)
    except TimeoutError:
        marks["all"] = float("nan")
    stats = link.peer.stats
    emit("result", seconds=marks["all"] - t0, start_s=marks["started"] - t0, import_s=imported,
         first_applied_s=marks.get("first_applied", float("nan")) - t0,
         applied=stats.applied, known=stats.known, catch_ups=stats.catch_ups,
         refused=len(stats.refused), keys=len(kv), timers=TIMERS.report())
    await link.stop()


async def trace_writer(cfg: dict[str, Any]) -> None:
    ctl = Control()
    trace = load(Path(cfg["trace"]), cfg["trace_edits"])
    device, space = open_device(cfg)
    doc = device.doc(space, "text")
    text = doc.get("t", type=pycrdt.Text)
    link = Transports(device, cfg)
    await link.start()
    emit("ready", addrs=link.peer.addrs if link.peer else [])
    report_stats(link)
    await warm_up(ctl, device.doc(space, "warm"), link)
    await asyncio.sleep(cfg["settle_s"])
    every = cfg["flush_every"]
    ops = 0
    t0 = time.monotonic()
    for i, edit in enumerate(trace.edits, 1):
        with doc.transaction():
            apply_edit(text, edit)
        if i % every == 0:
            ops += device.flush()
            link.changed()
            await asyncio.sleep(0)  # the transport's tasks run between batches
    ops += device.flush()
    link.changed()
    typed = time.monotonic()
    final = str(text)
    emit("typed", start=t0, typed=typed, ops=ops, edits=len(trace.edits), sha=_sha(final),
         matches=final == trace.end)
    await ctl.wait("stop")
    await link.stop()


async def trace_reader(cfg: dict[str, Any]) -> None:
    ctl = Control()
    trace = load(Path(cfg["trace"]), cfg["trace_edits"])
    end, end_len = trace.end, len(trace.end.encode())
    device, space = open_device(cfg)
    text = device.doc(space, "text").get("t", type=pycrdt.Text)
    converged = asyncio.Event()
    warmed = False
    received = 0
    arrivals: list[float] = []

    def changed(event: Any) -> None:
        nonlocal warmed, received
        if getattr(event, "doc", None) == "warm" and not warmed:
            warmed = True
            emit("warm")
        elif getattr(event, "doc", None) == "text":
            received += 1
            arrivals.append(time.monotonic())
            # len() is the UTF-8 length, cheap; the text is built only when it matches.
            if len(text) == end_len and str(text) == end:
                converged.set()

    device.events.on_change(changed)
    link = Transports(device, cfg)
    await link.start()
    await until(link.ready, WAIT_S, every=0.05)
    emit("ready")
    await ctl.wait("warm")
    try:
        await asyncio.wait_for(converged.wait(), WAIT_S * 3)
        at = time.monotonic()
    except TimeoutError:
        at = float("nan")
    final = str(text)
    emit("converged", at=at, sha=_sha(final), matches=final == end, changes=received,
         arrivals=arrivals, **link.stats())
    await ctl.wait("stop")
    await link.stop()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


ROLES = {"latency_writer": latency_writer, "latency_reader": latency_reader,
         "serve": serve, "first_sync_relay": first_sync_relay,
         "first_sync_p2p": first_sync_p2p, "trace_writer": trace_writer,
         "trace_reader": trace_reader}


# ================================================================ orchestrator


class Driver:
    """One driver process in one namespace; its JSON events, read by a thread."""

    def __init__(self, lab: Any, i: int, role: str, cfg: dict[str, Any], log: Path,
                 py_spy: str | None = None) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.name = f"{role}@ns{i}"
        self.log = log
        with log.open("ab") as err:
            self.proc = lab.spawn(i, [sys.executable, __file__, "--driver", role,
                                      "--config", json.dumps(cfg)],
                                  env=env, stdout=subprocess.PIPE, stderr=err)
            self.profiler: subprocess.Popen[bytes] | None = None
            if py_spy is not None:  # ends when the driver does
                self.profiler = subprocess.Popen(
                    [py_spy, "record", "--pid", str(self.proc.pid), "--rate", "200",
                     "--format", "raw", "--nonblocking", "--output",
                     str(log.with_suffix(".stacks"))],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        # spawn gives stdin /dev/null; commands go through a pipe we open instead.
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.latest: dict[str, dict[str, Any]] = {}  # the last event of each kind
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log.with_suffix(".events").open("ab") as copy:
            for line in iter(self.proc.stdout.readline, b""):
                copy.write(line)  # every event, kept with the driver's log
                copy.flush()
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    self.latest[event.get("event")] = event
                    self.events.put(event)

    def expect(self, kind: str, timeout: float = WAIT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and self.events.empty()):
                raise RuntimeError(f"{self.name}: no '{kind}' event "
                                   f"(exit {self.proc.poll()}); its log:\n{self.tail()}")
            with contextlib.suppress(queue.Empty):
                event = self.events.get(timeout=min(left, 0.5))
                if event.get("event") == kind:
                    return event

    def final(self, kind: str) -> dict[str, Any]:
        """The last ``kind`` event of a driver that has exited ({} if none)."""
        self._reader.join(timeout=10)
        return {k: v for k, v in self.latest.get(kind, {}).items() if k != "event"}

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def send(fifo: Path, word: str) -> None:
    # Opening a FIFO for writing blocks until the driver has it open for reading;
    # O_NONBLOCK fails at once instead if it is not open yet, so retry briefly.
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    try:
        os.write(fd, (word + "\n").encode())
    finally:
        os.close(fd)


def stop(drivers: list[Driver], fifos: list[Path]) -> None:
    for fifo in fifos:
        with contextlib.suppress(OSError):
            send(fifo, "stop")
    for d in drivers:
        for proc in (d.proc, d.profiler):
            if proc is None:
                continue
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()  # this driver (or its profiler), by its pid
                proc.wait(timeout=10)


class Relay:
    """``sddsf relay serve`` in the root namespace, on the lab's bridge address."""

    def __init__(self, work: Path, host: str, log_level: str = "warning") -> None:
        self.work, self.host, self.log_level = work, host, log_level
        with socket.socket() as s:
            s.bind((host, 0))
            self.port = int(s.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"),
                   SDDSF_RELAY_KEY_FILE=str(self.work / "relay.key"),
                   SDDSF_RELAY_RATE_OPS_PER_S="1e9", SDDSF_RELAY_RATE_OPS_BURST="1e9",
                   SDDSF_RELAY_RATE_DEVICE_PER_S="1e6", SDDSF_RELAY_RATE_DEVICE_BURST="1e6",
                   SDDSF_RELAY_RATE_ACCOUNT_PER_S="1e6", SDDSF_RELAY_RATE_ACCOUNT_BURST="1e6",
                   SDDSF_RELAY_RATE_IP_PER_S="1e6", SDDSF_RELAY_RATE_IP_BURST="1e6",
                   SDDSF_RELAY_MAX_REQUEST_BYTES=str(64 << 20))
        with (self.work / "relay.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sddsf", "relay", "serve", "--db",
                 f"sqlite:///{self.work / 'relay.db'}", "--host", self.host,
                 "--port", str(self.port), "--log-level", self.log_level],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("the relay did not start; see relay.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # by its pid
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


async def _account(url: str, root: Path, names: tuple[str, ...]) -> list[Path]:
    """A fresh account with a space, each device synced twice (registry, keys)."""
    first, _ = await Device.create_account(root / names[0], url, names[0], passphrase=None,
                                           insecure_plaintext=True)
    await first.create_space(SPACE)
    devices = [first]
    for name in names[1:]:
        devices.append(await Device.add_local(first, root / name, name, passphrase=None,
                                              insecure_plaintext=True))
    for dev in devices + devices:
        await dev.sync()
    for dev in devices:
        await dev.close()
    return [root / n for n in names]


def account(url: str, root: Path, *names: str) -> list[Path]:
    return asyncio.run(_account(url, root, names))


async def _write_kv(home: Path, n: int) -> int:
    """Device A writes N map edits, one op each, and syncs them to the relay."""
    device = Device.open(home, passphrase=None)
    space = device.space_by_name(SPACE)
    doc = device.doc(space, "kv")
    kv = doc.get("m", type=pycrdt.Map)
    for i in range(n):
        with doc.transaction():
            kv[f"k{i}"] = f"v{i:06d}"
        device.flush()
    pushed = 0
    for _ in range(2):  # the second pulls what the first pushed (and its snapshot)
        pushed += (await device.sync()).pushed
    await device.close()
    return pushed


def quantiles(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return {"n": len(samples), "p50_ms": statistics.median(samples) * 1e3,
            "p90_ms": qs[89] * 1e3, "p99_ms": qs[98] * 1e3, "max_ms": max(samples) * 1e3,
            "min_ms": min(samples) * 1e3}


class Bench:
    """One run: the lab, the relay, and the parts."""

    def __init__(self, args: argparse.Namespace, lab: Any, work: Path) -> None:
        self.args, self.lab, self.work = args, lab, work
        self.relay = Relay(work, lab.host_ip, args.relay_log)
        self.parts = 0

    def fresh(self, name: str) -> Path:
        self.parts += 1
        root = self.work / f"{self.parts:02d}-{name}"
        root.mkdir()
        return root

    def base_cfg(self, i: int) -> dict[str, Any]:
        return {"ip": self.lab.ip(i), "mdns": self.args.mdns, "settle_s": self.args.settle_s}

    def spawn(self, i: int, role: str, cfg: dict[str, Any], root: Path
              ) -> tuple[Driver, Path]:
        fifo = root / f"ctl-{role}-{i}"
        os.mkfifo(fifo)
        driver = Driver(self.lab, i, role, {**self.base_cfg(i), **cfg, "ctl": str(fifo)},
                        root / f"{role}-{i}.log", self.args.py_spy)
        return driver, fifo

    # ---------------------------------------------------------------- part 1
    def latency(self, mode: str) -> dict[str, Any]:
        root = self.fresh(f"latency-{mode}")
        a_home, b_home = account(self.relay.url, root, "a", "b")
        cfg = {"mode": mode, "edits": self.args.edits, "gap_s": self.args.gap_ms / 1e3}
        a, fa = self.spawn(0, "latency_writer", {**cfg, "home": str(a_home)}, root)
        drivers, fifos = [a], [fa]
        try:
            addrs = a.expect("ready")["addrs"]
            b, fb = self.spawn(1, "latency_reader", {**cfg, "home": str(b_home),
                                                     "bootstrap": addrs}, root)
            drivers.append(b)
            fifos.append(fb)
            b.expect("ready")
            send(fa, "warm")
            b.expect("warm")
            send(fa, "go")
            sent = a.expect("edits", WAIT_S + cfg["edits"] * cfg["gap_s"])["stamps"]
            seen = b.expect("seen", WAIT_S)["stamps"]
        finally:
            stop(drivers, fifos)
        missing = [i for i in range(len(sent)) if str(i) not in seen]
        lat = [seen[str(i)] - t for i, t in enumerate(sent) if str(i) in seen]
        return {"mode": mode, "edits": len(sent), "missing": len(missing),
                "gap_ms": self.args.gap_ms, **quantiles(lat), "a_peer_stats": a.final("stats")}

    # ---------------------------------------------------------------- part 2
    def initial_setup(self, n: int) -> dict[str, Any]:
        root = self.fresh(f"initial-{n}")
        a_home, c_home = account(self.relay.url, root, "a", "c")
        shutil.copytree(c_home, root / "c-relay")
        shutil.copytree(c_home, root / "c-p2p")
        t0 = time.monotonic()
        pushed = asyncio.run(_write_kv(a_home, n))
        written = time.monotonic() - t0
        driver, fifo = self.spawn(2, "first_sync_relay",
                                  {"home": str(root / "c-relay"), "n": n}, root)
        try:
            result = driver.expect("result")
        finally:
            stop([driver], [fifo])
        assert result["keys"] == n, result
        result.pop("event")
        return {"n": n, "root": root, "a_home": a_home, "pushed": pushed,
                "write_and_push_s": written, "relay": result}

    def initial_p2p(self, setup: dict[str, Any]) -> dict[str, Any]:
        root, n = setup["root"], setup["n"]
        a, fa = self.spawn(0, "serve", {"home": str(setup["a_home"])}, root)
        drivers, fifos = [a], [fa]
        try:
            addrs = a.expect("ready")["addrs"]
            c, fc = self.spawn(2, "first_sync_p2p", {"home": str(root / "c-p2p"), "n": n,
                                                     "bootstrap": addrs}, root)
            drivers.append(c)
            fifos.append(fc)
            result = c.expect("result", WAIT_S + 30)
        finally:
            stop(drivers, fifos)
        assert result["keys"] == n, result
        result.pop("event")
        return {**result, "server_timers": a.final("stats").get("timers", {})}

    # ---------------------------------------------------------------- part 3
    def trace(self, mode: str) -> dict[str, Any]:
        root = self.fresh(f"trace-{mode}")
        a_home, b_home = account(self.relay.url, root, "a", "b")
        cfg = {"mode": mode, "trace": str(self.args.trace), "trace_edits": self.args.trace_edits,
               "flush_every": self.args.flush_every}
        a, fa = self.spawn(0, "trace_writer", {**cfg, "home": str(a_home)}, root)
        drivers, fifos = [a], [fa]
        try:
            addrs = a.expect("ready")["addrs"]
            b, fb = self.spawn(1, "trace_reader", {**cfg, "home": str(b_home),
                                                   "bootstrap": addrs}, root)
            drivers.append(b)
            fifos.append(fb)
            b.expect("ready")
            send(fa, "warm")
            send(fb, "warm")
            b.expect("warm")
            send(fa, "go")
            typed = a.expect("typed", WAIT_S * 3)
            converged = b.expect("converged", WAIT_S * 3)
        finally:
            stop(drivers, fifos)
        assert typed["matches"], "A's text is not the trace's end"
        assert converged["matches"], "B did not converge on the trace's end"
        assert converged["sha"] == typed["sha"], "B's final text differs from A's"
        edits = typed["edits"]
        total = converged["at"] - typed["start"]
        return {"mode": mode, "edits": edits, "ops": typed["ops"],
                "flush_every": self.args.flush_every,
                "typing_s": typed["typed"] - typed["start"],
                "converged_after_last_edit_s": converged["at"] - typed["typed"],
                "first_edit_to_converged_s": total, "edits_per_s": edits / total,
                "b_changes": converged["changes"], "texts_equal": True,
                "b_peer_stats": {k: converged[k] for k in
                                 ("applied", "known", "catch_ups", "refused") if k in converged},
                "a_peer_stats": a.final("stats"),
                "b_arrivals_s": [round(t - typed["start"], 4) for t in converged["arrivals"]]}

    def run(self) -> dict[str, Any]:
        parts = self.args.parts
        report: dict[str, Any] = {}
        self.relay.start()
        try:
            if "latency" in parts:
                report["latency"] = [self.latency(m) for m in self.args.modes]
                _say_latency(report["latency"])
            if "trace" in parts:
                report["trace"] = [self.trace(m) for m in self.args.trace_modes]
                _say_trace(report["trace"])
            if "initial" in parts:
                setups = [self.initial_setup(n) for n in self.args.initial]
                self.relay.stop()  # from here on, peers only
                report["initial"] = []
                for s in setups:
                    p2p = self.initial_p2p(s)
                    report["initial"].append({
                        "n": s["n"], "pushed": s["pushed"], "relay": s["relay"], "p2p": p2p})
                _say_initial(report["initial"])
        finally:
            self.relay.stop()
        return report


def _say_latency(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        dropped = r["a_peer_stats"].get("gossip_dropped")
        print(f"latency {r['mode']:9s} n={r['n']} (missing {r['missing']}): "
              f"p50 {r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
              f"max {r['max_ms']:.1f} ms"
              + ("" if dropped is None else f"; gossip dropped by A: {dropped}"), flush=True)


def _say_trace(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(f"trace {r['mode']:5s} {r['edits']} edits, {r['ops']} ops: typing "
              f"{r['typing_s']:.2f} s, converged {r['converged_after_last_edit_s']:.2f} s "
              f"after the last edit, {r['first_edit_to_converged_s']:.2f} s in all = "
              f"{r['edits_per_s']:.0f} edits/s; texts equal"
              + (f"; A's gossip messages: {r['a_peer_stats']['messages']}, dropped by A: "
                 f"{r['a_peer_stats']['gossip_dropped']}, B's catch-ups: "
                 f"{r['b_peer_stats']['catch_ups']}" if "gossip_dropped" in r["a_peer_stats"]
                 else ""), flush=True)


def _say_initial(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        rel, p2p = r["relay"], r["p2p"]
        print(f"initial sync of {r['n']} ops: relay {rel['seconds']:.2f} s "
              f"({rel['syncs']} sync(s)); p2p {p2p['seconds']:.2f} s (start "
              f"{p2p['start_s']:.2f} s, first op applied at {p2p['first_applied_s']:.2f} s, "
              f"{p2p['catch_ups']} catch-up(s), {p2p['applied']} applied)", flush=True)


def _driver_main(role: str, config: str) -> None:
    cfg = json.loads(config)
    # Commands arrive on the FIFO the orchestrator made (stdin is /dev/null).
    # Opened for reading and writing: it never reads end-of-file, even before
    # the orchestrator first opens it (commands end with "stop").
    sys.stdin = os.fdopen(os.open(cfg["ctl"], os.O_RDWR), "r")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    logging.basicConfig(level=os.environ.get("P2P_BENCH_LOG", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(ROLES[role](cfg))


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="p2p-sync-") as tmp:
        yield Path(tmp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="latency,initial,trace",
                    type=lambda s: s.split(","), help="which parts to run")
    ap.add_argument("--edits", type=int, default=200, help="timed edits per latency mode")
    ap.add_argument("--gap-ms", type=float, default=50.0, help="between latency edits")
    ap.add_argument("--modes", default=",".join(MODES), type=lambda s: s.split(","),
                    help="latency modes, of " + ", ".join(MODES))
    ap.add_argument("--settle-s", type=float, default=1.0,
                    help="pause after the warm-up before timing")
    ap.add_argument("--initial", default="1000,10000",
                    type=lambda s: [int(x) for x in s.split(",")],
                    help="ops a new device fetches (part 2)")
    ap.add_argument("--trace", type=Path, default=TRACE,
                    help="an editing trace (default: the automerge-paper trace)")
    ap.add_argument("--trace-edits", type=int, default=20_000,
                    help="replay the first N edits of the trace (0: all)")
    ap.add_argument("--trace-modes", default="p2p,relay", type=lambda s: s.split(","),
                    help="transports for the trace (p2p, relay, relay-d0, hybrid)")
    ap.add_argument("--flush-every", type=int, default=100, help="edits per flush (one op)")
    ap.add_argument("--mdns", action="store_true", help="also discover peers by mDNS")
    ap.add_argument("--json", action="store_true", help="print the whole report as JSON")
    ap.add_argument("--keep", type=Path, default=None,
                    help="work in this new directory and keep it (homes, logs)")
    ap.add_argument("--relay-log", default="warning", choices=["info", "warning"],
                    help="the relay's log level (info: one line per request, in relay.log)")
    ap.add_argument("--py-spy", metavar="PATH", default=None,
                    help="profile every driver with this py-spy binary (ROLE-NS.stacks "
                         "files, collapsed stacks, in the work directory: use --keep)")
    ap.add_argument("--driver", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.driver:
        _driver_main(args.driver, args.config)
        return
    for mode in args.modes:
        if mode not in MODES:
            ap.error(f"unknown mode {mode!r}")
    args.trace_edits = args.trace_edits or None
    from sddsf.testing.netns import NetLab, netns_available  # noqa: PLC0415

    why = netns_available()
    if why is not None:
        raise SystemExit(f"network namespaces are not available: {why}")
    started = time.monotonic()
    with _workdir(args.keep) as work, NetLab(3, "p2pb") as lab:
        report = Bench(args, lab, work).run()
    report["wall_s"] = time.monotonic() - started
    report["load_avg"] = os.getloadavg()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    print(f"whole run: {report['wall_s']:.0f} s, load average {report['load_avg'][0]:.2f}")


if __name__ == "__main__":
    main()
