"""API fuzzing (THREATS catalogue, method "schemathesis"): every operation of the
relay's ``/openapi.json``, against the real app in process over SQLite.

For each operation schemathesis generates requests that match the schema
(with random ids, and with the ids of the account, space, doc and pairing
channel that exist), and requests that violate it. Each is sent authenticated
and signed as a registered device (:class:`fuzz.relay.FuzzRelay`), so bodies
reach the handlers. Every answer must be:

* never a server error (5xx);
* a status code the schema documents for the operation;
* of the documented content type, with a body matching the documented schema
  (errors: ``{code, message}``).

Bounded: ``SDDSF_API_EXAMPLES`` examples per operation and generation mode
(default 10; raise it for a deeper local run).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz.relay import BASE_URL, FuzzRelay, openapi_spec  # noqa: E402 - needs the path above

EXAMPLES = int(os.environ.get("SDDSF_API_EXAMPLES", "10"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
SPEC = openapi_spec()
#: Server errors found here in files this suite may not change, with the fix each
#: waits for (strict: once fixed, the entry must go).
KNOWN_OPEN: dict[str, tuple[type[Exception], str]] = {}


def _operations() -> Iterator[object]:
    for path, item in sorted(SPEC["paths"].items()):
        for method in sorted(item):
            label = f"{method.upper()} {path}"
            marks = [pytest.mark.xfail(strict=True, raises=KNOWN_OPEN[label][0],
                                       reason=KNOWN_OPEN[label][1])] \
                if label in KNOWN_OPEN else []
            yield pytest.param(path, method.upper(), id=label, marks=marks)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzRelay]:
    with FuzzRelay(tmp_path_factory.mktemp("api")) as r:
        yield r


def _send(relay: FuzzRelay, case: schemathesis.Case) -> httpx.Response:
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=BASE_URL)
    if "json" in kwargs:
        body = json.dumps(kwargs["json"]).encode()
    else:
        data = kwargs.get("data", b"")
        body = data.encode() if isinstance(data, str) else bytes(data or b"")
    content_type = {k.lower(): v for k, v in kwargs["headers"].items()}.get("content-type")
    return relay.request(kwargs["method"], kwargs["url"], body, params=kwargs.get("params"),
                         headers={"content-type": content_type} if content_type else None)


@pytest.mark.parametrize(("path", "method"), list(_operations()))
def test_operation_answers_as_documented(path: str, method: str, relay: FuzzRelay) -> None:
    operation = schemathesis.openapi.from_dict(SPEC)[path][method]
    ids = {k: v for k, v in relay.path_ids().items() if f"{{{k}}}" in path}
    strategies = [operation.as_strategy(generation_mode=GenerationMode.POSITIVE)]
    if ids:
        strategies.append(operation.as_strategy(generation_mode=GenerationMode.POSITIVE,
                                                path_parameters=ids))
    if operation.path_parameters or operation.query or operation.body:
        # Something to violate (an operation without inputs has no negative case).
        strategies.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

    @settings(max_examples=EXAMPLES * len(strategies), deadline=None, database=None,
              derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def answers_as_documented(case: schemathesis.Case) -> None:
        case.validate_response(_send(relay, case), checks=CHECKS)

    answers_as_documented()
