"""A controllable Ollama double: a real HTTP server speaking Ollama's API (docs/api.md shapes).

Used by the service tests (in-process, :class:`OllamaDouble`), by the testbed and the demo (standalone,
``python -m tests.fakes.ollama --port 11434 --model llama3.2:1b``) and by ``bench/service.py`` and
``bench/isolation.py``. The contract other parts rely on is this docstring (docs/testbed.md, "The Ollama double",
points here):

* Generation routes (``/api/chat``, ``/api/generate``, ``/v1/chat/completions``) produce ``token_count``
  deterministic tokens ("tok0", " tok1", ...; see :func:`expected_text`) after ``first_token_delay`` seconds
  (nothing at all, not even the status line, is sent before it: how prompt evaluation, or a slow model load, looks
  to a proxy) and ``token_delay`` seconds between tokens.
* Embedding routes answer after ``embedding_delay`` seconds (a slow embedding model), watching the connection.
* Ollama's scheduler (tests/fakes/ollama_sched.py has the details and the sources): a generation or embedding
  runs once its model is loaded and one of the model's ``num_parallel`` slots is free; the others wait for a slot in
  arrival order, without a bound. A model that is not loaded is loaded first (``load_duration`` seconds; one load at
  a time), with at most ``max_queue`` requests waiting for the scheduler, beyond which the answer is a 503 with
  Ollama's "server busy" text; with ``max_loaded_models`` loaded, an idle model is unloaded first (the shortest
  keep_alive, then by name), else the scheduler waits for one to become idle. A model stays loaded ``keep_alive``
  after its last request (the request's ``keep_alive`` wins); ``/api/ps`` lists what is loaded, with
  ``expires_at``. Defaults are Ollama's (1 slot, 512, 3, "5m"; loads take no time). These knobs are Ollama's
  server settings: changing one is restarting Ollama, and nothing is loaded afterwards. The command line takes
  them as ``--num-parallel``, ``--max-queue``, ``--max-loaded-models``, ``--keep-alive``, ``--load-duration``,
  and :meth:`OllamaDouble.reset` (``POST /_double/reset``) returns to those start-up values.
* ``status`` != 200 makes every ``/api/*`` and ``/v1/*`` route answer that status with Ollama's error body
  (generation routes only after ``first_token_delay``, like a model that fails to load);
  ``error_after_tokens=N`` streams N tokens then ends the stream with an error line (status stays 200).
* Every request except ``/_double/*`` is recorded (:class:`RecordedRequest`), including whether its client
  went away before the response was complete (``cancelled``): the connection is watched while waiting and
  streaming.
* Control: ``POST /_double/config`` (a JSON object of :class:`DoubleConfig` knobs), ``GET /_double/config``,
  ``POST /_double/reset``, ``GET /_double/requests``.

Implementation: a bare ASGI callable (no framework, so the "direct" run of the benchmark measures
Ollama-shaped HTTP, not the double's overhead) served by uvicorn (httptools, uvloop when present) on
pre-bound sockets, in a background thread with its own event loop. Only the venv's packages are needed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import uvicorn

from tests.fakes import go_forms, ollama_sched, ollama_types
from tests.fakes.ollama_sched import ServerBusy

try:  # uvloop is a runtime dependency of the service; fall back to asyncio's loop if it is missing.
    import uvloop

    _new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
except ImportError:  # pragma: no cover
    _new_loop = asyncio.new_event_loop

DEFAULT_MODEL = "llama3.2:1b"
DEFAULT_VERSION = "0.12.6"
# Oldest records are dropped beyond this, so a long benchmark run cannot grow the double without bound.
MAX_RECORDS = 10_000
# Ollama's 404 text for a model that is not pulled (server/routes.go).
_NOT_FOUND = "model '{}' not found"
_CONTROL_PREFIX = "/_double/"
_GENERATION_PATHS = frozenset(
    {"/api/chat", "/api/generate", "/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"}
)
# Routes whose body is a multipart form, not JSON.
_FORM_PATHS = frozenset({"/v1/audio/transcriptions"})
_MANAGEMENT_ROUTES = {
    ("POST", "/api/pull"),
    ("POST", "/api/push"),
    ("POST", "/api/create"),
    ("POST", "/api/copy"),
    ("DELETE", "/api/delete"),
}

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def token_text(index: int) -> str:
    """The text of token ``index``: "tok0", " tok1", " tok2", ..."""
    return f"tok{index}" if index == 0 else f" tok{index}"


def expected_text(count: int) -> str:
    """The full content a client reassembles from ``count`` tokens ("tok0 tok1 ... tok<count-1>")."""
    return "".join(token_text(i) for i in range(count))


@dataclasses.dataclass
class DoubleConfig:
    """The knobs. Defaults are what :meth:`OllamaDouble.reset` returns to."""

    first_token_delay: float = 0.0  # seconds of silence (no headers either) before the first token
    token_delay: float = 0.0  # seconds between tokens
    token_count: int = 5  # tokens per answer (options.num_predict / max_tokens may stop it earlier)
    status: int = 200  # != 200: every /api and /v1 route answers this status with {"error": fail_with}
    error_after_tokens: int | None = None  # stream N tokens, then an error line (status stays 200)
    models: list[str] = dataclasses.field(default_factory=list)  # the models "pulled"; [] = [default model]
    # A model's digest after someone pulled a newer build of it ({name: 64 hex}); others keep their own digest.
    digests: dict = dataclasses.field(default_factory=dict)
    fail_with: str = "upstream failure injected by the double"
    # Tool calls the model makes when the request offers `tools`: [{"name": ..., "arguments": {...}}, ...].
    # Empty: the model answers with text even when tools are offered.
    tool_calls: list = dataclasses.field(default_factory=list)
    thinking: str = "Let me think."  # the thinking text of an answer to a request with `think` on
    embedding_dimensions: int = 8  # length of every embedding vector (a request's `dimensions` may shorten it)
    embedding_delay: float = 0.0  # seconds before an embedding answer
    # Paths this Ollama does not serve (gin's plain-text 404), e.g. ["/v1/responses"] for Ollama before 0.13.3.
    missing_routes: list = dataclasses.field(default_factory=list)
    # Ollama's scheduler (tests/fakes/ollama_sched.py), Ollama's defaults. Changing any of these is restarting Ollama
    # with new settings: nothing is loaded afterwards.
    num_parallel: int = 1  # OLLAMA_NUM_PARALLEL: requests each loaded model serves at once
    max_queue: int = 512  # OLLAMA_MAX_QUEUE: requests waiting for the scheduler (a load) before it answers 503
    max_loaded_models: int = 3  # OLLAMA_MAX_LOADED_MODELS (Ollama's automatic value: 3 per GPU, 3 on CPU)
    keep_alive: str | int | float = "5m"  # OLLAMA_KEEP_ALIVE: a Go duration or seconds; negative = forever
    load_duration: float = 0.0  # seconds a model takes to load (not an Ollama setting: the machine's speed)

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    def validated(self) -> DoubleConfig:
        """Fail loudly on a knob of the wrong type, so a typo in a test does not silently test nothing."""
        checks: dict[str, tuple[type, ...]] = {
            "first_token_delay": (int, float),
            "token_delay": (int, float),
            "token_count": (int,),
            "status": (int,),
            "error_after_tokens": (int, type(None)),
            "models": (list,),
            "digests": (dict,),
            "fail_with": (str,),
            "tool_calls": (list,),
            "thinking": (str,),
            "embedding_dimensions": (int,),
            "embedding_delay": (int, float),
            "missing_routes": (list,),
            "num_parallel": (int,),
            "max_queue": (int,),
            "max_loaded_models": (int,),
            "keep_alive": (str, int, float),
            "load_duration": (int, float),
        }
        for name, types in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, types):
                raise ValueError(f"{name}: {value!r} is not {'/'.join(t.__name__ for t in types)}")
        if self.first_token_delay < 0 or self.token_delay < 0 or self.token_count < 0 or self.embedding_delay < 0:
            raise ValueError("delays and token_count must be >= 0")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status: {self.status} is not an HTTP status")
        if not all(isinstance(m, str) and m for m in self.models):
            raise ValueError("models: every entry must be a non-empty string")
        if not all(isinstance(d, str) and re.fullmatch("[0-9a-f]{64}", d) for d in self.digests.values()):
            raise ValueError("digests: every value must be a sha256 digest in hex, as Ollama lists it")
        for call in self.tool_calls:
            if not (
                isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(call.get("arguments"), dict)
            ):
                raise ValueError('tool_calls: every entry must be {"name": str, "arguments": {...}}')
        if self.embedding_dimensions < 1:
            raise ValueError("embedding_dimensions must be >= 1")
        if self.num_parallel < 1 or self.max_loaded_models < 1 or self.max_queue < 0 or self.load_duration < 0:
            raise ValueError("num_parallel and max_loaded_models must be >= 1, max_queue and load_duration >= 0")
        ollama_sched.keep_alive_seconds(self.keep_alive, env=True)  # ValueError when it is not a duration
        return self

    def scheduler_settings(self) -> ollama_sched.Settings:
        return ollama_sched.Settings(
            num_parallel=self.num_parallel,
            max_queue=self.max_queue,
            max_loaded_models=self.max_loaded_models,
            keep_alive=ollama_sched.keep_alive_seconds(self.keep_alive, env=True),
            load_duration=float(self.load_duration),
        )


@dataclasses.dataclass
class RecordedRequest:
    """What reached the double. Times are ``time.time()`` (epoch seconds, comparable across processes)."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: Any  # parsed JSON, or None (no body / not JSON)
    raw: bytes  # the body exactly as it arrived
    started_at: float
    finished_at: float | None = None
    cancelled: bool = False  # the client closed the connection before the response was complete
    completed: bool = False  # the response was sent to the end
    chunks_sent: int = 0  # token chunks written (streaming); 0 for non-streamed answers
    status: int | None = None  # the status code sent (None while nothing was sent)
    query: str = ""

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["raw"] = base64.b64encode(self.raw).decode()  # JSON has no bytes: base64, as Go encodes []byte
        return out


class _ClientGone(Exception):
    """The client disconnected while we were waiting or streaming."""


def _now_rfc3339() -> str:
    # Ollama's created_at: RFC 3339 in UTC with sub-second precision, e.g. "2023-08-04T19:22:45.499127Z".
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dumps(obj: Any) -> bytes:
    # Compact like Go's encoding/json, newline-terminated like Ollama's NDJSON writer.
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


_JSON = [(b"content-type", b"application/json; charset=utf-8")]
_NDJSON = [(b"content-type", b"application/x-ndjson")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


@dataclasses.dataclass
class Plan:
    """What one answer says: content pieces (one per token; one JSON document for structured output), the thinking
    text, the tool calls (Ollama's native shape), and the counts and done reason of the final chunk."""

    pieces: list[str]
    count: int
    reason: str
    thinking: str | None
    tool_calls: list[dict[str, Any]] | None
    prompt_tokens: int

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.count,
            "total_tokens": self.prompt_tokens + self.count,
        }


def _native_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # api.ToolCall {"id", "function": {"index", "name", "arguments": {...}}}: docs.ollama.com/capabilities/tool-calling
    return [
        {"id": f"call_{i}", "function": {"index": i, "name": c["name"], "arguments": c["arguments"]}}
        for i, c in enumerate(calls)
    ]


def _openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # openai/openai.go ToToolCalls: arguments become a JSON string.
    return [
        {
            "id": c["id"],
            "index": c["function"]["index"],
            "type": "function",
            "function": {"name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"])},
        }
        for c in calls
    ]


def _openai_to_native(body: dict[str, Any]) -> dict[str, Any]:
    """The fields of an OpenAI chat request the answer depends on, as Ollama's layer maps them (FromChatRequest)."""
    native: dict[str, Any] = {"tools": body.get("tools")}
    reasoning = body.get("reasoning")  # a `reasoning` object, even an empty one, wins over reasoning_effort
    effort = reasoning.get("effort") if reasoning is not None else body.get("reasoning_effort")
    native["think"] = None if effort in (None, "none") else effort
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        native["format"] = (fmt.get("json_schema") or {}).get("schema") or "json"
    elif fmt.get("type") == "json_object":
        native["format"] = "json"
    return native


def _instance(schema: Any) -> Any:
    """A small value that follows a JSON schema (the double's structured output)."""
    if not isinstance(schema, dict):
        return None
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _instance(schema[key][0])
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "object" or "properties" in schema:
        return {name: _instance(sub) for name, sub in (schema.get("properties") or {}).items()}
    return {
        "array": lambda: [_instance(schema.get("items") or {"type": "string"})],
        "string": lambda: "tok0",
        "integer": lambda: 0,
        "number": lambda: 0.5,
        "boolean": lambda: True,
        "null": lambda: None,
    }.get(kind, lambda: "tok0")()


def _logprob(token: str, top: int) -> dict[str, Any]:
    # api.Logprob: {"token", "logprob", "bytes", "top_logprobs"} (docs/openapi.yaml Logprob).
    entry: dict[str, Any] = {"token": token, "logprob": -0.25, "bytes": list(token.encode())}
    if top:
        entry["top_logprobs"] = [{"token": token, "logprob": -0.25, "bytes": list(token.encode())}][:top]
    return entry


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for `text` (Ollama returns L2-normalised embeddings)."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [seed[i % len(seed)] / 255.0 - 0.5 + (i // len(seed)) * 0.01 for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def _float32_base64(vector: list[float]) -> str:
    # openai/openai.go floatsToBase64: little-endian float32.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class _State:
    """Config, scheduler and records, shared between the server thread and the test thread."""

    def __init__(self, model: str, version: str, base: DoubleConfig) -> None:
        self.default_model = model
        self.version = version
        self.base = base  # what reset() returns to: the defaults plus the double's start-up settings
        self.config = base
        self.scheduler = ollama_sched.Scheduler(base.scheduler_settings())
        self.records: collections.deque[RecordedRequest] = collections.deque(maxlen=MAX_RECORDS)
        self.lock = threading.Lock()

    def configure(self, **changes: Any) -> DoubleConfig:
        unknown = set(changes) - DoubleConfig.keys()
        if unknown:
            raise ValueError(f"unknown double setting(s): {sorted(unknown)}; known: {sorted(DoubleConfig.keys())}")
        with self.lock:
            # Replace the object wholesale: a request in flight keeps the snapshot it started with.
            config = dataclasses.replace(self.config, **changes).validated()
            if config.scheduler_settings() != self.config.scheduler_settings():
                # Ollama restarted with new settings; requests in flight finish on the old scheduler.
                self.scheduler = ollama_sched.Scheduler(config.scheduler_settings())
            self.config = config
            return self.config

    def reset(self) -> None:
        with self.lock:
            self.config = self.base
            self.scheduler = ollama_sched.Scheduler(self.base.scheduler_settings())
            self.records.clear()

    def record(self, rec: RecordedRequest) -> None:
        with self.lock:
            self.records.append(rec)

    def snapshot(self) -> list[RecordedRequest]:
        with self.lock:
            return list(self.records)

    def models(self) -> list[str]:
        return list(self.config.models) or [self.default_model]


def _canonical(name: str) -> str:
    # Ollama treats "llama3.2" as "llama3.2:latest".
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _family(name: str) -> str:
    base = name.rsplit("/", 1)[-1].split(":", 1)[0]
    return "".join(ch for ch in base if ch.isalpha()) or "llama"


def _details(name: str) -> dict[str, Any]:
    family = _family(name)
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": "1.2B",
        "quantization_level": "Q8_0",
    }


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _tag_entry(name: str, digests: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-01-01T00:00:00.000000000Z",
        "size": 1_321_098_329,
        "digest": (digests or {}).get(name) or _digest(name),
        "details": _details(name),
    }


@dataclasses.dataclass(frozen=True)
class _Job:
    """What a request asks of the scheduler: a model, and the request's keep_alive in seconds (None: not given;
    Ollama's OpenAI and Anthropic layers never give one)."""

    model: str
    keep_alive: float | None = None

    @classmethod
    def of(cls, model: str, body: dict[str, Any]) -> _Job:
        given = body.get("keep_alive")  # decoded already: a number or a valid duration string
        return cls(model, None if given is None else ollama_sched.keep_alive_seconds(given))


class _App:
    """The ASGI application. One instance per double; state is shared with the controlling thread."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.routes: dict[tuple[str, str], Callable[..., Awaitable[None]]] = {
            ("GET", "/"): self._root,
            ("HEAD", "/"): self._root,
            ("GET", "/api/version"): self._version,
            ("HEAD", "/api/version"): self._version,
            ("GET", "/api/tags"): self._tags,
            ("HEAD", "/api/tags"): self._tags,
            ("GET", "/api/ps"): self._ps,
            ("POST", "/api/show"): self._show,
            ("POST", "/api/chat"): self._chat,
            ("POST", "/api/generate"): self._generate,
            ("POST", "/api/embed"): self._embed,
            ("POST", "/api/embeddings"): self._embeddings,
            ("POST", "/v1/chat/completions"): self._openai_chat,
            ("POST", "/v1/completions"): self._openai_completion,
            ("POST", "/v1/responses"): self._responses,
            ("POST", "/v1/embeddings"): self._openai_embeddings,
            ("POST", "/v1/messages"): self._anthropic_messages,
            ("POST", "/v1/audio/transcriptions"): self._transcription,
            ("GET", "/v1/models"): self._openai_models,
        }

    # -- ASGI entry --
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not part of Ollama's API
            return
        method, path = scope["method"], scope["path"]
        raw = await self._read_body(receive)
        if path.startswith(_CONTROL_PREFIX):
            await self._control(method, path, raw, send)
            return
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            k, v = key.decode("latin-1").lower(), value.decode("latin-1")
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        body: Any = None
        if raw:
            try:
                body = ollama_types.loads(raw)  # as Go reads JSON: NaN refused, every duplicate key kept
            except ValueError:
                body = None
        rec = RecordedRequest(
            method=method,
            path=path,
            headers=headers,
            body=body,
            raw=raw,
            started_at=time.time(),
            query=scope.get("query_string", b"").decode("latin-1"),
        )
        self.state.record(rec)
        out = _Responder(send, rec)
        try:
            await self._dispatch(method, path, raw, body, rec, receive, out)
        finally:
            if rec.finished_at is None:
                rec.finished_at = time.time()

    async def _dispatch(
        self,
        method: str,
        path: str,
        raw: bytes,
        body: Any,
        rec: RecordedRequest,
        receive: Receive,
        out: _Responder,
    ) -> None:
        cfg = self.state.config
        if path in cfg.missing_routes:
            await out.text(404, "404 page not found")  # an older Ollama: gin has no such route
            return
        handler = self.routes.get((method, path))
        if handler is None and method == "GET" and path.startswith("/v1/models/"):
            handler = self._openai_model  # gin's /v1/models/:model (one path segment)
        management = (method, path) in _MANAGEMENT_ROUTES or path.startswith("/api/blobs/")
        if handler is None and not management:
            if any(p == path for _, p in self.routes) or any(p == path for _, p in _MANAGEMENT_ROUTES):
                await out.text(405, "405 method not allowed")
            else:
                await out.text(404, "404 page not found")  # what Ollama's gin router answers
            return
        if path in _FORM_PATHS:  # the handler reads the form before anything else, injected failures included
            await handler(cfg=cfg, rec=rec, receive=receive, out=out)
            return
        is_api = path.startswith(("/api/", "/v1/"))
        # Generation routes fail after first_token_delay instead (see _failed_generation).
        if is_api and cfg.status != 200 and path not in _GENERATION_PATHS:
            await self._error(out, path, cfg.status, cfg.fail_with)
            return
        if raw and body is None and method == "POST":
            await self._error(out, path, 400, "invalid JSON request body")
            return
        if management:
            await self._management(method, path, body, out)
            return
        if method == "POST":
            # Decoded as Ollama's Go structs decode it; the handlers read that view (canonical field names).
            status, decoded = ollama_types.check(path, body)
            if status is not None:
                await self._error(out, path, status, decoded)
                return
            body = decoded
        await handler(cfg=cfg, body=body if isinstance(body, dict) else {}, rec=rec, receive=receive, out=out)

    @staticmethod
    async def _read_body(receive: Receive) -> bytes:
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    # -- errors and model lookup --
    @staticmethod
    async def _error(out: _Responder, path: str, status: int, message: str) -> None:
        if path == "/v1/messages":
            # Ollama's Anthropic layer (anthropic/anthropic.go NewError).
            etype = {400: "invalid_request_error", 404: "not_found_error", 503: "overloaded_error"}.get(
                status, "api_error"
            )
            body = {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_double"}
            await out.json(status, body)
        elif path.startswith("/v1/"):
            # Ollama's OpenAI layer (openai/openai.go NewError): {"error": {"message","type","param","code"}}.
            etype = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
            await out.json(status, {"error": {"message": message, "type": etype, "param": None, "code": None}})
        else:
            await out.json(status, {"error": message})

    def _resolve(self, name: Any) -> str | None:
        if not isinstance(name, str) or not name:
            return None
        wanted = _canonical(name)
        for model in self.state.models():
            if _canonical(model) == wanted:
                return model
        return None

    async def _model_or_error(self, body: dict[str, Any], out: _Responder, path: str) -> str | None:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            await self._error(out, path, 400, "model is required")
            return None
        model = self._resolve(name)
        if model is None:
            await self._error(out, path, 404, _NOT_FOUND.format(name))
            return None
        late = ollama_types.late_problem(path, body)  # raw mode, option types, format: checked after the model
        if late is not None:
            await self._error(out, path, *late)
            return None
        return model

    # -- simple routes --
    async def _root(self, out: _Responder, **_: Any) -> None:
        await out.text(200, "Ollama is running")

    async def _version(self, out: _Responder, **_: Any) -> None:
        await out.json(200, {"version": self.state.version})

    async def _tags(self, out: _Responder, **_: Any) -> None:
        digests = self.state.config.digests
        await out.json(200, {"models": [_tag_entry(m, digests) for m in self.state.models()]})

    async def _ps(self, out: _Responder, **_: Any) -> None:
        # The models the scheduler has loaded, the longest time left first (server/routes.go PsHandler).
        models = []
        for loaded in self.state.scheduler.loaded_models():
            entry = _tag_entry(loaded.model)
            del entry["modified_at"]
            expires = datetime.fromtimestamp(loaded.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            entry.update(expires_at=expires, size_vram=entry["size"], context_length=4096)
            models.append(entry)
        await out.json(200, {"models": models})

    async def _show(self, body: dict[str, Any], out: _Responder, **_: Any) -> None:
        model = await self._model_or_error(body, out, "/api/show")
        if model is None:
            return
        family = _family(model)
        await out.json(
            200,
            {
                "license": "double license",
                "modelfile": f"# Modelfile generated by the Ollama double\nFROM {model}\n",
                "parameters": 'stop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": _details(model),
                "model_info": {
                    "general.architecture": family,
                    "general.parameter_count": 1_235_814_432,
                    f"{family}.context_length": 131072,
                },
                "capabilities": ["completion", "tools"],
                "modified_at": "2025-01-01T00:00:00.000000000Z",
            },
        )

    async def _openai_models(self, out: _Responder, **_: Any) -> None:
        data = [
            {
                "id": m,
                "object": "model",
                "created": 1735689600,
                "owned_by": m.rsplit("/", 1)[0] if "/" in m else "library",
            }
            for m in self.state.models()
        ]
        await out.json(200, {"object": "list", "data": data})

    async def _openai_model(self, rec: RecordedRequest, out: _Responder, **_: Any) -> None:
        # GET /v1/models/:model (middleware/openai.go RetrieveMiddleware -> ShowHandler -> openai.ToModel).
        name = unquote(rec.path[len("/v1/models/") :])
        model = self._resolve(name)
        if model is None or "/" in name:
            await self._error(out, rec.path, 404, _NOT_FOUND.format(name))
            return
        owner = model.rsplit("/", 1)[0] if "/" in model else "library"
        await out.json(200, {"id": name, "object": "model", "created": 1735689600, "owned_by": owner})

    async def _management(self, method: str, path: str, body: Any, out: _Responder) -> None:
        # Present so a test can prove the service never forwards them. A pull makes the model "pulled" (listed by
        # /api/tags from then on), as Ollama's does (the deploy's ollama_pull relies on it); the others
        # change nothing here.
        if path in ("/api/copy", "/api/delete") or path.startswith("/api/blobs/"):
            await out.json(200 if method != "POST" or path == "/api/copy" else 201, {})
            return
        name = body.get("model") or body.get("name") if isinstance(body, dict) else None
        if path == "/api/pull" and isinstance(name, str) and name:
            models = self.state.models()
            if _canonical(name) not in {_canonical(m) for m in models}:
                self.state.configure(models=[*models, name])
        await out.json(200, {"status": "success"})

    # -- generation --
    @staticmethod
    def _limit(cfg: DoubleConfig, requested: Any) -> tuple[int, str]:
        """Tokens to produce and the done reason; num_predict / max_tokens cut the answer ("length")."""
        if isinstance(requested, int) and not isinstance(requested, bool) and 0 < requested < cfg.token_count:
            return requested, "length"
        return cfg.token_count, "stop"

    async def _failed_generation(
        self, cfg: DoubleConfig, rec: RecordedRequest, receive: Receive, out: _Responder
    ) -> None:
        """`status` on a generation route: like a model that fails to load, the error comes after the
        first_token_delay (an unknown model is still a 404 at once, as Ollama checks that before loading)."""

        async def fail() -> None:
            await asyncio.sleep(cfg.first_token_delay)
            await self._error(out, rec.path, cfg.status, cfg.fail_with)

        if cfg.first_token_delay:
            await self._run_cancellable(receive, rec, fail)
        else:
            await fail()

    @staticmethod
    def _final_stats(prompt_tokens: int, tokens: int, started: float) -> dict[str, int]:
        total = max(int((time.time() - started) * 1e9), 1)
        return {
            "total_duration": total,
            "load_duration": 1_000_000,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": 2_000_000,
            "eval_count": tokens,
            "eval_duration": max(total - 3_000_000, 1),
        }

    async def _chat(self, cfg: DoubleConfig, body: dict[str, Any], rec: RecordedRequest, **kw: Any) -> None:
        await self._ollama_generation(cfg, body, rec, kind="chat", **kw)

    async def _generate(self, cfg: DoubleConfig, body: dict[str, Any], rec: RecordedRequest, **kw: Any) -> None:
        await self._ollama_generation(cfg, body, rec, kind="generate", **kw)

    async def _start_generation(
        self, cfg: DoubleConfig, body: dict[str, Any], rec: RecordedRequest, receive: Receive, out: _Responder
    ) -> str | None:
        """The model, once the request may generate; None when it was answered (unknown model, injected status)."""
        model = await self._model_or_error(body, out, rec.path)
        if model is not None and cfg.status != 200:
            await self._failed_generation(cfg, rec, receive, out)
            return None
        return model

    async def _scheduled(
        self,
        job: _Job,
        rec: RecordedRequest,
        receive: Receive,
        out: _Responder,
        produce: Callable[[], Awaitable[None]],
        *,
        slot: bool = True,
        instant: bool = False,
    ) -> None:
        """Run `produce` once the scheduler has given the request its model and, with `slot`, one of the model's
        slots; Ollama's 503 when the scheduler's queue is full. The connection is watched throughout (a client that
        leaves gives up its place), except for an `instant` answer that can start at once (the benchmark's path)."""
        scheduler = self.state.scheduler

        async def run() -> None:
            try:
                async with scheduler.use(job.model, job.keep_alive, slot=slot):
                    await produce()
            except ServerBusy as exc:
                await self._error(out, rec.path, 503, str(exc))

        if instant and slot and scheduler.ready(job.model):
            await run()
        else:
            await self._run_cancellable(receive, rec, run)

    async def _whole(
        self,
        cfg: DoubleConfig,
        rec: RecordedRequest,
        receive: Receive,
        out: _Responder,
        count: int,
        answer,
        job: _Job,
    ) -> None:
        """A non-streamed answer: after the time all tokens take, `answer()`'s object (or the injected failure)."""

        async def whole() -> None:
            await asyncio.sleep(cfg.first_token_delay + cfg.token_delay * max(count - 1, 0))
            if cfg.error_after_tokens is not None:
                await self._error(out, rec.path, 500, cfg.fail_with)
            else:
                await out.json(200, answer())

        instant = not (cfg.first_token_delay or cfg.token_delay)
        await self._scheduled(job, rec, receive, out, whole, instant=instant)

    async def _stream(
        self,
        cfg: DoubleConfig,
        rec: RecordedRequest,
        receive: Receive,
        out: _Responder,
        ctype,
        plan: Plan,
        emit,
        job: _Job,
    ) -> None:
        """A streamed answer: `emit(kind, piece)` frames each piece ("thinking", "content", "tool_calls", "done");
        `emit("error", message)` the failure that error_after_tokens injects after that many content pieces."""

        async def chunks() -> None:
            await asyncio.sleep(cfg.first_token_delay)
            await out.start(200, ctype)
            if plan.thinking:
                await out.body(emit("thinking", plan.thinking))
            for i, piece in enumerate(plan.pieces):
                if cfg.error_after_tokens is not None and i >= cfg.error_after_tokens:
                    await out.body(emit("error", cfg.fail_with), last=True)
                    return
                if i:
                    await asyncio.sleep(cfg.token_delay)
                await out.body(emit("content", piece))
                rec.chunks_sent += 1
            if cfg.error_after_tokens is not None:  # error_after_tokens >= the pieces: every one, then the error
                await out.body(emit("error", cfg.fail_with), last=True)
                return
            if plan.tool_calls:
                await out.body(emit("tool_calls", plan.tool_calls))
            await out.body(emit("done", None), last=True)

        await self._scheduled(job, rec, receive, out, chunks)

    def _plan(self, cfg: DoubleConfig, body: dict[str, Any], requested: Any, prompt: str) -> Plan:
        count, reason = self._limit(cfg, requested)
        think = body.get("think")
        thinking = cfg.thinking if think not in (None, False) else None
        tools = body.get("tools")
        fmt = body.get("format")
        if tools and cfg.tool_calls:
            return Plan([], count, "stop", thinking, _native_tool_calls(cfg.tool_calls), len(prompt.split()))
        if isinstance(fmt, dict) or fmt == "json":
            # Structured output: one JSON document that follows the schema (or any JSON object for "json").
            text = json.dumps(_instance(fmt) if isinstance(fmt, dict) else {"text": expected_text(count)})
            return Plan([text], count, reason, thinking, None, len(prompt.split()))
        return Plan([token_text(i) for i in range(count)], count, reason, thinking, None, len(prompt.split()))

    async def _ollama_generation(
        self,
        cfg: DoubleConfig,
        body: dict[str, Any],
        rec: RecordedRequest,
        kind: str,
        receive: Receive,
        out: _Responder,
    ) -> None:
        model = await self._start_generation(cfg, body, rec, receive, out)
        if model is None:
            return
        stream = body.get("stream", True) is not False  # Ollama's default is to stream
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        if kind == "chat":
            messages = body.get("messages") if isinstance(body.get("messages"), list) else []
            prompt = " ".join(str((m or {}).get("content") or "") for m in messages)
            load_only = not messages
        else:
            prompt = str(body.get("prompt") or "")
            load_only = not prompt
        plan = self._plan(cfg, body, options.get("num_predict"), prompt)
        logprobs = body.get("logprobs") is True
        top = body.get("top_logprobs") if isinstance(body.get("top_logprobs"), int) else 0
        started = time.time()

        def piece(text: str, done: bool, thinking: str | None = None, tool_calls=None) -> dict[str, Any]:
            obj: dict[str, Any] = {"model": model, "created_at": _now_rfc3339()}
            if kind == "chat":
                # The official client requires `message` on every chat chunk, the final one included.
                obj["message"] = {"role": "assistant", "content": text}
                if thinking:
                    obj["message"]["thinking"] = thinking
                if tool_calls:
                    obj["message"]["tool_calls"] = tool_calls
            else:
                obj["response"] = text
                if thinking:
                    obj["thinking"] = thinking
            obj["done"] = done
            return obj

        def final(text: str, thinking: str | None = None, tool_calls=None, pieces=()) -> dict[str, Any]:
            obj = piece(text, True, thinking, tool_calls)
            obj["done_reason"] = plan.reason
            if kind == "generate":
                obj["context"] = [1, 2, 3]
            if logprobs and pieces:
                obj["logprobs"] = [_logprob(p, top) for p in pieces]
            obj.update(self._final_stats(plan.prompt_tokens, plan.count, started))  # Metrics last, as in Go
            return obj

        job = _Job.of(model, body)
        if load_only and ollama_types.unloads(body):
            # keep_alive 0 and nothing to generate: unload the model, without scheduling (server/routes.go).
            self.state.scheduler.expire(model)
            obj = piece("", True)
            obj["done_reason"] = "unload"
            await out.json(200, obj)
            return
        if load_only:
            # An empty chat / prompt only loads the model: one object, done_reason "load" (docs/api.md).
            obj = piece("", True)
            obj["done_reason"] = "load"
            await self._scheduled(job, rec, receive, out, lambda: out.json(200, obj), slot=False)
            return
        if not stream:
            text = "".join(plan.pieces)
            await self._whole(
                cfg,
                rec,
                receive,
                out,
                plan.count,
                lambda: final(text, plan.thinking, plan.tool_calls, plan.pieces),
                job,
            )
            return

        def emit(what: str, value: Any) -> bytes:
            if what == "error":
                return _dumps({"error": value})
            if what == "done":
                return _dumps(final(""))
            if what == "thinking":
                return _dumps(piece("", False, thinking=value))
            if what == "tool_calls":
                return _dumps(piece("", False, tool_calls=value))
            obj = piece(value, False)
            if logprobs:
                obj["logprobs"] = [_logprob(value, top)]
            return _dumps(obj)

        await self._stream(cfg, rec, receive, out, _NDJSON, plan, emit, job)

    async def _openai_chat(
        self, cfg: DoubleConfig, body: dict[str, Any], rec: RecordedRequest, receive: Receive, out: _Responder
    ) -> None:
        model = await self._start_generation(cfg, body, rec, receive, out)
        if model is None:
            return
        messages = body["messages"]  # ollama_types.check: a non-empty list
        prompt = " ".join(m["content"] for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))
        # Ollama reads max_tokens only (openai.ChatCompletionRequest has no max_completion_tokens).
        plan = self._plan(cfg, _openai_to_native(body), body.get("max_tokens"), prompt)
        logprobs = body.get("logprobs") is True
        top = body.get("top_logprobs") if isinstance(body.get("top_logprobs"), int) else 0
        created = int(time.time())
        cid = f"chatcmpl-{rec.started_at * 1e6:.0f}"
        calls = _openai_tool_calls(plan.tool_calls) if plan.tool_calls else None
        finish = "tool_calls" if calls else plan.reason  # openai/openai.go ToChatCompletion
        usage = plan.usage()

        def frame(choices: list, with_usage: bool = False) -> dict[str, Any]:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
            obj.update(system_fingerprint="fp_ollama", choices=choices)
            if with_usage:
                obj["usage"] = usage
            return obj

        if not body.get("stream"):  # OpenAI's default is not to stream

            def answer() -> dict[str, Any]:
                message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.pieces)}
                if plan.thinking:
                    message["reasoning"] = plan.thinking
                if calls:
                    message["tool_calls"] = calls
                choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
                if logprobs:
                    choice["logprobs"] = {"content": [_logprob(p, top) for p in plan.pieces]}
                obj = {"id": cid, "object": "chat.completion", "created": created, "model": model}
                obj.update(system_fingerprint="fp_ollama", choices=[choice], usage=usage)
                return obj

            await self._whole(cfg, rec, receive, out, plan.count, answer, _Job(model))
            return

        include_usage = isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage")

        def emit(what: str, value: Any) -> bytes:
            if what == "error":
                # Real Ollama writes this object without the SSE "data: " prefix (openai middleware writeError);
                # as an SSE event the official openai client raises APIError instead of silently stopping.
                return _sse({"error": {"message": value, "type": "api_error", "param": None, "code": None}})
            if what == "done":
                tail = _sse(
                    frame([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": finish}])
                )
                if include_usage:
                    tail += _sse(frame([], with_usage=True))
                return tail + b"data: [DONE]\n\n"
            delta: dict[str, Any] = {"role": "assistant", "content": ""}
            if what == "thinking":
                delta["reasoning"] = value
            elif what == "tool_calls":
                delta["tool_calls"] = _openai_tool_calls(value)
            else:
                delta["content"] = value
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
            if logprobs and what == "content":
                choice["logprobs"] = {"content": [_logprob(value, top)]}
            return _sse(frame([choice]))

        await self._stream(cfg, rec, receive, out, _SSE, plan, emit, _Job(model))

    async def _openai_completion(
        self, cfg: DoubleConfig, body: dict[str, Any], rec: RecordedRequest, receive: Receive, out: _Responder
    ) -> None:
        # openai/openai.go CompletionRequest -> /api/generate, answered as text_completion objects.
        model = await self._start_generation(cfg, body, rec, receive, out)
        if model is None:
            return
        plan = self._plan(cfg, {}, body.get("max_tokens"), str(body.get("prompt") or ""))
        created = int(time.time())
        cid = f"cmpl-{rec.started_at * 1e6:.0f}"
        usage = plan.usage()

        def obj(text: str, finish: str | None) -> dict[str, Any]:
            return {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_ollama",
                "choices": [{"text": text, "index": 0, "finish_reason": finish}],
            }

        if not body.get("stream"):
            await self._whole(
                cfg,
                rec,
                receive,
                out,
                plan.count,
                lambda: {**obj("".join(plan.pieces), plan.reason), "usage": usage},
                _Job(model),
            )
            return
        include_usage = isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage")
        zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

        def emit(what: str, value: Any) -> bytes:
            if what == "error":
                return _sse({"error": {"message": value, "type": "api_error", "param": None, "code": None}})
            chunk = obj(value if what == "content" else "", plan.reason if what == "done" else None)
            if include_usage:  # middleware/openai.go CompleteWriter: every chunk carries an empty usage
                chunk["usage"] = zero
            out_bytes = _sse(chunk)
            if what == "done":
                if include_usage:
                    out_bytes += _sse({**obj("", None), "choices": [], "usage": usage})
                out_bytes += b"data: [DONE]\n\n"
            return out_bytes

        await self._stream(cfg, rec, receive, out, _SSE, plan, emit, _Job(model))

    async def _responses(
        self, cfg: DoubleConfig, body: dict[str, Any], rec: RecordedRequest, receive: Receive, out: _Responder
    ) -> None:
        # The stateless Responses API (openai/responses.go, middleware/openai.go ResponsesWriter, Ollama >= 0.13.3).
        model = await self._start_generation(cfg, body, rec, receive, out)
        if model is None:
            return
        given = body.get("input")
        prompt = given if isinstance(given, str) else " ".join(str((i or {}).get("content") or "") for i in given or [])
        native = {"tools": body.get("tools"), "think": (body.get("reasoning") or {}).get("effort")}
        if native["think"] == "none":
            native["think"] = None
        schema = ((body.get("text") or {}).get("format") or {}).get("schema")
        if isinstance(schema, dict):
            native["format"] = schema
        plan = self._plan(cfg, native, body.get("max_output_tokens"), prompt)
        rid, item_id = f"resp_{rec.started_at * 1e6:.0f}", f"msg_{rec.started_at * 1e6:.0f}"
        text = "".join(plan.pieces)

        def response(status: str, output: list, usage: dict | None) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "response",
                "created_at": int(rec.started_at),
                "completed_at": int(time.time()) if status == "completed" else None,
                "status": status,
                "incomplete_details": None,
                "model": model,
                "previous_response_id": None,
                "instructions": body.get("instructions"),
                "output": output,
                "error": None,
                "tools": body.get("tools") or [],
                "tool_choice": "auto",
                "truncation": "disabled",
                "parallel_tool_calls": True,
                "text": {"format": (body.get("text") or {}).get("format") or {"type": "text"}},
                "top_p": body.get("top_p") if body.get("top_p") is not None else 1.0,
                "temperature": body.get("temperature") if body.get("temperature") is not None else 1.0,
                "reasoning": body.get("reasoning"),
                "usage": usage,
                "max_output_tokens": body.get("max_output_tokens"),
                "store": False,
                "background": False,
                "service_tier": "default",
                "metadata": {},
            }

        usage = {
            "input_tokens": plan.prompt_tokens,
            "output_tokens": plan.count,
            "total_tokens": plan.prompt_tokens + plan.count,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        message = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
        reasoning = None
        if plan.thinking:
            summary = [{"type": "summary_text", "text": plan.thinking}]
            reasoning = {"id": f"rs_{rid}", "type": "reasoning", "summary": summary, "encrypted_content": plan.thinking}
        calls = [
            {
                "id": f"fc_{rid}_{i}",
                "type": "function_call",
                "status": "completed",
                "call_id": call["id"],
                "name": call["function"]["name"],
                "arguments": json.dumps(call["function"]["arguments"], separators=(",", ":")),
            }
            for i, call in enumerate(plan.tool_calls or [])
        ]
        output = ([reasoning] if reasoning else []) + (calls or [message])
        if not body.get("stream"):
            await self._whole(
                cfg, rec, receive, out, plan.count, lambda: response("completed", output, usage), _Job(model)
            )
            return
        seq = iter(range(1_000_000))

        def event(kind: str, **data: Any) -> bytes:
            payload = {"type": kind, "sequence_number": next(seq), **data}
            return f"event: {kind}\ndata: ".encode() + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

        index = 1 if reasoning else 0

        def emit(what: str, value: Any) -> bytes:
            if what == "error":
                return event("error", code="api_error", message=value, param=None)
            if what == "thinking":
                start = event("response.created", response=response("in_progress", [], None))
                start += event("response.in_progress", response=response("in_progress", [], None))
                start += event("response.output_item.added", output_index=0, item={**reasoning, "summary": []})
                start += event(
                    "response.reasoning_summary_text.delta",
                    item_id=reasoning["id"],
                    output_index=0,
                    summary_index=0,
                    delta=value,
                )
                start += event(
                    "response.reasoning_summary_text.done",
                    item_id=reasoning["id"],
                    output_index=0,
                    summary_index=0,
                    text=value,
                )
                return start + event("response.output_item.done", output_index=0, item=reasoning)
            opening = b""
            if not emit.started:
                emit.started = True
                if not reasoning:
                    opening += event("response.created", response=response("in_progress", [], None))
                    opening += event("response.in_progress", response=response("in_progress", [], None))
                if what == "content":
                    added = {**message, "status": "in_progress", "content": []}
                    opening += event("response.output_item.added", output_index=index, item=added)
                    opening += event(
                        "response.content_part.added",
                        item_id=item_id,
                        output_index=index,
                        content_index=0,
                        part={**part, "text": ""},
                    )
            if what == "content":
                return opening + event(
                    "response.output_text.delta",
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    delta=value,
                    logprobs=[],
                )
            if what == "tool_calls":
                for i, call in enumerate(calls):
                    opening += event(
                        "response.output_item.added",
                        output_index=index + i,
                        item={**call, "status": "in_progress", "arguments": ""},
                    )
                    opening += event(
                        "response.function_call_arguments.delta",
                        item_id=call["id"],
                        output_index=index + i,
                        delta=call["arguments"],
                    )
                    opening += event(
                        "response.function_call_arguments.done",
                        item_id=call["id"],
                        output_index=index + i,
                        arguments=call["arguments"],
                    )
                    opening += event("response.output_item.done", output_index=index + i, item=call)
                return opening
            if not calls:  # done
                opening += event(
                    "response.output_text.done",
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                )
                opening += event(
                    "response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part
                )
                opening += event("response.output_item.done", output_index=index, item=message)
            return opening + event("response.completed", response=response("completed", output, usage))

        emit.started = False
        await self._stream(cfg, rec, receive, out, _SSE, plan, emit, _Job(model))

    async def _anthropic_messages(
        self, cfg: DoubleConfig, body: dict[str, Any], rec: RecordedRequest, receive: Receive, out: _Responder
    ) -> None:
        # Ollama's Anthropic layer (anthropic/anthropic.go ToMessagesResponse, StreamConverter).
        model = await self._start_generation(cfg, body, rec, receive, out)
        if model is None:
            return
        texts = []
        for message in body["messages"]:
            content = message.get("content")
            texts += [content] if isinstance(content, str) else [b.get("text") or "" for b in content or [] if b]
        thinking = body.get("thinking") or {}
        native = {"tools": body.get("tools"), "think": True if thinking.get("type") == "enabled" else None}
        plan = self._plan(cfg, native, body["max_tokens"], " ".join(texts))
        mid = f"msg_{rec.started_at * 1e6:.0f}"
        stop = (
            "tool_use"
            if plan.tool_calls
            else {"stop": "end_turn", "length": "max_tokens"}.get(plan.reason, "stop_sequence")
        )
        blocks: list[dict[str, Any]] = []
        if plan.thinking:
            blocks.append({"type": "thinking", "thinking": plan.thinking})
        if plan.pieces:
            blocks.append({"type": "text", "text": "".join(plan.pieces)})
        for call in plan.tool_calls or []:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": call["function"]["name"],
                    "input": call["function"]["arguments"],
                }
            )
        usage = {"input_tokens": plan.prompt_tokens, "output_tokens": plan.count}
        head = {"id": mid, "type": "message", "role": "assistant", "model": model}
        if not body.get("stream"):
            await self._whole(
                cfg,
                rec,
                receive,
                out,
                plan.count,
                lambda: {**head, "content": blocks, "stop_reason": stop, "usage": usage},
                _Job(model),
            )
            return

        def event(kind: str, **data: Any) -> bytes:
            return (
                f"event: {kind}\ndata: ".encode()
                + json.dumps({"type": kind, **data}, separators=(",", ":")).encode()
                + b"\n\n"
            )

        state = {"index": 0, "open": None}

        def open_block(kind: str, block: dict[str, Any]) -> bytes:
            data = b""
            if state["open"] not in (None, kind):
                data += event("content_block_stop", index=state["index"])
                state["index"] += 1
            if state["open"] != kind:
                state["open"] = kind
                data += event("content_block_start", index=state["index"], content_block=block)
            return data

        def emit(what: str, value: Any) -> bytes:
            data = (
                b""
                if state.get("started")
                else event("message_start", message={**head, "content": [], "usage": {**usage, "output_tokens": 0}})
            )
            state["started"] = True
            if what == "error":
                return data + event("error", error={"type": "api_error", "message": value})
            if what == "thinking":
                data += open_block("thinking", {"type": "thinking", "thinking": ""})
                return data + event(
                    "content_block_delta", index=state["index"], delta={"type": "thinking_delta", "thinking": value}
                )
            if what == "content":
                data += open_block("text", {"type": "text", "text": ""})
                return data + event(
                    "content_block_delta", index=state["index"], delta={"type": "text_delta", "text": value}
                )
            if what == "tool_calls":
                for call in value:
                    fn = call["function"]
                    data += open_block(
                        "tool_use" + call["id"], {"type": "tool_use", "id": call["id"], "name": fn["name"], "input": {}}
                    )
                    data += event(
                        "content_block_delta",
                        index=state["index"],
                        delta={"type": "input_json_delta", "partial_json": json.dumps(fn["arguments"])},
                    )
                return data
            if state["open"] is not None:
                data += event("content_block_stop", index=state["index"])
            data += event("message_delta", delta={"stop_reason": stop}, usage=usage)
            return data + event("message_stop")

        await self._stream(cfg, rec, receive, out, _SSE, plan, emit, _Job(model))

    # -- embeddings --
    def _vectors(self, cfg: DoubleConfig, texts: list[str], dimensions: Any) -> list[list[float]]:
        size = dimensions if isinstance(dimensions, int) and 0 < dimensions <= cfg.embedding_dimensions else None
        return [embedding_vector(t, size or cfg.embedding_dimensions) for t in texts]

    async def _embedding_answer(
        self,
        cfg: DoubleConfig,
        rec: RecordedRequest,
        receive: Receive,
        out: _Responder,
        answer: dict[str, Any],
        job: _Job,
        embeds: bool = True,
    ) -> None:
        """An embedding answer, after embedding_delay (cancelled when the client leaves first). With nothing to
        embed (`embeds` false) the request only loads the model: it holds no slot (server/routes.go)."""

        async def respond() -> None:
            if cfg.embedding_delay and embeds:
                await asyncio.sleep(cfg.embedding_delay)
            await out.json(200, answer)

        await self._scheduled(job, rec, receive, out, respond, slot=embeds, instant=not cfg.embedding_delay)

    async def _embed(
        self, cfg: DoubleConfig, body: dict[str, Any], rec: RecordedRequest, receive: Receive, out: _Responder
    ) -> None:
        # server/routes.go EmbedHandler: a string or a list of strings; "" or [] embeds nothing.
        model = await self._model_or_error(body, out, rec.path)
        if model is None:
            return
        given = body.get("input")
        texts = [given] if isinstance(given, str) and given else list(given) if isinstance(given, list) else []
        answer = {"model": model, "embeddings": self._vectors(cfg, texts, body.get("dimensions"))}
        answer.update(
            total_duration=2_000_000, load_duration=1_000_000, prompt_eval_count=sum(len(t.split()) for t in texts)
        )
        await self._embedding_answer(cfg, rec, receive, out, answer, _Job.of(model, body), embeds=bool(texts))

    async def _embeddings(
        self, cfg: DoubleConfig, body: dict[str, Any], rec: RecordedRequest, receive: Receive, out: _Responder
    ) -> None:
        # The legacy route: {prompt} -> {embedding}; an empty prompt gets an empty vector.
        model = await self._model_or_error(body, out, rec.path)
        if model is None:
            return
        prompt = body.get("prompt") or ""
        answer = {"embedding": self._vectors(cfg, [prompt], None)[0] if prompt else []}
        await self._embedding_answer(cfg, rec, receive, out, answer, _Job.of(model, body), embeds=bool(prompt))

    async def _openai_embeddings(
        self, cfg: DoubleConfig, body: dict[str, Any], rec: RecordedRequest, receive: Receive, out: _Responder
    ) -> None:
        # middleware/openai.go EmbeddingsMiddleware + openai.ToEmbeddingList.
        model = await self._model_or_error(body, out, rec.path)
        if model is None:
            return
        given = body["input"]
        texts = [given] if isinstance(given, str) else list(given)
        vectors = self._vectors(cfg, texts, body.get("dimensions"))
        as_base64 = ollama_types.fold(body.get("encoding_format") or "") == "BASE64"  # strings.EqualFold
        data = [
            {"object": "embedding", "embedding": _float32_base64(v) if as_base64 else v, "index": i}
            for i, v in enumerate(vectors)
        ]
        tokens = sum(len(t.split()) for t in texts)
        answer = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await self._embedding_answer(cfg, rec, receive, out, answer, _Job(model))

    # -- transcription --
    async def _transcription(self, cfg: DoubleConfig, rec: RecordedRequest, receive: Receive, out: _Responder) -> None:
        """POST /v1/audio/transcriptions as ollama/ollama v0.33 plays it (middleware/openai.go TranscriptionMiddleware
        and TranscriptionWriter over server/routes.go ChatHandler): the form read as Go reads it (go_forms.py), the
        audio and instruction turned into a streamed chat of the model, whose pieces the writer collects; at the end
        it writes {"text": <trimmed transcript>} (json.Encoder: a trailing newline) or, for response_format=text,
        the bare text. Errors before the answer are OpenAI's error objects (BaseWriter.writeError). The double
        transcribes any non-empty file (its tokens are the transcript); it decodes no audio."""
        try:
            form = go_forms.parse(rec.headers.get("content-type"), rec.raw, rec.query)
        except ValueError as exc:
            await self._error(out, rec.path, 400, f"failed to parse multipart form: {exc}")
            return
        if not form.value("model"):
            await self._error(out, rec.path, 400, "model is required")
            return
        try:
            audio = form.file("file")
        except ValueError as exc:
            await self._error(out, rec.path, 400, f"file is required: {exc}")
            return
        if not audio:
            await self._error(out, rec.path, 400, "audio file is empty")
            return
        model = await self._start_generation(cfg, {"model": form.value("model")}, rec, receive, out)
        if model is None:
            return
        plan = self._plan(cfg, {}, None, "What exact words are spoken in this audio?")
        as_text = form.value("response_format") == "text"

        def transcript() -> bytes:
            text = "".join(plan.pieces).strip(ollama_types.GO_SPACE)  # strings.TrimSpace
            return text.encode() if as_text else _dumps({"text": text})

        async def answer() -> None:
            await asyncio.sleep(cfg.first_token_delay)
            if cfg.error_after_tokens == 0:  # the error is the chat's first value: ChatHandler's 500, rewritten
                await self._error(out, rec.path, 500, cfg.fail_with)
                return
            if not plan.pieces:  # the done chunk comes first: the writer sets its own Content-Type before writing
                ctype = b"text/plain" if as_text else b"application/json"
                await out.start(200, [(b"content-type", ctype)])
                await out.body(transcript(), last=True)
                return
            # streamResponse's Content-Type, committed by gin's Flush after the first piece.
            await out.start(200, _NDJSON)
            pieces = len(plan.pieces)
            if cfg.error_after_tokens is not None:
                pieces = min(pieces, cfg.error_after_tokens)
            for i in range(pieces):
                if i:
                    await asyncio.sleep(cfg.token_delay)
                rec.chunks_sent += 1
            if cfg.error_after_tokens is not None:
                # The error reaches the writer after its headers: it reads as a chat chunk that is not done, and the
                # stream ends there, so the answer ends empty (status 200).
                await out.body(b"", last=True)
                return
            await out.body(transcript(), last=True)

        # A chat of the model: it waits for the model and one of its slots like any other generation.
        await self._scheduled(_Job(model), rec, receive, out, answer)

    @staticmethod
    async def _run_cancellable(receive: Receive, rec: RecordedRequest, produce: Callable[[], Awaitable[None]]) -> None:
        """Run ``produce`` while watching the connection; stop it at once when the client goes away.

        uvicorn's ``send`` silently drops writes after a disconnect, so the only reliable signal is the
        ``http.disconnect`` message from ``receive`` (the body was read already; nothing else arrives).
        """

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        producer = asyncio.ensure_future(produce())
        watcher = asyncio.ensure_future(gone())
        try:
            done, _ = await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not producer.done():
                producer.cancel()
                rec.cancelled = not rec.completed
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
            with contextlib.suppress(asyncio.CancelledError):
                await producer
            rec.finished_at = time.time()
        if producer in done and producer.exception() is not None:
            raise producer.exception()  # type: ignore[misc]

    # -- control API --
    async def _control(self, method: str, path: str, raw: bytes, send: Send) -> None:
        out = _Responder(send, None)
        name = path[len(_CONTROL_PREFIX) :]
        try:
            if (method, name) == ("POST", "config"):
                changes = json.loads(raw or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                cfg = self.state.configure(**changes)
                await out.json(200, dataclasses.asdict(cfg))
            elif (method, name) == ("GET", "config"):
                await out.json(200, dataclasses.asdict(self.state.config))
            elif (method, name) == ("POST", "reset"):
                self.state.reset()
                await out.json(200, dataclasses.asdict(self.state.config))
            elif (method, name) == ("GET", "requests"):
                await out.json(200, [r.to_json() for r in self.state.snapshot()])
            else:
                await out.json(404, {"error": f"no control route {method} {path}"})
        except ValueError as exc:  # includes json.JSONDecodeError and bad knob values
            await out.json(400, {"error": str(exc)})


class _Responder:
    """Thin helpers over ASGI ``send`` that keep the record's status / completed / chunk fields right."""

    __slots__ = ("send", "rec")

    def __init__(self, send: Send, rec: RecordedRequest | None) -> None:
        self.send = send
        self.rec = rec

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.rec is not None:
            self.rec.status = status
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, last: bool = False) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": not last})
        if last and self.rec is not None:
            self.rec.completed = True
            self.rec.finished_at = time.time()

    async def json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        await self.start(status, [*_JSON, (b"content-length", str(len(data)).encode())])
        await self.body(data, last=True)

    async def text(self, status: int, text: str) -> None:
        data = text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(data)).encode()),
        ]
        await self.start(status, headers)
        await self.body(data, last=True)


class OllamaDouble:
    """A real HTTP Ollama double on loopback, in a background thread. Use as a context manager.

    ``OllamaDouble(model=..., hosts=["127.0.0.1"], port=0, **knobs)``: port 0 takes an ephemeral port (the same port
    is then used for every further host); `knobs` (:class:`DoubleConfig` names, e.g. ``num_parallel=8``) are the
    double's start-up settings, what :meth:`reset` returns to.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        hosts: list[str] | None = None,
        port: int = 0,
        version: str = DEFAULT_VERSION,
        **knobs: Any,
    ) -> None:
        unknown = set(knobs) - DoubleConfig.keys()
        if unknown:
            raise ValueError(f"unknown double setting(s): {sorted(unknown)}; known: {sorted(DoubleConfig.keys())}")
        self._state = _State(model, version, DoubleConfig(**knobs).validated())
        self.model = model
        self.hosts = hosts or ["127.0.0.1"]
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- lifecycle --
    def start(self) -> OllamaDouble:
        sockets = []
        try:
            for host in self.hosts:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, self.port))
                self.port = sock.getsockname()[1]
                sock.listen(1024)
                sockets.append(sock)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        config = uvicorn.Config(
            _App(self._state),
            lifespan="off",
            http="httptools",
            log_config=None,  # do not reconfigure the host process's logging (pytest, the bench)
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,
            # Ollama's Go http.Server sets no IdleTimeout, so idle keep-alive connections stay open; uvicorn's
            # 5 s default would close pooled connections under a proxy and make reuse races the tests' problem.
            timeout_keep_alive=3600,
            backlog=1024,
        )
        self._server = uvicorn.Server(config)
        started = threading.Event()

        def run() -> None:
            loop = _new_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._server.serve(sockets=sockets))
            except BaseException as exc:  # surfaced by start() / stop()
                self._error = exc
            finally:
                started.set()
                loop.close()

        self._thread = threading.Thread(target=run, name=f"ollama-double:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline and not started.is_set():
            time.sleep(0.005)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"Ollama double failed to start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OllamaDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test API --
    @property
    def url(self) -> str:
        host = self.hosts[0]
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def config(self) -> DoubleConfig:
        return self._state.config

    def configure(self, **changes: Any) -> DoubleConfig:
        """Change knobs (only those given). See :class:`DoubleConfig` for names and defaults."""
        return self._state.configure(**changes)

    def reset(self) -> None:
        """Back to the start-up knobs (the defaults unless given to the constructor), nothing loaded; forget all
        recorded requests."""
        self._state.reset()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Recorded requests in arrival order (a copy of the list; the records themselves are live)."""
        return self._state.snapshot()

    def wait_for(self, predicate: Callable[[RecordedRequest], bool], timeout: float = 2.0) -> RecordedRequest:
        """Poll until a recorded request matches ``predicate``; return the first that does."""
        deadline = time.monotonic() + timeout
        while True:
            for rec in self._state.snapshot():
                if predicate(rec):
                    return rec
            if time.monotonic() >= deadline:
                seen = [(r.method, r.path, r.status, r.completed, r.cancelled) for r in self._state.snapshot()]
                raise TimeoutError(f"no recorded request matched within {timeout}s; seen: {seen}")
            time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.ollama", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434, help="port (default 11434; 0 = ephemeral)")
    parser.add_argument("--host", action="append", help="address to bind; repeat for several (default 127.0.0.1)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"the one pulled model (default {DEFAULT_MODEL})")
    parser.add_argument("--version", default=DEFAULT_VERSION, help="what /api/version reports")
    # Ollama's scheduler settings (tests/fakes/ollama_sched.py), named after its environment variables.
    defaults = DoubleConfig()
    parser.add_argument(
        "--num-parallel", type=int, default=defaults.num_parallel, help="OLLAMA_NUM_PARALLEL (default %(default)s)"
    )
    parser.add_argument(
        "--max-queue", type=int, default=defaults.max_queue, help="OLLAMA_MAX_QUEUE (default %(default)s)"
    )
    parser.add_argument(
        "--max-loaded-models",
        type=int,
        default=defaults.max_loaded_models,
        help="OLLAMA_MAX_LOADED_MODELS (default %(default)s, Ollama's on CPU or one GPU)",
    )
    parser.add_argument(
        "--keep-alive",
        default=defaults.keep_alive,
        help="OLLAMA_KEEP_ALIVE: a duration or seconds (default %(default)s)",
    )
    parser.add_argument(
        "--load-duration", type=float, default=defaults.load_duration, help="seconds a model load takes (default 0)"
    )
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        double = OllamaDouble(
            args.model,
            hosts=args.host or ["127.0.0.1"],
            port=args.port,
            version=args.version,
            num_parallel=args.num_parallel,
            max_queue=args.max_queue,
            max_loaded_models=args.max_loaded_models,
            keep_alive=args.keep_alive,
            load_duration=args.load_duration,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        double.start()
    except OSError as exc:
        print(f"ollama-double: cannot bind {args.host or ['127.0.0.1']}:{args.port}: {exc}", file=sys.stderr)
        return 1
    # The one line the testbed / scripts wait for.
    print(f"ollama-double listening on {double.url} model={args.model}", flush=True)
    for host in double.hosts[1:]:
        print(f"ollama-double also on http://{host}:{double.port}", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
