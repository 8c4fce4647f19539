"""Deterministic vectors of presence records (tests/vectors/presence.json).

Run ``python -m sddsf.testing.presence_vectors tests/vectors`` to (re)write the
file; ``tests/unit/test_presence_vectors.py`` regenerates it and compares, and
runs every case through :mod:`sddsf.protocol.presence`.

The world is :mod:`sddsf.testing.vectorgen`'s (one account: laptop, phone, a
revoked tablet; the vector space), with epoch keys ``seed("epoch-key/<e>")``
for epochs 0 and 1. Every case is judged as a reader does (protocol.md 23.5):
``decode_presence``, then ``verify_presence`` against the context's registry
for the context's space at the case's ``now_ms``, then ``open_presence`` with
the key of the record's epoch. Valid cases give every intermediate value
(key, associated data, signed message, plaintext); invalid cases give the
record and the code the first failing step reports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sddsf.crypto import aead_encrypt
from sddsf.errors import Code
from sddsf.protocol import labels
from sddsf.protocol.encoding import encode
from sddsf.protocol.identity import DeviceKeys
from sddsf.protocol.labels import labelled
from sddsf.protocol.presence import (
    MAX_PRESENCE_RECORD,
    MAX_PRESENCE_TTL_MS,
    presence_key,
    seal_presence,
)
from sddsf.testing.vectorgen import NOW_MS, SPACE, seed
from sddsf.testing.vectorgen import _World as World

__all__ = ["FILE", "generate", "render", "write"]

FILE = "presence.json"
PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
TTL_MS = 600_000


def _keys() -> dict[int, bytes]:
    return {e: seed(f"epoch-key/{e}") for e in (0, 1)}


def _raw(device: DeviceKeys, *, epoch: int = 0, expires_ms: int = NOW_MS + TTL_MS,
         plaintext: bytes | None = None, space: bytes = SPACE, key_epoch: int | None = None,
         nonce_name: str = "presence/crafted", version: int = 1,
         sign_with: DeviceKeys | None = None, flip_ciphertext: bool = False) -> bytes:
    """A record built field by field, so that each invalid case has one defect
    (signed by ``sign_with`` or the device, over whatever the record holds)."""
    nonce = seed(nonce_name)[:24]
    plain = plaintext if plaintext is not None else encode(
        {"peer": PEER, "addrs": ["/ip4/192.0.2.7/tcp/4001"], "ts": NOW_MS})
    ad = labelled(labels.PRESENCE_AD, space, epoch, device.device_id, expires_ms, nonce)
    key = presence_key(_keys()[epoch if key_epoch is None else key_epoch], space, epoch)
    ct = aead_encrypt(key, nonce, plain, ad)
    if flip_ciphertext:  # changed after encryption, before signing
        ct = bytes([ct[0] ^ 1]) + ct[1:]
    sig = (sign_with or device).sign(labelled(labels.PRESENCE_SIG, space, epoch,
                                              device.device_id, expires_ms, nonce, ct))
    return encode([version, space, epoch, device.device_id, expires_ms, nonce, ct, sig])


def _valid(w: World) -> list[dict[str, Any]]:
    cases: tuple[tuple[str, DeviceKeys, int, list[str], int], ...] = (
        ("the laptop, one address", w.laptop, 0,
         ["/ip4/192.0.2.7/tcp/4001"], TTL_MS),
        ("the phone in epoch 1, three addresses, the longest lifetime", w.phone, 1,
         ["/ip4/198.51.100.20/udp/4001/quic-v1", "/ip6/2001:db8::20/tcp/4001",
          "/dns4/relay.example/tcp/443/wss/p2p/" + PEER + "/p2p-circuit"], MAX_PRESENCE_TTL_MS),
        ("the laptop with no address (reachable through its peer id only)", w.laptop, 0, [],
         1),
    )
    out = []
    for name, device, epoch, addrs, ttl in cases:
        nonce = seed(f"presence/{name}")[:24]
        record = seal_presence(device, space=SPACE, epoch=epoch, epoch_key=_keys()[epoch],
                               peer=PEER, addrs=addrs, now_ms=NOW_MS, ttl_ms=ttl, nonce=nonce)
        expires = NOW_MS + ttl
        out.append({
            "name": name, "device": device.device_id.hex(), "epoch": epoch, "peer": PEER,
            "addrs": addrs, "ts": NOW_MS, "ttl_ms": ttl, "expires_ms": expires,
            "nonce": nonce.hex(), "now_ms": NOW_MS,
            "key": presence_key(_keys()[epoch], SPACE, epoch).hex(),
            "ad": labelled(labels.PRESENCE_AD, SPACE, epoch, device.device_id, expires,
                           nonce).hex(),
            "plaintext": encode({"peer": PEER, "addrs": addrs, "ts": NOW_MS}).hex(),
            "record": record.hex()})
    return out


def _invalid(w: World) -> list[dict[str, Any]]:
    good = _raw(w.laptop)
    flipped_sig = good[:-1] + bytes([good[-1] ^ 1])
    ct_at = len(good) - 67  # the ciphertext's last byte (the signature takes 66)
    flipped_ct = good[:ct_at] + bytes([good[ct_at] ^ 1]) + good[ct_at + 1:]
    plain = encode({"peer": PEER, "addrs": [], "ts": NOW_MS})
    cases: list[tuple[str, bytes, int, Code]] = [
        ("expired: read at its expiry", good, NOW_MS + TTL_MS, Code.PRESENCE_EXPIRED),
        ("expiring beyond the longest lifetime", _raw(
            w.laptop, expires_ms=NOW_MS + MAX_PRESENCE_TTL_MS + 1), NOW_MS, Code.CLOCK_SKEW),
        ("a bit flip in the signature", flipped_sig, NOW_MS, Code.SIG_INVALID),
        ("a bit flip in the ciphertext", flipped_ct, NOW_MS, Code.SIG_INVALID),
        ("signed by another device than it names", _raw(w.laptop, sign_with=w.phone), NOW_MS,
         Code.SIG_INVALID),
        ("of another space", _raw(w.laptop, space=bytes(16)), NOW_MS, Code.WRONG_CONTEXT),
        ("of the revoked tablet", _raw(w.tablet), NOW_MS, Code.REVOKED),
        ("of a device the registry does not list",
         _raw(DeviceKeys.from_seeds(seed("stranger/sign"), seed("stranger/kx"))), NOW_MS,
         Code.UNKNOWN_DEVICE),
        ("encrypted under another epoch's key", _raw(w.laptop, key_epoch=1), NOW_MS,
         Code.DECRYPT_FAILED),
        ("ciphertext changed, then signed again", _raw(w.laptop, flip_ciphertext=True),
         NOW_MS, Code.DECRYPT_FAILED),
        ("a plaintext with an unknown field", _raw(
            w.laptop, plaintext=encode({"peer": PEER, "addrs": [], "ts": NOW_MS, "x": 1})),
         NOW_MS, Code.MALFORMED),
        ("a plaintext time after the expiry", _raw(
            w.laptop, plaintext=encode({"peer": PEER, "addrs": [], "ts": NOW_MS + TTL_MS})),
         NOW_MS, Code.MALFORMED),
        ("an empty peer id", _raw(w.laptop, plaintext=encode(
            {"peer": "", "addrs": [], "ts": NOW_MS})), NOW_MS, Code.MALFORMED),
        ("17 addresses", _raw(w.laptop, plaintext=encode(
            {"peer": PEER, "addrs": ["/ip4/192.0.2.1/tcp/1"] * 17, "ts": NOW_MS})), NOW_MS,
         Code.TOO_LARGE),
        ("version 2", _raw(w.laptop, version=2, plaintext=plain), NOW_MS,
         Code.UNSUPPORTED_VERSION),
        ("a trailing byte", good + b"\x00", NOW_MS, Code.MALFORMED),
        ("seven items", encode([1, SPACE, 0, w.laptop.device_id, NOW_MS, bytes(24), bytes(16)]),
         NOW_MS, Code.MALFORMED),
        ("an epoch that is not an integer (false)", _swap_epoch(good), NOW_MS,
         Code.MALFORMED),
        (f"{MAX_PRESENCE_RECORD + 1} bytes", good + bytes(MAX_PRESENCE_RECORD + 1 - len(good)),
         NOW_MS, Code.TOO_LARGE),
    ]
    return [{"name": n, "record": r.hex(), "now_ms": t, "code": c.value}
            for n, r, t, c in cases]


def _swap_epoch(record: bytes) -> bytes:
    # The epoch (0, encoded 0x00) follows the version and the space: make it false.
    at = 1 + 1 + 1 + 16
    return record[:at] + b"\xf4" + record[at + 1:]


def generate() -> dict[str, Any]:
    """The whole vector document."""
    w = World()
    context = {**w.context(), "epoch_keys": {str(e): k.hex() for e, k in _keys().items()}}
    return {"generator": "python -m sddsf.testing.presence_vectors tests/vectors",
            "context": context, "valid": _valid(w), "invalid": _invalid(w)}


def render(doc: dict[str, Any]) -> str:
    """The exact text written to the vector file."""
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def write(directory: Path) -> Path:
    """Write the vector file into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE
    path.write_text(render(generate()))
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/vectors")))
