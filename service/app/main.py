"""Application factory. Start with `uvicorn app.main:app` from service/ (settings: config.py, routes: routes.py)."""

from __future__ import annotations

import gc
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from . import schemas
from .auth import AccessVerifier
from .config import ConfigError, Settings, load_settings
from .errors import error_response
from .http_client import open_session
from .limits import ClientKey, ConcurrencyGate, RateLimiter
from .logs import setup_logging
from .metrics import Metrics
from .middleware import AccessAuth, RateLimit, RequestContext
from .routes import FastLane, build_router
from .upstream import Upstream


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    setup_logging(settings.log_level)
    metrics = Metrics()
    upstream = Upstream(settings, metrics)
    gates = {
        "generation": ConcurrencyGate(
            settings.max_concurrent, settings.max_queue, metrics.queue_depth, metrics.in_flight, "generation"
        ),
        "embedding": ConcurrencyGate(
            settings.embed_max_concurrent,
            settings.embed_max_queue,
            metrics.embed_queue_depth,
            metrics.embed_in_flight,
            "embedding",
        ),
    }
    verifier = None
    if settings.jwt_enabled:
        verifier = AccessVerifier(settings.cf_access_aud, settings.cf_access_certs_url, settings.cf_access_jwks_ttl)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The one pooled HTTP client for the app's lifetime (http_client.py): Ollama, and the Access keys.
        session = open_session(settings)
        upstream.start(session)
        # Everything built so far (modules, routes, schemas, settings) lives as long as the process: move it out of
        # the collector's generations so no collection walks it again, and collect the young generation after 10,000
        # allocations instead of 700, as each request allocates a few hundred objects
        # (docs.python.org/3/library/gc.html#gc.freeze, #gc.set_threshold).
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        if verifier is not None:
            verifier.session = session
        try:
            yield
        finally:
            await session.close()

    app = FastAPI(
        title="local-llm-server gateway",
        version=settings.app_version,
        description="Ollama- and OpenAI-compatible gateway in front of one Ollama (see routes.py).",
        lifespan=lifespan,
        docs_url=None,  # no CDN-loaded UI on a production API; /openapi.json stays
        redoc_url=None,
        # FastAPI's OpenTelemetry hooks look up the global providers on every request; metrics are Prometheus here.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.openapi_version = "3.0.3"  # draft-4 schemas: an integer is an integer literal, as for Go (schemas.py)

    def openapi() -> dict:
        # The generated document, plus the schemas request bodies refer to by $ref (a recursive one).
        if app.openapi_schema is None:
            FastAPI.openapi(app).setdefault("components", {}).setdefault("schemas", {}).update(schemas.COMPONENTS)
        return app.openapi_schema

    app.openapi = openapi
    router, fast_lane = build_router(settings, upstream, gates, metrics)
    app.include_router(router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        # 404/405 for paths we do not serve, in the family's format (Ollama: {"error": ...}).
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; a path can have several routes.
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(router, request.scope))}
        return error_response(request.scope["path"], exc.status_code, str(exc.detail), headers=headers)

    # Middleware: the last added is the outermost.
    app.add_middleware(FastLane, routes=fast_lane)
    if settings.rate_limit_per_minute > 0:
        app.add_middleware(
            RateLimit,
            limiter=RateLimiter(settings.rate_limit_per_minute),
            client_key=ClientKey(settings.trusted_proxies),
            per_minute=settings.rate_limit_per_minute,
            metrics=metrics,
        )
    if verifier is not None:
        app.add_middleware(AccessAuth, verifier=verifier, metrics=metrics)
    if settings.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
            allow_headers=["content-type", "authorization", "x-request-id"],
            expose_headers=["x-request-id", "retry-after"],
            max_age=600,
        )
    # Metric labels: the known route templates (anything else is counted as "other").
    routes = frozenset([app.openapi_url, *(route.path for route in router.routes)])
    templates = tuple((route.path_regex, route.path) for route in router.routes if "{" in route.path)
    app.add_middleware(RequestContext, metrics=metrics, routes=routes, templates=templates)
    return app


def allowed_methods(router, scope) -> list[str]:
    """Every method some route of this path answers (RFC 9110 15.5.6: a 405 must list them in Allow)."""
    methods: set[str] = set()
    for route in router.routes:
        if route.path_regex.match(scope["path"]):
            methods |= set(route.methods or ())
    return sorted(methods)


def _main_app() -> FastAPI:
    try:
        return create_app()
    except ConfigError as exc:
        # uvicorn imports this module: exit with one readable line instead of a traceback.
        sys.stderr.write(f"configuration error: {exc}\n")
        raise SystemExit(2) from None


app = _main_app()
