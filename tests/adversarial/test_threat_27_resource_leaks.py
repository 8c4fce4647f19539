"""THREATS #27: resources under repeated disconnects and failures return to their
baseline (the PouchDB ``test.retry.js`` pattern).

The relay runs in this process (uvicorn on a loopback port, real HTTP and
WebSocket), so the test can count what a separate process would hide: asyncio
tasks, open file descriptors, threads, the fan-out hub's connections and
subscriptions, and the edge state's tickets.

* relay side: cycles of WebSocket clients that subscribe and then close, vanish
  without a close frame, overflow their queue, or present a used ticket, plus
  HTTP clients whose upload is abandoned mid-flight and requests that fail;
* client side: a device's background runner (WebSocket live channel, sync loop
  with backoff) across repeated relay outages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pycrdt
import pytest
import uvicorn
from clusterkit import LONG, until
from livekit import b64, ws_connect
from relaykit import Clock, World, make_app

from sddsf.client.device import Device
from sddsf.client.relay_client import RelayClient
from sddsf.client.runner import Runner, RunnerSettings
from sddsf.relay.deps import RelayContext
from sddsf.relay.storage import open_storage

CYCLES = 120 if LONG else 10
WARM_UP = 4  # thread pools grow lazily up to their bound: fill them first


@dataclass
class Served:
    app: object
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def ctx(self) -> RelayContext:
        ctx: RelayContext = self.app.state.relay  # type: ignore[attr-defined]
        return ctx

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def serve(app: object, port: int = 0) -> Served:
    """uvicorn in this event loop (the app's lifespan opens and closes its storage)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",  # type: ignore[arg-type]
                            ws_max_size=64 * 1024, lifespan="on",
                            timeout_keep_alive=1)  # idle keep-alives must not mask a leak
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    assert await until(lambda: server.started or task.done(), timeout=10)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return Served(app, server, task, int(bound))


async def shutdown(served: Served) -> None:
    served.server.should_exit = True
    await served.task


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Served]:
    storage = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    app = make_app(storage, Clock(time.time_ns() // 1_000_000), ws_queue_max=4,
                   rate_ip_per_s=1e6, rate_ip_burst=1e6, rate_device_per_s=1e6,
                   rate_device_burst=1e6, rate_account_per_s=1e6, rate_account_burst=1e6)
    served = await serve(app)
    yield served
    await shutdown(served)


def counts(served: Served | None = None) -> dict[str, int]:
    """What must not grow: tasks, fds and threads of this process, and the relay's
    connections, subscriptions and unused tickets."""
    out = {"tasks": len(asyncio.all_tasks()),
           "fds": len(os.listdir("/proc/self/fd")),
           "threads": threading.active_count()}
    if served is not None:
        hub = served.ctx.hub
        out["connections"] = hub.connected
        # Private, on purpose: the number of live subscriptions is the leak to catch.
        out["subscriptions"] = sum(len(subs) for subs in hub._by_space.values())
        edge = served.ctx.edge
        out["tickets"] = len(getattr(getattr(edge, "_tickets", None), "items", ()))
    return out


async def settle(measure: Callable[[], dict[str, int]], baseline: dict[str, int],
                 timeout: float = 8.0) -> dict[str, int]:
    """Wait until every count is back at (or below) the baseline; the last counts."""
    last: dict[str, int] = {}

    def back() -> bool:
        nonlocal last
        last = measure()
        return all(last[k] <= baseline[k] for k in baseline)

    await until(back, timeout=timeout, interval=0.1)
    return last


async def _world(served: Served) -> tuple[World, RelayClient]:
    world = World()
    c = RelayClient(served.url, device=world.devices[0], account_id=world.account.account_id,
                    transport=httpx.AsyncHTTPTransport(), timeout_s=10)
    await c.create_account(world.entries[0])
    await c.create_space(world.space, world.key_package())
    return world, c


async def _churn(served: Served, world: World, c: RelayClient, i: int) -> None:
    """One cycle: every way a client can go away."""
    ws_url = f"ws://127.0.0.1:{served.port}/v1/ws?ticket="
    ticket = await c.ws_ticket()
    ws = await ws_connect(ws_url + b64(ticket))
    await ws.send(json.dumps({"type": "subscribe", "space": b64(world.space)}))
    assert json.loads(await ws.recv())["type"] == "subscribed"
    await c.upload(world.space, [world.op(0, text=f"c{i}".encode()).raw])
    if i % 3 == 0:
        await ws.close()
    elif i % 3 == 1:  # vanishes without a close handshake
        ws.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.wait_closed(), 2)
    else:  # stops reading while a burst overflows its queue (resync), then leaves
        await c.upload(world.space, [world.op(0, text=f"b{i}-{k}".encode()).raw
                                     for k in range(10)])
        ws.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.wait_closed(), 2)
    async with ws_connect(ws_url + b64(ticket)) as used:  # a used ticket: 4401
        with contextlib.suppress(Exception):
            await asyncio.wait_for(used.recv(), 2)
    # A fresh HTTP client whose upload is abandoned mid-flight, and failing requests.
    other = RelayClient(served.url, device=world.devices[0],
                        account_id=world.account.account_id,
                        transport=httpx.AsyncHTTPTransport(), timeout_s=10)
    upload = asyncio.create_task(other.upload(world.space, [world.op(
        0, text=bytes(50_000), record=False).raw]))
    await asyncio.sleep(0.005)
    upload.cancel()
    with contextlib.suppress(BaseException):
        await upload
    await other.aclose()
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport()) as http:
        assert (await http.get(f"{served.url}/v1/spaces")).status_code == 401
        assert (await http.post(f"{served.url}/v1/accounts", content=b"{")).status_code == 400


async def test_relay_resources_return_to_baseline_after_disconnect_cycles(
        relay: Served) -> None:
    world, c = await _world(relay)
    async with c:
        for i in range(WARM_UP):  # pools, threads, caches
            await _churn(relay, world, c, i)
        # Thread pools start threads lazily up to their bound: start them all now
        # (the default executor, and the relay's verifier pool: private, on
        # purpose), so that only a real leak can add threads later.
        await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.05) for _ in range(64)))
        pool = relay.ctx.fabric._pool
        await asyncio.gather(*(asyncio.wrap_future(pool.submit(time.sleep, 0.05))
                               for _ in range(16)))
        baseline = await settle(lambda: counts(relay), counts(relay), timeout=2)
        for i in range(WARM_UP, WARM_UP + CYCLES):
            await _churn(relay, world, c, i)
        after = await settle(lambda: counts(relay), baseline)
    assert after["connections"] == after["subscriptions"] == after["tickets"] == 0, after
    grown = {k: (baseline[k], after[k]) for k in baseline if after[k] > baseline[k]}
    assert not grown, f"grew after {CYCLES} cycles (baseline, after): {grown}"


def client_counts() -> dict[str, int]:
    """Tasks and fds (threads are left out: the in-process relay starts and stops its
    bounded thread pools with every restart; the relay test covers threads)."""
    return {k: v for k, v in counts().items() if k != "threads"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_client_runner_resources_flat_across_relay_outages(tmp_path: Path) -> None:
    port = _free_port()

    def new_app() -> object:  # one app per relay start, like a restarted process
        return make_app(open_storage(f"sqlite:///{tmp_path / 'relay.db'}"),
                        Clock(time.time_ns() // 1_000_000))

    served = await serve(new_app(), port)
    laptop, _ = await Device.create_account(tmp_path / "laptop", served.url, "laptop",
                                            passphrase=None, insecure_plaintext=True)
    space = await laptop.create_space("notes")
    errors: list[str] = []
    runner = Runner(laptop, RunnerSettings(debounce_s=0.01, full_check_s=0.3,
                                           backoff_min_s=0.05, backoff_max_s=0.2),
                    on_error=lambda e: errors.append(f"{e.code.value}: {e.message}"))
    await runner.start()
    edits = laptop.doc(space, "kv").get("kv", type=pycrdt.Map)
    try:
        assert await until(lambda: served.ctx.hub.connected == 1, timeout=10)
        await asyncio.sleep(0.5)
        baseline = client_counts()
        outages = 12 if LONG else 2
        for i in range(outages):
            await shutdown(served)  # the relay goes away: every sync and reconnect fails
            edits[f"offline {i}"] = i
            runner.changed()
            await asyncio.sleep(0.6)
            served = await serve(new_app(), port)
            assert await until(lambda s=served: s.ctx.hub.connected == 1, timeout=10)
        assert await until(lambda: laptop.pending_count() == 0, timeout=10), errors[-5:]
        await asyncio.sleep(0.5)
        after = await settle(client_counts, baseline)
        grown = {k: (baseline[k], after[k]) for k in baseline if after[k] > baseline[k]}
        assert not grown, f"grew across {outages} outages (baseline, after): {grown}"
        assert {int(k.split()[-1]) for k in edits if k.startswith("offline")} == set(
            range(outages))
    finally:
        await runner.stop()
        await laptop.close()
        await shutdown(served)
