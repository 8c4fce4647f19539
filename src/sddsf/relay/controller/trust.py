"""Trust scores: 0-100 per device, explained factor by factor (pure).

A device starts at 100; each factor below subtracts points, and the score is
clamped to [0, 100]. The access level follows from the policy's thresholds,
and a device with an open quarantining alert is at most read-only.

| factor | points |
| --- | --- |
| ``posture_missing`` | -10 (no posture statement yet) |
| ``posture_stale`` | -10 (older than ``posture.max_age_s``) |
| ``os_outdated`` / ``app_outdated`` | -20 each (below the policy minimum) |
| ``key_storage`` | -25 (a kind the policy does not allow, e.g. plaintext) |
| ``rooted`` | -45 when rooted and not allowed; -5 when unknown |
| ``new_device`` | -10 in its first day, -5 in its first week |
| ``sig_failures`` | -3 each (window ``detectors.sig_failures``), at most -15 |
| ``forks`` | -10 each (last 30 days), at most -30 |
| ``rate_limited`` | -1 each (last hour), at most -10 |
| ``open_alerts`` | low -5, medium -10, high -25, critical -50 each; at most -60 |

Replayed or forged requests under a device's session token are not a factor:
they show that the token leaked, not what the device did (the relay ends that
session and raises an account-level ``replay_burst`` alert).

Session opening ignores ``posture_stale`` (``for_session=True``): a device
sends a fresh statement with every session, so staleness alone must not lock it
out before it can.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sddsf.protocol.posture import Posture
from sddsf.relay.controller.policy import ControllerPolicy, version_tuple

__all__ = ["Access", "DeviceSignals", "Factor", "OpenAlert", "Severity", "TrustScore",
           "access_for", "score_device"]

DAY_MS: Final = 86_400_000


class Severity(StrEnum):
    """How bad an alert is."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 (low) .. 3 (critical)."""
        return list(Severity).index(self)


class Access(StrEnum):
    """What the relay lets a device do."""

    FULL = "full"
    READ_ONLY = "read_only"
    DENIED = "denied"


_ALERT_POINTS: Final = {Severity.LOW: 5, Severity.MEDIUM: 10, Severity.HIGH: 25,
                        Severity.CRITICAL: 50}


@dataclass(frozen=True, slots=True)
class Factor:
    """One contribution to a score (``points`` <= 0)."""

    name: str
    points: int
    detail: str


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An unacknowledged alert naming the device."""

    rule: str
    severity: Severity
    quarantine: bool


@dataclass(frozen=True, slots=True)
class DeviceSignals:
    """What the relay knows about a device when scoring it."""

    added_ms: int
    posture: Posture | None = None
    posture_ts_ms: int | None = None
    sig_failures: int = 0
    forks: int = 0
    rate_limited: int = 0
    open_alerts: tuple[OpenAlert, ...] = ()


@dataclass(frozen=True, slots=True)
class TrustScore:
    """A device's score, access level and the factors that explain it."""

    score: int
    access: Access
    factors: tuple[Factor, ...]
    quarantined: bool


def _posture_factors(s: DeviceSignals, policy: ControllerPolicy, now_ms: int,
                     for_session: bool) -> list[Factor]:
    req = policy.posture
    p = s.posture
    if p is None or s.posture_ts_ms is None:
        return [Factor("posture_missing", -10, "the device has sent no posture statement")]
    out: list[Factor] = []
    age_s = (now_ms - s.posture_ts_ms) // 1000
    if age_s > req.max_age_s and not for_session:
        out.append(Factor("posture_stale", -10, f"posture is {age_s // 3600} h old (limit "
                                                f"{req.max_age_s // 3600} h)"))
    minimum = req.min_os_version.get(p.os)
    if minimum is not None and version_tuple(p.os_version) < version_tuple(minimum):
        out.append(Factor("os_outdated", -20, f"{p.os} {p.os_version} is below the minimum "
                                              f"{minimum}"))
    if version_tuple(p.app_version) < version_tuple(req.min_app_version):
        out.append(Factor("app_outdated", -20, f"app {p.app_version} is below the minimum "
                                               f"{req.min_app_version}"))
    if p.key_storage not in req.required_key_storage:
        wanted = ", ".join(req.required_key_storage)
        out.append(Factor("key_storage", -25, f"keys are stored as {p.key_storage!r}; the "
                                              f"policy wants {wanted}"))
    if p.rooted == "yes" and not req.allow_rooted:
        out.append(Factor("rooted", -45, "the device reports it is rooted/jailbroken"))
    elif p.rooted == "unknown":
        out.append(Factor("rooted", -5, "the device cannot tell whether it is rooted"))
    return out


def _capped(name: str, count: int, each: int, cap: int, what: str) -> list[Factor]:
    if count <= 0:
        return []
    return [Factor(name, -min(count * each, cap), f"{count} {what}")]


def score_device(s: DeviceSignals, policy: ControllerPolicy, now_ms: int, *,
                 for_session: bool = False) -> TrustScore:
    """Score a device (see the module docstring for every factor)."""
    factors = _posture_factors(s, policy, now_ms, for_session)
    age = now_ms - s.added_ms
    if age < DAY_MS:
        factors.append(Factor("new_device", -10, "added less than a day ago"))
    elif age < 7 * DAY_MS:
        factors.append(Factor("new_device", -5, "added less than a week ago"))
    factors += _capped("sig_failures", s.sig_failures, 3, 15, "recent signature failures")
    factors += _capped("forks", s.forks, 10, 30, "forked op chains (equivocation)")
    factors += _capped("rate_limited", s.rate_limited, 1, 10, "rate-limit hits in the last hour")
    if s.open_alerts:
        points = sum(_ALERT_POINTS[a.severity] for a in s.open_alerts)
        rules = ", ".join(sorted({a.rule for a in s.open_alerts}))
        factors.append(Factor("open_alerts", -min(points, 60),
                              f"{len(s.open_alerts)} open alert(s): {rules}"))
    score = max(0, min(100, 100 + sum(f.points for f in factors)))
    quarantined = any(a.quarantine for a in s.open_alerts)
    return TrustScore(score, access_for(score, policy, quarantined), tuple(factors), quarantined)


def access_for(score: int, policy: ControllerPolicy, quarantined: bool) -> Access:
    """The access level of a score (a quarantined device is at most read-only)."""
    t = policy.thresholds
    if score < t.read_only:
        return Access.DENIED
    if score < t.full or quarantined:
        return Access.READ_ONLY
    return Access.FULL
