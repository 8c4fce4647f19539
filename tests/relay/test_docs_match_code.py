"""Keep the operator and protocol documents true to the code.

* docs/operations.md lists every ``RelaySettings`` field with its environment
  variable and default (and no other), every schema migration, every metric
  with its labels (and no other), the operational endpoints, and every flag of
  ``sddsf relay serve``.
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

import sddsf.relay.routes
from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import HTTP_STATUS, Code, error_from_wire
from sddsf.protocol import labels
from sddsf.relay.app import create_app
from sddsf.relay.metrics import RelayMetrics
from sddsf.relay.settings import RelaySettings, env_name
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


def exposition_labels(text: str) -> dict[str, set[str]]:
    """Metric family -> the label names its samples carry (``le`` aside)."""
    out: dict[str, set[str]] = {}
    family = ""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
            out[family] = set()
        elif line and not line.startswith("#") and "{" in line:
            out[family] |= set(re.findall(r'(\w+)="', line.split("{", 1)[1])) - {"le"}
    return out


def test_every_metric_is_documented_with_its_labels(operations_md: str) -> None:
    metrics = RelayMetrics(connected=lambda: 0)
    # One sample of each labelled family, so its labels show in the exposition.
    metrics.observe_request("GET", "/healthz", 503, 0.01)
    metrics.ops.labels("rejected", "sig_invalid").inc()
    metrics.rate_limited.labels("ip").inc()
    exposition = metrics.render()[0].decode()
    exposed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE))
    labels = exposition_labels(exposition)
    assert "sddsf_build_info" in exposed and "process_cpu_seconds_total" in exposed
    for name, kind in exposed.items():
        base = name.removesuffix("_created")
        if base != name and (base in exposed or f"{base}_total" in exposed):
            continue  # a counter's creation time (documented with the counter)
        if name.startswith(("process_", "python_")):  # the default collectors: one row each
            row = table_rows(operations_md, f"`{name.split('_', 1)[0]}_*`")
            assert row and f"`{name}`" in row[0], f"default metric {name} is not documented"
            continue
        rows = table_rows(operations_md, f"`{name}`")
        assert rows, f"metric {name} is missing from docs/operations.md"
        assert rows[0].split("|")[2].strip() == kind, f"metric {name} is a {kind}"
        for label in labels[name]:
            assert f"`{label}`" in rows[0], f"label {label!r} of {name} is not documented"
    # The other way round: every documented sddsf_ metric is one the relay has
    # (the PostgreSQL pool gauge appears only with a pool, see test_metrics.py).
    source = Path(importlib.import_module("sddsf.relay.metrics").__file__ or "").read_text()
    documented = re.findall(r"^\| `(sddsf_\w+)` \|", operations_md, flags=re.MULTILINE)
    assert "sddsf_db_pool_connections" in documented
    for name in documented:
        assert name in exposed or f'"{name}"' in source, (
            f"docs/operations.md documents {name}, which the relay does not have")


def test_every_documented_setting_exists(operations_md: str) -> None:
    names = {f.name for f in dataclasses.fields(RelaySettings)}
    section = operations_md.split("### 2.5 All settings", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| `(SDDSF_RELAY_\w+)` \|", section,
                      flags=re.MULTILINE)
    assert len(rows) == len(names), "the settings table has a row too many or too few"
    for name, toml_key, env in rows:
        assert name in names, f"docs/operations.md documents a setting {name!r} that is gone"
        assert toml_key == name and env == env_name(name)


def test_every_ops_endpoint_is_documented(app: FastAPI, operations_md: str) -> None:
    section = operations_md.split("### 1.4 What the process serves", 1)[1].split("\n## ", 1)[0]
    documented = {p for p in re.findall(r"`(/[\w./-]+)`", section) if not p.startswith("/v1")}
    served = {getattr(r, "path", "") for r in app.routes}
    ops = {p for p in served if p and not p.startswith("/v1") and "{" not in p}
    assert {"/healthz", "/readyz", "/metrics", "/openapi.json"} <= ops
    assert ops <= documented, f"not in operations.md 1.4: {sorted(ops - documented)}"
    assert documented <= served, f"documented but not served: {sorted(documented - served)}"
    for path in ("/healthz", "/readyz"):
        assert table_rows(operations_md, f"`GET {path}`"), f"{path} has no row in 6.1"


def test_every_serve_flag_is_documented(operations_md: str) -> None:
    from sddsf.cli import relay_serve

    section = operations_md.split("## 1. Running the relay", 1)[1].split("### 1.1", 1)[0]
    flags = [opt for p in relay_serve.params for opt in getattr(p, "opts", ())
             if opt.startswith("--") and opt != "--help"]
    assert "--workers" in flags and "--log-format" in flags
    for flag in flags:
        assert re.search(rf"^\| `{re.escape(flag)}( [A-Z]+)?` \|", section, flags=re.MULTILINE), (
            f"sddsf relay serve {flag} has no row in docs/operations.md section 1")


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
