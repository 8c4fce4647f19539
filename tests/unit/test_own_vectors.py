"""Our own conformance vectors (tests/vectors/*.json).

1. The deterministic generator reproduces the committed files byte for byte.
2. Each vector, read as data, gives its stated result through the public API:
   valid cases verify (and decrypt to the stated plaintext), invalid cases are
   refused with the stated error code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sddsf.crypto import Ed25519PublicKey, aead_decrypt, hkdf_sha256
from sddsf.errors import SddsfError
from sddsf.protocol import keypackage as kp
from sddsf.protocol import membership as ms
from sddsf.protocol.encoding import decode
from sddsf.protocol.envelope import decode_envelope, open_op
from sddsf.protocol.identity import AccountKeys
from sddsf.protocol.labels import SNAPSHOT_AD, SNAPSHOT_KEY, labelled
from sddsf.protocol.merkle import MerkleTree, leaf_hash
from sddsf.protocol.payload import Edit, assemble, parts_digest, split_edit
from sddsf.protocol.registry import verify_registry
from sddsf.protocol.rules import EpochWindow, MemoryChainView, Outcome, RuleSettings, verify_op
from sddsf.protocol.snapshot import (
    Snapshot,
    chunk_id,
    decode_attestation,
    decode_snapshot,
    snapshot_id,
    verify_attestation,
    verify_snapshot,
)
from sddsf.protocol.treehead import check_progress, verify_tree_head
from sddsf.testing import vectorgen

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())


@pytest.mark.parametrize("name", sorted(vectorgen.generate()))
def test_generator_reproduces_committed_vectors(name: str) -> None:
    committed = (VECTORS / name).read_text()
    assert vectorgen.render(vectorgen.generate()[name]) == committed, (
        f"{name} differs from the generator: run `python -m sddsf.testing.vectorgen "
        "tests/vectors` and review the diff (a change here is a protocol change)")


def _registry(ctx: dict[str, Any]):  # type: ignore[no-untyped-def]
    account = AccountKeys.from_secret(bytes.fromhex(ctx["account_secret"]))
    assert account.signing.public.raw.hex() == ctx["account_public_key"]
    return verify_registry([bytes.fromhex(e) for e in ctx["registry"]], pinned=account.public)


def _run_op(ctx: dict[str, Any], preceding: list[str], envelope: str) -> Outcome:
    reg = _registry(ctx)
    chains = MemoryChainView()
    kwargs: dict[str, Any] = {
        "space": bytes.fromhex(ctx["space"]), "registry": reg,
        "epochs": EpochWindow(ctx["epoch"]["current"], ctx["epoch"]["started_ms"],
                              tuple(ctx["epoch"]["package_seqs"])),
        "chains": chains, "now_ms": ctx["now_ms"],
        "settings": RuleSettings(max_skew_ms=ctx["rules"]["max_skew_ms"],
                                 epoch_grace_ms=ctx["rules"]["epoch_grace_ms"])}
    for p in preceding:
        verdict = verify_op(bytes.fromhex(p), **kwargs)
        chains.record(verdict.envelope)
    return verify_op(bytes.fromhex(envelope), **kwargs).outcome


ENVELOPE = _load("envelope.json")
REGISTRY = _load("registry.json")
KEYPKG = _load("key_package.json")
TREEHEAD = _load("tree_head.json")
SNAPSHOT = _load("snapshot.json")
PAYLOAD = _load("payload.json")
CHUNKED = _load("snapshot_chunked.json")
ATTESTATION = _load("snapshot_attestation.json")
MEMBERSHIP = _load("membership.json")


@pytest.mark.parametrize("case", ENVELOPE["valid"], ids=lambda c: c["name"])
def test_envelope_valid(case: dict[str, Any]) -> None:
    ctx = ENVELOPE["context"]
    assert _run_op(ctx, case["preceding"], case["envelope"]).value == case["outcome"]
    env = decode_envelope(bytes.fromhex(case["envelope"]))
    assert env.op_id.hex() == case["op_id"]
    assert open_op(env, bytes.fromhex(ctx["epoch_key"])) == bytes.fromhex(case["plaintext"])


@pytest.mark.parametrize("case", ENVELOPE["invalid"], ids=lambda c: c["name"])
def test_envelope_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(SddsfError) as info:
        _run_op(ENVELOPE["context"], case["preceding"], case["envelope"])
    assert info.value.code.value == case["code"]


@pytest.mark.parametrize("case", REGISTRY["valid"], ids=lambda c: c["name"])
def test_registry_valid(case: dict[str, Any]) -> None:
    account = AccountKeys.from_secret(bytes.fromhex(REGISTRY["context"]["account_secret"]))
    state = verify_registry([bytes.fromhex(e) for e in case["entries"]], pinned=account.public)
    assert state.head.hex() == case["head"]
    assert {r.name: r.status.value for r in state.devices.values()} == case["devices"]


@pytest.mark.parametrize("case", REGISTRY["invalid"], ids=lambda c: c["name"])
def test_registry_invalid(case: dict[str, Any]) -> None:
    account = AccountKeys.from_secret(bytes.fromhex(REGISTRY["context"]["account_secret"]))
    with pytest.raises(SddsfError) as info:
        verify_registry([bytes.fromhex(e) for e in case["entries"]], pinned=account.public)
    assert info.value.code.value == case["code"]


def _verify_pkg(case: dict[str, Any]) -> kp.KeyPackage:
    ctx = KEYPKG["context"]
    reg = _registry(ctx)
    space = bytes.fromhex(ctx["space"])
    previous = None
    if case["previous"]:
        previous = kp.verify_key_package(bytes.fromhex(case["previous"]), registry=reg,
                                         space=space, previous=None)
    return kp.verify_key_package(bytes.fromhex(case["package"]), registry=reg, space=space,
                                 previous=previous)


@pytest.mark.parametrize("case", KEYPKG["valid"], ids=lambda c: c["name"])
def test_key_package_valid(case: dict[str, Any]) -> None:
    pkg = _verify_pkg(case)
    assert pkg.hash.hex() == case["hash"]
    account = AccountKeys.from_secret(bytes.fromhex(KEYPKG["context"]["account_secret"]))
    key = kp.open_epoch_key(pkg, account.account_id, account.recovery)
    assert key.hex() == case["epoch_key"]
    assert (pkg.key_commit.hex() if pkg.key_commit else None) == case["key_commit"]
    assert {str(e): k.hex() for e, k in kp.unwrap_previous_keys(pkg, key).items()} == \
        case["previous_keys"]


@pytest.mark.parametrize("case", KEYPKG["invalid"], ids=lambda c: c["name"])
def test_key_package_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(SddsfError) as info:
        _verify_pkg(case)
    assert info.value.code.value == case["code"]


def _relay_key() -> Ed25519PublicKey:
    return Ed25519PublicKey.from_bytes(bytes.fromhex(TREEHEAD["context"]["relay_public_key"]))


@pytest.mark.parametrize("case", TREEHEAD["valid"], ids=lambda c: c["name"])
def test_tree_head_valid(case: dict[str, Any]) -> None:
    th = verify_tree_head(bytes.fromhex(case["tree_head"]), _relay_key(),
                          log=bytes.fromhex(TREEHEAD["context"]["log"]))
    assert (th.size, th.root.hex()) == (case["size"], case["root"])


@pytest.mark.parametrize("case", TREEHEAD["invalid"], ids=lambda c: c["name"])
def test_tree_head_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(SddsfError) as info:
        verify_tree_head(bytes.fromhex(case["tree_head"]), _relay_key(),
                         log=bytes.fromhex(TREEHEAD["context"]["log"]))
    assert info.value.code.value == case["code"]


@pytest.mark.parametrize("case", TREEHEAD["progress"], ids=lambda c: c["name"])
def test_tree_head_progress(case: dict[str, Any]) -> None:
    log = bytes.fromhex(TREEHEAD["context"]["log"])
    old = verify_tree_head(bytes.fromhex(case["old"]), _relay_key(), log=log)
    new = verify_tree_head(bytes.fromhex(case["new"]), _relay_key(), log=log)
    proof = [bytes.fromhex(p) for p in case["proof"]]
    if case["code"] is None:
        check_progress(old, new, proof)
    else:
        with pytest.raises(SddsfError) as info:
            check_progress(old, new, proof)
        assert info.value.code.value == case["code"]


def _verify_snapshot(raw_hex: str) -> Snapshot:
    ctx = SNAPSHOT["context"]
    return verify_snapshot(bytes.fromhex(raw_hex), registry=_registry(ctx),
                           space=bytes.fromhex(ctx["space"]),
                           epoch_keys={int(e): bytes.fromhex(k)
                                       for e, k in ctx["epoch_keys"].items()})


@pytest.mark.parametrize("case", SNAPSHOT["valid"], ids=lambda c: c["name"])
def test_snapshot_valid(case: dict[str, Any]) -> None:
    ctx = SNAPSHOT["context"]
    snap = _verify_snapshot(case["snapshot"])
    assert (snap.space.hex(), snap.author.hex(), snap.epoch, snap.size, snap.root.hex(),
            snap.ts) == (ctx["space"], case["author"], case["epoch"], case["size"],
                         case["root"], case["ts"])
    assert [h.hex() for h in snap.frontier] == case["frontier"]
    assert {n: d.hex() for n, d in snap.docs.items()} == case["docs"]
    assert [[a.hex(), h.seq, h.op_id.hex(), [[i.hex(), n] for i, n in sorted(h.deps.items())]]
            for a, h in sorted(snap.chains.items())] == case["chains"]
    assert decode_snapshot(snap.raw) == (snap.space, snap.author, snap.size)


@pytest.mark.parametrize("case", SNAPSHOT["valid"], ids=lambda c: c["name"])
def test_snapshot_valid_matches_its_log(case: dict[str, Any]) -> None:
    # The frontier and root are those of the first `size` log entries, and the
    # chain heads are what replaying those entries gives.
    ctx = SNAPSHOT["context"]
    entries = [bytes.fromhex(e) for e in ctx["leaves"][:case["size"]]]
    tree = MerkleTree(leaf_hash(e) for e in entries)
    assert tree.root().hex() == case["root"]
    assert [h.hex() for h in tree.frontier().to_hashes()] == case["frontier"]
    chains = MemoryChainView()
    for e in entries:
        chains.record(verify_op(e, space=bytes.fromhex(ctx["space"]), registry=_registry(ctx),
                                epochs=EpochWindow(ctx["epoch"]["current"], 0),
                                chains=chains, now_ms=None).envelope)
    assert chains.heads == dict(_verify_snapshot(case["snapshot"]).chains)


@pytest.mark.parametrize("case", SNAPSHOT["valid"], ids=lambda c: c["name"])
def test_snapshot_valid_intermediate_values(case: dict[str, Any]) -> None:
    # Key derivation, associated data and plaintext, restated from section 18.
    ctx = SNAPSHOT["context"]
    space, epoch = bytes.fromhex(ctx["space"]), case["epoch"]
    key = hkdf_sha256(bytes.fromhex(ctx["epoch_keys"][str(epoch)]),
                      salt=SNAPSHOT_KEY.encode(), info=labelled(SNAPSHOT_KEY, space, epoch))
    assert key.hex() == case["snapshot_key"]
    outer = decode(bytes.fromhex(case["snapshot"]))
    assert isinstance(outer, list) and isinstance(outer[1], bytes)
    body = decode(outer[1])
    assert isinstance(body, dict)
    header = bytes.fromhex(case["header"])
    assert decode(header) == {k: v for k, v in body.items() if k != "ct"}
    plaintext = aead_decrypt(key, body["nonce"], body["ct"], labelled(SNAPSHOT_AD, header))
    assert plaintext.hex() == case["plaintext"]
    assert decode(plaintext) == {"docs": [[n, bytes.fromhex(d)]
                                          for n, d in sorted(case["docs"].items())]}


@pytest.mark.parametrize("case", SNAPSHOT["invalid"], ids=lambda c: c["name"])
def test_snapshot_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(SddsfError) as info:
        _verify_snapshot(case["snapshot"])
    assert info.value.code.value == case["code"]


def test_vector_counts() -> None:
    counts = {n: len(d["valid"]) + len(d["invalid"]) for n, d in vectorgen.generate().items()}
    assert counts == {"envelope.json": 22, "registry.json": 13, "key_package.json": 9,
                      "tree_head.json": 4, "snapshot.json": 24, "payload.json": 18,
                      "snapshot_chunked.json": 13, "snapshot_attestation.json": 9,
                      "membership.json": 29}


def test_snapshot_vectors_cover_every_rejection() -> None:
    codes = {c["code"] for c in SNAPSHOT["invalid"]}
    assert codes == {"sig_invalid", "decrypt_failed", "proof_invalid", "wrong_context",
                     "revoked", "unknown_device", "unknown_epoch", "unsupported_version",
                     "malformed"}


def _assemble(case: dict[str, Any]) -> list[Edit]:
    return assemble([(op["seq"], bytes.fromhex(op["payload"])) for op in case["ops"]],
                    doc=bytes.fromhex(PAYLOAD["context"]["doc"]))


@pytest.mark.parametrize("case", PAYLOAD["valid"], ids=lambda c: c["name"])
def test_payload_valid(case: dict[str, Any]) -> None:
    edits = _assemble(case)
    assert [{"name": e.name, "updates": [u.hex() for u in e.updates]} for e in edits] == \
        case["edits"]
    if "whole" in case:  # the parts are the whole edit's bytes, cut in order
        whole = bytes.fromhex(case["whole"])
        assert parts_digest(whole).hex() == case["digest"]
        assert split_edit(edits[0].name, list(edits[0].updates),
                          max_payload=case["max_payload"]) == [
            bytes.fromhex(op["payload"]) for op in case["ops"]]


@pytest.mark.parametrize("case", PAYLOAD["invalid"], ids=lambda c: c["name"])
def test_payload_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(SddsfError) as info:
        _assemble(case)
    assert info.value.code.value == case["code"]


def _verify_chunked(manifest_hex: str, chunks_hex: list[str]) -> Snapshot:
    ctx = CHUNKED["context"]
    return verify_snapshot(bytes.fromhex(manifest_hex), registry=_registry(ctx),
                           space=bytes.fromhex(ctx["space"]),
                           epoch_keys={int(e): bytes.fromhex(k)
                                       for e, k in ctx["epoch_keys"].items()},
                           chunks=[bytes.fromhex(c) for c in chunks_hex])


@pytest.mark.parametrize("case", CHUNKED["valid"], ids=lambda c: c["name"])
def test_chunked_snapshot_valid(case: dict[str, Any]) -> None:
    snap = _verify_chunked(case["manifest"], case["chunks"])
    assert (snap.author.hex(), snap.epoch, snap.size, snap.version) == (
        case["author"], case["epoch"], case["size"], 2)
    assert {n: d.hex() for n, d in snap.docs.items()} == case["docs"]
    manifest = bytes.fromhex(case["manifest"])
    assert snapshot_id(manifest).hex() == snap.id.hex() == case["snapshot_id"]
    assert [chunk_id(bytes.fromhex(c)).hex() for c in case["chunks"]] == case["chunk_ids"]
    assert decode_snapshot(manifest)[2] == case["size"]


@pytest.mark.parametrize("case", CHUNKED["valid"], ids=lambda c: c["name"])
def test_chunked_snapshot_intermediate_values(case: dict[str, Any]) -> None:
    # Each chunk opens with the snapshot key, its nonce and AD (18.3), and the
    # plaintexts concatenate to the payload.
    key = bytes.fromhex(case["snapshot_key"])
    parts = [aead_decrypt(key, bytes.fromhex(n), bytes.fromhex(c), bytes.fromhex(a))
             for c, n, a in zip(case["chunks"], case["chunk_nonces"], case["chunk_ads"],
                                strict=True)]
    assert b"".join(parts).hex() == case["plaintext"]


@pytest.mark.parametrize("case", CHUNKED["invalid"], ids=lambda c: c["name"])
def test_chunked_snapshot_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(SddsfError) as info:
        _verify_chunked(case["manifest"], case["chunks"])
    assert info.value.code.value == case["code"]


@pytest.mark.parametrize("case", ATTESTATION["valid"], ids=lambda c: c["name"])
def test_attestation_valid(case: dict[str, Any]) -> None:
    ctx = ATTESTATION["context"]
    raw = bytes.fromhex(case["attestation"])
    att = verify_attestation(raw, registry=_registry(ctx), space=bytes.fromhex(ctx["space"]))
    assert (att.attester.hex(), att.verdict, att.snapshot.hex(), att.size) == (
        case["attester"], case["verdict"], case["snapshot"], case["size"])
    assert decode_attestation(raw) == att


@pytest.mark.parametrize("case", ATTESTATION["invalid"], ids=lambda c: c["name"])
def test_attestation_invalid(case: dict[str, Any]) -> None:
    ctx = ATTESTATION["context"]
    with pytest.raises(SddsfError) as info:
        verify_attestation(bytes.fromhex(case["attestation"]), registry=_registry(ctx),
                           space=bytes.fromhex(ctx["space"]))
    assert info.value.code.value == case["code"]


def _membership_registries() -> dict[bytes, Any]:
    # Every account's registry, verified from the key its secret derives.
    ctx = MEMBERSHIP["context"]
    regs = {AccountKeys.from_secret(bytes.fromhex(ctx["account_secret"])).account_id:
            _registry(ctx)}
    for m in ctx["members"].values():
        account = AccountKeys.from_secret(bytes.fromhex(m["account_secret"]))
        assert account.account_id.hex() == m["account_id"]
        regs[account.account_id] = verify_registry([bytes.fromhex(e) for e in m["registry"]],
                                                   pinned=account.public)
    return regs


def _names() -> dict[bytes, str]:
    ctx = MEMBERSHIP["context"]
    owner = AccountKeys.from_secret(bytes.fromhex(ctx["account_secret"])).account_id
    return {owner: "alice", **{bytes.fromhex(m["account_id"]): n
                               for n, m in ctx["members"].items()}}


@pytest.mark.parametrize("case", MEMBERSHIP["valid"], ids=lambda c: c["name"])
def test_membership_valid(case: dict[str, Any]) -> None:
    result = ms.fold(bytes.fromhex(MEMBERSHIP["context"]["space"]),
                     [bytes.fromhex(e) for e in case["entries"]], _membership_registries().get)
    names = _names()
    assert {names[a]: m.role.value for a, m in result.state.members.items()} == case["members"]
    assert result.state.head.hex() == case["head"]
    assert [[i, e.code.value] for i, e in result.refused] == case["refused"]


@pytest.mark.parametrize("case", MEMBERSHIP["invalid"], ids=lambda c: c["name"])
def test_membership_invalid(case: dict[str, Any]) -> None:
    regs = _membership_registries()
    state = ms.MembershipState.empty(bytes.fromhex(MEMBERSHIP["context"]["space"]))
    for e in case["preceding"]:
        state = state.apply(bytes.fromhex(e), regs.get)
    with pytest.raises(SddsfError) as info:
        state.apply(bytes.fromhex(case["entry"]), regs.get)
    assert info.value.code.value == case["code"]


def test_membership_vectors_cover_every_rejection() -> None:
    codes = {c["code"] for c in MEMBERSHIP["invalid"]}
    assert codes == {"sig_invalid", "not_authorized", "revoked", "unknown_device",
                     "wrong_context", "membership_invalid", "unsupported_version", "malformed"}
