"""Signed tree heads and the client's progress check (sddsf.protocol.treehead).

Covers: sign/verify round trip and decoded fields; rejections with
``tree_head_invalid`` (another log, tampered signature, another relay key,
signature over another body); decode refusals (version, sizes, shape, limit);
check_progress: first head, growth with a valid consistency proof, equal heads,
a smaller size (``log_rollback``), the same size with another root, an
inconsistent or empty proof, a proof for a forked log (``proof_invalid``) and
heads of two logs (``tree_head_invalid``). Merkle trees come from
sddsf.protocol.merkle.MerkleTree, which has its own tests.
"""

from __future__ import annotations

import pytest

from factories import OTHER_SPACE, SPACE, seed
from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import Code, DecodeError, ProofError
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.limits import ProtocolLimits
from sddsf.protocol.merkle import MerkleTree
from sddsf.protocol.treehead import (
    TreeHead,
    check_progress,
    decode_tree_head,
    sign_tree_head,
    verify_tree_head,
)

RELAY = Ed25519SigningKey.from_seed(seed(0x60))
OTHER_RELAY = Ed25519SigningKey.from_seed(seed(0x61))
TS = 1_700_000_000_000


def tree(n: int, prefix: bytes = b"op") -> MerkleTree:
    t = MerkleTree()
    for i in range(n):
        t.append_leaf(prefix + i.to_bytes(4, "big"))
    return t


def head(t: MerkleTree, size: int | None = None, *, log: bytes = SPACE) -> TreeHead:
    size = t.size if size is None else size
    data = sign_tree_head(RELAY, log=log, size=size, root=t.root(size), ts_ms=TS)
    return verify_tree_head(data, RELAY.public, log=log)


def assert_proof_error(code: Code, old: TreeHead | None, new: TreeHead,
                       proof: list[bytes]) -> None:
    with pytest.raises(ProofError) as info:
        check_progress(old, new, proof)
    assert info.value.code is code


# ------------------------------------------------------------- sign / verify


def test_sign_verify_round_trip() -> None:
    t = tree(5)
    data = sign_tree_head(RELAY, log=SPACE, size=5, root=t.root(), ts_ms=TS)
    th = verify_tree_head(data, RELAY.public, log=SPACE)
    assert (th.log, th.size, th.root, th.ts, th.raw) == (SPACE, 5, t.root(), TS, data)
    assert decode_tree_head(data) == th


def test_empty_log_head() -> None:
    t = MerkleTree()
    th = verify_tree_head(sign_tree_head(RELAY, log=SPACE, size=0, root=t.root(), ts_ms=TS),
                          RELAY.public, log=SPACE)
    assert th.size == 0


def test_wrong_log() -> None:
    data = sign_tree_head(RELAY, log=SPACE, size=1, root=tree(1).root(), ts_ms=TS)
    with pytest.raises(ProofError) as info:
        verify_tree_head(data, RELAY.public, log=OTHER_SPACE)
    assert info.value.code is Code.TREE_HEAD_INVALID


def test_other_relay_key() -> None:
    data = sign_tree_head(OTHER_RELAY, log=SPACE, size=1, root=tree(1).root(), ts_ms=TS)
    with pytest.raises(ProofError) as info:
        verify_tree_head(data, RELAY.public, log=SPACE)
    assert info.value.code is Code.TREE_HEAD_INVALID


@pytest.mark.parametrize("pos", [0, 31, 32, 63])
def test_tampered_signature(pos: int) -> None:
    outer = decode(sign_tree_head(RELAY, log=SPACE, size=1, root=tree(1).root(), ts_ms=TS))
    assert isinstance(outer, list)
    sig = bytearray(outer[2])
    sig[pos] ^= 0x40
    with pytest.raises(ProofError) as info:
        verify_tree_head(encode([outer[0], outer[1], bytes(sig)]), RELAY.public, log=SPACE)
    assert info.value.code is Code.TREE_HEAD_INVALID


def test_signature_moved_to_another_body() -> None:
    a = decode(sign_tree_head(RELAY, log=SPACE, size=1, root=tree(1).root(), ts_ms=TS))
    b = decode(sign_tree_head(RELAY, log=SPACE, size=2, root=tree(2).root(), ts_ms=TS))
    assert isinstance(a, list) and isinstance(b, list)
    with pytest.raises(ProofError) as info:
        verify_tree_head(encode([1, b[1], a[2]]), RELAY.public, log=SPACE)
    assert info.value.code is Code.TREE_HEAD_INVALID


# ----------------------------------------------------------- decode refusals


def _body(**changes: object) -> bytes:
    body = {"v": 1, "log": SPACE, "size": 1, "root": bytes(32), "ts": TS}
    body.update(changes)
    return encode(body)


@pytest.mark.parametrize("version", [0, 2, True])
def test_unsupported_outer_version(version: object) -> None:
    with pytest.raises(DecodeError) as info:
        decode_tree_head(encode([version, _body(), bytes(64)]))
    assert info.value.code is (Code.MALFORMED if version is True else Code.UNSUPPORTED_VERSION)


def test_unsupported_body_version() -> None:
    with pytest.raises(DecodeError) as info:
        decode_tree_head(encode([1, _body(v=2), bytes(64)]))
    assert info.value.code is Code.UNSUPPORTED_VERSION


@pytest.mark.parametrize(
    "data",
    [encode([1, _body(root=bytes(31)), bytes(64)]), encode([1, _body(size=-1), bytes(64)]),
     encode([1, _body(log="space"), bytes(64)]), encode([1, _body(), bytes(63)]),
     encode([1, _body()]), encode([1, "body", bytes(64)]), encode({"v": 1}),
     encode([1, encode({"v": 1, "log": SPACE}), bytes(64)]),
     encode([1, _body(extra=1), bytes(64)])],
    ids=["short-root", "negative-size", "text-log", "short-sig", "two", "text-body", "map",
         "missing-fields", "extra-field"],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_tree_head(data)
    assert info.value.code is Code.MALFORMED


def test_log_id_over_64_bytes_is_too_large() -> None:
    with pytest.raises(DecodeError) as info:
        decode_tree_head(encode([1, _body(log=bytes(65)), bytes(64)]))
    assert info.value.code is Code.TOO_LARGE


def test_too_large_tree_head() -> None:
    with pytest.raises(DecodeError) as info:
        decode_tree_head(bytes(ProtocolLimits().max_tree_head + 1))
    assert info.value.code is Code.TOO_LARGE


# ------------------------------------------------------------ check_progress


def test_first_head_is_accepted_without_proof() -> None:
    check_progress(None, head(tree(3)), [])


def test_growth_with_valid_consistency_proof() -> None:
    t = tree(13)
    for size1 in (1, 4, 7, 12):
        check_progress(head(t, size1), head(t), t.consistency_proof(size1, 13))


def test_same_head_again_is_accepted() -> None:
    t = tree(6)
    check_progress(head(t), head(t), [])


def test_smaller_size_is_a_rollback() -> None:
    t = tree(8)
    assert_proof_error(Code.LOG_ROLLBACK, head(t), head(t, 5), [])


def test_same_size_other_root() -> None:
    assert_proof_error(Code.PROOF_INVALID, head(tree(6)), head(tree(6, b"forged")), [])


def test_inconsistent_proof() -> None:
    t = tree(10)
    proof = t.consistency_proof(4, 10)
    proof[0] = bytes(32)
    assert_proof_error(Code.PROOF_INVALID, head(t, 4), head(t), proof)


def test_proof_for_other_sizes() -> None:
    t = tree(10)
    assert_proof_error(Code.PROOF_INVALID, head(t, 4), head(t), t.consistency_proof(3, 10))


def test_missing_proof() -> None:
    t = tree(10)
    assert_proof_error(Code.PROOF_INVALID, head(t, 4), head(t), [])


def test_growth_of_a_rewritten_log_is_refused() -> None:
    # The new head extends a log whose first entries differ from the one we saw.
    seen = tree(4)
    forked = tree(10, b"rewritten")
    assert_proof_error(Code.PROOF_INVALID, head(seen), head(forked),
                       forked.consistency_proof(4, 10))


def test_heads_of_two_logs() -> None:
    t = tree(5)
    assert_proof_error(Code.TREE_HEAD_INVALID, head(t, 3), head(t, log=OTHER_SPACE),
                       t.consistency_proof(3, 5))
