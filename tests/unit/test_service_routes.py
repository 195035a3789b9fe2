"""Every route of the service over real HTTP, against the Ollama double (what reached it is recorded)."""

from __future__ import annotations

import json

import pytest

from .conftest import MODEL, base_env, metric_value

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}


def upstream_paths(double) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in double.requests]


def test_health_never_calls_upstream(client, double):
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "env": "local", "version": "test-1"}
    assert double.requests == []


def test_ready_checks_ollama_and_model(client, double):
    resp = client.get("/ready")
    assert resp.status_code == 200
    assert resp.json()["model"] == MODEL
    assert upstream_paths(double) == [("GET", "/api/tags")]

    double.configure(models=["qwen2.5:0.5b"])  # Ollama up, but our model is not pulled
    resp = client.get("/ready")
    assert resp.status_code == 503
    assert MODEL in resp.json()["reason"]
    assert "not pulled" in resp.json()["reason"]


@pytest.mark.parametrize(
    ("method", "path", "body", "expect"),
    [
        ("GET", "/", None, "Ollama is running"),
        ("GET", "/api/version", None, '"version"'),
        ("GET", "/api/ps", None, '"models"'),
        ("POST", "/api/show", {"model": MODEL}, '"model_info"'),
    ],
)
def test_plain_ollama_routes_are_forwarded(client, double, method, path, body, expect):
    resp = client.request(method, path, json=body)
    assert resp.status_code == 200
    assert expect in resp.text
    assert upstream_paths(double) == [(method, path)]
    if body is not None:
        assert double.requests[0].body == body


def test_head_root(client, double):
    resp = client.head("/")
    assert resp.status_code == 200
    assert resp.content == b""
    assert upstream_paths(double) == [("GET", "/")]  # so the HEAD carries the GET's Content-Length


def test_tags_and_v1_models_list_only_allowed_models(client, double):
    double.configure(models=[MODEL, "secret-model:7b"])
    tags = client.get("/api/tags").json()
    assert [m["name"] for m in tags["models"]] == [MODEL]
    assert set(tags["models"][0]) >= {"name", "model", "modified_at", "size", "digest", "details"}
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [MODEL]
    # Both really came from Ollama (the /v1 route is forwarded, not translated from /api/tags).
    assert upstream_paths(double) == [("GET", "/api/tags"), ("GET", "/v1/models")]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {**CHAT, "stream": False}),
        ("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False}),
        ("/v1/chat/completions", {"model": MODEL, "messages": CHAT["messages"]}),
    ],
)
def test_generation_routes_forward_the_body_unchanged(client, double, path, body):
    raw = json.dumps(body, indent=1).encode()  # odd spacing: must arrive byte for byte (no re-serialising)
    resp = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    assert "tok0 tok1 tok2 tok3 tok4" in resp.text
    [rec] = double.requests
    assert (rec.method, rec.path, rec.body) == ("POST", path, body)


def test_stream_omitted_means_streaming_on_ollama_routes(client, double):
    resp = client.post("/api/chat", json=CHAT)  # no "stream": Ollama's default is to stream
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in resp.text.splitlines()]
    # On a busy machine the double may miss FIRST_CHUNK_DEADLINE: then an early empty chunk comes first.
    tokens = [c for c in lines if c["message"]["content"]]
    assert len(tokens) == 5 and lines[-1]["done"] is True
    assert "stream" not in double.requests[0].body


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {**CHAT, "model": "mistral:7b"}),
        ("/api/generate", {"model": "mistral", "prompt": "x"}),
        ("/api/show", {"model": "mistral:7b"}),
    ],
)
def test_unknown_model_ollama_format(client, double, path, body):
    resp = client.post(path, json=body)
    assert resp.status_code == 404
    error = resp.json()["error"]
    assert isinstance(error, str) and "not found" in error and body["model"] in error
    assert double.requests == []  # refused here, never forwarded


def test_unknown_model_openai_format(client, double):
    resp = client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
    assert resp.status_code == 404
    error = resp.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert error["type"] == "invalid_request_error" and "gpt-4o" in error["message"]
    assert double.requests == []


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"not json", 400), (b"[1, 2]", 400), (b"{}", 400), (b'{"model": 5}', 400), (b'{"model": "x:1"}', 404)],
)
def test_bad_bodies_are_refused_in_both_formats(client, double, body, status):
    for path in ("/api/chat", "/v1/chat/completions"):
        resp = client.post(path, content=body, headers={"content-type": "application/json"})
        assert resp.status_code == status
        error = resp.json()["error"]
        assert isinstance(error, dict if path.startswith("/v1") else str)
    assert double.requests == []


def test_model_tag_latest_is_implied(start_service, ollama_double, double):
    proc = start_service(**base_env(ollama_double, MODEL_NAME="llama3.2", ALLOWED_MODELS="llama3.2"))
    import httpx

    resp = httpx.post(proc.url + "/api/chat", json={**CHAT, "model": "llama3.2:latest", "stream": False})
    assert resp.status_code == 404  # allowed by policy (llama3.2 == llama3.2:latest), but not in the double
    assert resp.json() == {"error": "model 'llama3.2:latest' not found"}  # Ollama's own 404 passed through
    assert upstream_paths(double) == [("POST", "/api/chat")]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/pull"),
        ("POST", "/api/push"),
        ("POST", "/api/create"),
        ("POST", "/api/copy"),
        ("DELETE", "/api/delete"),
        ("HEAD", "/api/blobs/sha256:abc"),
        ("POST", "/api/blobs/sha256:abc"),
    ],
)
def test_model_management_is_refused_and_not_forwarded(client, double, method, path):
    resp = client.request(method, path, json={"model": MODEL, "source": MODEL, "destination": "x"})
    assert resp.status_code == 403
    if method != "HEAD":
        assert "model management is disabled" in resp.json()["error"]
    assert double.requests == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/status"),
        ("POST", "/api/me"),
        ("POST", "/api/signout"),
        ("DELETE", "/api/user/keys/c3NoLWVkMjU1MTkgQUFBQQ"),
        ("POST", "/api/experimental/web_search"),
        ("POST", "/api/experimental/web_fetch"),
        ("GET", "/api/experimental/model-recommendations"),
    ],
)
def test_account_and_cloud_routes_are_refused_and_not_forwarded(client, double, method, path):
    body = {"query": "weather in Paris", "url": "https://example.com"} if method == "POST" else None
    resp = client.request(method, path, json=body)
    assert resp.status_code == 403
    assert resp.json() == {"error": "Ollama account and cloud features are disabled on this server"}
    assert double.requests == []


def test_refused_routes_are_labelled_by_their_template(client, double):
    client.delete("/api/user/keys/a-key")
    client.delete("/api/user/keys/another-key")
    metrics = client.get("/metrics").text
    assert 'route="/api/user/keys/{encodedKey}"' in metrics and "another-key" not in metrics


def test_unknown_paths_are_404_in_family_format(client, double):
    assert client.get("/api/nothing").json() == {"error": "Not Found"}
    assert client.get("/v1/nothing").json()["error"]["message"] == "Not Found"
    assert client.get("/docs").status_code == 404  # no CDN-loaded UI
    assert double.requests == []


def test_upstream_5xx_becomes_502(client, double):
    double.configure(status=500, fail_with="GPU on fire")
    resp = client.get("/api/tags")
    assert resp.status_code == 502
    assert "GPU on fire" in resp.json()["error"]
    resp = client.post("/api/chat", json={**CHAT, "stream": False})
    assert resp.status_code == 502 and "GPU on fire" in resp.json()["error"]
    resp = client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 502 and "GPU on fire" in resp.json()["error"]["message"]


def test_upstream_5xx_on_stream_before_any_chunk_is_502(client, double):
    double.configure(status=500)
    resp = client.post("/api/chat", json=CHAT)  # streaming, upstream answers 500 at once
    assert resp.status_code == 502
    assert "error" in resp.json()


def test_client_headers_are_not_forwarded(client, double):
    client.post(
        "/api/chat",
        json={**CHAT, "stream": False},
        headers={
            "Origin": "https://app.example.com",
            "Cookie": "session=secret",
            "Authorization": "Bearer sk-user",
            "Cf-Access-Jwt-Assertion": "eyJ.fake.jwt",
            "X-Custom": "1",
        },
    )
    headers = double.requests[0].headers
    for name in ("origin", "cookie", "authorization", "cf-access-jwt-assertion", "x-custom", "referer"):
        assert name not in headers
    assert headers["content-type"] == "application/json"


def test_cors_preflight_and_response_headers(client, double):
    pre = client.options(
        "/api/chat",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in pre.headers["access-control-allow-methods"]
    resp = client.get("/api/version", headers={"Origin": "https://app.example.com"})
    assert resp.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-request-id" in resp.headers["access-control-expose-headers"].lower()
    evil = client.get("/api/version", headers={"Origin": "https://evil.example.net"})
    assert "access-control-allow-origin" not in evil.headers
    bad_pre = client.options(
        "/api/chat", headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}
    )
    assert bad_pre.status_code == 400
    assert all(r.method != "OPTIONS" for r in double.requests)  # preflights are answered here


def test_request_id_is_echoed_or_made_and_logged(client, service, double):
    resp = client.get("/api/version", headers={"X-Request-ID": "trace-abc-123"})
    assert resp.headers["x-request-id"] == "trace-abc-123"
    made = client.get("/health").headers["x-request-id"]
    assert len(made) == 32 and made != "trace-abc-123"
    junk = client.get("/health", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert junk != "bad id with spaces" and len(junk) == 32

    client.post("/api/chat", json={**CHAT, "stream": False}, headers={"X-Request-ID": "trace-body-check"})
    mine = service.wait_log(lambda r: r.get("request_id") == "trace-abc-123")
    assert len(mine) == 1
    assert mine[0]["path"] == "/api/version" and mine[0]["status"] == 200 and "duration_ms" in mine[0]
    # The line is written when the response has ended, which may be just after the client has it.
    assert len(service.wait_log(lambda r: r.get("request_id") == "trace-body-check")) == 1
    assert "hello there" not in service.log()  # bodies are never logged


def test_successful_health_probes_are_counted_but_not_logged(client, service, double):
    # Docker probes /health every few seconds; one log line each would flood the 3 x 10 MB log rotation.
    labels = {"route": "/health", "method": "GET", "status": "200"}
    before = metric_value(client.get("/metrics").text, "gateway_requests_total", **labels)
    for i in range(3):
        assert client.get("/health", headers={"X-Request-ID": f"probe-{i}"}).status_code == 200
    assert client.post("/health", headers={"X-Request-ID": "probe-bad"}).status_code == 405
    client.get("/api/version", headers={"X-Request-ID": "after-probes"})
    # Lines are written in order: once the later request is logged, a probe line would be there too.
    assert service.wait_log(lambda r: r.get("request_id") == "after-probes")
    probes = [r for r in service.records() if str(r.get("request_id", "")).startswith("probe-")]
    assert [r["status"] for r in probes] == [405]
    after = metric_value(client.get("/metrics").text, "gateway_requests_total", **labels)
    assert after == before + 3


def test_metrics_present_and_moving(client, double):
    def scrape() -> str:
        resp = client.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain")
        return resp.text

    before = scrape()
    for name in (
        "gateway_requests_total",
        "gateway_request_duration_seconds",
        "gateway_time_to_first_chunk_seconds",
        "gateway_queue_depth",
        "gateway_generations_in_flight",
        "gateway_upstream_errors_total",
    ):
        assert f"# TYPE {name}" in before
    client.post("/api/chat", json={**CHAT, "stream": False})
    client.post("/api/chat", json=CHAT)
    double.configure(status=500)
    client.get("/api/tags")
    after = scrape()
    labels = {"route": "/api/chat", "method": "POST", "status": "200"}
    assert (
        metric_value(after, "gateway_requests_total", **labels)
        == metric_value(before, "gateway_requests_total", **labels) + 2
    )
    assert metric_value(after, "gateway_time_to_first_chunk_seconds_count", route="/api/chat") >= 2
    assert metric_value(after, "gateway_upstream_errors_total", kind="status_5xx") >= 1 + metric_value(
        before, "gateway_upstream_errors_total", kind="status_5xx"
    )
    assert metric_value(after, "gateway_request_duration_seconds_count", route="/api/chat") >= 2
    # Unknown paths share one label, so scanning cannot create unbounded series.
    client.get("/random/path/123")
    assert 'route="/random/path/123"' not in scrape()


def test_openapi_lists_the_surface(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/health", "/ready", "/api/chat", "/api/generate", "/api/show", "/v1/chat/completions"):
        assert path in paths
    schema = paths["/api/chat"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["model"]["enum"] == [MODEL]
    upload = paths["/v1/audio/transcriptions"]["post"]
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["model", "file"] and form["properties"]["model"]["enum"] == [MODEL]
    assert form["properties"]["file"]["format"] == "binary"
    assert set(upload["responses"]) == {"200", "400", "404", "413", "502", "503", "504"}
    assert set(upload["responses"]["200"]["content"]) == {"application/json", "application/x-ndjson", "text/plain"}
    assert "Retry-After" in upload["responses"]["503"]["headers"]
    for path, method in (("/api/status", "get"), ("/api/user/keys/{encodedKey}", "delete"), ("/api/me", "post")):
        assert set(paths[path]) == {method} and set(paths[path][method]["responses"]) == {"403"}
