"""sddsf.client.yupdates.merge: a tree of merges gives a document exactly what
the flat ``pycrdt.merge_updates`` of the same updates gives."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sddsf.client import yupdates

# One step: (client, kind, position, value). Kinds: text insert/delete, map set, array
# append. ASCII only: a Text's offsets count UTF-8 bytes, and yrs panics on a range that
# splits a character (not what this test is about).
_step = st.tuples(st.integers(0, 2), st.sampled_from(["ins", "del", "set", "push"]),
                  st.integers(0, 40), st.text("abxyz ", min_size=1, max_size=3))


def _apply(doc: pycrdt.Doc[Any], kind: str, pos: int, value: str) -> None:
    text = doc.get("t", type=pycrdt.Text)
    with doc.transaction():
        if kind == "ins":
            text.insert(min(pos, len(text)), value)
        elif kind == "del" and len(text):
            start = min(pos, len(text) - 1)
            del text[start:start + 1]
        elif kind == "set":
            doc.get("m", type=pycrdt.Map)[value] = pos
        else:
            doc.get("a", type=pycrdt.Array).append(value)


def _updates(steps: list[tuple[int, str, int, str]]) -> list[bytes]:
    """Every transaction's update, of clients that see each other's edits at once."""
    docs = [pycrdt.Doc(client_id=n + 1) for n in range(3)]
    out: list[bytes] = []
    for client, kind, pos, value in steps:
        before = docs[client].get_state()
        _apply(docs[client], kind, pos, value)
        update = docs[client].get_update(before)
        out.append(update)
        for other in docs:
            other.apply_update(update)
    return out


def _state(update: bytes) -> tuple[bytes, str, dict[str, Any], list[Any]]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(update)
    return (doc.get_state(), str(doc.get("t", type=pycrdt.Text)),
            doc.get("m", type=pycrdt.Map).to_py() or {},
            doc.get("a", type=pycrdt.Array).to_py() or [])


@settings(max_examples=200, deadline=None)
@given(st.lists(_step, min_size=1, max_size=80))
def test_the_tree_merge_gives_the_flat_merges_document(steps: list[Any]) -> None:
    updates = _updates(steps)
    assert _state(yupdates.merge(updates)) == _state(pycrdt.merge_updates(*updates))


def test_a_long_typing_window_merges_to_the_typed_text() -> None:
    # More than FAN_IN ** 2 one-character updates: three levels of the tree.
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for i in range(yupdates.FAN_IN ** 2 * 2 + 3):
        with doc.transaction():
            text.insert(len(text) if i % 7 else 0, chr(ord("a") + i % 26))
    merged = yupdates.merge(updates)
    assert _state(merged)[1] == str(text)
    assert merged == pycrdt.merge_updates(*updates)  # byte for byte on this history


def test_one_update_is_returned_as_it_is_and_none_is_refused() -> None:
    assert yupdates.merge([b"\x00\x00"]) == b"\x00\x00"
    with pytest.raises(ValueError, match="no updates"):
        yupdates.merge([])
