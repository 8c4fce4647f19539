"""Every LocalStore implementation passes the one conformance suite
(sddsf.testing.store_conformance), plus a model-based Hypothesis property:
random batches of puts, deletes and prefix deletes, some aborted, against a dict."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sddsf.client.memory_store import MemoryStore
from sddsf.client.sqlite_store import SqliteStore
from sddsf.client.store import LocalStore
from sddsf.testing.store_conformance import (
    CHECKS,
    BatchStep,
    Op,
    StoreCheck,
    StoreHarness,
    check_against_model,
)

NAMESPACES = ["a", "ab", "op"]


def sqlite_harness(home: Path) -> StoreHarness:
    path = home / "device.db"

    def raw(query: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        with sqlite3.connect(path, timeout=10) as db:
            return db.execute(query, args).fetchall()

    def raw_get(ns: str, key: bytes) -> bytes | None:
        rows = raw("SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key))
        value = rows[0][0] if rows else None
        return value if value is None else bytes(value)  # type: ignore[call-overload]

    def raw_put(ns: str, key: bytes, sealed: bytes) -> None:
        raw("INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)", (ns, key, sealed))

    def at_rest() -> bytes:
        return b"".join(p.read_bytes() for p in sorted(home.glob("device.db*")))

    return StoreHarness(key=os.urandom(32), open=lambda key: SqliteStore(path, key),
                        raw_get=raw_get, raw_put=raw_put, at_rest=at_rest)


def memory_harness(home: Path) -> StoreHarness:
    key = os.urandom(32)
    root = MemoryStore(home / "device.db", key)

    def at_rest() -> bytes:
        return b"".join(ns.encode() + k + v for (ns, k), v in root.sealed_rows().items())

    return StoreHarness(key=key, open=root.reopen,
                        raw_get=lambda ns, k: root.sealed_rows().get((ns, k)),
                        raw_put=root.put_sealed, at_rest=at_rest)


HARNESSES: dict[str, Callable[[Path], StoreHarness]] = {"sqlite": sqlite_harness,
                                                        "memory": memory_harness}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
@pytest.mark.parametrize("kind", list(HARNESSES))
def test_conformance(kind: str, check: StoreCheck, tmp_path: Path) -> None:
    check(HARNESSES[kind](tmp_path))


def test_memory_store_touches_no_file(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "home" / "device.db", os.urandom(32))
    store.put("t", b"k", b"v")
    store.make_durable()
    store.close()
    assert not (tmp_path / "home").exists()


#: Few distinct bytes, so that keys share prefixes; 0xFE and 0xFF test the ends
#: of the range a prefix read covers.
_ALPHABET = (0x00, 0x01, 0xFE, 0xFF)
_KEYS = st.binary(min_size=1, max_size=3).map(lambda b: bytes(_ALPHABET[x % 4] for x in b))
_OPS: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(NAMESPACES), _KEYS, st.binary(max_size=16)),
    st.tuples(st.just("delete"), st.sampled_from(NAMESPACES), _KEYS, st.just(b"")),
    st.tuples(st.just("delete_prefix"), st.sampled_from(NAMESPACES),
              st.binary(min_size=1, max_size=2).map(lambda b: bytes(_ALPHABET[x % 4] for x in b)),
              st.just(b"")),
)
_STEPS = st.lists(st.builds(BatchStep, ops=st.lists(_OPS, max_size=8),
                            abort=st.booleans()), max_size=12)


@contextlib.contextmanager
def fresh_store(kind: str) -> Iterator[LocalStore]:
    with tempfile.TemporaryDirectory() as home:
        store = HARNESSES[kind](Path(home)).store()
        try:
            yield store
        finally:
            store.close()


@pytest.mark.parametrize("kind", list(HARNESSES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_STEPS)
def test_batches_match_a_dict_model(kind: str, steps: list[BatchStep]) -> None:
    with fresh_store(kind) as store:
        check_against_model(store, steps, NAMESPACES)


def test_sqlite_prefix_reads_visit_only_the_matching_rows(tmp_path: Path) -> None:
    # A prefix read is a range on the primary key: its work does not grow with
    # the rows of the namespace that do not match. Counted in SQLite virtual
    # machine steps (a progress handler), not in time.
    store = SqliteStore(tmp_path / "device.db", os.urandom(32))
    conn = store._conn  # the adapter's own connection, to count its steps
    prefix = b"\x05" * 16

    def steps(read: Callable[[], object]) -> int:
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0  # go on

        conn.set_progress_handler(tick, 1)
        try:
            read()
        finally:
            conn.set_progress_handler(None, 1)
        return count[0]

    def reads() -> list[int]:
        return [steps(lambda: store.count("op", prefix)), steps(lambda: store.keys("op", prefix)),
                steps(lambda: store.stored_bytes("op", prefix)),
                steps(lambda: store.scan("op", prefix, limit=100)),
                steps(lambda: store.scan("op", prefix[:-1] + b"\xff"))]

    with store.batch() as b:
        for i in range(5):
            b.put("op", prefix + bytes([i]), b"v")
    few = reads()
    with store.batch() as b:  # other spaces' rows, before and after the prefix
        for i in range(2000):
            b.put("op", b"\x04" * 16 + i.to_bytes(2, "big"), b"v")
            b.put("op", b"\x06" * 16 + i.to_bytes(2, "big"), b"v")
    many = reads()
    assert all(m <= 2 * f + 50 for f, m in zip(few, many, strict=True)), (few, many)
    assert store.count("op", prefix) == 5 and store.count("op") == 4005
    with store.batch() as b:
        b.delete_prefix("op", prefix)
    assert store.count("op", prefix) == 0 and store.count("op") == 4000
    store.close()
