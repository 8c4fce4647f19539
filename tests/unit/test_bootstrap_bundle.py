"""The first-sync bundle's wire form (protocol 17.9): round trip, signature,
binding to the request, and the decoder's refusals."""

from __future__ import annotations

import pytest

from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import Code, DecodeError, ProofError
from sddsf.protocol import labels
from sddsf.protocol.bootstrap import (
    verify_bootstrap,
)
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.labels import labelled
from sddsf.testing.bootstrap_samples import ACCOUNT, BARE, DEVICE, KEY, NONCE, SPACE, bundle


def check(raw: bytes):  # type: ignore[no-untyped-def]
    return verify_bootstrap(raw, KEY.public, account=ACCOUNT, device=DEVICE, nonce=NONCE)


def resigned(raw: bytes, change: dict[str, object]) -> bytes:
    _, body_bytes, _ = decode(raw)  # type: ignore[misc]
    body = decode(body_bytes)
    assert isinstance(body, dict)
    body.update(change)
    new = encode(body)
    return encode([1, new, KEY.sign(labelled(labels.BOOTSTRAP_SIG, new))])


def test_round_trip_keeps_every_component() -> None:
    b = check(bundle())
    assert (b.account, b.device, b.ts, b.registry, b.policy) == (ACCOUNT, DEVICE, 7,
                                                                 (b"g", b"e"), b"p")
    assert b.spaces == (SPACE, BARE)
    assert check(bundle(registry=None, policy=None)).registry is None


def test_any_bit_flip_is_refused() -> None:
    raw = bundle()
    for i in range(0, len(raw), max(1, len(raw) // 64)):
        with pytest.raises((ProofError, DecodeError)):
            check(raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1:])


def test_a_signature_by_another_key_is_refused() -> None:
    other = Ed25519SigningKey.from_seed(bytes(32))
    with pytest.raises(ProofError) as info:
        verify_bootstrap(bundle(), other.public, account=ACCOUNT, device=DEVICE, nonce=NONCE)
    assert info.value.code is Code.TREE_HEAD_INVALID


@pytest.mark.parametrize("field", ["account", "device", "nonce"])
def test_a_bundle_for_another_request_is_refused(field: str) -> None:
    raw = bundle(**{field: b"x" * (16 if field == "nonce" else 32)})
    with pytest.raises(ProofError) as info:
        check(raw)
    assert info.value.code is Code.TREE_HEAD_INVALID and "another request" in info.value.message


@pytest.mark.parametrize("change", [
    {"spaces": [{"space": b"s" * 16}]},  # fields missing
    {"spaces": [{**dict.fromkeys(("space", "size", "root", "epoch", "head"), 0)}]},
    {"registry": [1]},
    {"policy": 3},
    {"extra": 1},
])
def test_malformed_bodies_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(DecodeError) as info:
        check(resigned(bundle(), change))
    assert info.value.code is Code.MALFORMED


def test_ops_without_their_cursor_are_refused() -> None:
    _, body_bytes, _ = decode(bundle())  # type: ignore[misc]
    body = decode(body_bytes)
    assert isinstance(body, dict)
    spaces = body["spaces"]
    del spaces[0]["after"]
    with pytest.raises(DecodeError):
        check(resigned(bundle(), {"spaces": spaces}))


def test_another_version_is_unsupported() -> None:
    _, body_bytes, _ = decode(bundle())  # type: ignore[misc]
    body = decode(body_bytes)
    assert isinstance(body, dict)
    body["v"] = 2
    new = encode(body)
    with pytest.raises(DecodeError) as info:
        check(encode([2, new, KEY.sign(labelled(labels.BOOTSTRAP_SIG, new))]))
    assert info.value.code is Code.UNSUPPORTED_VERSION
