"""Fan-out queue invariants, deterministically (no sockets): a slow subscriber
never loses an op silently, per space, and its queue stays bounded."""

from __future__ import annotations

from sddsf.relay.fanout import Hub, Subscriber

S1, S2 = b"\x01" * 16, b"\x02" * 16


def _drain(sub: Subscriber) -> list[dict[str, object]]:
    out = list(sub.pending)
    sub.pending.clear()
    for m in out:
        if m.get("type") == "resync" and isinstance(m.get("space"), bytes):
            sub.resync_from.pop(m["space"], None)  # type: ignore[arg-type]
    return out


def _check_no_silent_gap(messages: list[dict[str, object]], space: bytes, total: int) -> None:
    """Replaying what the client saw: every offset is either delivered or at/after a resync."""
    seen: set[int] = set()
    for m in messages:
        if m.get("space") != space:
            continue
        if m["type"] == "resync":
            seen |= set(range(int(m["from"]), total))  # type: ignore[call-overload]
        elif m["type"] == "op":
            seen.add(int(m["offset"]))  # type: ignore[call-overload]
    assert seen >= set(range(total)), sorted(set(range(total)) - seen)


async def test_overflow_on_one_space_keeps_the_other_spaces_ops() -> None:
    hub = Hub()
    sub = Subscriber(b"a", b"d", queue_max=4)
    hub.add(sub)
    hub.subscribe(sub, S1)
    hub.subscribe(sub, S2)
    await hub.publish(S2, [(0, b"x"), (1, b"y")])
    await hub.publish(S1, [(i, b"z") for i in range(10)])  # overflows on S1 only
    messages = _drain(sub)
    assert [(m["type"], m.get("offset")) for m in messages if m["space"] == S2] == [
        ("op", 0), ("op", 1)]
    resyncs = [m for m in messages if m["type"] == "resync"]
    assert resyncs == [{"type": "resync", "space": S1, "from": 0}]
    _check_no_silent_gap(messages, S1, 10)
    _check_no_silent_gap(messages, S2, 2)


async def test_repeated_overflow_keeps_the_earliest_missed_offset() -> None:
    hub = Hub()
    sub = Subscriber(b"a", b"d", queue_max=2)
    hub.add(sub)
    hub.subscribe(sub, S1)
    hub.subscribe(sub, S2)
    log: list[dict[str, object]] = []
    for start in range(0, 30, 5):
        await hub.publish(S1, [(i, b"") for i in range(start, start + 5)])
        await hub.publish(S2, [(i, b"") for i in range(start, start + 5)])
        assert len([m for m in sub.pending if m["type"] == "op"]) <= 2  # bounded
        if start % 10 == 0:
            log += _drain(sub)  # the client reads now and then
    log += _drain(sub)
    _check_no_silent_gap(log, S1, 30)
    _check_no_silent_gap(log, S2, 30)


async def test_close_device_replaces_everything_with_a_close() -> None:
    hub = Hub()
    sub = Subscriber(b"a", b"dev", queue_max=8)
    hub.add(sub)
    hub.subscribe(sub, S1)
    await hub.publish(S1, [(0, b"x")])
    assert hub.close_device(b"dev", "revoked") == 1
    assert await sub.next_message() == {"type": "close", "reason": "revoked"}
    await hub.publish(S1, [(1, b"y")])
    assert not sub.pending  # nothing more is queued for a closed subscriber
    hub.remove(sub)
    assert hub.connected == 0
