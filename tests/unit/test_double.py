"""The Ollama double keeps its contract (tests/fakes/ollama.py), proven over real HTTP.

The service tests trust the double, so the double is checked here against the official clients (which encode
Ollama's documented shapes: ollama/ollama-python ollama/_client.py, ollama/_types.py) and against each control
knob.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.fakes.ollama import OllamaDouble, expected_text

MODEL = "llama3.2:1b"
REPO = Path(__file__).resolve().parents[2]
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "say something"}]}


@pytest.fixture(scope="module")
def server():
    with OllamaDouble(model=MODEL) as double:
        yield double


@pytest.fixture
def double(server):
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def http(double):
    with httpx.Client(base_url=double.url, timeout=10) as client:
        yield client


def ndjson(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines()]


# -- the official ollama client --


def test_ollama_client_chat_generate_and_listing(double):
    client = ollama.Client(host=double.url)

    reply = client.chat(model=MODEL, messages=CHAT["messages"])
    assert reply.message.role == "assistant"
    assert reply.message.content == expected_text(5) == "tok0 tok1 tok2 tok3 tok4"
    assert reply.done is True and reply.done_reason == "stop" and reply.eval_count == 5

    parts = list(client.chat(model=MODEL, messages=CHAT["messages"], stream=True))
    assert "".join(p.message.content for p in parts) == expected_text(5)
    assert [p.done for p in parts] == [False] * 5 + [True]
    assert parts[-1].total_duration and parts[-1].eval_count == 5

    gen = client.generate(model=MODEL, prompt="hello")
    assert gen.response == expected_text(5) and gen.context
    streamed = list(client.generate(model=MODEL, prompt="hello", stream=True))
    assert "".join(p.response for p in streamed) == expected_text(5) and streamed[-1].done

    listed = client.list()
    assert [m.model for m in listed.models] == [MODEL]
    assert listed.models[0].details.family == "llama" and listed.models[0].size > 0
    shown = client.show(MODEL)
    assert shown.modelinfo and shown.capabilities and shown.details.format == "gguf"
    running = client.ps()
    assert running.models[0].model == MODEL and running.models[0].expires_at is not None

    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="nope:7b", messages=CHAT["messages"])
    assert err.value.status_code == 404 and err.value.error == "model 'nope:7b' not found"
    with pytest.raises(ollama.ResponseError) as err:
        client.show("nope:7b")
    assert err.value.status_code == 404


def test_ollama_client_sees_injected_failures(double):
    client = ollama.Client(host=double.url)
    double.configure(status=500, fail_with="boom")
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model=MODEL, messages=CHAT["messages"])
    assert (err.value.status_code, err.value.error) == (500, "boom")

    double.configure(status=200, error_after_tokens=2)
    got = []
    with pytest.raises(ollama.ResponseError) as err:
        for part in client.chat(model=MODEL, messages=CHAT["messages"], stream=True):
            got.append(part.message.content)
    assert got == ["tok0", " tok1"] and err.value.error == "boom"


# -- the official openai client --


def test_openai_client_chat_stream_and_models(double):
    client = openai.OpenAI(base_url=f"{double.url}/v1", api_key="unused", max_retries=0)

    done = client.chat.completions.create(model=MODEL, messages=CHAT["messages"])
    assert done.object == "chat.completion"
    assert done.choices[0].message.content == expected_text(5) and done.choices[0].finish_reason == "stop"
    assert done.usage.completion_tokens == 5

    chunks = list(client.chat.completions.create(model=MODEL, messages=CHAT["messages"], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected_text(5)
    assert chunks[-1].choices[0].finish_reason == "stop"

    short = client.chat.completions.create(model=MODEL, messages=CHAT["messages"], max_tokens=2)
    assert short.choices[0].message.content == "tok0 tok1" and short.choices[0].finish_reason == "length"

    assert [m.id for m in client.models.list()] == [MODEL]

    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope:7b", messages=CHAT["messages"])
    assert err.value.body["type"] == "not_found_error"

    double.configure(status=500, fail_with="boom")
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model=MODEL, messages=CHAT["messages"])
    assert err.value.body["message"] == "boom"

    double.configure(status=200, error_after_tokens=1)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=MODEL, messages=CHAT["messages"], stream=True))


def test_openai_sse_framing(http):
    r = http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


# -- /v1/audio/transcriptions (middleware/openai.go TranscriptionMiddleware over ChatHandler) --

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32)  # a WAV header: what Ollama hears as audio


def transcribe(http, files=None, data=None, **kwargs) -> httpx.Response:
    files = {"file": ("speech.wav", WAV)} if files is None else files
    return http.post("/v1/audio/transcriptions", files=files, data={"model": MODEL} if data is None else data, **kwargs)


def test_openai_client_transcribes(double):
    client = openai.OpenAI(base_url=f"{double.url}/v1", api_key="unused", max_retries=0)
    assert client.audio.transcriptions.create(model=MODEL, file=("speech.wav", WAV)).text == expected_text(5)
    as_text = client.audio.transcriptions.create(model=MODEL, file=("speech.wav", WAV), response_format="text")
    assert as_text == expected_text(5)
    with pytest.raises(openai.NotFoundError) as err:
        client.audio.transcriptions.create(model="ghost", file=("speech.wav", WAV))
    assert err.value.body == {
        "message": "model 'ghost' not found",
        "type": "not_found_error",
        "param": None,
        "code": None,
    }
    assert [r.headers["content-type"].split(";")[0] for r in double.requests] == ["multipart/form-data"] * 3


def test_transcription_answer_as_ollama_writes_it(double, http):
    r = transcribe(http)  # streamResponse's type is out with the first piece; the writer adds its object at the end
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert r.content == b'{"text":"tok0 tok1 tok2 tok3 tok4"}\n'
    r = transcribe(http, data={"model": MODEL, "response_format": "text"})
    assert r.headers["content-type"] == "application/x-ndjson" and r.content == b"tok0 tok1 tok2 tok3 tok4"
    double.configure(token_count=0)  # the done chunk first: the writer's own type goes out
    r = transcribe(http)
    assert r.headers["content-type"] == "application/json" and r.content == b'{"text":""}\n'
    r = transcribe(http, data={"model": MODEL, "response_format": "text"})
    assert r.headers["content-type"] == "text/plain" and r.content == b""
    assert double.requests[0].chunks_sent == 5


def test_transcription_form_is_read_as_go_reads_it(double, http):
    def error(r: httpx.Response) -> tuple[int, str]:
        body = r.json()["error"]
        assert set(body) == {"message", "type", "param", "code"}
        return r.status_code, body["message"]

    assert error(http.post("/v1/audio/transcriptions", json={"model": MODEL})) == (
        400,
        "failed to parse multipart form: request Content-Type isn't multipart/form-data",
    )
    assert error(transcribe(http, data={})) == (400, "model is required")
    assert error(transcribe(http, files={"other": ("a.wav", WAV)})) == (400, "file is required: http: no such file")
    # A part without a filename is a value, not a file.
    assert error(transcribe(http, files={"file": (None, WAV)})) == (400, "file is required: http: no such file")
    assert error(transcribe(http, files={"file": ("a.wav", b"")})) == (400, "audio file is empty")
    too_many = [("file", ("a.wav", WAV))] + [("x", (None, ""))] * 999  # with the model: 1001 parts
    assert error(transcribe(http, files=too_many)) == (
        400,
        "failed to parse multipart form: multipart: message too large",
    )
    assert transcribe(http, files=too_many[:-1]).is_success  # ReadForm takes 1000
    # FormValue: the first value, and the query's values before the form's.
    assert transcribe(
        http, files=[("file", ("a.wav", WAV)), ("model", (None, MODEL)), ("model", (None, "x"))]
    ).is_success
    assert error(transcribe(http, params={"model": "ghost"})) == (404, "model 'ghost' not found")
    assert transcribe(http, data={"model": "ghost"}, params={"model": MODEL}).is_success
    assert all(r.path == "/v1/audio/transcriptions" for r in double.requests)


def test_transcription_failures(double, http):
    double.configure(status=500, fail_with="boom", first_token_delay=0.3)
    assert transcribe(http, files={}).status_code == 400  # the form is read before anything else
    start = time.monotonic()
    r = transcribe(http)  # like a model that fails to load
    assert r.status_code == 500 and r.json()["error"] == {
        "message": "boom",
        "type": "api_error",
        "param": None,
        "code": None,
    }
    assert time.monotonic() - start >= 0.25
    double.configure(status=200, first_token_delay=0, error_after_tokens=0)  # the chat's first value is the error
    r = transcribe(http)
    assert r.status_code == 500 and r.json()["error"]["message"] == "boom"
    double.configure(error_after_tokens=2)  # after the first piece the writer swallows the error: 200, no body
    r = transcribe(http)
    assert r.status_code == 200 and r.content == b"" and double.requests[-1].chunks_sent == 2
    double.configure(error_after_tokens=None, missing_routes=["/v1/audio/transcriptions"])  # Ollama before 0.20.0
    assert transcribe(http).text == "404 page not found"


# -- shapes straight off the wire --


def test_root_version_and_stream_default(http):
    assert http.get("/").text == "Ollama is running"
    assert http.head("/").status_code == 200
    assert http.get("/api/version").json() == {"version": "0.12.6"}

    r = http.post("/api/chat", json=CHAT)  # no "stream" key: Ollama streams by default
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(r)
    assert len(lines) == 6 and all("message" in line for line in lines)
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count"):
        assert isinstance(final[key], int)

    whole = http.post("/api/chat", json={**CHAT, "stream": False})
    assert whole.headers["content-type"].startswith("application/json")
    assert whole.json()["message"]["content"] == expected_text(5)


def test_token_count_and_num_predict(double, http):
    double.configure(token_count=3)
    assert http.post("/api/generate", json={"model": MODEL, "prompt": "x", "stream": False}).json()[
        "response"
    ] == expected_text(3)
    double.configure(token_count=10)
    cut = http.post("/api/chat", json={**CHAT, "stream": False, "options": {"num_predict": 4}}).json()
    assert cut["message"]["content"] == expected_text(4) and cut["done_reason"] == "length"
    assert cut["eval_count"] == 4


def test_errors_unknown_missing_and_status(double, http):
    r = http.post("/api/chat", json={**CHAT, "model": "ghost"})
    assert r.status_code == 404 and r.json() == {"error": "model 'ghost' not found"}
    r = http.post("/api/show", json={"model": "ghost"})
    assert r.status_code == 404
    r = http.post("/api/chat", json={"messages": CHAT["messages"]})
    assert r.status_code == 400 and "error" in r.json()
    r = http.post("/v1/chat/completions", json={**CHAT, "model": "ghost"})
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert http.get("/api/nothing").status_code == 404

    double.configure(models=["other:1b"])
    assert http.post("/api/chat", json=CHAT).status_code == 404
    assert [m["name"] for m in http.get("/api/tags").json()["models"]] == ["other:1b"]

    double.configure(models=[MODEL], status=503, fail_with="busy")
    r = http.post("/api/generate", json={"model": MODEL, "prompt": "x"})
    assert r.status_code == 503 and r.json() == {"error": "busy"}
    assert http.get("/api/tags").status_code == 503


def test_status_on_generation_comes_after_first_token_delay(double, http):
    # A model that fails to load: silence for the load time, then the error (and 404 stays immediate).
    double.configure(first_token_delay=0.4, status=500, fail_with="model failed to load")
    start = time.monotonic()
    r = http.post("/api/chat", json=CHAT)
    assert r.status_code == 500 and r.json() == {"error": "model failed to load"}
    assert time.monotonic() - start >= 0.35
    start = time.monotonic()
    assert http.post("/api/chat", json={**CHAT, "model": "ghost"}).status_code == 404
    assert http.get("/api/tags").status_code == 500
    assert time.monotonic() - start < 0.35


def test_error_after_tokens_ends_stream_with_error_line(double, http):
    double.configure(error_after_tokens=2, fail_with="mid-stream failure")
    r = http.post("/api/chat", json=CHAT)
    assert r.status_code == 200  # status stays 200 once streaming began (https://docs.ollama.com/api/errors)
    lines = ndjson(r)
    assert [line["message"]["content"] for line in lines[:2]] == ["tok0", " tok1"]
    assert lines[2:] == [{"error": "mid-stream failure"}]
    rec = double.wait_for(lambda r: r.path == "/api/chat")
    assert rec.chunks_sent == 2 and rec.completed


# -- timing knobs --


def _raw_request(url: str, path: str, body: dict) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


def test_first_token_delay_sends_nothing_before_it(double):
    double.configure(first_token_delay=0.6)
    sock = _raw_request(double.url, "/api/chat", CHAT)
    start = time.monotonic()
    try:
        # Not even the status line may arrive early: a cold model load is silence to the proxy.
        readable, _, _ = select.select([sock], [], [], 0.45)
        assert readable == [], "the double sent bytes before first_token_delay"
        readable, _, _ = select.select([sock], [], [], 5)
        first = time.monotonic() - start
        assert readable and sock.recv(64).startswith(b"HTTP/1.1 200")
        assert 0.55 <= first < 2.0
    finally:
        sock.close()


def test_token_delay_spaces_chunks(double, http):
    double.configure(token_delay=0.1, token_count=4)
    arrivals, sent = [], []
    with http.stream("POST", "/api/chat", json=CHAT) as r:
        for line in r.iter_lines():
            if line:
                arrivals.append(time.monotonic())
                sent.append(datetime.fromisoformat(json.loads(line)["created_at"].replace("Z", "+00:00")))
    # Sending is spaced by the double (created_at); arrival gaps can shrink when a loaded machine delivers two
    # lines in one read, but the four token chunks cannot arrive faster than they were sent.
    send_gaps = [(b - a).total_seconds() for a, b in zip(sent[:3], sent[1:4], strict=True)]
    assert all(0.09 <= gap < 1.0 for gap in send_gaps), send_gaps
    assert arrivals[3] - arrivals[0] >= 0.2


def test_non_streamed_answer_waits_for_all_tokens(double, http):
    double.configure(first_token_delay=0.2, token_delay=0.05, token_count=5)
    start = time.monotonic()
    assert http.post("/api/chat", json={**CHAT, "stream": False}).status_code == 200
    assert time.monotonic() - start >= 0.35


# -- records --


def test_streaming_client_that_leaves_is_recorded_as_cancelled(double, http):
    double.configure(token_delay=0.2, token_count=50)
    with http.stream("POST", "/api/chat", json=CHAT) as r:
        first = next(r.iter_lines())
        assert json.loads(first)["message"]["content"] == "tok0"
    left = time.time()
    rec = double.wait_for(lambda r: r.cancelled, timeout=2)
    assert rec.path == "/api/chat" and not rec.completed
    assert rec.chunks_sent < 5 and rec.finished_at - left < 0.5


def test_client_leaving_during_first_token_delay_is_cancelled(double, http):
    double.configure(first_token_delay=5)
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=CHAT, timeout=0.3)
    rec = double.wait_for(lambda r: r.cancelled, timeout=2)
    assert rec.status is None and rec.chunks_sent == 0


@pytest.mark.parametrize("path", ["/api/embed", "/api/embeddings", "/v1/embeddings"])
def test_embedding_delay_holds_the_answer_until_the_client_leaves(double, http, path):
    double.configure(embedding_delay=30)
    with pytest.raises(httpx.ReadTimeout):
        http.post(path, json={"model": MODEL, "input": "x", "prompt": "x"}, timeout=0.3)
    rec = double.wait_for(lambda r: r.cancelled, timeout=2)
    assert rec.path == path and rec.status is None


def test_completed_request_is_not_cancelled(double, http):
    http.post("/api/chat", json=CHAT)
    rec = double.wait_for(lambda r: r.completed)
    assert not rec.cancelled and rec.chunks_sent == 5 and rec.status == 200
    assert rec.started_at <= rec.finished_at


def test_headers_and_body_recorded(double, http):
    http.post("/api/chat", json=CHAT, headers={"Origin": "https://evil.example", "X-Request-ID": "abc"})
    rec = double.requests[-1]
    assert rec.method == "POST" and rec.path == "/api/chat" and rec.body == CHAT
    assert rec.headers["origin"] == "https://evil.example" and rec.headers["x-request-id"] == "abc"
    assert all(key == key.lower() for key in rec.headers)


def test_management_routes_exist_and_are_recorded(double, http):
    calls = [
        ("POST", "/api/pull", {"model": MODEL}),
        ("POST", "/api/push", {"model": MODEL}),
        ("POST", "/api/create", {"model": "x", "from": MODEL}),
        ("POST", "/api/copy", {"source": MODEL, "destination": "y"}),
        ("DELETE", "/api/delete", {"model": MODEL}),
        ("POST", "/api/blobs/sha256:abc", None),
        ("HEAD", "/api/blobs/sha256:abc", None),
    ]
    for method, path, body in calls:
        assert http.request(method, path, json=body).status_code < 300, path
    assert [(r.method, r.path) for r in double.requests] == [(m, p) for m, p, _ in calls]
    assert double.requests[0].body == {"model": MODEL}


def test_a_pull_makes_the_model_listed_as_pulled(double, http):
    def names() -> list[str]:
        return [m["name"] for m in http.get("/api/tags").json()["models"]]

    assert names() == [MODEL]
    assert http.post("/api/pull", json={"model": "nomic-embed-text", "stream": False}).json() == {"status": "success"}
    assert names() == [MODEL, "nomic-embed-text"]
    http.post("/api/pull", json={"model": "nomic-embed-text:latest", "stream": False})  # the same model: listed once
    assert names() == [MODEL, "nomic-embed-text"]


def test_a_model_pulled_again_lists_its_new_digest_and_the_others_keep_theirs(double, http):
    double.configure(models=[MODEL, "nomic-embed-text:latest"])
    before = {m["name"]: m["digest"] for m in http.get("/api/tags").json()["models"]}
    assert all(len(d) == 64 for d in before.values()) and before[MODEL] != before["nomic-embed-text:latest"]
    newer = "c" * 64
    double.configure(digests={MODEL: newer})
    after = {m["name"]: m["digest"] for m in http.get("/api/tags").json()["models"]}
    assert after == {**before, MODEL: newer}
    with pytest.raises(ValueError, match="digests"):
        double.configure(digests={MODEL: "sha256:not-hex"})


def test_reset_and_configure_guard(double, http):
    double.configure(token_count=1)
    http.get("/api/tags")
    double.reset()
    assert double.requests == [] and double.config.token_count == 5
    with pytest.raises(ValueError):
        double.configure(token_cuont=3)
    with pytest.raises(ValueError):
        double.configure(token_count="3")
    with pytest.raises(TimeoutError):
        double.wait_for(lambda r: r.path == "/never", timeout=0.1)


def test_http_control_endpoints(double, http):
    r = http.post("/_double/config", json={"token_count": 2, "fail_with": "x"})
    assert r.status_code == 200 and r.json()["token_count"] == 2
    assert double.config.token_count == 2
    assert http.post("/_double/config", json={"bogus": 1}).status_code == 400
    http.post("/api/chat", json={**CHAT, "stream": False})
    listed = http.get("/_double/requests").json()
    assert [(r["method"], r["path"], r["completed"]) for r in listed] == [("POST", "/api/chat", True)]
    assert listed[0]["body"] == {**CHAT, "stream": False}
    assert http.post("/_double/reset").status_code == 200
    assert http.get("/_double/requests").json() == [] and double.config.token_count == 5


# -- standalone --


def test_standalone_module_serves_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.ollama", "--port", "0", "--model", "qwen2.5:0.5b"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("ollama-double listening on http://127.0.0.1:"), line + proc.stderr.read()
        url, model = line.split()[3], line.split()[4]
        assert model == "model=qwen2.5:0.5b"
        assert httpx.get(f"{url}/").text == "Ollama is running"
        assert [m["name"] for m in httpx.get(f"{url}/api/tags").json()["models"]] == ["qwen2.5:0.5b"]
        assert httpx.post(f"{url}/_double/config", json={"token_count": 1}).status_code == 200
        reply = httpx.post(f"{url}/api/chat", json={**CHAT, "model": "qwen2.5:0.5b", "stream": False}).json()
        assert reply["message"]["content"] == "tok0"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
