"""Fixtures for the service tests: the Ollama double and the real service under uvicorn on a loopback port.

The service runs as `uvicorn app.main:app` from service/ in a subprocess (as in the image), configured only through
environment variables, so the settings code, middleware and streaming are exercised exactly as deployed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.ollama import OllamaDouble

REPO = Path(__file__).resolve().parents[2]
SERVICE_DIR = REPO / "service"
MODEL = "llama3.2:1b"
_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def free_port() -> int:
    """A port nobody listens on right now (for 'Ollama is down' tests: connecting there is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """`uvicorn app.main:app --port 0` in service/; the port is read from uvicorn's startup line.

    (Not `--fd`: uvicorn wraps an inherited fd as AF_UNIX, so TCP_NODELAY is never set and every response
    waits ~40 ms for a delayed ACK.)
    """

    def __init__(self, env: dict[str, str], log_path: Path, cwd: Path = SERVICE_DIR) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = {k: v for k, v in os.environ.items() if not _is_setting(k)}
        full_env["PYTHONPATH"] = str(SERVICE_DIR)  # so cwd can be elsewhere (a dir with its own .env files)
        full_env.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "0"],
            cwd=cwd,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = ""

    def wait_ready(self, timeout: float = 20) -> ServiceProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if match:
                self.url = f"http://127.0.0.1:{match.group(1)}"
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise RuntimeError(f"service did not start within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[str]:
        return self.log().splitlines()

    def records(self) -> list[dict]:
        """The JSON log lines."""
        return [json.loads(line) for line in self.log_lines() if line.startswith("{")]

    def wait_log(self, predicate: Callable[[dict], bool], timeout: float = 3) -> list[dict]:
        """Log records matching `predicate`, polling until there is at least one."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records() if predicate(r)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# Every setting the service reads; stripped from the inherited environment so a developer's shell cannot
# change what a test sees.
SETTINGS = {
    "APP_ENV",
    "APP_VERSION",
    "LOG_LEVEL",
    "MODEL_NAME",
    "ALLOWED_MODELS",
    "OLLAMA_BASE_URL",
    "OLLAMA_CONNECT_TIMEOUT",
    "OLLAMA_READ_TIMEOUT",
    "FIRST_CHUNK_DEADLINE",
    "NONSTREAM_KEEPALIVE_AFTER",
    "NONSTREAM_KEEPALIVE_INTERVAL",
    "ALLOWED_ORIGINS",
    "RATE_LIMIT_PER_MINUTE",
    "TRUSTED_PROXIES",
    "MAX_CONCURRENT",
    "MAX_QUEUE",
    "BUSY_RETRY_AFTER",
    "EMBED_MODEL_NAME",
    "EMBED_MAX_CONCURRENT",
    "EMBED_MAX_QUEUE",
    "MAX_REQUEST_BYTES",
    "KEEP_ALIVE",
    "NUM_CTX",
    "MAX_PREDICT",
    "CF_ACCESS_AUD",
    "CF_ACCESS_CERTS_URL",
    "CF_ACCESS_JWKS_TTL",
}


def _is_setting(name: str) -> bool:
    return name.upper() in SETTINGS


@pytest.fixture(scope="session")
def ollama_double() -> Iterator[OllamaDouble]:
    # The service tests are not about Ollama's scheduler (test_double_sched.py and test_isolation.py are): more slots
    # than any of them lets through at once, so no request waits for another's (Ollama's default is one slot).
    with OllamaDouble(model=MODEL, num_parallel=64) as double:
        yield double


@pytest.fixture
def double(ollama_double: OllamaDouble) -> Iterator[OllamaDouble]:
    """The session's double, back to default knobs and with no records, for one test."""
    ollama_double.reset()
    yield ollama_double
    ollama_double.reset()


@pytest.fixture(scope="session")
def start_service(tmp_path_factory) -> Iterator[Callable[..., ServiceProcess]]:
    """Factory: start_service(ENV=value, ...) -> a running ServiceProcess; all are stopped at session end."""
    started: list[ServiceProcess] = []

    def start(cwd: Path = SERVICE_DIR, wait: bool = True, **env: str) -> ServiceProcess:
        log = tmp_path_factory.mktemp("service") / "service.log"
        proc = ServiceProcess({k: str(v) for k, v in env.items()}, log, cwd=cwd)
        started.append(proc)
        return proc.wait_ready() if wait else proc

    yield start
    for proc in started:
        proc.stop()


def base_env(double: OllamaDouble, **overrides: str) -> dict[str, str]:
    env = {
        "APP_ENV": "local",
        "APP_VERSION": "test-1",
        "MODEL_NAME": MODEL,
        "OLLAMA_BASE_URL": double.url,
        "RATE_LIMIT_PER_MINUTE": "0",
        "MAX_CONCURRENT": "4",
        "MAX_QUEUE": "8",
        "ALLOWED_ORIGINS": "https://app.example.com",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def service(ollama_double: OllamaDouble, start_service) -> ServiceProcess:
    """The service with test-friendly defaults (no rate limit, 4 slots), shared by most tests."""
    return start_service(**base_env(ollama_double))


@pytest.fixture
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=10) as http:
        yield http


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in `text` (0.0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{", 1)[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    return 0.0


@contextlib.contextmanager
def timed() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    yield lambda: time.perf_counter() - start


def http_answer(status: bytes, body: bytes, ctype: bytes = b"application/json") -> bytes:
    """A whole HTTP/1.1 answer with Content-Length, for RawOllama to send (status like b"500 Internal Server Error")."""
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (status, ctype, len(body), body)


def answer_after(answer: bytes, delay: float = 0.0):
    """A RawOllama reply function: `answer`, `delay` seconds after each request (a model that loads slowly)."""

    def reply(conn: int, request: int) -> bytes:
        time.sleep(delay)
        return answer

    return reply


class RawOllama:
    """A raw HTTP/1.1 server. `reply(conn_no, req_no_on_conn)` gives the bytes to send, or None to close the
    connection without answering; `close_after_reply` closes after every answer (keep-alive framing notwithstanding,
    as an Ollama restarting would). Counts connections and (complete) requests."""

    def __init__(self, reply, close_after_reply: bool = False) -> None:
        self.reply = reply
        self.close_after_reply = close_after_reply
        self.connections = 0
        self.requests: list[tuple[int, bytes]] = []  # (connection number, request head)
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
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    @staticmethod
    def _read_request(conn: socket.socket, buf: bytes) -> tuple[bytes, bytes] | None:
        """(head, rest of the buffer) for one whole request (head + Content-Length body), or None at EOF."""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        length = int(match.group(1)) if match else 0
        while len(buf) < length:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        return head, buf[length:]

    def _serve(self, conn: socket.socket, number: int) -> None:
        buf, on_conn = b"", 0
        with conn:
            while True:
                try:
                    got = self._read_request(conn, buf)
                except OSError:
                    return
                if got is None:
                    return
                head, buf = got
                on_conn += 1
                self.requests.append((number, head))
                answer = self.reply(number, on_conn)
                if answer is None:
                    return  # close without a byte of an answer
                conn.sendall(answer)
                if self.close_after_reply:
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(start_service, ollama_double):
    """raw(reply, close_after_reply=False, **env) -> (RawOllama, service using it as OLLAMA_BASE_URL)."""
    servers = []

    def make(reply, close_after_reply: bool = False, **env: str):
        upstream = RawOllama(reply, close_after_reply)
        servers.append(upstream)
        return upstream, start_service(**base_env(ollama_double, OLLAMA_BASE_URL=upstream.url, **env))

    yield make
    for upstream in servers:
        upstream.close()


class Clients:
    """The three official clients against one base URL, each recording the exact bytes it sends (httpx hooks),
    so a test can compare them with what reached the double (RecordedRequest.raw)."""

    def __init__(self, url: str) -> None:
        import anthropic
        import httpx2  # the openai and anthropic SDKs' HTTP client (they refuse httpx objects)
        import ollama
        import openai

        self.sent: list[bytes] = []
        hooks = {"request": [lambda request: self.sent.append(request.read())]}
        self.ollama = ollama.Client(host=url, event_hooks=hooks, timeout=10)
        self.openai = openai.OpenAI(
            base_url=url + "/v1",
            api_key="not-checked-by-ollama",
            max_retries=0,
            http_client=httpx2.Client(event_hooks=hooks, timeout=10),
        )
        self.anthropic = anthropic.Anthropic(
            base_url=url,
            api_key="not-checked-by-ollama",
            max_retries=0,
            http_client=httpx2.Client(event_hooks=hooks, timeout=10),
        )

    @property
    def last_sent(self) -> bytes:
        return self.sent[-1]


@pytest.fixture
def clients(service: ServiceProcess) -> Clients:
    return Clients(service.url)
