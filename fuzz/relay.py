"""A relay in process for the HTTP fuzz target and the API fuzz test.

:class:`FuzzRelay` is the real app (``create_app``) over SQLite in a
directory the caller owns, reached through httpx's ASGI transport, with the
world's account (its whole registry), the space at epoch 0, an open pairing
channel and a session of the laptop. :meth:`FuzzRelay.request` sends any body
bytes, authenticated and signed exactly as a client signs them, so fuzzed
bodies reach the handlers instead of stopping at authentication. The clock
is the world's (the vectors' ops are fresh), and rate limits are lifted.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

from fuzz.world import vectors, world
from sddsf.client.relay_client import RelayClient
from sddsf.protocol import auth
from sddsf.relay.storage.sqlite import SqliteStorage
from sddsf.wire import b64

__all__ = ["BASE_URL", "FuzzRelay", "openapi_spec"]

BASE_URL = "http://relay.fuzz"
T = TypeVar("T")
_UNLIMITED = 1e12
_GENEROUS: Mapping[str, Any] = {
    "rate_device_per_s": _UNLIMITED, "rate_device_burst": _UNLIMITED,
    "rate_account_per_s": _UNLIMITED, "rate_account_burst": _UNLIMITED,
    "rate_ip_per_s": _UNLIMITED, "rate_ip_burst": _UNLIMITED,
    "pairing_max_messages": 1 << 30,
}


def _relaykit() -> Any:
    """``tests/relay/relaykit.py`` (the relay test world's app factory and clock)."""
    kit = Path(__file__).resolve().parent.parent / "tests" / "relay"
    if str(kit) not in sys.path:
        sys.path.append(str(kit))
    import relaykit  # type: ignore[import-not-found]  # noqa: PLC0415 - found once the path is set

    return relaykit


def openapi_spec() -> dict[str, Any]:
    """The relay's OpenAPI document (from an app whose storage is never opened)."""
    kit = _relaykit()
    spec: dict[str, Any] = kit.make_app(SqliteStorage("/nonexistent/relay.db"),
                                        kit.Clock()).openapi()
    return spec


class FuzzRelay:
    """The relay app over SQLite in ``directory``, set up for the world's laptop."""

    def __init__(self, directory: Path) -> None:
        kit = _relaykit()
        w = world()
        self.loop = asyncio.new_event_loop()
        self.storage = SqliteStorage(str(directory / "relay.db"))
        self.clock = kit.Clock(w.now_ms)
        self.app = kit.make_app(self.storage, self.clock, **_GENEROUS)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                      base_url=BASE_URL)
        self._nonces = itertools.count(1)
        self.token = b""
        self.channel = b""
        self.run(self._setup())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this relay's event loop."""
        return self.loop.run_until_complete(coro)

    async def _setup(self) -> None:
        w = world()
        await self.storage.open()
        client = RelayClient(BASE_URL, device=w.laptop, account_id=w.account.account_id,
                             transport=httpx.ASGITransport(app=self.app), clock=self.clock)
        try:
            await client.create_account(w.entries[0])
            for entry in w.entries[1:]:
                await client.append_registry(w.account.account_id, entry)
            package = bytes.fromhex(vectors("key_package")["valid"][0]["package"])
            await client.create_space(w.space, package)
            self.channel, _, _ = await client.open_channel(bytes(32))
            self.token = await client._session_token()
        finally:
            await client.aclose()

    def request(self, method: str, url: str, body: bytes = b"", *,
                params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None) -> httpx.Response:
        """Send ``body`` as the laptop would: bearer token, fresh nonce, signature."""
        nonce = next(self._nonces).to_bytes(auth.NONCE_SIZE, "big")
        ts = self.clock()
        request = self.http.build_request(method, url, params=params, content=body,
                                          headers={"content-type": "application/json",
                                                   **(headers or {})})
        target = request.url.raw_path.decode("ascii")
        signature = world().laptop.sign(auth.request_message(
            method, target, body, nonce, ts, auth.token_hash(self.token)))
        request.headers.update({"authorization": f"Bearer {b64(self.token)}",
                                "x-sddsf-nonce": b64(nonce), "x-sddsf-timestamp": str(ts),
                                "x-sddsf-signature": b64(signature)})
        return self.run(self.http.send(request))

    def path_ids(self) -> dict[str, str]:
        """The ids that exist here, as the API's path parameters spell them."""
        w = world()
        return {"account_id": b64(w.account.account_id), "space_id": b64(w.space),
                "doc_id": b64(w.doc), "channel_id": b64(self.channel)}

    def close(self) -> None:
        """Close the client, the storage and the loop."""
        self.run(self.http.aclose())
        self.run(self.storage.close())
        self.loop.close()

    def __enter__(self) -> FuzzRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
