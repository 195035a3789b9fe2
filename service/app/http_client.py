"""The service's one HTTP client: a pooled `aiohttp.ClientSession` for the app's lifetime (opened and closed in the
lifespan, main.py). Every call to Ollama goes through `send()`; the Access key fetch (auth.py) uses it too.

Why aiohttp and not httpx: on the 2-core benchmark machine an httpx AsyncClient request cost ~1.3 ms of client CPU
and 32 concurrent requests collapsed to ~115 req/s (encode/httpx#3215). With aiohttp the service carries
`make bench-service`'s load at ~1,350 req/s (target >= 950). The hand-written asyncio + httptools client this
replaced reached ~1,900 req/s: aiohttp costs ~0.2 ms more CPU per request (~220 more Python calls), the price of a
maintained library over our own HTTP/1.1 parser handling. Measure before trading it back.

What is tuned here, and why:
  * Pool: keep-alive connections (TCP_NODELAY is aiohttp's default), capped at POOL_LIMIT.
  * Timeouts: OLLAMA_CONNECT_TIMEOUT bounds getting a connection (DNS, TCP, a free pool slot), so an unreachable
    Ollama is a 503 that fast; OLLAMA_READ_TIMEOUT bounds each silence between two reads. No total timeout: a
    long generation is fine as long as tokens keep coming.
  * Headers: Host, User-Agent, Accept, Content-Type, Content-Length and nothing else. No Accept-Encoding, so bodies
    arrive as identity and are passed on byte for byte (auto_decompress off: nothing to inflate).
  * No cookie jar (Ollama sets none, and a gateway must never carry one client's cookie to another), no proxy or
    .netrc from the environment (trust_env off: an HTTP_PROXY in the container must not reroute calls to Ollama),
    no redirects.
  * A reused keep-alive connection that turns out closed (Ollama restarted; the close crossed our request) is
    retried once per stale connection on a fresh one. aiohttp itself retries only idempotent methods; ours is
    safe for POST too because Ollama answered nothing on that connection.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextvars import ContextVar

import aiohttp
from yarl import URL

from .config import Settings

# A safety cap on open connections to Ollama (file descriptors), far above real load: generations are bounded by
# MAX_CONCURRENT in limits.py, everything else is short. Waiting for a free slot counts against the connect timeout.
POOL_LIMIT = 256
# Seconds an idle pooled connection is kept. Ollama never closes idle connections (its Go http.Server sets no
# IdleTimeout), so this is ours to choose: aiohttp's default keeps the pool warm under steady traffic and lets
# connections through Docker Desktop's port forwarding go before anything in between could silently forget them.
KEEPALIVE_SECONDS = 15.0
USER_AGENT = "local-llm-gateway"


class Exchange:
    """What the connector tells one request: that connecting is over, and whether the connection was pooled."""

    __slots__ = ("on_connected", "reused")

    def __init__(self, on_connected: Callable[[], None] | None) -> None:
        self.on_connected = on_connected
        self.reused = False


# The Exchange of the request this task is sending (set around session.request in OllamaClient.send).
_exchange: ContextVar[Exchange | None] = ContextVar("ollama_exchange", default=None)


class _Connector(aiohttp.TCPConnector):
    """aiohttp's TCP connector, reporting each handed-out connection to the current Exchange.

    aiohttp's TraceConfig hooks could say the same, but they build and send six trace events on every request,
    measurable on the hot path; this is one context-variable lookup.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._handed_out: weakref.WeakSet = weakref.WeakSet()  # protocols (connections) given out before

    async def connect(self, *args, **kwargs) -> aiohttp.connector.Connection:
        conn = await super().connect(*args, **kwargs)
        exchange = _exchange.get()
        if exchange is not None:
            exchange.reused = conn.protocol in self._handed_out
            self._handed_out.add(conn.protocol)
            if exchange.on_connected is not None:
                exchange.on_connected()
        return conn


def timeouts(settings: Settings, read_timeout: float | None = None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None,
        connect=settings.ollama_connect_timeout,
        sock_read=read_timeout or settings.ollama_read_timeout,
    )


def open_session(settings: Settings) -> aiohttp.ClientSession:
    """The app's pooled session; call inside the running event loop (the lifespan) and close it at shutdown."""
    return aiohttp.ClientSession(
        connector=_Connector(limit=POOL_LIMIT, keepalive_timeout=KEEPALIVE_SECONDS),
        timeout=timeouts(settings),
        headers={"User-Agent": USER_AGENT},
        skip_auto_headers=("Accept-Encoding",),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


class OllamaClient:
    """Requests to the one origin OLLAMA_BASE_URL over the shared session."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.base_url = settings.ollama_base_url
        self._urls: dict[str, URL] = {}  # parsed once per route path (yarl parsing is not free on the hot path)

    def url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = URL(self.base_url + path)
            if len(self._urls) < 64:  # the routes forward a fixed set of paths; bound it anyway
                self._urls[path] = url
        return url

    async def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        read_timeout: float | None = None,
        on_connected: Callable[[], None] | None = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """Send a request and wait for the status line and headers; the caller reads the body, then closes.

        `read_timeout` replaces OLLAMA_READ_TIMEOUT for this request. `on_connected` is called once connecting is
        over (a new connection made or a pooled one taken). `content_type` is the body's (JSON but for the
        transcription upload), `params` a query string (the transcription's model, forms.py). Raises
        aiohttp.ClientError (Upstream.map_exception says what each means). Cancellation closes the connection
        (aiohttp does that).
        """
        kwargs = {} if read_timeout is None else {"timeout": timeouts(self.settings, read_timeout)}
        while True:
            exchange = Exchange(on_connected)
            token = _exchange.set(exchange)
            try:
                return await self.session.request(
                    method,
                    self.url(path),
                    # A ready payload carries its Content-Type: no per-request header merging.
                    data=None if body is None else aiohttp.BytesPayload(body, content_type=content_type),
                    params=params,
                    allow_redirects=False,
                    **kwargs,
                )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # Closed (or reset) before any byte of an answer: on a reused connection the close crossed our request
                # (Ollama restarted, or closed it idle), so the request never ran. A fresh connection failing
                # like this is Ollama's real answer. Each stale connection fails once and is dropped: this ends.
                if not exchange.reused:
                    raise
            finally:
                _exchange.reset(token)
