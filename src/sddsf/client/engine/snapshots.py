"""Snapshots: writing this device's, and choosing which served one to start from.

A snapshot (protocol.md section 18) is the state of every document of a space
at a log size, signed by its author, encrypted under the space's current epoch
key and chunked. :meth:`Snapshots.write` publishes one only while nothing local
is unsent and the state rests on the log. :meth:`Snapshots.fetch` picks what a
new device starts from under the trust rules of 18.7: the current or the
corroborated snapshot, if no trusted device disputes it and its author is
trusted or a trusted device (not its author) attested it; else the log, when
it is complete; else (history pruned) a snapshot some other device attested.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pycrdt

from sddsf.client.engine.common import (
    EngineObserver,
    EngineSettings,
    SyncReport,
    as_dict,
    as_int,
    as_list,
    chain_head,
    notify,
)
from sddsf.client.engine.documents import Documents
from sddsf.client.engine.identity import DeviceIdentity
from sddsf.client.engine.keyring import Keyring
from sddsf.client.engine.outbox import Outbox
from sddsf.client.engine.registry import RegistryView
from sddsf.client.engine.verified import VerifiedLog
from sddsf.client.transport.base import Transport
from sddsf.crypto import random_bytes
from sddsf.errors import (
    AuthorizationError,
    Code,
    EpochError,
    NotFoundError,
    ProofError,
    SddsfError,
    UsageError,
)
from sddsf.protocol.encoding import encode
from sddsf.protocol.snapshot import (
    CORROBORATED_SNAPSHOT_DOC,
    MATCH,
    MISMATCH,
    SPACE_SNAPSHOT_DOC,
    Snapshot,
    SnapshotClaims,
    check_snapshot_signature,
    load_snapshot,
    open_snapshot,
    seal_chunked_snapshot,
    verify_attestation,
)

__all__ = ["CHUNK_REQUESTS", "Snapshots", "UnreadableSnapshot", "Verdicts", "bounded",
           "same_states"]

T = TypeVar("T")
#: Snapshot chunks up- and downloaded at once (the relay serves requests in parallel).
CHUNK_REQUESTS = 4


class Snapshots:
    """One device's snapshots of its spaces (see the module docstring)."""

    def __init__(self, ident: DeviceIdentity, registry: RegistryView, keyring: Keyring,
                 docs: Documents, log: VerifiedLog, outbox: Outbox, transport: Transport,
                 settings: EngineSettings, observer: EngineObserver | None = None) -> None:
        self.ident = ident
        self.store = ident.store
        self.reg = registry
        self.keyring = keyring
        self.docs = docs
        self.log = log
        self.outbox = outbox
        self.transport = transport
        self.settings = settings
        self.observer = observer
        #: Every alert of this session's syncs (each SyncReport has its own).
        self.alerts: list[tuple[str, str]] = []
        #: Per space, the log size at which this device last looked at the
        #: relay's snapshots (a look costs requests; see check_every).
        self.checked_at: dict[bytes, int] = {}

    def due(self, space_id: bytes) -> bool:
        """Whether the log grew by ``snapshot_every`` since the last snapshot."""
        last = self.store.get("snapmark", space_id)
        return bool(self.settings.snapshot_every) and self.log.tree(space_id).size - (
            as_int(last) if last else 0) >= self.settings.snapshot_every

    def state(self, space_id: bytes) -> dict[str, bytes] | None:
        """Every document of a space as Yjs state, or None while local edits are
        not yet in the log (a snapshot must hold exactly the logged state)."""
        if self.outbox.has_unsent(space_id):
            return None
        if self.outbox.assembly_open(space_id):
            return None  # a multi-part edit is half logged: its first parts are in no doc
        return {name: self.docs.doc(space_id, name).get_update()
                for name in self.docs.doc_names(space_id)}

    async def write(self, space_id: bytes) -> int | None:
        tree = self.log.tree(space_id)
        if not tree.size or not self.grounded(space_id):
            return None
        docs = self.state(space_id)
        if docs is None:
            return None
        keys = self.keyring.keys_cached(space_id)
        chains = {k[16:]: chain_head(v) for k, v in self.store.scan("chain", space_id)}
        try:
            sealed = seal_chunked_snapshot(
                self.ident.keys, space=space_id, epoch=max(keys), epoch_key=keys[max(keys)],
                size=tree.size, frontier=tree.frontier(), chains=chains, docs=docs,
                ts_ms=self.ident.clock(), nonce=random_bytes(24))
        except UsageError:
            self.store.put("snapmark", space_id, encode(tree.size))  # do not retry each sync
            return None
        await bounded([functools.partial(self.transport.put_snapshot_chunk, space_id, cid, chunk)
                        for cid, chunk in zip(sealed.chunk_ids, sealed.chunks, strict=True)])
        await self.transport.put_snapshot(space_id, SPACE_SNAPSHOT_DOC, tree.size - 1,
                                      sealed.manifest)
        with self.store.batch() as b:
            b.put("snapmark", space_id, encode(tree.size))
            b.put("snapcheck", space_id, sealed.id)  # its own: nothing to check
        return tree.size

    def alert(self, report: SyncReport, message: str) -> None:
        """Record a ``snapshot_mismatch`` alert about another device."""
        entry = (Code.SNAPSHOT_MISMATCH.value, message)
        report.alerts.append(entry)
        self.alerts.append(entry)
        notify(self.observer, lambda o: o.on_alert(*entry))

    def claims_of(self, space_id: bytes, raw: bytes) -> SnapshotClaims | None:
        """A served snapshot's claims, its signature checked (any device of the
        account); None if its author is not one. A bad signature or another
        space means the relay served something no device wrote."""
        try:
            claims = check_snapshot_signature(raw, registry=self.reg.state(),
                                              accept_revoked=True)
        except AuthorizationError:
            return None
        except SddsfError as exc:
            raise ProofError(f"the relay served a snapshot that fails verification: "
                             f"[{exc.code.value}] {exc.message}") from exc
        if claims.space != space_id:
            raise ProofError("the relay served a snapshot that fails verification: "
                             "[wrong_context] it belongs to another space")
        return claims

    async def verdicts(self, space_id: bytes, doc: bytes,
                        claims: SnapshotClaims) -> Verdicts:
        """The verified attestations the relay holds about the snapshot under ``doc``
        (signatures checked; ones about another snapshot or forged are ignored)."""
        served = await self.transport.snapshot_attestations(space_id, doc)
        sid, raws = served.snapshot_id, list(served.attestations)
        v = Verdicts()
        if sid != claims.id:
            return v
        for raw in raws:
            try:
                att = verify_attestation(raw, registry=self.reg.state(), space=space_id,
                                         accept_revoked=True)
            except SddsfError:
                continue
            if att.snapshot != claims.id or att.size != claims.size or att.doc != \
                    SPACE_SNAPSHOT_DOC or att.attester == claims.author:
                continue
            # Its own earlier verdict rested on the state now in question.
            trusted = self.reg.trusted(att.attester) and att.attester != self.ident.device_id
            if att.verdict == MISMATCH and trusted:
                v.dissent.append(att.attester)
            elif att.verdict == MATCH:
                v.match = True
                if trusted:
                    v.matchers.append(att.attester)
        return v

    async def log_complete(self, space_id: bytes) -> bool:
        """Whether the relay still holds entry 0 (the log can be replayed)."""
        # Pruning drops a prefix, so the log can be replayed iff entry 0 is there.
        page = (await self.transport.pull(space_id, after=-1, limit=1)).ops
        return not page or page[0].envelope is not None

    async def fetch(self, space_id: bytes, report: SyncReport, *,
                              docs: bool = True, exclude: bytes | None = None
                              ) -> tuple[Snapshot, dict[str, Any]] | None:
        """The snapshot a new device starts from and what vouches for it (``by``:
        the trusted devices that attested it; ``final``: nothing else records
        the history under it), or None to replay the log (protocol.md 18.7).

        In order: the current or the corroborated snapshot, if no trusted device
        disputes it and its author is trusted or a trusted device (not its
        author) attested it; else the log, when it is complete; else (history
        pruned) a snapshot that a device other than its author attested. A
        snapshot whose author is revoked or, during a recovery, suspect is thus
        never loaded on its author's word alone. ``docs=False`` skips fetching
        and decrypting the documents (a dry pull needs the frontier and chains).
        """
        banned = set(as_list(self.store.get("snapdistrust", space_id) or encode([])))
        banned.add(exclude or b"")
        judged: list[tuple[SnapshotClaims, Verdicts, bytes]] = []
        for doc in (SPACE_SNAPSHOT_DOC, CORROBORATED_SNAPSHOT_DOC):
            try:
                raw = (await self.transport.get_snapshot(space_id, doc)).blob
            except NotFoundError:
                continue
            claims = self.claims_of(space_id, raw)
            if claims is None or claims.id in banned or any(c.id == claims.id
                                                            for c, _, _ in judged):
                continue
            verdicts = await self.verdicts(space_id, doc, claims)
            if verdicts.dissent:
                self.alert(report, f"device {self.reg.label(verdicts.dissent[0])} reports that "
                            f"the snapshot of space {space_id.hex()[:12]} written by device "
                            f"{self.reg.label(claims.author)} does not match the log; not used")
                continue
            judged.append((claims, verdicts, raw))
        for claims, v, raw in judged:
            if v.matchers or self.reg.trusted(claims.author):
                return await self.load(space_id, raw, claims,
                                                 {"by": v.matchers, "final": False}, report,
                                                 docs)
        if not judged or await self.log_complete(space_id):
            return None
        for claims, v, raw in judged:  # history is pruned: a corroborated one is all there is
            if v.match:
                return await self.load(space_id, raw, claims,
                                                 {"by": [], "final": True}, report, docs)
        return None

    async def load(self, space_id: bytes, raw: bytes, claims: SnapshotClaims,
                             basis: dict[str, Any], report: SyncReport,
                             docs: bool) -> tuple[Snapshot, dict[str, Any]] | None:
        keys = self.keyring.keys_cached(space_id)
        try:
            manifest = open_snapshot(raw, registry=self.reg.state(), space=space_id,
                                     epoch_keys=keys, accept_revoked=True, checked=claims)
            if not docs:
                return load_snapshot(dataclasses.replace(manifest, inline_docs={}), (),
                                     epoch_keys=keys), basis
            chunks = await bounded([functools.partial(self.chunk, space_id, cid)
                                     for cid in manifest.chunk_ids])
            return load_snapshot(manifest, chunks, epoch_keys=keys), basis
        except EpochError:
            return None  # no key for its epoch: replay instead
        except ProofError as exc:  # a chunk that is not the one the signed manifest names
            raise ProofError(f"the relay served a snapshot that fails verification: "
                             f"{exc.message}") from exc
        except SddsfError as exc:
            # Signed by a device of the account, yet unreadable: its author wrote it so.
            self.alert(report, f"the snapshot of space {space_id.hex()[:12]} written by device "
                        f"{self.reg.label(claims.author)} is unreadable ([{exc.code.value}] "
                        f"{exc.message}); not used")
            return None

    async def chunk(self, space_id: bytes, cid: bytes) -> bytes:
        """One chunk of a served snapshot (a withheld one is the relay's fault)."""
        try:
            return await self.transport.get_snapshot_chunk(space_id, cid)
        except NotFoundError:
            raise ProofError("the relay withheld a chunk of the snapshot it served") from None

    def snapbase(self, space_id: bytes) -> dict[str, Any] | None:
        """The snapshot this device's state of the space started from, while no
        trusted device vouches for it: ``{"id", "author", "size", "by"}`` (empty
        id and author: a home that started from a snapshot before this was
        recorded). None when the state rests on the log: replayed, or started
        from a snapshot that a device other than its author corroborated while
        that device or the author is still trusted (or that is the only record
        of a pruned history: ``final``)."""
        raw = self.store.get("snapbase", space_id)
        if raw is not None:
            row = as_dict(raw)
            by = [bytes(d) for d in row.get("by", [])]
            if row.get("final") or (by and (self.reg.trusted(bytes(row["author"]))
                                             or any(self.reg.trusted(d) for d in by))):
                return None  # corroborated, and someone who vouched is still trusted
            return row
        base = self.store.get("base", space_id)
        if base is None:
            return None
        return {"id": b"", "author": b"", "size": int(as_list(base)[0])}

    def grounded(self, space_id: bytes) -> bool:
        """Whether this device's state of the space rests on the log: replayed, or
        started from a snapshot that a device other than its author corroborated.
        Only then does it publish snapshots or attest other devices' (18.7)."""
        return self.snapbase(space_id) is None

    def set_grounded(self, space_id: bytes, by: list[bytes]) -> None:
        """Record the trusted devices that corroborated this device's start."""
        row = as_dict(self.store.get("snapbase", space_id) or encode({}))
        self.store.put("snapbase", space_id, encode({**row, "by": by}))


async def bounded(calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run request-making calls with at most CHUNK_REQUESTS in flight; results in order."""
    gate = asyncio.Semaphore(CHUNK_REQUESTS)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()
    return list(await asyncio.gather(*(one(c) for c in calls)))


class UnreadableSnapshot(Exception):  # an internal signal: never escapes _pull
    """A verified snapshot whose documents are not Yjs updates."""

    def __init__(self, snap: Snapshot, why: str) -> None:
        super().__init__(why)
        self.snap = snap
        self.why = why


@dataclass
class Verdicts:
    """Verified attestations of one snapshot (by devices other than its author)."""

    match: bool = False  # some device attested ``match``
    matchers: list[bytes] = field(default_factory=list)  # trusted ones that did
    dissent: list[bytes] = field(default_factory=list)  # trusted devices: ``mismatch``


def _normalised(state: bytes) -> bytes:
    # Equal Yjs stores encode differently depending on how their blocks were
    # merged; loading each into a fresh document first gives one encoding
    # (an empty document's for b"").
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    if state:
        doc.apply_update(state)
    return doc.get_update()


def same_states(a: dict[str, bytes], b: dict[str, bytes]) -> bool:
    """Whether two sets of documents hold the same Yjs stores (a missing one is empty)."""
    return all(_normalised(a.get(n, b"")) == _normalised(b.get(n, b"")) for n in set(a) | set(b))
