"""The whole HTTP surface of the service, in one place.

Probes:             GET /health (liveness, no upstream call), GET /ready (Ollama answers, MODEL_NAME and
                    EMBED_MODEL_NAME are pulled)
Ollama API:         GET|HEAD /, GET|HEAD /api/version, GET|HEAD /api/tags, GET /api/ps, POST /api/show,
                    POST /api/chat, POST /api/generate, POST /api/embed, POST /api/embeddings (legacy)
OpenAI-compatible:  POST /v1/chat/completions, POST /v1/completions, POST /v1/responses (stateless Responses API,
                    Ollama >= 0.13.3), POST /v1/embeddings, GET /v1/models, GET /v1/models/{model},
                    POST /v1/audio/transcriptions (multipart upload, Ollama >= 0.20.0)
Anthropic-compat.:  POST /v1/messages
Refused:            model management (pull, push, create, copy, delete, blobs) and Ollama's account and cloud routes
                    (status, me, signout, user keys, experimental web search/fetch and model recommendations)
                    -> 403, never forwarded
Operations:         GET /metrics (Prometheus), GET /openapi.json
Anything else is a 404 in the route family's error format, a known path with another method a 405 whose Allow
header lists the path's methods (main.py). Every route is forwarded to Ollama's route of the same path, not
translated: Ollama's own /v1 layers do the OpenAI and Anthropic formats.

The load-carrying routes (generations, the transcription upload and embeddings) go through a concurrency gate
(embeddings have their own) and stream via upstream.Generation; they are served by FastLane. The others are plain
forwards.
Middleware (request id, logs, CORS, JWT, rate limit) is in middleware.py and wired in main.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from . import bodies, forms, schemas
from .config import Settings, normalize_model
from .errors import error_response
from .limits import ConcurrencyGate
from .metrics import Metrics
from .policy import RequestPolicy
from .upstream import Forward, Generation, Reply, Upstream, UpstreamError, passthrough

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
# Ollama's account and cloud routes act as the ollama.com account the host is signed in to: who it is, signing it
# out (its deprecated DELETE form included), web search and fetch proxied through ollama.com with its key, model
# recommendations from its cloud cache. /api/status only reads, but what it reports is the host's cloud policy
# (api.StatusResponse: cloud disabled or not, and by env or config), which says nothing true about this server:
# through it cloud models are never served and every cloud route is refused. Refused, Ollama's own clients take the
# policy as unknown (cmd/launch/models.go) or fail closed (app/tools/cloud_policy.go).
ACCOUNT_ROUTES = (
    ("/api/status", "GET"),
    ("/api/me", "POST"),
    ("/api/signout", "POST"),
    ("/api/user/keys/{encodedKey}", "DELETE"),
    ("/api/experimental/web_search", "POST"),
    ("/api/experimental/web_fetch", "POST"),
    ("/api/experimental/model-recommendations", "GET"),
)
ACCOUNT_REFUSAL = "Ollama account and cloud features are disabled on this server"

# The load-carrying routes: path -> does it stream when the body has no `stream` (None: never streams).
# Ollama's own routes stream by default (docs/api.md); OpenAI's and Anthropic's APIs only when asked.
GENERATIONS = {
    "/api/chat": True,
    "/api/generate": True,
    "/v1/chat/completions": False,
    "/v1/completions": False,
    "/v1/responses": False,
    "/v1/messages": False,
}
EMBEDDINGS = ("/api/embed", "/api/embeddings", "/v1/embeddings")
# Ollama runs a transcription as a chat of the (audio-capable) chat model (openai/openai.go FromTranscriptionRequest):
# it takes the generation gate and the chat allowlist. It never streams, and Ollama reads no field the request
# policy governs there (keep_alive, num_ctx, a token limit).
TRANSCRIPTIONS = "/v1/audio/transcriptions"

Handler = Callable[[Request], Awaitable[Response]]


def _json(obj: object, status: int = 200) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status_code=status, media_type="application/json")


def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # uvicorn's parser refuses a malformed Content-Length before we get here
    return None


async def read_body(request: Request, limit: int) -> bytes | None:
    """The whole body, or None once it is larger than `limit` (0: no limit).

    Decided from Content-Length before a byte is read, and for a chunked body while reading it: nothing larger
    than the limit is ever held. The rest of a refused upload is read and dropped by uvicorn after the 413 (it
    discards body data of a finished response), so the client still gets to read the 413.
    """
    if limit:
        declared = _content_length(request.scope)
        if declared is not None and declared > limit:
            return None
    chunks, size = [], 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":
            break  # the client left: what we have is not going anywhere
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if limit and size > limit:
                return None
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class FastLane:
    """Serves the load-carrying routes without FastAPI's per-request routing and dependency machinery.

    They need nothing from FastAPI at request time (raw body, no parameters), so a dict lookup replaces FastAPI's
    request handling; measured ~1/3 less service CPU per /api/chat request on the 2-core benchmark machine.
    They stay registered on the router too, for the OpenAPI schema. Added innermost (main.py), so request ids,
    logs, metrics, CORS, the JWT check and the rate limit apply exactly as to every other route.
    """

    def __init__(self, app, routes: dict[tuple[str, str], Handler]) -> None:
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
    settings: Settings, upstream: Upstream, gates: dict[str, ConcurrencyGate], metrics: Metrics
) -> tuple[APIRouter, dict[tuple[str, str], Handler]]:
    """The router, and the load-carrying handlers by (method, path) for FastLane."""
    router = APIRouter()
    allowed = settings.allowed_model_set
    served = settings.embedding_model_set  # listings, /api/show, /v1/models/{model}: every model we serve
    served_names = settings.served_models
    policy = RequestPolicy(settings)
    replaced: dict[str, object] = {}  # policy field -> its gateway_policy_replacements_total child
    limit = settings.max_request_bytes
    health_body = json.dumps({"status": "ok", "env": settings.app_env, "version": settings.app_version}).encode()
    responses = schemas.Responses(settings)

    # ---- helpers -------------------------------------------------------------------------------------------
    def too_large(path: str) -> Response:
        metrics.rejected.labels("too_large").inc()
        message = f"request body too large: this server accepts at most {limit} bytes (MAX_REQUEST_BYTES)"
        return error_response(path, 413, message)

    def not_served(path: str, model: str, models: frozenset[str]) -> Response:
        metrics.rejected.labels("model").inc()
        # 404 like Ollama's own "model 'x' not found", so clients treat it as a missing model.
        names = [m for m in served_names if normalize_model(m) in models]
        message = f"model '{model}' not found; this server serves: {', '.join(names)}"
        return error_response(path, 404, message, code="model_not_found", param="model")

    async def read_request(request: Request, models: frozenset[str]) -> tuple[bytes, dict, str] | Response:
        """The raw body, its JSON object and the model; an error Response when they are unusable."""
        path = request.scope["path"]
        body = await read_body(request, limit)
        if body is None:
            return too_large(path)
        try:
            payload = json.loads(body)
        except ValueError:
            return error_response(path, 400, "request body must be JSON")
        if not isinstance(payload, dict):
            return error_response(path, 400, "request body must be a JSON object")
        spelled = bodies.misspelled(path, payload)
        if spelled is not None:
            key, field = spelled
            message = f"'{key}' would be read by Ollama as '{field}' (it ignores the case of keys): write '{field}'"
            return error_response(path, 400, message, param=key)
        model = payload.get("model")
        if not isinstance(model, str) or not model.strip():
            return error_response(path, 400, "model is required", param="model")
        if normalize_model(model) not in models:
            return not_served(path, model, models)
        refused = bodies.problem(path, payload)
        if refused is not None:
            return error_response(path, 400, refused[0], param=refused[1])
        return body, payload, model

    def apply_policy(request: Request, fields: tuple[str, ...], body: bytes, payload: dict) -> bytes:
        """The body to forward: as received, unless the policy replaced one of the route's `fields` (then
        re-serialised)."""
        if not fields:
            return body
        changes = policy.apply(fields, payload)
        if not changes:
            return body
        for change in changes:
            counter = replaced.get(change.field)
            if counter is None:  # labels() takes a lock: resolve each field's child once (a bounded set)
                counter = replaced[change.field] = metrics.policy_replacements.labels(change.field)
            counter.inc()
        # Logged in the request's own access log line (middleware.RequestContext): a log line of its own would
        # cost more CPU than the rest of the rewrite.
        request.scope.setdefault("state", {})["replaced"] = [
            {"field": c.field, "old": c.old, "new": c.new} for c in changes
        ]
        return json.dumps(payload, separators=(",", ":")).encode()

    def load_carrying(route: Forward) -> Handler:
        governed = policy.fields(route.path)  # once per route: the settings never change while the app runs

        async def handle(request: Request) -> Response:
            parsed = await read_request(request, route.models)
            if isinstance(parsed, Response):
                return parsed
            body, payload, model = parsed
            stream = False
            if route.stream_default is not None:
                stream = payload.get("stream")
                if stream is None:
                    stream = route.stream_default
                elif not isinstance(stream, bool):
                    return error_response(route.path, 400, "stream must be true or false", param="stream")
            body = apply_policy(request, governed, body, payload)
            return Generation(upstream, route, body=body, model=model, stream=stream, started=time.perf_counter())

        return handle

    async def forward(request: Request, method: str = "GET", body: bytes | None = None, path: str | None = None):
        try:
            return await upstream.request(method, path or request.scope["path"], body)
        except UpstreamError as err:
            return upstream.error(request.scope["path"], err)

    def only_served(resp: Reply, list_key: str, name_keys: tuple[str, ...]) -> Response:
        if resp.status_code != 200:
            return passthrough(resp)
        data = resp.json()
        data[list_key] = [
            item
            for item in data.get(list_key) or []
            if any(normalize_model(str(item.get(k) or "")) in served for k in name_keys)
        ]
        return _json(data)

    # ---- load-carrying routes (served by FastLane; first here too, as routes are matched in order) ----------
    fast_lane: dict[tuple[str, str], Handler] = {}
    forwards = [Forward(path, default, allowed, gates["generation"]) for path, default in GENERATIONS.items()]
    forwards += [Forward(path, None, served, gates["embedding"]) for path in EMBEDDINGS]
    for route in forwards:
        handler = load_carrying(route)
        router.add_api_route(
            route.path,
            handler,
            methods=["POST"],
            tags=[schemas.tag(route.path)],
            name=route.path.strip("/").replace("/", "_"),
            openapi_extra=schemas.request_body(
                route.path, served_names if route.stream_default is None else settings.allowed_models
            ),
            responses=responses.forwarding(route.path, route.stream_default),
        )
        fast_lane[("POST", route.path)] = handler

    transcription = Forward(TRANSCRIPTIONS, None, allowed, gates["generation"])

    async def transcribe(request: Request) -> Response:
        body = await read_body(request, limit)
        if body is None:
            return too_large(TRANSCRIPTIONS)
        try:
            upload = forms.read(request.headers.get("content-type"), body)
        except forms.FormError as err:
            return error_response(TRANSCRIPTIONS, 400, f"failed to parse multipart form: {err}")
        model = upload.fields.get("model", "")
        if not model.strip():
            return error_response(TRANSCRIPTIONS, 400, "model is required", param="model")
        if normalize_model(model) not in allowed:
            return not_served(TRANSCRIPTIONS, model, allowed)
        # Ollama answers response_format=text as plain text, anything else as {"text": ...} (middleware/openai.go).
        text = upload.fields.get("response_format") == "text"
        return Generation(
            upstream,
            transcription,
            body=body,
            model=model,
            stream=False,
            started=time.perf_counter(),
            content_type=upload.content_type,
            params={"model": model},  # what Ollama reads as the model, whatever the body says (forms.py)
            keepalive_type=b"text/plain; charset=utf-8" if text else b"application/json",
            # Ollama's TranscriptionWriter drops an error that comes after the first piece and ends the answer
            # empty; a JSON transcript is never empty, an empty text one can be (silence).
            empty_is_failure=not text,
        )

    router.add_api_route(
        TRANSCRIPTIONS,
        transcribe,
        methods=["POST"],
        tags=["openai"],
        name="v1_audio_transcriptions",
        openapi_extra=schemas.upload_body(settings.allowed_models),
        responses=responses.transcription(),
    )
    fast_lane[("POST", TRANSCRIPTIONS)] = transcribe

    # ---- probes and operations -----------------------------------------------------------------------------
    @router.get("/health", tags=["probes"], responses=responses.health())
    async def health() -> Response:
        return Response(health_body, media_type="application/json")

    required = [settings.model_name] + ([settings.embed_model_name] if settings.embed_model_name else [])

    @router.get("/ready", tags=["probes"], responses=responses.ready())
    async def ready() -> Response:
        try:
            resp = await upstream.request("GET", "/api/tags", read_timeout=5.0)
        except UpstreamError as err:
            return _json({"status": "unavailable", "reason": err.message}, 503)
        if resp.status_code != 200:
            return _json({"status": "unavailable", "reason": f"Ollama /api/tags answered {resp.status_code}"}, 503)
        names = {normalize_model(str(m.get("name") or m.get("model") or "")) for m in resp.json().get("models", [])}
        missing = [m for m in required if normalize_model(m) not in names]
        if missing:
            reason = f"model {', '.join(missing)} is not pulled in Ollama at {upstream.base_url}"
            return _json({"status": "unavailable", "reason": reason}, 503)
        body = {"status": "ready", "model": settings.model_name, "env": settings.app_env}
        if settings.embed_model_name:
            body["embed_model"] = settings.embed_model_name
        return _json(body)

    @router.get("/metrics", tags=["operations"], responses=responses.metrics())
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ---- Ollama API ----------------------------------------------------------------------------------------
    # HEAD answers like GET without the body (uvicorn drops it), as Ollama's HEAD routes do (server/routes.go).
    @router.get("/", tags=["ollama"], responses=responses.root())
    @router.head("/", tags=["ollama"], name="root_head", responses=responses.root())
    async def root(request: Request) -> Response:
        resp = await forward(request)  # GET for HEAD too: Ollama's HEAD carries the GET's Content-Length
        return passthrough(resp) if isinstance(resp, Reply) else resp

    @router.get("/api/version", tags=["ollama"], responses=responses.plain())
    @router.head("/api/version", tags=["ollama"], name="version_head", responses=responses.plain())
    async def version(request: Request) -> Response:
        resp = await forward(request)
        return passthrough(resp) if isinstance(resp, Reply) else resp

    @router.get("/api/tags", tags=["ollama"], responses=responses.plain())
    @router.head("/api/tags", tags=["ollama"], name="tags_head", responses=responses.plain())
    async def tags(request: Request) -> Response:
        resp = await forward(request)
        return only_served(resp, "models", ("name", "model")) if isinstance(resp, Reply) else resp

    @router.get("/api/ps", tags=["ollama"], responses=responses.plain())
    async def ps(request: Request) -> Response:
        resp = await forward(request)
        return only_served(resp, "models", ("name", "model")) if isinstance(resp, Reply) else resp

    @router.post(
        "/api/show",
        tags=["ollama"],
        openapi_extra=schemas.request_body("/api/show", served_names),
        responses=responses.forwarding("/api/show", None, gated=False),
    )
    async def show(request: Request) -> Response:
        parsed = await read_request(request, served)
        if isinstance(parsed, Response):
            return parsed
        resp = await forward(request, "POST", parsed[0])
        return passthrough(resp, request.scope["path"]) if isinstance(resp, Reply) else resp

    # ---- OpenAI-compatible (the generations and embeddings are above) --------------------------------------
    @router.get("/v1/models", tags=["openai"], responses=responses.plain("/v1/models"))
    async def v1_models(request: Request) -> Response:
        resp = await forward(request)
        return only_served(resp, "data", ("id",)) if isinstance(resp, Reply) else resp

    @router.get(
        "/v1/models/{model}",
        tags=["openai"],
        openapi_extra=schemas.model_parameter(served_names),
        responses=responses.model_lookup(),
    )
    async def v1_model(request: Request) -> Response:
        model = request.path_params["model"]  # declared in the schema by openapi_extra (with the served enum)
        if normalize_model(model) not in served:
            return not_served(request.scope["path"], model, served)
        resp = await forward(request, path="/v1/models/" + quote(model, safe=":"))
        return passthrough(resp, request.scope["path"]) if isinstance(resp, Reply) else resp

    # ---- refused -------------------------------------------------------------------------------------------
    def refusal(message: str) -> Handler:
        async def refused(request: Request) -> Response:
            return error_response(request.scope["path"], 403, message)

        return refused

    for routes, message in ((MANAGEMENT_ROUTES, MANAGEMENT_REFUSAL), (ACCOUNT_ROUTES, ACCOUNT_REFUSAL)):
        handler = refusal(message)
        for path, method in routes:
            router.add_api_route(
                path,
                handler,
                methods=[method],
                status_code=403,  # the only answer: no default 200 in the document
                tags=["refused"],
                name=f"refused_{method}_{path}",
                openapi_extra=schemas.refused_path_parameter(path),
                responses=responses.refused(message),
            )
    return router, fast_lane
