"""The per-account audit log: entries, and the device-side verification (pure).

Every security event of an account is one leaf of an RFC 9162 Merkle log kept
by the relay, whose heads it signs with its tree-head key exactly like a
space's log (:mod:`sddsf.protocol.treehead`), under the log id
``b"sddsf/audit/" + account_id`` (so a head of one log never passes for
another's). An entry is the canonical map::

    {"v": 1, "account", "ts", "kind", "device", "data", "report"}

``device`` is the device the event is about (empty for account-level events),
``data`` a flat map of text keys to integers, text, bytes or booleans, and
``report`` the device-signed report (:mod:`sddsf.protocol.posture`) when the
event was created by a device (posture, pairing, tombstones), else empty.

A device verifies the log with :func:`verify_audit_log`: every leaf it is shown
must hash to the signed root; every tree head it stored before must be a prefix
of the current log (an event the relay drops or rewrites after showing it fails
here), the log may not shrink, and every device-created entry must carry a valid
signature of a device the account had. It also checks that its own reports are
at the leaf the relay acknowledged (:func:`check_own_entry`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sddsf.errors import Code, DecodeError, ProofError, SddsfError
from sddsf.protocol import merkle
from sddsf.protocol.encoding import DecodeLimits, decode, encode
from sddsf.protocol.identity import ID_SIZE
from sddsf.protocol.posture import DeviceReport, verify_report_signature
from sddsf.protocol.registry import RegistryState
from sddsf.protocol.schema import expect_map, version_of_map
from sddsf.protocol.treehead import TreeHead, check_progress

__all__ = [
    "AUDIT_VERSION",
    "AuditEntry",
    "AuditKind",
    "audit_log_id",
    "build_entry",
    "check_entry",
    "check_own_entry",
    "decode_entry",
    "verify_audit_log",
]

AUDIT_VERSION: Final = 1
MAX_ENTRY: Final = 8192
_LOG_PREFIX: Final = b"sddsf/audit/"
_LIMITS: Final = DecodeLimits(max_size=MAX_ENTRY, max_depth=4, max_items=64)
_FIELDS: Final = ("v", "account", "ts", "kind", "device", "data", "report")


class AuditKind(StrEnum):
    """Kinds of audit event."""

    DEVICE_ADDED = "device_added"
    DEVICE_REVOKED = "device_revoked"
    DEVICE_RECOVERED = "device_recovered"
    REGISTRY_POLICY = "registry_policy"
    REGISTRY_ENTRY = "registry_entry"  # another registry entry (e.g. an approval step)
    KEY_ROTATION = "key_rotation"
    SESSION = "session"
    POSTURE = "posture"
    REPORT = "report"
    ALERT = "alert"
    ALERT_ACK = "alert_ack"
    POLICY = "policy"
    MEMBERSHIP = "membership"  # a shared space's membership entry (each member's log)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A decoded entry."""

    account: bytes
    ts: int
    kind: AuditKind
    device: bytes
    data: Mapping[str, object]
    report: bytes
    raw: bytes


def audit_log_id(account_id: bytes) -> bytes:
    """The log id under which the relay signs the account's audit tree heads."""
    return _LOG_PREFIX + account_id


def build_entry(account_id: bytes, ts_ms: int, kind: AuditKind, *, device: bytes = b"",
                data: Mapping[str, int | str | bytes | bool] | None = None,
                report: bytes = b"") -> bytes:
    """The canonical bytes of an entry (relay side)."""
    return encode({"v": AUDIT_VERSION, "account": account_id, "ts": ts_ms,
                   "kind": kind.value, "device": device, "data": dict(data or {}),
                   "report": report})


def decode_entry(raw: bytes) -> AuditEntry:
    """Decode an entry.

    Raises:
        DecodeError: malformed, too large, an unknown kind or version.
    """
    if len(raw) > MAX_ENTRY:
        raise DecodeError(f"audit entry of {len(raw)} bytes exceeds {MAX_ENTRY}", Code.TOO_LARGE)
    value = decode(raw, limits=_LIMITS)
    version_of_map(value, AUDIT_VERSION, "audit entry")
    f = expect_map(value, "audit entry", _FIELDS)
    try:
        kind = AuditKind(f.str_("kind", max_len=32))
    except ValueError:
        raise DecodeError(f"audit entry kind {f.raw('kind')!r} is unknown",
                          Code.UNSUPPORTED_VERSION) from None
    data = f.raw("data")
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int | str | bytes | bool)
            for k, v in data.items()):
        raise DecodeError("audit entry data: a map of text keys to int, text, bytes or bool")
    device = f.bytes_("device", max_size=ID_SIZE)
    if device and len(device) != ID_SIZE:
        raise DecodeError("audit entry device: empty or a 32-byte device id")
    return AuditEntry(f.bytes_("account", size=ID_SIZE), f.int_("ts"), kind, device,
                      {str(k): v for k, v in data.items()},
                      f.bytes_("report", max_size=4096), bytes(raw))


def check_entry(entry: AuditEntry, index: int, registry: RegistryState) -> None:
    """Check that a decoded entry is of the registry's account and that its device
    report, where it needs one, verifies under a device of that registry.

    Raises:
        ProofError: another account's entry, a missing report, or a report that
            does not verify (or names another device).
    """
    if entry.account != registry.account_id:
        raise ProofError(f"audit entry {index} belongs to another account")
    if not entry.report:
        if entry.kind in (AuditKind.POSTURE, AuditKind.REPORT):
            raise ProofError(f"audit entry {index} ({entry.kind.value}) lacks the device's "
                             "signed report")
        return
    try:
        report: DeviceReport = verify_report_signature(entry.report, registry)
    except SddsfError as exc:
        raise ProofError(f"audit entry {index}: the device report does not verify "
                         f"({exc.message})") from None
    if report.device != entry.device:
        raise ProofError(f"audit entry {index} attributes a device's report to another device")


def verify_audit_log(entries: Sequence[bytes], head: TreeHead, stored: Sequence[TreeHead],
                     registry: RegistryState,
                     consistency: Sequence[bytes] = ()) -> tuple[list[AuditEntry],
                                                                 merkle.MerkleTree]:
    """Verify the whole audit log the relay served against its signed head and the
    heads this device stored before (already signature-checked by the caller).

    Args:
        entries: every entry, seq 0 .. ``head.size - 1``.
        head: the relay's current signed audit head.
        stored: heads of this log the device verified earlier.
        registry: the account's verified registry (devices that sign reports).
        consistency: the relay's consistency proof from the largest stored head
            to ``head`` (checked with :func:`~sddsf.protocol.treehead.check_progress`).

    Raises:
        ProofError: ``log_rollback`` (the log shrank), ``proof_invalid`` (the
            entries do not hash to the signed root; a stored head is not a
            prefix: an event was dropped or rewritten; a bad consistency proof;
            a device report that does not verify).
        DecodeError: a malformed entry.
    """
    if len(entries) != head.size:
        raise ProofError(f"the relay sent {len(entries)} audit entries for a signed log of "
                         f"{head.size}")
    decoded = [decode_entry(raw) for raw in entries]
    for i, entry in enumerate(decoded):
        check_entry(entry, i, registry)
    tree = merkle.MerkleTree(merkle.leaf_hash(raw) for raw in entries)
    if tree.root() != head.root:
        raise ProofError("the audit entries do not hash to the relay's signed tree head: the "
                         "relay rewrote or dropped an event")
    latest: TreeHead | None = None
    for old in stored:
        if old.size > head.size:
            raise ProofError(f"the audit log went back from {old.size} to {head.size} entries; "
                             "the relay dropped events", Code.LOG_ROLLBACK)
        if old.size and tree.root(old.size) != old.root:
            raise ProofError(f"the audit log is no longer an extension of the head of size "
                             f"{old.size} this device verified: the relay dropped or "
                             "rewrote an event")
        if latest is None or old.size > latest.size:
            latest = old
    if latest is not None and latest.size and latest.size < head.size:
        check_progress(latest, head, consistency)
    return decoded, tree


def check_own_entry(tree: merkle.MerkleTree, seq: int, entry_leaf: bytes) -> None:
    """Check that an entry the relay acknowledged at ``seq`` is still there.

    Raises:
        ProofError: the log is shorter or holds another entry at ``seq``.
    """
    if seq >= tree.size or tree.node(0, seq) != entry_leaf:
        raise ProofError(f"the audit event this device submitted (seq {seq}) is missing or "
                         "was rewritten by the relay")
