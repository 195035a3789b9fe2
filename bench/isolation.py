"""`make bench-isolation`: production's time to first token while staging is flooded, with and without shares of
Ollama's slots, side by side in one run.

One process tree on loopback (ephemeral ports): the Ollama double with SLOTS parallel slots (`python -m
tests.fakes.ollama --num-parallel 4`, each generation taking --generation-seconds) and, per scenario, a production
and a staging service (`uvicorn app.main:app` from service/, started by bench/peers.py). An environment's share of
Ollama's slots is its service's MAX_CONCURRENT:

  alone             production alone (MAX_CONCURRENT 3)
  flood, shares     production 3 + staging 1 = the 4 slots; 32 staging streams, staging's MAX_QUEUE holds them
  flood, no shares  production 4, staging 4: either may take every slot; the same 32 staging streams

Production's probe is a streamed /api/chat for one token (options.num_predict 1): it holds a slot for milliseconds,
so its time to first token is its wait. Probes go one at a time, each once the whole flood is in: as many staging
generations streaming at the double as staging's share (the double's /_double/requests) and the other streams in
staging's own queue (its gateway_queue_depth). Every probe so meets staging's generations freshly started: without
shares it waits for one of them to end (about one generation), with shares it finds its own slots free. The table
prints p50 / p99 of the probes' time to first token (with 20 probes, p99 is the slowest), staging's generations
streaming and queued when each probe was sent and the staging requests refused (503), then the command, date,
cores, CPU model and load average.

tests/unit/test_isolation.py asserts the same contrast with this module's measuring code (loaded by path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

SLOTS = 4  # the double's OLLAMA_NUM_PARALLEL in every scenario
STREAMS = 32  # concurrent staging streams in the flood scenarios
MODEL = "llama3.2:1b"
TOKENS = 21  # tokens of a staging answer; token_delay = generation time / (TOKENS - 1)
FLOOD_BODY = {"model": MODEL, "messages": [{"role": "user", "content": "staging flood"}], "stream": True}
PROBE_BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "production probe"}],
    "stream": True,
    "options": {"num_predict": 1},
}


@dataclass(frozen=True)
class Scenario:
    name: str
    production_slots: int  # production's MAX_CONCURRENT
    staging_slots: int  # staging's MAX_CONCURRENT (0: no staging service, no flood)


SCENARIOS = (
    Scenario("alone", 3, 0),
    Scenario("flood, shares", 3, 1),
    Scenario("flood, no shares", SLOTS, SLOTS),
)


def service_env(double_url: str, max_concurrent: int, app_env: str) -> dict[str, str]:
    """One environment's service: its share of Ollama's slots is MAX_CONCURRENT; its queue holds the whole flood."""
    return {
        "APP_ENV": "local",
        "APP_VERSION": f"isolation-{app_env}",
        "MODEL_NAME": MODEL,
        "OLLAMA_BASE_URL": double_url,
        "RATE_LIMIT_PER_MINUTE": "0",
        "MAX_CONCURRENT": str(max_concurrent),
        "MAX_QUEUE": str(STREAMS),
    }


def double_knobs(generation_seconds: float) -> dict[str, object]:
    return {"token_count": TOKENS, "token_delay": generation_seconds / (TOKENS - 1)}


class Flood:
    """`streams` staging clients, each sending a streamed chat and reading it to its end, again and again, until
    stopped (which closes their connections: the service cancels the upstream requests)."""

    def __init__(self, url: str, streams: int = STREAMS) -> None:
        self.url = url
        self.streams = streams
        self.refused = 0  # 503 from the staging service (its queue full)
        self.errors: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="staging-flood", daemon=True)
        self._tasks: list[asyncio.Task] = []

    def __enter__(self) -> Flood:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        limits = httpx.Limits(max_connections=self.streams, max_keepalive_connections=self.streams)
        self._client = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(None), limits=limits)
        self._tasks = [asyncio.ensure_future(self._stream()) for _ in range(self.streams)]

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def _stream(self) -> None:
        while True:
            try:
                async with self._client.stream("POST", "/api/chat", json=FLOOD_BODY) as resp:
                    if resp.status_code == 503:
                        self.refused += 1
                        await asyncio.sleep(0.1)  # a refused client retries, not in a tight loop
                        continue
                    async for _ in resp.aiter_lines():
                        pass
            except httpx.HTTPError as exc:
                self.errors.append(repr(exc))
                await asyncio.sleep(0.1)


def running_generations(double_url: str, who: str) -> int:
    """Generations whose prompt says `who` that the double is streaming right now (first token sent, not ended)."""
    records = httpx.get(f"{double_url}/_double/requests", timeout=10).json()
    return sum(
        1
        for r in records
        if r["path"] == "/api/chat"
        and r["finished_at"] is None
        and r["chunks_sent"] > 0
        and who in json.dumps(r["body"] or {})
    )


def queued(service_url: str) -> int:
    """Generations waiting in a service's own queue (its gateway_queue_depth gauge)."""
    for line in httpx.get(f"{service_url}/metrics", timeout=10).text.splitlines():
        if line.startswith("gateway_queue_depth "):
            return int(float(line.split()[1]))
    raise RuntimeError(f"{service_url}/metrics has no gateway_queue_depth")


def wait_for_flood(double_url: str, staging_url: str, share: int, timeout: float = 60.0) -> None:
    """Until the whole flood is in: `share` staging generations streaming at the double, the rest of the streams
    waiting in the staging service's queue."""
    deadline = time.monotonic() + timeout
    while running_generations(double_url, "staging") != share or queued(staging_url) != STREAMS - share:
        if time.monotonic() > deadline:
            raise TimeoutError(f"staging did not have {share} generations running and the rest queued in {timeout} s")
        time.sleep(0.01)


def wait_until_idle(double_url: str, timeout: float = 30.0) -> None:
    """Until every request the double has seen has ended (a scenario's leftovers must not hold slots)."""
    deadline = time.monotonic() + timeout
    while any(r["finished_at"] is None for r in httpx.get(f"{double_url}/_double/requests", timeout=10).json()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the double still had requests running after {timeout} s")
        time.sleep(0.05)


def time_to_first_token(client: httpx.Client, url: str) -> float:
    """Seconds from sending production's probe to its first token (the service's early empty chunks skipped)."""
    start = time.perf_counter()
    with client.stream("POST", f"{url}/api/chat", json=PROBE_BODY) as resp:
        resp.raise_for_status()
        lines = resp.iter_lines()
        for line in lines:
            if line and json.loads(line).get("message", {}).get("content"):
                first = time.perf_counter() - start
                break
        else:
            raise RuntimeError("the probe's stream ended without a token")
        for _ in lines:  # the final chunk follows at once (one token)
            pass
    return first


@dataclass
class Result:
    scenario: Scenario
    ttft: list[float] = field(default_factory=list)
    refused: int = 0  # staging requests its service refused (503) during the scenario

    @property
    def p50(self) -> float:
        return statistics.median(self.ttft)

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.ttft, n=100, method="inclusive")[98]


def measure(scenario: Scenario, double_url: str, production_url: str, staging_url: str | None, probes: int) -> Result:
    """Production's probes one at a time, under `STREAMS` staging streams when the scenario has a staging share."""
    result = Result(scenario)
    flood = Flood(staging_url) if scenario.staging_slots else contextlib.nullcontext()
    with httpx.Client(timeout=60) as client, flood:
        for _ in range(probes):
            if scenario.staging_slots:
                wait_for_flood(double_url, staging_url, scenario.staging_slots)
            result.ttft.append(time_to_first_token(client, production_url))
    if isinstance(flood, Flood):
        result.refused = flood.refused
        if flood.errors:
            raise RuntimeError(f"staging streams failed: {flood.errors[:3]}")
    return result


# -- make bench-isolation ------------------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def table(results: list[Result], generation_seconds: float) -> str:
    lines = [
        f"| scenario (production + staging MAX_CONCURRENT, {SLOTS} slots) | p50 TTFT | p99 TTFT | requests "
        "| staging at each probe: streaming + queued (refused) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        limits = f"{r.scenario.production_slots} + {r.scenario.staging_slots or '-'}"
        share = r.scenario.staging_slots
        staging = f"{share} + {STREAMS - share} ({r.refused})" if share else "-"
        lines.append(
            f"| {r.scenario.name} ({limits}) | {r.p50 * 1000:.0f} ms | {r.p99 * 1000:.0f} ms | {len(r.ttft)} "
            f"| {staging} |"
        )
    lines.append(
        f"\nOne staging generation takes {generation_seconds:g} s ({TOKENS} tokens); {STREAMS} staging streams."
    )
    return "\n".join(lines)


@contextlib.contextmanager
def processes(generation_seconds: float, logdir: Path) -> Iterator[tuple[str, Callable[[str, int], str]]]:
    """The double, and a function that starts a service for (app_env, MAX_CONCURRENT)."""
    import peers  # bench/peers.py: imported here so that the test can load this module by path

    with contextlib.ExitStack() as stack:
        double = peers.start_double(stack, MODEL, logdir, "--num-parallel", str(SLOTS))
        httpx.post(f"{double.url}/_double/config", json=double_knobs(generation_seconds), timeout=10)

        def service(app_env: str, max_concurrent: int) -> str:
            spec = peers.ServiceSpec(app_env, env=service_env(double.url, max_concurrent, app_env))
            gateway = peers.start_service(stack, spec, MODEL, double, logdir, "WARNING")
            if not gateway.up:
                raise SystemExit(f"the {app_env} service did not start: {gateway.why_not}")
            return gateway.url

        yield double.url, service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=20, help="production requests per scenario (20)")
    parser.add_argument("--generation-seconds", type=float, default=2.0, help="one staging generation (2 s)")
    args = parser.parse_args(argv)

    started = datetime.now(UTC)
    load = os.getloadavg()
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-isolation-") as tmp,
        processes(args.generation_seconds, Path(tmp)) as (double_url, service),
    ):
        for scenario in SCENARIOS:
            production = service(f"production-{len(results)}", scenario.production_slots)
            staging = service(f"staging-{len(results)}", scenario.staging_slots) if scenario.staging_slots else None
            print(f"{scenario.name}: {args.probes} probes ...", flush=True)
            results.append(measure(scenario, double_url, production, staging, args.probes))
            wait_until_idle(double_url)
    took = (datetime.now(UTC) - started).total_seconds()
    command = shlex.join(["python", "bench/isolation.py", *(argv if argv is not None else sys.argv[1:])])
    print()
    print(table(results, args.generation_seconds))
    averages = [" ".join(f"{v:.2f}" for v in values) for values in (load, os.getloadavg())]
    print(f"\n`{command}` on {started:%Y-%m-%d %H:%M} UTC, {took:.0f} s; {os.cpu_count()} cores, {cpu_model()};")
    print(f"load average (1, 5, 15 min) {averages[0]} at the start, {averages[1]} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
