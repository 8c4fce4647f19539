"""The conformance suite every :class:`~sddsf.client.transport.base.Transport` passes.

Each check is an ``async`` function taking a :data:`TransportFactory` (given a
device's keys and account id, it returns a fresh transport for that device into
one log holder); it builds a new account with one space through the transport,
then checks one clause of the contract written in
:mod:`sddsf.client.transport.base`. A test module parametrises over
implementations and :data:`CHECKS`::

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    async def test_conformance(check, factory):
        await check(factory)

Checks raise :class:`AssertionError` on a breach; every signed answer is
verified with :mod:`sddsf.protocol` (tree heads against the relay id the
session reported, proofs against the heads).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sddsf.client.transport.base import OpNotice, SubscribedNotice, Transport
from sddsf.crypto import Ed25519PublicKey, random_bytes
from sddsf.errors import AuthorizationError, Code, NotFoundError, SddsfError
from sddsf.protocol import keypackage as kp
from sddsf.protocol import merkle
from sddsf.protocol import registry as reg
from sddsf.protocol.clock import HLCTimestamp
from sddsf.protocol.envelope import GENESIS_PREV, OpEnvelope, OpHeader, seal_op
from sddsf.protocol.identity import AccountKeys, DeviceKeys
from sddsf.protocol.payload import encode_edit
from sddsf.protocol.presence import (
    Presence,
    decode_presence,
    open_presence,
    seal_presence,
    verify_presence,
)
from sddsf.protocol.treehead import TreeHead, verify_tree_head
from sddsf.protocol.vv import VersionVector

__all__ = ["CHECKS", "Account", "TransportFactory", "new_account"]

#: ``factory(device keys, account id)`` -> a new transport for that device.
TransportFactory = Callable[[DeviceKeys, bytes], Awaitable[Transport]]
#: No check waits longer than this for a live notification (seconds).
LIVE_TIMEOUT_S = 10.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Account:
    """A new account with one device and one space (epoch 0), reached through
    ``transport``; :meth:`op` makes the device's next op."""

    transport: Transport
    account: AccountKeys
    device: DeviceKeys
    genesis: bytes
    space_id: bytes
    package: bytes
    epoch_key: bytes
    _head: tuple[int, bytes] = (0, GENESIS_PREV)
    sent: list[OpEnvelope] = field(default_factory=list)

    def op(self, text: str = "edit") -> OpEnvelope:
        """The device's next op (one edit of document ``conformance``)."""
        seq, prev = self._head[0] + 1, self._head[1]
        header = OpHeader(space=self.space_id, doc=bytes(16), author=self.device.device_id,
                          seq=seq, prev=prev, deps=VersionVector(), epoch=0,
                          ts=HLCTimestamp(_now_ms(), 0), seen=None, nonce=random_bytes(24))
        env = seal_op(self.device, header, encode_edit("conformance", [text.encode()]),
                      self.epoch_key)
        self._head = (seq, env.op_id)
        self.sent.append(env)
        return env

    def head(self, raw: bytes) -> TreeHead:
        """``raw`` verified as a tree head of the space, signed by the relay id."""
        rid = self.transport.relay_id
        _expect(rid is not None, "a relay id after a session")
        return verify_tree_head(raw, Ed25519PublicKey.from_bytes(rid or b""), log=self.space_id)


async def new_account(factory: TransportFactory) -> Account:
    """Create an account, its first device and a space through a new transport."""
    account = AccountKeys.from_secret(random_bytes(32))
    device = DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))
    transport = await factory(device, account.account_id)
    now = _now_ms()
    genesis = reg.genesis(account, device, "conformance", now)
    created = await transport.create_account(genesis)
    _expect(created == account.account_id, "create_account to answer the account id")
    state = reg.verify_registry([genesis], pinned=account.public)
    space_id, epoch_key = random_bytes(16), random_bytes(32)
    package = kp.build_key_package(creator=device, registry=state, space=space_id, epoch=0,
                                   prev=bytes(32), epoch_key=epoch_key, ts_ms=now)
    info = await transport.create_space(space_id, package)
    _expect(info.space_id == space_id and info.size == 0, "a new, empty space")
    return Account(transport, account, device, genesis, space_id, package, epoch_key)


def _expect(condition: object, what: str) -> None:
    """A breach of the contract: ``what`` should hold."""
    if not condition:
        raise AssertionError(f"transport contract: expected {what}")


# ------------------------------------------------------------------- checks
async def check_session_single_flight(factory: TransportFactory) -> None:
    """Concurrent session openings share one session and report the relay id."""
    a = await new_account(factory)
    try:
        a.transport.forget_session()
        first, second = await asyncio.gather(a.transport.open_session(),
                                             a.transport.open_session())
        _expect(first == second and first.relay_id == a.transport.relay_id,
                "one shared session naming the relay")
        _expect(len(first.relay_id) == 32, "a 32-byte relay id")
    finally:
        await a.transport.aclose()


async def check_registry_and_key_packages(factory: TransportFactory) -> None:
    """What was stored is served back: the registry and the space's packages."""
    a = await new_account(factory)
    try:
        entries = await a.transport.registry(a.account.account_id, 0)
        _expect(entries == [a.genesis], "the registry as stored")
        later = await a.transport.registry(a.account.account_id, 1)
        _expect(later == [], "no entries after the last one")
        packages = await a.transport.key_packages(a.space_id, 0)
        _expect(packages == [a.package], "the key packages as stored")
        spaces = [s.space_id for s in await a.transport.spaces()]
        _expect(spaces == [a.space_id], "the account's one space")
    finally:
        await a.transport.aclose()


async def check_push_is_idempotent(factory: TransportFactory) -> None:
    """A pushed op is accepted with a proof; pushing it again answers duplicate at
    the same offset, and the log does not grow."""
    a = await new_account(factory)
    try:
        env = a.op()
        first = await a.transport.push(a.space_id, [env.raw])
        again = await a.transport.push(a.space_id, [env.raw])
        for result, status in ((first, "accepted"), (again, "duplicate")):
            [ack] = result.acks
            _expect(ack.status == status and ack.offset == 0 and ack.proof is not None,
                    f"{status} at offset 0 with a proof")
            head = a.head(result.tree_head)
            _expect(head.size == 1, "a log of one entry")
            merkle.verify_inclusion(merkle.leaf_hash(env.raw), 0, head.size, ack.proof or [],
                                    head.root)
    finally:
        await a.transport.aclose()


async def check_pull_order_and_cursor(factory: TransportFactory) -> None:
    """Pages come in offset order after the cursor, at most ``limit`` long, each op
    hashing to its leaf, and together they reproduce the signed root."""
    a = await new_account(factory)
    try:
        envs = [a.op(f"edit {i}") for i in range(5)]
        await a.transport.push(a.space_id, [e.raw for e in envs[:2]])
        await a.transport.push(a.space_id, [e.raw for e in envs[2:]])
        seen: list[bytes] = []
        cursor = -1
        while True:
            page = await a.transport.pull(a.space_id, cursor, 2)
            _expect(len(page.ops) <= 2, "at most limit ops")
            if not page.ops:
                break
            for op in page.ops:
                _expect(op.offset == cursor + 1, "the next offset after the cursor")
                envelope = op.envelope or b""
                _expect(merkle.leaf_hash(envelope) == op.leaf_hash,
                        "an envelope hashing to its leaf")
                seen.append(envelope)
                cursor = op.offset
        _expect(seen == [e.raw for e in envs], "every pushed op, in order")
        head = a.head(page.tree_head)
        root = merkle.root_of([merkle.leaf_hash(e) for e in seen])
        _expect(head.size == 5 and head.root == root, "the pages to reproduce the signed root")
    finally:
        await a.transport.aclose()


async def check_prefetch_answers_as_the_endpoints(factory: TransportFactory) -> None:
    """A prefetched first-sync bundle (where offered) answers reads with what the
    endpoints serve, and a write makes later reads ask the other side again."""
    a = await new_account(factory)
    try:
        envs = [a.op(f"edit {i}") for i in range(3)]
        await a.transport.push(a.space_id, [e.raw for e in envs])

        async def reads() -> tuple[object, ...]:
            page = await a.transport.pull(a.space_id, -1, 10)
            head = a.head(page.tree_head)
            return (await a.transport.registry(a.account.account_id, 0),
                    await a.transport.registry(a.account.account_id, 1),
                    await a.transport.spaces(), await a.transport.key_packages(a.space_id, 0),
                    [(o.offset, o.op_id, o.leaf_hash, o.envelope) for o in page.ops],
                    (head.size, head.root))
        await a.transport.prefetch_first_sync()
        prefetched = await reads()
        a.transport.end_prefetch()
        _expect(prefetched == await reads(), "the bundle's answers to be the endpoints'")
        await a.transport.prefetch_first_sync()
        await a.transport.push(a.space_id, [a.op("after").raw])
        page = await a.transport.pull(a.space_id, -1, 10)
        _expect(len(page.ops) == 4, "reads after a write to ask the other side")
        a.transport.end_prefetch()
    finally:
        await a.transport.aclose()


async def check_proofs_verify(factory: TransportFactory) -> None:
    """Inclusion and consistency proofs verify against the signed heads."""
    a = await new_account(factory)
    try:
        envs = [a.op(f"edit {i}") for i in range(5)]
        await a.transport.push(a.space_id, [e.raw for e in envs])
        leaves = [merkle.leaf_hash(e.raw) for e in envs]
        inclusion = await a.transport.inclusion_proof(a.space_id, 2)
        head = a.head(inclusion.tree_head)
        merkle.verify_inclusion(leaves[2], 2, head.size, list(inclusion.hashes), head.root)
        consistency = await a.transport.consistency_proof(a.space_id, 2, 5)
        head = a.head(consistency.tree_head)
        _expect(head.size == 5, "a head of size 5")
        merkle.verify_consistency(2, 5, merkle.root_of(leaves[:2]), head.root,
                                  list(consistency.hashes))
        current = a.head(await a.transport.tree_head(a.space_id))
        _expect(current.root == head.root, "the current head to match")
    finally:
        await a.transport.aclose()


async def check_subscribe_delivers_a_pushed_op(factory: TransportFactory) -> None:
    """A subscription starts with the log's size, then tells of a pushed op."""
    a = await new_account(factory)
    live = a.transport.subscribe([a.space_id])
    try:
        first = await asyncio.wait_for(anext(live), LIVE_TIMEOUT_S)
        _expect(first == SubscribedNotice(a.space_id, 0), "a subscription at size 0")
        await a.transport.push(a.space_id, [a.op().raw])
        notice = await asyncio.wait_for(anext(live), LIVE_TIMEOUT_S)
        _expect(notice == OpNotice(a.space_id, 0), "a notice of the op at offset 0")
    finally:
        await live.aclose()  # type: ignore[attr-defined]
        await a.transport.aclose()


async def check_errors_are_typed(factory: TransportFactory) -> None:
    """Failures are SddsfError with stable codes: an unknown space is
    ``not_found``; a malformed op is refused with a code, in its ack."""
    a = await new_account(factory)
    try:
        unknown = random_bytes(16)
        for call in (a.transport.pull(unknown), a.transport.key_packages(unknown),
                     a.transport.get_snapshot(a.space_id, bytes(16))):
            try:
                await call
            except NotFoundError as exc:
                _expect(exc.code is Code.NOT_FOUND, "the code not_found")
            else:
                raise AssertionError("an unknown space or snapshot was served")
        result = await a.transport.push(a.space_id, [b"not an envelope"])
        [ack] = result.acks
        codes = {c.value for c in Code}
        _expect(ack.status == "rejected" and ack.code in codes and ack.offset is None,
                "a rejection with a stable code")
    except SddsfError as exc:
        raise AssertionError(f"unexpected [{exc.code.value}] {exc.message}") from exc
    finally:
        await a.transport.aclose()


async def check_revocation_ends_a_subscription(factory: TransportFactory) -> None:
    """A device revoked while subscribed: its live channel ends with
    ``AuthorizationError`` (code ``revoked``), the same on every transport, so the
    engine tells a revocation from a network failure and stops retrying."""
    a = await new_account(factory)
    other = DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))
    state = reg.verify_registry([a.genesis], pinned=a.account.public)
    added = reg.add_device(state, a.device, other, "revoked-later", _now_ms())
    await a.transport.append_registry(a.account.account_id, added)
    state = state.apply(added)
    theirs = await factory(other, a.account.account_id)
    live = theirs.subscribe([a.space_id])
    try:
        first = await asyncio.wait_for(anext(live), LIVE_TIMEOUT_S)
        _expect(isinstance(first, SubscribedNotice), "a subscription")
        revoke = reg.revoke_device(state, a.device, other.device_id, "lost", _now_ms())
        await a.transport.append_registry(a.account.account_id, revoke)
        try:
            while True:  # notices before the close are allowed; the end is not
                await asyncio.wait_for(anext(live), LIVE_TIMEOUT_S)
        except AuthorizationError as exc:
            _expect(exc.code is Code.REVOKED, f"the code revoked, not {exc.code.value}")
        except StopAsyncIteration:
            raise AssertionError("transport contract: expected the revoked device's "
                                 "subscription to end with AuthorizationError, not "
                                 "a normal end") from None
        except SddsfError as exc:
            raise AssertionError(f"transport contract: expected AuthorizationError "
                                 f"[revoked], got {type(exc).__name__} "
                                 f"[{exc.code.value}]") from None
    finally:
        await live.aclose()  # type: ignore[attr-defined]
        await theirs.aclose()
        await a.transport.aclose()


async def check_presence_round_trips(factory: TransportFactory) -> None:
    """A published presence record is served back as it was sent, verifies and
    opens; publishing again replaces it; an unknown space is ``not_found``."""
    a = await new_account(factory)
    try:
        def record(peer: str) -> bytes:
            return seal_presence(a.device, space=a.space_id, epoch=0, epoch_key=a.epoch_key,
                                 peer=peer, addrs=["/ip4/127.0.0.1/tcp/4001"],
                                 now_ms=_now_ms(), ttl_ms=60_000, nonce=random_bytes(24))
        first, second = record("12D3KooWfirst"), record("12D3KooWsecond")
        await a.transport.put_presence(a.space_id, first)
        _expect(await a.transport.presence(a.space_id) == [first], "the record as published")
        await a.transport.put_presence(a.space_id, second)
        [served] = await a.transport.presence(a.space_id)
        _expect(served == second, "the device's newer record replacing the older")
        decoded = decode_presence(served)
        verify_presence(decoded, a.device.public, space=a.space_id, now_ms=_now_ms())
        _expect(open_presence(decoded, a.epoch_key) == Presence(
            "12D3KooWsecond", ("/ip4/127.0.0.1/tcp/4001",), decoded.expires_ms - 60_000),
                "the record to open to what was sealed")
        unknown = random_bytes(16)
        for call in (a.transport.presence(unknown), a.transport.put_presence(unknown, second)):
            try:
                await call
            except NotFoundError:
                continue
            raise AssertionError("transport contract: expected not_found for an unknown space")
    except SddsfError as exc:
        raise AssertionError(f"unexpected [{exc.code.value}] {exc.message}") from exc
    finally:
        await a.transport.aclose()


#: Every check of the contract, in the order a reader meets the clauses.
CHECKS = (check_session_single_flight, check_registry_and_key_packages,
          check_push_is_idempotent, check_pull_order_and_cursor,
          check_prefetch_answers_as_the_endpoints, check_proofs_verify,
          check_subscribe_delivers_a_pushed_op, check_errors_are_typed,
          check_revocation_ends_a_subscription, check_presence_round_trips)
