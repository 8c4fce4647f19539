"""Kept for compatibility: this module moved to :mod:`sddsf.protocol.posture`.

Device reports (posture, pairing outcomes, tombstones seen) are a signed
format that clients and the relay both use, so they live in the pure protocol
core. This module only re-exports them for code written against the old
layout; import :mod:`sddsf.protocol.posture` instead. To be removed once
nothing imports this path.
"""

from __future__ import annotations

from sddsf.protocol.posture import (
    KEY_STORAGE_KINDS,
    MAX_REPORT,
    PAIRING_OUTCOMES,
    REPORT_VERSION,
    ROOTED_VALUES,
    DeviceReport,
    Posture,
    ReportKind,
    Tombstones,
    decode_report,
    sign_report,
    verify_report,
    verify_report_signature,
)

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
