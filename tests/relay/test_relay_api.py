"""The relay over HTTP (in-process ASGI): each edge and rule refusal has its code
and leaves stored data intact; accepted ops come with proofs that verify with the
protocol core; the log reproduces RFC 9162 roots.

Every test runs on both storage backends (SQLite and PostgreSQL).

Refusals covered (issue acceptance): forged signature, replayed request, replayed
op (idempotent), fork, gap, revoked device, stale epoch, clock skew, oversize
body, malformed body, unknown version, rate-limit burst.
"""

from __future__ import annotations

import httpx
import pytest
from relaykit import T0, Clock, World, client_for, make_app, relay_key

from sddsf.client.relay_client import RelayClient
from sddsf.errors import (
    AuthorizationError,
    Code,
    DecodeError,
    NotFoundError,
    RateLimitedError,
    SddsfError,
)
from sddsf.protocol import merkle
from sddsf.protocol.encoding import encode
from sddsf.protocol.snapshot import (
    MATCH,
    SPACE_SNAPSHOT_DOC,
    attest_snapshot,
    seal_snapshot,
    snapshot_id,
)
from sddsf.protocol.treehead import check_progress, verify_tree_head
from sddsf.relay.storage.base import RelayStorage

# The ``storage`` fixture (tests/relay/conftest.py) runs every test below on
# SQLite and on PostgreSQL.


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def _setup(storage: RelayStorage, clock: Clock, **settings: object):  # type: ignore[no-untyped-def]
    world = World()
    world.add_device(1)
    app = make_app(storage, clock, **settings)
    client = client_for(app, world, 0, clock)
    await client.create_account(world.entries[0])
    await client.append_registry(world.account.account_id, world.entries[1])
    await client.create_space(world.space, world.key_package())
    return world, app, client


async def storage_session_gone(app, token: bytes) -> bool:  # type: ignore[no-untyped-def]
    """The revocation dropped the device's open session on the relay at once."""
    from sddsf.protocol.auth import token_hash

    ctx = app.state.relay
    return await ctx.edge.get_session(token_hash(token), ctx.clock()) is None


def _head(raw: bytes, world: World):  # type: ignore[no-untyped-def]
    return verify_tree_head(raw, relay_key().public, log=world.space)


async def test_health_ready_and_openapi(storage: RelayStorage, clock: Clock) -> None:
    app = make_app(storage, clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).json()["status"] == "ready"
        spec = (await http.get("/openapi.json")).json()
        paths = set(spec["paths"])
        for p in ("/v1/accounts", "/v1/accounts/{account_id}/registry", "/v1/auth/challenge",
                  "/v1/auth/session", "/v1/spaces", "/v1/spaces/{space_id}/ops",
                  "/v1/spaces/{space_id}/keys", "/v1/spaces/{space_id}/proofs/inclusion",
                  "/v1/spaces/{space_id}/proofs/consistency", "/v1/pairing",
                  "/v1/ws/ticket", "/healthz", "/readyz", "/metrics"):
            assert p in paths, p
        assert "sddsf_ops_total" in (await http.get("/metrics")).text


async def test_upload_accepts_with_proofs_that_verify(storage: RelayStorage,
                                                      clock: Clock) -> None:
    world, _, client = await _setup(storage, clock)
    ops = [world.op(0, text=f"edit {i}".encode()) for i in range(5)]
    results, head_raw = await client.upload(world.space, [o.raw for o in ops])
    head = _head(head_raw, world)
    assert [r.status for r in results] == ["accepted"] * 5
    assert [r.offset for r in results] == [0, 1, 2, 3, 4]
    assert head.size == 5
    # the relay's root is the RFC 9162 root of the envelopes, and each proof verifies
    assert head.root == merkle.root_of([merkle.leaf_hash(o.raw) for o in ops])
    for op, r in zip(ops, results, strict=True):
        assert r.op_id == op.op_id and r.proof is not None and r.offset is not None
        merkle.verify_inclusion(merkle.leaf_hash(op.raw), r.offset, head.size, r.proof,
                                head.root)


async def test_replayed_op_is_idempotent(storage: RelayStorage, clock: Clock) -> None:
    world, _, client = await _setup(storage, clock)
    op = world.op(0)
    first, _ = await client.upload(world.space, [op.raw])
    again, head_raw = await client.upload(world.space, [op.raw, op.raw])
    assert [r.status for r in again] == ["duplicate", "duplicate"]
    assert {r.offset for r in again} == {first[0].offset}
    assert _head(head_raw, world).size == 1  # no new leaf


async def test_bad_ops_never_drop_good_ones_and_leave_data_intact(storage: RelayStorage,
                                                                  clock: Clock) -> None:
    world, _, client = await _setup(storage, clock)
    good1 = world.op(0)
    forged = bytearray(world.op(1, record=False).raw)
    forged[-3] ^= 1  # signature byte
    gap = world.op(0, seq=9, record=False)
    future = world.op(1, ts=T0 + 3_600_000, record=False)
    bad_version = encode([2, good1.header_bytes, good1.ciphertext, good1.signature])
    good2 = world.op(0)
    results, head_raw = await client.upload(world.space, [
        good1.raw, bytes(forged), gap.raw, future.raw, bad_version, b"\x00garbage", good2.raw])
    codes = [(r.status, r.code) for r in results]
    assert codes == [("accepted", None), ("rejected", "sig_invalid"),
                     ("rejected", "chain_gap"), ("rejected", "clock_skew"),
                     ("rejected", "unsupported_version"), ("rejected", "malformed"),
                     ("accepted", None)]
    assert _head(head_raw, world).size == 2
    pulled, _ = await client.pull(world.space)
    assert [p.op_id for p in pulled] == [good1.op_id, good2.op_id]


async def test_fork_is_refused_and_kept_as_evidence(storage: RelayStorage,
                                                    clock: Clock) -> None:
    world, _, client = await _setup(storage, clock)
    original = world.op(0, text=b"one")
    await client.upload(world.space, [original.raw])
    fork = world.op(0, text=b"other", seq=1, prev=bytes(32), record=False)
    results, head_raw = await client.upload(world.space, [fork.raw])
    assert (results[0].status, results[0].code) == ("rejected", "chain_fork")
    assert _head(head_raw, world).size == 1
    evidence = await storage.fork_evidence(world.space)
    assert len(evidence) == 1
    assert (evidence[0].accepted_envelope, evidence[0].refused_envelope) == (original.raw,
                                                                           fork.raw)


async def test_revoked_device_is_cut_off(storage: RelayStorage, clock: Clock) -> None:
    world, app, owner = await _setup(storage, clock)
    phone = client_for(app, world, 1, clock)
    await phone.upload(world.space, [world.op(1).raw])
    await owner.append_registry(world.account.account_id, world.revoke(1))
    token = phone._token
    assert token is not None and await storage_session_gone(app, token)
    with pytest.raises(AuthorizationError) as info:  # no new session can be opened
        await phone.upload(world.space, [world.op(1).raw])
    assert info.value.code is Code.REVOKED
    # an op by the revoked device uploaded by another device is refused by the rules
    results, _ = await owner.upload(world.space, [world.op(1, record=False).raw])
    assert results[0].code == "revoked"


async def test_stale_epoch_after_grace(storage: RelayStorage, clock: Clock) -> None:
    world, _, client = await _setup(storage, clock, epoch_grace_s=60)
    await client.put_key_package(world.space, world.key_package())  # epoch 1 starts at T0
    within = world.op(0, epoch=0)
    results, _ = await client.upload(world.space, [within.raw])
    assert results[0].status == "accepted"  # previous epoch within the grace window
    clock.now = T0 + 61_000
    late = world.op(0, epoch=0, ts=clock.now, record=False)
    results, _ = await client.upload(world.space, [late.raw])
    assert results[0].code == "stale_epoch"
    future_epoch = world.op(0, epoch=1, ts=clock.now)
    results, _ = await client.upload(world.space, [future_epoch.raw])
    assert results[0].status == "accepted"


async def test_forged_session_signature_and_missing_session(storage: RelayStorage,
                                                           clock: Clock) -> None:
    world, app, _ = await _setup(storage, clock)
    stranger = World()
    impostor = RelayClient("http://relay.test", device=stranger.devices[0],
                           account_id=world.account.account_id,
                           transport=httpx.ASGITransport(app=app), clock=clock)
    with pytest.raises(AuthorizationError) as info:
        await impostor.list_spaces()
    assert info.value.code is Code.UNKNOWN_DEVICE
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        r = await http.get("/v1/spaces")
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"


async def test_replayed_request_is_refused(storage: RelayStorage, clock: Clock) -> None:
    world, app, client = await _setup(storage, clock)
    captured: list[httpx.Request] = []

    class Recorder(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.ASGITransport(app=app)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await request.aread()
            captured.append(request)
            return await self.inner.handle_async_request(request)

    recorded = RelayClient("http://relay.test", device=world.devices[0],
                           account_id=world.account.account_id, transport=Recorder(),
                           clock=clock)
    await recorded.upload(world.space, [world.op(0).raw])
    upload = next(r for r in captured if r.url.path.endswith("/ops"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://relay.test") as http:
        replay = await http.request(upload.method, str(upload.url), headers=upload.headers,
                                    content=upload.content)
    assert replay.status_code == 401 and replay.json()["code"] == "replay"
    pulled, _ = await client.pull(world.space)
    assert len(pulled) == 1  # nothing changed


async def test_stale_request_timestamp_is_refused(storage: RelayStorage, clock: Clock) -> None:
    world, app, _ = await _setup(storage, clock)
    skewed = client_for(app, world, 0, Clock(T0 - 3_600_000))
    skewed._token = None
    with pytest.raises(SddsfError) as info:
        await skewed.upload(world.space, [world.op(0).raw])
    assert info.value.code is Code.CLOCK_SKEW


async def test_oversize_and_malformed_bodies(storage: RelayStorage, clock: Clock) -> None:
    world, app, client = await _setup(storage, clock, max_request_bytes=4096)
    with pytest.raises(DecodeError) as info:
        await client.upload(world.space, [bytes(8000)])
    assert info.value.code is Code.TOO_LARGE
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        r = await http.post("/v1/accounts", content=b"{not json",
                            headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["code"] == "malformed"
        r = await http.post("/v1/accounts", json={"genesis": "!!!"})
        assert r.status_code == 400 and r.json()["code"] == "malformed"
        r = await http.post("/v1/accounts", json={"genesis": "AAAA"})
        assert r.status_code == 400 and r.json()["code"] == "malformed"
        assert "Traceback" not in r.text


async def test_rate_limit_burst_gets_429_with_retry_after(storage: RelayStorage,
                                                           clock: Clock) -> None:
    app = make_app(storage, clock, rate_ip_per_s=1.0, rate_ip_burst=3.0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        statuses = [(await http.get(f"/v1/accounts/{'A' * 43}=/registry")).status_code
                    for _ in range(3)]
        assert statuses == [401, 401, 401]  # the burst is served (and needs a credential)
        limited = await http.get(f"/v1/accounts/{'A' * 43}=/registry")
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        clock.now += 1000  # one token refills per second
        assert (await http.get(f"/v1/accounts/{'A' * 43}=/registry")).status_code == 401


async def test_pull_pagination_and_consistency(storage: RelayStorage, clock: Clock) -> None:
    world, _, client = await _setup(storage, clock)
    first = [world.op(0) for _ in range(3)]
    _, head3_raw = await client.upload(world.space, [o.raw for o in first])
    more = [world.op(1) for _ in range(4)]
    await client.upload(world.space, [o.raw for o in more])
    page1, _ = await client.pull(world.space, after=-1, limit=4)
    page2, head_raw = await client.pull(world.space, after=page1[-1].offset, limit=4)
    assert [p.offset for p in page1 + page2] == list(range(7))
    head3, head7 = _head(head3_raw, world), _head(head_raw, world)
    proof, proof_head = await client.consistency_proof(world.space, 3)
    assert _head(proof_head, world).root == head7.root
    check_progress(head3, head7, proof)
    # proofs against an older tree size: the relay recomputes that size's root
    old_proof, old_head_raw = await client.inclusion_proof(world.space, 1, size=3)
    old_head = _head(old_head_raw, world)
    assert (old_head.size, old_head.root) == (3, head3.root)
    merkle.verify_inclusion(merkle.leaf_hash(first[1].raw), 1, 3, old_proof, head3.root)
    mid_proof, mid_head_raw = await client.consistency_proof(world.space, 3, 5)
    mid = _head(mid_head_raw, world)
    assert mid.root == merkle.root_of([merkle.leaf_hash(o.raw) for o in (first + more)[:5]])
    check_progress(head3, mid, mid_proof)
    with pytest.raises(NotFoundError):
        await client.inclusion_proof(world.space, 99)


async def test_space_of_another_account_is_not_found(storage: RelayStorage,
                                                     clock: Clock) -> None:
    world, app, _ = await _setup(storage, clock)
    other = World()
    other_client = client_for(app, other, 0, clock)
    await other_client.create_account(other.entries[0])
    other.key_package()
    intruding = other.op(0, space=world.space)
    with pytest.raises(NotFoundError):
        await other_client.upload(world.space, [intruding.raw])
    pulled, _ = await client_for(app, world, 0, clock).pull(world.space)
    assert pulled == []


async def test_account_creation_is_idempotent_and_verifies(storage: RelayStorage,
                                                           clock: Clock) -> None:
    world, _app, client = await _setup(storage, clock)
    assert await client.create_account(world.entries[0]) == world.account.account_id
    tampered = bytearray(world.entries[0])
    tampered[-5] ^= 1
    with pytest.raises(SddsfError) as info:
        await client.create_account(bytes(tampered))
    assert info.value.code is Code.SIG_INVALID
    entries = await client.registry(world.account.account_id)
    assert entries == world.entries


async def test_wrong_registry_entry_is_refused(storage: RelayStorage, clock: Clock) -> None:
    world, _, client = await _setup(storage, clock)
    stranger = World()
    from sddsf.protocol import registry as reg

    bad = reg.add_device(world.state, stranger.devices[0], stranger.devices[1], "x", T0)
    with pytest.raises(AuthorizationError):
        await client.append_registry(world.account.account_id, bad)
    assert await client.registry(world.account.account_id) == world.entries


async def test_rate_limited_error_type(storage: RelayStorage, clock: Clock) -> None:
    _world, _, client = await _setup(storage, clock, rate_device_per_s=0.001,
                                    rate_device_burst=3.0)
    with pytest.raises(RateLimitedError):
        for _ in range(10):
            await client.list_spaces()


async def test_unknown_session_token(storage: RelayStorage, clock: Clock) -> None:
    """A token the relay never issued is refused; the client then opens a new session
    by itself (a relay restart forgets every session)."""
    _world, app, client = await _setup(storage, clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        r = await http.get("/v1/spaces", headers={"authorization": "Bearer " + "A" * 43 + "="})
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    client._token = bytes(32)
    client._token_expires_ms = clock.now + 600_000
    assert len(await client.list_spaces()) == 1  # re-authenticated and retried once
    assert client._token != bytes(32)



async def test_pruning_waits_for_every_device_and_a_snapshot(storage: RelayStorage,
                                                             clock: Clock) -> None:
    world, app, laptop = await _setup(storage, clock)
    phone = client_for(app, world, 1, clock)
    ops = [world.op(0, text=f"v{i}".encode()) for i in range(5)]
    await laptop.upload(world.space, [o.raw for o in ops])
    assert await laptop.acknowledge(world.space, 4) == (4, 0)  # the phone has not acked
    assert await phone.acknowledge(world.space, 4) == (4, 0)  # no snapshot covers them
    assert await laptop.put_snapshot(world.space, world.doc, 2, b"sealed state") == 2
    # A per-document snapshot, which no reader loads, never allows pruning; the
    # whole-space snapshot does once a device other than its author attested it
    # (protocol.md 18.7).
    assert (await laptop.acknowledge(world.space, 1))[1] == 0  # acks never go back
    blob = seal_snapshot(world.devices[0], space=world.space, epoch=0,
                         epoch_key=world.epoch_keys[0], size=3,
                         frontier=merkle.MerkleTree(merkle.leaf_hash(o.raw)
                                                    for o in ops[:3]).frontier(),
                         chains={}, docs={}, ts_ms=clock.now, nonce=bytes(24))
    assert await laptop.put_snapshot(world.space, SPACE_SNAPSHOT_DOC, 2, blob) == 2
    assert (await laptop.acknowledge(world.space, 4))[1] == 0  # not corroborated yet
    await phone.attest_snapshot(world.space, SPACE_SNAPSHOT_DOC, attest_snapshot(
        world.devices[1], space=world.space, doc=SPACE_SNAPSHOT_DOC,
        snapshot=snapshot_id(blob), size=3, verdict=MATCH, ts_ms=clock.now))
    assert (await laptop.acknowledge(world.space, 4))[1] == 3
    pulled, head_raw = await phone.pull(world.space)
    assert [p.envelope is None for p in pulled] == [True, True, True, False, False]
    assert [p.leaf_hash for p in pulled] == [merkle.leaf_hash(o.raw) for o in ops]
    head = _head(head_raw, world)
    proof, _ = await phone.inclusion_proof(world.space, 0)
    merkle.verify_inclusion(merkle.leaf_hash(ops[0].raw), 0, head.size, proof, head.root)
    assert await phone.get_snapshot(world.space, world.doc) == (2, b"sealed state")
    with pytest.raises(SddsfError) as info:
        await laptop.acknowledge(world.space, 99)
    assert info.value.code is Code.USAGE
