"""A small keep-alive HTTP/1.1 client for the one upstream this service has: Ollama.

Why not httpx: measured on the 2-core benchmark machine, an httpx AsyncClient request costs ~1.3 ms of client-side
CPU and throughput collapses with concurrency (encode/httpx#3215: 32 concurrent requests reached ~115 req/s
against a server that does 3,700). The service's budget is 1 ms *added* latency in total, so the hot path uses
asyncio's transport/protocol layer with httptools' parser (the same parser uvicorn runs on) instead: one write per
request, TCP_NODELAY (asyncio's default for TCP), a LIFO pool of idle connections, and nothing else.

Scope, deliberately narrow: http:// and https:// to one origin, requests with a complete body, responses with
Content-Length, chunked or close-delimited bodies, streamed to the caller chunk by chunk. No redirects, no proxies,
no compression, no HTTP/2. Closing a response before its end closes the TCP connection, which is how Ollama learns
that the client left and stops generating (ollama/ollama#2876).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

# Read no further from Ollama while this much is buffered for a slow client (flow control).
HIGH_WATER = 1 << 20


class TransportError(Exception):
    """Base of the errors below; the message says what happened, for the client-facing error."""


class ConnectError(TransportError):
    pass


class ReadTimeout(TransportError):
    pass


class ProtocolError(TransportError):
    pass


class _Connection(asyncio.Protocol):
    """One TCP connection carrying one request at a time; parser callbacks fill the response state."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future | None = None
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.received_any = False
        self.error: TransportError | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False

    # -- asyncio.Protocol --
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP from Ollama: {exc}"))
            self.transport.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete:
            framed = "content-length" in self.headers or "chunked" in self.headers.get("transfer-encoding", "")
            if not framed:  # a close-delimited body ends here (httptools has no feed_eof)
                self.complete = True
        if not self.complete:
            self._fail(ProtocolError("Ollama closed the connection before the response was complete"))
        self._wake()

    # -- httptools callbacks --
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        # Ask now: once the message is complete the parser no longer knows (should_keep_alive() turns False).
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self._wake()

    # -- used by the client --
    def _fail(self, error: TransportError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _timed_out(self, waiter: asyncio.Future, seconds: float) -> None:
        if not waiter.done():
            waiter.set_exception(ReadTimeout(f"no data from Ollama for {seconds:g} s"))

    async def wait(self, seconds: float | None) -> None:
        """Until the parser reports progress (headers, body, end) or the connection fails.

        A timer handle rather than asyncio.timeout(): this runs once per chunk, and call_later is the cheapest.
        """
        waiter = self.loop.create_future()
        self._waiter = waiter
        timer = self.loop.call_later(seconds, self._timed_out, waiter, seconds) if seconds else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        data = self.chunks.popleft()
        self.buffered -= len(data)
        if self.paused and self.buffered < HIGH_WATER // 2:
            self.paused = False
            self.transport.resume_reading()
        return data

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """Status and headers are available; the body is read with `read()` or `async for chunk in response`."""

    def __init__(self, client: OllamaHTTP, conn: _Connection, read_timeout: float | None, head: bool) -> None:
        self._client = client
        self._conn = conn
        self._timeout = read_timeout
        self.status_code = conn.status
        self.headers = conn.headers
        self.content = b""
        self._done = head  # a HEAD response has no body, whatever Content-Length says
        if head:
            conn.abort()  # httptools cannot be told to skip the body; HEAD is rare, do not reuse

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        conn = self._conn
        try:
            while not self._done:
                if conn.chunks:
                    yield conn.take()
                elif conn.complete:
                    self._finish()
                elif conn.error is not None:
                    raise conn.error
                else:
                    await conn.wait(self._timeout)
        finally:
            if not self._done:  # the consumer stopped early (client gone): drop the connection
                self.close()

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self]
        self.content = b"".join(parts)
        return self.content

    def _finish(self) -> None:
        self._done = True
        conn = self._conn
        if conn.keep_alive and not conn.closed:
            conn._reset()
            self._client._release(conn)
        else:
            conn.abort()

    def close(self) -> None:
        """Stop here. An unfinished response closes its connection (Ollama then stops generating)."""
        if not self._done:
            self._done = True
            self._conn.abort()

    def json(self):
        return json.loads(self.content)


class OllamaHTTP:
    """Keep-alive connections to one origin (the OLLAMA_BASE_URL)."""

    def __init__(self, base_url: str, connect_timeout: float, read_timeout: float, max_idle: int = 64) -> None:
        url = urlsplit(base_url)
        self.base_url = base_url
        self.host = url.hostname or "localhost"
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if url.scheme == "https" else None
        self.prefix = url.path.rstrip("/")
        default_port = (url.scheme == "https" and self.port == 443) or (url.scheme == "http" and self.port == 80)
        host_header = self.host if default_port else f"{self.host}:{self.port}"
        if ":" in self.host and not default_port:
            host_header = f"[{self.host}]:{self.port}"
        self._fixed = f"Host: {host_header}\r\nUser-Agent: local-llm-gateway\r\nAccept: */*\r\n".encode()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        self._closed = False

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(loop), self.host, self.port, ssl=self.ssl)
        except TimeoutError:
            raise ConnectError(f"connect timed out after {self.connect_timeout:g} s") from None
        except OSError as exc:
            raise ConnectError(exc.strerror or str(exc)) from None
        return conn

    def _release(self, conn: _Connection) -> None:
        if self._closed or len(self._idle) >= self.max_idle:
            conn.abort()
        else:
            self._idle.append(conn)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
        read_timeout: float | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> Response:
        """Send a request and wait for the status line and headers (the body is read from the Response).

        `on_sent` is called once the request is written to an established connection (connecting is over).
        """
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode() + self._fixed
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n".encode()
        data = head + b"\r\n" + (body or b"")
        timeout = read_timeout or self.read_timeout
        while True:
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._connect()
            try:
                if conn.closed:
                    raise ProtocolError("idle connection was closed")
                conn.transport.write(data)
                if on_sent is not None:
                    on_sent()
                while not conn.headers_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(timeout)
            except ProtocolError:
                conn.abort()
                # Ollama may close an idle keep-alive connection at any time; when that connection had not
                # received a byte of our request's answer, the request never ran: retry on a fresh one.
                if reused and not conn.received_any:
                    continue
                raise
            except BaseException:
                conn.abort()  # timeout or cancellation (our client left): close, so Ollama stops too
                raise
            return Response(self, conn, timeout, head=method == "HEAD")

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().abort()
