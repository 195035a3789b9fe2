"""`st run <url>/openapi.json --checks all` (the schemathesis CLI) finds nothing: the OpenAPI document is true.

Every check: no server errors, every status and content type documented, response bodies and SSE events match
their schemas, schema-violating requests are refused (Ollama's 400s, played by the double's Go-like decoding) and
schema-valid ones accepted, 405s carry a true Allow. A fixed seed makes a failure reproducible, never flaky.
FIRST_CHUNK_DEADLINE is raised so a streamed request's error is its status (on a busy machine the early empty chunk
would turn a 400 into a 200 with an error line, which is that feature working, tested in test_service_streaming).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import base_env

ST = Path(sys.executable).with_name("st")
# Below this many generated cases the run would prove little (with the seed below it generates ~6000).
MIN_CASES = 3000


def _subschemas(schema: dict):
    """The schema and every schema inside it (JSON Schema's applicators, as OpenAPI 3.0 has them)."""
    yield schema
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            yield from _subschemas(schema[key])
    for key in ("anyOf", "oneOf", "allOf"):
        for item in schema.get(key, []):
            yield from _subschemas(item)
    for item in schema.get("properties", {}).values():
        yield from _subschemas(item)


def _document_schemas(doc: dict):
    for item in doc["paths"].values():
        for operation in item.values():
            media = [*operation.get("requestBody", {}).get("content", {}).values()]
            for response in operation.get("responses", {}).values():
                media += response.get("content", {}).values()
                yield from (header["schema"] for header in response.get("headers", {}).values())
            yield from (m["schema"] for m in media if "schema" in m)
            yield from (parameter["schema"] for parameter in operation.get("parameters", []))
    yield from doc.get("components", {}).get("schemas", {}).values()


def test_document_is_openapi_30_without_31_keywords(service):
    # OpenAPI 3.0 reads `integer` as draft 4 does (1.0 is no integer, as for Go), and its tools ignore keywords it
    # does not know: a 3.1-only keyword would document a rule nothing checks.
    doc = httpx.get(service.url + "/openapi.json").json()
    assert doc["openapi"] == "3.0.3"
    nodes = [node for schema in _document_schemas(doc) for node in _subschemas(schema)]
    assert len(nodes) > 1000  # the walk reaches the request bodies
    for node in nodes:
        kind = node.get("type")
        assert kind != "null" and not isinstance(kind, list), node
        assert kind != "array" or "items" in node, node
        for bound in ("exclusiveMaximum", "exclusiveMinimum"):
            assert isinstance(node.get(bound, False), bool), node
        for keyword in ("const", "if", "then", "else", "propertyNames", "prefixItems", "$defs", "dependentRequired"):
            assert keyword not in node, (keyword, node)


@pytest.mark.timeout(600)  # a safety net for a shared, loaded machine (~1-3 min here), not a speed assertion
def test_schemathesis_finds_nothing(start_service, ollama_double, tmp_path):
    ollama_double.reset()
    env = base_env(ollama_double, MAX_CONCURRENT="8", MAX_QUEUE="64", FIRST_CHUNK_DEADLINE="30")
    proc = start_service(**env)
    operations = sum(
        method in ("get", "head", "post", "put", "delete", "patch")
        for item in httpx.get(proc.url + "/openapi.json").json()["paths"].values()
        for method in item
    )
    result = subprocess.run(
        [str(ST), "run", f"{proc.url}/openapi.json", "--checks", "all", "--seed", "1", "--output-sanitize", "false"],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,  # its report and crash cache stay out of the checkout (and start empty)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert f"{operations} selected / {operations} total" in output, output[:2000]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅\s+{phase}", output), output[-3000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts and counts.group(1) == counts.group(2), output[-3000:]
    assert int(counts.group(1)) >= MIN_CASES, output[-3000:]
    assert "failure" not in output.split("SUMMARY")[-1] and "error" not in output.split("SUMMARY")[-1], output[-3000:]
