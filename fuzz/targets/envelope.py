"""Op envelopes: :func:`decode_envelope`, every rule of :func:`verify_op` and
:func:`verify_batch` (live and history mode), and :func:`open_op`.

``envelope`` takes whole envelope bytes. ``envelope_sealed`` takes
``frame(header_bytes, plaintext)``: the header is encrypted-to and signed
exactly as an honest author would (the key of the device the header names),
so every rule behind the signature sees fuzzed headers.

Oracles beyond the contract: a decoded header re-encodes to its bytes, and an
op accepted in a batch is a duplicate when submitted again.
"""

from __future__ import annotations

from collections.abc import Iterator

from fuzz.contract import attempt
from fuzz.targets import Target, frame, unframe
from fuzz.world import factories, hex_values, vectors, world
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.envelope import decode_envelope, open_op
from sddsf.protocol.rules import MemoryChainView, Outcome, Verdict, verify_batch, verify_op


def run(data: bytes) -> None:
    """Decode, verify in every mode, decrypt."""
    w = world()
    env = decode_envelope(data)
    if encode(env.header.to_wire()) != env.header_bytes:
        raise AssertionError("a decoded op header does not re-encode to its bytes")
    for now in (w.now_ms, None):
        attempt(verify_op, data, space=w.space, registry=w.state, epochs=w.epochs,
                chains=MemoryChainView(), now_ms=now)
        attempt(verify_op, env, space=w.space, registry=w.state, epochs=w.epochs,
                chains=w.chains(), now_ms=now)
    first, again = verify_batch([data, data], space=w.space, registry=w.state, epochs=w.epochs,
                                chains=w.chains(), now_ms=w.now_ms)
    if (isinstance(first, Verdict) and first.outcome is Outcome.ACCEPT
            and not (isinstance(again, Verdict) and again.outcome is Outcome.DUPLICATE)):
        raise AssertionError(f"an accepted op submitted again gave {again!r}, not a duplicate")
    attempt(open_op, env, w.epoch_key)


def run_sealed(data: bytes) -> None:
    """Encrypt and sign ``plaintext`` under ``header_bytes`` as its author, then :func:`run`."""
    header_bytes, plaintext = unframe(data)
    w = world()
    value = attempt(decode, header_bytes)
    h = value if isinstance(value, dict) else {}
    space, doc, epoch, nonce = h.get("space"), h.get("doc"), h.get("epoch"), h.get("nonce")
    if not (isinstance(space, bytes) and isinstance(doc, bytes) and isinstance(nonce, bytes)
            and len(nonce) == 24 and type(epoch) is int):
        # Not encryptable as it stands: still signed, so the decoder decides.
        space, doc, epoch, nonce = b"", b"", 0, bytes(24)
    raw = factories().envelope_by_hand(header_bytes, plaintext, signer=w.keys_of(h.get("author")),
                                       nonce=nonce, space=space, doc=doc, epoch=epoch,
                                       epoch_key=w.epoch_key)
    run(raw)


def seeds() -> Iterator[bytes]:
    """The envelope vectors (accepted, and refused for each rule)."""
    yield from hex_values("envelope", "envelope", "preceding")


def sealed_seeds() -> Iterator[bytes]:
    """Header and plaintext of every valid envelope vector."""
    for case in vectors("envelope")["valid"]:
        env = decode_envelope(bytes.fromhex(case["envelope"]))
        yield frame(env.header_bytes, bytes.fromhex(case["plaintext"]))


TARGETS = {
    "envelope": Target("envelope", run, seeds),
    "envelope_sealed": Target("envelope_sealed", run_sealed, sealed_seeds),
}
