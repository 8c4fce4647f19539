"""``/metrics`` follows Prometheus conventions: request durations by method,
route template (never a raw path) and status; 5xx answers counted; WebSocket
connections; build info; and the default process and platform collectors."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from relaykit import Clock, make_app

from sddsf import __version__
from sddsf.relay.storage import open_storage
from sddsf.relay.storage.base import RelayStorage
from sddsf.testing.storage_conformance import Harness


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[RelayStorage]:
    s = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    await s.open()
    yield s
    await s.close()


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of every sample of ``name``."""
    found = re.findall(rf"^{re.escape(name)}(\{{.*\}})? (\S+)$", text, flags=re.MULTILINE)
    return {labels: float(value) for labels, value in found}


async def test_request_durations_by_route_template_and_status(storage: RelayStorage) -> None:
    app = make_app(storage, Clock())
    space = "A" * 21 + "=="
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get(f"/v1/spaces/{space}/ops")).status_code == 401
        assert (await http.get(f"/v1/spaces/{'B' * 21}==/ops")).status_code == 401
        assert (await http.get("/no/such/path/12345")).status_code == 404
        assert (await http.request("BREW", "/healthz")).status_code == 405
        text = (await http.get("/metrics")).text
    assert "# TYPE sddsf_http_request_duration_seconds histogram" in text
    counts = samples(text, "sddsf_http_request_duration_seconds_count")
    assert counts['{method="GET",route="/healthz",status="200"}'] == 1
    assert counts['{method="GET",route="/v1/spaces/{space_id}/ops",status="401"}'] == 2
    assert counts['{method="GET",route="unmatched",status="404"}'] == 1
    assert counts['{method="other",route="/healthz",status="405"}'] == 1  # bounded labels
    assert space not in text and "12345" not in text  # templates, never raw paths


async def test_5xx_answers_are_counted(storage: RelayStorage) -> None:
    app = make_app(storage, Clock())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        await storage.close()  # the database is gone: /readyz answers 503
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200
        text = (await http.get("/metrics")).text
    errors = samples(text, "sddsf_http_server_errors_total")
    assert errors == {'{method="GET",route="/readyz",status="503"}': 1.0}


async def test_build_info_websocket_gauge_and_default_collectors(
        storage: RelayStorage) -> None:
    app = make_app(storage, Clock())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        text = (await http.get("/metrics")).text
    info = samples(text, "sddsf_build_info")
    assert len(info) == 1 and list(info.values()) == [1.0]
    assert f'version="{__version__}"' in next(iter(info))
    assert samples(text, "sddsf_websocket_connections") == {"": 0.0}
    assert "# TYPE python_info gauge" in text  # the platform collector
    assert "# TYPE python_gc_collections_total counter" in text  # the GC collector
    assert "# TYPE process_resident_memory_bytes gauge" in text  # the process collector
    assert samples(text, "process_resident_memory_bytes")[""] > 0


async def test_database_pool_gauge_where_there_is_a_pool(storage_harness: Harness,
                                                         storage_backend: str) -> None:
    app = make_app(storage_harness.storage, Clock())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        assert (await http.get("/readyz")).status_code == 200
        text = (await http.get("/metrics")).text
    pool = samples(text, "sddsf_db_pool_connections")
    if storage_backend == "sqlite":  # one worker thread, no pool: no gauge
        assert pool == {}
        return
    assert pool['{state="max"}'] >= 1
    assert pool['{state="in_use"}'] + pool['{state="idle"}'] >= 1
