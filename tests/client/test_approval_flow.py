"""k-of-n approval of device changes between real devices and a relay (§9.8),
and the per-space re-encryption policy (lazy / eager) after a revocation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pycrdt
import pytest
from clientkit import InProcessRelay

from sddsf.client.device import Device
from sddsf.errors import AuthorizationError, Code, RegistryError, SddsfError
from sddsf.protocol import registry as reg
from sddsf.protocol.approval import ProposalStatus
from sddsf.protocol.snapshot import SPACE_SNAPSHOT_DOC, decode_snapshot, verify_snapshot

HOUR_MS = 3_600_000


async def three_devices(relay: InProcessRelay, tmp_path: Path,
                        policy: dict[str, bool | int | str]) -> tuple[Device, Device, Device,
                                                                      bytes]:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["pin"] = "1234"
    await laptop.sync()
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    tablet = await relay.add(laptop, tmp_path / "tablet", "tablet")
    assert (await laptop.set_policy(policy)).done  # not yet governed: direct
    for d in (laptop, phone, tablet):
        await d.sync()
    return laptop, phone, tablet, space


def kv(d: Device, space: bytes) -> dict[str, object]:
    return dict(d.doc(space, "kv").get("kv", type=pycrdt.Map))


async def close(*devices: Device) -> None:
    for d in devices:
        await d.close()


async def test_adding_a_device_needs_a_second_approval_and_the_veto_window(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, phone, tablet, space = await three_devices(
        relay, tmp_path, {"approvals": 2, "veto_window_s": 3600})
    watch = await relay.add(laptop, tmp_path / "watch", "watch")
    waiting = watch.awaiting_approval()
    assert waiting is not None and (waiting.have, waiting.need) == (1, 2)
    with pytest.raises(AuthorizationError, match="awaits approval") as err:
        await watch.sync()
    assert err.value.code is Code.NOT_AUTHORIZED
    # The phone approves: enough approvals, but the veto window is still open.
    await phone.refresh_registry()
    pid = phone.governance.find("watch").id
    change = await phone.governance.approve(phone.governance.find(pid.hex()[:8]))
    assert not change.done and change.pending is not None
    assert (change.pending.have, change.pending.need) == (2, 2)
    assert (await tablet.sync()).enacted == 0
    # After the window, the next sync of any device carries it out and opens
    # an epoch that includes the watch, which then reads the space's history.
    relay.clock.now += HOUR_MS
    assert (await tablet.sync()).enacted == 1
    assert tablet.registry().is_active(watch.device_id)
    assert tablet.registry().proposals[pid].status is ProposalStatus.ENACTED
    await watch.sync()
    assert kv(watch, space) == {"pin": "1234"}
    await close(laptop, phone, tablet, watch)


async def test_one_stolen_device_cannot_revoke_the_others(relay: InProcessRelay,
                                                          tmp_path: Path) -> None:
    laptop, phone, tablet, _ = await three_devices(
        relay, tmp_path, {"approvals": 2, "veto_window_s": 3600})
    # The thief holds the laptop: its revocation of the phone is only a proposal.
    change = await laptop.revoke(phone.device_id, "thief")
    assert not change.done and change.pending is not None
    # The target may not veto it, but the tablet does; nothing can enact it then.
    await phone.refresh_registry()
    with pytest.raises(AuthorizationError) as err:
        await phone.governance.veto(phone.governance.find("phone"), "no")
    assert err.value.code is Code.NOT_AUTHORIZED
    await tablet.refresh_registry()
    await tablet.governance.veto(tablet.governance.find("phone"), "not me")
    relay.clock.now += 30 * 24 * HOUR_MS
    for d in (laptop, phone, tablet):
        await d.sync()
    assert laptop.registry().is_active(phone.device_id)
    # A direct revoke entry by the thief is refused by the relay (governed).
    state = await laptop.refresh_registry()
    direct = reg.revoke_device(state, laptop.keys, phone.device_id, "x", relay.clock())
    with pytest.raises(AuthorizationError) as err:
        await laptop.relay.append_registry(laptop.account.account_id, direct)
    assert err.value.code is Code.NOT_AUTHORIZED
    await close(laptop, phone, tablet)


async def test_the_owner_revokes_a_lost_device_with_the_other_remaining_one(
        relay: InProcessRelay, tmp_path: Path) -> None:
    # Three devices, approvals = 2: laptop and tablet agree; the phone (lost)
    # is cut off and cannot read what is written afterwards.
    laptop, phone, tablet, space = await three_devices(
        relay, tmp_path, {"approvals": 2, "veto_window_s": 0})
    change = await laptop.revoke(phone.device_id, "lost")
    assert change.pending is not None and change.pending.need == 2
    await tablet.refresh_registry()
    assert (await tablet.governance.approve(tablet.governance.find("phone"))).done
    with pytest.raises(AuthorizationError) as err:
        await phone.sync()
    assert err.value.code is Code.REVOKED
    await laptop.sync()
    assert phone.device_id not in laptop.registry().active_devices()
    tablet.doc(space, "kv").get("kv", type=pycrdt.Map)["new pin"] = "9876"
    await tablet.sync()
    await laptop.sync()
    assert kv(laptop, space)["new pin"] == "9876"
    await close(laptop, phone, tablet)


async def test_policy_changes_need_approval_and_races_to_enact_are_harmless(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, phone, tablet, _ = await three_devices(relay, tmp_path,
                                                   {"approvals": 2, "veto_window_s": 60})
    change = await phone.set_policy({"approvals": 1})
    assert change.pending is not None and laptop.registry().rules().approvals == 2
    await laptop.refresh_registry()
    pid = laptop.governance.find(change.pending.id_hex[:8]).id
    assert not (await laptop.governance.approve(laptop.governance.find(pid.hex()))).done
    relay.clock.now += 60_000
    # Both enact at once: one wins, the other rebuilds on the new registry,
    # sees the work done and stops. Never an error; exactly one enact entry.
    results = await asyncio.gather(phone.governance.enact(phone.registry().proposals[pid]),
                                   tablet.governance.enact(laptop.registry().proposals[pid]))
    assert results == [True, True]
    state = await tablet.refresh_registry()
    assert state.rules().approvals == 1 and not state.rules().governed
    entries = await tablet.relay.registry(tablet.account.account_id, 0)
    enacts = [e for e in entries if reg.decode_entry(e).type is reg.EntryType.ENACT]
    assert len(enacts) == 1
    await close(laptop, phone, tablet)


async def test_the_relay_bounds_approval_entry_times_by_its_clock(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, phone, tablet, _ = await three_devices(
        relay, tmp_path, {"approvals": 2, "veto_window_s": 3600})
    change = await laptop.revoke(phone.device_id, "thief")
    assert change.pending is not None
    await tablet.refresh_registry()
    pid = change.pending.proposal.id
    state = await tablet.refresh_registry()
    # Dating an approval a day ahead (to skip the veto window) is refused.
    early = reg.approve(state, tablet.keys, pid, relay.clock() + 24 * HOUR_MS)
    with pytest.raises(RegistryError, match="from the relay's clock"):
        await tablet.relay.append_registry(tablet.account.account_id, early)
    await close(laptop, phone, tablet)


@pytest.mark.parametrize("policy", ["lazy", "eager"])
async def test_reencryption_policy_after_a_revocation(relay: InProcessRelay, tmp_path: Path,
                                                      policy: str) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    for i in range(5):
        laptop.doc(space, "kv").get("kv", type=pycrdt.Map)[f"k{i}"] = i
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await laptop.sync()
    assert laptop.space_policy(space) == "lazy"
    laptop.set_space_policy(space, policy)
    await laptop.sync()
    await phone.sync()
    assert phone.space_policy(space) == policy  # synced, encrypted, in the meta doc
    assert await laptop.snapshot(space) is not None
    before = await relay.storage.get_snapshot(space, SPACE_SNAPSHOT_DOC)
    assert before is not None
    assert (await laptop.revoke(phone.device_id, "lost")).done
    after = await relay.storage.get_snapshot(space, SPACE_SNAPSHOT_DOC)
    assert after is not None
    assert decode_snapshot(after[1])[1] == laptop.device_id
    if policy == "eager":  # re-encrypted now (a new nonce and the new epoch's key)
        assert after[1] != before[1]
        with pytest.raises(SddsfError):  # the old epoch key no longer opens it
            verify_snapshot(after[1], registry=laptop.registry(), space=space,
                            epoch_keys={e: k for e, k in laptop._epoch_keys(space).items()
                                        if e < max(laptop._epoch_keys(space))})
    else:  # kept until the next compaction (its author is still trusted)
        assert after == before
    await close(laptop, phone)
