"""Talking to Ollama: requests over the pooled session, error mapping, and the gated (streaming) generation response.

Bodies are forwarded as the client sent them (the routes only peek at `model` and `stream`), and only a minimal
fixed set of headers goes upstream (http_client.py): never the browser's Origin (Ollama refuses origins outside
OLLAMA_ORIGINS), never the Access JWT, cookies or authorization.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from starlette.responses import Response

from . import http_client, tokens
from .config import Settings, normalize_model
from .errors import error_body, error_chunk, error_response, is_openai
from .limits import ConcurrencyGate, QueueFull
from .metrics import Metrics

# Streams must reach the client chunk by chunk: nginx honours X-Accel-Buffering, cloudflared flushes
# text/event-stream and (since 2025.4.1) application/x-ndjson and responses without Content-Length.
STREAM_HEADERS = [(b"x-accel-buffering", b"no"), (b"cache-control", b"no-cache")]


class UpstreamError(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def upstream_message(content: bytes) -> str:
    """The error text inside an Ollama ({"error": "..."}) or OpenAI-style ({"error": {"message"}}) body."""
    try:
        err = json.loads(content).get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict):
        err = err.get("message")
    if isinstance(err, str) and err:
        return err
    return content[:300].decode("utf-8", "replace") or "empty response"


@dataclass(slots=True)
class Reply:
    """A whole upstream answer (read to the end, its connection already back in the pool)."""

    status_code: int
    content_type: str | None
    content: bytes

    def json(self):
        return json.loads(self.content)


class Upstream:
    """Calls to Ollama over the app's one pooled session (http_client.py), and their error mapping."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.base_url = settings.ollama_base_url
        self.settings = settings
        self.metrics = metrics
        self.client: http_client.OllamaClient | None = None  # set by start() in the lifespan
        self._token_children: dict[tuple[str, str], tuple] = {}

    def count_tokens(self, model: str, route: str, usage: tokens.Usage) -> None:
        children = self._token_children.get((model, route))
        if children is None:  # labels() takes a lock and builds a tuple: resolve once per (model, route)
            m = self.metrics
            children = tuple(
                c.labels(model, route) for c in (m.prompt_tokens, m.completion_tokens, m.tokens_per_second)
            )
            self._token_children[(model, route)] = children  # bounded: served models x routes
        if usage.prompt:
            children[0].inc(usage.prompt)
        if usage.completion:
            children[1].inc(usage.completion)
            if usage.eval_seconds:
                children[2].observe(usage.completion / usage.eval_seconds)

    def start(self, session: aiohttp.ClientSession) -> None:
        self.client = http_client.OllamaClient(session, self.settings)

    def map_exception(self, exc: aiohttp.ClientError) -> UpstreamError:
        s = self.settings
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            reason = f"connect timed out after {s.ollama_connect_timeout:g} s"
            return UpstreamError(503, f"cannot reach Ollama at {self.base_url}: {reason}", "connect")
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = exc.strerror or str(exc)
            return UpstreamError(503, f"cannot reach Ollama at {self.base_url}: {reason}", "connect")
        if isinstance(exc, aiohttp.SocketTimeoutError):
            message = f"Ollama at {self.base_url} timed out: no data within the read timeout"
            return UpstreamError(504, message, "timeout")
        message = f"error talking to Ollama at {self.base_url}: {exc or type(exc).__name__}"
        return UpstreamError(502, message, "protocol")

    async def request(
        self, method: str, path: str, body: bytes | None = None, read_timeout: float | None = None
    ) -> Reply:
        """A whole (non-streamed) exchange; 5xx and transport errors become UpstreamError."""
        assert self.client is not None
        resp = None
        try:
            resp = await self.client.send(method, path, body, read_timeout=read_timeout)
            reply = Reply(resp.status, resp.headers.get("content-type"), await resp.read())
        except aiohttp.ClientError as exc:
            err = self.map_exception(exc)
            self.metrics.upstream_errors.labels(err.kind).inc()
            raise err from None
        finally:
            if resp is not None:
                resp.close()  # a no-op once read to the end; otherwise (cancelled, failed) it closes the connection
        if reply.status_code >= 500:
            self.metrics.upstream_errors.labels("status_5xx").inc()
            raise UpstreamError(502, f"Ollama answered {reply.status_code}: {upstream_message(reply.content)}", "5xx")
        return reply

    def error(self, path: str, err: UpstreamError) -> Response:
        return error_response(path, err.status, err.message, code=err.kind)


def passthrough(reply: Reply, path: str | None = None) -> Response:
    """Ollama's answer as it came; with `path`, a 4xx that is not JSON is put into the family's error format."""
    if path is not None and 400 <= reply.status_code < 500:
        content, ctype = client_error(path, reply.status_code, reply.content, reply.content_type)
        return Response(content, status_code=reply.status_code, media_type=ctype)
    return Response(reply.content, status_code=reply.status_code, media_type=reply.content_type)


def client_error(path: str, status: int, content: bytes, ctype: str | None) -> tuple[bytes, str]:
    """An upstream 4xx for the client: Ollama's JSON error as it is (each /v1 layer already writes its family's
    format); anything else in the family's format. That is gin's plain-text "404 page not found" when this Ollama
    has no such route, e.g. /v1/responses before v0.13.3 (ollama/ollama#13595) or /v1/messages before the Anthropic
    layer existed, so the openai and anthropic clients raise their NotFoundError instead of failing to parse."""
    if ctype and ctype.startswith("application/json"):
        return content, ctype
    text = content[:300].decode("utf-8", "replace").strip() or "empty response"
    message = f"Ollama answered {status} for {path}: {text}"
    if status == 404:
        message += f"; this Ollama does not serve {path}: upgrade Ollama on the host"
    return error_body(path, status, message), "application/json"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def early_chunk(path: str, model: str) -> bytes:
    """A first chunk that every client parses and that carries no content.

    Ollama chat chunks must have a `message` (the ollama client's model requires it), generate chunks a
    `response`; on /v1 (OpenAI, Responses, Anthropic streams are all SSE) a comment line, which SSE parsers (the
    openai and anthropic clients included) skip by definition (https://html.spec.whatwg.org/multipage/server-sent-events.html).
    """
    if path == "/api/chat":
        obj = {"model": model, "created_at": _now_iso(), "message": {"role": "assistant", "content": ""}, "done": False}
    elif path == "/api/generate":
        obj = {"model": model, "created_at": _now_iso(), "response": "", "done": False}
    else:
        return b": waiting for the model\n\n"
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class Forward:
    """A load-carrying route (generation or embedding): its path, whether it streams when `stream` is omitted
    (None: it never streams), the models it serves and the gate that admits it."""

    path: str
    stream_default: bool | None
    models: frozenset[str]
    gate: ConcurrencyGate


class Generation(Response):
    """ASGI response for the load-carrying routes (Forward): chat, generate, the /v1 generations, embeddings.

    It holds a slot of the route's gate for the whole upstream exchange, watches for the client leaving (then the
    upstream request is closed at once, which makes Ollama stop generating), and when streaming, sends a first
    empty chunk if Ollama is silent for FIRST_CHUNK_DEADLINE. At the end it reads the token counts from the last
    bytes of the answer (tokens.py).

    A body other than JSON (the transcription upload) names its `content_type` and the query `params` that go with
    it, and `keepalive_type`, the content type of the answer a client gets when keep-alive spaces must begin it.
    `empty_is_failure`: a 200 without a body is Ollama's way of failing this answer (a 502 here).
    """

    def __init__(
        self,
        upstream: Upstream,
        route: Forward,
        *,
        body: bytes,
        model: str,
        stream: bool,
        started: float,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        keepalive_type: bytes = b"application/json",
        empty_is_failure: bool = False,
    ):
        self.upstream = upstream
        self.gate = route.gate
        self.path = route.path
        self.body = body
        self.model = model
        self.stream = stream
        self.started = started
        self.content_type = content_type
        self.params = params
        self.keepalive_type = keepalive_type
        self.empty_is_failure = empty_is_failure
        self.background = None  # FastAPI attaches background tasks to a returned Response

    async def __call__(self, scope, receive, send) -> None:
        # The exchange runs in this (the request's) task; a watcher task cancels it when the client disconnects,
        # and the cancellation closes the upstream response in _streamed/_buffered. (One extra task per request
        # instead of two plus asyncio.wait: this is the hot path.)
        task = asyncio.current_task()
        state = {"gone": False, "finished": False}

        def client_left(watch: asyncio.Task) -> None:
            if state["finished"] or watch.cancelled() or watch.exception() is not None:
                return
            state["gone"] = True
            task.cancel()

        watch = asyncio.ensure_future(_wait_disconnect(receive))
        watch.add_done_callback(client_left)
        self._state = scope.setdefault("state", {})
        try:
            await self._pump(send)
        except asyncio.CancelledError:
            if not state["gone"]:
                raise  # cancelled from outside (shutdown): not ours to swallow
            task.uncancel()
            self._state["client_left"] = True  # logged as 499 if no response had started
        finally:
            state["finished"] = True
            watch.cancel()

    async def _pump(self, send) -> None:
        self._held = False
        try:
            if self.gate.full():
                await self._busy(send)
            elif self.stream:
                await self._streamed(send)
            else:
                await self._buffered(send)
        finally:
            if self._held:
                self.gate.release()

    async def _acquire(self) -> None:
        await self.gate.acquire()  # raises QueueFull before waiting, or waits (cancellable) for a slot
        self._held = True

    async def _busy(self, send, committed: bool = False) -> None:
        """The route's queue is full: 503 + Retry-After, or an error at the end of an answer already begun."""
        self.upstream.metrics.rejected.labels(
            "queue_full" if self.gate.name == "generation" else "embed_queue_full"
        ).inc()
        if committed:
            await self._fail(send, committed, 503, "server busy, please try again")
            return
        retry = str(self.upstream.settings.busy_retry_after)
        body = error_body(self.path, 503, f"server busy, please try again: the {self.gate.name} queue is full")
        await _send_whole(send, 503, body, "application/json", [(b"retry-after", retry.encode())])

    async def _buffered(self, send) -> None:
        """A non-streamed generation: the whole answer in one body, with keep-alive spaces while Ollama is slow."""
        settings = self.upstream.settings
        # Keep-alive off: no extra task (this is the hot path). Otherwise the exchange runs beside the keep-alive.
        exchange = asyncio.ensure_future(self._exchange()) if settings.nonstream_keepalive_after > 0 else None
        committed = False
        try:
            if exchange is not None:
                await asyncio.wait((exchange,), timeout=settings.nonstream_keepalive_after)
                while not exchange.done():
                    if not committed:
                        headers = [(b"content-type", self.keepalive_type), *STREAM_HEADERS]
                        await send({"type": "http.response.start", "status": 200, "headers": headers})
                        committed = True
                    await send({"type": "http.response.body", "body": b" ", "more_body": True})
                    await asyncio.wait((exchange,), timeout=settings.nonstream_keepalive_interval)
            try:
                status, content, ctype = await (exchange if exchange is not None else self._exchange())
            except QueueFull:  # the queue filled up between the check in _pump and our turn
                await self._busy(send, committed)
                return
            except aiohttp.ClientError as exc:
                err = self.upstream.map_exception(exc)
                self.upstream.metrics.upstream_errors.labels(err.kind).inc()
                await self._fail(send, committed, err.status, err.message)
                return
            self.upstream.metrics.first_chunk.labels(self.path).observe(time.perf_counter() - self.started)
            if status >= 500:
                self.upstream.metrics.upstream_errors.labels("status_5xx").inc()
                await self._fail(send, committed, 502, f"Ollama answered {status}: {upstream_message(content)}")
            elif status == 200 and not content and self.empty_is_failure:
                self.upstream.metrics.upstream_errors.labels("stream").inc()
                message = "Ollama answered 200 without a body: the model failed after it began (Ollama's log says why)"
                await self._fail(send, committed, 502, message)
            else:
                if status == 200:
                    self._account(content[-tokens.TAIL :])
                elif status >= 400:
                    content, ctype = client_error(self.path, status, content, ctype)
                if committed:  # the 200 is out: the body carries Ollama's answer (or its 4xx error)
                    await send({"type": "http.response.body", "body": content, "more_body": False})
                else:
                    await _send_whole(send, status, content, ctype)
        finally:
            if exchange is not None and not exchange.done():
                exchange.cancel()  # the client left: closing the upstream response makes Ollama stop
                with contextlib.suppress(BaseException):
                    await exchange

    async def _exchange(self) -> tuple[int, bytes, str]:
        """Wait for a slot, then send the request and read Ollama's whole answer: (status, body, content type)."""
        await self._acquire()
        resp = await self.upstream.client.send(
            "POST", self.path, self.body, content_type=self.content_type, params=self.params
        )
        try:
            content = await resp.read()
        finally:
            resp.close()  # a no-op when complete; otherwise (cancelled) it closes the connection
        return resp.status, content, resp.headers.get("content-type", "application/json")

    async def _open(self):
        """Wait for a slot, send the request and wait for the first body chunk.

        Returns (response, chunk iterator, first chunk); for a status other than 200, (response, None, whole body).
        The early-chunk deadline covers all three, so a client waiting in the queue also sees its stream start.
        `self._connected` resolves once connecting to Ollama is over.
        """
        await self._acquire()
        resp = await self.upstream.client.send(
            "POST",
            self.path,
            self.body,
            on_connected=self._mark_connected,
            content_type=self.content_type,
            params=self.params,
        )
        try:
            if resp.status != 200:
                return resp, None, await resp.read()
            # iter_any: whatever has arrived, as soon as it arrives (never waits to fill a buffer or a line).
            chunks = aiter(resp.content.iter_any())
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                first = b""
            return resp, chunks, first
        except BaseException:
            resp.close()
            raise

    def _mark_connected(self) -> None:
        if not self._connected.done():
            self._connected.set_result(None)

    async def _streamed(self, send) -> None:
        metrics = self.upstream.metrics
        default_type = b"text/event-stream" if is_openai(self.path) else b"application/x-ndjson"
        self._connected = asyncio.get_running_loop().create_future()
        opener = asyncio.ensure_future(self._open())
        resp = None
        committed = False
        try:
            await asyncio.wait((opener,), timeout=self.upstream.settings.first_chunk_deadline)
            if not opener.done() and self._held and not self._connected.done():
                # Still connecting to Ollama: wait for that (at most OLLAMA_CONNECT_TIMEOUT, far below Cloudflare's
                # 100 s), so an unreachable Ollama is still a clean 503 rather than a 200 with an error line.
                await asyncio.wait((opener, self._connected), return_when=asyncio.FIRST_COMPLETED)
            if not opener.done():
                # Ollama is still loading the model or reading the prompt: show the client the stream is alive.
                await send({"type": "http.response.start", "status": 200, "headers": _stream_headers(default_type)})
                early = early_chunk(self.path, self.model)
                await send({"type": "http.response.body", "body": early, "more_body": True})
                committed = True
            try:
                resp, chunks, first = await opener
            except QueueFull:  # the queue filled up between the check in _pump and our turn
                await self._busy(send, committed)
                return
            except aiohttp.ClientError as exc:
                err = self.upstream.map_exception(exc)
                metrics.upstream_errors.labels(err.kind).inc()
                await self._fail(send, committed, err.status, err.message)
                return
            if chunks is None:  # not 200: `first` is the whole body
                if resp.status >= 500:
                    metrics.upstream_errors.labels("status_5xx").inc()
                    msg = f"Ollama answered {resp.status}: {upstream_message(first)}"
                    await self._fail(send, committed, 502, msg)
                elif committed:
                    await self._fail(send, committed, resp.status, upstream_message(first))
                else:  # 4xx (unknown model upstream, bad request) passes through as Ollama wrote it
                    content, ctype = client_error(self.path, resp.status, first, resp.headers.get("content-type"))
                    await _send_whole(send, resp.status, content, ctype)
                return
            metrics.first_chunk.labels(self.path).observe(time.perf_counter() - self.started)
            if not committed:
                ctype = resp.headers.get("content-type", "").encode() or default_type
                await send({"type": "http.response.start", "status": 200, "headers": _stream_headers(ctype)})
                committed = True
            if first:
                await send({"type": "http.response.body", "body": first, "more_body": True})
            # The last bytes passed on, for the token counts: chunk references, joined only every TAIL bytes.
            tail, size = [first], len(first)
            try:
                async for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    tail.append(chunk)
                    size += len(chunk)
                    if size > 2 * tokens.TAIL:
                        tail = [b"".join(tail)[-tokens.TAIL :]]
                        size = tokens.TAIL
            except aiohttp.ClientError as exc:
                metrics.upstream_errors.labels("stream").inc()
                msg = f"Ollama stream broke off: {self.upstream.map_exception(exc).message}"
                await send({"type": "http.response.body", "body": error_chunk(self.path, msg), "more_body": True})
            else:
                self._account(b"".join(tail)[-tokens.TAIL :])
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if not opener.done():
                opener.cancel()
                with contextlib.suppress(BaseException):
                    await opener
            if resp is None and opener.done() and not opener.cancelled() and opener.exception() is None:
                resp = opener.result()[0]
            if resp is not None:
                resp.close()  # a no-op after a complete response; otherwise Ollama sees the connection close

    def _account(self, tail: bytes) -> None:
        """Token counts from the end of a successful answer: metrics, and the access log line (via the scope)."""
        usage = tokens.from_tail(tail, self.path)
        if usage is None:
            return
        self._state["usage"] = usage
        self._state["model"] = self.model
        self.upstream.count_tokens(normalize_model(self.model), self.path, usage)

    async def _fail(self, send, committed: bool, status: int, message: str) -> None:
        """End with an error: a response of its own status, or, once the 200 is out, the last piece of the body
        (a stream's error line; a non-streamed answer's whole error object after the keep-alive spaces)."""
        if not committed:
            await _send_whole(send, status, error_body(self.path, status, message), "application/json")
            return
        body = error_chunk(self.path, message) if self.stream else error_body(self.path, status, message)
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _stream_headers(ctype: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", ctype), *STREAM_HEADERS]


async def _send_whole(send, status: int, body: bytes, ctype: str, extra=()) -> None:
    headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _wait_disconnect(receive) -> None:
    # The body was read by the route, so the next message uvicorn delivers is the disconnect.
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
