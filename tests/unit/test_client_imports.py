"""The client's import graph: no engine part or transport imports the ``Device``
facade, and the client package has no import circles (every import counts,
including ones inside functions and under ``TYPE_CHECKING``)."""

from __future__ import annotations

import ast
from pathlib import Path

import sddsf

SRC = Path(sddsf.__file__).resolve().parent
FACADE = "sddsf.client.device"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a.b import c`` counts as ``a.b`` and,
    when ``a.b.c`` is a module, as that too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}")
    return found


def _client_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in (SRC / "client").rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def test_no_engine_part_or_transport_imports_the_facade() -> None:
    offenders = []
    for folder in ("engine", "transport"):
        for path in sorted((SRC / "client" / folder).rglob("*.py")):
            if any(m == FACADE or m.startswith(FACADE + ".") for m in _imports(path)):
                offenders.append(_module_name(path))
    assert offenders == []


def test_helpers_below_the_facade_do_not_import_it() -> None:
    graph = _client_graph()
    below = ["sddsf.client.controller", "sddsf.client.governance", "sddsf.client.vault",
             "sddsf.client.kv", "sddsf.client.hosts", "sddsf.client.records",
             "sddsf.client.relay_client"]
    assert {m: sorted(graph[m] & {FACADE}) for m in below} == {m: [] for m in below}


def test_client_package_has_no_import_circles() -> None:
    graph = _client_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert cycles == []
