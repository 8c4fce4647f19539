"""The key-value document of a space (``sddsf put/get/ls/rm``), with no concurrent
write silently lost (``docs/client.md``, "Key-value document").

The document ``kv`` of a space holds two root maps:

* ``versions`` (written now): a fresh random version id -> one immutable signed
  JSON record ``{"f": 1, "key", "value" (null: removed), "author", "ts",
  "supersedes", "sig"}``, exactly like vault records (:mod:`sddsf.client.vault`):
  a key's current values (heads) are its versions no other supersedes, so two
  devices that write a key without seeing each other's write leave two heads,
  a *conflict*, shown until a later ``put`` (which supersedes every head) or
  ``rm`` ends it. Authorship and immutability are checked as for the vault
  (:mod:`sddsf.client.records`).
* ``kv`` (older sddsf): key -> plain value, last writer wins. Still read: a key
  with no version shows its plain value. Every ``put``/``rm`` also updates it, so
  older sddsf versions keep seeing the latest write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import pycrdt

from sddsf.client.authors import author_device
from sddsf.client.engine.common import doc_id_for
from sddsf.client.hosts import DocumentHost
from sddsf.client.records import (
    CHANGED,
    REMOVED,
    Authorship,
    authorship,
    current_heads,
    records,
    sign_record,
)
from sddsf.crypto import Ed25519PublicKey, random_bytes
from sddsf.errors import UsageError
from sddsf.protocol.labels import KV_RECORD_SIG

__all__ = ["DOC", "KeyValue", "KvAlert", "KvEntry", "KvVersion"]

DOC: Final = "kv"
PLAIN: Final = "kv"  # the older format's map (key -> value)
MAP: Final = "versions"
_FORMAT: Final = 1
MAX_VALUE: Final = 1 << 20
LEGACY: Final = "plain"  # the version id of a value read from the older map


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class KvVersion:
    """One write of a key; ``value`` is None for a removal."""

    id: str
    key: str
    value: str | None = field(repr=False)
    author: str | None  # device id, hex (None: a plain value of the older format)
    ts_ms: int  # the writer's claimed clock (shown, never used for a decision)
    supersedes: tuple[str, ...]
    verified: bool = field(default=True, compare=False)

    @property
    def deleted(self) -> bool:
        """Whether this version removes the key."""
        return self.value is None


@dataclass(frozen=True)
class KvEntry:
    """A key and its current versions (heads), oldest first."""

    key: str
    heads: tuple[KvVersion, ...]

    @property
    def deleted(self) -> bool:
        """Every head is a removal."""
        return all(h.deleted for h in self.heads)

    @property
    def conflict(self) -> bool:
        """Two or more heads, not all removals: writes that did not see each other."""
        return len(self.heads) > 1 and not self.deleted

    @property
    def value(self) -> str | None:
        """The newest value among the heads (None if removed)."""
        live = [h for h in self.heads if not h.deleted]
        return live[-1].value if live else None


@dataclass(frozen=True)
class KvAlert:
    """A record of the document another device tampered with (see
    :class:`sddsf.client.vault.VaultAlert`)."""

    version: str
    key: str | None
    what: str
    by: str | None


class KeyValue:
    """The key-value document of one space of ``device``. Local: sync the device
    before reading and after writing (writes are flushed to its pending queue)."""

    def __init__(self, device: DocumentHost, space_id: bytes, *,
                 clock: Callable[[], int] = _now_ms) -> None:
        self._device = device
        #: The space whose key-value document this is.
        self.space = space_id
        self._doc = device.doc(space_id, DOC)
        self._scope = space_id + doc_id_for(space_id, DOC)
        self._clock = clock
        #: Ids of records that could not be read (malformed, or a newer format).
        self.unreadable: list[str] = []
        #: Records other devices tampered with, found by the last read.
        self.alerts: list[KvAlert] = []

    # --------------------------------------------------------------- reading
    def _versions(self) -> list[KvVersion]:
        self.unreadable, self.alerts = [], []
        live = dict(self._doc.get(MAP, type=pycrdt.Map).items())
        found: list[KvVersion] = []
        for rec in records(self._scope, live, self._device.provenance):
            seen, d = rec.seen, _parse(rec.value)
            v = None if d is None else _version(rec.key, d)
            if v is None or d is None or seen is None:
                self.unreadable.append(rec.key)
                continue
            status = authorship(KV_RECORD_SIG, rec.key, d, seen, self._public_key,
                                signed=True)
            by = seen.carrier.hex() if seen.carrier is not None else None
            if status is not Authorship.VERIFIED:  # every record of this format is signed
                self.alerts.append(KvAlert(v.id, v.key, status.value, by))
                continue
            change = seen.change
            if rec.altered or (not rec.present and change is not None):
                what = REMOVED if not rec.present else CHANGED
                by = change.carrier.hex() if change and change.carrier else None
                self.alerts.append(KvAlert(v.id, v.key, what, by))
            elif not rec.present:  # an own write never sent (no removal observed)
                self._device.provenance.forget(self._scope, [rec.key])
                continue
            found.append(v)
        return found

    def _public_key(self, device_id: bytes) -> Ed25519PublicKey | None:
        # In a shared space the author may be another member's device.
        found = author_device(self._device, self.space, device_id)
        return None if found is None else found[1].public.signing_key

    def _entries(self) -> dict[str, KvEntry]:
        by_key: dict[str, list[KvVersion]] = {}
        for v in self._versions():
            by_key.setdefault(v.key, []).append(v)
        entries = {k: KvEntry(k, current_heads(vs)) for k, vs in by_key.items()}
        for k, value in self._doc.get(PLAIN, type=pycrdt.Map).items():
            if k not in entries:  # the older format: a plain value, last writer wins
                entries[k] = KvEntry(k, (KvVersion(LEGACY, k, str(value), None, 0, (),
                                                   verified=False),))
        return dict(sorted(entries.items()))

    def entries(self) -> list[KvEntry]:
        """The keys that hold a value (or concurrent values), by key.

        Returns:
            One entry per key with a live value, sorted by key; a key written
            concurrently by two devices holds both values (``conflict``).

        Raises:
            Nothing of its own; records that cannot be read are listed in
            ``unreadable`` and tampered ones in ``alerts`` instead.
        """
        return [e for e in self._entries().values() if not e.deleted]

    def entry(self, key: str) -> KvEntry | None:
        """One key's entry.

        Args:
            key: The key to look up.

        Returns:
            The entry, or None if the key holds no value (never set, or removed).

        Raises:
            Nothing of its own.
        """
        e = self._entries().get(key)
        return None if e is None or e.deleted else e

    # --------------------------------------------------------------- writing
    def _write(self, key: str, value: str | None) -> KvVersion:
        e = self._entries().get(key)
        sup = tuple(sorted(h.id for h in e.heads if h.id != LEGACY)) if e else ()
        v = KvVersion(random_bytes(16).hex(), key, value, self._device.device_id.hex(),
                      self._clock(), sup)
        fields = {"f": _FORMAT, "key": key, "value": value, "author": v.author,
                  "ts": v.ts_ms, "supersedes": list(sup)}
        plain = self._doc.get(PLAIN, type=pycrdt.Map)
        with self._device.provenance.writing([v.id]), self._doc.transaction():
            self._doc.get(MAP, type=pycrdt.Map)[v.id] = sign_record(
                self._device.keys, KV_RECORD_SIG, v.id, fields)
            if value is not None:
                plain[key] = value
            elif key in plain:
                del plain[key]
        self._device.flush()
        return v

    def put(self, key: str, value: str) -> KvVersion:
        """Set ``key``, superseding every current value (it ends a conflict).

        The signed version is queued on the device; it reaches the relay at the
        next sync.

        Args:
            key: A non-empty key.
            value: The value, at most 1 MiB of UTF-8.

        Returns:
            The new version (its id, author device and time).

        Raises:
            UsageError: an empty key or a value over 1 MiB.
        """
        if not key:
            raise UsageError("a key is at least one character")
        if len(value.encode()) > MAX_VALUE:
            raise UsageError(f"a value is at most {MAX_VALUE >> 20} MiB")
        return self._write(key, value)

    def rm(self, key: str, space_name: str = "") -> KvVersion:
        """Remove ``key`` (every current value); the removal is a signed version.

        Args:
            key: The key to remove.
            space_name: The space's name, only to word the error message.

        Returns:
            The removal's version (``value`` is None).

        Raises:
            UsageError: the key holds no value.
        """
        if self.entry(key) is None:
            where = f" in {space_name!r}" if space_name else ""
            raise UsageError(f"no key {key!r}{where}; `sddsf ls {space_name or 'SPACE'}` "
                             "lists them")
        return self._write(key, None)


def _parse(raw: str | None) -> dict[str, Any] | None:
    try:
        d = json.loads(raw) if raw is not None else None
    except (ValueError, RecursionError):  # a record nested deep enough is a DoS
        return None
    return d if isinstance(d, dict) and d.get("f") == _FORMAT else None


def _version(vid: str, d: dict[str, Any]) -> KvVersion | None:
    key, value, author, ts, sup = (d.get(k) for k in ("key", "value", "author", "ts",
                                                      "supersedes"))
    if not (isinstance(key, str) and (value is None or isinstance(value, str))
            and isinstance(author, str) and isinstance(ts, int) and not isinstance(ts, bool)
            and isinstance(sup, list) and all(isinstance(s, str) for s in sup)):
        return None
    return KvVersion(vid, key, value, author, ts, tuple(sup))
