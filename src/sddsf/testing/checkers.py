"""Jepsen-style checkers, evaluated from a recorded history (THREATS, "cross-cutting checkers").

A multi-process or load test records what clients observed in a
:class:`History` (the relay's acknowledgements, the tree heads it showed them,
the log entries they applied, and their final decrypted states), then reads
the relay's final log (:func:`sddsf.relay.fsck.read_logs`) and runs:

==========================  ===================================================
``no_lost_ack``             every acknowledged ``(device, device_seq)`` is in the
                            log at the acknowledged offset, with the same leaf
``no_duplicates``           ``UNIQUE(space, offset)``, ``UNIQUE(space, device,
                            device_seq)``, one offset per acknowledged op
``gap_free``                offsets are ``0..n-1``: ``count == max + 1``
``monotonic_delivery``      each client's applied stream is strictly increasing,
                            contiguous and equal to the log at those offsets
``consistent_checkpoints``  every pair of observed tree heads of a space is
                            consistent (an RFC 9162 consistency proof verifies)
``chains_verify``           every device chain and registry verifies from genesis
``strong_convergence``      all clients holding a space have equal final states
``fsck``                    :func:`sddsf.relay.fsck.fsck` of the database is clean
==========================  ===================================================

Each checker returns a list of :class:`Violation` (empty: the property holds).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations, pairwise
from typing import Any, Final

from sddsf.client.device import Device
from sddsf.errors import DecodeError, SddsfError
from sddsf.protocol import merkle
from sddsf.protocol.envelope import decode_envelope
from sddsf.protocol.registry import verify_registry
from sddsf.protocol.treehead import decode_tree_head
from sddsf.relay.fsck import ChainVerifier, SpaceLog, fsck, read_logs

__all__ = [
    "Ack",
    "Delivery",
    "History",
    "ObservedHead",
    "Violation",
    "chains_verify",
    "check_history",
    "check_relay",
    "consistent_checkpoints",
    "fsck_clean",
    "gap_free",
    "history_from_journal",
    "monotonic_delivery",
    "no_duplicates",
    "no_lost_ack",
    "record_device",
    "record_final",
    "record_to_json",
    "strong_convergence",
]

#: Violations reported per checker and space at most (a broken log breaks every pair).
_MAX_PER_SPACE: Final = 20
#: Distinct heads of a space up to which every pair gets its own consistency proof.
_ALL_PAIRS: Final = 500


@dataclass(frozen=True, slots=True)
class Ack:
    """The relay told ``client`` that op ``(device, device_seq)`` is at ``space_seq``."""

    client: str
    space: bytes
    device: bytes
    device_seq: int
    space_seq: int
    leaf_hash: bytes
    duplicate: bool = False  # the relay already held it (a re-send)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The log entries ``(offset, leaf hash)`` one client applied, in the order it applied them."""

    client: str
    space: bytes
    items: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class ObservedHead:
    """A tree head ``(size, root)`` of a space that the relay showed ``client``."""

    client: str
    space: bytes
    size: int
    root: bytes


@dataclass(slots=True)
class History:
    """What clients observed. ``states[client][space]`` is the client's final
    decrypted state of the space (any value comparable with ``==``)."""

    acks: list[Ack] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    heads: list[ObservedHead] = field(default_factory=list)
    states: dict[str, dict[bytes, object]] = field(default_factory=dict)

    def add(self, record: Ack | ObservedHead) -> None:
        """Add one observation (the sink :func:`record_device` writes to)."""
        if isinstance(record, Ack):
            self.acks.append(record)
        else:
            self.heads.append(record)

    def merge(self, other: History) -> None:
        """Add another history's records (e.g. from another process)."""
        self.acks.extend(other.acks)
        self.deliveries.extend(other.deliveries)
        self.heads.extend(other.heads)
        for client, states in other.states.items():
            self.states.setdefault(client, {}).update(states)


@dataclass(frozen=True, slots=True)
class Violation:
    """A property that does not hold."""

    checker: str
    message: str

    def __str__(self) -> str:
        return f"{self.checker}: {self.message}"


def _short(b: bytes) -> str:
    return b.hex()[:12]


def _by_space(logs: Iterable[SpaceLog]) -> dict[bytes, SpaceLog]:
    return {log.space_id: log for log in logs}


# ------------------------------------------------------------------- checkers


def no_lost_ack(history: History, logs: Sequence[SpaceLog]) -> list[Violation]:
    """Every acknowledged op is in the log at its acknowledged offset."""
    out: list[Violation] = []
    spaces = _by_space(logs)
    for ack in history.acks:
        log = spaces.get(ack.space)
        where = f"op {_short(ack.device)}#{ack.device_seq} acked to {ack.client} at " \
                f"{_short(ack.space)}:{ack.space_seq}"
        if log is None or ack.space_seq >= len(log.entries):
            out.append(Violation("no_lost_ack", f"{where} is not in the log (lost)"))
            continue
        e = log.entries[ack.space_seq]
        if (e.author, e.seq, e.leaf_hash) != (ack.device, ack.device_seq, ack.leaf_hash):
            out.append(Violation("no_lost_ack", f"{where}: the log holds another op there"))
    return out


def no_duplicates(history: History, logs: Sequence[SpaceLog]) -> list[Violation]:
    """No offset, ``(device, device_seq)`` or op id twice in a space; one offset per ack."""
    out: list[Violation] = []
    for log in logs:
        seen: dict[object, int] = {}
        for e in log.entries:
            for key, what in (((0, e.offset), "offset"), ((1, e.author, e.seq), "device seq"),
                              ((2, e.op_id), "op")):
                if key in seen:
                    out.append(Violation("no_duplicates", f"space {_short(log.space_id)}: "
                                         f"{what} of offset {e.offset} repeats offset "
                                         f"{seen[key]}"))
                seen[key] = e.offset
    offsets: dict[tuple[bytes, bytes, int], set[int]] = defaultdict(set)
    for ack in history.acks:
        offsets[(ack.space, ack.device, ack.device_seq)].add(ack.space_seq)
    for (space, device, seq), at in offsets.items():
        if len(at) > 1:
            out.append(Violation("no_duplicates", f"op {_short(device)}#{seq} of space "
                                 f"{_short(space)} was acknowledged at offsets {sorted(at)}"))
    return out


def gap_free(logs: Sequence[SpaceLog]) -> list[Violation]:
    """Offsets of each space are exactly ``0, 1, ..., n-1``."""
    out: list[Violation] = []
    for log in logs:
        offsets = [e.offset for e in log.entries]
        if offsets != list(range(len(offsets))):
            top = max(offsets, default=-1)
            out.append(Violation("gap_free", f"space {_short(log.space_id)}: {len(offsets)} "
                                 f"entries, highest offset {top}"))
    return out


def monotonic_delivery(history: History, logs: Sequence[SpaceLog]) -> list[Violation]:
    """Each applied stream is strictly increasing, contiguous, and the log's own entries."""
    out: list[Violation] = []
    spaces = _by_space(logs)
    for d in history.deliveries:
        log = spaces.get(d.space)
        name = f"{d.client} in space {_short(d.space)}"
        if log is None:
            out.append(Violation("monotonic_delivery", f"{name}: space not in the log"))
            continue
        previous: int | None = None
        for offset, leaf in d.items:
            if previous is not None and offset != previous + 1:
                kind = "went back" if offset <= previous else "skipped"
                out.append(Violation("monotonic_delivery", f"{name}: {kind} from offset "
                                     f"{previous} to {offset}"))
                break
            if offset >= len(log.entries) or log.entries[offset].leaf_hash != leaf:
                out.append(Violation("monotonic_delivery", f"{name}: applied offset {offset}, "
                                     "which the log does not hold (not a prefix of the log)"))
                break
            previous = offset
    return out


def consistent_checkpoints(history: History, logs: Sequence[SpaceLog]) -> list[Violation]:
    """Every pair of observed heads of a space is consistent: same size, same
    root; otherwise the consistency proof (built from the final log's leaves,
    checked by the protocol verifier) must verify against both roots. A head
    beyond the final log means the log was rolled back."""
    out: list[Violation] = []
    spaces = _by_space(logs)
    heads: dict[bytes, set[tuple[int, bytes]]] = defaultdict(set)
    for h in history.heads:
        heads[h.space].add((h.size, h.root))
    for space, observed in heads.items():
        log = spaces.get(space)
        tree = merkle.MerkleTree(e.leaf_hash for e in (log.entries if log else ()))
        found: list[Violation] = []
        for size in sorted({s for s, _ in observed}):
            if size > tree.size:
                found.append(Violation("consistent_checkpoints", f"space {_short(space)}: a "
                                       f"head of size {size} was shown, the log has "
                                       f"{tree.size} entries (rolled back)"))
        ordered = sorted(observed)
        # Consistency is transitive, so when every pair of neighbours (by size)
        # is consistent, every pair is: past _ALL_PAIRS heads only neighbours
        # are checked, which finds a violation exactly when all pairs would.
        pairs = (combinations(ordered, 2) if len(ordered) <= _ALL_PAIRS
                 else pairwise(ordered))
        for (s1, r1), (s2, r2) in pairs:
            if len(found) >= _MAX_PER_SPACE:
                break
            if not _consistent(tree, s1, r1, s2, r2):
                found.append(Violation("consistent_checkpoints", f"space {_short(space)}: "
                                       f"heads ({s1}, {_short(r1)}) and ({s2}, {_short(r2)}) "
                                       "are not consistent (split view or rewritten log)"))
        out.extend(found[:_MAX_PER_SPACE])
    return out


def _consistent(tree: merkle.MerkleTree, s1: int, r1: bytes, s2: int, r2: bytes) -> bool:
    if s1 == s2:
        return r1 == r2
    if s1 == 0:
        return r1 == merkle.EMPTY_ROOT
    if s2 > tree.size:
        return True  # reported once above; no proof exists for it
    try:
        merkle.verify_consistency(s1, s2, r1, r2, tree.consistency_proof(s1, s2))
    except SddsfError:
        return False
    return True


def chains_verify(logs: Sequence[SpaceLog]) -> list[Violation]:
    """Every registry verifies from genesis and every op of every device chain
    passes the shared rules in log order (see :class:`sddsf.relay.fsck.ChainVerifier`)."""
    out: list[Violation] = []
    for log in logs:
        try:
            registry = verify_registry(list(log.registry), pinned=None)
        except SddsfError as exc:
            out.append(Violation("chains_verify", f"registry of account "
                                 f"{_short(log.account_id)}: [{exc.code.value}] {exc.message}"))
            registry = None
        verifier = ChainVerifier(log.space_id, registry, log.epoch)
        for e in log.entries:
            out.extend(Violation("chains_verify", str(f)) for f in verifier.feed(e))
    return out


def strong_convergence(history: History) -> list[Violation]:
    """All clients that hold a space have the same final state of it."""
    out: list[Violation] = []
    by_space: dict[bytes, list[tuple[str, object]]] = defaultdict(list)
    for client, states in sorted(history.states.items()):
        for space, state in states.items():
            by_space[space].append((client, state))
    for space, held in by_space.items():
        first_client, first = held[0]
        differ = [c for c, s in held[1:] if s != first]
        if differ:
            out.append(Violation("strong_convergence", f"space {_short(space)}: "
                                 f"{', '.join(differ)} differ from {first_client}"))
    return out


async def fsck_clean(url: str, *, schema: str | None = None) -> list[Violation]:
    """The relay database passes :func:`sddsf.relay.fsck.fsck`."""
    report = await fsck(url, schema=schema)
    return [Violation("fsck", str(f)) for f in report.findings]


def check_history(history: History, logs: Sequence[SpaceLog]) -> list[Violation]:
    """Every checker except fsck, against a log already read."""
    return [*no_lost_ack(history, logs), *no_duplicates(history, logs), *gap_free(logs),
            *monotonic_delivery(history, logs), *consistent_checkpoints(history, logs),
            *chains_verify(logs), *strong_convergence(history)]


async def check_relay(history: History, url: str, *,
                      schema: str | None = None) -> list[Violation]:
    """Read the relay database, then run every checker including fsck."""
    logs = await read_logs(url, schema=schema)
    return [*check_history(history, logs), *await fsck_clean(url, schema=schema)]


# ------------------------------------------------------------------ recording


def record_device(sink: Callable[[Ack | ObservedHead], None], client: str,
                  device: Device) -> None:
    """Pass every acknowledgement and tree head ``device`` receives from now on
    to ``sink`` (e.g. :meth:`History.add`, or a journal that survives kill -9).

    Wraps the device's relay client (its ``upload`` and ``pull``); the device
    still verifies everything itself.
    """
    relay = device.relay
    upload, pull = relay.upload, relay.pull

    def head(space: bytes, raw: bytes) -> None:
        th = decode_tree_head(raw)
        sink(ObservedHead(client, space, th.size, th.root))

    async def recorded_upload(space_id: bytes, envelopes: Sequence[bytes],
                              **kw: Any) -> Any:
        results, head_raw = await upload(space_id, envelopes, **kw)
        head(space_id, head_raw)
        for raw, r in zip(envelopes, results, strict=True):
            if r.status in ("accepted", "duplicate") and r.offset is not None:
                h = decode_envelope(raw).header
                sink(Ack(client, space_id, h.author, h.seq, r.offset, merkle.leaf_hash(raw),
                         r.status == "duplicate"))
        return results, head_raw

    async def recorded_pull(space_id: bytes, *args: Any, **kw: Any) -> Any:
        ops, head_raw = await pull(space_id, *args, **kw)
        head(space_id, head_raw)
        return ops, head_raw

    setattr(relay, "upload", recorded_upload)  # noqa: B010 - instance-level wrap
    setattr(relay, "pull", recorded_pull)  # noqa: B010


def record_final(history: History, client: str, device: Device,
                 state_of: Callable[[Device, bytes], object]) -> None:
    """Record what ``device`` applied (its verified leaves, in offset order) and
    its final state of every space (``state_of(device, space_id)``)."""
    for space_id, _ in device.spaces():
        rows = device.store.scan("leaf", space_id)
        history.deliveries.append(Delivery(client, space_id, tuple(
            (int.from_bytes(key[16:], "big"), leaf) for key, leaf in rows)))
        history.states.setdefault(client, {})[space_id] = state_of(device, space_id)


def record_to_json(record: Ack | ObservedHead) -> str:
    """One observation as a JSON line (for journals written by other processes)."""
    if isinstance(record, Ack):
        return json.dumps({"ack": [record.client, record.space.hex(), record.device.hex(),
                                   record.device_seq, record.space_seq, record.leaf_hash.hex(),
                                   record.duplicate]})
    return json.dumps({"head": [record.client, record.space.hex(), record.size,
                                record.root.hex()]})


def history_from_journal(lines: Iterable[str]) -> History:
    """The observations of :func:`record_to_json` lines (blank lines skipped).

    Raises:
        DecodeError: a line that is not such a record.
    """
    history = History()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if "ack" in item:
                c, sp, dev, seq, off, leaf, dup = item["ack"]
                history.add(Ack(str(c), bytes.fromhex(sp), bytes.fromhex(dev), int(seq),
                                int(off), bytes.fromhex(leaf), bool(dup)))
            else:
                c, sp, size, root = item["head"]
                history.add(ObservedHead(str(c), bytes.fromhex(sp), int(size),
                                         bytes.fromhex(root)))
        except (ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"journal line {n} is not an observation: {exc}") from None
    return history
