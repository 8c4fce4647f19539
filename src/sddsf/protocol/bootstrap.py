"""The first-sync bundle (protocol.md 17.9): what a new device's first sync
reads, in one message the relay signs.

Wire form::

    bundle = [version, body_bytes, signature]
    body   = {"v", "account", "device", "nonce", "ts", "registry", "policy", "spaces"}
    space  = {"space", "size", "root", "epoch", "head"}            required
           + {"keys"} + {"snaps"} + {"chunks"} + {"after", "ops"}    each optional
    snap   = [doc_id, covers_offset, blob, snapshot_id or null, [attestation, ...]]
    chunk  = [chunk_id, blob]
    op     = [offset, op_id, leaf_hash, envelope or null]

Every component is the byte string its own endpoint serves (registry entries
or null,
the relay's signed encryption policy or null, key packages, a signed tree head,
snapshot manifests, attestations, chunks, envelopes); a component the relay
left out (too large for one response) is absent, and the device asks its
endpoint. The relay signs
``labelled(BOOTSTRAP_SIG, body_bytes)`` with its tree-head key, binding the
bundle to the device's request (``account``, ``device``, ``nonce``): the
signature makes the bundle one attributable statement that cannot be altered
in transit, and gives no trust in its contents. A device verifies every
component with the same code as when its endpoint serves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from sddsf.crypto import Ed25519PublicKey, Ed25519SigningKey
from sddsf.errors import Code, DecodeError, ProofError
from sddsf.protocol import labels
from sddsf.protocol.encoding import DecodeLimits, encode
from sddsf.protocol.labels import labelled
from sddsf.protocol.schema import Fields, decode_signed, expect_list, expect_map

__all__ = ["BOOTSTRAP_FEATURE", "BOOTSTRAP_MAX_BYTES", "BOOTSTRAP_VERSION", "NONCE_SIZE",
           "RELAY_FEATURES", "Bootstrap",
           "BundledOp", "BundledSnapshot", "BundledSpace", "sign_bootstrap",
           "verify_bootstrap"]

BOOTSTRAP_VERSION: Final = 1
#: The name a relay lists in a session's ``features`` when it serves bundles.
BOOTSTRAP_FEATURE: Final = "bootstrap"
#: The optional features this build's relay serves (17.3.1).
RELAY_FEATURES: Final = (BOOTSTRAP_FEATURE,)
#: The largest bundle a device decodes (a relay sends at most its own budget).
BOOTSTRAP_MAX_BYTES: Final = 16 << 20
#: The device's request nonce, echoed in the signed body.
NONCE_SIZE: Final = 16
_LIMITS: Final = DecodeLimits(max_size=BOOTSTRAP_MAX_BYTES, max_depth=8, max_items=10_000)
_BODY: Final = ("v", "account", "device", "nonce", "ts", "registry", "policy", "spaces")
_SPACE: Final = ("space", "size", "root", "epoch", "head")
_SPACE_OPTIONAL: Final = ("keys", "snaps", "chunks", "after", "ops", "owner")
_U63: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class BundledSnapshot:
    """A stored snapshot (``blob`` None: none is stored under ``doc``) and the
    attestations about it, as the snapshot and attestation endpoints serve them."""

    doc: bytes
    covers_offset: int
    blob: bytes | None
    snapshot_id: bytes | None
    attestations: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class BundledOp:
    """One log entry, as a pull serves it (``envelope`` None once pruned)."""

    offset: int
    op_id: bytes
    leaf_hash: bytes
    envelope: bytes | None


@dataclass(frozen=True, slots=True)
class BundledSpace:
    """One space of the account. ``keys`` None: not included; ``ops`` are the
    entries after ``after`` (``after`` None: no tail included)."""

    space_id: bytes
    size: int
    root: bytes
    epoch: int
    head: bytes
    keys: tuple[bytes, ...] | None = None
    snapshots: tuple[BundledSnapshot, ...] = ()
    chunks: Mapping[bytes, bytes] = field(default_factory=dict)
    after: int | None = None
    ops: tuple[BundledOp, ...] = ()
    #: The space's owner when it is not the bundle's account (a space shared
    #: with it, protocol 21.7); None: the account's own.
    owner: bytes | None = None


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """A verified bundle: its relay signature and its binding to the request
    checked, its components not (each is verified where it is used)."""

    account: bytes
    device: bytes
    ts: int
    registry: tuple[bytes, ...] | None
    policy: bytes | None
    spaces: tuple[BundledSpace, ...]


def _space_map(s: BundledSpace) -> dict[str, object]:
    out: dict[str, object] = {"space": s.space_id, "size": s.size, "root": s.root,
                              "epoch": s.epoch, "head": s.head}
    if s.keys is not None:
        out["keys"] = list(s.keys)
    if s.snapshots:
        out["snaps"] = [[n.doc, n.covers_offset, n.blob, n.snapshot_id, list(n.attestations)]
                        for n in s.snapshots]
    if s.chunks:
        out["chunks"] = [[cid, blob] for cid, blob in s.chunks.items()]
    if s.after is not None:
        out["after"] = s.after
        out["ops"] = [[o.offset, o.op_id, o.leaf_hash, o.envelope] for o in s.ops]
    if s.owner is not None:
        out["owner"] = s.owner
    return out


def sign_bootstrap(key: Ed25519SigningKey, *, account: bytes, device: bytes, nonce: bytes,
                   ts_ms: int, registry: Sequence[bytes] | None, policy: bytes | None,
                   spaces: Sequence[BundledSpace]) -> bytes:
    """Encode and sign a bundle (relay side)."""
    body = encode({"v": BOOTSTRAP_VERSION, "account": account, "device": device,
                   "nonce": nonce, "ts": ts_ms, "policy": policy,
                   "registry": list(registry) if registry is not None else None,
                   "spaces": [_space_map(s) for s in spaces]})
    return encode([BOOTSTRAP_VERSION, body, key.sign(labelled(labels.BOOTSTRAP_SIG, body))])


def verify_bootstrap(data: bytes, relay_key: Ed25519PublicKey, *, account: bytes,
                     device: bytes, nonce: bytes) -> Bootstrap:
    """Decode a bundle and check its signature and its binding to the request.

    Raises:
        DecodeError: malformed, too large, or an unsupported version.
        ProofError: ``tree_head_invalid`` when the relay key's signature does not
            verify, or the bundle answers another request (account, device, nonce).
    """
    f, body, sig = decode_signed(data, what="bootstrap bundle", version=BOOTSTRAP_VERSION,
                                 fields=_BODY, limits=_LIMITS)
    if not relay_key.is_valid_signature(labelled(labels.BOOTSTRAP_SIG, body), sig):
        raise ProofError("the relay's signature on the bootstrap bundle does not verify: it "
                         "was altered on the way", Code.TREE_HEAD_INVALID)
    if (f.bytes_("account", size=32), f.bytes_("device", size=32),
            f.bytes_("nonce", size=NONCE_SIZE)) != (account, device, nonce):
        raise ProofError("the bootstrap bundle answers another request (account, device or "
                         "nonce): a replayed or misdirected answer", Code.TREE_HEAD_INVALID)
    registry = None if f.raw("registry") is None else tuple(
        _bytes_items(f.list_("registry", max_items=10_000), "registry"))
    spaces = tuple(_space(expect_map(s, "bootstrap space", _SPACE, _SPACE_OPTIONAL))
                   for s in f.list_("spaces", max_items=10_000))
    return Bootstrap(account, device, f.int_("ts"), registry,
                     _opt_bytes(f.raw("policy"), "policy"), spaces)


def _bytes_items(items: list[object], what: str) -> list[bytes]:
    if not all(isinstance(x, bytes) for x in items):
        raise DecodeError(f"bootstrap {what}: expected byte strings", Code.MALFORMED)
    return items  # type: ignore[return-value]  # checked just above


def _tuple(value: object, what: str, size: int) -> list[object]:
    items = expect_list(value, f"bootstrap {what}", max_items=size)
    if len(items) != size:
        raise DecodeError(f"bootstrap {what}: expected {size} items", Code.MALFORMED)
    return items


def _opt_bytes(value: object, what: str) -> bytes | None:
    if value is not None and not isinstance(value, bytes):
        raise DecodeError(f"bootstrap {what}: expected bytes or null", Code.MALFORMED)
    return value


def _int(value: object, what: str, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= _U63:
        raise DecodeError(f"bootstrap {what}: expected an integer >= {lo}", Code.MALFORMED)
    return value


def _space(f: Fields) -> BundledSpace:
    keys = (tuple(_bytes_items(f.list_("keys", max_items=10_000), "keys"))
            if f.has("keys") else None)
    snaps = []
    for raw in f.list_("snaps", max_items=2) if f.has("snaps") else []:
        doc, covers, blob, sid, atts = _tuple(raw, "snapshot", 5)
        snaps.append(BundledSnapshot(
            _bytes_items([doc], "snapshot doc")[0], _int(covers, "covers_offset", -1),
            _opt_bytes(blob, "snapshot blob"), _opt_bytes(sid, "snapshot id"),
            tuple(_bytes_items(expect_list(atts, "bootstrap attestations", max_items=10_000),
                               "attestations"))))
    chunks: dict[bytes, bytes] = {}
    for raw in f.list_("chunks", max_items=10_000) if f.has("chunks") else []:
        cid, blob = _bytes_items(_tuple(raw, "chunk", 2), "chunk")
        chunks[cid] = blob
    if f.has("after") != f.has("ops"):
        raise DecodeError("bootstrap space: 'after' and 'ops' come together", Code.MALFORMED)
    ops = []
    for raw in f.list_("ops", max_items=10_000) if f.has("ops") else []:
        offset, op_id, leaf, env = _tuple(raw, "op", 4)
        ids = _bytes_items([op_id, leaf], "op")
        ops.append(BundledOp(_int(offset, "op offset"), ids[0], ids[1],
                             _opt_bytes(env, "op envelope")))
    return BundledSpace(
        f.bytes_("space", size=16), f.int_("size", hi=_U63), f.bytes_("root", size=32),
        _int(f.raw("epoch"), "epoch", -1), f.bytes_("head", max_size=1024), keys,
        tuple(snaps), chunks, _int(f.raw("after"), "after", -1) if f.has("after") else None,
        tuple(ops), f.bytes_("owner", size=32) if f.has("owner") else None)
