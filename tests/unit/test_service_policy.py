"""The request policy (MAX_REQUEST_BYTES, KEEP_ALIVE, NUM_CTX, MAX_PREDICT), token accounting and the embedding gate."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from app import tokens
from app.config import Settings
from app.policy import RequestPolicy

from .conftest import MODEL, base_env, metric_value

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "stream": False}


# ---- pure decisions ---------------------------------------------------------------------------------------------


def test_policy_replaces_only_what_is_set_and_different():
    policy = RequestPolicy(Settings(keep_alive="30m", num_ctx=4096, max_predict=256))
    body = {"keep_alive": 0, "options": {"num_ctx": 8192, "num_predict": -1, "temperature": 0}}
    changes = policy.apply(policy.fields("/api/chat"), body)
    assert [(c.field, c.old, c.new) for c in changes] == [
        ("keep_alive", 0, "30m"),
        ("options.num_ctx", 8192, 4096),
        ("options.num_predict", -1, 256),
    ]
    assert body == {"keep_alive": "30m", "options": {"num_ctx": 4096, "num_predict": 256, "temperature": 0}}
    same = {"keep_alive": "30m", "options": {"num_ctx": 4096, "num_predict": 100}}
    assert policy.apply(policy.fields("/api/chat"), same) == []  # already within the policy: forwarded as is
    assert policy.apply(policy.fields("/api/chat"), {"messages": []}) == []  # absent keys are not added
    assert policy.apply(policy.fields("/v1/chat/completions"), {"max_tokens": "lots"}) == []  # Ollama's to refuse
    assert [c.field for c in policy.apply(policy.fields("/v1/messages"), {"max_tokens": 9999})] == ["max_tokens"]
    assert policy.fields("/v1/embeddings") == ()
    assert RequestPolicy(Settings()).fields("/api/chat") == ()  # all off: every route on the fast path


def test_keep_alive_setting_is_validated_and_typed():
    assert Settings(keep_alive="-1").keep_alive_value == -1
    assert Settings(keep_alive="1h30m").keep_alive_value == "1h30m"
    with pytest.raises(ValueError, match="duration"):
        Settings(keep_alive="forever")


def test_token_counts_come_from_the_last_object_only():
    ndjson = b'{"message":{"content":"say \\"eval_count\\":99"},"done":false}\n{"done":true,"prompt_eval_count":12,'
    ndjson += b'"eval_count":34,"eval_duration":2000000000}\n'
    usage = tokens.from_tail(ndjson, "/api/chat")
    assert (usage.prompt, usage.completion, usage.eval_seconds) == (12, 34, 2.0)
    sse = b'data: {"usage":{"prompt_tokens":0,"completion_tokens":0}}\n\ndata: {"choices":[],"usage":'
    sse += b'{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}\n\ndata: [DONE]\n\n'
    assert (tokens.from_tail(sse, "/v1/completions").prompt, tokens.from_tail(sse, "/v1/completions").completion) == (
        5,
        7,
    )
    anthropic = b'event: message_delta\ndata: {"usage":{"input_tokens":3,"output_tokens":9}}\n\n'
    assert tokens.from_tail(anthropic, "/v1/messages").completion == 9
    assert tokens.from_tail(b'data: {"choices":[]}\n\n', "/v1/chat/completions") is None


# ---- over real HTTP ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_service(start_service, ollama_double):
    env = base_env(ollama_double, MAX_REQUEST_BYTES="4096", KEEP_ALIVE="10m", NUM_CTX="2048", MAX_PREDICT="3")
    return start_service(**env)


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/api/chat", "ollama"), ("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")],
)
def test_too_large_body_is_413_in_the_family_format_and_the_service_keeps_serving(policy_service, double, path, shape):
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    resp = httpx.post(policy_service.url + path, content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    error = resp.json()
    message = {"ollama": lambda: error["error"], "openai": lambda: error["error"]["message"]}.get(
        shape, lambda: error["error"]["message"]
    )()
    assert "4096" in message and "MAX_REQUEST_BYTES" in message

    def chunked():  # no Content-Length: decided while reading
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    assert httpx.post(policy_service.url + path, content=chunked()).status_code == 413
    assert double.requests == []  # never forwarded
    assert httpx.post(policy_service.url + "/api/chat", json=CHAT).status_code == 200  # still serving


def test_413_is_read_before_the_upload_ends(policy_service, double):
    host, port = policy_service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n")
        sock.sendall(b"content-length: 67108864\r\n\r\n{")  # claims 64 MB, sends one byte
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")


def test_policy_rewrites_and_logs_and_counts(policy_service, double):
    body = {**CHAT, "keep_alive": 0, "options": {"num_ctx": 8192, "num_predict": 500}}
    resp = httpx.post(policy_service.url + "/api/chat", json=body, headers={"x-request-id": "policy-1"})
    assert resp.status_code == 200 and resp.json()["eval_count"] == 3
    sent = double.requests[-1].body
    assert sent["keep_alive"] == "10m" and sent["options"] == {"num_ctx": 2048, "num_predict": 3}
    [logged] = policy_service.wait_log(lambda r: r.get("request_id") == "policy-1")  # its one access log line
    assert logged["msg"] == "request" and logged["status"] == 200
    assert {(r["field"], r["old"], r["new"]) for r in logged["replaced"]} == {
        ("keep_alive", 0, "10m"),
        ("options.num_ctx", 8192, 2048),
        ("options.num_predict", 500, 3),
    }
    metrics = httpx.get(policy_service.url + "/metrics").text
    assert metric_value(metrics, "gateway_policy_replacements_total", field="keep_alive") >= 1
    raw = b'{"model":  "llama3.2:1b", "messages": [], "stream": false}'  # nothing to replace: byte for byte
    httpx.post(policy_service.url + "/api/chat", content=raw)
    assert double.requests[-1].raw == raw


def test_tokens_are_counted_per_model_and_route_and_logged(service, double):
    before = httpx.get(service.url + "/metrics").text
    labels = {"model": MODEL, "route": "/api/chat"}
    httpx.post(service.url + "/api/chat", json={**CHAT, "stream": True}, headers={"x-request-id": "tokens-1"})
    httpx.post(service.url + "/v1/messages", json={"model": MODEL, "max_tokens": 2, "messages": CHAT["messages"]})
    after = httpx.get(service.url + "/metrics").text
    grew = metric_value(after, "gateway_completion_tokens_total", **labels) - metric_value(
        before, "gateway_completion_tokens_total", **labels
    )
    assert grew == 5
    assert metric_value(after, "gateway_prompt_tokens_total", **labels) > 0
    assert metric_value(after, "gateway_tokens_per_second_count", **labels) >= 1
    assert metric_value(after, "gateway_completion_tokens_total", model=MODEL, route="/v1/messages") >= 2
    [line] = service.wait_log(lambda r: r.get("request_id") == "tokens-1")
    assert (line["prompt_tokens"], line["completion_tokens"]) == (2, 5)


def _hold(url: str, path: str, body: dict) -> socket.socket:
    """Send a request on a raw connection and leave it open: its slot is held until the socket is closed."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    payload = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
    sock.sendall(head.encode() + b"content-length: %d\r\n\r\n" % len(payload) + payload)
    return sock


def _gauge(http: httpx.Client, name: str) -> float:
    return metric_value(http.get("/metrics").text, name)


def test_embeddings_have_their_own_gate(start_service, ollama_double, double):
    # One slot and no queue in each gate. The request holding a slot waits in the double until its client leaves
    # (the delays are far beyond the test), so nothing here depends on timing: the test waits on what the double
    # received and reads the service's /metrics gauges.
    env = base_env(ollama_double, MAX_CONCURRENT="1", MAX_QUEUE="0", EMBED_MAX_CONCURRENT="1", EMBED_MAX_QUEUE="0")
    proc = start_service(**env)
    embed = {"model": MODEL, "input": "lookup"}
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        # A long generation holds the one generation slot; a retrieval lookup does not wait behind it.
        double.configure(first_token_delay=600)
        generation = _hold(proc.url, "/api/chat", {**CHAT, "stream": True})
        double.wait_for(lambda r: r.path == "/api/chat", timeout=10)  # forwarded: the slot is taken
        assert http.post("/api/chat", json=CHAT).status_code == 503  # the generation queue is full
        embedded = http.post("/api/embed", json=embed)
        assert embedded.status_code == 200 and embedded.json()["embeddings"]
        assert _gauge(http, "gateway_generations_in_flight") == 1  # served while the generation still runs
        generation.close()
        double.wait_for(lambda r: r.path == "/api/chat" and r.cancelled, timeout=10)
        # A slow embedding holds the one embedding slot; a burst of lookups is refused, chat is not starved.
        double.configure(first_token_delay=0, embedding_delay=600)
        lookup = _hold(proc.url, "/api/embed", embed)
        double.wait_for(lambda r: r.path == "/api/embed" and not r.completed, timeout=10)
        burst = [http.post(path, json=embed).status_code for path in ("/api/embed", "/v1/embeddings")]
        assert burst == [503, 503]  # the embedding queue is full
        assert http.post("/api/chat", json=CHAT).status_code == 200
        assert _gauge(http, "gateway_embeddings_in_flight") == 1  # chat was served while the lookup still ran
        lookup.close()
        double.wait_for(lambda r: r.path == "/api/embed" and r.cancelled, timeout=10)
