"""Relay settings: defaults, then a TOML file, then a secrets directory, then
``SDDSF_RELAY_*`` environment variables (``SDDSF_RELAY_<NAME>_FILE``: the value
is the named file's contents), then command-line flags (later sources win).

The sources are layered by pydantic-settings; every value is then validated by
pydantic against the annotated :class:`RelaySettings` (lax for text, so a number
may be written as a string, but ``"ture"`` is not a boolean and ``nan``, ``inf``
or a negative rate is not a rate). A bad value is a :class:`ConfigError` naming
the setting and its environment variable. docs/operations.md lists every
setting; a test checks that the list and this dataclass agree."""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import platformdirs
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from sddsf.errors import ConfigError
from sddsf.protocol.rules import RuleSettings

__all__ = ["ENV_PREFIX", "RelaySettings", "default_data_dir", "env_name", "load_settings"]

#: Every setting's environment variable is this prefix + its name in upper case.
ENV_PREFIX = "SDDSF_RELAY_"
#: Settings whose values may carry credentials: never echoed in an error.
SECRET_SETTINGS = frozenset({"db", "redis_url"})

# Every count and duration is positive; every rate finite and positive.
PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def default_data_dir() -> Path:
    """The platform's per-user data directory for SDDSF."""
    return Path(platformdirs.user_data_dir("sddsf"))


def env_name(setting: str) -> str:
    """The environment variable of a setting (``SDDSF_RELAY_`` + NAME)."""
    return ENV_PREFIX + setting.upper()


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Every relay setting, with its safe default (validated by :func:`load_settings`
    and :meth:`replace`; constructing one directly trusts the caller)."""

    # How pydantic validates a dict into this dataclass: no unknown keys, no NaN.
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid",
                                                           allow_inf_nan=False)

    db: str = field(default_factory=lambda: f"sqlite:///{default_data_dir() / 'relay.db'}")
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8787
    key_file: str = field(default_factory=lambda: str(default_data_dir() / "relay.key"))
    max_request_bytes: PosInt = 1 << 20
    max_batch_ops: PosInt = 1000
    max_page_ops: PosInt = 1000
    session_ttl_s: PosInt = 900
    challenge_ttl_s: PosInt = 60
    ticket_ttl_s: PosInt = 30
    request_window_s: PosInt = 120
    max_skew_s: PosInt = 600
    epoch_grace_s: PosInt = 86_400
    rate_device_per_s: PosFloat = 50.0
    rate_device_burst: PosFloat = 200.0
    rate_account_per_s: PosFloat = 200.0
    rate_account_burst: PosFloat = 800.0
    rate_ip_per_s: PosFloat = 20.0
    rate_ip_burst: PosFloat = 100.0
    rate_ops_per_s: PosFloat = 5000.0
    rate_ops_burst: PosFloat = 20000.0
    # Registry entries signed by a device, per account (the account key is never
    # limited): bounds how fast a stolen device can churn the registry.
    rate_registry_per_s: PosFloat = 0.02
    rate_registry_burst: PosFloat = 30.0
    rate_audit_per_s: PosFloat = 0.1  # audit entries a device's reports and sessions may add
    rate_audit_burst: PosFloat = 120.0
    # Presence records a device publishes (one per space, about every few minutes).
    rate_presence_per_s: PosFloat = 0.5
    rate_presence_burst: PosFloat = 120.0
    ws_queue_max: PosInt = 256
    pairing_ttl_s: PosInt = 600
    pairing_max_messages: PosInt = 16
    backup_max_failures: PosInt = 5
    backup_lockout_s: PosInt = 900
    backup_max_lockout_s: PosInt = 86_400
    trust_proxy_headers: bool = False
    trusted_proxies: str = "127.0.0.1, ::1"  # whose X-Forwarded-For counts (IPs/CIDRs)
    max_connections: PosInt = 1000  # open HTTP + WebSocket connections per process
    header_timeout_s: PosFloat = 10.0  # a request head must arrive within this
    body_timeout_s: PosFloat = 60.0  # a request body must arrive within this
    shutdown_timeout_s: PosFloat = 10.0  # graceful shutdown, then open connections are closed
    db_timeout_s: PosFloat = 10.0  # a database call that takes longer gets 503 unavailable
    db_lock_timeout_s: PosFloat = 2.0  # PostgreSQL: a row lock waited for longer gets 503
    db_statement_timeout_s: PosFloat = 10.0  # PostgreSQL: server-side bound on a statement
    redis_url: str = ""  # shared edge state for several processes; "" = per process
    policy_file: str = ""  # the controller's policy (TOML); "" = the built-in defaults
    workers: PosInt = 1  # worker processes, a socket each (they share the database)
    log_format: Literal["text", "json"] = "text"  # access and relay log lines
    log_level: Literal["debug", "info", "warning", "error"] = "info"
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
        """A copy with ``changes`` applied and validated.

        Raises:
            ConfigError: an unknown setting or a bad value.
        """
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return _validated({**values, **changes}, "")



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


_ADAPTER: TypeAdapter[RelaySettings] = TypeAdapter(RelaySettings)


def _validated(values: Mapping[str, Any], where: str) -> RelaySettings:
    """``values`` validated into settings; ``where``: the config file, for messages."""
    try:
        s = _ADAPTER.validate_python(dict(values))
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e, where) for e in exc.errors())) from None
    if s.backup_max_lockout_s < s.backup_lockout_s:
        raise ConfigError(f"setting 'backup_max_lockout_s' ({s.backup_max_lockout_s}) must be "
                          f"at least 'backup_lockout_s' ({s.backup_lockout_s})")
    _networks(s.trusted_proxies)
    if s.workers > 1 and not s.redis_url:
        raise ConfigError(f"setting 'workers' ({env_name('workers')}) is {s.workers}: several "
                          "workers share one address, so a client's session, ticket and "
                          "WebSocket may reach different workers; set 'redis_url' "
                          f"({env_name('redis_url')}) so they share the edge state and the "
                          "cluster bus")
    _origins(s.cors_origins)
    if s.redis_url and not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"setting 'redis_url' ({env_name('redis_url')}): unsupported Redis "
                          f"URL scheme {s.redis_url.split(':', 1)[0]!r}: use "
                          "redis://HOST:PORT/DB, rediss://... or unix:///PATH (or leave it "
                          "empty)")
    if not s.db.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(f"setting 'db' ({env_name('db')}): unsupported database URL scheme "
                          f"{s.db.split(':', 1)[0]!r}: use sqlite:///PATH or "
                          "postgresql://USER@HOST/DB")
    return s


def _describe(error: Any, where: str) -> str:
    loc = error.get("loc", ())
    name = str(loc[0]) if loc else "?"
    if error.get("type") == "extra_forbidden":
        return f"unknown setting {name!r}"
    value = error.get("input")
    shown = "" if name in SECRET_SETTINGS or isinstance(value, dict) else f", got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        shown = f", got {value}"
    source = f" in {where}" if where else ""
    return (f"setting {name!r} ({env_name(name)}){source}: "
            f"{str(error.get('msg', 'invalid')).lower()}{shown}")


# --------------------------------------------------------------------- sources


class _TomlSource(PydanticBaseSettingsSource):
    """The ``[relay]`` table of a TOML file (or its top level without one)."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self.values: dict[str, Any] = {}
        if not path:
            return
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read relay config {path}: {exc}") from None
        if "relay" in data and len(data) > 1:
            stray = sorted(k for k in data if k != "relay")
            raise ConfigError(f"unknown top-level key(s) {stray} in {path}; put every "
                              "setting in the [relay] table")
        section = data.get("relay", data)
        known = settings_cls.model_fields
        for key in section:
            if key not in known:
                raise ConfigError(f"unknown setting {key!r} in {path}; known: "
                                  f"{', '.join(sorted(known))}")
        self.values = dict(section)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


class _EnvSource(PydanticBaseSettingsSource):
    """``SDDSF_RELAY_<NAME>``, or ``SDDSF_RELAY_<NAME>_FILE`` naming a file whose
    contents (less one trailing newline) are the value; both at once is an error."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.values: dict[str, Any] = {}
        for name in settings_cls.model_fields:
            direct, via = env.get(env_name(name)), env.get(env_name(name) + "_FILE")
            if via is not None and direct is not None:
                raise ConfigError(f"both {env_name(name)} and {env_name(name)}_FILE are set: "
                                  "set one")
            if via is not None:
                try:
                    text = Path(via).read_text()
                except (OSError, UnicodeDecodeError) as exc:
                    raise ConfigError(f"{env_name(name)}_FILE: cannot read {via}: "
                                      f"{exc}") from None
                direct = text[:-1] if text.endswith("\n") else text
            if direct is not None:
                self.values[name] = direct

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


class _Sources(BaseSettings):
    """The layering of the sources (every field optional: unset keeps the default)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=False,
                                      extra="forbid")
    _toml: ClassVar[str | None] = None
    _env: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: flags, environment, secrets directory, TOML file.
        return (init_settings, _EnvSource(settings_cls, cls._env), file_secret_settings,
                _TomlSource(settings_cls, cls._toml))


_Loader: type[_Sources] = create_model(  # type: ignore[call-overload]
    "_Loader", __base__=_Sources,
    **{f.name: (Any, None) for f in fields(RelaySettings)})


def load_settings(config_file: str | None = None, env: Mapping[str, str] | None = None,
                  *, secrets_dir: str | None = None, **overrides: Any) -> RelaySettings:
    """Build settings from defaults, a TOML file, a secrets directory, the
    environment and overrides (later wins).

    Environment variables are ``SDDSF_RELAY_<NAME>`` (e.g. ``SDDSF_RELAY_DB``);
    ``SDDSF_RELAY_<NAME>_FILE`` reads the value from a file. The secrets
    directory (``secrets_dir``, else ``SDDSF_RELAY_SECRETS_DIR``) holds one file
    per setting named like its environment variable (any case). Unknown keys in
    the file are an error, so a typo never silently keeps a default. Overrides
    that are None are ignored (a flag not given).

    Raises:
        ConfigError: unreadable file, unknown key, a bad value or a value out of range.
    """
    env = os.environ if env is None else env
    secrets = secrets_dir or env.get(ENV_PREFIX + "SECRETS_DIR") or None
    if secrets is not None and not Path(secrets).is_dir():
        raise ConfigError(f"the secrets directory {secrets} does not exist")
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - {f.name for f in fields(RelaySettings)})
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}")
    loader = type("_Load", (_Loader,), {"_toml": config_file, "_env": env})
    try:
        raw = loader(_secrets_dir=secrets, **given)
    except ValidationError as exc:  # pragma: no cover - every field is Any
        raise ConfigError(str(exc)) from None
    values = {k: v for k, v in raw.model_dump().items() if v is not None}
    return _validated(values, config_file or "")
