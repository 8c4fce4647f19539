"""The bridge for existing Yjs apps: a loopback y-websocket server bound to one
document of a device.

A stock Yjs editor (the ``y-websocket`` provider with CodeMirror, TipTap,
ProseMirror...) on the same machine connects to
``ws://127.0.0.1:PORT/ROOM?token=TOKEN`` and edits the device's live copy of
the document; the device seals those edits into ops and syncs them, end-to-end
encrypted, through the relay (its :class:`~sddsf.client.runner.Runner`, pushing
after the debounce window); the ops it pulls and verifies are applied to the
same copy, and so reach the editors.

Security model (docs/client.md, "Bridge for existing Yjs apps"):

* The bridge speaks the y-websocket protocol in plaintext (as every
  y-websocket server does): whoever connects reads and writes the document.
  It therefore listens on a loopback address only (:func:`check_host`), unless
  the caller explicitly allows another address.
* Every connection must present the bridge's token (``?token=``, a fresh
  256-bit random value per run, compared in constant time). Without it, the
  connection is closed with :data:`CLOSE_BAD_TOKEN` before a single byte of
  the document is sent: other users of the machine and web pages open in a
  browser (which may open WebSockets to loopback) cannot use it.
* What the bridge sees is what the device sees: the plaintext of this
  document, on this machine. Awareness (cursors, user names) is relayed
  between the bridge's own clients only; it never reaches the relay.

Layers: :func:`check_host` and :class:`BridgeToken` (pure checks);
:class:`YjsBridgeServer` (the ``websockets`` server and one pycrdt-websocket
``YRoom`` over a :class:`pycrdt.Doc`); :func:`bind_device_doc`, the only code
that knows how a document is tied to the device; :class:`Bridge`, which runs
the server and the device's runner together.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pycrdt
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from sddsf.client.device import Device, SyncReport
from sddsf.client.runner import Runner, RunnerSettings
from sddsf.errors import ConfigError, SddsfError, UsageError

if TYPE_CHECKING:
    from pycrdt.websocket import YRoom

log = logging.getLogger("sddsf.client.bridge")

__all__ = ["CLOSE_BAD_MESSAGE", "CLOSE_BAD_TOKEN", "CLOSE_BUSY", "CLOSE_WRONG_ROOM",
           "DEFAULT_PORT", "MAX_CLIENTS", "MAX_MESSAGE", "Bridge", "BridgeToken",
           "DeviceDocBinding", "YjsBridgeServer", "bind_device_doc", "check_host"]

#: y-websocket's own default port, which many apps expect.
DEFAULT_PORT: Final = 1234
#: The largest WebSocket message accepted from a client: a client's first sync
#: carries its whole copy of the document. Larger edits than the device's
#: ``max_edit`` are refused by the device anyway.
MAX_MESSAGE: Final = 64 << 20
#: At most this many editors at once (each may hold up to MAX_MESSAGE in flight).
MAX_CLIENTS: Final = 32

#: Close codes (RFC 6455 7.4): no or a wrong token (policy violation).
CLOSE_BAD_TOKEN: Final = 1008
#: The token was right but the room is not this bridge's document.
CLOSE_WRONG_ROOM: Final = 4404
#: MAX_CLIENTS editors are connected already ("try again later").
CLOSE_BUSY: Final = 1013
#: A message that is not the y-websocket protocol.
CLOSE_BAD_MESSAGE: Final = 1007

_SYNC: Final = 0  # y-websocket message types (y-protocols): sync ...
_SYNC_EDITS: Final = frozenset({1, 2})  # ... whose step 2 and update carry edits


def check_host(host: str, *, allow_remote: bool) -> None:
    """Refuse to listen anywhere but on a loopback address, unless allowed.

    The y-websocket protocol has no encryption: on a network address, the token
    and the document would cross the network in plaintext.

    Args:
        host: the address to listen on.
        allow_remote: allow any address (the caller's explicit choice).

    Raises:
        UsageError: ``host`` is not ``localhost`` or a loopback IP address, and
            ``allow_remote`` is false.
    """
    if allow_remote or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"--host {host!r} is not a loopback address: the bridge serves the "
                         "document in plaintext (y-websocket has no encryption), so it listens "
                         "on 127.0.0.1 or ::1 only; --allow-remote overrides this")


@dataclass(frozen=True)
class BridgeToken:
    """The secret a client presents as ``?token=`` (fresh for every run).

    Attributes:
        value: the token, 32 random bytes in URL-safe base64 (never in its repr).
    """

    value: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    def admits(self, presented: str | None) -> bool:
        """Whether ``presented`` is the token (constant-time comparison).

        Args:
            presented: what the client sent (None: nothing).

        Returns:
            True only for the token itself.

        Raises:
            Nothing of its own.
        """
        return presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "surrogateescape"), self.value.encode())


class _Connection:
    """A :class:`pycrdt.Channel` over one ``websockets`` server connection.

    ``send`` never raises for a closed connection: the room broadcasts to every
    client from its own task group, where one editor going away must not stop
    the others.
    """

    def __init__(self, ws: ServerConnection, path: str) -> None:
        self._ws = ws
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> _Connection:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def recv(self) -> bytes:
        message = await self._ws.recv()
        if isinstance(message, str):  # y-websocket sends binary frames only
            await self.close(CLOSE_BAD_MESSAGE, "text frame: y-websocket messages are binary")
            raise ConnectionClosed(None, None)
        return message

    async def send(self, message: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(message)

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)


def _yroom(doc: pycrdt.Doc[Any]) -> YRoom:
    try:
        from pycrdt.websocket import YRoom  # noqa: PLC0415 - an optional extra
    except ModuleNotFoundError:
        raise ConfigError("the bridge needs pycrdt-websocket: install sddsf with the bridge "
                          "extra (pip install 'sddsf[bridge]')") from None

    def handled(exc: Exception, logger: logging.Logger) -> bool:
        logger.warning("bridge: %s: %s", type(exc).__name__, exc)
        return True  # one client's failure never stops the room

    return YRoom(ready=True, ydoc=doc, log=log, exception_handler=handled)


class YjsBridgeServer:
    """A y-websocket server for one :class:`pycrdt.Doc`: one room, one token.

    Use as ``async with YjsBridgeServer(doc, "notes", ...) as server:``; it
    listens from entry to exit. ``on_edit`` is called when a client sent edits
    (the device then pushes them); ``on_event`` gets one line per connection
    change or refusal (no token or document content is ever in it).

    Entering it raises ``OSError`` when it cannot listen (the port is taken)
    and :class:`~sddsf.errors.ConfigError` when pycrdt-websocket is not
    installed (the ``bridge`` extra).

    Args:
        doc: the document the room serves.
        room: the room's name (the URL path a client connects to).
        host: the address to listen on (checked by :class:`Bridge`, not here).
        port: the port (0: one the OS chooses; :attr:`port` then tells it).
        token: the token clients present (None: a fresh one).
        on_edit: called when a client sent edits.
        on_event: called with one line per connection change or refusal.
    """

    def __init__(self, doc: pycrdt.Doc[Any], room: str, *, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, token: BridgeToken | None = None,
                 on_edit: Callable[[], None] = lambda: None,
                 on_event: Callable[[str], None] = lambda line: None) -> None:
        #: The document the room serves.
        self.doc = doc
        #: The room's name (the URL path a client connects to).
        self.room_name = room
        #: The address it listens on.
        self.host = host
        #: The port it listens on (the OS's choice once entered, for port 0).
        self.port = port
        #: The token clients present.
        self.token = token or BridgeToken()
        #: Called when a client sent edits.
        self.on_edit = on_edit
        #: Called with one line per connection change or refusal.
        self.on_event = on_event
        #: The editors connected now (at most :data:`MAX_CLIENTS`).
        self.clients = 0
        self._room: YRoom | None = None
        self._server: Server | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def server_url(self) -> str:
        """``ws://HOST:PORT``: what a ``WebsocketProvider`` takes as its server URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The whole URL of the room, token included (a secret: shown once)."""
        return (f"{self.server_url}/{quote(self.room_name, safe='')}"
                f"?token={self.token.value}")

    async def __aenter__(self) -> YjsBridgeServer:
        room = _yroom(self.doc)
        room.on_message = self._on_message
        room.on_message_error = self._bad_message
        async with contextlib.AsyncExitStack() as stack:
            self._room = await stack.enter_async_context(room)
            self._server = await serve(self._handle, self.host, self.port,
                                       max_size=MAX_MESSAGE, max_queue=64)
            stack.push_async_callback(self._close_server)
            self.port = int(self._server.sockets[0].getsockname()[1])  # --port 0: the OS chose
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _close_server(self) -> None:
        if self._server is not None:
            self._server.close()  # closes every connection (1001 going away)
            await self._server.wait_closed()

    def refusal(self, request_path: str) -> tuple[int, str] | None:
        """Why a connection to ``request_path`` is refused, or None.

        The token is checked first, so that without it nothing (not even which
        room this is) is learnt.

        Args:
            request_path: the request's path and query (``/ROOM?token=...``).

        Returns:
            The close code and reason (:data:`CLOSE_BAD_TOKEN`,
            :data:`CLOSE_WRONG_ROOM` or :data:`CLOSE_BUSY`), or None to admit it.

        Raises:
            Nothing of its own.
        """
        parts = urlsplit(request_path)
        tokens = parse_qs(parts.query).get("token", [])
        if len(tokens) != 1 or not self.token.admits(tokens[0]):
            return CLOSE_BAD_TOKEN, "no or wrong token"
        if unquote(parts.path.lstrip("/")) != self.room_name:
            return CLOSE_WRONG_ROOM, "this bridge serves one document: use its room name"
        if self.clients >= MAX_CLIENTS:
            return CLOSE_BUSY, f"at most {MAX_CLIENTS} editors at once"
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert self._room is not None  # noqa: S101 - set before the server listens
        refused = self.refusal(ws.request.path if ws.request else "")
        if refused is not None:
            self.on_event(f"refused a connection: {refused[1]}")
            await ws.close(*refused)
            return
        self.clients += 1
        self.on_event(f"editor connected ({self.clients} open)")
        try:
            await self._room.serve(_Connection(ws, self.room_name))
        finally:
            self.clients -= 1
            self.on_event(f"editor disconnected ({self.clients} open)")

    def _on_message(self, message: bytes) -> bool:
        # Runs just before the room applies the message, in the same step (no
        # await in between): the wake-up it causes waits for the debounce window.
        if len(message) > 1 and message[0] == _SYNC and message[1] in _SYNC_EDITS:
            self.on_edit()
        return False  # never skip: the room handles every message

    async def _bad_message(self, exc: Exception, message: bytes, channel: Any) -> bool:
        self.on_event(f"closed a connection that sent a malformed message "
                      f"({type(exc).__name__})")
        await channel.close(CLOSE_BAD_MESSAGE, "not a y-websocket message")
        return True


# ------------------------------------------------------------------ binding
# The one place that ties a served document to the device. Today it is the
# device's live pycrdt.Doc (Device.doc): the device captures the clients'
# transactions as edits and applies pulled ops to it. To be replaced by the
# device's live-document handles once they exist.


@dataclass
class DeviceDocBinding:
    """The device's live copy of one document, as the bridge serves it.

    Attributes:
        device: the device.
        space_id: the space's id.
        name: the document's name in the space.
        doc: the device's copy (``device.doc(space_id, name)`` when bound).
    """

    device: Device
    space_id: bytes
    name: str
    doc: pycrdt.Doc[Any]

    def attached(self) -> bool:
        """Whether the device still syncs :attr:`doc`.

        It lets go of it when a sync re-derives the space, or when an edit is
        refused as too large; edits made to it afterwards would never be sent.

        Returns:
            True while ``device.doc(space_id, name)`` is :attr:`doc`.

        Raises:
            SddsfError: only when the device has let go of :attr:`doc`, and
                loading its copy again fails as in :func:`bind_device_doc`
                (``UsageError`` for a closed device, ``DecryptError``,
                ``DecodeError``, ``UnavailableError`` for its store).
        """
        return self.device.doc(self.space_id, self.name) is self.doc


def bind_device_doc(device: Device, space_id: bytes, name: str) -> DeviceDocBinding:
    """Bind document ``name`` of a space: the device's live :class:`pycrdt.Doc`.

    Args:
        device: the device.
        space_id: the space's id.
        name: the document's name in the space.

    Returns:
        The binding to the device's copy of the document.

    Raises:
        UsageError: the name is not 1 to 256 characters, or the device is closed.
        DecryptError: the device's stored copy does not decrypt (a tampered store).
        DecodeError: the stored copy is incomplete (a damaged store).
        UnavailableError: the device's store failed.
    """
    return DeviceDocBinding(device, space_id, name, device.doc(space_id, name))


# -------------------------------------------------------------------- bridge


@dataclass
class Bridge:
    """The server and the device's runner, from ``async with`` entry to exit.

    Open the device with ``lock="operation"`` so that other commands can use
    its home meanwhile. :attr:`failure` is set (and :attr:`ended` called) when
    the bridge cannot go on: the device let go of the document.

    Entering it raises :class:`~sddsf.errors.UsageError` for a host that is not
    loopback without ``allow_remote`` (:func:`check_host`), or when it cannot
    listen (the port is taken), :class:`~sddsf.errors.ConfigError` when
    pycrdt-websocket is not installed, and the errors of
    :func:`bind_device_doc`; a runner it started is stopped again. Leaving it
    closes the server, then stops the runner (which raises the first unexpected
    exception it met, see :meth:`sddsf.client.runner.Runner.stop`).

    Attributes:
        device: the device, opened with ``lock="operation"``.
        space_id: the space's id.
        name: the document's name in the space (also the room's name).
        host: the address to listen on (loopback unless ``allow_remote``).
        port: the port (0: one the OS chooses; ``server.port`` tells it).
        allow_remote: allow a host that is not loopback.
        settings: the runner's timing.
        on_sync: called after each sync of the runner.
        on_error: called with each error of the runner's syncs.
        on_event: called with one line per editor connection change or refusal.
        ended: called once when the bridge cannot go on (:attr:`failure` says why).
        failure: why the bridge cannot go on (None while it can).
        server: the server, once entered.
    """

    device: Device
    space_id: bytes
    name: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    allow_remote: bool = False
    settings: RunnerSettings = field(default_factory=RunnerSettings)
    on_sync: Callable[[SyncReport], None] | None = None
    on_error: Callable[[SddsfError], None] | None = None
    on_event: Callable[[str], None] = lambda line: None
    ended: Callable[[], None] = lambda: None
    failure: SddsfError | None = None
    server: YjsBridgeServer | None = None
    _runner: Runner | None = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def __aenter__(self) -> Bridge:
        check_host(self.host, allow_remote=self.allow_remote)
        binding = bind_device_doc(self.device, self.space_id, self.name)
        runner = Runner(self.device, self.settings, on_sync=lambda r: self._synced(binding, r),
                        on_error=lambda e: self._failed(binding, e))
        server = YjsBridgeServer(binding.doc, self.name, host=self.host, port=self.port,
                                 on_edit=runner.changed, on_event=self.on_event)
        async with contextlib.AsyncExitStack() as stack:
            # Exit runs in reverse: the server closes first (no new edits), then
            # the runner stops (the device's close() queues what is left).
            await runner.start()
            stack.push_async_callback(runner.stop)
            try:
                await stack.enter_async_context(server)
            except OSError as exc:  # the port is taken, the address is not this machine's
                raise UsageError(f"cannot listen on {self.host} port {self.port}: "
                                 f"{exc.strerror or exc}") from None
            runner.changed()  # a first sync at once: push what is pending, pull what is new
            self._runner, self.server = runner, server
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _synced(self, binding: DeviceDocBinding, report: SyncReport) -> None:
        if self.on_sync is not None:
            self.on_sync(report)
        self._check(binding)

    def _failed(self, binding: DeviceDocBinding, error: SddsfError) -> None:
        if self.on_error is not None:
            self.on_error(error)
        self._check(binding)

    def _check(self, binding: DeviceDocBinding) -> None:
        if self.failure is None and not binding.attached():
            self.failure = UsageError(
                f"the device let go of document {self.name!r} (its space was rebuilt from "
                "the log, or an edit was refused as too large); edits made through the "
                "bridge from now on would not be sent: start the bridge again")
            self.ended()
