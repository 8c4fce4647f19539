"""Version vectors (sddsf.protocol.vv) and the hybrid logical clock (sddsf.protocol.clock).

Version vectors: join is commutative, associative and idempotent and is the
least upper bound; compare agrees with dominates; zero entries vanish; the wire
form round-trips (also through the canonical encoder) and from_wire refuses
every non-canonical form (unsorted, duplicate, zero or negative seq, wrong id
size, not a pair, too many entries -> too_large).

HLC: tick and observe are strictly monotonic for any wall-clock sequence,
including one that goes backwards; a timestamp never lags the wall clock;
observe() is later than both inputs; a remote timestamp too far ahead raises
ClockSkewError and leaves the clock untouched; HLCTimestamp.from_wire range
checks.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sddsf.errors import ClockSkewError, Code, DecodeError, UsageError
from sddsf.protocol.clock import HLCTimestamp, HybridLogicalClock
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.vv import Ordering, VersionVector

IDS = [bytes([i]) * 32 for i in range(1, 6)]
A, B, C = IDS[0], IDS[1], IDS[2]
VVS = st.dictionaries(st.sampled_from(IDS), st.integers(0, 8), max_size=5).map(VersionVector)


def from_wire(value: object, max_entries: int = 16) -> VersionVector:
    return VersionVector.from_wire(value, what="deps", id_size=32, max_entries=max_entries)


# ------------------------------------------------------------- version vectors


@given(VVS, VVS)
def test_join_is_commutative(a: VersionVector, b: VersionVector) -> None:
    assert a.join(b) == b.join(a)


@given(VVS, VVS, VVS)
def test_join_is_associative(a: VersionVector, b: VersionVector, c: VersionVector) -> None:
    assert a.join(b).join(c) == a.join(b.join(c))


@given(VVS)
def test_join_is_idempotent(a: VersionVector) -> None:
    assert a.join(a) == a


@given(VVS, VVS)
def test_join_is_the_least_upper_bound(a: VersionVector, b: VersionVector) -> None:
    j = a.join(b)
    assert j.dominates(a)
    assert j.dominates(b)
    for author in set(a) | set(b):
        assert j.seq(author) == max(a.seq(author), b.seq(author))


@given(VVS, VVS)
def test_compare_is_consistent_with_dominates(a: VersionVector, b: VersionVector) -> None:
    expected = {
        (True, True): Ordering.EQUAL,
        (True, False): Ordering.AFTER,
        (False, True): Ordering.BEFORE,
        (False, False): Ordering.CONCURRENT,
    }[(a.dominates(b), b.dominates(a))]
    assert a.compare(b) is expected
    mirrored = {Ordering.AFTER: Ordering.BEFORE, Ordering.BEFORE: Ordering.AFTER}
    assert b.compare(a) is mirrored.get(expected, expected)
    assert (a.compare(b) is Ordering.EQUAL) == (a == b)


@given(VVS, VVS)
def test_join_equals_self_iff_self_dominates(a: VersionVector, b: VersionVector) -> None:
    assert (a.join(b) == a) == a.dominates(b)


def test_compare_examples() -> None:
    assert VersionVector({A: 1}).compare(VersionVector({A: 2})) is Ordering.BEFORE
    assert VersionVector({A: 2}).compare(VersionVector({A: 1})) is Ordering.AFTER
    assert VersionVector({A: 1}).compare(VersionVector({B: 1})) is Ordering.CONCURRENT
    assert VersionVector({A: 1, B: 0}).compare(VersionVector({A: 1})) is Ordering.EQUAL


def test_zero_entries_vanish_and_absent_reads_zero() -> None:
    v = VersionVector({A: 0, B: 3})
    assert list(v) == [B]
    assert v.seq(A) == 0
    assert v == VersionVector({B: 3})
    assert hash(v) == hash(VersionVector({B: 3}))


def test_with_seq_and_without() -> None:
    v = VersionVector({A: 1}).with_seq(B, 4)
    assert v == VersionVector({A: 1, B: 4})
    assert v.without(A) == VersionVector({B: 4})
    assert v.with_seq(A, 0) == VersionVector({B: 4})


@pytest.mark.parametrize("entries", [{A: -1}, {"a": 1}, {A: True}, {A: 1.0}])
def test_constructor_refuses_bad_entries(entries: dict[object, object]) -> None:
    with pytest.raises(UsageError):
        VersionVector(entries)  # type: ignore[arg-type]


@given(VVS)
def test_wire_round_trip(v: VersionVector) -> None:
    assert from_wire(v.to_wire()) == v
    assert from_wire(decode(encode(v.to_wire()))) == v


def test_wire_form_is_sorted_by_id() -> None:
    assert VersionVector({C: 3, A: 1}).to_wire() == [[A, 1], [C, 3]]


@pytest.mark.parametrize(
    "wire",
    [
        [[B, 1], [A, 1]],  # unsorted
        [[A, 1], [A, 2]],  # duplicate id
        [[A, 0]],  # zero seq
        [[A, -3]],  # negative seq
        [[A, True]],  # bool is not an int
        [[A[:31], 1]],  # short id
        [[A + b"\x00", 1]],  # long id
        [["x" * 32, 1]],  # text id
        [[A]],  # not a pair
        [[A, 1, 2]],  # triple
        [A, 1],  # flat
        {"a": 1},  # not an array
        None,
    ],
    ids=["unsorted", "duplicate", "zero", "negative", "bool", "short-id", "long-id", "text-id",
         "single", "triple", "flat", "map", "null"],
)
def test_from_wire_rejects_non_canonical_forms(wire: object) -> None:
    with pytest.raises(DecodeError) as info:
        from_wire(wire)
    assert info.value.code is Code.MALFORMED


def test_from_wire_rejects_too_many_entries() -> None:
    wire = [[i, 1] for i in IDS[:4]]
    assert len(from_wire(wire, max_entries=4)) == 4
    with pytest.raises(DecodeError) as info:
        from_wire(wire, max_entries=3)
    assert info.value.code is Code.TOO_LARGE


# ------------------------------------------------------------------------- HLC

WALLS = st.lists(st.integers(0, 10_000_000), min_size=1, max_size=40)
DRIFT = 60_000


@given(WALLS)
def test_tick_is_strictly_monotonic_for_any_wall_clock(walls: list[int]) -> None:
    clock = HybridLogicalClock(max_drift_ms=DRIFT)
    for wall in walls:
        before = clock.last
        try:
            ts = clock.tick(wall)
        except ClockSkewError as exc:
            # Only a wall clock that jumped back further than the drift bound may refuse,
            # and the refusal leaves the state untouched.
            assert exc.code is Code.CLOCK_SKEW
            assert before.wall_ms - wall >= DRIFT
            assert clock.last == before
            continue
        assert ts > before
        assert ts == clock.last
        assert ts.wall_ms >= wall
        assert ts.wall_ms - wall <= DRIFT


@given(st.lists(st.integers(0, DRIFT - 1), min_size=1, max_size=40))
def test_tick_never_refuses_within_the_drift_bound(backsteps: list[int]) -> None:
    clock = HybridLogicalClock(max_drift_ms=DRIFT)
    start = 5_000_000
    previous = clock.tick(start)
    for back in backsteps:
        ts = clock.tick(start - back)
        assert ts > previous
        previous = ts


def test_tick_with_a_stalled_or_backwards_clock_bumps_the_counter() -> None:
    clock = HybridLogicalClock()
    assert clock.tick(1000) == HLCTimestamp(1000, 0)
    assert clock.tick(1000) == HLCTimestamp(1000, 1)
    assert clock.tick(900) == HLCTimestamp(1000, 2)
    assert clock.tick(1001) == HLCTimestamp(1001, 0)


def test_tick_refuses_a_wall_clock_far_behind_and_keeps_state() -> None:
    clock = HybridLogicalClock(max_drift_ms=DRIFT)
    last = clock.tick(10_000_000)
    with pytest.raises(ClockSkewError) as info:
        clock.tick(10_000_000 - DRIFT - 1)
    assert info.value.code is Code.CLOCK_SKEW
    assert clock.last == last


def test_counter_overflow_moves_to_the_next_millisecond() -> None:
    clock = HybridLogicalClock(HLCTimestamp(5000, 0xFFFF))
    assert clock.tick(5000) == HLCTimestamp(5001, 0)


TIMESTAMPS = st.builds(HLCTimestamp, st.integers(0, 10_000_000), st.integers(0, 0xFFFF))


@given(TIMESTAMPS, TIMESTAMPS, st.integers(0, 10_000_000))
def test_observe_is_later_than_both_inputs(last: HLCTimestamp, remote: HLCTimestamp,
                                           wall: int) -> None:
    clock = HybridLogicalClock(last, max_drift_ms=DRIFT)
    try:
        ts = clock.observe(remote, wall)
    except ClockSkewError as exc:
        assert exc.code is Code.CLOCK_SKEW
        assert max(last.wall_ms, remote.wall_ms) + 1 - wall > DRIFT
        assert clock.last == last
        return
    assert ts > last
    assert ts > remote
    assert ts.wall_ms >= wall
    assert clock.last == ts


def test_observe_refuses_remote_too_far_in_future_and_keeps_state() -> None:
    clock = HybridLogicalClock(max_drift_ms=DRIFT)
    last = clock.tick(1_000_000)
    with pytest.raises(ClockSkewError) as info:
        clock.observe(HLCTimestamp(1_000_000 + DRIFT + 1, 0), 1_000_000)
    assert info.value.code is Code.CLOCK_SKEW
    assert clock.last == last


def test_observe_accepts_remote_at_the_drift_bound() -> None:
    clock = HybridLogicalClock(max_drift_ms=DRIFT)
    ts = clock.observe(HLCTimestamp(1_000_000 + DRIFT, 7), 1_000_000)
    assert ts == HLCTimestamp(1_000_000 + DRIFT, 8)


def test_observe_same_wall_takes_larger_counter() -> None:
    clock = HybridLogicalClock(HLCTimestamp(2000, 3))
    assert clock.observe(HLCTimestamp(2000, 9), 1500) == HLCTimestamp(2000, 10)


@pytest.mark.parametrize("wall", [-1, 2**48])
def test_tick_refuses_out_of_range_wall_clock(wall: int) -> None:
    with pytest.raises(UsageError):
        HybridLogicalClock().tick(wall)


@given(TIMESTAMPS)
def test_timestamp_wire_round_trip(ts: HLCTimestamp) -> None:
    assert HLCTimestamp.from_wire(decode(encode(ts.to_wire())), what="ts") == ts


@pytest.mark.parametrize(
    "wire",
    [[1], [1, 2, 3], [-1, 0], [2**48, 0], [0, 0x10000], [0, -1], [True, 0], [0, False],
     ["1", 0], None, {"a": 1}],
)
def test_timestamp_from_wire_rejects(wire: object) -> None:
    with pytest.raises(DecodeError) as info:
        HLCTimestamp.from_wire(wire, what="ts")
    assert info.value.code is Code.MALFORMED
