"""Pairing across two homes through the relay's mailbox (SPAKE2 + SAS)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pycrdt
import pytest
from clientkit import InProcessRelay, passphrase

from sddsf.client.device import Device
from sddsf.client.pairing import PairingInvite, add_device, join
from sddsf.errors import AuthenticationError, ConflictError, SddsfError, UsageError
from sddsf.protocol import pairing as pp


async def run_pairing(relay: InProcessRelay, laptop: Device, home: Path, *,
                      tamper_code: bool = False, initiator_ok: bool = True,
                      ) -> tuple[BaseException | bytes, BaseException | Device,
                                 list[tuple[str, ...]], PairingInvite]:
    invites: asyncio.Queue[PairingInvite] = asyncio.Queue()
    seen: list[tuple[str, ...]] = []

    def confirm(ok: bool):  # type: ignore[no-untyped-def]
        def check(words: tuple[str, ...]) -> bool:
            seen.append(words)
            return ok
        return check

    async def joiner() -> Device:
        invite = await invites.get()
        code = invite.code
        if tamper_code:  # a valid code (checksum fine) with another password
            parsed = pp.decode_code(code)
            code = pp.encode_code(parsed.channel_id, bytes(pp.PASSWORD_SIZE))
        return await join(home, "http://relay.test", code, "phone", passphrase=passphrase,
                          confirm_sas=confirm(True), transport=relay.transport(),
                          clock=relay.clock, timeout_s=10, poll_s=0.01)

    results = await asyncio.gather(
        add_device(laptop, show=invites.put_nowait, confirm_sas=confirm(initiator_ok),
                   timeout_s=10, poll_s=0.01),
        joiner(), return_exceptions=True)
    invite = PairingInvite("", "", 0)
    added = results[0][0] if isinstance(results[0], tuple) else results[0]  # (id, change)
    return added, results[1], seen, invite  # type: ignore[return-value]


async def test_pairing_with_the_right_code_adds_the_device(relay: InProcessRelay,
                                                           tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["milk"] = "1 l"
    await laptop.sync()
    new_id, phone, sas, _ = await run_pairing(relay, laptop, tmp_path / "phone")
    assert isinstance(phone, Device), phone
    assert new_id == phone.device_id
    assert len(sas) == 2 and sas[0] == sas[1] and len(sas[0]) == 5  # same words on both
    record = laptop.registry().device(phone.device_id)
    assert record is not None and record.name == "phone"
    assert record.added_by == laptop.device_id
    # The new device reads the space (a new epoch was wrapped for it) and writes.
    assert phone.space_by_name("notes") == space
    assert dict(phone.doc(space, "kv").get("kv", type=pycrdt.Map)) == {"milk": "1 l"}
    phone.doc(space, "kv").get("kv", type=pycrdt.Map)["eggs"] = "12"
    await phone.sync()
    await laptop.sync()
    assert dict(laptop.doc(space, "kv").get("kv", type=pycrdt.Map)) == {"milk": "1 l",
                                                                         "eggs": "12"}
    # It pinned the relay key the laptop pinned.
    assert phone.relay_key == laptop.relay_key
    await laptop.close()
    await phone.close()


async def test_wrong_code_fails_closed_and_burns_the_channel(relay: InProcessRelay,
                                                             tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    before = laptop.registry().seq
    initiator, joiner, sas, _ = await run_pairing(relay, laptop, tmp_path / "phone",
                                                  tamper_code=True)
    assert isinstance(initiator, AuthenticationError), initiator
    assert "did not match" in initiator.message
    assert isinstance(joiner, SddsfError) and not isinstance(joiner, Device)
    assert sas == []  # no words are shown for a failed key confirmation
    assert not (tmp_path / "phone" / "storage-key.json").exists()  # no half-made home
    await laptop.refresh_registry()
    assert laptop.registry().seq == before  # nothing was added
    await laptop.close()


async def test_burnt_or_expired_channel_is_refused(relay: InProcessRelay,
                                                   tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    channel, _ = await laptop.relay.open_channel()
    code = pp.encode_code(channel, b"123456")
    relay.clock.now += 601_000  # past the 600 s pairing TTL
    with pytest.raises(ConflictError, match="expired"):
        await join(tmp_path / "phone", "http://relay.test", code, "phone",
                   passphrase=passphrase, confirm_sas=lambda _: True,
                   transport=relay.transport(), timeout_s=5, poll_s=0.01)
    channel, _ = await laptop.relay.open_channel()
    await laptop.relay.burn_channel(channel)
    with pytest.raises(ConflictError, match="closed"):
        await join(tmp_path / "phone", "http://relay.test", pp.encode_code(channel, b"123456"),
                   "phone", passphrase=passphrase, confirm_sas=lambda _: True,
                   transport=relay.transport(), timeout_s=5, poll_s=0.01)
    assert not (tmp_path / "phone" / "storage-key.json").exists()
    await laptop.close()


async def test_words_not_confirmed_cancels(relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    initiator, joiner, _, _ = await run_pairing(relay, laptop, tmp_path / "phone",
                                                initiator_ok=False)
    assert isinstance(initiator, UsageError) and "not confirmed" in initiator.message
    assert isinstance(joiner, SddsfError)
    assert len(laptop.registry().active_devices()) == 1
    await laptop.close()


def test_pairing_code_round_trip_and_typos() -> None:
    channel, password = bytes(range(16)), b"secret"
    code = pp.encode_code(channel, password)
    assert all(len(g) <= 4 for g in code.split("-"))
    parsed = pp.decode_code(code.lower().replace("-", " "))
    assert (parsed.channel_id, parsed.password) == (channel, password)
    typo = ("B" if code[0] != "B" else "C") + code[1:]
    with pytest.raises(UsageError, match="typo"):
        pp.decode_code(typo)
    with pytest.raises(UsageError, match="not a pairing code"):
        pp.decode_code("hello")


def test_both_roles_derive_matching_keys_and_a_wrong_key_does_not() -> None:
    words = [f"w{i}" for i in range(2048)]
    a = pp.pairing_keys("initiator", b"k" * 32, b"ma", b"mb", words)
    b = pp.pairing_keys("joiner", b"k" * 32, b"ma", b"mb", words)
    assert a.send == b.receive and a.receive == b.send and a.sas == b.sas
    assert a.my_confirm == b.peer_confirm and b.my_confirm == a.peer_confirm
    b.check_peer(a.my_confirm)
    other = pp.pairing_keys("joiner", b"x" * 32, b"ma", b"mb", words)
    assert other.sas != a.sas
    with pytest.raises(AuthenticationError):
        other.check_peer(a.my_confirm)
