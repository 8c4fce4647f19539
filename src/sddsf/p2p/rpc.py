"""One request and one response over a libp2p stream (trio side).

Protocol ``/sddsf/sync/1.0.0``, one exchange per stream::

    request   u32 length (big-endian) | body
    response  u8 status | u32 length | body
              status 0: body is the response
              status 1: body is ``code "\\n" message`` (UTF-8), an SDDSF error the
                        responder raised; the requester raises the same class
                        (:func:`sddsf.errors.error_from_wire`)

Lengths are checked against the node's ``max_message`` before any allocation;
the error body is capped at :data:`MAX_ERROR`. The bytes are opaque here: what
a request means is the sync service's business.

:func:`request_on` and :func:`serve_on` are the two ends of one exchange on an
open stream; :class:`SyncExchange` adds what a host needs around them (opening
the stream, admission, timeouts, translating network errors).
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID

from sddsf.errors import (
    AuthorizationError,
    Code,
    DecodeError,
    InternalError,
    SddsfError,
    UnavailableError,
    UsageError,
    error_from_wire,
)
from sddsf.p2p.gate import Admission
from sddsf.p2p.peers import PeerTable
from sddsf.protocol.p2p import SYNC_PROTOCOL

__all__ = ["MAX_ERROR", "SYNC_PROTOCOL", "SyncExchange", "network_errors", "request_on",
           "serve_on"]

_log = logging.getLogger(__name__)

MAX_ERROR: Final = 1024
_LEN = struct.Struct(">I")
_OK, _ERR = 0, 1
_SERVE_TIMEOUT_S: Final = 60.0


@contextlib.contextmanager
def network_errors(what: str) -> Iterator[None]:
    """Translate libp2p, socket and trio stream errors into ``UnavailableError``.

    Args:
        what: What was being done, for the message ("request to 12D3...").

    Returns:
        A context manager (its body runs inside the translation).

    Raises:
        UnavailableError: the body raised a network-level error.
    """
    try:
        yield
    except (BaseLibp2pError, OSError, EOFError, trio.BrokenResourceError,
            trio.ClosedResourceError) as exc:
        raise UnavailableError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


async def _read_exactly(stream: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise DecodeError(f"the stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def _read_body(stream: Any, limit: int) -> bytes:
    (length,) = _LEN.unpack(await _read_exactly(stream, _LEN.size))
    if length > limit:
        raise DecodeError(f"a frame of {length} bytes exceeds the limit of {limit}",
                          Code.TOO_LARGE)
    return await _read_exactly(stream, length)


async def request_on(stream: Any, data: bytes, max_message: int) -> bytes:
    """Send one request on an open stream and read its response.

    Args:
        stream: A libp2p stream negotiated for :data:`SYNC_PROTOCOL`.
        data: The request body (at most ``max_message`` bytes; the caller checks).
        max_message: The largest response body accepted.

    Returns:
        The response body.

    Raises:
        DecodeError: a malformed or oversized response.
        SddsfError: the error the responder reported, as its own class.
        BaseLibp2pError: the stream failed (the caller translates it).
    """
    await stream.write(_LEN.pack(len(data)) + data)
    status = (await _read_exactly(stream, 1))[0]
    if status == _OK:
        return await _read_body(stream, max_message)
    if status != _ERR:
        raise DecodeError(f"unknown response status {status}")
    text = (await _read_body(stream, MAX_ERROR)).decode("utf-8", "replace")
    code, _, message = text.partition("\n")
    raise error_from_wire(code, f"peer answered: {message}")


async def serve_on(stream: Any, handler: Callable[[bytes], Awaitable[bytes]],
                   max_message: int) -> None:
    """Read one request from ``stream``, answer it with ``handler``'s response.

    A handler that raises an :class:`SddsfError` answers with its code; any other
    exception answers ``internal`` (and is logged here).

    Args:
        stream: An inbound stream negotiated for :data:`SYNC_PROTOCOL`.
        handler: Maps the request body to the response body.
        max_message: The largest request and response body.

    Raises:
        DecodeError: a malformed or oversized request (the caller resets the stream).
        BaseLibp2pError: the stream failed.
    """
    request = await _read_body(stream, max_message)
    try:
        response = await handler(request)
        if len(response) > max_message:
            raise InternalError(f"the response of {len(response)} bytes exceeds the "
                                f"limit of {max_message}")
    except SddsfError as exc:
        await _write_error(stream, exc)
        return
    except Exception as exc:  # reported to the peer as "internal"
        _log.exception("the request handler raised")
        await _write_error(stream, InternalError(f"{type(exc).__name__}"))
        return
    await stream.write(bytes((_OK,)) + _LEN.pack(len(response)) + response)


async def _write_error(stream: Any, exc: SddsfError) -> None:
    body = f"{exc.code.value}\n{exc.message}".encode()[:MAX_ERROR]
    await stream.write(bytes((_ERR,)) + _LEN.pack(len(body)) + body)


class SyncExchange:
    """Both ends of :data:`SYNC_PROTOCOL` on one host (trio side).

    ``answer(device_id, request)`` produces responses; ``seen(peer)`` is told
    about every peer that completes an exchange.
    """

    def __init__(self, host: Any, admission: Admission, table: PeerTable,
                 answer: Callable[[bytes, bytes], Awaitable[bytes]],
                 seen: Callable[[Any], None], max_message: int) -> None:
        self._host = host
        self._admission = admission
        self._table = table
        self._answer = answer
        self._seen = seen
        self._max = max_message

    async def request(self, device_id: bytes, data: bytes, timeout: float) -> bytes:
        """One request/response exchange with a device over a new stream.

        Args:
            device_id: The device to ask (it must have been seen by this node).
            data: The request body, at most ``max_message`` bytes.
            timeout: Seconds for the whole exchange.

        Returns:
            The response body.

        Raises:
            UsageError: ``data`` is larger than ``max_message``.
            AuthorizationError: the device is banned or not authorized.
            UnavailableError: not reachable, the stream failed, or the timeout passed.
            SddsfError: the error the responder reported.
        """
        if len(data) > self._max:
            raise UsageError(f"a request is at most {self._max} bytes, got {len(data)}")
        if not self._admission.admits_device(device_id):
            raise AuthorizationError(f"device {device_id.hex()[:16]}... is not authorized")
        known = sorted(self._table.of_device(device_id), key=lambda s: not s.connected)
        if not known:
            raise UnavailableError(f"device {device_id.hex()[:16]}... was never seen by "
                                   "this node; dial it first")
        peer = ID.from_base58(known[0].peer_id)
        # new_stream redials a disconnected peer from the peerstore; a failure in
        # the last 60 s would make it refuse without trying.
        self._host.get_network().unblock_peer(peer)
        with trio.move_on_after(timeout) as scope, network_errors(f"request to {peer}"):
            stream = await self._host.new_stream(peer, [SYNC_PROTOCOL])
            try:
                response = await request_on(stream, data, self._max)
            except BaseException:
                with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await stream.reset()
                raise
            with contextlib.suppress(Exception):  # the response is complete already
                await stream.close()
        if scope.cancelled_caught:
            raise UnavailableError(f"no response from {peer} within {timeout:g} s",
                                   Code.REQUEST_TIMEOUT)
        self._seen(peer)
        return response

    async def serve(self, stream: Any) -> None:
        """The stream handler of :data:`SYNC_PROTOCOL`: admit, read, answer, close.

        Args:
            stream: An inbound stream.

        Raises:
            Nothing: failures reset the stream and are logged.
        """
        peer = stream.muxed_conn.peer_id
        device = self._admission.admits(peer.to_bytes())
        if device is None:
            await stream.reset()
            return
        self._seen(peer)

        async def answer(request: bytes) -> bytes:
            return await self._answer(device, request)

        try:
            with trio.fail_after(_SERVE_TIMEOUT_S), network_errors(f"answering {peer}"):
                await serve_on(stream, answer, self._max)
                await stream.close()
        except (SddsfError, trio.TooSlowError) as exc:
            _log.info("request from %s failed: %s", peer, exc)
            with trio.CancelScope(shield=True):
                try:
                    await stream.reset()
                except Exception:  # the stream is being dropped anyway
                    _log.debug("resetting a stream failed", exc_info=True)
