"""Write-once records: who really wrote each one, and what it first said.

The vault (document ``vault``) and the key-value document (document ``kv``)
keep immutable records in a root pycrdt Map named ``versions``: one fresh
random key per write, never written twice. A record names its author, but
inside an op a Yjs update can write any key with any content, so that field is
only a claim: an own device that turned malicious could name another device as
the author, rewrite a record in place, or remove one. The relay cannot tell (it
holds ciphertext); the op signature can: every op a device applies was
verified (``Device._apply_verified``) and names its signer.

:class:`Provenance` observes those maps in every document a device opens and
keeps, per (space, document, key), in the device store (namespace ``prov``) a
:class:`Seen`:

* the value first seen under the key, which stays authoritative: a later
  change is never adopted;
* the *carrier*, the device whose verified op first brought the key (this
  device for its own edits; unknown for a key loaded from a snapshot or held
  before this device kept provenance);
* this device's clock and a local sequence number at that moment: grace
  periods and report watermarks use them, never a record's claimed time;
* the last change or removal of the key, with the signer of the op that made it.

Entries are written in the same store transaction as the document edits that
made them (:meth:`Provenance.persist`), so a key is never in one and not the other.

Records are also signed by their author (:func:`sign_record`): a record
carried by a snapshot (whose ops this device never saw) is still checked.
:func:`authorship` combines both checks.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import pycrdt

from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.labels import labelled

if TYPE_CHECKING:
    from sddsf.client.store import LocalStore, StoreBatch
    from sddsf.crypto import Ed25519PublicKey
    from sddsf.protocol.identity import DeviceKeys

__all__ = ["TRACKED", "Authorship", "Change", "Provenance", "Record", "Seen", "authorship",
           "canonical", "current_heads", "records", "sign_record", "signature_valid"]

#: Document name -> its root map of write-once records.
TRACKED: Final = {"vault": "versions", "kv": "versions"}
CHANGED: Final = "changed"
REMOVED: Final = "removed"
_NS: Final = "prov"
_META: Final = "provmeta"
_SEQ: Final = b"seq"
_ACK: Final = b"ack/"
_SCOPE: Final = 32  # space id (16 bytes) + document id (16 bytes)


@dataclass(frozen=True, slots=True)
class Change:
    """The last change (``changed``) or removal (``removed``) of a known key."""

    action: str
    carrier: bytes | None  # the device whose verified op made it (None: unknown)
    ms: int
    seq: int


@dataclass(frozen=True, slots=True)
class Seen:
    """What this device knows of one key of a write-once map."""

    value: str | None  # the first value seen (None: not text, so unreadable)
    carrier: bytes | None  # the device whose verified op first carried it
    first_ms: int  # this device's clock when it first saw the key
    seq: int  # local order of first sightings and changes
    change: Change | None = None
    #: It appeared while another op was applied without being in that op (content
    #: a crafted update planted earlier): its carrier is unknown and suspect.
    suspect: bool = False


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _encode_seen(s: Seen) -> bytes:
    c = s.change
    return encode([s.value, s.carrier, s.first_ms, s.seq,
                   None if c is None else [c.action, c.carrier, c.ms, c.seq], s.suspect])


def _opt_bytes(value: object) -> bytes | None:
    return value if isinstance(value, bytes) else None


def _stored_int(raw: bytes | None) -> int:
    value = decode(raw) if raw is not None else 0
    return value if isinstance(value, int) else 0


def _effects(op: _Op) -> tuple[bool, dict[str, str | None]]:
    """Whether the op's transactions took in more than its own updates, and the new
    keys its updates hold. Anything unexpected (bytes Yjs applied but will not
    merge) counts as foreign: attribution is then withheld, never an error that
    would stop this device from syncing."""
    try:
        if not op.updates:
            return bool(op.txns), {}
        own = pycrdt.merge_updates(*op.updates)
        foreign = bool(op.txns) and pycrdt.merge_updates(own, *op.txns) != (
            pycrdt.merge_updates(own))
        return foreign, _content(op.updates, op.root)
    except Exception:  # any failure: see the docstring
        return True, {}


def _content(updates: Sequence[bytes], root: str) -> dict[str, str | None]:
    """New keys an op's updates hold by themselves: applied to an empty document,
    a new key shows (a map entry for a new key depends on nothing, unless an
    earlier item of the same Yjs client in the update waits for a missing origin),
    while a change of an existing key or a deletion does not."""
    if not updates:
        return {}
    scratch: pycrdt.Doc[Any] = pycrdt.Doc()
    for u in updates:
        scratch.apply_update(u)
    return {k: _text(v) for k, v in scratch.get(root, type=pycrdt.Map).items()}


def _decode_seen(raw: bytes) -> Seen | None:
    row = decode(raw)
    if not (isinstance(row, list) and len(row) == 6 and isinstance(row[2], int)
            and isinstance(row[3], int)):
        return None
    c = row[4]
    change = (Change(str(c[0]), _opt_bytes(c[1]), int(c[2]), int(c[3]))
              if isinstance(c, list) and len(c) == 4 else None)
    return Seen(_text(row[0]), _opt_bytes(row[1]), row[2], row[3], change, row[5] is True)


@dataclass
class _Op:
    """A verified op being applied to a tracked document."""

    scope: bytes
    root: str
    carrier: bytes | None
    updates: list[bytes]
    txns: list[bytes] = field(default_factory=list)  # what its transactions integrated
    first: set[str] = field(default_factory=set)  # keys first seen while applying it
    changed: set[str] = field(default_factory=set)  # keys whose change it recorded


class Provenance:
    """A device's record of who carried each key of its write-once maps.

    The device calls :meth:`attach` for every document it opens,
    :meth:`applying` before applying the updates of a verified op (and
    :meth:`applied` after the last one), and :meth:`persist` in the store
    transactions that save document edits. Its own writers declare the keys
    they write (:meth:`writing`).

    Attribution is checked against the op's own content, because a crafted Yjs
    update can wait in a document (an item whose origin does not exist yet, a
    deletion of items not received yet) and take effect only when another
    device's op arrives: a key counts as carried by the op only if the op's
    updates alone hold it (applied to an empty document); a change counts as
    the op's only if its transaction integrated nothing but the op's content
    (else the change is recorded with an unknown carrier); a key the op carried
    but that a planted deletion removed at once is recorded as removed.
    """

    def __init__(self, store: LocalStore, device_id: bytes, clock: Callable[[], int]) -> None:
        self._store = store
        self._me = device_id
        self._clock = clock
        self._remote = False
        self._carrier: bytes | None = None  # of remote updates outside a tracked op
        self._op: _Op | None = None
        self._expected: set[str] = set()
        self._scopes: dict[int, tuple[bytes, str]] = {}  # id(doc) -> (scope, root)
        self._tables: dict[bytes, dict[str, Seen]] = {}
        self._dirty: dict[bytes, dict[str, Seen | None]] = {}
        self._seq: int | None = None
        self._subs: list[Any] = []

    # ------------------------------------------------------------ observing
    def attach(self, scope: bytes, name: str, doc: pycrdt.Doc[Any]) -> None:
        """Observe the write-once map of document ``name`` (if it has one).

        ``scope`` is the space id followed by the document id.
        """
        root = TRACKED.get(name)
        if root is None:
            return
        self._scopes[id(doc)] = (scope, root)

        def observed(event: Any) -> None:  # one parameter: pycrdt then passes only the event
            self._observed(scope, event)

        def integrated(event: Any) -> None:
            if self._op is not None and self._op.scope == scope:
                self._op.txns.append(bytes(event.update))

        self._subs.append(doc.get(root, type=pycrdt.Map).observe(observed))
        self._subs.append(doc.observe(integrated))

    def applying(self, author: bytes | None, doc: pycrdt.Doc[Any] | None = None,
                 updates: Sequence[bytes] = ()) -> None:
        """The updates applied next are ``updates`` of a verified op signed by
        ``author`` to ``doc`` (``author`` None: a snapshot, carrier unknown)."""
        self._finish()
        self._remote, self._carrier = True, author
        tracked = self._scopes.get(id(doc)) if doc is not None else None
        if tracked is not None and author is not None:
            self._op = _Op(tracked[0], tracked[1], author,
                           [u for u in updates if isinstance(u, bytes)])

    def applied(self) -> None:
        """Edits from now on are this device's own."""
        self._finish()
        self._remote, self._carrier = False, None

    @contextlib.contextmanager
    def writing(self, keys: Iterable[str]) -> Iterator[None]:
        """This device adds or removes ``keys`` of a write-once map in the block;
        local changes of other keys are not attributed to it."""
        self._expected = set(keys)
        try:
            yield
        finally:
            self._expected = set()

    def _observed(self, scope: bytes, event: Any) -> None:
        table = self.table(scope)
        now = self._clock()
        op = self._op if self._op is not None and self._op.scope == scope else None
        for key, change in event.keys.items():
            carrier = (self._carrier if op is None else op.carrier) if self._remote else (
                self._me if key in self._expected else None)
            action = change.get("action")
            new = _text(change.get("newValue"))
            seen = table.get(key)
            if seen is None:
                if action == "add":
                    self._set(scope, key, Seen(new, carrier, now, self._next()))
                    if op is not None:
                        op.first.add(key)
                    continue
                # Held before this device kept provenance: its old value is the first known.
                seen = Seen(_text(change.get("oldValue")), None, now, self._next())
            if action == "delete":
                seen = replace(seen, change=Change(REMOVED, carrier, now, self._next()))
            elif new != seen.value:
                seen = replace(seen, change=Change(CHANGED, carrier, now, self._next()))
            else:
                continue
            self._set(scope, key, seen)
            if op is not None:
                op.changed.add(key)

    def _finish(self) -> None:
        """Check what the op being applied did against its own content."""
        op, self._op = self._op, None
        if op is None:
            return
        foreign, content = _effects(op)
        table, now = self.table(op.scope), self._clock()
        # Only when the transaction took in more than the op: then a key the op's
        # content lacks came from elsewhere. (Alone, an update may not show every
        # new key it holds: Yjs holds back a client's items after one whose origin
        # is missing, e.g. after a change of an existing key.)
        for key in op.first - content.keys() if foreign else ():
            self._set(op.scope, key, replace(table[key], carrier=None, suspect=True))
        for key in op.changed if foreign else ():
            change = table[key].change
            if change is not None:
                self._set(op.scope, key, replace(table[key], change=replace(change, carrier=None)))
        for key, value in content.items():
            seen = table.get(key)
            if seen is None:  # carried, but a planted deletion removed it before it showed
                self._set(op.scope, key, Seen(value, op.carrier, now, self._next(), Change(
                    REMOVED, None, now, self._next())))
            elif key in op.first and seen.value != value:  # changed in the same transaction
                self._set(op.scope, key, Seen(value, op.carrier, seen.first_ms, seen.seq,
                                              Change(CHANGED, None, now, self._next())))
            elif key not in op.first and seen.value != value:  # the op wrote a known key
                self._set(op.scope, key, replace(seen, change=Change(
                    CHANGED, op.carrier, now, self._next())))

    # --------------------------------------------------------------- table
    def table(self, scope: bytes) -> Mapping[str, Seen]:
        """Every key of ``scope`` this device has seen (read-only view)."""
        table = self._tables.get(scope)
        if table is None:
            table = {}
            for k, raw in self._store.scan(_NS, scope):
                seen = _decode_seen(raw)
                if seen is not None:
                    table[k[_SCOPE:].decode("utf-8", "replace")] = seen
            self._tables[scope] = table
        return MappingProxyType(table)

    def _set(self, scope: bytes, key: str, seen: Seen | None) -> None:
        self.table(scope)
        if seen is None:
            self._tables[scope].pop(key, None)
        else:
            self._tables[scope][key] = seen
        self._dirty.setdefault(scope, {})[key] = seen

    def _next(self) -> int:
        if self._seq is None:
            self._seq = _stored_int(self._store.get(_META, _SEQ))
        self._seq += 1
        return self._seq

    def adopt(self, scope: bytes, values: Mapping[str, str | None]) -> None:
        """Record keys found in a document but never observed (held before this
        device kept provenance): their carrier is unknown; saved at once."""
        now = self._clock()
        for key, value in values.items():
            self._set(scope, key, Seen(value, None, now, self._next()))
        self._save(scope, values)

    def forget(self, scope: bytes, keys: Iterable[str]) -> None:
        """Drop keys (records purged for good); saved at once."""
        keys = list(keys)
        for key in keys:
            self._set(scope, key, None)
        self._save(scope, keys)

    def _save(self, scope: bytes, keys: Iterable[str]) -> None:
        dirty = self._dirty.get(scope, {})
        with self._store.batch() as b:
            for key in keys:
                if key in dirty:
                    self._write(b, scope, key, dirty.pop(key))
            if self._seq is not None:
                b.put(_META, _SEQ, encode(self._seq))

    def persist(self, batch: StoreBatch, scope: bytes | None = None) -> None:
        """Write the entries changed since the last save (of ``scope``, or all) in
        the caller's store transaction."""
        for s in [scope] if scope is not None else list(self._dirty):
            for key, seen in self._dirty.pop(s, {}).items():
                self._write(batch, s, key, seen)
        if self._seq is not None:
            batch.put(_META, _SEQ, encode(self._seq))

    @staticmethod
    def _write(batch: StoreBatch, scope: bytes, key: str, seen: Seen | None) -> None:
        if seen is None:
            batch.delete(_NS, scope + key.encode())
        else:
            batch.put(_NS, scope + key.encode(), _encode_seen(seen))

    # ----------------------------------------------------------- alerts ack
    def acknowledged(self, what: str) -> int:
        """The local sequence number up to which alerts about ``what`` were acknowledged."""
        return _stored_int(self._store.get(_META, _ACK + what.encode()))

    def acknowledge(self, what: str, seq: int) -> None:
        """Acknowledge the alerts about ``what`` up to local sequence number ``seq``."""
        self._store.put(_META, _ACK + what.encode(), encode(max(seq, self.acknowledged(what))))


# --------------------------------------------------------------- reading
@dataclass(frozen=True, slots=True)
class Record:
    """One key of a write-once map as a reader must take it."""

    key: str
    value: str | None  # the authoritative (first seen) value
    seen: Seen | None  # None: plain documents, no provenance
    present: bool  # the document still holds the key
    altered: bool  # the document holds another value than the first


def records(scope: bytes | None, live: Mapping[str, object],
            provenance: Provenance | None) -> list[Record]:
    """The records of one write-once map: with ``provenance``, every key this
    device ever saw there, with its first value (keys never observed are adopted);
    without, the map as it is."""
    if provenance is None or scope is None:
        return [Record(k, _text(v), None, True, False) for k, v in live.items()]
    known = provenance.table(scope)
    new = {k: _text(v) for k, v in live.items() if k not in known}
    if new:
        provenance.adopt(scope, new)
    return [Record(k, s.value, s, k in live, k in live and _text(live[k]) != s.value)
            for k, s in provenance.table(scope).items()]


# ------------------------------------------------------------ signatures
def canonical(fields: Mapping[str, Any]) -> str:
    """The canonical JSON text of a record (sorted keys, no spaces)."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def sign_record(keys: DeviceKeys, label: str, key: str, fields: Mapping[str, Any]) -> str:
    """``fields`` plus ``sig``: the author's Ed25519 signature over
    ``labelled(label, key, canonical(fields))``, as canonical JSON. The key (the
    record id) is signed, so a record cannot be copied under another key."""
    sig = keys.sign(labelled(label, key, canonical(fields)))
    return canonical({**fields, "sig": sig.hex()})


def signature_valid(label: str, key: str, record: Mapping[str, Any],
                    public: Ed25519PublicKey) -> bool:
    """Whether ``record["sig"]`` is ``public``'s signature of the rest of it."""
    sig = record.get("sig")
    if not isinstance(sig, str) or len(sig) != 128:
        return False
    try:
        raw = bytes.fromhex(sig)
    except ValueError:
        return False
    body = {k: v for k, v in record.items() if k != "sig"}
    return public.is_valid_signature(labelled(label, key, canonical(body)), raw)


class Authorship(StrEnum):
    """What a reader may believe about a record's ``author`` field."""

    VERIFIED = "verified"  # signed by it, or carried by its verified op
    UNVERIFIED = "unverified"  # an unsigned (older format) record of unknown carrier
    FORGED = "forged"  # a signature that does not verify, or an unknown author
    MISATTRIBUTED = "misattributed"  # carried by another device's op than its author's


def authorship(label: str, key: str, record: Mapping[str, Any], seen: Seen,
               public_key: Callable[[bytes], Ed25519PublicKey | None], *,
               signed: bool) -> Authorship:
    """Check a record's claimed ``author`` (hex) against its signature (when the
    format is ``signed``) and against the signer of the op that carried it
    (``seen.carrier``); an unsigned record planted by a crafted update
    (``seen.suspect``) is forged."""
    carrier = seen.carrier
    try:
        author = bytes.fromhex(str(record.get("author")))
    except ValueError:
        return Authorship.FORGED
    if signed:
        public = public_key(author)
        if public is None or not signature_valid(label, key, record, public):
            return Authorship.FORGED
    if carrier is not None and carrier != author:
        return Authorship.MISATTRIBUTED
    if not signed and carrier is None:
        return Authorship.FORGED if seen.suspect else Authorship.UNVERIFIED
    return Authorship.VERIFIED


# ----------------------------------------------------------------- heads
class _Versioned(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def ts_ms(self) -> int: ...

    @property
    def supersedes(self) -> tuple[str, ...]: ...


V = TypeVar("V", bound=_Versioned)


def current_heads(versions: Sequence[V]) -> tuple[V, ...]:
    """The versions no other supersedes, oldest first (all of them if a cycle,
    which only a broken writer makes, leaves none)."""
    superseded = {s for v in versions for s in v.supersedes}
    heads = [v for v in versions if v.id not in superseded]
    return tuple(sorted(heads or versions, key=lambda v: (v.ts_ms, v.id)))
