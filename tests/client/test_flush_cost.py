"""What ``Device.flush`` skips to cost less per op (issue 18, "Client") keeps
every op exactly as before: the header-size bound that spares the trial
encoding of a header holds for the largest header, and the other authors'
chain heads (``deps``), read once per space, are read again after a sync
verifies more of them."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pycrdt
import pytest
from clientkit import InProcessRelay, passphrase

from sddsf.client import yupdates
from sddsf.client.device import Device
from sddsf.client.engine.common import MAX_BATCH
from sddsf.client.engine.outbox import header_bound
from sddsf.client.engine.push import upload_batches
from sddsf.client.transport.base import RelayLimits
from sddsf.protocol.clock import HLCTimestamp
from sddsf.protocol.encoding import encode
from sddsf.protocol.envelope import OpHeader, TreeHeadRef, decode_envelope
from sddsf.protocol.vv import VersionVector

URL = "http://relay.test"  # the in-process relay (clientkit)
_MAX = (1 << 64) - 1


def test_header_bound_holds_for_the_largest_header() -> None:
    for authors in (0, 1, 40):
        deps = VersionVector({bytes([i]) * 32: _MAX for i in range(authors)})
        header = OpHeader(space=b"s" * 16, doc=b"d" * 16, author=b"a" * 32, seq=_MAX,
                          prev=b"p" * 32, deps=deps, epoch=_MAX,
                          ts=HLCTimestamp(_MAX, _MAX), seen=TreeHeadRef(_MAX, b"r" * 32),
                          nonce=b"n" * 24, reg=_MAX)
        assert len(encode(header.to_wire())) <= header_bound(header)


def _pending_deps(device: Device, space: bytes) -> list[dict[bytes, int]]:
    rows = device.engine.store.scan("pending", space)
    return [dict(decode_envelope(raw).header.deps) for _, raw in rows]


async def _laptop_and_phone(relay: InProcessRelay,
                            tmp_path: Path) -> tuple[Device, Device, bytes]:
    """A new account's laptop with a space "notes", and its phone; both synced."""
    laptop, _ = await Device.create_account(tmp_path / "laptop", URL, "laptop",
                                            passphrase=passphrase, transport=relay.transport())
    space = await laptop.create_space("notes")
    phone = await Device.add_local(laptop, tmp_path / "phone", "phone", passphrase=passphrase,
                                   transport=relay.transport())
    await laptop.sync()
    await phone.sync()
    return laptop, phone, space


async def test_deps_follow_the_chains_a_sync_verifies(relay: InProcessRelay,
                                                      tmp_path: Path) -> None:
    laptop, phone, space = await _laptop_and_phone(relay, tmp_path)
    laptop_kv = laptop.doc(space, "kv").get("kv", type=pycrdt.Map)
    laptop_kv["a"] = "1"
    laptop.flush()  # reads (and keeps) the deps: the phone has written nothing here yet
    assert phone.device_id not in _pending_deps(laptop, space)[-1]
    await laptop.sync()

    phone_kv = phone.doc(space, "kv").get("kv", type=pycrdt.Map)
    for i in range(3):
        phone_kv[f"p{i}"] = str(i)
        phone.flush()
    await phone.sync()
    await laptop.sync()  # verifies the phone's chain up to its third op

    laptop_kv["b"] = "2"
    laptop.flush()
    assert _pending_deps(laptop, space)[-1][phone.device_id] == 3
    await laptop.close()
    await phone.close()


def _epochs_by(device: Device, space: bytes, author: bytes) -> list[int]:
    """The epochs of ``author``'s ops in ``device``'s copy of the log."""
    rows = device.engine.store.scan("op", space)
    return [env.header.epoch for env in (decode_envelope(raw) for _, raw in rows)
            if env.header.author == author]


async def test_a_pending_op_under_an_epoch_revoked_since_is_sealed_again(
        relay: InProcessRelay, tmp_path: Path) -> None:
    # hold_compromised_pending decodes the pending ops only when some epoch is
    # compromised: here one is, and the op queued under it is never pushed.
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    await laptop.sync()
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    tablet = await relay.add(laptop, tmp_path / "tablet", "tablet")
    for d in (laptop, phone, tablet):
        await d.sync()
    tablet.doc(space, "kv").get("kv", type=pycrdt.Map)["from tablet"] = "queued"
    tablet.flush()  # sealed under the current epoch, which the phone holds
    queued_under = decode_envelope(tablet.engine.store.scan("pending", space)[0][1]).header.epoch
    await laptop.revoke(phone.device_id, "lost")
    await laptop.sync()  # a new epoch the phone cannot read
    report = await tablet.sync()
    assert report.rejected == []  # never pushed under the old epoch (not refused after)
    await laptop.sync()
    assert dict(laptop.doc(space, "kv").get("kv", type=pycrdt.Map)) == {"from tablet": "queued"}
    assert _epochs_by(laptop, space, tablet.device_id)
    assert all(e > queued_under for e in _epochs_by(laptop, space, tablet.device_id))
    for d in (laptop, phone, tablet):
        await d.close()


async def test_a_chain_head_adopted_from_the_log_is_the_next_ops_prev(
        relay: InProcessRelay, tmp_path: Path) -> None:
    # The outbox keeps its chain head between flushes; when a sync adopts a later
    # head of this device from the log (another copy of the home wrote it), the
    # next op follows that head instead of forking the chain (chain_fork).
    laptop, _ = await Device.create_account(tmp_path / "laptop", URL, "laptop",
                                            passphrase=passphrase, transport=relay.transport())
    space = await laptop.create_space("notes")
    await laptop.sync()
    await laptop.close()
    shutil.copytree(tmp_path / "laptop", tmp_path / "copy")
    laptop = Device.open(tmp_path / "laptop", passphrase=passphrase,
                         transport=relay.transport())
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["laptop"] = "1"
    laptop.flush()
    await laptop.sync()

    copy = Device.open(tmp_path / "copy", passphrase=passphrase, transport=relay.transport())
    await copy.sync()  # adopts the laptop's op as its own chain head
    copy.doc(space, "kv").get("kv", type=pycrdt.Map)["copy"] = "2"
    await copy.sync()
    await copy.close()

    await laptop.sync()  # adopts the copy's op
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["laptop again"] = "3"
    laptop.flush()
    report = await laptop.sync()
    assert report.rejected == []
    assert dict(laptop.doc(space, "kv").get("kv", type=pycrdt.Map)) == {
        "laptop": "1", "copy": "2", "laptop again": "3"}
    await laptop.close()


async def test_a_sealed_op_is_pulled_back_without_decoding_it_again(
        relay: InProcessRelay, tmp_path: Path) -> None:
    # The envelope decoded when the op was sealed stands for the same bytes
    # only: other bytes (as a relay could serve) are decoded and checked.
    laptop, _ = await Device.create_account(tmp_path / "laptop", URL, "laptop",
                                            passphrase=passphrase, transport=relay.transport())
    space = await laptop.create_space("notes")
    await laptop.sync()
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["k"] = "v"
    laptop.flush()
    raw = laptop.engine.store.scan("pending", space)[-1][1]
    outbox = laptop.engine.outbox
    assert outbox.sealed_envelope(raw[:-1] + bytes([raw[-1] ^ 1])) is None
    kept = outbox.sealed_envelope(raw)
    assert kept is not None and kept == decode_envelope(raw) and kept.raw == raw
    assert outbox.sealed_envelope(raw) is None  # taken once

    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["k2"] = "v2"
    laptop.flush()
    await laptop.sync()
    await laptop.sync()  # pulls both ops back: one decoded again, one taken as sealed
    reopened_from = tmp_path / "laptop"
    await laptop.close()
    again = Device.open(reopened_from, passphrase=passphrase, transport=relay.transport())
    await again.sync()
    assert dict(again.doc(space, "kv").get("kv", type=pycrdt.Map)) == {"k": "v", "k2": "v2"}
    assert again.verified_size(space) == len(again.engine.store.scan("leaf", space))
    await again.close()


def _upload_batches_by_request_fits(rows: list[tuple[bytes, bytes]], limits: RelayLimits
                                    ) -> list[tuple[list[bytes], list[bytes]]]:
    """The batches as request_fits cuts them, asked over the whole batch at every op."""
    out: list[tuple[list[bytes], list[bytes]]] = []
    batch: list[tuple[bytes, bytes]] = []
    for i, (key, env) in enumerate(rows):
        if not limits.request_fits([len(env)]):
            if batch:
                out.append(([k for k, _ in batch], []))
            out.append(([], [k for k, _ in rows[i:]]))
            return out
        if len(batch) >= MAX_BATCH or not limits.request_fits(
                [*(len(v) for _, v in batch), len(env)]):
            out.append(([k for k, _ in batch], []))
            batch = []
        batch.append((key, env))
    if batch:
        out.append(([k for k, _ in batch], []))
    return out


def test_upload_batches_cut_as_request_fits_does() -> None:
    rng = random.Random(18)
    for _ in range(300):
        limits = RelayLimits(max_request_bytes=rng.choice([200, 2_000, 20_000, 1 << 20]),
                             max_batch_ops=rng.choice([1, 3, 50, 1000]),
                             max_field_chars=rng.choice([300, 3_000, 1_500_000]))
        rows = [(i.to_bytes(8, "big"), bytes(rng.choice([10, 100, 700, 1_500, 5_000])))
                for i in range(rng.randrange(0, 300))]
        got = [([k for k, _ in b], [k for k, _ in u]) for b, u in upload_batches(rows, limits)]
        assert got == _upload_batches_by_request_fits(rows, limits)


async def test_a_long_window_is_merged_a_few_updates_at_a_time(
        relay: InProcessRelay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pycrdt.merge_updates costs time quadratic in its number of updates (a
    # 20,000-edit window: 1.2 s in one call, 17 ms in calls of FAN_IN): a flush
    # never hands it a whole window at once, and the op still carries every edit.
    laptop, phone, space = await _laptop_and_phone(relay, tmp_path)
    merged_at_once: list[int] = []
    flat = pycrdt.merge_updates

    def spy(*updates: bytes) -> bytes:
        merged_at_once.append(len(updates))
        return flat(*updates)

    monkeypatch.setattr(pycrdt, "merge_updates", spy)
    doc = laptop.doc(space, "text")
    text = doc.get("t", type=pycrdt.Text)
    for i in range(600):  # one transaction, so one buffered update, per edit
        with doc.transaction():
            text.insert(len(text) if i % 5 else 0, "abcdefgh"[i % 8])
    assert laptop.flush() == 1
    assert merged_at_once and max(merged_at_once) <= yupdates.FAN_IN
    await laptop.sync()
    await phone.sync()
    assert str(phone.doc(space, "text").get("t", type=pycrdt.Text)) == str(text)
