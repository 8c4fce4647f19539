"""A space of tens of MiB built from ordinary-size edits (issue 13 item 3).

About 24 MiB in one document, written as 400 KB values (each op within the
relay's limits): the writer keeps working after closing and reopening its home
(the state is stored in pieces of at most 512 KiB, and a small edit does not
rewrite them), a device that replays the log converges, a chunked snapshot
carries the whole state (no single request or blob holds it), a new device
starts from it, and a device holding the log corroborates it. The benchmark in
bench/cold_start.py shows the same at 50 and 100 MiB with timings.
"""

from __future__ import annotations

from pathlib import Path

import pycrdt
from clientkit import PASS, InProcessRelay

from sddsf.client.device import DOC_PIECE, Device, doc_id_for
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS
from sddsf.protocol.snapshot import (
    CORROBORATED_SNAPSHOT_DOC,
    SPACE_SNAPSHOT_DOC,
    snapshot_claims,
)

VALUE_BYTES = 400_000
VALUES = 63  # ~24 MiB


def value(i: int) -> str:
    return f"{i:04d}" + chr(ord("a") + i % 26) * (VALUE_BYTES - 4)


def kv(dev: Device, space: bytes) -> dict[str, object]:
    return dict(dev.doc(space, "kv").get("kv", type=pycrdt.Map))


async def test_a_24_mib_document_from_400_kb_edits(relay: InProcessRelay,
                                                    tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    laptop.snapshot_every = 0
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    phone.check_every = 0
    await laptop.sync()
    await phone.sync()
    m = laptop.doc(space, "kv").get("kv", type=pycrdt.Map)
    for i in range(VALUES):
        m[f"v{i}"] = value(i)
        laptop.flush()
        await laptop.sync()  # one op per push: each within one relay request
        relay.clock.now += 2_000  # an edit every two seconds (within the rate limits)
    expected = {f"v{i}": value(i) for i in range(VALUES)}
    state_size = len(laptop.doc(space, "kv").get_update())
    assert state_size > 24_000_000

    # Stored in pieces: no local row holds the document, and it reopens.
    await laptop.close()
    laptop = Device.open(tmp_path / "laptop", passphrase=lambda: PASS,
                         transport=relay.transport(), clock=relay.clock)
    laptop.snapshot_every = 0
    doc_id = doc_id_for(space, "kv")
    row = laptop._doc_row(space, doc_id)
    assert row is not None and row["pieces"] == -(-row["size"] // DOC_PIECE) > 40
    assert laptop.store.stored_bytes("doc", space + doc_id) < 1024
    assert laptop.store.stored_bytes("docpiece", space + doc_id) < row["size"] + 80 * 40
    assert kv(laptop, space) == expected

    # A small edit is appended; the pieces are not rewritten for it.
    appended = laptop.store.count("docupd", space + doc_id)
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["small"] = "edit"
    await laptop.sync()
    assert laptop._doc_row(space, doc_id) == row
    assert laptop.store.count("docupd", space + doc_id) == appended + 1
    expected["small"] = "edit"

    # A device holding the log converges.
    await phone.sync()
    assert kv(phone, space) == expected

    # One chunked snapshot carries the whole state.
    assert await laptop.snapshot(space) is not None
    stored = await relay.storage.get_snapshot(space, SPACE_SNAPSHOT_DOC)
    assert stored is not None
    claims = snapshot_claims(stored[1])
    assert claims.author == laptop.device_id and len(claims.chunk_ids) >= 46
    assert len(stored[1]) < DEFAULT_PROTOCOL_LIMITS.max_snapshot
    # The phone recomputes it from its log and attests it: it is corroborated.
    await phone.sync()
    copy = await relay.storage.get_snapshot(space, CORROBORATED_SNAPSHOT_DOC)
    assert copy is not None and copy[1] == stored[1]

    # A new device starts from it (and stores it in pieces too).
    tablet = await relay.add(laptop, tmp_path / "tablet", "tablet")
    report = await tablet.sync()
    assert report.snapshots_loaded == 1 and report.pulled < 5
    assert kv(tablet, space) == expected
    tablet_row = tablet._doc_row(space, doc_id)
    assert tablet_row is not None and tablet_row["pieces"] > 40
    for dev in (laptop, phone, tablet):
        await dev.close()
