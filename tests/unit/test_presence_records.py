"""Presence records (sddsf.protocol.presence, protocol.md 23.5): seal, decode,
verify and open; the bounds a sealer keeps; and two hypothesis properties:
every record round-trips, and any single-byte change of a sealed record is
refused by decode, verify or open."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sddsf.errors import Code, SddsfError, UsageError
from sddsf.protocol.identity import DeviceKeys
from sddsf.protocol.presence import (
    MAX_PRESENCE_ADDRS,
    MAX_PRESENCE_RECORD,
    MAX_PRESENCE_TTL_MS,
    Presence,
    decode_presence,
    open_presence,
    seal_presence,
    verify_presence,
)

SPACE = bytes(range(16))
KEY = bytes(range(32, 64))
NOW = 1_767_225_600_000
LAPTOP = DeviceKeys.from_seeds(b"l" * 32, b"L" * 32)
PHONE = DeviceKeys.from_seeds(b"p" * 32, b"P" * 32)
PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"


def seal(device: DeviceKeys = LAPTOP, *, epoch: int = 2, addrs: tuple[str, ...] = (
        "/ip4/192.0.2.7/tcp/4001",), now_ms: int = NOW, ttl_ms: int = 60_000,
         peer: str = PEER) -> bytes:
    return seal_presence(device, space=SPACE, epoch=epoch, epoch_key=KEY, peer=peer,
                         addrs=addrs, now_ms=now_ms, ttl_ms=ttl_ms, nonce=bytes(24))


def read(raw: bytes, now_ms: int = NOW, signer: DeviceKeys = LAPTOP) -> Presence:
    record = decode_presence(raw)
    verify_presence(record, signer.public, space=SPACE, now_ms=now_ms)
    return open_presence(record, KEY)


def test_round_trip_and_fields() -> None:
    raw = seal()
    record = decode_presence(raw)
    assert (record.space, record.epoch, record.device, record.expires_ms) == (
        SPACE, 2, LAPTOP.device_id, NOW + 60_000)
    assert record.raw == raw
    assert read(raw) == Presence(PEER, ("/ip4/192.0.2.7/tcp/4001",), NOW)


def test_expiry_is_exclusive_and_the_lifetime_bounded() -> None:
    raw = seal(ttl_ms=1000)
    read(raw, NOW + 999)
    with pytest.raises(SddsfError) as info:
        read(raw, NOW + 1000)
    assert info.value.code is Code.PRESENCE_EXPIRED
    longest = decode_presence(seal(ttl_ms=MAX_PRESENCE_TTL_MS))
    # A verifier whose clock is behind the sealer's sees more than the longest
    # lifetime left: refused unless it allows for that skew.
    with pytest.raises(SddsfError) as info:
        verify_presence(longest, LAPTOP.public, space=SPACE, now_ms=NOW - 1)
    assert info.value.code is Code.CLOCK_SKEW
    verify_presence(longest, LAPTOP.public, space=SPACE, now_ms=NOW - 1, max_skew_ms=1)


def test_verify_names_the_signer_and_the_space() -> None:
    record = decode_presence(seal())
    with pytest.raises(SddsfError) as info:
        verify_presence(record, PHONE.public, space=SPACE, now_ms=NOW)
    assert info.value.code is Code.UNKNOWN_DEVICE
    with pytest.raises(SddsfError) as info:
        verify_presence(record, LAPTOP.public, space=bytes(16), now_ms=NOW)
    assert info.value.code is Code.WRONG_CONTEXT


def test_another_epoch_key_does_not_open() -> None:
    record = decode_presence(seal())
    with pytest.raises(SddsfError) as info:
        open_presence(record, bytes(32))
    assert info.value.code is Code.DECRYPT_FAILED


@pytest.mark.parametrize("kwargs", [
    {"ttl_ms": 0}, {"ttl_ms": MAX_PRESENCE_TTL_MS + 1}, {"peer": ""}, {"peer": "p" * 129},
    {"addrs": ("/a",) * (MAX_PRESENCE_ADDRS + 1)}, {"addrs": ("/" + "a" * 256,)},
    {"epoch": -1}, {"now_ms": -1},
    # 16 addresses of 256 characters fit the per-address bounds, not the record's.
    {"addrs": ("/" + "a" * 255,) * MAX_PRESENCE_ADDRS},
], ids=lambda k: ",".join(f"{n}={str(v)[:12]}" for n, v in k.items()))
def test_seal_refuses_what_a_reader_would(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        seal(**kwargs)  # type: ignore[arg-type]


def test_the_largest_record_fits() -> None:
    # The longest peer id and as many long addresses as the size bound allows.
    raw = seal(peer="p" * 128, addrs=("/" + "a" * 103,) * MAX_PRESENCE_ADDRS)
    assert len(raw) <= MAX_PRESENCE_RECORD
    assert read(raw).addrs[0] == "/" + "a" * 103


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=48)


@given(peer=texts.filter(bool), addrs=st.lists(texts, max_size=MAX_PRESENCE_ADDRS),
       epoch=st.integers(0, 2**64 - 1), now=st.integers(0, 2**48),
       ttl=st.integers(1, MAX_PRESENCE_TTL_MS), nonce=st.binary(min_size=24, max_size=24))
def test_every_record_round_trips(peer: str, addrs: list[str], epoch: int, now: int, ttl: int,
                                  nonce: bytes) -> None:
    raw = seal_presence(PHONE, space=SPACE, epoch=epoch, epoch_key=KEY, peer=peer,
                        addrs=addrs, now_ms=now, ttl_ms=ttl, nonce=nonce)
    assert read(raw, now, PHONE) == Presence(peer, tuple(addrs), now)
    assert read(raw, now + ttl - 1, PHONE) == Presence(peer, tuple(addrs), now)


SEALED = seal()


@given(pos=st.integers(0, len(SEALED) - 1), xor=st.integers(1, 255))
def test_any_single_byte_change_is_refused(pos: int, xor: int) -> None:
    mutated = SEALED[:pos] + bytes([SEALED[pos] ^ xor]) + SEALED[pos + 1:]
    with pytest.raises(SddsfError):
        read(mutated)


def test_every_position_changed_is_refused() -> None:
    # Exhaustively, one flip per byte: no field is outside decode, signature or AEAD.
    for pos in range(len(SEALED)):
        mutated = SEALED[:pos] + bytes([SEALED[pos] ^ 0x01]) + SEALED[pos + 1:]
        with pytest.raises(SddsfError):
            read(mutated)
