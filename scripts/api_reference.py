"""Build the SDK's API reference with pdoc and check the public docstrings.

Usage::

    python scripts/api_reference.py [--out build/api] [--check-only] [--all]

The reference covers the curated public modules in :data:`PUBLIC_MODULES`
(what an application imports); each lists its public names in ``__all__``.
``build/api/index.html`` lists them. The docstrings of the modules in
:data:`CHECKED_MODULES` are held to the rules below (``--all``: of every
public module). The build fails (exit status 1, one line per problem) when:

* pdoc emits any warning while rendering any public module (an unresolvable
  annotation, a broken cross-reference, a module that does not import);
* a checked module has no ``__all__`` or no module docstring;
* a public class, function or method has no docstring, or its docstring lacks
  the Google-style section its signature calls for: ``Args:`` when it takes
  parameters, ``Returns:`` (``Yields:`` for generators) when it returns a
  value, and ``Raises:`` on every public function and method (the errors a
  caller should handle, or "Nothing of its own" when it only propagates).

Properties, dataclass fields (even one whose default is a function) and
dunder methods are exempt from the section rules (their one-line docstring is
the whole contract); so are names that a module re-exports from another public
module (they are checked there). A name re-exported from an internal module
(``sddsf.client.engine.common``) is checked where it is public.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

#: The modules of the reference, in the order a reader meets them.
PUBLIC_MODULES: tuple[str, ...] = (
    "sddsf",
    "sddsf.client.device",
    "sddsf.client.live",
    "sddsf.client.events",
    "sddsf.sync_api",
    "sddsf.client.runner",
    "sddsf.client.transport.base",
    "sddsf.client.transport.relay",
    "sddsf.client.results",
    "sddsf.client.retry",
    "sddsf.client.kv",
    "sddsf.client.vault",
    "sddsf.client.sharing",
    "sddsf.client.store",
    "sddsf.client.sqlite_store",
    "sddsf.client.memory_store",
    "sddsf.client.keystore",
    "sddsf.client.bridge",
    "sddsf.p2p.sync",
    "sddsf.p2p.hybrid",
    "sddsf.errors",
)

#: The public modules whose docstrings are held to the rules (the test suite
#: checks them, tests/unit/test_api_reference.py): every public module.
CHECKED_MODULES: tuple[str, ...] = PUBLIC_MODULES

#: pdoc templates of the reference (its index lists every public module).
TEMPLATES = Path(__file__).resolve().parent / "api_templates"


def _public_members(module: ModuleType) -> Iterator[tuple[str, Any]]:
    for name in getattr(module, "__all__", ()):
        yield name, getattr(module, name)


def _checked_here(obj: Any, module: ModuleType) -> bool:
    # Defined here, or re-exported from an sddsf module outside the reference
    # (an internal one, such as sddsf.client.engine.common): this page is its
    # only page. A name re-exported from another public module is checked there.
    home = getattr(obj, "__module__", None) or ""
    return home == module.__name__ or (
        home.partition(".")[0] == "sddsf" and home not in PUBLIC_MODULES)


def _takes_args(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return any(name not in {"self", "cls"} for name in params)


def _returns_value(func: Callable[..., Any]) -> bool:
    annotation = inspect.signature(func).return_annotation
    return annotation not in (None, "None", inspect.Signature.empty)


def _check_callable(qualname: str, func: Callable[..., Any]) -> list[str]:
    doc = inspect.getdoc(func)
    if not doc:
        return [f"{qualname}: no docstring"]
    problems = []
    if _takes_args(func) and "Args:" not in doc:
        problems.append(f"{qualname}: docstring lacks 'Args:'")
    generator = inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
    wanted = "Yields:" if generator else "Returns:"
    if _returns_value(func) and wanted not in doc:
        problems.append(f"{qualname}: docstring lacks '{wanted}'")
    if "Raises:" not in doc:
        problems.append(f"{qualname}: docstring lacks 'Raises:'")
    return problems


def _check_class(qualname: str, cls: type) -> list[str]:
    if not inspect.getdoc(cls) or cls.__doc__ is None:
        return [f"{qualname}: no docstring"]
    problems = []
    fields = getattr(cls, "__dataclass_fields__", {})
    for name, member in vars(cls).items():
        if name.startswith("_") or name in fields:
            continue
        func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        # Only the class's own methods: a field whose default is a function
        # defined elsewhere (Runner.sleep = asyncio.sleep) or a lambda of the
        # class body (Bridge.on_event) is not one.
        if inspect.isfunction(func) and func.__qualname__.startswith(f"{cls.__qualname__}."):
            problems += _check_callable(f"{qualname}.{name}", func)
    return problems


def check_docstrings(modules: tuple[str, ...] = CHECKED_MODULES) -> list[str]:
    """Return one line per docstring problem in ``modules`` (none: all good)."""
    problems: list[str] = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        if not module.__doc__:
            problems.append(f"{module_name}: no module docstring")
        if not hasattr(module, "__all__"):
            problems.append(f"{module_name}: no __all__")
            continue
        for name, obj in _public_members(module):
            qualname = f"{module_name}.{name}"
            if not _checked_here(obj, module):
                continue
            if inspect.isclass(obj):
                problems += _check_class(qualname, obj)
            elif inspect.isfunction(obj):
                problems += _check_callable(qualname, obj)
    return problems


def build(out: Path, modules: tuple[str, ...] = PUBLIC_MODULES) -> list[str]:
    """Render the reference into ``out``; return one line per pdoc warning."""
    import pdoc  # noqa: PLC0415 - a documentation-only dependency
    import pdoc.render  # noqa: PLC0415

    pdoc.render.configure(docformat="google", search=True, show_source=False,
                          template_directory=TEMPLATES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules, output_directory=out)
    return [f"pdoc: {w.message}" for w in caught if "pdoc" in (w.filename or "")
            or issubclass(w.category, UserWarning)]


def main(argv: list[str] | None = None) -> int:
    """Build and check; print the problems; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/api"))
    parser.add_argument("--check-only", action="store_true",
                        help="check the docstrings without rendering")
    parser.add_argument("--all", action="store_true",
                        help="check the docstrings of every public module, not only "
                             "CHECKED_MODULES")
    args = parser.parse_args(argv)
    problems = check_docstrings(PUBLIC_MODULES if args.all else CHECKED_MODULES)
    if not args.check_only:
        problems += build(args.out)
    for line in problems:
        print(line, file=sys.stderr)
    if not problems and not args.check_only:
        print(f"API reference written to {args.out}/index.html")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
