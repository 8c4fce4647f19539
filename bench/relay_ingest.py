"""Relay ingest and fan-out benchmark (results go to docs/performance.md).

Starts a real relay process (`sddsf relay serve`) on loopback, then:

1. measures the raw PyNaCl Ed25519 verify rate in this run (one thread, 200-byte
   messages) - the ceiling one relay process can approach;
2. uploads pre-signed ops through the HTTP batch endpoint and reports accepted
   ops/s, with and without per-op inclusion proofs, and the ratio to (1);
3. subscribes N WebSocket clients to the space, spread over ``--receivers``
   processes, and reports p50/p99 latency from the start of an upload to each
   subscriber's receipt (frame parsed, JSON decoded) of the op, with the relay's
   CPU per push with and without the subscribers, and the receivers' CPU.

Steps 1 and 2 run ``--repeat`` times (default 3, each on a new account of the
same relay), 24,000 ops per ingest run by default; the report gives each
ratio's median and spread (min, max) over the repeats, since on a shared
machine one run says little.

Usage (with PostgreSQL, a scratch database is created on that server and dropped):
    python bench/relay_ingest.py [--db postgresql://postgres@127.0.0.1/test]
        [--ops 24000] [--repeat 3] [--batch 500] [--subscribers 100] [--pushes 50]
        [--receivers 2] [--fanout-only] [--workers N --redis redis://127.0.0.1:6379/15]
        [--what-if-unverified]
    (--workers: relay worker processes sharing edge state through Redis; CPU is
    summed over them. --what-if-unverified: a measurement only, the relay
    process with its signature check replaced by a no-op, to show what the
    rest of its work allows; the ratios are still to the real verify rate)

Bounded in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "relay"))
sys.path.insert(0, str(ROOT / "src"))

from relaykit import World

from sddsf.client.relay_client import RelayClient
from sddsf.crypto import Ed25519SigningKey
from sddsf.protocol import auth
from sddsf.protocol.identity import DeviceKeys

RELAY_SEED = "11" * 32


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def own_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, without its children (Linux /proc)."""
    return own_cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def thread_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each thread of a process and its
    descendants, by thread id (Linux /proc): the busiest one shows whether
    one thread (the event loop, holding the interpreter lock) is the limit."""
    out: dict[int, float] = {}
    for proc in process_tree_seconds(pid):
        for task in Path(f"/proc/{proc}/task").glob("[0-9]*"):
            try:
                out[int(task.name)] = own_cpu_seconds_of(task / "stat")
            except OSError:  # the thread ended meanwhile
                continue
    return out


def own_cpu_seconds_of(stat: Path) -> float:
    """User + system CPU seconds from one /proc ``stat`` file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_seconds(pid: int) -> dict[int, float]:
    """Own CPU seconds of a process and of each of its descendants, by pid."""
    children = " ".join(p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/children"))
    out = {pid: own_cpu_seconds(pid)}
    for child in children.split():
        out.update(process_tree_seconds(int(child)))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live child processes (the
    workers of ``--workers N``; Linux /proc), to tell CPU- from GIL-bound."""
    return sum(process_tree_seconds(pid).values())


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (Linux
    /proc/stat: all but idle and iowait): the relay, its database, Redis, the
    client, the kernel and anything else running."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def database_server_seconds() -> float:
    """CPU seconds of this machine's PostgreSQL server processes (0 with none)."""
    total = 0.0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() == "postgres":
                total += own_cpu_seconds(int(proc.name))  # each process once
        except (FileNotFoundError, ProcessLookupError):
            continue  # a backend that ended meanwhile
    return total


def verify_rate(seconds: float = 2.0) -> float:
    key = Ed25519SigningKey.from_seed(bytes(32))
    msg = bytes(200)
    sig = key.sign(msg)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(500):
            key.public.verify(msg, sig)
        n += 500
    return n / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: ``--what-if-unverified``: the relay process with its Ed25519 check replaced by
#: a no-op (a measurement only: how fast the rest of the relay's work alone
#: goes). It patches this one process, so it needs ``--workers 1``.
_UNVERIFIED = ("import runpy, sys; import sddsf.crypto as c; "
               "c.Ed25519PublicKey.verify = lambda self, message, signature: None; "
               "sys.argv[0] = 'sddsf'; runpy.run_module('sddsf', run_name='__main__')")


def start_relay(db: str, port: int, workdir: Path, workers: int = 1,
                redis: str = "", unverified: bool = False) -> subprocess.Popen[bytes]:
    env = dict(os.environ, SDDSF_RELAY_KEY_HEX=RELAY_SEED, SDDSF_RELAY_RATE_OPS_PER_S="1e9",
               SDDSF_RELAY_RATE_OPS_BURST="1e9", SDDSF_RELAY_RATE_DEVICE_PER_S="1e6",
               SDDSF_RELAY_RATE_DEVICE_BURST="1e6", SDDSF_RELAY_RATE_ACCOUNT_PER_S="1e6",
               SDDSF_RELAY_RATE_ACCOUNT_BURST="1e6", SDDSF_RELAY_RATE_IP_PER_S="1e6",
               SDDSF_RELAY_RATE_IP_BURST="1e6", SDDSF_RELAY_MAX_REQUEST_BYTES=str(64 << 20),
               SDDSF_RELAY_KEY_FILE=str(workdir / "relay.key"),
               SDDSF_RELAY_WS_QUEUE_MAX="100000",
               # The subscribers and the uploader share one process's connection cap.
               SDDSF_RELAY_MAX_CONNECTIONS="100000",
               # Several workers share edge state and the cluster bus through Redis.
               SDDSF_RELAY_REDIS_URL=redis)
    launch = ["-c", _UNVERIFIED] if unverified else ["-m", "sddsf"]
    proc = subprocess.Popen([sys.executable, *launch, "relay", "serve", "--db", db,
                             "--port", str(port), "--workers", str(workers)], env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("relay did not become ready")


async def ingest(base: str, n_ops: int, batch: int, proofs: bool,
                 concurrency: int, relay_pid: int | None = None) -> dict[str, float]:
    """``concurrency`` devices upload their own chains at the same time (as a
    relay serving many devices sees); each uploads batches of ``batch`` ops.
    With ``relay_pid``, also the CPU seconds the relay (all its processes) and
    this client process spent in the timed part."""
    world = World()
    while len(world.devices) < concurrency:  # one device per uploader
        world.devices.append(DeviceKeys.from_seeds(os.urandom(32), os.urandom(32)))
    for i in range(1, max(4, concurrency)):  # device 0 exists
        world.add_device(i, time.time_ns() // 1_000_000)
    clients = [RelayClient(base, device=world.devices[i], account_id=world.account.account_id)
               for i in range(concurrency)]
    try:
        await clients[0].create_account(world.entries[0])
        for e in world.entries[1:]:
            await clients[0].append_registry(world.account.account_id, e)
        await clients[0].create_space(world.space, world.key_package())
        now = time.time_ns() // 1_000_000
        per_device = n_ops // concurrency
        ops = {i: [world.op(i, ts=now, text=b"x" * 100).raw for _ in range(per_device)]
               for i in range(concurrency)}
        for i, c in enumerate(clients):  # open sessions and warm up: one op each
            await c.upload(world.space, ops[i][:1], proofs=proofs)
        # Encode the request bodies before timing, so that the client process
        # (which shares this machine's two cores) spends as little CPU as it
        # can during the measurement: per request it only signs the headers.
        path = f"/v1/spaces/{b64(world.space)}/ops"
        bodies = {i: [json.dumps({"ops": [b64(o) for o in ops[i][1:][k:k + batch]],
                                  "proofs": proofs}).encode()
                      for k in range(0, per_device - 1, batch)] for i in range(concurrency)}

        async def run(i: int) -> int:
            done = 0
            token = await clients[i]._session_token()
            async with httpx.AsyncClient(base_url=base, timeout=120) as http:
                for body in bodies[i]:
                    nonce, ts = os.urandom(auth.NONCE_SIZE), time.time_ns() // 1_000_000
                    sig = world.devices[i].sign(auth.request_message(
                        "POST", path, body, nonce, ts, auth.token_hash(token)))
                    r = await http.post(path, content=body, headers={
                        "content-type": "application/json",
                        "authorization": f"Bearer {b64(token)}", "x-sddsf-nonce": b64(nonce),
                        "x-sddsf-timestamp": str(ts), "x-sddsf-signature": b64(sig)})
                    r.raise_for_status()
                    done += sum(x["status"] == "accepted" for x in r.json()["results"])
            return done

        tree0 = process_tree_seconds(relay_pid) if relay_pid else {}
        threads0 = thread_seconds(relay_pid) if relay_pid else {}
        machine0, db0 = machine_busy_seconds(), database_server_seconds()
        start, own0 = time.perf_counter(), time.process_time()
        accepted = sum(await asyncio.gather(*(run(i) for i in range(concurrency))))
        elapsed, own = time.perf_counter() - start, time.process_time() - own0
        machine = machine_busy_seconds() - machine0
        # Each relay process's share: with --workers N, the kernel spreads the
        # uploaders' keep-alive connections over the workers, maybe unevenly.
        tree = process_tree_seconds(relay_pid) if relay_pid else {}
        threads = thread_seconds(relay_pid) if relay_pid else {}
        busiest_thread = max((threads[t] - threads0.get(t, 0.0) for t in threads), default=0.0)
        split = sorted((tree[p] - tree0.get(p, 0.0) for p in tree), reverse=True)
        relay = sum(split)
        database = database_server_seconds() - db0
    finally:
        for c in clients:
            await c.aclose()
    expected = concurrency * (per_device - 1)
    if accepted != expected:
        raise SystemExit(f"only {accepted} of {expected} ops accepted")
    return {"ops": accepted, "seconds": elapsed, "ops_per_s": accepted / elapsed,
            "concurrency": concurrency, "batch": batch, "relay_cpu_s": relay,
            "client_cpu_s": own, "machine_cpu_s": machine, "database_cpu_s": database,
            "relay_busiest_process_cpu_s": split[0] if split else 0.0,
            "relay_busiest_thread_cpu_s": busiest_thread}


class _Receiver(asyncio.Protocol):
    """One subscriber in a receiver process: ``websockets``' own sans-I/O client
    protocol over an asyncio transport, offering permessage-deflate as
    ``websockets.connect`` does. Each op frame is parsed and decoded as JSON; its
    receipt time (``time.monotonic_ns``, one clock for all processes) is then
    recorded."""

    def __init__(self, url: str, space_b64: str, record: Callable[[int, int], None],
                 ready: asyncio.Future[None]) -> None:
        self.conn = ClientProtocol(parse_uri(url), max_size=None,
                                   extensions=enable_client_permessage_deflate(None))
        self.space_b64, self.record, self.ready = space_b64, record, ready
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.send_request(self.conn.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        for event in self.conn.events_received():
            if isinstance(event, Response):
                self.conn.send_text(json.dumps({"type": "subscribe",
                                                "space": self.space_b64}).encode())
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                msg = json.loads(event.data)
                if msg["type"] == "op":
                    self.record(msg["offset"], time.monotonic_ns())
                elif msg["type"] == "subscribed" and not self.ready.done():
                    self.ready.set_result(None)
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.conn.data_to_send():
            if chunk:
                self.transport.write(chunk)


async def _receive(job: dict[str, Any]) -> None:
    """A receiver process: subscribe ``job["tickets"]``, print "ready", print
    "done K" once every subscriber has op K, then the receipt times as JSON."""
    loop = asyncio.get_running_loop()
    times: dict[int, list[int]] = {}
    complete = loop.create_future()
    n, last = len(job["tickets"]), job["last_offset"]

    def record(offset: int, ns: int) -> None:
        got = times.setdefault(offset, [])
        got.append(ns)
        if len(got) == n:
            print(f"done {offset}", flush=True)
            if offset == last:
                complete.set_result(None)

    ready = []
    for ticket in job["tickets"]:
        future: asyncio.Future[None] = loop.create_future()
        url = f"{job['ws_base']}/v1/ws?ticket={ticket}"
        await loop.create_connection(
            lambda u=url, f=future: _Receiver(u, job["space"], record, f),  # type: ignore[misc]
            "127.0.0.1", job["port"])
        ready.append(future)
    await asyncio.gather(*ready)
    print("ready", flush=True)
    await complete
    print(json.dumps(times), flush=True)


def receiver_main() -> None:
    job = json.loads(sys.stdin.readline())
    try:
        import uvloop  # noqa: PLC0415 - the fastest loop available, as the relay uses
        uvloop.run(_receive(job))
    except ImportError:
        asyncio.run(_receive(job))


async def _push(client: RelayClient, world: World, i: int) -> int:
    """Upload one single-op batch; returns ``time.monotonic_ns()`` at its start."""
    op = world.op(0, ts=time.time_ns() // 1_000_000, text=f"push {i}".encode())
    start = time.monotonic_ns()
    results, _ = await client.upload(world.space, [op.raw], proofs=False)
    if results[0].status != "accepted":
        raise SystemExit(f"push {i}: {results[0].status}")
    return start


async def fanout(base: str, ws_base: str, relay_pid: int, subscribers: int, pushes: int,
                 receivers: int) -> dict[str, float]:
    """p50/p99 from the start of an upload to each subscriber's receipt of the op,
    and the relay's CPU per push with and without the subscribers. The
    subscribers are spread over ``receivers`` processes; each push waits until
    every subscriber has received the previous one."""
    world = World()
    async with RelayClient(base, device=world.devices[0],
                           account_id=world.account.account_id) as client:
        await client.create_account(world.entries[0])
        await client.create_space(world.space, world.key_package())
        cpu0 = cpu_seconds(relay_pid)
        uploads = []
        for i in range(pushes):  # the same pushes, nobody subscribed
            start = await _push(client, world, i)
            uploads.append((time.monotonic_ns() - start) / 1e6)
        alone = (cpu_seconds(relay_pid) - cpu0) / pushes
        uploads.sort()
        tickets = [b64(await client.ws_ticket()) for _ in range(subscribers)]
        port = int(base.rsplit(":", 1)[1])
        procs = []
        for k in range(receivers):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--receiver", stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, limit=1 << 26)  # the final line holds every time
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({
                "ws_base": ws_base, "port": port, "space": b64(world.space),
                "tickets": tickets[k::receivers], "last_offset": 2 * pushes - 1,
            }).encode() + b"\n")
            await proc.stdin.drain()
            procs.append(proc)

        async def line(proc: asyncio.subprocess.Process) -> str:
            assert proc.stdout is not None
            return (await proc.stdout.readline()).decode().strip()

        if {await line(p) for p in procs} != {"ready"}:
            raise SystemExit("a receiver did not subscribe")
        starts: dict[int, int] = {}
        cpu0 = cpu_seconds(relay_pid)
        receivers_cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        for i in range(pushes):
            offset = pushes + i
            starts[offset] = await _push(client, world, pushes + i)
            if {await line(p) for p in procs} != {f"done {offset}"}:
                raise SystemExit(f"a receiver missed op {offset}")
        relay_cpu = (cpu_seconds(relay_pid) - cpu0) / pushes
        receivers_cpu = (sum(cpu_seconds(p.pid) for p in procs) - receivers_cpu0) / pushes
        latencies = []
        for proc in procs:
            times = json.loads(await line(proc))
            latencies += [(ns - starts[int(k)]) / 1e6 for k, got in times.items() for ns in got]
            await proc.wait()
    latencies.sort()
    return {"subscribers": subscribers, "pushes": pushes, "receiver_processes": receivers,
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[int(0.99 * (len(latencies) - 1))],
            "max_ms": latencies[-1],
            # The floor: the upload's round trip (to its response) with nobody subscribed.
            "upload_p50_ms_unsubscribed": statistics.median(uploads),
            "upload_p99_ms_unsubscribed": uploads[int(0.99 * (len(uploads) - 1))],
            "relay_cpu_ms_per_push": 1000 * relay_cpu,
            "relay_cpu_ms_per_push_unsubscribed": 1000 * alone,
            "relay_cpu_us_per_subscriber": 1e6 * (relay_cpu - alone) / subscribers,
            "receivers_cpu_ms_per_push": 1000 * receivers_cpu}


async def _pg_admin(dsn: str, sql: str) -> None:
    import asyncpg  # noqa: PLC0415 - only for PostgreSQL runs

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def scratch_database(dsn: str) -> tuple[str, str]:
    """Create a throw-away database next to ``dsn``; returns (its DSN, its name)."""
    name = f"sddsf_bench_{os.getpid()}_{int(time.time())}"
    asyncio.run(_pg_admin(dsn, f'CREATE DATABASE "{name}"'))
    return dsn.rsplit("/", 1)[0] + "/" + name, name


def drop_database(dsn: str, name: str) -> None:
    asyncio.run(_pg_admin(dsn, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               f"WHERE datname = '{name}'"))
    asyncio.run(_pg_admin(dsn, f'DROP DATABASE IF EXISTS "{name}"'))


def spread(values: list[float]) -> dict[str, float]:
    """Median and range of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}


def measure_once(base: str, pid: int, args: argparse.Namespace) -> dict[str, float]:
    """One repeat: the raw verify rate, then the three ingest runs, as ratios to it."""
    raw = verify_rate()
    no_proofs = asyncio.run(ingest(base, args.ops, args.batch, False, args.concurrency, pid))
    busy = no_proofs["relay_cpu_s"] / no_proofs["seconds"]
    # The uploading client shares the machine's cores with the relay.
    client_busy = no_proofs["client_cpu_s"] / no_proofs["seconds"]
    with_proofs = asyncio.run(ingest(base, args.ops, args.batch, True, args.concurrency))
    single = asyncio.run(ingest(base, args.ops // 2, args.batch, False, 1))
    row = {"raw_verify_per_s": raw, "ops_per_s_no_proofs": no_proofs["ops_per_s"],
           "ops_per_s_with_proofs": with_proofs["ops_per_s"],
           "ops_per_s_one_uploader": single["ops_per_s"],
           "ratio_no_proofs": no_proofs["ops_per_s"] / raw,
           "ratio_with_proofs": with_proofs["ops_per_s"] / raw,
           "ratio_one_uploader": single["ops_per_s"] / raw, "relay_cpu_cores_busy": busy,
           "relay_cpu_us_per_op": busy / no_proofs["ops_per_s"] * 1e6,
           "client_cpu_cores_busy": client_busy,
           "client_cpu_us_per_op": client_busy / no_proofs["ops_per_s"] * 1e6,
           # What this machine could reach at best with the client beside the
           # relay: every core busy, the CPU per op of both as measured.
           "ratio_ceiling_all_cores": (os.cpu_count() or 1)
           / ((busy + client_busy) / no_proofs["ops_per_s"]) / raw,
           # And with one interpreter lock, if all the relay's CPU per op but
           # the signature check (run without the lock) held it. SQLite and
           # the kernel also run without it, so this bound is pessimistic.
           "ratio_ceiling_one_lock": 1 / (busy / no_proofs["ops_per_s"] - 1 / raw) / raw,
           # Every process of the machine (database, Redis, kernel included):
           # at ~all cores busy, no number of relay workers can go faster here.
           "machine_cpu_cores_busy": no_proofs["machine_cpu_s"] / no_proofs["seconds"],
           "relay_busiest_process_cores_busy":
           no_proofs["relay_busiest_process_cpu_s"] / no_proofs["seconds"],
           # Near 1.0: one thread (the event loop) is the limit; well under it
           # with cores idle: the interpreter lock's hand-offs are.
           "relay_busiest_thread_cores_busy":
           no_proofs["relay_busiest_thread_cpu_s"] / no_proofs["seconds"],
           "machine_cpu_us_per_op": no_proofs["machine_cpu_s"] / no_proofs["ops"] * 1e6,
           "database_cpu_us_per_op": no_proofs["database_cpu_s"] / no_proofs["ops"] * 1e6,
           "ratio_ceiling_machine": (os.cpu_count() or 1)
           / (no_proofs["machine_cpu_s"] / no_proofs["ops"]) / raw}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> None:
    if sys.argv[1:] == ["--receiver"]:
        receiver_main()
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=None)
    ap.add_argument("--ops", type=int, default=24_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=4, help="devices uploading at once")
    ap.add_argument("--subscribers", type=int, default=100)
    ap.add_argument("--pushes", type=int, default=50)
    ap.add_argument("--receivers", type=int, default=2,
                    help="processes the subscribers are spread over")
    ap.add_argument("--fanout-only", action="store_true", help="skip the ingest runs")
    ap.add_argument("--workers", type=int, default=1, help="relay worker processes")
    ap.add_argument("--redis", default="", help="Redis URL, needed with --workers > 1")
    ap.add_argument("--what-if-unverified", action="store_true",
                    help="what-if run: the relay skips every signature check (one worker)")
    args = ap.parse_args()
    if args.what_if_unverified and args.workers != 1:
        ap.error("--what-if-unverified patches one relay process: use --workers 1")
    scratch: str | None = None
    if args.db and args.db.startswith(("postgresql://", "postgres://")):
        # Never write into the database the DSN names: run in a scratch one.
        db_url, scratch = scratch_database(args.db)
    with tempfile.TemporaryDirectory() as tmp:
        db = db_url if scratch else args.db or f"sqlite:///{tmp}/relay.db"
        port = free_port()
        proc = start_relay(db, port, Path(tmp), args.workers, args.redis,
                           args.what_if_unverified)
        try:
            base, ws_base = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
            rows = [] if args.fanout_only else [measure_once(base, proc.pid, args)
                                                for _ in range(args.repeat)]
            fan = asyncio.run(fanout(base, ws_base, proc.pid, args.subscribers, args.pushes,
                                     args.receivers))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if scratch:
                drop_database(args.db, scratch)
    report: dict[str, object] = {"backend": db.split("://", 1)[0], "ops_per_run": args.ops,
                                 "concurrency": args.concurrency, "batch": args.batch,
                                 "workers": args.workers,
                                 "signatures_checked": not args.what_if_unverified}
    if rows:
        report.update({key: spread([row[key] for row in rows]) for key in rows[0]})
    report["fanout"] = fan
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
