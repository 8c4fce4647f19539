"""A device does not download its own acknowledged ops again (issue 18: half of
a typing device's download was its own ops coming back).

It pulls with ``omit_own=true``; the relay sends the entries of the caller's own
ops without their envelope (``"own": true``, op id and leaf hash kept), and
the device takes the envelope from its own copy, kept since the relay
acknowledged it. Every check stays: the leaf hash of the local envelope must
match, the log must reproduce the signed tree head, and an entry the device
has no copy of is fetched again in full. A relay that lies about which ops are
the device's own gains nothing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest
from clientkit import InProcessRelay, passphrase

from sddsf.client.device import Device
from sddsf.errors import Code, ProofError

URL = "http://relay.test"  # the in-process relay (clientkit)
Rewrite = Callable[[dict[str, Any], httpx.Request], dict[str, Any]]


class Wire(httpx.AsyncBaseTransport):
    """The relay's HTTP answers as the device receives them: every answer to a
    pull is recorded, and ``rewrite`` (a malicious relay) may change it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.pulls: list[tuple[httpx.Request, dict[str, Any]]] = []
        self.rewrite: Rewrite | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "GET" or not request.url.path.endswith("/ops"):
            return response
        body = json.loads(await response.aread())
        if self.rewrite is not None:
            body = self.rewrite(body, request)
        self.pulls.append((request, body))
        return httpx.Response(response.status_code, headers={"content-type": "application/json"},
                              content=json.dumps(body).encode())


async def _pair(relay: InProcessRelay, tmp: Path) -> tuple[Device, Device, bytes, Wire]:
    wire = Wire(relay.transport())
    laptop, _ = await Device.create_account(tmp / "laptop", URL, "laptop",
                                            passphrase=passphrase, transport=wire)
    space = await laptop.create_space("notes")
    phone = await Device.add_local(laptop, tmp / "phone", "phone", passphrase=passphrase,
                                   transport=relay.transport())
    await laptop.sync()
    await phone.sync()
    return laptop, phone, space, wire


def _edit(device: Device, space: bytes, key: str, value: str) -> None:
    device.doc(space, "kv").get("kv", type=pycrdt.Map)[key] = value


def _served(wire: Wire) -> list[dict[str, Any]]:
    return [op for _, body in wire.pulls for op in body["ops"]]


async def test_own_acknowledged_ops_come_back_without_their_envelopes(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, phone, space, wire = await _pair(relay, tmp_path)
    wire.pulls.clear()
    for i in range(4):
        _edit(laptop, space, f"k{i}", "v" * 300)
        laptop.flush()
    _edit(phone, space, "from-phone", "hello")
    await phone.sync()
    report = await laptop.sync()
    assert report.pushed == 4
    served = _served(wire)
    own = [op for op in served if op.get("own")]
    assert len(own) == 4, served
    assert all(op["envelope"] is None for op in own)
    others = [op for op in served if not op.get("own")]
    assert others and all(op["envelope"] is not None for op in others)
    assert all("omit_own=true" in str(request.url) for request, _ in wire.pulls)
    # Nothing is lost: both devices hold the same verified log and state.
    await phone.sync()
    assert laptop.verified_size(space) == phone.verified_size(space)
    for device in (laptop, phone):
        kv = device.doc(space, "kv").get("kv", type=pycrdt.Map)
        assert kv["from-phone"] == "hello" and kv["k3"] == "v" * 300
    await laptop.close()
    await phone.close()
    # The local log replica holds the laptop's own envelopes too: a reopened
    # device verifies its whole log from its store.
    again = Device.open(tmp_path / "laptop", passphrase=passphrase,
                              transport=relay.transport())
    await again.sync()
    assert again.doc(space, "kv").get("kv", type=pycrdt.Map)["k0"] == "v" * 300
    await again.close()


async def test_a_restored_older_copy_fetches_its_missing_own_ops_in_full(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, phone, space, wire = await _pair(relay, tmp_path)
    await laptop.close()
    shutil.copytree(tmp_path / "laptop", tmp_path / "old-copy")
    laptop = Device.open(tmp_path / "laptop", passphrase=passphrase,
                               transport=relay.transport())
    _edit(laptop, space, "made-after-the-copy", "yes")
    await laptop.sync()
    await laptop.close()
    # The old copy never held that op: the relay omits it (it is the device's
    # own), the copy has no envelope for it and asks again in full.
    old = Device.open(tmp_path / "old-copy", passphrase=passphrase, transport=wire)
    wire.pulls.clear()
    await old.sync()
    assert old.doc(space, "kv").get("kv", type=pycrdt.Map)["made-after-the-copy"] == "yes"
    assert any("omit_own=false" in str(request.url) for request, _ in wire.pulls)
    await old.close()
    await phone.close()


async def test_a_relay_passing_another_devices_op_off_as_own_gains_nothing(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, phone, space, wire = await _pair(relay, tmp_path)
    _edit(phone, space, "phone-secret-edit", "1")
    await phone.sync()

    def claim_own_and_withhold(body: dict[str, Any], request: httpx.Request) -> dict[str, Any]:
        for op in body["ops"]:
            if op["envelope"] is not None:
                op["envelope"], op["own"] = None, True
        return body

    wire.rewrite = claim_own_and_withhold
    with pytest.raises(ProofError) as caught:
        await laptop.sync()
    assert caught.value.code is Code.PROOF_INVALID
    assert "phone-secret-edit" not in laptop.doc(space, "kv").get("kv", type=pycrdt.Map)

    def claim_own_once(body: dict[str, Any], request: httpx.Request) -> dict[str, Any]:
        # Only while the device asks for omissions: asked again in full, it
        # gets the op, verifies it and applies it.
        return claim_own_and_withhold(body, request) if "omit_own=true" in str(
            request.url) else body

    wire.rewrite = claim_own_once
    await laptop.sync()
    assert laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["phone-secret-edit"] == "1"
    await laptop.close()
    await phone.close()


async def test_an_own_entry_whose_leaf_hash_is_not_the_devices_op_is_refused(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, phone, space, wire = await _pair(relay, tmp_path)

    def wrong_leaf(body: dict[str, Any], request: httpx.Request) -> dict[str, Any]:
        for op in body["ops"]:
            if op.get("own"):
                op["leaf_hash"] = op["op_id"]  # 32 bytes, not the leaf hash
        return body

    wire.rewrite = wrong_leaf
    _edit(laptop, space, "mine", "1")
    with pytest.raises(ProofError):
        await laptop.sync()
    wire.rewrite = None
    await laptop.sync()
    await phone.sync()
    assert phone.doc(space, "kv").get("kv", type=pycrdt.Map)["mine"] == "1"
    await laptop.close()
    await phone.close()
