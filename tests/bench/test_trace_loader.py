"""The trace benchmark's loader (bench/trace_sync.py): any trace in the
editing-traces format, including text outside ASCII.

Positions and lengths in a trace count Unicode code points; pycrdt's ``Text``
indexes UTF-8 bytes. The loader converts, so the baseline (plain pycrdt) and
the SDDSF run both end on the trace's ``endContent``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "trace_sync.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trace_sync_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the dataclass decorator looks the module up
    spec.loader.exec_module(module)
    return module


def write_trace(path: Path, start: str, patches: list[tuple[int, int, str]]) -> str:
    """Write a trace whose edits are PATCHES (code points) and return its end text."""
    text = start
    for pos, delete, insert in patches:
        text = text[:pos] + insert + text[pos + delete:]
    data = {"startContent": start, "endContent": text,
            "txns": [{"time": "", "patches": [list(p)]} for p in patches]}
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    return text


def test_non_ascii_trace_ends_on_its_end_content(bench: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "t.json.gz"
    end = write_trace(path, "", [(0, 0, "héllo"), (1, 0, "😀"), (4, 2, "ü"), (0, 1, ""),
                                 (3, 0, "日本"), (6, 1, "x")])
    trace = bench.load(path, None)
    assert trace.end == end
    _, text = bench.baseline(trace)
    assert text == end


def test_start_content_is_the_first_state(bench: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "t.json.gz"
    end = write_trace(path, "ä😀b", [(2, 1, "c"), (0, 0, "€")])
    trace = bench.load(path, None)
    _, text = bench.baseline(trace)
    assert text == end


def test_a_limit_keeps_the_first_edits_and_knows_it_is_partial(bench: ModuleType,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "t.json.gz"
    write_trace(path, "", [(0, 0, "a"), (1, 0, "ß"), (2, 0, "c")])
    trace = bench.load(path, 2)
    assert len(trace.edits) == 2 and not trace.complete
    _, text = bench.baseline(trace)
    assert text == "aß"
    assert bench.load(path, None).complete


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3),
                          st.text(alphabet="aé😀日\n", max_size=4)), max_size=25))
def test_any_edit_sequence_replays_exactly(bench: ModuleType,
                                           tmp_path_factory: pytest.TempPathFactory,
                                           raw: list[tuple[int, int, str]]) -> None:
    text, patches = "", []
    for want_pos, want_delete, insert in raw:
        pos = min(want_pos, len(text))
        delete = min(want_delete, len(text) - pos)
        patches.append((pos, delete, insert))
        text = text[:pos] + insert + text[pos + delete:]
    path = tmp_path_factory.mktemp("trace") / "t.json.gz"
    end = write_trace(path, "", patches)
    _, replayed = bench.baseline(bench.load(path, None))
    assert replayed == end
