"""The service's own HTTP/1.1 client for Ollama (service/app/ollama_http.py), against real sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
from app.ollama_http import ConnectError, OllamaHTTP, ProtocolError, ReadTimeout

from tests.fakes.ollama import expected_text

from .conftest import MODEL, free_port


def run(coro):
    return asyncio.run(coro)


class RawServer:
    """Answers each request on a connection with `reply(n)` (n = request number); counts connections."""

    def __init__(self, reply, close_after_each: bool = False) -> None:
        self.reply = reply
        self.close_after_each = close_after_each
        self.connections = 0
        self.requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    if not conn.recv(65536):
                        return
                except OSError:
                    return
                self.requests += 1
                conn.sendall(self.reply(self.requests))
                if self.close_after_each:
                    return

    def close(self) -> None:
        self.sock.close()


def ok(body: bytes = b'{"ok":true}') -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def test_keep_alive_reuses_one_connection():
    server = RawServer(lambda n: ok())

    async def go():
        client = OllamaHTTP(server.url, 2, 5)
        for _ in range(5):
            resp = await client.request("GET", "/api/version")
            assert resp.status_code == 200 and await resp.read() == b'{"ok":true}'
        await client.aclose()

    run(go())
    assert (server.requests, server.connections) == (5, 1)
    server.close()


def test_stale_idle_connection_is_retried_on_a_fresh_one():
    # The server closes after every answer (as Ollama may close an idle keep-alive connection).
    server = RawServer(lambda n: ok(), close_after_each=True)

    async def go():
        client = OllamaHTTP(server.url, 2, 5)
        for _ in range(3):
            resp = await client.request("POST", "/api/chat", b"{}")
            await resp.read()
            await asyncio.sleep(0.05)  # let the close arrive while the connection is idle
        await client.aclose()

    run(go())
    assert server.requests == 3 and server.connections == 3
    server.close()


def test_close_delimited_body_and_head():
    server = RawServer(lambda n: b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nOllama is running", True)

    async def go():
        client = OllamaHTTP(server.url, 2, 5)
        resp = await client.request("GET", "/")
        assert await resp.read() == b"Ollama is running"
        await client.aclose()

    run(go())
    server.close()


def test_streams_chunks_from_the_double(ollama_double, double):
    double.configure(token_count=4, token_delay=0.05)

    async def go():
        client = OllamaHTTP(ollama_double.url, 2, 5)
        resp = await client.request("POST", "/api/generate", b'{"model": "%s", "prompt": "x"}' % MODEL.encode())
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        chunks = [chunk async for chunk in resp]
        head = await client.request("HEAD", "/")
        assert head.status_code == 200 and await head.read() == b""
        await client.aclose()
        return chunks

    chunks = run(go())
    assert len(chunks) >= 5  # one network chunk per token at 50 ms apart: passed on as they came
    text = b"".join(chunks).decode()
    assert "".join(json.loads(line)["response"] for line in text.splitlines()) == expected_text(4)


def test_closing_early_closes_the_connection_so_ollama_stops(ollama_double, double):
    double.configure(token_count=100, token_delay=0.05)

    async def go():
        client = OllamaHTTP(ollama_double.url, 2, 5)
        resp = await client.request(
            "POST", "/api/chat", b'{"model": "%s", "messages": [{"role": "user", "content": "x"}]}' % MODEL.encode()
        )
        async for _ in resp:
            break
        resp.close()
        await client.aclose()

    run(go())
    rec = double.wait_for(lambda r: r.path == "/api/chat" and r.finished_at is not None, timeout=2)
    assert rec.cancelled and rec.chunks_sent < 10


def test_errors():
    port = free_port()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # accepts connections (kernel backlog) but never answers
    truncated = RawServer(lambda n: b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial", True)

    async def go():
        with pytest.raises(ConnectError):
            await OllamaHTTP(f"http://127.0.0.1:{port}", 2, 5).request("GET", "/api/tags")
        start = time.perf_counter()
        with pytest.raises(ReadTimeout):
            await OllamaHTTP(f"http://127.0.0.1:{silent.getsockname()[1]}", 2, 0.3).request("GET", "/api/tags")
        assert time.perf_counter() - start < 2
        resp = await OllamaHTTP(truncated.url, 2, 5).request("GET", "/api/tags")
        with pytest.raises(ProtocolError):
            await resp.read()

    run(go())
    silent.close()
    truncated.close()
