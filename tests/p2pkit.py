"""Shared helpers of the peer-to-peer tests: devices of one account that all hold
the registry and the newest key, a document's text, a catch-up exchange between
two devices' engines, and waiting for a condition."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pycrdt

sys.path.insert(0, str(Path(__file__).resolve().parent / "client"))

from clientkit import InProcessRelay

from sddsf.client.device import Device
from sddsf.client.engine.mesh import MeshReport


def text(dev: Device, space: bytes) -> str:
    """The space's document "t" as text."""
    return str(dev.doc(space, "t").get("t", type=pycrdt.Text))


async def devices(relay: InProcessRelay, tmp_path: Path, *names: str
                  ) -> tuple[list[Device], bytes]:
    """Devices of one new account, each synced twice (registry and newest key),
    and the space "notes" the first created."""
    first, _ = await relay.new_account(tmp_path / names[0], names[0])
    space = await first.create_space("notes")
    others = [await relay.add(first, tmp_path / n, n) for n in names[1:]]
    for dev in (first, *others, first, *others):
        await dev.sync()  # everyone holds the registry and the newest key
    return [first, *others], space


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``check()`` holds (AssertionError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


def exchange(dev: Device, peer: Device, space: bytes) -> MeshReport:
    """``dev`` takes what ``peer`` answers to its catch-up request (registry
    entries, key packages, ops), as over the network, at the engine."""
    req = dev.engine.mesh.request(space)
    resp = peer.engine.mesh.respond(req, dev.device_id)
    dev.engine.mesh.accept_registry(req.registry_seq + 1, resp.registry)
    dev.engine.mesh.accept_packages(space, resp.packages)
    return dev.engine.mesh.accept(space, resp.ops)
