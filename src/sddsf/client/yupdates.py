"""Merging many Yjs updates into one, in time linear in their number.

``pycrdt.merge_updates`` (yrs ``merge_updates_v1``) costs time quadratic in
the number of updates it is given: 20,000 one-character updates of a text
take 1.3 s in one call, and 19 ms merged sixteen at a time, then the results
sixteen at a time, and so on. A debounce window of fast typing holds that
many, so every merge of a window's updates goes through :func:`merge`.
Merging is associative: the tree gives a document the same state as the flat
call (``tests/client/test_yupdates.py`` holds this for random edits by
several clients).
"""

from __future__ import annotations

from collections.abc import Sequence

import pycrdt

__all__ = ["FAN_IN", "merge"]

#: Updates merged per call: the fastest of 8, 16, 32 and 100 on windows of 100
#: and of 20,000 one-character edits (bench/merge_cost.py).
FAN_IN = 16


def merge(updates: Sequence[bytes]) -> bytes:
    """One Yjs update equivalent to ``updates`` applied in order.

    Raises:
        ValueError: ``updates`` is empty.
        Exception: what ``pycrdt.merge_updates`` raises for bytes that are not
            Yjs updates.
    """
    level = list(updates)
    if not level:
        raise ValueError("no updates to merge")
    if len(level) == 1:
        return bytes(level[0])
    while len(level) > 1:
        level = [pycrdt.merge_updates(*level[i:i + FAN_IN]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), FAN_IN)]
    return level[0]
