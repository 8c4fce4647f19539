"""Snapshots end to end: a device writes a signed encrypted snapshot, the relay
prunes under it, and a new device starts from snapshot + tail, verified
against the relay's signed root; a bad snapshot is caught."""

from __future__ import annotations

from pathlib import Path

import pycrdt
import pytest
from clientkit import InProcessRelay

from sddsf.client.device import Device
from sddsf.crypto import random_bytes
from sddsf.errors import Code, ProofError, UsageError
from sddsf.protocol import merkle
from sddsf.protocol.snapshot import (
    CORROBORATED_SNAPSHOT_DOC,
    SPACE_SNAPSHOT_DOC,
    decode_snapshot,
    seal_snapshot,
)

Relay = InProcessRelay




def kv(dev: Device, space: bytes) -> dict[str, object]:
    return dict(dev.doc(space, "kv").get("kv", type=pycrdt.Map))


async def edit(dev: Device, space: bytes, n: int, prefix: str) -> None:
    m = dev.doc(space, "kv").get("kv", type=pycrdt.Map)
    for i in range(n):
        m[f"{prefix}{i}"] = i
        dev.flush()
    await dev.sync()


async def written_history(relay: Relay, tmp_path: Path,
                          every: int = 10) -> tuple[Device, bytes, Device]:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    laptop.snapshot_every = every
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await laptop.sync()
    await edit(laptop, space, 25, "a")
    return laptop, space, phone


async def test_new_device_starts_from_snapshot_and_converges(relay: Relay,
                                                             tmp_path: Path) -> None:
    laptop, space, phone = await written_history(relay, tmp_path)
    stored = await relay.storage.get_snapshot(space, SPACE_SNAPSHOT_DOC)
    assert stored is not None
    covers, blob = stored
    _, author, size = decode_snapshot(blob)
    assert author == laptop.device_id and size == covers + 1 >= 10
    report = await phone.sync()
    assert report.snapshots_loaded == 1
    log_size = report.tree_size[space]
    assert report.pulled == log_size - size < log_size  # only the tail was pulled
    assert kv(phone, space) == kv(laptop, space) and len(kv(phone, space)) == 25
    assert phone.space_by_name("notes") == space
    # The device keeps only a frontier for the history before the snapshot.
    tree = phone._verified_tree(space)
    assert tree.base == size and tree.size == log_size
    # It keeps syncing both ways, also after reopening its home.
    await edit(phone, space, 3, "p")
    await phone.close()
    phone = Device.open(tmp_path / "phone", passphrase=lambda: "correct horse battery staple",
                        transport=relay.transport(), clock=relay.clock)
    assert phone._verified_tree(space).base == size
    await laptop.sync()
    await edit(laptop, space, 2, "b")
    await phone.sync()
    assert kv(phone, space) == kv(laptop, space) and len(kv(laptop, space)) == 30
    await laptop.close()
    await phone.close()


async def test_pruned_history_is_only_readable_through_the_snapshot(relay: Relay,
                                                                    tmp_path: Path) -> None:
    laptop, space, phone = await written_history(relay, tmp_path)
    # The phone replays the log, so it can corroborate the laptop's snapshot: the
    # relay prunes only under a snapshot another device attested (18.7).
    phone.use_snapshots = False
    await phone.sync()  # checks and attests the snapshot, and acknowledges
    await laptop.sync()
    await laptop.relay.acknowledge(space, phone._verified_tree(space).size - 1)
    _, pruned = await phone.relay.acknowledge(space, phone._verified_tree(space).size - 1)
    assert pruned > 1  # the relay dropped envelopes the snapshot covers
    ops = await relay.storage.read_ops(space, -1, 1)
    assert ops[0].envelope is None
    # A device that insists on replaying every op cannot: the envelopes are gone.
    tablet = await relay.add(laptop, tmp_path / "tablet", "tablet")
    tablet.use_snapshots = False
    with pytest.raises(ProofError, match="withheld"):
        await tablet.sync()
    tablet.use_snapshots = True
    report = await tablet.sync()
    assert report.snapshots_loaded == 1
    assert kv(tablet, space) == kv(laptop, space)
    for dev in (laptop, phone, tablet):
        await dev.close()


async def test_tampered_snapshot_is_refused_and_nothing_is_applied(relay: Relay,
                                                                   tmp_path: Path) -> None:
    laptop, space, phone = await written_history(relay, tmp_path)
    stored = await relay.storage.get_snapshot(space, SPACE_SNAPSHOT_DOC)
    assert stored is not None
    covers, blob = stored
    bad = bytearray(blob)
    bad[-70] ^= 1  # inside the body (the signature is the last 64 bytes)
    await relay.storage.put_snapshot(space, SPACE_SNAPSHOT_DOC, covers + 1, bytes(bad), 0)
    with pytest.raises(ProofError, match="snapshot that fails verification"):
        await phone.sync()
    assert phone.store.scan("leaf", space) == [] and phone.store.get("base", space) is None
    await laptop.close()
    await phone.close()


async def test_snapshot_whose_frontier_the_log_does_not_extend_is_refused(
        relay: Relay, tmp_path: Path) -> None:
    # Signed by a real device, but its frontier is not the relay's log: the tail
    # cannot reproduce the signed root, so the device refuses it.
    laptop, space, phone = await written_history(relay, tmp_path, every=0)
    keys = laptop._keys_cached(space)
    fake = merkle.Frontier()
    for _ in range(5):
        fake.append(random_bytes(32))
    blob = seal_snapshot(laptop.keys, space=space, epoch=max(keys), epoch_key=keys[max(keys)],
                         size=5, frontier=fake, chains={}, docs={"kv": b"\x00\x00"},
                         ts_ms=relay.clock(), nonce=random_bytes(24))
    await relay.storage.put_snapshot(space, SPACE_SNAPSHOT_DOC, 4, blob, 0)
    with pytest.raises(ProofError) as err:
        await phone.sync()
    assert err.value.code is Code.PROOF_INVALID
    assert phone.store.get("base", space) is None and kv(phone, space) == {}
    await laptop.close()
    await phone.close()


async def test_snapshot_of_a_revoked_device_is_not_trusted(relay: Relay,
                                                           tmp_path: Path) -> None:
    laptop, space, phone = await written_history(relay, tmp_path)
    stored = await relay.storage.get_snapshot(space, SPACE_SNAPSHOT_DOC)
    assert stored is not None
    laptop_blob = stored[1]
    await phone.sync()
    # Revoking writes a fresh snapshot: the revoked device's is no longer trusted.
    await phone.revoke(laptop.device_id, "lost")
    stored = await relay.storage.get_snapshot(space, SPACE_SNAPSHOT_DOC)
    assert stored is not None and decode_snapshot(stored[1])[1] == phone.device_id
    tablet = await relay.add(phone, tmp_path / "tablet", "tablet")
    report = await tablet.sync()
    assert report.snapshots_loaded == 1
    assert kv(tablet, space) == kv(phone, space) and len(kv(tablet, space)) == 25
    # Every active device acknowledged: the history under the corroborated
    # snapshot (the laptop's, which the phone re-derived from the log and
    # attested when it revoked the laptop) is pruned.
    assert decode_snapshot(laptop_blob)[1] == laptop.device_id
    size = tablet._verified_tree(space).size
    await phone.sync()
    for dev in (phone, tablet):
        await dev.relay.acknowledge(space, size - 1)
    assert (await relay.storage.read_ops(space, -1, 1))[0].envelope is None
    # A relay that serves a snapshot of the revoked device that no trusted device
    # corroborated (one it signs with the keys it kept) gets nowhere: the new
    # device ignores it and cannot replay pruned history.
    keys = laptop._keys_cached(space)
    uncorroborated = seal_snapshot(
        laptop.keys, space=space, epoch=max(keys), epoch_key=keys[max(keys)], size=size,
        frontier=tablet._verified_tree(space).frontier(), chains={}, docs={"kv": b"\x00\x00"},
        ts_ms=relay.clock(), nonce=random_bytes(24))
    for doc in (SPACE_SNAPSHOT_DOC, CORROBORATED_SNAPSHOT_DOC):
        await relay.storage.put_snapshot(space, doc, size - 1, uncorroborated, 0)
    watch = await relay.add(phone, tmp_path / "watch", "watch")
    with pytest.raises(ProofError, match="withheld"):
        await watch.sync()
    assert kv(watch, space) == {}
    for dev in (laptop, phone, tablet, watch):
        await dev.close()


async def test_no_snapshot_while_local_edits_are_pending(relay: Relay, tmp_path: Path) -> None:
    laptop, space, phone = await written_history(relay, tmp_path, every=0)
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["x"] = 1
    assert await laptop.snapshot(space) is None  # buffered edit, not in the log
    laptop.flush()
    assert await laptop.snapshot(space) is None  # pending op, not in the log
    await laptop.sync()
    size = await laptop.snapshot(space)
    assert size == laptop._verified_tree(space).size
    await laptop.close()
    await phone.close()


async def test_document_names_are_bounded(relay: Relay, tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    with pytest.raises(UsageError, match="1 to 256"):
        laptop.doc(space, "n" * 257)
    with pytest.raises(UsageError):
        laptop.doc(space, "")
    laptop.doc(space, "n" * 256).get("kv", type=pycrdt.Map)["k"] = 1
    await laptop.sync()
    assert await laptop.snapshot(space) is not None
    await laptop.close()


@pytest.mark.parametrize("pruned", [False, True], ids=["log kept", "log pruned"])
async def test_a_corroborated_start_is_kept_while_someone_who_vouched_is_trusted(
        relay: Relay, tmp_path: Path, pruned: bool) -> None:
    # The tablet starts from the laptop's snapshot, which the phone (holding the
    # log) corroborated. Revoking the laptop leaves it vouched for by the phone.
    # Once the phone is revoked too, nothing trusted vouches for it any more:
    # the tablet re-derives the space from the log if the relay still holds it
    # (nobody acknowledged); if the history was pruned under that snapshot, it
    # is the only record (what a new device would start from too) and is kept
    # (protocol 18.7).
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    laptop.snapshot_every = 0
    phone.check_every = 0
    for dev in (laptop, phone):
        dev.ack_every = 256 if pruned else 0
    await laptop.sync()
    await phone.sync()
    await edit(laptop, space, 12, "a")
    assert await laptop.snapshot(space) is not None
    await phone.sync()  # recomputes and attests the laptop's snapshot
    await laptop.sync()
    assert (await relay.storage.read_ops(space, -1, 1))[0].envelope is None or not pruned
    tablet = await relay.add(laptop, tmp_path / "tablet", "tablet")
    tablet.ack_every = 0
    assert (await tablet.sync()).snapshots_loaded == 1
    assert tablet._grounded(space)
    await phone.revoke(laptop.device_id, "lost")
    report = await tablet.sync()
    assert tablet._grounded(space) and space not in report.rederived
    await tablet.revoke(phone.device_id, "lost too")
    await tablet.sync()
    assert tablet._grounded(space)
    # Replayed (no snapshot base) when it could; else still on the laptop's.
    assert (tablet.store.get("base", space) is None) is not pruned
    assert kv(tablet, space) == {f"a{i}": i for i in range(12)}
    assert not tablet.alerts  # the re-derived documents are the same
    for dev in (laptop, phone, tablet):
        await dev.close()
