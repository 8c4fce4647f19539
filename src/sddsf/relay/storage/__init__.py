"""Relay storage: the :class:`RelayStorage` contract and its two backends.

Pick a backend with a URL (the relay's ``--db`` option)::

    storage = open_storage("sqlite:////var/lib/sddsf/relay.db")
    storage = open_storage("postgresql://relay@db.internal/sddsf", max_size=8)
    await storage.open()

``sqlite:///PATH`` follows the usual convention: three slashes then the path,
so an absolute path has four (``sqlite:////abs/path``) and ``sqlite:///relay.db``
is relative to the working directory. The PostgreSQL backend needs the
``postgres`` extra (asyncpg); it is imported only when such a URL is used.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote

from sddsf.errors import ConfigError
from sddsf.relay.storage.base import (
    AppendOutcome,
    AppendStatus,
    ChainSnapshot,
    FirstSyncReads,
    ForkEvidence,
    LeafKind,
    OpToAppend,
    PairingMessage,
    RelayStorage,
    SpaceRecord,
    StorageConflict,
    StorageUnavailable,
    StoredOp,
    require_backend_url,
)
from sddsf.relay.storage.sqlite import SqliteStorage

__all__ = [
    "AppendOutcome",
    "AppendStatus",
    "ChainSnapshot",
    "FirstSyncReads",
    "ForkEvidence",
    "LeafKind",
    "OpToAppend",
    "PairingMessage",
    "RelayStorage",
    "SpaceRecord",
    "SqliteStorage",
    "StorageConflict",
    "StorageUnavailable",
    "StoredOp",
    "default_sqlite_url",
    "open_storage",
]

_SQLITE_PREFIX = "sqlite:///"


def default_sqlite_url() -> str:
    """``sqlite:///`` URL of ``relay.db`` in the per-user data directory."""
    from platformdirs import user_data_dir  # noqa: PLC0415 - only needed for the default

    return _SQLITE_PREFIX + os.path.join(user_data_dir("sddsf"), "relay.db")


def open_storage(url: str, **options: Any) -> RelayStorage:
    """Build (not open) the backend named by ``url``.

    Args:
        url: ``sqlite:///PATH``, ``postgresql://...`` or ``postgres://...``.
        **options: backend keyword options (``busy_timeout_ms`` for SQLite;
            ``schema``, ``min_size``, ``max_size``, ``lock_timeout_ms``,
            ``statement_timeout_ms``, ``connect_timeout_s`` for PostgreSQL).

    Returns:
        An unopened storage: call ``await storage.open()``.

    Raises:
        ConfigError: an unsupported scheme, an empty SQLite path, an unknown
            option, or PostgreSQL without asyncpg installed.
    """
    require_backend_url(url)
    try:
        if url.startswith(_SQLITE_PREFIX):
            path = unquote(url[len(_SQLITE_PREFIX):].split("?", 1)[0])
            if not path:
                raise ConfigError("the SQLite URL has no path: use sqlite:///PATH")
            return SqliteStorage(path, **options)
        try:
            from sddsf.relay.storage.postgres import PostgresStorage  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigError("PostgreSQL storage needs asyncpg: pip install 'sddsf[postgres]'"
                              ) from exc
        return PostgresStorage(url, **options)
    except TypeError as exc:  # an option this backend does not have
        raise ConfigError(f"invalid storage option for {url.split(':', 1)[0]}: {exc}") from exc
