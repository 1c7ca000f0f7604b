"""Requests generated from the published OpenAPI document (valid and invalid ones): never a 5xx, only documented
statuses, content types and bodies."""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis")
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks
from serving_helpers import uvicorn_server

from serving import ServingConfig, create_app

WITH_PARAMETERS = ["POST /v1/detect", "POST /v1/detect:visualize", "POST /v1/segment"]
CASES = [(label, GenerationMode.POSITIVE) for label in
         [*WITH_PARAMETERS, "GET /v1/models", "GET /healthz", "GET /readyz", "GET /metrics"]] + \
        [(label, GenerationMode.NEGATIVE) for label in WITH_PARAMETERS]  # the GETs take no input to get wrong


@pytest.fixture(scope="module")
def api_schema(demo_backend):
    app = create_app(ServingConfig(max_upload_bytes=1_000_000, max_pixels=1_000_000, request_timeout_s=20),
                     [demo_backend])
    with uvicorn_server(app) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{label}-{mode.value}" for label, mode in CASES])
def test_no_server_errors_and_documented_answers(api_schema, label, mode):
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} missing from the OpenAPI document"
    validators = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance]
    if mode is GenerationMode.POSITIVE:
        validators.append(checks.response_schema_conformance)

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=15, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(timeout=60, checks=validators)

    run()
