"""`st run <url>/openapi.json --checks all` (the schemathesis CLI) finds nothing: the OpenAPI document is true.

Every check: no server errors, every status and content type documented, response bodies and SSE events match
their schemas, schema-violating requests are refused (Ollama's 400s, played by the double's Go-like decoding) and
schema-valid ones accepted, 405s carry a true Allow. A fixed seed makes a failure reproducible, never flaky.
FIRST_CHUNK_DEADLINE is raised so a streamed request's error is its status (on a busy machine the early empty chunk
would turn a 400 into a 200 with an error line, which is that feature working, tested in test_service_streaming).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import base_env

ST = Path(sys.executable).with_name("st")


def test_schemathesis_finds_nothing(start_service, ollama_double, tmp_path):
    ollama_double.reset()
    env = base_env(ollama_double, MAX_CONCURRENT="8", MAX_QUEUE="64", FIRST_CHUNK_DEADLINE="30")
    proc = start_service(**env)
    result = subprocess.run(
        [str(ST), "run", f"{proc.url}/openapi.json", "--checks", "all", "--seed", "1", "--output-sanitize", "false"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,  # its report directory, if any, stays out of the checkout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert " 0 failures" in output or "No issues found" in output or "passed" in output, output[-3000:]
    assert "Operations:" in output and "25 selected / 25 total" in output, output[:2000]
