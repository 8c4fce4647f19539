"""Signed encrypted space snapshots (:mod:`sddsf.protocol.snapshot`, protocol.md section 18).

* seal/verify round trip, for every frontier shape and for arbitrary docs;
* the wire format, restated by hand from the specification, gives the same bytes;
* every rejection with its error class and code, and the order of the checks;
* the size limit at seal (``UsageError``) and at verify (``too_large``);
* ``decode_snapshot`` reads the claims without checking them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import (
    D1,
    D2,
    D3,
    EPOCH_KEY,
    NOW_MS,
    OTHER_EPOCH_KEY,
    OTHER_SPACE,
    SPACE,
    STRANGER,
    base_registry,
    revoked_registry,
)
from sddsf.crypto import aead_encrypt, hkdf_sha256
from sddsf.errors import (
    AuthorizationError,
    Code,
    ContextError,
    DecodeError,
    DecryptError,
    EpochError,
    ProofError,
    SddsfError,
    SignatureError,
    UsageError,
)
from sddsf.protocol import labels
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import DeviceKeys
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.merkle import Frontier, MerkleTree, leaf_hash
from sddsf.protocol.registry import RegistryState, revoke_device
from sddsf.protocol.rules import ChainHead
from sddsf.protocol.snapshot import (
    SNAPSHOT_VERSION,
    SPACE_SNAPSHOT_DOC,
    Snapshot,
    decode_snapshot,
    seal_snapshot,
    verify_snapshot,
)
from sddsf.protocol.vv import VersionVector
from sddsf.testing import vectorgen as vg

NONCE = bytes([0x24]) * 24
KEYS = {0: EPOCH_KEY, 1: OTHER_EPOCH_KEY}
DOCS = {"notes": b"yjs state of notes", "todo": b"yjs state of todo", "": b""}
CHAINS = {
    D1.device_id: ChainHead(3, bytes([0xA1]) * 32, VersionVector({D2.device_id: 2})),
    D2.device_id: ChainHead(2, bytes([0xA2]) * 32, VersionVector({D1.device_id: 1})),
}


def tree(size: int) -> MerkleTree:
    return MerkleTree(leaf_hash(f"entry {i}".encode()) for i in range(size))


def seal(author: DeviceKeys = D1, *, size: int = 5, epoch: int = 0, space: bytes = SPACE,
         docs: Mapping[str, bytes] = DOCS, chains: Mapping[bytes, ChainHead] = CHAINS,
         limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS, nonce: bytes = NONCE) -> bytes:
    return seal_snapshot(author, space=space, epoch=epoch, epoch_key=KEYS[epoch], size=size,
                         frontier=tree(size).frontier(), chains=chains, docs=docs,
                         ts_ms=NOW_MS, nonce=nonce, limits=limits)


def verify(data: bytes, registry: RegistryState | None = None, *, space: bytes = SPACE,
           keys: Mapping[int, bytes] = KEYS,
           limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS) -> Snapshot:
    return verify_snapshot(data, registry=registry or base_registry().state, space=space,
                           epoch_keys=keys, limits=limits)


# ----------------------------------------------------- the format, by hand


def snapshot_key(epoch_key: bytes, space: bytes, epoch: int) -> bytes:
    return hkdf_sha256(epoch_key, salt=b"sddsf/v1/snapshot/key",
                       info=encode(["sddsf/v1/snapshot/key", space, epoch]))


def header(writer: DeviceKeys = D1, size: int = 5, **over: object) -> dict[str, Any]:
    t = tree(size)
    base: dict[str, Any] = {
        "v": 1, "space": SPACE, "author": writer.device_id, "epoch": 0, "size": size,
        "root": t.root(), "frontier": t.frontier().to_hashes(),
        "chains": [[a, h.seq, h.op_id, h.deps.to_wire()] for a, h in sorted(CHAINS.items())],
        "ts": NOW_MS, "nonce": NONCE}
    return {**base, **over}


PAYLOAD: dict[str, object] = {"docs": [[n, DOCS[n]] for n in sorted(DOCS)]}


def by_hand(hdr: dict[str, Any] | None = None, *, payload: object = PAYLOAD,
            signer: DeviceKeys = D1, epoch_key: bytes = EPOCH_KEY,
            key: bytes | None = None, ad: bytes | None = None,
            extra: Mapping[str, object] | None = None, drop: str | None = None,
            sig_label: str = "sddsf/v1/snapshot/sig", version: object = 1,
            flip_ct: bool = False) -> bytes:
    """A snapshot built from the specification's text, with any part replaced."""
    h = header() if hdr is None else hdr
    header_bytes = encode(h)
    k = key if key is not None else snapshot_key(epoch_key, h["space"], h["epoch"])
    ct = aead_encrypt(k, NONCE, encode(payload),
                      ad if ad is not None else encode(["sddsf/v1/snapshot/ad", header_bytes]))
    if flip_ct:
        ct = bytes([ct[0] ^ 1]) + ct[1:]
    body_map = {**h, **(extra or {}), "ct": ct}
    if drop is not None:
        del body_map[drop]
    body = encode(body_map)
    return encode([version, body, signer.sign(encode([sig_label, body]))])


def test_the_specification_restated_by_hand_gives_the_same_bytes() -> None:
    assert by_hand() == seal()
    assert labels.SNAPSHOT_SIG == "sddsf/v1/snapshot/sig"
    assert labels.SNAPSHOT_AD == "sddsf/v1/snapshot/ad"
    assert labels.SNAPSHOT_KEY == "sddsf/v1/snapshot/key"
    assert SNAPSHOT_VERSION == 1
    assert len(SPACE_SNAPSHOT_DOC) == 16 and not any(SPACE_SNAPSHOT_DOC)
    assert DEFAULT_PROTOCOL_LIMITS.max_snapshot == 700 * 1024


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 13, 64, 100])
def test_round_trip(size: int) -> None:
    raw = seal(size=size)
    snap = verify(raw)
    t = tree(size)
    assert snap.raw == raw
    assert (snap.space, snap.author, snap.epoch, snap.size, snap.ts) == (
        SPACE, D1.device_id, 0, size, NOW_MS)
    assert snap.root == t.root()
    assert list(snap.frontier) == t.frontier().to_hashes()
    assert len(snap.frontier) == size.bit_count()
    assert dict(snap.chains) == CHAINS
    assert dict(snap.docs) == DOCS
    # What a device does with it: a tree from the frontier has the snapshot's root.
    assert MerkleTree.from_frontier(Frontier.from_hashes(snap.size, snap.frontier)).root() \
        == snap.root


def test_round_trip_by_another_active_device_at_a_later_epoch() -> None:
    snap = verify(seal(D2, epoch=1, docs={}, chains={}))
    assert (snap.author, snap.epoch, dict(snap.docs), dict(snap.chains)) == (
        D2.device_id, 1, {}, {})


def test_sealing_depends_on_the_nonce_only_through_the_ciphertext() -> None:
    a, b = seal(), seal(nonce=bytes([0x25]) * 24)
    assert a != b
    assert seal() == a  # deterministic given its inputs
    assert verify(a).docs == verify(b).docs == DOCS


@settings(max_examples=40)
@given(size=st.integers(1, 300),
       docs=st.dictionaries(st.text(max_size=256), st.binary(max_size=64), max_size=6),
       ts=st.integers(0, 2**64 - 1), epoch=st.sampled_from([0, 1]))
def test_round_trip_property(size: int, docs: dict[str, bytes], ts: int, epoch: int) -> None:
    raw = seal_snapshot(D2, space=SPACE, epoch=epoch, epoch_key=KEYS[epoch], size=size,
                        frontier=tree(size).frontier(), chains=CHAINS, docs=docs, ts_ms=ts,
                        nonce=NONCE)
    snap = verify(raw)
    assert (dict(snap.docs), snap.size, snap.ts, snap.epoch) == (docs, size, ts, epoch)
    assert snap.root == tree(size).root()


# ---------------------------------------------------------------- rejections

REJECTIONS: list[tuple[str, Callable[[], Snapshot], type[SddsfError], Code]] = [
    ("another space", lambda: verify(seal(space=OTHER_SPACE)), ContextError,
     Code.WRONG_CONTEXT),
    ("read in another space", lambda: verify(seal(), space=OTHER_SPACE), ContextError,
     Code.WRONG_CONTEXT),
    ("unknown author", lambda: verify(seal(STRANGER)), AuthorizationError, Code.UNKNOWN_DEVICE),
    ("revoked author", lambda: verify(seal(D3), revoked_registry().state), AuthorizationError,
     Code.REVOKED),
    ("author revoked after writing it", lambda: verify(seal(D2), base_registry().then(
        revoke_device(base_registry().state, D1, D2.device_id, "lost", NOW_MS + 9)).state),
     AuthorizationError, Code.REVOKED),
    ("signature by another device", lambda: verify(by_hand(signer=D2)), SignatureError,
     Code.SIG_INVALID),
    ("signature under another label", lambda: verify(by_hand(sig_label=labels.OP_SIG)),
     SignatureError, Code.SIG_INVALID),
    ("root is not the frontier's", lambda: verify(by_hand(header(root=tree(6).root()))),
     ProofError, Code.PROOF_INVALID),
    ("frontier in the wrong order",
     lambda: verify(by_hand(header(frontier=tree(5).frontier().to_hashes()[::-1]))),
     ProofError, Code.PROOF_INVALID),
    ("frontier with a hash too few",
     lambda: verify(by_hand(header(size=7, root=tree(5).root(),
                                   frontier=tree(5).frontier().to_hashes()))),
     ProofError, Code.PROOF_INVALID),
    ("frontier hash of 31 bytes",
     lambda: verify(by_hand(header(frontier=[h[:31] for h in tree(5).frontier().to_hashes()]))),
     ProofError, Code.PROOF_INVALID),
    ("frontier item not bytes", lambda: verify(by_hand(header(frontier=[1, 2]))), DecodeError,
     Code.MALFORMED),
    ("frontier of 65 items", lambda: verify(by_hand(header(frontier=[bytes(32)] * 65))),
     DecodeError, Code.TOO_LARGE),
    ("epoch without a key", lambda: verify(seal(epoch=1), keys={0: EPOCH_KEY}), EpochError,
     Code.UNKNOWN_EPOCH),
    ("ciphertext flipped, re-signed", lambda: verify(by_hand(flip_ct=True)), DecryptError,
     Code.DECRYPT_FAILED),
    ("the reader's key for the epoch differs", lambda: verify(seal(), keys={0: OTHER_EPOCH_KEY}),
     DecryptError, Code.DECRYPT_FAILED),
    ("header changed after encryption",
     lambda: verify(by_hand(ad=encode([labels.SNAPSHOT_AD, encode(header(ts=1))]))),
     DecryptError, Code.DECRYPT_FAILED),
    ("associated data without its label", lambda: verify(by_hand(ad=encode(header()))),
     DecryptError, Code.DECRYPT_FAILED),
    ("key derived for another space",
     lambda: verify(by_hand(key=snapshot_key(EPOCH_KEY, OTHER_SPACE, 0))), DecryptError,
     Code.DECRYPT_FAILED),
    ("key derived for another epoch",
     lambda: verify(by_hand(key=snapshot_key(EPOCH_KEY, SPACE, 1))), DecryptError,
     Code.DECRYPT_FAILED),
    ("the epoch key itself", lambda: verify(by_hand(key=EPOCH_KEY)), DecryptError,
     Code.DECRYPT_FAILED),
    ("version 2", lambda: verify(by_hand(version=2)), DecodeError, Code.UNSUPPORTED_VERSION),
    ("body version 2", lambda: verify(by_hand(header(v=2))), DecodeError,
     Code.UNSUPPORTED_VERSION),
    ("version not an integer", lambda: verify(by_hand(version="1")), DecodeError,
     Code.MALFORMED),
    ("trailing byte", lambda: verify(seal() + b"\x00"), DecodeError, Code.MALFORMED),
    ("truncated", lambda: verify(seal()[:-1]), DecodeError, Code.MALFORMED),
    ("not an array", lambda: verify(encode({"v": 1})), DecodeError, Code.MALFORMED),
    ("short signature", lambda: verify(encode([1, decode_body(seal()), bytes(63)])),
     DecodeError, Code.MALFORMED),
    ("unknown field", lambda: verify(by_hand(extra={"x": 1})), DecodeError, Code.MALFORMED),
    ("missing ciphertext", lambda: verify(by_hand(drop="ct")), DecodeError, Code.MALFORMED),
    ("missing frontier", lambda: verify(by_hand(drop="frontier")), DecodeError,
     Code.MALFORMED),
    ("space of 15 bytes", lambda: verify(by_hand(header(space=SPACE[:15]))), DecodeError,
     Code.MALFORMED),
    ("size 0", lambda: verify(by_hand(header(size=0, frontier=[]))), DecodeError,
     Code.MALFORMED),
    ("negative epoch", lambda: verify(by_hand(header(epoch=-1))), DecodeError, Code.MALFORMED),
    ("nonce of 23 bytes", lambda: verify(by_hand(header(nonce=NONCE[:23]))), DecodeError,
     Code.MALFORMED),
    ("chains not sorted",
     lambda: verify(by_hand(header(chains=header()["chains"][::-1]))), DecodeError,
     Code.MALFORMED),
    ("chains with a repeated author",
     lambda: verify(by_hand(header(chains=header()["chains"][:1] * 2))), DecodeError,
     Code.MALFORMED),
    ("chain row of 3 items",
     lambda: verify(by_hand(header(chains=[header()["chains"][0][:3]]))), DecodeError,
     Code.MALFORMED),
    ("chain seq 0",
     lambda: verify(by_hand(header(chains=[[D1.device_id, 0, bytes(32), []]]))), DecodeError,
     Code.MALFORMED),
    ("chain op id of 31 bytes",
     lambda: verify(by_hand(header(chains=[[D1.device_id, 1, bytes(31), []]]))), DecodeError,
     Code.MALFORMED),
    ("chain deps not sorted",
     lambda: verify(by_hand(header(chains=[[D1.device_id, 1, bytes(32), sorted(
         [[D2.device_id, 1], [D3.device_id, 1]], reverse=True)]]))), DecodeError,
     Code.MALFORMED),
    ("duplicate doc name", lambda: verify(by_hand(payload={"docs": [["a", b""], ["a", b""]]})),
     DecodeError, Code.MALFORMED),
    ("doc name of 257 characters",
     lambda: verify(by_hand(payload={"docs": [["n" * 257, b""]]})), DecodeError,
     Code.MALFORMED),
    ("doc state not bytes", lambda: verify(by_hand(payload={"docs": [["a", "text"]]})),
     DecodeError, Code.MALFORMED),
    ("doc row of 1 item", lambda: verify(by_hand(payload={"docs": [["a"]]})),
     DecodeError, Code.MALFORMED),
    ("doc row of 3 items", lambda: verify(by_hand(payload={"docs": [["a", b"", b""]]})),
     DecodeError, Code.TOO_LARGE),
    ("payload with an unknown field", lambda: verify(by_hand(payload={**PAYLOAD, "x": 1})),
     DecodeError, Code.MALFORMED),
    ("payload not a map", lambda: verify(by_hand(payload=PAYLOAD["docs"])), DecodeError,
     Code.MALFORMED),
    ("payload not canonical", lambda: verify(by_hand(payload=b"\xa1")), DecodeError,
     Code.MALFORMED),
    ("over max_snapshot", lambda: verify(bytes(DEFAULT_PROTOCOL_LIMITS.max_snapshot + 1)),
     DecodeError, Code.TOO_LARGE),
    ("over a lowered max_snapshot",
     lambda: verify(seal(), limits=ProtocolLimits(max_snapshot=len(seal()) - 1)), DecodeError,
     Code.TOO_LARGE),
    ("more chains than max_devices",
     lambda: verify(seal(), limits=ProtocolLimits(max_devices=1)), DecodeError,
     Code.TOO_LARGE),
]


def decode_body(raw: bytes) -> bytes:
    outer = decode(raw)
    assert isinstance(outer, list) and isinstance(outer[1], bytes)
    return outer[1]


@pytest.mark.parametrize(("call", "cls", "code"), [r[1:] for r in REJECTIONS],
                         ids=[r[0] for r in REJECTIONS])
def test_rejection(call: Callable[[], Snapshot], cls: type[SddsfError], code: Code) -> None:
    with pytest.raises(cls) as info:
        call()
    assert info.value.code is code


def test_the_valid_baselines_of_the_rejections_verify() -> None:
    # Every rejection above changes one thing in a snapshot that verifies.
    assert verify(by_hand()).docs == DOCS
    assert verify(seal(D3), base_registry().then(revoked_registry().entries[2]).state).author \
        == D3.device_id
    assert verify(seal(D2)).author == D2.device_id
    assert verify(seal(epoch=1)).epoch == 1
    assert verify(by_hand(header(chains=[[D1.device_id, 1, bytes(32), sorted(
        [[D2.device_id, 1], [D3.device_id, 1]])]]))).chains[D1.device_id].seq == 1
    assert verify(by_hand(payload={"docs": [["n" * 256, b""]]})).docs == {"n" * 256: b""}
    assert verify(seal(), limits=ProtocolLimits(max_snapshot=len(seal()))).size == 5
    assert verify(seal(), limits=ProtocolLimits(max_devices=2)).size == 5


# The checks run in a fixed order (section 18.4): a snapshot with two faults
# reports the first. Each pair below is (fault checked first, fault checked later).
ORDER: list[tuple[str, Callable[[], Snapshot], Code]] = [
    ("space before author", lambda: verify(seal(STRANGER, space=OTHER_SPACE)),
     Code.WRONG_CONTEXT),
    ("author before signature", lambda: verify(by_hand(header(STRANGER))), Code.UNKNOWN_DEVICE),
    ("revocation before signature",
     lambda: verify(by_hand(header(D3), signer=D1), revoked_registry().state), Code.REVOKED),
    ("signature before frontier",
     lambda: verify(by_hand(header(root=bytes(32)), signer=D2)), Code.SIG_INVALID),
    ("frontier before epoch", lambda: verify(by_hand(header(root=bytes(32), epoch=7))),
     Code.PROOF_INVALID),
    ("epoch before decryption", lambda: verify(by_hand(header(epoch=7), flip_ct=True)),
     Code.UNKNOWN_EPOCH),
    ("decryption before chains",
     lambda: verify(by_hand(header(chains=[[b"x", 0, b"", None]]), flip_ct=True)),
     Code.DECRYPT_FAILED),
]


@pytest.mark.parametrize(("call", "code"), [o[1:] for o in ORDER], ids=[o[0] for o in ORDER])
def test_order_of_checks(call: Callable[[], Snapshot], code: Code) -> None:
    with pytest.raises(SddsfError) as info:
        call()
    assert info.value.code is code


# ------------------------------------------------------------------- sealing


def test_seal_enforces_the_size_limit_exactly() -> None:
    limit = DEFAULT_PROTOCOL_LIMITS.max_snapshot
    probe = len(seal(docs={"big": bytes(600_000)}))
    fits = 600_000 + limit - probe  # every length prefix keeps its width around here
    raw = seal(docs={"big": bytes(fits)})
    assert len(raw) == limit
    assert verify(raw).docs["big"] == bytes(fits)
    with pytest.raises(UsageError, match="exceeds the limit"):
        seal(docs={"big": bytes(fits + 1)})
    # The verifier's check agrees: one byte more is too large, before decoding.
    with pytest.raises(DecodeError) as info:
        verify(raw + b"\x00")
    assert info.value.code is Code.TOO_LARGE


def test_seal_enforces_a_lowered_limit() -> None:
    n = len(seal())
    assert len(seal(limits=ProtocolLimits(max_snapshot=n))) == n
    with pytest.raises(UsageError):
        seal(limits=ProtocolLimits(max_snapshot=n - 1))


@pytest.mark.parametrize(("name", "kwargs"), [
    ("frontier of another size", {"size": 4}),
    ("size 0", {"size": 0, "frontier": Frontier()}),
    ("nonce of 23 bytes", {"nonce": bytes(23)}),
    ("epoch key of 31 bytes", {"epoch_key": bytes(31)}),
])
def test_seal_refuses_inconsistent_arguments(name: str, kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"space": SPACE, "epoch": 0, "epoch_key": EPOCH_KEY, "size": 5,
                            "frontier": tree(5).frontier(), "chains": CHAINS, "docs": DOCS,
                            "ts_ms": NOW_MS, "nonce": NONCE, **kwargs}
    with pytest.raises(UsageError):
        seal_snapshot(D1, **args)


# ------------------------------------------------------------ decode_snapshot


def test_decode_snapshot_reads_the_claims() -> None:
    assert decode_snapshot(seal(D2, size=9)) == (SPACE, D2.device_id, 9)


@pytest.mark.parametrize("raw", [
    seal(STRANGER, space=OTHER_SPACE),  # unknown author, another space
    by_hand(signer=D2),  # bad signature
    by_hand(header(root=bytes(32))),  # frontier does not fold to the root
    by_hand(flip_ct=True),  # does not decrypt
], ids=["stranger in another space", "bad signature", "bad frontier", "bad ciphertext"])
def test_decode_snapshot_checks_structure_only(raw: bytes) -> None:
    body = decode(decode_body(raw))
    assert isinstance(body, dict)
    assert decode_snapshot(raw) == (body["space"], body["author"], body["size"])


@pytest.mark.parametrize(("raw", "code"), [
    (b"", Code.MALFORMED),
    (seal()[:-1], Code.MALFORMED),
    (by_hand(version=2), Code.UNSUPPORTED_VERSION),
    (by_hand(extra={"x": 1}), Code.MALFORMED),
    (by_hand(header(size=0, frontier=[])), Code.MALFORMED),
    (by_hand(header(author=bytes(31))), Code.MALFORMED),
    (bytes(DEFAULT_PROTOCOL_LIMITS.max_snapshot + 1), Code.TOO_LARGE),
], ids=["empty", "truncated", "version 2", "unknown field", "size 0", "short author",
        "too large"])
def test_decode_snapshot_rejects_bad_structure(raw: bytes, code: Code) -> None:
    with pytest.raises(DecodeError) as info:
        decode_snapshot(raw)
    assert info.value.code is code


def test_decode_snapshot_honours_lowered_limits() -> None:
    raw = seal()
    assert decode_snapshot(raw, limits=ProtocolLimits(max_snapshot=len(raw)))[2] == 5
    with pytest.raises(DecodeError) as info:
        decode_snapshot(raw, limits=ProtocolLimits(max_snapshot=len(raw) - 1))
    assert info.value.code is Code.TOO_LARGE


@pytest.mark.parametrize("docs", [{"x" * 257: b"s"}, {f"d{i}": b"s" for i in range(1025)}],
                         ids=["name of 257 chars", "1025 docs"])
def test_seal_refuses_what_no_reader_would_load(docs: dict[str, bytes]) -> None:
    # A published snapshot that readers refuse would strand new devices (they do
    # not fall back to replay on a bad snapshot, and the relay prunes under it).
    w = vg._World()
    tree = MerkleTree([leaf_hash(b"x")])
    with pytest.raises(UsageError, match="at most"):
        seal_snapshot(w.laptop, space=vg.SPACE, epoch=0, epoch_key=w.epoch_key, size=1,
                      frontier=tree.frontier(), chains={}, docs=docs, ts_ms=1, nonce=bytes(24))


def test_largest_allowed_snapshot_contents_verify() -> None:
    w = vg._World()
    tree = MerkleTree([leaf_hash(b"x")])
    docs = {f"{i:04d}" + "n" * 252: b"s" for i in range(1024)}
    raw = seal_snapshot(w.laptop, space=vg.SPACE, epoch=0, epoch_key=w.epoch_key, size=1,
                        frontier=tree.frontier(), chains={}, docs=docs, ts_ms=1, nonce=bytes(24))
    snap = verify_snapshot(raw, registry=w.state, space=vg.SPACE, epoch_keys={0: w.epoch_key})
    assert dict(snap.docs) == docs
