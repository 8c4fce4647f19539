"""Transports: what carries a device's ops (see :mod:`sddsf.client.transport.base`)."""

from sddsf.client.transport.base import (
    AckResult,
    Attestations,
    Notification,
    OpNotice,
    Proof,
    PulledOp,
    PullPage,
    PushResult,
    RelayLimits,
    ResyncNotice,
    SessionInfo,
    SnapshotBlob,
    SpaceInfo,
    SubscribedNotice,
    Transport,
    UploadResult,
)

__all__ = ["AckResult", "Attestations", "Notification", "OpNotice", "Proof", "PullPage",
           "PulledOp", "PushResult", "RelayLimits", "ResyncNotice", "SessionInfo",
           "SnapshotBlob", "SpaceInfo", "SubscribedNotice", "Transport", "UploadResult"]
