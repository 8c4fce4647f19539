"""Who a device's peers are and where to meet them (protocol.md 23.1, 23.2, 23.5):
the devices allowed to connect, the space topics of its epochs, and, in hybrid
mode, the presence records of a space's other devices read through the relay.

A record is used only when it verifies under its device's key in a registry
this device verified and opens with an epoch key it holds; the relay, which
serves them, can withhold records but not forge one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from sddsf.crypto import random_bytes
from sddsf.errors import SddsfError
from sddsf.protocol import p2p, presence
from sddsf.protocol.registry import RegistryState

if TYPE_CHECKING:
    from sddsf.client.device import Device
    from sddsf.p2p.node import PeerNode

__all__ = ["allowed_devices", "discover", "open_record", "registry_of", "topic_of",
           "wanted_topics"]

log = logging.getLogger("sddsf.p2p")


def open_record(device: Device, space_id: bytes, raw: bytes, keys: dict[int, bytes],
                now: int) -> tuple[bytes, list[str]] | None:
    """A presence record of another device of the space: its device id and the
    multiaddrs to dial (each ending in its peer id), or None when it is not
    usable (logged).

    Raises:
        Nothing: a record that does not verify or open is skipped.
    """
    try:
        record = presence.decode_presence(raw)
        if record.device == device.device_id or record.epoch not in keys:
            return None
        state = registry_of(device, space_id, record.device)
        if state is None:
            return None
        presence.verify_presence(record, state, space=space_id, now_ms=now)
        opened = presence.open_presence(record, keys[record.epoch])
    except SddsfError as exc:
        log.info("a presence record was refused: %s", exc.message)
        return None
    suffix = "/p2p/" + opened.peer
    return record.device, [a if a.endswith(suffix) else a + suffix for a in opened.addrs]


def registry_of(device: Device, space_id: bytes, device_id: bytes) -> RegistryState | None:
    """The verified registry that lists ``device_id`` for this space (this
    account's, or a member account's in a shared space), or None."""
    own = device.engine.reg.state()
    if own.device(device_id) is not None:
        return own
    members = device.engine.members
    if members.shared(space_id):
        for account in members.current(space_id).state.members:
            state = members.registry_of(account)
            if state is not None and state.device(device_id) is not None:
                return state
    return None


async def discover(device: Device, node: PeerNode,
                   using: Callable[[], AbstractAsyncContextManager[None]],
                   ttl_ms: int) -> dict[bytes, list[str]]:
    """Publish this device's presence record in every space it syncs and read the
    other devices' (protocol 23.5).

    Args:
        device: the device.
        node: its running libp2p node (its peer id and addresses are published).
        using: enters the home's and the engine's locks (the keys are read under them).
        ttl_ms: how long the published records live.

    Returns:
        Per device found, the multiaddrs to dial.

    Raises:
        UnavailableError: the relay cannot be reached.
    """
    transport = device.transport
    now = device.clock()
    found: dict[bytes, list[str]] = {}
    for space_id, _ in device.synced_spaces():
        async with using():
            keys = device.engine.keyring.keys_cached(space_id)
            if not keys:
                continue
            epoch = max(keys)
            record = presence.seal_presence(
                device.keys, space=space_id, epoch=epoch, epoch_key=keys[epoch],
                peer=node.peer_id, addrs=tuple(node.addrs[:16]), now_ms=now,
                ttl_ms=ttl_ms, nonce=random_bytes(24))
        await transport.put_presence(space_id, record)
        for raw in await transport.presence(space_id):
            seen = open_record(device, space_id, raw, keys, now)
            if seen is not None:
                found[seen[0]] = seen[1]
    return found


def allowed_devices(device: Device) -> frozenset[bytes]:
    """The devices that may connect (protocol 23.1): the active devices of this
    account and, for each shared space it syncs, of the member accounts, from
    the registries this device verified (itself excluded)."""
    allowed = {r.device_id for r in device.engine.reg.state().active_devices()}
    members = device.engine.members
    for space_id, _ in device.synced_spaces():
        if not members.shared(space_id):
            continue
        for account in members.current(space_id).state.members:
            state = members.registry_of(account)
            if state is not None:
                allowed.update(r.device_id for r in state.active_devices())
    allowed.discard(device.device_id)
    return frozenset(allowed)


def topic_of(device: Device, space_id: bytes) -> str | None:
    """The space's topic of its newest epoch (where this device publishes), or
    None before it holds a key."""
    keys = device.engine.keyring.keys_cached(space_id)
    if not keys:
        return None
    epoch = max(keys)
    return p2p.space_topic(space_id, epoch, keys[epoch])


def wanted_topics(device: Device) -> dict[str, bytes]:
    """Topic -> space: every space's newest epoch's topic, and the one before (a
    peer that has not seen the rotation yet still publishes there)."""
    wanted: dict[str, bytes] = {}
    for space_id, _ in device.synced_spaces():
        keys = device.engine.keyring.keys_cached(space_id)
        for epoch in sorted(keys)[-2:]:
            wanted[p2p.space_topic(space_id, epoch, keys[epoch])] = space_id
    return wanted
