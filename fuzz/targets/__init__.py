"""The registry of fuzz targets: name -> module, loaded lazily.

Each target module defines ``TARGETS``, its :class:`Target` objects by name.
Targets whose name ends in ``_sealed`` or ``_signed`` take the *content* of a
structure and wrap it correctly (encrypt, sign with a registered device's real key) before the
decoder sees it, so the fuzzer reaches the rules behind the signature check
instead of stopping at ``sig_invalid``.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["TARGETS", "Target", "frame", "load", "unframe"]


@dataclass(frozen=True)
class Target:
    """One fuzz target.

    Attributes:
        name: the name ``fuzz/run.py --target`` takes.
        run: feeds one input to the decoder(s); see :mod:`fuzz.contract`.
        seeds: real, valid (and known-invalid) inputs to start from.
        max_len: the largest input libFuzzer generates.
        prepare: builds what ``run`` needs before fuzzing starts, so that a
            broken set-up is an error of the run, not a crash of the target.
        dictionary: tokens libFuzzer splices into inputs (``-dict``), for values
            coverage feedback cannot steer towards (parsed outside Python).
    """

    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], Iterable[bytes]]
    max_len: int = 4096
    prepare: Callable[[], object] = lambda: None
    dictionary: tuple[bytes, ...] = ()


TARGETS: dict[str, str] = {
    "cbor": "fuzz.targets.cbor",
    "envelope": "fuzz.targets.envelope",
    "envelope_sealed": "fuzz.targets.envelope",
    "registry_entry": "fuzz.targets.registry",
    "registry_signed": "fuzz.targets.registry",
    "membership_entry": "fuzz.targets.membership",
    "membership_signed": "fuzz.targets.membership",
    "key_package": "fuzz.targets.keypackage",
    "key_package_signed": "fuzz.targets.keypackage",
    "snapshot": "fuzz.targets.snapshot",
    "snapshot_sealed": "fuzz.targets.snapshot",
    "snapshot_chunked": "fuzz.targets.snapshot",
    "snapshot_attestation": "fuzz.targets.snapshot",
    "tree_head": "fuzz.targets.treehead",
    "merkle_proofs": "fuzz.targets.merkle",
    "pairing": "fuzz.targets.pairing",
    "backup": "fuzz.targets.backup",
    "http_bodies": "fuzz.targets.http",
}


def load(name: str) -> Target:
    """The target called ``name``.

    Raises:
        KeyError: no such target.
    """
    module = importlib.import_module(TARGETS[name])
    target: Target = module.TARGETS[name]
    return target


def frame(first: bytes, rest: bytes) -> bytes:
    """``len(first)`` (2 bytes, big-endian) ``|| first || rest``: two fields in one input."""
    return struct.pack(">H", len(first)) + first + rest


def unframe(data: bytes) -> tuple[bytes, bytes]:
    """Inverse of :func:`frame`; short inputs give what there is."""
    n = int.from_bytes(data[:2], "big")
    return data[2:2 + n], data[2 + n:]
