"""Shared fixtures of the client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clientkit import InProcessRelay, sqlite_relay


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    """A relay app on SQLite in the test's temp dir, reached in process (modules
    that need another kind of relay define their own ``relay`` fixture)."""
    async with sqlite_relay(tmp_path) as r:
        yield r
