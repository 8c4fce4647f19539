"""The audit log detects a relay that drops or rewrites an event: client-side
verification (``sddsf.client.controller.verify_audit``) against the tree heads
the device stored fails with a typed ProofError. The relay is tampered with
where a malicious operator would: its own database rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clientkit import InProcessRelay

from sddsf.client.controller import effective_encryption_policy, verify_audit
from sddsf.client.device import Device
from sddsf.errors import Code, ProofError
from sddsf.protocol import merkle
from sddsf.protocol.audit import AuditKind, build_entry, decode_entry
from sddsf.relay.storage.sqlite import SqliteStorage


@pytest.fixture
async def laptop(relay: InProcessRelay, tmp_path: Path) -> AsyncIterator[Device]:
    device, _ = await relay.new_account(tmp_path / "laptop")
    yield device
    await device.close()


async def sql(relay: InProcessRelay, statement: str, *args: object) -> list[tuple[object, ...]]:
    storage = relay.storage
    assert isinstance(storage, SqliteStorage)
    return await storage._run(lambda c: c.execute(statement, args).fetchall())


async def rewrite(relay: InProcessRelay, account: bytes, seq: int) -> None:
    """Replace entry ``seq`` with another event (leaf hash recomputed: a careful liar)."""
    old = decode_entry(bytes((await sql(relay, "SELECT entry FROM audit_log WHERE "
                                        "account_id = ? AND seq = ?", account, seq))[0][0]))
    forged = build_entry(account, old.ts, AuditKind.SESSION, device=old.device,
                         data={"access": "full", "score": 100})
    await sql(relay, "UPDATE audit_log SET entry = ?, leaf_hash = ? WHERE account_id = ? AND "
              "seq = ?", forged, merkle.leaf_hash(forged), account, seq)


async def test_verification_passes_and_grows(relay: InProcessRelay, laptop: Device,
                                             tmp_path: Path) -> None:
    first = await verify_audit(laptop)
    assert first.size >= 2 and first.own_entries_checked == 1  # its posture, signed by it
    kinds = [e.kind for e in first.entries]
    assert AuditKind.POSTURE in kinds and AuditKind.SESSION in kinds
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await laptop.create_space("notes")
    second = await verify_audit(laptop)
    assert second.size > first.size and second.heads_checked == 1
    kinds = [e.kind for e in second.entries]
    assert AuditKind.DEVICE_ADDED in kinds
    assert (await verify_audit(phone)).size >= second.size
    await laptop.rotate(laptop.space_by_name("notes"))
    assert AuditKind.KEY_ROTATION in [e.kind for e in (await verify_audit(laptop)).entries]
    await phone.close()


async def test_rewritten_event_is_detected(relay: InProcessRelay, laptop: Device) -> None:
    await verify_audit(laptop)  # the device stores the head
    await rewrite(relay, laptop.account.account_id, 1)
    with pytest.raises(ProofError) as caught:
        await verify_audit(laptop)
    assert caught.value.code is Code.PROOF_INVALID
    assert "dropped or rewrote" in caught.value.message


async def test_dropped_event_is_detected(relay: InProcessRelay, laptop: Device) -> None:
    aid = laptop.account.account_id
    size = (await verify_audit(laptop)).size
    await sql(relay, "DELETE FROM audit_log WHERE account_id = ? AND seq = ?", aid, size - 1)
    await sql(relay, "UPDATE audit_heads SET size = size - 1 WHERE account_id = ?", aid)
    with pytest.raises(ProofError) as rollback:
        await verify_audit(laptop)
    assert rollback.value.code is Code.LOG_ROLLBACK
    # hiding the drop behind a new event keeps the size but not the history
    await sql(relay, "UPDATE audit_heads SET size = size + 1 WHERE account_id = ?", aid)
    filler = build_entry(aid, 1, AuditKind.SESSION, data={"access": "full", "score": 100})
    await sql(relay, "INSERT INTO audit_log (account_id, seq, entry, leaf_hash, stored_ms) "
              "VALUES (?, ?, ?, ?, 0)", aid, size - 1, filler, merkle.leaf_hash(filler))
    with pytest.raises(ProofError) as rewritten:
        await verify_audit(laptop)
    assert rewritten.value.code is Code.PROOF_INVALID


async def test_own_event_rewritten_before_any_head_was_stored(relay: InProcessRelay,
                                                             laptop: Device) -> None:
    # the laptop's posture report was logged at its first session; the relay
    # rewrites it before the laptop ever verified the log
    entries = await sql(relay, "SELECT seq, entry FROM audit_log WHERE account_id = ?",
                        laptop.account.account_id)
    [own] = [int(str(q)) for q, e in entries
             if decode_entry(bytes(e)).kind is AuditKind.POSTURE]  # type: ignore[arg-type]
    await rewrite(relay, laptop.account.account_id, own)
    with pytest.raises(ProofError) as caught:
        await verify_audit(laptop)
    assert "this device submitted" in caught.value.message


async def test_forged_device_report_is_refused(relay: InProcessRelay, laptop: Device) -> None:
    aid = laptop.account.account_id
    rows = await sql(relay, "SELECT seq, entry FROM audit_log WHERE account_id = ?", aid)
    [(seq, raw)] = [(int(str(q)), bytes(e)) for q, e in rows  # type: ignore[arg-type]
                    if decode_entry(bytes(e)).kind is AuditKind.POSTURE]  # type: ignore[arg-type]
    entry = decode_entry(raw)
    tampered = entry.report[:-1] + bytes([entry.report[-1] ^ 1])  # its signature
    forged = build_entry(aid, entry.ts, entry.kind, device=entry.device, report=tampered)
    await sql(relay, "UPDATE audit_log SET entry = ?, leaf_hash = ? WHERE account_id = ? AND "
              "seq = ?", forged, merkle.leaf_hash(forged), aid, seq)
    with laptop.store.batch() as b:  # without its receipt, the signature alone catches it
        b.delete("audit", b"own/" + seq.to_bytes(8, "big"))
    with pytest.raises(ProofError) as caught:
        await verify_audit(laptop)
    assert "does not verify" in caught.value.message


async def test_encryption_policy_is_applied_and_never_weakened(laptop: Device) -> None:
    await laptop.sync()
    policy = effective_encryption_policy(laptop)
    assert policy is not None and policy.min_kdf_t == 3 and policy.suites == (1,)
    assert policy.max_epoch_age_s == 90 * 86_400


def _emptied_pages(device: Device, monkeypatch: pytest.MonkeyPatch, *,
                   times: int) -> list[int]:
    """The relay's audit pages served empty ``times`` times (each under the
    head it read after the page); returns the calls made."""
    real = device.relay.audit_page
    calls: list[int] = []

    async def page(start: int, limit: int) -> tuple[list[tuple[int, bytes]], bytes]:
        calls.append(start)
        rows, head = await real(start, limit)
        return ([], head) if len(calls) <= times else (rows, head)

    monkeypatch.setattr(device.relay, "audit_page", page)
    return calls


async def test_events_appended_between_the_page_and_the_head_are_no_proof_failure(
        relay: InProcessRelay, laptop: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    # The relay reads the page, then its head: events recorded between the two
    # give an empty page under a longer head. The device asks again.
    calls = _emptied_pages(laptop, monkeypatch, times=1)
    check = await verify_audit(laptop)
    assert check.size >= 2 and len(calls) == 2


async def test_a_head_over_empty_audit_pages_is_refused(relay: InProcessRelay, laptop: Device,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _emptied_pages(laptop, monkeypatch, times=1_000)
    with pytest.raises(ProofError):
        await verify_audit(laptop)
    assert len(calls) <= 5
