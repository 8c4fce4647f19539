"""Kept for compatibility: this module moved to :mod:`sddsf.protocol.audit`.

Audit log entries (and the signed heads over them) are a format that clients
and the relay both use, so it lives in the pure protocol core. This module only
re-exports it for code written against the old layout; import
:mod:`sddsf.protocol.audit` instead. To be removed once nothing imports this path.
"""

from __future__ import annotations

from sddsf.protocol.audit import (
    AUDIT_VERSION,
    AuditEntry,
    AuditKind,
    audit_log_id,
    build_entry,
    check_own_entry,
    decode_entry,
    verify_audit_log,
)

__all__ = [
    "AUDIT_VERSION", "AuditEntry", "AuditKind", "audit_log_id", "build_entry",
    "check_own_entry", "decode_entry", "verify_audit_log",
]
