"""A malicious relay for tests: an httpx transport that lies to devices.

The relay is trusted for availability only. A device must *detect* a relay
that omits, reorders, rewrites, rolls back, forges or forks its log, and refuse
to apply anything (see :mod:`sddsf.client.device`). This module is the
adversary those tests need: :class:`MaliciousRelay` is an
:class:`httpx.AsyncBaseTransport` that wraps one or more real relay transports
(``httpx.ASGITransport(app=...)``) and, for the devices chosen as victims,
rewrites the answers of ``GET /v1/spaces/{id}/ops`` according to an
:class:`Attack`. Every other request passes through untouched.

The relay is the adversary, so it holds the relay signing key: attacks that
need a new tree head re-sign one (``resign=True``), modelling a fully
malicious relay rather than a man in the middle. Heads that are not re-signed
are the genuine ones, so only the log contents lie.

Usage::

    relay = MaliciousRelay(httpx.ASGITransport(app=app))   # key taken from the app
    device = await Device.create_account(home, url, "laptop", ..., transport=relay)
    relay.set_attack(Drop(offsets=frozenset({3})), victims={phone.device_id})
    with pytest.raises(ProofError): await phone.sync()
    relay.honest()

:meth:`MaliciousRelay.set_attack` takes the victims (device ids) and the
spaces to lie about; everybody else is served the truth. Devices are told
apart by their session: the harness watches ``/v1/auth/challenge`` and
``/v1/auth/session`` (whose bodies carry the device id) and maps each bearer
token the relay hands out to its device. So every device must authenticate
*through* the harness (create it with ``transport=relay``).

The attacks, and the client check that catches each one
=======================================================

Each attack is applied to a *view* of the whole log (the harness reads the
full log from the real relay with the victim's own session) and the page the
victim asked for (``after``, ``limit``) is cut from that view.

``drop`` — :class:`Drop`
    Omit ops (THREATS #9). With the offsets kept, the page has a hole:
    *contiguous offsets* (``proof_invalid``). Renumbered under the genuine
    head: the leaves no longer *reproduce the signed root* (``proof_invalid``).
    Renumbered and re-signed: the per-author hash chain has a hole, caught by
    *the rules in history mode* (``proof_invalid`` wrapping ``chain_gap``), or
    the victim's own op is missing: the *acknowledged-op* check
    (``proof_invalid``). Omitting another device's ops behind a re-signed head
    leaves a trace in later ops' ``seen`` heads: the *gossip* check
    (``split_view``).
``withhold`` — :class:`Withhold`
    Serve an op's leaf hash but no envelope, as if pruned by a snapshot, so the
    root still matches while the content never arrives. The device has not
    applied that op and no verified snapshot covers it, so it must refuse
    (``proof_invalid``) rather than skip the op.
``reorder`` — :class:`Reorder`
    Swap two ops (THREATS #10). Offsets travelling with the ops: *contiguous
    offsets*. Renumbered: *signed root*. Re-signed: the *rules* (chain order of
    one author) or the *acknowledged-op* check (``proof_invalid``).
``duplicate`` / ``overlap`` — :class:`Duplicate`, :class:`Overlap`
    Deliver an op twice, or re-deliver ops before ``after`` (THREATS #23).
    The pull protocol is offset-exact, so both break *contiguous offsets*
    (``proof_invalid``): the client never applies an op twice.
``rewrite`` — :class:`Rewrite`
    Replace an op's envelope: a flipped ciphertext byte, or another op's valid
    envelope (``copy_from``). Leaf hash kept: *leaf hash* check. Leaf hash
    recomputed: *signed root*. Re-signed: the *rules* (``sig_invalid``, or a
    replayed op is a ``duplicate``) — all ``proof_invalid``.
``rollback`` — :class:`Rollback`
    Serve the log as it was at an older size with the genuine head the relay
    signed then (recorded as it passed through; THREATS #11). The page is what
    the relay served at that size (nothing after the victim's cursor), so the
    *size* check fires: ``log_rollback``.
``forge`` — :class:`Forge`
    Inject an op (THREATS #13): signed by a fresh key the registry does not
    know, or claiming a registry device as author but signed with the relay's
    own key. Re-signed head: the *rules* refuse it (``proof_invalid`` wrapping
    ``unknown_device`` / ``sig_invalid``).
``bad head`` — :class:`BadHead`
    A tree head with a broken signature, signed by another key, or for another
    log: *tree head signature* (``tree_head_invalid``).
``split`` — backends and routing (THREATS #12)
    Two real relay apps with separate databases behind one harness:
    :func:`copy_sqlite_database` forks the database after a common prefix,
    :func:`clone_relay_app` builds a second app over the copy (same relay key
    and the same session store, so sessions stay valid: two nodes of one
    deployment), :meth:`MaliciousRelay.add_backend` registers it and
    :meth:`MaliciousRelay.route` sends a device's requests there. Each device
    then verifies a consistent, genuinely signed branch. A forking relay cannot
    converge the branches again: :meth:`MaliciousRelay.merge` copies one
    branch's ops into the other (each branch keeps its own order). When a
    device pulls another device's op whose ``seen`` head was signed on the
    other branch, the *gossip* check fires (``split_view``); a device moved to
    the other branch fails the *signed root* / *acknowledged-op* checks
    (``proof_invalid``).

Key-package attacks (rotation suppression)
==========================================

:meth:`MaliciousRelay.set_key_attack` lies about a space's key packages
(``/v1/spaces/{id}/keys``) to the chosen devices, independently of the log
attack above. A relay colluding with a revoked device wants the other devices
to keep writing under an epoch the revoked device can read.

``refuse uploads`` — :class:`RefuseKeyUploads`
    Answer ``409 conflict`` to every key-package upload without forwarding it,
    as if another device always rotated first. The uploader must refuse to
    write under the old epoch (``rotation_blocked``) instead of assuming that.
``hide`` — :class:`HideKeyPackages`
    Serve the victim only the packages below an epoch, so a rotation made by
    another device is invisible to it, and answer its own rotation attempts
    ``409 conflict`` (as if yet another device had just rotated) while the
    package stays hidden: ``rotation_blocked``. The devices not attacked see
    nothing unusual.
``substitute`` — :class:`SubstituteKeyPackage`
    Serve another (validly signed) package for an epoch the victim already
    stored: a second package for one (space, epoch) is fork evidence
    (``key_package_fork``); the stored one is never replaced.

First-sync bundles
==================

A victim of an armed attack (log or key packages) asking for the first-sync
bundle (``GET /v1/bootstrap``, protocol 17.9) is answered ``404 not_found``,
as a relay node without the endpoint would; the device then reads endpoint by
endpoint, where the attack applies. Lies told inside a bundle are tested in
``tests/client/test_bootstrap.py``.

Size: the malicious relay is a test double implementing every lie a relay can
tell (omit, reorder, rewrite, roll back, fork, forge) over one transport; the
attacks share its log model.
"""

from __future__ import annotations

import json
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from fastapi import FastAPI

from sddsf.crypto import Ed25519SigningKey, aead_encrypt, random_bytes
from sddsf.protocol import labels, merkle
from sddsf.protocol.clock import HLCTimestamp
from sddsf.protocol.encoding import encode
from sddsf.protocol.envelope import (
    FORMAT_VERSION,
    GENESIS_PREV,
    OpEnvelope,
    OpHeader,
    decode_envelope,
    derive_doc_key,
    seal_op,
)
from sddsf.protocol.identity import DeviceKeys
from sddsf.protocol.keypackage import decode_key_package
from sddsf.protocol.labels import labelled, tagged_hash
from sddsf.protocol.sharing import LeafKind, leaf_kind
from sddsf.protocol.treehead import TreeHead, decode_tree_head, sign_tree_head
from sddsf.protocol.vv import VersionVector
from sddsf.relay.app import create_app
from sddsf.relay.deps import RelayContext
from sddsf.relay.storage.base import RelayStorage, StoredOp
from sddsf.wire import b64 as _b64
from sddsf.wire import unb64 as _unb64

__all__ = [
    "MAIN",
    "Attack",
    "AttackTools",
    "BadHead",
    "Drop",
    "Duplicate",
    "Forge",
    "HarnessError",
    "HideKeyPackages",
    "Inject",
    "KeyAttack",
    "LogEntry",
    "MaliciousRelay",
    "Overlap",
    "RefuseKeyUploads",
    "Reorder",
    "Rewrite",
    "Rollback",
    "Served",
    "SubstituteKeyPackage",
    "Withhold",
    "clone_relay_app",
    "copy_sqlite_database",
    "forge_op",
    "relay_context",
    "tamper_ciphertext",
]

MAIN = "main"
_OPS = re.compile(r"/v1/spaces/([A-Za-z0-9_=-]+)/ops")
_KEYS = re.compile(r"/v1/spaces/([A-Za-z0-9_=-]+)/keys")
_PAGE = 1000  # the relay's default max_page_ops


class HarnessError(AssertionError):
    """The scenario is broken (an attack that did not fire, a merge the relay
    refused...): a test error, never a verdict about the client."""


# ------------------------------------------------------------------ the log view
@dataclass(frozen=True, slots=True)
class LogEntry:
    """One op as served by ``GET /v1/spaces/{id}/ops`` (``envelope`` None = pruned)."""

    offset: int
    op_id: bytes
    leaf_hash: bytes
    envelope: bytes | None

    @classmethod
    def of(cls, offset: int, envelope: bytes) -> LogEntry:
        """An entry whose ids are the envelope's real hashes."""
        return cls(offset, tagged_hash(labels.OP_ID, envelope), merkle.leaf_hash(envelope),
                   envelope)

    def decoded(self) -> OpEnvelope | None:
        """The envelope, decoded (None when pruned, or for a membership entry)."""
        if self.envelope is None or leaf_kind(self.envelope) is not LeafKind.OP:
            return None
        return decode_envelope(self.envelope)

    def to_json(self) -> dict[str, Any]:
        """The wire shape of one pulled op."""
        return {"offset": self.offset, "op_id": _b64(self.op_id),
                "leaf_hash": _b64(self.leaf_hash),
                "envelope": None if self.envelope is None else _b64(self.envelope)}


@dataclass(frozen=True, slots=True)
class Served:
    """What an attack serves: the log view (in served order) and a signed head."""

    entries: list[LogEntry]
    head: bytes


@dataclass(frozen=True, slots=True)
class AttackTools:
    """What an attack may use besides the log.

    Attributes:
        space_id: the space (the log id of its tree heads).
        head: the genuine current tree head, decoded (``head.raw`` is signed).
        key: the relay's signing key (None if the harness has none).
        recorded: genuine heads of this space seen passing through, by size.
    """

    space_id: bytes
    head: TreeHead
    key: Ed25519SigningKey | None
    recorded: dict[int, bytes]

    def signing_key(self) -> Ed25519SigningKey:
        """The relay key, or :class:`HarnessError` if the harness was given none."""
        if self.key is None:
            raise HarnessError("this attack re-signs tree heads: give the harness the relay "
                               "key (or an ASGI transport of a relay app)")
        return self.key

    def sign(self, entries: Sequence[LogEntry], *, key: Ed25519SigningKey | None = None,
             log: bytes | None = None) -> bytes:
        """A head over ``entries``' leaf hashes, in served order (the relay's key
        unless ``key`` is given; the space's log unless ``log`` is given)."""
        return sign_tree_head(key or self.signing_key(), log=log or self.space_id,
                              size=len(entries),
                              root=merkle.root_of([e.leaf_hash for e in entries]),
                              ts_ms=self.head.ts)


def _renumber(entries: Iterable[LogEntry]) -> list[LogEntry]:
    return [replace(e, offset=i) for i, e in enumerate(entries)]


def _at(log: Sequence[LogEntry], offset: int) -> int:
    for i, e in enumerate(log):
        if e.offset == offset:
            return i
    raise HarnessError(f"the log has no op at offset {offset} (size {len(log)})")


# ---------------------------------------------------------------------- attacks
class Attack(ABC):
    """A way to lie about a space's log. Subclasses are frozen dataclasses."""

    mode: ClassVar[str]

    @abstractmethod
    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        """The view to serve, given the genuine ``log`` (offsets 0..n-1)."""

    def page(self, served: Served, after: int, limit: int) -> list[LogEntry]:
        """The ops of one page: those with an offset after ``after``, in served order."""
        return [e for e in served.entries if e.offset > after][:limit]

    def _head(self, entries: Sequence[LogEntry], tools: AttackTools, resign: bool) -> bytes:
        return tools.sign(entries) if resign else tools.head.raw


@dataclass(frozen=True)
class Drop(Attack):
    """Omit the ops at ``offsets`` and every op by an author in ``authors``.

    ``renumber`` closes the hole (later ops move down); ``resign`` renumbers and
    signs a head over the shortened log.
    """

    mode: ClassVar[str] = "drop"
    offsets: frozenset[int] = frozenset()
    authors: frozenset[bytes] = frozenset()
    renumber: bool = False
    resign: bool = False

    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        def dropped(e: LogEntry) -> bool:
            env = e.decoded() if self.authors else None
            return e.offset in self.offsets or (env is not None
                                                and env.header.author in self.authors)

        kept = [e for e in log if not dropped(e)]
        if len(kept) == len(log):
            raise HarnessError("drop: nothing in the log matched")
        if self.renumber or self.resign:
            kept = _renumber(kept)
        return Served(kept, self._head(kept, tools, self.resign))


@dataclass(frozen=True)
class Withhold(Attack):
    """Serve the op at ``offset`` without its envelope (as if pruned), leaf hash
    and head genuine."""

    mode: ClassVar[str] = "withhold"
    offset: int

    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        view = list(log)
        i = _at(view, self.offset)
        view[i] = replace(view[i], envelope=None)
        return Served(view, tools.head.raw)


@dataclass(frozen=True)
class Reorder(Attack):
    """Swap the ops at offsets ``first`` and ``second``.

    Without ``renumber`` each op keeps its offset (the page is out of order);
    with it the offsets stay 0..n-1 and the leaves move; ``resign`` renumbers
    and signs a head over the reordered log.
    """

    mode: ClassVar[str] = "reorder"
    first: int
    second: int
    renumber: bool = False
    resign: bool = False

    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        view = list(log)
        i, j = _at(view, self.first), _at(view, self.second)
        view[i], view[j] = view[j], view[i]
        if self.renumber or self.resign:
            view = _renumber(view)
        return Served(view, self._head(view, tools, self.resign))


@dataclass(frozen=True)
class Duplicate(Attack):
    """Deliver the op at ``offset`` twice in a row (same offset both times)."""

    mode: ClassVar[str] = "duplicate"
    offset: int

    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        view = list(log)
        i = _at(view, self.offset)
        view.insert(i + 1, view[i])
        return Served(view, tools.head.raw)


@dataclass(frozen=True)
class Overlap(Attack):
    """Re-deliver the ``count`` ops before the requested ``after`` (a backfill
    overlapping what the device already has)."""

    mode: ClassVar[str] = "overlap"
    count: int = 1

    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        return Served(list(log), tools.head.raw)

    def page(self, served: Served, after: int, limit: int) -> list[LogEntry]:
        if after + 1 - self.count < 0:
            raise HarnessError("overlap: the device has fewer ops than the overlap")
        return [e for e in served.entries if e.offset > after - self.count][:limit]


def tamper_ciphertext(raw: bytes) -> bytes:
    """The envelope with one ciphertext bit flipped (still well-formed)."""
    env = decode_envelope(raw)
    ct = bytearray(env.ciphertext)
    ct[len(ct) // 2] ^= 0x01
    return encode([FORMAT_VERSION, env.header_bytes, bytes(ct), env.signature])


@dataclass(frozen=True)
class Rewrite(Attack):
    """Replace the envelope at ``offset``: by ``envelope``, by the envelope of
    the op at ``copy_from`` (a replay), or else by a bit-flipped copy.

    ``fix_leaf_hash`` recomputes the op id and leaf hash; ``resign`` does too
    and signs a head over the rewritten log.
    """

    mode: ClassVar[str] = "rewrite"
    offset: int
    envelope: bytes | None = None
    copy_from: int | None = None
    fix_leaf_hash: bool = False
    resign: bool = False

    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        view = list(log)
        i = _at(view, self.offset)
        old = view[i]
        if self.envelope is not None:
            new = self.envelope
        elif self.copy_from is not None:
            src = view[_at(view, self.copy_from)].envelope
            if src is None:
                raise HarnessError("rewrite: the op to copy is pruned")
            new = src
        else:
            if old.envelope is None:
                raise HarnessError("rewrite: the op is pruned")
            new = tamper_ciphertext(old.envelope)
        if self.fix_leaf_hash or self.resign:
            view[i] = LogEntry.of(old.offset, new)
        else:
            view[i] = replace(old, envelope=new)
        return Served(view, self._head(view, tools, self.resign))


@dataclass(frozen=True)
class Rollback(Attack):
    """Serve the log as it was at ``to_size`` entries, with the genuine head the
    relay signed at that size (recorded by the harness), or a re-signed one if
    none was recorded and ``resign`` is set."""

    mode: ClassVar[str] = "rollback"
    to_size: int
    resign: bool = False

    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        if self.to_size >= len(log):
            raise HarnessError(f"rollback: the log has {len(log)} entries, not more than "
                               f"{self.to_size}")
        view = list(log[:self.to_size])
        head = tools.recorded.get(self.to_size)
        if head is None:
            if not self.resign:
                raise HarnessError(f"rollback: no genuine head of size {self.to_size} was "
                                   f"recorded (seen: {sorted(tools.recorded)})")
            head = tools.sign(view)
        return Served(view, head)


def forge_op(signer: Ed25519SigningKey, header: OpHeader, plaintext: bytes = b"forged",
             epoch_key: bytes | None = None) -> bytes:
    """An envelope for ``header`` encrypted under ``epoch_key`` (random if None)
    and signed by ``signer``, whoever ``header.author`` claims to be."""
    header_bytes = encode(header.to_wire())
    key = derive_doc_key(epoch_key or random_bytes(32), header.space, header.doc, header.epoch)
    ciphertext = aead_encrypt(key, header.nonce, plaintext,
                              labelled(labels.OP_AD, header_bytes))
    sig = signer.sign(labelled(labels.OP_SIG, header_bytes,
                               tagged_hash(labels.OP_CIPHERTEXT, ciphertext)))
    return encode([FORMAT_VERSION, header_bytes, ciphertext, sig])


@dataclass(frozen=True)
class Forge(Attack):
    """Inject a forged op at ``at`` (default: the end) and renumber.

    With ``author`` None the op is sealed by a fresh device key the registry
    does not know; with ``author`` set it continues that device's chain in the
    log (next seq, linked prev) but is signed by ``signer`` (default: the
    relay's own key). ``resign`` (default) signs a head over the new log.
    """

    mode: ClassVar[str] = "forge"
    author: bytes | None = None
    signer: Ed25519SigningKey | None = field(default=None, repr=False)
    at: int | None = None
    resign: bool = True

    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        ops = [env for e in log if (env := e.decoded()) is not None]
        if not ops:
            raise HarnessError("forge: the log has no op to model the forgery on")
        last = ops[-1].header
        if self.author is None:
            keys = DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))
            header = replace(last, author=keys.device_id, seq=1, prev=GENESIS_PREV,
                             deps=VersionVector(), seen=None, nonce=random_bytes(24),
                             ts=HLCTimestamp(last.ts.wall_ms, last.ts.counter + 1))
            raw = seal_op(keys, header, b"forged", random_bytes(32)).raw
        else:
            mine = [env for env in ops if env.header.author == self.author]
            if not mine:
                raise HarnessError("forge: that author has no op in the log")
            prev = mine[-1]
            header = replace(prev.header, seq=prev.header.seq + 1, prev=prev.op_id,
                             nonce=random_bytes(24), seen=None,
                             ts=HLCTimestamp(last.ts.wall_ms, last.ts.counter + 1))
            raw = forge_op(self.signer or tools.signing_key(), header)
        view = list(log)
        view.insert(len(view) if self.at is None else _at(view, self.at),
                    LogEntry.of(0, raw))
        view = _renumber(view)
        return Served(view, self._head(view, tools, self.resign))


@dataclass(frozen=True)
class Inject(Attack):
    """Insert a given leaf (e.g. an op some device really signed, which the relay
    should have refused) at ``at`` (default: the end), renumber and re-sign."""

    mode: ClassVar[str] = "inject"
    leaf: bytes = field(default=b"", repr=False)
    at: int | None = None

    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        view = list(log)
        view.insert(len(view) if self.at is None else _at(view, self.at),
                    LogEntry.of(0, self.leaf))
        view = _renumber(view)
        return Served(view, self._head(view, tools, True))


@dataclass(frozen=True)
class BadHead(Attack):
    """Genuine ops with a bad tree head: its signature broken (``signature``),
    signed by another key (``foreign_key``), or for another log (``other_log``)."""

    mode: ClassVar[str] = "bad_head"
    kind: Literal["signature", "foreign_key", "other_log"] = "signature"

    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        if self.kind == "signature":
            sig = bytearray(tools.head.signature)
            sig[0] ^= 0x01
            head = encode([1, tools.head.body_bytes, bytes(sig)])
        elif self.kind == "foreign_key":
            head = tools.sign(log, key=Ed25519SigningKey.from_seed(random_bytes(32)))
        else:
            head = tools.sign(log, log=random_bytes(len(tools.space_id)))
        return Served(list(log), head)


# ------------------------------------------------------------ key-package attacks
class KeyAttack(ABC):
    """A way to lie about a space's key packages (see the module docstring)."""

    mode: ClassVar[str]

    def refuse_upload(self) -> bool:
        """Whether an upload is answered ``409 conflict`` instead of forwarded."""
        return False

    def packages(self, packages: list[bytes]) -> list[bytes]:
        """The packages to serve, given the genuine ones (in epoch order)."""
        return packages


@dataclass(frozen=True)
class RefuseKeyUploads(KeyAttack):
    """Answer every key-package upload with ``409 conflict`` (never forwarded)."""

    mode: ClassVar[str] = "refuse_uploads"

    def refuse_upload(self) -> bool:
        return True


@dataclass(frozen=True)
class HideKeyPackages(KeyAttack):
    """Serve only the packages of epochs below ``from_epoch``; refuse uploads (``409``)."""

    mode: ClassVar[str] = "hide"
    from_epoch: int

    def refuse_upload(self) -> bool:
        return True

    def packages(self, packages: list[bytes]) -> list[bytes]:
        kept = [p for p in packages if decode_key_package(p).epoch < self.from_epoch]
        if len(kept) == len(packages):
            raise HarnessError(f"hide: the space has no package from epoch {self.from_epoch}")
        return kept


@dataclass(frozen=True)
class SubstituteKeyPackage(KeyAttack):
    """Serve ``package`` in place of the genuine package of its epoch."""

    mode: ClassVar[str] = "substitute"
    package: bytes = field(repr=False)

    def packages(self, packages: list[bytes]) -> list[bytes]:
        epoch = decode_key_package(self.package).epoch
        out = [self.package if decode_key_package(p).epoch == epoch else p for p in packages]
        if out == packages:
            raise HarnessError(f"substitute: the space has no other package for epoch {epoch}")
        return out


# ----------------------------------------------------------------------- helpers
def relay_context(app: object) -> RelayContext:
    """The :class:`RelayContext` of a relay app (``app.state.relay``)."""
    ctx = getattr(getattr(app, "state", None), "relay", None)
    if not isinstance(ctx, RelayContext):
        raise HarnessError("not an SDDSF relay app")
    return ctx


def clone_relay_app(app: object, storage: RelayStorage, *,
                    relay_key: Ed25519SigningKey | None = None) -> FastAPI:
    """A second relay app like ``app`` over ``storage`` (opened by the caller).

    It shares ``app``'s settings, clock and edge state (sessions, nonces), so a
    device's session works on both: two nodes of one deployment with their own
    databases. ``relay_key`` gives it another key (an impostor relay).
    """
    ctx = relay_context(app)
    return create_app(ctx.settings, storage, relay_key or ctx.relay_key, edge=ctx.edge,
                      clock=ctx.clock)


def copy_sqlite_database(src: Path, dst: Path) -> None:
    """Copy a live SQLite database (WAL included) with SQLite's backup API."""
    with closing(sqlite3.connect(src)) as source, closing(sqlite3.connect(dst)) as target:
        source.backup(target)


async def _read_all(storage: RelayStorage, space_id: bytes) -> list[StoredOp]:
    ops: list[StoredOp] = []
    while True:
        page = await storage.read_ops(space_id, ops[-1].offset if ops else -1, _PAGE)
        if not page:
            return ops
        ops.extend(page)


def _json_response(body: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "application/json"},
                          content=json.dumps(body).encode())


def _head_json(raw: bytes) -> dict[str, Any]:
    th = decode_tree_head(raw)
    return {"tree_head": _b64(raw), "size": th.size, "root": _b64(th.root)}


# ----------------------------------------------------------------------- harness
class MaliciousRelay(httpx.AsyncBaseTransport):
    """A transport in front of one or more real relays that lies to victims.

    Args:
        inner: the real relay's transport (the ``main`` backend).
        relay_key: the relay's signing key, for re-signed heads; by default the
            key of the app behind ``inner`` when it is an ASGI relay app.

    Attributes:
        attack: the current attack (None: honest).
        victims: the device ids it applies to (None: every device).
        spaces: the space ids it applies to (None: every space).
        served: how many pulls were answered by an attack.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, *,
                 relay_key: Ed25519SigningKey | None = None) -> None:
        self.backends: dict[str, httpx.AsyncBaseTransport] = {MAIN: inner}
        self.attack: Attack | None = None
        self.victims: frozenset[bytes] | None = None
        self.spaces: frozenset[bytes] | None = None
        self.served = 0
        self.key_attack: KeyAttack | None = None
        self.key_victims: frozenset[bytes] | None = None
        self.key_spaces: frozenset[bytes] | None = None
        self.key_served = 0
        self._key = relay_key
        self._routes: dict[bytes, str] = {}
        self._tokens: dict[bytes, bytes] = {}
        self._heads: dict[tuple[str, bytes], dict[int, bytes]] = {}

    # ------------------------------------------------------------ control
    def set_attack(self, attack: Attack, *, victims: Iterable[bytes] | None = None,
                   spaces: Iterable[bytes] | None = None) -> None:
        """Lie to ``victims`` (every device if None) about ``spaces`` (every
        space if None) from the next request on."""
        self.attack = attack
        self.victims = None if victims is None else frozenset(victims)
        self.spaces = None if spaces is None else frozenset(spaces)

    def set_key_attack(self, attack: KeyAttack, *, victims: Iterable[bytes] | None = None,
                       spaces: Iterable[bytes] | None = None) -> None:
        """Lie about key packages to ``victims`` (every device if None) for ``spaces``
        (every space if None) from the next request on; ``key_served`` counts the
        answers it changed."""
        self.key_attack = attack
        self.key_victims = None if victims is None else frozenset(victims)
        self.key_spaces = None if spaces is None else frozenset(spaces)

    def honest(self) -> None:
        """Stop lying, about logs and key packages (routes to backends stay as they are)."""
        self.attack = None
        self.victims = None
        self.spaces = None
        self.key_attack = None
        self.key_victims = None
        self.key_spaces = None

    def add_backend(self, name: str, transport: httpx.AsyncBaseTransport) -> None:
        """Register another real relay (e.g. one over a forked database)."""
        self.backends[name] = transport

    def route(self, device_id: bytes, backend: str = MAIN) -> None:
        """Send ``device_id``'s requests to ``backend`` (``main`` by default)."""
        if backend not in self.backends:
            raise HarnessError(f"no backend named {backend!r}")
        self._routes[device_id] = backend

    def backend_of(self, device_id: bytes | None) -> str:
        """The backend a device's requests go to."""
        return self._routes.get(device_id, MAIN) if device_id is not None else MAIN

    def context(self, backend: str = MAIN) -> RelayContext:
        """The relay context of a backend (it must be an ASGI relay app)."""
        transport = self.backends[backend]
        if not isinstance(transport, httpx.ASGITransport):
            raise HarnessError(f"backend {backend!r} is not an in-process relay app")
        return relay_context(transport.app)

    def key_of(self, backend: str = MAIN) -> Ed25519SigningKey | None:
        """The key used to re-sign heads for a backend."""
        if self._key is not None:
            return self._key
        transport = self.backends[backend]
        if isinstance(transport, httpx.ASGITransport):
            return self.context(backend).relay_key
        return None

    async def log(self, space_id: bytes, backend: str = MAIN) -> list[LogEntry]:
        """The genuine log of a space on a backend, read from its storage."""
        ops = await _read_all(self.context(backend).storage, space_id)
        return [LogEntry(o.offset, o.op_id, o.leaf_hash, o.envelope) for o in ops]

    async def merge(self, space_id: bytes, *, src: str, dst: str) -> int:
        """Submit every op of ``src``'s log to ``dst`` (the relay's own verify and
        append path); ops ``dst`` has are duplicates. Returns how many were
        appended. Each branch keeps its own order: a fork never converges."""
        source, target = self.context(src), self.context(dst)
        space = await source.storage.get_space(space_id)
        if space is None:
            raise HarnessError("merge: no such space on the source backend")
        envelopes = [o.envelope for o in await _read_all(source.storage, space_id)
                     if o.envelope is not None]
        appended = 0
        for start in range(0, len(envelopes), _PAGE):
            results, _ = await target.fabric.submit(space.account_id, space_id,
                                                    envelopes[start:start + _PAGE])
            for r in results:
                if r.status == "rejected":
                    raise HarnessError(f"merge: {dst!r} refused an op: [{r.code}] {r.message}")
                appended += r.status == "accepted"
        return appended

    # ---------------------------------------------------------- transport
    async def aclose(self) -> None:
        """Nothing to close: shared by several clients; backends outlive them."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        device = self._device_of(request)
        backend = self.backend_of(device)
        transport = self.backends[backend]
        key_attack = self._key_attack_for(request, device)
        if key_attack is not None and request.method == "POST" and key_attack.refuse_upload():
            self.key_served += 1
            return _json_response({"code": "conflict", "message": "key epoch already has "
                                   "another package; re-read the key packages"}, 409)
        if request.url.path == "/v1/bootstrap" and self._victim(device):
            return _json_response({"code": "not_found", "message": "no first-sync bundle "
                                   "here: read each endpoint"}, 404)
        response = await transport.handle_async_request(request)
        content = await response.aread()
        match = _OPS.fullmatch(request.url.path)
        if response.status_code != 200:
            return self._copy(response, content)
        if key_attack is not None and request.method == "GET":
            genuine = [_unb64(p) for p in json.loads(content)["key_packages"]]
            served = key_attack.packages(genuine)
            self.key_served += served != genuine
            return _json_response({"key_packages": [_b64(p) for p in served]})
        if request.url.path == "/v1/auth/session" and device is not None:
            self._tokens[_unb64(json.loads(content)["token"])] = device
        if match is not None:
            space_id = _unb64(match.group(1))
            self._record(backend, space_id, _unb64(json.loads(content)["tree_head"]
                                                   ["tree_head"]))
            attack = self.attack
            if (request.method == "GET" and attack is not None
                    and (self.victims is None or device in self.victims)
                    and (self.spaces is None or space_id in self.spaces)):
                return await self._attacked_pull(request, backend, space_id, attack)
        return self._copy(response, content)

    def _victim(self, device: bytes | None) -> bool:
        # Whether an armed attack (log or key packages) applies to the device.
        return (self.attack is not None and (self.victims is None or device in self.victims)
                ) or (self.key_attack is not None and (self.key_victims is None
                                                       or device in self.key_victims))

    def _key_attack_for(self, request: httpx.Request, device: bytes | None) -> KeyAttack | None:
        match = _KEYS.fullmatch(request.url.path)
        attack = self.key_attack
        if match is None or attack is None:
            return None
        if self.key_victims is not None and device not in self.key_victims:
            return None
        if self.key_spaces is not None and _unb64(match.group(1)) not in self.key_spaces:
            return None
        return attack

    @staticmethod
    def _copy(response: httpx.Response, content: bytes) -> httpx.Response:
        return httpx.Response(response.status_code, headers=response.headers, content=content)

    def _device_of(self, request: httpx.Request) -> bytes | None:
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return self._tokens.get(_unb64(auth[len("Bearer "):]))
        if request.method == "POST" and request.url.path in ("/v1/auth/challenge",
                                                              "/v1/auth/session"):
            body = json.loads(request.content)
            return _unb64(str(body["device_id"]))
        return None

    def _record(self, backend: str, space_id: bytes, head: bytes) -> None:
        self._heads.setdefault((backend, space_id), {}).setdefault(
            decode_tree_head(head).size, head)

    async def _fetch_log(self, request: httpx.Request, backend: str,
                         path: str) -> tuple[list[LogEntry], bytes]:
        transport = self.backends[backend]
        entries: list[LogEntry] = []
        head = b""
        while True:
            sub = httpx.Request("GET", request.url.copy_with(
                path=path, params={"after": len(entries) - 1, "limit": _PAGE}),
                headers={"authorization": request.headers["authorization"]})
            response = await transport.handle_async_request(sub)
            body = json.loads(await response.aread())
            if response.status_code != 200:
                raise HarnessError(f"reading the genuine log failed: {body}")
            head = _unb64(body["tree_head"]["tree_head"])
            page = [LogEntry(o["offset"], _unb64(o["op_id"]), _unb64(o["leaf_hash"]),
                             _unb64(o["envelope"]) if o["envelope"] is not None else None)
                    for o in body["ops"]]
            entries.extend(page)
            if not page or len(entries) >= decode_tree_head(head).size:
                return entries, head

    async def _attacked_pull(self, request: httpx.Request, backend: str, space_id: bytes,
                             attack: Attack) -> httpx.Response:
        after = int(request.url.params.get("after", "-1"))
        limit = int(request.url.params.get("limit", "500"))
        log, head = await self._fetch_log(request, backend, request.url.path)
        self._record(backend, space_id, head)
        tools = AttackTools(space_id, decode_tree_head(head), self.key_of(backend),
                            dict(self._heads.get((backend, space_id), {})))
        served = attack.serve(log, tools)
        page = attack.page(served, after, limit)
        self.served += 1
        return _json_response({"ops": [e.to_json() for e in page],
                               "tree_head": _head_json(served.head),
                               "next_after": page[-1].offset if page else after})
