"""The gateway keeps the promises of its own OpenAPI description (``GET /openapi.json``).

schemathesis loads the description from the running gateway (fake router upstream, a gateway
token configured) and sends it generated requests for every operation: no answer may be a
server error, and each status, content type and body must be one the description declares.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.openapi import SPEC
from gateway.server import make_app
from tests.threaded_gateway import ThreadedGateway, gateway_in_thread

GW_TOKEN = "gw-openapi-Hq7Rz2Kx9Vb4Ns"
AUTH = {"Authorization": f"Bearer {GW_TOKEN}"}
FAST = {"connectSeconds": 1, "firstTokenSeconds": 2, "idleSeconds": 2, "totalSeconds": 10}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def gw(isolated_home: Path) -> Iterator[ThreadedGateway]:
    with gateway_in_thread(
        isolated_home,
        env={"CODERCLAW_GATEWAY_TOKEN": GW_TOKEN},
        timeouts=FAST,
        limits={"maxBodyBytes": 256 * 1024},
        retries=0,
        aliases={"fast": "huggingface/org/model-b"},
    ) as running:
        yield running


OPERATIONS = [(path, method) for path, item in SPEC["paths"].items() for method in item]
# Negative data (what the description forbids) exists only for operations that take input.
CASES = [(path, method, GenerationMode.POSITIVE) for path, method in OPERATIONS] + [
    (path, method, GenerationMode.NEGATIVE)
    for path, method in OPERATIONS
    if "requestBody" in SPEC["paths"][path][method] or "parameters" in SPEC["paths"][path][method]
]


@pytest.mark.parametrize(
    ("path", "method", "mode"), CASES, ids=[f"{m} {p} {g.value}" for p, m, g in CASES]
)
def test_every_operation_conforms_to_the_openapi_description(
    gw: ThreadedGateway, path: str, method: str, mode: GenerationMode
) -> None:
    """Generated requests (schemathesis; data that fits the description, and data that does
    not) for one operation of the description loaded from the running gateway: no server
    error, only declared statuses, content types and bodies."""
    # The schemathesis pytest plugin's lazy loader does not work on pytest 9 (it reads a
    # private attribute pytest renamed), so the strategy is driven with hypothesis directly.
    schema = schemathesis.openapi.from_url(f"{gw.root}/openapi.json", timeout=5)
    operation = schema[path][method.upper()]

    @given(case=operation.as_strategy(mode))
    # Derandomized: the same 25 examples every run, so that CI on a clean clone is
    # reproducible (a random run once drew a Host header the guard refuses). Set
    # CODERCLAW_OPENAPI_EXPLORE=1 to draw new ones.
    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        derandomize=not os.environ.get("CODERCLAW_OPENAPI_EXPLORE"),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def conforms(case: Any) -> None:
        case.call_and_validate(base_url=gw.root, headers=AUTH, checks=CHECKS, timeout=10)

    conforms()


def test_openapi_json_is_served_without_the_gateway_token_and_describes_every_route(
    gw: ThreadedGateway,
) -> None:
    conn = gw.connection()
    conn.request("GET", "/openapi.json")
    resp = conn.getresponse()
    served = json.loads(resp.read())
    conn.close()
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert served == json.loads(json.dumps(SPEC))
    assert served["openapi"] == "3.1.0"
    routes = {
        (route.method, route.resource.canonical.replace(":.+}", "}"))
        for route in make_app(gw.state.settings).router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    described = {
        (method.upper(), path) for path, item in served["paths"].items() for method in item
    }
    assert described == routes


def test_the_v1_operations_need_the_bearer_token_and_the_probes_do_not() -> None:
    security = SPEC["components"]["securitySchemes"]["gatewayToken"]
    assert security == {**security, "type": "http", "scheme": "bearer"}
    assert SPEC["security"] == [{"gatewayToken": []}]
    for path, item in SPEC["paths"].items():
        for operation in item.values():
            if path.startswith("/v1/") or path == "/status.json":  # the status page's data
                assert "security" not in operation, path
                assert "401" in operation["responses"], path
            else:
                assert operation["security"] == [], path


@pytest.mark.parametrize("status", ["400", "401", "404", "408", "413", "429", "502", "503", "504"])
def test_chat_errors_are_described_in_the_openai_error_shape(status: str) -> None:
    response = SPEC["paths"]["/v1/chat/completions"]["post"]["responses"][status]
    schema = response["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Error"}
    error = SPEC["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["message", "type", "param", "code"]


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_every_operation_documents_the_guards_403_and_a_foreign_host_gets_it(
    gw: ThreadedGateway, path: str, method: str
) -> None:
    """The Host/Origin guard answers before any route: each operation documents its 403 (a
    random Host header from schemathesis found one that did not), and a foreign Host gets
    it."""
    assert "403" in SPEC["paths"][path][method]["responses"]
    conn = gw.connection()
    url = path.replace("{response_id}", "resp_x")
    conn.request(method.upper(), url, headers={"Host": "evil.example"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 403
