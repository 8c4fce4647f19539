"""The one conformance suite for :class:`~sddsf.client.store.LocalStore` implementations.

Every check is a plain function taking a :class:`StoreHarness` and asserting
(with :func:`expect`, not ``assert``: the suite must check under ``python -O``
too); an implementation's tests run every entry of :data:`CHECKS` on fresh
storage, and :func:`check_against_model` with generated batches (a Hypothesis
property in the project's tests). Checks use the public contract only, plus the
harness's raw access to what is kept at rest.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sddsf.client.store import STORAGE_KEY_SIZE, LocalStore
from sddsf.errors import Code, DecryptError, SddsfError, UsageError

__all__ = ["CHECKS", "BatchStep", "Op", "StoreCheck", "StoreHarness", "check_against_model",
           "expect", "expect_raises"]

#: The bytes a sealed value adds: 24 of nonce, 16 of tag.
SEAL_OVERHEAD = 40


@dataclass(frozen=True)
class StoreHarness:
    """What a check gets: fresh, empty rows and ways to reach them.

    Attributes:
        key: the storage key the rows are meant for.
        open: opens another connection to the same rows with the given storage
            key (the check closes it); with a key that is not 32 bytes it must
            raise as the implementation does.
        raw_get: the value of a row exactly as kept (sealed), or None.
        raw_put: keeps the given bytes as a row's value, unchecked (tampering).
        at_rest: every byte the implementation keeps (files, memory), to grep.
    """

    key: bytes
    open: Callable[[bytes], LocalStore]
    raw_get: Callable[[str, bytes], bytes | None]
    raw_put: Callable[[str, bytes, bytes], None]
    at_rest: Callable[[], bytes]

    def store(self) -> LocalStore:
        """A connection with the harness's key."""
        return self.open(self.key)


StoreCheck = Callable[[StoreHarness], None]


def expect(condition: object, message: str = "store contract violated") -> None:
    """Fail the check unless ``condition`` holds."""
    if not condition:
        raise AssertionError(message)


def expect_raises(exc_type: type[SddsfError], code: Code, call: Callable[[], object]) -> None:
    """Fail the check unless ``call()`` raises ``exc_type`` with the stable ``code``."""
    try:
        call()
    except exc_type as exc:
        expect(exc.code == code, f"{exc!r} has code {exc.code}, expected {code}")
        return
    raise AssertionError(f"expected {exc_type.__name__} ({code.value})")


class _Abort(Exception):
    """Raised inside a batch to abort it."""


# ----------------------------------------------------------------- the checks
def check_round_trip(h: StoreHarness) -> None:
    """Values come back as put; a missing row is None; put replaces."""
    s = h.store()
    try:
        expect(s.get("t", b"k") is None, "a missing row reads as None")
        for key, value in [(b"k", b"v1"), (b"\x00", b""), (b"\xff" * 3, bytes(range(256)))]:
            s.put("t", key, value)
            expect(s.get("t", key) == value, f"row {key!r} reads back as put")
        s.put("t", b"k", b"v2")
        expect(s.get("t", b"k") == b"v2", "put replaces a value")
        expect(s.get("u", b"k") is None, "namespaces are separate")
    finally:
        s.close()


def check_scan_order(h: StoreHarness) -> None:
    """scan/keys return ascending bytewise key order, honour prefix, start and
    limit, and never mix namespaces (even when one name prefixes another)."""
    keys = [b"b", b"a\x00", b"\xff", b"ab", b"a", b"\x00", b"a\xff", b"\x80x"]
    s = h.store()
    try:
        with s.batch() as b:
            for k in keys:
                b.put("op", k, b"v" + k)
                b.put("ops", k, b"other")
            b.put("o", b"a", b"other")
        ordered = sorted(keys)
        expect(s.keys("op") == ordered, f"keys in bytewise order: {s.keys('op')!r}")
        expect(s.scan("op") == [(k, b"v" + k) for k in ordered], "scan in bytewise order")
        with_a = [k for k in ordered if k.startswith(b"a")]
        expect(s.keys("op", b"a") == with_a, "keys with a prefix")
        expect([k for k, _ in s.scan("op", b"a")] == with_a, "scan with a prefix")
        expect([k for k, _ in s.scan("op", b"a", start=b"ab")] == [b"ab", b"a\xff"],
               "start is inclusive")
        expect([k for k, _ in s.scan("op", start=b"b", limit=2)] == [b"b", b"\x80x"],
               "start and limit")
        expect(s.scan("op", limit=0) == [], "limit 0")
        expect(s.count("op") == len(keys) and s.count("op", b"a") == len(with_a), "count")
        expect(s.stored_bytes("op", b"a") == sum(len(k) + 1 + SEAL_OVERHEAD for k in with_a),
               "stored_bytes counts sealed values")
        expect(s.count("none") == 0 and s.stored_bytes("none") == 0 and s.keys("none") == [],
               "an empty namespace")
    finally:
        s.close()


def check_batch_is_atomic(h: StoreHarness) -> None:
    """A block that raises keeps none of its writes, restores what it replaced
    or deleted, and lets the exception through; one that ends keeps all."""
    s = h.store()
    try:
        with s.batch() as b:
            b.put("t", b"keep", b"old")
            b.put("t", b"p1", b"x")
            b.put("t", b"p2", b"y")
        boom = _Abort("boom")
        try:
            with s.batch() as b:
                b.put("t", b"new", b"n")
                b.put("t", b"keep", b"changed")
                b.delete("t", b"p1")
                b.delete_prefix("t", b"p")
                expect(s.get("t", b"keep") == b"changed" and s.get("t", b"p2") is None,
                       "reads inside a batch see its writes")
                raise boom
        except _Abort as exc:
            expect(exc is boom, "the block's own exception propagates")
        else:
            raise AssertionError("the exception was swallowed")
        expect(s.scan("t") == [(b"keep", b"old"), (b"p1", b"x"), (b"p2", b"y")],
               f"an aborted batch leaves nothing: {s.scan('t')!r}")
        other = h.store()
        try:
            expect(other.scan("t") == s.scan("t"), "another connection sees the same rows")
        finally:
            other.close()
    finally:
        s.close()


def check_batch_errors(h: StoreHarness) -> None:
    """An empty delete prefix and a nested batch are UsageError; either aborts
    the enclosing batch, and the store stays usable."""
    s = h.store()
    try:
        def empty_prefix() -> None:
            with s.batch() as b:
                b.put("t", b"a", b"1")
                b.delete_prefix("t", b"")

        def nested() -> None:
            with s.batch() as b:
                b.put("t", b"b", b"2")
                with s.batch():
                    pass

        expect_raises(UsageError, Code.USAGE, empty_prefix)
        expect_raises(UsageError, Code.USAGE, nested)
        expect(s.count("t") == 0, "the enclosing batches were rolled back")
        s.put("t", b"c", b"3")
        expect(s.keys("t") == [b"c"], "the store works after a refused batch")
    finally:
        s.close()


def check_delete_prefix(h: StoreHarness) -> None:
    """delete_prefix removes exactly the rows of its namespace with the prefix."""
    s = h.store()
    try:
        with s.batch() as b:
            for k in (b"a", b"ab", b"abc", b"ac", b"b"):
                b.put("t", k, k)
                b.put("u", k, k)
        with s.batch() as b:
            b.delete_prefix("t", b"ab")
            b.delete_prefix("t", b"zz")
            b.delete("t", b"missing")
        expect(s.keys("t") == [b"a", b"ac", b"b"], f"left: {s.keys('t')!r}")
        expect(s.count("u") == 5, "another namespace is untouched")
    finally:
        s.close()


def check_no_plaintext_at_rest(h: StoreHarness) -> None:
    """No value and no namespace-tagged secret is kept in plaintext."""
    marker = b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    s = h.store()
    try:
        with s.batch() as b:
            for i in range(20):
                b.put("doc", i.to_bytes(2, "big"), marker + b"-" + str(i).encode() * 50)
        s.put("id", b"device", marker)
        s.make_durable()
        kept = h.at_rest()
        expect(kept, "the harness shows what is kept")
        expect(marker not in kept, "a value is kept in plaintext")
        sealed = h.raw_get("id", b"device")
        expect(sealed is not None and len(sealed) == len(marker) + SEAL_OVERHEAD,
               "values are kept as nonce || ciphertext || tag")
    finally:
        s.close()


def check_values_bound_to_rows(h: StoreHarness) -> None:
    """A value moved to another row, or altered, does not decrypt (decrypt_failed)."""
    s = h.store()
    try:
        s.put("t", b"a", b"secret a")
        s.put("t", b"b", b"secret b")
        s.put("u", b"a", b"secret c")
        sealed_a = h.raw_get("t", b"a")
        if sealed_a is None:
            raise AssertionError("row t/a is kept")
        h.raw_put("t", b"b", sealed_a)
        expect_raises(DecryptError, Code.DECRYPT_FAILED, lambda: s.get("t", b"b"))
        expect_raises(DecryptError, Code.DECRYPT_FAILED, lambda: s.scan("t"))
        h.raw_put("u", b"a", sealed_a)
        expect_raises(DecryptError, Code.DECRYPT_FAILED, lambda: s.get("u", b"a"))
        flipped = bytearray(sealed_a)
        flipped[-1] ^= 1
        h.raw_put("t", b"a", bytes(flipped))
        expect_raises(DecryptError, Code.DECRYPT_FAILED, lambda: s.get("t", b"a"))
    finally:
        s.close()


def check_wrong_key(h: StoreHarness) -> None:
    """Another storage key reads nothing; a key that is not 32 bytes is refused."""
    s = h.store()
    try:
        s.put("t", b"a", b"v")
    finally:
        s.close()
    other = h.open(os.urandom(STORAGE_KEY_SIZE))
    try:
        expect(other.keys("t") == [b"a"], "keys are readable without the key")
        expect_raises(DecryptError, Code.DECRYPT_FAILED, lambda: other.get("t", b"a"))
    finally:
        other.close()
    expect_raises(UsageError, Code.USAGE, lambda: h.open(os.urandom(STORAGE_KEY_SIZE - 1)))


def check_survives_reopen(h: StoreHarness) -> None:
    """What a closed connection committed (and made durable) is there when reopened."""
    s = h.store()
    s.put("t", b"a", b"1")
    with s.batch() as b:
        b.put("t", b"b", b"2")
    s.make_durable()
    s.put("t", b"c", b"3")
    s.close()
    again = h.store()
    try:
        expect(again.scan("t") == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], "kept")
    finally:
        again.close()


def check_data_version(h: StoreHarness) -> None:
    """data_version changes on another connection's commit, not on one's own."""
    a, b = h.store(), h.store()
    try:
        before = a.data_version()
        a.put("t", b"mine", b"1")
        with a.batch() as w:
            w.put("t", b"mine2", b"1")
        expect(a.data_version() == before, "own commits leave data_version unchanged")
        b.put("t", b"theirs", b"2")
        changed = a.data_version()
        expect(changed != before, "another connection's commit changes data_version")
        expect(a.get("t", b"theirs") == b"2", "and its rows are visible")
        expect(a.data_version() == changed, "reading does not change it")
    finally:
        a.close()
        b.close()


def check_closed(h: StoreHarness) -> None:
    """After close (idempotent) every call is UsageError."""
    s = h.store()
    s.put("t", b"a", b"1")
    s.close()
    s.close()
    for call in (lambda: s.get("t", b"a"), lambda: s.scan("t"), lambda: s.keys("t"),
                 lambda: s.count("t"), lambda: s.stored_bytes("t"), s.data_version,
                 s.make_durable, lambda: s.put("t", b"b", b"2")):
        expect_raises(UsageError, Code.USAGE, call)


def check_threads(h: StoreHarness) -> None:
    """Batches from several threads are isolated: no read-modify-write is lost."""
    s = h.store()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                with s.batch() as b:
                    count = int(s.get("t", b"counter") or b"0")
                    b.put("t", b"counter", str(count + 1).encode())
                    b.put("w", bytes([n, i]), b"x")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expect(not errors, f"a thread failed: {errors[:1]!r}")
        expect(s.get("t", b"counter") == b"100", f"lost updates: {s.get('t', b'counter')!r}")
        expect(s.count("w") == 100, "every thread's rows")
    finally:
        s.close()


def check_batch_open_here(h: StoreHarness) -> None:
    """``batch_open_here`` is True only in the thread that holds a batch open (or
    None everywhere: the store does not say, and work stays on that thread)."""
    s = h.store()
    seen: list[bool | None] = []
    try:
        outside = s.batch_open_here()
        with s.batch():
            inside = s.batch_open_here()
            other = threading.Thread(target=lambda: seen.append(s.batch_open_here()))
            other.start()
            other.join()
        after = s.batch_open_here()
        answers = [outside, inside, *seen, after]
        expect(answers in ([False, True, False, False], [None] * 4),
               f"batch_open_here outside, inside, in another thread, after: {answers}")
    finally:
        s.close()


CHECKS: list[StoreCheck] = [
    check_round_trip,
    check_scan_order,
    check_batch_is_atomic,
    check_batch_errors,
    check_delete_prefix,
    check_no_plaintext_at_rest,
    check_values_bound_to_rows,
    check_wrong_key,
    check_survives_reopen,
    check_data_version,
    check_closed,
    check_threads,
    check_batch_open_here,
]


# ------------------------------------------------------------ model checking
#: One write of a generated batch: ``("put", ns, key, value)``,
#: ``("delete", ns, key, b"")`` or ``("delete_prefix", ns, prefix, b"")``.
Op = tuple[Literal["put", "delete", "delete_prefix"], str, bytes, bytes]


@dataclass(frozen=True)
class BatchStep:
    """One generated batch: its writes, and whether the block raises at the end."""

    ops: Sequence[Op]
    abort: bool


def check_against_model(store: LocalStore, steps: Sequence[BatchStep],
                        namespaces: Sequence[str]) -> None:
    """Run ``steps`` on ``store`` and on a dict, and compare after each step.

    An aborted step must leave the store as it was; a committed one applies
    every write in order (``delete_prefix`` with an empty prefix is not a
    valid write: generate non-empty prefixes).
    """
    model: dict[tuple[str, bytes], bytes] = {}
    for step in steps:
        staged = dict(model)
        for kind, ns, key, value in step.ops:
            if kind == "put":
                staged[(ns, key)] = value
            elif kind == "delete":
                staged.pop((ns, key), None)
            else:
                for row in [r for r in staged if r[0] == ns and r[1].startswith(key)]:
                    del staged[row]
        try:
            with store.batch() as b:
                for kind, ns, key, value in step.ops:
                    if kind == "put":
                        b.put(ns, key, value)
                    elif kind == "delete":
                        b.delete(ns, key)
                    else:
                        b.delete_prefix(ns, key)
                if step.abort:
                    raise _Abort
        except _Abort:
            pass
        else:
            model = staged
        for ns in namespaces:
            want = sorted((k, v) for (n, k), v in model.items() if n == ns)
            got = store.scan(ns)
            expect(got == want, f"namespace {ns!r}: store {got!r} != model {want!r}")
            expect(store.keys(ns) == [k for k, _ in want], f"keys of {ns!r}")
    check_prefix_reads_against_model(store, model, namespaces)


def check_prefix_reads_against_model(store: LocalStore, model: Mapping[tuple[str, bytes], bytes],
                                     namespaces: Sequence[str]) -> None:
    """Every prefix read (scan, from a start key too, keys, count, stored_bytes)
    agrees with ``model`` for every prefix of every key in it, one byte shorter
    and longer, and the prefixes at the ends of the byte range (0x00, 0xFF)."""
    prefixes = {b"", b"\x00", b"\xff", b"\xff\xff"}
    for _, key in model:
        prefixes.update({key[:n] for n in range(len(key) + 1)})
        prefixes.update({key + b"\x00", key + b"\xff"})
    for ns in namespaces:
        rows = sorted((k, v) for (n, k), v in model.items() if n == ns)
        for prefix in sorted(prefixes):
            want = [(k, v) for k, v in rows if k.startswith(prefix)]
            what = f"namespace {ns!r}, prefix {prefix.hex()!r}"
            expect(store.scan(ns, prefix) == want, f"scan of {what}")
            expect(store.keys(ns, prefix) == [k for k, _ in want], f"keys of {what}")
            expect(store.count(ns, prefix) == len(want), f"count of {what}")
            expect(store.stored_bytes(ns, prefix) == sum(len(v) + 40 for _, v in want),
                   f"stored_bytes of {what}")
            # A start before the prefix reads from the prefix on (nothing else).
            for start in {b"", prefix, *(k for k, _ in want[1:2])}:
                expect(store.scan(ns, prefix, start=start, limit=2)
                       == [(k, v) for k, v in want if k >= start][:2],
                       f"scan of {what} from {start.hex()!r}")
