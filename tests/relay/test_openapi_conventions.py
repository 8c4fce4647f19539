"""The relay's OpenAPI document says what the relay does: readable operation
ids, security schemes for the bearer session and the signed-request headers
applied per operation, the response codes each operation can give, the error
code as an enum of the stable codes, ``Retry-After`` on 429 and 503; and a
405 answer names the allowed methods in ``Allow``."""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from relaykit import Clock, make_app

from sddsf.errors import Code
from sddsf.relay.storage import open_storage
from sddsf.relay.storage.base import RelayStorage


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[RelayStorage]:
    s = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def spec(tmp_path: Path) -> Iterator[dict[str, Any]]:
    app: FastAPI = make_app(open_storage(f"sqlite:///{tmp_path / 'x.db'}"), Clock())
    yield app.openapi()
    app.state.relay.fabric.close()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield path, method.upper(), op


def test_operation_ids_are_readable_and_unique(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids))
    for op_id in ids:
        assert re.fullmatch(r"[a-z][a-z_]*[a-z]", op_id), op_id
        assert "_v1_" not in op_id and not op_id.endswith(("_get", "_post", "_put")), op_id
    by_path = {(p, m): op["operationId"] for p, m, op in operations(spec)}
    assert by_path[("/v1/spaces/{space_id}/ops", "POST")] == "upload_ops"
    assert by_path[("/v1/spaces/{space_id}/ops", "GET")] == "pull_ops"


def test_security_schemes_per_operation(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["session"] == {"type": "http", "scheme": "bearer",
                                  "description": schemes["session"]["description"]}
    for name, header in (("requestNonce", "X-Sddsf-Nonce"),
                         ("requestTimestamp", "X-Sddsf-Timestamp"),
                         ("requestSignature", "X-Sddsf-Signature"),
                         ("signingKeyId", "X-Sddsf-Key-Id")):
        assert schemes[name]["type"] == "apiKey" and schemes[name]["in"] == "header"
        assert schemes[name]["name"] == header
    ops = {(p, m): op for p, m, op in operations(spec)}
    signed = {"session": [], "requestNonce": [], "requestTimestamp": [],
              "requestSignature": []}
    assert ops[("/v1/spaces/{space_id}/ops", "POST")]["security"] == [signed]
    assert ops[("/v1/spaces/{space_id}/ops", "GET")]["security"] == [{"session": []}]
    assert ops[("/v1/accounts/{account_id}/registry", "GET")]["security"] == [
        {"session": []}, {"signingKeyId": [], "requestNonce": [], "requestTimestamp": [],
                          "requestSignature": []}]
    assert "security" not in ops[("/v1/auth/challenge", "POST")]  # open endpoints
    assert "security" not in ops[("/healthz", "GET")]


def test_response_codes_per_operation(spec: dict[str, Any]) -> None:
    ops = {(p, m): op for p, m, op in operations(spec)}
    health = set(ops[("/healthz", "GET")]["responses"])
    assert health == {"200", "500"}
    pull = set(ops[("/v1/spaces/{space_id}/ops", "GET")]["responses"])
    assert {"200", "400", "401", "403", "404", "429", "500", "503"} <= pull
    assert "413" not in pull and "408" not in pull and "422" not in pull
    upload = set(ops[("/v1/spaces/{space_id}/ops", "POST")]["responses"])
    assert {"400", "401", "403", "404", "408", "409", "413", "429", "503"} <= upload
    challenge = set(ops[("/v1/auth/challenge", "POST")]["responses"])
    assert "403" not in challenge and "429" in challenge


def test_error_code_is_an_enum_and_retry_after_is_documented(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    code = schemas["ErrorBody"]["properties"]["code"]
    enum = schemas[code["$ref"].rsplit("/", 1)[1]]["enum"] if "$ref" in code else code["enum"]
    assert sorted(enum) == sorted(c.value for c in Code)
    for _, _, op in operations(spec):
        for status in ("429", "503"):
            if status in op["responses"]:
                assert "Retry-After" in op["responses"][status].get("headers", {}), op


async def test_405_names_the_allowed_methods_and_503_says_when_to_retry(
        storage: RelayStorage) -> None:
    app = make_app(storage, Clock())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as http:
        r = await http.delete("/v1/spaces")
        assert r.status_code == 405 and r.json()["code"] == "usage"
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        assert {"GET", "POST"} <= allowed <= {"GET", "HEAD", "POST"}, allowed
        await storage.close()
        r = await http.get("/readyz")
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1


def test_every_endpoint_and_dependency_runs_on_the_event_loop(tmp_path: Path) -> None:
    """FastAPI runs a plain ``def`` endpoint or dependency in its thread pool:
    a hand-over to a thread and back on every request that uses it (about
    0.1 ms on two cores, more under load). Every one here is a coroutine."""
    from fastapi.dependencies.models import Dependant
    from fastapi.routing import APIRoute, APIWebSocketRoute

    app: FastAPI = make_app(open_storage(f"sqlite:///{tmp_path / 'x.db'}"), Clock())

    def calls(dep: Dependant) -> Iterator[tuple[str, Any]]:
        if dep.call is not None:
            yield getattr(dep.call, "__qualname__", repr(dep.call)), dep.call
        for sub in dep.dependencies:
            yield from calls(sub)

    def routes(items: list[Any]) -> Iterator[Any]:
        for item in items:
            inner = getattr(item, "original_router", None) or item  # an included router
            if inner is not item or not isinstance(item, APIRoute | APIWebSocketRoute):
                yield from routes(list(getattr(inner, "routes", ())))
            else:
                yield item

    seen, blocking = 0, []
    for route in routes(app.routes):
        if isinstance(route, APIRoute | APIWebSocketRoute):
            for name, call in calls(route.dependant):
                seen += 1
                if not inspect.iscoroutinefunction(call):
                    blocking.append(f"{route.path}: {name}")
    app.state.relay.fabric.close()
    assert seen > 50  # the walk reached the routes' endpoints and dependencies
    assert blocking == []
