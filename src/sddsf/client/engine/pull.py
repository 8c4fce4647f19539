"""Pull: fetch a space's new log entries, verify all of it, then apply it at once.

Before anything is applied (docs/client.md, "Sync" step 4): every tree head is
signed by the pinned relay key; offsets are contiguous from the cursor and
every envelope hashes to its leaf; the verified leaves plus the new ones
reproduce the signed root (omission, reordering, rewriting: ``proof_invalid``;
a smaller log: ``log_rollback``); this device's acknowledged ops are still at
their offsets; every op passes the shared rules in history mode (a revoked
author's ops beyond its cutoff are skipped and reported, never applied); and
tree heads gossiped in ops agree with this device's view (``split_view``).
Then the updates are decrypted and applied, and the leaves, ops, chains, head
and document rows are stored in one transaction; on any failure nothing is.

Size: the verify-then-apply transaction is one unit (what is verified, applied
and stored must agree, including ops peers carried here), kept in one module.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pycrdt

from sddsf.client.engine.common import (
    HELD,
    MAX_BATCH,
    EngineObserver,
    EngineSettings,
    Progress,
    SkippedOp,
    SyncReport,
    as_int,
    as_list,
    chain_head,
    doc_id_for,
    leaves_at,
    notify,
    u64,
)
from sddsf.client.engine.documents import Documents
from sddsf.client.engine.identity import DeviceIdentity
from sddsf.client.engine.keyring import Keyring
from sddsf.client.engine.members import Members
from sddsf.client.engine.mesh import forget_logged
from sddsf.client.engine.outbox import NoKey, Outbox
from sddsf.client.engine.registry import RegistryView
from sddsf.client.engine.snapshots import Snapshots, UnreadableSnapshot
from sddsf.client.engine.verified import VerifiedLog
from sddsf.client.parts import PartsReader
from sddsf.client.transport.base import PulledOp, Transport
from sddsf.errors import Code, ProofError, SddsfError
from sddsf.protocol import merkle
from sddsf.protocol import registry as reg
from sddsf.protocol.encoding import encode
from sddsf.protocol.envelope import OpEnvelope, TreeHeadRef, decode_envelope, open_op
from sddsf.protocol.membership import MembershipEntry, decode_entry
from sddsf.protocol.payload import decode_payload
from sddsf.protocol.rules import ChainHead, MemoryChainView, Outcome, verify_op
from sddsf.protocol.snapshot import Snapshot
from sddsf.protocol.treehead import EMPTY_PAGE_RETRIES, TreeHead, verify_tree_head

__all__ = ["Puller", "beyond_cutoff"]


class Puller:
    """Pulls, verifies and applies one device's spaces (see the module docstring)."""

    def __init__(self, ident: DeviceIdentity, registry: RegistryView, keyring: Keyring,
                 docs: Documents, log: VerifiedLog, outbox: Outbox, snaps: Snapshots,
                 transport: Transport, settings: EngineSettings, members: Members,
                 observer: EngineObserver | None = None) -> None:
        self.ident = ident
        self.members = members
        self.store = ident.store
        self.reg = registry
        self.keyring = keyring
        self.docs = docs
        self.log = log
        self.outbox = outbox
        self.snaps = snaps
        self.transport = transport
        self.settings = settings
        self.observer = observer
        #: Told after each page of a pull (set for one sync at a time).
        self.progress: Progress | None = None

    async def pull(self, space_id: bytes, report: SyncReport, *,
                    dry: bool = False) -> dict[bytes, ChainHead] | None:
        """Pull, verify and apply the space's new entries. ``dry``: verify only,
        store and apply nothing, and return every author's chain head."""
        verified = self.log.tree(space_id)
        snap: Snapshot | None = None
        basis: dict[str, Any] = {}
        if not verified.size and self.settings.use_snapshots:
            # A new device: start from a snapshot it may trust (18.7) and pull
            # only the tail, which must extend its frontier to the signed root.
            start = await self.snaps.fetch(space_id, report, docs=not dry)
            if start is not None:
                snap, basis = start
                verified = merkle.MerkleTree.from_frontier(
                    merkle.Frontier.from_hashes(snap.size, snap.frontier))
        have = verified.size
        old_head_raw = self.store.get("head", space_id)
        old = (verify_tree_head(old_head_raw, self.ident.relay_key_or_raise(), log=space_id)
               if old_head_raw else None)
        fetched, head = await self.fetch_pages(space_id, have)
        if head is None:
            return None
        if head.size < have or (old is not None and head.size < old.size):
            raise ProofError(f"the relay's log went back from {max(have, old.size if old else 0)}"
                             f" to {head.size} entries: it is rolling back history",
                             Code.LOG_ROLLBACK)
        # Extend a copy: the cached tree only ever holds leaves that were stored.
        tree = verified.copy() if fetched else verified
        for _, leaf, _ in fetched:
            tree.append(leaf)
        if tree.size < head.size or tree.root(head.size) != head.root:
            raise ProofError("the ops the relay served do not reproduce its signed tree head: "
                             "history was omitted, reordered or rewritten")
        for key, acked in self.store.scan("acked", space_id):
            offset = int.from_bytes(key[16:], "big")
            if offset < tree.base:
                continue  # inside a snapshot's frontier: covered by the root check
            if offset >= head.size:
                raise ProofError(f"the relay's log ({head.size} entries) no longer holds this "
                                 f"device's acknowledged op at offset {offset}: it is rolling "
                                 "back history", Code.LOG_ROLLBACK)
            if leaves_at(tree, offset) != acked:
                raise ProofError(f"the relay dropped or replaced this device's acknowledged op "
                                 f"at offset {offset}")
        try:
            return await self.apply_verified(space_id, fetched, tree, head, report, snap,
                                              basis=basis, dry=dry)
        except UnreadableSnapshot as exc:
            # Nothing was stored: forget the documents it touched, never use it again.
            where = space_id.hex()[:12]
            self.snaps.alert(report, f"the snapshot of space {where} written by device "
                        f"{self.reg.label(exc.snap.author)} is unreadable ({exc.why}); not used")
            self.reset_space(space_id, exc.snap.id)
            return await self.pull(space_id, report, dry=dry)

    async def fetch_pages(self, space_id: bytes, have: int
                          ) -> tuple[list[tuple[int, bytes, bytes | None]], TreeHead | None]:
        """The log's entries from offset ``have`` on, each checked against its
        leaf hash, and the last signed head served (None: no page came)."""
        fetched: list[tuple[int, bytes, bytes | None]] = []
        head: TreeHead | None = None
        cursor = have
        empty = 0  # empty pages in a row under a head beyond the cursor
        for _ in range(10_000):  # bounded: at most 10k pages per sync
            page, head_raw = await self.page(space_id, cursor)
            head = verify_tree_head(head_raw, self.ident.relay_key_or_raise(), log=space_id)
            if self.progress is not None:
                self.progress(space_id, cursor + len(page), head.size)
            for op in page:
                if op.offset != cursor:
                    raise ProofError(f"the relay skipped or repeated log offsets (expected "
                                     f"{cursor}, got {op.offset}): it is omitting history")
                if op.envelope is None:
                    # Pruned ops are served only under a snapshot that covers them;
                    # this device starts from a snapshot only when it is new.
                    raise ProofError(f"the relay withheld the op at offset {op.offset} "
                                     "(no snapshot this device trusts covers it)")
                if merkle.leaf_hash(op.envelope) != op.leaf_hash:
                    raise ProofError(f"op at offset {op.offset} does not match its leaf hash")
                fetched.append((op.offset, op.leaf_hash, op.envelope))
                cursor += 1
            if cursor >= head.size:
                break
            if not page:
                # A log holder reads the page, then its head: an append between
                # the two serves no entry under a longer head. Ask again; a holder
                # that keeps doing so hides entries: pull() refuses it (the root check).
                empty += 1
                if empty > EMPTY_PAGE_RETRIES:
                    break
                continue
            empty = 0
        return fetched, head

    async def page(self, space_id: bytes, cursor: int) -> tuple[list[PulledOp], bytes]:
        """The page of the log from ``cursor``, this device's own acknowledged ops
        filled in from the copies it kept (``ownop``) instead of downloaded.

        An entry the log holder says is this device's own but that it holds no
        copy of (a home restored from an older copy, or a lie) makes it ask for
        the page again in full. A copy is only a candidate: the caller checks its
        leaf hash against the served one and the tree head, as for any entry.
        """
        served = await self.transport.pull(space_id, after=cursor - 1, limit=MAX_BATCH,
                                           omit_own=True)
        ops: list[PulledOp] = []
        for op in served.ops:
            if not op.own:
                ops.append(op)
                continue
            mine = self.store.get("ownop", space_id + u64(op.offset))
            if mine is None:
                full = await self.transport.pull(space_id, after=cursor - 1, limit=MAX_BATCH)
                return list(full.ops), full.tree_head
            ops.append(dataclasses.replace(op, envelope=mine, own=False))
        return ops, served.tree_head

    async def apply_verified(  # noqa: PLR0915 - one verified transaction, kept in one place
            self, space_id: bytes, fetched: list[tuple[int, bytes, bytes | None]],
            tree: merkle.MerkleTree, head: TreeHead, report: SyncReport,
            snap: Snapshot | None, *, basis: dict[str, Any] | None = None,
            dry: bool = False) -> dict[bytes, ChainHead] | None:
        keys = self.keyring.keys_cached(space_id)
        chains = MemoryChainView(heads=dict(snap.chains) if snap is not None else {
            k[16:]: chain_head(v) for k, v in self.store.scan("chain", space_id)})
        older: list[tuple[bytes, TreeHeadRef]] = []  # gossip about sizes before tree.base
        # This device's own ops, sealed by this process, are not decoded again.
        envs = [leaf_of(raw, self.outbox) for _, _, raw in fetched]
        judge = await self.members.judge(space_id, fetched, envs, max(keys) if keys else 0,
                                         self.keyring.package_seqs)
        parts = PartsReader(self.store, space_id)  # (a snapshot is never taken mid-edit)
        applied: list[tuple[OpEnvelope, dict[str, object] | None]] = []
        for (offset, _, raw), item in zip(fetched, envs, strict=True):
            if raw is None or item is None:
                continue  # pruned: covered by a snapshot (client snapshots: next milestone)
            if isinstance(item, MembershipEntry):
                judge.entry(offset, item, report)
                continue
            state = judge.owner_state  # (until the author's is known)
            try:
                state, window = judge.context(item)
                verdict = verify_op(item, space=space_id, registry=state, epochs=window,
                                    chains=chains, now_ms=None)
            except ProofError:
                raise  # the relay withholds a member's registry: said as such
            except SddsfError as exc:
                skipped = beyond_cutoff(raw, offset, exc, state)
                if skipped is None:
                    raise ProofError(f"the relay served an op (offset {offset}) that fails "
                                     f"the rules: [{exc.code.value}] {exc.message}") from exc
                report.skipped.append(skipped)
                continue
            if verdict.outcome is not Outcome.ACCEPT:
                raise ProofError(f"the relay served a duplicate op at offset {offset}")
            env = verdict.envelope
            chains.record(env)
            self.check_gossip(env, offset, tree, older)
            if env.header.epoch not in keys:
                raise ProofError(f"op at offset {offset} uses an epoch this device has no key for")
            applied.append((env, edit_body(parts, space_id, env, offset,
                                            open_op(env, keys[env.header.epoch]))))
        if dry:
            return dict(chains.heads)
        report.pulled += len(fetched)
        for author, seen in older:
            await self.check_older_gossip(space_id, tree, author, seen)
        # Everything verified: apply and persist in one local transaction.
        remote: list[tuple[OpEnvelope, dict[str, object]]] = []
        made_here: set[bytes] = set()  # own ops whose "sent" row names them
        # Ops a peer carried here were applied when they arrived (section 23).
        from_peers = self.store.count("papplied", space_id) > 0
        self.docs.applying = True
        try:
            if snap is not None:
                self.docs.provenance.applying(None)  # records of a snapshot: carrier unknown
                for name, doc_state in snap.docs.items():
                    try:
                        self.docs.apply_update(self.docs.doc(space_id, name), doc_state, name,
                                           report.app_errors)
                    except ValueError as exc:  # not a Yjs update: its author wrote it so
                        raise UnreadableSnapshot(snap, str(exc)) from None
                report.snapshots_loaded += 1
            for env, body in applied:
                if body is None:
                    continue  # a part of an edit whose last part is not logged yet
                if env.header.author == self.ident.device_id and self.store.get(
                        "sent", space_id + u64(env.header.seq)) == env.op_id:
                    made_here.add(env.op_id)
                    continue  # made here: already applied locally
                if from_peers and self.store.get("papplied", space_id + env.op_id) is not None:
                    continue  # applied when a peer carried it here
                name = str(body.get("n", ""))
                doc = self.docs.doc(space_id, name)
                self.docs.provenance.applying(env.header.author, doc, body.get("u", []))  # type: ignore[arg-type]
                for update in body.get("u", []):  # type: ignore[attr-defined]
                    self.docs.apply_update(doc, update, name, report.app_errors)
                remote.append((env, body))
                report.applied += 1
        finally:
            self.docs.applying = False
            self.docs.provenance.applied()
        own = [env for env, _ in applied if env.header.author == self.ident.device_id]
        with self.store.batch() as b:
            if own:
                # The log holds ops of this device that this copy did not make (it
                # was restored from an older copy): adopt the log's chain head.
                last = max(own, key=lambda e: e.header.seq)
                mine = self.store.get("mine", space_id)
                if mine is None or int(as_list(mine)[0]) <= last.header.seq:
                    self.outbox.forget_head(space_id)
                    b.put("mine", space_id, encode([last.header.seq, last.op_id]))
                for env in own:
                    if env.op_id not in made_here:  # (its row holds this already)
                        b.put("sent", space_id + u64(env.header.seq), env.op_id)
            parts.commit(b)
            if from_peers or self.store.count("pop", space_id):
                forget_logged(self.store, b, space_id, [env for env, _ in applied])
            if snap is not None:
                b.put("base", space_id, encode([snap.size, list(snap.frontier)]))
                b.put("snapmark", space_id, encode(snap.size))
                # Until a trusted device other than its author corroborates it,
                # this state rests on the author's word (18.7).
                b.put("snapbase", space_id, encode({"id": snap.id, "author": snap.author,
                                                    "size": snap.size, **(basis or {})}))
                for name, doc_state in snap.docs.items():
                    self.docs.write_state(b, space_id, doc_id_for(space_id, name), name, doc_state)
            for offset, leaf, raw in fetched:
                b.put("leaf", space_id + u64(offset), leaf)
                if raw is not None:
                    b.put("op", space_id + u64(offset), raw)
            for key in self.store.keys("ownop", space_id):  # (values not needed)
                if int.from_bytes(key[16:], "big") < head.size:
                    b.delete("ownop", key)  # in the log replica now (or pruned)
            for k in report.skipped:  # not applied: a replay of the log skips them too
                b.put("skipped", space_id + u64(k.offset), encode(k.code))
            self.log.deps_cache.pop(space_id, None)  # (and again once committed)
            for author, ch in chains.heads.items():
                b.put("chain", space_id + author, encode([ch.seq, ch.op_id, ch.deps.encoded()]))
            seen_ms: dict[bytes, int] = {}
            for env, _ in applied:
                a = env.header.author
                seen_ms[a] = max(seen_ms.get(a, 0), env.header.ts.wall_ms)
            for author, ms in seen_ms.items():
                old_ms = self.store.get("lastseen", author)
                if old_ms is None or as_int(old_ms) < ms:
                    b.put("lastseen", author, encode(ms))
            b.put("head", space_id, head.raw)
            for offset, raw_entry in judge.new:
                b.put("mlog", space_id + u64(offset), raw_entry)
            self.docs.provenance.persist(b)
            self.log.seen_cache[space_id] = TreeHeadRef(head.size, head.root) if head.size else None
            # Pulled updates are appended (O(op), not O(document)) and folded
            # into the stored pieces by _compact_docs.
            for env, body in remote:
                b.put("docrem", space_id + env.header.doc + env.op_id, encode(body["u"]))
            # Every logged document is known by name (own ones too), so that a
            # snapshot, which holds exactly the logged state, finds them all.
            named: set[bytes] = set()
            for env, body in applied:
                if body is None:
                    continue  # a part of an edit that is not complete yet
                doc_key = space_id + env.header.doc
                if env.header.doc not in named and self.store.get("doc", doc_key) is None:
                    b.put("doc", doc_key, encode({"name": str(body["n"]), "pieces": 0,
                                                  "size": 0}))
                named.add(env.header.doc)
            meta = self.docs.open.get((space_id, doc_id_for(space_id, "_meta")))
            if meta is not None:
                space_name = meta.get("meta", type=pycrdt.Map).get("name")
                if isinstance(space_name, str) and space_name:
                    b.put("space", space_id, encode(space_name))
        self.log.trees[space_id] = tree  # only after the leaves were committed
        self.members.remember(space_id, judge.fold)
        self.log.deps_cache.pop(space_id, None)
        for env, body in remote:
            notify(self.observer, functools.partial(_tell_remote, space_id, env, body))
        for entry in judge.applied:
            notify(self.observer, functools.partial(_tell_membership, space_id, entry))
        report.tree_size[space_id] = head.size
        if snap is not None:  # its verdicts were just read: the next look can wait
            self.snaps.checked_at[space_id] = head.size
        return None

    def check_gossip(self, env: OpEnvelope, offset: int, tree: merkle.MerkleTree,
                     older: list[tuple[bytes, TreeHeadRef]]) -> None:
        """Refuse an op whose ``seen`` head is not a prefix of this device's log."""
        # Fork consistency (THREATS #12): a tree head another device verified
        # must be a prefix of the log this device verified. An op is written
        # after its author verified `seen`, so an honest relay places it at an
        # offset >= seen.size: an op placed earlier means the relay showed its
        # author a log this device was not shown (ops hidden from this device).
        seen = env.header.seen
        if seen is None or env.header.author == self.ident.device_id:
            return
        if seen.size > offset:
            raise ProofError(f"device {env.header.author.hex()[:12]} had verified {seen.size} "
                             f"entries of this space before writing the op this relay put at "
                             f"offset {offset}: the relay is hiding entries from this device "
                             "(split view)", Code.SPLIT_VIEW)
        if seen.size < tree.base:
            older.append((env.header.author, seen))  # checked with a proof from the relay
            return
        if seen.size <= tree.size and tree.root(seen.size) != seen.root:
            raise ProofError(f"device {env.header.author.hex()[:12]} saw a different history "
                             f"of this space at size {seen.size}: the relay is showing devices "
                             "different logs (split view)", Code.SPLIT_VIEW)

    async def check_older_gossip(self, space_id: bytes, tree: merkle.MerkleTree,
                                 author: bytes, seen: TreeHeadRef) -> None:
        """Check a head gossiped about history before this device's snapshot."""
        # This device knows the history before its snapshot only as a frontier,
        # so a tree head gossiped about that history is checked with a
        # consistency proof from seen.size to the snapshot's size.
        if (seen.size, seen.root) in self.log.gossip_ok:
            return
        served = await self.transport.consistency_proof(space_id, seen.size, tree.base)
        proof, head_raw = list(served.hashes), served.tree_head
        head = verify_tree_head(head_raw, self.ident.relay_key_or_raise(), log=space_id)
        try:
            if head.size != tree.base or head.root != tree.root(tree.base):
                raise ProofError("the relay's head at the snapshot's size is not the snapshot's")
            merkle.verify_consistency(seen.size, tree.base, seen.root, head.root, proof)
        except ProofError as exc:
            raise ProofError(f"device {author.hex()[:12]} saw a history of this space at size "
                             f"{seen.size} that is not a prefix of this device's: the relay is "
                             f"showing devices different logs (split view; {exc.message})",
                             Code.SPLIT_VIEW) from exc
        self.log.gossip_ok.add((seen.size, seen.root))

    def reset_space(self, space_id: bytes, exclude: bytes | None) -> None:
        """Forget what was derived from the space's log, as for a new device."""
        # Forget everything derived from the space's log (leaves, ops, chains,
        # documents, the snapshot start), as for a new device; keep what this
        # device made and has not sent (pending ops, their updates re-stored),
        # the newest verified tree head (rollback check) and its acknowledgements,
        # and the ops learnt from peers (judged again once the state is rebuilt).
        pending = {int.from_bytes(k[16:], "big"): v for k, v in self.store.scan("pending",
                                                                                 space_id)}
        banned = as_list(self.store.get("snapdistrust", space_id) or encode([]))
        with self.store.batch() as b:
            for ns in ("leaf", "op", "chain", "doc", "docpiece", "docrem", "skipped", "asm",
                       "asmpart"):
                b.delete_prefix(ns, space_id)
            self.log.deps_cache.pop(space_id, None)
            for ns in ("base", "snapbase", "snapmark", "snapcheck"):
                b.delete(ns, space_id)
            for key in self.store.keys("docupd", space_id):
                # Kept: the updates of pending ops and of edits held for a rotation.
                if not key[32:].startswith(HELD) and \
                        int.from_bytes(key[32:], "big") not in pending:
                    b.delete("docupd", key)
            for key in self.store.keys("sent", space_id):  # own logged ops: re-applied
                if int.from_bytes(key[16:], "big") not in pending:
                    b.delete("sent", key)
            for seq, env in pending.items():
                try:
                    body = self.outbox.op_body(space_id, env)
                except NoKey:
                    continue
                if body is not None:
                    b.put("docupd", space_id + doc_id_for(space_id, body[0]) + u64(seq),
                          encode(body[1]))
            if exclude:
                b.put("snapdistrust", space_id, encode([*banned, exclude][-16:]))
            # Ops learnt from peers were applied to the state dropped here: they are
            # judged again on the rebuilt one (PeerRebuild.rejudge_all, after the pull).
            b.delete_prefix("pchain", space_id)
            b.delete_prefix("papplied", space_id)
            if self.store.count("pop", space_id):
                b.put("prejudge", space_id, b"")
        self.log.trees.pop(space_id, None)
        self.log.deps_cache.pop(space_id, None)
        self.docs.detach_space(space_id)


def beyond_cutoff(raw: bytes, offset: int, exc: SddsfError,
                   state: reg.RegistryState) -> SkippedOp | None:
    """A refusal that must not make the whole log unreadable: an op of a revoked
    device beyond its cutoff (the relay stored it after the revocation, by a bug
    or on purpose). Every device skips exactly these ops, so all converge."""
    if exc.code is not Code.REVOKED:
        return None
    h = decode_envelope(raw).header
    rec = state.device(h.author)
    if rec is None or rec.revoked_seq is None or h.seq <= rec.cutoff.get(h.space, 0):
        return None
    return SkippedOp(offset, h.author, h.seq, Code.REVOKED.value,
                     f"op {h.seq} of revoked device {rec.name!r} is beyond its revocation "
                     f"cutoff ({rec.cutoff.get(h.space, 0)}); not applied")


def edit_body(parts: PartsReader, space_id: bytes, env: OpEnvelope, offset: int,
               plaintext: bytes) -> dict[str, object] | None:
    # The edit an op completes ({"n", "u"}), or None for a part that does not
    # complete one yet (section 8.11).
    try:
        payload = decode_payload(plaintext)
        edit = parts.feed(env.header.author, env.header.seq, env.header.doc, payload)
    except SddsfError as exc:
        raise ProofError(f"op at offset {offset} has a malformed payload: {exc.message}"
                         ) from exc
    if edit is None:
        return None
    if doc_id_for(space_id, edit.name) != env.header.doc:
        raise ProofError(f"op at offset {offset} has a malformed payload: its document name "
                         "does not match its document id")
    return {"n": edit.name, "u": list(edit.updates)}


def leaf_of(raw: bytes | None, outbox: Outbox) -> OpEnvelope | MembershipEntry | bytes | None:
    """A pulled leaf decoded by its kind (21.7): this device's own sealed ops are
    not decoded again; a membership entry that does not decode refuses the pull."""
    if raw is not None and raw[:1] == b"\x83":
        try:
            return decode_entry(raw)
        except SddsfError as exc:
            raise ProofError(f"the relay served a membership entry that does not decode: "
                             f"[{exc.code.value}] {exc.message}") from exc
    return (raw is not None and outbox.sealed_envelope(raw)) or decoded_or_raw(raw)


def decoded_or_raw(raw: bytes | None) -> OpEnvelope | bytes | None:
    # Decoded once for the registry check; a decoding failure is reported by the
    # rules, in order, when they get the raw bytes.
    if raw is None:
        return None
    try:
        return decode_envelope(raw)
    except SddsfError:
        return raw


def _tell_membership(space_id: bytes, e: MembershipEntry, observer: EngineObserver) -> None:
    # An observer written before shared spaces may lack the method.
    told = getattr(observer, "on_membership", None)
    if told is not None:
        told(space_id, e.type.value, e.member, e.role.value if e.role else None, e.signer)


def _tell_remote(space_id: bytes, env: OpEnvelope, body: dict[str, object],
                 observer: EngineObserver) -> None:
    updates = body.get("u", [])
    observer.on_remote_update(space_id, str(body.get("n", "")), env.header.author,
                              [bytes(u) for u in updates] if isinstance(updates, list) else [])
