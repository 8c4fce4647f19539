"""An in-memory :class:`~sddsf.client.store.LocalStore`: same contract, no file.

Rows are kept sealed exactly as the SQLite store keeps them (same nonce, tag
and associated data), so every test of the contract applies unchanged,
including "no plaintext is kept". The rows live in a :class:`_Rows` shared by
every connection :meth:`MemoryStore.reopen` makes, the way connections share a
file: they outlive :meth:`~MemoryStore.close`, never the process.

A batch writes into the rows at once, under the rows' lock, and keeps an undo
log: reads of the batch's own thread see its writes, other threads and
connections wait for the lock, and a block that raises is undone before the
lock is released, so nobody ever sees part of a batch.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from sddsf.client.store import STORE_FILE, LocalStore, StoreBatch
from sddsf.errors import UsageError

__all__ = ["MemoryStore"]

_Row = tuple[str, bytes]


class _Rows:
    """The shared rows: sealed values by ``(ns, key)`` and a sorted key index."""

    def __init__(self) -> None:
        self.values: dict[_Row, bytes] = {}
        self.order: list[_Row] = []  # sorted; (ns, key) tuples sort by ns, then bytewise key
        self.lock = threading.RLock()
        self.commits = 0  # batches that wrote, committed by every connection
        self.batch_thread: int | None = None  # the thread whose batch is open

    def set(self, row: _Row, sealed: bytes) -> None:
        if row not in self.values:
            bisect.insort(self.order, row)
        self.values[row] = sealed

    def remove(self, row: _Row) -> None:
        if self.values.pop(row, None) is not None:
            del self.order[bisect.bisect_left(self.order, row)]

    def range(self, ns: str, prefix: bytes, start: bytes | None = None) -> Iterator[_Row]:
        """Rows of ``ns`` with the key prefix, from ``start``, in key order."""
        low = start if start is not None and start > prefix else prefix
        for i in range(bisect.bisect_left(self.order, (ns, low)), len(self.order)):
            row = self.order[i]
            if row[0] != ns or not row[1].startswith(prefix):
                return
            yield row


class _MemoryBatch(StoreBatch):
    def __init__(self, store: MemoryStore, rows: _Rows) -> None:
        self._store = store
        self._rows = rows
        #: The value of each touched row before the batch (None: absent), first touch only.
        self.undo: dict[_Row, bytes | None] = {}

    def _touch(self, row: _Row) -> None:
        if row not in self.undo:
            self.undo[row] = self._rows.values.get(row)

    def put(self, ns: str, key: bytes, value: bytes) -> None:
        sealed = self._store.seal(ns, key, value)
        row = (ns, bytes(key))
        self._touch(row)
        self._rows.set(row, sealed)

    def delete(self, ns: str, key: bytes) -> None:
        row = (ns, bytes(key))
        self._touch(row)
        self._rows.remove(row)

    def delete_prefix(self, ns: str, prefix: bytes) -> None:
        if not prefix:
            raise UsageError("delete_prefix needs a non-empty prefix")
        for row in list(self._rows.range(ns, bytes(prefix))):
            self._touch(row)
            self._rows.remove(row)

    def rollback(self) -> None:
        for row, sealed in self.undo.items():
            if sealed is None:
                self._rows.remove(row)
            else:
                self._rows.set(row, sealed)


class MemoryStore(LocalStore):
    """Encrypted rows in this process's memory (thread-safe).

    The class itself is a :data:`~sddsf.client.store.StoreFactory`:
    ``Device.open(home, store_factory=MemoryStore)``.
    """

    def __init__(self, path: Path, storage_key: bytes, *, _rows: _Rows | None = None) -> None:
        """A new, empty store standing for ``path`` (which it never touches).

        Args:
            path: the place it stands for (``<home>/device.db``).
            storage_key: the 32-byte storage key that seals every value.
            _rows: (:meth:`reopen`) the rows of another connection to share.

        Raises:
            UsageError: the storage key is not 32 bytes.
        """
        super().__init__(path, storage_key)
        self._rows = _rows if _rows is not None else _Rows()
        self._own_commits = 0
        self._closed = False

    @classmethod
    def for_home(cls, home: Path, storage_key: bytes) -> MemoryStore:
        """A new, empty store for a device home.

        Args:
            home: the device home (never touched).
            storage_key: the 32-byte storage key.

        Returns:
            A store standing for ``<home>/device.db``.

        Raises:
            UsageError: the storage key is not 32 bytes.
        """
        return cls(home / STORE_FILE, storage_key)

    def reopen(self, storage_key: bytes | None = None) -> MemoryStore:
        """Another connection to the same rows (as opening the same file again).

        Works after :meth:`close` too: that is how a memory-backed device is
        opened again (``store_factory=lambda path, key: first.reopen(key)``).

        Args:
            storage_key: the key of the new connection (None: this store's);
                rows sealed under another key do not decrypt with it.

        Returns:
            A new open connection to the same rows, at the same path.

        Raises:
            UsageError: ``storage_key`` is not 32 bytes.
        """
        return MemoryStore(self.path, self._key if storage_key is None else storage_key,
                           _rows=self._rows)

    def sealed_rows(self) -> dict[tuple[str, bytes], bytes]:
        """Every row as kept, for tests of what is at rest.

        Returns:
            A copy: ``(ns, key)`` -> the sealed value (nonce, ciphertext, tag).

        Raises:
            Nothing of its own (it works on a closed store too).
        """
        with self._rows.lock:
            return dict(self._rows.values)

    def put_sealed(self, ns: str, key: bytes, sealed: bytes) -> None:
        """Keep ``sealed`` as row ``(ns, key)`` as it is, unchecked (for tests
        that alter what is at rest, as one would edit a file).

        Not a batch: no connection's :meth:`data_version` changes. It waits
        for another thread's open batch to end (it takes the rows' lock).

        Args:
            ns: the namespace.
            key: the row's key.
            sealed: the bytes to keep (a later read unseals them, and raises
                ``DecryptError`` if they were not sealed for this row).

        Raises:
            Nothing of its own (it works on a closed store too).
        """
        with self._rows.lock:
            self._rows.set((ns, bytes(key)), bytes(sealed))

    def _live(self) -> None:
        if self._closed:
            raise UsageError("the device store is closed")

    def close(self) -> None:
        self._closed = True

    def get(self, ns: str, key: bytes) -> bytes | None:
        with self._rows.lock:
            self._live()
            sealed = self._rows.values.get((ns, bytes(key)))
        return None if sealed is None else self.unseal(ns, key, sealed)

    def scan(self, ns: str, prefix: bytes = b"", *, start: bytes | None = None,
             limit: int | None = None) -> list[tuple[bytes, bytes]]:
        with self._rows.lock:
            self._live()
            found: list[tuple[bytes, bytes]] = []
            for row in self._rows.range(ns, bytes(prefix), start):
                if limit is not None and len(found) >= limit:
                    break
                found.append((row[1], self._rows.values[row]))
        return [(key, self.unseal(ns, key, sealed)) for key, sealed in found]

    def keys(self, ns: str, prefix: bytes = b"") -> list[bytes]:
        with self._rows.lock:
            self._live()
            return [row[1] for row in self._rows.range(ns, bytes(prefix))]

    def stored_bytes(self, ns: str, prefix: bytes = b"") -> int:
        with self._rows.lock:
            self._live()
            return sum(len(self._rows.values[row]) for row in self._rows.range(ns, bytes(prefix)))

    def count(self, ns: str, prefix: bytes = b"") -> int:
        with self._rows.lock:
            self._live()
            return sum(1 for _ in self._rows.range(ns, bytes(prefix)))

    @contextlib.contextmanager
    def batch(self) -> Iterator[StoreBatch]:
        with self._rows.lock:
            self._live()
            # The lock is re-entrant: this thread could otherwise open a second
            # batch (of this or another connection) inside the first.
            if self._rows.batch_thread is not None:
                raise UsageError("store batches do not nest")
            self._rows.batch_thread = threading.get_ident()
            writes = _MemoryBatch(self, self._rows)
            try:
                yield writes
            except BaseException:
                writes.rollback()
                raise
            finally:
                self._rows.batch_thread = None
            if writes.undo:
                self._rows.commits += 1
                self._own_commits += 1

    def batch_open_here(self) -> bool:
        return self._rows.batch_thread == threading.get_ident()

    def data_version(self) -> int:
        with self._rows.lock:
            self._live()
            return self._rows.commits - self._own_commits

    def make_durable(self) -> None:
        # Nothing outlives the process here; the contract asks for no more.
        with self._rows.lock:
            self._live()
