"""The relay's refusals, through its HTTP API (in process, SQLite).

* THREATS #1: an op with random signature bytes, one signed by another
  device's key, and a valid signature moved onto different bytes are each
  refused ``sig_invalid``; nothing is stored and the ``sddsf_ops_total``
  counter for ``rejected/sig_invalid`` grows by exactly three. A request signed
  by another device's key is refused 401 before it does anything.
* THREATS #8: for any forward jump k >= 1 (up to 2^63), an op at seq = head + 1
  + k is refused ``chain_gap`` and leaves no state behind: the relay buffers
  nothing, and the next op in sequence is still accepted.
"""

from __future__ import annotations

import json

import httpx
from clusterkit import LONG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relaykit import Clock, World, client_for, make_app

from sddsf.crypto import random_bytes
from sddsf.protocol import auth
from sddsf.protocol.encoding import encode
from sddsf.protocol.envelope import FORMAT_VERSION
from sddsf.relay.storage.base import RelayStorage
from sddsf.wire import b64


async def rejected_sig_invalid(app: object) -> float:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                                 base_url="http://t") as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("sddsf_ops_total{") and 'code="sig_invalid"' in line \
                and 'result="rejected"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_forged_signatures_are_refused_counted_and_leave_no_trace(
        sqlite_storage: RelayStorage) -> None:
    clock = Clock()
    app = make_app(sqlite_storage, clock)
    world = World()
    world.add_device(1)
    c = client_for(app, world, 0, clock)
    await c.create_account(world.entries[0])
    await c.append_registry(world.account.account_id, world.entries[1])
    await c.create_space(world.space, world.key_package())
    before = await rejected_sig_invalid(app)

    base = world.op(0, text=b"base", record=False)
    random_sig = encode([FORMAT_VERSION, base.header_bytes, base.ciphertext, random_bytes(64)])
    other_key = encode([FORMAT_VERSION, base.header_bytes, base.ciphertext,
                        world.devices[1].sign(base.signed_message())])
    moved = world.op(0, text=b"other bytes", record=False)  # same seq, other ciphertext
    moved_sig = encode([FORMAT_VERSION, moved.header_bytes, moved.ciphertext, base.signature])
    results, _ = await c.upload(world.space, [random_sig, other_key, moved_sig])
    assert [(r.status, r.code) for r in results] == [("rejected", "sig_invalid")] * 3
    assert await rejected_sig_invalid(app) == before + 3
    assert (await c.pull(world.space))[0] == []
    assert await sqlite_storage.fork_evidence(world.space) == []  # forged bytes are no evidence

    # A request on this device's session, signed by another device's key.
    assert c._token is not None
    body = json.dumps({"ops": [b64(world.op(0, record=False).raw)]}).encode()
    path = f"/v1/spaces/{b64(world.space)}/ops"
    nonce, ts = random_bytes(auth.NONCE_SIZE), clock()
    sig = world.devices[1].sign(auth.request_message("POST", path, body, nonce, ts,
                                                     auth.token_hash(c._token)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                                 base_url="http://t") as http:
        r = await http.post(path, content=body, headers={
            "authorization": f"Bearer {b64(c._token)}", "content-type": "application/json",
            "x-sddsf-nonce": b64(nonce), "x-sddsf-timestamp": str(ts),
            "x-sddsf-signature": b64(sig)})
    assert (r.status_code, r.json()["code"]) == (401, "unauthenticated")
    assert (await c.pull(world.space))[0] == []


@settings(max_examples=50 if LONG else 8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jump=st.one_of(st.integers(1, 64), st.integers(65, 2**63 - 2)))
async def test_any_forward_jump_is_refused_without_buffering(sqlite_storage: RelayStorage,
                                                              jump: int) -> None:
    # One storage for every example (the fixture is shared); each its own account.
    clock = Clock()
    app = make_app(sqlite_storage, clock)
    world = World()
    c = client_for(app, world, 0, clock)
    await c.create_account(world.entries[0])
    await c.create_space(world.space, world.key_package())
    first = world.op(0)
    await c.upload(world.space, [first.raw])
    gap = world.op(0, seq=1 + 1 + jump, record=False)
    (r,), _ = await c.upload(world.space, [gap.raw])
    assert (r.status, r.code) == ("rejected", "chain_gap")
    nxt = world.op(0)
    (ok,), _ = await c.upload(world.space, [nxt.raw])
    assert (ok.status, ok.offset) == ("accepted", 1)
    ops = await sqlite_storage.read_ops(world.space, -1, 10)
    assert [o.op_id for o in ops] == [first.op_id, nxt.op_id]
