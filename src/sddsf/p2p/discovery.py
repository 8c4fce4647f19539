"""Finding peers through the relay in hybrid mode (protocol.md 23.5): opening
and checking the presence records of a space's other devices.

A record is used only when it verifies under its device's key in a registry
this device verified and opens with an epoch key it holds; the relay, which
serves them, can withhold records but not forge one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sddsf.errors import SddsfError
from sddsf.protocol import presence
from sddsf.protocol.registry import RegistryState

if TYPE_CHECKING:
    from sddsf.client.device import Device

__all__ = ["open_record", "registry_of"]

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
