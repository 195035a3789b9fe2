"""Side by side, in one run: the Ollama double alone, nginx (the floor), this service and the LiteLLM proxy (the peer).

`make bench-service` (not a test: it prints tables, it asserts nothing). One process tree starts, on loopback only,
the Ollama double and every gateway in front of it (bench/peers.py), then sends each the same bodies:

  unloaded     1 connection, non-streamed chats back to back: p50/p99 latency added over direct
  saturation   32 connections, non-streamed: req/s, and CPU ms per request of the gateway's whole process tree
  paired       each service variant and the shipped service under the same load at the same time (16 + 16
               connections): their CPU per request over one window, the ratio a neighbour's load cannot skew
  streaming    8 connections, 1,000-chunk answers at full speed: chunks/s, CPU us per chunk
  first byte   the double silent for 3 s (a cold model load): time to the first body byte, 8 streams at once
  transit      one token every 5 ms: arrival - the double's created_at of every chunk (Ollama's route, whose chunks
               carry a send time), and the inter-arrival jitter on the OpenAI route
  embeddings   /api/embed added latency, 1 connection (when the double and the service have the route)
  disconnect   a client leaves mid-answer: time until the upstream request closes at the double (its records hold
               `cancelled` and `finished_at`), bounded wait

The OpenAI chat-completions route is the one every gateway serves, so the targets are judged there; Ollama's own
/api/chat is measured too for the gateways that serve it. Every row prints the service's ratio to nginx and to
LiteLLM; a peer that could not be installed or started prints why. The targets (TARGET_* below; in words:
docs/performance.md) are judged from this one run and printed met / missed. Variants of the service (httpx over
aiohttp, scratch copies, settings: `--variant`) get their own table of the CPU rows from the same run.

On 2 cores the load generator (wrk, C), the gateway and the double share the CPUs, so req/s and latency move with
anything else on the machine; CPU per request read from /proc moves far less, which is why the targets are ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import peers
from peers import Gateway, ServiceSpec, tree_cpu_seconds

SECTIONS = ("unloaded", "saturation", "paired", "streaming", "first-byte", "transit", "embeddings", "disconnect")
V1 = "/v1/chat/completions"
OLLAMA = "/api/chat"
PROMPT = [{"role": "user", "content": "Why is the sky blue?"}]
SERVICE = "service"  # the shipped service's column
LITELLM = "LiteLLM"
# Built-in variant: the service with httpx.AsyncClient over httpx-aiohttp (bench/service_variant.py).
HTTPX_VARIANT = "service, httpx-aiohttp client: app=service_variant:app BENCH_UPSTREAM_CLIENT=httpx-aiohttp"
# What the request policy for the shared Ollama costs: on with nothing to replace (the body is forwarded as
# received), and rewriting the keep_alive and options.num_ctx a client sent.
POLICY = "KEEP_ALIVE=30m NUM_CTX=8192 MAX_PREDICT=512"
POLICY_VARIANTS = (
    f"request policy on, nothing to replace: {POLICY}",
    f"""request policy on, rewriting 2 fields: {POLICY} body.keep_alive=0 'body.options={{"num_ctx": 2048}}'""",
)

# The service's performance targets, judged from one run: what it may add over the double (p50, p99), its CPU beside
# nginx's (per request, per chunk), its throughput and CPU beside LiteLLM's, first byte, transit, disconnect.
TARGET_ADDED_P50_MS = 0.25
TARGET_ADDED_P99_MS = 1.0
TARGET_CPU_VS_NGINX = 6.0
TARGET_CHUNK_CPU_VS_NGINX = 1.2
TARGET_VS_LITELLM = 20.0
TARGET_FIRST_BYTE_MS = 100.0
TARGET_TRANSIT_P99_MS = 2.0
TARGET_DISCONNECT_S = 1.0
# Above this many cores kept busy by other work during a row, its latencies are flagged as noise-bound.
NOISY_OTHERS_CORES = 0.5
HTTPX_ADOPT_IF_CPU_WITHIN = 0.10  # adopt the httpx API if it costs <= 10 % more CPU per request


def body(model: str, stream: bool) -> bytes:
    return json.dumps({"model": model, "messages": PROMPT, "stream": stream}).encode()


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def load1() -> float:
    return os.getloadavg()[0]


# -- the double's control API ---------------------------------------------------------------------------------------


class Double:
    def __init__(self, gateway: Gateway, model: str) -> None:
        self.url = gateway.url
        self.pid = gateway.pid
        self.model = model

    def configure(self, **knobs: object) -> None:
        """Back to defaults, records cleared, then `knobs` (tests/fakes/ollama.py DoubleConfig)."""
        httpx.post(f"{self.url}/_double/reset", timeout=10).raise_for_status()
        httpx.post(f"{self.url}/_double/config", json=knobs, timeout=10).raise_for_status()

    def records(self) -> list[dict]:
        return httpx.get(f"{self.url}/_double/requests", timeout=30).json()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Until every recorded request has finished (a gateway that does not cancel keeps streaming after the
        client left: the next measurement must not pay for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(r["finished_at"] is not None for r in self.records()):
                return True
            time.sleep(0.2)
        return False

    def has_route(self, path: str, payload: dict, url: str = "") -> bool:
        """Whether POST `path` exists at the double (or at `url`): anything but a 404."""
        return httpx.post(f"{url or self.url}{path}", json=payload, timeout=10).status_code != 404


# -- wrk ------------------------------------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[@BODY@]]
wrk.headers["Content-Type"] = "application/json"
@HEADERS@
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def machine_busy_seconds() -> float:
    """CPU seconds all cores have been busy since boot (/proc/stat: user nice system irq softirq steal)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Window:
    """What a measured run cost: CPU seconds of the gateway's process tree and of the double's, and how many cores
    everything else on the machine kept busy meanwhile (machine busy time minus this bench's own process tree, wrk
    included): the neighbours' share, which the load average alone cannot tell apart from our own load."""

    def __init__(self, gw: Gateway, double: Double) -> None:
        self.pids = (gw.pid, double.pid)
        self.load_avg = load1()
        self.t0 = time.monotonic()
        self.gw0, self.double0 = (tree_cpu_seconds(p) for p in self.pids)
        self.mine0, self.busy0 = tree_cpu_seconds(os.getpid()), machine_busy_seconds()

    def close(self) -> Window:
        self.seconds = time.monotonic() - self.t0
        self.cpu_s = tree_cpu_seconds(self.pids[0]) - self.gw0
        self.double_cpu_s = tree_cpu_seconds(self.pids[1]) - self.double0
        mine = tree_cpu_seconds(os.getpid()) - self.mine0
        self.others_cores = max(0.0, machine_busy_seconds() - self.busy0 - mine) / self.seconds
        return self


def settle(*pids: int, timeout: float = 15.0) -> None:
    """Until the process trees are idle (< 5 % of a core over 0.5 s): what the warm-up left behind (a gateway that
    finishes answers after the client left, logging callbacks) is not counted in the measured run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(tree_cpu_seconds(p) for p in pids)
        time.sleep(0.5)
        if sum(tree_cpu_seconds(p) for p in pids) - before < 0.025:
            return


@dataclass
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    window: Window | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return self.window.cpu_s * 1e3 / self.requests if self.requests else float("nan")

    @property
    def double_cpu_ms_per_request(self) -> float:
        return self.window.double_cpu_s * 1e3 / self.requests if self.requests else float("nan")


def start_wrk(
    url: str, payload: bytes, headers: dict[str, str], connections: int, seconds: float, workdir: Path
) -> Callable[[], Load]:
    """Start wrk; the returned function waits for it and reads its result."""
    fd, name = tempfile.mkstemp(suffix=".lua", dir=workdir)  # its own script: two may run at once
    script = Path(name)
    extra = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    with os.fdopen(fd, "w") as f:
        f.write(WRK_SCRIPT.replace("@BODY@", payload.decode()).replace("@HEADERS@", extra))
    threads = max(1, min(os.cpu_count() or 1, connections))
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "30s", "-s", str(script), url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish() -> Load:
        out, err = proc.communicate(timeout=seconds + 120)
        script.unlink()  # it may hold LiteLLM's key
        match = re.search(r"^BENCH (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
        if proc.returncode != 0 or not match:
            raise SystemExit(f"wrk failed ({proc.returncode}):\n{out}\n{err}")
        n, dur_us, p50_us, p99_us, errors = map(int, match.groups())
        return Load(n, dur_us / 1e6, p50_us / 1e3, p99_us / 1e3, errors)

    return finish


def wrk(url: str, payload: bytes, headers: dict[str, str], connections: int, seconds: float, workdir: Path) -> Load:
    return start_wrk(url, payload, headers, connections, seconds, workdir)()


def measured_load(
    gw: Gateway, double: Double, path: str, payload: bytes, connections: int, seconds: float, workdir: Path
) -> Load:
    """1 s of warm-up (connections, pools), then `seconds` measured by wrk, with what the run cost (Window)."""
    wrk(gw.url + path, payload, gw.headers, connections, 1, workdir)
    settle(gw.pid, double.pid)
    window = Window(gw, double)
    result = wrk(gw.url + path, payload, gw.headers, connections, seconds, workdir)
    result.window = window.close()
    return result


def concurrent_pair(
    a: Gateway, b: Gateway, double: Double, path: str, payload: bytes, connections: int, seconds: float, workdir: Path
) -> tuple[Load, Load]:
    """The same load on `a` and `b` at the same time (`connections` each), so whatever else the machine does hits
    both alike; what each process tree spent per request over the same window."""
    warm = [start_wrk(g.url + path, payload, g.headers, connections, 1, workdir) for g in (a, b)]
    for finish in warm:
        finish()
    settle(a.pid, b.pid, double.pid)
    windows = [Window(g, double) for g in (a, b)]
    runs = [start_wrk(g.url + path, payload, g.headers, connections, seconds, workdir) for g in (a, b)]
    loads = [finish() for finish in runs]
    for load, window in zip(loads, windows, strict=True):
        load.window = window.close()
    return loads[0], loads[1]


@dataclass
class Stream:
    chunks: int
    errors: int
    window: Window

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.window.seconds if self.window.seconds else 0.0

    @property
    def cpu_us_per_chunk(self) -> float:
        return self.window.cpu_s * 1e6 / self.chunks if self.chunks else float("nan")


def raw_post(gw: Gateway, path: str, payload: bytes) -> tuple[str, int, bytes]:
    """(host, port, request bytes) of one HTTP/1.1 POST of `payload` to the gateway, with its headers: the raw
    client's request, so the client side costs next to nothing."""
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in gw.headers.items())
    return host, int(port), (head + f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


async def stream_answers(gw: Gateway, path: str, payload: bytes, connections: int, seconds: float) -> tuple[int, int]:
    """Each connection sends streamed chats back to back for `seconds` (at least one) and reads every answer to its
    last chunk, so nothing is left running when the run ends (a gateway that does not cancel would otherwise keep
    working for a client that left). Raw HTTP/1.1 over asyncio: it only looks for the end of the chunked body, so
    the client costs little. Returns (complete 200 answers, errors)."""
    host, port, request = raw_post(gw, path, payload)
    stop_at = time.monotonic() + seconds

    async def connection() -> tuple[int, int]:
        reader, writer = await asyncio.open_connection(host, port)
        answers = errors = 0
        try:
            while True:
                writer.write(request)
                response_head = await reader.readuntil(b"\r\n\r\n")
                if b"transfer-encoding: chunked" not in response_head.lower():
                    return answers, errors + 1  # not a stream: this client cannot frame it
                tail = b""
                while tail[-7:] != b"\r\n0\r\n\r\n":  # the chunked body's last, empty chunk (RFC 9112 7.1)
                    data = await reader.read(1 << 18)
                    if not data:
                        return answers, errors + 1
                    tail = (tail + data)[-7:]
                if response_head.startswith(b"HTTP/1.1 200"):
                    answers += 1
                else:
                    errors += 1
                if time.monotonic() >= stop_at:
                    return answers, errors
        finally:
            writer.close()

    results = await asyncio.gather(*(connection() for _ in range(connections)))
    return sum(r[0] for r in results), sum(r[1] for r in results)


def run_async(coro):
    try:
        import uvloop  # the service's own dependency: a lighter client loop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def measured_stream(gw: Gateway, double: Double, path: str, connections: int, seconds: float, chunks: int) -> Stream:
    """Streamed answers of `chunks` chunks each, back to back on `connections` for `seconds`, every answer read to
    its end; one answer per connection first as warm-up."""
    payload = body(double.model, stream=True)
    double.configure(token_count=chunks)
    run_async(stream_answers(gw, path, payload, connections, 0))
    settle(gw.pid, double.pid)
    window = Window(gw, double)
    answers, errors = run_async(stream_answers(gw, path, payload, connections, seconds))
    return Stream(answers * chunks, errors, window.close())


# -- first byte, transit, disconnect (asyncio + httpx as the client) -------------------------------------------------


async def first_bytes(gw: Gateway, path: str, payload: bytes, clients: int) -> list[float]:
    """ms to the first body bytes of `clients` streamed chats sent at once."""

    async def one(client: httpx.AsyncClient) -> float:
        t0 = time.perf_counter()
        async with client.stream("POST", gw.url + path, content=payload, headers=gw.headers) as r:
            async for _ in r.aiter_raw():
                return (time.perf_counter() - t0) * 1e3
        return float("nan")

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers={"Content-Type": "application/json"}) as client:
        return list(await asyncio.gather(*(one(client) for _ in range(clients))))


def _epoch(created_at: str) -> float:
    # The double writes "2025-01-01T10:00:00.123456Z" (UTC, microseconds).
    return datetime.strptime(created_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


async def chunk_timings(gw: Gateway, path: str, payload: bytes, streams: int) -> tuple[list[float], list[float]]:
    """(transit ms of every token chunk: arrival - the double's created_at, only on Ollama's route; inter-arrival
    gaps ms). Token chunks only: a gateway's early empty chunk or SSE comment is skipped."""

    async def one(client: httpx.AsyncClient) -> tuple[list[float], list[float]]:
        transit, arrivals = [], []
        async with client.stream("POST", gw.url + path, content=payload, headers=gw.headers) as r:
            async for line in r.aiter_lines():
                now = time.time()
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    content = ((chunk.get("choices") or [{}])[0].get("delta") or {}).get("content") or ""
                elif line.startswith("{"):
                    chunk = json.loads(line)
                    content = (chunk.get("message") or {}).get("content", "")
                else:
                    continue
                if not content.strip().startswith("tok"):
                    continue
                if "created_at" in chunk:
                    transit.append((now - _epoch(chunk["created_at"])) * 1e3)
                arrivals.append(now)
        return transit, [(b - a) * 1e3 for a, b in zip(arrivals, arrivals[1:], strict=False)]

    limits = httpx.Limits(max_connections=streams)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers={"Content-Type": "application/json"}) as client:
        results = await asyncio.gather(*(one(client) for _ in range(streams)))
    return [t for r in results for t in r[0]], [g for r in results for g in r[1]]


async def leave_early(gw: Gateway, path: str, payload: bytes, stream: bool) -> tuple[float, float]:
    """Send one chat on a fresh connection, leave (close the socket) after the first token (streamed) or after
    0.5 s (non-streamed, upstream still silent). Returns (time sent, time left), epoch seconds."""
    host, port, request = raw_post(gw, path, payload)
    reader, writer = await asyncio.open_connection(host, port)
    sent = time.time()
    writer.write(request)
    try:
        if stream:
            seen = b""
            async with asyncio.timeout(30):
                while b"tok0" not in seen:
                    data = await reader.read(65536)
                    if not data:
                        break
                    seen = seen[-16:] + data
        else:
            await asyncio.sleep(0.5)
    finally:
        left = time.time()
        writer.close()
        await writer.wait_closed()
    return sent, left


def disconnect_to_close(gw: Gateway, double: Double, path: str, stream: bool, wait: float) -> tuple[float, str]:
    """ms from the client leaving to the upstream request closing at the double, and how it ended."""
    if stream:
        double.configure(token_count=int(wait / 0.05), token_delay=0.05)  # an answer as long as the wait
    else:
        double.configure(token_count=5, first_token_delay=wait)  # silent for as long as the wait
    sent, left = asyncio.run(leave_early(gw, path, body(double.model, stream), stream))
    deadline = time.monotonic() + wait + 2
    while True:
        recs = [r for r in double.records() if r["path"] == path and r["started_at"] >= sent - 0.1]
        if recs and recs[0]["finished_at"] is not None:
            rec = recs[0]
            how = "cancelled" if rec["cancelled"] else "ran to the end" if rec["completed"] else "closed"
            return (rec["finished_at"] - left) * 1e3, how
        if time.monotonic() > deadline:
            return float("inf"), "still open" if recs else "never forwarded"
        time.sleep(0.02)


# -- the run ---------------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    value: float = float("nan")
    text: str = ""  # what to print instead of (or after) the value: why it did not run, how it ended
    load_avg: float = float("nan")  # 1-minute load average when the measurement started
    others_cores: float = float("nan")  # cores busy with other work meanwhile (Window)
    rounds: list[float] = field(default_factory=list)  # each round's figure, in order (rounds interleave gateways)


Results = dict[str, dict[str, Cell]]  # row key -> gateway name -> cell


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"{os.cpu_count()} cores ({cpu}), {system}"


def versions(gateways: list[Gateway]) -> str:
    libs = ", ".join(f"{n} {importlib.metadata.version(n)}" for n in ("uvicorn", "fastapi", "aiohttp", "httpx"))
    peers_ = ", ".join(f"{g.name} {g.version}" for g in gateways if g.version)
    return f"{peers_}; service: {libs}"


def run_rows(args, gateways: dict[str, Gateway], variants: dict[str, dict], double: Double, workdir: Path) -> Results:
    """variants: label -> the fields its paired row adds to the request body."""
    res: Results = {}
    model = args.model
    core = [g for g in gateways.values() if g.name not in variants]

    def skip(key: str, gw: Gateway, why: str) -> None:
        res.setdefault(key, {})[gw.name] = Cell(text=why)

    def route_ok(key: str, gw: Gateway, path: str) -> bool:
        if not gw.up:
            skip(key, gw, f"not run: {gw.why_not}")
            return False
        if path.startswith("/api/") and not gw.ollama_routes:
            skip(key, gw, "n/a: serves the OpenAI routes only")
            return False
        return True

    def say(what: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} load {load1():.2f}] {what}", file=sys.stderr, flush=True)

    paths = (V1,) if args.openai_only else (V1, OLLAMA)
    # Unloaded and saturation: the same non-streamed bodies; rounds interleave the gateways.
    for path in paths:
        payload = body(model, stream=False)
        for conns, seconds, kind in ((1, args.unloaded_duration, "unloaded"), (32, args.duration, "saturation")):
            if kind not in args.rows:
                continue
            runs: dict[str, list[Load]] = {}
            for r in range(args.rounds):
                for gw in gateways.values():
                    if not route_ok(f"{kind} {path}", gw, path):
                        continue
                    if gw.name in variants and (path, kind) == (OLLAMA, "unloaded"):
                        continue
                    say(f"{kind} {path}, {conns} connection(s): {gw.name} (round {r + 1}/{args.rounds})")
                    double.configure()
                    run = measured_load(gw, double, path, payload, conns, seconds, workdir)
                    runs.setdefault(gw.name, []).append(run)
            for name, loads in runs.items():
                errors = sum(x.errors for x in loads)
                note = f"{errors} errors" if errors else ""
                figures = {
                    "p50": [x.p50_ms for x in loads],
                    "p99": [x.p99_ms for x in loads],
                    "rps": [x.rps for x in loads],
                    "cpu": [x.cpu_ms_per_request for x in loads],
                    "double cpu": [x.double_cpu_ms_per_request for x in loads],
                }
                la = max(x.window.load_avg for x in loads)
                others = max(x.window.others_cores for x in loads)
                for figure, values in figures.items():
                    cell = Cell(statistics.median(values), note, la, others, values)
                    res.setdefault(f"{kind} {path} {figure}", {})[name] = cell

    # Variants against the shipped service at the same time: the comparison a neighbour's load cannot skew.
    if "paired" in args.rows and gateways[SERVICE].up:
        ratios: dict[str, list[float]] = {}
        loads_seen: dict[str, list[Window]] = {}
        for r in range(args.rounds):
            for name in variants:
                gw = gateways[name]
                if not gw.up:
                    skip("paired cpu", gw, f"not run: {gw.why_not}")
                    continue
                say(f"paired, 16 + 16 connections, {V1}: {SERVICE} beside {name} (round {r + 1}/{args.rounds})")
                double.configure()
                payload = json.dumps({**json.loads(body(model, stream=False)), **variants[name]}).encode()
                shipped, other = concurrent_pair(gateways[SERVICE], gw, double, V1, payload, 16, args.duration, workdir)
                ratios.setdefault(name, []).append(other.cpu_ms_per_request / shipped.cpu_ms_per_request)
                loads_seen.setdefault(name, []).append(other.window)
        for name, values in ratios.items():
            windows = loads_seen[name]
            la, others = max(w.load_avg for w in windows), max(w.others_cores for w in windows)
            res.setdefault("paired cpu", {})[name] = Cell(statistics.median(values), "", la, others, values)

    # Streaming: 1,000-chunk answers on 8 connections.
    for path in paths if "streaming" in args.rows else ():
        key = f"stream {path}"
        for gw in gateways.values():
            if not route_ok(key, gw, path) or (gw.name in variants and path == OLLAMA):
                continue
            say(f"streaming {path}, {args.stream_chunks} chunks x {args.stream_connections} connections: {gw.name}")
            s = measured_stream(gw, double, path, args.stream_connections, args.duration, args.stream_chunks)
            note = f"{s.errors} errors" if s.errors else ""
            w = s.window
            res.setdefault(f"{key} chunks/s", {})[gw.name] = Cell(s.chunks_per_s, note, w.load_avg, w.others_cores)
            res.setdefault(f"{key} cpu", {})[gw.name] = Cell(s.cpu_us_per_chunk, note, w.load_avg, w.others_cores)

    # First byte while the double is silent.
    for path in paths if "first-byte" in args.rows else ():
        key = f"first byte {path}"
        for gw in core:
            if not route_ok(key, gw, path):
                continue
            say(f"first byte {path}, upstream silent {args.silent_seconds:g} s: {gw.name}")
            double.configure(first_token_delay=args.silent_seconds, token_count=2)
            w = Window(gw, double)
            times = asyncio.run(first_bytes(gw, path, body(model, stream=True), 8))
            w.close()
            res.setdefault(key, {})[gw.name] = Cell(statistics.median(times), "", w.load_avg, w.others_cores)

    # Per-chunk transit (Ollama's route: chunks carry created_at) and jitter (the OpenAI route).
    for path in (OLLAMA, V1) if "transit" in args.rows else ():
        for gw in core:
            if not route_ok(f"transit {path}", gw, path):
                if path == OLLAMA and gw.up and not gw.ollama_routes:
                    skip(f"transit {path} p50", gw, "n/a: OpenAI chunks carry no send time; see jitter")
                    skip(f"transit {path} p99", gw, "n/a: OpenAI chunks carry no send time; see jitter")
                continue
            say(f"transit {path}, a token every {args.token_delay * 1e3:g} ms: {gw.name}")
            double.configure(token_delay=args.token_delay, token_count=300)
            w = Window(gw, double)
            transit, gaps = asyncio.run(chunk_timings(gw, path, body(model, stream=True), 4))
            w.close()
            figures = {"jitter p99": percentile([abs(g - args.token_delay * 1e3) for g in gaps], 99)}
            if transit:
                figures.update({"transit p50": percentile(transit, 50), "transit p99": percentile(transit, 99)})
            for figure, value in figures.items():
                what, q = figure.split()
                res.setdefault(f"{what} {path} {q}", {})[gw.name] = Cell(value, "", w.load_avg, w.others_cores)

    # Embeddings: Ollama's /api/embed, once the double and the service have it.
    embed = {"model": model, "input": "Why is the sky blue?"}
    embed_why = None
    double.configure()
    if "embeddings" in args.rows and not double.has_route("/api/embed", embed):
        embed_why = "not run: the Ollama double has no /api/embed yet (it answered 404)"
    elif "embeddings" in args.rows and not double.has_route("/api/embed", embed, gateways[SERVICE].url):
        embed_why = "not run: the service has no /api/embed route yet (it answered 404)"
    for gw in core if "embeddings" in args.rows else ():
        for q in ("p50", "p99"):
            if embed_why:
                skip(f"embed {q}", gw, embed_why)
        if embed_why or not route_ok("embed p50", gw, "/api/embed"):
            continue
        say(f"embeddings /api/embed, 1 connection: {gw.name}")
        x = measured_load(gw, double, "/api/embed", json.dumps(embed).encode(), 1, args.unloaded_duration, workdir)
        res.setdefault("embed p50", {})[gw.name] = Cell(x.p50_ms, "", x.window.load_avg, x.window.others_cores)
        res.setdefault("embed p99", {})[gw.name] = Cell(x.p99_ms, "", x.window.load_avg, x.window.others_cores)

    # A client that leaves mid-answer: how long until the upstream request closes.
    for stream in (True, False) if "disconnect" in args.rows else ():
        key = f"disconnect {'stream' if stream else 'whole'}"
        for gw in core:
            if not route_ok(key, gw, V1):
                continue
            say(f"disconnect, {'streamed' if stream else 'non-streamed'}: {gw.name} ({args.disconnect_trials} trials)")
            w = Window(gw, double)
            wait = args.disconnect_wait
            trials = [disconnect_to_close(gw, double, V1, stream, wait) for _ in range(args.disconnect_trials)]
            w.close()
            double.wait_idle(args.disconnect_wait + 30)
            worst = max(seconds for seconds, _ in trials)
            hows = sorted({how for _, how in trials})
            text = ", ".join(hows) if worst != float("inf") else f"> {args.disconnect_wait:g} s, {', '.join(hows)}"
            res.setdefault(key, {})[gw.name] = Cell(worst, text, w.load_avg, w.others_cores)
    return res


# -- the report ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    label: str
    unit: str  # "ms", "us", "req/s", "chunks/s", "s"
    added: bool = False  # print gateways as + over direct (latency rows)


ROWS = [
    Row(f"unloaded {V1} p50", f"unloaded p50, 1 conn, {V1}", "ms", added=True),
    Row(f"unloaded {V1} p99", f"unloaded p99, 1 conn, {V1}", "ms", added=True),
    Row(f"unloaded {OLLAMA} p50", f"unloaded p50, 1 conn, {OLLAMA}", "ms", added=True),
    Row(f"unloaded {OLLAMA} p99", f"unloaded p99, 1 conn, {OLLAMA}", "ms", added=True),
    Row(f"saturation {V1} rps", f"throughput, 32 conn, {V1}", "req/s"),
    Row(f"saturation {V1} cpu", f"gateway CPU per request (direct: the double's), 32 conn, {V1}", "ms"),
    Row(f"saturation {OLLAMA} rps", f"throughput, 32 conn, {OLLAMA}", "req/s"),
    Row(f"saturation {OLLAMA} cpu", f"gateway CPU per request, 32 conn, {OLLAMA}", "ms"),
    Row(f"saturation {V1} double cpu", f"the double's CPU per request, 32 conn, {V1}", "ms"),
    Row(f"stream {V1} chunks/s", f"streaming, 1,000-chunk answers x 8 conn, {V1}", "chunks/s"),
    Row(f"stream {V1} cpu", f"gateway CPU per chunk (direct: the double's), {V1}", "us"),
    Row(f"stream {OLLAMA} chunks/s", f"streaming, 1,000-chunk answers x 8 conn, {OLLAMA}", "chunks/s"),
    Row(f"stream {OLLAMA} cpu", f"gateway CPU per chunk, {OLLAMA}", "us"),
    Row(f"first byte {V1}", f"first body byte, upstream silent, {V1} (median of 8)", "ms"),
    Row(f"first byte {OLLAMA}", f"first body byte, upstream silent, {OLLAMA} (median of 8)", "ms"),
    Row(f"transit {OLLAMA} p50", f"per-chunk transit p50, a token / 5 ms, {OLLAMA}", "ms"),
    Row(f"transit {OLLAMA} p99", f"per-chunk transit p99, a token / 5 ms, {OLLAMA}", "ms"),
    Row(f"jitter {V1} p99", f"inter-arrival jitter p99 (|gap - 5 ms|), {V1}", "ms"),
    Row("embed p50", "embeddings p50, 1 conn, /api/embed", "ms", added=True),
    Row("embed p99", "embeddings p99, 1 conn, /api/embed", "ms", added=True),
    Row("disconnect stream", f"client leaves a stream -> upstream closed, {V1} (worst of trials)", "ms"),
    Row("disconnect whole", f"client leaves a non-streamed answer -> upstream closed, {V1}", "ms"),
]
COLUMNS = ["direct", "nginx", SERVICE, LITELLM]


def fmt(value: float, unit: str, sign: bool = False) -> str:
    if value != value:  # NaN
        return "–"
    if value == float("inf"):
        return "never"
    if unit in ("req/s", "chunks/s"):
        return f"{value:,.0f} {unit}"
    digits = 3 if unit == "ms" and abs(value) < 1 else 2 if unit in ("ms", "s") else 1
    if unit == "us":
        digits = 1
    return f"{value:+.{digits}f} {unit}" if sign else f"{value:.{digits}f} {unit}"


def shown(row: Row, res: Results, name: str) -> float:
    """The figure a row compares: the value, or for latency rows what the gateway adds over direct."""
    cells = res.get(row.key, {})
    cell = cells.get(name)
    if cell is None or cell.value != cell.value:
        return float("nan")
    if row.added and name != "direct":
        direct = cells.get("direct")
        return cell.value - direct.value if direct else float("nan")
    return cell.value


def cell_text(row: Row, res: Results, name: str) -> str:
    cell = res.get(row.key, {}).get(name)
    if cell is None:
        return "–"
    if cell.value != cell.value:
        return cell.text or "–"
    text = fmt(shown(row, res, name), row.unit, sign=row.added and name != "direct")
    return f"{text} ({cell.text})" if cell.text else text


def ratio(row: Row, res: Results, other: str) -> str:
    mine, theirs = shown(row, res, SERVICE), shown(row, res, other)
    if mine != mine or theirs != theirs or theirs <= 0 or mine < 0 or float("inf") in (mine, theirs):
        return "–"  # not measured, never closed, or an added latency within the noise (<= 0)
    return f"{mine / theirs:.2f} x" if mine / theirs < 100 else f"{mine / theirs:,.0f} x"


def load_note(cells) -> str:
    """The highest 1-minute load average and the most cores other work kept busy, over a row's measurements."""
    loads = [c.load_avg for c in cells if c.load_avg == c.load_avg]
    others = [c.others_cores for c in cells if c.others_cores == c.others_cores]
    if not loads:
        return "–"
    return f"{max(loads):.2f}; {max(others):.2f}" if others else f"{max(loads):.2f}"


def print_side_by_side(res: Results, gateways: dict[str, Gateway]) -> None:
    header = ["measure", *(COLUMNS), "service ÷ nginx", "service ÷ LiteLLM", "load avg; others' cores"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in ROWS:
        cells = res.get(row.key, {})
        la = load_note(cells.values())
        values = [cell_text(row, res, name) if name in gateways else "–" for name in COLUMNS]
        print("| " + " | ".join([row.label, *values, ratio(row, res, "nginx"), ratio(row, res, LITELLM), la]) + " |")


def judge(res: Results) -> list[tuple[str, str, bool | None]]:
    """(target, what was measured, met) for each TARGET_*; met None when it could not be judged."""

    def v(key: str, name: str) -> float:
        return next((shown(r, res, name) for r in ROWS if r.key == key), float("nan"))

    out = []

    def add(target: str, measured: str, ok: bool, *inputs: float) -> None:
        known = all(x == x for x in inputs)
        out.append((target, measured if known else "not measured", ok if known else None))

    def busy(*keys: str) -> str:
        """A latency figure taken while other work kept the cores busy says more about them than about us."""
        cells = [c for k in keys for c in res.get(k, {}).values()]
        others = max((c.others_cores for c in cells if c.others_cores == c.others_cores), default=0.0)
        return f"; other work kept {others:.1f} cores busy: noise-bound" if others > NOISY_OTHERS_CORES else ""

    p50, p99 = v(f"unloaded {V1} p50", SERVICE), v(f"unloaded {V1} p99", SERVICE)
    noise = busy(f"unloaded {V1} p50")
    add(
        f"unloaded added p50 <= {TARGET_ADDED_P50_MS} ms", fmt(p50, "ms", True) + noise, p50 <= TARGET_ADDED_P50_MS, p50
    )
    add(
        f"unloaded added p99 <= {TARGET_ADDED_P99_MS:g} ms",
        fmt(p99, "ms", True) + noise,
        p99 <= TARGET_ADDED_P99_MS,
        p99,
    )
    cpu, cpu_ngx = v(f"saturation {V1} cpu", SERVICE), v(f"saturation {V1} cpu", "nginx")
    pairs = paired_ratios(res.get(f"saturation {V1} cpu", {}), SERVICE, "nginx")
    r = statistics.median(pairs) if pairs else float("nan")
    add(f"CPU per non-streamed request <= {TARGET_CPU_VS_NGINX:g} x nginx's",
        f"{fmt(cpu, 'ms')} vs {fmt(cpu_ngx, 'ms')} = {r:.1f} x", r <= TARGET_CPU_VS_NGINX, r)  # fmt: skip
    ch, ch_ngx = v(f"stream {V1} cpu", SERVICE), v(f"stream {V1} cpu", "nginx")
    r = ch / ch_ngx if ch_ngx else float("nan")
    add(f"CPU per streamed chunk <= {TARGET_CHUNK_CPU_VS_NGINX:g} x nginx's",
        f"{fmt(ch, 'us')} vs {fmt(ch_ngx, 'us')} = {r:.2f} x", r <= TARGET_CHUNK_CPU_VS_NGINX, r)  # fmt: skip
    rps, rps_l = v(f"saturation {V1} rps", SERVICE), v(f"saturation {V1} rps", LITELLM)
    r = rps / rps_l if rps_l else float("nan")
    add(f">= {TARGET_VS_LITELLM:g} x LiteLLM's throughput",
        f"{fmt(rps, 'req/s')} vs {fmt(rps_l, 'req/s')} = {r:.1f} x", r >= TARGET_VS_LITELLM, r)  # fmt: skip
    cpu_l = v(f"saturation {V1} cpu", LITELLM)
    r = cpu_l / cpu if cpu else float("nan")
    add(f"<= 1/{TARGET_VS_LITELLM:g} of LiteLLM's CPU per request",
        f"{fmt(cpu, 'ms')} vs {fmt(cpu_l, 'ms')} = 1/{r:.0f}", r >= TARGET_VS_LITELLM, r)  # fmt: skip
    for path in (V1, OLLAMA):
        fb = v(f"first byte {path}", SERVICE)
        add(f"first byte <= {TARGET_FIRST_BYTE_MS:g} ms ({path})", fmt(fb, "ms"), fb <= TARGET_FIRST_BYTE_MS, fb)
    tr, tr_d = v(f"transit {OLLAMA} p99", SERVICE), v(f"transit {OLLAMA} p99", "direct")
    add(f"transit p99 <= {TARGET_TRANSIT_P99_MS:g} ms ({OLLAMA}, arrival - the double's send)",
        f"{fmt(tr, 'ms')} (direct {fmt(tr_d, 'ms')}){busy(f'transit {OLLAMA} p99')}",
        tr <= TARGET_TRANSIT_P99_MS, tr)  # fmt: skip
    for kind in ("stream", "whole"):
        d = v(f"disconnect {kind}", SERVICE)
        how = res.get(f"disconnect {kind}", {}).get(SERVICE, Cell()).text
        what = "streamed" if kind == "stream" else "non-streamed"
        add(f"disconnect to upstream close <= {TARGET_DISCONNECT_S:g} s ({what})", f"{fmt(d, 'ms')} ({how})",
            d <= TARGET_DISCONNECT_S * 1e3, d)  # fmt: skip
    return out


def print_variants(res: Results, variants: list[str]) -> None:
    rows = [
        Row(f"unloaded {V1} p50", "unloaded added p50", "ms", added=True),
        Row(f"saturation {V1} rps", f"req/s, 32 conn, {V1}", "req/s"),
        Row(f"saturation {V1} cpu", f"CPU / request, {V1}", "ms"),
        Row(f"saturation {OLLAMA} cpu", f"CPU / request, {OLLAMA}", "ms"),
        Row(f"stream {V1} cpu", f"CPU / chunk, {V1}", "us"),
    ]
    header = ["service", *(row.label for row in rows), "CPU / request vs shipped: one after the other",
              "… at the same time (paired)", "load avg; others' cores"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for name in [SERVICE, *variants]:
        cells = []
        for row in rows:
            cell = res.get(row.key, {}).get(name)
            value = shown(row, res, name)
            if cell is None:
                cells.append("–")
            elif value != value:
                cells.append(cell.text or "–")
            else:
                text = fmt(value, row.unit, sign=row.added)
                if len(cell.rounds) > 1 and not row.added:
                    text += f" ({fmt(min(cell.rounds), row.unit)}–{fmt(max(cell.rounds), row.unit)})"
                cells.append(text)
        change = "–" if name == SERVICE else percent_change(res.get(f"saturation {V1} cpu", {}), name)
        paired = "–" if name == SERVICE else paired_change(res.get("paired cpu", {}).get(name))
        la = load_note(
            [res.get(f"saturation {V1} cpu", {}).get(name, Cell()), res.get("paired cpu", {}).get(name, Cell())]
        )
        print("| " + " | ".join([name, *cells, change, paired, la]) + " |")


def paired_ratios(cells: dict[str, Cell], name: str, base: str = SERVICE) -> list[float]:
    """`name`'s figure over `base`'s, round by round (each pair measured seconds apart, so a neighbour's load that
    comes and goes cancels out); the medians' ratio when there were no rounds. [] when either is missing."""
    mine, theirs = cells.get(name), cells.get(base)
    if mine is None or theirs is None or mine.value != mine.value or theirs.value != theirs.value:
        return []
    if theirs.value == 0:
        return []
    pairs = [m / t for m, t in zip(mine.rounds, theirs.rounds, strict=False) if t]
    return pairs or [mine.value / theirs.value]


def percent_change(cells: dict[str, Cell], name: str) -> str:
    """`name` against the shipped service: the median of the per-round ratios, with their range."""
    pairs = [r - 1 for r in paired_ratios(cells, name)]
    if not pairs:
        return "–"
    text = f"{statistics.median(pairs) * 100:+.1f} %"
    if len(pairs) > 1:
        text += f" ({min(pairs) * 100:+.0f} to {max(pairs) * 100:+.0f})"
    return text


def paired_change(cell: Cell | None) -> str:
    """A paired cell holds the variant's CPU per request over the shipped service's, one ratio per round."""
    if cell is None or cell.value != cell.value:
        return cell.text if cell else "–"
    text = f"{(cell.value - 1) * 100:+.1f} %"
    if len(cell.rounds) > 1:
        text += f" ({(min(cell.rounds) - 1) * 100:+.0f} to {(max(cell.rounds) - 1) * 100:+.0f})"
    return text


def profile_service(gw: Gateway, double: Double, seconds: float, out: Path, workdir: Path) -> None:
    """py-spy samples the service under the saturation load; writes py-spy's raw (collapsed) stacks to `out` and
    prints the breakdown by library (bench/pyspy_summary.py)."""
    error = peers.ensure_tool("py-spy")
    if error:
        print(f"\nprofile: not run: {error}")
        return
    import pyspy_summary

    pyspy = peers.TOOLS / "bin" / "py-spy"
    double.configure()
    payload = body(double.model, stream=False)
    wrk(gw.url + V1, payload, gw.headers, 32, 2, workdir)
    cmd = [str(pyspy), "record", "--pid", str(gw.pid), "--duration", f"{seconds:.0f}", "--rate", "250"]
    cmd += ["--format", "raw", "--output", str(out), "--nonblocking"]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wrk(gw.url + V1, payload, gw.headers, 32, seconds, workdir)
    _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not out.exists():
        print(f"\nprofile: py-spy failed ({spy.returncode}): {err.strip()[-300:]}")
        return
    print(f"\n**Where the service's CPU goes** (py-spy, {seconds:.0f} s of 32 connections on {V1}; stacks: {out})\n")
    pyspy_summary.print_summary(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of each saturation/streaming run (10)")
    parser.add_argument("--unloaded-duration", type=float, default=5, help="seconds of each 1-connection run (5)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat unloaded + saturation, interleaved; medians")
    parser.add_argument("--model", default="llama3.2:1b")
    parser.add_argument("--stream-chunks", type=int, default=1000, help="chunks per streamed answer (1000)")
    parser.add_argument("--stream-connections", type=int, default=8)
    parser.add_argument("--silent-seconds", type=float, default=3.0, help="upstream silence for the first-byte row")
    parser.add_argument("--token-delay", type=float, default=0.005, help="seconds between tokens, transit row")
    parser.add_argument("--disconnect-wait", type=float, default=5.0, help="bounded wait for the upstream to close")
    parser.add_argument("--disconnect-trials", type=int, default=3)
    parser.add_argument("--log-level", default="INFO", help="the service's LOG_LEVEL (default INFO, as deployed)")
    parser.add_argument(
        "--rows",
        type=lambda text: set(text.split(",")),
        default=set(SECTIONS),
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    parser.add_argument("--openai-only", action="store_true", help=f"only {V1}, not {OLLAMA}")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out (its row says so)")
    parser.add_argument("--no-httpx", action="store_true", help="leave out the httpx-aiohttp variant")
    parser.add_argument("--no-policy", action="store_true", help="leave out the request policy's variants")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="'LABEL: [dir=PATH] [app=MOD:ATTR] [NAME=VALUE ...] [--uvicorn-option ...]'",
        help="another service row (a scratch copy, environment, uvicorn options), measured in the same run",
    )
    parser.add_argument("--profile", type=Path, help="also py-spy the service under load; raw stacks to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs and configs")
    args = parser.parse_args()
    if args.rows - set(SECTIONS):
        parser.error(f"--rows: unknown {sorted(args.rows - set(SECTIONS))}; known: {', '.join(SECTIONS)}")
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])

    error = peers.ensure_apt("wrk", "wrk")
    if error:
        raise SystemExit(f"{error}: the load generator is required")
    specs = [] if args.no_httpx else [ServiceSpec.parse(HTTPX_VARIANT)]
    specs += [] if args.no_policy else [ServiceSpec.parse(text) for text in POLICY_VARIANTS]
    specs += [ServiceSpec.parse(text) for text in args.variant]
    started_load = os.getloadavg()

    with ExitStack() as stack:
        if args.keep_logs:
            workdir = Path(tempfile.mkdtemp(prefix="bench-service-"))
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-service-")))
        print(f"machine: {machine()}\nlogs: {workdir}", file=sys.stderr)
        # This bench measures HTTP, not Ollama's scheduler (bench/isolation.py does): enough slots that no request
        # waits for one (Ollama's default, which the double keeps, is 1).
        direct = peers.start_double(stack, args.model, workdir, "--num-parallel", "1024")
        double = Double(direct, args.model)
        gateways = {"direct": direct, "nginx": peers.start_nginx(stack, direct, workdir)}
        gateways[SERVICE] = peers.start_service(
            stack, ServiceSpec(SERVICE), args.model, direct, workdir, args.log_level
        )
        if args.no_litellm:
            gateways[LITELLM] = Gateway(LITELLM, ollama_routes=False, why_not="left out (--no-litellm)")
        else:
            gateways[LITELLM] = peers.start_litellm(stack, args.model, direct, workdir)
        for spec in specs:
            if spec.app == "service_variant:app":
                error = peers.ensure_tool("httpx_aiohttp")
                if error:
                    gateways[spec.label] = Gateway(spec.label, why_not=error)
                    continue
            gateways[spec.label] = peers.start_service(stack, spec, args.model, direct, workdir, args.log_level)
        variants = {s.label: s.body for s in specs}
        for gw in gateways.values():
            print(f"{gw.name}: {gw.url or '-'} {'up' if gw.up else 'NOT UP: ' + str(gw.why_not)}", file=sys.stderr)

        res = run_rows(args, gateways, variants, double, workdir)
        if args.profile and gateways[SERVICE].up:
            profile_service(gateways[SERVICE], double, args.duration, args.profile.resolve(), workdir)
    ended_load = os.getloadavg()

    print("\n**Gateways side by side** (`make bench-service`)\n")
    print(f"command: `{command}`  ")
    print(f"machine: {machine()}  ")
    print(f"load average (1/5/15 min): {' / '.join(f'{x:.2f}' for x in started_load)} at the start, "
          f"{' / '.join(f'{x:.2f}' for x in ended_load)} at the end  ")  # fmt: skip
    print(f"versions: {versions(list(gateways.values()))}  ")
    rounds = f"; unloaded and saturation rows: median of {args.rounds} interleaved rounds" if args.rounds > 1 else ""
    print("load generator: wrk; CPU: the gateway's whole process tree from /proc; latency rows show what each "
          f"gateway adds over direct{rounds}\n")  # fmt: skip
    print_side_by_side(res, gateways)
    print("\n**Targets** (judged from this run)\n")
    print("| target | measured | met |\n|---|---|---|")
    for target, measured, ok in judge(res):
        print(f"| {target} | {measured} | {'met' if ok else 'not judged' if ok is None else '**missed**'} |")
    if variants:
        print("\n**Service variants** (same run; CPU per request is the figure to compare)\n")
        print_variants(res, variants)
        for spec in specs:
            print(f"- {spec.label}: {spec.describe()}")
        hx = next((s.label for s in specs if s.env.get("BENCH_UPSTREAM_CLIENT") == "httpx-aiohttp"), None)
        cpu = res.get(f"saturation {V1} cpu", {})
        paired = res.get("paired cpu", {}).get(hx)
        if hx and hx in cpu and cpu[hx].value == cpu[hx].value and SERVICE in cpu:
            more = cpu[hx].value / cpu[SERVICE].value - 1
            if paired is not None and paired.value == paired.value:
                more = paired.value - 1  # the comparison measured at the same time wins
            verdict = "adopt the httpx API" if more <= HTTPX_ADOPT_IF_CPU_WITHIN else "keep aiohttp's API"
            print(f"\nhttpx.AsyncClient over httpx-aiohttp: {cpu[hx].value:.3f} vs {cpu[SERVICE].value:.3f} ms CPU per "
                  f"request, {percent_change(cpu, hx)} one after the other, {paired_change(paired)} at the same time, "
                  f"against the shipped aiohttp client (rule: adopt if <= "
                  f"+{HTTPX_ADOPT_IF_CPU_WITHIN:.0%}): {verdict}")  # fmt: skip
    if max(started_load[0], ended_load[0]) > 0.5 * (os.cpu_count() or 1):
        print("\nother work was sharing the CPUs during this run: compare CPU per request and ratios, not req/s.")
    for gw in gateways.values():
        if gw.command:
            print(f"- {gw.name}: `{gw.command}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
