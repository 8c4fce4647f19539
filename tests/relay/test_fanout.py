"""Fan-out queue invariants, deterministically (no sockets): a slow subscriber
never loses an op silently, per space, and its queue stays bounded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from sddsf.relay.fanout import CHUNK_BYTES, Hub, Subscriber
from sddsf.wire import b64

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


# ------------------------------------------------- direct writes to the socket


@dataclass
class Socket:
    """A connection's direct writer: takes writes while ``writable``, or while
    ``budget`` (writes left) lasts."""

    writable: bool = True
    budget: int | None = None
    writes: list[bytes] = field(default_factory=list)

    def write(self, data: bytes) -> bool:
        if self.budget is not None:
            self.writable = self.budget > 0
            self.budget -= 1
        if self.writable:
            self.writes.append(data)
        return self.writable


def _parse(wire: bytes) -> list[dict[str, object]]:
    """The JSON messages in complete server text frames (a client's view)."""
    reader = StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    messages = []
    while reader.buffer:  # frames until every byte is consumed
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            parsed: Frame = done.value
        else:
            raise AssertionError("incomplete frame")
        assert parsed.opcode is Opcode.TEXT and parsed.fin
        message = json.loads(bytes(parsed.data))
        assert isinstance(message, dict)
        messages.append(message)
    return messages


def _offsets(socket: Socket) -> list[object]:
    return [m["offset"] for m in _parse(b"".join(socket.writes))]


def _direct(socket: Socket, queue_max: int = 8) -> Subscriber:
    sub = Subscriber(b"a", b"d", queue_max=queue_max)
    sub.direct = socket.write
    return sub


async def test_every_subscriber_gets_the_same_bytes_in_one_write() -> None:
    hub = Hub()
    sockets = [Socket() for _ in range(3)]
    subs = [_direct(socket) for socket in sockets]
    for sub in subs:
        hub.add(sub)
        hub.subscribe(sub, S1)
    await hub.publish(S1, [(0, b"x"), (1, b"y")])
    for socket in sockets:
        assert len(socket.writes) == 1  # both frames in one write
        assert socket.writes[0] is sockets[0].writes[0]  # encoded once, shared
    assert _parse(sockets[0].writes[0]) == [
        {"type": "op", "space": b64(S1), "offset": 0, "envelope": b64(b"x")},
        {"type": "op", "space": b64(S1), "offset": 1, "envelope": b64(b"y")}]
    assert all(not sub.pending for sub in subs)


async def test_large_publish_is_written_in_bounded_chunks_then_queued_in_order() -> None:
    """Frames are joined up to CHUNK_BYTES per write; once the socket refuses a
    chunk, the rest of the publish is queued, in order."""
    hub = Hub()
    socket = Socket(budget=2)
    sub = _direct(socket, queue_max=1000)
    hub.add(sub)
    hub.subscribe(sub, S1)
    envelope = bytes(10_000)
    await hub.publish(S1, [(i, envelope) for i in range(30)])
    assert len(socket.writes) == 2
    assert all(len(w) <= CHUNK_BYTES for w in socket.writes)
    written = _offsets(socket)
    assert written == list(range(len(written))) and 0 < len(written) < 30
    assert [m["offset"] for m in sub.pending] == list(range(len(written), 30))


async def test_ops_queue_behind_a_full_socket_and_keep_their_order() -> None:
    """Once an op is queued (socket buffer full), later ops queue behind it even
    if the socket could take them: they reach it in offset order."""
    hub = Hub()
    socket = Socket()
    sub = _direct(socket)
    hub.add(sub)
    hub.subscribe(sub, S1)
    await hub.publish(S1, [(0, b"")])
    socket.writable = False
    await hub.publish(S1, [(1, b""), (2, b"")])
    socket.writable = True
    await hub.publish(S1, [(3, b"")])
    assert _offsets(socket) == [0]
    assert [m["offset"] for m in sub.pending] == [1, 2, 3]
    for _ in range(3):  # the connection's task sends them, in order
        message = await sub.next_message()
        if not sub.pending:  # op 3 taken, not yet written: op 4 must not overtake it
            await hub.publish(S1, [(4, b"")])
        assert socket.write(message["wire"])  # type: ignore[arg-type]
        sub.sent()
    assert [m["offset"] for m in sub.pending] == [4]
    assert socket.write((await sub.next_message())["wire"])  # type: ignore[arg-type]
    sub.sent()
    await hub.publish(S1, [(5, b"")])  # queue empty, nothing in flight: direct again
    assert _offsets(socket) == [0, 1, 2, 3, 4, 5]


async def test_a_full_socket_fills_the_bounded_queue_then_resyncs() -> None:
    hub = Hub()
    socket = Socket(writable=False)
    sub = _direct(socket, queue_max=3)
    hub.add(sub)
    hub.subscribe(sub, S1)
    await hub.publish(S1, [(i, b"") for i in range(10)])
    assert socket.writes == []
    assert [(m["type"], m.get("from")) for m in sub.pending] == [("resync", 0)]
    socket.writable = True
    await hub.publish(S1, [(10, b"")])  # behind the resync, not around it
    assert socket.writes == []
    assert [m["type"] for m in _drain(sub)] == ["resync", "op"]
