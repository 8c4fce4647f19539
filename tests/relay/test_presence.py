"""Presence records at the relay (protocol.md 17.4.14, 23.5).

In process (the relay's app over httpx's ASGI transport, a settable clock), on
SQLite and PostgreSQL: the round trip through ``RelayTransport``; who may
publish and read (another account's device: ``not_found``; a shared space's
members: yes; a removed member, a revoked device: no longer); refusals with
their codes (a record of another device, a bad signature, another space,
expired, too long-lived, oversize, malformed, another version, the per-space
bound, the rate limit); expiry.

Over loopback, real ``sddsf relay serve`` processes: the round trip on SQLite
and on PostgreSQL, and two processes sharing their edge state through the Redis
at 127.0.0.1:6379, where a record published through one is served by the other.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from livekit import Relays, fresh_postgres_database, write_key_file
from relaykit import T0, Clock, World, client_for, make_app

from sddsf.client.relay_client import RelayClient
from sddsf.client.retry import RetryPolicy
from sddsf.client.transport.base import Transport
from sddsf.client.transport.relay import RelayTransport
from sddsf.errors import Code, SddsfError, UnavailableError
from sddsf.protocol import membership as ms
from sddsf.protocol.encoding import encode
from sddsf.protocol.presence import (
    MAX_PRESENCE_RECORD,
    MAX_PRESENCE_TTL_MS,
    Presence,
    decode_presence,
    open_presence,
    seal_presence,
    verify_presence,
)
from sddsf.relay.routes import presence as presence_route
from sddsf.relay.storage.base import RelayStorage

PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
ADDRS = ("/ip4/127.0.0.1/tcp/4001",)


def seal(world: World, device: int, now: int, *, ttl: int = 60_000,
         space: bytes | None = None, peer: str = PEER) -> bytes:
    return seal_presence(world.devices[device], space=space or world.space, epoch=0,
                         epoch_key=world.epoch_keys[0], peer=peer, addrs=ADDRS, now_ms=now,
                         ttl_ms=ttl, nonce=uuid.uuid4().bytes + bytes(8))


def renamed(record: bytes, device: bytes) -> bytes:
    """The record with another device id and the original signature."""
    r = decode_presence(record)
    return encode([1, r.space, r.epoch, device, r.expires_ms, r.nonce, r.ciphertext,
                   r.signature])


async def code(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except SddsfError as exc:
        return exc.code.value
    raise AssertionError("expected a refusal")


class Person:
    """An account with two devices (0 and 1), each with its transport."""

    def __init__(self, app, clock: Clock, space: bytes | None = None) -> None:  # type: ignore[no-untyped-def]
        self.world = World() if space is None else World(space=space)
        self.world.add_device(1, clock.now)
        self.t = [RelayTransport(client_for(app, self.world, i, clock)) for i in (0, 1)]

    @property
    def account_id(self) -> bytes:
        return self.world.account.account_id

    async def register(self, *, with_space: bool = True) -> None:
        await self.t[0].create_account(self.world.entries[0])
        await self.t[0].append_registry(self.account_id, self.world.entries[1])
        if with_space:
            await self.t[0].create_space(self.world.space, self.world.key_package())


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
async def alice(storage: RelayStorage, clock: Clock) -> Person:
    person = Person(make_app(storage, clock), clock)
    await person.register()
    return person


async def test_round_trip_replace_and_read_back(alice: Person, clock: Clock) -> None:
    laptop, phone = alice.t
    assert await laptop.presence(alice.world.space) == []
    first = seal(alice.world, 0, clock.now)
    await laptop.put_presence(alice.world.space, first)
    await laptop.put_presence(alice.world.space, first)  # idempotent
    ours = seal(alice.world, 1, clock.now, peer="12D3KooWphone")
    await phone.put_presence(alice.world.space, ours)
    newer = seal(alice.world, 0, clock.now, peer="12D3KooWlaptop2")
    await laptop.put_presence(alice.world.space, newer)
    served = await phone.presence(alice.world.space)
    by_device = sorted([(d.device_id, r) for d, r in ((alice.world.devices[0], newer),
                                                       (alice.world.devices[1], ours))])
    assert served == [r for _, r in by_device]  # one each, the newest, by device id
    record = decode_presence(newer)
    verify_presence(record, alice.world.state, space=alice.world.space, now_ms=clock.now)
    assert open_presence(record, alice.world.epoch_keys[0]) == Presence(
        "12D3KooWlaptop2", ADDRS, clock.now)


async def test_expired_records_are_not_served_nor_stored(alice: Person, clock: Clock) -> None:
    laptop = alice.t[0]
    await laptop.put_presence(alice.world.space, seal(alice.world, 0, clock.now, ttl=1000))
    clock.now += 999
    assert len(await laptop.presence(alice.world.space)) == 1
    clock.now += 1
    assert await laptop.presence(alice.world.space) == []
    stale = seal(alice.world, 0, clock.now - 2000, ttl=1000)
    assert await code(laptop.put_presence(alice.world.space, stale)) == "presence_expired"


async def test_refusals_have_stable_codes(alice: Person, clock: Clock) -> None:
    laptop, phone = alice.t
    space, now = alice.world.space, clock.now
    laptops = seal(alice.world, 0, now)
    phone_id = alice.world.devices[1].device_id
    cases = {
        # The phone sends the laptop's genuine record: only one's own is published.
        "not_authorized": phone.put_presence(space, laptops),
        # The laptop's record relabelled as the phone's: the signature is the laptop's.
        "sig_invalid": phone.put_presence(space, renamed(laptops, phone_id)),
        "wrong_context": laptop.put_presence(space, seal(alice.world, 0, now, space=bytes(16))),
        "clock_skew": laptop.put_presence(space, seal(
            alice.world, 0, now + 1, ttl=MAX_PRESENCE_TTL_MS)),
        "too_large": laptop.put_presence(space, laptops + bytes(MAX_PRESENCE_RECORD)),
        "malformed": laptop.put_presence(space, b"not a record"),
        "unsupported_version": laptop.put_presence(space, b"\x82\x02\x00"),
    }
    for expected, call in cases.items():
        assert await code(call) == expected, expected
    assert await laptop.presence(space) == []  # nothing was stored


async def test_another_accounts_device_can_neither_read_nor_write(
        storage: RelayStorage, clock: Clock) -> None:
    app = make_app(storage, clock)
    alice, mallory = Person(app, clock), Person(app, clock)
    await alice.register()
    await mallory.register()
    space = alice.world.space
    await alice.t[0].put_presence(space, seal(alice.world, 0, clock.now))
    # Mallory holds Alice's epoch key (say): the relay still refuses her device.
    mallory.world.epoch_keys = list(alice.world.epoch_keys)
    assert await code(mallory.t[0].presence(space)) == "not_found"
    own = seal(mallory.world, 0, clock.now, space=space)
    assert await code(mallory.t[0].put_presence(space, own)) == "not_found"
    assert await code(mallory.t[0].presence(uuid.uuid4().bytes)) == "not_found"
    assert len(await alice.t[1].presence(space)) == 1


async def test_members_of_a_shared_space_see_each_other_until_removed(
        storage: RelayStorage, clock: Clock) -> None:
    app = make_app(storage, clock)
    alice = Person(app, clock)
    bob, dave = (Person(app, clock, space=alice.world.space) for _ in range(2))
    await alice.register()
    for p in (bob, dave):
        await p.register(with_space=False)
        p.world.epoch_keys = list(alice.world.epoch_keys)
    space, admin = alice.world.space, alice.world.devices[0]
    regs = {p.account_id: p.world.state for p in (alice, bob)}
    state = ms.MembershipState.empty(space)
    for make in (lambda s: ms.create(space, admin, alice.world.state, T0),
                 lambda s: ms.add_member(s, admin, alice.world.state, bob.world.account.public,
                                         ms.Role.READER, T0)):
        entry = make(state)
        await alice.t[0].append_membership(space, entry)
        state = state.apply(entry, regs.get)
    # A reader publishes too (it syncs peer to peer), and both sides read both.
    await alice.t[0].put_presence(space, seal(alice.world, 0, clock.now))
    await bob.t[1].put_presence(space, seal(bob.world, 1, clock.now))
    for reader in (alice.t[1], bob.t[0]):
        devices = {decode_presence(r).device for r in await reader.presence(space)}
        assert devices == {alice.world.devices[0].device_id, bob.world.devices[1].device_id}
    assert await code(dave.t[0].presence(space)) == "not_found"
    # Removed: Bob reaches nothing, and his live record is no longer served.
    await alice.t[0].append_membership(space, ms.remove_member(
        state, admin, alice.world.state, bob.account_id, T0))
    assert await code(bob.t[1].presence(space)) == "not_found"
    assert [decode_presence(r).device for r in await alice.t[0].presence(space)] == [
        alice.world.devices[0].device_id]


async def test_a_revoked_devices_record_is_no_longer_served(alice: Person, clock: Clock) -> None:
    await alice.t[1].put_presence(alice.world.space, seal(alice.world, 1, clock.now))
    assert len(await alice.t[0].presence(alice.world.space)) == 1
    await alice.t[0].append_registry(alice.account_id, alice.world.revoke(1))
    assert await alice.t[0].presence(alice.world.space) == []


async def test_the_space_bound_and_the_rate_limit(storage: RelayStorage, clock: Clock,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(storage, clock, rate_presence_burst=3.0, rate_presence_per_s=0.001)
    alice = Person(app, clock)
    await alice.register()
    space = alice.world.space
    monkeypatch.setattr(presence_route, "MAX_PRESENCE_DEVICES", 1)
    laptop, phone = alice.t
    await laptop.put_presence(space, seal(alice.world, 0, clock.now))
    assert await code(phone.put_presence(space, seal(alice.world, 1, clock.now))) \
        == "too_large"
    for _ in range(2):  # the laptop's own record is replaced, not a second device
        await laptop.put_presence(space, seal(alice.world, 0, clock.now))
    # The laptop's three tokens are spent; the phone's bucket is its own.
    assert await code(laptop.put_presence(space, seal(alice.world, 0, clock.now))) \
        == "rate_limited"
    assert [decode_presence(r).device for r in await phone.presence(space)] == [
        alice.world.devices[0].device_id]


async def test_a_transport_without_presence_says_so(alice: Person) -> None:
    # The ABC's defaults: what a log holder that keeps no presence answers.
    for call in (Transport.presence(alice.t[0], alice.world.space),
                 Transport.put_presence(alice.t[0], alice.world.space, b"")):
        with pytest.raises(UnavailableError):
            await call


# --------------------------------------------------------------- over loopback


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def over_http(base_url: str, world: World, device: int) -> RelayTransport:
    # No retries: each answer of the relay is what is checked.
    return RelayTransport(RelayClient(base_url, device=world.devices[device],
                                      account_id=world.account.account_id,
                                      transport=httpx.AsyncHTTPTransport(), timeout_s=10.0,
                                      retry=RetryPolicy(attempts=1)))


async def real_account(base_url: str) -> tuple[World, RelayTransport]:
    """An account with two devices and a space; the transport of device 0."""
    world = World()
    world.add_device(1, now_ms())  # a relay process dates additions by its own clock
    laptop = over_http(base_url, world, 0)
    await laptop.create_account(world.entries[0])
    await laptop.append_registry(world.account.account_id, world.entries[1])
    await laptop.create_space(world.space, world.key_package())
    return world, laptop


async def check_round_trip(put_to: str, read_from: str) -> None:
    """Device 0 publishes through ``put_to``; device 1 reads it through
    ``read_from``; another account's device is refused."""
    world, laptop = await real_account(put_to)
    stranger, theirs = await real_account(put_to)
    phone = over_http(read_from, world, 1)
    try:
        record = seal(world, 0, now_ms())
        await laptop.put_presence(world.space, record)
        assert await phone.presence(world.space) == [record]
        assert await code(theirs.presence(world.space)) == Code.NOT_FOUND.value
        own = seal(stranger, 0, now_ms(), space=world.space)
        assert await code(theirs.put_presence(world.space, own)) == Code.NOT_FOUND.value
    finally:
        for t in (laptop, phone, theirs):
            await t.aclose()


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Relays]:
    started = Relays(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def key_env(directory: Path) -> dict[str, str]:
    return {"SDDSF_RELAY_KEY_FILE": str(write_key_file(directory / "relay.key"))}


def redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


async def test_loopback_sqlite(relays: Relays, tmp_path: Path) -> None:
    relay = relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}", env=key_env(tmp_path))
    await check_round_trip(relay.base_url, relay.base_url)


async def test_loopback_postgres(relays: Relays, tmp_path: Path) -> None:
    async with fresh_postgres_database() as dsn:
        relay = relays.start("--db", dsn, env=key_env(tmp_path))
        try:
            await check_round_trip(relay.base_url, relay.base_url)
        finally:
            relay.stop()  # before the database is dropped


async def test_loopback_two_processes_share_presence_through_redis(
        relays: Relays, tmp_path: Path) -> None:
    if not redis_answers("127.0.0.1", 6379):
        pytest.skip("no Redis at 127.0.0.1:6379")
    env = {**key_env(tmp_path), "SDDSF_RELAY_REDIS_URL": "redis://127.0.0.1:6379/0"}
    db = f"sqlite:///{tmp_path / 'relay.db'}"
    first, second = (relays.start("--db", db, env=env) for _ in range(2))
    await check_round_trip(first.base_url, second.base_url)
