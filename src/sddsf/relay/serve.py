"""Running a relay process: settings, the relay key, storage, uvicorn."""

from __future__ import annotations

import logging
import logging.config
import os
from pathlib import Path

from sddsf.crypto import Ed25519SigningKey, random_bytes
from sddsf.errors import ConfigError
from sddsf.relay.settings import RelaySettings

__all__ = ["load_relay_key", "run"]


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
    """Serve the relay until interrupted (blocking)."""
    import uvicorn  # noqa: PLC0415 - only the serving process needs it
    from uvicorn.protocols.http.auto import AutoHTTPProtocol  # noqa: PLC0415

    from sddsf.relay.app import create_app  # noqa: PLC0415
    from sddsf.relay.connguard import (  # noqa: PLC0415
        MAX_HEAD_BYTES,
        ConnectionGuard,
        guarded_protocol,
    )
    from sddsf.relay.observe import log_config  # noqa: PLC0415
    from sddsf.relay.storage import open_storage  # noqa: PLC0415

    config = log_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(config)
    logging.getLogger("sddsf.relay").info(
        "sddsf relay on http://%s:%d (%s)", settings.host, settings.port,
        settings.db.split("://", 1)[0])
    storage = open_storage(settings.db, **settings.storage_options())
    app = create_app(settings, storage, load_relay_key(settings.key_file))
    guard = ConnectionGuard(settings.max_connections, settings.header_timeout_s)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                log_config=config, access_log=False,
                http=guarded_protocol(AutoHTTPProtocol, guard),
                h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                ws_max_size=64 * 1024,
                # X-Forwarded-For is read by the app, only from trusted_proxies
                # (uvicorn's middleware would rewrite the peer address first).
                proxy_headers=False,
                # Longer than clients keep idle connections (httpx: 5 s), so the
                # relay does not close one as a client reuses it.
                timeout_keep_alive=65,
                timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)))
