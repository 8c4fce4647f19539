"""Ops carried device to device (protocol 23) judged by the engine's own rules:
applied in chain order, forged or foreign ops refused, served to peers that lack
them, carried to the relay by another device, never applied twice."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pycrdt
from clientkit import InProcessRelay

from sddsf.client.device import Device
from sddsf.errors import Code
from sddsf.protocol import p2p
from sddsf.protocol.envelope import decode_envelope, seal_op


def text(dev: Device, space: bytes) -> str:
    return str(dev.doc(space, "t").get("t", type=pycrdt.Text))


def edit(dev: Device, space: bytes, s: str) -> None:
    t = dev.doc(space, "t").get("t", type=pycrdt.Text)
    t.insert(len(str(t)), s)
    dev.flush()


async def pair(relay: InProcessRelay, tmp_path: Path) -> tuple[Device, Device, bytes]:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await laptop.sync()
    await phone.sync()
    return laptop, phone, space


async def test_ops_from_a_peer_apply_in_chain_order(relay: InProcessRelay,
                                                     tmp_path: Path) -> None:
    laptop, phone, space = await pair(relay, tmp_path)
    edit(laptop, space, "a")
    edit(laptop, space, "b")
    first, second = [raw for _, raw in laptop.engine.mesh.outgoing(space)]
    report = phone.engine.mesh.accept(space, [second])
    assert (report.applied, report.waiting) == (0, 1)  # seq n+1 waits for seq n
    assert text(phone, space) == ""
    report = phone.engine.mesh.accept(space, [first])
    assert (report.applied, report.waiting) == (2, 0)
    assert text(phone, space) == "ab"
    again = phone.engine.mesh.accept(space, [first, second])
    assert (again.applied, again.known) == (0, 2)
    # The relay's log later holds them: the pull does not apply them twice and
    # forgets what it carried.
    await laptop.sync()
    report_pull = await phone.sync()
    assert report_pull.applied == 0 and text(phone, space) == "ab"
    assert phone.store.count("pop", space) == phone.store.count("papplied", space) == 0
    await laptop.close()
    await phone.close()


async def test_forged_and_foreign_ops_are_refused(relay: InProcessRelay,
                                                  tmp_path: Path) -> None:
    laptop, phone, space = await pair(relay, tmp_path)
    edit(laptop, space, "x")
    ((_, raw),) = laptop.engine.mesh.outgoing(space)
    forged = raw[:-1] + bytes([raw[-1] ^ 1])  # the signature's last byte
    report = phone.engine.mesh.accept(space, [forged])
    assert [c for c, _ in report.refused] == [Code.SIG_INVALID.value]
    assert report.blamed == {laptop.device_id} and text(phone, space) == ""
    # A device of another account (a valid key, not in this registry).
    other, _ = await relay.new_account(tmp_path / "other", "other")
    own_space = await other.create_space("mine")
    edit(other, own_space, "intruder")
    alien = other.engine.mesh.outgoing(own_space)[-1][1]
    report = phone.engine.mesh.accept(space, [alien])
    assert [c for c, _ in report.refused] == [Code.WRONG_CONTEXT.value]
    # Signed by that device for this space (it guessed the id; it holds no key).
    header = dataclasses.replace(decode_envelope(raw).header, author=other.device_id)
    intruder = seal_op(other.keys, header, b"\xa0", bytes(32)).raw
    report = phone.engine.mesh.accept(space, [intruder])
    assert [c for c, _ in report.refused] == [Code.UNKNOWN_DEVICE.value]
    assert text(phone, space) == ""
    for dev in (laptop, phone, other):
        await dev.close()


async def test_catch_up_serves_what_the_asker_lacks(relay: InProcessRelay,
                                                    tmp_path: Path) -> None:
    laptop, phone, space = await pair(relay, tmp_path)
    edit(laptop, space, "logged ")
    await laptop.sync()  # in the log, then more edits that are not
    edit(laptop, space, "one ")
    edit(laptop, space, "two")
    req = phone.engine.mesh.request(space)
    resp = p2p.decode_response(p2p.encode_response(
        laptop.engine.mesh.respond(p2p.decode_request(p2p.encode_request(req)),
                                   phone.device_id)))
    assert len(resp.ops) == 3 and not resp.more
    report = phone.engine.mesh.accept(space, resp.ops)
    assert report.applied == 3 and text(phone, space) == "logged one two"
    # Asked again with the new heads: nothing more.
    resp = laptop.engine.mesh.respond(phone.engine.mesh.request(space), phone.device_id)
    assert resp.ops == ()
    # A device of another account is served nothing.
    other, _ = await relay.new_account(tmp_path / "other", "other")
    try:
        laptop.engine.mesh.respond(req, other.device_id)
        raise AssertionError("served an outsider")
    except Exception as exc:
        assert getattr(exc, "code", None) is Code.NOT_AUTHORIZED
    for dev in (laptop, phone, other):
        await dev.close()


async def test_a_peer_carries_ops_to_the_relay(relay: InProcessRelay,
                                               tmp_path: Path) -> None:
    laptop, phone, space = await pair(relay, tmp_path)
    tablet = await relay.add(laptop, tmp_path / "tablet", "tablet")
    await tablet.sync()
    edit(laptop, space, "written offline")  # the laptop never reaches the relay again
    phone.engine.mesh.accept(space, [r for _, r in laptop.engine.mesh.outgoing(space)])
    report = await phone.sync()
    assert report.carried == 1
    await tablet.sync()
    assert text(tablet, space) == "written offline"
    # The author's own push later is an idempotent duplicate.
    report = await laptop.sync()
    assert report.rejected == [] and laptop.pending_count() == 0
    for dev in (laptop, phone, tablet):
        await dev.close()


async def test_registry_entries_from_a_peer_cut_a_revoked_device(relay: InProcessRelay,
                                                                 tmp_path: Path) -> None:
    laptop, phone, space = await pair(relay, tmp_path)
    tablet = await relay.add(laptop, tmp_path / "tablet", "tablet")
    await tablet.sync()
    await phone.sync()
    await laptop.revoke(tablet.device_id, "lost")
    await laptop.sync()
    # The phone has not reached the relay: the laptop's catch-up answer carries
    # the revocation, signed, so the phone verifies it without the relay.
    req = phone.engine.mesh.request(space)
    resp = laptop.engine.mesh.respond(req, phone.device_id)
    assert resp.registry
    assert phone.engine.mesh.accept_registry(req.registry_seq + 1, resp.registry)
    assert not phone.registry().is_active(tablet.device_id)
    # A forged entry is refused and nothing is stored.
    seq = phone.registry().seq
    bad = resp.registry[-1][:-1] + bytes([resp.registry[-1][-1] ^ 1])
    try:
        phone.engine.mesh.accept_registry(seq, [bad])
    except Exception as exc:
        assert getattr(exc, "code", None) is not None
    assert phone.registry().seq == seq
    for dev in (laptop, phone, tablet):
        await dev.close()
