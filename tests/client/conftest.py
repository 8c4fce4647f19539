"""Shared fixtures of the client tests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clientkit import InProcessRelay
from relaykit import Clock

from sddsf.relay.storage import open_storage
from sddsf.relay.storage.base import RelayStorage


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    """A relay app on SQLite in the test's temp dir, reached in process (modules
    that need another kind of relay define their own ``relay`` fixture)."""
    storage: RelayStorage = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    await storage.open()
    yield InProcessRelay(storage, Clock(time.time_ns() // 1_000_000))
    await storage.close()
