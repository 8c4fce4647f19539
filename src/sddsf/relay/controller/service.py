"""The controller inside a relay process: signals in, scores, alerts and audit out.

This is the adapter around the pure core (reports, trust, detectors, the
learned model, audit entries): it reads and writes :class:`RelayStorage`, takes
time from the relay's injected clock and pushes alerts through a callback (the
WebSocket hub). One :class:`Controller` per relay app.

Hooks are best effort where they run after something was already stored (an
op batch, a registry entry): a storage failure there is logged, never turned
into an error for a request whose effect is durable. Enforcement
(:meth:`Controller.require_session`, :meth:`Controller.require_write`) fails
closed.

Two hooks connect it to the relay's edge: ``audit_budget`` (a per-device token
bucket: how many audit entries a device's reports and sessions may add) and
``live`` (the process's WebSocket hub: a device the policy denies has its live
connections closed, as revocation does).

Caches are per process: trust scores for ``TRUST_TTL_MS`` (dropped at once
when this process records something about the device), and the rate baselines
(written back to storage when a window closes). In a cluster each node's
statistics see its own share of a device's traffic.

Size: one Controller is the relay's single entry point to the security
controller (trust, signals, alerts, events, reports, audit log); its parts
share the per-process caches and storage, while the pure logic already lives in
trust, detectors and ml.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol

from sddsf.crypto import Ed25519SigningKey, random_bytes, sha256
from sddsf.errors import (
    AuthenticationError,
    AuthorizationError,
    ClockSkewError,
    Code,
    NotFoundError,
    RateLimitedError,
    SddsfError,
    UsageError,
)
from sddsf.protocol import audit as au
from sddsf.protocol import auth, merkle
from sddsf.protocol.encpolicy import EncryptionPolicy, sign_encryption_policy
from sddsf.protocol.identity import fingerprint
from sddsf.protocol.membership import MembershipEntry
from sddsf.protocol.posture import (
    DeviceReport,
    Posture,
    ReportKind,
    decode_report,
    verify_report,
)
from sddsf.protocol.registry import DeviceRecord, EntryType, RegistryEntry, RegistryState
from sddsf.protocol.treehead import sign_tree_head
from sddsf.relay.controller import detectors as det
from sddsf.relay.controller.detectors import Finding, Signal, SignalKind
from sddsf.relay.controller.ml import IsolationDetector, isolation_available
from sddsf.relay.controller.policy import ControllerPolicy
from sddsf.relay.controller.trust import (
    Access,
    DeviceSignals,
    OpenAlert,
    Severity,
    TrustScore,
    score_device,
)
from sddsf.relay.storage.base import AlertRecord, RelayStorage

__all__ = ["CALLER", "TRUST_TTL_MS", "Controller", "LiveConnections", "ReportOutcome",
           "alert_json"]

# The logger keeps the name operators filter on (docs/operations.md, "Operating alerts").
log = logging.getLogger("sddsf.controller")

#: The authenticated (account, device) of the request being served; set by the
#: relay's authentication dependency so hooks deep in the fabric can attribute
#: what they see to the uploader (not to an author id an envelope merely claims).
CALLER: contextvars.ContextVar[tuple[bytes, bytes] | None] = contextvars.ContextVar(
    "sddsf_caller", default=None)
TRUST_TTL_MS: Final = 2000
_FORK_MEMORY_MS: Final = 30 * 86_400_000
_RATE_WINDOW_MS: Final = 3_600_000
_SEVERE: Final = {Severity.HIGH, Severity.CRITICAL}
Publish = Callable[[bytes, bytes, dict[str, object]], object]
#: ``(account, device) -> seconds to wait`` (0.0: one more audit entry is allowed).
AuditBudget = Callable[[bytes, bytes], Awaitable[float]]
# Signals that lower a device's score (others only matter through the alerts they raise).
_SCORED: Final = {SignalKind.SIG_FAILURE, SignalKind.FORK, SignalKind.RATE_LIMITED}


class LiveConnections(Protocol):
    """The relay process's live connections (:class:`~sddsf.relay.fanout.Hub`)."""

    def has_device(self, device_id: bytes) -> bool:
        """Whether the device has an open connection here."""
        ...

    def close_device(self, device_id: bytes, reason: str) -> int:
        """Close the device's connections; how many."""
        ...


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """What the relay did with a report: whether it was news, and the audit leaf."""

    stored: bool
    audit_seq: int | None
    kind: ReportKind


def _now_ms() -> int:
    import time  # noqa: PLC0415 - only the default clock needs it

    return time.time_ns() // 1_000_000


class Controller:
    """Trust, policy enforcement, detection, alerts and the audit log of one relay."""

    def __init__(self, storage: RelayStorage, policy: ControllerPolicy,
                 relay_key: Ed25519SigningKey,
                 registry: Callable[[bytes], Awaitable[RegistryState]], *,
                 clock: Callable[[], int] = _now_ms, publish: Publish | None = None,
                 max_skew_ms: int = 600_000, window_ms: int = 120_000,
                 audit_budget: AuditBudget | None = None,
                 live: LiveConnections | None = None) -> None:
        self.storage = storage
        self.policy = policy
        self.relay_key = relay_key
        self._registry = registry
        self._clock = clock
        self._publish = publish
        self._max_skew_ms = max_skew_ms
        self._window_ms = window_ms
        self._audit_budget = audit_budget
        self.live = live
        self._trust: dict[tuple[bytes, bytes, bool], tuple[int, TrustScore]] = {}
        self._baselines: dict[tuple[bytes, bytes], det.Baseline] = {}
        self._last_rate_limited: dict[tuple[bytes, bytes], int] = {}
        self.ml = (IsolationDetector(policy.detectors.ml)
                   if policy.detectors.ml.enabled and isolation_available() else None)

    async def _state(self, account_id: bytes) -> RegistryState:
        return await self._registry(account_id)

    # ------------------------------------------------------------ trust
    def _forget(self, account_id: bytes, device_id: bytes) -> None:
        for for_session in (False, True):
            self._trust.pop((account_id, device_id, for_session), None)

    async def trust(self, account_id: bytes, device_id: bytes, *,
                    for_session: bool = False) -> TrustScore:
        """The device's current score (cached for ``TRUST_TTL_MS``).

        Raises:
            NotFoundError: unknown account; AuthorizationError ``unknown_device``.
        """
        now = self._clock()
        key = (account_id, device_id, for_session)
        hit = self._trust.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        state = await self._state(account_id)
        record = state.device(device_id)
        if record is None:
            raise AuthorizationError("device is not in this account's registry",
                                     Code.UNKNOWN_DEVICE)
        posture, posture_ts = None, None
        stored = (await self.storage.postures(account_id)).get(device_id)
        if stored is not None:
            posture, posture_ts = decode_report(stored.report).posture, stored.ts_ms
        d = self.policy.detectors
        rows = await self.storage.signals(account_id, device_id, now - _FORK_MEMORY_MS)

        def count(kind: SignalKind, window_ms: int) -> int:
            since = now - window_ms
            return sum(r.count for r in rows if r.kind == kind.value and r.ts_ms >= since)

        alerts = [a for a in await self.storage.alerts(account_id) if a.device_id == device_id]
        score = score_device(DeviceSignals(
            added_ms=record.added_ts, posture=posture, posture_ts_ms=posture_ts,
            sig_failures=count(SignalKind.SIG_FAILURE, d.sig_failures.window_s * 1000),
            forks=count(SignalKind.FORK, _FORK_MEMORY_MS),
            rate_limited=count(SignalKind.RATE_LIMITED, _RATE_WINDOW_MS),
            open_alerts=tuple(OpenAlert(a.rule, Severity(a.severity), self.quarantines(a, now))
                              for a in alerts)), self.policy, now, for_session=for_session)
        self._trust[key] = (now + TRUST_TTL_MS, score)
        return score

    def quarantine_ends_ms(self, alert: AlertRecord) -> int | None:
        """When the alert's quarantine ends by itself (None: it does not quarantine)."""
        if not alert.quarantine or alert.acked_ms is not None:
            return None
        return alert.created_ms + self.policy.alerts.quarantine_max_s * 1000

    def quarantines(self, alert: AlertRecord, now_ms: int) -> bool:
        """Whether the alert keeps its device quarantined at ``now_ms``: it is open
        and younger than ``alerts.quarantine_max_s`` (the owner is never locked
        out for good)."""
        ends = self.quarantine_ends_ms(alert)
        return ends is not None and now_ms < ends

    def _deny_live(self, device_id: bytes) -> None:
        # A denied device keeps no live connection on this process (as revocation).
        if self.live is not None and self.live.close_device(device_id, "policy_denied"):
            log.warning("controller: closed the live connections of denied device %s",
                        device_id.hex()[:12])

    async def _enforce_live(self, account_id: bytes, device_id: bytes) -> None:
        # Re-score a device that has a live connection here after something that
        # can lower its score; close its connections once it is denied.
        if not device_id or self.live is None or not self.live.has_device(device_id):
            return
        try:
            score = await self.trust(account_id, device_id)
        except AuthorizationError:  # no longer in the registry: revocation closes it
            return
        except SddsfError as exc:  # best effort: the next connect or subscribe checks again
            log.warning("controller: could not re-score %s: %s", device_id.hex()[:12], exc)
            return
        if score.access is Access.DENIED:
            self._deny_live(device_id)

    async def require_session(self, account_id: bytes, device_id: bytes) -> TrustScore:
        """Refuse a denied device a session (``policy_denied``); record the session.

        Raises:
            AuthorizationError: ``policy_denied``.
        """
        score = await self.trust(account_id, device_id, for_session=True)
        if score.access is Access.DENIED:
            self._deny_live(device_id)
            raise AuthorizationError(_refusal("cannot open a session", score),
                                     Code.POLICY_DENIED)
        await self._on_session(account_id, device_id, score)
        return score

    async def require_access(self, account_id: bytes, device_id: bytes, *,
                             write: bool) -> TrustScore:
        """Refuse a denied device everything and a read-only one every write.

        Raises:
            AuthorizationError: ``policy_denied``, or ``policy_read_only`` for a write.
        """
        score = await self.trust(account_id, device_id)
        if score.access is Access.DENIED:
            self._deny_live(device_id)
            raise AuthorizationError(_refusal("is denied", score), Code.POLICY_DENIED)
        if write and score.access is Access.READ_ONLY:
            raise AuthorizationError(_refusal("is read-only: it may pull but not push", score),
                                     Code.POLICY_READ_ONLY)
        return score

    # ------------------------------------------------------------ signals
    async def signal(self, account_id: bytes, device_id: bytes, kind: SignalKind,
                     count: int = 1) -> None:
        """Record what the relay observed about a device and run the detectors.

        Best effort: a storage failure is logged, never raised.
        """
        try:
            await self._signal(account_id, device_id, Signal(kind, self._clock(), count))
        except SddsfError as exc:
            log.warning("controller: could not record %s for %s: %s", kind.value,
                        device_id.hex()[:12], exc)

    async def _signal(self, account_id: bytes, device_id: bytes, s: Signal) -> None:
        self._forget(account_id, device_id)
        findings: list[Finding] = []
        if s.kind in (SignalKind.OPS, SignalKind.REJECTED, SignalKind.SESSION):
            findings += await self._observe_rate(account_id, device_id, s)
        if s.kind not in (SignalKind.OPS, SignalKind.REJECTED):
            await self.storage.record_signal(account_id, device_id, s.kind.value, s.ts_ms,
                                             s.count)
            window = det.burst_window_s(s.kind, self.policy)
            if window:
                rows = await self.storage.signals(account_id, device_id,
                                                  s.ts_ms - window * 1000)
                history = [Signal(SignalKind(r.kind), r.ts_ms, r.count) for r in rows
                           if r.kind == s.kind.value]
                findings += det.burst_findings(s.kind, history, self.policy, s.ts_ms)
        for finding in findings:
            if s.kind is SignalKind.REPLAY:
                # Replayed or forged requests show that the device's session tokens
                # leak, not what the device did: an account-level alert naming it.
                await self.raise_alert(account_id, b"", replace(
                    finding, message=f"device {device_id.hex()[:12]}: {finding.message}; its "
                    "session tokens leak (a proxy logging headers, TLS interception); "
                    "the sessions used were ended"))
            else:
                await self.raise_alert(account_id, device_id, finding)
        if s.kind in _SCORED:
            await self._enforce_live(account_id, device_id)

    async def session_misused(self, account_id: bytes, device_id: bytes) -> None:
        """A replayed or forged request came with one of the device's session tokens
        (the relay has ended that session). Counted for ``replay_burst``, not
        against the device."""
        await self.signal(account_id, device_id, SignalKind.REPLAY)

    async def _observe_rate(self, account_id: bytes, device_id: bytes,
                            s: Signal) -> list[Finding]:
        key = (account_id, device_id)
        b = self._baselines.get(key)
        if b is None:
            raw = await self.storage.get_controller_state(account_id, device_id)
            b = det.Baseline.from_json(json.loads(raw) if raw else None)
        b, closed = det.observe(b, s, self.policy)
        found: list[Finding] = []
        if closed is not None and self.ml is not None:
            learned = self.ml.add(closed)
            if learned is not None:
                found.append(learned)
        flagged_before = b.flagged
        b, rate = det.rate_findings(b, self.policy)
        found += rate
        self._baselines[key] = b
        if closed is not None or b.flagged != flagged_before:
            await self.storage.put_controller_state(account_id, device_id,
                                                    json.dumps(b.to_json()).encode(), s.ts_ms)
        return found

    async def on_batch(self, account_id: bytes, authors: Sequence[bytes | None],
                       statuses: Sequence[tuple[str, str | None]],
                       fork_authors: Sequence[bytes]) -> None:
        """The fabric stored a batch: count accepted ops per author and refusals
        (bad signatures) against the uploader; a fork is signed evidence against
        its author."""
        accepted: dict[bytes, int] = {}
        rejected = sig_failures = 0
        for author, (status, code) in zip(authors, statuses, strict=True):
            if status == "accepted" and author is not None:
                accepted[author] = accepted.get(author, 0) + 1
            elif status == "rejected":
                rejected += 1
                sig_failures += code == Code.SIG_INVALID.value
        for author, n in accepted.items():
            await self.signal(account_id, author, SignalKind.OPS, n)
        caller = CALLER.get()
        if caller is not None and caller[0] == account_id:
            if rejected:
                await self.signal(account_id, caller[1], SignalKind.REJECTED, rejected)
            if sig_failures:
                await self.signal(account_id, caller[1], SignalKind.SIG_FAILURE, sig_failures)
        for author in dict.fromkeys(fork_authors):
            await self.signal(account_id, author, SignalKind.FORK)

    async def rate_limited(self) -> None:
        """The current caller hit a rate limit (recorded at most once a second)."""
        caller = CALLER.get()
        if caller is None:
            return
        now = self._clock()
        if now - self._last_rate_limited.get(caller, -10**15) < 1000:
            return
        self._last_rate_limited[caller] = now
        await self.signal(*caller, SignalKind.RATE_LIMITED)

    # ------------------------------------------------------------ alerts
    async def raise_alert(self, account_id: bytes, device_id: bytes, finding: Finding) -> None:
        """Store, log, push and correlate an alert (suppressed while an open alert
        of the same rule names the same device)."""
        now = self._clock()
        if any(a.device_id == device_id and a.rule == finding.rule
               and (not a.quarantine or self.quarantines(a, now))
               for a in await self.storage.alerts(account_id)):
            return  # still in force (an expired quarantine does not hide a new one)
        quarantine = bool(device_id) and finding.rule in self.policy.alerts.quarantine
        alert = AlertRecord(random_bytes(16), account_id, device_id, finding.rule,
                            finding.severity.value, finding.message, quarantine, now)
        await self.storage.put_alert(alert)
        self._forget(account_id, device_id)
        await self.audit(account_id, au.AuditKind.ALERT, device=device_id, data={
            "alert_id": alert.alert_id, "rule": alert.rule, "severity": alert.severity,
            "quarantine": quarantine})
        log.warning("alert %s (%s) on account %s device %s: %s", alert.rule, alert.severity,
                    account_id.hex()[:12], device_id.hex()[:12] or "-", alert.message)
        if self._publish is not None:
            self._publish(account_id, device_id,
                          alert_json(alert, self.quarantine_ends_ms(alert)))
        await self._enforce_live(account_id, device_id)
        if device_id:
            recent = await self.storage.alerts(account_id, include_acked=True,
                                               since_ms=now - self.policy.detectors
                                               .correlation.window_s * 1000)
            found = det.correlate([det.RecentAlert(a.device_id, a.rule, a.created_ms)
                                   for a in recent], self.policy, now)
            if found is not None:
                await self.raise_alert(account_id, b"", found)

    async def alerts(self, account_id: bytes, *, include_acked: bool) -> list[AlertRecord]:
        """The account's alerts, oldest first."""
        return await self.storage.alerts(account_id, include_acked=include_acked)

    async def acknowledge(self, account_id: bytes, alert_id: bytes,
                          by_device: bytes) -> AlertRecord:
        """Acknowledge an alert from a device (lifts its quarantine). A device cannot
        acknowledge an alert about itself (the account key can:
        :meth:`acknowledge_as_account`), and needs full access.

        Raises:
            NotFoundError; AuthorizationError ``not_authorized`` / ``policy_*``.
        """
        alert = await self._alert(account_id, alert_id)
        if alert.device_id == by_device:
            raise AuthorizationError(
                "a device cannot acknowledge an alert about itself; acknowledge it from "
                "another device with full access, or with the account key: `sddsf alerts "
                f"--ack {alert_id.hex()[:12]} --phrase`", Code.NOT_AUTHORIZED)
        await self.require_access(account_id, by_device, write=True)
        return await self._ack(account_id, alert, by_device, "device")

    async def acknowledge_as_account(self, account_id: bytes, alert_ids: Sequence[bytes],
                                     ts_ms: int, signature: bytes) -> list[AlertRecord]:
        """Acknowledge alerts with the account key (the owner's way out of any
        quarantine, also of the account's only device): the listed alerts, or
        with none listed every open alert created at or before ``ts_ms``.

        Raises:
            AuthorizationError ``not_authorized``: not signed by the account key;
            ClockSkewError: ``ts_ms`` outside the freshness window; NotFoundError.
        """
        state = await self._state(account_id)
        if not state.account.signing_key.is_valid_signature(
                auth.alert_ack_message(account_id, ts_ms, alert_ids), signature):
            raise AuthorizationError("the acknowledgement is not signed by this account's key",
                                     Code.NOT_AUTHORIZED)
        now = self._clock()
        if abs(ts_ms - now) > self._window_ms:
            raise ClockSkewError(f"the acknowledgement is dated {abs(ts_ms - now) // 1000} s "
                                 "from the relay's clock; check this device's clock")
        if alert_ids:
            targets = [await self._alert(account_id, a) for a in alert_ids]
        else:
            targets = [a for a in await self.storage.alerts(account_id)
                       if a.created_ms <= ts_ms]
        return [await self._ack(account_id, a, account_id, "account") for a in targets]

    async def _alert(self, account_id: bytes, alert_id: bytes) -> AlertRecord:
        alert = next((a for a in await self.storage.alerts(account_id, include_acked=True)
                      if a.alert_id == alert_id), None)
        if alert is None:
            raise NotFoundError(f"no alert {alert_id.hex()[:12]} in this account")
        return alert

    async def _ack(self, account_id: bytes, alert: AlertRecord, by: bytes,
                   key: str) -> AlertRecord:
        stored = await self.storage.ack_alert(account_id, alert.alert_id, by, self._clock())
        if stored is None:  # pragma: no cover - just read
            raise NotFoundError("no such alert in this account")
        if alert.acked_ms is None:
            self._forget(account_id, alert.device_id)
            await self.audit(account_id, au.AuditKind.ALERT_ACK, device=alert.device_id,
                             data={"alert_id": alert.alert_id, "by": by, "key": key})
        return stored

    # ------------------------------------------------------------ events
    async def _on_session(self, account_id: bytes, device_id: bytes,
                          score: TrustScore) -> None:
        await self.signal(account_id, device_id, SignalKind.SESSION)
        now = self._clock()
        raw = await self.storage.get_controller_state(account_id, b"")
        acct = json.loads(raw) if raw else {}
        hours = list(acct.get("hours", [0] * 24))[:24]
        hours += [0] * (24 - len(hours))
        offset = self.policy.detectors.unusual_hour.utc_offset_min
        hours[((now // 1000 + offset * 60) // 3600) % 24] += 1
        digest = self.policy.digest()
        changed = acct.get("policy") != digest
        acct.update(hours=hours, policy=digest)
        await self.storage.put_controller_state(account_id, b"", json.dumps(acct).encode(), now)
        if changed:
            t = self.policy.thresholds
            await self.audit(account_id, au.AuditKind.POLICY, data={
                "digest": digest, "full": t.full, "read_only": t.read_only})
            await self._check_registry_policy(account_id, await self._state(account_id))
        if await self._over_budget(account_id, device_id):
            log.info("controller: session of %s not audited (audit budget spent)",
                     device_id.hex()[:12])
            return
        await self.audit(account_id, au.AuditKind.SESSION, device=device_id,
                         data={"access": score.access.value, "score": score.score})

    async def _over_budget(self, account_id: bytes, device_id: bytes) -> float:
        # Seconds until the device may add another audit entry (0.0: now).
        if self._audit_budget is None:
            return 0.0
        return await self._audit_budget(account_id, device_id)

    async def on_registry_entry(self, account_id: bytes, entry: RegistryEntry,
                                state: RegistryState) -> None:
        """Audit a stored registry entry and run the rules it can trigger."""
        try:
            await self._on_registry_entry(account_id, entry, state)
        except SddsfError as exc:
            log.warning("controller: registry hook failed for %s: %s", account_id.hex()[:12],
                        exc)

    async def _on_registry_entry(self, account_id: bytes, entry: RegistryEntry,
                                 state: RegistryState) -> None:
        added = [r for r in state.devices.values() if r.added_seq == entry.seq]
        revoked = [r for r in state.devices.values() if r.revoked_seq == entry.seq]
        by: dict[str, int | str | bytes | bool] = {"by": entry.signer, "seq": entry.seq}
        for rec in added:
            kind = (au.AuditKind.DEVICE_RECOVERED if entry.type is EntryType.RECOVER
                    else au.AuditKind.DEVICE_ADDED)
            await self.audit(account_id, kind, device=rec.device_id,
                             data={**by, "name": rec.name})
        for rec in revoked:
            self._forget(account_id, rec.device_id)
            await self.audit(account_id, au.AuditKind.DEVICE_REVOKED, device=rec.device_id,
                             data=by)
        if not added and not revoked and entry.type is not EntryType.POLICY:
            await self.audit(account_id, au.AuditKind.REGISTRY_ENTRY,
                             data={**by, "type": entry.type.value})
        if entry.type is EntryType.POLICY:
            data: dict[str, int | str | bytes | bool] = dict(by)
            data.update({f"policy.{k}": v for k, v in state.policy.items()
                         if isinstance(v, int | str | bool)})
            await self.audit(account_id, au.AuditKind.REGISTRY_POLICY, data=data)
            await self._check_registry_policy(account_id, state)
        if entry.type is EntryType.ADD and added:
            if state.device(entry.signer) is not None:
                await self.signal(account_id, entry.signer, SignalKind.PAIRING)
            raw = await self.storage.get_controller_state(account_id, b"")
            hours = list(json.loads(raw).get("hours", [])) if raw else []
            found = det.unusual_hour(self._clock(), hours or [0] * 24, self.policy)
            if found is not None:
                await self.raise_alert(account_id, added[0].device_id, found)
        if added or revoked:
            await self._tell_co_members(account_id, added, revoked)
        if added and entry.signer != account_id:
            burst = det.device_add_burst(
                [r.added_ts for r in state.devices.values() if r.added_by != account_id],
                self.policy, self._clock())
            if burst is not None:
                await self.raise_alert(account_id, added[0].added_by, burst)

    async def _check_registry_policy(self, account_id: bytes, state: RegistryState) -> None:
        want = self.policy.approvals
        approvals = state.policy.get("approvals", 1)
        veto = state.policy.get("veto_window_s", 0)
        approvals = approvals if isinstance(approvals, int) else 1
        veto = veto if isinstance(veto, int) else 0
        if approvals < want.min_approvals or veto < want.min_veto_window_s:
            await self.raise_alert(account_id, b"", Finding(
                "weak_registry_policy", Severity.MEDIUM,
                f"the account's registry policy ({approvals} approval(s), veto window "
                f"{veto} s) is weaker than this relay's minimum ({want.min_approvals}, "
                f"{want.min_veto_window_s} s); set it with a policy entry"))

    async def on_key_package(self, account_id: bytes, device_id: bytes, space_id: bytes,
                             epoch: int) -> None:
        """Audit a key rotation (a stored key package)."""
        try:
            await self.audit(account_id, au.AuditKind.KEY_ROTATION, device=device_id,
                             data={"space": space_id, "epoch": epoch})
        except SddsfError as exc:
            log.warning("controller: key rotation audit failed: %s", exc)

    async def on_membership(self, space_id: bytes, entry: MembershipEntry,
                            accounts: Iterable[bytes]) -> None:
        """Audit a shared space's membership change in the log of every account it
        concerns (the members before and after it: a removed member's log says so)."""
        data: dict[str, int | str | bytes | bool] = {
            "space": space_id, "change": entry.type.value, "member": entry.member,
            "role": entry.role.value if entry.role is not None else "", "by": entry.signer}
        for account in sorted(set(accounts)):
            try:
                await self.audit(account, au.AuditKind.MEMBERSHIP, device=entry.device,
                                 data=data)
            except SddsfError as exc:
                log.warning("controller: membership audit failed: %s", exc)

    async def _tell_co_members(self, account_id: bytes, added: Sequence[DeviceRecord],
                               revoked: Sequence[DeviceRecord]) -> None:
        # A member account's new device reads every space it shares; a revoked
        # one stops. The other members hear of it: they share their data with it.
        what = ", ".join([*(f"added device {r.name!r}" for r in added),
                          *(f"revoked device {r.name!r}" for r in revoked)])
        for space in await self.storage.shared_spaces(account_id):
            for other in sorted(await self.storage.space_members(space.space_id)):
                if other == account_id:
                    continue
                await self.raise_alert(other, b"", Finding(
                    "member_registry_changed", Severity.LOW,
                    f"account {fingerprint(account_id)}, a member of shared space "
                    f"{space.space_id.hex()[:12]}, {what}: its devices are the ones that "
                    "read the space; check with that person if you did not expect it"))

    async def on_snapshot_mismatch(self, account_id: bytes, author: bytes, attester: bytes,
                                   space_id: bytes) -> None:
        """Alert: a device recomputed a space snapshot from the log and it differs
        from what the snapshot's author signed (protocol.md 18.7)."""
        try:
            await self.raise_alert(account_id, author, Finding(
                "snapshot_mismatch", Severity.MEDIUM,
                f"device {attester.hex()[:12]} recomputed the snapshot of space "
                f"{space_id.hex()[:12]} written by device {author.hex()[:12]} from the log, "
                "and the documents differ: the author may be compromised (revoke it) or the "
                "attesting device is lying; the relay keeps the history under that snapshot"))
        except SddsfError as exc:
            log.warning("controller: snapshot mismatch alert failed: %s", exc)

    async def submit_report(self, account_id: bytes, raw: bytes) -> ReportOutcome:
        """Verify and apply a device report (posture, pairing, tombstones).

        A report is its own credential (no session: a denied device must be able
        to send a better posture), so it must be fresh and new: dated at most
        ``window_ms`` in the past (``max_skew_ms`` in the future), and not a copy of
        one already accepted (the digest of its signed body is remembered in
        storage while a copy could still be fresh). A report that adds an audit
        entry spends one unit of the device's audit budget.

        Raises:
            DecodeError, AuthorizationError, SignatureError, ClockSkewError,
            AuthenticationError ``replay`` (a copy), RateLimitedError (the audit
            budget), UsageError (a tombstone report about a device the account
            never had).
        """
        state = await self._state(account_id)
        now = self._clock()
        report = verify_report(raw, state, now_ms=now, max_skew_ms=self._max_skew_ms)
        if now - report.ts > self._window_ms:
            raise ClockSkewError(f"the report is {(now - report.ts) // 1000} s old (limit "
                                 f"{self._window_ms // 1000} s): reports are accepted fresh, "
                                 "once; sign a new one")
        if report.tombstones is not None and state.device(report.tombstones.subject) is None:
            raise UsageError("the tombstone report names a device this account never had")
        if not await self.storage.remember_report(account_id, report.device,
                                                  sha256(report.body_bytes), now,
                                                  self._window_ms + self._max_skew_ms):
            raise AuthenticationError("this report was already received (a copy is not a new "
                                      "statement); sign a new one", Code.REPLAY)
        self._forget(account_id, report.device)
        if report.kind is ReportKind.POSTURE:
            outcome = await self._posture(account_id, report, raw)
        else:
            outcome = await self._event_report(account_id, report, raw)
        await self._enforce_live(account_id, report.device)
        return outcome

    async def _posture(self, account_id: bytes, report: DeviceReport,
                       raw: bytes) -> ReportOutcome:
        previous = (await self.storage.postures(account_id)).get(report.device)
        before: Posture | None = None
        if previous is not None:
            before = decode_report(previous.report).posture
        newer = previous is None or report.ts > previous.ts_ms
        changed = newer and not (report.posture is not None and report.posture.same_as(before))
        if changed:
            await self._spend_audit(account_id, report.device)
        if not await self.storage.put_posture(account_id, report.device, raw, report.ts,
                                              self._clock()):
            return ReportOutcome(False, None, report.kind)
        if not changed:
            return ReportOutcome(True, None, report.kind)
        seq = await self.audit(account_id, au.AuditKind.POSTURE, device=report.device,
                               report=raw)
        return ReportOutcome(True, seq, report.kind)

    async def _event_report(self, account_id: bytes, report: DeviceReport,
                            raw: bytes) -> ReportOutcome:
        await self._spend_audit(account_id, report.device)
        if report.kind is ReportKind.PAIRING:
            await self.signal(account_id, report.device, SignalKind.PAIRING)
        elif report.tombstones is not None:
            await self.signal(account_id, report.tombstones.subject, SignalKind.TOMBSTONES,
                              report.tombstones.count)
        seq = await self.audit(account_id, au.AuditKind.REPORT, device=report.device,
                               report=raw)
        return ReportOutcome(True, seq, report.kind)

    async def _spend_audit(self, account_id: bytes, device_id: bytes) -> None:
        wait = await self._over_budget(account_id, device_id)
        if wait > 0:
            raise RateLimitedError(f"this device has added too many audit events (reports); "
                                   f"retry in {wait:.0f} s", retry_after_s=wait)

    # ------------------------------------------------------------ audit log
    async def audit(self, account_id: bytes, kind: au.AuditKind, *, device: bytes = b"",
                    data: dict[str, int | str | bytes | bool] | None = None,
                    report: bytes = b"") -> int:
        """Append an event to the account's audit log; returns its seq."""
        now = self._clock()
        return await self.storage.append_audit(
            account_id, au.build_entry(account_id, now, kind, device=device, data=data,
                                       report=report), now)

    async def audit_head(self, account_id: bytes, size: int | None = None) -> tuple[
            bytes, merkle.MerkleTree]:
        """A freshly signed audit tree head (of ``size``, default: current) and the tree.

        Raises:
            NotFoundError: ``size`` beyond the log.
        """
        current = await self.storage.audit_size(account_id)
        n = current if size is None else size
        if not 0 <= n <= current:
            raise NotFoundError(f"the audit log has {current} entries")
        tree = merkle.MerkleTree(await self.storage.audit_leaf_hashes(account_id, n))
        head = sign_tree_head(self.relay_key, log=au.audit_log_id(account_id), size=n,
                              root=tree.root(), ts_ms=self._clock())
        return head, tree

    def encryption_policy(self) -> bytes:
        """The relay's signed encryption policy."""
        e = self.policy.encryption
        return sign_encryption_policy(self.relay_key, EncryptionPolicy(
            e.min_kdf_t, e.min_kdf_m_kib, e.min_kdf_p, e.allowed_suites, e.max_epoch_age_s,
            self._clock()))


def alert_json(a: AlertRecord, quarantine_until_ms: int | None = None) -> dict[str, object]:
    """The alert as the API and the WebSocket show it (bytes stay bytes)."""
    return {"alert_id": a.alert_id, "device": a.device_id, "rule": a.rule,
            "severity": a.severity, "message": a.message, "quarantine": a.quarantine,
            "quarantine_until_ms": quarantine_until_ms, "created_ms": a.created_ms,
            "acked_ms": a.acked_ms}


def _refusal(what: str, score: TrustScore) -> str:
    worst = sorted(score.factors, key=lambda f: f.points)[:3]
    why = "; ".join(f"{f.name} {f.points} ({f.detail})" for f in worst) or "no factor"
    quarantine = " and is quarantined by an alert" if score.quarantined else ""
    return (f"this device {what}: trust score {score.score}{quarantine} ({why}); fix its "
            "posture, or acknowledge its alerts from another device with full access or with "
            "the account key (`sddsf alerts --ack all --phrase`), or revoke it from another "
            "device")
