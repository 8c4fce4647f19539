"""Shared spaces at the relay (protocol.md 21.7), on SQLite and PostgreSQL.

Three accounts: Alice owns a space and shares it with Bob (writer) and Carol
(reader); Dave is an outsider. Each refusal below leaves the log as it was.
"""

from __future__ import annotations

import pytest
from relaykit import T0, Clock, World, client_for, make_app

from sddsf.client.relay_client import RelayClient
from sddsf.errors import Code, SddsfError
from sddsf.protocol import audit, merkle
from sddsf.protocol import membership as ms
from sddsf.protocol.membership import MembershipState, Role
from sddsf.protocol.registry import RegistryState
from sddsf.protocol.treehead import decode_tree_head
from sddsf.relay.storage.base import RelayStorage


class Person:
    """One account with two devices, its relay clients and registry."""

    def __init__(self, app, clock: Clock, space: bytes | None = None) -> None:  # type: ignore[no-untyped-def]
        self.world = World() if space is None else World(space=space)
        self.world.add_device(1)
        self.clients = [client_for(app, self.world, i, clock) for i in (0, 1)]

    @property
    def c(self) -> RelayClient:
        return self.clients[0]

    @property
    def state(self) -> RegistryState:
        return self.world.state

    @property
    def account_id(self) -> bytes:
        return self.world.account.account_id

    async def register(self) -> None:
        await self.c.create_account(self.world.entries[0])
        await self.c.append_registry(self.account_id, self.world.entries[1])


async def _code(coro: object) -> str:
    try:
        await coro  # type: ignore[misc]
    except SddsfError as exc:
        return exc.code.value
    raise AssertionError("expected a refusal")


@pytest.fixture
async def people(storage: RelayStorage):  # type: ignore[no-untyped-def]
    clock = Clock()
    app = make_app(storage, clock)
    alice = Person(app, clock)
    bob, carol, dave = (Person(app, clock, space=alice.world.space) for _ in range(3))
    for p in (alice, bob, carol, dave):
        await p.register()
    pkg = alice.world.key_package()
    await alice.c.create_space(alice.world.space, pkg)
    for p in (bob, carol, dave):  # everyone seals under epoch 0 (the relay has no keys)
        p.world.epoch_keys = list(alice.world.epoch_keys)
    return alice, bob, carol, dave


class Membership:
    """Alice's view of the membership, folded as a client would."""

    def __init__(self, space: bytes, *people: Person) -> None:
        self.state = MembershipState.empty(space)
        self.regs = {p.account_id: p.state for p in people}

    def apply(self, entry: bytes) -> bytes:
        self.state = self.state.apply(entry, self.regs.get)
        return entry


async def _share(alice: Person, bob: Person, carol: Person) -> Membership:
    m = Membership(alice.world.space, alice, bob, carol)
    space = alice.world.space
    await alice.c.append_membership(space, m.apply(ms.create(space, alice.world.devices[0],
                                                             alice.state, T0)))
    for p, role in ((bob, Role.WRITER), (carol, Role.READER)):
        out = await alice.c.append_membership(space, m.apply(ms.add_member(
            m.state, alice.world.devices[0], alice.state, p.world.account.public, role, T0)))
        assert out.status == "accepted"
    return m


async def _size(c: RelayClient, space: bytes) -> int:
    return decode_tree_head(await c.tree_head(space)).size


async def test_members_reach_the_space_by_role(people) -> None:  # type: ignore[no-untyped-def]
    alice, bob, carol, dave = people
    space = alice.world.space
    # Before sharing, the space is Alice's alone.
    assert await _code(bob.c.pull(space)) == Code.NOT_FOUND.value
    m = await _share(alice, bob, carol)
    log = await bob.c.membership(space)
    assert log.owner == alice.account_id
    assert log.members == {alice.account_id: "admin", bob.account_id: "writer",
                           carol.account_id: "reader"}
    assert [ms.entry_hash(e) for _, e in log.entries] == list(m.state.applied)
    assert space in {s.space_id for s in await carol.c.list_spaces()}
    assert space not in {s.space_id for s in await dave.c.list_spaces()}

    # A writer's op (either device) is accepted; a reader's and an outsider's are not.
    results, _ = await bob.clients[1].upload(space, [bob.world.op(1).raw])
    assert results[0].status == "accepted"
    before = await _size(alice.c, space)
    results, _ = await carol.c.upload(space, [carol.world.op(0, record=False).raw])
    assert (results[0].status, results[0].code) == ("rejected", Code.NOT_AUTHORIZED.value)
    assert await _code(dave.c.upload(space, [dave.world.op(0, record=False).raw])) \
        == Code.NOT_FOUND.value
    # A member cannot carry an outsider's op either (ops are judged by author).
    results, _ = await bob.c.upload(space, [dave.world.op(0, record=False).raw])
    assert (results[0].status, results[0].code) == ("rejected", Code.NOT_AUTHORIZED.value)
    assert await _size(alice.c, space) == before

    # Every member reads the whole log; entries are marked and covered by the tree head.
    ops, head = await carol.c.pull(space)
    kinds = [o.envelope[:1] for o in ops if o.envelope is not None]
    assert kinds.count(b"\x83") == 3 and kinds.count(b"\x84") == 1
    th = decode_tree_head(head)
    assert merkle.root_of([merkle.leaf_hash(o.envelope or b"") for o in ops]) == th.root
    # Members read each other's registries (to verify each other's devices); outsiders not.
    assert await bob.c.registry(alice.account_id)
    assert await _code(dave.c.registry(alice.account_id)) == Code.NOT_AUTHORIZED.value


async def test_membership_refusals_change_nothing(people) -> None:  # type: ignore[no-untyped-def]
    alice, bob, carol, dave = people
    space = alice.world.space
    m = await _share(alice, bob, carol)
    size = await _size(alice.c, space)
    dev = bob.world.devices[0]
    # A writer cannot change membership; neither can a reader.
    bob_view = Membership(space, alice, bob, carol, dave)
    for _, e in (await bob.c.membership(space)).entries:
        bob_view.apply(e)
    add_dave = ms.add_member(bob_view.state, dev, bob.state, dave.world.account.public,
                             Role.WRITER, T0)
    assert await _code(bob.c.append_membership(space, add_dave)) == Code.NOT_AUTHORIZED.value
    promote = ms.change_role(bob_view.state, carol.world.devices[0], carol.state,
                             carol.account_id, Role.ADMIN, T0)
    assert await _code(carol.c.append_membership(space, promote)) \
        == Code.NOT_AUTHORIZED.value
    # Nobody but the owner creates the membership, even of a space it can reach.
    again = ms.create(space, bob.world.devices[0], bob.state, T0)
    assert await _code(bob.c.append_membership(space, again)) == Code.NOT_AUTHORIZED.value
    # The last admin cannot leave.
    alone = ms.leave(m.state, alice.world.devices[0], alice.state, T0)
    assert await _code(alice.c.append_membership(space, alone)) \
        == Code.MEMBERSHIP_INVALID.value
    assert await _size(alice.c, space) == size
    assert (await alice.c.membership(space)).members[bob.account_id] == "writer"


async def test_removed_member_is_cut_off_and_a_replayed_add_does_not_return_it(people) -> None:  # type: ignore[no-untyped-def]
    alice, bob, carol, _ = people
    space = alice.world.space
    m = await _share(alice, bob, carol)
    add_bob = (await alice.c.membership(space)).entries[1][1]
    results, _ = await bob.c.upload(space, [bob.world.op(0).raw])
    assert results[0].status == "accepted"
    await alice.c.append_membership(space, m.apply(ms.remove_member(
        m.state, alice.world.devices[0], alice.state, bob.account_id, T0)))
    # Bob's devices no longer reach the space, and cannot write into it.
    assert await _code(bob.c.pull(space)) == Code.NOT_FOUND.value
    assert await _code(bob.clients[1].upload(space, [bob.world.op(1).raw])) \
        == Code.NOT_FOUND.value
    assert space not in {s.space_id for s in await bob.c.list_spaces()}
    # Re-sending the old add is an idempotent duplicate at its old offset, not a re-add.
    out = await alice.c.append_membership(space, add_bob)
    assert out.status == "duplicate" and bob.account_id not in out.members
    assert await _code(bob.c.pull(space)) == Code.NOT_FOUND.value


async def test_entry_of_a_revoked_device_is_refused(people) -> None:  # type: ignore[no-untyped-def]
    alice, bob, carol, _ = people
    space = alice.world.space
    m = await _share(alice, bob, carol)
    stale_registry = alice.state  # what device 1 saw before it was revoked
    await alice.c.append_registry(alice.account_id, alice.world.revoke(1))
    late = ms.change_role(m.state, alice.world.devices[1], stale_registry, carol.account_id,
                          Role.WRITER, T0)
    assert await _code(alice.c.append_membership(space, late)) == Code.REVOKED.value
    assert (await alice.c.membership(space)).members[carol.account_id] == "reader"


async def test_two_admins_racing_get_one_order(people) -> None:  # type: ignore[no-untyped-def]
    alice, bob, carol, _ = people
    space = alice.world.space
    m = await _share(alice, bob, carol)
    await alice.c.append_membership(space, m.apply(ms.change_role(
        m.state, alice.world.devices[0], alice.state, bob.account_id, Role.ADMIN, T0)))
    # Both admins sign a removal of the other from the same state, offline.
    by_alice = ms.remove_member(m.state, alice.world.devices[0], alice.state,
                                bob.account_id, T0)
    by_bob = ms.remove_member(m.state, bob.world.devices[0], bob.state, alice.account_id, T0)
    assert (await alice.c.append_membership(space, by_alice)).status == "accepted"
    # The first in the log wins: Bob is no longer a member, so his entry cannot land.
    assert await _code(bob.c.append_membership(space, by_bob)) == Code.NOT_FOUND.value
    log = await alice.c.membership(space)
    assert log.members == {alice.account_id: "admin", carol.account_id: "reader"}
    assert ms.fold(space, [e for _, e in log.entries], m.regs.get).state.members.keys() \
        == {alice.account_id, carol.account_id}


async def test_membership_is_audited_for_every_member_and_registry_changes_alerted(
        people) -> None:  # type: ignore[no-untyped-def]
    alice, bob, carol, _ = people
    space = alice.world.space
    m = await _share(alice, bob, carol)
    await alice.c.append_membership(space, m.apply(ms.remove_member(
        m.state, alice.world.devices[0], alice.state, carol.account_id, T0)))

    async def changes(p: Person) -> list[tuple[str, bytes]]:
        entries, _ = await p.c.audit_page()
        return [(str(e.data["change"]), bytes(e.data["member"]))  # type: ignore[arg-type]
                for e in map(audit.decode_entry, (raw for _, raw in entries))
                if e.kind is audit.AuditKind.MEMBERSHIP]

    every = [("create", alice.account_id), ("add", bob.account_id),
             ("add", carol.account_id), ("remove", carol.account_id)]
    assert await changes(alice) == every
    assert await changes(bob) == every[1:]  # from the entry that made it a member
    assert await changes(carol) == every[2:]  # its removal included
    # Bob's account adds a device: Alice (still sharing with Bob) is alerted, Carol not.
    await bob.c.append_registry(bob.account_id, bob.world.add_device(2))
    assert [a.rule for a in await alice.c.alerts()] == ["member_registry_changed"]
    assert "member_registry_changed" not in {a.rule for a in await carol.c.alerts()}
