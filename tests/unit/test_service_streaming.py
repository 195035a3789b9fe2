"""Streaming through the service: chunk by chunk, an early first chunk, errors mid-stream, client disconnects."""

from __future__ import annotations

import json
import socket
import time

import httpx
import ollama
import openai
import pytest

from tests.fakes.ollama import expected_text

from .conftest import MODEL, answer_after, base_env, http_answer, metric_value

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def arrivals(resp: httpx.Response) -> list[tuple[float, bytes]]:
    """(seconds since the first byte, line) for each line as it arrives."""
    out, start = [], None
    for line in resp.iter_lines():
        now = time.perf_counter()
        start = start if start is not None else now
        out.append((now - start, line))
    return out


@pytest.mark.parametrize(
    ("path", "body", "ctype"),
    [
        ("/api/chat", CHAT, "application/x-ndjson"),
        ("/api/generate", {"model": MODEL, "prompt": "hi"}, "application/x-ndjson"),
        ("/v1/chat/completions", {**CHAT, "stream": True}, "text/event-stream"),
    ],
)
def test_chunks_are_passed_on_as_they_come(client, double, path, body, ctype):
    # 0.25 s between tokens upstream: a buffering proxy would deliver them together at the end.
    double.configure(token_count=4, token_delay=0.25)
    with client.stream("POST", path, json=body) as resp:
        assert resp.headers["content-type"].startswith(ctype)
        assert resp.headers["x-accel-buffering"] == "no"
        assert "content-length" not in resp.headers
        lines = [(t, line) for t, line in arrivals(resp) if line]
    token_times = [t for t, line in lines if "tok" in line]
    assert len(token_times) == 4
    gaps = [b - a for a, b in zip(token_times, token_times[1:], strict=False)]
    assert all(0.15 < gap < 0.6 for gap in gaps), gaps


@pytest.mark.parametrize(("path", "kind"), [("/api/chat", "message"), ("/api/generate", "response")])
def test_early_first_chunk_when_upstream_is_silent(client, double, path, kind):
    # Cloudflare drops a request after ~100 s without a byte, a 524
    # (https://developers.cloudflare.com/support/troubleshooting/http-status-codes/cloudflare-5xx-errors/error-524/):
    # the first valid chunk must leave at once, even while Ollama loads the model and sends nothing, not even
    # headers (first_token_delay).
    double.configure(first_token_delay=1.5)
    body = CHAT if kind == "message" else {"model": MODEL, "prompt": "hi"}
    sent = time.perf_counter()
    with client.stream("POST", path, json=body) as resp:
        lines = resp.iter_lines()
        first = json.loads(next(lines))
        first_at = time.perf_counter() - sent
        rest = [json.loads(line) for line in lines if line]
    assert first_at < 0.6, first_at  # upstream is silent for 1.5 s; the deadline is 50 ms
    assert first["done"] is False and first["model"] == MODEL
    if kind == "message":
        assert first["message"] == {"role": "assistant", "content": ""}
        text = "".join(c["message"]["content"] for c in rest)
    else:
        assert first["response"] == ""
        text = "".join(c["response"] for c in rest)
    assert text == expected_text(5)
    assert rest[-1]["done"] is True


def test_early_chunk_parses_in_the_ollama_client(service, double):
    double.configure(first_token_delay=1.5)
    client = ollama.Client(host=service.url)
    sent = time.perf_counter()
    stream = client.chat(model=MODEL, messages=CHAT["messages"], stream=True)
    first = next(stream)
    assert time.perf_counter() - sent < 0.6
    assert first.message.content == "" and first.done is False
    rest = list(stream)
    assert "".join(c.message.content for c in rest) == expected_text(5)
    assert rest[-1].done is True

    gen = client.generate(model=MODEL, prompt="hi", stream=True)
    assert next(gen).response == ""
    assert "".join(c.response for c in gen) == expected_text(5)


def test_early_chunk_parses_in_the_openai_client(service, double):
    double.configure(first_token_delay=1.5)
    body = {**CHAT, "stream": True}
    sent = time.perf_counter()
    with httpx.stream("POST", service.url + "/v1/chat/completions", json=body, timeout=10) as resp:
        first_line = next(iter(resp.iter_lines()))  # on the wire: an SSE comment line, at once
        assert time.perf_counter() - sent < 0.6
        assert first_line.startswith(":")
    client = openai.OpenAI(base_url=service.url + "/v1", api_key="unused")
    chunks = list(client.chat.completions.create(model=MODEL, messages=CHAT["messages"], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text(5)


def test_queued_stream_gets_the_early_chunk(start_service, ollama_double, double):
    proc = start_service(**base_env(ollama_double, MAX_CONCURRENT="1", MAX_QUEUE="2"))
    double.configure(first_token_delay=1.5)
    with httpx.Client(base_url=proc.url, timeout=10) as http, http.stream("POST", "/api/chat", json=CHAT) as first:
        first_lines = first.iter_lines()  # keep the iterator: a collected one closes the response
        next(first_lines)
        sent = time.perf_counter()
        with http.stream("POST", "/api/chat", json=CHAT) as queued:  # waits for the slot
            lines = queued.iter_lines()
            line = json.loads(next(lines))
            assert time.perf_counter() - sent < 0.6
            assert line["message"]["content"] == ""
            rest = [json.loads(x) for x in lines if x]
    assert "".join(c["message"]["content"] for c in rest) == expected_text(5)


def test_error_after_streaming_began_ends_with_error_line(client, double):
    double.configure(token_count=5, error_after_tokens=2, fail_with="CUDA out of memory")
    with client.stream("POST", "/api/chat", json=CHAT) as resp:
        assert resp.status_code == 200
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    # (An early empty chunk may come first when the double misses FIRST_CHUNK_DEADLINE on a busy machine.)
    assert [c["message"]["content"] for c in lines[:-1] if c["message"]["content"]] == ["tok0", " tok1"]
    assert lines[-1] == {"error": "CUDA out of memory"}


def test_mid_stream_error_raises_in_both_clients(service, double):
    double.configure(token_count=5, error_after_tokens=2, fail_with="CUDA out of memory")
    seen = []
    with pytest.raises(ollama.ResponseError, match="CUDA out of memory"):
        for chunk in ollama.Client(host=service.url).chat(model=MODEL, messages=CHAT["messages"], stream=True):
            seen.append(chunk.message.content)
    assert [text for text in seen if text] == ["tok0", " tok1"]
    client = openai.OpenAI(base_url=service.url + "/v1", api_key="unused")
    with pytest.raises(openai.APIError, match="CUDA out of memory"):
        for _ in client.chat.completions.create(model=MODEL, messages=CHAT["messages"], stream=True):
            pass


def _chunk(obj: dict) -> bytes:
    data = json.dumps(obj).encode() + b"\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_upstream_error_after_early_chunk_becomes_error_line(raw):
    # The 200 and the empty chunk are already out when Ollama finally answers 500: end the stream with an
    # Ollama-style error line instead of leaving the client hanging or pretending success.
    reply = http_answer(b"500 Internal Server Error", b'{"error":"model failed to load"}')
    _, proc = raw(answer_after(reply, 0.5), close_after_reply=True)
    with httpx.stream("POST", proc.url + "/api/chat", json=CHAT, timeout=10) as resp:
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert resp.status_code == 200
    assert lines[0]["message"]["content"] == ""
    assert "model failed to load" in lines[-1]["error"]
    assert len(lines) == 2


def test_upstream_connection_lost_mid_stream(raw):
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n"
    first = _chunk({"model": MODEL, "created_at": "x", "message": {"role": "assistant", "content": "tok0"}})
    # ... and then the connection closes without the terminating chunk
    _, proc = raw(answer_after(head + first), close_after_reply=True)
    with httpx.stream("POST", proc.url + "/api/chat", json=CHAT, timeout=10) as resp:
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert [c["message"]["content"] for c in lines[:-1] if c["message"]["content"]] == ["tok0"]
    assert "broke off" in lines[-1]["error"]


def post_and_leave(url: str, path: str, body: dict, after: float) -> float:
    """Send a request over a raw socket, read nothing, close after `after` s; returns the close time."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        time.sleep(after)
    return time.time()


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_client_disconnect_cancels_upstream(service, double, stream, path):
    # The Mac Mini's GPU is the scarcest resource: a client that leaves must stop the generation upstream
    # (Ollama stops when its client closes the connection, ollama/ollama#2876).
    double.configure(token_count=100, token_delay=0.1)
    left = post_and_leave(service.url, path, {**CHAT, "stream": stream}, after=0.5)
    rec = double.wait_for(lambda r: r.path == path and r.finished_at is not None, timeout=3)
    assert rec.cancelled and not rec.completed
    assert rec.finished_at - left < 1.0
    assert rec.chunks_sent < 20
    if not stream:  # nothing was sent: logged as 499 (client closed request), not as a server error
        logged = service.wait_log(lambda r: r.get("path") == path and r.get("status") == 499)
        assert logged, service.log()[-2000:]


def test_disconnect_while_queued_frees_the_queue(start_service, ollama_double, double):
    proc = start_service(**base_env(ollama_double, MAX_CONCURRENT="1", MAX_QUEUE="1"))
    double.configure(first_token_delay=0.5, token_count=30, token_delay=0.05)
    with httpx.Client(base_url=proc.url, timeout=10) as http, http.stream("POST", "/api/chat", json=CHAT) as running:
        running_lines = running.iter_lines()  # held: a collected iterator would close the response
        next(running_lines)
        with http.stream("POST", "/api/chat", json=CHAT) as queued:
            queued_lines = queued.iter_lines()
            next(queued_lines)  # the early chunk while it waits
        # The queued client left: its place is free again, and it never reached Ollama.
        deadline = time.monotonic() + 2
        while metric_value(http.get("/metrics").text, "gateway_queue_depth") != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "".join(running_lines).count("tok") == 30  # the running one was not disturbed
    assert len([r for r in double.requests if r.path == "/api/chat"]) == 1
