"""The editing trace through what a user would pick instead of SDDSF, in the
same run as SDDSF itself (results go to docs/performance.md).

Four runs of the same trace (``--trace``, default automerge-paper; loaded and
converted to pycrdt offsets by bench/trace_sync.py, before any clock starts):

* ``baseline``: plain pycrdt, one transaction per edit, the updates applied
  directly to a second document (bench/trace_sync.py's baseline);
* ``pycrdt-websocket``: device A types into a ``pycrdt.Doc`` bound by a
  ``pycrdt.Provider`` to a pycrdt-websocket ``YRoom`` over a real WebSocket on
  loopback; device B, another provider, receives;
* ``pycrdt-websocket + SQLiteYStore``: the same, with the room persisting
  every update (pycrdt.store's SQLite store, a file in a temporary directory);
* both again with each ``--debounce`` window of edits in one transaction (one
  update sent per window, as SDDSF seals one op per window);
* ``sddsf``: bench/trace_sync.py's run through a real relay process (signed,
  encrypted, verified ops; device B syncs at the end).

A yields to the event loop after every ``--debounce`` edits (what a typist's
pauses give the network code); a run ends when B's text equals the trace's end, which
is checked. Each figure is a ratio to the baseline of the same run.

Usage:
    python bench/peers.py [--trace PATH.json.gz] [--edits N] [--debounce 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pycrdt
from pycrdt.store import SQLiteYStore
from pycrdt.websocket import YRoom
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trace_sync import TRACE, Trace, apply_edit, baseline, load, relay_process, sddsf_run


class WsChannel:
    """A ``pycrdt.Channel`` over a ``websockets`` connection (either side)."""

    def __init__(self, ws: ClientConnection | ServerConnection, path: str) -> None:
        self._ws = ws
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WsChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(message)

    async def recv(self) -> bytes:
        message = await self._ws.recv()
        return message if isinstance(message, bytes) else message.encode()


@contextlib.asynccontextmanager
async def room_server(store_dir: Path | None) -> AsyncIterator[str]:
    """One pycrdt-websocket room on a loopback port (with an SQLite store if
    ``store_dir``); yields its URL."""
    ystore = None
    if store_dir is not None:
        # pycrdt.store's documented way to place the database: a subclass's
        # db_path (the constructor's argument names the document in it).
        store_class = type("BenchYStore", (SQLiteYStore,), {"db_path": str(store_dir / "y.db")})
        ystore = store_class("trace")
    async with contextlib.AsyncExitStack() as stack:
        if ystore is not None:
            await stack.enter_async_context(ystore)
        room = await stack.enter_async_context(YRoom(ready=True, ystore=ystore))

        async def handle(ws: ServerConnection) -> None:
            await room.serve(WsChannel(ws, "trace"))

        server = await stack.enter_async_context(
            serve(handle, "127.0.0.1", 0, max_size=None))
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/trace"


@contextlib.asynccontextmanager
async def peer(url: str) -> AsyncIterator[pycrdt.Doc[Any]]:
    """A document bound to the room at ``url`` by a ``pycrdt.Provider`` (synced)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    async with connect(url, max_size=None) as ws:
        provider = pycrdt.Provider(doc, WsChannel(ws, "trace"))
        async with provider:
            await provider.synced.wait()
            yield doc


async def websocket_run(trace: Trace, debounce: int, store_dir: Path | None,
                        batched: bool) -> tuple[float, float, str]:
    """Type the trace into A; returns (seconds until B has it all, seconds of
    typing alone, B's text). ``batched``: the edits of each ``debounce`` window
    in one transaction, so one update per window is sent (as SDDSF seals one op
    per window); otherwise one transaction, and one message, per edit."""
    async with room_server(store_dir) as url, peer(url) as a, peer(url) as b:
        text_a = a.get("t", type=pycrdt.Text)
        text_b = b.get("t", type=pycrdt.Text)
        text_a.insert(0, trace.start)
        while str(text_b) != trace.start:
            await asyncio.sleep(0.01)
        want = len(trace.end.encode())
        start = time.perf_counter()
        for k in range(0, len(trace.edits), debounce):
            window = trace.edits[k:k + debounce]
            if batched:
                with a.transaction():
                    for edit in window:
                        apply_edit(text_a, edit)
            else:
                for edit in window:
                    with a.transaction():
                        apply_edit(text_a, edit)
            await asyncio.sleep(0)
        typed = time.perf_counter() - start
        while len(text_b) != want or str(text_b) != trace.end:
            await asyncio.sleep(0.005)
        return time.perf_counter() - start, typed, str(text_b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--edits", type=int, default=None, help="replay only the first N edits")
    ap.add_argument("--debounce", type=int, default=100)
    ap.add_argument("--sync-every", type=int, default=200, help="SDDSF: ops between syncs")
    args = ap.parse_args()
    trace = load(args.trace, args.edits)
    rows: dict[str, dict[str, object]] = {}
    base_s, base_text = baseline(trace)
    rows["baseline"] = {"seconds": base_s, "matches_end": base_text == trace.end}
    for name, store, batched in (
            ("pycrdt-websocket", False, False), ("pycrdt-websocket+SQLiteYStore", True, False),
            ("pycrdt-websocket, window per transaction", False, True),
            ("pycrdt-websocket+SQLiteYStore, window per transaction", True, True)):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, typed, text = asyncio.run(websocket_run(
                trace, args.debounce, Path(tmp) if store else None, batched))
        rows[name] = {"seconds": seconds, "typing_s": typed, "matches_end": text == trace.end}
    with tempfile.TemporaryDirectory() as tmp, relay_process(Path(tmp)) as url:
        seconds, text, ops = asyncio.run(sddsf_run(url, Path(tmp), trace, args.debounce,
                                                   args.sync_every))
    rows["sddsf"] = {"seconds": seconds, "matches_end": text == trace.end, "ops": ops}
    for row in rows.values():
        row["ratio"] = float(row["seconds"]) / base_s  # type: ignore[arg-type]
    print(json.dumps({"trace": args.trace.name, "edits": len(trace.edits),
                      "debounce": args.debounce, "runs": rows}, indent=2))
    if not all(row["matches_end"] for row in rows.values()):
        raise SystemExit("a run's text does not match the trace's end")


if __name__ == "__main__":
    main()
