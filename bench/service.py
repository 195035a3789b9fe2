"""What the service adds on top of Ollama: the same load straight at the double and through the service.

`make bench-service` (not a test: it prints a table, it asserts nothing). In one run it starts, on loopback only:
  * the Ollama double (`python -m tests.fakes.ollama`, its own process, recording bounded),
  * the service under uvicorn (its own process, `APP_ENV=local`, limits opened wide so they do not interfere),
and measures
  1. 32 concurrent non-streamed `POST /api/chat` for N seconds, direct and through the service: p50/p99
     latency, requests/s, and the differences (added latency; throughput ratio). Load generator: `wrk` (C, one
     thread per core) when installed, else a small raw-socket asyncio generator -- the table says which.
  2. Time to first byte while upstream is silent (double first_token_delay): the service is meant to send an
     early empty chunk within ~100 ms so Cloudflare's 100 s origin timer never fires.
  3. Added per-chunk delay while streaming: every chunk carries the double's `created_at` (its wall clock at
     send time, same machine), so arrival - created_at is the transit time of each chunk; through the service
     minus direct is what the proxy adds per chunk. Inter-arrival gaps are printed too.

On 2 cores the load generator, the service and the double share the CPUs: the "service" run is the whole
machine doing the job, which is the honest figure for a single Mac-Mini-sized box, but not a lab measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CHAT_BODY = {"model": "", "messages": [{"role": "user", "content": "Why is the sky blue?"}], "stream": False}

# The targets of issue 2 and the published LiteLLM reference (1 instance, 2 CPU) they are judged against.
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_RPS = 950.0
TARGET_RATIO = 0.80
TARGET_FIRST_BYTE_MS = 100.0
TARGET_CHUNK_P99_MS = 2.0
LITELLM = {"p50": "3 ms", "p99": "31 ms", "rps": "475 req/s"}


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: list[float] = field(default_factory=list)  # CPU ms per request of each measured process

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


# -- processes ---------------------------------------------------------------------------------------------


def start_double(stack: ExitStack, model: str, logdir: Path) -> tuple[str, int]:
    log = open(logdir / "double.log", "w")  # noqa: SIM115 - closed by the ExitStack
    stack.callback(log.close)
    proc = subprocess.Popen(
        [PYTHON, "-m", "tests.fakes.ollama", "--port", "0", "--model", model],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    stack.callback(stop_process, proc)
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        raise SystemExit(f"the Ollama double did not start: {line!r}; see {logdir / 'double.log'}")
    return match.group(1), proc.pid


def start_service(stack: ExitStack, model: str, double_url: str, logdir: Path, log_level: str) -> tuple[str, int]:
    port = free_port()
    env = {
        **os.environ,
        "APP_ENV": "local",
        "MODEL_NAME": model,
        "OLLAMA_BASE_URL": double_url,
        "RATE_LIMIT_PER_MINUTE": "0",  # 0 disables the limiter (service/app/config.py)
        "MAX_CONCURRENT": "64",  # above the load's 32, so no request waits in the service's queue
        "MAX_QUEUE": "1000",
        "LOG_LEVEL": log_level,
    }
    log = open(logdir / "service.log", "w")  # noqa: SIM115 - closed by the ExitStack
    stack.callback(log.close)
    cmd = [PYTHON, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, cwd=REPO / "service", env=env, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(stop_process, proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with {proc.returncode}:\n{(logdir / 'service.log').read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return url, proc.pid
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the service did not answer /health within 30 s; see {logdir / 'service.log'}")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def configure_double(double_url: str, **knobs: object) -> None:
    httpx.post(f"{double_url}/_double/reset", timeout=5).raise_for_status()
    httpx.post(f"{double_url}/_double/config", json=knobs, timeout=5).raise_for_status()


# -- 1. throughput and latency ---------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[@BODY@]]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def run_wrk(url: str, body: bytes, concurrency: int, seconds: float, workdir: Path) -> LoadResult:
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT.replace("@BODY@", body.decode()))
    threads = max(1, min(os.cpu_count() or 1, concurrency))
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds:.0f}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    match = re.search(r"^BENCH (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
    if not match:
        raise SystemExit(f"could not read wrk's result:\n{out}")
    n, dur_us, p50_us, p99_us, errors = map(int, match.groups())
    return LoadResult(n, dur_us / 1e6, p50_us / 1e3, p99_us / 1e3, errors)


async def _py_worker(host: str, port: int, path: str, body: bytes, stop_at: float, lat: list[float]) -> int:
    """One keep-alive connection sending requests back to back; returns the number of non-200 answers."""
    reader, writer = await asyncio.open_connection(host, port)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    errors = 0
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            errors += not head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
    return errors


def run_python_load(url: str, body: bytes, concurrency: int, seconds: float) -> LoadResult:
    """Fallback load generator (no wrk): raw HTTP/1.1 keep-alive over asyncio, on uvloop when present."""
    parsed = httpx.URL(url)
    lat: list[float] = []

    async def main() -> int:
        stop_at = time.perf_counter() + seconds
        results = await asyncio.gather(
            *(_py_worker(parsed.host, parsed.port, parsed.path, body, stop_at, lat) for _ in range(concurrency))
        )
        return sum(results)

    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    t0 = time.perf_counter()
    errors = runner(main())
    elapsed = time.perf_counter() - t0
    ms = [x * 1e3 for x in lat]
    return LoadResult(len(ms), elapsed, percentile(ms, 50), percentile(ms, 99), errors)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def load(
    url: str, body: bytes, concurrency: int, seconds: float, workdir: Path, use_wrk: bool, pids: list[int]
) -> LoadResult:
    """Warm up for 2 s, then measure; also the CPU time each of `pids` spent per request (ms), which a
    neighbour's work on the same cores disturbs far less than latency and req/s do."""

    def run(secs: float) -> LoadResult:
        if use_wrk:
            return run_wrk(url, body, concurrency, secs, workdir)
        return run_python_load(url, body, concurrency, secs)

    run(min(2.0, seconds))  # warm-up: connections and pools
    before = [cpu_seconds(pid) for pid in pids]
    result = run(seconds)
    result.cpu_ms = [
        (cpu_seconds(pid) - b) * 1e3 / max(result.requests, 1) for pid, b in zip(pids, before, strict=True)
    ]
    return result


# -- 2. first byte while upstream is silent ----------------------------------------------------------------------


async def first_bytes(url: str, model: str, clients: int) -> tuple[list[float], list[float]]:
    """Time to response headers and to the first body bytes of a streamed chat, for `clients` at once."""
    body = {**CHAT_BODY, "model": model, "stream": True}

    async def one(client: httpx.AsyncClient) -> tuple[float, float]:
        t0 = time.perf_counter()
        async with client.stream("POST", f"{url}/api/chat", json=body) as r:
            t_head = time.perf_counter() - t0
            async for _ in r.aiter_raw():
                return t_head, time.perf_counter() - t0
        return t_head, float("nan")

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=clients)) as client:
        pairs = await asyncio.gather(*(one(client) for _ in range(clients)))
    return [p[0] * 1e3 for p in pairs], [p[1] * 1e3 for p in pairs]


# -- 3. per-chunk delay while streaming -----------------------------------------------------------------------------


def _epoch(created_at: str) -> float:
    # "2025-01-01T10:00:00.123456Z" -> epoch seconds (the double writes microseconds, UTC).
    from datetime import UTC, datetime

    return datetime.strptime(created_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


async def chunk_timings(url: str, model: str, streams: int) -> tuple[list[float], list[float]]:
    """(transit ms of every token chunk: arrival - double's created_at, inter-arrival gaps ms)."""
    body = {**CHAT_BODY, "model": model, "stream": True}

    async def one(client: httpx.AsyncClient) -> tuple[list[float], list[float]]:
        transit, arrivals = [], []
        async with client.stream("POST", f"{url}/api/chat", json=body) as r:
            async for line in r.aiter_lines():
                now = time.time()
                if not line:
                    continue
                chunk = json.loads(line)
                content = (chunk.get("message") or {}).get("content", "")
                if chunk.get("done") or not content.strip().startswith("tok"):
                    continue  # only the double's token chunks (not a service's early empty chunk)
                transit.append((now - _epoch(chunk["created_at"])) * 1e3)
                arrivals.append(now)
        gaps = [(b - a) * 1e3 for a, b in zip(arrivals, arrivals[1:], strict=False)]
        return transit, gaps

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=streams)) as client:
        results = await asyncio.gather(*(one(client) for _ in range(streams)))
    return [t for r in results for t in r[0]], [g for r in results for g in r[1]]


# -- report ----------------------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of load per side (default 10)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--model", default="llama3.2:1b")
    parser.add_argument("--silent-seconds", type=float, default=3.0, help="upstream silence for the TTFB test")
    parser.add_argument("--token-delay", type=float, default=0.005, help="seconds between streamed tokens")
    parser.add_argument("--log-level", default="INFO", help="the service's LOG_LEVEL (default INFO, as deployed)")
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator even with wrk")
    parser.add_argument("--keep-logs", action="store_true", help="keep the double's and the service's logs")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # other work on the same cores skews every row
    use_wrk = shutil.which("wrk") is not None and not args.python_load
    generator = "wrk" if use_wrk else "python asyncio raw-socket generator (install wrk for a lighter one)"
    body = json.dumps({**CHAT_BODY, "model": args.model}).encode()

    with ExitStack() as stack:
        if args.keep_logs:
            workdir = Path(tempfile.mkdtemp(prefix="bench-service-"))
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-service-")))
        print(f"machine: {machine()}\nload generator: {generator}\nlogs: {workdir}", file=sys.stderr)
        double, double_pid = start_double(stack, args.model, workdir)
        service, service_pid = start_service(stack, args.model, double, workdir, args.log_level)

        # 1. the same non-streamed load, direct then through the service
        configure_double(double, token_count=5)
        print(f"load: {args.concurrency} connections x {args.duration:.0f} s, direct ...", file=sys.stderr)
        direct = load(f"{double}/api/chat", body, args.concurrency, args.duration, workdir, use_wrk, [double_pid])
        print("load: through the service ...", file=sys.stderr)
        proxied = load(
            f"{service}/api/chat", body, args.concurrency, args.duration, workdir, use_wrk, [service_pid, double_pid]
        )

        # 2. first byte while upstream is silent
        configure_double(double, first_token_delay=args.silent_seconds, token_count=2)
        print(f"first byte: upstream silent for {args.silent_seconds} s ...", file=sys.stderr)
        d_head, d_first = asyncio.run(first_bytes(double, args.model, 8))
        s_head, s_first = asyncio.run(first_bytes(service, args.model, 8))

        # 3. per-chunk delay while streaming
        configure_double(double, token_delay=args.token_delay, token_count=300)
        print("streaming: per-chunk timing ...", file=sys.stderr)
        d_transit, d_gaps = asyncio.run(chunk_timings(double, args.model, 4))
        s_transit, s_gaps = asyncio.run(chunk_timings(service, args.model, 4))

    added_p50 = proxied.p50_ms - direct.p50_ms
    added_p99 = proxied.p99_ms - direct.p99_ms
    ratio = proxied.rps / direct.rps if direct.rps else 0.0
    first_ms = statistics.median(s_first)
    chunk_p50 = percentile(s_transit, 50) - percentile(d_transit, 50)
    chunk_p99 = percentile(s_transit, 99) - percentile(d_transit, 99)

    rows = [
        ("p50 latency, 32 concurrent non-streamed /api/chat", f"{direct.p50_ms:.2f} ms", f"{proxied.p50_ms:.2f} ms",
         f"{added_p50:+.2f} ms", f"≤ {TARGET_ADDED_P50_MS:g} ms added", verdict(added_p50 <= TARGET_ADDED_P50_MS),
         LITELLM["p50"]),
        ("p99 latency, same load", f"{direct.p99_ms:.2f} ms", f"{proxied.p99_ms:.2f} ms", f"{added_p99:+.2f} ms",
         f"≤ {TARGET_ADDED_P99_MS:g} ms added", verdict(added_p99 <= TARGET_ADDED_P99_MS), LITELLM["p99"]),
        ("throughput, same load", f"{direct.rps:.0f} req/s", f"{proxied.rps:.0f} req/s", f"{ratio:.0%} of direct",
         f"≥ {TARGET_RPS:g} req/s and ≥ {TARGET_RATIO:.0%}",
         verdict(proxied.rps >= TARGET_RPS and ratio >= TARGET_RATIO), LITELLM["rps"]),
        ("CPU per request (service + double)", f"{direct.cpu_ms[0]:.3f} ms",
         f"{proxied.cpu_ms[0]:.3f} + {proxied.cpu_ms[1]:.3f} ms", f"service {proxied.cpu_ms[0]:.3f} ms",
         "–", "–", "–"),
        (f"first body byte, upstream silent {args.silent_seconds:g} s (median of 8)",
         f"{statistics.median(d_first):.0f} ms", f"{first_ms:.1f} ms",
         f"headers {statistics.median(s_head):.1f} ms", f"≤ {TARGET_FIRST_BYTE_MS:g} ms",
         verdict(first_ms <= TARGET_FIRST_BYTE_MS), "–"),
        ("per-chunk transit p50 (arrival − double's send)", f"{percentile(d_transit, 50):.2f} ms",
         f"{percentile(s_transit, 50):.2f} ms", f"{chunk_p50:+.2f} ms", "–", "–", "–"),
        ("per-chunk transit p99", f"{percentile(d_transit, 99):.2f} ms", f"{percentile(s_transit, 99):.2f} ms",
         f"{chunk_p99:+.2f} ms", f"≤ {TARGET_CHUNK_P99_MS:g} ms added", verdict(chunk_p99 <= TARGET_CHUNK_P99_MS),
         "–"),
        (f"chunk inter-arrival p50 / p99 (sent every {args.token_delay * 1e3:g} ms)",
         f"{percentile(d_gaps, 50):.2f} / {percentile(d_gaps, 99):.2f} ms",
         f"{percentile(s_gaps, 50):.2f} / {percentile(s_gaps, 99):.2f} ms", "–", "–", "–", "–"),
    ]  # fmt: skip
    header = ("measure", "direct (double)", "through service", "added / ratio", "target", "met", "LiteLLM 1×2 CPU")
    print(f"\n**Service benchmark** — {machine()}; load generator: {generator}; "
          f"{args.duration:g} s per side, {args.concurrency} connections\n")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if proxied.cpu_ms and proxied.cpu_ms[0] > 0:
        print(
            f"\nthe service used {proxied.cpu_ms[0]:.3f} ms of CPU per request: one uvicorn worker saturates one core"
            f" at about {1e3 / proxied.cpu_ms[0]:.0f} req/s (an estimate, not a measurement)"
        )
    print(f"\nload average (1 min) before the run: {load_before:.2f} on {os.cpu_count()} CPUs", end="")
    busy = load_before > 0.5 * (os.cpu_count() or 1)
    print(" -- other work was sharing the CPUs; rerun on an idle machine" if busy else "")
    errors = direct.errors + proxied.errors
    print(f"\nrequests: direct {direct.requests}, service {proxied.requests}; non-2xx or socket errors: {errors}")
    if errors:
        print("WARNING: errors during the load runs; the figures above are not clean.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
