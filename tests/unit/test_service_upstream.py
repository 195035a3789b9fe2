"""The service's connection to Ollama (service/app/http_client.py), through the running service, over real sockets.

For what the double cannot show: how many TCP connections carried the requests, an Ollama that closes pooled
connections, bodies framed by connection close, a silent or truncated answer, and exactly which headers went out.
"""

from __future__ import annotations

import socket
import time

import httpx

from .conftest import MODEL, base_env, free_port, http_answer

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
OK_BODY = b'{"version":"0.0.0-raw"}'


def ok(body: bytes = OK_BODY, ctype: bytes = b"application/json") -> bytes:
    return http_answer(b"200 OK", body, ctype)


def test_keep_alive_one_connection_for_sequential_requests(raw):
    upstream, proc = raw(lambda conn, n: ok())
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        for _ in range(5):
            resp = http.get("/api/version")
            assert resp.status_code == 200 and resp.content == OK_BODY
        assert http.post("/api/chat", json=CHAT).status_code == 200  # a generation rides the same pool
    assert len(upstream.requests) == 6
    assert upstream.connections == 1


def test_connection_closed_by_ollama_while_idle_is_not_reused(raw):
    # Ollama may go away between two requests (restart, `brew services restart`): its close arrives while the
    # connection idles in the pool, and the next request must take a fresh one, not fail.
    upstream, proc = raw(lambda conn, n: ok(), close_after_reply=True)
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        for _ in range(3):
            assert http.post("/api/chat", json=CHAT).status_code == 200
            time.sleep(0.1)  # let the close arrive while the connection is idle
    assert len(upstream.requests) == 3
    assert upstream.connections == 3


def test_close_crossing_a_request_on_a_reused_connection_is_retried_once_fresh(raw):
    # The close crosses our request: Ollama reads it and closes without answering. On a reused connection the
    # request never ran, so the service retries it on a fresh connection instead of answering 502.
    upstream, proc = raw(lambda conn, n: ok() if n == 1 else None)
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        assert http.post("/api/chat", json=CHAT).status_code == 200  # connection 1, its first request
        assert http.post("/api/chat", json=CHAT).status_code == 200  # connection 1 closes on it; retried on 2
    assert [conn for conn, _ in upstream.requests] == [1, 1, 2]


def test_fresh_connection_closed_without_an_answer_is_502_and_not_retried(raw):
    # On a fresh connection the same close is Ollama's real answer (it crashed on this request): a generation is
    # never sent twice blindly.
    upstream, proc = raw(lambda conn, n: None)
    resp = httpx.post(proc.url + "/api/chat", json=CHAT, timeout=10)
    assert resp.status_code == 502
    assert upstream.url in resp.json()["error"]
    assert len(upstream.requests) == 1


def test_close_delimited_body_is_passed_on(raw):
    # `GET /` on Ollama answers "Ollama is running"; a body framed by the connection close must arrive whole.
    upstream, proc = raw(lambda conn, n: b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nOllama is running", True)
    resp = httpx.get(proc.url + "/", timeout=10)
    assert resp.status_code == 200 and resp.text == "Ollama is running"


def test_truncated_body_is_502(raw):
    upstream, proc = raw(lambda conn, n: b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial", True)
    resp = httpx.get(proc.url + "/api/tags", timeout=10)
    assert resp.status_code == 502
    assert upstream.url in resp.json()["error"]


def test_silent_ollama_is_504_after_the_read_timeout(start_service, ollama_double):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # connections are accepted by the kernel, nothing is ever answered
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        proc = start_service(**base_env(ollama_double, OLLAMA_BASE_URL=url, OLLAMA_READ_TIMEOUT="0.3"))
        start = time.perf_counter()
        resp = httpx.get(proc.url + "/api/tags", timeout=10)
        assert 0.25 < time.perf_counter() - start < 3
        assert resp.status_code == 504
        assert url in resp.json()["error"] and "timed out" in resp.json()["error"]
    finally:
        silent.close()


def test_exactly_the_minimal_headers_reach_ollama(client, double):
    # No Accept-Encoding (bodies pass byte for byte), no cookies, nothing from the client (see also
    # test_client_headers_are_not_forwarded in test_service_routes.py).
    assert client.post("/api/chat", json=CHAT).status_code == 200
    assert client.get("/api/tags").status_code == 200
    post, get = double.requests
    assert set(post.headers) == {"host", "user-agent", "accept", "content-type", "content-length"}
    assert set(get.headers) == {"host", "user-agent", "accept"}
    assert post.headers["content-type"] == "application/json"
    assert post.headers["user-agent"] == get.headers["user-agent"] == "local-llm-gateway"
    assert post.headers["host"] == double.url.removeprefix("http://")


def test_proxy_environment_is_ignored(start_service, ollama_double, double):
    # trust_env is off: an HTTP_PROXY in the container's environment must not reroute the calls to Ollama.
    dead = f"http://127.0.0.1:{free_port()}"
    proc = start_service(**base_env(ollama_double), HTTP_PROXY=dead, http_proxy=dead, NO_PROXY="", no_proxy="")
    assert httpx.get(proc.url + "/api/version", timeout=10).status_code == 200
    assert [r.path for r in double.requests] == ["/api/version"]
