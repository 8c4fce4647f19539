"""Locating external conformance vectors (one place, used by every vector test).

External conformance vectors live in ``../shared/vectors`` beside the checkout
(override with ``SDDSF_VECTORS_DIR``). They are never copied into the project.
When the folder is absent the tests that need it skip with the reason; with
``SDDSF_REQUIRE_VECTORS=1`` (as ``.ci/run`` sets) a missing folder fails them.

Parametrize over :func:`vector_files`; each test then calls :func:`load` on its
parameter, which skips or fails when the folder was missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MISSING = "<vectors missing>"


def shared_vectors_dir() -> Path | None:
    """The external vectors folder, or None when it is absent."""
    override = os.environ.get("SDDSF_VECTORS_DIR")
    path = Path(override) if override else ROOT.parent / "shared" / "vectors"
    return path if path.is_dir() else None


def _missing(what: str) -> None:
    reason = (
        f"external vectors not found ({what}); set SDDSF_VECTORS_DIR or place the "
        "shared/ folder beside the checkout"
    )
    if os.environ.get("SDDSF_REQUIRE_VECTORS") == "1":
        pytest.fail(reason + " -- SDDSF_REQUIRE_VECTORS=1 makes this a failure")
    pytest.skip(reason)


def require_vectors(subdir: str) -> Path:
    """Return ``<vectors>/<subdir>``; skip, or fail under SDDSF_REQUIRE_VECTORS=1, if absent."""
    base = shared_vectors_dir()
    if base is None or not (base / subdir).exists():
        _missing(subdir)
    assert base is not None
    return base / subdir


def vector_files(subdir: str, pattern: str = "**/*.json") -> list[str]:
    """Relative paths of the vector files under ``subdir``, for ``parametrize``.

    When the folder is absent this returns ``[MISSING]`` so that exactly one
    test is generated, which then skips or fails through :func:`load`.
    """
    base = shared_vectors_dir()
    if base is None or not (base / subdir).is_dir():
        return [MISSING]
    root = base / subdir
    return sorted(str(p.relative_to(base)) for p in root.glob(pattern) if p.is_file())


def load(relpath: str) -> Any:
    """Load one vector JSON file given as returned by :func:`vector_files`."""
    if relpath == MISSING:
        _missing("parametrized vector set")
    base = shared_vectors_dir()
    assert base is not None
    return json.loads((base / relpath).read_text())
