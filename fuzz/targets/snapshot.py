"""Space snapshots: :func:`decode_snapshot`, :func:`verify_snapshot` against the
verified registry and the space's epoch keys, then what a new device does with
a verified snapshot (continue the Merkle log from its frontier).

``snapshot`` takes whole snapshot bytes; ``snapshot_chunked`` takes
``frame(manifest, chunk)`` (a version 2 manifest and its one chunk: fuzz
inputs are far below a chunk's 512 KiB); ``snapshot_attestation`` takes an
attestation (decoded, then verified against the registry). ``snapshot_sealed`` takes
``frame(header_bytes, plaintext)``: the plaintext is encrypted under the
header (as AD) with the epoch key the header names and the body is signed by
the device the header's ``author`` names, so the frontier, chains and
payload parsers see fuzzed values.
"""

from __future__ import annotations

from collections.abc import Iterator

from fuzz.contract import attempt
from fuzz.targets import Target, frame, unframe
from fuzz.world import hex_values, vectors, world
from sddsf.crypto import aead_encrypt
from sddsf.protocol import labels
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.labels import labelled
from sddsf.protocol.merkle import Frontier, MerkleTree
from sddsf.protocol.snapshot import (
    SNAPSHOT_VERSION,
    decode_attestation,
    decode_snapshot,
    snapshot_claims,
    verify_attestation,
    verify_snapshot,
)
from sddsf.testing import vectorgen


def run(data: bytes) -> None:
    """Decode; verify; extend the verified frontier by one leaf and prove it."""
    w = world()
    decode_snapshot(data)
    snap = verify_snapshot(data, registry=w.state, space=w.space, epoch_keys=w.snapshot_keys)
    # client/device.py (_pull): a new device continues the log from the frontier.
    tree = MerkleTree.from_frontier(Frontier.from_hashes(snap.size, snap.frontier))
    tree.append_leaf(b"the op after the snapshot")
    tree.consistency_proof(snap.size)
    if tree.root(snap.size) != snap.root:
        raise AssertionError("a verified snapshot's frontier does not give its root")


def run_sealed(data: bytes) -> None:
    """Encrypt the plaintext under the header, sign as its author, then :func:`run`."""
    w = world()
    header_bytes, plaintext = unframe(data)
    value = attempt(decode, header_bytes)
    header = value if isinstance(value, dict) else {}
    epoch, space, nonce = header.get("epoch"), header.get("space"), header.get("nonce")
    if type(epoch) is not int or epoch not in w.snapshot_keys:
        epoch = 0
    if not isinstance(space, bytes):
        space = w.space
    if not isinstance(nonce, bytes) or len(nonce) != 24:
        nonce = bytes(24)
    key = vectorgen.snapshot_key(w.snapshot_keys[epoch], space, epoch)
    ct = aead_encrypt(key, nonce, plaintext, labelled(labels.SNAPSHOT_AD, header_bytes))
    body = encode({**header, "ct": ct})
    signer = w.keys_of(header.get("author"))
    run(encode([SNAPSHOT_VERSION, body, signer.sign(labelled(labels.SNAPSHOT_SIG, body))]))


def run_chunked(data: bytes) -> None:
    """A manifest and its chunk: structure, then verification with the chunk."""
    w = world()
    manifest, chunk = unframe(data)
    snapshot_claims(manifest)
    snap = verify_snapshot(manifest, registry=w.state, space=w.space,
                           epoch_keys=w.snapshot_keys, chunks=[chunk])
    if snap.version != 2:
        raise AssertionError("a manifest verified as another version")


def run_attestation(data: bytes) -> None:
    """Decode, then verify against the registry (revoked attesters admitted too)."""
    w = world()
    decode_attestation(data)
    for accept_revoked in (False, True):
        attempt(verify_attestation, data, registry=w.state, space=w.space,
                accept_revoked=accept_revoked)


def seeds() -> Iterator[bytes]:
    """The snapshot vectors."""
    yield from hex_values("snapshot", "snapshot")


def sealed_seeds() -> Iterator[bytes]:
    """Header and plaintext of every valid snapshot vector."""
    for case in vectors("snapshot")["valid"]:
        yield frame(bytes.fromhex(case["header"]), bytes.fromhex(case["plaintext"]))


def chunked_seeds() -> Iterator[bytes]:
    """Every chunked snapshot vector: its manifest and its first chunk."""
    for group in ("valid", "invalid"):
        for case in vectors("snapshot_chunked")[group]:
            chunk = case["chunks"][0] if case["chunks"] else ""
            yield frame(bytes.fromhex(case["manifest"]), bytes.fromhex(chunk))


def attestation_seeds() -> Iterator[bytes]:
    """The attestation vectors."""
    yield from hex_values("snapshot_attestation", "attestation")


TARGETS = {
    "snapshot": Target("snapshot", run, seeds, max_len=16384),
    "snapshot_sealed": Target("snapshot_sealed", run_sealed, sealed_seeds, max_len=16384),
    "snapshot_chunked": Target("snapshot_chunked", run_chunked, chunked_seeds,
                               max_len=16384),
    "snapshot_attestation": Target("snapshot_attestation", run_attestation,
                                   attestation_seeds, max_len=2048),
}
