"""POST /v1/audio/transcriptions through the service: the multipart upload forwarded as sent, the model checked
against ALLOWED_MODELS and pinned for Ollama, MAX_REQUEST_BYTES, the generation gate, errors in OpenAI's format."""

from __future__ import annotations

import socket

import httpx
import openai
import pytest

from tests.fakes.ollama import expected_text

from .conftest import MODEL, Clients, base_env, metric_value

PATH = "/v1/audio/transcriptions"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32)  # a WAV header: what Ollama hears as audio


def upload(url: str, fields: dict | None = None, audio: bytes = WAV) -> httpx.Request:
    """The request an ordinary client makes (httpx's multipart encoding, as the openai client's)."""
    data = {"model": MODEL} if fields is None else fields
    return httpx.Request("POST", url + PATH, data=data, files={"file": ("speech.wav", audio)})


def send(url: str, **kwargs) -> httpx.Response:
    with httpx.Client(timeout=10) as http:
        return http.send(upload(url, **kwargs))


def openai_error(resp: httpx.Response) -> dict:
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


def test_the_openai_client_transcribes_through_the_service(clients: Clients, double):
    transcript = clients.openai.audio.transcriptions.create(model=MODEL, file=("speech.wav", WAV), language="en")
    assert transcript.text == expected_text(5)
    [rec] = double.requests
    assert rec.path == PATH and rec.raw == clients.last_sent  # the upload byte for byte
    assert rec.query == "model=llama3.2:1b"  # what Ollama's FormValue("model") reads first
    boundary = rec.headers["content-type"].split("boundary=", 1)[1].strip('"')
    assert rec.raw.startswith(b"--" + boundary.encode() + b"\r\n")  # the boundary the body was written with
    text = clients.openai.audio.transcriptions.create(model=MODEL, file=("speech.wav", WAV), response_format="text")
    assert text == expected_text(5)
    assert double.requests[-1].raw == clients.last_sent


def test_ollama_runs_the_model_the_service_checked(service, double):
    # The client's query string never reaches Ollama, where FormValue would read its model before the form's.
    request = upload(service.url)
    request.url = request.url.copy_merge_params({"model": "hidden:70b"})
    double.configure(models=[MODEL, "hidden:70b"])
    with httpx.Client(timeout=10) as http:
        assert http.send(request).json() == {"text": expected_text(5)}
    assert double.requests[-1].query == "model=llama3.2:1b"


def test_a_model_outside_the_allowlist_is_refused_and_not_forwarded(clients: Clients, service, double):
    double.configure(models=[MODEL, "whisper:large"])  # pulled on the host, not allowed here
    with pytest.raises(openai.NotFoundError) as info:
        clients.openai.audio.transcriptions.create(model="whisper:large", file=("speech.wav", WAV))
    assert info.value.code == "model_not_found" and info.value.body["param"] == "model"
    assert "whisper:large" in info.value.body["message"] and MODEL in info.value.body["message"]
    assert double.requests == []
    assert metric_value(httpx.get(service.url + "/metrics").text, "gateway_rejected_total", reason="model") >= 1


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"json": {"model": MODEL}}, "request Content-Type isn't multipart/form-data"),
        ({"content": b"x", "headers": {"content-type": "multipart/form-data"}}, "no multipart boundary param"),
        (
            {"content": b"--b\r\nnot a part", "headers": {"content-type": "multipart/form-data; boundary=b"}},
            "malformed",
        ),
        ({"files": {"file": ("a.wav", WAV)}}, "model is required"),
        ({"files": [("model", (None, MODEL))] + [("x", (None, ""))] * 1000}, "multipart: message too large"),
    ],
    ids=["json", "no-boundary", "malformed", "no-model", "1001-parts"],
)
def test_unreadable_uploads_are_400_and_not_forwarded(service, double, request_args, message):
    resp = httpx.post(service.url + PATH, **request_args)
    assert resp.status_code == 400 and message in openai_error(resp)["message"]
    assert openai_error(resp)["type"] == "invalid_request_error"
    assert double.requests == []


def test_ollamas_own_errors_reach_the_client_in_openais_format(clients: Clients, service, double):
    resp = send(service.url, audio=b"")  # Ollama checks the file
    assert resp.status_code == 400 and openai_error(resp)["message"] == "audio file is empty"
    double.configure(status=500, fail_with="model failed to load")
    with pytest.raises(openai.InternalServerError) as info:
        clients.openai.audio.transcriptions.create(model=MODEL, file=("speech.wav", WAV))
    assert info.value.status_code == 502 and "model failed to load" in info.value.body["message"]
    double.configure(status=200, error_after_tokens=2)  # Ollama then answers 200 with no body
    with pytest.raises(openai.InternalServerError) as info:
        clients.openai.audio.transcriptions.create(model=MODEL, file=("speech.wav", WAV))
    assert info.value.status_code == 502 and "without a body" in info.value.body["message"]
    text = send(service.url, fields={"model": MODEL, "response_format": "text"})
    assert text.status_code == 200 and text.content == b""  # as Ollama says it: a silent recording reads the same
    double.configure(error_after_tokens=None, missing_routes=[PATH])  # Ollama before 0.20.0: gin's plain-text 404
    with pytest.raises(openai.NotFoundError) as info:
        clients.openai.audio.transcriptions.create(model=MODEL, file=("speech.wav", WAV))
    assert "upgrade Ollama" in info.value.body["message"]


# ---- MAX_REQUEST_BYTES and the generation gate -------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_service(start_service, ollama_double):
    """4 KiB uploads at most; one generation slot and no queue."""
    env = base_env(ollama_double, MAX_REQUEST_BYTES="4096", MAX_CONCURRENT="1", MAX_QUEUE="0", BUSY_RETRY_AFTER="7")
    return start_service(**env)


def test_an_upload_over_the_cap_is_413_in_openais_format(small_service, double):
    resp = send(small_service.url, audio=WAV + bytes(5000))
    assert resp.status_code == 413
    message = openai_error(resp)["message"]
    assert "4096" in message and "MAX_REQUEST_BYTES" in message
    request = upload(small_service.url, audio=WAV + bytes(5000))
    body = request.read()
    chunked = httpx.post(
        small_service.url + PATH,
        content=(body[i : i + 1000] for i in range(0, len(body), 1000)),  # no Content-Length: decided while reading
        headers={"content-type": request.headers["content-type"]},
    )
    assert chunked.status_code == 413
    assert double.requests == []
    assert send(small_service.url).status_code == 200  # within the cap: served


def _hold(url: str, request: httpx.Request) -> socket.socket:
    """Send a request on a raw connection and leave it open: its slot is held until the socket is closed."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    body = request.read()
    head = f"POST {request.url.raw_path.decode()} HTTP/1.1\r\nhost: {host}\r\n"
    head += f"content-type: {request.headers['content-type']}\r\ncontent-length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    return sock


def test_transcriptions_share_the_generation_gate(small_service, double):
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    double.configure(first_token_delay=600)  # each held request waits in the double until its client leaves
    with httpx.Client(base_url=small_service.url, timeout=10) as http:
        held = _hold(small_service.url, upload(small_service.url))  # a long transcription holds the one slot
        double.wait_for(lambda r: r.path == PATH, timeout=10)
        busy = http.post("/api/chat", json=chat)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "7"
        held.close()
        double.wait_for(lambda r: r.path == PATH and r.cancelled, timeout=10)
        held = _hold(small_service.url, httpx.Request("POST", small_service.url + "/api/chat", json=chat))
        double.wait_for(lambda r: r.path == "/api/chat", timeout=10)
        busy = http.send(upload(small_service.url))  # a transcription behind a long chat
        assert busy.status_code == 503 and busy.headers["retry-after"] == "7"
        assert "generation queue is full" in openai_error(busy)["message"]
        held.close()
        double.wait_for(lambda r: r.path == "/api/chat" and r.cancelled, timeout=10)
    assert [r.path for r in double.requests] == [PATH, "/api/chat"]  # the refused ones never reached Ollama


def test_a_slow_transcription_gets_keepalive_spaces_in_its_format(start_service, ollama_double, double):
    # Cloudflare's 100 s origin timeout: a transcription is a non-streamed generation, kept alive the same way.
    env = base_env(ollama_double, NONSTREAM_KEEPALIVE_AFTER="0.2", NONSTREAM_KEEPALIVE_INTERVAL="0.2")
    proc = start_service(**env)
    double.configure(first_token_delay=1.0)
    client = Clients(proc.url).openai
    assert client.audio.transcriptions.create(model=MODEL, file=("speech.wav", WAV)).text == expected_text(5)
    resp = send(proc.url, fields={"model": MODEL, "response_format": "text"})
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"  # committed before Ollama's answer came
    assert resp.content.startswith(b" ") and resp.text.strip() == expected_text(5)
