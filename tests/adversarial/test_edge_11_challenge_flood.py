"""Challenge flooding (relay edge review, finding 11).

Device ids are public (every registry entry names them), and asking for a
session challenge needs no credential. When the relay kept ONE outstanding
challenge per (account, device), anyone could keep replacing it from many
addresses and no real session opening succeeded. Challenges are now stateless
(a relay-MAC'd value carrying its issue time; only a *used* challenge is
remembered, for single use), so a flood of requests for the same device
replaces nothing: every real opening succeeds, on one node and across nodes.

Against real ``sddsf relay serve`` processes on loopback: one on SQLite, and two
nodes of the shared cluster (PostgreSQL + Redis). The per-address limit is
lifted, as for an attacker with many addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from clusterkit import Cluster, new_world
from livekit import RelayProcess, Relays, client, write_key_file
from relaykit import World

from sddsf.protocol import auth
from sddsf.wire import b64, unb64

OPENINGS = 40
ATTACKERS = 6
NO_IP_LIMIT = {"SDDSF_RELAY_RATE_IP_PER_S": "100000", "SDDSF_RELAY_RATE_IP_BURST": "100000"}


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("edge11-relay")
    key = write_key_file(work / "relay.key")
    started = Relays(work)
    try:
        yield started.start("--db", f"sqlite:///{work / 'relay.db'}",
                            env={"SDDSF_RELAY_KEY_FILE": str(key), **NO_IP_LIMIT})
    finally:
        started.stop_all()


def ids(world: World, device: int = 0) -> dict[str, str]:
    return {"account_id": b64(world.account.account_id),
            "device_id": b64(world.devices[device].device_id)}


@contextlib.asynccontextmanager
async def flooding(urls: list[str], world: World) -> AsyncIterator[list[int]]:
    """Attackers asking for the device's challenge in a loop on every url; yields a
    one-item list counting their requests."""
    stop = asyncio.Event()
    count = [0]

    async def attack(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, transport=httpx.AsyncHTTPTransport(),
                                     timeout=10) as http:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    await http.post("/v1/auth/challenge", json=ids(world))
                    count[0] += 1

    tasks = [asyncio.create_task(attack(urls[i % len(urls)])) for i in range(ATTACKERS)]
    try:
        while count[0] < 20:  # the flood is under way before the device tries
            await asyncio.sleep(0.01)
        yield count
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def open_session(http_a: httpx.AsyncClient, http_b: httpx.AsyncClient,
                       world: World) -> tuple[int, str | None, dict[str, str]]:
    """One real session opening: the challenge from A, the signed answer to B."""
    ch = (await http_a.post("/v1/auth/challenge", json=ids(world))).json()
    challenge, relay_id = unb64(ch["challenge"]), unb64(ch["relay_id"])
    sig = world.devices[0].sign(auth.session_message(
        relay_id, world.account.account_id, world.devices[0].device_id, challenge))
    body = {**ids(world), "challenge": ch["challenge"], "signature": b64(sig)}
    r = await http_b.post("/v1/auth/session", json=body)
    return r.status_code, r.json().get("code"), body


def http(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, transport=httpx.AsyncHTTPTransport(), timeout=10)


async def test_a_challenge_flood_does_not_stop_session_openings(relay: RelayProcess) -> None:
    world = World()
    async with client(relay, world) as c:
        await c.create_account(world.entries[0])
    async with flooding([relay.base_url], world) as count, http(relay.base_url) as h:
        outcomes = [(await open_session(h, h, world))[:2] for _ in range(OPENINGS)]
        ok = sum(1 for o in outcomes if o[0] == 200)
        assert ok == OPENINGS, f"{ok} of {OPENINGS} session openings succeeded " \
                               f"against {count[0]} challenge requests: {set(outcomes)}"
        # and through the reference client (which also retries once)
        async with client(relay, world) as c:
            for _ in range(5):
                c.forget_session()
                await c.list_spaces()


async def test_a_used_challenge_is_refused(relay: RelayProcess) -> None:
    world = World()
    async with client(relay, world) as c:
        await c.create_account(world.entries[0])
    async with http(relay.base_url) as h:
        status, _, body = await open_session(h, h, world)
        assert status == 200
        again = await h.post("/v1/auth/session", json=body)
        assert (again.status_code, again.json()["code"]) == (401, "unauthenticated")
        other = World()  # the challenge was made for another (account, device)
        moved = {**body, **ids(other)}
        r = await h.post("/v1/auth/session", json=moved)
        assert r.status_code == 401


async def test_two_nodes_under_a_flood(cluster: Cluster) -> None:
    a, b = cluster.nodes[0], cluster.nodes[1]
    world = await new_world(a, devices=1)
    urls = [a.base_url, b.base_url]
    async with flooding(urls, world) as count, http(a.base_url) as ha, \
            http(b.base_url) as hb:
        outcomes = []
        for i in range(OPENINGS):
            first, second = (ha, hb) if i % 2 else (hb, ha)
            outcomes.append(await open_session(first, second, world))
        ok = sum(1 for o in outcomes if o[0] == 200)
        assert ok == OPENINGS, f"{ok} of {OPENINGS} openings across two nodes succeeded " \
                               f"against {count[0]} challenge requests"
        # single use holds across nodes: the answer used on one node is refused on both
        for h in (ha, hb):
            r = await h.post("/v1/auth/session", json=outcomes[0][2])
            assert (r.status_code, r.json()["code"]) == (401, "unauthenticated")


async def test_concurrent_openings_of_one_device_all_succeed(relay: RelayProcess,
                                                             cluster: Cluster) -> None:
    """Several session openings of one device at the same moment (a runner's sync
    and WebSocket loops after a restart; a proxy duplicating the handshake): the
    relay holds no per-device challenge slot, so every one succeeds, on one node
    and with challenge and answer on different nodes."""
    world = World()
    async with client(relay, world) as c:
        await c.create_account(world.entries[0])
    async with http(relay.base_url) as h:
        for _ in range(10):
            outcomes = await asyncio.gather(*(open_session(h, h, world) for _ in range(4)))
            assert [o[0] for o in outcomes] == [200] * 4, outcomes
    world = await new_world(cluster.nodes[0])
    # Nodes 0 and 1 (90 s apart; nodes 0 and 2 are 180 s apart, more than
    # challenge_ttl_s, so a challenge of one has expired on the other).
    async with http(cluster.nodes[0].base_url) as a, http(cluster.nodes[1].base_url) as b:
        for _ in range(10):
            outcomes = await asyncio.gather(open_session(a, b, world), open_session(b, a, world),
                                            open_session(a, a, world))
            assert [o[0] for o in outcomes] == [200] * 3, outcomes
