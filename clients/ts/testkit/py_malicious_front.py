"""A lying relay served to a browser (the browser attack tests).

One process: a real relay app (SQLite in DIR, the real `create_app`) behind
the project's malicious-relay harness (`sddsf.testing.malicious_relay`),
served with the web app's files on one origin by `sddsf web`'s front
(`sddsf.cli.web_cmds.WebFront`) on a free loopback port. Python devices (the
`sddsf` CLI) use the same URL as their relay; the harness lies only to the
victims the test names.

Usage: python py_malicious_front.py DIR DIST
Prints one JSON line {"url": ...} once listening. The test steers the harness
with POST /__harness (JSON, answered with JSON):

  {"op": "attack", "kind": "rewrite", "offset": N, "victims": [HEX], "space": HEX}
      a flipped ciphertext bit in the op at offset N (its leaf hash kept), from
      when the log has it
  {"op": "attack", "kind": "rollback", "to_size": N, "victims": [HEX], "space": HEX}  the log
      as it was at N entries, under the head the relay signed then
  {"op": "honest"}                         stop lying
  {"op": "size", "space": HEX}             the space's genuine log size
  {"op": "fork"}                           a second backend over a copy of the database
  {"op": "route", "device": HEX, "backend": "fork" | "main"}
  {"op": "merge", "space": HEX, "src": NAME, "dst": NAME}
  {"op": "served"}                         how many pulls an attack answered
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from sddsf.cli.web_cmds import WebFront
from sddsf.crypto import Ed25519SigningKey, random_bytes
from sddsf.relay.app import create_app
from sddsf.relay.settings import RelaySettings
from sddsf.relay.storage import open_storage
from sddsf.testing.malicious_relay import (
    AttackTools,
    LogEntry,
    MaliciousRelay,
    Rewrite,
    Rollback,
    Served,
    clone_relay_app,
    copy_sqlite_database,
)


@dataclass(frozen=True)
class RewriteWhenThere(Rewrite):
    """Rewrite: honest until the log has an op at ``offset`` (the browser pulls on
    its own, live, so the attack is set before the op is written)."""

    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        if len(log) <= self.offset:
            return Served(list(log), tools.head.raw)
        return super().serve(log, tools)


class Control:
    """The test's handle on the harness (POST /__harness)."""

    def __init__(self, harness: MaliciousRelay, app: Any, work: Path, db: Path) -> None:
        self.harness, self.app, self.work, self.db = harness, app, work, db
        self.extra: list[Any] = []

    async def __call__(self, body: dict[str, Any]) -> Any:
        harness, app, work, db, extra = self.harness, self.app, self.work, self.db, self.extra
        op = body["op"]
        victims = [bytes.fromhex(v) for v in body.get("victims", [])] or None
        spaces = [bytes.fromhex(body["space"])] if "space" in body else None
        if op == "attack" and body["kind"] == "rewrite":
            harness.set_attack(RewriteWhenThere(int(body["offset"])), victims=victims,
                              spaces=spaces)
        elif op == "attack" and body["kind"] == "rollback":
            harness.set_attack(Rollback(int(body["to_size"])), victims=victims, spaces=spaces)
        elif op == "honest":
            harness.honest()
        elif op == "size":
            return {"size": len(await harness.log(bytes.fromhex(body["space"])))}
        elif op == "fork":
            copy = work / "relay-fork.db"
            copy_sqlite_database(db, copy)
            forked = open_storage(f"sqlite:///{copy}")
            await forked.open()
            extra.append(forked)
            harness.add_backend("fork", httpx.ASGITransport(app=clone_relay_app(app, forked)))
        elif op == "route":
            harness.route(bytes.fromhex(body["device"]), body.get("backend", "main"))
        elif op == "merge":
            return {"appended": await harness.merge(bytes.fromhex(body["space"]),
                                                    src=body["src"], dst=body["dst"])}
        elif op == "served":
            return {"served": harness.served}
        else:
            raise ValueError(f"unknown op {op!r}")
        return {"ok": True}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(work: Path, dist: Path) -> None:
    db = work / "relay.db"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = RelaySettings(db=f"sqlite:///{db}", key_file=str(work / "unused.key"))
    storage = open_storage(settings.db)
    app = create_app(settings, storage, Ed25519SigningKey.from_seed(random_bytes(32)),
                     clock=lambda: time.time_ns() // 1_000_000)
    harness = MaliciousRelay(httpx.ASGITransport(app=app))
    front = WebFront(dist, "http://relay.internal", transport=harness, websocket_app=app)
    control = Control(harness, app, work, db)

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/__harness":
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            try:
                answer, status = await control(json.loads(b"".join(chunks))), 200
            except Exception as exc:  # reported to the test
                answer, status = {"error": f"{type(exc).__name__}: {exc}"}, 500
            body = json.dumps(answer).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await front(scope, receive, send)

    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning", ws="websockets",
                                           timeout_keep_alive=600))
    async with app.router.lifespan_context(app):  # opens the storage, starts the live channel
        task = asyncio.ensure_future(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        print(json.dumps({"url": url}), flush=True)
        await task
        for s in control.extra:
            await s.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
