"""Cold start: a new device's first sync of a finished space, from a snapshot
versus replaying every op, versus loading the plain Yjs state (results go to
docs/performance.md).

Two workloads, each at several history lengths, through a real relay process:

* ``trace``: the first N edits of the automerge-paper trace typed on device A
  (``--debounce`` edits per op). The document grows with the history.
* ``kv``: N ops, each overwriting one of 50 keys of a map. The history grows,
  the document hardly does: this shows what a snapshot start depends on.

For each: A syncs and writes a snapshot covering the whole log; device B (new,
snapshots on) and device C (new, ``use_snapshots = False``) are added and their
first ``sync()`` is timed end to end (session, registry, key packages,
snapshot or ops, verification, local store), and the HTTP requests it sends
are counted (``requests_snapshot``, ``requests_replay``). B and C hold the
session ``Device.add_local`` opened; ``cold_fresh_ms`` (``requests_fresh``) is
B's start from a home opened again, as in a new process, whose first sync also
opens its session (challenge and session requests); ``open_ms`` is that
``Device.open`` itself (a process that already opened a device: its relay
client reuses the process's TLS trust store). ``snapshot_local_ms`` is the
CPU part of a snapshot start (verify, decrypt, apply to a fresh document);
``plain_ms`` is ``Doc().apply_update(state)`` of the same final state.
``pycrdt_websocket_ms`` is the same first sync through what a user would pick
instead, in the same run: a pycrdt-websocket room on loopback holding the same
final state, and a new ``pycrdt.Provider`` client connecting over a new
WebSocket, timed until it is synced and its document equals A's (bench/peers.py's
room and client; no store, no signatures, no encryption).
Every device's document must equal A's.

``bundle_request_ms`` and ``bundle_relay_cpu_ms``: A asks for the first-sync
bundle (``GET /v1/bootstrap``) ``--requests`` times in a row on its open
connection; the median round trip, and the relay process's CPU time per
request (Linux /proc); ``bundle_client_cpu_ms`` is this process's CPU time per
request (the client's side). ``spaces_*`` are the same for ``GET /v1/spaces``,
the smallest authenticated read, as the baseline of what any request costs,
and ``healthz_*`` for a bare httpx ``GET /healthz``: the HTTP library's floor.

``--big MIB,...`` (issue 13 item 3): one document of that many MiB built from
400 KB values (one op each, so every push fits the relay's default 1 MiB
request limit, which this relay keeps). It times reopening the home and reading
the document (``open``), one small edit pushed and pulled (``edit``), writing
the chunked snapshot, and a new device's first sync from it and by replay.

Usage:
    python bench/cold_start.py [--trace 25000,100000,259778] [--kv 500,2000,8000]
    python bench/cold_start.py --trace "" --kv "" --big 50,100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pycrdt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import peer, room_server
from relay_ingest import own_cpu_seconds
from trace_sync import RELAY_PID, TRACE, apply_edit, load, relay_process

from sddsf.client.device import Device
from sddsf.crypto import random_bytes
from sddsf.protocol.snapshot import SPACE_SNAPSHOT_DOC, snapshot_claims, verify_snapshot

REPEAT = 3
#: Requests of each kind timed by :func:`timed_requests` (``--requests``).
REQUESTS = [300]
BIG_VALUE = 400_000

#: HTTP requests sent by every client of this process (counted around a first sync).
SENT = [0]
_send = httpx.AsyncClient.send


async def _counted_send(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> httpx.Response:
    SENT[0] += 1
    return await _send(self, *args, **kwargs)


httpx.AsyncClient.send = _counted_send  # type: ignore[method-assign]


def content(doc: pycrdt.Doc[Any], workload: str) -> object:
    if workload == "trace":
        return str(doc.get("t", type=pycrdt.Text))
    return dict(doc.get("kv", type=pycrdt.Map))


async def write_history(a: Device, space: bytes, workload: str, n: int,
                        edits: list[tuple[int, int, str]], debounce: int) -> int:
    ops = 0
    if workload == "trace":
        doc = a.doc(space, "text")
        text = doc.get("t", type=pycrdt.Text)
        for i, edit in enumerate(edits[:n], 1):
            with doc.transaction():
                apply_edit(text, edit)
            if i % debounce == 0:
                ops += a.flush()
                if ops % 200 == 0:
                    await a.sync()
    else:
        m = a.doc(space, "kv").get("kv", type=pycrdt.Map)
        for i in range(n):
            m[f"k{i % 50}"] = f"value {i}"
            ops += a.flush()
            if ops % 200 == 0:
                await a.sync()
    ops += a.flush()
    await a.sync()
    return ops


async def one(url: str, work: Path, workload: str, n: int,
              edits: list[tuple[int, int, str]], debounce: int) -> dict[str, object]:
    a, _ = await Device.create_account(work / "a", url, "a", passphrase=None,
                                       insecure_plaintext=True)
    a.snapshot_every = 0  # one snapshot, written below, covering the whole log
    a.ack_every = 0  # keep the whole history on the relay, so replay stays possible
    space = await a.create_space(workload)
    ops = await write_history(a, space, workload, n, edits, debounce)
    size = await a.snapshot(space)
    name = "text" if workload == "trace" else "kv"
    expected = content(a.doc(space, name), workload)
    state = a.doc(space, name).get_update()

    plain = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        d: pycrdt.Doc[Any] = pycrdt.Doc()
        d.apply_update(state)
        assert content(d, workload) == expected
        plain.append(time.perf_counter() - start)

    _, blob = await a.relay.get_snapshot(space, SPACE_SNAPSHOT_DOC)
    chunks = [await a.relay.get_snapshot_chunk(space, c) for c in snapshot_claims(blob).chunk_ids]
    local = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        snap = verify_snapshot(blob, registry=a.registry(), space=space,
                               epoch_keys=a._keys_cached(space), chunks=chunks)
        d = pycrdt.Doc()
        d.apply_update(snap.docs[name])
        assert content(d, workload) == expected
        local.append(time.perf_counter() - start)

    websocket = await websocket_first_syncs(state, workload, expected)
    requests_timed = await timed_requests(a, REQUESTS[0])

    timings: dict[str, list[float]] = {"snapshot": [], "fresh": [], "replay": []}
    open_ms = 0.0
    requests: dict[str, int] = {}
    for i in range(REPEAT):
        for mode, times in timings.items():
            if mode == "fresh" and i:
                continue  # once: more new devices in a row trip the controller's burst rule
            dev = await Device.add_local(a, work / f"{mode}{i}", f"{mode}{i}", passphrase=None,
                                         insecure_plaintext=True)
            if mode == "fresh":  # a new process: the first sync opens the session too
                await dev.close()
                opened = time.perf_counter()
                dev = Device.open(work / f"{mode}{i}", passphrase=None)
                open_ms = (time.perf_counter() - opened) * 1000
            dev.use_snapshots = mode != "replay"
            dev.ack_every = 0
            sent, start = SENT[0], time.perf_counter()
            report = await dev.sync()
            times.append(time.perf_counter() - start)
            requests[mode] = SENT[0] - sent
            assert report.snapshots_loaded == (mode != "replay")
            assert content(dev.doc(space, name), workload) == expected
            await dev.close()
    await a.close()
    med = {k: statistics.median(v) * 1000 for k, v in timings.items()}  # (fresh: one run)
    plain_ms = statistics.median(plain) * 1000
    local_ms = statistics.median(local) * 1000
    return {
        "workload": workload, "history": n, "ops": ops, "log_size": size,
        "state_bytes": len(state), "snapshot_bytes": len(blob) + sum(map(len, chunks)),
        "plain_ms": round(plain_ms, 2), "snapshot_local_ms": round(local_ms, 2),
        "cold_snapshot_ms": round(med["snapshot"], 1), "cold_replay_ms": round(med["replay"], 1),
        "cold_fresh_ms": round(med["fresh"], 1), "open_ms": round(open_ms, 1),
        "pycrdt_websocket_ms": round(statistics.median(websocket) * 1000, 1),
        "snapshot_vs_pycrdt_websocket": round(med["snapshot"] / 1000
                                              / statistics.median(websocket), 2),
        **requests_timed,
        "requests_snapshot": requests["snapshot"],
        "requests_fresh": requests["fresh"], "requests_replay": requests["replay"],
        "local_vs_plain": round(local_ms / plain_ms, 2),
        "cold_snapshot_vs_plain": round(med["snapshot"] / plain_ms, 1),
        "replay_vs_snapshot": round(med["replay"] / med["snapshot"], 1),
    }


async def timed_requests(a: Device, n: int) -> dict[str, float]:
    """Median round trip, relay CPU and client CPU per request of ``n`` bundle
    requests and ``n`` space listings by A, in a row on its open connection, and
    of ``n`` plain ``GET /healthz`` through a bare httpx client (the HTTP
    library's own floor: no signing, no session, no decoding)."""
    client = a.engine.transport.client  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=client._url) as plain:
        for name, call in (("bundle", lambda: client.bootstrap(random_bytes(16))),
                           ("spaces", client.list_spaces),
                           ("healthz", lambda: plain.get("/healthz"))):
            await call()  # the connection and the caches are warm before timing
            times, cpu0, own0 = [], own_cpu_seconds(RELAY_PID[0]), time.process_time()
            for _ in range(n):
                start = time.perf_counter()
                await call()
                times.append(time.perf_counter() - start)
            own = (time.process_time() - own0) / n  # this process: the client alone
            cpu = (own_cpu_seconds(RELAY_PID[0]) - cpu0) / n
            out[f"{name}_request_ms"] = round(statistics.median(times) * 1000, 2)
            out[f"{name}_relay_cpu_ms"] = round(cpu * 1000, 2)
            out[f"{name}_client_cpu_ms"] = round(own * 1000, 2)
    return out


async def websocket_first_syncs(state: bytes, workload: str, expected: object) -> list[float]:
    """Seconds of REPEAT new pycrdt-websocket clients' first syncs of ``state``
    from a room that holds it (a first client seeds the room and stays)."""
    times = []
    async with room_server(None) as url, peer(url) as seeder:
        seeder.apply_update(state)
        while True:  # the room has it once a new client gets all of it
            async with peer(url) as probe:
                if content(probe, workload) == expected:
                    break
            await asyncio.sleep(0.01)
        for _ in range(REPEAT):
            start = time.perf_counter()
            async with peer(url) as doc:
                assert content(doc, workload) == expected
                times.append(time.perf_counter() - start)
    return times


def big_value(i: int) -> str:
    return f"{i:06d}" + chr(ord("a") + i % 26) * (BIG_VALUE - 6)


def _ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 1)


async def big(url: str, work: Path, mib: int) -> dict[str, object]:
    """A document of ``mib`` MiB from 400 KB edits: open, edit, snapshot, cold start."""
    a, _ = await Device.create_account(work / "a", url, "a", passphrase=None,
                                       insecure_plaintext=True)
    a.snapshot_every = a.ack_every = 0
    space = await a.create_space("big")
    n = -(-mib * (1 << 20) // BIG_VALUE)
    m = a.doc(space, "kv").get("kv", type=pycrdt.Map)
    start = time.perf_counter()
    for i in range(n):
        m[f"v{i}"] = big_value(i)
        a.flush()
        await a.sync()  # one op per push
    write_s = time.perf_counter() - start
    state_bytes = len(a.doc(space, "kv").get_update())
    await a.close()
    opens = []
    for _ in range(REPEAT):  # reopen the home and read the whole document
        start = time.perf_counter()
        a = Device.open(work / "a", passphrase=None)
        assert len(a.doc(space, "kv").get("kv", type=pycrdt.Map)) == n
        opens.append(time.perf_counter() - start)
        await a.close()
    a = Device.open(work / "a", passphrase=None)
    a.snapshot_every = a.ack_every = 0
    edits = []
    for i in range(REPEAT):  # one small edit, pushed and pulled
        start = time.perf_counter()
        a.doc(space, "kv").get("kv", type=pycrdt.Map)[f"small{i}"] = "edit"
        await a.sync()
        edits.append(time.perf_counter() - start)
    expected = dict(a.doc(space, "kv").get("kv", type=pycrdt.Map))
    start = time.perf_counter()
    assert await a.snapshot(space) is not None
    snapshot_s = time.perf_counter() - start
    _, manifest = await a.relay.get_snapshot(space, SPACE_SNAPSHOT_DOC)
    chunks = len(snapshot_claims(manifest).chunk_ids)
    cold: dict[str, float] = {}
    for mode in ("snapshot", "replay"):  # one run each: a replay moves the whole history
        dev = await Device.add_local(a, work / mode, mode, passphrase=None,
                                     insecure_plaintext=True)
        dev.use_snapshots = mode == "snapshot"
        dev.ack_every = 0
        start = time.perf_counter()
        report = await dev.sync()
        cold[mode] = time.perf_counter() - start
        assert report.snapshots_loaded == (mode == "snapshot")
        assert dict(dev.doc(space, "kv").get("kv", type=pycrdt.Map)) == expected
        await dev.close()
    await a.close()
    store = sum(f.stat().st_size for f in (work / "a").rglob("*") if f.is_file())
    return {
        "workload": "big", "mib": mib, "ops": n, "state_bytes": state_bytes,
        "write_s": round(write_s, 1), "open_ms": _ms(opens), "edit_ms": _ms(edits),
        "snapshot_write_ms": round(snapshot_s * 1000, 1), "snapshot_chunks": chunks,
        "manifest_bytes": len(manifest), "cold_snapshot_ms": round(cold["snapshot"] * 1000, 1),
        "cold_replay_ms": round(cold["replay"] * 1000, 1), "store_bytes": store,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


async def run(url: str, work: Path, trace: list[int], kv: list[int], debounce: int,
              big_mib: list[int]) -> list[dict[str, object]]:
    edits = load(TRACE, max(trace, default=0)).edits
    rows = []
    for mib in big_mib:
        sub = work / f"big{mib}"
        sub.mkdir()
        rows.append(await big(url, sub, mib))
        print(json.dumps(rows[-1]), flush=True)
    for workload, sizes in (("trace", trace), ("kv", kv)):
        for n in sizes:
            sub = work / f"{workload}{n}"
            sub.mkdir()
            rows.append(await one(url, sub, workload, n, edits, debounce))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default="25000,100000,259778")
    ap.add_argument("--kv", default="500,2000,8000")
    ap.add_argument("--debounce", type=int, default=100)
    ap.add_argument("--big", default="", help="MiB of one document, e.g. 50,100")
    ap.add_argument("--requests", type=int, default=300,
                    help="bundle requests and space listings timed per workload")
    args = ap.parse_args()
    trace = [int(x) for x in args.trace.split(",") if x]
    kv = [int(x) for x in args.kv.split(",") if x]
    big_mib = [int(x) for x in args.big.split(",") if x]
    REQUESTS[0] = args.requests
    # The big workload keeps the relay's default 1 MiB request limit: every
    # snapshot chunk and every push must fit it.
    limit = 1 << 20 if big_mib else None
    with tempfile.TemporaryDirectory() as tmp, relay_process(Path(tmp),
                                                             max_request_bytes=limit) as url:
        asyncio.run(run(url, Path(tmp), trace, kv, args.debounce, big_mib))


if __name__ == "__main__":
    main()
