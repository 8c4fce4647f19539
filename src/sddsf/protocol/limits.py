"""Size limits for every structure that arrives from the network.

The total size and the decoder's item and depth bounds are checked before
anything is allocated (see :mod:`sddsf.protocol.encoding`); per-structure
counts (deps, recipients) are checked right after decoding, inside those bounds.
Relays may lower them in configuration; raising them above the defaults
breaks interoperability with default peers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

from sddsf.protocol.encoding import DecodeLimits

__all__ = ["DEFAULT_PROTOCOL_LIMITS", "ProtocolLimits"]


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """Bounds on decoded structures (bytes unless stated)."""

    max_op: int = 512 * 1024  # whole op envelope
    # One edit sealed as a multi-part op (8.11): what a reader buffers per author.
    max_edit: int = 128 * 1024 * 1024
    max_parts: int = 65_536  # parts of one multi-part edit
    max_header: int = 64 * 1024  # encoded op header
    max_deps: int = 1024  # entries in a version vector
    max_registry_entry: int = 64 * 1024
    # ACTIVE devices of one account. Devices may add up to max_devices - 1: the
    # last slot is the account key's (recover), so a thief cannot lock it out.
    max_devices: int = 1024
    # Device records ever introduced by devices (revoked ones count); entries
    # signed by the account key are exempt. Bounds the cost of verifying a
    # registry from genesis.
    max_device_records: int = 4096
    # Device-signed introductions (add, or an enacted add proposal): refused when
    # the previous ``max_adds_per_window`` ones are all dated within
    # ``add_window_ms`` of the new one (entry dates are bounded by the relay's clock).
    max_adds_per_window: int = 16
    add_window_ms: int = 24 * 3600 * 1000
    max_key_package: int = 512 * 1024
    max_tree_head: int = 1024
    # A whole-space snapshot; it must fit one relay request (1 MiB by default)
    # once base64-encoded, so larger spaces fall back to replaying ops.
    max_snapshot: int = 700 * 1024
    # A chunked snapshot (version 2) is a manifest of at most ``max_snapshot``
    # bytes and at most this many chunks of 512 KiB of plaintext each (256 MiB).
    max_snapshot_chunks: int = 512
    max_name: int = 128  # characters in a device name
    max_depth: int = 8  # nesting of any structure

    def decode_limits(self, max_size: int) -> DecodeLimits:
        """Decoder bounds for one structure of at most ``max_size`` bytes."""
        return _decode_limits(max_size, self.max_depth, max(self.max_deps, self.max_devices) + 16)


@functools.lru_cache(maxsize=256)
def _decode_limits(max_size: int, max_depth: int, max_items: int) -> DecodeLimits:
    # DecodeLimits is frozen, so one instance serves every decode with these
    # bounds (every op, manifest and key package decode asks for one).
    return DecodeLimits(max_size=max_size, max_depth=max_depth, max_items=max_items)


DEFAULT_PROTOCOL_LIMITS: Final = ProtocolLimits()
