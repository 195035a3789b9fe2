"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a memory stream per request and buffers).

Order, outermost first (see main.create_app): RequestContext (request id, access log, metrics), CORS, Access JWT,
rate limit, then the routes.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from .auth import AccessVerifier, AuthError
from .errors import send_error
from .limits import ClientKey, RateLimiter
from .metrics import Metrics

access_log = logging.getLogger("app.access")
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")
# The method label is client-chosen: anything else is counted as OTHER, so it cannot create unbounded series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class RequestContext:
    """Request id (X-Request-ID honoured when sane, else made), one JSON log line and metrics per request.

    A successful /health is counted but not logged: Docker's healthcheck probes it every few seconds (every second
    while starting), which would otherwise fill the 3 x 10 MB json-file log rotation with probe lines.
    """

    QUIET_PATHS = frozenset({"/health"})

    def __init__(self, app, metrics: Metrics, routes: frozenset[str], templates: tuple = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.templates = templates  # (compiled path pattern, "/api/blobs/{digest}") of the routes with a parameter
        self._children: dict[tuple[str, str, int], tuple] = {}

    def route_label(self, path: str) -> str:
        """The route's path, or its template for a route with a parameter; "other" for anything else (a bounded set
        of labels, whatever paths clients make up)."""
        if path in self.routes:
            return path
        for pattern, template in self.templates:
            if pattern.match(path):
                return template
        return "other"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _REQUEST_ID.match(value):
                    request_id = value
                break
        if request_id is None:
            request_id = uuid.uuid4().hex.encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode()
        status = 0

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            duration = time.perf_counter() - started
            if not status:
                # No response began: the client left first (nginx's 499), or the app failed (uvicorn sends 500).
                status = 499 if scope["state"].get("client_left") else 500
            route = self.route_label(scope["path"])
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            key = (route, method, status)
            children = self._children.get(key)
            if children is None:  # labels() takes a lock and builds a tuple each time: resolve once per key
                requests = self.metrics.requests.labels(route, key[1], str(status))
                children = (requests, self.metrics.latency.labels(route))
                self._children[key] = children  # bounded: routes x methods x statuses
            children[0].inc()
            children[1].observe(duration)
            quiet = status == 200 and scope["path"] in self.QUIET_PATHS
            if not quiet and access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                line = {
                    "msg": "request",
                    "request_id": scope["state"]["request_id"],
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(duration * 1000, 2),
                    "client": client[0] if client else None,
                }
                replaced = scope["state"].get("replaced")  # the request policy's replacements (routes.py)
                if replaced is not None:
                    line["replaced"] = replaced
                usage = scope["state"].get("usage")  # set by a generation whose answer carried token counts
                if usage is not None:
                    line["model"] = scope["state"].get("model")
                    line["prompt_tokens"] = usage.prompt
                    line["completion_tokens"] = usage.completion
                access_log.info(line)


class AccessAuth:
    """Every route except /health requires a valid Cf-Access-Jwt-Assertion (when CF_ACCESS_* are set)."""

    OPEN_PATHS = frozenset({"/health"})

    def __init__(self, app, verifier: AccessVerifier, metrics: Metrics) -> None:
        self.app = app
        self.verifier = verifier
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token = None
        for name, value in scope["headers"]:
            if name == b"cf-access-jwt-assertion":
                token = value.decode("latin-1")
                break
        try:
            await self.verifier.verify(token)
        except AuthError as exc:
            self.metrics.rejected.labels("auth").inc()
            await send_error(send, scope["path"], exc.status, exc.message)
            return
        await self.app(scope, receive, send)


class RateLimit:
    """RATE_LIMIT_PER_MINUTE per client on the model API (/api/*, /v1/*); probes and metrics are not limited."""

    def __init__(self, app, limiter: RateLimiter, client_key: ClientKey, per_minute: int, metrics: Metrics) -> None:
        self.app = app
        self.limiter = limiter
        self.client_key = client_key
        self.per_minute = per_minute
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(("/api/", "/v1/")):
            wait = self.limiter.check(self.client_key(scope))
            if wait:
                self.metrics.rejected.labels("rate_limited").inc()
                msg = f"rate limit exceeded: {self.per_minute} requests per minute per client; retry in {wait} s"
                await send_error(send, scope["path"], 429, msg, {"Retry-After": str(wait)})
                return
        await self.app(scope, receive, send)
