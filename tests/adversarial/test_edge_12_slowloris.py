"""Slow-loris (relay edge review, finding 12).

Half-open requests (a request head that never ends, a body that never arrives)
were held forever, so enough of them exhausted the relay's file descriptors and
``/healthz`` stopped answering. The relay now closes a connection whose request
head is not complete within ``header_timeout_s``, answers 408 to a body that
does not arrive within ``body_timeout_s``, and keeps at most ``max_connections``
open (at the cap a new connection closes the longest-idle one that is not in a
request; a connection only ever waiting for its head is always such a one).

Against a real ``sddsf relay serve`` process whose file descriptors are limited
to 256, with ``max_connections`` 100 and short timeouts, and 300 slow
connections plus 20 slow bodies: ``/healthz`` keeps answering throughout, every
slow connection is closed by the relay, a slow body gets 408, and a normal
client still works afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator

import httpx
import pytest
from livekit import RelayProcess, Relays, _wait_healthy, free_port, write_key_file

SLOW_HEADS = 300
SLOW_BODIES = 20
FD_LIMIT = 256
# Start the relay with a lowered file-descriptor budget.
LIMITED = ("import resource, runpy, sys\n"
           f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT}))\n"
           "sys.argv = ['sddsf', *sys.argv[1:]]\n"
           "runpy.run_module('sddsf', run_name='__main__', alter_sys=True)\n")


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("edge12-relay")
    key = write_key_file(work / "relay.key")
    relays = Relays(work)
    env = {"SDDSF_RELAY_KEY_FILE": str(key), "SDDSF_RELAY_MAX_CONNECTIONS": "100",
           "SDDSF_RELAY_HEADER_TIMEOUT_S": "2", "SDDSF_RELAY_BODY_TIMEOUT_S": "3"}
    try:
        port = free_port()
        argv = [sys.executable, "-c", LIMITED, "relay", "serve", "--db",
                f"sqlite:///{work / 'relay.db'}", "--port", str(port)]
        process = relays._spawn(argv, port, env)
        assert _wait_healthy(process), process.log()
        yield process
    finally:
        relays.stop_all()


async def healthz(relay: RelayProcess) -> int:
    """A fresh connection's ``/healthz`` status (0 when it cannot get an answer)."""
    try:
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), timeout=5) as h:
            return (await h.get(f"{relay.base_url}/healthz")).status_code
    except httpx.HTTPError:
        return 0


async def slow_head(relay: RelayProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: ")  # never finished
    await writer.drain()
    return reader, writer


async def slow_body(relay: RelayProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"POST /v1/accounts HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 1000\r\n\r\n{")  # 999 bytes never come
    await writer.drain()
    return reader, writer


async def closed_by_relay(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """What the relay sent before closing (None if it kept the connection open)."""
    try:
        async with asyncio.timeout(timeout):
            return await reader.read()
    except TimeoutError:
        return None
    except ConnectionError:
        return b""


async def test_slow_connections_are_closed_and_healthz_keeps_answering(
        relay: RelayProcess) -> None:
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    statuses = []
    try:
        for i in range(SLOW_HEADS):
            with contextlib.suppress(OSError):
                held.append(await slow_head(relay))
            if i % 60 == 59:
                statuses.append(await healthz(relay))
        bodies = [await slow_body(relay) for _ in range(SLOW_BODIES)]
        held += bodies
        statuses.append(await healthz(relay))
        assert statuses == [200] * len(statuses), statuses
        # the relay closes every one of them (header/body timeouts, or the cap)
        answers = await asyncio.gather(*(closed_by_relay(r, 30) for r, _ in held))
        still_open = sum(1 for a in answers if a is None)
        assert still_open == 0, f"{still_open} of {len(held)} slow connections still open"
        body_answers = answers[-SLOW_BODIES:]
        assert any(a and a.startswith(b"HTTP/1.1 408") for a in body_answers), body_answers
        assert await healthz(relay) == 200
    finally:
        for _, writer in held:
            writer.close()
    # a normal client is served as before
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), timeout=5) as h:
        r = await h.get(f"{relay.base_url}/v1/limits")
        assert r.status_code == 200
