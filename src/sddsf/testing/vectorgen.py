"""Deterministic generator of SDDSF's own conformance vectors (tests/vectors/*.json).

Run ``python -m sddsf.testing.vectorgen tests/vectors`` to (re)write them. Every
secret, nonce and ephemeral key comes from :func:`seed`, so the output is
byte-for-byte reproducible; a test regenerates the files and compares.

Each file has ``valid`` cases (MLS style: inputs and every intermediate value)
and ``invalid`` cases (Keybase style: the input and the error ``code`` a
conforming implementation must report). Byte strings are lowercase hex.

Size: the deterministic generator of every conformance vector file; each vector
family is a short function over one seeded world, and they must share that
world to stay reproducible.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sddsf.crypto import (
    Ed25519SigningKey,
    _seal_seeded,
    aead_encrypt,
    blake2b_256,
    hkdf_sha256,
)
from sddsf.errors import Code
from sddsf.protocol import keypackage as kp
from sddsf.protocol import labels
from sddsf.protocol import membership as ms
from sddsf.protocol import payload as pl
from sddsf.protocol import registry as reg
from sddsf.protocol.approval import ActionType
from sddsf.protocol.clock import HLCTimestamp
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.envelope import GENESIS_PREV, OpEnvelope, OpHeader, derive_doc_key, seal_op
from sddsf.protocol.identity import AccountKeys, DeviceKeys
from sddsf.protocol.labels import labelled
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS
from sddsf.protocol.merkle import MerkleTree, leaf_hash
from sddsf.protocol.rules import ChainHead
from sddsf.protocol.snapshot import (
    SNAPSHOT_VERSION,
    SPACE_SNAPSHOT_DOC,
    attest_snapshot,
    seal_chunked_snapshot,
    seal_snapshot,
)
from sddsf.protocol.treehead import sign_tree_head
from sddsf.protocol.vv import VersionVector

__all__ = ["generate", "seed", "snapshot_key", "write"]

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the vectors' clock
SPACE = bytes.fromhex("5ddf0000000000000000000000000001")
DOC = bytes.fromhex("d0c00000000000000000000000000001")


def seed(name: str) -> bytes:
    """32 deterministic bytes named ``name`` (vectors only, never for real keys)."""
    return blake2b_256(b"sddsf/vectors/" + name.encode())


def _device(name: str) -> DeviceKeys:
    return DeviceKeys.from_seeds(seed(f"{name}/sign"), seed(f"{name}/kx"))


class _World:
    """One account with three devices: laptop (genesis), phone (added), tablet (revoked)."""

    def __init__(self) -> None:
        self.account_secret = seed("account")
        self.account = AccountKeys.from_secret(self.account_secret)
        self.laptop, self.phone, self.tablet = (_device(n) for n in ("laptop", "phone", "tablet"))
        self.entries = [reg.genesis(self.account, self.laptop, "laptop", NOW_MS - 50_000)]
        state = reg.verify_registry(self.entries, pinned=self.account.public)
        steps: list[Callable[[reg.RegistryState], bytes]] = [
            lambda s: reg.add_device(s, self.laptop, self.phone, "phone", NOW_MS - 40_000),
            lambda s: reg.add_device(s, self.laptop, self.tablet, "tablet", NOW_MS - 30_000),
            lambda s: reg.revoke_device(s, self.phone, self.tablet.device_id, "lost",
                                        NOW_MS - 20_000),
        ]
        for entry in steps:
            self.entries.append(entry(state))
            state = state.apply(self.entries[-1])
        self.state = state
        self.epoch_key = seed("epoch-key/0")

    def op(self, author: DeviceKeys, seq: int, prev: bytes, plaintext: bytes, *,
           space: bytes = SPACE, epoch: int = 0, ts_ms: int = NOW_MS,
           deps: VersionVector | None = None, key: bytes | None = None,
           reg: int = 0) -> OpEnvelope:
        header = OpHeader(space=space, doc=DOC, author=author.device_id, seq=seq, prev=prev,
                          deps=deps or VersionVector(), epoch=epoch, ts=HLCTimestamp(ts_ms, 0),
                          seen=None, nonce=seed(f"nonce/{seq}/{plaintext.hex()}")[:24],
                          reg=reg)
        return seal_op(author, header, plaintext, key or self.epoch_key)

    def op_v1(self, author: DeviceKeys, plaintext: bytes) -> bytes:
        """A first op in header version 1 (no ``reg``): readable history only."""
        header = OpHeader(space=SPACE, doc=DOC, author=author.device_id, seq=1,
                          prev=GENESIS_PREV, deps=VersionVector(), epoch=0,
                          ts=HLCTimestamp(NOW_MS, 0), seen=None,
                          nonce=seed(f"nonce/v1/{plaintext.hex()}")[:24], version=1, reg=None)
        header_bytes = encode(header.to_wire())
        ct = aead_encrypt(derive_doc_key(self.epoch_key, SPACE, DOC, 0), header.nonce,
                          plaintext, labelled(labels.OP_AD, header_bytes))
        sig = author.sign(labelled(labels.OP_SIG, header_bytes,
                                   labels.tagged_hash(labels.OP_CIPHERTEXT, ct)))
        return encode([1, header_bytes, ct, sig])

    def context(self) -> dict[str, Any]:
        return {
            "account_secret": self.account_secret.hex(),
            "account_public_key": self.account.signing.public.raw.hex(),
            "recovery_public_key": self.account.recovery.public.hex(),
            "devices": {n: {"signing_seed": seed(f"{n}/sign").hex(),
                            "kx_seed": seed(f"{n}/kx").hex(), "device_id": d.device_id.hex()}
                        for n, d in (("laptop", self.laptop), ("phone", self.phone),
                                     ("tablet", self.tablet))},
            "registry": [e.hex() for e in self.entries],
            "space": SPACE.hex(), "doc": DOC.hex(), "epoch_key": self.epoch_key.hex(),
            # package_seqs: epoch 0's key package was made at registry entry 2 (the
            # tablet, revoked at entry 3, was one of its recipients).
            "epoch": {"current": 0, "started_ms": NOW_MS - 60_000, "package_seqs": [2]},
            "now_ms": NOW_MS,
            "rules": {"max_skew_ms": 600_000, "epoch_grace_ms": 86_400_000},
        }


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def _envelopes(w: _World) -> dict[str, Any]:
    first = w.op(w.laptop, 1, GENESIS_PREV, b"first edit")
    second = w.op(w.laptop, 2, first.op_id, b"second edit",
                  deps=VersionVector({w.phone.device_id: 1}))
    phone1 = w.op(w.phone, 1, GENESIS_PREV, b"phone edit")
    fork = w.op(w.laptop, 1, GENESIS_PREV, b"another first edit")
    forged = encode([1, first.header_bytes, first.ciphertext,
                     w.phone.sign(first.signed_message())])
    valid = [
        {"name": name, "preceding": [p.raw.hex() for p in pre], "envelope": e.raw.hex(),
         "op_id": e.op_id.hex(), "outcome": outcome, "plaintext": pt.hex(),
         "doc_key": derive_doc_key(w.epoch_key, SPACE, DOC, 0).hex()}
        for name, pre, e, outcome, pt in (
            ("first op of an author", [], first, "accept", b"first edit"),
            ("second op links to the first", [first], second, "accept", b"second edit"),
            ("identical resubmission is a duplicate", [first], first, "duplicate", b"first edit"),
            ("another author's first op", [first], phone1, "accept", b"phone edit"),
            ("written before its author saw the revocation (reg 2)", [],
             w.op(w.phone, 1, GENESIS_PREV, b"before", reg=2), "accept", b"before"),
        )
    ]
    invalid = [
        {"name": name, "preceding": [p.hex() for p in pre], "envelope": env.hex(), "code": code}
        for name, pre, env, code in (
            ("signature by another device", [], forged, Code.SIG_INVALID),
            ("bit flip in the signature", [], _flip(first.raw, len(first.raw) - 1),
             Code.SIG_INVALID),
            ("bit flip in the ciphertext", [], _flip(first.raw, len(first.raw) - 70),
             Code.SIG_INVALID),
            ("fork: same seq, other content", [first.raw], fork.raw, Code.CHAIN_FORK),
            ("gap: seq 2 without seq 1", [], second.raw, Code.CHAIN_GAP),
            ("another space", [], w.op(w.laptop, 1, GENESIS_PREV, b"x",
                                       space=bytes(16)).raw, Code.WRONG_CONTEXT),
            ("revoked author", [], w.op(w.tablet, 1, GENESIS_PREV, b"x").raw, Code.REVOKED),
            ("unknown author", [], w.op(_device("stranger"), 1, GENESIS_PREV, b"x").raw,
             Code.UNKNOWN_DEVICE),
            ("future epoch", [], w.op(w.laptop, 1, GENESIS_PREV, b"x", epoch=1).raw,
             Code.UNKNOWN_EPOCH),
            ("timestamp an hour ahead", [], w.op(w.laptop, 1, GENESIS_PREV, b"x",
                                                 ts_ms=NOW_MS + 3_600_000).raw,
             Code.CLOCK_SKEW),
            ("deps name the author", [], w.op(w.laptop, 1, GENESIS_PREV, b"x", deps=VersionVector(
                {w.laptop.device_id: 1})).raw, Code.DEPS_REGRESSION),
            ("envelope version 2", [], encode([2, first.header_bytes, first.ciphertext,
                                               first.signature]), Code.UNSUPPORTED_VERSION),
            ("header version 1 (history only) in live mode", [], w.op_v1(w.laptop, b"old"),
             Code.UNSUPPORTED_VERSION),
            ("sealed under epoch 0 after its author saw the tablet's revocation (reg 3)", [],
             w.op(w.laptop, 1, GENESIS_PREV, b"late", reg=3).raw, Code.EPOCH_COMPROMISED),
            ("names registry entry 4, beyond the verifier's registry", [],
             w.op(w.laptop, 1, GENESIS_PREV, b"ahead", reg=4).raw, Code.WRONG_CONTEXT),
            ("trailing byte", [], first.raw + b"\x00", Code.MALFORMED),
            ("truncated", [], first.raw[:-1], Code.MALFORMED),
        )
    ]
    return {"context": w.context(), "valid": valid, "invalid": invalid}


def _registries(w: _World) -> dict[str, Any]:
    s0 = reg.verify_registry(w.entries[:1], pinned=w.account.public)
    stranger = _device("stranger")
    bad_sig = reg.add_device(s0, stranger, _device("x"), "x", NOW_MS)
    fork = reg.add_device(s0, w.laptop, _device("other-phone"), "other", NOW_MS)
    second_state = s0.apply(w.entries[1])
    readd = reg.add_device(w.state, w.laptop, w.tablet, "tablet again", NOW_MS)
    body = reg.build_body(reg.EntryType.RECOVER, account_id=w.account.account_id,
                          seq=w.state.seq + 1, prev=w.state.head, ts_ms=NOW_MS,
                          signer_id=w.laptop.device_id, fields={
                              "device": reg.device_fields(_device("new").public, "new"),
                              "revoke": []})
    recover_by_device = reg.assemble_entry(body, reg.sign_body(body, w.laptop),
                                           reg.countersign_body(body, _device("new")))
    good_recover = reg.recover(w.state, w.account, _device("recovered"), "recovered",
                               [w.laptop.device_id, w.phone.device_id], NOW_MS)
    devices = {r.name: r.status.value for r in w.state.devices.values()}
    gov, gov_entries, pid = _governed(w)
    return {
        "context": w.context(),
        "valid": [
            {"name": "genesis, add, add, revoke", "entries": [e.hex() for e in w.entries],
             "head": w.state.head.hex(), "devices": devices},
            {"name": "recover revoking every old device",
             "entries": [e.hex() for e in [*w.entries, good_recover]],
             "head": reg.entry_hash(good_recover).hex(),
             "devices": {**{n: "revoked" for n in devices}, "recovered": "active"}},
            {"name": "approval policy: propose add, approve, enact after the veto window",
             "entries": [e.hex() for e in gov_entries],
             "head": gov.head.hex(),
             "devices": {r.name: r.status.value for r in gov.devices.values()}},
        ],
        "invalid": [
            {"name": name, "entries": [e.hex() for e in entries], "code": code}
            for name, entries, code in (
                ("add signed by a stranger", [w.entries[0], bad_sig], Code.NOT_AUTHORIZED),
                ("fork at seq 1", [*w.entries[:2], fork], Code.REGISTRY_FORK),
                ("gap: seq 2 after seq 0", [w.entries[0], w.entries[2]], Code.REGISTRY_INVALID),
                ("re-adding a revoked device", [*w.entries, readd], Code.REGISTRY_INVALID),
                ("recover signed by a device", [*w.entries, recover_by_device],
                 Code.NOT_AUTHORIZED),
                ("no genesis", [w.entries[1]], Code.REGISTRY_INVALID),
                ("bit flip in a signature", [w.entries[0], _flip(w.entries[1], len(
                    w.entries[1]) - 1)], Code.SIG_INVALID),
                ("approval policy: a device adds directly",
                 [*gov_entries[:3], reg.add_device(_state(gov_entries[:3], w), w.phone,
                                                   _device("x"), "x", NOW_MS + 1)],
                 Code.NOT_AUTHORIZED),
                ("approval policy: enact with 1 of 2 approvals",
                 [*gov_entries[:4], reg.enact(_state(gov_entries[:4], w), w.laptop, pid,
                                              NOW_MS + 3_600_000)], Code.REGISTRY_INVALID),
                ("approval policy: enact inside the veto window",
                 [*gov_entries[:5], reg.enact(_state(gov_entries[:5], w), w.laptop, pid,
                                              NOW_MS + 3_599_999)], Code.REGISTRY_INVALID),
            )
        ],
        "note": f"valid chain state after entry 1 has {len(second_state.devices)} devices",
    }


def _state(entries: list[bytes], w: _World) -> reg.RegistryState:
    return reg.verify_registry(entries, pinned=w.account.public)


def _governed(w: _World) -> tuple[reg.RegistryState, list[bytes], bytes]:
    # genesis(laptop) -> add(phone) -> policy(2 approvals, 1 h veto window, by the
    # account key) -> propose add(watch) by laptop -> approve by phone -> enact.
    watch = _device("watch")
    entries = w.entries[:2]
    steps: list[Callable[[reg.RegistryState], bytes]] = [
        lambda s: reg.set_policy(s, w.account, {"approvals": 2, "veto_window_s": 3600},
                                 NOW_MS - 10_000),
        lambda s: reg.propose(s, w.laptop, ActionType.ADD,
                              {"device": reg.device_fields(watch.public, "watch")}, NOW_MS,
                              new_device=watch),
        lambda s: reg.approve(s, w.phone, reg.entry_hash(entries[3]), NOW_MS + 1),
        lambda s: reg.enact(s, w.phone, reg.entry_hash(entries[3]), NOW_MS + 3_600_000),
    ]
    state = _state(entries, w)
    for step in steps:
        entries = [*entries, step(state)]
        state = state.apply(entries[-1])
    return state, entries, reg.entry_hash(entries[3])


def _key_packages(w: _World) -> dict[str, Any]:
    def build(creator: DeviceKeys, space: bytes = SPACE, epoch: int = 0,
              prev: bytes = bytes(32), key: bytes | None = None) -> bytes:
        n = len(w.state.active_devices()) + 1
        return kp.build_key_package(creator=creator, registry=w.state, space=space, epoch=epoch,
                                    prev=prev, epoch_key=key or w.epoch_key, ts_ms=NOW_MS,
                                    ephemeral_seeds=[seed(f"eph/{epoch}/{i}") for i in range(n)])

    def resigned(package: bytes, **changes: object) -> bytes:
        # The laptop signs a body with fields changed (the defect is the field).
        outer = decode(package)
        body = decode(outer[1]) if isinstance(outer, list) else None
        if not isinstance(body, dict):
            raise TypeError("not a key package")
        raw = encode({**body, **changes})
        return encode([kp.KEY_PACKAGE_VERSION, raw,
                       w.laptop.sign(labelled(labels.KEY_PACKAGE_SIG, raw))])

    p0 = build(w.laptop)
    key1 = seed("epoch-key/1")
    p1 = kp.build_key_package(  # wraps epoch 0's key under a key derived from key1
        creator=w.phone, registry=w.state, space=SPACE, epoch=1, prev=kp.package_hash(p0),
        epoch_key=key1, ts_ms=NOW_MS, previous_keys=[w.epoch_key],
        ephemeral_seeds=[seed(f"eph/1/{i}") for i in range(len(w.state.active_devices()) + 1)])
    v1 = _key_package_v1(w)
    return {
        "context": w.context(),
        "valid": [
            {"name": "epoch 0 by laptop", "previous": None, "package": p0.hex(),
             "epoch_key": w.epoch_key.hex(), "hash": kp.package_hash(p0).hex(),
             "key_commit": kp.key_commitment(SPACE, 0, w.epoch_key).hex(),
             "previous_keys": {}},
            {"name": "epoch 1 by phone, wrapping epoch 0's key", "previous": p0.hex(),
             "package": p1.hex(), "epoch_key": key1.hex(), "hash": kp.package_hash(p1).hex(),
             "key_commit": kp.key_commitment(SPACE, 1, key1).hex(),
             "previous_keys": {"0": w.epoch_key.hex()}},
            {"name": "epoch 0 in version 1 (history format, read only)", "previous": None,
             "package": v1.hex(), "epoch_key": w.epoch_key.hex(),
             "hash": kp.package_hash(v1).hex(), "key_commit": None, "previous_keys": {}},
        ],
        "invalid": [
            {"name": name, "previous": prev.hex() if prev else None, "package": pkg.hex(),
             "code": code}
            for name, prev, pkg, code in (
                ("created for another space", None, build(w.laptop, space=bytes(16)),
                 Code.WRONG_CONTEXT),
                ("epoch 1 without epoch 0", None, p1, Code.UNKNOWN_EPOCH),
                ("broken prev link", p0, build(w.phone, epoch=1, prev=bytes(range(32))),
                 Code.WRONG_CONTEXT),
                ("bit flip in the signature", None, _flip(p0, len(p0) - 1), Code.SIG_INVALID),
                ("epoch 0 wrapping earlier keys", None,
                 resigned(p0, prev_keys=bytes(66)), Code.MALFORMED),
                ("version 2 without its key commitment", None,
                 resigned(p0, key_commit=None), Code.MALFORMED),
            )
        ],
    }


def _key_package_v1(w: _World) -> bytes:
    """Epoch 0 in the version 1 format (each sealed key carries a history list)."""
    plaintext = labelled(labels.KEY_PACKAGE_SEALED, SPACE, 0, w.epoch_key, [])
    targets = {r.device_id: r.public.kx_key for r in w.state.active_devices()}
    targets[w.account.account_id] = w.account.recovery.public
    rows = [[rid, _seal_seeded(targets[rid], plaintext, seed(f"eph/v1/{i}"))]
            for i, rid in enumerate(sorted(targets))]
    body = encode({"v": 1, "space": SPACE, "epoch": 0, "prev": bytes(32),
                   "creator": w.laptop.device_id, "ts": NOW_MS, "registry_seq": w.state.seq,
                   "recipients": rows})
    return encode([1, body, w.laptop.sign(labelled(labels.KEY_PACKAGE_SIG, body))])


def snapshot_key(epoch_key: bytes, space: bytes, epoch: int) -> bytes:
    """The snapshot AEAD key, restated from the specification (not the library's helper)."""
    return hkdf_sha256(epoch_key, salt=labels.SNAPSHOT_KEY.encode(),
                       info=labelled(labels.SNAPSHOT_KEY, space, epoch))


def _snapshot_by_hand(signer: DeviceKeys, header: dict[str, Any], payload: object,
                      epoch_key: bytes, *, ad_header: dict[str, Any] | None = None,
                      flip_ct: int | None = None, extra: dict[str, Any] | None = None,
                      version: int = SNAPSHOT_VERSION) -> bytes:
    """A snapshot assembled field by field: any header, payload, key or signer.

    ``ad_header`` encrypts under another header than the one sent; ``flip_ct``
    flips a ciphertext byte before signing; ``extra`` adds fields to the body.
    """
    key = snapshot_key(epoch_key, header["space"], header["epoch"])
    ad = labelled(labels.SNAPSHOT_AD, encode(ad_header if ad_header is not None else header))
    ct = aead_encrypt(key, header["nonce"], encode(payload), ad)
    if flip_ct is not None:
        ct = _flip(ct, flip_ct)
    body = encode({**header, **(extra or {}), "ct": ct})
    return encode([version, body, signer.sign(labelled(labels.SNAPSHOT_SIG, body))])


def _snapshot_log(w: _World) -> tuple[list[OpEnvelope], list[dict[bytes, ChainHead]]]:
    """Seven ops by laptop and phone in log order, and every author's chain head
    after each of them (``heads[n]`` is the state at log size ``n``)."""
    laptop, phone = w.laptop.device_id, w.phone.device_id
    script = [(w.laptop, {}), (w.phone, {}), (w.laptop, {phone: 1}), (w.phone, {laptop: 2}),
              (w.laptop, {phone: 2}), (w.laptop, {phone: 2}), (w.phone, {laptop: 4})]
    ops: list[OpEnvelope] = []
    heads: list[dict[bytes, ChainHead]] = [{}]
    for i, (author, deps) in enumerate(script):
        last = heads[-1].get(author.device_id)
        seq = last.seq + 1 if last else 1
        env = w.op(author, seq, last.op_id if last else GENESIS_PREV,
                   f"snapshot log op {i}".encode(), deps=VersionVector(deps))
        ops.append(env)
        heads.append({**heads[-1], author.device_id: ChainHead(seq, env.op_id,
                                                                env.header.deps)})
    return ops, heads


def _chains_wire(chains: dict[bytes, ChainHead]) -> list[list[object]]:
    return [[a, h.seq, h.op_id, h.deps.to_wire()] for a, h in sorted(chains.items())]


def _hexed(value: object) -> object:
    """Byte strings inside a wire value as hex (for the JSON files)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_hexed(v) for v in value]
    return value


def _snapshots(w: _World) -> dict[str, Any]:
    ops, heads = _snapshot_log(w)
    tree = MerkleTree(leaf_hash(e.raw) for e in ops)
    keys = {0: w.epoch_key, 1: seed("epoch-key/1"), 2: seed("epoch-key/2")}
    notes, todo = b"opaque yjs state of notes", b"opaque yjs state of todo"

    def frontier_at(size: int) -> MerkleTree:
        return MerkleTree(leaf_hash(e.raw) for e in ops[:size])

    def seal(author: DeviceKeys, size: int, epoch: int, docs: dict[str, bytes], tag: str,
             space: bytes = SPACE) -> bytes:
        return seal_snapshot(author, space=space, epoch=epoch, epoch_key=keys[epoch],
                             size=size, frontier=frontier_at(size).frontier(),
                             chains=heads[size], docs=docs, ts_ms=NOW_MS,
                             nonce=seed(f"snapshot/nonce/{tag}")[:24])

    nonces = iter(range(1000))

    def header(author: DeviceKeys, size: int = 3, epoch: int = 0, **over: object
               ) -> dict[str, Any]:
        # Each hand-built snapshot gets its own nonce (never reuse one under a key).
        sub = frontier_at(size)
        base: dict[str, Any] = {
            "v": SNAPSHOT_VERSION, "space": SPACE, "author": author.device_id, "epoch": epoch,
            "size": size, "root": sub.root(), "frontier": sub.frontier().to_hashes(),
            "chains": _chains_wire(heads[size]), "ts": NOW_MS,
            "nonce": seed(f"snapshot/nonce/by-hand/{next(nonces)}")[:24]}
        return {**base, **over}

    payload = {"docs": [["notes", notes], ["todo", todo]]}

    def by_hand(author: DeviceKeys = w.laptop, *, signer: DeviceKeys | None = None,
                hdr: dict[str, Any] | None = None, body: object = payload,
                key: bytes | None = None, **kw: Any) -> bytes:
        h = hdr if hdr is not None else header(author)
        return _snapshot_by_hand(signer or author, h, body,
                                 key if key is not None else keys[h["epoch"]], **kw)

    valid_inputs = [
        ("laptop at size 3, epoch 0", w.laptop, 3, 0, {"notes": notes, "todo": todo}),
        ("phone at size 7, epoch 1", w.phone, 7, 1, {"notes": notes + b" v2"}),
        ("no documents yet", w.laptop, 1, 0, {}),
    ]
    valid, sealed = [], []
    for name, author, size, epoch, docs in valid_inputs:
        raw = seal(author, size, epoch, docs, name)
        sealed.append(raw)
        sub = frontier_at(size)
        hdr = header(author, size, epoch, nonce=seed(f"snapshot/nonce/{name}")[:24])
        valid.append({
            "name": name, "snapshot": raw.hex(), "author": author.device_id.hex(),
            "epoch": epoch, "size": size, "root": sub.root().hex(),
            "frontier": [h.hex() for h in sub.frontier().to_hashes()],
            "chains": _hexed(_chains_wire(heads[size])), "ts": NOW_MS,
            "header": encode(hdr).hex(),
            "snapshot_key": snapshot_key(keys[epoch], SPACE, epoch).hex(),
            "plaintext": encode({"docs": [[n, docs[n]] for n in sorted(docs)]}).hex(),
            "docs": {n: d.hex() for n, d in docs.items()},
        })
    good = sealed[0]
    outer: Any = decode(good)  # [version, body, signature] of our own valid snapshot
    ct: bytes = decode(outer[1])["ct"]  # type: ignore[index]
    unsorted = header(w.laptop, chains=list(reversed(_chains_wire(heads[3]))))
    sub3 = frontier_at(3)
    invalid = [
        {"name": name, "snapshot": raw.hex(), "code": code}
        for name, raw, code in (
            ("signature by another device", by_hand(signer=w.phone), Code.SIG_INVALID),
            ("bit flip in the signature", _flip(good, len(good) - 1), Code.SIG_INVALID),
            ("bit flip in the ciphertext, signature kept",
             _flip(good, good.index(ct) + len(ct) // 2), Code.SIG_INVALID),
            ("bit flip in the ciphertext, re-signed", by_hand(flip_ct=0), Code.DECRYPT_FAILED),
            ("header changed after encryption, re-signed",
             by_hand(ad_header=header(w.laptop, ts=NOW_MS + 1)), Code.DECRYPT_FAILED),
            ("encrypted under another epoch's key", by_hand(key=keys[1]),
             Code.DECRYPT_FAILED),
            ("root does not match the frontier",
             by_hand(hdr=header(w.laptop, root=tree.root())), Code.PROOF_INVALID),
            ("frontier hashes in the wrong order",
             by_hand(hdr=header(w.laptop, frontier=sub3.frontier().to_hashes()[::-1])),
             Code.PROOF_INVALID),
            ("frontier with a hash missing",
             by_hand(hdr=header(w.laptop, frontier=sub3.frontier().to_hashes()[:1])),
             Code.PROOF_INVALID),
            ("another space", seal(w.laptop, 3, 0, {"notes": notes}, "other space",
                                   space=bytes(16)), Code.WRONG_CONTEXT),
            ("revoked author", seal(w.tablet, 3, 0, {"notes": notes}, "tablet"),
             Code.REVOKED),
            ("unknown author", seal(_device("stranger"), 3, 0, {"notes": notes}, "stranger"),
             Code.UNKNOWN_DEVICE),
            ("epoch without a key", seal(w.laptop, 3, 2, {"notes": notes}, "epoch 2"),
             Code.UNKNOWN_EPOCH),
            ("snapshot version 2", encode([2, outer[1], outer[2]]), Code.UNSUPPORTED_VERSION),
            ("trailing byte", good + b"\x00", Code.MALFORMED),
            ("truncated", good[:-1], Code.MALFORMED),
            ("unknown body field", by_hand(extra={"x": 1}), Code.MALFORMED),
            ("size 0", by_hand(hdr=header(w.laptop, size=0, frontier=[])), Code.MALFORMED),
            ("chains not sorted by author", by_hand(hdr=unsorted), Code.MALFORMED),
            ("duplicate document name",
             by_hand(body={"docs": [["notes", notes], ["notes", todo]]}), Code.MALFORMED),
            ("payload with an unknown field", by_hand(body={**payload, "x": 1}),
             Code.MALFORMED),
        )
    ]
    context = {**w.context(), "epoch_keys": {str(e): keys[e].hex() for e in (0, 1)},
               "leaves": [e.raw.hex() for e in ops]}
    return {"context": context, "valid": valid, "invalid": invalid}


def _chunk_nonce(nonce: bytes, index: int) -> bytes:
    """A chunk's AEAD nonce, restated from 18.3 (not the library's helper)."""
    return blake2b_256(labelled(labels.SNAPSHOT_CHUNK_NONCE, nonce, index))[:24]


def _manifest_by_hand(signer: DeviceKeys, body: dict[str, Any]) -> bytes:
    raw = encode(body)
    return encode([2, raw, signer.sign(labelled(labels.SNAPSHOT_SIG, raw))])


def _chunked_snapshots(w: _World) -> dict[str, Any]:
    """Version 2 (chunked) snapshots: every valid one fits one chunk (a chunk holds
    512 KiB of plaintext; the unit tests restate multi-chunk splitting)."""
    ops, heads = _snapshot_log(w)
    keys = {0: w.epoch_key, 1: seed("epoch-key/1")}
    notes, todo = b"opaque yjs state of notes", b"opaque yjs state of todo"

    def seal(author: DeviceKeys, size: int, epoch: int, docs: dict[str, bytes], tag: str) -> Any:
        return seal_chunked_snapshot(
            author, space=SPACE, epoch=epoch, epoch_key=keys[epoch], size=size,
            frontier=MerkleTree(leaf_hash(e.raw) for e in ops[:size]).frontier(),
            chains=heads[size], docs=docs, ts_ms=NOW_MS,
            nonce=seed(f"snapshot-v2/nonce/{tag}")[:24])

    valid = []
    sealed = {}
    for name, author, size, epoch, docs in (
            ("laptop at size 3, epoch 0", w.laptop, 3, 0, {"notes": notes, "todo": todo}),
            ("phone at size 7, epoch 1", w.phone, 7, 1, {"notes": notes + b" v2"}),
            ("no documents yet", w.laptop, 1, 0, {})):
        snap = sealed[name] = seal(author, size, epoch, docs, name)
        nonce = seed(f"snapshot-v2/nonce/{name}")[:24]
        count = len(snap.chunks)
        valid.append({
            "name": name, "manifest": snap.manifest.hex(),
            "chunks": [c.hex() for c in snap.chunks], "chunk_ids": [c.hex() for c in
                                                                    snap.chunk_ids],
            "snapshot_id": snap.id.hex(), "author": author.device_id.hex(), "epoch": epoch,
            "size": size, "snapshot_key": snapshot_key(keys[epoch], SPACE, epoch).hex(),
            "plaintext": encode({"docs": [[n, docs[n]] for n in sorted(docs)]}).hex(),
            "chunk_nonces": [_chunk_nonce(nonce, i).hex() for i in range(count)],
            "chunk_ads": [labelled(labels.SNAPSHOT_CHUNK_AD, SPACE, author.device_id, epoch,
                                   size, nonce, i, count).hex() for i in range(count)],
            "docs": {n: d.hex() for n, d in docs.items()},
        })
    good, other = sealed["laptop at size 3, epoch 0"], sealed["phone at size 7, epoch 1"]
    outer: Any = decode(good.manifest)  # [2, body, signature]
    body: dict[str, Any] = decode(outer[1])  # type: ignore[assignment]

    def resigned(signer: DeviceKeys = w.laptop, **over: Any) -> str:
        return _manifest_by_hand(signer, {**body, **over}).hex()

    chunks = [c.hex() for c in good.chunks]
    invalid = [{"name": n, "manifest": m, "chunks": c, "code": code} for n, m, c, code in (
        ("a chunk the manifest does not name", good.manifest.hex(),
         [other.chunks[0].hex()], Code.PROOF_INVALID),
        ("a chunk missing", good.manifest.hex(), [], Code.PROOF_INVALID),
        ("an extra chunk", good.manifest.hex(), chunks * 2, Code.PROOF_INVALID),
        ("re-signed to name a foreign chunk", resigned(chunks=[other.chunk_ids[0]]),
         [other.chunks[0].hex()], Code.DECRYPT_FAILED),
        ("plain does not match the chunk count", resigned(plain=600_000), chunks,
         Code.MALFORMED),
        ("plain shorter than the chunk", resigned(plain=body["plain"] - 1), chunks,
         Code.MALFORMED),
        ("signature by another device", resigned(signer=w.phone), chunks, Code.SIG_INVALID),
        ("revoked author", seal(w.tablet, 3, 0, {"notes": notes}, "tablet").manifest.hex(),
         [], Code.REVOKED),
        ("manifest version 3", encode([3, outer[1], outer[2]]).hex(), chunks,
         Code.UNSUPPORTED_VERSION),
        ("unknown manifest field", resigned(extra=1), chunks, Code.MALFORMED),
    )]
    context = {**w.context(), "epoch_keys": {str(e): keys[e].hex() for e in (0, 1)},
               "chunk_plain": 512 * 1024}
    return {"context": context, "valid": valid, "invalid": invalid}


def _attestations(w: _World) -> dict[str, Any]:
    snapshot = seed("attested snapshot")

    def att(author: DeviceKeys, verdict: str, space: bytes = SPACE) -> bytes:
        return attest_snapshot(author, space=space, doc=SPACE_SNAPSHOT_DOC, snapshot=snapshot,
                               size=3, verdict=verdict, ts_ms=NOW_MS)

    def by_hand(**over: Any) -> bytes:
        fields = {"v": 1, "space": SPACE, "doc": SPACE_SNAPSHOT_DOC, "snapshot": snapshot,
                  "size": 3, "verdict": "match", "attester": w.phone.device_id, "ts": NOW_MS,
                  **over}
        body = encode(fields)
        return encode([1, body, w.phone.sign(labelled(labels.SNAPSHOT_ATTEST_SIG, body))])

    good = att(w.phone, "match")
    valid = [{"name": f"{verdict} by {name}", "attestation": att(dev, verdict).hex(),
              "attester": dev.device_id.hex(), "verdict": verdict, "snapshot": snapshot.hex(),
              "size": 3} for name, dev, verdict in (("phone", w.phone, "match"),
                                                    ("laptop", w.laptop, "mismatch"))]
    invalid = [{"name": n, "attestation": raw.hex(), "code": code} for n, raw, code in (
        ("bit flip in the signature", _flip(good, len(good) - 1), Code.SIG_INVALID),
        ("another space", att(w.phone, "match", space=bytes(16)), Code.WRONG_CONTEXT),
        ("revoked attester", att(w.tablet, "match"), Code.REVOKED),
        ("unknown attester", att(_device("stranger"), "match"), Code.UNKNOWN_DEVICE),
        ("unknown verdict", by_hand(verdict="unsure"), Code.MALFORMED),
        ("unknown field", by_hand(extra=1), Code.MALFORMED),
        ("version 2", by_hand(v=2), Code.UNSUPPORTED_VERSION),
    )]
    return {"context": w.context(), "valid": valid, "invalid": invalid}


def _memberships(w: _World) -> dict[str, Any]:
    """Alice (the context account) owns the space; Bob and Carol have one device each."""
    people = {"bob": AccountKeys.from_secret(seed("account/bob")),
              "carol": AccountKeys.from_secret(seed("account/carol"))}
    devices = {n: _device(f"{n}/laptop") for n in people}
    entries = {n: [reg.genesis(a, devices[n], "laptop", NOW_MS - 45_000)]
               for n, a in people.items()}
    regs = {w.account.account_id: w.state, **{
        a.account_id: reg.verify_registry(entries[n], pinned=a.public)
        for n, a in people.items()}}
    names = {w.account.account_id: "alice", **{a.account_id: n for n, a in people.items()}}
    bob, carol = people["bob"], people["carol"]
    alice_reg, bob_reg, carol_reg = (regs[a.account_id] for a in (w.account, bob, carol))

    def apply(state: ms.MembershipState, entry: bytes) -> ms.MembershipState:
        return state.apply(entry, regs.get)

    log: list[bytes] = [ms.create(SPACE, w.laptop, alice_reg, NOW_MS - 10_000)]
    states = [apply(ms.MembershipState.empty(SPACE), log[0])]
    steps: list[Callable[[ms.MembershipState], bytes]] = [
        lambda s: ms.add_member(s, w.laptop, alice_reg, bob.public, ms.Role.WRITER,
                                NOW_MS - 9_000),
        lambda s: ms.add_member(s, w.phone, alice_reg, carol.public, ms.Role.READER,
                                NOW_MS - 8_000),
        lambda s: ms.change_role(s, w.laptop, alice_reg, carol.account_id, ms.Role.ADMIN,
                                 NOW_MS - 7_000),
        lambda s: ms.remove_member(s, devices["carol"], carol_reg, bob.account_id,
                                   NOW_MS - 6_000),
        lambda s: ms.leave(s, w.laptop, alice_reg, NOW_MS - 5_000),
    ]
    for step in steps:
        log.append(step(states[-1]))
        states.append(apply(states[-1], log[-1]))
    two_admins = states[3]  # alice, carol admins; bob writer
    alice_out = ms.remove_member(two_admins, devices["carol"], carol_reg, w.account.account_id,
                                 NOW_MS - 4_000)
    carol_out = ms.remove_member(two_admins, w.laptop, alice_reg, carol.account_id,
                                 NOW_MS - 4_000)

    def members(state: ms.MembershipState) -> dict[str, str]:
        return {names[a]: m.role.value for a, m in state.members.items()}

    def valid(name: str, entries: list[bytes]) -> dict[str, Any]:
        result = ms.fold(SPACE, entries, regs.get)
        return {"name": name, "entries": [e.hex() for e in entries],
                "members": members(result.state), "head": result.state.head.hex(),
                "refused": [[i, exc.code.value] for i, exc in result.refused]}

    def by_hand(state: ms.MembershipState, key: DeviceKeys, **over: Any) -> bytes:
        body = {"v": 1, "space": SPACE, "type": "add", "prev": state.head,
                "member": people["bob"].account_id, "signer": w.account.account_id,
                "device": key.device_id, "registry_seq": alice_reg.seq, "ts": NOW_MS,
                "account_key": bob.public.signing_key.raw, "recovery_key": bob.public.recovery_key,
                "role": "writer", **over}
        raw = encode({k: v for k, v in body.items() if v is not None})
        return ms.assemble_entry(raw, ms.sign_body(raw, key))

    s1, s2, s4 = states[1], states[2], states[4]
    good = ms.add_member(s1, w.laptop, alice_reg, carol.public, ms.Role.READER, NOW_MS)
    dave = AccountKeys.from_secret(seed("account/dave")).public
    invalid = [{"name": n, "preceding": [e.hex() for e in log[:k]], "entry": e.hex(),
                "code": code} for n, k, e, code in (
        ("bit flip in the signature", 2, _flip(good, len(good) - 1), Code.SIG_INVALID),
        ("signed by another device than it names", 2, by_hand(s1, w.phone, device=w.laptop
                                                            .device_id, member=carol.account_id,
                                                            account_key=carol.public
                                                            .signing_key.raw,
                                                            recovery_key=carol.public
                                                            .recovery_key), Code.SIG_INVALID),
        ("add signed by a writer", 2, ms.add_member(s1, devices["bob"], bob_reg, dave,
                                                    ms.Role.READER, NOW_MS),
         Code.NOT_AUTHORIZED),
        ("remove signed by a reader", 3, ms.remove_member(s2, devices["carol"], carol_reg,
                                                          bob.account_id, NOW_MS),
         Code.NOT_AUTHORIZED),
        ("add signed by a non-member", 1, ms.add_member(states[0], devices["bob"], bob_reg,
                                                        dave, ms.Role.READER, NOW_MS),
         Code.NOT_AUTHORIZED),
        ("leave signed for another member", 3, by_hand(
            s2, devices["bob"], type="leave", member=carol.account_id, signer=bob.account_id,
            registry_seq=0, account_key=None, recovery_key=None, role=None),
         Code.NOT_AUTHORIZED),
        ("signed by a revoked device (tablet)", 1, ms.add_member(
            states[0], w.tablet, alice_reg, bob.public, ms.Role.WRITER, NOW_MS), Code.REVOKED),
        ("signed by a device of another account", 1, by_hand(states[0], devices["bob"]),
         Code.UNKNOWN_DEVICE),
        ("registry position beyond the verifier's registry", 1, by_hand(
            states[0], w.laptop, registry_seq=alice_reg.seq + 1), Code.WRONG_CONTEXT),
        ("last admin removed", 2, ms.remove_member(s1, w.laptop, alice_reg,
                                                   w.account.account_id, NOW_MS),
         Code.MEMBERSHIP_INVALID),
        ("last admin demoted", 2, ms.change_role(s1, w.laptop, alice_reg,
                                                 w.account.account_id, ms.Role.WRITER,
                                                 NOW_MS), Code.MEMBERSHIP_INVALID),
        ("last admin leaves", 2, ms.leave(s1, w.laptop, alice_reg, NOW_MS),
         Code.MEMBERSHIP_INVALID),
        ("duplicate add", 2, ms.add_member(s1, w.laptop, alice_reg, bob.public,
                                           ms.Role.READER, NOW_MS), Code.MEMBERSHIP_INVALID),
        ("role change for a non-member", 2, ms.change_role(s1, w.laptop, alice_reg,
                                                           carol.account_id, ms.Role.WRITER,
                                                           NOW_MS), Code.MEMBERSHIP_INVALID),
        ("create not first", 1, ms.create(SPACE, w.phone, alice_reg, NOW_MS),
         Code.MEMBERSHIP_INVALID),
        ("replay of an applied entry", 5, log[1], Code.MEMBERSHIP_INVALID),
        ("entry of a removed member", 5, ms.leave(s4, devices["bob"], bob_reg, NOW_MS),
         Code.NOT_AUTHORIZED),
        ("another space", 1, ms.add_member(ms.MembershipState(
            bytes(16), s1.members, s1.applied, s1.registry_seqs, s1.applied_set), w.laptop,
            alice_reg, carol.public, ms.Role.READER, NOW_MS), Code.WRONG_CONTEXT),
        ("member id is not its key's", 1, by_hand(states[0], w.laptop,
                                                  member=carol.account_id),
         Code.MEMBERSHIP_INVALID),
        ("unknown type", 1, by_hand(states[0], w.laptop, type="invite"),
         Code.UNSUPPORTED_VERSION),
        ("unknown role", 1, by_hand(states[0], w.laptop, role="owner"), Code.MALFORMED),
        ("unknown field", 1, by_hand(states[0], w.laptop, note="hi"), Code.MALFORMED),
        ("non-canonical encoding (long array head)", 1, b"\x98\x03" + good[1:],
         Code.MALFORMED),
        ("trailing byte", 1, good + b"\x00", Code.MALFORMED),
    )]
    context = {
        **w.context(),
        "members": {n: {"account_secret": seed(f"account/{n}").hex(),
                        "account_id": people[n].account_id.hex(),
                        "registry": [e.hex() for e in entries[n]],
                        "device": {"signing_seed": seed(f"{n}/laptop/sign").hex(),
                                   "kx_seed": seed(f"{n}/laptop/kx").hex(),
                                   "device_id": devices[n].device_id.hex()}}
                    for n in people},
        "owner": "alice (the context account)",
    }
    return {"context": context, "valid": [
        valid("create", log[:1]),
        valid("create, add bob writer, add carol reader (by the phone)", log[:3]),
        valid("carol made admin removes bob; alice leaves", log),
        valid("two admins remove each other: the log's first wins (carol's)",
              [*log[:4], alice_out, carol_out]),
        valid("two admins remove each other: the log's first wins (alice's)",
              [*log[:4], carol_out, alice_out]),
    ], "invalid": invalid}


def _tree_heads() -> dict[str, Any]:
    relay = Ed25519SigningKey.from_seed(seed("relay"))
    tree = MerkleTree()
    for i in range(7):
        tree.append_leaf(f"leaf {i}".encode())
    heads = {n: sign_tree_head(relay, log=SPACE, size=n, root=tree.root(n), ts_ms=NOW_MS)
             for n in (3, 7)}
    other = sign_tree_head(relay, log=SPACE, size=7, root=bytes(32), ts_ms=NOW_MS)
    return {
        "context": {"relay_public_key": relay.public.raw.hex(), "log": SPACE.hex(),
                    "leaves": [f"leaf {i}".encode().hex() for i in range(7)]},
        "valid": [{"name": f"size {n}", "tree_head": h.hex(), "size": n,
                   "root": tree.root(n).hex()} for n, h in heads.items()],
        "progress": [
            {"name": "3 -> 7 consistent", "old": heads[3].hex(), "new": heads[7].hex(),
             "proof": [p.hex() for p in tree.consistency_proof(3, 7)], "code": None},
            {"name": "7 -> 3 rollback", "old": heads[7].hex(), "new": heads[3].hex(),
             "proof": [], "code": Code.LOG_ROLLBACK},
            {"name": "same size, other root (split view)", "old": heads[7].hex(),
             "new": other.hex(), "proof": [], "code": Code.PROOF_INVALID},
        ],
        "invalid": [
            {"name": "bit flip in the signature", "tree_head": _flip(
                heads[7], len(heads[7]) - 1).hex(), "code": Code.TREE_HEAD_INVALID},
            {"name": "another log", "tree_head": sign_tree_head(
                relay, log=bytes(16), size=7, root=tree.root(), ts_ms=NOW_MS).hex(),
             "code": Code.TREE_HEAD_INVALID},
        ],
    }


def _payloads() -> dict[str, Any]:
    """Op payloads and multi-part edits (protocol 8.11): one author's ops in chain
    order, read with ``payload.assemble``."""
    name = "notes"
    big = bytes(range(256)) * 10  # a 2,560-byte update: three parts of 1,024 bytes
    frame = len(encode({"n": name, "p": [0, 0, 0, bytes(32), b""]}))
    room = 1024 + frame + 64
    parts = pl.split_edit(name, [big], max_payload=room)
    whole = pl.encode_edit(name, [big])
    other = pl.encode_edit(name, [b"small update"])

    def part(index: int, count: int, total: int, digest: bytes, chunk: bytes,
             doc_name: str = name) -> bytes:
        return encode({"n": doc_name, "p": [index, count, total, digest, chunk]})

    digest = pl.parts_digest(whole)
    chunks = [whole[i * 1024:(i + 1) * 1024] for i in range(3)]

    def ops(*payloads: bytes, first_seq: int = 1) -> list[dict[str, Any]]:
        return [{"seq": first_seq + i, "payload": p.hex()} for i, p in enumerate(payloads)]

    def edit(e: bytes) -> dict[str, Any]:
        decoded = pl.decode_payload(e)
        assert isinstance(decoded, pl.Edit)  # noqa: S101 - built above
        return {"name": decoded.name, "updates": [u.hex() for u in decoded.updates]}

    valid = [
        {"name": "an edit in one op", "ops": ops(other), "edits": [edit(other)]},
        {"name": "an edit in three parts", "ops": ops(*parts), "edits": [edit(whole)],
         "whole": whole.hex(), "digest": digest.hex(), "max_payload": room},
        {"name": "parts abandoned, then the edit sent again", "ops": ops(
            parts[0], parts[1], *parts), "edits": [edit(whole)]},
        {"name": "a one-op edit abandons an open assembly", "ops": ops(parts[0], other),
         "edits": [edit(other)]},
    ]
    max_edit = DEFAULT_PROTOCOL_LIMITS.max_edit
    junk_digest = pl.parts_digest(b"\xa0" * 6)  # six empty maps: not one edit
    invalid = [{"name": n, "ops": o, "code": c} for n, o, c in (
        ("part 1 without part 0", ops(parts[1]), Code.MALFORMED),
        ("part 2 after part 0", ops(parts[0], parts[2]), Code.MALFORMED),
        ("parts at seqs that are not consecutive", [*ops(parts[0]), *ops(
            parts[1], parts[2], first_seq=3)], Code.MALFORMED),
        ("a part of another document name", ops(parts[0], part(
            1, 3, len(whole), digest, chunks[1], "todo"), parts[2]), Code.MALFORMED),
        ("chunks that do not match the digest", ops(parts[0], part(
            1, 3, len(whole), digest, bytes(len(chunks[1]))), parts[2]), Code.MALFORMED),
        ("chunks longer than the declared total", ops(part(0, 2, 10, digest, bytes(8)), part(
            1, 2, 10, digest, bytes(8))), Code.MALFORMED),
        ("chunks shorter than the declared total", ops(part(0, 2, 20, digest, bytes(8)), part(
            1, 2, 20, digest, bytes(8))), Code.MALFORMED),
        ("a whole that is not an edit", ops(*[part(i, 2, 6, junk_digest, b"\xa0" * 3)
                                              for i in range(2)]), Code.MALFORMED),
        ("a declared total beyond max_edit", ops(part(0, 2, max_edit + 1, digest, b"x")),
         Code.TOO_LARGE),
        ("a count beyond max_parts", ops(part(
            0, DEFAULT_PROTOCOL_LIMITS.max_parts + 1, 10**9, digest, b"x")), Code.TOO_LARGE),
        ("a part of one", ops(part(0, 1, 1, digest, b"x")), Code.MALFORMED),
        ("an empty chunk", ops(part(0, 2, 4, digest, b"")), Code.MALFORMED),
        ("an unknown field", ops(encode({"n": name, "u": [], "x": 1})), Code.MALFORMED),
        ("updates that are not byte strings", ops(encode({"n": name, "u": ["text"]})),
         Code.MALFORMED),
    )]
    return {"context": {"doc": DOC.hex(), "max_edit": max_edit,
                        "max_parts": DEFAULT_PROTOCOL_LIMITS.max_parts},
            "valid": valid, "invalid": invalid}


def generate() -> dict[str, Any]:
    """All vector files, by file name."""
    w = _World()
    makers: dict[str, Callable[[], dict[str, Any]]] = {
        "envelope.json": lambda: _envelopes(w),
        "registry.json": lambda: _registries(w),
        "key_package.json": lambda: _key_packages(w),
        "tree_head.json": _tree_heads,
        "snapshot.json": lambda: _snapshots(w),
        "payload.json": _payloads,
        "snapshot_chunked.json": lambda: _chunked_snapshots(w),
        "snapshot_attestation.json": lambda: _attestations(w),
        "membership.json": lambda: _memberships(w),
    }
    return {name: {"generator": "python -m sddsf.testing.vectorgen tests/vectors", **make()}
            for name, make in makers.items()}


def render(doc: dict[str, Any]) -> str:
    """The exact text written to a vector file."""
    return json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n"


def write(directory: Path) -> list[Path]:
    """Write every vector file into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, doc in generate().items():
        path = directory / name
        path.write_text(render(doc))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/vectors")):
        print(p)
