"""Sample first-sync bundles (protocol 17.9) shared by the Python unit tests and
the TypeScript client's cross-check generator (``clients/ts/testkit``): one
relay key, one request and two spaces covering every component (key packages,
both snapshots, a chunk, an op with its envelope and a pruned one)."""

from __future__ import annotations

from sddsf.crypto import Ed25519SigningKey
from sddsf.protocol.bootstrap import BundledOp, BundledSnapshot, BundledSpace, sign_bootstrap

__all__ = ["ACCOUNT", "BARE", "DEVICE", "KEY", "NONCE", "SPACE", "bundle"]

#: The relay key (seed ``00 01 … 1f``) and the request the samples answer.
KEY = Ed25519SigningKey.from_seed(bytes(range(32)))
ACCOUNT, DEVICE, NONCE = b"a" * 32, b"d" * 32, b"n" * 16
SPACE = BundledSpace(
    b"s" * 16, 3, b"r" * 32, 1, b"head", keys=(b"kp0", b"kp1"),
    snapshots=(BundledSnapshot(bytes(16), 1, b"manifest", b"i" * 32, (b"att",)),
               BundledSnapshot(bytes(15) + b"\x01", -1, None, None, ())),
    chunks={b"c" * 32: b"chunk"}, after=1,
    ops=(BundledOp(2, b"o" * 32, b"l" * 32, b"env"), BundledOp(3, b"p" * 32, b"m" * 32, None)))
BARE = BundledSpace(b"t" * 16, 0, b"z" * 32, -1, b"head2")


def bundle(**overrides: object) -> bytes:
    """The valid sample bundle, with any of :func:`sign_bootstrap`'s arguments replaced."""
    args: dict[str, object] = {"account": ACCOUNT, "device": DEVICE, "nonce": NONCE, "ts_ms": 7,
                               "registry": [b"g", b"e"], "policy": b"p", "spaces": [SPACE, BARE]}
    args.update(overrides)
    return sign_bootstrap(KEY, **args)  # type: ignore[arg-type]
