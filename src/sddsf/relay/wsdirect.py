"""The relay's WebSocket protocol for uvicorn: uvicorn's own (``websockets``
sans-I/O) protocol, plus a direct frame writer for the live fan-out.

Through ASGI, every frame sent costs a task wake-up, the middleware chain, a
frame encoding and (with permessage-deflate) a compression per connection. The
relay serves WebSockets without compression (op envelopes are ciphertext), so
a server frame's bytes are the same on every connection: the fan-out encodes
each op's frame once (:func:`sddsf.relay.fanout.text_frame`) and writes it to
each subscribed socket with :meth:`LiveWebSocketProtocol.write_frame`, found
in the ASGI scope under :data:`DIRECT_WRITE`. Anything else (accept, close,
``subscribed``, errors) still goes through ASGI.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

from sddsf.relay.fanout import DIRECT_WRITE

__all__ = ["LiveWebSocketProtocol"]


class LiveWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol with :meth:`write_frame` offered to the app."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The app's task is created above but has not run yet (tasks start on a
        # later loop iteration), so it sees the extension. Only without
        # negotiated extensions are pre-encoded frames valid on this connection.
        scope = getattr(self, "scope", None)
        if scope is not None and not self.conn.extensions:
            scope["extensions"][DIRECT_WRITE] = self.write_frame

    def write_frame(self, data: bytes) -> bool:
        """Write one complete, unmasked server frame now.

        Returns False, writing nothing, unless the connection is open (accepted,
        no close sent or received) and its send buffer is below the transport's
        high-water mark: the caller then queues the message and sends it
        through ASGI, which waits for the buffer to drain. The memory a slow
        reader holds on the relay is thus at most the high-water mark plus one
        frame, plus what the caller queues (bounded there).
        """
        try:
            if (not self.handshake_complete or self.close_sent or self.disconnected
                    or self.initial_response is not None or not self.writable.is_set()
                    or self.conn.state is not State.OPEN or self.transport.is_closing()):
                return False
        except AttributeError:
            # These are uvicorn's internals (tested with the declared floor and
            # the versions since): if a release renames one, every frame takes
            # the ASGI path, which is slower but always correct.
            return False
        self.transport.write(data)
        return True
