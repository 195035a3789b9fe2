"""What the service checks in a body before forwarding it (service/app/bodies.py), over real HTTP.

Ollama reads keys case-insensitively (Go's encoding/json), so a key spelled otherwise than a field the service
decides on would let Ollama read a different model, stream mode or keep_alive than the service saw: such a body is
refused. Client mistakes Ollama would answer with a 500 (wrong option types, an invalid format, tool call arguments
that are no JSON object) get a 400 naming the field. Neither kind reaches Ollama; everything else does, unchanged.
"""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import MODEL, base_env

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "stream": False}
OPENAI = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def policy_service(start_service, ollama_double):
    return start_service(**base_env(ollama_double, KEEP_ALIVE="10m"))


def post(url: str, path: str, body: dict) -> httpx.Response:
    # Raw bytes, so keys the Python dict would merge (or json= would reorder) arrive as written.
    return httpx.post(url + path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        ("/api/chat", {**CHAT, "Model": "some-other-model"}, "Model"),  # Ollama would run "some-other-model"
        ("/api/chat", {**CHAT, "ſtream": True}, "ſtream"),  # the long s folds onto "s" in Go
        ("/api/generate", {"model": MODEL, "prompt": "hi", "Keep_Alive": 0}, "Keep_Alive"),  # would unload it
        ("/api/embed", {"model": MODEL, "input": "x", "OPTIONS": {"num_ctx": 99999}}, "OPTIONS"),
        ("/v1/chat/completions", {**OPENAI, "MAX_TOKENS": 10**6}, "MAX_TOKENS"),
        ("/v1/messages", {"model": MODEL, "max_tokens": 5, "messages": [{"content": "x"}], "Stream": True}, "Stream"),
    ],
)
def test_a_key_ollama_would_read_as_a_governed_field_is_refused(policy_service, double, path, body, key):
    resp = post(policy_service.url, path, body)
    assert resp.status_code == 400, resp.text
    assert key in json.dumps(resp.json(), ensure_ascii=False)
    assert double.requests == []  # Ollama never saw it


def test_other_keys_in_another_case_reach_ollama_as_written(service, double):
    raw = json.dumps({"model": MODEL, "MESSAGES": [{"ROLE": "user", "Content": "hi"}], "stream": False}).encode()
    resp = httpx.post(service.url + "/api/chat", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    rec = double.requests[-1]
    assert rec.raw == raw  # forwarded byte for byte; Ollama (the double, as Go) reads MESSAGES as messages
    assert rec.body["MESSAGES"][0]["Content"] == "hi"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/chat", {**CHAT, "options": {"temperature": "hot"}}, "options.temperature"),
        ("/api/generate", {"model": MODEL, "prompt": "x", "options": {"num_ctx": True}}, "options.num_ctx"),
        ("/api/embed", {"model": MODEL, "input": "x", "options": {"stop": [1]}}, "options.stop"),
        ("/api/embeddings", {"model": MODEL, "prompt": "x", "options": {"use_mmap": "yes"}}, "options.use_mmap"),
        ("/api/chat", {**CHAT, "format": "xml"}, "format"),
        (
            "/v1/chat/completions",
            {**OPENAI, "response_format": {"type": "json_schema", "json_schema": {"schema": ["x"]}}},
            "response_format.json_schema.schema",
        ),
        (
            "/v1/chat/completions",
            {
                **OPENAI,
                "messages": [
                    {"role": "assistant", "content": [], "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}
                ],
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            "/v1/responses",
            {"model": MODEL, "input": "x", "text": {"format": {"type": "json_schema", "schema": 5}}},
            "text.format.schema",
        ),
    ],
)
def test_mistakes_ollama_answers_with_500_are_400s_here(service, double, path, body, field):
    resp = post(service.url, path, body)
    assert resp.status_code == 400, resp.text
    assert field in resp.text
    assert double.requests == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {**CHAT, "options": {"temperature": 0.2, "num_ctx": 2048, "stop": ["x"], "unknown": "kept"}}),
        ("/api/chat", {**CHAT, "format": {"type": "object"}}),
        ("/v1/chat/completions", {**OPENAI, "response_format": {"type": "text", "json_schema": {"schema": 5}}}),
        (
            "/v1/chat/completions",
            {
                **OPENAI,
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
                    },
                ],
            },
        ),
    ],
)
def test_valid_bodies_are_forwarded_byte_for_byte(service, double, path, body):
    raw = json.dumps(body).encode()
    resp = httpx.post(service.url + path, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    assert double.requests[-1].raw == raw
