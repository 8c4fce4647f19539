"""The relay's HTTP + WebSocket API as a :class:`~sddsf.client.transport.base.Transport`.

Requests go through :class:`~sddsf.client.relay_client.RelayClient` (sessions,
request signatures, retries, error translation); this adapter gives its answers
the transport's typed shapes and adds the live channel: a WebSocket opened with
a single-use ticket, whose JSON frames become typed notifications.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence

import websockets

from sddsf.client.relay_client import RelayClient
from sddsf.client.transport.base import (
    AckResult,
    AlertNotice,
    Attestations,
    MembershipAppended,
    MembershipLog,
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
from sddsf.client.transport.prefetch import Prefetched
from sddsf.crypto import Ed25519PublicKey, random_bytes
from sddsf.errors import (
    AuthorizationError,
    Code,
    DecodeError,
    NotFoundError,
    SddsfError,
    UnavailableError,
    error_from_wire,
)
from sddsf.protocol.bootstrap import BOOTSTRAP_FEATURE, NONCE_SIZE, verify_bootstrap
from sddsf.wire import b64, unb64

__all__ = ["RelayTransport", "live_closed"]

#: The largest live frame accepted (the relay's own bound on what it sends).
MAX_FRAME = 1 << 20


class RelayTransport(Transport):
    """A device's connection to one relay (see the module docstring).

    Each method keeps the contract of :class:`~sddsf.client.transport.base.Transport`
    (its docstrings are inherited) and is one relay request, through the
    client (which retries what may be retried, opens the session again once
    when the relay forgot it, and turns each error answer into the
    :class:`~sddsf.errors.SddsfError` of its code):

    * ``open_session``: ``POST /v1/auth/challenge``, then ``POST /v1/auth/session``
    * ``limits``: ``GET /v1/limits`` (defaults for a relay without it)
    * ``create_account``: ``POST /v1/accounts``
    * ``registry``: ``GET /v1/accounts/{id}/registry``, signed by the device key
    * ``append_registry``: ``POST /v1/accounts/{id}/registry``
    * ``spaces``: ``GET /v1/spaces``
    * ``create_space``: ``POST /v1/spaces``
    * ``key_packages``: ``GET /v1/spaces/{id}/keys``
    * ``put_key_package``: ``POST /v1/spaces/{id}/keys``
    * ``push``: ``POST /v1/spaces/{id}/ops``, with inclusion proofs
    * ``pull``: ``GET /v1/spaces/{id}/ops``
    * ``tree_head``: ``GET /v1/spaces/{id}/tree-head``
    * ``inclusion_proof``: ``GET /v1/spaces/{id}/proofs/inclusion``
    * ``consistency_proof``: ``GET /v1/spaces/{id}/proofs/consistency``
    * ``acknowledge``: ``POST /v1/spaces/{id}/ack``
    * ``get_snapshot``: ``GET /v1/spaces/{id}/docs/{doc}/snapshot``
    * ``put_snapshot``: ``PUT /v1/spaces/{id}/docs/{doc}/snapshot``
    * ``get_snapshot_chunk``: ``GET /v1/spaces/{id}/snapshot-chunks/{chunk}``
    * ``put_snapshot_chunk``: ``PUT /v1/spaces/{id}/snapshot-chunks/{chunk}``
    * ``attest_snapshot``: ``POST /v1/spaces/{id}/docs/{doc}/snapshot/attestations``
    * ``snapshot_attestations``: ``GET /v1/spaces/{id}/docs/{doc}/snapshot/attestations``
    * ``put_presence``: ``PUT /v1/spaces/{id}/presence``
    * ``presence``: ``GET /v1/spaces/{id}/presence``
    * ``subscribe``: ``POST /v1/ws/ticket``, then a WebSocket on ``/v1/ws``
    * ``prefetch_first_sync``: ``GET /v1/bootstrap`` when the session lists the
      ``bootstrap`` feature; the reads above that it holds are then answered
      from it until ``end_prefetch`` or any write, and the client's
      ``encryption_policy`` read until ``end_prefetch`` (protocol 17.9)

    Args:
        client: the relay client (owned: :meth:`aclose` closes it).
        base_url: the relay's URL, for the WebSocket (default: the client's).
    """

    def __init__(self, client: RelayClient, base_url: str | None = None) -> None:
        self.client = client
        self.base_url = (base_url or client.base_url).rstrip("/")
        #: The first-sync bundle answering reads (see prefetch_first_sync).
        self._pre: Prefetched | None = None

    @property
    def relay_id(self) -> bytes | None:
        return self.client.relay_id

    async def open_session(self) -> SessionInfo:
        await self.client.session_token()
        rid = self.client.relay_id
        if rid is None:  # pragma: no cover - a session opening learns it
            raise UnavailableError("the relay did not identify itself")
        return SessionInfo(rid, self.client.session_expires_ms)

    def forget_session(self) -> None:
        self.client.forget_session()

    async def limits(self) -> RelayLimits:
        return await self.client.limits()

    async def prefetch_first_sync(self) -> bool:
        self._pre = None
        await self.open_session()
        device, account, rid = self.client.device, self.client.account_id, self.client.relay_id
        if BOOTSTRAP_FEATURE not in self.client.features or device is None \
                or account is None or rid is None:
            return False  # a relay from before the bundle: the reads go to their endpoints
        nonce = random_bytes(NONCE_SIZE)
        try:
            raw = await self.client.bootstrap(nonce)
        except NotFoundError:
            return False  # a node without the endpoint (e.g. mid-upgrade): read each one
        bundle = verify_bootstrap(raw, Ed25519PublicKey.from_bytes(rid), account=account,
                                  device=device.device_id, nonce=nonce)
        self._pre, self.client.held_policy = Prefetched(bundle), bundle.policy
        return True

    def end_prefetch(self) -> None:
        self._pre = self.client.held_policy = None

    def _wrote(self) -> None:
        # A write makes the bundle stale: every later read asks the relay.
        self._pre = None

    async def create_account(self, genesis: bytes) -> bytes:
        return await self.client.create_account(genesis)

    async def registry(self, account_id: bytes, since: int = 0) -> list[bytes]:
        held = self._pre.registry(account_id, since) if self._pre else None
        return held if held is not None else await self.client.registry(account_id, since)

    async def append_registry(self, account_id: bytes, entry: bytes) -> int:
        self._wrote()
        return await self.client.append_registry(account_id, entry)

    async def spaces(self) -> list[SpaceInfo]:
        return self._pre.spaces() if self._pre else await self.client.list_spaces()

    async def create_space(self, space_id: bytes, key_package: bytes) -> SpaceInfo:
        self._wrote()
        return await self.client.create_space(space_id, key_package)

    async def membership(self, space_id: bytes) -> MembershipLog:
        return await self.client.membership(space_id)

    async def append_membership(self, space_id: bytes, entry: bytes) -> MembershipAppended:
        self._wrote()
        return await self.client.append_membership(space_id, entry)

    async def key_packages(self, space_id: bytes, since_epoch: int = 0) -> list[bytes]:
        held = self._pre.key_packages(space_id, since_epoch) if self._pre else None
        return held if held is not None else await self.client.key_packages(space_id,
                                                                             since_epoch)

    async def put_key_package(self, space_id: bytes, key_package: bytes) -> SpaceInfo:
        self._wrote()
        return await self.client.put_key_package(space_id, key_package)

    async def push(self, space_id: bytes, envelopes: Sequence[bytes]) -> PushResult:
        self._wrote()
        results, head = await self.client.upload(space_id, envelopes)
        return PushResult(tuple(results), head)

    async def pull(self, space_id: bytes, after: int = -1, limit: int = 500, *,
                   omit_own: bool = False) -> PullPage:
        held = self._pre.pull(space_id, after, limit) if self._pre else None
        if held is not None:
            return held
        ops, head = await self.client.pull(space_id, after=after, limit=limit,
                                           omit_own=omit_own)
        return PullPage(tuple(ops), head)

    async def tree_head(self, space_id: bytes) -> bytes:
        return await self.client.tree_head(space_id)

    async def inclusion_proof(self, space_id: bytes, index: int,
                              size: int | None = None) -> Proof:
        hashes, head = await self.client.inclusion_proof(space_id, index, size)
        return Proof(tuple(hashes), head)

    async def consistency_proof(self, space_id: bytes, first: int,
                                second: int | None = None) -> Proof:
        hashes, head = await self.client.consistency_proof(space_id, first, second)
        return Proof(tuple(hashes), head)

    async def acknowledge(self, space_id: bytes, offset: int) -> AckResult:
        self._wrote()
        acked, pruned = await self.client.acknowledge(space_id, offset)
        return AckResult(acked, pruned)

    async def get_snapshot(self, space_id: bytes, doc_id: bytes) -> SnapshotBlob:
        held = self._pre.snapshot(space_id, doc_id) if self._pre else None
        if held is not None:
            return held
        covers, blob = await self.client.get_snapshot(space_id, doc_id)
        return SnapshotBlob(covers, blob)

    async def put_snapshot(self, space_id: bytes, doc_id: bytes, covers_offset: int,
                           blob: bytes) -> int:
        self._wrote()
        return await self.client.put_snapshot(space_id, doc_id, covers_offset, blob)

    async def get_snapshot_chunk(self, space_id: bytes, chunk_id: bytes) -> bytes:
        held = self._pre.chunk(space_id, chunk_id) if self._pre else None
        if held is not None:
            return held
        return await self.client.get_snapshot_chunk(space_id, chunk_id)

    async def put_snapshot_chunk(self, space_id: bytes, chunk_id: bytes, blob: bytes) -> None:
        self._wrote()
        await self.client.put_snapshot_chunk(space_id, chunk_id, blob)

    async def attest_snapshot(self, space_id: bytes, doc_id: bytes, attestation: bytes) -> None:
        self._wrote()
        await self.client.attest_snapshot(space_id, doc_id, attestation)

    async def snapshot_attestations(self, space_id: bytes, doc_id: bytes) -> Attestations:
        held = self._pre.attestations(space_id, doc_id) if self._pre else None
        if held is not None:
            return held
        sid, raws = await self.client.snapshot_attestations(space_id, doc_id)
        return Attestations(sid, tuple(raws))

    async def put_presence(self, space_id: bytes, record: bytes) -> None:
        # Presence is not part of the first-sync bundle: nothing prefetched goes stale.
        await self.client.put_presence(space_id, record)

    async def presence(self, space_id: bytes) -> list[bytes]:
        return await self.client.presence(space_id)

    async def subscribe(self, space_ids: Sequence[bytes]) -> AsyncIterator[Notification]:
        """Follow the spaces over a WebSocket on ``/v1/ws``.

        The socket is opened with a single-use ticket (``POST /v1/ws/ticket``,
        which needs a session) when iteration starts; then one ``subscribe``
        frame is sent per space. Frames of kinds a device does not know are
        skipped; a frame larger than ``MAX_FRAME`` (1 MiB) ends the channel.

        Args:
            space_ids: The spaces to follow.

        Yields:
            One :class:`~sddsf.client.transport.base.SubscribedNotice` per space,
            then an :class:`~sddsf.client.transport.base.OpNotice` per appended
            entry (a hint: pull and verify it), a
            :class:`~sddsf.client.transport.base.ResyncNotice` when the relay
            dropped some, and an :class:`~sddsf.client.transport.base.AlertNotice`
            per alert of the relay's controller. The iteration ends when the
            relay closes the socket normally.

        Raises:
            AuthorizationError: the relay closed the channel because this device
                may no longer read (code ``revoked`` or ``policy_denied``).
            UnavailableError: the socket could not be opened or ended abnormally.
            SddsfError: the relay sent an error frame (the class of its code, e.g.
                ``NotFoundError`` for a space that is not this account's).
            DecodeError: the relay sent a malformed frame.
        """
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
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == _CLOSED_FOR_DEVICE:
                raise live_closed(exc.rcvd.reason) from None
            raise UnavailableError(f"the live channel to the relay at {self.base_url} "
                                   f"ended ({type(exc).__name__})") from None
        except (OSError, websockets.WebSocketException) as exc:
            raise UnavailableError(f"the live channel to the relay at {self.base_url} "
                                   f"ended ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        await self.client.aclose()


#: The close code of a live channel the relay ends because the device may no
#: longer read (revoked, denied by the controller); the reason is the error code.
_CLOSED_FOR_DEVICE = 4403


def _alert(message: dict[str, object]) -> AlertNotice:
    # Missing fields are empty; a device name that is not base64 is left out
    # (an alert is shown, never acted on).
    about = message.get("device")
    device = None
    if isinstance(about, str) and about:
        with contextlib.suppress(SddsfError):
            device = unb64(about, "device")
    severity = message.get("severity")
    return AlertNotice(str(message.get("rule", "")), str(message.get("message", "")),
                       str(severity) if severity else None, device)


def live_closed(reason: str) -> SddsfError:
    """The error a live channel closed for this device ends with (every transport).

    Args:
        reason: the relay's reason: a stable error code (``revoked``,
            ``policy_denied``) or free text.

    Returns:
        The typed error of that code when it is an authorization code, else an
        ``AuthorizationError`` (``revoked``) naming the reason.

    Raises:
        Nothing of its own.
    """
    error = error_from_wire(reason, f"the relay closed this device's live channel: {reason}")
    if isinstance(error, AuthorizationError):
        return error
    return AuthorizationError(f"the relay closed this device's live channel ({reason})",
                              Code.REVOKED)


def notification(frame: str | bytes) -> Notification | None:
    """A live frame as a notification; None for kinds a device does not know.

    Raises:
        SddsfError: the relay sent an error frame (its code), or a malformed one.
    """
    try:
        message = json.loads(frame)
        kind = message.get("type")
        if kind == "error":
            raise error_from_wire(str(message["code"]), str(message["message"]))
        if kind == "alert":
            return _alert(message)
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
