"""Several relay worker processes on one address, one listening socket each.

``sddsf relay serve --workers N`` starts N spawned processes. Each binds its
own socket to the relay's address with ``SO_REUSEPORT`` and serves it with
uvicorn, so the kernel spreads new connections over the workers by a hash of
their addresses. (Workers sharing one listening socket, as uvicorn's own
``--workers`` does, accept a burst of connections in whichever worker wakes
first: measured with four uploaders, one worker took every connection and the
other stayed idle; docs/performance.md.)

This process supervises: it stops every worker on SIGINT or SIGTERM (each
finishes its requests, up to ``shutdown_timeout_s``), starts again a worker
that dies after it served or is killed by a signal, and stops all of them and
exits 1 when a worker ends on its own error before it served (a port in use,
a broken setting: restarting would fail the same way). ``SO_REUSEPORT`` lets
only processes of the same user share the port, and the supervisor refuses an
address that something already listens on.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from types import FrameType

from sddsf.errors import ConfigError
from sddsf.relay.settings import RelaySettings

__all__ = ["REUSE_PORT", "supervise"]

#: Whether this platform lets several sockets listen on one port (Linux, BSD).
REUSE_PORT = hasattr(socket, "SO_REUSEPORT")
_POLL_S = 0.2
log = logging.getLogger("sddsf.relay")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` that other sockets of this user may
    share (``SO_REUSEPORT``).

    Raises:
        OSError: the address cannot be bound (in use without ``SO_REUSEPORT``,
            not an address of this machine, a privileged port).
    """
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = info[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(2048)  # uvicorn's default backlog
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def _check_free(host: str, port: int) -> None:
    """Refuse an address some process already listens on: the workers' sockets
    would otherwise join another relay's (same user, ``SO_REUSEPORT``) and split
    its connections, or fail one by one.

    Raises:
        ConfigError: the address is in use or cannot be bound.
    """
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = info[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind(address)  # without SO_REUSEPORT: fails if anyone listens here
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); is another "
                              "relay or service using that port?") from None


def _worker_main(ready: Event) -> None:  # pragma: no cover - runs in a worker process
    import uvicorn  # noqa: PLC0415

    from sddsf.relay import serve  # noqa: PLC0415

    settings = serve._worker_settings()
    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as exc:
        print(f"error: a relay worker cannot listen on {settings.host}:{settings.port}: {exc}",
              file=sys.stderr)
        raise SystemExit(1) from None
    config = uvicorn.Config(f"{serve.__name__}:worker_app", factory=True,
                            http=serve.__getattr__("WorkerHTTP"),
                            **serve._uvicorn_options(settings))
    server = uvicorn.Server(config)

    parent = os.getppid()

    def watch() -> None:
        # Tell the supervisor once serving; stop (gracefully) if it is gone,
        # so that no orphaned worker keeps the port.
        while not server.should_exit:
            if server.started and not ready.is_set():
                ready.set()
            if os.getppid() != parent:
                server.should_exit = True
            time.sleep(_POLL_S)

    threading.Thread(target=watch, daemon=True).start()
    server.run(sockets=[sock])


class _Worker:
    """One worker process and whether it has served."""

    def __init__(self, context: multiprocessing.context.SpawnContext) -> None:
        self.ready = context.Event()
        self.process: BaseProcess = context.Process(target=_worker_main, args=(self.ready,),
                                                    name="sddsf-relay-worker")
        self.process.start()


def supervise(settings: RelaySettings) -> None:
    """Run ``settings.workers`` worker processes until SIGINT or SIGTERM (blocking;
    the workers read their settings from the environment, see serve.run).

    Raises:
        ConfigError: ``port`` 0 (each worker would get a port of its own), or a
            worker ended before it served (its own error is in the log above).
    """
    if settings.port == 0:
        raise ConfigError("several workers need a fixed 'port' (0 would give each worker "
                          "a port of its own)")
    _check_free(settings.host, settings.port)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    context = multiprocessing.get_context("spawn")
    workers = [_Worker(context) for _ in range(settings.workers)]
    failed = False
    try:
        while not stop.wait(_POLL_S):
            failed = _replace_dead(context, workers)
            if failed:
                break
    finally:
        _stop_all(workers, settings.shutdown_timeout_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise ConfigError("a relay worker stopped before it served (see its error above); "
                          "the relay did not start")


def _replace_dead(context: multiprocessing.context.SpawnContext,
                  workers: list[_Worker]) -> bool:
    """Start again each worker that died after serving or by a signal; True if
    one ended on its own error before serving."""
    for i, worker in enumerate(workers):
        if worker.process.is_alive():
            continue
        code = worker.process.exitcode or 0
        if not worker.ready.is_set() and code >= 0:
            return True  # its own error, not a signal from outside: it would fail again
        log.warning("relay worker %s exited (%s); starting another", worker.process.pid,
                    f"signal {-code}" if code < 0 else f"code {code}")
        workers[i] = _Worker(context)
    return False


def _stop_all(workers: list[_Worker], grace_s: float) -> None:
    """SIGTERM every worker (uvicorn's graceful shutdown), then SIGKILL what is
    still running after the grace period."""
    for worker in workers:
        if worker.process.is_alive():
            worker.process.terminate()
    deadline = time.monotonic() + grace_s + 5
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
