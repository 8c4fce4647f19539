"""Print pip constraints that pin every dependency to its declared floor.

``python scripts/min_constraints.py [EXTRA ...]`` reads pyproject.toml and prints
``name==floor`` for each requirement of ``[project.dependencies]`` (and of the
named optional extras) that has a ``>=`` floor. CI installs the package with
these constraints in a fresh virtual environment and runs the unit tests, so a
floor in pyproject.toml is a version that was actually tested.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_FLOOR = re.compile(r"^\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*(?:[^;]*?)>=\s*([0-9][^,;\s]*)")


def floors(extras: list[str]) -> dict[str, str]:
    """Package name -> floor version, for the dependencies and ``extras``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += [r for r in project["optional-dependencies"][extra]
                         if not r.startswith("sddsf[")]
    out: dict[str, str] = {}
    for requirement in requirements:
        found = _FLOOR.match(requirement)
        if found:
            out[found.group(1).lower()] = found.group(2)
    return out


def main() -> None:
    for name, version in sorted(floors(sys.argv[1:]).items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
