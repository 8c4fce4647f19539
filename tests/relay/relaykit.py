"""A test world for the relay: one account, devices, a space, ops; a relay app
in-process (httpx ASGI transport) with an injectable clock."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sddsf.client.relay_client import RelayClient
from sddsf.crypto import Ed25519SigningKey
from sddsf.protocol import keypackage as kp
from sddsf.protocol import registry as reg
from sddsf.protocol.clock import HLCTimestamp
from sddsf.protocol.envelope import GENESIS_PREV, OpEnvelope, OpHeader, seal_op
from sddsf.protocol.identity import AccountKeys, DeviceKeys
from sddsf.protocol.vv import VersionVector
from sddsf.relay.app import create_app
from sddsf.relay.settings import RelaySettings
from sddsf.relay.storage.base import RelayStorage

T0 = 1_767_225_600_000
_counter = itertools.count(1)


def seed(tag: str, i: int) -> bytes:
    import hashlib

    return hashlib.blake2b(f"{tag}/{i}".encode(), digest_size=32).digest()


@dataclass
class Clock:
    """A settable clock (ms)."""

    now: int = T0

    def __call__(self) -> int:
        return self.now


@dataclass
class World:
    """Account, devices and their chains in one space."""

    account: AccountKeys = field(default_factory=lambda: AccountKeys.from_secret(
        seed("account", next(_counter))))
    devices: list[DeviceKeys] = field(default_factory=list)
    entries: list[bytes] = field(default_factory=list)
    space: bytes = field(default_factory=lambda: seed("space", next(_counter))[:16])
    doc: bytes = bytes(range(16))
    epoch_keys: list[bytes] = field(default_factory=list)
    packages: list[bytes] = field(default_factory=list)
    heads: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        base = next(_counter) * 10
        self.devices = [DeviceKeys.from_seeds(seed("sign", base + i), seed("kx", base + i))
                        for i in range(6)]
        self.entries = [reg.genesis(self.account, self.devices[0], "laptop", T0)]

    @property
    def state(self) -> reg.RegistryState:
        return reg.verify_registry(self.entries, pinned=self.account.public)

    def add_device(self, i: int, ts: int = T0) -> bytes:
        # ``ts``: a relay bounds a device-signed addition's date by its clock
        # (real relay processes: pass the current time).
        entry = reg.add_device(self.state, self.devices[0], self.devices[i], f"dev{i}", ts)
        self.entries.append(entry)
        return entry

    def revoke(self, i: int) -> bytes:
        # The cutoff keeps every op of the device this world recorded (the relay
        # refuses a revocation whose cutoff the stored chain has outgrown).
        target = self.devices[i].device_id
        cutoff = {self.space: self.heads[target][0]} if target in self.heads else {}
        entry = reg.revoke_device(self.state, self.devices[0], target, "lost", T0,
                                  cutoff=cutoff)
        self.entries.append(entry)
        return entry

    def key_package(self, creator: int = 0) -> bytes:
        state = self.state
        epoch = len(self.packages)
        key = seed("epoch", next(_counter))
        prev = kp.package_hash(self.packages[-1]) if self.packages else bytes(32)
        pkg = kp.build_key_package(
            creator=self.devices[creator], registry=state, space=self.space, epoch=epoch,
            prev=prev, epoch_key=key, ts_ms=T0,
            ephemeral_seeds=[seed("eph", next(_counter)) for _ in
                             range(len(state.active_devices()) + 1)])
        self.packages.append(pkg)
        self.epoch_keys.append(key)
        return pkg

    def op(self, i: int = 0, *, text: bytes = b"edit", ts: int = T0, epoch: int | None = None,
           seq: int | None = None, prev: bytes | None = None, space: bytes | None = None,
           record: bool = True) -> OpEnvelope:
        dev = self.devices[i]
        head_seq, head_id = self.heads.get(dev.device_id, (0, GENESIS_PREV))
        use_seq = head_seq + 1 if seq is None else seq
        use_epoch = len(self.epoch_keys) - 1 if epoch is None else epoch
        header = OpHeader(space=space or self.space, doc=self.doc, author=dev.device_id,
                          seq=use_seq, prev=head_id if prev is None else prev,
                          deps=VersionVector(), epoch=use_epoch, ts=HLCTimestamp(ts, 0),
                          seen=None, nonce=seed("nonce", next(_counter))[:24])
        env = seal_op(dev, header, text, self.epoch_keys[use_epoch])
        if record:
            self.heads[dev.device_id] = (use_seq, env.op_id)
        return env


def relay_key() -> Ed25519SigningKey:
    return Ed25519SigningKey.from_seed(seed("relay", 1))


def make_app(storage: RelayStorage, clock: Clock, **overrides: object):  # type: ignore[no-untyped-def]
    settings = RelaySettings(db="sqlite:////unused", key_file="/unused")
    if overrides:
        settings = settings.replace(**overrides)
    return create_app(settings, storage, relay_key(), clock=clock)


def client_for(app, world: World, device: int = 0, clock: Clock | None = None) -> RelayClient:  # type: ignore[no-untyped-def]
    return RelayClient("http://relay.test", device=world.devices[device],
                       account_id=world.account.account_id,
                       transport=httpx.ASGITransport(app=app), clock=clock or Clock())


def tmp_sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'relay.db'}"
