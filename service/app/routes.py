"""The whole HTTP surface of the service, in one place.

Probes:             GET /health (liveness, no upstream call), GET /ready (Ollama answers and MODEL_NAME is pulled)
Ollama API:         GET|HEAD /, GET /api/version, GET /api/tags, GET /api/ps, POST /api/show,
                    POST /api/chat, POST /api/generate
OpenAI-compatible:  POST /v1/chat/completions, GET /v1/models (forwarded to Ollama's own /v1, not translated)
Refused:            model management (pull, push, create, copy, delete, blobs) -> 403, never forwarded
Operations:         GET /metrics (Prometheus), GET /openapi.json
Anything else is a 404 in the route family's error format (main.py).

Generations (chat, generate, /v1/chat/completions) go through the concurrency gate and stream via
upstream.Generation; the other routes are plain forwards. Middleware (request id, logs, CORS, JWT, rate limit) is in
middleware.py and wired in main.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from . import schemas
from .config import Settings, normalize_model
from .errors import error_response
from .limits import ConcurrencyGate
from .metrics import Metrics
from .upstream import Generation, Reply, Upstream, UpstreamError, passthrough

# (path, method) as Ollama serves them (server/routes.go).
MANAGEMENT_ROUTES = (
    ("/api/pull", "POST"),
    ("/api/push", "POST"),
    ("/api/create", "POST"),
    ("/api/copy", "POST"),
    ("/api/delete", "DELETE"),
    ("/api/blobs/{digest}", "HEAD"),
    ("/api/blobs/{digest}", "POST"),
)
MANAGEMENT_REFUSAL = "model management is disabled on this server; manage models on the host with the ollama CLI"


def _json(obj: object, status: int = 200) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status_code=status, media_type="application/json")


class FastLane:
    """Serves the generation routes without FastAPI's per-request routing and dependency machinery.

    They are the load-carrying routes and need nothing from FastAPI at request time (raw body, no parameters), so
    a dict lookup replaces FastAPI's request handling; measured ~1/3 less service CPU per /api/chat request on the
    2-core benchmark machine.
    They stay registered on the router too, for the OpenAPI schema. Added innermost (main.py), so request ids,
    logs, metrics, CORS, the JWT check and the rate limit apply exactly as to every other route.
    """

    def __init__(self, app, routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                response = await handler(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_router(
    settings: Settings, upstream: Upstream, gate: ConcurrencyGate, metrics: Metrics
) -> tuple[APIRouter, dict[tuple[str, str], Callable[[Request], Awaitable[Response]]]]:
    """The router, and the generation handlers by (method, path) for FastLane."""
    router = APIRouter()
    allowed = settings.allowed_model_set
    model_names = settings.allowed_models
    health_body = json.dumps({"status": "ok", "env": settings.app_env, "version": settings.app_version}).encode()

    # ---- helpers -------------------------------------------------------------------------------------------
    async def read_request(request: Request, stream_default: bool) -> tuple[bytes, str, bool] | Response:
        """The raw body plus the two fields the gateway acts on; an error Response when they are unusable."""
        path = request.url.path
        body = await request.body()
        try:
            payload = json.loads(body)
        except ValueError:
            return error_response(path, 400, "request body must be JSON")
        if not isinstance(payload, dict):
            return error_response(path, 400, "request body must be a JSON object")
        model = payload.get("model")
        if not isinstance(model, str) or not model.strip():
            return error_response(path, 400, "model is required", param="model")
        if normalize_model(model) not in allowed:
            metrics.rejected.labels("model").inc()
            # 404 like Ollama's own "model 'x' not found", so clients treat it as a missing model.
            message = f"model '{model}' not found; this server serves: {', '.join(settings.allowed_models)}"
            return error_response(path, 404, message, code="model_not_found", param="model")
        stream = payload.get("stream")
        if stream is None:
            stream = stream_default
        elif not isinstance(stream, bool):
            return error_response(path, 400, "stream must be true or false", param="stream")
        return body, model, stream

    async def forward(request: Request, method: str = "GET", body: bytes | None = None) -> Reply | Response:
        try:
            return await upstream.request(method, request.url.path, body)
        except UpstreamError as err:
            return upstream.error(request.url.path, err)

    def only_allowed(resp: Reply, list_key: str, name_keys: tuple[str, ...]) -> Response:
        if resp.status_code != 200:
            return passthrough(resp)
        data = resp.json()
        data[list_key] = [
            item
            for item in data.get(list_key) or []
            if any(normalize_model(str(item.get(k) or "")) in allowed for k in name_keys)
        ]
        return _json(data)

    def generation(request: Request, parsed: tuple[bytes, str, bool], kind: str) -> Response:
        body, model, stream = parsed
        return Generation(
            upstream,
            gate,
            path=request.url.path,
            body=body,
            kind=kind,
            model=model,
            stream=stream,
            started=time.perf_counter(),
        )

    # ---- generations (served by FastLane; first here too, as routes are matched in order) -------------------
    @router.post("/api/chat", tags=["ollama"], openapi_extra=schemas.chat(model_names))
    async def chat(request: Request) -> Response:
        parsed = await read_request(request, stream_default=True)  # Ollama streams when `stream` is omitted
        return parsed if isinstance(parsed, Response) else generation(request, parsed, "chat")

    @router.post("/api/generate", tags=["ollama"], openapi_extra=schemas.generate(model_names))
    async def generate(request: Request) -> Response:
        parsed = await read_request(request, stream_default=True)
        return parsed if isinstance(parsed, Response) else generation(request, parsed, "generate")

    @router.post("/v1/chat/completions", tags=["openai"], openapi_extra=schemas.openai_chat(model_names))
    async def chat_completions(request: Request) -> Response:
        parsed = await read_request(request, stream_default=False)  # OpenAI's default
        return parsed if isinstance(parsed, Response) else generation(request, parsed, "openai")

    # ---- probes and operations -----------------------------------------------------------------------------
    @router.get("/health", tags=["probes"])
    async def health() -> Response:
        return Response(health_body, media_type="application/json")

    @router.get("/ready", tags=["probes"])
    async def ready() -> Response:
        try:
            resp = await upstream.request("GET", "/api/tags", read_timeout=5.0)
        except UpstreamError as err:
            return _json({"status": "unavailable", "reason": err.message}, 503)
        if resp.status_code != 200:
            return _json({"status": "unavailable", "reason": f"Ollama /api/tags answered {resp.status_code}"}, 503)
        names = {normalize_model(str(m.get("name") or m.get("model") or "")) for m in resp.json().get("models", [])}
        if normalize_model(settings.model_name) not in names:
            reason = f"model {settings.model_name} is not pulled in Ollama at {upstream.base_url}"
            return _json({"status": "unavailable", "reason": reason}, 503)
        return _json({"status": "ready", "model": settings.model_name, "env": settings.app_env})

    @router.get("/metrics", tags=["operations"])
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ---- Ollama API ----------------------------------------------------------------------------------------
    @router.get("/", tags=["ollama"])
    @router.head("/", tags=["ollama"], name="root_head")
    async def root(request: Request) -> Response:
        resp = await forward(request, request.method)
        return passthrough(resp) if isinstance(resp, Reply) else resp

    @router.get("/api/version", tags=["ollama"])
    async def version(request: Request) -> Response:
        resp = await forward(request)
        return passthrough(resp) if isinstance(resp, Reply) else resp

    @router.get("/api/tags", tags=["ollama"])
    async def tags(request: Request) -> Response:
        resp = await forward(request)
        return only_allowed(resp, "models", ("name", "model")) if isinstance(resp, Reply) else resp

    @router.get("/api/ps", tags=["ollama"])
    async def ps(request: Request) -> Response:
        resp = await forward(request)
        return only_allowed(resp, "models", ("name", "model")) if isinstance(resp, Reply) else resp

    @router.post("/api/show", tags=["ollama"], openapi_extra=schemas.show(model_names))
    async def show(request: Request) -> Response:
        parsed = await read_request(request, stream_default=False)
        if isinstance(parsed, Response):
            return parsed
        resp = await forward(request, "POST", parsed[0])
        return passthrough(resp) if isinstance(resp, Reply) else resp

    # ---- OpenAI-compatible (chat completions is with the generations above) -------------------------------
    @router.get("/v1/models", tags=["openai"])
    async def v1_models(request: Request) -> Response:
        resp = await forward(request)
        return only_allowed(resp, "data", ("id",)) if isinstance(resp, Reply) else resp

    # ---- refused -------------------------------------------------------------------------------------------
    async def refused(request: Request) -> Response:
        return error_response(request.url.path, 403, MANAGEMENT_REFUSAL)

    for path, method in MANAGEMENT_ROUTES:
        router.add_api_route(
            path,
            refused,
            methods=[method],
            tags=["refused"],
            name=f"refused_{path}",
            responses={403: {"description": "Model management is never forwarded to Ollama"}},
        )

    fast_lane = {
        ("POST", "/api/chat"): chat,
        ("POST", "/api/generate"): generate,
        ("POST", "/v1/chat/completions"): chat_completions,
    }
    return router, fast_lane
