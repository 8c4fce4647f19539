"""Test kit of the controller tests: an in-process relay (real SQLite, injected
clock) with a policy file, and an account whose devices act through real signed
requests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from relaykit import Clock, World, client_for, make_app

from sddsf.client.relay_client import RelayClient
from sddsf.client.results import ReportReceipt
from sddsf.client.transport.base import SpaceInfo
from sddsf.crypto import random_bytes
from sddsf.protocol import auth
from sddsf.protocol.posture import Posture, ReportKind, sign_report
from sddsf.relay.storage import open_storage
from sddsf.relay.storage.base import RelayStorage
from sddsf.wire import b64

GOOD = Posture("Linux", "6.1.0", "0.1.0", bytes(32), "keyring", "no")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def write_policy(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@dataclass
class Account:
    """One account on the relay, its devices' clients, and the relay's pieces."""

    app: Any
    storage: RelayStorage
    clock: Clock
    world: World = field(default_factory=World)
    clients: list[RelayClient] = field(default_factory=list)
    #: The relay's answer to the space :meth:`start` created.
    created: SpaceInfo | None = None

    @property
    def aid(self) -> bytes:
        return self.world.account.account_id

    def device_id(self, i: int) -> bytes:
        return self.world.devices[i].device_id

    @property
    def controller(self) -> Any:
        return self.app.state.relay.controller

    def client(self, i: int) -> RelayClient:
        return self.clients[i]

    async def start(self, devices: int) -> Account:
        self.clients = [client_for(self.app, self.world, i, self.clock) for i in range(devices)]
        await self.clients[0].create_account(self.world.entries[0])
        for i in range(1, devices):
            await self.clients[0].append_registry(self.aid,
                                                  self.world.add_device(i, self.clock.now))
        self.created = await self.clients[0].create_space(self.world.space,
                                                          self.world.key_package())
        return self

    def posture_report(self, i: int, posture: Posture = GOOD) -> bytes:
        return sign_report(self.world.devices[i], self.aid, ReportKind.POSTURE,
                           posture.to_data(), self.clock.now)

    async def posture(self, i: int, posture: Posture = GOOD) -> ReportReceipt:
        return await self.clients[i].submit_report(self.aid, self.posture_report(i, posture))

    async def report(self, i: int, kind: ReportKind, data: dict[str, object]) -> ReportReceipt:
        report = sign_report(self.world.devices[i], self.aid, kind, data, self.clock.now)
        return await self.clients[i].submit_report(self.aid, report)

    async def push(self, i: int, n: int = 1) -> list[str]:
        envs = [self.world.op(i, ts=self.clock.now).raw for _ in range(n)]
        results, _ = await self.clients[i].upload(self.world.space, envs, proofs=False)
        return [r.status for r in results]

    async def alerts(self, *, include_acked: bool = False) -> list[dict[str, Any]]:
        return [a for a in await self.controller.alerts(self.aid, include_acked=include_acked)]

    async def rules(self) -> list[tuple[str, bytes]]:
        return [(a.rule, a.device_id) for a in await self.alerts(include_acked=True)]

    async def close(self) -> None:
        for c in self.clients:
            await c.aclose()


async def replay(client: RelayClient, path: str, body: dict[str, object], times: int,
                 later_ms: int = 11_000) -> list[int]:
    """Send one signed request ``times`` times with the same nonce; the statuses.
    Each copy comes ``later_ms`` after the previous one on the client's test
    clock (by default past the relay's 10 s duplicate grace: a replay of an old
    request, not a retrying proxy's duplicate)."""
    token = await client._session_token()
    content = json.dumps(body).encode()
    nonce, ts = random_bytes(auth.NONCE_SIZE), client._clock()
    assert client.device is not None
    sig = client.device.sign(auth.request_message("POST", path, content, nonce, ts,
                                                  auth.token_hash(token)))
    headers = {"content-type": "application/json", "authorization": f"Bearer {b64(token)}",
               "x-sddsf-nonce": b64(nonce), "x-sddsf-timestamp": str(ts),
               "x-sddsf-signature": b64(sig)}
    statuses = []
    for i in range(times):
        if i and isinstance(client._clock, Clock):
            client._clock.now += later_ms
        r = await client._http.request("POST", path, content=content, headers=headers)
        statuses.append(r.status_code)
    return statuses


def bad_signature(envelope: bytes) -> bytes:
    """The envelope with its signature's last byte flipped."""
    return envelope[:-1] + bytes([envelope[-1] ^ 1])


async def open_relay(tmp_path: Path, clock: Clock, policy: str = "") -> tuple[Any, RelayStorage]:
    storage = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    await storage.open()
    overrides: dict[str, object] = {}
    if policy:
        overrides["policy_file"] = write_policy(tmp_path / "policy.toml", policy)
    return make_app(storage, clock, **overrides), storage


__all__ = ["DAY_MS", "GOOD", "HOUR_MS", "Account", "bad_signature", "httpx", "open_relay",
           "replay"]
