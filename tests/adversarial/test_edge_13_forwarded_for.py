"""``X-Forwarded-For`` from anyone (relay edge review, finding 13).

With ``trust_proxy_headers`` on, the relay took the leftmost ``X-Forwarded-For``
entry as the client's address whoever sent the header, so a client that wrote a
new address into each request had a fresh per-address bucket every time. The
relay now honours the header only when the TCP peer is one of
``trusted_proxies``, and then takes the rightmost address that is not a trusted
proxy (what the proxy itself appended); otherwise the socket peer counts.

Against a real ``sddsf relay serve`` process: the client connects from
127.0.0.1, the "proxy" from 127.0.0.2 (both loopback addresses on Linux).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest
from livekit import RelayProcess, Relays, write_key_file

BURST = 5
PROXY = "127.0.0.2"
_spoofed = (f"203.0.113.{i % 250}" for i in itertools.count(1))


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("edge13-relay")
    key = write_key_file(work / "relay.key")
    started = Relays(work)
    env = {"SDDSF_RELAY_KEY_FILE": str(key), "SDDSF_RELAY_TRUST_PROXY_HEADERS": "true",
           "SDDSF_RELAY_TRUSTED_PROXIES": PROXY,
           "SDDSF_RELAY_RATE_IP_PER_S": "0.001", "SDDSF_RELAY_RATE_IP_BURST": str(BURST)}
    try:
        yield started.start("--db", f"sqlite:///{work / 'relay.db'}", env=env)
    finally:
        started.stop_all()


def from_address(relay: RelayProcess, local: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=relay.base_url, timeout=5,
                             transport=httpx.AsyncHTTPTransport(local_address=local))


async def statuses(h: httpx.AsyncClient, forwarded: list[str]) -> list[int]:
    out = []
    for value in forwarded:
        r = await h.get("/v1/limits", headers={"x-forwarded-for": value})  # IP-limited
        out.append(r.status_code)
    return out


async def test_a_client_cannot_pick_its_address(relay: RelayProcess) -> None:
    async with from_address(relay, "127.0.0.1") as h:
        got = await statuses(h, [next(_spoofed) for _ in range(3 * BURST)])
    assert got[:BURST] == [200] * BURST
    assert set(got[BURST:]) == {429}, got


async def test_a_trusted_proxy_names_the_client_and_cannot_be_fooled_through(
        relay: RelayProcess) -> None:
    async with from_address(relay, PROXY) as proxy:
        # two clients behind the proxy have their own buckets
        assert await statuses(proxy, ["198.51.100.7"] * BURST) == [200] * BURST
        assert await statuses(proxy, ["198.51.100.7"]) == [429]
        assert await statuses(proxy, ["198.51.100.8"]) == [200]
        # a client behind the proxy writes its own X-Forwarded-For: the proxy
        # appends the real address, and that one counts
        spoofs = [f"{next(_spoofed)}, 198.51.100.9" for _ in range(2 * BURST)]
        got = await statuses(proxy, spoofs)
        # a proxy that writes the client's port: the port is not part of the address
        ported = await statuses(proxy, [f"198.51.100.10:{40000 + i}" for i in range(2 * BURST)])
    assert got[:BURST] == [200] * BURST and set(got[BURST:]) == {429}, got
    assert ported[:BURST] == [200] * BURST and set(ported[BURST:]) == {429}, ported
