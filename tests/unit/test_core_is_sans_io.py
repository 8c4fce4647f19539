"""The protocol core does no I/O (issue acceptance: importing sddsf.protocol
imports nothing that does I/O), and only sddsf.crypto touches crypto libraries."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "sddsf"
PROTOCOL = SRC / "protocol"

# Modules whose presence would mean sockets, files-as-storage, threads, clocks
# as a source of truth, randomness or subprocesses inside the core.
FORBIDDEN_RUNTIME = {
    "socket", "ssl", "select", "selectors", "asyncio", "threading", "sqlite3",
    "subprocess", "multiprocessing", "concurrent.futures", "http.client",
    "urllib.request", "random", "secrets", "tempfile", "shutil", "logging",
}
# What a protocol module may import directly.
ALLOWED_IMPORTS = {
    "__future__", "base64", "collections", "collections.abc", "dataclasses", "enum",
    "typing", "hashlib", "functools", "difflib", "re", "urllib.parse",
}
CRYPTO_LIBS = ("nacl", "argon2", "cryptography", "spake2", "coincurve", "shamir_mnemonic")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_importing_the_core_loads_no_io_module() -> None:
    code = (
        "import sys, json; before = set(sys.modules);"
        "import pkgutil, importlib, sddsf.protocol as p;"
        "[importlib.import_module('sddsf.protocol.' + m.name)"
        " for m in pkgutil.iter_modules(p.__path__)];"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(SRC.parent)})
    loaded = set(json.loads(out.stdout))
    assert "sddsf.protocol.rules" in loaded  # the probe really imported the core
    assert not (loaded & FORBIDDEN_RUNTIME), sorted(loaded & FORBIDDEN_RUNTIME)


def test_protocol_modules_import_only_pure_modules() -> None:
    modules = sorted(PROTOCOL.glob("*.py"))
    assert len(modules) >= 10
    for path in modules:
        for name in _imports(path):
            ok = name in ALLOWED_IMPORTS or name in ("sddsf.crypto", "sddsf.errors") \
                or name == "sddsf.protocol" or name.startswith("sddsf.protocol.")
            assert ok, f"{path.name} imports {name}"


def test_only_crypto_module_imports_crypto_libraries() -> None:
    for path in SRC.rglob("*.py"):
        if path.name == "crypto.py" and path.parent == SRC:
            continue
        bad = {n for n in _imports(path) if n.split(".")[0] in CRYPTO_LIBS}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_no_second_ed25519_library() -> None:
    text = (SRC / "crypto.py").read_text()
    assert "cryptography.hazmat.primitives.asymmetric" not in text
    assert "kdf.hkdf" in text  # cryptography is there for HKDF only
