"""Pairing across two homes through the relay's mailbox (short code, commitment,
SPAKE2, words)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest
from clientkit import InProcessRelay, passphrase

from sddsf.client.device import Device
from sddsf.client.pairing import WORDS, PairingCheck, PairingInvite, add_device, join
from sddsf.client.retry import RetryPolicy
from sddsf.crypto import random_bytes
from sddsf.errors import AuthenticationError, ConflictError, SddsfError, UsageError
from sddsf.protocol import pairing as pp
from sddsf.protocol.encoding import encode


async def run_pairing(relay: InProcessRelay, laptop: Device, home: Path, *,
                      tamper_code: bool = False, initiator_ok: bool = True,
                      ) -> tuple[BaseException | bytes, BaseException | Device,
                                 list[tuple[str, ...]], PairingInvite]:
    invites: asyncio.Queue[PairingInvite] = asyncio.Queue()
    seen: list[tuple[str, ...]] = []

    def confirm(ok: bool):  # type: ignore[no-untyped-def]
        def check(shown: PairingCheck) -> bool:
            seen.append(shown.words)
            return ok
        return check

    async def joiner() -> Device:
        invite = await invites.get()
        code = invite.code
        if tamper_code:  # a valid code (checksum fine) with another password
            parsed = pp.decode_code(code, WORDS)
            code = pp.PairingCode(parsed.nameplate, parsed.secret ^ 1, parsed.words).text(WORDS)
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
    # The joiner showed (other) words right after the key exchange; the approver,
    # whose key confirmation failed, showed none.
    assert len(sas) == 1
    assert not (tmp_path / "phone" / "storage-key.json").exists()  # no half-made home
    await laptop.refresh_registry()
    assert laptop.registry().seq == before  # nothing was added
    await laptop.close()


async def test_burnt_or_expired_channel_is_refused(relay: InProcessRelay,
                                                   tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    token = random_bytes(pp.TOKEN_SIZE)
    _, nameplate, _ = await laptop.relay.open_channel(token)
    code = pp.new_code(nameplate).text(WORDS)
    relay.clock.now += 601_000  # past the 600 s pairing TTL
    with pytest.raises(ConflictError, match="expired"):
        await join(tmp_path / "phone", "http://relay.test", code, "phone",
                   passphrase=passphrase, confirm_sas=lambda _: True,
                   transport=relay.transport(), timeout_s=5, poll_s=0.01)
    channel, nameplate, _ = await laptop.relay.open_channel(token)
    await laptop.relay.burn_channel(channel, token, "cancelled")
    with pytest.raises(ConflictError, match="cancelled on the approving device"):
        await join(tmp_path / "phone", "http://relay.test", pp.new_code(nameplate).text(WORDS),
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
    code = pp.PairingCode(7, 0x5A5A5A5, 3)
    text = code.text(WORDS)
    number, *words = text.split("-")
    assert number == "7" and len(words) == 3 and all(w in WORDS for w in words)
    parsed = pp.decode_code("  " + text.upper().replace("-", "  ") + " ", WORDS)
    assert (parsed.nameplate, parsed.secret, parsed.words) == (7, 0x5A5A5A5, 3)
    assert parsed.password == code.password and len(code.password) > 16
    assert pp.PairingCode(8, 0x5A5A5A5, 3).password != code.password  # bound to the number
    misspelt = "-".join([number, words[0][:-1] + "q", *words[1:]])
    with pytest.raises(UsageError, match="not a pairing word; did you mean"):
        pp.decode_code(misspelt, WORDS)
    for not_a_code in ("hello", "AAAA-BBBB", "7", "7-abandon", "-".join(["7"] + words * 3)):
        with pytest.raises(UsageError, match="not a pairing code"):
            pp.decode_code(not_a_code, WORDS)
    with pytest.raises(UsageError, match="old-style pairing code"):
        pp.decode_code("YG4J-UZX3-75LG-TCEX-RKYC-GMDK-ECXU-ULP5-U3MU-X5Q", WORDS)


def test_the_checksum_catches_63_of_64_mistyped_words_or_numbers() -> None:
    code = pp.PairingCode(7, 0x1234567, 3)
    number, *words = code.text(WORDS).split("-")
    caught = total = 0
    for position in range(3):
        for other in WORDS:
            if other == words[position]:
                continue
            typo = [*words]
            typo[position] = other
            total += 1
            try:
                pp.decode_code("-".join([number, *typo]), WORDS)
            except UsageError as exc:
                assert "typo" in exc.message
                caught += 1
    numbers = [n for n in range(1, 5000) if n != 7]
    for n in numbers:
        try:
            pp.decode_code("-".join([str(n), *words]), WORDS)
        except UsageError:
            caught += 1
    total += len(numbers)
    # 6 checksum bits: each wrong word or number passes with probability 1/64.
    assert abs(caught / total - 63 / 64) < 0.01, (caught, total)
    assert pp.password_bits(pp.CODE_WORDS) == 27 and pp.SAS_BITS == 55
    assert {pp.new_code(1).secret.bit_length() <= 27 for _ in range(50)} == {True}


def test_pairing_links_round_trip_and_bad_links_are_refused() -> None:
    uri = pp.pairing_uri("https://relay.example:8443/sddsf", "7-abandon-ability-able")
    assert uri.startswith("sddsf://pair?relay=https%3A%2F%2F")
    assert pp.parse_uri(uri) == ("https://relay.example:8443/sddsf", "7-abandon-ability-able")
    assert pp.parse_uri("7-abandon-ability-able") is None
    for bad in ("sddsf://pair?code=7-a-b-c", "sddsf://other?relay=http://x&code=1",
                "sddsf://pair?relay=http://x&code=1&code=2",
                "sddsf://pair?relay=http://x&code=1&extra=1"):
        with pytest.raises(UsageError, match="not a pairing link"):
            pp.parse_uri(bad)
    with pytest.raises(UsageError, match="http"):
        pp.parse_uri("sddsf://pair?relay=file:///etc&code=1")


def test_both_roles_derive_matching_keys_and_a_wrong_key_does_not() -> None:
    def keys(role: str, key: bytes, commitment: bytes = b"h" * 32) -> pp.PairingKeys:
        return pp.pairing_keys(role, key, channel_id=b"c" * 16, commitment=commitment,
                               initiator_msg=b"ma", joiner_msg=b"mb", wordlist=WORDS)

    a, b = keys("initiator", b"k" * 32), keys("joiner", b"k" * 32)
    assert a.send == b.receive and a.receive == b.send and a.sas == b.sas
    assert a.my_confirm == b.peer_confirm and b.my_confirm == a.peer_confirm
    b.check_peer(a.my_confirm)
    other = keys("joiner", b"x" * 32)
    assert other.sas != a.sas
    with pytest.raises(AuthenticationError):
        other.check_peer(a.my_confirm)
    assert keys("joiner", b"k" * 32, b"H" * 32).sas != a.sas  # the commitment is bound


def test_a_revealed_message_must_be_the_committed_one() -> None:
    nonce = bytes(range(32))
    committed = pp.commitment(b"joiner message", nonce)
    pp.check_commitment(committed, b"joiner message", nonce)
    for message, n in ((b"another message", nonce), (b"joiner message", bytes(32)),
                       (b"joiner message", nonce[:16])):
        with pytest.raises(AuthenticationError, match="committed to first"):
            pp.check_commitment(committed, message, n)


def test_a_version_1_message_is_refused_clearly() -> None:
    old = encode({"v": 1, "t": "pake", "m": bytes(32)})
    with pytest.raises(SddsfError, match="pairing version 1") as info:
        pp.open_message(old, "pake", None, clear=("m",))
    assert info.value.code.value == "unsupported_version"


# ------------------------------------- a pairing cut off half-way (no phantom device)


class Network(httpx.AsyncBaseTransport):
    """One device's network to the relay: cut after a request ``cut_after`` picks
    went through, or dropping the requests ``drop`` picks before they arrive."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *,
                 cut_after: Callable[[httpx.Request], bool] = lambda _: False,
                 drop: Callable[[httpx.Request], bool] = lambda _: False) -> None:
        self.inner, self.cut_after, self.drop = inner, cut_after, drop
        self.cut = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.cut or self.drop(request):
            raise httpx.ConnectError("network down", request=request)
        response = await self.inner.handle_async_request(request)
        self.cut = self.cut_after(request)
        return response


def posted(index: int) -> Callable[[httpx.Request], bool]:
    def match(request: httpx.Request) -> bool:
        return (request.method == "POST" and request.url.path.endswith("/messages")
                and json.loads(request.content)["index"] == index)
    return match


async def pair_with(relay: InProcessRelay, approver: Device, home: Path,
                    joiner_transport: httpx.AsyncBaseTransport, **join_kwargs: Any
                    ) -> tuple[BaseException | tuple[bytes, Any], BaseException | Device]:
    invites: asyncio.Queue[PairingInvite] = asyncio.Queue()

    async def joiner() -> Device:
        code = (await invites.get()).code
        return await join(home, "http://relay.test", code, "phone", confirm_sas=lambda _: True,
                          transport=joiner_transport, clock=relay.clock, timeout_s=10,
                          poll_s=0.01, **{"passphrase": passphrase, **join_kwargs})

    added, joined = await asyncio.gather(
        add_device(approver, show=invites.put_nowait, confirm_sas=lambda _: True,
                   timeout_s=10, poll_s=0.01), joiner(), return_exceptions=True)
    return added, joined  # type: ignore[return-value]


async def test_a_joiner_cut_off_after_countersigning_resumes(relay: InProcessRelay,
                                                             tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["milk"] = "1 l"
    await laptop.sync()
    home = tmp_path / "phone"
    added, joined = await pair_with(relay, laptop, home,
                                    Network(relay.transport(), cut_after=posted(4)))
    assert isinstance(added, tuple), added  # the approver got the countersignature
    assert isinstance(joined, UsageError) and "`sddsf sync` here" in joined.message, joined
    # The registry lists a device whose keys are stored: the network is back, and
    # the home finishes the join.
    assert (home / "storage-key.json").exists()
    phone = Device.open(home, passphrase=passphrase, transport=relay.transport(),
                        clock=relay.clock)
    await phone.sync()
    assert phone.device_id == added[0]
    assert dict(phone.doc(space, "kv").get("kv", type=pycrdt.Map)) == {"milk": "1 l"}
    await phone.close()
    await laptop.close()


async def test_an_approver_that_stops_after_the_countersignature_leaves_nothing_on_the_joiner(
        relay: InProcessRelay, tmp_path: Path) -> None:
    created, _ = await relay.new_account(tmp_path / "laptop")
    await created.close()
    # The approver's append never reaches the relay (its network fails there).
    appends = Network(relay.transport(), drop=lambda r: r.method == "POST"
                      and r.url.path.endswith("/registry"))
    laptop = Device.open(tmp_path / "laptop", passphrase=passphrase, transport=appends,
                         clock=relay.clock)
    # The approver gives up at once (its retries would only keep the joiner
    # polling longer against this test's frozen relay clock, whose rate-limit
    # buckets never refill).
    laptop.relay.retry = RetryPolicy(attempts=1)
    before = (await laptop.refresh_registry()).seq
    home = tmp_path / "phone"
    added, joined = await pair_with(relay, laptop, home, relay.transport())
    assert isinstance(added, SddsfError), added
    assert isinstance(joined, ConflictError), joined
    assert "failed on the approving device" in joined.message
    assert "nothing was kept on this device" in joined.message
    assert not home.exists(), list(home.iterdir())
    assert (await laptop.refresh_registry()).seq == before
    await laptop.close()


async def test_the_passphrase_is_asked_before_the_relay_is_contacted(
        relay: InProcessRelay, tmp_path: Path) -> None:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    invites: asyncio.Queue[PairingInvite] = asyncio.Queue()
    adding = asyncio.create_task(add_device(laptop, show=invites.put_nowait,
                                            confirm_sas=lambda _: True, timeout_s=10,
                                            poll_s=0.01))
    code = (await invites.get()).code

    def interrupted() -> str:
        raise KeyboardInterrupt  # Ctrl-C at the passphrase prompt

    with pytest.raises(KeyboardInterrupt):
        await join(tmp_path / "phone", "http://relay.test", code, "phone",
                   passphrase=interrupted, confirm_sas=lambda _: True,
                   transport=relay.transport(), clock=relay.clock, timeout_s=10, poll_s=0.01)
    assert not (tmp_path / "phone").exists()
    # The code was not even claimed: the same code still pairs.
    phone = await join(tmp_path / "phone", "http://relay.test", code, "phone",
                       passphrase=passphrase, confirm_sas=lambda _: True,
                       transport=relay.transport(), clock=relay.clock, timeout_s=10,
                       poll_s=0.01)
    assert (await adding)[0] == phone.device_id
    await phone.close()
    await laptop.close()
