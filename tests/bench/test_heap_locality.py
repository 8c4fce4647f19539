"""bench/heap_locality.py types the same text in every variant: each variant's
work between windows leaves the typed document equal to the edits' own replay
(so only where the document's items lie in memory can differ)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pycrdt
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # it imports trace_sync's loader
    try:
        spec = importlib.util.spec_from_file_location("heap_locality_bench",
                                                      BENCH / "heap_locality.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


EDITS = [(i % 7, 1 if i % 5 == 0 and i > 7 else 0, "ab"[i % 2]) for i in range(450)]


def _replayed() -> str:
    text = ""
    for pos, delete, insert in EDITS:
        text = text[:pos] + insert + text[pos + delete:]
    return text


@pytest.mark.parametrize("variant", ["none", "merge_keep", "merge_drop", "apply_doc",
                                     "tiny", "merge_thread", "malloc_free"])
def test_every_variant_types_the_same_text(bench: ModuleType, variant: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    docs: list[pycrdt.Doc[Any]] = []
    made = pycrdt.Doc

    def kept(*args: Any, **kwargs: Any) -> pycrdt.Doc[Any]:
        doc: pycrdt.Doc[Any] = made(*args, **kwargs)
        docs.append(doc)
        return doc

    monkeypatch.setattr(bench.pycrdt, "Doc", kept)
    report = bench.one_run(EDITS, variant, 100)
    assert set(report) == {"typing_s", "walk_ms"}
    typed = str(docs[0].get("t", type=pycrdt.Text))
    assert typed == _replayed() + "x" * 200  # the edits, then the 200 timed inserts
