"""The package layering holds and modules stay readable (issue 14).

Every module under ``src/sddsf`` is parsed with :mod:`ast` (no import
happens), and each import -- at module level, inside a function, under
``TYPE_CHECKING``, or a literal ``importlib.import_module("sddsf...")`` -- is
an edge from the importing module's package to the imported one's. The
packages are ``sddsf.protocol``, ``sddsf.client``, ``sddsf.relay``,
``sddsf.cli``, ``sddsf.testing``
and the top-level modules (``sddsf.crypto``, ``sddsf.errors``, ``sddsf.wire``,
``sddsf.recovery``, ...), each its own node.

Rules:

* no cycle between packages (a package may import itself);
* ``sddsf.protocol`` (the pure core) imports nothing from the client, the
  relay, the CLI or the test kit;
* ``sddsf.relay`` imports nothing from ``sddsf.client`` or ``sddsf.cli``;
* ``sddsf.client`` imports nothing from ``sddsf.relay`` or ``sddsf.cli``;
* no module is longer than ``MAX_LINES`` unless its module docstring has a
  line starting with ``Size:`` that says why.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = SRC / "sddsf"
MAX_LINES = 500


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` (a module file) imports ``target`` (a module name)."""

    source: str
    line: int
    target: str


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(name: str) -> str:
    """The node a module belongs to: ``sddsf.<first part>`` (or ``sddsf``)."""
    parts = name.split(".")
    return ".".join(parts[:2])


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    # A relative import: drop one part per level from the importing package.
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path) -> Iterator[Edge]:
    src = module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Edge(src, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(path, node)
            if module == "sddsf":
                # ``from sddsf import recovery`` imports the module sddsf.recovery.
                for alias in node.names:
                    yield Edge(src, node.lineno, f"sddsf.{alias.name}")
            else:
                yield Edge(src, node.lineno, module)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            yield Edge(src, node.lineno, node.args[0].value)


def all_edges() -> list[Edge]:
    edges = [e for p in sorted(ROOT.rglob("*.py")) for e in imports_of(p)]
    return [e for e in edges if e.target == "sddsf" or e.target.startswith("sddsf.")]


def package_graph(edges: list[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for e in edges:
        a, b = package_of(e.source), package_of(e.target)
        graph.setdefault(a, set())
        graph.setdefault(b, set())
        if a != b:
            graph[a].add(b)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: every component of more than one package."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _violations(edges: list[Edge], source: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{e.source}:{e.line} imports {e.target}" for e in edges
            if package_of(e.source) == source and package_of(e.target) in forbidden]


def _cycle_witnesses(edges: list[Edge], component: list[str]) -> list[str]:
    members = set(component)
    return sorted({f"{e.source}:{e.line} -> {e.target}" for e in edges
                   if package_of(e.source) in members and package_of(e.target) in members
                   and package_of(e.source) != package_of(e.target)})


def test_the_graph_sees_the_packages() -> None:
    graph = package_graph(all_edges())
    for package in ("sddsf.protocol", "sddsf.client", "sddsf.relay", "sddsf.cli",
                    "sddsf.testing", "sddsf.crypto", "sddsf.errors", "sddsf.wire"):
        assert package in graph, package
    assert "sddsf.protocol" in graph["sddsf.relay"]
    assert "sddsf.client" in graph["sddsf.cli"]


def test_function_level_and_relative_imports_count() -> None:
    # A run-time import inside a function is as much a dependency as one at the top.
    tree = ROOT / "cli" / "device_cmds.py"
    targets = {e.target for e in imports_of(tree)}
    assert "sddsf.recovery" in targets  # ``from sddsf import recovery`` in a function


def test_no_cycle_between_packages() -> None:
    edges = all_edges()
    cycles = strongly_connected(package_graph(edges))
    assert not cycles, "\n".join(
        f"cycle {' <-> '.join(c)}:\n  " + "\n  ".join(_cycle_witnesses(edges, c))
        for c in cycles)


def test_protocol_imports_no_adapter() -> None:
    bad = _violations(all_edges(), "sddsf.protocol",
                      ("sddsf.client", "sddsf.relay", "sddsf.cli", "sddsf.testing",
                       "sddsf.recovery"))
    assert not bad, "\n".join(bad)


def test_relay_imports_no_client_or_cli() -> None:
    bad = _violations(all_edges(), "sddsf.relay", ("sddsf.client", "sddsf.cli"))
    assert not bad, "\n".join(bad)


def test_client_imports_no_relay_or_cli() -> None:
    bad = _violations(all_edges(), "sddsf.client", ("sddsf.relay", "sddsf.cli"))
    assert not bad, "\n".join(bad)


def size_reason(path: Path) -> str | None:
    """The module docstring's ``Size:`` line, if any."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return next((ln.strip() for ln in doc.splitlines() if ln.strip().startswith("Size:")),
                None)


def test_modules_are_short_or_say_why() -> None:
    long = []
    for path in sorted(ROOT.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and size_reason(path) is None:
            long.append(f"{path.relative_to(SRC)}: {lines} lines, no 'Size:' reason")
    assert not long, "\n".join(long)


def test_size_reasons_say_something() -> None:
    for path in sorted(ROOT.rglob("*.py")):
        reason = size_reason(path)
        if reason is not None:
            assert len(reason.removeprefix("Size:").split()) >= 4, f"{path}: {reason}"
