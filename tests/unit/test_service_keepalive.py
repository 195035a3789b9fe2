"""Non-streamed generations while Ollama is slow: 200 and keep-alive spaces, then the JSON body (Cloudflare's 524)."""

from __future__ import annotations

import json
import time

import httpx
import ollama
import openai
import pytest

from tests.fakes.ollama import expected_text

from .conftest import MODEL, answer_after, base_env, http_answer
from .test_service_streaming import CHAT, post_and_leave

# Keep-alive after 0.2 s, then every 0.2 s: a double that is silent for 1 s gets a few spaces first.
KEEPALIVE = {"NONSTREAM_KEEPALIVE_AFTER": "0.2", "NONSTREAM_KEEPALIVE_INTERVAL": "0.2"}


@pytest.fixture
def keepalive_service(start_service, ollama_double):
    return start_service(**base_env(ollama_double, **KEEPALIVE))


def first_bytes(url: str, path: str, body: dict) -> tuple[int, float, bytes, bytes]:
    """(status, seconds to the first body byte, that first piece, the whole body)."""
    sent = time.perf_counter()
    with httpx.stream("POST", url + path, json=body, timeout=10) as resp:
        pieces = resp.iter_raw()
        first = next(pieces)
        waited = time.perf_counter() - sent
        rest = b"".join(pieces)
    return resp.status_code, waited, first, first + rest


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/v1/chat/completions"])
def test_slow_answer_gets_keepalive_spaces_then_the_json(keepalive_service, double, path):
    double.configure(first_token_delay=1.0)
    body = {**CHAT, "stream": False} if path != "/api/generate" else {"model": MODEL, "prompt": "hi", "stream": False}
    status, waited, first, whole = first_bytes(keepalive_service.url, path, body)
    assert status == 200
    assert waited < 0.7, f"first byte after {waited:.2f} s"
    assert first.strip() == b"" and len(first) >= 1  # a space, long before the answer
    assert whole.startswith(b" ") and whole.count(b" ", 0, whole.index(b"{")) >= 2
    answer = json.loads(whole)  # JSON allows leading whitespace
    text = {
        "/api/chat": lambda a: a["message"]["content"],
        "/api/generate": lambda a: a["response"],
        "/v1/chat/completions": lambda a: a["choices"][0]["message"]["content"],
    }[path](answer)
    assert text == expected_text(5)


def test_fast_answer_is_unchanged(keepalive_service, double):
    # Under the threshold nothing changes: Content-Length, no padding.
    resp = httpx.post(keepalive_service.url + "/api/chat", json={**CHAT, "stream": False}, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-length"] == str(len(resp.content))
    assert resp.content.startswith(b"{")


def test_keepalive_answers_parse_in_both_clients(keepalive_service, double):
    double.configure(first_token_delay=1.0)
    reply = ollama.Client(host=keepalive_service.url).chat(model=MODEL, messages=CHAT["messages"], stream=False)
    assert reply.message.content == expected_text(5)
    client = openai.OpenAI(base_url=keepalive_service.url + "/v1", api_key="unused")
    completion = client.chat.completions.create(model=MODEL, messages=CHAT["messages"])
    assert completion.choices[0].message.content == expected_text(5)


@pytest.mark.parametrize(
    ("path", "error_of"),
    [("/api/chat", lambda b: b["error"]), ("/v1/chat/completions", lambda b: b["error"]["message"])],
)
def test_error_after_the_200_is_an_error_body(keepalive_service, double, path, error_of):
    # The 200 is already out when Ollama fails: the body is the family's error object, not a fake success.
    double.configure(first_token_delay=0.8, status=500, fail_with="model failed to load")
    status, _, _, whole = first_bytes(keepalive_service.url, path, {**CHAT, "stream": False})
    assert status == 200
    message = error_of(json.loads(whole))
    assert "Ollama answered 500" in message and "model failed to load" in message


def test_slow_error_keeps_its_status_without_keepalive(start_service, ollama_double, double):
    # NONSTREAM_KEEPALIVE_AFTER=0 turns it off: the same slow failure is a plain 502.
    proc = start_service(**base_env(ollama_double, NONSTREAM_KEEPALIVE_AFTER="0"))
    double.configure(first_token_delay=0.5, status=500, fail_with="model failed to load")
    resp = httpx.post(proc.url + "/api/chat", json={**CHAT, "stream": False}, timeout=10)
    assert resp.status_code == 502 and "model failed to load" in resp.json()["error"]


def test_disconnect_during_keepalive_cancels_upstream_and_frees_the_slot(start_service, ollama_double, double):
    proc = start_service(**base_env(ollama_double, MAX_CONCURRENT="1", **KEEPALIVE))
    double.configure(first_token_delay=0.3, token_count=100, token_delay=0.1)
    left = post_and_leave(proc.url, "/api/chat", {**CHAT, "stream": False}, after=1.0)
    rec = double.wait_for(lambda r: r.path == "/api/chat" and r.finished_at is not None, timeout=3)
    assert rec.cancelled and not rec.completed
    assert rec.finished_at - left < 1.0
    # The only slot is free again: the next request is served, not queued behind a ghost.
    double.configure(first_token_delay=0.0, token_count=5, token_delay=0.0)
    resp = httpx.post(proc.url + "/api/chat", json={**CHAT, "stream": False}, timeout=3)
    assert resp.status_code == 200 and resp.json()["message"]["content"] == expected_text(5)


def test_late_4xx_after_the_200_is_ollamas_error_body(raw):
    # A 4xx from Ollama that arrives after the keep-alive started is passed on as Ollama wrote it, under the 200.
    reply = http_answer(b"400 Bad Request", b'{"error":"model requires more system memory"}')
    _, proc = raw(answer_after(reply, 0.8), close_after_reply=True, **KEEPALIVE)
    status, _, first, whole = first_bytes(proc.url, "/api/chat", {**CHAT, "stream": False})
    assert status == 200 and first.strip() == b""
    assert json.loads(whole) == {"error": "model requires more system memory"}


def test_ollama_unreachable_before_the_threshold_keeps_its_503(start_service, ollama_double):
    proc = start_service(**base_env(ollama_double, OLLAMA_BASE_URL="http://127.0.0.1:9", **KEEPALIVE))
    resp = httpx.post(proc.url + "/api/chat", json={**CHAT, "stream": False}, timeout=10)
    assert resp.status_code == 503 and "127.0.0.1:9" in resp.json()["error"]
