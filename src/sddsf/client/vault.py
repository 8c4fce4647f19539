"""The vault: seed phrases, private keys, passwords and notes, synced like any space,
with no concurrent write ever silently lost (``docs/vault.md``).

The vault is the space named ``vault``; its document ``vault`` holds one pycrdt Map,
``versions``, from a random version id to one immutable JSON record: name, kind,
secret (``null`` for a deletion), author device id, timestamp and the ids of the
versions it supersedes (the heads its writer saw). A key is written once and
never overwritten, so Yjs's last-writer-wins on map keys never drops a write.
An item's current versions (heads) are its versions that no other supersedes;
two or more heads that are not all deletions are a conflict, which
:meth:`Vault.resolve` ends by writing a version that supersedes every head.

A device's vault (:meth:`Vault.open`) trusts no record's claims
(:mod:`sddsf.client.records`): a record is signed by its author (format 2) and
must have been carried by its author's verified op, or it is refused; the value
a device first saw under a version id stays that version (a change or removal
is refused and alerted, :meth:`Vault.all_alerts`); grace periods and deletion
reports use the time this device first saw a record, not its claimed ``ts``.

A shared space has a vault too (:meth:`Vault.open` with ``space``): the
document ``vault`` of that space, in the same format. One secret goes there
with :meth:`Vault.share`, so the space's members read that secret and nothing
else of the personal vault. Its records' signatures are checked with the key
of the author device as listed by this account's registry or by the verified
registry of an account that is or was a member of the space
(:func:`author_device`).

Secrets appear only in :attr:`Version.secret`: never in a repr, an error message
or :meth:`Version.describe`.

Size: the vault document's versions, conflicts, tombstones and the alerts about
them are one set of invariants (docs/vault.md) over one pycrdt map; they are
checked together on every read.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import json
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import pycrdt
from mnemonic import Mnemonic

from sddsf.client.authors import author_device, vouching_registries
from sddsf.client.engine.common import doc_id_for
from sddsf.client.hosts import DocumentHost
from sddsf.client.records import (
    CHANGED,
    REMOVED,
    Authorship,
    Provenance,
    Seen,
    authorship,
    canonical,
    current_heads,
    records,
    sign_record,
)
from sddsf.crypto import Ed25519PublicKey, Ed25519SigningKey, random_bytes, secp256k1_public_key
from sddsf.errors import AuthorizationError, NotFoundError, UsageError
from sddsf.protocol.labels import VAULT_RECORD_SIG

if TYPE_CHECKING:
    from sddsf.protocol.identity import DeviceKeys

__all__ = ["GRACE_MS", "KINDS", "DeviceTrust", "Item", "Vault", "VaultAlert",
           "VaultConflictError", "Version", "author_device", "normalize_secret",
           "vouching_registries"]

SPACE: Final = "vault"
DOC: Final = "vault"
MAP: Final = "versions"
GRACE_MS: Final = 30 * 24 * 3600 * 1000  # a deletion can be undone for 30 days
KINDS: Final = ("password", "bip39", "ed25519", "secp256k1", "note")
ALIASES: Final = {"generic": "note"}
GENERATED: Final = ("ed25519", "secp256k1", "bip39")
MAX_NAME: Final = 200
MAX_SECRET: Final = 64 * 1024
_BIP39_WORDS: Final = (12, 15, 18, 21, 24)
_MIN_PREFIX: Final = 4
#: Record formats: 1 unsigned (older sddsf), 2 signed by the author (written now).
_UNSIGNED, _SIGNED = 1, 2


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Version:
    """One immutable write of an item; ``secret`` is None for a deletion (tombstone)."""

    #: The version id: 32 hex digits, random, never reused.
    id: str
    #: The item's name.
    name: str
    #: One of :data:`KINDS`.
    kind: str
    #: The secret in its stored form (:func:`normalize_secret`); None for a tombstone.
    secret: str | None = field(repr=False)
    #: The author's device id, hex.
    author: str
    #: The writer's claimed clock (Unix ms): shown, never trusted for a decision.
    ts_ms: int
    #: The ids of the item's versions this write replaced (the heads its writer saw).
    supersedes: tuple[str, ...]
    #: The author is checked (signature, or the signer of the op that carried it);
    #: False for an older unsigned record this device did not see arrive in an op.
    verified: bool = field(default=True, compare=False)
    #: When this device first saw the version (None: plain documents; ts_ms is used).
    seen_ms: int | None = field(default=None, compare=False)

    @property
    def seen(self) -> int:
        """When this device first saw the version (the claimed time on plain documents)."""
        return self.ts_ms if self.seen_ms is None else self.seen_ms

    @property
    def deleted(self) -> bool:
        """Whether this version is a tombstone."""
        return self.secret is None

    @property
    def public_key(self) -> str | None:
        """The hex public key of an ed25519 or secp256k1 key version, else None."""
        return None if self.secret is None else public_key(self.kind, self.secret)

    def describe(self) -> dict[str, Any]:
        """Everything about this version except the secret, for display or JSON.

        Returns:
            ``version`` (id), ``kind``, ``deleted``, ``author`` (device id, hex),
            ``author_verified``, ``ts_ms`` (claimed), ``supersedes`` (ids) and
            ``fingerprint``: the first 16 hex digits of a key's public key (None
            for other kinds and tombstones).

        Raises:
            UsageError: a secp256k1 version whose secret is not a valid private
                key (0, or not below the group order). Only a ``Version`` built by
                hand holds one: a vault reads such a record as unreadable
                (:attr:`Vault.unreadable`), never as a version.
        """
        pub = self.public_key
        return {"version": self.id, "kind": self.kind, "deleted": self.deleted,
                "author": self.author, "author_verified": self.verified, "ts_ms": self.ts_ms,
                "supersedes": list(self.supersedes), "fingerprint": pub and pub[:16]}


@dataclass(frozen=True)
class VaultAlert:
    """A record another device tampered with. ``what``: ``changed`` or ``removed``
    (the first value is kept), ``forged`` (a signature that does not verify) or
    ``misattributed`` (carried by another device's op than its author's); both
    refused. ``by``: hex id of the device whose verified op did it (None: unknown)."""

    #: The id of the version tampered with.
    version: str
    #: The item's name, as the first value seen says.
    name: str | None
    #: ``changed``, ``removed``, ``forged`` or ``misattributed``.
    what: str
    #: Hex id of the device whose verified op did it (None: unknown).
    by: str | None
    #: Local order (alerts up to an acknowledged seq are not warned about).
    seq: int

    def describe(self) -> dict[str, Any]:
        """The alert as a plain dict, for display or JSON (it holds no secret).

        Returns:
            ``version``, ``name``, ``what``, ``by`` and ``seq``, as the fields.

        Raises:
            Nothing of its own.
        """
        return {"version": self.version, "name": self.name, "what": self.what, "by": self.by,
                "seq": self.seq}


@dataclass(frozen=True)
class DeviceTrust:
    """What a device's vault checks records with (see :meth:`Vault.open`)."""

    #: Signs this device's records.
    keys: DeviceKeys
    #: A device's signing key, by device id (None: not in the registry).
    public_key: Callable[[bytes], Ed25519PublicKey | None]
    #: Who carried each record, and the value first seen under its id.
    provenance: Provenance
    #: The vault documents, each with its scope (space id + document id).
    sources: Callable[[], Sequence[tuple[bytes, pycrdt.Doc[Any]]]]
    #: Whether this account may write the vault's space (False: a reader of a
    #: shared space, or no longer a member): checked before every write.
    may_write: Callable[[], bool] = lambda: True
    #: Under which name the device's store keeps the acknowledged alerts.
    ack: str = SPACE


@dataclass(frozen=True)
class Item:
    """A named secret: its current versions (heads), oldest first."""

    #: The item's name.
    name: str
    #: The versions no other version supersedes, oldest first (by claimed time).
    heads: tuple[Version, ...]

    @property
    def deleted(self) -> bool:
        """Every head is a tombstone: hidden from lists, restorable during the grace."""
        return all(h.deleted for h in self.heads)

    @property
    def conflict(self) -> bool:
        """Two or more heads, not all of them tombstones."""
        return len(self.heads) > 1 and not self.deleted

    @property
    def kind(self) -> str:
        """The kind of the newest head."""
        return self.heads[-1].kind

    @property
    def updated_ms(self) -> int:
        """When the newest head was written (as its writer claims)."""
        return self.heads[-1].ts_ms

    def describe(self) -> dict[str, Any]:
        """Name, kind, flags and heads, without any secret, for display or JSON.

        Returns:
            ``name``, ``kind``, ``conflict``, ``deleted``, ``updated_ms`` and
            ``versions``: :meth:`Version.describe` of each head, oldest first.

        Raises:
            UsageError: a head is a secp256k1 version whose stored secret is not
                a valid private key (see :meth:`Version.describe`).
        """
        return {"name": self.name, "kind": self.kind, "conflict": self.conflict,
                "deleted": self.deleted, "updated_ms": self.updated_ms,
                "versions": [h.describe() for h in self.heads]}


class VaultConflictError(UsageError):
    """An item has several current versions; read one with ``version=`` and resolve.

    Raised by :meth:`Vault.get`; a :class:`~sddsf.errors.UsageError` (code ``usage``).

    Args:
        message: What happened and how to go on (names, short ids; no secret).
        versions: The ids of the item's current versions.

    Attributes:
        versions: The full ids of the item's current versions, oldest first:
            pass one to ``Vault.get(name, version=...)`` or ``Vault.resolve``.
    """

    def __init__(self, message: str, versions: Sequence[str]) -> None:
        super().__init__(message)
        self.versions = tuple(versions)


# ------------------------------------------------------------------ validation
@functools.cache
def _mnemonic() -> Mnemonic:
    return Mnemonic("english")


def check_kind(kind: str) -> str:
    """The canonical kind (``generic`` is ``note``)."""
    canonical = ALIASES.get(kind.lower(), kind.lower())
    if canonical not in KINDS:
        raise UsageError(f"unknown secret kind {kind!r}; use one of "
                         f"{', '.join(KINDS)} (generic = note)")
    return canonical


def check_name(name: str) -> str:
    """A name: 1 to 200 characters, no control characters."""
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise UsageError(f"a vault item name has 1 to {MAX_NAME} printable characters")
    return name


def normalize_secret(kind: str, secret: str) -> str:
    """Validate ``secret`` for ``kind`` and return its stored form.

    Args:
        kind: One of :data:`KINDS`, in any case (``generic`` is ``note``).
        secret: The secret as typed or read: at most 64 KiB, not blank. A BIP39
            phrase has 12, 15, 18, 21 or 24 English words and a valid checksum; an
            ed25519 seed or secp256k1 secret is 32 bytes as 64 hex digits (``0x``
            allowed; a secp256k1 secret is above 0 and below the group order).

    Returns:
        The stored form: a BIP39 phrase in single-spaced lower case, a key as 64
        lower-case hex digits, a password or note as given.

    Raises:
        UsageError: an unknown kind, a blank or too long secret, or one that is
            not valid for its kind; the message says what is wrong and how to
            fix it (never the secret itself).
    """
    kind = check_kind(kind)
    if not secret.strip():
        raise UsageError(f"the {kind} is empty; pass it on stdin or with --from-file")
    if len(secret.encode()) > MAX_SECRET:
        raise UsageError(f"a vault secret is at most {MAX_SECRET // 1024} KiB")
    if kind == "bip39":
        return _bip39(secret)
    if kind in ("ed25519", "secp256k1"):
        text = secret.strip().lower().removeprefix("0x")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise UsageError(f"{kind} private keys are 64 hex digits (32 bytes); this "
                             "one has characters that are not hex") from None
        if len(raw) != 32:
            raise UsageError(f"{kind} private keys are 64 hex digits (32 bytes); this one "
                             f"is {len(raw)} bytes")
        public_key(kind, raw.hex())
        return raw.hex()
    return secret


def _bip39(secret: str) -> str:
    words = secret.lower().split()
    if len(words) not in _BIP39_WORDS:
        raise UsageError(f"a BIP39 phrase has 12, 15, 18, 21 or 24 words, not {len(words)}")
    known = set(_mnemonic().wordlist)
    bad = [str(i) for i, w in enumerate(words, 1) if w not in known]
    if bad:
        raise UsageError(f"word(s) {', '.join(bad)} of the phrase are not in the BIP39 "
                         "English word list; check their spelling")
    phrase = " ".join(words)
    if not _mnemonic().check(phrase):
        raise UsageError("the BIP39 checksum does not match: a word is wrong or two are "
                         "swapped; compare the phrase with your backup")
    return phrase


def public_key(kind: str, secret_hex: str) -> str | None:
    """The hex public key of an ed25519 seed or secp256k1 secret; None for other kinds.

    Raises:
        UsageError: the secp256k1 secret is 0 or not below the group order.
    """
    if kind == "ed25519":
        return Ed25519SigningKey.from_seed(bytes.fromhex(secret_hex)).public.raw.hex()
    if kind == "secp256k1":
        return secp256k1_public_key(bytes.fromhex(secret_hex)).hex()
    return None


def _generate(kind: str) -> str:
    if kind == "bip39":
        return str(_mnemonic().to_mnemonic(random_bytes(32)))  # 24 words
    while True:  # a secp256k1 secret is invalid with probability ~2^-128
        secret = random_bytes(32).hex()
        try:
            public_key(kind, secret)
        except UsageError:
            continue
        return secret


# ---------------------------------------------------------------- the records
def _fields(v: Version, fmt: int) -> dict[str, Any]:
    return {"f": fmt, "name": v.name, "kind": v.kind, "secret": v.secret, "author": v.author,
            "ts": v.ts_ms, "supersedes": list(v.supersedes)}


def _encode(v: Version, keys: DeviceKeys | None = None) -> str:
    if keys is None:  # plain documents (no device): the older unsigned format
        return canonical(_fields(v, _UNSIGNED))
    return sign_record(keys, VAULT_RECORD_SIG, v.id, _fields(v, _SIGNED))


def _parse(raw: object) -> dict[str, Any] | None:
    try:
        d = json.loads(raw) if isinstance(raw, str) else None
    except (ValueError, RecursionError):  # a record nested deep enough is a DoS
        return None
    if not isinstance(d, dict) or d.get("f") not in (_UNSIGNED, _SIGNED):
        return None
    return d


def _version(vid: str, d: dict[str, Any]) -> Version | None:
    name, kind, secret, author, ts, sup = (d.get(k) for k in (
        "name", "kind", "secret", "author", "ts", "supersedes"))
    if not (isinstance(name, str) and kind in KINDS and isinstance(author, str)
            and (secret is None or isinstance(secret, str))
            and isinstance(ts, int) and not isinstance(ts, bool) and isinstance(sup, list)
            and all(isinstance(s, str) for s in sup)):
        return None
    if kind in ("ed25519", "secp256k1") and secret is not None and not _valid_key(
            str(kind), secret):
        return None
    return Version(vid, name, str(kind), secret, author, ts, tuple(sup))


def _valid_key(kind: str, secret: str) -> bool:
    """Whether a stored key record holds a usable key: 64 lower-case hex digits that
    are a valid secret for ``kind``. Anything else is unreadable: a record that
    ``public_key`` would refuse must not make every listing raise."""
    if len(secret) != 64 or secret.strip("0123456789abcdef"):
        return False
    try:
        public_key(kind, secret)
    except UsageError:
        return False
    return True


def _decode(vid: str, raw: object) -> Version | None:
    d = _parse(raw)
    return None if d is None else _version(vid, d)


def _heads(versions: Sequence[Version]) -> tuple[Version, ...]:
    return current_heads(versions)


def _hex(device_id: bytes | None) -> str | None:
    return None if device_id is None else device_id.hex()


@dataclass
class _View:
    """What a read found: the versions taken, how this device saw each, what it refused."""

    versions: dict[str, Version] = field(default_factory=dict)
    seen: dict[str, Seen] = field(default_factory=dict)
    refused: list[Version] = field(default_factory=list)
    alerts: list[VaultAlert] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


class Vault:
    """The vault of a device (:meth:`open`), or over any pycrdt documents (tests).

    Reads union the ``versions`` maps of every document ``docs()`` returns (two
    devices that each created a ``vault`` space before syncing leave two); writes
    go to the first. ``commit`` runs after each write (``Device.flush``). Methods
    are local: sync the device before reading and after writing.

    Without ``trust`` (plain documents, for tests and tools) records are taken as
    they claim to be; a device's vault always has it (see the module docstring).

    A device's vault reads and writes the device's store on every call, so any
    method may also raise the store's errors (``DecryptError`` for a store file
    that was tampered with); "Nothing of its own" below means only those.

    Args:
        docs: Returns the vault documents; writes go to the first.
        author: This device's id (recorded, hex, as :attr:`Version.author`).
        clock: Unix milliseconds: write times and the grace period.
        grace_ms: How long a deletion can be undone (:data:`GRACE_MS`).
        commit: Runs after each write (a device's vault: ``Device.flush``).
        trust: How records are checked (a device's vault); None takes them as
            they claim to be.
        space: The shared space whose vault this is (None: the personal vault).
        label: The shared space's name, for messages (``--space`` in hints).
    """

    def __init__(self, docs: Callable[[], Sequence[pycrdt.Doc[Any]]], author: bytes, *,
                 clock: Callable[[], int] = _now_ms, grace_ms: int = GRACE_MS,
                 commit: Callable[[], object] = lambda: None,
                 trust: DeviceTrust | None = None, space: bytes | None = None,
                 label: str = "") -> None:
        self._docs = docs
        #: The shared space whose vault this is (None: the personal vault).
        self.space = space
        self.label = label
        self.author = author.hex()
        self._clock = clock
        self.grace_ms = grace_ms
        self._commit = commit
        self._trust = trust
        #: Ids of records that could not be read (malformed, or a newer format).
        self.unreadable: builtins.list[str] = []
        #: Records other devices tampered with, found by the last read.
        self.alerts: builtins.list[VaultAlert] = []

    @classmethod
    async def open(cls, device: DocumentHost, *, space: bytes | None = None,
                   create: bool = True, clock: Callable[[], int] = _now_ms,
                   grace_ms: int = GRACE_MS) -> Vault:
        """The vault of ``device``, checking every record (see the module docstring).

        Args:
            device: An open device.
            space: None: the personal vault. Else the id of a space this device
                holds (its own, or one shared with it): the vault in that
                space's document ``vault``, whose records' authors are judged
                by :func:`author_device`; writes need this account to be a
                writer there.
            create: Create the ``vault`` space when the device has none (this
                needs the relay); False: an absent vault reads as empty and
                writes raise :class:`~sddsf.errors.UsageError`. Not used with
                ``space``.
            clock: Unix milliseconds, for write times and the grace period.
            grace_ms: How long a deletion can be undone (:data:`GRACE_MS`).

        Returns:
            The personal vault reads every ``vault`` space of this account on
            the device (two devices that created one each before syncing leave
            two; another account's space of that name is never one) and writes
            to the one with the smallest id. Each write is flushed to the
            device's pending queue (sync to send it).

        Raises:
            NotFoundError: ``space`` is not a space this device holds.
            UnavailableError: the space had to be created and the relay could not
                be reached (nothing was created), or another process held the
                home's lock too long.
            SddsfError: the relay refused to create the space (for example an
                ``AuthorizationError`` when it no longer accepts this device).
        """
        if space is not None:
            return cls._shared(device, space, clock, grace_ms)
        own, members = device.registry().account_id, device.engine.members

        def spaces() -> list[bytes]:
            # Only this account's spaces: another account's space named "vault"
            # (shared with this one) is that person's, never merged nor written.
            return sorted(s for s, n in device.spaces()
                          if n == SPACE and members.owner(s) == own)

        if not spaces() and create:
            await device.create_space(SPACE)

        def sources() -> list[tuple[bytes, pycrdt.Doc[Any]]]:
            return [(s + doc_id_for(s, DOC), device.doc(s, DOC)) for s in spaces()]

        def public_key(device_id: bytes) -> Ed25519PublicKey | None:
            rec = device.registry().device(device_id)
            return None if rec is None else rec.public.signing_key

        trust = DeviceTrust(device.keys, public_key, device.provenance, sources)
        return cls(lambda: [d for _, d in sources()], device.device_id, clock=clock,
                   grace_ms=grace_ms, commit=device.flush, trust=trust)

    @classmethod
    def _shared(cls, device: DocumentHost, space: bytes, clock: Callable[[], int],
                grace_ms: int) -> Vault:
        names = dict(device.spaces())
        if space not in names:
            raise NotFoundError("this device holds no space with that id: join it first "
                                "(`sddsf space join`), or sync")
        scope = space + doc_id_for(space, DOC)

        def sources() -> list[tuple[bytes, pycrdt.Doc[Any]]]:
            return [(scope, device.doc(space, DOC))]

        def public_key(device_id: bytes) -> Ed25519PublicKey | None:
            found = author_device(device, space, device_id)
            return None if found is None else found[1].public.signing_key

        members = device.engine.members
        trust = DeviceTrust(device.keys, public_key, device.provenance, sources,
                            may_write=lambda: members.may_write(space),
                            ack=f"{SPACE}/{space.hex()}")
        return cls(lambda: [device.doc(space, DOC)], device.device_id, clock=clock,
                   grace_ms=grace_ms, commit=device.flush, trust=trust, space=space,
                   label=names[space] or space.hex())

    def _cmd(self, args: str) -> str:
        """A ``sddsf vault`` command line for this vault (``--space`` when shared)."""
        where = "" if self.space is None else f" --space {shlex.quote(self.label)}"
        return f"`sddsf vault {args}{where}`"

    @property
    def _in(self) -> str:
        return "the vault" if self.space is None else f"the vault of space {self.label!r}"

    # --------------------------------------------------------------- reading
    def _maps(self) -> list[pycrdt.Map[Any]]:
        return [d.get(MAP, type=pycrdt.Map) for d in self._docs()]

    def _view(self) -> _View:
        view = _View()
        if self._trust is None:
            for m in self._maps():
                for vid, raw in m.items():
                    v = _decode(vid, raw)
                    if v is None:
                        view.unreadable.append(vid)
                    else:
                        view.versions[vid] = v
        else:
            self._checked_view(self._trust, view)
        self.unreadable, self.alerts = view.unreadable, sorted(view.alerts, key=lambda a: a.seq)
        return view

    def _checked_view(self, trust: DeviceTrust, view: _View) -> None:
        removed: list[tuple[bytes, Version]] = []
        for scope, doc in trust.sources():
            live = dict(doc.get(MAP, type=pycrdt.Map).items())
            for rec in records(scope, live, trust.provenance):
                seen = rec.seen
                d = _parse(rec.value)
                v = None if d is None or seen is None else _version(rec.key, d)
                if v is None or d is None or seen is None:
                    view.unreadable.append(rec.key)
                    continue
                status = authorship(VAULT_RECORD_SIG, rec.key, d, seen,
                                    trust.public_key, signed=d["f"] == _SIGNED)
                v = replace(v, verified=status is Authorship.VERIFIED, seen_ms=seen.first_ms)
                view.seen[v.id] = seen
                if status in (Authorship.FORGED, Authorship.MISATTRIBUTED):
                    view.refused.append(v)
                    view.alerts.append(VaultAlert(v.id, v.name, status.value,
                                                  _hex(seen.carrier), seen.seq))
                    continue
                view.versions[v.id] = v
                change = seen.change
                if rec.altered or (change is not None and change.action == CHANGED):
                    by = change.carrier if change is not None else None
                    view.alerts.append(VaultAlert(v.id, v.name, CHANGED, _hex(by),
                                                  change.seq if change else seen.seq))
                if not rec.present:
                    removed.append((scope, v))
        self._judge_removals(trust, view, removed)

    def _judge_removals(self, trust: DeviceTrust, view: _View,
                        removed: list[tuple[bytes, Version]]) -> None:
        # A version gone from the document is forgotten only when it was an own
        # write never sent (no removal observed) or its item's deletion is past
        # the grace period *here* (a purge); a deleted item purged early by
        # another device is kept here until then; anything else is tampering.
        items = self._group(view.versions.values())
        forget: dict[bytes, list[str]] = {}
        for scope, v in removed:
            change, item = view.seen[v.id].change, items[v.name]
            if change is None or (item.deleted and not self.restorable(item)):
                forget.setdefault(scope, []).append(v.id)
                del view.versions[v.id]
            elif not item.deleted:
                view.alerts.append(VaultAlert(v.id, v.name, REMOVED, _hex(change.carrier),
                                              change.seq))
        for scope, vids in forget.items():
            trust.provenance.forget(scope, vids)

    def _versions(self) -> dict[str, Version]:
        return self._view().versions

    @staticmethod
    def _group(versions: Iterable[Version]) -> dict[str, Item]:
        by_name: dict[str, list[Version]] = {}
        for v in versions:
            by_name.setdefault(v.name, []).append(v)
        return {n: Item(n, _heads(vs)) for n, vs in sorted(by_name.items())}

    def _items(self) -> dict[str, Item]:
        return self._group(self._versions().values())

    def item(self, name: str) -> Item | None:
        """The item called ``name``, deleted or not.

        Args:
            name: The item's name.

        Returns:
            The item, or None if no version of that name is left (it never
            existed, or it was purged).

        Raises:
            Nothing of its own.
        """
        return self._items().get(name)

    def _need(self, name: str, *, live: bool = True) -> Item:
        item = self.item(name)
        if item is None:
            raise UsageError(f"no secret named {name!r} in {self._in}; {self._cmd('list')} "
                             "shows the names")
        if live and item.deleted:
            raise UsageError(f"{name!r} was deleted on {_date(self.deleted_at(item))}; "
                             + self._restore_hint(item))
        return item

    def deleted_at(self, item: Item) -> int:
        """When this device first saw the newest tombstone of a deleted item (its
        claimed time is not trusted: a date in 1970 would end the grace period).

        Args:
            item: A deleted item (:attr:`Item.deleted`).

        Returns:
            Unix milliseconds on this device's clock (for plain documents, the
            newest tombstone's claimed time).

        Raises:
            Nothing of its own.
        """
        return max(h.seen for h in item.heads)

    def restorable(self, item: Item) -> bool:
        """Whether a deleted item is still within its grace period.

        Args:
            item: A deleted item (:attr:`Item.deleted`).

        Returns:
            True while this vault's clock is at most :meth:`deleted_at` plus
            ``grace_ms``: :meth:`restore` can bring it back, :meth:`purge`
            keeps it.

        Raises:
            Nothing of its own.
        """
        return self._clock() <= self.deleted_at(item) + self.grace_ms

    def _restore_hint(self, item: Item) -> str:
        if not self.restorable(item):
            return "its grace period has ended and it is gone"
        return (f"{self._cmd(f'restore {item.name}')} brings it back until "
                f"{_date(self.deleted_at(item) + self.grace_ms)}")

    def history(self, name: str) -> builtins.list[Version]:
        """Every version of ``name`` that is left, live or deleted.

        Args:
            name: The item's name.

        Returns:
            Its versions, tombstones included, oldest first by claimed time then
            id (secrets in :attr:`Version.secret`).

        Raises:
            UsageError: no item is called ``name``.
        """
        self._need(name, live=False)
        return sorted((v for v in self._versions().values() if v.name == name),
                      key=lambda v: (v.ts_ms, v.id))

    def _pick(self, name: str, prefix: str, among: Sequence[Version],
              lister: str = "") -> Version:
        hits = [v for v in among if v.id.startswith(prefix.lower())]
        if len(prefix) >= _MIN_PREFIX and len(hits) == 1:
            return hits[0]
        lister = lister or f"history {name}"
        what = ("too short" if len(prefix) < _MIN_PREFIX else "ambiguous" if hits
                else f"not one of the versions of {name!r} that {self._cmd(lister)} lists")
        raise UsageError(f"version {prefix!r} is {what}; give at least {_MIN_PREFIX} hex "
                         "digits of one of those ids")

    def get(self, name: str, version: str | None = None) -> Version:
        """The current version of ``name``, or the given version.

        Args:
            name: The item's name.
            version: None for the current version; else an id, or a unique prefix
                of at least 4 hex digits of one, of any version that
                :meth:`history` lists (also of a deleted item).

        Returns:
            The version, with its secret in :attr:`Version.secret`.

        Raises:
            VaultConflictError: ``version`` is None and the item has several
                current versions (its ``versions`` lists their ids).
            UsageError: no item is called ``name``; ``version`` is None and the
                item is deleted (the message says when, and until when
                :meth:`restore` brings it back); ``version`` is too short,
                ambiguous or not a version of the item, or is a tombstone.
        """
        item = self._need(name, live=version is None)
        if version is not None:
            v = self._pick(name, version, self.history(name))
            if v.deleted:
                raise UsageError(f"version {v.id[:12]} of {name!r} is a deletion and holds "
                                 "no secret")
            return v
        if item.conflict:
            ids = [h.id[:12] for h in item.heads]
            raise VaultConflictError(
                f"{name!r} has {len(ids)} conflicting versions ({', '.join(ids)}); read one "
                f"with {self._cmd(f'get {name} --version ID')} and keep it with "
                f"{self._cmd(f'resolve {name} --keep ID')}", [h.id for h in item.heads])
        return next(h for h in item.heads if not h.deleted)

    def conflicts(self) -> builtins.list[Item]:
        """The items in conflict: two or more current versions, not all tombstones
        (a concurrent deletion and update is a conflict).

        Returns:
            The items, by name (:meth:`resolve` ends a conflict).

        Raises:
            Nothing of its own.
        """
        return [i for i in self._items().values() if i.conflict]

    # --------------------------------------------------------------- writing
    def _writing(self, ids: Iterable[str]) -> contextlib.AbstractContextManager[None]:
        if self._trust is None:
            return contextlib.nullcontext()
        return self._trust.provenance.writing(ids)

    def _check_writable(self) -> None:
        if self._trust is not None and not self._trust.may_write():
            # A reader's edit would be held on this device, never accepted.
            raise AuthorizationError(
                f"this account may only read space {self.label!r} (a reader, or no longer a "
                "member): nothing was written; an admin of the space can make it a writer "
                "(`sddsf space role`)")

    def _write(self, name: str, values: Sequence[tuple[str, str | None]],
               supersedes: Sequence[Version]) -> list[Version]:
        self._check_writable()
        maps = self._maps()
        if not maps:
            raise UsageError("this device has no vault space yet; open it with create=True")
        sup = tuple(sorted(h.id for h in supersedes))
        written = [Version(random_bytes(16).hex(), name, kind, secret, self.author,
                           self._clock(), sup) for kind, secret in values]
        keys = self._trust.keys if self._trust is not None else None
        doc = maps[0].doc
        with self._writing(v.id for v in written), doc.transaction():
            for v in written:
                maps[0][v.id] = _encode(v, keys)
        self._commit()
        return written

    def put(self, name: str, kind: str, secret: str) -> Version:
        """Store ``secret`` as the new version of ``name``, superseding every current
        version: it ends a conflict, and a deleted item comes back.

        Args:
            name: The item's name: 1 to 200 printable characters.
            kind: One of :data:`KINDS`, in any case (``generic`` is ``note``).
            secret: The secret, validated for ``kind`` (:func:`normalize_secret`).

        Returns:
            The new version (the secret in its stored form).

        Raises:
            UsageError: an invalid name, kind or secret (the message never quotes
                it). Also: the vault has no document to write to (opened with
                ``create=False`` on a device without one), or ``commit`` refused
                the edit (:meth:`sddsf.client.device.Device.flush` says how).
            AuthorizationError: a shared space's vault where this account only
                reads (a reader, or no longer a member); nothing was written.
            UnavailableError: ``commit`` waited too long for the home's lock; the
                write is in this device's copy and the next flush queues it.
        """
        kind, name = check_kind(kind), check_name(name)
        secret = normalize_secret(kind, secret)
        item = self.item(name)
        return self._write(name, [(kind, secret)], item.heads if item else ())[0]

    def generate(self, name: str, kind: str) -> Version:
        """Generate and store a fresh ed25519 seed, secp256k1 secret or 24-word BIP39
        phrase, from 32 random bytes.

        Args:
            name: A name that holds no live item (a deleted one is replaced).
            kind: ``ed25519``, ``secp256k1`` or ``bip39``, in any case.

        Returns:
            The new version; :attr:`Version.public_key` has a key's public key.

        Raises:
            UsageError: an invalid name; a kind that is unknown or cannot be
                generated (``password``, ``note``); ``name`` holds a live item.
                Also: the vault has no document to write to (opened with
                ``create=False`` on a device without one), or ``commit`` refused
                the edit (:meth:`sddsf.client.device.Device.flush` says how).
            AuthorizationError: a shared space's vault where this account only
                reads (a reader, or no longer a member); nothing was written.
            UnavailableError: ``commit`` waited too long for the home's lock; the
                write is in this device's copy and the next flush queues it.
        """
        kind = check_kind(kind)
        if kind not in GENERATED:
            raise UsageError(f"only {', '.join(GENERATED)} secrets can be generated; store a "
                             f"{kind} with {self._cmd('put')}")
        item = self.item(check_name(name))
        if item is not None and not item.deleted:
            raise UsageError(f"{name!r} already exists; pick another name, or "
                             f"{self._cmd(f'rm {name}')} first")
        return self.put(name, kind, _generate(kind))

    def rm(self, name: str) -> Version:
        """Delete ``name``: a tombstone superseding every current version. Restorable
        with :meth:`restore` during the grace period.

        Args:
            name: The item's name.

        Returns:
            The tombstone (``secret`` None).

        Raises:
            UsageError: no item is called ``name``, or it is deleted already.
                Also: ``commit`` refused the edit
                (:meth:`sddsf.client.device.Device.flush` says how).
            AuthorizationError: a shared space's vault where this account only
                reads (a reader, or no longer a member); nothing was written.
            UnavailableError: ``commit`` waited too long for the home's lock; the
                write is in this device's copy and the next flush queues it.
        """
        item = self._need(name)
        return self._write(name, [(item.kind, None)], item.heads)[0]

    def restore(self, name: str) -> builtins.list[Version]:
        """Undo a deletion within the grace period: write a copy of each value the
        tombstones superseded, following tombstones back to values.

        Args:
            name: A deleted item's name.

        Returns:
            The versions written, one per distinct value: several come back as the
            conflict they were in when the item was deleted.

        Raises:
            UsageError: no item is called ``name``; it is not deleted; its grace
                period has ended; or no value before its deletion is left.
                Also: ``commit`` refused the edit
                (:meth:`sddsf.client.device.Device.flush` says how).
            AuthorizationError: a shared space's vault where this account only
                reads (a reader, or no longer a member); nothing was written.
            UnavailableError: ``commit`` waited too long for the home's lock; the
                write is in this device's copy and the next flush queues it.
        """
        item = self._need(name, live=False)
        if not item.deleted:
            raise UsageError(f"{name!r} is not deleted"
                             + (f"; {self._cmd('conflicts')} shows its versions"
                                if item.conflict else ""))
        if not self.restorable(item):
            raise UsageError(f"{name!r} was deleted on {_date(self.deleted_at(item))}; "
                             f"{self._restore_hint(item)}")
        by_id = self._versions()
        values: dict[tuple[str, str], None] = {}
        stack, seen = list(item.heads), set()
        while stack:
            for sid in stack.pop().supersedes:
                prev = by_id.get(sid)
                if prev is None or sid in seen:
                    continue
                seen.add(sid)
                if prev.secret is None:
                    stack.append(prev)
                else:
                    values[(prev.kind, prev.secret)] = None
        if not values:
            raise UsageError(f"no value of {name!r} before its deletion is left; it is gone")
        return self._write(name, list(values), item.heads)

    def resolve(self, name: str, keep: str) -> Version:
        """End a conflict: a new version copying current version ``keep``,
        superseding every head.

        Args:
            name: The name of an item in conflict (:meth:`conflicts`).
            keep: The id, or a unique prefix of at least 4 hex digits, of one of
                its current versions; keeping a tombstone confirms the deletion.

        Returns:
            The new version (a tombstone if ``keep`` is one).

        Raises:
            UsageError: no item is called ``name``; it has no conflict; ``keep`` is
                too short, ambiguous or not one of its current versions.
                Also: ``commit`` refused the edit
                (:meth:`sddsf.client.device.Device.flush` says how).
            AuthorizationError: a shared space's vault where this account only
                reads (a reader, or no longer a member); nothing was written.
            UnavailableError: ``commit`` waited too long for the home's lock; the
                write is in this device's copy and the next flush queues it.
        """
        item = self._need(name, live=False)
        if not item.conflict:
            raise UsageError(f"{name!r} has no conflict to resolve")
        kept = self._pick(name, keep, item.heads, "conflicts")
        return self._write(name, [(kept.kind, kept.secret)], item.heads)[0]

    def share(self, name: str, into: Vault) -> Version:
        """Copy the current version of ``name`` (kind and secret, so a key's public
        key too) into the vault of a shared space, as a new version there signed
        by this device and superseding that vault's current versions of ``name``
        (sharing again updates it). This vault is unchanged: nothing else of it
        reaches the space.

        Args:
            name: A live item of this vault, not in conflict.
            into: The vault of the space to share it in
                (``Vault.open(device, space=...)``), where this account writes.

        Returns:
            The version written in ``into``.

        Raises:
            UsageError: ``into`` is not a shared space's vault, or is a space of
                this vault; no item is called ``name``, or it is deleted.
            VaultConflictError: ``name`` has several current versions here:
                resolve the conflict first (its ``versions`` lists them).
            AuthorizationError: this account only reads ``into``'s space (a
                reader, or no longer a member); nothing was written.
            UnavailableError: ``commit`` waited too long for the home's lock; the
                write is in this device's copy and the next flush queues it.
        """
        own = {scope[:16] for scope, _ in self._trust.sources()} if self._trust else set()
        if into.space is None or into.space == self.space or into.space in own:
            raise UsageError("share a secret into another space's vault: open it with "
                             "`Vault.open(device, space=SPACE_ID)` (`--space SPACE`)")
        item = self._need(name)
        if item.conflict:
            ids = [h.id[:12] for h in item.heads]
            raise VaultConflictError(
                f"{name!r} has {len(ids)} conflicting versions ({', '.join(ids)}) in "
                f"{self._in}; resolve it first with {self._cmd(f'resolve {name} --keep ID')} "
                f"({self._cmd('conflicts')} shows them), then share it",
                [h.id for h in item.heads])
        current = next(h for h in item.heads if not h.deleted)
        there = into.item(name)
        return into._write(name, [(current.kind, current.secret)],
                           there.heads if there else ())[0]

    def purge(self) -> builtins.list[str]:
        """Erase every version of the items deleted longer than the grace period ago
        (their content leaves the document state), from every vault document.

        Returns:
            The names purged, sorted (empty: nothing was written).

        Raises:
            UsageError: ``commit`` refused the edit
                (:meth:`sddsf.client.device.Device.flush` says how).
            AuthorizationError: a shared space's vault where this account only
                reads; nothing was erased.
            UnavailableError: ``commit`` waited too long for the home's lock; the
                next flush queues the erasure.
        """
        view = self._view()
        gone = {i.name for i in self._group(view.versions.values()).values()
                if i.deleted and not self.restorable(i)}
        if gone:
            self._check_writable()
            ids = {vid for vid, v in view.versions.items() if v.name in gone}
            for m in self._maps():
                with self._writing(ids), m.doc.transaction():
                    for vid in [k for k, raw in m.items() if k in ids or (
                            (v := _decode(k, raw)) is not None and v.name in gone)]:
                        del m[vid]
            self._commit()
            if self._trust is not None:
                for scope, _ in self._trust.sources():
                    known = self._trust.provenance.table(scope)
                    self._trust.provenance.forget(scope, [k for k in ids if k in known])
        return sorted(gone)

    # ------------------------------------------------------------ tampering
    def all_alerts(self) -> builtins.list[VaultAlert]:
        """Read the vault and return every alert, acknowledged or not.

        Returns:
            The alerts, in local order (also in :attr:`alerts`); always empty
            without ``trust``.

        Raises:
            Nothing of its own.
        """
        self._view()
        return list(self.alerts)

    def new_alerts(self) -> builtins.list[VaultAlert]:
        """Read the vault and return the alerts not acknowledged yet.

        Returns:
            The alerts newer than the last :meth:`acknowledge`, in local order.

        Raises:
            Nothing of its own.
        """
        found = self.all_alerts()
        if self._trust is None:
            return found
        done = self._trust.provenance.acknowledged(self._trust.ack)
        return [a for a in found if a.seq > done]

    def acknowledge(self) -> int:
        """Stop warning about the current alerts: :meth:`new_alerts` leaves them
        out from now on, :meth:`all_alerts` still lists them. Kept in the device's
        store (nothing is kept without ``trust``).

        Returns:
            How many alerts were new.

        Raises:
            Nothing of its own.
        """
        fresh = self.new_alerts()
        if self._trust is not None and fresh:
            self._trust.provenance.acknowledge(self._trust.ack, max(a.seq for a in fresh))
        return len(fresh)

    def deletions(self, after: int) -> tuple[dict[bytes, int], int]:
        """Deletions this device saw after its local sequence number ``after``, per
        device whose verified op carried them (never per claimed author): tombstones,
        refused forged ones included, and records changed or removed in place.

        Args:
            after: A local sequence number: the second value a previous call
                returned, or 0 for every deletion.

        Returns:
            The count per carrying device id, and the newest sequence number
            counted (``after`` if none). Without ``trust``: nothing is counted.

        Raises:
            Nothing of its own.
        """
        view = self._view()
        counts: dict[bytes, int] = {}
        newest = after

        def count(carrier: bytes | None, seq: int) -> None:
            nonlocal newest
            if carrier is not None and seq > after:
                counts[carrier] = counts.get(carrier, 0) + 1
                newest = max(newest, seq)

        for v in [*view.versions.values(), *view.refused]:
            if v.deleted and v.id in view.seen:
                count(view.seen[v.id].carrier, view.seen[v.id].seq)
        for a in view.alerts:
            if a.what in (CHANGED, REMOVED) and a.by is not None:
                count(bytes.fromhex(a.by), a.seq)
        return counts, newest

    def list(self, *, deleted: bool = False) -> builtins.list[Item]:
        """The items, by name, conflicts included.

        Args:
            deleted: Also list the deleted items (every head a tombstone).

        Returns:
            The items, sorted by name.

        Raises:
            Nothing of its own.
        """
        return [i for i in self._items().values() if deleted or not i.deleted]
