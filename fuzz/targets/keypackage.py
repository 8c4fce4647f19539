"""Key packages: :func:`decode_key_package`, :func:`verify_key_package` against
the verified registry (as epoch 0, and as the successor of a real epoch 0), and
:func:`open_epoch_keys` / :func:`open_key_history` for every recipient whose key
the world holds, and :func:`unwrap_previous_keys` (the wrapped earlier keys).

``key_package`` takes whole package bytes. ``key_package_signed`` takes
``frame(body, sealed_plaintext)``: the body is signed by the device its
``creator`` names, and when ``sealed_plaintext`` is not empty it is sealed to
the laptop in place of the laptop's row, so the parser of the sealed epoch key
(a co-device's bytes) is fuzzed too.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from fuzz.contract import attempt
from fuzz.targets import Target, frame, unframe
from fuzz.world import hex_values, vectors, world
from sddsf.crypto import seal_open
from sddsf.protocol import keypackage as kp
from sddsf.protocol import labels
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.labels import labelled
from sddsf.testing import vectorgen
from sddsf.testing.seeded import seal_seeded


@cache
def _epoch0() -> kp.KeyPackage:
    return kp.decode_key_package(bytes.fromhex(vectors("key_package")["valid"][0]["package"]))


def run(data: bytes) -> None:
    """Decode, verify as epoch 0 and as epoch 1, open for each recipient."""
    w = world()
    pkg = kp.decode_key_package(data)
    for previous in (None, _epoch0()):
        attempt(kp.verify_key_package, data, registry=w.state, space=w.space, previous=previous)
    for rid, pair in ((w.laptop.device_id, w.laptop.kx), (w.phone.device_id, w.phone.kx),
                      (w.tablet.device_id, w.tablet.kx),
                      (w.account.account_id, w.account.recovery)):
        attempt(kp.open_epoch_keys, pkg, rid, pair)
        attempt(kp.open_key_history, [pkg], rid, pair)
    attempt(kp.unwrap_previous_keys, pkg, w.epoch_key)
    kp.needs_rotation(pkg, w.state)


def run_signed(data: bytes) -> None:
    """Re-seal the laptop's row (if asked), sign as the creator, then :func:`run`."""
    w = world()
    body, sealed_plaintext = unframe(data)
    value = attempt(decode, body)
    fields = value if isinstance(value, dict) else {}
    rows = fields.get("recipients")
    if sealed_plaintext and isinstance(rows, list):
        sealed = seal_seeded(w.laptop.kx.public, sealed_plaintext,
                             vectorgen.seed("fuzz/ephemeral"))
        fields["recipients"] = [
            [row[0], sealed] if isinstance(row, list) and row and row[0] == w.laptop.device_id
            else row for row in rows]
        body = encode(fields)
    signer = w.keys_of(fields.get("creator"))
    run(encode([kp.KEY_PACKAGE_VERSION, body,
                signer.sign(labelled(labels.KEY_PACKAGE_SIG, body))]))


def seeds() -> Iterator[bytes]:
    """The key package vectors."""
    yield from hex_values("key_package", "package", "previous")


def signed_seeds() -> Iterator[bytes]:
    """Each valid package's body, alone and with the laptop's sealed plaintext."""
    w = world()
    for case in vectors("key_package")["valid"]:
        pkg = kp.decode_key_package(bytes.fromhex(case["package"]))
        yield frame(pkg.body_bytes, b"")
        opened = seal_open(w.laptop.kx, pkg.recipients[w.laptop.device_id])
        yield frame(pkg.body_bytes, opened)


TARGETS = {
    "key_package": Target("key_package", run, seeds, max_len=16384),
    "key_package_signed": Target("key_package_signed", run_signed, signed_seeds,
                                 max_len=16384),
}
