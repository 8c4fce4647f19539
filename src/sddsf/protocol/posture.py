"""Device reports: statements a device signs for the controller (pure, sans-IO).

Wire form (canonical encoding, the common signed layout)::

    report = [version, body_bytes, signature]
    body   = {"v", "account", "device", "ts", "kind", "data"}

``signature`` is the device's Ed25519 signature over
``labelled(DEVICE_REPORT_SIG, body_bytes)``. ``kind`` selects the one accepted
shape of ``data`` (unknown kinds and unknown fields are refused, THREATS #26):

* ``posture``: ``{"os", "os_version", "app_version", "package_hash",
  "key_storage", "rooted", "attestation"}`` — self-reported device posture.
  ``key_storage`` is ``keyring``, ``passphrase`` or ``plaintext``; ``rooted`` is
  ``yes``, ``no`` or ``unknown``; ``attestation`` is ``none`` in version 1 (the
  place where platform attestation evidence will go; any other value is
  ``unsupported_version``).
* ``pairing``: ``{"outcome"}`` — the device started or finished a pairing
  (``started``, ``completed``, ``failed``, ``sas_mismatch``, ``expired``).
* ``tombstones``: ``{"subject", "count", "since"}`` — the reporting device saw
  ``count`` deletions (vault tombstones) written by device ``subject`` since
  ``since`` (ms). The relay cannot see deletions (it holds only ciphertext), so
  honest devices report what they decrypted.

A report binds the account and the device, so it cannot be moved to another
account or device; ``ts`` lets the relay refuse an older report replacing a
newer one and a report from the future (the skew window).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from sddsf.errors import (
    AuthorizationError,
    ClockSkewError,
    Code,
    DecodeError,
    SignatureError,
    UsageError,
)
from sddsf.protocol import labels
from sddsf.protocol.encoding import DecodeLimits, encode
from sddsf.protocol.identity import ID_SIZE
from sddsf.protocol.labels import labelled
from sddsf.protocol.registry import RegistryState
from sddsf.protocol.schema import Fields, decode_signed, expect_map

__all__ = [
    "KEY_STORAGE_KINDS",
    "MAX_REPORT",
    "PAIRING_OUTCOMES",
    "REPORT_VERSION",
    "ROOTED_VALUES",
    "DeviceReport",
    "Posture",
    "ReportKind",
    "Tombstones",
    "decode_report",
    "sign_report",
    "verify_report",
    "verify_report_signature",
]

REPORT_VERSION: Final = 1
MAX_REPORT: Final = 4096
KEY_STORAGE_KINDS: Final = ("keyring", "passphrase", "plaintext")
ROOTED_VALUES: Final = ("yes", "no", "unknown")
PAIRING_OUTCOMES: Final = ("started", "completed", "failed", "sas_mismatch", "expired")
_LIMITS: Final = DecodeLimits(max_size=MAX_REPORT, max_depth=4, max_items=32)
_FIELDS: Final = ("v", "account", "device", "ts", "kind", "data")


class ReportKind(StrEnum):
    """What a report states."""

    POSTURE = "posture"
    PAIRING = "pairing"
    TOMBSTONES = "tombstones"


_DATA_FIELDS: Final[dict[ReportKind, tuple[str, ...]]] = {
    ReportKind.POSTURE: ("os", "os_version", "app_version", "package_hash", "key_storage",
                         "rooted", "attestation"),
    ReportKind.PAIRING: ("outcome",),
    ReportKind.TOMBSTONES: ("subject", "count", "since"),
}


class Signer(Protocol):
    """A device's keys (:class:`~sddsf.protocol.identity.DeviceKeys`)."""

    @property
    def device_id(self) -> bytes:
        """The device id."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Detached Ed25519 signature."""
        ...


@dataclass(frozen=True, slots=True)
class Posture:
    """A device's self-reported posture (what it claims; nothing here is attested)."""

    os: str
    os_version: str
    app_version: str
    package_hash: bytes
    key_storage: str
    rooted: str
    attestation: str = "none"

    def to_data(self) -> dict[str, object]:
        """The report's ``data`` map."""
        return {"os": self.os, "os_version": self.os_version, "app_version": self.app_version,
                "package_hash": self.package_hash, "key_storage": self.key_storage,
                "rooted": self.rooted, "attestation": self.attestation}

    def same_as(self, other: Posture | None) -> bool:
        """Whether ``other`` states the same posture (a change is an audit event)."""
        return other is not None and self.to_data() == other.to_data()


@dataclass(frozen=True, slots=True)
class Tombstones:
    """Deletions written by ``subject`` that the reporting device saw."""

    subject: bytes
    count: int
    since: int


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """A decoded (not yet verified) report."""

    account: bytes
    device: bytes
    ts: int
    kind: ReportKind
    posture: Posture | None
    pairing_outcome: str | None
    tombstones: Tombstones | None
    body_bytes: bytes
    signature: bytes
    raw: bytes


def _choice(f: Fields, key: str, allowed: tuple[str, ...]) -> str:
    value = f.str_(key, max_len=32)
    if value not in allowed:
        raise DecodeError(f"device report: {key} must be one of {', '.join(allowed)}, not "
                          f"{value!r}")
    return value


def _data(kind: ReportKind, data: Mapping[str, object]) -> Fields:
    return expect_map(dict(data), f"device {kind.value} report data", _DATA_FIELDS[kind])


def _parse(kind: ReportKind, f: Fields) -> tuple[Posture | None, str | None,
                                                 Tombstones | None]:
    if kind is ReportKind.POSTURE:
        attestation = f.str_("attestation", max_len=32)
        if attestation != "none":
            raise DecodeError(f"posture attestation {attestation!r} is not supported by this "
                              "version (only 'none')", Code.UNSUPPORTED_VERSION)
        return Posture(f.str_("os", max_len=64), f.str_("os_version", max_len=128),
                       f.str_("app_version", max_len=64), f.bytes_("package_hash", size=32),
                       _choice(f, "key_storage", KEY_STORAGE_KINDS),
                       _choice(f, "rooted", ROOTED_VALUES), attestation), None, None
    if kind is ReportKind.PAIRING:
        return None, _choice(f, "outcome", PAIRING_OUTCOMES), None
    return None, None, Tombstones(f.bytes_("subject", size=ID_SIZE),
                                  f.int_("count", lo=1, hi=1_000_000), f.int_("since"))


def sign_report(device: Signer, account_id: bytes, kind: ReportKind,
                data: Mapping[str, object], ts_ms: int) -> bytes:
    """A signed report (device side).

    Raises:
        UsageError: ``data`` does not have the kind's shape.
    """
    try:
        _parse(kind, _data(kind, data))
    except DecodeError as exc:
        raise UsageError(f"not a valid {kind.value} report: {exc.message}") from None
    body = encode({"v": REPORT_VERSION, "account": account_id, "device": device.device_id,
                   "ts": ts_ms, "kind": kind.value, "data": dict(data)})
    return encode([REPORT_VERSION, body, device.sign(labelled(labels.DEVICE_REPORT_SIG, body))])


def decode_report(data: bytes) -> DeviceReport:
    """Decode a report's structure (its signature is checked by :func:`verify_report`).

    Raises:
        DecodeError: malformed, too large, an unknown kind or an unsupported version.
    """
    f, body, sig = decode_signed(data, what="device report", version=REPORT_VERSION,
                                 fields=_FIELDS, limits=_LIMITS)
    try:
        kind = ReportKind(f.str_("kind", max_len=32))
    except ValueError:
        raise DecodeError(f"device report kind {f.raw('kind')!r} is unknown",
                          Code.UNSUPPORTED_VERSION) from None
    raw_data = f.raw("data")
    if not isinstance(raw_data, dict):
        raise DecodeError("device report: data must be a map")
    posture, outcome, tomb = _parse(kind, _data(kind, raw_data))
    return DeviceReport(f.bytes_("account", size=ID_SIZE), f.bytes_("device", size=ID_SIZE),
                        f.int_("ts"), kind, posture, outcome, tomb, body, sig, bytes(data))


def verify_report(data: bytes, registry: RegistryState, *, now_ms: int,
                  max_skew_ms: int) -> DeviceReport:
    """Decode and verify a report against the account's verified registry.

    Raises:
        DecodeError; AuthorizationError ``not_authorized`` (another account),
        ``unknown_device`` or ``revoked``; SignatureError; ClockSkewError (a
        report from more than ``max_skew_ms`` in the future).
    """
    report = decode_report(data)
    if report.account != registry.account_id:
        raise AuthorizationError("the report belongs to another account", Code.NOT_AUTHORIZED)
    record = registry.device(report.device)
    if record is None:
        raise AuthorizationError("the reporting device is not in the registry",
                                 Code.UNKNOWN_DEVICE)
    if not registry.is_active(report.device):
        raise AuthorizationError("the reporting device has been revoked", Code.REVOKED)
    if not record.public.signing_key.is_valid_signature(
            labelled(labels.DEVICE_REPORT_SIG, report.body_bytes), report.signature):
        raise SignatureError("device report signature does not verify")
    if report.ts - now_ms > max_skew_ms:
        raise ClockSkewError(f"the report is {report.ts - now_ms} ms in the future (limit "
                             f"{max_skew_ms} ms); check the device's clock")
    return report


def verify_report_signature(data: bytes, registry: RegistryState) -> DeviceReport:
    """Check a logged report's signature by any device the registry ever had
    (an audit entry stays valid after its author is revoked).

    Raises:
        DecodeError, AuthorizationError, SignatureError.
    """
    report = decode_report(data)
    record = registry.device(report.device)
    if report.account != registry.account_id or record is None:
        raise AuthorizationError("a logged report names a device this account never had",
                                 Code.UNKNOWN_DEVICE)
    record.public.signing_key.verify(labelled(labels.DEVICE_REPORT_SIG, report.body_bytes),
                                     report.signature)
    return report
