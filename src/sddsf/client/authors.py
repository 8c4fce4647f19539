"""Whose device signed a record: the verified registries that may vouch for it.

A record of the vault or of the key-value document names its author device and
is signed by it. In a space shared between people that device may belong to
another member's account: its key then comes from that account's registry,
verified from the account's pinned key (never from the relay's word). A former
member's records stay theirs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sddsf.client.hosts import DocumentHost
    from sddsf.protocol.registry import DeviceRecord, RegistryState

__all__ = ["author_device", "vouching_registries"]


def vouching_registries(device: DocumentHost,
                        space: bytes | None = None) -> list[RegistryState]:
    """The verified registries that may vouch for a record's author device.

    Args:
        device: An open device.
        space: None for the personal vault; else the space holding the record.

    Returns:
        This account's registry first; with ``space``, then the registry of
        every other account that was a member of the space at some position of
        its verified membership log (a former member's records stay theirs),
        by account id, as far as this device verified them (each from the
        account's pinned key, never from the relay's word).

    Raises:
        Nothing of its own.
    """
    own = device.registry()
    if space is None:
        return [own]
    members = device.engine.members
    fold = members.current(space)
    accounts = set(fold.state.members).union(*fold.sets.values()) - {own.account_id}
    return [own, *(r for a in sorted(accounts) if (r := members.registry_of(a)) is not None)]


def author_device(device: DocumentHost, space: bytes | None,
                  device_id: bytes) -> tuple[bytes, DeviceRecord] | None:
    """The account and registry record of a signed record's author device.

    Args:
        device: An open device.
        space: None for the personal vault; else the space holding the record.
        device_id: The author device's id.

    Returns:
        ``(account id, record)`` from the first of :func:`vouching_registries`
        that lists the device (active or revoked: what it signed while active
        stays its own); None: no such registry lists it, so a signed record
        naming it is forged.

    Raises:
        Nothing of its own.
    """
    for registry in vouching_registries(device, space):
        rec = registry.device(device_id)
        if rec is not None:
            return registry.account_id, rec
    return None
