"""The world the fuzz targets run against: real, verified objects.

Everything comes from SDDSF's own conformance vectors (``tests/vectors/*.json``,
written by :mod:`sddsf.testing.vectorgen`): one account whose registry is
genesis(laptop) -> add(phone) -> add(tablet) -> revoke(tablet), a space with
its epoch key, snapshot epoch keys and the relay's tree-head key. So a fuzzed
op is checked against the same registry, chains and keys an honest device
would hold, and seeds are the vectors' valid and invalid cases.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from sddsf.crypto import Ed25519SigningKey
from sddsf.protocol import registry as reg
from sddsf.protocol.envelope import decode_envelope
from sddsf.protocol.identity import AccountKeys, DeviceKeys
from sddsf.protocol.rules import EpochWindow, MemoryChainView
from sddsf.testing import vectorgen

__all__ = ["VECTORS", "World", "factories", "hex_values", "vectors", "world"]

_TESTS = Path(__file__).resolve().parent.parent / "tests"
VECTORS = _TESTS / "vectors"


def factories() -> ModuleType:
    """``tests/factories.py``: the by-hand builders (forge, omit or misplace any field)."""
    if str(_TESTS) not in sys.path:
        sys.path.append(str(_TESTS))
    return importlib.import_module("factories")


@cache
def vectors(name: str) -> dict[str, Any]:
    """One vector file: ``envelope``, ``registry``, ``key_package``, ``snapshot``, ``tree_head``."""
    doc: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    return doc


def hex_values(name: str, *fields: str) -> Iterator[bytes]:
    """Every value of ``fields`` (hex strings or lists of them) in the valid,
    invalid and progress cases of one vector file."""
    doc = vectors(name)
    for group in ("valid", "invalid", "progress"):
        for case in doc.get(group, []):
            for f in fields:
                value = case.get(f)
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, str):
                        yield bytes.fromhex(item)


@dataclass(frozen=True)
class World:
    """Keys, the verified registry and the context of one space."""

    account: AccountKeys
    laptop: DeviceKeys  # genesis device, active
    phone: DeviceKeys  # added, active
    tablet: DeviceKeys  # added, then revoked
    newcomer: DeviceKeys  # never registered: the device an add entry introduces
    entries: tuple[bytes, ...]
    genesis_state: reg.RegistryState
    state: reg.RegistryState
    space: bytes
    doc: bytes
    epoch_key: bytes
    epochs: EpochWindow
    now_ms: int
    snapshot_keys: dict[int, bytes]
    relay_key: Ed25519SigningKey
    log: bytes

    @property
    def devices(self) -> tuple[DeviceKeys, ...]:
        """Every device with keys here (registered or not)."""
        return (self.laptop, self.phone, self.tablet, self.newcomer)

    def keys_of(self, device_id: object) -> DeviceKeys:
        """The device with this id, or the laptop (so a signature is always made)."""
        for d in self.devices:
            if d.device_id == device_id:
                return d
        return self.laptop

    def chains(self) -> MemoryChainView:
        """Accepted chains holding the laptop's first op (a fresh, mutable copy)."""
        view = MemoryChainView()
        first = vectors("envelope")["valid"][0]["envelope"]
        view.record(decode_envelope(bytes.fromhex(first)))
        return view


def _device(context: dict[str, Any], name: str) -> DeviceKeys:
    d = context["devices"][name]
    return DeviceKeys.from_seeds(bytes.fromhex(d["signing_seed"]), bytes.fromhex(d["kx_seed"]))


@cache
def world() -> World:
    """The world (built once per process)."""
    ctx = vectors("envelope")["context"]
    entries = tuple(bytes.fromhex(e) for e in ctx["registry"])
    account = AccountKeys.from_secret(bytes.fromhex(ctx["account_secret"]))
    snap = vectors("snapshot")["context"]
    heads = vectors("tree_head")["context"]
    relay_key = Ed25519SigningKey.from_seed(vectorgen.seed("relay"))
    if relay_key.public.raw.hex() != heads["relay_public_key"]:
        raise RuntimeError("tests/vectors/tree_head.json is stale: regenerate the vectors")
    return World(
        account=account, laptop=_device(ctx, "laptop"), phone=_device(ctx, "phone"),
        tablet=_device(ctx, "tablet"),
        newcomer=DeviceKeys.from_seeds(vectorgen.seed("fuzz/newcomer/sign"),
                                       vectorgen.seed("fuzz/newcomer/kx")),
        entries=entries,
        genesis_state=reg.verify_registry(entries[:1], pinned=account.public),
        state=reg.verify_registry(entries, pinned=account.public),
        space=bytes.fromhex(ctx["space"]), doc=bytes.fromhex(ctx["doc"]),
        epoch_key=bytes.fromhex(ctx["epoch_key"]),
        epochs=EpochWindow(ctx["epoch"]["current"], ctx["epoch"]["started_ms"],
                           tuple(ctx["epoch"].get("package_seqs", ()))),
        now_ms=ctx["now_ms"],
        snapshot_keys={int(e): bytes.fromhex(k) for e, k in snap["epoch_keys"].items()},
        relay_key=relay_key,
        log=bytes.fromhex(heads["log"]),
    )
