"""The controller's policy: a TOML file the relay loads, with safe defaults.

Every table and key is optional; a key this module does not know is a
:class:`~sddsf.errors.ConfigError` (a typo never silently keeps a default).
``docs/controller.md`` shows the whole file with its defaults. Sections:

* ``[thresholds]``: trust score at or above ``full`` → full access; at or above
  ``read_only`` → may pull, pushes refused (``policy_read_only``); below →
  denied (no session, ``policy_denied``).
* ``[posture]``: staleness, minimum OS (per ``platform.system()`` name) and app
  versions, allowed key storage kinds, whether a rooted device is tolerated.
* ``[encryption]``: what the relay publishes signed to clients (minimum KDF
  parameters, allowed suites, key-epoch rotation age); clients apply it but
  never weaken their own settings.
* ``[approvals]``: the minimum approvals for device changes that the relay
  expects of each account's signed registry policy (keys ``approvals`` and
  ``veto_window_s``, enforced by every device when it verifies the registry).
  The relay cannot enforce a registry policy; it raises a
  ``weak_registry_policy`` alert when an account's is weaker than this.
* ``[alerts]``: which rules quarantine the device they name (read-only until an
  owner acknowledges the alert, with another device or the account key, or
  until ``quarantine_max_s`` has passed).
* ``[detectors.*]``: thresholds and windows of each detector.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from sddsf.errors import ConfigError

__all__ = [
    "AlertPolicy",
    "ApprovalPolicy",
    "ControllerPolicy",
    "DetectorPolicy",
    "EncryptionPolicySettings",
    "PostureRequirements",
    "Thresholds",
    "load_policy",
    "policy_from_mapping",
    "version_tuple",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Score thresholds of the three access levels."""

    full: int = 40
    read_only: int = 15


@dataclass(frozen=True, slots=True)
class PostureRequirements:
    """What a device's posture must state."""

    max_age_s: int = 86_400
    min_os_version: dict[str, str] = field(default_factory=dict)
    min_app_version: str = "0.1.0"
    required_key_storage: tuple[str, ...] = ("keyring", "passphrase")
    allow_rooted: bool = False


@dataclass(frozen=True, slots=True)
class EncryptionPolicySettings:
    """The encryption policy the relay publishes (signed) to clients."""

    min_kdf_t: int = 3
    min_kdf_m_kib: int = 64 * 1024
    min_kdf_p: int = 1
    allowed_suites: tuple[int, ...] = (1,)
    max_epoch_age_s: int = 90 * 86_400


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """The weakest registry approval policy the relay accepts without an alert."""

    min_approvals: int = 1
    min_veto_window_s: int = 0


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Which rules' alerts quarantine their device (read-only until acknowledged, or
    for at most ``quarantine_max_s``: the owner is never locked out for good).

    ``replay_burst`` is not in the default list: a replayed or forged request under
    a device's session token is evidence that the token leaked, not that the
    device misbehaved (the relay ends that session instead)."""

    quarantine: tuple[str, ...] = ("sig_failure_burst",)
    quarantine_max_s: int = 86_400


@dataclass(frozen=True, slots=True)
class BurstRule:
    """``threshold`` events within ``window_s`` raise an alert."""

    threshold: int
    window_s: int


@dataclass(frozen=True, slots=True)
class UnusualHour:
    """Quiet hours ``[quiet_start, quiet_end)`` in local time (UTC + offset); a device
    added then is unusual unless the account is often active at that hour."""

    quiet_start: int = 1
    quiet_end: int = 5
    utc_offset_min: int = 0
    max_share: float = 0.02
    min_history: int = 20


@dataclass(frozen=True, slots=True)
class VolumeRule:
    """Ops in the current window above ``factor`` times the device's baseline."""

    factor: float = 10.0
    min_ops: int = 500


@dataclass(frozen=True, slots=True)
class StatsDetector:
    """EWMA baseline of per-window rates and a robust z-score."""

    window_s: int = 3600
    alpha: float = 0.1
    z_threshold: float = 10.0
    min_windows: int = 12
    min_count: int = 50


@dataclass(frozen=True, slots=True)
class MlDetector:
    """IsolationForest over closed windows (used when scikit-learn is installed)."""

    enabled: bool = True
    min_samples: int = 256
    contamination: float = 0.002
    retrain_every: int = 256
    max_samples: int = 4096
    min_ops: int = 50


@dataclass(frozen=True, slots=True)
class Correlation:
    """Alerts on ``min_devices`` devices of one account within ``window_s``."""

    window_s: int = 3600
    min_devices: int = 2


@dataclass(frozen=True, slots=True)
class DetectorPolicy:
    """Every detector's settings."""

    sig_failures: BurstRule = BurstRule(5, 600)
    replays: BurstRule = BurstRule(3, 600)
    deletions: BurstRule = BurstRule(20, 3600)
    pairing: BurstRule = BurstRule(5, 3600)
    device_adds: BurstRule = BurstRule(8, 86_400)
    unusual_hour: UnusualHour = UnusualHour()
    volume: VolumeRule = VolumeRule()
    stats: StatsDetector = StatsDetector()
    ml: MlDetector = MlDetector()
    correlation: Correlation = Correlation()


@dataclass(frozen=True, slots=True)
class ControllerPolicy:
    """The whole policy; ``ControllerPolicy()`` is the default."""

    thresholds: Thresholds = Thresholds()
    posture: PostureRequirements = PostureRequirements()
    encryption: EncryptionPolicySettings = EncryptionPolicySettings()
    approvals: ApprovalPolicy = ApprovalPolicy()
    alerts: AlertPolicy = AlertPolicy()
    detectors: DetectorPolicy = DetectorPolicy()

    def digest(self) -> str:
        """A short stable digest (a change of policy is an audit event)."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


_SCALARS: Final[dict[Any, tuple[type, ...]]] = {int: (int,), float: (int, float),
                                                str: (str,), bool: (bool,)}


def _value(tp: Any, raw: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"policy {where}: expected a table")
        return _build(tp, raw, where)  # type: ignore[arg-type]
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if not isinstance(raw, list):
            raise ConfigError(f"policy {where}: expected an array")
        return tuple(_value(item, v, f"{where}[{i}]") for i, v in enumerate(raw))
    if origin is dict:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"policy {where}: expected a table")
        return {str(k): _value(str, v, f"{where}.{k}") for k, v in raw.items()}
    kinds = _SCALARS[tp]
    if (isinstance(raw, bool) and tp is not bool) or not isinstance(raw, kinds):
        raise ConfigError(f"policy {where}: {raw!r} is not a {tp.__name__}")
    number: Any = raw
    if tp in (int, float) and number < 0:
        raise ConfigError(f"policy {where}: {raw!r} must not be negative")
    return float(number) if tp is float else raw


def _build(cls: type[T], raw: Mapping[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"unknown policy key(s) {unknown} in [{where or 'top level'}]; "
                          f"known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        values[name] = _value(hints[name], value, f"{where}.{name}" if where else name)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"policy [{where}]: give every key of this table ({exc})") from None


def _validated(p: ControllerPolicy) -> ControllerPolicy:
    t = p.thresholds
    if not 0 <= t.read_only <= t.full <= 100:
        raise ConfigError(f"policy thresholds need 0 <= read_only ({t.read_only}) <= full "
                          f"({t.full}) <= 100")
    d = p.detectors
    hour = d.unusual_hour
    if not (0 <= hour.quiet_start <= 23 and 0 <= hour.quiet_end <= 24):
        raise ConfigError("policy detectors.unusual_hour: hours are 0..24")
    if not 0 < d.stats.alpha <= 1:
        raise ConfigError("policy detectors.stats.alpha must be in (0, 1]")
    if not 0 < d.ml.contamination < 0.5:
        raise ConfigError("policy detectors.ml.contamination must be in (0, 0.5)")
    for name in ("sig_failures", "replays", "deletions", "pairing", "device_adds"):
        rule: BurstRule = getattr(d, name)
        if rule.threshold < 1 or rule.window_s < 1:
            raise ConfigError(f"policy detectors.{name}: threshold and window_s must be >= 1")
    for storage in p.posture.required_key_storage:
        if storage not in ("keyring", "passphrase", "plaintext"):
            raise ConfigError(f"policy posture.required_key_storage: unknown kind {storage!r}")
    if p.alerts.quarantine_max_s < 1:
        raise ConfigError("policy alerts.quarantine_max_s must be >= 1 (a quarantine must end)")
    if not p.encryption.allowed_suites:
        raise ConfigError("policy encryption.allowed_suites must name at least one suite")
    return p


def policy_from_mapping(raw: Mapping[str, Any]) -> ControllerPolicy:
    """A validated policy from a parsed TOML document.

    Raises:
        ConfigError: unknown key, wrong type, or a value out of range.
    """
    return _validated(_build(ControllerPolicy, raw, ""))


def load_policy(path: str | None) -> ControllerPolicy:
    """The policy in ``path`` (a TOML file), or the defaults for an empty path.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or a value out of range.
    """
    if not path:
        return ControllerPolicy()
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the controller policy {path}: {exc}") from None
    return policy_from_mapping(data)


def version_tuple(text: str) -> tuple[int, ...]:
    """The leading numeric components of a version (``"5.15.0-91-generic"`` →
    ``(5, 15, 0)``); compared as tuples, so ``10.0`` > ``9.9``."""
    parts: list[int] = []
    for piece in text.replace("-", ".").split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return tuple(parts)
