"""The device's local store: one SQLite file, every value encrypted at rest.

The file holds one table ``kv(ns, key, value)``. ``ns`` names what a row is
(``identity``, ``registry``, ``op``, ...) and ``key`` is a non-secret lookup key
(ids, offsets, sequence numbers: never names or contents). ``value`` is
``nonce || XChaCha20-Poly1305(storage_key, nonce, plaintext, ad = ns || key)``,
so a value cannot be moved to another row and no plaintext of documents, keys,
names or settings is in the file (a test greps it).

Writes go through :meth:`LocalStore.batch`, one SQLite transaction in WAL mode
with ``synchronous=NORMAL``: atomic, and durable against a crash of the
process (kill -9); an op is persisted in the pending queue together with the
new chain head *before* it is sent (THREATS #6), so a crash can only re-send
the same op, never fork the chain. Before anything is sent to a relay,
:meth:`LocalStore.make_durable` also forces the log to disk (one fsync per
sync instead of one per edit), so not even a power loss can make a device
forget an op the relay may already hold.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from sddsf.crypto import AEAD_NONCE_SIZE, aead_decrypt, aead_encrypt, random_bytes
from sddsf.errors import DecryptError, UnavailableError, UsageError

__all__ = ["LocalStore", "StoreBatch"]

_SCHEMA: Final = """CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ns, key)) WITHOUT ROWID"""


def _ad(ns: str, key: bytes) -> bytes:
    return ns.encode() + b"\x00" + key


class StoreBatch:
    """Writes of one transaction (see :meth:`LocalStore.batch`)."""

    def __init__(self, store: LocalStore, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn

    def put(self, ns: str, key: bytes, value: bytes) -> None:
        """Insert or replace one value."""
        self._conn.execute("INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)",
                           (ns, key, self._store.seal(ns, key, value)))

    def delete(self, ns: str, key: bytes) -> None:
        """Remove one value (no error if absent)."""
        self._conn.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (ns, key))

    def delete_prefix(self, ns: str, prefix: bytes) -> None:
        """Remove every value of ``ns`` whose key starts with ``prefix`` (non-empty)."""
        if not prefix:
            raise UsageError("delete_prefix needs a non-empty prefix")
        self._conn.execute("DELETE FROM kv WHERE ns = ? AND substr(key, 1, ?) = ?",
                           (ns, len(prefix), prefix))


class LocalStore:
    """Encrypted key-value rows in a SQLite file (thread-safe, one connection)."""

    def __init__(self, path: Path, storage_key: bytes) -> None:
        if len(storage_key) != 32:
            raise UsageError("the storage key is 32 bytes")
        self.path = path
        self._key = storage_key
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise UnavailableError(f"cannot open the device store {path}: {exc}") from None

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._conn.close()

    def seal(self, ns: str, key: bytes, value: bytes) -> bytes:
        """Encrypt a value for row ``(ns, key)``."""
        nonce = random_bytes(AEAD_NONCE_SIZE)
        return nonce + aead_encrypt(self._key, nonce, value, _ad(ns, key))

    def _open(self, ns: str, key: bytes, sealed: bytes) -> bytes:
        try:
            return aead_decrypt(self._key, sealed[:AEAD_NONCE_SIZE], sealed[AEAD_NONCE_SIZE:],
                                _ad(ns, key))
        except DecryptError:
            raise DecryptError(f"the device store row {ns}/{key.hex()[:16]} does not decrypt: "
                               "wrong passphrase or storage key, or a tampered file") from None

    def get(self, ns: str, key: bytes) -> bytes | None:
        """One value, or None."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM kv WHERE ns = ? AND key = ?",
                                     (ns, key)).fetchone()
        return None if row is None else self._open(ns, key, bytes(row[0]))

    def scan(self, ns: str, prefix: bytes = b"", *, start: bytes | None = None,
             limit: int | None = None) -> list[tuple[bytes, bytes]]:
        """Rows of ``ns`` whose key starts with ``prefix``, in key order.

        ``start`` (inclusive, must share the prefix) lets a caller page through.
        """
        low = start if start is not None else prefix
        query = "SELECT key, value FROM kv WHERE ns = ? AND key >= ?"
        args: list[object] = [ns, low]
        if prefix:
            query += " AND substr(key, 1, ?) = ?"
            args += [len(prefix), prefix]
        query += " ORDER BY key"
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._conn.execute(query, args).fetchall()
        return [(bytes(k), self._open(ns, bytes(k), bytes(v))) for k, v in rows]

    def keys(self, ns: str, prefix: bytes = b"") -> list[bytes]:
        """Keys of ``ns`` that start with ``prefix``, in order (values are not read)."""
        with self._lock:
            rows = self._conn.execute("SELECT key FROM kv WHERE ns = ? AND substr(key, 1, ?) = ? "
                                      "ORDER BY key", (ns, len(prefix), prefix)).fetchall()
        return [bytes(r[0]) for r in rows]

    def stored_bytes(self, ns: str, prefix: bytes = b"") -> int:
        """Bytes the values of ``ns`` with the key prefix take (sealed: each value
        plus 40 bytes of nonce and tag), without decrypting them."""
        with self._lock:
            row = self._conn.execute("SELECT coalesce(sum(length(value)), 0) FROM kv WHERE "
                                     "ns = ? AND substr(key, 1, ?) = ?",
                                     (ns, len(prefix), prefix)).fetchone()
        return int(row[0])

    def count(self, ns: str, prefix: bytes = b"") -> int:
        """Number of rows of ``ns`` with the key prefix."""
        with self._lock:
            row = self._conn.execute("SELECT count(*) FROM kv WHERE ns = ? AND "
                                     "substr(key, 1, ?) = ?", (ns, len(prefix), prefix)
                                     ).fetchone()
        return int(row[0])

    @contextlib.contextmanager
    def batch(self) -> Iterator[StoreBatch]:
        """One durable transaction: all writes in the block, or none."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield StoreBatch(self, self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def data_version(self) -> int:
        """A number that changes whenever another connection (another process)
        commits to the file; this connection's own commits leave it unchanged."""
        with self._lock:
            row = self._conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def make_durable(self) -> None:
        """Force every committed transaction to stable storage (one fsync)."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(FULL)")

    def put(self, ns: str, key: bytes, value: bytes) -> None:
        """A one-row transaction."""
        with self.batch() as b:
            b.put(ns, key, value)
