"""Keep the operator and protocol documents true to the code.

* docs/operations.md lists every ``RelaySettings`` field with its environment
  variable and default, every schema migration, and every metric with its labels.
* docs/protocol.md lists every HTTP endpoint of the relay's OpenAPI document
  (and every WebSocket route), every error code with its class and HTTP
  status, every domain-separation label and every WebSocket close code.

The app is built but never started: nothing here touches a database.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute
from prometheus_client.metrics import MetricWrapperBase

import sddsf.relay.routes
from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import HTTP_STATUS, Code, error_from_wire
from sddsf.protocol import labels
from sddsf.relay.app import create_app
from sddsf.relay.metrics import RelayMetrics
from sddsf.relay.settings import RelaySettings
from sddsf.relay.storage import open_storage
from sddsf.relay.storage.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def operations_md() -> str:
    return (DOCS / "operations.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def protocol_md() -> str:
    return (DOCS / "protocol.md").read_text(encoding="utf-8")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    storage = open_storage("sqlite:///" + str(tmp_path / "x.db"))  # built, never opened
    application = create_app(RelaySettings(db="sqlite:////unused", key_file="/unused"),
                             storage, Ed25519SigningKey.from_seed(bytes(32)))
    yield application
    application.state.relay.fabric.close()


def table_rows(text: str, first_cell: str) -> list[str]:
    """Markdown table rows whose first cell is exactly ``first_cell``."""
    return [line for line in text.splitlines()
            if line.startswith("|") and line.split("|")[1].strip() == first_cell]


def toml_literal(value: Any) -> str:
    """How a default is written in the settings table (as a TOML value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


# --------------------------------------------------------------- operations.md


def test_every_setting_is_documented_with_env_var_and_default(operations_md: str) -> None:
    fields = dataclasses.fields(RelaySettings)
    assert fields, "RelaySettings has no fields?"
    for f in fields:
        env = f"SDDSF_RELAY_{f.name.upper()}"
        rows = table_rows(operations_md, f"`{f.name}`")
        assert rows, f"setting {f.name!r} has no row in docs/operations.md"
        row = rows[0]
        assert f"`{env}`" in row, f"row of {f.name!r} does not name {env}"
        if f.default is not dataclasses.MISSING:  # default_factory: platform-dependent path
            assert f"`{toml_literal(f.default)}`" in row, (
                f"row of {f.name!r} does not show its default {toml_literal(f.default)}")
    assert "SDDSF_RELAY_KEY_HEX" in operations_md


def test_every_migration_is_documented(operations_md: str) -> None:
    assert [(m.version, m.description) for m in SQLITE_MIGRATIONS] == [
        (m.version, m.description) for m in POSTGRES_MIGRATIONS]
    for m in SQLITE_MIGRATIONS:
        assert f"| {m.version} | {m.description} |" in operations_md, (
            f"migration {m.version} ({m.description!r}) is missing from docs/operations.md")


def test_every_metric_is_documented_with_its_labels(operations_md: str) -> None:
    metrics = RelayMetrics(connected=lambda: 0)
    exposition = metrics.render()[0].decode()
    exposed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE))
    assert exposed, "no metrics rendered?"
    for name, kind in exposed.items():
        rows = table_rows(operations_md, f"`{name}`")
        assert rows, f"metric {name} is missing from docs/operations.md"
        assert rows[0].split("|")[2].strip() == kind, f"metric {name} is a {kind}"
    wrappers = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    assert len(wrappers) == len(exposed)
    for wrapper in wrappers:
        name = next(n for n in exposed if n in (wrapper._name, wrapper._name + "_total"))
        row = table_rows(operations_md, f"`{name}`")[0]
        for label in wrapper._labelnames:
            assert f"`{label}`" in row, f"label {label!r} of {name} is not documented"


# ----------------------------------------------------------------- protocol.md


def test_every_http_endpoint_is_documented(app: FastAPI, protocol_md: str) -> None:
    paths = app.openapi()["paths"]
    assert "/v1/spaces/{space_id}/ops" in paths
    for path, operations in paths.items():
        assert path in protocol_md, f"{path} is missing from docs/protocol.md"
        for method in operations:
            row = re.compile(rf"^\|\s*{method.upper()}\s*\|\s*`{re.escape(path)}`\s*\|",
                             flags=re.MULTILINE)
            assert row.search(protocol_md), (
                f"{method.upper()} {path} has no row in the endpoint table of docs/protocol.md")


def websocket_paths() -> list[str]:
    found = []
    for info in pkgutil.iter_modules(sddsf.relay.routes.__path__):
        module = importlib.import_module(f"sddsf.relay.routes.{info.name}")
        router = getattr(module, "router", None)
        found += [r.path for r in getattr(router, "routes", ())
                  if isinstance(r, APIWebSocketRoute)]
    return found


def test_every_websocket_route_and_close_code_is_documented(protocol_md: str) -> None:
    paths = websocket_paths()
    assert paths, "no WebSocket route found"
    for path in paths:
        assert re.search(rf"^\|\s*GET\s*\|\s*`{re.escape(path)}`\s*\|", protocol_md,
                         flags=re.MULTILINE), f"WebSocket {path} is missing"
    live = Path(importlib.import_module("sddsf.relay.routes.live").__file__ or "").read_text()
    codes = re.findall(r"close\(code=(\d+)", live)
    assert codes
    for code in codes:
        assert table_rows(protocol_md, code), f"WebSocket close code {code} is not documented"


def test_every_error_code_is_documented_with_class_and_status(protocol_md: str) -> None:
    for code in Code:
        rows = table_rows(protocol_md, f"`{code.value}`")
        assert rows, f"error code {code.value!r} has no row in docs/protocol.md"
        cells = [c.strip() for c in rows[0].split("|")[1:-1]]
        cls = type(error_from_wire(code.value, "x")).__name__
        assert cells[1] == cls, f"{code.value}: docs say {cells[1]}, code says {cls}"
        assert cells[2] == str(HTTP_STATUS[code]), (
            f"{code.value}: docs say HTTP {cells[2]}, code says {HTTP_STATUS[code]}")


def test_every_label_is_documented(protocol_md: str) -> None:
    strings = [v for k, v in vars(labels).items() if k.isupper() and isinstance(v, str)]
    assert labels.AUTH_SESSION in strings and labels.REQUEST_SIG in strings
    for label in strings:
        assert f"`{label}`" in protocol_md, f"label {label!r} is missing from docs/protocol.md"
