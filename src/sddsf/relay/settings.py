"""Relay settings: defaults, then a TOML file, then ``SDDSF_RELAY_*`` environment
variables, then command-line flags (later sources win). docs/operations.md lists
every setting; a test checks that the list and this dataclass agree."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from sddsf.errors import ConfigError
from sddsf.protocol.rules import RuleSettings

__all__ = ["RelaySettings", "default_data_dir", "load_settings"]


def default_data_dir() -> Path:
    """The platform's per-user data directory for SDDSF."""
    return Path(platformdirs.user_data_dir("sddsf"))


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Every relay setting, with its safe default."""

    db: str = field(default_factory=lambda: f"sqlite:///{default_data_dir() / 'relay.db'}")
    host: str = "127.0.0.1"
    port: int = 8787
    key_file: str = field(default_factory=lambda: str(default_data_dir() / "relay.key"))
    max_request_bytes: int = 1 << 20
    max_batch_ops: int = 1000
    max_page_ops: int = 1000
    session_ttl_s: int = 900
    challenge_ttl_s: int = 60
    ticket_ttl_s: int = 30
    request_window_s: int = 120
    max_skew_s: int = 600
    epoch_grace_s: int = 86_400
    rate_device_per_s: float = 50.0
    rate_device_burst: float = 200.0
    rate_account_per_s: float = 200.0
    rate_account_burst: float = 800.0
    rate_ip_per_s: float = 20.0
    rate_ip_burst: float = 100.0
    rate_ops_per_s: float = 5000.0
    rate_ops_burst: float = 20000.0
    # Registry entries signed by a device, per account (the account key is never
    # limited): bounds how fast a stolen device can churn the registry.
    rate_registry_per_s: float = 0.02
    rate_registry_burst: float = 30.0
    rate_audit_per_s: float = 0.1  # audit entries a device's reports and sessions may add
    rate_audit_burst: float = 120.0
    ws_queue_max: int = 256
    pairing_ttl_s: int = 600
    pairing_max_messages: int = 16
    backup_max_failures: int = 5
    backup_lockout_s: int = 900
    backup_max_lockout_s: int = 86_400
    trust_proxy_headers: bool = False
    trusted_proxies: str = "127.0.0.1, ::1"  # whose X-Forwarded-For counts (IPs/CIDRs)
    max_connections: int = 1000  # open HTTP + WebSocket connections per process
    header_timeout_s: float = 10.0  # a request head must arrive within this
    body_timeout_s: float = 60.0  # a request body must arrive within this
    shutdown_timeout_s: float = 10.0  # graceful shutdown, then open connections are closed
    db_timeout_s: float = 10.0  # a database call that takes longer gets 503 unavailable
    db_lock_timeout_s: float = 2.0  # PostgreSQL: a row lock waited for longer gets 503
    db_statement_timeout_s: float = 10.0  # PostgreSQL: server-side bound on a statement
    redis_url: str = ""  # shared edge state for several processes; "" = per process
    policy_file: str = ""  # the controller's policy (TOML); "" = the built-in defaults
    # Web origins (scheme://host[:port], comma-separated) whose pages may call the
    # API from another origin (CORS); "" = none: the relay sends no CORS headers.
    cors_origins: str = ""

    @property
    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_proxies`` parsed (validated when the settings are built)."""
        return _networks(self.trusted_proxies)

    @property
    def rules(self) -> RuleSettings:
        """The op verification windows (relay and clients must agree)."""
        return RuleSettings(max_skew_ms=self.max_skew_s * 1000,
                            epoch_grace_ms=self.epoch_grace_s * 1000)

    @property
    def cors_origin_set(self) -> frozenset[str]:
        """``cors_origins`` parsed (validated when the settings are built)."""
        return _origins(self.cors_origins)

    def storage_options(self) -> dict[str, Any]:
        """Keyword options for :func:`~sddsf.relay.storage.open_storage` of ``db``."""
        if self.db.startswith("sqlite:///"):
            return {"deadline_s": self.db_timeout_s}
        return {"command_timeout_s": self.db_timeout_s,
                "lock_timeout_ms": round(self.db_lock_timeout_s * 1000),
                "statement_timeout_ms": round(self.db_statement_timeout_s * 1000)}

    def replace(self, **changes: Any) -> RelaySettings:
        """A copy with ``changes`` applied and validated."""
        return _validated(dataclasses.replace(self, **changes))


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind in (bool, "bool"):
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes", "on")
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name!r}: {raw!r} is not a valid {kind}") from None


@functools.lru_cache(maxsize=16)  # read on every request that needs a client address
def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False)
                     for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"setting 'trusted_proxies': {exc}; give addresses or networks "
                          "separated by commas, e.g. \"10.0.0.5, 10.1.0.0/16\"") from None


_ORIGIN = re.compile(r"https?://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")


@functools.lru_cache(maxsize=16)  # read on every API request
def _origins(text: str) -> frozenset[str]:
    # Exact origins only: no "*" and no patterns, so the list is what the operator
    # reviewed; an origin as a browser sends it has no path, user or trailing "/".
    out = set()
    for part in text.split(","):
        origin = part.strip()
        if not origin:
            continue
        if not _ORIGIN.fullmatch(origin):
            raise ConfigError(f"setting 'cors_origins': {origin!r} is not an origin; give "
                              "scheme://host[:port] values separated by commas, e.g. "
                              "\"https://notes.example, http://127.0.0.1:5173\"")
        out.add(origin)
    return frozenset(out)


def _validated(s: RelaySettings) -> RelaySettings:
    positive = [f.name for f in fields(s) if f.type in ("int", "float") and f.name != "port"]
    for name in positive:
        if getattr(s, name) <= 0:
            raise ConfigError(f"setting {name!r} must be positive, got {getattr(s, name)}")
    if s.backup_max_lockout_s < s.backup_lockout_s:
        raise ConfigError(f"setting 'backup_max_lockout_s' ({s.backup_max_lockout_s}) must be "
                          f"at least 'backup_lockout_s' ({s.backup_lockout_s})")
    _networks(s.trusted_proxies)
    _origins(s.cors_origins)
    if not 0 <= s.port <= 65535:
        raise ConfigError(f"port {s.port} is out of range")
    if s.redis_url and not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"unsupported Redis URL scheme {s.redis_url.split(':', 1)[0]!r}: "
                          "use redis://HOST:PORT/DB, "
                          "rediss://... or unix:///PATH (or leave it empty)")
    if not s.db.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(f"unsupported database URL {s.db!r}: use sqlite:///PATH or "
                          "postgresql://USER@HOST/DB")
    return s


def load_settings(config_file: str | None = None, env: Mapping[str, str] | None = None,
                  **overrides: Any) -> RelaySettings:
    """Build settings from defaults, a TOML file, the environment and overrides.

    Environment variables are ``SDDSF_RELAY_<NAME>`` (e.g. ``SDDSF_RELAY_DB``).
    Unknown keys in the file are an error, so a typo never silently keeps a default.

    Raises:
        ConfigError: unreadable file, unknown key, or a value out of range.
    """
    env = os.environ if env is None else env
    known = {f.name: f.type for f in fields(RelaySettings)}
    values: dict[str, Any] = {}
    if config_file:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read relay config {config_file}: {exc}") from None
        section = data.get("relay", data)
        if "relay" in data and len(data) > 1:
            stray = sorted(k for k in data if k != "relay")
            raise ConfigError(f"unknown top-level key(s) {stray} in {config_file}; put every "
                              "setting in the [relay] table")
        for key, raw in section.items():
            if key not in known:
                raise ConfigError(f"unknown setting {key!r} in {config_file}; known: "
                                  f"{', '.join(sorted(known))}")
            values[key] = _coerce(key, known[key], raw)
    for name, kind in known.items():
        raw = env.get(f"SDDSF_RELAY_{name.upper()}")
        if raw is not None:
            values[name] = _coerce(name, kind, raw)
    for name, raw in overrides.items():
        if raw is not None:
            if name not in known:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = _coerce(name, known[name], raw)
    return _validated(RelaySettings(**values))
