"""The service with another upstream HTTP client, for bench/service.py only (never shipped, never imported by it).

`uvicorn service_variant:app` from service/ (bench/ and bench/.tools on PYTHONPATH) builds the shipped app
(service/app/main.py) and replaces only its client to Ollama, chosen by BENCH_UPSTREAM_CLIENT:

  httpx-aiohttp  httpx.AsyncClient over httpx-aiohttp's AiohttpTransport, which drives the service's own tuned
                 aiohttp session (http_client.open_session): the httpx API on aiohttp's pool, measured against the
                 shipped aiohttp client (adopt httpx if <= 10 % more CPU per request).
  httpx          httpx.AsyncClient with its own httpcore pool, the client that collapsed at 32 concurrent requests
                 (encode/httpx#3215); for reference.

The adapter below hands upstream.py what it reads from an aiohttp.ClientResponse (status, headers, read, close,
content.iter_any), so the rest of the service runs unchanged. Transport errors surface as aiohttp.ClientError so
the service's error mapping still answers (with a less specific message): fine for a benchmark, not for shipping.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
import httpx
from app import http_client
from app import main as service_main

CLIENT = os.environ.get("BENCH_UPSTREAM_CLIENT", "httpx-aiohttp")
if CLIENT not in ("httpx-aiohttp", "httpx"):
    raise SystemExit(f"BENCH_UPSTREAM_CLIENT={CLIENT!r}: expected httpx-aiohttp or httpx")


_closing: set[asyncio.Task] = set()


class _Response:
    """An httpx.Response seen through the aiohttp.ClientResponse attributes upstream.py uses."""

    __slots__ = ("_resp", "status", "headers", "content")

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.headers = resp.headers
        self.content = self  # upstream.py calls resp.content.iter_any()

    def iter_any(self):
        return self._resp.aiter_raw()

    async def read(self) -> bytes:
        return await self._resp.aread()  # reads to the end, which closes the stream (back to the pool)

    def close(self) -> None:
        if not self._resp.is_closed:  # cancelled or failed half way: closing drops the connection
            task = asyncio.ensure_future(self._resp.aclose())
            _closing.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(_closing.discard)


class _Session:
    """What main.py's lifespan opens and closes: the httpx client (and the aiohttp session under it)."""

    def __init__(self, settings) -> None:
        self.aiohttp = http_client.open_session(settings) if CLIENT == "httpx-aiohttp" else None
        timeout = httpx.Timeout(
            connect=settings.ollama_connect_timeout,
            read=settings.ollama_read_timeout,
            write=None,
            pool=settings.ollama_connect_timeout,
        )
        # The same upstream headers as http_client.py: no compression asked for, bodies pass through as they are.
        headers = {"User-Agent": http_client.USER_AGENT, "Accept-Encoding": "identity"}
        common = {"timeout": timeout, "headers": headers, "follow_redirects": False, "trust_env": False}
        if self.aiohttp is not None:
            from httpx_aiohttp import AiohttpTransport

            self.httpx = httpx.AsyncClient(transport=AiohttpTransport(client=self.aiohttp), **common)
        else:
            pool = http_client.POOL_LIMIT
            limits = httpx.Limits(max_connections=pool, keepalive_expiry=http_client.KEEPALIVE_SECONDS)
            self.httpx = httpx.AsyncClient(limits=limits, **common)

    async def close(self) -> None:
        await self.httpx.aclose()
        if self.aiohttp is not None:
            await self.aiohttp.close()


class HttpxOllamaClient(http_client.OllamaClient):
    def __init__(self, session: _Session, settings) -> None:
        super().__init__(session.aiohttp, settings)
        self.httpx = session.httpx

    async def send(self, method, path, body=None, read_timeout=None, on_connected=None):
        timeout = None
        if read_timeout is not None:
            s = self.settings
            timeout = httpx.Timeout(s.ollama_connect_timeout, read=read_timeout, write=None)
        headers = None if body is None else {"Content-Type": "application/json"}
        request = self.httpx.build_request(
            method,
            self.base_url + path,
            content=body,
            headers=headers,
            **({} if timeout is None else {"timeout": timeout}),
        )
        # The service's connector reports "connected" through this context variable (http_client.Exchange); the
        # aiohttp transport calls the session in this task, so the early-chunk logic sees the same signal.
        token = http_client._exchange.set(http_client.Exchange(on_connected))
        try:
            resp = await self.httpx.send(request, stream=True)
        except httpx.TransportError as exc:
            raise aiohttp.ClientError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            http_client._exchange.reset(token)
        if on_connected is not None and CLIENT == "httpx":
            on_connected()  # httpcore has no such hook: late, but the stream still starts
        return _Response(resp)


service_main.open_session = _Session  # looked up by the lifespan when the server starts
http_client.OllamaClient = HttpxOllamaClient  # looked up by Upstream.start in the lifespan
app = service_main.app
