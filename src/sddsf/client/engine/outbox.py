"""The outbox: local edits become signed, encrypted ops, queued before sending.

:meth:`Outbox.flush` seals each document's buffered updates into one edit (a
multi-part op when it does not fit one op of the relay it will reach) and
stores the ops, the new chain head and the document's updates in one
transaction **before** anything is sent (THREATS #6). While the space's newest
epoch predates a revocation, edits are *held* instead (namespace ``held``) and
sealed once a new epoch is stored. A refused op's edit is re-queued
(:meth:`Outbox.requeue`) and sealed again on the log's chain head.
"""

from __future__ import annotations

from typing import Any

from sddsf.client import yupdates
from sddsf.client.engine.common import (
    HELD,
    LOCAL_ROWS,
    EngineSettings,
    as_dict,
    as_list,
    chain_head,
    doc_id_for,
    u64,
)
from sddsf.client.engine.documents import Documents
from sddsf.client.engine.identity import DeviceIdentity
from sddsf.client.engine.keyring import Keyring
from sddsf.client.engine.registry import RegistryView
from sddsf.client.engine.sealthread import SealThread
from sddsf.client.engine.verified import VerifiedLog
from sddsf.client.parts import PartsReader, open_assemblies
from sddsf.client.store import LocalStore, StoreBatch
from sddsf.client.transport.base import RelayLimits, Transport
from sddsf.crypto import random_bytes
from sddsf.errors import SddsfError, UsageError
from sddsf.protocol.encoding import encode
from sddsf.protocol.envelope import (
    GENESIS_PREV,
    OpEnvelope,
    OpHeader,
    decode_envelope,
    open_op,
    seal_op,
)
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS
from sddsf.protocol.payload import Edit, Part, decode_payload, encode_edit, split_edit

__all__ = ["EditRefused", "NoKey", "Outbox", "header_bound", "parted_edits"]


#: Bytes an op envelope adds around its header and payload (CBOR heads, AEAD tag,
#: signature), rounded up.
_ENVELOPE_OVERHEAD = 128
#: Bytes an op header takes besides its ``deps``, at most (its fixed-size ids,
#: nonce and keys plus every integer at its largest: about 360), rounded up.
_HEADER_BOUND = 512
#: Decoded envelopes of recently sealed ops kept for the sync that pulls them.
_SEALED_KEPT = 4096


def header_bound(header: OpHeader) -> int:
    """An upper bound of the encoded size of ``header`` (no trial encoding)."""
    return _HEADER_BOUND + len(header.deps.encoded())


class Outbox:
    """This device's queue of ops to push (see the module docstring)."""

    def __init__(self, ident: DeviceIdentity, registry: RegistryView, keyring: Keyring,
                 docs: Documents, log: VerifiedLog, transport: Transport,
                 settings: EngineSettings) -> None:
        self.ident = ident
        self.store = ident.store
        self.reg = registry
        self.keyring = keyring
        self.docs = docs
        self.log = log
        self.transport = transport
        self.settings = settings
        self._limits: RelayLimits | None = None
        #: Per space, this device's chain head ``(seq, op_id)`` as the ``mine``
        #: row holds it, kept by :meth:`seal` once its transaction committed;
        #: every other writer of that row drops it (:meth:`forget_head`).
        self._heads: dict[bytes, tuple[int, bytes]] = {}
        #: The ops this process sealed lately, decoded (raw envelope -> envelope):
        #: a sync that pulls them back takes them from here instead of decoding
        #: the same bytes again (:meth:`sealed_envelope`). At most _SEALED_KEPT.
        self._sealed: dict[bytes, OpEnvelope] = {}
        self._sealer = SealThread()

    def close(self) -> None:
        """Stop the seal thread (a later flush starts it again)."""
        self._sealer.close()

    def forget_limits(self) -> None:
        """Re-read the remembered relay limits and chain heads at next use."""
        self._limits = None
        self._heads.clear()

    def sealed_envelope(self, raw: bytes) -> OpEnvelope | None:
        """``raw`` decoded, if this process sealed it lately (then forgotten)."""
        return self._sealed.pop(raw, None)

    def forget_head(self, space_id: bytes) -> None:
        """Re-read the space's chain head (``mine``) at next use."""
        self._heads.pop(space_id, None)

    def head(self, space_id: bytes) -> tuple[int, bytes]:
        """This device's next ``(seq, prev)`` in the space."""
        known = self._heads.get(space_id)
        if known is not None:
            return known[0] + 1, known[1]
        mine = self.store.get("mine", space_id)
        if mine is None:
            return 1, GENESIS_PREV
        last = as_list(mine)
        return int(last[0]) + 1, bytes(last[1])

    def flush(self) -> int:
        """Seal every buffered edit into pending ops (see Device.flush); unlocked."""
        made = 0
        refused: list[str] = []
        for key, updates in list(self.docs.buffers.items()):
            if not updates:
                continue
            edits = list(updates)
            updates.clear()
            try:
                self.seal_apart(key, edits)
            except EditRefused as exc:
                refused.append(exc.message)
                self.docs.forget_doc(key)
            except BaseException:
                updates[:0] = edits  # not sealed: keep them for the next flush
                raise
            made += 1
        if refused:
            raise UsageError(" ".join(refused))
        return made

    def seal_apart(self, key: tuple[bytes, bytes], updates: list[bytes]) -> None:
        """:meth:`seal_edits` on the seal thread (:class:`SealThread` says why);
        on this thread while it holds a store batch open (the seal thread would
        wait for it forever) or when the store does not say."""
        if self.store.batch_open_here() is False:
            self._sealer.run(lambda: self.seal_edits(key, updates))
        else:
            self.seal_edits(key, updates)

    def seal_edits(self, key: tuple[bytes, bytes], updates: list[bytes]) -> None:
        """Seal one document's buffered updates (merged when that fits)."""
        # One merged Yjs update per op (it shrinks the op and applies ~8x faster
        # than the parts; yupdates.merge keeps a long window's merge linear in
        # its edits, pycrdt's own call is quadratic). When the
        # merge is too large, the updates are sealed one by one up to the first
        # one that is too large itself: it and the later ones (which may build on
        # it) are refused together.
        space_id, doc_id = key
        name = self.docs.names[doc_id]
        merged = yupdates.merge(updates)
        try:
            self.seal(space_id, doc_id, name, [merged])
            return
        except EditRefused:
            if len(updates) == 1:
                raise
        for i, update in enumerate(updates):
            try:
                self.seal(space_id, doc_id, name, [update])
            except EditRefused as exc:
                later = len(updates) - i - 1
                raise EditRefused(exc.message + (f" ({later} later edit(s) of the document "
                                                  "were refused with it)" if later else "")
                                   ) from None

    def seal(self, space_id: bytes, doc_id: bytes, name: str, updates: list[bytes], *,
              release: tuple[bytes, ...] = ()) -> None:
        """Seal one edit as the next op(s) of this device's chain, queued with its
        updates in one transaction (or held, while the epoch is compromised)."""
        keys = self.keyring.keys_cached(space_id)
        if not keys:
            raise UsageError("this device has no key for the space yet; sync first")
        epoch = max(keys)
        state = self.reg.state()
        if self.keyring.compromised(space_id, epoch, state) \
                or not self.keyring.members.may_write(space_id):
            # A device revoked since this epoch was made holds its key: nothing is
            # sealed under it. The edit is kept (persisted) until sync opens a new
            # epoch (_rotate_if_due), or says why it cannot (rotation_blocked).
            # Likewise while this account is a reader of a shared space: kept
            # until it may write (the relay would refuse it).
            if not release:
                self.hold(space_id, doc_id, name, updates)
            return
        seq, prev = self.head(space_id)
        deps = self.log.deps(space_id)
        seen = self.log.seen(space_id)
        payloads = self.payloads(name, updates, OpHeader(
            space=space_id, doc=doc_id, author=self.ident.device_id, seq=seq, prev=prev, deps=deps,
            epoch=epoch, ts=self.ident.hlc.last, seen=seen, nonce=bytes(24), reg=state.seq))
        envs: list[OpEnvelope] = []
        for payload in payloads:  # parts of one edit: consecutive ops of the chain
            ts = self.ident.hlc.tick(self.ident.clock())
            header = OpHeader(space=space_id, doc=doc_id, author=self.ident.device_id, seq=seq,
                              prev=prev, deps=deps, epoch=epoch, ts=ts, seen=seen,
                              nonce=random_bytes(24), reg=state.seq)
            env = seal_op(self.ident.keys, header, payload, keys[epoch])
            envs.append(env)
            seq, prev = seq + 1, env.op_id
        # Persist the ops, the chain head and the doc's new updates in one
        # transaction BEFORE sending (THREATS #6): a crash can only re-send these
        # same ops, and an edit's parts are queued all together or not at all.
        # The updates are appended (O(edit), not O(document)); they are folded
        # into the stored state when the device closes or syncs.
        first, last_env = envs[0], envs[-1]
        with self.store.batch() as b:
            for env in envs:
                b.put("pending", space_id + u64(env.header.seq), env.raw)
                b.put("sent", space_id + u64(env.header.seq), env.op_id)
            b.put("mine", space_id, encode([last_env.header.seq, last_env.op_id]))
            b.put("docupd", space_id + doc_id + u64(first.header.seq), encode(updates))
            self.docs.provenance.persist(b, space_id + doc_id)
            b.put("id", b"hlc", encode(last_env.header.ts.to_wire()))
            if len(envs) > 1:
                keep_parted_edit(b, space_id, payloads[0], last_env.header.seq, name, updates)
            for key in release:
                b.delete("held", key)
        self._heads[space_id] = (last_env.header.seq, last_env.op_id)
        for env in envs:
            if len(self._sealed) >= _SEALED_KEPT:
                del self._sealed[next(iter(self._sealed))]  # the oldest
            self._sealed[env.raw] = env

    def payloads(self, name: str, updates: list[bytes], probe: OpHeader) -> list[bytes]:
        """The plaintexts of the ops that carry one edit."""
        # The plaintexts of the ops that carry one edit, each small enough that
        # its envelope fits one op and one request of the relay (its advertised
        # limits, remembered from the last sync; the defaults before).
        largest = min(self.limits_cached().max_envelope, DEFAULT_PROTOCOL_LIMITS.max_op)
        # The common case, an edit far below the limit, needs no trial encoding
        # of the header: its size is bounded by the deps it names plus
        # _HEADER_BOUND (a test holds the bound against the largest header).
        whole = encode_edit(name, updates)
        if len(whole) <= largest - header_bound(probe) - _ENVELOPE_OVERHEAD:
            return [whole]
        room = largest - len(encode(probe.to_wire())) - _ENVELOPE_OVERHEAD
        try:
            return split_edit(name, updates, max_payload=room, max_edit=self.settings.max_edit)
        except UsageError as exc:
            raise EditRefused(f"{exc.message}: it was not synced and was undone on this "
                               "device (get the document again with Device.doc(); the object "
                               "you hold keeps it but no longer syncs); make smaller edits"
                               ) from None

    def limits_cached(self) -> RelayLimits:
        """The relay's limits remembered from the last sync (defaults before)."""
        if self._limits is None:
            raw = self.store.get("id", b"limits")
            known = RelayLimits.__dataclass_fields__
            self._limits = RelayLimits(**{k: int(v) for k, v in as_dict(raw).items()
                                          if k in known}) if raw is not None else RelayLimits()
        return self._limits

    async def refresh_limits(self) -> RelayLimits:
        """Ask the relay for its limits and remember them."""
        # Asked once per connection; remembered so that offline flushes size ops
        # for the relay they will be sent to.
        limits = await self.transport.limits()
        if limits != self.limits_cached():
            self.store.put("id", b"limits", encode({
                "max_request_bytes": limits.max_request_bytes,
                "max_batch_ops": limits.max_batch_ops, "max_page_ops": limits.max_page_ops,
                "max_op": limits.max_op, "max_field_chars": limits.max_field_chars}))
            self._limits = limits
        return limits

    def hold(self, space_id: bytes, doc_id: bytes, name: str, updates: list[bytes]) -> None:
        """Keep an edit until the space's key is rotated (persisted)."""
        tag = HELD + random_bytes(7)
        with self.store.batch() as b:
            b.put("held", space_id + doc_id + tag, encode({"n": name, "u": updates}))
            # Like a sealed op's updates: the document shows the edit after a restart.
            b.put("docupd", space_id + doc_id + tag, encode(updates))

    def held_count(self) -> int:
        """Edits kept back because their space's key must be rotated first."""
        return self.store.count("held")

    def release_held(self, space_id: bytes) -> None:
        """Seal held edits under the (now safe) newest epoch."""
        # Seal the held edits of each document as one op (the epoch is safe now).
        docs: dict[bytes, tuple[str, list[bytes], list[bytes]]] = {}
        for key, raw in self.store.scan("held", space_id):
            row = as_dict(raw)
            name, updates, keys = docs.setdefault(key[16:32], (str(row["n"]), [], []))
            updates.extend(bytes(u) for u in row["u"])
            keys.append(key)
        for doc_id, (name, updates, keys) in docs.items():
            merged = yupdates.merge(updates)
            self.seal(space_id, doc_id, name, [merged], release=tuple(keys))

    def hold_compromised_pending(self, space_id: bytes) -> None:
        """Take back pending ops sealed under a compromised epoch, as held edits."""
        # Pending ops sealed under an epoch that a device revoked since can read
        # are never pushed: in one transaction they become held edits again and
        # the chain head goes back to what the log holds (every pending op is
        # re-sealed, since they form one chain after it).
        state = self.reg.state()
        seqs = self.keyring.package_seqs(space_id)
        if max(self.keyring.keys_cached(space_id), default=-1) < len(seqs) and not any(
                self.keyring.compromised(space_id, epoch, state) for epoch in range(len(seqs))):
            # No epoch this device may have sealed under is compromised (the
            # usual case): the pending ops need not be decoded to tell.
            return
        rows = self.store.scan("pending", space_id)
        envs = [decode_envelope(raw) for _, raw in rows]
        if not any(self.keyring.compromised(space_id, e.header.epoch, state) for e in envs):
            return
        self.hold_pending(space_id)

    def hold_pending(self, space_id: bytes) -> None:
        """Take back every pending op of the space as held edits, and move the chain
        head back to what the log holds (they form one chain after it)."""
        rows = self.store.scan("pending", space_id)
        if not rows:
            return
        envs = [decode_envelope(raw) for _, raw in rows]
        keys = self.keyring.keys_cached(space_id)
        parted: set[bytes] = set()  # the parts of one edit are held once, as the edit
        with self.store.batch() as b:
            for (key, _), env in zip(rows, envs, strict=True):
                edit = self.pending_edit(space_id, env, keys, b, parted)
                if edit is not None:
                    b.put("held", space_id + env.header.doc + HELD + random_bytes(7),
                          encode({"n": edit.name, "u": list(edit.updates)}))
                b.delete("pending", key)
            self.reset_head(b, space_id, None)

    def pending_edit(self, space_id: bytes, env: OpEnvelope, keys: dict[int, bytes],
                      b: StoreBatch, parted: set[bytes]) -> Edit | None:
        """The edit a pending op of this device carries (a multi-part one once)."""
        # The edit a pending op of this device carries: itself, or for a part of
        # a multi-part edit the whole edit kept when it was sealed (once).
        payload = decode_payload(open_op(env, keys[env.header.epoch]))
        if not isinstance(payload, Part):
            return payload
        if payload.digest in parted:
            return None
        parted.add(payload.digest)
        whole = self.store.get("editdata", space_id + payload.digest)
        if whole is None:
            return None
        b.delete("edit", space_id + payload.digest)
        b.delete("editdata", space_id + payload.digest)
        edit = decode_payload(whole, decode_limits=LOCAL_ROWS)
        return edit if isinstance(edit, Edit) else None

    def has_unsent(self, space_id: bytes) -> bool:
        """Pending ops, held edits, or unflushed edits of the space."""
        # Pending ops, edits held for a rotation, or edits not flushed yet.
        return bool(self.store.count("pending", space_id) or self.store.count("held", space_id)
                    ) or any(buf for (sid, _), buf in self.docs.buffers.items()
                             if sid == space_id and buf)

    def reset_head(self, b: Any, space_id: bytes, last_ok: OpEnvelope | None) -> None:
        """Move this device's chain head back after a refusal (inside batch ``b``)."""
        # This device's chain head after a refusal: the last op of it accepted in
        # this push, else the last one the verified log holds, else genesis.
        self.forget_head(space_id)
        if last_ok is not None:
            b.put("mine", space_id, encode([last_ok.header.seq, last_ok.op_id]))
            return
        logged = self.store.get("chain", space_id + self.ident.device_id)
        if logged is None:
            b.delete("mine", space_id)
        else:
            head = chain_head(logged)
            b.put("mine", space_id, encode([head.seq, head.op_id]))

    def requeue(self, space_id: bytes, raw: bytes, b: StoreBatch,
                 requeued: set[bytes]) -> None:
        """Put a refused op's edit back in its document's buffer, to be sealed again."""
        env = decode_envelope(raw)
        key = self.keyring.epoch_keys(space_id).get(env.header.epoch)
        if key is None:
            return
        try:
            payload = decode_payload(open_op(env, key))
        except SddsfError:
            return  # not an edit this device can read back (kept under 'failed')
        if isinstance(payload, Part):
            # The whole edit was kept when its parts were sealed: queue it once.
            if payload.digest in requeued:
                return
            requeued.add(payload.digest)
            whole = self.store.get("editdata", space_id + payload.digest)
            if whole is None:
                return
            b.delete("edit", space_id + payload.digest)
            b.delete("editdata", space_id + payload.digest)
            payload = decode_payload(whole, decode_limits=LOCAL_ROWS)
            if not isinstance(payload, Edit):
                return
        self.docs.doc(space_id, payload.name)  # ensure the buffer exists
        self.docs.buffers[(space_id, doc_id_for(space_id, payload.name))].extend(payload.updates)

    def op_body(self, space_id: bytes, raw: bytes,
                 parts: PartsReader | None = None) -> tuple[str, list[bytes]] | None:
        """The document name and updates of a stored op: of the edit it completes
        when ``parts`` joins multi-part edits, else None for a part.

        Raises:
            NoKey: this device has no key for the op's epoch.
        """
        env = decode_envelope(raw)
        key = self.keyring.keys_cached(space_id).get(env.header.epoch)
        if key is None:
            raise NoKey
        try:
            payload = decode_payload(open_op(env, key))
        except SddsfError:
            return None
        if isinstance(payload, Part):
            if parts is None:
                return None
            try:
                edit = parts.feed(env.header.author, env.header.seq, env.header.doc, payload)
            except SddsfError:
                return None
            if edit is None:
                return None
            payload = edit
        return payload.name, list(payload.updates)

    def assembly_open(self, space_id: bytes) -> bool:
        """Whether an active author's multi-part edit is half logged."""
        # A snapshot at a size where an active author's multi-part edit is half
        # logged would hold neither its first parts (not applied yet) nor let a
        # reader that starts from it join the remaining parts (section 8.11).
        state = self.reg.state()
        return any(state.is_active(author) for author in open_assemblies(self.store, space_id))


class EditRefused(UsageError):
    """An edit too large to sync (see :meth:`Outbox.flush`)."""


class NoKey(Exception):  # an internal signal: never escapes the engine
    """This device has no key for a stored op's epoch."""


def keep_parted_edit(b: StoreBatch, space_id: bytes, first_part: bytes, last_seq: int,
                      name: str, updates: list[bytes]) -> None:
    # A multi-part edit is kept whole until its last part is logged, so that a
    # refusal of any part re-queues the whole edit (Outbox.requeue).
    part = decode_payload(first_part)
    assert isinstance(part, Part)  # noqa: S101 - split_edit made it
    b.put("edit", space_id + part.digest, encode([last_seq, name]))
    b.put("editdata", space_id + part.digest, encode_edit(name, updates))


def parted_edits(store: LocalStore, space_id: bytes) -> dict[bytes, bytes]:
    """``pending`` key of each kept edit's last part -> the ``edit`` row's key."""
    return {space_id + u64(int(as_list(value)[0])): key
            for key, value in store.scan("edit", space_id)}
