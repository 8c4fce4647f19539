"""The device's local store: the interface every implementation keeps.

A store holds rows ``(ns, key) -> value``. ``ns`` names what a row is
(``identity``, ``registry``, ``op``, ...) and ``key`` is a non-secret lookup key
(ids, offsets, sequence numbers: never names or contents). Every value is kept
sealed: ``nonce || XChaCha20-Poly1305(storage_key, nonce, plaintext, ad = ns ||
0x00 || key)`` (:meth:`LocalStore.seal`), so a value cannot be moved to another
row and no plaintext of documents, keys, names or settings is kept (a test
greps what each implementation holds).

Implementations (each passes :mod:`sddsf.testing.store_conformance`):

* :class:`~sddsf.client.sqlite_store.SqliteStore`: one SQLite file
  (``<home>/device.db``), what a device uses unless told otherwise;
* :class:`~sddsf.client.memory_store.MemoryStore`: rows in this process's
  memory, sealed the same way (tests, and applications that keep no state).

Writes go through :meth:`LocalStore.batch`: atomic, and durable against a crash
of the process once the block ends. An op is persisted in the pending queue
together with the new chain head *before* it is sent (THREATS #6), so a crash
can only re-send the same op, never fork the chain. Before anything is sent to a
relay, :meth:`LocalStore.make_durable` also forces the log to stable storage
(one fsync per sync instead of one per edit), so not even a power loss can make
a device forget an op the relay may already hold.

A device plugs a store through a :data:`StoreFactory` (``Device.open(...,
store_factory=MemoryStore)``): it is called with the store's place in the home
and the storage key, and returns an open store.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Final

from sddsf.crypto import AEAD_NONCE_SIZE, aead_decrypt, aead_encrypt, random_bytes
from sddsf.errors import DecryptError, UsageError

__all__ = ["STORAGE_KEY_SIZE", "STORE_FILE", "LocalStore", "StoreBatch", "StoreFactory"]

#: The storage key is one XChaCha20-Poly1305 key.
STORAGE_KEY_SIZE: Final = 32
#: The store's file name in a device home (a store without a file stands for it).
STORE_FILE: Final = "device.db"


def row_ad(ns: str, key: bytes) -> bytes:
    """The associated data that binds a sealed value to its row."""
    return ns.encode() + b"\x00" + key


class StoreBatch(ABC):
    """The writes of one transaction (see :meth:`LocalStore.batch`).

    Valid only inside its ``with`` block. A write that raises leaves the batch
    to be rolled back by the exception that leaves the block.
    """

    @abstractmethod
    def put(self, ns: str, key: bytes, value: bytes) -> None:
        """Insert or replace the value of row ``(ns, key)`` (sealed for that row).

        Args:
            ns: the namespace.
            key: the row's key (non-secret).
            value: the plaintext to keep.

        Raises:
            UnavailableError: the storage failed (the batch is then rolled back).
        """

    @abstractmethod
    def delete(self, ns: str, key: bytes) -> None:
        """Remove row ``(ns, key)``; no error if it is absent.

        Args:
            ns: the namespace.
            key: the row's key.

        Raises:
            UnavailableError: the storage failed (the batch is then rolled back).
        """

    @abstractmethod
    def delete_prefix(self, ns: str, prefix: bytes) -> None:
        """Remove every row of ``ns`` whose key starts with ``prefix``.

        Args:
            ns: the namespace.
            prefix: the key prefix, not empty.

        Raises:
            UsageError: ``prefix`` is empty (a whole namespace is never dropped
                by accident).
            UnavailableError: the storage failed (the batch is then rolled back).
        """


class LocalStore(ABC):
    """Encrypted key-value rows of one device (the interface; see the module doc).

    Contract every implementation keeps (checked by
    :mod:`sddsf.testing.store_conformance`):

    * **Encryption at rest.** Every value is kept only as :meth:`seal` made it,
      for its own row: a value copied to another row, altered, or read with
      another storage key raises :class:`~sddsf.errors.DecryptError`
      (``decrypt_failed``) when read. Keys and namespaces are kept as given.
    * **Atomic batches.** The writes of a :meth:`batch` block take effect
      together when the block ends normally, and not at all when it raises;
      the exception propagates. Inside the block, this store's reads (from the
      thread that holds the batch) see the batch's writes; other threads wait
      until the batch ends; other connections to the same rows see all of it or
      none. Batches do not nest (:class:`~sddsf.errors.UsageError`).
    * **Order.** :meth:`scan` and :meth:`keys` return rows in ascending
      bytewise (unsigned, lexicographic) key order.
    * **Prefix reads are ranges.** The work of :meth:`scan`, :meth:`keys`,
      :meth:`count`, :meth:`stored_bytes` and ``delete_prefix`` grows with the
      rows that match, not with the rest of the namespace (a namespace holds
      every space's rows; a device calls them on every sync and flush).
    * **Durability.** A batch that ended survives a crash of the process (for a
      store that outlives its process at all); once :meth:`make_durable`
      returns, every batch that ended before survives a power loss too.
    * **Connections.** Each instance is one connection, safe to use from
      several threads. :meth:`data_version` changes whenever another
      connection to the same rows commits a batch that writes, and not when
      this one does.
    * **Errors.** A wrong-size storage key or an empty delete prefix:
      ``UsageError`` (``usage``); any use after :meth:`close` (which is
      idempotent): ``UsageError``; the backing storage failing:
      :class:`~sddsf.errors.UnavailableError` (``unavailable``). No other
      exception type leaves a store.

    Attributes:
        path: where the store lives in its device home (``<home>/device.db``);
            the home is ``path.parent``. A store without a file stands for this
            path and never creates it.

    Args:
        path: where the store lives (see ``path`` above).
        storage_key: the 32-byte storage key that seals every value.
    """

    def __init__(self, path: Path, storage_key: bytes) -> None:
        """Check the storage key; implementations then open their storage.

        Args:
            path: where the store lives (``<home>/device.db``).
            storage_key: the 32-byte storage key.

        Raises:
            UsageError: the key is not 32 bytes.
        """
        if len(storage_key) != STORAGE_KEY_SIZE:
            raise UsageError("the storage key is 32 bytes")
        self.path = path
        self._key = bytes(storage_key)

    # ------------------------------------------------------- sealing (shared)
    def seal(self, ns: str, key: bytes, value: bytes) -> bytes:
        """Encrypt ``value`` for row ``(ns, key)`` under the storage key.

        Args:
            ns: the row's namespace.
            key: the row's key.
            value: the plaintext.

        Returns:
            ``nonce || ciphertext || tag`` (40 bytes more than ``value``), with
            ``ns || 0x00 || key`` as associated data and a fresh random nonce.

        Raises:
            Nothing of its own.
        """
        nonce = random_bytes(AEAD_NONCE_SIZE)
        return nonce + aead_encrypt(self._key, nonce, value, row_ad(ns, key))

    def unseal(self, ns: str, key: bytes, sealed: bytes) -> bytes:
        """Decrypt a value :meth:`seal` made for row ``(ns, key)``.

        Args:
            ns: the row's namespace.
            key: the row's key.
            sealed: the value as kept.

        Returns:
            The plaintext.

        Raises:
            DecryptError: another storage key, another row, or altered bytes.
        """
        try:
            return aead_decrypt(self._key, sealed[:AEAD_NONCE_SIZE], sealed[AEAD_NONCE_SIZE:],
                                row_ad(ns, key))
        except DecryptError:
            raise DecryptError(f"the device store row {ns}/{key.hex()[:16]} does not decrypt: "
                               "wrong passphrase or storage key, or a tampered file") from None

    # ------------------------------------------------------------ interface
    @abstractmethod
    def close(self) -> None:
        """Release the storage; any other call then raises ``UsageError``.

        Idempotent: closing a closed store does nothing.

        Raises:
            Nothing of its own.
        """

    @abstractmethod
    def get(self, ns: str, key: bytes) -> bytes | None:
        """The plaintext of row ``(ns, key)``, or None.

        Args:
            ns: the namespace.
            key: the row's key.

        Returns:
            The row's plaintext, or None when there is no such row.

        Raises:
            DecryptError: the row does not decrypt for this key and row.
            UsageError: the store is closed.
            UnavailableError: the storage failed.
        """

    @abstractmethod
    def scan(self, ns: str, prefix: bytes = b"", *, start: bytes | None = None,
             limit: int | None = None) -> list[tuple[bytes, bytes]]:
        """``(key, plaintext)`` of the rows of ``ns`` whose key starts with
        ``prefix``, in ascending key order.

        Args:
            ns: the namespace.
            prefix: the key prefix (empty: every row of ``ns``).
            start: the first key to return (inclusive), to page through a
                namespace; a start before ``prefix`` reads from the prefix on.
            limit: at most this many rows.

        Returns:
            ``(key, plaintext)`` of each row, in ascending bytewise key order.

        Raises:
            DecryptError: a returned row does not decrypt.
            UsageError: the store is closed.
            UnavailableError: the storage failed.
        """

    @abstractmethod
    def keys(self, ns: str, prefix: bytes = b"") -> list[bytes]:
        """Keys of ``ns`` that start with ``prefix`` (values unread, so never decrypted).

        Args:
            ns: the namespace.
            prefix: the key prefix (empty: every key of ``ns``).

        Returns:
            The keys, in ascending bytewise order.

        Raises:
            UsageError: the store is closed.
            UnavailableError: the storage failed.
        """

    @abstractmethod
    def stored_bytes(self, ns: str, prefix: bytes = b"") -> int:
        """Bytes the sealed values of ``ns`` with the key prefix take, without
        decrypting them.

        Args:
            ns: the namespace.
            prefix: the key prefix (empty: every row of ``ns``).

        Returns:
            The sum of the sealed values' sizes (each value plus 40 bytes of
            nonce and tag); keys are not counted.

        Raises:
            UsageError: the store is closed.
            UnavailableError: the storage failed.
        """

    @abstractmethod
    def count(self, ns: str, prefix: bytes = b"") -> int:
        """Number of rows of ``ns`` with the key prefix.

        Args:
            ns: the namespace.
            prefix: the key prefix (empty: every row of ``ns``).

        Returns:
            How many rows there are.

        Raises:
            UsageError: the store is closed.
            UnavailableError: the storage failed.
        """

    @abstractmethod
    def batch(self) -> contextlib.AbstractContextManager[StoreBatch]:
        """One atomic transaction: every write of the block, or none (see the
        class doc). Durable against a process crash once the block ends.

        Returns:
            A context manager: ``with store.batch() as b:`` gives the
            :class:`StoreBatch` to write with; the block's writes are committed
            when it ends, and dropped when it raises (the exception propagates).

        Raises:
            UsageError: a batch is already open in this thread (batches do not
                nest), or the store is closed.
            UnavailableError: the storage refused the transaction (nothing of it
                was kept).
        """

    @abstractmethod
    def data_version(self) -> int:
        """A number that changes whenever another connection to the same rows
        commits a batch that writes.

        Returns:
            The current data version; this connection's own batches leave it
            unchanged. Compare values for equality only (a change may also be
            reported when nothing changed; the caller then reloads for nothing).

        Raises:
            UsageError: the store is closed.
            UnavailableError: the storage failed.
        """

    @abstractmethod
    def make_durable(self) -> None:
        """Return once every batch that has ended is on stable storage (survives
        a power loss). A store kept only in memory has nothing to force.

        Raises:
            UsageError: the store is closed.
            UnavailableError: the storage failed.
        """

    def batch_open_here(self) -> bool | None:
        """Whether the calling thread holds a :meth:`batch` of this store open.

        Work that may run on another thread (sealing edits) stays on the calling
        thread unless this is False: the other thread would wait for the batch
        forever instead of raising that batches do not nest.

        Returns:
            True or False; None (this default) when the store does not say.

        Raises:
            Nothing: a closed store answers too (False or None).
        """
        return None

    def put(self, ns: str, key: bytes, value: bytes) -> None:
        """Write one row in a batch of its own (see :meth:`StoreBatch.put`).

        Args:
            ns: the namespace.
            key: the row's key.
            value: the plaintext to keep.

        Raises:
            UsageError: a batch is open in this thread, or the store is closed.
            UnavailableError: the storage failed (nothing was written).
        """
        with self.batch() as b:
            b.put(ns, key, value)


#: Makes the store of a device home: called with ``<home>/device.db`` and the
#: 32-byte storage key, returns an open store (the classes themselves fit).
StoreFactory = Callable[[Path, bytes], LocalStore]
