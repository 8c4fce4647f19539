"""Epoch exhaustion by relay policy.

The relay publishes a signed encryption policy (``/v1/controller/encryption-policy``)
that clients merge into their own, never weaker. A malicious relay publishing
``max_epoch_age_s = 1`` used to make every client rotate on every sync, for
ever (the strictest value was kept); and a key package carried at most 255
earlier keys, so after 255 epochs a device added or recovered later lacked the
space's early keys and failed on every sync.

What must hold now:

* relay-supplied values are clamped to documented floors and ceilings, so a
  relay cannot make a client rotate more often than the floor;
* the key history is complete for any number of epochs: each epoch's package
  wraps the earlier keys under a key derived from its own epoch key, so a
  device holding the newest key walks the verified chain down to epoch 0.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from clientkit import InProcessRelay
from relaykit import Clock, make_app

from factories import ACCOUNT, D1, D2, NOW_MS, genesis_registry
from sddsf.client.controller import (
    effective_encryption_policy,
    refresh_encryption_policy,
    reset_encryption_policy,
)
from sddsf.client.device import Device
from sddsf.crypto import random_bytes
from sddsf.protocol import keypackage as kp
from sddsf.protocol.registry import add_device
from sddsf.relay.storage.base import RelayStorage

EPOCHS = 300  # more than the 255 earlier keys a version 1 package could carry


class PolicyRelay(InProcessRelay):
    """A relay app whose controller publishes the given ``[encryption]`` table."""

    def __init__(self, storage: RelayStorage, clock: Clock, policy: Path) -> None:
        super().__init__(storage, clock)
        self.app = make_app(storage, clock, policy_file=str(policy))


@pytest.fixture
async def hostile(sqlite_storage: RelayStorage, tmp_path: Path
                  ) -> AsyncIterator[PolicyRelay]:
    policy = tmp_path / "policy.toml"
    policy.write_text("[encryption]\nmax_epoch_age_s = 1\n")
    yield PolicyRelay(sqlite_storage, Clock(time.time_ns() // 1_000_000), policy)


@pytest.fixture
def relay(sqlite_storage: RelayStorage) -> InProcessRelay:
    return InProcessRelay(sqlite_storage, Clock(time.time_ns() // 1_000_000))


def kv(device: Device, space: bytes) -> Any:
    return device.doc(space, "kv").get("kv", type=pycrdt.Map)


async def test_a_one_second_rotation_age_from_the_relay_is_clamped(
        hostile: PolicyRelay, tmp_path: Path) -> None:
    laptop, _ = await hostile.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    await laptop.sync()
    rotated = 0
    for i in range(3):
        hostile.clock.now += 2_000
        kv(laptop, space)[str(i)] = "edit"
        rotated += (await laptop.sync()).rotated
    assert rotated == 0, "the relay made the device rotate on every sync"
    policy = effective_encryption_policy(laptop)
    assert policy is not None and policy.max_epoch_age_s >= 3600
    assert max(laptop._epoch_keys(space)) == 0
    await laptop.close()


async def test_the_merged_policy_and_its_fetch_time_are_one_commit(
        hostile: PolicyRelay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A sync that fetches the relay's policy stores it and the time it was
    # fetched together: one commit of the device store, not one per row.
    laptop, _ = await hostile.new_account(tmp_path / "laptop")
    reset_encryption_policy(laptop)
    real = laptop.store.batch
    commits: list[int] = []

    def counted() -> Any:
        commits.append(1)
        return real()

    monkeypatch.setattr(laptop.store, "batch", counted)
    await refresh_encryption_policy(laptop)
    assert len(commits) == 1
    policy = effective_encryption_policy(laptop)
    assert policy is not None and policy.max_epoch_age_s >= 3600
    commits.clear()
    await refresh_encryption_policy(laptop)  # fetched just now: nothing to do
    assert commits == []
    await laptop.close()


async def test_a_device_added_after_300_epochs_reads_the_first_epoch(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    kv(laptop, space)["first"] = "written under epoch 0"
    await laptop.sync()
    # 300 rotations, each package built with what the laptop holds (every key
    # before it) and checked by the relay against the previous one.
    keys = [laptop._epoch_keys(space)[0]]
    previous = kp.decode_key_package(await _only_package(laptop, space))
    state = laptop.registry()
    for epoch in range(1, EPOCHS + 1):
        key = random_bytes(32)
        raw = kp.build_key_package(
            creator=laptop.keys, registry=state, space=space, epoch=epoch, prev=previous.hash,
            epoch_key=key, ts_ms=relay.clock(), previous_keys=keys,
            ephemeral_seeds=[random_bytes(32) for _ in range(len(state.active_devices()) + 1)])
        await laptop.relay.put_key_package(space, raw)
        relay.clock.now += 100  # within the device's request rate
        previous = kp.decode_key_package(raw)
        keys.append(key)
    await laptop.refresh_keys(space)
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await phone.sync()
    assert kv(phone, space)["first"] == "written under epoch 0"
    assert sorted(phone._epoch_keys(space)) == list(range(EPOCHS + 2))
    await laptop.close()
    await phone.close()


async def _only_package(device: Device, space: bytes) -> bytes:
    (raw,) = await device.relay.key_packages(space, 0)
    return raw


def test_key_history_is_complete_for_any_number_of_epochs() -> None:
    # Built with the protocol functions directly: 300 epochs whose packages each
    # wrap only the previous key; a device added at the end, and the recovery
    # key, open every epoch's key.
    r = genesis_registry()
    space = bytes(range(16))
    packages: list[kp.KeyPackage] = []
    keys: list[bytes] = []
    for epoch in range(EPOCHS + 1):
        key = random_bytes(32)
        raw = kp.build_key_package(
            creator=D1, registry=r.state, space=space, epoch=epoch,
            prev=packages[-1].hash if packages else bytes(32), epoch_key=key, ts_ms=NOW_MS,
            previous_keys=keys[-1:],
            ephemeral_seeds=[random_bytes(32) for _ in range(len(r.state.active_devices()) + 1)])
        packages.append(kp.verify_key_package(raw, registry=r.state, space=space,
                                              previous=packages[-1] if packages else None))
        keys.append(key)
    r = r.then(add_device(r.state, D1, D2, "phone", NOW_MS + 1))
    key = random_bytes(32)
    raw = kp.build_key_package(
        creator=D1, registry=r.state, space=space, epoch=EPOCHS + 1, prev=packages[-1].hash,
        epoch_key=key, ts_ms=NOW_MS, previous_keys=keys[-1:],
        ephemeral_seeds=[random_bytes(32) for _ in range(len(r.state.active_devices()) + 1)])
    packages.append(kp.verify_key_package(raw, registry=r.state, space=space,
                                          previous=packages[-1]))
    keys.append(key)
    assert kp.open_key_history(packages, D2.device_id, D2.kx) == dict(enumerate(keys))
    assert kp.open_key_history(packages, ACCOUNT.account_id,
                               ACCOUNT.recovery) == dict(enumerate(keys))
