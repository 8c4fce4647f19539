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

Secrets appear only in :attr:`Version.secret`: never in a repr, an error message
or :meth:`Version.describe`.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import pycrdt
from mnemonic import Mnemonic

from sddsf.crypto import Ed25519SigningKey, random_bytes, secp256k1_public_key
from sddsf.errors import UsageError

if TYPE_CHECKING:
    from sddsf.client.device import Device

__all__ = ["GRACE_MS", "KINDS", "Item", "Vault", "VaultConflictError", "Version",
           "normalize_secret"]

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


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Version:
    """One immutable write of an item; ``secret`` is None for a deletion (tombstone)."""

    id: str
    name: str
    kind: str
    secret: str | None = field(repr=False)
    author: str  # device id, hex
    ts_ms: int
    supersedes: tuple[str, ...]

    @property
    def deleted(self) -> bool:
        """Whether this version is a tombstone."""
        return self.secret is None

    @property
    def public_key(self) -> str | None:
        """The hex public key of an ed25519 or secp256k1 key version, else None."""
        return None if self.secret is None else public_key(self.kind, self.secret)

    def describe(self) -> dict[str, Any]:
        """Everything about this version except the secret (a key's public-key prefix
        is the fingerprint)."""
        pub = self.public_key
        return {"version": self.id, "kind": self.kind, "deleted": self.deleted,
                "author": self.author, "ts_ms": self.ts_ms,
                "supersedes": list(self.supersedes), "fingerprint": pub and pub[:16]}


@dataclass(frozen=True)
class Item:
    """A named secret: its current versions (heads), oldest first."""

    name: str
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
        """When the newest head was written."""
        return self.heads[-1].ts_ms

    def describe(self) -> dict[str, Any]:
        """Name, kind, flags and heads, without any secret."""
        return {"name": self.name, "kind": self.kind, "conflict": self.conflict,
                "deleted": self.deleted, "updated_ms": self.updated_ms,
                "versions": [h.describe() for h in self.heads]}


class VaultConflictError(UsageError):
    """An item has several current versions; read one with ``version=`` and resolve."""

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
    """Validate ``secret`` for ``kind`` and return its stored form (a BIP39 phrase in
    single-spaced lower case; a key as 64 lower-case hex digits).

    Raises:
        UsageError: what is wrong and how to fix it (never the secret itself).
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
def _encode(v: Version) -> str:
    return json.dumps({"f": 1, "name": v.name, "kind": v.kind, "secret": v.secret,
                       "author": v.author, "ts": v.ts_ms, "supersedes": list(v.supersedes)},
                      sort_keys=True, separators=(",", ":"))


def _decode(vid: str, raw: object) -> Version | None:
    try:
        d = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    if not isinstance(d, dict) or d.get("f") != 1:
        return None
    name, kind, secret, author, ts, sup = (d.get(k) for k in (
        "name", "kind", "secret", "author", "ts", "supersedes"))
    if not (isinstance(name, str) and kind in KINDS and isinstance(author, str)
            and (secret is None or isinstance(secret, str))
            and isinstance(ts, int) and isinstance(sup, list)
            and all(isinstance(s, str) for s in sup)):
        return None
    if kind in ("ed25519", "secp256k1") and secret is not None and (
            len(secret) != 64 or secret.strip("0123456789abcdef")):
        return None
    return Version(vid, name, str(kind), secret, author, ts, tuple(sup))


def _heads(versions: Sequence[Version]) -> tuple[Version, ...]:
    superseded = {s for v in versions for s in v.supersedes}
    heads = [v for v in versions if v.id not in superseded]
    # A cycle (only a broken writer makes one) leaves no head: show every version.
    return tuple(sorted(heads or versions, key=lambda v: (v.ts_ms, v.id)))


class Vault:
    """The vault of a device (:meth:`open`), or over any pycrdt documents (tests).

    Reads union the ``versions`` maps of every document ``docs()`` returns (two
    devices that each created a ``vault`` space before syncing leave two); writes
    go to the first. ``commit`` runs after each write (``Device.flush``). Methods
    are local: sync the device before reading and after writing.
    """

    def __init__(self, docs: Callable[[], Sequence[pycrdt.Doc[Any]]], author: bytes, *,
                 clock: Callable[[], int] = _now_ms, grace_ms: int = GRACE_MS,
                 commit: Callable[[], object] = lambda: None) -> None:
        self._docs = docs
        self.author = author.hex()
        self._clock = clock
        self.grace_ms = grace_ms
        self._commit = commit
        #: Ids of records that could not be read (malformed, or a newer format).
        self.unreadable: list[str] = []

    @classmethod
    async def open(cls, device: Device, *, create: bool = True,
                   clock: Callable[[], int] = _now_ms, grace_ms: int = GRACE_MS) -> Vault:
        """The vault of ``device``; its space is created if absent and ``create``
        (needs the relay), otherwise an absent vault reads as empty."""
        def spaces() -> list[bytes]:
            return sorted(s for s, n in device.spaces() if n == SPACE)

        if not spaces() and create:
            await device.create_space(SPACE)
        return cls(lambda: [device.doc(s, DOC) for s in spaces()], device.device_id,
                   clock=clock, grace_ms=grace_ms, commit=device.flush)

    # --------------------------------------------------------------- reading
    def _maps(self) -> list[pycrdt.Map[Any]]:
        return [d.get(MAP, type=pycrdt.Map) for d in self._docs()]

    def _versions(self) -> dict[str, Version]:
        found: dict[str, Version] = {}
        self.unreadable = []
        for m in self._maps():
            for vid, raw in m.items():
                v = _decode(vid, raw)
                if v is None:
                    self.unreadable.append(vid)
                else:
                    found[vid] = v
        return found

    def _items(self) -> dict[str, Item]:
        by_name: dict[str, list[Version]] = {}
        for v in self._versions().values():
            by_name.setdefault(v.name, []).append(v)
        return {n: Item(n, _heads(vs)) for n, vs in sorted(by_name.items())}

    def item(self, name: str) -> Item | None:
        """The item called ``name`` (deleted or not), or None if it never existed."""
        return self._items().get(name)

    def _need(self, name: str, *, live: bool = True) -> Item:
        item = self.item(name)
        if item is None:
            raise UsageError(f"no secret named {name!r} in the vault; `sddsf vault list` "
                             "shows the names")
        if live and item.deleted:
            raise UsageError(f"{name!r} was deleted on {_date(self.deleted_at(item))}; "
                             + self._restore_hint(item))
        return item

    def deleted_at(self, item: Item) -> int:
        """When the newest tombstone of a deleted item was written."""
        return max(h.ts_ms for h in item.heads)

    def restorable(self, item: Item) -> bool:
        """Whether a deleted item is still within its grace period."""
        return self._clock() <= self.deleted_at(item) + self.grace_ms

    def _restore_hint(self, item: Item) -> str:
        if not self.restorable(item):
            return "its grace period has ended and it is gone"
        return (f"`sddsf vault restore {item.name}` brings it back until "
                f"{_date(self.deleted_at(item) + self.grace_ms)}")

    def history(self, name: str) -> list[Version]:
        """Every version of ``name``, oldest first (secrets in :attr:`Version.secret`)."""
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
                else f"not one of the versions of {name!r} that `sddsf vault {lister}` lists")
        raise UsageError(f"version {prefix!r} is {what}; give at least {_MIN_PREFIX} hex "
                         "digits of one of those ids")

    def get(self, name: str, version: str | None = None) -> Version:
        """The current version of ``name``, or the given version (an id or a unique
        prefix of one).

        Raises:
            VaultConflictError: the item has several current versions and none was given.
            UsageError: no such item or version, or the item was deleted.
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
                f"with `sddsf vault get {name} --version ID` and keep it with "
                f"`sddsf vault resolve {name} --keep ID`", [h.id for h in item.heads])
        return next(h for h in item.heads if not h.deleted)

    def conflicts(self) -> list[Item]:
        """Items with two or more current versions (a tombstone counts)."""
        return [i for i in self._items().values() if i.conflict]

    # --------------------------------------------------------------- writing
    def _write(self, name: str, values: Sequence[tuple[str, str | None]],
               supersedes: Sequence[Version]) -> list[Version]:
        maps = self._maps()
        if not maps:
            raise UsageError("this device has no vault space yet; open it with create=True")
        sup = tuple(sorted(h.id for h in supersedes))
        written = [Version(random_bytes(16).hex(), name, kind, secret, self.author,
                           self._clock(), sup) for kind, secret in values]
        doc = maps[0].doc
        with doc.transaction():
            for v in written:
                maps[0][v.id] = _encode(v)
        self._commit()
        return written

    def put(self, name: str, kind: str, secret: str) -> Version:
        """Store ``secret`` as the new version of ``name``, superseding every current
        version (a deleted item comes back). Validates per kind (:func:`normalize_secret`)."""
        kind, name = check_kind(kind), check_name(name)
        secret = normalize_secret(kind, secret)
        item = self.item(name)
        return self._write(name, [(kind, secret)], item.heads if item else ())[0]

    def generate(self, name: str, kind: str) -> Version:
        """Generate and store a fresh ed25519 seed, secp256k1 secret or 24-word BIP39
        phrase; :attr:`Version.public_key` has the public key of a key."""
        kind = check_kind(kind)
        if kind not in GENERATED:
            raise UsageError(f"only {', '.join(GENERATED)} secrets can be generated; store a "
                             f"{kind} with `sddsf vault put`")
        item = self.item(check_name(name))
        if item is not None and not item.deleted:
            raise UsageError(f"{name!r} already exists; pick another name, or `sddsf vault "
                             f"rm {name}` first")
        return self.put(name, kind, _generate(kind))

    def rm(self, name: str) -> Version:
        """Delete ``name``: a tombstone superseding every current version. Restorable
        with :meth:`restore` during the grace period."""
        item = self._need(name)
        return self._write(name, [(item.kind, None)], item.heads)[0]

    def restore(self, name: str) -> list[Version]:
        """Undo a deletion within the grace period: write a copy of each value the
        tombstones superseded (several values come back as a conflict)."""
        item = self._need(name, live=False)
        if not item.deleted:
            raise UsageError(f"{name!r} is not deleted"
                             + ("; `sddsf vault conflicts` shows its versions"
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
        """End a conflict: a new version copying current version ``keep`` (an id or a
        unique prefix; a tombstone confirms the deletion) superseding every head."""
        item = self._need(name, live=False)
        if not item.conflict:
            raise UsageError(f"{name!r} has no conflict to resolve")
        kept = self._pick(name, keep, item.heads, "conflicts")
        return self._write(name, [(kept.kind, kept.secret)], item.heads)[0]

    def purge(self) -> list[str]:
        """Erase every version of the items deleted longer than the grace period ago
        (their content leaves the document state). Returns the names purged."""
        gone = {i.name for i in self._items().values() if i.deleted and not self.restorable(i)}
        if gone:
            for m in self._maps():
                with m.doc.transaction():
                    for vid in [k for k, raw in m.items()
                                if (v := _decode(k, raw)) is not None and v.name in gone]:
                        del m[vid]
            self._commit()
        return sorted(gone)

    def list(self, *, deleted: bool = False) -> list[Item]:
        """The items, by name; deleted ones only if ``deleted``."""
        return [i for i in self._items().values() if deleted or not i.deleted]
