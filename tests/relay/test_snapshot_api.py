"""The relay's snapshot endpoints (protocol.md 17.4.6, 18.4, 18.7), on SQLite and
PostgreSQL: chunk upload and download, the checks on a whole-space snapshot
(signed by the caller, its root is the log's, every chunk uploaded), signed
attestations, the corroborated copy, chunk collection, and the rule that
history is pruned only under a snapshot another device attested."""

from __future__ import annotations

from typing import Any

import pytest
from relaykit import Clock, World, client_for, make_app

from sddsf.client.relay_client import RelayClient
from sddsf.errors import Code, SddsfError
from sddsf.protocol import merkle
from sddsf.protocol.snapshot import (
    CORROBORATED_SNAPSHOT_DOC,
    MATCH,
    MISMATCH,
    SNAPSHOT_CHUNK_PLAIN,
    SPACE_SNAPSHOT_DOC,
    SealedSnapshot,
    attest_snapshot,
    chunk_id,
    seal_chunked_snapshot,
)
from sddsf.relay.routes.spaces import CHUNK_GRACE_MS
from sddsf.relay.storage.base import RelayStorage

BIG = {"kv": bytes(range(256)) * (SNAPSHOT_CHUNK_PLAIN // 256 + 3)}  # two chunks


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def setup(storage: RelayStorage, clock: Clock
                ) -> tuple[World, RelayClient, RelayClient, list[Any]]:
    world = World()
    world.add_device(1)
    app = make_app(storage, clock)
    laptop, phone = client_for(app, world, 0, clock), client_for(app, world, 1, clock)
    await laptop.create_account(world.entries[0])
    await laptop.append_registry(world.account.account_id, world.entries[1])
    await laptop.create_space(world.space, world.key_package())
    ops = [world.op(0, text=f"v{i}".encode()) for i in range(5)]
    await laptop.upload(world.space, [o.raw for o in ops])
    return world, laptop, phone, ops


def seal(world: World, ops: list[Any], size: int, *, author: int = 0, clock: Clock,
         docs: dict[str, bytes] = BIG, frontier_of: list[bytes] | None = None,
         nonce: bytes = bytes(24)) -> SealedSnapshot:
    leaves = frontier_of or [merkle.leaf_hash(o.raw) for o in ops[:size]]
    return seal_chunked_snapshot(
        world.devices[author], space=world.space, epoch=0, epoch_key=world.epoch_keys[0],
        size=size, frontier=merkle.MerkleTree(leaves).frontier(), chains={}, docs=docs,
        ts_ms=clock.now, nonce=nonce)


async def publish(client: RelayClient, world: World, sealed: SealedSnapshot) -> None:
    for cid, chunk in zip(sealed.chunk_ids, sealed.chunks, strict=True):
        await client.put_snapshot_chunk(world.space, cid, chunk)
    await client.put_snapshot(world.space, SPACE_SNAPSHOT_DOC, sealed.size - 1, sealed.manifest)


def attestation(world: World, device: int, sealed: SealedSnapshot, verdict: str,
                clock: Clock) -> bytes:
    return attest_snapshot(world.devices[device], space=world.space, doc=SPACE_SNAPSHOT_DOC,
                           snapshot=sealed.id, size=sealed.size, verdict=verdict,
                           ts_ms=clock.now)


async def code_of(call: Any) -> Code:
    with pytest.raises(SddsfError) as info:
        await call
    return info.value.code


async def test_chunks_round_trip_and_bad_chunks_are_refused(storage: RelayStorage,
                                                            clock: Clock) -> None:
    world, laptop, phone, ops = await setup(storage, clock)
    sealed = seal(world, ops, 3, clock=clock)
    await publish(laptop, world, sealed)
    assert [await phone.get_snapshot_chunk(world.space, c) for c in sealed.chunk_ids] \
        == list(sealed.chunks)
    assert await phone.get_snapshot(world.space, SPACE_SNAPSHOT_DOC) == (2, sealed.manifest)
    chunk = sealed.chunks[0]
    assert await code_of(laptop.put_snapshot_chunk(world.space, chunk_id(b"x"), chunk)) \
        is Code.MALFORMED
    huge = bytes(SNAPSHOT_CHUNK_PLAIN + 17)
    assert await code_of(laptop.put_snapshot_chunk(world.space, chunk_id(huge), huge)) \
        is Code.TOO_LARGE
    assert await code_of(phone.get_snapshot_chunk(world.space, bytes(32))) is Code.NOT_FOUND


async def test_a_whole_space_snapshot_is_checked_as_far_as_the_relay_can(
        storage: RelayStorage, clock: Clock) -> None:
    world, laptop, phone, ops = await setup(storage, clock)
    sealed = seal(world, ops, 3, clock=clock)
    # Its chunks first.
    assert await code_of(laptop.put_snapshot(world.space, SPACE_SNAPSHOT_DOC, 2,
                                             sealed.manifest)) is Code.NOT_FOUND
    for cid, chunk in zip(sealed.chunk_ids, sealed.chunks, strict=True):
        await laptop.put_snapshot_chunk(world.space, cid, chunk)
    # Published by its author only, with covers_offset = size - 1.
    assert await code_of(phone.put_snapshot(world.space, SPACE_SNAPSHOT_DOC, 2,
                                            sealed.manifest)) is Code.NOT_AUTHORIZED
    assert await code_of(laptop.put_snapshot(world.space, SPACE_SNAPSHOT_DOC, 3,
                                             sealed.manifest)) is Code.MALFORMED
    # Its root must be this log's root at its size.
    other = seal(world, ops, 3, clock=clock, frontier_of=[bytes(32)] * 3)
    for cid, chunk in zip(other.chunk_ids, other.chunks, strict=True):
        await laptop.put_snapshot_chunk(world.space, cid, chunk)
    assert await code_of(laptop.put_snapshot(world.space, SPACE_SNAPSHOT_DOC, 2,
                                             other.manifest)) is Code.CONFLICT
    # Garbage and the reserved doc id are refused.
    assert await code_of(laptop.put_snapshot(world.space, SPACE_SNAPSHOT_DOC, 2, b"junk")) \
        is Code.MALFORMED
    assert await code_of(laptop.put_snapshot(world.space, CORROBORATED_SNAPSHOT_DOC, 2,
                                             sealed.manifest)) is Code.NOT_AUTHORIZED
    await laptop.put_snapshot(world.space, SPACE_SNAPSHOT_DOC, 2, sealed.manifest)


async def test_pruning_waits_for_another_device_to_attest_a_match(storage: RelayStorage,
                                                                  clock: Clock) -> None:
    world, laptop, phone, ops = await setup(storage, clock)
    sealed = seal(world, ops, 3, clock=clock)
    await publish(laptop, world, sealed)
    for client in (laptop, phone):
        assert (await client.acknowledge(world.space, 4))[1] == 0  # nobody vouched
    # The author's own word does not count.
    await laptop.attest_snapshot(world.space, SPACE_SNAPSHOT_DOC,
                                 attestation(world, 0, sealed, MATCH, clock))
    assert (await laptop.acknowledge(world.space, 4))[1] == 0
    assert await code_of(phone.get_snapshot(world.space, CORROBORATED_SNAPSHOT_DOC)) \
        is Code.NOT_FOUND
    # A device sends only its own attestations.
    assert await code_of(phone.attest_snapshot(
        world.space, SPACE_SNAPSHOT_DOC, attestation(world, 0, sealed, MATCH, clock))) \
        is Code.NOT_AUTHORIZED
    await phone.attest_snapshot(world.space, SPACE_SNAPSHOT_DOC,
                                attestation(world, 1, sealed, MATCH, clock))
    assert (await laptop.acknowledge(world.space, 4))[1] == 3
    assert await phone.get_snapshot(world.space, CORROBORATED_SNAPSHOT_DOC) == (
        2, sealed.manifest)
    sid, atts = await phone.snapshot_attestations(world.space, CORROBORATED_SNAPSHOT_DOC)
    assert sid == sealed.id and len(atts) == 2
    # A newer snapshot replaces the current one; the corroborated copy and its
    # chunks stay until the newer one is corroborated.
    newer = seal(world, ops, 5, clock=clock, nonce=bytes([1]) * 24)
    await publish(laptop, world, newer)
    await phone.attest_snapshot(world.space, SPACE_SNAPSHOT_DOC,  # the copy may be attested
                                attestation(world, 1, sealed, MATCH, clock))
    clock.now += CHUNK_GRACE_MS + 1
    await publish(laptop, world, newer)  # collects chunks neither manifest names
    for cid in (*sealed.chunk_ids, *newer.chunk_ids):
        assert await phone.get_snapshot_chunk(world.space, cid)
    await phone.attest_snapshot(world.space, SPACE_SNAPSHOT_DOC,
                                attestation(world, 1, newer, MATCH, clock))
    assert (await laptop.acknowledge(world.space, 4))[1] == 5
    clock.now += CHUNK_GRACE_MS + 1
    await publish(laptop, world, newer)
    assert await code_of(phone.get_snapshot_chunk(world.space, sealed.chunk_ids[0])) \
        is Code.NOT_FOUND


async def test_a_mismatch_by_an_active_device_blocks_pruning_and_raises_an_alert(
        storage: RelayStorage, clock: Clock) -> None:
    world, laptop, phone, ops = await setup(storage, clock)
    world.add_device(2)
    await laptop.append_registry(world.account.account_id, world.entries[-1])
    tablet = client_for(make_app(storage, clock), world, 2, clock)
    sealed = seal(world, ops, 3, clock=clock)
    await publish(laptop, world, sealed)
    await tablet.attest_snapshot(world.space, SPACE_SNAPSHOT_DOC,
                                 attestation(world, 2, sealed, MISMATCH, clock))
    await phone.attest_snapshot(world.space, SPACE_SNAPSHOT_DOC,
                                attestation(world, 1, sealed, MATCH, clock))
    for client in (laptop, phone, tablet):
        assert (await client.acknowledge(world.space, 4))[1] == 0
    alerts = await storage.alerts(world.account.account_id)
    assert [(a.rule, a.device_id) for a in alerts] == [
        ("snapshot_mismatch", world.devices[0].device_id)]
    # Attestations about a snapshot that was replaced are refused.
    newer = seal(world, ops, 5, clock=clock, nonce=bytes([1]) * 24)
    await publish(laptop, world, newer)
    assert await code_of(phone.attest_snapshot(
        world.space, SPACE_SNAPSHOT_DOC, attestation(world, 1, sealed, MATCH, clock))) \
        is Code.CONFLICT
