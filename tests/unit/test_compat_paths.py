"""The old ``sddsf.controller.{reports,encpolicy,audit}`` paths still work.

They only re-export the protocol modules the formats moved to (issue 14), so
code written against the old layout gets the very same objects, and they pull
in nothing but :mod:`sddsf.protocol`.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

MOVED = {"reports": "posture", "encpolicy": "encpolicy", "audit": "audit"}


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_old_path_reexports_the_protocol_module(old: str, new: str) -> None:
    legacy = importlib.import_module(f"sddsf.controller.{old}")
    current = importlib.import_module(f"sddsf.protocol.{new}")
    assert sorted(legacy.__all__) == sorted(current.__all__)
    for name in current.__all__:
        assert getattr(legacy, name) is getattr(current, name), name


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_imports_only_the_protocol(old: str) -> None:
    path = Path(importlib.import_module(f"sddsf.controller.{old}").__file__ or "")
    modules = {n.module for n in ast.walk(ast.parse(path.read_text()))
               if isinstance(n, ast.ImportFrom)}
    assert modules == {"__future__", f"sddsf.protocol.{MOVED[old]}"}
