"""Per-stage cost of the relay's ingest path, in microseconds per op (docs/performance.md).

Runs the relay application in this process (``InProcessRelay``, SQLite in a
temporary directory, or with ``--db postgresql://...`` a scratch PostgreSQL
database created next to the one named and dropped after), uploads batches
of pre-signed ops through its HTTP endpoint (httpx over ASGI: no sockets),
and times each stage of the upload with wrappers around the relay's own functions:

* ``decode``: envelope and header decoding of the batch;
* ``rules+verify``: the shared rules, signatures on the verifier pool;
* ``chain snapshot``: reading the authors' chain heads and the ids already at
  the batch's (author, seq) pairs (one read transaction);
* ``storage append``: building the rows and the database transaction;
* ``proofs``: the batch's inclusion proofs (only with ``--proofs``);
* ``tree head``: signing the tree head;
* ``submit other``: the rest of ``Fabric.submit`` (chain snapshot, space reads,
  thread hops, results, fan-out hooks);
* ``response``: building the JSON response;
* ``HTTP rest``: everything else of the request (routing, authentication, the
  JSON body and base64, and the in-process httpx client).

Also prints the raw PyNaCl verify rate of this run (one thread) for scale.

Usage:
    python bench/relay_stages.py [--batches 12] [--batch 500] [--proofs]
        [--profile out.prof] [--db postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import functools
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "relay"))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from relay_ingest import drop_database, scratch_database, verify_rate
from relaykit import World

from sddsf.client.relay_client import RelayClient
from sddsf.protocol import auth
from sddsf.relay import fabric as fabric_mod
from sddsf.relay.routes import spaces as spaces_mod
from sddsf.relay.settings import RelaySettings
from sddsf.relay.storage import RelayStorage, open_storage
from sddsf.testing.memory_transport import BASE_URL, InProcessRelay

TIMES: dict[str, float] = defaultdict(float)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def timed_sync(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            TIMES[name] += time.perf_counter() - t0
    return wrapper


def timed_async(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*a, **k)
        finally:
            TIMES[name] += time.perf_counter() - t0
    return wrapper


def instrument(relay: InProcessRelay) -> None:
    fab = relay.context.fabric
    storage = relay.storage
    # Module-level functions the fabric calls by name.
    for name, label in (("_decode_all", "decode"),):
        if hasattr(fabric_mod, name):
            setattr(fabric_mod, name, timed_sync(label, getattr(fabric_mod, name)))
    for name in ("inclusion_proofs", "batch_inclusion_proofs"):
        if hasattr(fabric_mod, name):
            setattr(fabric_mod, name, timed_async("proofs", getattr(fabric_mod, name)))
    fab._verify_all = timed_sync("rules+verify", fab._verify_all)  # type: ignore[method-assign]
    fab.tree_head = timed_sync("tree head", fab.tree_head)  # type: ignore[method-assign]
    storage.append_ops = timed_async("storage append", storage.append_ops)  # type: ignore[method-assign]
    storage.chain_snapshot = timed_async(  # type: ignore[method-assign]
        "chain snapshot", storage.chain_snapshot)
    fab.submit = timed_async("submit", fab.submit)  # type: ignore[method-assign]
    setattr(spaces_mod, "JSONResponse",  # noqa: B010 - a module attribute, patched
            timed_sync("response", getattr(spaces_mod, "JSONResponse")))  # noqa: B009


async def run(args: argparse.Namespace, db_url: str | None) -> dict[str, Any]:
    settings = RelaySettings(db="sqlite:////unused", key_file="/unused").replace(
        rate_ops_per_s=1e9, rate_ops_burst=1e9, rate_device_per_s=1e6,
        rate_device_burst=1e6, rate_account_per_s=1e6, rate_account_burst=1e6,
        rate_ip_per_s=1e6, rate_ip_burst=1e6, max_request_bytes=64 << 20)
    storage: RelayStorage | None = None
    if db_url:
        storage = open_storage(db_url)
        await storage.open()
    try:
        return await measure(args, InProcessRelay(storage, settings=settings))
    finally:
        if storage:
            await storage.close()


async def measure(args: argparse.Namespace, in_process: InProcessRelay) -> dict[str, Any]:
    async with in_process as relay:
        world = World()
        now = time.time_ns() // 1_000_000
        client = RelayClient(BASE_URL, device=world.devices[0],
                             account_id=world.account.account_id,
                             transport=relay.http_transport())
        await client.create_account(world.entries[0])
        await client.create_space(world.space, world.key_package())
        total = args.batches * args.batch
        ops = [world.op(0, ts=now, text=b"x" * 100).raw for _ in range(total + 1)]
        await client.upload(world.space, ops[:1], proofs=args.proofs)  # warm up
        path = f"/v1/spaces/{b64(world.space)}/ops"
        bodies = [json.dumps({"ops": [b64(o) for o in ops[1:][k:k + args.batch]],
                              "proofs": args.proofs}).encode()
                  for k in range(0, total, args.batch)]
        token = await client._session_token()
        instrument(relay)
        TIMES.clear()
        profiler = cProfile.Profile() if args.profile else None
        elapsed = 0.0
        async with httpx.AsyncClient(base_url=BASE_URL, transport=relay.http_transport(),
                                     timeout=120) as http:
            for body in bodies:
                nonce, ts = os.urandom(auth.NONCE_SIZE), time.time_ns() // 1_000_000
                sig = world.devices[0].sign(auth.request_message(
                    "POST", path, body, nonce, ts, auth.token_hash(token)))
                headers = {"content-type": "application/json",
                           "authorization": f"Bearer {b64(token)}",
                           "x-sddsf-nonce": b64(nonce), "x-sddsf-timestamp": str(ts),
                           "x-sddsf-signature": b64(sig)}
                if profiler:
                    profiler.enable()
                t0 = time.perf_counter()
                r = await http.post(path, content=body, headers=headers)
                elapsed += time.perf_counter() - t0
                if profiler:
                    profiler.disable()
                r.raise_for_status()
                results = r.json()["results"]
                if sum(x["status"] == "accepted" for x in results) != len(results):
                    raise SystemExit("an op was not accepted")
        await client.aclose()
        if profiler:
            profiler.dump_stats(args.profile)
    per_op = {k: 1e6 * v / total for k, v in TIMES.items()}
    stages = ["decode", "chain snapshot", "rules+verify", "storage append", "proofs",
              "tree head"]
    submit = per_op.pop("submit")
    per_op["submit other"] = submit - sum(per_op.get(s, 0.0) for s in stages)
    request = 1e6 * elapsed / total
    per_op["HTTP rest"] = request - submit - per_op.get("response", 0.0)
    per_op["total request"] = request
    return {"ops": total, "batch": args.batch, "proofs": args.proofs,
            "ops_per_s": total / elapsed,
            "us_per_op": {k: round(v, 1) for k, v in per_op.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--proofs", action="store_true")
    ap.add_argument("--profile", default=None, help="write cProfile stats of the requests")
    ap.add_argument("--db", default=None, help="a PostgreSQL DSN (default: SQLite)")
    args = ap.parse_args()
    raw = verify_rate(1.0)
    db_url, scratch = scratch_database(args.db) if args.db else (None, None)
    try:
        report = asyncio.run(run(args, db_url))
    finally:
        if scratch:
            drop_database(args.db, scratch)
    report["backend"] = "postgresql" if scratch else "sqlite"
    report["raw_verify_per_s"] = raw
    report["raw_verify_us"] = round(1e6 / raw, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
