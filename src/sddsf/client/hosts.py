"""What the account-level helpers need from a device, as interfaces.

The controller hooks (:mod:`sddsf.client.controller`), governance
(:mod:`sddsf.client.governance`), the vault and the key-value document take a
*host* that provides these members instead of importing the
:class:`~sddsf.client.device.Device` facade, which imports them: so there is no
import circle, and each helper states exactly what it uses. ``Device``
satisfies every protocol here (a test checks it).
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import pycrdt

from sddsf.client.engine.common import Progress, SyncReport
from sddsf.client.engine.sync import SyncEngine
from sddsf.client.events import EventBus
from sddsf.client.records import Provenance
from sddsf.client.relay_client import RelayClient
from sddsf.client.store import LocalStore
from sddsf.client.transport.base import Transport
from sddsf.crypto import Ed25519PublicKey
from sddsf.protocol import registry as reg
from sddsf.protocol.identity import AccountPublic, DeviceKeys

__all__ = ["ControllerHost", "DocumentHost", "GovernanceHost", "SharingHost", "SyncHost",
           "TombstoneHost"]


class DocumentHost(Protocol):
    """A device as the vault and the key-value document use it."""

    #: Its engine: the vault of a shared space judges authors by its members.
    engine: SyncEngine

    @property
    def keys(self) -> DeviceKeys:
        """This device's keys (records are signed with them)."""
        ...

    @property
    def device_id(self) -> bytes:
        """This device's id."""
        ...

    @property
    def provenance(self) -> Provenance:
        """Who carried each record."""
        ...

    def registry(self) -> reg.RegistryState:
        """The verified registry."""
        ...

    def doc(self, space_id: bytes, name: str) -> pycrdt.Doc[Any]:
        """A live document of a space."""
        ...

    def flush(self) -> int:
        """Queue buffered edits as ops."""
        ...

    def spaces(self) -> list[tuple[bytes, str]]:
        """``(space_id, name)`` of the device's spaces."""
        ...

    def synced_spaces(self) -> list[tuple[bytes, str]]:
        """The spaces that sync (not those of others this account left or lost)."""
        ...

    async def create_space(self, name: str) -> bytes:
        """Create a space; returns its id."""
        ...


class ControllerHost(Protocol):
    """A device as the controller's client side uses it."""

    store: LocalStore
    relay: RelayClient

    @property
    def keys(self) -> DeviceKeys:
        """This device's keys (reports are signed with them)."""
        ...

    @property
    def account(self) -> AccountPublic:
        """The account's public keys."""
        ...

    @property
    def relay_key(self) -> Ed25519PublicKey | None:
        """The pinned relay key."""
        ...

    @property
    def key_kind(self) -> str:
        """How the store's key is kept (reported as posture)."""
        ...

    def clock(self) -> int:
        """Milliseconds since the epoch."""
        ...

    async def refresh_registry(self) -> reg.RegistryState:
        """Fetch and verify new registry entries."""
        ...

    async def pin_relay(self) -> None:
        """Pin (or check) the relay key."""
        ...


class GovernanceHost(Protocol):
    """A device as governance uses it (device changes under the approval policy)."""

    relay: RelayClient

    @property
    def keys(self) -> DeviceKeys:
        """This device's keys (entries are signed with them)."""
        ...

    @property
    def device_id(self) -> bytes:
        """This device's id."""
        ...

    @property
    def account(self) -> AccountPublic:
        """The account's public keys."""
        ...

    def clock(self) -> int:
        """Milliseconds since the epoch."""
        ...

    def registry(self) -> reg.RegistryState:
        """The verified registry."""
        ...

    async def refresh_registry(self) -> reg.RegistryState:
        """Fetch and verify new registry entries."""
        ...

    def cutoff_for(self, device_id: bytes) -> dict[bytes, int]:
        """Per space, the last seq of ``device_id`` this device verified."""
        ...

    async def log_peer_ops(self, device_id: bytes) -> list[bytes]:
        """Carry ``device_id``'s ops that peers brought here to the log, and pull."""
        ...

    def spaces(self) -> list[tuple[bytes, str]]:
        """``(space_id, name)`` of the device's spaces."""
        ...

    def synced_spaces(self) -> list[tuple[bytes, str]]:
        """The spaces that sync (not those of others this account left or lost)."""
        ...

    async def rotate(self, space_id: bytes) -> int:
        """Open the next key epoch."""
        ...

    async def sync(self) -> SyncReport:
        """Push, pull and verify."""
        ...

    def space_policy(self, space_id: bytes) -> str:
        """The space's re-encryption policy."""
        ...

    async def snapshot_unusable(self, space_id: bytes) -> bool:
        """Whether the relay's snapshot is by a device no longer active."""
        ...

    async def snapshot(self, space_id: bytes) -> int | None:
        """Write a snapshot of the space."""
        ...

    async def pull_only(self, space_id: bytes) -> None:
        """Pull, verify and apply the space's new entries (no push)."""
        ...


class TombstoneHost(ControllerHost, DocumentHost, Protocol):
    """A device that reports the vault deletions it saw (controller + vault)."""


class SyncHost(Protocol):
    """What the background sync and live documents (``sddsf.client.runner``,
    ``sddsf.client.live``) need of a device: the facade satisfies it, so those
    modules sit above the device without importing it (no import circle)."""

    events: EventBus

    @property
    def transport(self) -> Transport:
        """The engine's transport: the runner follows the spaces with its subscribe."""
        ...

    async def sync(self, progress: Progress | None = None) -> SyncReport:
        """One sync."""
        ...

    def spaces(self) -> list[tuple[bytes, str]]:
        """The spaces this device knows, with their names."""
        ...

    def synced_spaces(self) -> list[tuple[bytes, str]]:
        """The spaces that sync (not those of others this account left or lost)."""
        ...

    def doc(self, space_id: bytes, name: str) -> pycrdt.Doc[Any]:
        """A document of a space."""
        ...

    def flush(self) -> int:
        """Seal buffered edits into pending ops."""
        ...


class SharingHost(Protocol):
    """A device as :class:`~sddsf.client.sharing.Sharing` uses it."""

    engine: SyncEngine
    store: LocalStore
    transport: Transport
    relay: RelayClient

    @property
    def account(self) -> AccountPublic:
        """The account's public keys."""
        ...

    @property
    def keys(self) -> DeviceKeys:
        """This device's keys (membership entries are signed with them)."""
        ...

    def registry(self) -> reg.RegistryState:
        """The verified registry."""
        ...

    def clock(self) -> int:
        """Milliseconds since the epoch."""
        ...

    def spaces(self) -> list[tuple[bytes, str]]:
        """The device's spaces."""
        ...

    def exclusive(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the home's lock for a block of calls."""
        ...

    async def sync(self, progress: Progress | None = None) -> SyncReport:
        """One sync."""
        ...
