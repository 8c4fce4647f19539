"""THREATS #26: version and suite downgrade, end to end, with one policy on the
relay and on the clients.

Unit tests refuse each structure's unknown versions, suites and
"ignore if unsupported" fields at decode time (tests/unit/test_envelope.py,
test_registry.py, test_keypackage.py, test_treehead.py, test_snapshot.py, and
the Keybase-style negative vectors in tests/vectors/). Here an attacker holds a
device key, so every variant is *correctly signed and encrypted* and its only
defect is the version, suite or flag it claims:

* the relay refuses each with its specific code, stores nothing, and still
  accepts the honest op of the same batch;
* a relay that serves such an op to a device (re-signing its tree head) is
  refused by the device with the same code, and nothing is applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest
from relaykit import Clock, World, client_for, make_app

from sddsf.client.device import Device
from sddsf.crypto import aead_encrypt
from sddsf.errors import ProofError
from sddsf.protocol import labels
from sddsf.protocol.encoding import encode
from sddsf.protocol.envelope import FORMAT_VERSION, OpEnvelope, decode_envelope, derive_doc_key
from sddsf.protocol.identity import DeviceKeys
from sddsf.protocol.labels import labelled, tagged_hash
from sddsf.relay.storage.base import RelayStorage
from sddsf.testing.malicious_relay import MaliciousRelay, Rewrite

Header = dict[str, Any]

#: name -> (change to the header map, outer version, expected code)
VARIANTS: dict[str, tuple[Callable[[Header], Header], int, str]] = {
    "outer version 2": (lambda h: h, 2, "unsupported_version"),
    "outer version 0": (lambda h: h, 0, "unsupported_version"),
    "header version 3": (lambda h: {**h, "v": 3}, FORMAT_VERSION, "unsupported_version"),
    "suite 0": (lambda h: {**h, "suite": 0}, FORMAT_VERSION, "unsupported_suite"),
    "suite 2": (lambda h: {**h, "suite": 2}, FORMAT_VERSION, "unsupported_suite"),
    "ignore_if_unsupported flag": (lambda h: {**h, "ignore_if_unsupported": True},
                                   FORMAT_VERSION, "malformed"),
    "flags field": (lambda h: {**h, "flags": 1}, FORMAT_VERSION, "malformed"),
}


def downgraded(genuine: OpEnvelope, signer: DeviceKeys, epoch_key: bytes, name: str,
               plaintext: bytes) -> bytes:
    """``genuine``'s op re-made with the variant's header, properly encrypted under
    the epoch key and signed by the device: only the claimed format is wrong."""
    change, outer, _ = VARIANTS[name]
    h = genuine.header
    header_bytes = encode(change(h.to_wire()))
    key = derive_doc_key(epoch_key, h.space, h.doc, h.epoch)
    ciphertext = aead_encrypt(key, h.nonce, plaintext, labelled(labels.OP_AD, header_bytes))
    signature = signer.sign(labelled(labels.OP_SIG, header_bytes,
                                     tagged_hash(labels.OP_CIPHERTEXT, ciphertext)))
    return encode([outer, header_bytes, ciphertext, signature])


async def test_relay_refuses_every_signed_downgrade(sqlite_storage: RelayStorage) -> None:
    clock = Clock()
    app = make_app(sqlite_storage, clock)
    world = World()
    c = client_for(app, world, 0, clock)
    await c.create_account(world.entries[0])
    await c.create_space(world.space, world.key_package())
    honest = []
    for name, (_, _, code) in VARIANTS.items():
        genuine = world.op(0, text=b"genuine", record=False)
        bad = downgraded(genuine, world.devices[0], world.epoch_keys[0], name, b"downgraded")
        honest.append(world.op(0, text=name.encode()))
        results, _ = await c.upload(world.space, [bad, honest[-1].raw])
        assert [(r.status, r.code) for r in results] == [("rejected", code),
                                                         ("accepted", None)], name
    pulled, _ = await c.pull(world.space)
    assert [p.envelope for p in pulled] == [op.raw for op in honest]


async def test_device_refuses_every_signed_downgrade_served_by_the_relay(
        sqlite_storage: RelayStorage, tmp_path: Path) -> None:
    app = make_app(sqlite_storage, Clock(time.time_ns() // 1_000_000))
    harness = MaliciousRelay(httpx.ASGITransport(app=app))
    laptop, _ = await Device.create_account(tmp_path / "laptop", "http://relay.test",
                                            "laptop", passphrase=None,
                                            insecure_plaintext=True, transport=harness)
    space = await laptop.create_space("notes")
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["a"] = "1"
    await laptop.sync()
    phone = await Device.add_local(laptop, tmp_path / "phone", "phone", passphrase=None,
                                   insecure_plaintext=True, transport=harness)
    await laptop.sync()
    log = await harness.log(space)
    genuine = decode_envelope(log[-1].envelope or b"")
    epoch_key = laptop._epoch_keys(space)[genuine.header.epoch]
    body = encode({"n": "kv", "u": []})
    for name, (_, _, code) in VARIANTS.items():
        bad = downgraded(genuine, laptop.keys, epoch_key, name, body)
        harness.set_attack(Rewrite(len(log) - 1, envelope=bad, resign=True),
                           victims={phone.device_id}, spaces={space})
        with pytest.raises(ProofError) as info:
            await phone.sync()
        assert f"[{code}]" in info.value.message, (name, info.value)
        assert phone.verified_size(space) == 0  # nothing of the lying pull was applied
    harness.honest()
    await phone.sync()
    assert dict(phone.doc(space, "kv").get("kv", type=pycrdt.Map)) == {"a": "1"}
    await laptop.close()
    await phone.close()
