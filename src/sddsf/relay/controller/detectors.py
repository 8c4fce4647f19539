"""Anomaly detectors: rules, an EWMA baseline with a robust z-score, correlation (pure).

The relay feeds *signals* (what it observed about a device, with a count and a
time) and asks for *findings*; storage, clocks and alerts stay in the adapter
(:mod:`sddsf.relay.controller.service`). Every function here is deterministic.

Rules (each over the device's signals in the rule's window):

* ``fork`` (medium): the device signed two ops with one seq (equivocation, or
  a copy of the device restored from an old backup; the ``forks`` trust factor
  grows with each one);
* ``replay_burst`` (high): ``detectors.replays.threshold`` replayed or forged
  requests under the device's session tokens (evidence that its tokens leak;
  the adapter raises it about the account, not against the device);
* ``sig_failure_burst`` (high): ``detectors.sig_failures.threshold`` bad signatures;
* ``deletion_burst`` (high): ``detectors.deletions.threshold`` deletions
  (tombstones) by the device, as reported by the devices that decrypted them;
* ``pairing_burst`` (medium): ``detectors.pairing.threshold`` pairing attempts
  or device additions;
* ``device_add_burst`` (high, per account): ``detectors.device_adds.threshold``
  devices added to the account by its devices within the window (by the
  additions' registry dates, which the relay bounds by its clock); the
  default alerts well before the registry's own window limit is reached;
* ``unusual_hour`` (medium): a device was added in the quiet hours and the
  account is rarely active then;
* ``volume_spike`` (medium): ops in the current window above ``factor`` x the
  device's baseline.

Statistics: per device, ops per *active* window (a window with any activity;
an idle device does not drag its baseline to zero) keep an exponentially
weighted mean and mean absolute deviation; the robust z-score of the running
window is ``(x - mean) / max(1.4826 * mad, sqrt(mean) + 1)`` (the floor is the
Poisson noise of a count, so a steady device does not alarm on small wobbles).
``rate_anomaly`` fires above ``detectors.stats.z_threshold`` once the baseline
has ``min_windows`` windows. Updates are clipped to 5 scales above the mean, so
one burst does not become the new normal.

Correlation: alerts naming ``detectors.correlation.min_devices`` distinct
devices of one account within the window raise one account-level alert.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

from sddsf.relay.controller.policy import BurstRule, ControllerPolicy
from sddsf.relay.controller.trust import Severity

__all__ = [
    "CORRELATED",
    "FEATURES",
    "Baseline",
    "Finding",
    "RecentAlert",
    "Signal",
    "SignalKind",
    "burst_findings",
    "burst_window_s",
    "correlate",
    "device_add_burst",
    "observe",
    "rate_findings",
    "unusual_hour",
]


class SignalKind(StrEnum):
    """What the relay observed about a device."""

    OPS = "ops"  # accepted ops
    REJECTED = "rejected"  # refused ops (any code)
    SIG_FAILURE = "sig_failure"  # a signature that did not verify (op, request, session)
    FORK = "fork"  # two signed ops with one (author, seq)
    REPLAY = "replay"  # a replayed or forged request under a session token
    RATE_LIMITED = "rate_limited"  # a request refused by a rate limit
    SESSION = "session"  # a session opened
    PAIRING = "pairing"  # a pairing attempt reported, or a device added by this one
    TOMBSTONES = "tombstones"  # deletions written by this device (reported by others)


#: The per-window feature vector (closed windows feed the learned model).
FEATURES: Final = (SignalKind.OPS, SignalKind.REJECTED, SignalKind.SIG_FAILURE,
                   SignalKind.RATE_LIMITED, SignalKind.SESSION)
_MIN_VOLUME_WINDOWS: Final = 3
_CLIP_SCALES: Final = 5.0


@dataclass(frozen=True, slots=True)
class Signal:
    """``count`` events of ``kind`` at ``ts_ms``."""

    kind: SignalKind
    ts_ms: int
    count: int = 1


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a detector found; the adapter turns it into an alert."""

    rule: str
    severity: Severity
    message: str


_BURSTS: Final[dict[SignalKind, tuple[str, str, Severity]]] = {
    SignalKind.SIG_FAILURE: ("sig_failure_burst", "sig_failures", Severity.HIGH),
    SignalKind.REPLAY: ("replay_burst", "replays", Severity.HIGH),
    SignalKind.TOMBSTONES: ("deletion_burst", "deletions", Severity.HIGH),
    SignalKind.PAIRING: ("pairing_burst", "pairing", Severity.MEDIUM),
}
_WHAT: Final = {SignalKind.SIG_FAILURE: "signature failures", SignalKind.REPLAY:
                "replayed requests", SignalKind.TOMBSTONES: "deletions",
                SignalKind.PAIRING: "pairing attempts or device additions"}


def burst_window_s(kind: SignalKind, policy: ControllerPolicy) -> int:
    """The window a rule on ``kind`` looks at (0 for kinds no burst rule watches)."""
    if kind is SignalKind.FORK:
        return 1
    entry = _BURSTS.get(kind)
    if entry is None:
        return 0
    rule: BurstRule = getattr(policy.detectors, entry[1])
    return rule.window_s


def burst_findings(kind: SignalKind, history: Iterable[Signal], policy: ControllerPolicy,
                   now_ms: int) -> list[Finding]:
    """Rule findings after a signal of ``kind`` (``history`` includes it)."""
    if kind is SignalKind.FORK:
        return [Finding("fork", Severity.MEDIUM, "the device signed two different ops "
                        "with the same sequence number (equivocation); both are kept as "
                        "evidence")]
    entry = _BURSTS.get(kind)
    if entry is None:
        return []
    name, setting, severity = entry
    rule: BurstRule = getattr(policy.detectors, setting)
    since = now_ms - rule.window_s * 1000
    total = sum(s.count for s in history if s.kind is kind and s.ts_ms >= since)
    if total < rule.threshold:
        return []
    return [Finding(name, severity, f"{total} {_WHAT[kind]} within {rule.window_s} s "
                                    f"(threshold {rule.threshold})")]


def device_add_burst(additions: Iterable[int], policy: ControllerPolicy,
                     now_ms: int) -> Finding | None:
    """A finding when the account's devices added ``detectors.device_adds.threshold``
    devices within the window; ``additions`` are the dates (ms) of the device-signed
    additions in the registry."""
    rule = policy.detectors.device_adds
    since = now_ms - rule.window_s * 1000
    count = sum(1 for ts in additions if ts >= since)
    if count < rule.threshold:
        return None
    return Finding("device_add_burst", Severity.HIGH,
                   f"{count} devices were added to this account by its devices within "
                   f"{rule.window_s} s (threshold {rule.threshold}); if you did not add them, "
                   "revoke the device that did (or recover with the account secret)")


def unusual_hour(now_ms: int, hours: Sequence[int], policy: ControllerPolicy) -> Finding | None:
    """A device added now: unusual if in the quiet hours, the account has at least
    ``min_history`` session openings recorded in ``hours`` (24 counters, local
    time) and at most ``max_share`` of them fall within one hour of now."""
    rule = policy.detectors.unusual_hour
    hour = ((now_ms // 1000 + rule.utc_offset_min * 60) // 3600) % 24
    start, end = rule.quiet_start, rule.quiet_end
    quiet = start <= hour < end if start <= end else (hour >= start or hour < end)
    if not quiet:
        return None
    # What is unusual is learnt: an account with less history than min_history
    # (session openings) has no habits yet, and is not flagged.
    total = sum(hours)
    if total < rule.min_history:
        return None
    near = sum(hours[(hour + d) % 24] for d in (-1, 0, 1))
    if near / total > rule.max_share:
        return None
    return Finding("unusual_hour", Severity.MEDIUM,
                   f"a device was added at {hour:02d}:00 local time, a quiet hour for this "
                   "account")


@dataclass(frozen=True, slots=True)
class Baseline:
    """A device's rate baseline (persisted as JSON by the adapter).

    ``window`` is the running window's start and ``counts`` its counts per
    feature; ``mean``/``mad``/``n`` summarise the closed active windows;
    ``flagged`` is the start of the last window that raised a rate finding
    (one finding per window).
    """

    window: int = -1
    counts: dict[str, int] = field(default_factory=dict)
    mean: float = 0.0
    mad: float = 0.0
    n: int = 0
    flagged: int = -1

    def to_json(self) -> dict[str, object]:
        """A JSON-able dict."""
        return {"window": self.window, "counts": dict(self.counts), "mean": self.mean,
                "mad": self.mad, "n": self.n, "flagged": self.flagged}

    @classmethod
    def from_json(cls, raw: object) -> Baseline:
        """Rebuild a stored baseline (a malformed one starts afresh)."""
        if not isinstance(raw, dict):
            return cls()
        try:
            counts = {str(k): int(v) for k, v in dict(raw.get("counts", {})).items()}
            return cls(int(raw["window"]), counts, float(raw["mean"]), float(raw["mad"]),
                       int(raw["n"]), int(raw.get("flagged", -1)))
        except (KeyError, TypeError, ValueError):
            return cls()

    def scale(self) -> float:
        """The robust scale of the ops count (never below the Poisson noise)."""
        return max(1.4826 * self.mad, math.sqrt(max(self.mean, 0.0)) + 1.0)

    def vector(self) -> tuple[int, ...]:
        """The running window's feature vector (see :data:`FEATURES`)."""
        return tuple(self.counts.get(k.value, 0) for k in FEATURES)


def _fold(b: Baseline, alpha: float) -> Baseline:
    x = float(b.counts.get(SignalKind.OPS.value, 0))
    if b.n == 0:
        return replace(b, mean=x, mad=0.0, n=1)
    x = min(x, b.mean + _CLIP_SCALES * b.scale())
    mean = (1 - alpha) * b.mean + alpha * x
    mad = (1 - alpha) * b.mad + alpha * abs(x - b.mean)
    return replace(b, mean=mean, mad=mad, n=b.n + 1)


def observe(b: Baseline, signal: Signal,
            policy: ControllerPolicy) -> tuple[Baseline, tuple[int, ...] | None]:
    """Count a signal into its window. Returns the new baseline and, when the
    signal opened a new window, the feature vector of the window it closed."""
    width = policy.detectors.stats.window_s * 1000
    start = signal.ts_ms - signal.ts_ms % width
    closed: tuple[int, ...] | None = None
    if start > b.window:
        if b.window >= 0 and any(b.counts.values()):
            closed = b.vector()
            b = _fold(b, policy.detectors.stats.alpha)
        b = replace(b, window=start, counts={})
    elif start < b.window:
        return b, None  # a late signal of a closed window: already summarised
    counts = dict(b.counts)
    counts[signal.kind.value] = counts.get(signal.kind.value, 0) + signal.count
    return replace(b, counts=counts), closed


def rate_findings(b: Baseline, policy: ControllerPolicy) -> tuple[Baseline, list[Finding]]:
    """Volume and z-score findings on the running window (at most once per window)."""
    if b.flagged == b.window:
        return b, []
    stats, volume = policy.detectors.stats, policy.detectors.volume
    x = b.counts.get(SignalKind.OPS.value, 0)
    found: list[Finding] = []
    if b.n >= _MIN_VOLUME_WINDOWS and x >= volume.min_ops and x > volume.factor * max(b.mean,
                                                                                      1.0):
        found.append(Finding("volume_spike", Severity.MEDIUM,
                             f"{x} ops in this window, {x / max(b.mean, 1.0):.0f}x the device's "
                             f"usual {b.mean:.0f}"))
    z = (x - b.mean) / b.scale()
    if b.n >= stats.min_windows and x >= stats.min_count and z > stats.z_threshold:
        found.append(Finding("rate_anomaly", Severity.MEDIUM,
                             f"op rate z-score {z:.1f} (threshold {stats.z_threshold:g}) over "
                             f"a baseline of {b.n} windows"))
    return (replace(b, flagged=b.window) if found else b), found


@dataclass(frozen=True, slots=True)
class RecentAlert:
    """An alert of the account, as correlation sees it."""

    device: bytes
    rule: str
    created_ms: int


CORRELATED: Final = "correlated"


def correlate(recent: Sequence[RecentAlert], policy: ControllerPolicy,
              now_ms: int) -> Finding | None:
    """An account-level finding when several devices were alerted on recently, unless
    a correlated alert was already raised in the window."""
    rule = policy.detectors.correlation
    since = now_ms - rule.window_s * 1000
    window = [a for a in recent if a.created_ms >= since]
    if any(a.rule == CORRELATED for a in window):
        return None
    devices = {a.device for a in window if a.device}
    if len(devices) < rule.min_devices:
        return None
    rules = ", ".join(sorted({a.rule for a in window if a.device}))
    return Finding(CORRELATED, Severity.HIGH,
                   f"{len(devices)} devices of this account were alerted on within "
                   f"{rule.window_s} s ({rules}); the account may be under attack")
