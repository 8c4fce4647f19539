"""Ops carried device to device (protocol.md section 23): judged by the shared
rules against this device's verified registry and key packages, applied at once,
served to peers that lack them, and kept until the relay's log holds them.

Rows (device store):

* ``pop``      space ‖ author ‖ seq → envelope: an op learnt from a peer that this
  device has not seen in the verified log yet (served to peers, carried to the
  relay in hybrid mode, forgotten once pulled);
* ``pchain``   space ‖ author → [seq, op_id, deps]: the head of those ops per
  author (the effective head is the greater of it and the log's ``chain``);
* ``papplied`` space ‖ op_id: the op's edit was applied from a peer, so a pull
  that later finds it in the log does not apply it again (``prejudge``: see
  :mod:`sddsf.client.engine.peer_rebuild`).

Invariants: an op is applied only after every earlier op of its author in the
space was (the per-author chain, rule 10, never skips a seq); a peer's op is
never trusted more than a pulled one (same rules; history mode because a peer
has no global order, plus the clock-skew rule against future timestamps); no
order across authors is claimed (the relay's log alone gives one).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sddsf.client.engine.common import (
    EngineObserver,
    as_int,
    as_list,
    chain_head,
    doc_id_for,
    notify,
    u64,
)
from sddsf.client.engine.documents import Documents
from sddsf.client.engine.identity import DeviceIdentity
from sddsf.client.engine.keyring import Keyring
from sddsf.client.engine.members import Members
from sddsf.client.engine.registry import RegistryView
from sddsf.client.store import LocalStore, StoreBatch
from sddsf.errors import (
    AuthorizationError,
    ClockSkewError,
    Code,
    DecodeError,
    SddsfError,
)
from sddsf.protocol import keypackage as kp
from sddsf.protocol import p2p
from sddsf.protocol import registry as reg
from sddsf.protocol.encoding import encode
from sddsf.protocol.envelope import OpEnvelope, decode_envelope, open_op
from sddsf.protocol.payload import Edit, decode_payload
from sddsf.protocol.rules import (
    ChainHead,
    EpochWindow,
    MemoryChainView,
    RuleSettings,
    verify_op,
)

__all__ = ["MeshOps", "MeshReport", "forget_logged"]

_MAX_WAITING = 10_000  # ops held for an earlier op, a registry entry or a key, per device
_OP_LEAF = b"\x84"  # first byte of an op envelope (a membership entry's is 0x83)


@dataclass
class MeshReport:
    """What one batch of ops from peers did."""

    applied: int = 0
    known: int = 0  # already held (logged, carried or own)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (code, message)
    waiting: int = 0  # held for an earlier op, a registry entry or a key
    need_registry: bool = False  # an op names registry entries this device lacks
    need_keys: bool = False  # an op is under an epoch this device holds no key of
    #: Authors of refused ops that no honest carrier would send (bad signature).
    blamed: set[bytes] = field(default_factory=set)


class _Wait(Exception):  # an internal signal: the op is kept for later
    def __init__(self, why: str) -> None:
        self.why = why


class MeshOps:
    """The peer-to-peer side of one device's engine (see the module docstring)."""

    def __init__(self, ident: DeviceIdentity, registry: RegistryView, keyring: Keyring,
                 docs: Documents, members: Members,
                 observer: EngineObserver | None = None) -> None:
        self.ident = ident
        self.store = ident.store
        self.reg = registry
        self.keyring = keyring
        self.docs = docs
        self.members = members
        self.observer = observer
        self.rules = RuleSettings()
        #: Ops kept for an earlier op (or a registry entry, a key), by (space, author, seq).
        self.waiting: dict[tuple[bytes, bytes, int], OpEnvelope] = {}
        #: Heads and documents written by the batch being judged (not committed yet).
        self._fresh: dict[tuple[bytes, bytes], ChainHead] = {}
        self._fresh_docs: set[tuple[bytes, bytes]] = set()
        #: Per space: how many log rows were indexed, and author -> {seq: offset}.
        self._index: dict[bytes, tuple[int, dict[bytes, dict[int, int]]]] = {}

    # ------------------------------------------------------------ held state
    def head(self, space_id: bytes, author: bytes) -> ChainHead | None:
        """The author's last op this device holds in the space (logged, carried or own)."""
        best: ChainHead | None = self._fresh.get((space_id, author))
        if best is not None:
            return best  # applied in the batch being written (the newest)
        for ns in ("chain", "pchain"):
            raw = self.store.get(ns, space_id + author)
            if raw is not None:
                h = chain_head(raw)
                best = h if best is None or h.seq > best.seq else best
        if author == self.ident.device_id:
            mine = self.store.get("mine", space_id)
            if mine is not None and (best is None or int(as_list(mine)[0]) > best.seq):
                seq, op_id = as_list(mine)
                env = self._own(space_id, int(seq))
                deps = env.header.deps if env is not None else None
                if deps is not None:
                    best = ChainHead(int(seq), bytes(op_id), deps)
        return best

    def heads(self, space_id: bytes) -> dict[bytes, int]:
        """Every author's last seq this device holds in the space."""
        out: dict[bytes, int] = {}
        for ns in ("chain", "pchain"):
            for key, raw in self.store.scan(ns, space_id):
                out[key[16:]] = max(out.get(key[16:], 0), int(as_list(raw)[0]))
        mine = self.store.get("mine", space_id)
        if mine is not None:
            me = self.ident.device_id
            out[me] = max(out.get(me, 0), int(as_list(mine)[0]))
        return out

    def request(self, space_id: bytes) -> p2p.CatchUpRequest:
        """What to ask a peer for: everything after what this device holds."""
        keys = self.keyring.keys_cached(space_id)
        return p2p.CatchUpRequest(space_id, self.heads(space_id), self.ident.account.account_id,
                                  self.reg.state().seq, max(keys) if keys else 0)

    def may_read(self, space_id: bytes, device_id: bytes) -> bool:
        """Whether a peer device may be served the space: an active device of this
        account (its own space), or of a member account of a shared space."""
        if space_id not in {s for s, _ in self.ident.synced_spaces()}:
            return False
        if not self.members.shared(space_id):
            return self.members.owner(space_id) == self.ident.account.account_id \
                and self.reg.state().is_active(device_id)
        for account in self.members.current(space_id).state.members:
            state = self.members.registry_of(account)
            if state is not None and state.is_active(device_id):
                return True
        return False

    def respond(self, req: p2p.CatchUpRequest, asker: bytes) -> p2p.CatchUpResponse:
        """The ops (and registry entries, key packages) the asker lacks.

        Raises:
            AuthorizationError: ``not_authorized`` when the asker may not read the space.
        """
        if not self.may_read(req.space_id, asker):
            raise AuthorizationError("this peer may not read that space", Code.NOT_AUTHORIZED)
        ops: list[bytes] = []
        sizes: list[int] = []
        more = False
        for _author, _seq, raw in self._ops_after(req.space_id, req.have):
            if len(ops) >= req.limit or not p2p.fits([*sizes, len(raw)]):
                more = True
                break
            ops.append(raw)
            sizes.append(len(raw))
        registry: list[bytes] = []
        if req.account_id == self.ident.account.account_id:
            registry = [v for _, v in self.store.scan("reg", start=u64(req.registry_seq + 1),
                                                      limit=1024)]
        packages = [v for k, v in self.store.scan("kp", req.space_id)
                    if int.from_bytes(k[16:], "big") > req.epoch][:1024]
        return p2p.CatchUpResponse(tuple(ops), more, tuple(registry), tuple(packages))

    def outgoing(self, space_id: bytes, after: int = 0) -> list[tuple[int, bytes]]:
        """This device's ops not in the log yet (pending) with a seq above
        ``after``, as ``(seq, envelope)`` in seq order."""
        return [(int.from_bytes(k[16:], "big"), v)
                for k, v in self.store.scan("pending", space_id, start=space_id + u64(after + 1))]

    def carried(self, space_id: bytes) -> list[bytes]:
        """Other devices' ops learnt from peers and not seen in the log yet, by
        author and seq (what a hybrid device uploads for them)."""
        return [v for _, v in self.store.scan("pop", space_id)]

    # --------------------------------------------------------------- arrivals
    def accept(self, space_id: bytes, envelopes: Sequence[bytes]) -> MeshReport:
        """Judge and apply ops from a peer; ops out of order wait for the earlier ones.

        Each op is judged as it arrives; only one that cannot be placed yet
        takes room among the waiting ops. So when that room is full (a peer sent
        ops that never apply) an op that applies at once still does, and an
        in-order batch (a catch-up answer) needs no room at all.

        Returns:
            What happened to them (and to ops that were waiting).

        Raises:
            Nothing for a bad op (it is reported in the result).
        """
        report = MeshReport()
        # One store transaction for the whole batch (a catch-up brings up to a
        # thousand ops); the heads it moves are kept in memory meanwhile (a store
        # need not show a batch its own writes), the application told after it.
        told: list[Callable[[EngineObserver], object]] = []
        self._fresh.clear()
        self._fresh_docs.clear()
        try:
            with self.store.batch() as b:
                self._arrive(space_id, envelopes, report, b, told)
                self._drain(space_id, report, b, told)
        finally:
            self._fresh.clear()
            self._fresh_docs.clear()
        for call in told:
            notify(self.observer, call)
        report.waiting = sum(1 for k in self.waiting if k[0] == space_id)
        return report

    def _arrive(self, space_id: bytes, envelopes: Sequence[bytes], report: MeshReport,
                b: StoreBatch, told: list[Callable[[EngineObserver], object]]) -> None:
        for raw in envelopes:
            try:
                env = decode_envelope(raw)
            except SddsfError as exc:
                report.refused.append((exc.code.value, exc.message))
                continue
            if env.header.space != space_id:
                report.refused.append((Code.WRONG_CONTEXT.value,
                                       "the op belongs to another space than its topic"))
                continue
            try:
                self._authentic(space_id, env)
            except SddsfError as exc:
                report.refused.append((exc.code.value, exc.message))
                if exc.code is Code.SIG_INVALID:
                    report.blamed.add(env.header.author)
                continue
            key = (space_id, env.header.author, env.header.seq)
            if key in self.waiting:
                continue  # already waiting: decided with its chain by _drain
            if not self._settle(space_id, env, report, b, told) and \
                    len(self.waiting) < _MAX_WAITING:
                self.waiting[key] = env

    def retry(self, space_id: bytes) -> MeshReport:
        """Judge the ops that wait in the space again (a sync fetched registry
        entries or key packages they needed).

        Raises:
            Nothing for a bad op (it is reported in the result).
        """
        return self.accept(space_id, ())

    def _drain(self, space_id: bytes, report: MeshReport, b: StoreBatch,
               told: list[Callable[[EngineObserver], object]]) -> None:
        # Per author, only the waiting ops from its chain head on can be decided,
        # in seq order: stop at the first that still waits (the later ones need
        # it). So a full waiting room costs one chain-head lookup per author and
        # per batch, not one per waiting op. Applying an op never unblocks
        # another author's (registry entries and keys come from elsewhere), so
        # one pass is enough.
        by_author: dict[bytes, list[int]] = {}
        for s, author, seq in self.waiting:
            if s == space_id:
                by_author.setdefault(author, []).append(seq)
        for author, seqs in by_author.items():
            for seq in sorted(seqs):
                key = (space_id, author, seq)
                if not self._settle(space_id, self.waiting[key], report, b, told):
                    break
                del self.waiting[key]

    def _settle(self, space_id: bytes, env: OpEnvelope, report: MeshReport, b: StoreBatch,
                told: list[Callable[[EngineObserver], object]]) -> bool:
        # True: decided (applied, already held, or refused: reported); False: it waits.
        try:
            return self._judge(space_id, env, report, b, told)
        except _Wait as wait:
            report.need_registry |= wait.why == "registry"
            report.need_keys |= wait.why == "keys"
            return False
        except SddsfError as exc:
            report.refused.append((exc.code.value, exc.message))
            if exc.code is Code.SIG_INVALID:
                report.blamed.add(env.header.author)
            return True

    def _judge(self, space_id: bytes, env: OpEnvelope, report: MeshReport, b: StoreBatch,
               told: list[Callable[[EngineObserver], object]]) -> bool:
        # True: decided (applied, known, refused by raising); False: wait for an earlier op.
        h = env.header
        head = self.head(space_id, h.author)
        if head is not None and h.seq <= head.seq:
            report.known += 1
            return True
        if h.seq > (head.seq if head else 0) + 1:
            return False
        account, state = self.writer(space_id, env.header.author)
        if h.reg is not None and h.reg > state.seq:
            raise _Wait("registry")
        keys = self.keyring.keys_cached(space_id)
        if h.epoch not in keys:
            raise _Wait("keys")
        window = EpochWindow(max(keys), 0, self.keyring.package_seqs(space_id, account))
        chains = MemoryChainView(heads={h.author: head} if head else {},
                                 ids={(h.author, head.seq): head.op_id} if head else {})
        verify_op(env, space=space_id, registry=state, epochs=window, chains=chains,
                  now_ms=None, settings=self.rules)
        if h.ts.wall_ms - self.ident.clock() > self.rules.max_skew_ms:
            raise ClockSkewError("the op is dated in the future", Code.CLOCK_SKEW)
        self._apply(space_id, env, keys[h.epoch], b, told)
        report.applied += 1
        return True

    def _authentic(self, space_id: bytes, env: OpEnvelope) -> None:
        # Before an op may wait in memory: its author is a device this device
        # knows for the space, and the signature is its author's (so waiting ops
        # are real ops of real devices, never a peer's filler).
        _, state = self.writer(space_id, env.header.author)
        record = state.device(env.header.author)
        if record is None:
            raise AuthorizationError(f"device {env.header.author.hex()[:12]} is not in the "
                                     "registry that judges this space", Code.UNKNOWN_DEVICE)
        env.verify_signature(record.public.signing_key)

    def writer(self, space_id: bytes, author: bytes) -> tuple[bytes, reg.RegistryState]:
        """A writer's account and its registry (AuthorizationError: no writer here)."""
        if not self.members.shared(space_id):
            return self.members.owner(space_id), self.reg.state()
        return self.members.members(space_id).writer(author)

    def _apply(self, space_id: bytes, env: OpEnvelope, epoch_key: bytes, b: StoreBatch,
               told: list[Callable[[EngineObserver], object]]) -> None:
        payload = decode_payload(open_op(env, epoch_key))
        h = env.header
        body: dict[str, Any] | None = None
        if isinstance(payload, Edit):  # a part of a multi-part edit waits for the log
            if doc_id_for(space_id, payload.name) != h.doc:
                raise DecodeError("the op's document name does not match its document id")
            body = {"n": payload.name, "u": list(payload.updates)}
        errors: list[SddsfError] = []
        if body is not None:
            doc = self.docs.doc(space_id, payload.name)
            self.docs.applying = True
            try:
                self.docs.provenance.applying(h.author, doc, payload.updates)  # type: ignore[union-attr]
                for update in payload.updates:  # type: ignore[union-attr]
                    self.docs.apply_update(doc, update, payload.name, errors)
            finally:
                self.docs.applying = False
                self.docs.provenance.applied()
        b.put("pop", space_id + h.author + u64(h.seq), env.raw)
        b.put("pchain", space_id + h.author, encode([h.seq, env.op_id, h.deps.encoded()]))
        self._fresh[(space_id, h.author)] = ChainHead(h.seq, env.op_id, h.deps)
        if body is not None:
            b.put("papplied", space_id + env.op_id, b"")
            b.put("docrem", space_id + h.doc + env.op_id, encode(body["u"]))
            if (space_id, h.doc) not in self._fresh_docs and \
                    self.store.get("doc", space_id + h.doc) is None:
                b.put("doc", space_id + h.doc, encode({"name": body["n"], "pieces": 0,
                                                        "size": 0}))
            self._fresh_docs.add((space_id, h.doc))
            self.docs.provenance.persist(b)
        old = self.store.get("lastseen", h.author)
        if old is None or as_int(old) < h.ts.wall_ms:
            b.put("lastseen", h.author, encode(h.ts.wall_ms))
        if body is not None:
            told.append(functools.partial(_tell, space_id, env, body))
        told.extend(functools.partial(_alert, error) for error in errors)

    def accept_registry(self, first: int, entries: Sequence[bytes]) -> bool:
        """Extend this account's verified registry with entries from a peer (they
        are signed: a peer can withhold them, never forge them).

        Returns:
            Whether the registry grew.

        Raises:
            RegistryError, SignatureError: an entry does not apply (nothing stored).
        """
        return self.reg.extend(first, entries)

    def accept_packages(self, space_id: bytes, packages: Sequence[bytes]) -> bool:
        """Store the space's next key packages from a peer, verified as a chain from
        the newest stored one (spaces of this account; a shared space's come from
        the relay).

        Returns:
            Whether a new epoch key became available.

        Raises:
            VerificationError: a package does not verify (nothing stored).
        """
        if self.members.shared(space_id) or not packages:
            return False
        stored = self.keyring.stored_packages(space_id)
        if not stored:
            return False
        previous = stored[-1]
        state = self.reg.state()
        new: list[kp.KeyPackage] = []
        for data in packages:
            pkg = kp.decode_key_package(data)
            if pkg.epoch <= previous.epoch:
                continue
            previous = kp.verify_key_package(data, registry=state, space=space_id,
                                             previous=previous)
            new.append(previous)
        if not new:
            return False
        with self.store.batch() as b:
            for pkg in new:
                b.put("kp", space_id + pkg.epoch.to_bytes(4, "big"), pkg.raw)
        self.keyring.forget(space_id)
        return True

    # ---------------------------------------------------------------- serving
    def _own(self, space_id: bytes, seq: int) -> OpEnvelope | None:
        raw = self.store.get("pending", space_id + u64(seq))
        return decode_envelope(raw) if raw is not None else None

    def _ops_after(self, space_id: bytes, have: Mapping[bytes, int]
                   ) -> Iterator[tuple[bytes, int, bytes]]:
        # Every op this device holds of the space with a seq beyond the asker's,
        # by author then seq: logged ones (indexed once), carried and own pending.
        # Read lazily: a response takes the first thousand or so.
        index = self._indexed(space_id)
        found: dict[tuple[bytes, int], bytes | int] = {}
        for author, seqs in index.items():
            for seq, offset in seqs.items():
                if seq > have.get(author, 0):
                    found[(author, seq)] = offset
        for key, raw in self.store.scan("pop", space_id):
            author, seq = key[16:48], int.from_bytes(key[48:], "big")
            if seq > have.get(author, 0):
                found.setdefault((author, seq), raw)
        me = self.ident.device_id
        for key, raw in self.store.scan("pending", space_id):
            seq = int.from_bytes(key[16:], "big")
            if seq > have.get(me, 0):
                found.setdefault((me, seq), raw)
        for (author, seq), where in sorted(found.items()):
            held = where if isinstance(where, bytes) else self.store.get(
                "op", space_id + u64(where)) or self.store.get("ownop", space_id + u64(where))
            if held is not None:
                yield author, seq, held

    def _indexed(self, space_id: bytes) -> dict[bytes, dict[int, int]]:
        done, index = self._index.get(space_id, (0, {}))
        for key, raw in self.store.scan("op", space_id, start=space_id + u64(done)):
            offset = int.from_bytes(key[16:], "big")
            if raw[:1] == _OP_LEAF:
                h = decode_envelope(raw).header
                index.setdefault(h.author, {})[h.seq] = offset
            done = offset + 1
        self._index[space_id] = (done, index)
        return index


def forget_logged(store: LocalStore, b: StoreBatch, space_id: bytes,
                  envs: Sequence[OpEnvelope]) -> None:
    """Forget the carried rows of ops the verified log now holds (in the
    puller's transaction)."""
    for env in envs:
        h = env.header
        b.delete("pop", space_id + h.author + u64(h.seq))
        b.delete("papplied", space_id + env.op_id)
        raw = store.get("pchain", space_id + h.author)
        if raw is not None and int(as_list(raw)[0]) <= h.seq:
            b.delete("pchain", space_id + h.author)


def _tell(space_id: bytes, env: OpEnvelope, body: dict[str, Any],
          observer: EngineObserver) -> None:
    observer.on_remote_update(space_id, str(body["n"]), env.header.author,
                              [bytes(u) for u in body["u"]])


def _alert(error: SddsfError, observer: EngineObserver) -> None:
    observer.on_alert(error.code.value, error.message)

