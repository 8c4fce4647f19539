"""Space snapshots: :func:`decode_snapshot`, :func:`verify_snapshot` against the
verified registry and the space's epoch keys, then what a new device does with
a verified snapshot (continue the Merkle log from its frontier).

``snapshot`` takes whole snapshot bytes. ``snapshot_sealed`` takes
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
from sddsf.protocol.snapshot import SNAPSHOT_VERSION, decode_snapshot, verify_snapshot
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


def seeds() -> Iterator[bytes]:
    """The snapshot vectors."""
    yield from hex_values("snapshot", "snapshot")


def sealed_seeds() -> Iterator[bytes]:
    """Header and plaintext of every valid snapshot vector."""
    for case in vectors("snapshot")["valid"]:
        yield frame(bytes.fromhex(case["header"]), bytes.fromhex(case["plaintext"]))


TARGETS = {
    "snapshot": Target("snapshot", run, seeds, max_len=16384),
    "snapshot_sealed": Target("snapshot_sealed", run_sealed, sealed_seeds, max_len=16384),
}
