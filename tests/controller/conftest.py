"""Fixtures of the controller tests (helpers in ctlkit; relaykit/clientkit on the path)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "relay"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "client"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import time
from collections.abc import AsyncIterator

import pytest
from clientkit import InProcessRelay
from relaykit import Clock

from sddsf.relay.storage import open_storage


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    """A relay app with the default policy on SQLite in the test's temp dir."""
    storage = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    await storage.open()
    yield InProcessRelay(storage, Clock(time.time_ns() // 1_000_000))
    await storage.close()
