"""The version 3 key package vectors (tests/vectors/key_package_v3.json).

1. The deterministic generator reproduces the committed file byte for byte.
2. Read as data through the public API, each valid case verifies with its
   stated fields and opens to its stated keys, and each invalid case is refused
   with its stated code (the TypeScript client runs the same file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sddsf.errors import SddsfError
from sddsf.protocol import keypackage as kp
from sddsf.protocol import membership as ms
from sddsf.protocol.identity import AccountKeys, DeviceKeys
from sddsf.protocol.keypackage_v3 import verify_key_package_v3
from sddsf.protocol.registry import RegistryState, verify_registry
from sddsf.testing import keypackage_v3_vectors as gen

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
DATA: dict[str, Any] = json.loads((VECTORS / gen.FILE).read_text())
CTX = DATA["context"]
SPACE = bytes.fromhex(CTX["space"])


def test_generator_reproduces_the_committed_file() -> None:
    assert gen.render(gen.generate()) == (VECTORS / gen.FILE).read_text(), (
        f"{gen.FILE} differs from the generator: run `python -m "
        "sddsf.testing.keypackage_v3_vectors tests/vectors` and review the diff")


def test_case_count_and_codes() -> None:
    # The TypeScript runner pins the same count (clients/ts/test/own_vectors.test.ts).
    assert len(DATA["valid"]) + len(DATA["invalid"]) == 26
    assert {c["code"] for c in DATA["invalid"]} == {
        "wrong_context", "unknown_epoch", "not_authorized", "unknown_device", "revoked",
        "sig_invalid", "malformed"}


def _registries() -> dict[bytes, RegistryState]:
    alice = AccountKeys.from_secret(bytes.fromhex(CTX["account_secret"]))
    regs = {alice.account_id: verify_registry([bytes.fromhex(e) for e in CTX["registry"]],
                                              pinned=alice.public)}
    for m in CTX["members"].values():
        account = AccountKeys.from_secret(bytes.fromhex(m["account_secret"]))
        regs[account.account_id] = verify_registry([bytes.fromhex(e) for e in m["registry"]],
                                                   pinned=account.public)
    return regs


REGS = _registries()
#: Alice, the space's owner: her registry judges the one-account (version 2) packages.
OWNER = next(r for a, r in REGS.items() if a.hex() not in
             {m["account_id"] for m in CTX["members"].values()})
STATES = [ms.MembershipState.empty(SPACE)]
for _raw in CTX["membership"]:
    STATES.append(STATES[-1].apply(bytes.fromhex(_raw), REGS.get))
SETS = {s.head: frozenset(s.members) for s in STATES[1:]}
CHAIN = [bytes.fromhex(p) for p in CTX["chain"]]


def _verify(data: bytes, previous: kp.KeyPackage | None, verifier: str) -> kp.KeyPackage:
    if verifier == "v2":
        return kp.verify_key_package(data, registry=OWNER, space=SPACE, previous=previous)
    return verify_key_package_v3(data, space=SPACE, previous=previous, registries=REGS,
                                 members_at=SETS.get)


def _before(count: int) -> kp.KeyPackage | None:
    previous = None
    for data in CHAIN[:count]:
        version = kp.decode_key_package(data).version
        previous = _verify(data, previous, "v3" if version == 3 else "v2")
    return previous


def _opener(name: str) -> tuple[bytes, Any]:
    if name == "alice/recovery":
        account = AccountKeys.from_secret(bytes.fromhex(CTX["account_secret"]))
        return account.account_id, account.recovery
    owner, device = name.split("/")
    seeds = CTX["devices"][device] if owner == "alice" else CTX["members"][owner]["device"]
    keys = DeviceKeys.from_seeds(bytes.fromhex(seeds["signing_seed"]),
                                 bytes.fromhex(seeds["kx_seed"]))
    return keys.device_id, keys.kx


@pytest.mark.parametrize("case", DATA["valid"], ids=lambda c: c["name"])
def test_valid(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["package"])
    version = kp.decode_key_package(data).version
    pkg = _verify(data, _before(case["previous"]), "v3" if version == 3 else "v2")
    assert gen._decoded(data) == {k: case[k] for k in gen._decoded(data)}
    assert case["opened_by"]
    for name in case["opened_by"]:
        rid, pair = _opener(name)
        assert kp.open_epoch_key(pkg, rid, pair).hex() == case["epoch_key"]
    chain = [kp.decode_key_package(p) for p in CHAIN[:case["previous"]]] + [pkg]
    for name, keys in case.get("history", {}).items():
        rid, pair = _opener(name)
        assert {str(e): k.hex() for e, k in kp.open_key_history(chain, rid, pair).items()} == keys


@pytest.mark.parametrize("case", DATA["invalid"], ids=lambda c: c["name"])
def test_invalid(case: dict[str, Any]) -> None:
    previous = _before(case["previous"])
    with pytest.raises(SddsfError) as info:
        _verify(bytes.fromhex(case["package"]), previous, case["verifier"])
    assert info.value.code.value == case["code"]
