"""Admission control and upstream failure: queue full, rate limit, Ollama down."""

from __future__ import annotations

import contextlib
import socket
import time

import httpx
import pytest

from .conftest import MODEL, base_env, free_port, metric_value

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def test_queue_full_gets_503_with_retry_after(start_service, ollama_double, double):
    proc = start_service(**base_env(ollama_double, MAX_CONCURRENT="1", MAX_QUEUE="1", BUSY_RETRY_AFTER="7"))
    double.configure(first_token_delay=1.0, token_count=2)
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        with http.stream("POST", "/api/chat", json=CHAT) as running:
            running_lines = running.iter_lines()  # held open: one generation running ...
            next(running_lines)
            with http.stream("POST", "/api/chat", json=CHAT) as queued:
                queued_lines = queued.iter_lines()  # ... and one waiting
                next(queued_lines)
                metrics = http.get("/metrics").text
                assert metric_value(metrics, "gateway_queue_depth") == 1
                assert metric_value(metrics, "gateway_generations_in_flight") == 1

                for path, body in (("/api/generate", {"model": MODEL, "prompt": "x"}), ("/v1/chat/completions", CHAT)):
                    resp = http.post(path, json=body)
                    assert resp.status_code == 503
                    assert resp.headers["retry-after"] == "7"
                    assert "busy" in str(resp.json()["error"])
                # Metadata routes are not generations: they are not queued.
                assert http.get("/api/tags").status_code == 200
                assert "".join(queued_lines).count("tok") == 2  # the queued one is served in turn
            assert "".join(running_lines).count("tok") == 2
        metrics = http.get("/metrics").text
        assert metric_value(metrics, "gateway_rejected_total", reason="queue_full") == 2
        assert metric_value(metrics, "gateway_queue_depth") == 0
    generations = [r for r in double.requests if r.path != "/api/tags"]
    assert len(generations) == 2  # the refused ones never reached Ollama


def test_rate_limit_per_client_gets_429_with_retry_after(start_service, ollama_double, double):
    proc = start_service(**base_env(ollama_double, RATE_LIMIT_PER_MINUTE="3"))
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        assert [http.get("/api/version").status_code for _ in range(3)] == [200, 200, 200]
        resp = http.get("/api/version")
        assert resp.status_code == 429
        assert 1 <= int(resp.headers["retry-after"]) <= 20  # one token per 20 s at 3/min
        assert "rate limit" in resp.json()["error"]
        resp = http.post("/v1/chat/completions", json=CHAT)
        assert resp.status_code == 429 and resp.json()["error"]["type"] == "rate_limit_error"
        # Probes and metrics are not limited (Docker/Ansible health checks must keep working).
        assert http.get("/health").status_code == 200
        assert http.get("/metrics").status_code == 200
        # Behind cloudflared (a trusted peer: loopback here) each Cf-Connecting-Ip has its own budget.
        other = {"Cf-Connecting-Ip": "203.0.113.9"}
        assert [http.get("/api/version", headers=other).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert metric_value(http.get("/metrics").text, "gateway_rejected_total", reason="rate_limited") == 3
    assert len(double.requests) == 6


def test_cf_connecting_ip_is_ignored_from_untrusted_peers(start_service, ollama_double, double):
    # Nobody but the tunnel may choose their rate-limit key: with loopback untrusted, the header is ignored.
    proc = start_service(**base_env(ollama_double, RATE_LIMIT_PER_MINUTE="2", TRUSTED_PROXIES="10.9.9.9/32"))
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        codes = [
            http.get("/api/version", headers={"Cf-Connecting-Ip": f"198.51.100.{i}"}).status_code for i in range(3)
        ]
    assert codes == [200, 200, 429]


@pytest.fixture(scope="module")
def down_service(start_service, ollama_double):
    port = free_port()  # nothing listens there: connections are refused
    return start_service(**base_env(ollama_double, OLLAMA_BASE_URL=f"http://127.0.0.1:{port}")), port


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/tags", None),
        ("GET", "/api/version", None),
        ("POST", "/api/chat", CHAT),  # streaming
        ("POST", "/api/chat", {**CHAT, "stream": False}),
        ("POST", "/v1/chat/completions", CHAT),
        ("GET", "/v1/models", None),
    ],
)
def test_ollama_down_is_503_naming_the_url_quickly(down_service, method, path, body):
    proc, port = down_service
    start = time.perf_counter()
    resp = httpx.request(method, proc.url + path, json=body, timeout=10)
    assert time.perf_counter() - start < 2.0  # well within OLLAMA_CONNECT_TIMEOUT (2 s)
    assert resp.status_code == 503
    error = resp.json()["error"]
    message = error["message"] if path.startswith("/v1") else error
    assert f"http://127.0.0.1:{port}" in message


def test_ready_is_503_when_ollama_is_down_but_health_is_fine(down_service):
    proc, port = down_service
    ready = httpx.get(proc.url + "/ready")
    assert ready.status_code == 503
    assert f"127.0.0.1:{port}" in ready.json()["reason"]
    assert httpx.get(proc.url + "/health").status_code == 200  # liveness does not depend on Ollama
    assert metric_value(httpx.get(proc.url + "/metrics").text, "gateway_upstream_errors_total", kind="connect") > 0


@pytest.fixture(scope="module")
def blackhole():
    """A port where TCP connects hang: a listener whose accept backlog is full (SYNs are dropped)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    yield port
    for sock in [*fillers, server]:
        sock.close()


@pytest.fixture(scope="module")
def blackhole_service(start_service, ollama_double, blackhole):
    url = f"http://127.0.0.1:{blackhole}"
    return start_service(**base_env(ollama_double, OLLAMA_BASE_URL=url, OLLAMA_CONNECT_TIMEOUT="0.5")), url


@pytest.mark.parametrize(
    ("path", "body"), [("/api/tags", None), ("/api/chat", CHAT), ("/v1/chat/completions", {**CHAT, "stream": True})]
)
def test_ollama_connect_timeout_is_503_within_the_timeout(blackhole_service, path, body):
    # Even a streamed request gets the 503, not a 200 with an early chunk: connecting (bounded by
    # OLLAMA_CONNECT_TIMEOUT) is waited out before the early chunk is sent.
    proc, url = blackhole_service
    start = time.perf_counter()
    resp = httpx.request("GET" if body is None else "POST", proc.url + path, json=body, timeout=10)
    elapsed = time.perf_counter() - start
    assert 0.4 < elapsed < 2.0, elapsed
    assert resp.status_code == 503
    assert url in resp.text and "timed out" in resp.text
