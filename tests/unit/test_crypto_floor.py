"""Issue 12 findings 18 and 19: the cryptographic library's floor and self-test,
and the deterministic sealing form kept out of every normal code path."""

from __future__ import annotations

import ast
import inspect
import tomllib
from pathlib import Path

import nacl.bindings as sodium
import pytest

from factories import D1, D2, EPOCH_KEY, NOW_MS, SPACE, base_registry
from sddsf import crypto
from sddsf.crypto import Ed25519PublicKey, seal, seal_open
from sddsf.errors import Code, ConfigError, KeyValidationError
from sddsf.protocol import keypackage as kp

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "sddsf"
P = 2**255 - 19


def mixed_order_point() -> bytes:
    """The base point plus the point of order 2: on the curve, not of prime order."""
    base = sodium.crypto_scalarmult_ed25519_base_noclamp((1).to_bytes(32, "little"))
    return bytes(sodium.crypto_core_ed25519_add(base, (P - 1).to_bytes(32, "little")))


def test_a_mixed_order_public_key_is_refused() -> None:
    point = mixed_order_point()
    # it is on the curve (libsodium adds and subtracts it) but not of prime order
    base = sodium.crypto_scalarmult_ed25519_base_noclamp((1).to_bytes(32, "little"))
    assert sodium.crypto_core_ed25519_sub(point, base) == (P - 1).to_bytes(32, "little")
    with pytest.raises(KeyValidationError) as info:
        Ed25519PublicKey.from_bytes(point)
    assert info.value.code is Code.BAD_KEY


def test_self_test_refuses_a_library_that_accepts_the_mixed_order_point(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """libsodium before 1.0.21 (PyNaCl 1.6.0) answers True for the probe; simulate it."""
    crypto.self_test()  # this library passes
    probe = mixed_order_point()
    real = sodium.crypto_core_ed25519_is_valid_point
    monkeypatch.setattr(crypto._sodium, "crypto_core_ed25519_is_valid_point",
                        lambda p: True if p == probe else real(p))
    monkeypatch.setattr(crypto, "_self_tested", False)
    with pytest.raises(ConfigError, match="CVE-2025-69277"):
        crypto.self_test()
    with pytest.raises(ConfigError):  # and no key is accepted with it
        Ed25519PublicKey.from_bytes(D1.signing.public.raw)


def test_dependency_floors() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = {d.split(">")[0].split("<")[0].split("[")[0].strip(): d for d in deps}
    assert "pynacl>=1.6.2" in spec["pynacl"]  # 1.6.0: CVE-2025-69277; 1.5: no crypto_box_easy
    assert "<1" in spec["httpx"]  # 1.0 removes AsyncClient / ASGITransport
    assert "websockets>=15" in spec["websockets"]


def test_seal_draws_its_own_ephemeral_key() -> None:
    assert list(inspect.signature(seal).parameters) == ["recipient_public", "message"]
    a, b = seal(D1.kx.public, b"epoch key"), seal(D1.kx.public, b"epoch key")
    assert a != b and a[:32] != b[:32]  # a fresh ephemeral key each time
    assert seal_open(D1.kx, a) == b"epoch key" == seal_open(D1.kx, b)
    assert sodium.crypto_box_seal_open(a, D1.kx.public, D1.kx.secret) == b"epoch key"
    with pytest.raises(KeyValidationError):
        seal(bytes(32), b"m")


def test_key_packages_are_sealed_with_fresh_ephemeral_keys() -> None:
    state = base_registry().state

    def build() -> bytes:
        return kp.build_key_package(creator=D1, registry=state, space=SPACE, epoch=0,
                                    prev=bytes(32), epoch_key=EPOCH_KEY, ts_ms=NOW_MS)

    one, two = kp.decode_key_package(build()), kp.decode_key_package(build())
    assert set(one.recipients) == set(two.recipients)
    assert all(one.recipients[r] != two.recipients[r] for r in one.recipients)
    assert kp.open_epoch_key(one, D2.device_id, D2.kx) == EPOCH_KEY


def _uses(path: Path) -> list[str]:
    """Where ``path`` names the seeded seal or passes ``ephemeral_seeds=``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in ("_seal_seeded", "seal_seeded"):
                found.append(f"{name} line {node.lineno}")
        elif isinstance(node, ast.ImportFrom):
            found += [f"import {a.name} line {node.lineno}" for a in node.names
                      if a.name in ("_seal_seeded", "seal_seeded")]
        elif isinstance(node, ast.keyword) and node.arg == "ephemeral_seeds":
            found.append(f"ephemeral_seeds= line {node.value.lineno}")
    return found


def test_no_normal_code_path_reaches_the_seeded_seal() -> None:
    allowed = {SRC / "crypto.py", SRC / "protocol" / "keypackage.py",
               SRC / "protocol" / "keypackage_v3.py"}
    offenders = {str(p.relative_to(SRC)): _uses(p) for p in SRC.rglob("*.py")
                 if p not in allowed and "testing" not in p.relative_to(SRC).parts
                 and _uses(p)}
    assert not offenders, offenders
    assert _uses(SRC / "testing" / "vectorgen.py"), "the probe finds the vector generator's use"
