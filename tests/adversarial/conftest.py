"""Adversarial, fault and convergence tests (THREATS.md; docs/reliability.md).

The helper kits of the relay and client tests (livekit, relaykit, clientkit)
are importable from here. Slow variants run only with ``SDDSF_LONG_TESTS=1``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent.parent
for _kit in ("relay", "client"):
    if str(_TESTS / _kit) not in sys.path:
        sys.path.insert(0, str(_TESTS / _kit))

from clusterkit import Cluster, running_cluster  # noqa: E402 - needs the paths above

from sddsf.relay.storage import open_storage  # noqa: E402
from sddsf.relay.storage.base import RelayStorage  # noqa: E402

#: The shared cluster's nodes run 90 s behind, exact and 90 s ahead (THREATS
#: #19): every multi-node test also runs under clock skew between nodes.
CLUSTER_OFFSETS_MS = (-90_000, 0, 90_000)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three relay processes over one PostgreSQL database and one Redis (an own
    redis-server), started once for all the tests that ask for them."""
    with running_cluster(tmp_path_factory.mktemp("cluster"), CLUSTER_OFFSETS_MS) as c:
        yield c


@pytest.fixture
async def sqlite_storage(tmp_path: Path) -> AsyncIterator[RelayStorage]:
    """An opened relay storage on SQLite in the test's temporary directory."""
    storage = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    await storage.open()
    yield storage
    await storage.close()
