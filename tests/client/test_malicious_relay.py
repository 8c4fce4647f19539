"""A device against a malicious relay (THREATS #9-13, #23).

Two (or three) real devices exchange real ops through
:class:`sddsf.testing.malicious_relay.MaliciousRelay`, a transport in front of
the real relay app that lies to the victim. For every attack the victim's
``sync()`` must raise the specific error, leave its local state (documents,
verified leaves, tree head, chains) exactly as it was, and, once the relay is
honest again, a new sync must succeed and converge with the other device.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest
from clientkit import InProcessRelay
from relaykit import Clock

from sddsf.client.device import Device
from sddsf.crypto import Ed25519SigningKey, random_bytes
from sddsf.errors import Code, ProofError
from sddsf.protocol.treehead import decode_tree_head
from sddsf.relay.storage import open_storage
from sddsf.relay.storage.base import RelayStorage
from sddsf.testing.malicious_relay import (
    Attack,
    BadHead,
    Drop,
    Duplicate,
    Forge,
    MaliciousRelay,
    Overlap,
    Reorder,
    Rewrite,
    Rollback,
    Withhold,
    clone_relay_app,
    copy_sqlite_database,
)


class HarnessedRelay(InProcessRelay):
    """clientkit's in-process relay, reached by every device through the harness."""

    def __init__(self, storage: RelayStorage, clock: Clock, db: Path) -> None:
        super().__init__(storage, clock)
        self.db = db
        self.harness = MaliciousRelay(httpx.ASGITransport(app=self.app))
        self.extra: list[RelayStorage] = []

    def transport(self) -> httpx.AsyncBaseTransport:
        return self.harness

    async def fork(self, tmp_path: Path, name: str, *,
                   relay_key: Ed25519SigningKey | None = None) -> None:
        """A second backend over a copy of the database as it is now."""
        copy = tmp_path / f"relay-{name}.db"
        copy_sqlite_database(self.db, copy)
        storage = open_storage(f"sqlite:///{copy}")
        await storage.open()
        self.extra.append(storage)
        self.harness.add_backend(name, httpx.ASGITransport(
            app=clone_relay_app(self.app, storage, relay_key=relay_key)))


@dataclass
class Pair:
    relay: HarnessedRelay
    harness: MaliciousRelay
    laptop: Device
    phone: Device
    space: bytes


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[HarnessedRelay]:
    db = tmp_path / "relay.db"
    storage: RelayStorage = open_storage(f"sqlite:///{db}")
    await storage.open()
    r = HarnessedRelay(storage, Clock(time.time_ns() // 1_000_000), db)
    yield r
    for extra in r.extra:
        await extra.close()
    await storage.close()


@pytest.fixture
async def pair(relay: HarnessedRelay, tmp_path: Path) -> AsyncIterator[Pair]:
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    phone = await relay.add(laptop, tmp_path / "phone", "phone")
    await laptop.sync()
    await phone.sync()
    yield Pair(relay, relay.harness, laptop, phone, space)
    await laptop.close()
    await phone.close()


# ----------------------------------------------------------------------- helpers
def kv(device: Device, space: bytes) -> dict[str, Any]:
    return dict(device.doc(space, "kv").get("kv", type=pycrdt.Map))


def edit(device: Device, space: bytes, key: str, value: str) -> None:
    device.doc(space, "kv").get("kv", type=pycrdt.Map)[key] = value


async def write(device: Device, space: bytes, key: str, value: str) -> None:
    """One op: an edit, then a sync that pushes it."""
    edit(device, space, key, value)
    await device.sync()


def local_state(device: Device, space: bytes) -> dict[str, Any]:
    """Everything a bad sync must leave untouched."""
    return {"kv": kv(device, space),
            "docs": device.store.scan("doc", space),
            "leaves": device.store.scan("leaf", space),
            "ops": device.store.scan("op", space),
            "chains": device.store.scan("chain", space),
            "head": device.store.get("head", space)}


def head_of(device: Device, space: bytes) -> tuple[int, bytes]:
    raw = device.store.get("head", space)
    assert raw is not None
    th = decode_tree_head(raw)
    return th.size, th.root


async def log_size(p: Pair, backend: str = "main") -> int:
    return len(await p.harness.log(p.space, backend))


async def refused(p: Pair, victim: Device, attack: Attack | None, code: Code,
                  *fragments: str) -> ProofError:
    """Arm ``attack`` against ``victim`` (None: already armed / routed), sync,
    and check the refusal and that nothing local changed."""
    victim.flush()  # local edits become pending ops: not part of what the sync may change
    before = local_state(victim, p.space)
    served = p.harness.served
    if attack is not None:
        p.harness.set_attack(attack, victims={victim.device_id}, spaces={p.space})
    with pytest.raises(ProofError) as info:
        await victim.sync()
    err = info.value
    assert err.code is code, err
    for fragment in fragments:
        assert fragment in err.message, err
    assert local_state(victim, p.space) == before
    if attack is not None:
        assert p.harness.served > served, "the attack never fired"
    return err


async def heals(p: Pair, expected: dict[str, Any]) -> None:
    """Honest again: both devices sync, agree on the log and converge."""
    p.harness.honest()
    for _ in range(2):
        await p.laptop.sync()
        await p.phone.sync()
    assert kv(p.laptop, p.space) == kv(p.phone, p.space) == expected
    assert head_of(p.laptop, p.space) == head_of(p.phone, p.space)
    assert head_of(p.phone, p.space)[0] == await log_size(p)


async def two_laptop_ops(p: Pair) -> tuple[int, int]:
    """The laptop writes two ops (same author, chained); returns their offsets."""
    await write(p.laptop, p.space, "a", "1")
    await write(p.laptop, p.space, "b", "2")
    size = await log_size(p)
    return size - 2, size - 1


# -------------------------------------------------------------- drop (THREATS #9)
_DROPS: list[tuple[str, Callable[[int, int], Attack], str]] = [
    ("offsets kept: a hole", lambda a, b: Drop(offsets=frozenset({a})),
     "skipped or repeated log offsets"),
    ("renumbered under the genuine head", lambda a, b: Drop(offsets=frozenset({a}),
                                                            renumber=True),
     "do not reproduce its signed tree head"),
    ("re-signed: a hole in the author's chain", lambda a, b: Drop(offsets=frozenset({a}),
                                                                  resign=True),
     "fails the rules: [chain_"),
    ("the last op, renumbered: the log falls short of the head",
     lambda a, b: Drop(offsets=frozenset({b}), renumber=True),
     "do not reproduce its signed tree head"),
]


@pytest.mark.parametrize(("attack", "fragment"), [(a, f) for _, a, f in _DROPS],
                         ids=[i for i, _, _ in _DROPS])
async def test_omitted_op_is_refused(pair: Pair, attack: Callable[[int, int], Attack],
                                     fragment: str) -> None:
    a, b = await two_laptop_ops(pair)
    await refused(pair, pair.phone, attack(a, b), Code.PROOF_INVALID, fragment)
    assert "a" not in kv(pair.phone, pair.space)
    await heals(pair, {"a": "1", "b": "2"})


async def test_omitting_the_victims_own_acknowledged_op_is_refused(pair: Pair) -> None:
    p = pair
    await write(p.laptop, p.space, "a", "1")
    mine = await log_size(p)
    edit(p.phone, p.space, "mine", "p")
    # the push is honest (acked at `mine`); the pull is refused (bad head), so
    # the phone holds an ack beyond what it verified
    await refused(p, p.phone, BadHead("signature"), Code.TREE_HEAD_INVALID)
    assert p.phone.pending_count() == 0
    p.harness.honest()
    await write(p.laptop, p.space, "b", "2")  # after the phone's op
    # the phone's op vanishes from a re-signed log: the laptop's op takes its place
    await refused(p, p.phone, Drop(offsets=frozenset({mine}), resign=True),
                  Code.PROOF_INVALID, "acknowledged op")
    await heals(p, {"a": "1", "b": "2", "mine": "p"})


async def test_withheld_envelope_is_refused(pair: Pair) -> None:
    """The relay serves an op's leaf hash without its envelope, as if pruned by a
    snapshot. The root still matches; the content never arrives. No snapshot
    covers it (the device has none, and has not acknowledged that op), so the
    device must refuse rather than silently skip the op."""
    _, b = await two_laptop_ops(pair)
    await refused(pair, pair.phone, Withhold(b), Code.PROOF_INVALID)
    await heals(pair, {"a": "1", "b": "2"})


# ---------------------------------------------------- reorder (THREATS #10, #23)
_REORDERS: list[tuple[str, Callable[[int, int], Attack], str]] = [
    ("offsets travel with the ops", Reorder,
     "skipped or repeated log offsets"),
    ("renumbered under the genuine head", lambda a, b: Reorder(a, b, renumber=True),
     "do not reproduce its signed tree head"),
    ("re-signed: one author's chain out of order", lambda a, b: Reorder(a, b, resign=True),
     "fails the rules: [chain_"),
    ("duplicate delivery in one page", lambda a, b: Duplicate(a),
     "skipped or repeated log offsets"),
]


@pytest.mark.parametrize(("attack", "fragment"), [(a, f) for _, a, f in _REORDERS],
                         ids=[i for i, _, _ in _REORDERS])
async def test_reordered_or_duplicated_page_is_refused(
        pair: Pair, attack: Callable[[int, int], Attack], fragment: str) -> None:
    a, b = await two_laptop_ops(pair)
    await refused(pair, pair.phone, attack(a, b), Code.PROOF_INVALID, fragment)
    await heals(pair, {"a": "1", "b": "2"})


async def test_overlapping_backfill_is_refused(pair: Pair) -> None:
    """Re-delivering ops the device already has (pub/sub + backfill overlap): the
    pull protocol is offset-exact, so the device refuses instead of deduping."""
    await write(pair.laptop, pair.space, "a", "1")
    await pair.phone.sync()
    await write(pair.laptop, pair.space, "b", "2")
    await refused(pair, pair.phone, Overlap(1), Code.PROOF_INVALID,
                  "skipped or repeated log offsets")
    await heals(pair, {"a": "1", "b": "2"})


async def test_reordering_the_victims_own_op_under_a_new_head_is_refused(pair: Pair) -> None:
    await write(pair.laptop, pair.space, "a", "1")
    size = await log_size(pair)
    edit(pair.phone, pair.space, "mine", "p")  # pushed at `size` by the next sync
    await refused(pair, pair.phone, Reorder(size - 1, size, resign=True),
                  Code.PROOF_INVALID, "acknowledged op")
    await heals(pair, {"a": "1", "mine": "p"})


# -------------------------------------------------------------------- rewrite
_REWRITES: list[tuple[str, Callable[[int, int], Attack], str]] = [
    ("bit flip, leaf hash kept", lambda a, b: Rewrite(b), "does not match its leaf hash"),
    ("bit flip, leaf hash recomputed", lambda a, b: Rewrite(b, fix_leaf_hash=True),
     "do not reproduce its signed tree head"),
    ("bit flip, re-signed head", lambda a, b: Rewrite(b, resign=True),
     "fails the rules: [sig_invalid]"),
    ("an earlier op replayed as a new leaf, re-signed", lambda a, b: Rewrite(
        b, copy_from=a, resign=True), "duplicate op"),
]


@pytest.mark.parametrize(("attack", "fragment"), [(a, f) for _, a, f in _REWRITES],
                         ids=[i for i, _, _ in _REWRITES])
async def test_rewritten_op_is_refused(pair: Pair, attack: Callable[[int, int], Attack],
                                       fragment: str) -> None:
    a, b = await two_laptop_ops(pair)
    await refused(pair, pair.phone, attack(a, b), Code.PROOF_INVALID, fragment)
    await heals(pair, {"a": "1", "b": "2"})


async def test_op_transplanted_from_another_space_is_refused(pair: Pair) -> None:
    other = await pair.laptop.create_space("other")
    pair.laptop.doc(other, "kv").get("kv", type=pycrdt.Map)["elsewhere"] = "x"
    await pair.laptop.sync()
    foreign = [e.envelope for e in await pair.harness.log(other) if e.envelope]
    _, b = await two_laptop_ops(pair)
    await refused(pair, pair.phone, Rewrite(b, envelope=foreign[-1], resign=True),
                  Code.PROOF_INVALID, "fails the rules: [wrong_context]")
    await heals(pair, {"a": "1", "b": "2"})


# ------------------------------------------------------------ rollback (THREATS #11)
async def test_rolled_back_log_is_refused(pair: Pair) -> None:
    old = await log_size(pair)  # the phone pulled this head through the harness
    await two_laptop_ops(pair)
    await pair.phone.sync()
    assert head_of(pair.phone, pair.space)[0] == old + 2
    await write(pair.laptop, pair.space, "c", "3")
    err = await refused(pair, pair.phone, Rollback(old), Code.LOG_ROLLBACK)
    assert f"to {old} entries" in err.message
    await heals(pair, {"a": "1", "b": "2", "c": "3"})


async def test_rollback_below_the_victims_fresh_ack_is_a_rollback(pair: Pair) -> None:
    """The phone pushes an op (the relay signs a head of size n+1 containing it),
    then the pull serves the genuine older head of size n. The log went back in
    time below an offset the relay acknowledged: ``log_rollback``."""
    old = await log_size(pair)
    edit(pair.phone, pair.space, "mine", "p")
    await refused(pair, pair.phone, Rollback(old), Code.LOG_ROLLBACK)
    await heals(pair, {"mine": "p"})


# --------------------------------------------------------------- forge (THREATS #13)
async def test_op_signed_by_a_key_outside_the_registry_is_refused(pair: Pair) -> None:
    await write(pair.laptop, pair.space, "a", "1")
    await refused(pair, pair.phone, Forge(), Code.PROOF_INVALID,
                  "fails the rules: [unknown_device]")
    assert "a" not in kv(pair.phone, pair.space)
    await heals(pair, {"a": "1"})


async def test_op_in_a_devices_name_signed_by_the_relay_is_refused(pair: Pair) -> None:
    await write(pair.laptop, pair.space, "a", "1")
    await refused(pair, pair.phone, Forge(author=pair.laptop.device_id), Code.PROOF_INVALID,
                  "fails the rules: [sig_invalid]")
    await heals(pair, {"a": "1"})


async def test_forged_op_inserted_mid_log_is_refused(pair: Pair) -> None:
    a, _ = await two_laptop_ops(pair)
    await refused(pair, pair.phone, Forge(at=a), Code.PROOF_INVALID,
                  "fails the rules: [unknown_device]")
    await heals(pair, {"a": "1", "b": "2"})


# ----------------------------------------------------------------- tree heads
@pytest.mark.parametrize("kind", ["signature", "foreign_key", "other_log"])
async def test_bad_tree_head_is_refused(pair: Pair, kind: Any) -> None:
    await write(pair.laptop, pair.space, "a", "1")
    await refused(pair, pair.phone, BadHead(kind), Code.TREE_HEAD_INVALID)
    await heals(pair, {"a": "1"})


@pytest.mark.parametrize("new_session", [False, True])
async def test_impostor_relay_with_another_key_is_refused(pair: Pair, tmp_path: Path,
                                                          new_session: bool) -> None:
    """A relay with another signing key over the same data: the pinned key
    refuses it at the session (relay id) or at the first tree head."""
    await write(pair.laptop, pair.space, "a", "1")
    await pair.relay.fork(tmp_path, "impostor",
                          relay_key=Ed25519SigningKey.from_seed(random_bytes(32)))
    pair.harness.route(pair.phone.device_id, "impostor")
    if new_session:
        pair.phone.relay.forget_session()
    err = await refused(pair, pair.phone, None, Code.TREE_HEAD_INVALID)
    if new_session:
        assert "key changed" in err.message
    pair.harness.route(pair.phone.device_id)
    await heals(pair, {"a": "1"})


# ---------------------------------------------------------- split view (THREATS #12)
async def _split(p: Pair, tmp_path: Path) -> int:
    """Fork the relay after a common prefix: the laptop stays on ``main``, the
    phone is served the ``fork`` branch. Returns the common prefix size."""
    await write(p.laptop, p.space, "common", "0")
    await p.phone.sync()
    common = await log_size(p)
    await p.relay.fork(tmp_path, "fork")
    p.harness.route(p.phone.device_id, "fork")
    return common


async def test_split_view_is_flagged_by_both_devices_when_ops_cross(pair: Pair,
                                                                    tmp_path: Path) -> None:
    """Each device sees its own, genuinely signed branch. The relay forwards each
    branch's ops into the other (it has to, or nothing syncs), in its own order.
    Once a device writes after verifying its branch, its op carries that
    branch's head in ``seen``; the other device finds it disagrees with its
    own log at that size: split view, on both sides."""
    p = pair
    common = await _split(p, tmp_path)
    await write(p.laptop, p.space, "l1", "x")  # main: common + l1
    await write(p.phone, p.space, "p1", "y")   # fork: common + p1
    assert await p.harness.merge(p.space, src="main", dst="fork") == 1
    assert await p.harness.merge(p.space, src="fork", dst="main") == 1
    # first exchange: l1 and p1 were written on the common head: nothing to see yet
    await p.laptop.sync()
    await p.phone.sync()
    assert kv(p.laptop, p.space) == kv(p.phone, p.space)
    assert head_of(p.laptop, p.space)[0] == head_of(p.phone, p.space)[0] == common + 2
    assert head_of(p.laptop, p.space) != head_of(p.phone, p.space)  # the fork
    # second round: ops written on the forked heads cross over
    await write(p.laptop, p.space, "l2", "x")
    await write(p.phone, p.space, "p2", "y")
    await p.harness.merge(p.space, src="main", dst="fork")
    await p.harness.merge(p.space, src="fork", dst="main")
    for victim, other in ((p.laptop, p.phone), (p.phone, p.laptop)):
        err = await refused(p, victim, None, Code.SPLIT_VIEW)
        assert other.device_id.hex()[:12] in err.message
    # a fork is permanent evidence: it is refused again on the next sync
    await refused(p, p.laptop, None, Code.SPLIT_VIEW)
    assert "p2" not in kv(p.laptop, p.space) and "l2" not in kv(p.phone, p.space)


async def test_split_view_is_flagged_when_the_relay_stops_splitting(pair: Pair,
                                                                    tmp_path: Path) -> None:
    """The relay stops splitting: it folds the phone's branch into the main log
    and serves that one log to everybody. The laptop pulls the phone's op whose
    ``seen`` head is from the other branch: split view. The phone cannot be
    moved onto a log that does not extend what it verified: proof_invalid."""
    p = pair
    common = await _split(p, tmp_path)
    await write(p.laptop, p.space, "l1", "x")
    await write(p.phone, p.space, "p1", "y")
    await write(p.phone, p.space, "p2", "y")  # seen = the fork's head after p1
    assert head_of(p.phone, p.space)[0] == common + 2
    assert await p.harness.merge(p.space, src="fork", dst="main") == 2
    p.harness.route(p.phone.device_id)  # one history for everybody again
    await refused(p, p.laptop, None, Code.SPLIT_VIEW)
    await refused(p, p.phone, None, Code.PROOF_INVALID, "do not reproduce its signed tree head")
    assert "p1" not in kv(p.laptop, p.space) and "l1" not in kv(p.phone, p.space)


async def test_hiding_a_third_devices_ops_behind_a_resigned_head_is_flagged(
        pair: Pair, tmp_path: Path) -> None:
    """The relay hides every op of the tablet from the phone and re-signs a head
    over the shorter log (a split view kept up with one backend). The laptop
    then writes; its op carries ``seen`` = a head of the real log, larger than
    the position that op has in the phone's view. An honest relay can never
    place an op before the head its author had verified (``seen.size`` <= the
    op's offset), so the phone must flag the split instead of accepting a log
    with the tablet's edits silently missing."""
    p = pair
    tablet = await p.relay.add(p.laptop, tmp_path / "tablet", "tablet")
    try:
        for dev in (p.laptop, p.phone, tablet):
            await dev.sync()
        await write(tablet, p.space, "t1", "z")
        await write(tablet, p.space, "t2", "z")
        await p.laptop.sync()  # verified the real log, tablet's ops included
        edit(p.laptop, p.space, "l1", "x")
        await p.laptop.sync()  # l1.seen = the real head, after t1 and t2
        await refused(p, p.phone, Drop(authors=frozenset({tablet.device_id}), resign=True),
                      Code.SPLIT_VIEW)
    finally:
        await tablet.close()
