"""Property-based pass (schemathesis) over the service's own OpenAPI schema, against the running service.

Generated bodies include the allowed model (it is the schema's example) as well as arbitrary strings, odd types
and, in negative mode, bodies that violate the schema. Whatever arrives, the service must answer with a
deliberate status: never a 500 (an unhandled exception), and with a healthy Ollama no 5xx at all.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from .conftest import base_env


@pytest.fixture(scope="module")
def api_schema(start_service, ollama_double):
    ollama_double.reset()
    proc = start_service(**base_env(ollama_double, MAX_CONCURRENT="8", MAX_QUEUE="64"))
    return schemathesis.openapi.from_url(proc.url + "/openapi.json")


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_no_server_errors(api_schema, ollama_double, mode):
    # schemathesis' pytest plugin (from_fixture) does not run under pytest 9, so drive Hypothesis directly:
    # one property per operation, cases drawn from schemathesis' strategy for it.
    checked = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=15,
            deadline=None,
            derandomize=True,  # the same examples every run: a failure here is reproducible, never flaky
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_server_error(case):
            response = case.call(timeout=10)
            assert response.status_code < 500, (
                f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}\n{case.as_curl_command()}"
            )

        try:
            no_server_error()
        except Unsatisfiable:
            # An operation without body or parameters has nothing to break (GET /health): no negative cases.
            assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
            continue
        checked.append(operation.label)
    # The whole surface was exercised (positive), and every route that takes a body was fuzzed (negative).
    if mode is schemathesis.GenerationMode.POSITIVE:
        assert len(checked) >= 15, checked
        # ... and generated bodies got past the model policy to Ollama (the allowed model is the example).
        reached = {r.path for r in ollama_double.requests}
        assert {"/api/chat", "/api/generate", "/api/show", "/v1/chat/completions"} <= reached, reached
    else:
        assert {"POST /api/chat", "POST /api/generate", "POST /api/show", "POST /v1/chat/completions"} <= set(checked)
