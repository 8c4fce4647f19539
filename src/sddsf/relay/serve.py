"""Running a relay process: settings, the relay key, storage, uvicorn."""

from __future__ import annotations

import dataclasses
import json
import logging
import logging.config
import os
from pathlib import Path
from typing import Any

from sddsf.crypto import Ed25519SigningKey, random_bytes
from sddsf.errors import ConfigError
from sddsf.relay.connguard import MAX_HEAD_BYTES
from sddsf.relay.settings import RelaySettings

__all__ = ["load_relay_key", "run", "worker_app"]


def load_relay_key(path: str) -> Ed25519SigningKey:
    """Load the relay's tree-head signing key, creating it (mode 0600) on first start.

    Every node of a cluster must use the same key file (or ``SDDSF_RELAY_KEY_HEX``),
    so that all tree heads of one deployment are signed by one key.

    Raises:
        ConfigError: unreadable or malformed key file.
    """
    env = os.environ.get("SDDSF_RELAY_KEY_HEX")
    if env:
        try:
            return Ed25519SigningKey.from_seed(bytes.fromhex(env))
        except ValueError:
            raise ConfigError("SDDSF_RELAY_KEY_HEX must be 64 hex characters") from None
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(random_bytes(32).hex() + "\n")
    try:
        seed = bytes.fromhex(p.read_text().strip())
        return Ed25519SigningKey.from_seed(seed)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the relay key {p}: {exc}") from None


def run(settings: RelaySettings) -> None:
    """Serve the relay until interrupted (blocking).

    With ``settings.workers`` > 1, that many worker processes serve one address,
    a listening socket each (:mod:`sddsf.relay.workers`); each builds its own
    app from the settings this process validated (handed over in the
    environment, see :func:`worker_app`).
    """
    import uvicorn  # noqa: PLC0415 - only the serving process needs it

    options = _uvicorn_options(settings)
    logging.config.dictConfig(options["log_config"])
    logging.getLogger("sddsf.relay").info(
        "sddsf relay on http://%s:%d (%s)%s", settings.host, settings.port,
        settings.db.split("://", 1)[0],
        f", {settings.workers} workers" if settings.workers > 1 else "")
    key = load_relay_key(settings.key_file)  # created here once, not by racing workers
    if settings.workers == 1:
        uvicorn.run(_build_app(settings, key), http=_guarded_http(settings),
                    host=settings.host, port=settings.port, **options)
        return
    os.environ[_SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
    from sddsf.relay import workers  # noqa: PLC0415

    if workers.REUSE_PORT:
        workers.supervise(settings)
    else:  # pragma: no cover - no SO_REUSEPORT (Windows): uvicorn's workers, one socket
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=settings.workers,
                    http=__getattr__("WorkerHTTP"), host=settings.host, port=settings.port,
                    **options)


def _uvicorn_options(settings: RelaySettings) -> dict[str, Any]:
    """uvicorn's settings for the relay (all but the app, the HTTP protocol and
    the address)."""
    from sddsf.relay.observe import log_config  # noqa: PLC0415

    return {
        "log_level": settings.log_level,
        "log_config": log_config(settings.log_format, settings.log_level), "access_log": False,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES, "ws_max_size": 64 * 1024,
        # No permessage-deflate (op envelopes are ciphertext): a frame's bytes are
        # then the same on every connection, so the fan-out encodes each op's
        # frame once and writes it to every subscriber (sddsf.relay.wsdirect).
        "ws": _ws_protocol(), "ws_per_message_deflate": False,
        # X-Forwarded-For is read by the app, only from trusted_proxies
        # (uvicorn's middleware would rewrite the peer address first).
        "proxy_headers": False,
        # Longer than clients keep idle connections (httpx: 5 s), so the
        # relay does not close one as a client reuses it.
        "timeout_keep_alive": 65,
        "timeout_graceful_shutdown": max(1, round(settings.shutdown_timeout_s)),
    }


#: The settings a worker process is started with (JSON; set by :func:`run`).
_SETTINGS_ENV = "_SDDSF_RELAY_WORKER_SETTINGS"


def _worker_settings() -> RelaySettings:
    try:
        return RelaySettings(**json.loads(os.environ[_SETTINGS_ENV]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"a relay worker started without its settings ({exc}); start it "
                          "with 'sddsf relay serve --workers N'") from None


def _build_app(settings: RelaySettings, key: Ed25519SigningKey) -> Any:
    from sddsf.relay.app import create_app  # noqa: PLC0415
    from sddsf.relay.storage import open_storage  # noqa: PLC0415

    storage = open_storage(settings.db, **settings.storage_options())
    return create_app(settings, storage, key)


def _guarded_http(settings: RelaySettings) -> type[Any]:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol  # noqa: PLC0415

    from sddsf.relay.connguard import ConnectionGuard, guarded_protocol  # noqa: PLC0415

    guard = ConnectionGuard(settings.max_connections, settings.header_timeout_s)
    return guarded_protocol(AutoHTTPProtocol, guard)


def worker_app() -> Any:
    """The app of one worker process (a uvicorn factory)."""
    from sddsf.relay.observe import log_config  # noqa: PLC0415

    settings = _worker_settings()
    logging.config.dictConfig(log_config(settings.log_format, settings.log_level))
    return _build_app(settings, load_relay_key(settings.key_file))


def __getattr__(name: str) -> Any:
    # ``WorkerHTTP``: the guarded HTTP protocol class of a worker process, made
    # on first use from the worker's settings (uvicorn resolves it by name).
    if name == "WorkerHTTP":
        cls = _guarded_http(_worker_settings())
        cls.__name__ = cls.__qualname__ = name
        cls.__module__ = __name__
        globals()[name] = cls
        return cls
    raise AttributeError(name)


def _ws_protocol() -> Any:
    """The relay's WebSocket protocol: uvicorn's own with the direct frame writer
    (:mod:`sddsf.relay.wsdirect`), or, if this uvicorn lacks the sans-I/O
    protocol it extends, uvicorn's default (every frame through ASGI)."""
    try:
        from sddsf.relay.wsdirect import LiveWebSocketProtocol  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvicorn below the declared floor
        logging.getLogger(__name__).warning(
            "this uvicorn has no sans-I/O WebSocket protocol: live fan-out sends every "
            "frame through ASGI (slower); install uvicorn >= 0.53")
        return "auto"
    return LiveWebSocketProtocol
