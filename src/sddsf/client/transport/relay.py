"""The relay's HTTP + WebSocket API as a :class:`~sddsf.client.transport.base.Transport`.

Requests go through :class:`~sddsf.client.relay_client.RelayClient` (sessions,
request signatures, retries, error translation); this adapter gives its answers
the transport's typed shapes and adds the live channel: a WebSocket opened with
a single-use ticket, whose JSON frames become typed notifications.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import websockets

from sddsf.client.relay_client import RelayClient
from sddsf.client.transport.base import (
    AckResult,
    Attestations,
    Notification,
    OpNotice,
    Proof,
    PullPage,
    PushResult,
    RelayLimits,
    ResyncNotice,
    SessionInfo,
    SnapshotBlob,
    SpaceInfo,
    SubscribedNotice,
    Transport,
)
from sddsf.errors import DecodeError, SddsfError, UnavailableError, error_from_wire
from sddsf.wire import b64, unb64

__all__ = ["RelayTransport", "space_info"]

#: The largest live frame accepted (the relay's own bound on what it sends).
MAX_FRAME = 1 << 20


def space_info(raw: dict[str, object]) -> SpaceInfo:
    """A relay ``SpaceOut`` JSON object as a :class:`SpaceInfo`."""
    try:
        return SpaceInfo(unb64(str(raw["space_id"]), "space_id"), int(str(raw["size"])),
                         unb64(str(raw["root"]), "root"), int(str(raw["epoch"])))
    except (KeyError, TypeError, ValueError):
        raise DecodeError("the relay sent a malformed space") from None


class RelayTransport(Transport):
    """A device's connection to one relay (see the module docstring).

    Args:
        client: the relay client (owned: :meth:`aclose` closes it).
        base_url: the relay's URL, for the WebSocket (default: the client's).
    """

    def __init__(self, client: RelayClient, base_url: str | None = None) -> None:
        self.client = client
        self.base_url = (base_url or client.base_url).rstrip("/")

    @property
    def relay_id(self) -> bytes | None:
        """The relay key learnt at the last session opening."""
        return self.client.relay_id

    async def open_session(self) -> SessionInfo:
        """Open a session unless one is open (single flight, see RelayClient)."""
        await self.client.session_token()
        rid = self.client.relay_id
        if rid is None:  # pragma: no cover - a session opening learns it
            raise UnavailableError("the relay did not identify itself")
        return SessionInfo(rid, self.client.session_expires_ms)

    def forget_session(self) -> None:
        """Drop the session."""
        self.client.forget_session()

    async def limits(self) -> RelayLimits:
        """``GET /v1/limits`` (defaults for a relay without it)."""
        return await self.client.limits()

    async def create_account(self, genesis: bytes) -> bytes:
        """``POST /v1/accounts``."""
        return await self.client.create_account(genesis)

    async def registry(self, account_id: bytes, since: int = 0) -> list[bytes]:
        """``GET /v1/accounts/{id}/registry``, signed by the device key."""
        return await self.client.registry(account_id, since)

    async def append_registry(self, account_id: bytes, entry: bytes) -> int:
        """``POST /v1/accounts/{id}/registry``."""
        return await self.client.append_registry(account_id, entry)

    async def spaces(self) -> list[SpaceInfo]:
        """``GET /v1/spaces``."""
        return await self.client.list_spaces()

    async def create_space(self, space_id: bytes, key_package: bytes) -> SpaceInfo:
        """``POST /v1/spaces``."""
        return await self.client.create_space(space_id, key_package)

    async def key_packages(self, space_id: bytes, since_epoch: int = 0) -> list[bytes]:
        """``GET /v1/spaces/{id}/keys``."""
        return await self.client.key_packages(space_id, since_epoch)

    async def put_key_package(self, space_id: bytes, key_package: bytes) -> SpaceInfo:
        """``POST /v1/spaces/{id}/keys``."""
        return await self.client.put_key_package(space_id, key_package)

    async def push(self, space_id: bytes, envelopes: Sequence[bytes]) -> PushResult:
        """``POST /v1/spaces/{id}/ops`` with inclusion proofs."""
        results, head = await self.client.upload(space_id, envelopes)
        return PushResult(tuple(results), head)

    async def pull(self, space_id: bytes, after: int = -1, limit: int = 500) -> PullPage:
        """``GET /v1/spaces/{id}/ops``."""
        ops, head = await self.client.pull(space_id, after=after, limit=limit)
        return PullPage(tuple(ops), head)

    async def tree_head(self, space_id: bytes) -> bytes:
        """``GET /v1/spaces/{id}/tree-head``."""
        return await self.client.tree_head(space_id)

    async def inclusion_proof(self, space_id: bytes, index: int,
                              size: int | None = None) -> Proof:
        """``GET /v1/spaces/{id}/proofs/inclusion``."""
        hashes, head = await self.client.inclusion_proof(space_id, index, size)
        return Proof(tuple(hashes), head)

    async def consistency_proof(self, space_id: bytes, first: int,
                                second: int | None = None) -> Proof:
        """``GET /v1/spaces/{id}/proofs/consistency``."""
        hashes, head = await self.client.consistency_proof(space_id, first, second)
        return Proof(tuple(hashes), head)

    async def acknowledge(self, space_id: bytes, offset: int) -> AckResult:
        """``POST /v1/spaces/{id}/ack``."""
        acked, pruned = await self.client.acknowledge(space_id, offset)
        return AckResult(acked, pruned)

    async def get_snapshot(self, space_id: bytes, doc_id: bytes) -> SnapshotBlob:
        """``GET .../docs/{doc}/snapshot``."""
        covers, blob = await self.client.get_snapshot(space_id, doc_id)
        return SnapshotBlob(covers, blob)

    async def put_snapshot(self, space_id: bytes, doc_id: bytes, covers_offset: int,
                           blob: bytes) -> int:
        """``PUT .../docs/{doc}/snapshot``."""
        return await self.client.put_snapshot(space_id, doc_id, covers_offset, blob)

    async def get_snapshot_chunk(self, space_id: bytes, chunk_id: bytes) -> bytes:
        """``GET .../snapshot-chunks/{chunk}``."""
        return await self.client.get_snapshot_chunk(space_id, chunk_id)

    async def put_snapshot_chunk(self, space_id: bytes, chunk_id: bytes, blob: bytes) -> None:
        """``PUT .../snapshot-chunks/{chunk}``."""
        await self.client.put_snapshot_chunk(space_id, chunk_id, blob)

    async def attest_snapshot(self, space_id: bytes, doc_id: bytes, attestation: bytes) -> None:
        """``POST .../snapshot/attestations``."""
        await self.client.attest_snapshot(space_id, doc_id, attestation)

    async def snapshot_attestations(self, space_id: bytes, doc_id: bytes) -> Attestations:
        """``GET .../snapshot/attestations``."""
        sid, raws = await self.client.snapshot_attestations(space_id, doc_id)
        return Attestations(sid, tuple(raws))

    async def subscribe(self, space_ids: Sequence[bytes]) -> AsyncIterator[Notification]:
        """A WebSocket on ``/v1/ws`` (ticket from ``POST /v1/ws/ticket``)."""
        ticket = b64(await self.client.ws_ticket())
        url = self.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        try:
            async with websockets.connect(f"{url}/v1/ws?ticket={ticket}",
                                          max_size=MAX_FRAME) as ws:
                for space_id in space_ids:
                    await ws.send(json.dumps({"type": "subscribe", "space": b64(space_id)}))
                async for frame in ws:
                    notice = notification(frame)
                    if notice is not None:
                        yield notice
        except (OSError, websockets.WebSocketException) as exc:
            raise UnavailableError(f"the live channel to the relay at {self.base_url} "
                                   f"ended ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self.client.aclose()


def notification(frame: str | bytes) -> Notification | None:
    """A live frame as a notification; None for kinds a device ignores (alerts).

    Raises:
        SddsfError: the relay sent an error frame (its code), or a malformed one.
    """
    try:
        message = json.loads(frame)
        kind = message.get("type")
        if kind == "error":
            raise error_from_wire(str(message["code"]), str(message["message"]))
        if kind not in ("subscribed", "op", "resync"):
            return None
        space = unb64(str(message["space"]), "space")
        if kind == "subscribed":
            return SubscribedNotice(space, int(message["size"]))
        if kind == "op":
            return OpNotice(space, int(message["offset"]))
        return ResyncNotice(space)
    except SddsfError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DecodeError("the relay sent a malformed live frame") from None
