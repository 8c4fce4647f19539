"""Fixtures of the controller tests (helpers in ctlkit; relaykit/clientkit on the path)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "relay"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "client"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from collections.abc import AsyncIterator

import pytest
from clientkit import InProcessRelay, sqlite_relay


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    """A relay app with the default policy on SQLite in the test's temp dir."""
    async with sqlite_relay(tmp_path) as r:
        yield r
