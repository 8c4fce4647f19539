"""Connection limits for the relay's HTTP server (slow-loris, THREATS #18).

uvicorn closes a keep-alive connection that stays silent, but not one that
sends a request head a byte at a time, or never finishes it: such half-open
requests were held forever and enough of them exhausted the process's file
descriptors. :func:`guarded_protocol` wraps uvicorn's HTTP protocol class with:

* **a head timeout**: a connection must complete a request head within
  ``header_timeout_s`` of opening, and within ``timeout_keep_alive +
  header_timeout_s`` of its previous response; otherwise it is closed;
* **a head size cap** (:data:`MAX_HEAD_BYTES`) while no request is in progress;
* **a connection cap**: at most ``max_connections`` open connections (HTTP and
  WebSocket). A new connection beyond it closes the connection that has been
  idle longest (waiting for a request head: a slow-loris connection always is,
  and an idle keep-alive one just reconnects); when none is idle the new one is
  closed. So slow connections cannot starve real requests such as ``/healthz``.

The body timeout is an ASGI-level guard (:class:`sddsf.relay.deps.BodyLimit`):
the relay answers 408 ``request_timeout`` to a body that does not arrive in
time. uvicorn's own ``limit_concurrency`` is not used: it answers 503 to new
requests while the half-open connections stay.

The wrapper relies on what uvicorn's HTTP protocols (``h11`` and
``httptools``) share: ``connections`` (the server's set), ``cycle`` (the
request in progress), ``timeout_keep_alive`` and ``on_response_complete``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["MAX_HEAD_BYTES", "ConnectionGuard", "guarded_protocol"]

#: Bytes a connection may send while no request is in progress (a request head).
MAX_HEAD_BYTES: Final = 64 * 1024

log = logging.getLogger("sddsf.relay")


@dataclass
class ConnectionGuard:
    """The limits, and the guarded connections of one server (one event loop)."""

    max_connections: int
    header_timeout_s: float
    members: dict[Any, None] = field(default_factory=dict)  # insertion-ordered set
    evicted: int = 0
    timed_out: int = 0

    def victim(self, newcomer: Any) -> Any | None:
        """The connection idle longest (not in a request), other than ``newcomer``."""
        idle = [p for p in self.members if p is not newcomer and not p.in_request()]
        return min(idle, key=lambda p: p.idle_since, default=None)


def guarded_protocol(base: type[asyncio.Protocol], guard: ConnectionGuard
                     ) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol class ``base`` that enforces ``guard``."""

    class Guarded(base):  # type: ignore[valid-type,misc]
        idle_since: float
        _head_bytes: int
        _timer: asyncio.TimerHandle | None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._head_bytes, self._timer = 0, None
            self._idle(guard.header_timeout_s)
            guard.members[self] = None
            if len(self.connections) > guard.max_connections:
                victim = guard.victim(self)
                guard.evicted += 1
                (victim or self).transport.close()  # the fd is released at once

        def data_received(self, data: bytes) -> None:
            # Parse first: one read may carry a whole request, head and body.
            super().data_received(data)
            if self.transport.get_protocol() is not self:  # upgraded to a WebSocket
                self._forget()
            elif self.in_request():
                self._head_bytes = 0
            else:  # still no complete head: count what it has cost so far
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._head_bytes = 0
                self._idle(self.timeout_keep_alive + guard.header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
            super().connection_lost(exc)

        def in_request(self) -> bool:
            """Whether a request head has arrived and its response is not complete."""
            return self.cycle is not None and not self.cycle.response_complete

        def _idle(self, deadline_s: float) -> None:
            self.idle_since = time.monotonic()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(deadline_s, self._head_due)

        def _head_due(self) -> None:
            # No request head within the deadline (a request in progress is the
            # body timeout's and the handler's business).
            self._timer = None
            if (not self.in_request() and not self.transport.is_closing()
                    and self.transport.get_protocol() is self):
                guard.timed_out += 1
                self.transport.close()

        def _forget(self) -> None:
            guard.members.pop(self, None)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded
