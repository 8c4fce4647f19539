"""The presence record vectors (tests/vectors/presence.json).

1. The deterministic generator reproduces the committed file byte for byte.
2. Read as data through the public API (decode, verify against the context's
   registry, open with the epoch's key), each valid case gives its stated
   fields and intermediate values, and each invalid case is refused with its
   stated code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sddsf.errors import SddsfError
from sddsf.protocol.identity import AccountKeys
from sddsf.protocol.presence import (
    decode_presence,
    open_presence,
    presence_key,
    verify_presence,
)
from sddsf.protocol.registry import verify_registry
from sddsf.testing import presence_vectors as gen

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
DATA: dict[str, Any] = json.loads((VECTORS / gen.FILE).read_text())
CTX = DATA["context"]
SPACE = bytes.fromhex(CTX["space"])
KEYS = {int(e): bytes.fromhex(k) for e, k in CTX["epoch_keys"].items()}
REGISTRY = verify_registry([bytes.fromhex(e) for e in CTX["registry"]],
                           pinned=AccountKeys.from_secret(
                               bytes.fromhex(CTX["account_secret"])).public)


def test_generator_reproduces_the_committed_file() -> None:
    assert gen.render(gen.generate()) == (VECTORS / gen.FILE).read_text(), (
        f"{gen.FILE} differs from the generator: run `python -m "
        "sddsf.testing.presence_vectors tests/vectors` and review the diff")


def test_case_count_and_codes() -> None:
    assert (len(DATA["valid"]), len(DATA["invalid"])) == (3, 19)
    assert {c["code"] for c in DATA["invalid"]} == {
        "presence_expired", "clock_skew", "sig_invalid", "wrong_context", "revoked",
        "unknown_device", "decrypt_failed", "malformed", "too_large", "unsupported_version"}


def _read(raw: bytes, now_ms: int) -> tuple[Any, Any]:
    record = decode_presence(raw)
    verify_presence(record, REGISTRY, space=SPACE, now_ms=now_ms)
    return record, open_presence(record, KEYS.get(record.epoch, bytes(32)))


@pytest.mark.parametrize("case", DATA["valid"], ids=lambda c: c["name"])
def test_valid_case(case: dict[str, Any]) -> None:
    record, presence = _read(bytes.fromhex(case["record"]), case["now_ms"])
    assert (record.device.hex(), record.epoch, record.expires_ms, record.nonce.hex()) == (
        case["device"], case["epoch"], case["expires_ms"], case["nonce"])
    assert (presence.peer, list(presence.addrs), presence.ts) == (
        case["peer"], case["addrs"], case["ts"])
    assert presence_key(KEYS[case["epoch"]], SPACE, case["epoch"]).hex() == case["key"]
    # A record read one millisecond before its expiry is still valid.
    _read(bytes.fromhex(case["record"]), case["expires_ms"] - 1)


@pytest.mark.parametrize("case", DATA["invalid"], ids=lambda c: c["name"])
def test_invalid_case(case: dict[str, Any]) -> None:
    with pytest.raises(SddsfError) as info:
        _read(bytes.fromhex(case["record"]), case["now_ms"])
    assert info.value.code.value == case["code"]
