"""Admission control: bounded concurrency gates (generations; embeddings) and a per-client rate limit.

Ollama's own queue (OLLAMA_MAX_QUEUE=512) no longer refuses requests for a loaded model, they just wait
(server/sched.go), so the gateway keeps its own small, visible queue and refuses the rest with 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time

from prometheus_client import Gauge


class QueueFull(Exception):
    pass


class ConcurrencyGate:
    """At most `limit` holders; at most `max_queue` waiters; anyone beyond gets QueueFull at once."""

    def __init__(self, limit: int, max_queue: int, queue_depth: Gauge, in_flight: Gauge, name: str) -> None:
        self._sem = asyncio.Semaphore(limit)
        self._max_queue = max_queue
        self._waiting = 0
        self._queue_depth = queue_depth
        self._in_flight = in_flight
        self.name = name  # "generation" | "embedding": named in the 503 and the rejection metric

    def full(self) -> bool:
        return self._sem.locked() and self._waiting >= self._max_queue

    async def acquire(self) -> None:
        if self._sem.locked():
            if self.full():
                raise QueueFull
            self._waiting += 1
            self._queue_depth.set(self._waiting)
            try:
                await self._sem.acquire()  # a client that leaves while queued is cancelled here
            finally:
                self._waiting -= 1
                self._queue_depth.set(self._waiting)
        else:
            await self._sem.acquire()
        self._in_flight.inc()

    def release(self) -> None:
        self._in_flight.dec()
        self._sem.release()


class RateLimiter:
    """Token bucket per client key: `per_minute` burst, refilled continuously at per_minute/60 per second."""

    def __init__(self, per_minute: int) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last update)
        self._last_sweep = time.monotonic()

    def check(self, key: str) -> int:
        """Take one token; return 0 when allowed, else the seconds to wait (for Retry-After)."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - last) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._sweep(now)
            return 0
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self._rate))

    def _sweep(self, now: float) -> None:
        # Forget clients whose bucket is full again, so the dict does not grow with every address ever seen.
        if now - self._last_sweep < 60.0:
            return
        self._last_sweep = now
        full_after = 60.0
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}


class ClientKey:
    """The address a limit applies to.

    Behind cloudflared every request arrives from the tunnel connector, so its `Cf-Connecting-Ip` names the real
    client; that header is believed only from TRUSTED_PROXIES, or anyone could pick their own key.
    X-Forwarded-For is left to uvicorn's --forwarded-allow-ips handling, which rewrites the peer address itself.
    """

    def __init__(self, trusted: list[str]) -> None:
        self._nets = [ipaddress.ip_network(n, strict=False) for n in trusted]
        self._cache: dict[str, bool] = {}

    def _trusted(self, host: str) -> bool:
        hit = self._cache.get(host)
        if hit is None:
            try:
                addr = ipaddress.ip_address(host)
                hit = any(addr in net for net in self._nets)
            except ValueError:
                hit = False
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[host] = hit
        return hit

    def __call__(self, scope) -> str:
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        if self._trusted(peer):
            for name, value in scope["headers"]:
                if name == b"cf-connecting-ip":
                    return value.decode("latin-1").strip()
        return peer
