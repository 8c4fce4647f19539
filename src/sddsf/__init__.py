"""SDDSF: Secure Distributed Data Synchronization Framework.

One person's devices share data and secret keys with end-to-end encryption,
offline-first CRDT merging, and a relay trusted for nothing but availability.

The application API (``docs/client.md``)::

    from sddsf import Device

    async with Device.open(home, passphrase="...") as device:
        async with device.live("notes", "todo") as handle:
            handle.doc.get("text", type=pycrdt.Text).insert(0, "milk")

:mod:`sddsf.sync_api` offers the same without asyncio. :mod:`sddsf.protocol`
is the pure protocol core and :mod:`sddsf.errors` the exception tree and its
stable codes. The names below are imported on first use, so ``import sddsf``
stays light for the relay and the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sddsf.client.device import Device, SyncReport
    from sddsf.client.events import (
        Alert,
        Event,
        MembershipChange,
        PendingProposal,
        RegistryChange,
        RemoteChange,
        Rotation,
    )
    from sddsf.client.live import LiveDoc, LiveStatus
    from sddsf.client.retry import RetryPolicy
    from sddsf.client.runner import Runner, RunnerSettings
    from sddsf.client.sharing import MemberView
    from sddsf.errors import (
        AuthorizationError,
        Code,
        ConfigError,
        ConflictError,
        DecodeError,
        EpochError,
        LocalProtocolError,
        NotFoundError,
        ProofError,
        RateLimitedError,
        RemoteProtocolError,
        SddsfError,
        ServiceError,
        UnavailableError,
        UsageError,
        VerificationError,
    )
    from sddsf.protocol.membership import Role

from sddsf._version import __version__

#: Public name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(("Device", "SyncReport"), "sddsf.client.device"),
    **dict.fromkeys(("Runner", "RunnerSettings"), "sddsf.client.runner"),
    "RetryPolicy": "sddsf.client.retry",
    **dict.fromkeys(("LiveDoc", "LiveStatus"), "sddsf.client.live"),
    **dict.fromkeys(("Alert", "Event", "MembershipChange", "PendingProposal",
                     "RegistryChange", "RemoteChange", "Rotation"), "sddsf.client.events"),
    "MemberView": "sddsf.client.sharing",
    "Role": "sddsf.protocol.membership",
    **dict.fromkeys(("AuthorizationError", "Code", "ConfigError", "ConflictError",
                     "DecodeError", "EpochError", "LocalProtocolError", "NotFoundError",
                     "ProofError", "RateLimitedError", "RemoteProtocolError", "SddsfError",
                     "ServiceError", "UnavailableError", "UsageError", "VerificationError"),
                    "sddsf.errors"),
}

__all__ = [
    "Alert",
    "AuthorizationError",
    "Code",
    "ConfigError",
    "ConflictError",
    "DecodeError",
    "Device",
    "EpochError",
    "Event",
    "LiveDoc",
    "LiveStatus",
    "LocalProtocolError",
    "MemberView",
    "MembershipChange",
    "NotFoundError",
    "PendingProposal",
    "ProofError",
    "RateLimitedError",
    "RegistryChange",
    "RemoteChange",
    "RemoteProtocolError",
    "RetryPolicy",
    "Role",
    "Rotation",
    "Runner",
    "RunnerSettings",
    "SddsfError",
    "ServiceError",
    "SyncReport",
    "UnavailableError",
    "UsageError",
    "VerificationError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sddsf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
