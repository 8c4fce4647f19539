"""The device side of the security controller (docs/controller.md).

* **Posture**: :func:`collect_posture` states what this installation can tell
  about itself (OS and version from :mod:`platform`, the app version, a SHA-256
  of the installed package's files, the key storage kind of the home), and
  :class:`DeviceReporter` signs it before every session opening and checks the
  relay's receipt: the audit entry it became, with an inclusion proof against
  a signed audit tree head. The receipt is kept in the home, so a relay that
  later drops or rewrites that entry is caught by :func:`verify_audit`.
* **Audit log**: :func:`verify_audit` fetches the account's whole audit log,
  verifies it against the relay's signed head and every head this device stored
  before (they live in the home, namespace ``audit``), and stores the new head.
* **Encryption policy**: :func:`apply_encryption_policy` verifies the relay's
  signed policy and merges it into the device's own, never weaker, after
  clamping it to the floors of :mod:`sddsf.protocol.encpolicy` (a relay cannot
  make a device rotate every second); :func:`reset_encryption_policy` forgets
  the merged values; :func:`backup_minimums` applies the KDF minimums to
  passphrase backups.
* **Deletions**: :func:`report_tombstones` tells the relay how many vault
  deletions each device wrote (the relay sees only ciphertext): counted per
  device whose verified op carried them, never per claimed author, and after a
  watermark of this device's own (when it first saw them, never a claimed time).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sddsf import _version
from sddsf.client.hosts import ControllerHost, TombstoneHost
from sddsf.client.results import ReportReceipt
from sddsf.errors import NotFoundError, ProofError, RateLimitedError, SddsfError, UsageError
from sddsf.protocol import merkle
from sddsf.protocol.audit import (
    AuditEntry,
    audit_log_id,
    check_own_entry,
    decode_entry,
    verify_audit_log,
)
from sddsf.protocol.backup import PRODUCTION_MINIMUMS, KdfMinimums
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.encpolicy import (
    EncryptionPolicy,
    clamp,
    strictest,
    verify_encryption_policy,
)
from sddsf.protocol.posture import KEY_STORAGE_KINDS, Posture, ReportKind, sign_report
from sddsf.protocol.treehead import EMPTY_PAGE_RETRIES, TreeHead, verify_tree_head

__all__ = ["AuditCheck", "DeviceReporter", "apply_encryption_policy", "backup_minimums",
           "collect_posture", "effective_encryption_policy", "package_hash",
           "published_encryption_policy", "refresh_encryption_policy", "remember_receipt",
           "report_pairing", "report_tombstones", "reset_encryption_policy", "verify_audit"]

_NS: Final = "audit"
_HEADS: Final = b"heads"
_MAX_HEADS: Final = 32
_OWN_PREFIX: Final = b"own/"
_POLICY_NS: Final = "ctrl"
_POLICY_KEY: Final = b"encpolicy"
_POLICY_AT: Final = b"encpolicy-at"
_TOMB_MARK: Final = b"tombstones-seen"  # [local seq, local ms] of the last report
_REPORT_TS: Final = b"report-ts"  # the newest ts this device signed into a report
log = logging.getLogger("sddsf.client")
_DESKTOPS: Final = ("Linux", "Darwin", "Windows")


@functools.cache
def package_hash() -> bytes:
    """SHA-256 over the installed ``sddsf`` package's files (sorted relative paths
    and contents), so a modified installation reports another hash."""
    root = Path(_version.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()
                       and "__pycache__" not in p.parts and p.suffix in (".py", ".typed")):
        rel = path.relative_to(root).as_posix().encode()
        data = path.read_bytes()
        h.update(len(rel).to_bytes(4, "big") + rel + len(data).to_bytes(8, "big") + data)
    return h.digest()


def collect_posture(key_kind: str) -> Posture:
    """This installation's posture. Desktop systems report ``rooted = no`` (the
    notion is a mobile one); elsewhere it is ``unknown``."""
    system = platform.system() or "unknown"
    return Posture(os=system[:64], os_version=(platform.release() or "unknown")[:128],
                   app_version=_version.__version__, package_hash=package_hash(),
                   key_storage=key_kind if key_kind in KEY_STORAGE_KINDS else "plaintext",
                   rooted="no" if system in _DESKTOPS else "unknown")


def next_report_ts(device: ControllerHost) -> int:
    """A timestamp for this device's next signed report: its clock, but always
    after the last one it used. The relay accepts each report once (a copy is a
    replay), so two different statements made within one clock tick must not
    sign the same bytes."""
    raw = device.store.get(_POLICY_NS, _REPORT_TS)
    last = decode(raw) if raw else None
    ts = max(device.clock(), last + 1 if isinstance(last, int) else 0)
    device.store.put(_POLICY_NS, _REPORT_TS, encode(ts))
    return ts


class DeviceReporter:
    """A device's :class:`~sddsf.client.relay_client.ReportSource`."""

    def __init__(self, device: ControllerHost) -> None:
        self.device = device

    def posture_report(self) -> bytes:
        """A posture report signed now."""
        d = self.device
        return sign_report(d.keys, d.account.account_id, ReportKind.POSTURE,
                           collect_posture(d.key_kind).to_data(), next_report_ts(d))

    def accepted(self, report: bytes, response: ReportReceipt) -> None:
        """Check the relay's receipt and remember it (see :func:`remember_receipt`)."""
        remember_receipt(self.device, report, response)


def remember_receipt(device: ControllerHost, report: bytes, response: ReportReceipt) -> None:
    """Check that a logged report is in the audit entry the relay names, at the leaf
    its inclusion proof shows, under a head signed by the pinned relay key; keep
    the entry's seq and leaf hash, and the head.

    Raises:
        ProofError: the entry does not carry the report, or the proof or head fails.
    """
    seq = response.audit_seq
    if seq is None:
        return
    if response.entry is None or response.proof is None:
        raise ProofError("the relay's receipt for a report lacks its entry or proof")
    entry, proof, head_raw = response.entry, list(response.proof.hashes), response.proof.tree_head
    if decode_entry(entry).report != report:
        raise ProofError("the relay logged another report than the one this device sent")
    leaf = merkle.leaf_hash(entry)
    if device.relay_key is not None:  # before the first session the key is not pinned yet
        head = verify_tree_head(head_raw, device.relay_key,
                                log=audit_log_id(device.account.account_id))
        merkle.verify_inclusion(leaf, seq, head.size, proof, head.root)
        _store_head(device, head)
    device.store.put(_NS, _OWN_PREFIX + seq.to_bytes(8, "big"), leaf)


def _stored_heads(device: ControllerHost) -> list[TreeHead]:
    raw = device.store.get(_NS, _HEADS)
    if raw is None or device.relay_key is None:
        return []
    heads = decode(raw)
    if not isinstance(heads, list):
        raise ProofError("this device's stored audit heads are unreadable")
    log = audit_log_id(device.account.account_id)
    return [verify_tree_head(h, device.relay_key, log=log) for h in heads
            if isinstance(h, bytes)]


def _store_head(device: ControllerHost, head: TreeHead) -> None:
    heads = [h.raw for h in _stored_heads(device) if h.raw != head.raw]
    heads = sorted([*heads, head.raw], key=lambda r: _size_of(r, device))[-_MAX_HEADS:]
    device.store.put(_NS, _HEADS, encode(heads))


def _size_of(raw: bytes, device: ControllerHost) -> int:
    key = device.relay_key
    if key is None:  # pragma: no cover - heads are only stored once the key is pinned
        return 0
    return verify_tree_head(raw, key, log=audit_log_id(device.account.account_id)).size


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """What :func:`verify_audit` checked."""

    entries: list[AuditEntry]
    size: int
    heads_checked: int
    own_entries_checked: int


async def verify_audit(device: ControllerHost, *, page: int = 1000) -> AuditCheck:
    """Fetch and verify the account's audit log (see the module docstring).

    Raises:
        ProofError: ``log_rollback`` or ``proof_invalid`` when the relay dropped,
            rewrote or reordered an event, or signed heads of a forked log;
            ``tree_head_invalid`` for a head not signed by the pinned relay key.
    """
    state = await device.refresh_registry()
    await device.pin_relay()
    key = device.relay_key
    if key is None:  # pragma: no cover - pin_relay pins it or raises
        raise ProofError("the relay key is not pinned")
    log = audit_log_id(device.account.account_id)
    entries: list[bytes] = []
    empty = 0  # empty pages in a row under a head beyond the entries (17.6)
    for _ in range(10_000):
        rows, head_raw = await device.relay.audit_page(len(entries), page)
        for seq, raw in rows:
            if seq != len(entries):
                raise ProofError(f"the relay served audit entry {seq} where {len(entries)} "
                                 "was expected")
            entries.append(raw)
        head = verify_tree_head(head_raw, key, log=log)
        if len(entries) >= head.size:
            break
        empty = empty + 1 if not rows else 0
        if empty > EMPTY_PAGE_RETRIES:
            break  # a relay hiding entries: verify_audit_log refuses the short log
    entries = entries[:head.size]
    stored = _stored_heads(device)
    proof: list[bytes] = []
    latest = max(stored, key=lambda h: h.size, default=None)
    if latest is not None and 0 < latest.size < head.size:
        proof, proof_head = await device.relay.audit_consistency(latest.size, head.size)
        if verify_tree_head(proof_head, key, log=log).root != head.root:
            raise ProofError("the relay signed two different audit logs of one size")
    decoded, tree = verify_audit_log(entries, head, stored, state, proof)
    own = list(device.store.scan(_NS, _OWN_PREFIX))
    for k, leaf in own:
        check_own_entry(tree, int.from_bytes(k[len(_OWN_PREFIX):], "big"), leaf)
    _store_head(device, head)
    return AuditCheck(decoded, head.size, len(stored), len(own))


def effective_encryption_policy(device: ControllerHost) -> EncryptionPolicy | None:
    """The encryption policy this device applies (None before it saw one), within
    the floors and ceilings of :func:`~sddsf.protocol.encpolicy.clamp` (also
    for values an older version stored unclamped)."""
    raw = device.store.get(_POLICY_NS, _POLICY_KEY)
    if raw is None:
        return None
    j = json.loads(raw)
    return clamp(EncryptionPolicy(int(j["min_kdf_t"]), int(j["min_kdf_m_kib"]),
                                  int(j["min_kdf_p"]), tuple(int(s) for s in j["suites"]),
                                  int(j["max_epoch_age_s"]), int(j["ts"])))[0]


async def published_encryption_policy(device: ControllerHost) -> EncryptionPolicy:
    """The relay's current signed encryption policy, verified, as published
    (not clamped, not merged).

    Raises:
        NotFoundError: the relay publishes none. ProofError: not signed by the
            pinned relay key.
    """
    await device.pin_relay()
    key = device.relay_key
    if key is None:  # pragma: no cover - pin_relay pins it or raises
        raise ProofError("the relay key is not pinned")
    return verify_encryption_policy(await device.relay.encryption_policy(), key)


async def apply_encryption_policy(device: ControllerHost) -> EncryptionPolicy:
    """Fetch the relay's signed encryption policy and merge it into this device's own
    (:func:`~sddsf.protocol.encpolicy.strictest`: clamped, never weaker).

    Raises:
        ProofError: not signed by the pinned relay key.
    """
    merged = await _merged_encryption_policy(device)
    device.store.put(_POLICY_NS, _POLICY_KEY, _policy_row(merged))
    return merged


async def _merged_encryption_policy(device: ControllerHost) -> EncryptionPolicy:
    published = await published_encryption_policy(device)
    return strictest(effective_encryption_policy(device), published)


def _policy_row(policy: EncryptionPolicy) -> bytes:
    return json.dumps(policy.to_json()).encode()


def reset_encryption_policy(device: ControllerHost) -> bool:
    """Forget the merged policy (the strictest values ever seen are kept until
    then): the next sync fetches the relay's current one again. Returns whether
    one was stored."""
    had = device.store.get(_POLICY_NS, _POLICY_KEY) is not None
    with device.store.batch() as b:
        b.delete(_POLICY_NS, _POLICY_KEY)
        b.delete(_POLICY_NS, _POLICY_AT)
    return had


def backup_minimums(device: ControllerHost) -> KdfMinimums:
    """The Argon2id minimums a passphrase backup made on this device must meet: the
    protocol's, raised to the relay's published ones (clamped)."""
    policy = effective_encryption_policy(device)
    low = PRODUCTION_MINIMUMS
    if policy is None:
        return low
    return KdfMinimums(t=max(low.t, policy.min_kdf_t), m_kib=max(low.m_kib, policy.min_kdf_m_kib),
                       p=max(low.p, policy.min_kdf_p))


async def report_pairing(device: ControllerHost, outcome: str) -> None:
    """Tell the relay how a pairing this device started ended (best effort: the
    controller counts attempts; a completed one also shows as a device addition)."""
    report = sign_report(device.keys, device.account.account_id, ReportKind.PAIRING,
                         {"outcome": outcome}, next_report_ts(device))
    try:
        remember_receipt(device, report, await device.relay.submit_report(
            device.account.account_id, report))
    except SddsfError as exc:
        log.warning("could not report the pairing outcome to the relay: %s", exc)


async def refresh_encryption_policy(device: ControllerHost, *, every_ms: int = 3_600_000) -> None:
    """:func:`apply_encryption_policy` at most once per ``every_ms`` (best effort: a
    relay without a controller keeps the device's own settings)."""
    last = device.store.get(_POLICY_NS, _POLICY_AT)
    now = device.clock()
    if last is not None and 0 <= now - int.from_bytes(last, "big") < every_ms:
        return
    merged: EncryptionPolicy | None = None
    try:
        merged = await _merged_encryption_policy(device)
    except NotFoundError:
        log.info("the relay publishes no encryption policy; keeping this device's own")
    with device.store.batch() as b:  # the policy and when it was fetched: one commit
        if merged is not None:
            b.put(_POLICY_NS, _POLICY_KEY, _policy_row(merged))
        b.put(_POLICY_NS, _POLICY_AT, now.to_bytes(8, "big"))


async def report_tombstones(device: TombstoneHost) -> int:
    """Report the vault deletions each device wrote that this device saw since its
    last report; returns how many reports were sent (best effort: a relay that
    refuses them is logged, and they are sent again next time).

    A deletion is attributed to the device whose verified op carried it (a
    tombstone naming another author, a record changed or removed in place); the
    watermark is this device's order of first sightings
    (:meth:`sddsf.client.vault.Vault.deletions`), so no claimed timestamp can
    hide later deletions.
    """
    try:
        return await _report_tombstones(device)
    except (NotFoundError, UsageError, RateLimitedError) as exc:
        # RateLimitedError: the device's audit budget at the relay (sent again later)
        log.warning("could not report vault deletions to the relay: %s", exc)
        return 0


async def _report_tombstones(device: TombstoneHost) -> int:
    from sddsf.client.vault import Vault  # noqa: PLC0415 - only when the account has a vault

    vault = await Vault.open(device, create=False)
    mark_raw = device.store.get(_POLICY_NS, _TOMB_MARK)
    mark = decode(mark_raw) if mark_raw else None
    after, since = (int(mark[0]), int(mark[1])) if isinstance(mark, list) else (0, 0)
    counts, newest = vault.deletions(after)
    now = device.clock()
    for author, count in sorted(counts.items()):
        report = sign_report(device.keys, device.account.account_id, ReportKind.TOMBSTONES,
                             {"subject": author, "count": count, "since": since},
                             next_report_ts(device))
        remember_receipt(device, report, await device.relay.submit_report(
            device.account.account_id, report))
    if counts:
        device.store.put(_POLICY_NS, _TOMB_MARK, encode([newest, now]))
    return len(counts)
