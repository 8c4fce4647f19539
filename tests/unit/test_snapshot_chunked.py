"""Chunked snapshots (version 2) and snapshot attestations (protocol.md 18.1,
18.4, 18.7; :mod:`sddsf.protocol.snapshot`).

* the chunked form, restated by hand from the specification, gives the same bytes;
* round trips across chunk boundaries, and a version 1 blob still verifies;
* every chunk fault: missing, extra, swapped, replaced (``proof_invalid``),
  re-signed over a foreign chunk (``decrypt_failed``), a plaintext length that
  does not match the chunk count (``malformed``), too many chunks (``too_large``);
* the relay's check (:func:`check_snapshot_signature`) and the claims it reads;
* attestations: round trip and every rejection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from factories import (
    D1,
    D2,
    D3,
    EPOCH_KEY,
    NOW_MS,
    OTHER_SPACE,
    SPACE,
    STRANGER,
    base_registry,
    revoked_registry,
)
from sddsf.crypto import aead_encrypt, blake2b_256, hkdf_sha256
from sddsf.errors import (
    AuthorizationError,
    Code,
    ContextError,
    DecodeError,
    DecryptError,
    ProofError,
    SddsfError,
    SignatureError,
    UsageError,
)
from sddsf.protocol.encoding import encode
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.merkle import MerkleTree, leaf_hash
from sddsf.protocol.registry import RegistryState
from sddsf.protocol.snapshot import (
    CHUNKED_SNAPSHOT_VERSION,
    MATCH,
    MISMATCH,
    SNAPSHOT_CHUNK_PLAIN,
    SPACE_SNAPSHOT_DOC,
    SealedSnapshot,
    Snapshot,
    attest_snapshot,
    check_snapshot_signature,
    chunk_id,
    decode_attestation,
    decode_snapshot,
    open_snapshot,
    seal_chunked_snapshot,
    seal_snapshot,
    snapshot_claims,
    snapshot_id,
    verify_attestation,
    verify_snapshot,
)

NONCE = bytes([0x25]) * 24
KEYS = {0: EPOCH_KEY}
BIG = {"big": bytes(range(256)) * (SNAPSHOT_CHUNK_PLAIN // 256 * 2 + 7), "small": b"s"}


def tree(size: int) -> MerkleTree:
    return MerkleTree(leaf_hash(f"entry {i}".encode()) for i in range(size))


def seal(docs: Mapping[str, bytes] = BIG, *, author: Any = D1, size: int = 5,
         space: bytes = SPACE, limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS
         ) -> SealedSnapshot:
    return seal_chunked_snapshot(author, space=space, epoch=0, epoch_key=EPOCH_KEY, size=size,
                                 frontier=tree(size).frontier(), chains={}, docs=docs,
                                 ts_ms=NOW_MS, nonce=NONCE, limits=limits)


def verify(manifest: bytes, chunks: list[bytes] | tuple[bytes, ...],
           registry: RegistryState | None = None, **kw: Any) -> Snapshot:
    return verify_snapshot(manifest, registry=registry or base_registry().state, space=SPACE,
                           epoch_keys=KEYS, chunks=chunks, **kw)


# ------------------------------------------------------------- the format


def by_hand(docs: Mapping[str, bytes], *, size: int = 5, chunk_ids: list[bytes] | None = None,
            plain: int | None = None, signer: Any = D1) -> tuple[bytes, list[bytes]]:
    """A chunked snapshot built from the text of 18.1-18.3."""
    plaintext = encode({"docs": [[n, docs[n]] for n in sorted(docs)]})
    key = hkdf_sha256(EPOCH_KEY, salt=b"sddsf/v1/snapshot/key",
                      info=encode(["sddsf/v1/snapshot/key", SPACE, 0]))
    parts = [plaintext[i:i + 512 * 1024] for i in range(0, len(plaintext), 512 * 1024)]
    chunks = []
    for i, part in enumerate(parts):
        nonce = blake2b_256(encode(["sddsf/v1/snapshot/chunk-nonce", NONCE, i]))[:24]
        ad = encode(["sddsf/v1/snapshot/chunk-ad", SPACE, D1.device_id, 0, size, NONCE, i,
                     len(parts)])
        chunks.append(aead_encrypt(key, nonce, part, ad))
    ids = [blake2b_256(encode(["sddsf/v1/snapshot/chunk-id", c])) for c in chunks]
    t = tree(size)
    body = encode({"v": 2, "space": SPACE, "author": D1.device_id, "epoch": 0, "size": size,
                   "root": t.root(), "frontier": t.frontier().to_hashes(), "chains": [],
                   "ts": NOW_MS, "nonce": NONCE,
                   "plain": len(plaintext) if plain is None else plain,
                   "chunks": ids if chunk_ids is None else chunk_ids})
    return encode([2, body, signer.sign(encode(["sddsf/v1/snapshot/sig", body]))]), chunks


def test_the_specification_restated_by_hand_gives_the_same_bytes() -> None:
    sealed = seal()
    manifest, chunks = by_hand(BIG)
    assert sealed.manifest == manifest and list(sealed.chunks) == chunks
    assert len(chunks) == 3 and all(len(c) <= SNAPSHOT_CHUNK_PLAIN + 16 for c in chunks)
    assert list(sealed.chunk_ids) == [chunk_id(c) for c in chunks]
    assert sealed.id == snapshot_id(manifest) == blake2b_256(
        encode(["sddsf/v1/snapshot/id", manifest]))


@pytest.mark.parametrize("docs", [
    {}, {"a": b""}, {"a": b"x" * (SNAPSHOT_CHUNK_PLAIN - 20)},
    {"a": b"x" * SNAPSHOT_CHUNK_PLAIN}, BIG,
], ids=["no docs", "empty doc", "just one chunk", "just over one chunk", "three chunks"])
def test_round_trip(docs: dict[str, bytes]) -> None:
    sealed = seal(docs)
    snap = verify(sealed.manifest, sealed.chunks)
    assert dict(snap.docs) == docs
    assert (snap.version, snap.id, snap.author, snap.size) == (
        CHUNKED_SNAPSHOT_VERSION, sealed.id, D1.device_id, 5)
    assert decode_snapshot(sealed.manifest) == (SPACE, D1.device_id, 5)
    claims = snapshot_claims(sealed.manifest)
    assert claims.chunk_ids == sealed.chunk_ids and claims.id == sealed.id


def test_a_version_1_blob_still_verifies_and_has_no_chunks() -> None:
    blob = seal_snapshot(D1, space=SPACE, epoch=0, epoch_key=EPOCH_KEY, size=5,
                         frontier=tree(5).frontier(), chains={}, docs={"a": b"state"},
                         ts_ms=NOW_MS, nonce=NONCE)
    snap = verify(blob, ())
    assert dict(snap.docs) == {"a": b"state"} and snap.version == 1
    assert snapshot_claims(blob).chunk_ids == () and snap.id == snapshot_id(blob)


def test_the_manifest_stays_small_for_a_large_state() -> None:
    limits = ProtocolLimits(max_snapshot_chunks=512)
    # 512 chunk ids are ~17 KB of the manifest: a 256 MiB state fits one request.
    manifest, _ = by_hand({"a": b""}, chunk_ids=[bytes(32)] * 512, plain=512 * 512 * 1024)
    assert len(manifest) < 20_000 < limits.max_snapshot


# ------------------------------------------------------------- chunk faults


def _err(call: Any) -> SddsfError:
    with pytest.raises(SddsfError) as info:
        call()
    return info.value


def test_chunk_faults_are_refused() -> None:
    sealed = seal()
    c = list(sealed.chunks)
    for chunks in ([], c[:2], [*c, c[0]], [c[1], c[0], c[2]], [c[0], c[1], c[2][:-1]]):
        err = _err(lambda chunks=chunks: verify(sealed.manifest, chunks))
        assert isinstance(err, ProofError) and err.code is Code.PROOF_INVALID


def test_a_foreign_chunk_under_a_re_signed_manifest_does_not_decrypt() -> None:
    sealed, other = seal(), seal({"big": b"y" * len(BIG["big"]), "small": b"s"}, size=6)
    manifest, _ = by_hand(BIG, chunk_ids=[sealed.chunk_ids[0], other.chunk_ids[1],
                                          sealed.chunk_ids[2]])
    err = _err(lambda: verify(manifest, [sealed.chunks[0], other.chunks[1], sealed.chunks[2]]))
    assert isinstance(err, DecryptError)


@pytest.mark.parametrize(("plain", "code"), [(1, Code.MALFORMED), (0, Code.MALFORMED),
                                             (3 * 512 * 1024 + 1, Code.MALFORMED)])
def test_plaintext_length_must_match_the_chunk_count(plain: int, code: Code) -> None:
    manifest, chunks = by_hand(BIG, plain=plain)
    err = _err(lambda: verify(manifest, chunks))
    assert isinstance(err, DecodeError) and err.code is code


def test_plaintext_length_that_misplaces_the_last_chunk_is_malformed() -> None:
    manifest, chunks = by_hand(BIG)
    real = len(encode({"docs": [[n, BIG[n]] for n in sorted(BIG)]}))
    short, _ = by_hand(BIG, plain=real - 1)
    assert isinstance(_err(lambda: verify(short, chunks)), DecodeError)
    assert verify(manifest, chunks).docs["small"] == b"s"


def test_too_many_chunks() -> None:
    limits = ProtocolLimits(max_snapshot_chunks=2)
    with pytest.raises(UsageError, match="limit is 2"):
        seal(limits=limits)
    sealed = seal()
    err = _err(lambda: verify(sealed.manifest, sealed.chunks, limits=limits))
    assert err.code is Code.TOO_LARGE


def test_seal_refuses_a_manifest_over_the_limit() -> None:
    sealed = seal()
    with pytest.raises(UsageError, match="manifest"):
        seal(limits=ProtocolLimits(max_snapshot=len(sealed.manifest) - 1))


# ----------------------------------------------------- what the relay checks


def test_check_snapshot_signature() -> None:
    sealed = seal()
    claims = check_snapshot_signature(sealed.manifest, registry=base_registry().state)
    assert (claims.author, claims.size, claims.root) == (D1.device_id, 5, tree(5).root())
    bad, _ = by_hand(BIG, signer=D2)
    assert isinstance(_err(lambda: check_snapshot_signature(
        bad, registry=base_registry().state)), SignatureError)
    by_revoked = seal(author=D3)
    err = _err(lambda: check_snapshot_signature(by_revoked.manifest,
                                                registry=revoked_registry().state))
    assert isinstance(err, AuthorizationError) and err.code is Code.REVOKED
    assert check_snapshot_signature(by_revoked.manifest, registry=revoked_registry().state,
                                    accept_revoked=True).author == D3.device_id
    stranger = seal(author=STRANGER)
    assert _err(lambda: check_snapshot_signature(
        stranger.manifest, registry=base_registry().state)).code is Code.UNKNOWN_DEVICE


def test_open_snapshot_trusts_only_its_own_checks_of_the_same_bytes() -> None:
    state = base_registry().state
    sealed = seal()
    checked = check_snapshot_signature(sealed.manifest, registry=state)
    plain = open_snapshot(sealed.manifest, registry=state, space=SPACE, epoch_keys=KEYS)
    assert open_snapshot(sealed.manifest, registry=state, space=SPACE, epoch_keys=KEYS,
                         checked=checked) == plain
    # Forged signature: claims read without a check, or checked for other
    # bytes, do not stand in for the check.
    forged, _ = by_hand(BIG, signer=D2)
    for claims in (snapshot_claims(forged), checked):
        assert isinstance(_err(lambda claims=claims: open_snapshot(
            forged, registry=state, space=SPACE, epoch_keys=KEYS, checked=claims)),
            SignatureError)
    # A checked snapshot still goes through the checks that depend on the caller.
    assert _err(lambda: open_snapshot(sealed.manifest, registry=state, space=bytes(16),
                                      epoch_keys=KEYS, checked=checked)).code \
        is Code.WRONG_CONTEXT
    assert _err(lambda: open_snapshot(sealed.manifest, registry=state, space=SPACE,
                                      epoch_keys={}, checked=checked)).code \
        is Code.UNKNOWN_EPOCH
    revoked = revoked_registry().state
    by_revoked = seal(author=D3)
    checked = check_snapshot_signature(by_revoked.manifest, registry=revoked,
                                       accept_revoked=True)
    assert _err(lambda: open_snapshot(by_revoked.manifest, registry=revoked, space=SPACE,
                                      epoch_keys=KEYS, checked=checked)).code is Code.REVOKED


def test_a_revoked_authors_snapshot_opens_only_when_asked() -> None:
    sealed = seal(author=D3)
    state = revoked_registry().state
    assert _err(lambda: verify(sealed.manifest, sealed.chunks, state)).code is Code.REVOKED
    manifest = open_snapshot(sealed.manifest, registry=state, space=SPACE, epoch_keys=KEYS,
                             accept_revoked=True)
    assert not manifest.author_active and manifest.chunk_ids == sealed.chunk_ids


# ------------------------------------------------------------- attestations


def attest(verdict: str = MATCH, *, attester: Any = D2, space: bytes = SPACE,
           snapshot: bytes = bytes(32), size: int = 5) -> bytes:
    return attest_snapshot(attester, space=space, doc=SPACE_SNAPSHOT_DOC, snapshot=snapshot,
                           size=size, verdict=verdict, ts_ms=NOW_MS)


def test_attestation_round_trip_and_form() -> None:
    for verdict in (MATCH, MISMATCH):
        raw = attest(verdict, snapshot=bytes([7]) * 32)
        att = verify_attestation(raw, registry=base_registry().state, space=SPACE)
        assert (att.verdict, att.attester, att.snapshot, att.size, att.doc) == (
            verdict, D2.device_id, bytes([7]) * 32, 5, SPACE_SNAPSHOT_DOC)
        assert decode_attestation(raw) == att
    body = encode({"v": 1, "space": SPACE, "doc": SPACE_SNAPSHOT_DOC, "snapshot": bytes(32),
                   "size": 5, "verdict": "match", "attester": D2.device_id, "ts": NOW_MS})
    assert attest() == encode([1, body, D2.sign(encode(["sddsf/v1/snapshot/attestation",
                                                        body]))])


def _forged_attestation(**over: object) -> bytes:
    fields: dict[str, object] = {"v": 1, "space": SPACE, "doc": SPACE_SNAPSHOT_DOC,
                                 "snapshot": bytes(32), "size": 5, "verdict": "match",
                                 "attester": D2.device_id, "ts": NOW_MS, **over}
    body = encode(fields)
    return encode([1, body, D2.sign(encode(["sddsf/v1/snapshot/attestation", body]))])


@pytest.mark.parametrize(("raw", "registry", "cls", "code"), [
    (attest(space=OTHER_SPACE), None, ContextError, Code.WRONG_CONTEXT),
    (attest(attester=STRANGER), None, AuthorizationError, Code.UNKNOWN_DEVICE),
    (attest(attester=D3), "revoked", AuthorizationError, Code.REVOKED),
    (attest()[:-1] + bytes([attest()[-1] ^ 1]), None, SignatureError, Code.SIG_INVALID),
    (_forged_attestation(verdict="maybe"), None, DecodeError, Code.MALFORMED),
    (_forged_attestation(size=0), None, DecodeError, Code.MALFORMED),
    (_forged_attestation(extra=1), None, DecodeError, Code.MALFORMED),
    (_forged_attestation(v=2), None, DecodeError, Code.UNSUPPORTED_VERSION),
    (bytes(2000), None, DecodeError, Code.TOO_LARGE),
], ids=["another space", "stranger", "revoked attester", "bad signature", "unknown verdict",
        "size 0", "unknown field", "version 2", "too large"])
def test_attestation_rejections(raw: bytes, registry: str | None, cls: type[SddsfError],
                                code: Code) -> None:
    state = revoked_registry().state if registry else base_registry().state
    with pytest.raises(cls) as info:
        verify_attestation(raw, registry=state, space=SPACE)
    assert info.value.code is code


def test_a_revoked_attesters_verdict_reads_only_when_asked() -> None:
    raw = attest(attester=D3)
    att = verify_attestation(raw, registry=revoked_registry().state, space=SPACE,
                             accept_revoked=True)
    assert att.attester == D3.device_id


def test_attest_refuses_bad_arguments() -> None:
    with pytest.raises(UsageError):
        attest("perhaps")
    with pytest.raises(UsageError):
        attest(snapshot=bytes(31))
