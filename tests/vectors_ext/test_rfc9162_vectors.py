"""transparency-dev/merkle conformance probes against :mod:`sddsf.protocol.merkle`.

Every file of ``../shared/vectors/rfc9162-merkle/{inclusion,consistency}`` (RFC 9162)
and ``{subtreeinclusion,subtreeconsistency}`` (Merkle Tree Certificates subtree
proofs, ``VerifySubtreeInclusion`` / ``VerifySubtreeConsistency`` in the Go code)
runs as one test: a ``wantErr`` probe must raise :class:`ProofError`, a valid one
must verify. Hashes are base64; ``proof: null`` is the empty proof, as in Go.

Two additions keep the probes honest:

* Their "wrong root" and "wrong leaf" probes use 9-byte strings, which a
  length-checking verifier rejects before comparing anything. So each valid
  probe is also re-run with one bit flipped in each 32-byte root or leaf hash it
  depends on, which must fail on the comparison itself.
* Four valid probes use the 12-byte text "don't care N" as a root where the Go
  verifier never looks at it (equal sizes, or an empty subtree). Our verifier
  requires 32-byte hashes everywhere, so it refuses them. They are pinned by
  name in :data:`STRICTER_THAN_GO` and must fail for exactly that reason; a fifth
  such probe would fail its test instead of slipping through.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from sddsf.errors import Code, ProofError
from sddsf.protocol.merkle import (
    verify_consistency,
    verify_inclusion,
    verify_subtree_consistency,
    verify_subtree_inclusion,
)
from vectorkit import load, require_vectors, vector_files

pytestmark = pytest.mark.vectors

BASE = "rfc9162-merkle"
INCLUSION = vector_files(f"{BASE}/inclusion")
CONSISTENCY = vector_files(f"{BASE}/consistency")
SUBTREE_INCLUSION = vector_files(f"{BASE}/subtreeinclusion")
SUBTREE_CONSISTENCY = vector_files(f"{BASE}/subtreeconsistency")

#: Valid probes whose unchecked root is 12 bytes of text: refused here (see module doc).
STRICTER_THAN_GO = frozenset({
    f"{BASE}/consistency/additional/sizes-are-equal-one-and-proof-is-empty.json",
    f"{BASE}/subtreeconsistency/additional/sizes-are-equal-one-and-proof-is-empty.json",
    f"{BASE}/subtreeconsistency/additional/"
    "subtree-is-empty-sizes-are-equal-one-subtree-root-valid-tree-root-random-proof-is-empty.json",
    f"{BASE}/subtreeconsistency/additional/"
    "subtree-is-empty-sizes-are-equal-zero-subtree-root-valid-tree-root-random-proof-is-empty.json",
})

Probe = dict[str, Any]


def b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def proof_of(probe: Probe) -> list[bytes]:
    return [b64(h) for h in probe["proof"] or []]


def flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 0x01]) + h[1:]


def run_inclusion(p: Probe) -> None:
    verify_inclusion(b64(p["leafHash"]), p["leafIdx"], p["treeSize"], proof_of(p), b64(p["root"]))


def run_consistency(p: Probe) -> None:
    verify_consistency(p["size1"], p["size2"], b64(p["root1"]), b64(p["root2"]), proof_of(p))


def run_subtree_inclusion(p: Probe) -> None:
    verify_subtree_inclusion(b64(p["leafHash"]), p["leafIdx"], p["start"], p["end"],
                             proof_of(p), b64(p["root"]))


def run_subtree_consistency(p: Probe) -> None:
    verify_subtree_consistency(p["start"], p["end"], p["size"], b64(p["root1"]),
                               b64(p["root2"]), proof_of(p))


def checked_fields(kind: str, p: Probe) -> list[str]:
    """The 32-byte hash fields a valid probe's verdict depends on."""
    if kind in ("inclusion", "subtreeinclusion"):
        return ["leafHash", "root"]
    if kind == "subtreeconsistency" and p["start"] == p["end"]:
        return ["root1"]  # an empty subtree is in every tree: root2 is not compared
    return ["root1", "root2"]


def check(relpath: str, kind: str, run: Callable[[Probe], None]) -> None:
    probe: Probe = load(relpath)
    if relpath in STRICTER_THAN_GO:
        assert probe["wantErr"] is False, "pinned probe changed: review STRICTER_THAN_GO"
        with pytest.raises(ProofError, match="expected a 32-byte SHA-256 hash"):
            run(probe)
        return
    if probe["wantErr"]:
        with pytest.raises(ProofError) as info:
            run(probe)
        assert info.value.code is Code.PROOF_INVALID
        return
    run(probe)
    for field in checked_fields(kind, probe):
        tampered = {**probe, field: base64.b64encode(flip(b64(probe[field]))).decode()}
        with pytest.raises(ProofError):
            run(tampered)


@pytest.mark.parametrize("relpath", INCLUSION, ids=str)
def test_inclusion_probe(relpath: str) -> None:
    check(relpath, "inclusion", run_inclusion)


@pytest.mark.parametrize("relpath", CONSISTENCY, ids=str)
def test_consistency_probe(relpath: str) -> None:
    check(relpath, "consistency", run_consistency)


@pytest.mark.parametrize("relpath", SUBTREE_INCLUSION, ids=str)
def test_subtree_inclusion_probe(relpath: str) -> None:
    check(relpath, "subtreeinclusion", run_subtree_inclusion)


@pytest.mark.parametrize("relpath", SUBTREE_CONSISTENCY, ids=str)
def test_subtree_consistency_probe(relpath: str) -> None:
    check(relpath, "subtreeconsistency", run_subtree_consistency)


def test_rfc9162_probe_count() -> None:
    """A silently shrunk (or grown) folder is noticed."""
    require_vectors(BASE)
    assert (len(INCLUSION), len(CONSISTENCY)) == (98, 98)
    assert len(INCLUSION) + len(CONSISTENCY) == 196


def test_subtree_probe_count() -> None:
    require_vectors(BASE)
    assert (len(SUBTREE_INCLUSION), len(SUBTREE_CONSISTENCY)) == (204, 118)
    assert len(SUBTREE_INCLUSION) + len(SUBTREE_CONSISTENCY) == 322


def test_stricter_than_go_list_is_current() -> None:
    require_vectors(BASE)
    present = set(CONSISTENCY) | set(SUBTREE_CONSISTENCY)
    assert present >= STRICTER_THAN_GO
    for relpath in sorted(STRICTER_THAN_GO):
        probe = load(relpath)
        assert probe["wantErr"] is False
        lengths = {len(b64(probe[f])) for f in ("root1", "root2")}
        assert lengths != {32}, f"{relpath} no longer has a short root"
