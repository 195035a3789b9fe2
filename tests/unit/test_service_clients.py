"""The official `ollama` and `openai` Python clients against the running service, unchanged."""

from __future__ import annotations

import ollama
import openai
import pytest

from tests.fakes.ollama import expected_text

from .conftest import MODEL

MESSAGES = [{"role": "user", "content": "Say something"}]


@pytest.fixture
def ollama_client(service) -> ollama.Client:
    return ollama.Client(host=service.url)


@pytest.fixture
def openai_client(service) -> openai.OpenAI:
    return openai.OpenAI(base_url=service.url + "/v1", api_key="not-checked-by-ollama", max_retries=0)


def test_ollama_chat(ollama_client, double):
    resp = ollama_client.chat(model=MODEL, messages=MESSAGES)  # the client sends stream=false
    assert resp.message.role == "assistant"
    assert resp.message.content == expected_text(5)
    assert resp.done and resp.done_reason == "stop" and resp.eval_count == 5
    assert double.requests[0].body["stream"] is False


def test_ollama_chat_stream(ollama_client, double):
    double.configure(token_count=7)
    chunks = list(ollama_client.chat(model=MODEL, messages=MESSAGES, stream=True))
    assert "".join(c.message.content for c in chunks) == expected_text(7)
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])


def test_ollama_generate(ollama_client, double):
    assert ollama_client.generate(model=MODEL, prompt="hi").response == expected_text(5)
    streamed = "".join(c.response for c in ollama_client.generate(model=MODEL, prompt="hi", stream=True))
    assert streamed == expected_text(5)


def test_ollama_listing_routes(ollama_client, double):
    double.configure(models=[MODEL, "hidden:1b"])
    for model in (MODEL, "hidden:1b"):  # an empty chat loads a model: /api/ps then has both to filter
        ollama.Client(host=double.url).chat(model=model, messages=[])
    assert [m.model for m in ollama_client.list().models] == [MODEL]
    assert [m.model for m in ollama_client.ps().models] == [MODEL]
    shown = ollama_client.show(MODEL)
    assert shown.modelinfo is not None and shown.details.family


def test_ollama_client_errors(ollama_client, double):
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client.chat(model="mistral:7b", messages=MESSAGES)
    assert info.value.status_code == 404 and "mistral:7b" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client.pull(MODEL)
    assert info.value.status_code == 403
    double.configure(status=500, fail_with="boom")
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client.chat(model=MODEL, messages=MESSAGES)
    assert info.value.status_code == 502 and "boom" in info.value.error
    assert [r.path for r in double.requests] == ["/api/chat"]  # only the allowed one got through


def test_openai_chat(openai_client, double):
    resp = openai_client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert resp.choices[0].message.content == expected_text(5)
    assert resp.choices[0].finish_reason == "stop"
    assert double.requests[0].path == "/v1/chat/completions"


def test_openai_chat_stream(openai_client, double):
    double.configure(token_count=6)
    stream = openai_client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected_text(6)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


def test_openai_models(openai_client, double):
    double.configure(models=[MODEL, "hidden:1b"])
    assert [m.id for m in openai_client.models.list()] == [MODEL]


def test_openai_client_errors(openai_client, double):
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.code == "model_not_found"
    double.configure(status=500, fail_with="boom")
    with pytest.raises(openai.InternalServerError) as info:
        openai_client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert info.value.status_code == 502
