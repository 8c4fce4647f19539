"""The SQLite implementation of :class:`~sddsf.client.store.LocalStore`: one file.

The file holds one table ``kv(ns, key, value)`` with ``value`` sealed for its
row (see :mod:`sddsf.client.store`). A batch is one SQLite transaction in WAL
mode with ``synchronous=NORMAL``: atomic, and durable against a crash of the
process (kill -9) once committed; :meth:`SqliteStore.make_durable` checkpoints
the log (``wal_checkpoint(FULL)``, one fsync) so committed batches also survive
a power loss. ``PRAGMA data_version`` is the store's data version. SQLite's
errors are translated here, once: a failing file is ``UnavailableError``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from sddsf.client.store import LocalStore, StoreBatch
from sddsf.errors import UnavailableError, UsageError

__all__ = ["SqliteStore"]

_SCHEMA: Final = """CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ns, key)) WITHOUT ROWID"""


# Key ranges (see _key_range): the only text ever added to a query; every
# value is a bound parameter.
_FROM: Final = " AND key >= ?"
_BETWEEN: Final = " AND key >= ? AND key < ?"


class _SqliteBatch(StoreBatch):
    def __init__(self, store: SqliteStore, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn

    def put(self, ns: str, key: bytes, value: bytes) -> None:
        sealed = self._store.seal(ns, key, value)
        with self._store._translated():
            self._conn.execute("INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)",
                               (ns, key, sealed))

    def delete(self, ns: str, key: bytes) -> None:
        with self._store._translated():
            self._conn.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (ns, key))

    def delete_prefix(self, ns: str, prefix: bytes) -> None:
        if not prefix:
            raise UsageError("delete_prefix needs a non-empty prefix")
        where, args = _key_range(prefix)
        with self._store._translated():
            self._conn.execute("DELETE FROM kv WHERE ns = ?" + where, (ns, *args))  # noqa: S608


class SqliteStore(LocalStore):
    """Encrypted rows in a SQLite file (thread-safe: one connection behind a lock).

    The methods keep the contract of :class:`~sddsf.client.store.LocalStore`
    (their docstrings are its). A device uses it unless told otherwise.
    """

    def __init__(self, path: Path, storage_key: bytes) -> None:
        """Open (or create) the file at ``path``.

        Args:
            path: the SQLite file (``<home>/device.db``); its directory is made
                if missing.
            storage_key: the 32-byte storage key that seals every value.

        Raises:
            UsageError: the storage key is not 32 bytes.
            UnavailableError: the file cannot be opened or created.
        """
        super().__init__(path, storage_key)
        self._lock = threading.RLock()
        self._batch_thread: int | None = None  # the thread whose batch is open
        self._closed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise UnavailableError(f"cannot open the device store {path}: {exc}") from None

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Run SQLite calls: refuse a closed store, translate SQLite's errors."""
        if self._closed:
            raise UsageError("the device store is closed")
        try:
            yield
        except sqlite3.Error as exc:
            raise UnavailableError(f"the device store {self.path} failed: {exc}") from None

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _rows(self, query: str, args: tuple[object, ...] | list[object]) -> list[tuple[
            object, ...]]:
        with self._lock, self._translated():
            return self._conn.execute(query, args).fetchall()

    def get(self, ns: str, key: bytes) -> bytes | None:
        rows = self._rows("SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key))
        return self.unseal(ns, key, _blob(rows[0][0])) if rows else None

    def scan(self, ns: str, prefix: bytes = b"", *, start: bytes | None = None,
             limit: int | None = None) -> list[tuple[bytes, bytes]]:
        where, bounds = _key_range(prefix, start)
        query = "SELECT key, value FROM kv WHERE ns = ?" + where + " ORDER BY key"  # noqa: S608
        args: list[object] = [ns, *bounds]
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        return [(_blob(k), self.unseal(ns, _blob(k), _blob(v))) for k, v in self._rows(query, args)]

    def keys(self, ns: str, prefix: bytes = b"") -> list[bytes]:
        where, args = _key_range(prefix)
        query = "SELECT key FROM kv WHERE ns = ?" + where + " ORDER BY key"  # noqa: S608
        rows = self._rows(query, (ns, *args))
        return [_blob(r[0]) for r in rows]

    def stored_bytes(self, ns: str, prefix: bytes = b"") -> int:
        where, args = _key_range(prefix)
        query = "SELECT coalesce(sum(length(value)), 0) FROM kv WHERE ns = ?" + where  # noqa: S608
        rows = self._rows(query, (ns, *args))
        return int(str(rows[0][0]))

    def count(self, ns: str, prefix: bytes = b"") -> int:
        where, args = _key_range(prefix)
        query = "SELECT count(*) FROM kv WHERE ns = ?" + where  # noqa: S608
        rows = self._rows(query, (ns, *args))
        return int(str(rows[0][0]))

    @contextlib.contextmanager
    def batch(self) -> Iterator[StoreBatch]:
        with self._lock:
            with self._translated():
                if self._conn.in_transaction:
                    raise UsageError("store batches do not nest")
                self._conn.execute("BEGIN IMMEDIATE")
            self._batch_thread = threading.get_ident()
            try:
                yield _SqliteBatch(self, self._conn)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # the first error is the one to see
                    self._conn.execute("ROLLBACK")
                raise
            finally:
                self._batch_thread = None
            try:
                with self._translated():
                    self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise

    def batch_open_here(self) -> bool:
        return self._batch_thread == threading.get_ident()

    def data_version(self) -> int:
        return int(str(self._rows("PRAGMA data_version", ())[0][0]))

    def make_durable(self) -> None:
        self._rows("PRAGMA wal_checkpoint(FULL)", ())


def _key_range(prefix: bytes, start: bytes | None = None) -> tuple[str, tuple[bytes, ...]]:
    """The SQL condition (after ``ns = ?``) and its arguments for the keys that
    start with ``prefix``, from ``start`` on.

    Keys are BLOBs, which SQLite orders bytewise, so the keys with a prefix are
    exactly those from the prefix up to (not including) its successor: the
    prefix without its trailing 0xFF bytes, last byte plus one (none when the
    prefix is all 0xFF). As a range on the primary key, a read visits only the
    matching rows; comparing each key's first bytes (``substr(key, ...)``, the
    earlier form) made SQLite walk every row of the namespace.
    """
    low = prefix if start is None or start < prefix else start
    stem = prefix.rstrip(b"\xff")
    if not stem:
        return (_FROM, (low,)) if low else ("", ())
    return _BETWEEN, (low, stem[:-1] + bytes((stem[-1] + 1,)))


def _blob(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise UnavailableError("the device store holds a value of an unexpected type")
    return bytes(value)
