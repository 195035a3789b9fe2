"""A controllable Ollama double: a real HTTP server speaking Ollama's API (docs/api.md shapes).

Used by the service tests (in-process, :class:`OllamaDouble`), by the testbed and the demo (standalone,
``python -m tests.fakes.ollama --port 11434 --model llama3.2:1b``) and by ``bench/service.py``.
The contract other parts rely on is written down in the README section "Ollama double" and summarised here:

* Generation routes (``/api/chat``, ``/api/generate``, ``/v1/chat/completions``) produce ``token_count``
  deterministic tokens ("tok0", " tok1", ...; see :func:`expected_text`) after ``first_token_delay`` seconds
  (nothing at all, not even the status line, is sent before it: that is how a cold model load looks to a
  proxy) and ``token_delay`` seconds between tokens.
* ``status`` != 200 makes every ``/api/*`` and ``/v1/*`` route answer that status with Ollama's error body
  (generation routes only after ``first_token_delay``, like a model that fails to load);
  ``error_after_tokens=N`` streams N tokens then ends the stream with an error line (status stays 200).
* Every request except ``/_double/*`` is recorded (:class:`RecordedRequest`), including whether its client
  went away before the response was complete (``cancelled``): the connection is watched while waiting and
  streaming.

Implementation: a bare ASGI callable (no framework, so the "direct" run of the benchmark measures
Ollama-shaped HTTP, not the double's overhead) served by uvicorn (httptools, uvloop when present) on
pre-bound sockets, in a background thread with its own event loop. Only the venv's packages are needed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import uvicorn

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
_GENERATION_PATHS = frozenset({"/api/chat", "/api/generate", "/v1/chat/completions"})
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
    fail_with: str = "upstream failure injected by the double"

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
            "fail_with": (str,),
        }
        for name, types in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, types):
                raise ValueError(f"{name}: {value!r} is not {'/'.join(t.__name__ for t in types)}")
        if self.first_token_delay < 0 or self.token_delay < 0 or self.token_count < 0:
            raise ValueError("delays and token_count must be >= 0")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status: {self.status} is not an HTTP status")
        if not all(isinstance(m, str) and m for m in self.models):
            raise ValueError("models: every entry must be a non-empty string")
        return self


@dataclasses.dataclass
class RecordedRequest:
    """What reached the double. Times are ``time.time()`` (epoch seconds, comparable across processes)."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: Any  # parsed JSON, or None (no body / not JSON)
    started_at: float
    finished_at: float | None = None
    cancelled: bool = False  # the client closed the connection before the response was complete
    completed: bool = False  # the response was sent to the end
    chunks_sent: int = 0  # token chunks written (streaming); 0 for non-streamed answers
    status: int | None = None  # the status code sent (None while nothing was sent)
    query: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


class _State:
    """Config and records, shared between the server thread and the test thread."""

    def __init__(self, model: str, version: str) -> None:
        self.default_model = model
        self.version = version
        self.config = DoubleConfig()
        self.records: collections.deque[RecordedRequest] = collections.deque(maxlen=MAX_RECORDS)
        self.lock = threading.Lock()

    def configure(self, **changes: Any) -> DoubleConfig:
        unknown = set(changes) - DoubleConfig.keys()
        if unknown:
            raise ValueError(f"unknown double setting(s): {sorted(unknown)}; known: {sorted(DoubleConfig.keys())}")
        with self.lock:
            # Replace the object wholesale: a request in flight keeps the snapshot it started with.
            self.config = dataclasses.replace(self.config, **changes).validated()
            return self.config

    def reset(self) -> None:
        with self.lock:
            self.config = DoubleConfig()
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


def _tag_entry(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-01-01T00:00:00.000000000Z",
        "size": 1_321_098_329,
        "digest": _digest(name),
        "details": _details(name),
    }


class _App:
    """The ASGI application. One instance per double; state is shared with the controlling thread."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.routes: dict[tuple[str, str], Callable[..., Awaitable[None]]] = {
            ("GET", "/"): self._root,
            ("HEAD", "/"): self._root,
            ("GET", "/api/version"): self._version,
            ("GET", "/api/tags"): self._tags,
            ("GET", "/api/ps"): self._ps,
            ("POST", "/api/show"): self._show,
            ("POST", "/api/chat"): self._chat,
            ("POST", "/api/generate"): self._generate,
            ("POST", "/v1/chat/completions"): self._openai_chat,
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
                body = json.loads(raw)
            except ValueError:
                body = None
        rec = RecordedRequest(
            method=method,
            path=path,
            headers=headers,
            body=body,
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
        handler = self.routes.get((method, path))
        management = (method, path) in _MANAGEMENT_ROUTES or path.startswith("/api/blobs/")
        if handler is None and not management:
            if any(p == path for _, p in self.routes) or any(p == path for _, p in _MANAGEMENT_ROUTES):
                await out.text(405, "405 method not allowed")
            else:
                await out.text(404, "404 page not found")  # what Ollama's gin router answers
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
        if path.startswith("/v1/"):
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
        return model

    # -- simple routes --
    async def _root(self, out: _Responder, **_: Any) -> None:
        await out.text(200, "Ollama is running")

    async def _version(self, out: _Responder, **_: Any) -> None:
        await out.json(200, {"version": self.state.version})

    async def _tags(self, out: _Responder, **_: Any) -> None:
        await out.json(200, {"models": [_tag_entry(m) for m in self.state.models()]})

    async def _ps(self, out: _Responder, **_: Any) -> None:
        # Every "pulled" model is reported as loaded, with a keep-alive expiry 5 minutes ahead.
        expires = datetime.fromtimestamp(time.time() + 300, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        models = []
        for m in self.state.models():
            entry = _tag_entry(m)
            del entry["modified_at"]
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

    async def _management(self, method: str, path: str, body: Any, out: _Responder) -> None:
        # Present so a test can prove the service never forwards them; they change nothing here.
        if path in ("/api/copy", "/api/delete") or path.startswith("/api/blobs/"):
            await out.json(200 if method != "POST" or path == "/api/copy" else 201, {})
        else:
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

    async def _ollama_generation(
        self,
        cfg: DoubleConfig,
        body: dict[str, Any],
        rec: RecordedRequest,
        kind: str,
        receive: Receive,
        out: _Responder,
    ) -> None:
        path = rec.path
        model = await self._model_or_error(body, out, path)
        if model is None:
            return
        if cfg.status != 200:
            await self._failed_generation(cfg, rec, receive, out)
            return
        stream = body.get("stream", True) is not False  # Ollama's default is to stream
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        count, reason = self._limit(cfg, options.get("num_predict"))
        if kind == "chat":
            messages = body.get("messages") if isinstance(body.get("messages"), list) else []
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
            load_only = not messages
        else:
            prompt = body.get("prompt")
            prompt_tokens = len(str(prompt or "").split())
            load_only = not prompt
        started = time.time()

        def piece(text: str, done: bool) -> dict[str, Any]:
            obj: dict[str, Any] = {"model": model, "created_at": _now_rfc3339()}
            if kind == "chat":
                # The official client requires `message` on every chat chunk, the final one included.
                obj["message"] = {"role": "assistant", "content": text}
            else:
                obj["response"] = text
            obj["done"] = done
            return obj

        def final(text: str, tokens: int, why: str) -> dict[str, Any]:
            obj = piece(text, True)
            obj["done_reason"] = why
            if kind == "generate":
                obj["context"] = [1, 2, 3]
            obj.update(self._final_stats(prompt_tokens, tokens, started))
            return obj

        if load_only:
            # An empty chat / prompt only loads the model: one object, done_reason "load" (docs/api.md).
            obj = piece("", True)
            obj["done_reason"] = "load"
            await self._run_cancellable(receive, rec, lambda: out.json(200, obj))
            return

        fail_at = cfg.error_after_tokens
        if not stream:

            async def whole() -> None:
                await asyncio.sleep(cfg.first_token_delay + cfg.token_delay * max(count - 1, 0))
                if fail_at is not None:
                    await out.json(500, {"error": cfg.fail_with})
                else:
                    await out.json(200, final(expected_text(count), count, reason))

            if cfg.first_token_delay or cfg.token_delay:
                await self._run_cancellable(receive, rec, whole)
            else:
                await whole()  # fast path (benchmark): no disconnect watcher needed for an instant answer
            return

        async def chunks() -> None:
            await asyncio.sleep(cfg.first_token_delay)
            await out.start(200, _NDJSON)
            for i in range(count):
                if fail_at is not None and i >= fail_at:
                    await out.body(_dumps({"error": cfg.fail_with}), last=True)
                    return
                if i:
                    await asyncio.sleep(cfg.token_delay)
                await out.body(_dumps(piece(token_text(i), False)))
                rec.chunks_sent += 1
            if fail_at is not None:  # error_after_tokens >= token_count: every token, then the error
                await out.body(_dumps({"error": cfg.fail_with}), last=True)
                return
            await out.body(_dumps(final("", count, reason)), last=True)

        await self._run_cancellable(receive, rec, chunks)

    async def _openai_chat(
        self, cfg: DoubleConfig, body: dict[str, Any], rec: RecordedRequest, receive: Receive, out: _Responder
    ) -> None:
        model = await self._model_or_error(body, out, rec.path)
        if model is None:
            return
        if cfg.status != 200:
            await self._failed_generation(cfg, rec, receive, out)
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            await self._error(out, rec.path, 400, "invalid message format")
            return
        stream = body.get("stream") is True  # OpenAI's default is not to stream
        count, reason = self._limit(cfg, body.get("max_completion_tokens", body.get("max_tokens")))
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
        created = int(time.time())
        cid = f"chatcmpl-{rec.started_at * 1e6:.0f}"
        fail_at = cfg.error_after_tokens
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": count,
            "total_tokens": prompt_tokens + count,
        }

        if not stream:

            async def whole() -> None:
                await asyncio.sleep(cfg.first_token_delay + cfg.token_delay * max(count - 1, 0))
                if fail_at is not None:
                    await self._error(out, rec.path, 500, cfg.fail_with)
                    return
                await out.json(
                    200,
                    {
                        "id": cid,
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "system_fingerprint": "fp_ollama",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": expected_text(count)},
                                "finish_reason": reason,
                            }
                        ],
                        "usage": usage,
                    },
                )

            if cfg.first_token_delay or cfg.token_delay:
                await self._run_cancellable(receive, rec, whole)
            else:
                await whole()
            return

        def chunk(content: str, finish: str | None) -> bytes:
            obj = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

        def error_event() -> bytes:
            # Real Ollama writes this object without the SSE "data: " prefix (openai middleware writeError);
            # as an SSE event the official openai client raises APIError instead of silently stopping.
            err = {"error": {"message": cfg.fail_with, "type": "api_error", "param": None, "code": None}}
            return b"data: " + json.dumps(err, separators=(",", ":")).encode() + b"\n\n"

        include_usage = isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage")

        async def events() -> None:
            await asyncio.sleep(cfg.first_token_delay)
            await out.start(200, _SSE)
            for i in range(count):
                if fail_at is not None and i >= fail_at:
                    await out.body(error_event(), last=True)
                    return
                if i:
                    await asyncio.sleep(cfg.token_delay)
                await out.body(chunk(token_text(i), None))
                rec.chunks_sent += 1
            if fail_at is not None:
                await out.body(error_event(), last=True)
                return
            tail = chunk("", reason)
            if include_usage:
                usage_obj = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_ollama",
                    "choices": [],
                    "usage": usage,
                }
                tail += b"data: " + json.dumps(usage_obj, separators=(",", ":")).encode() + b"\n\n"
            await out.body(tail + b"data: [DONE]\n\n", last=True)

        await self._run_cancellable(receive, rec, events)

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

    ``OllamaDouble(model=..., hosts=["127.0.0.1"], port=0)``: port 0 takes an ephemeral port (the same port is
    then used for every further host).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        hosts: list[str] | None = None,
        port: int = 0,
        version: str = DEFAULT_VERSION,
    ) -> None:
        self._state = _State(model, version)
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
        """Back to default knobs; forget all recorded requests."""
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
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    double = OllamaDouble(args.model, hosts=args.host or ["127.0.0.1"], port=args.port, version=args.version)
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
