"""Prometheus metrics (prometheus_client), exposed at GET /metrics.

Labels use the route template, never the raw path, so an attacker cannot blow up the series count.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# The *_created series double the output and nobody queries them.
disable_created_metrics()

# One registry per app instance (tests start several apps in one process).


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests_total", "Requests answered", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to the end of the response (streams included)",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.first_chunk = Histogram(
            "gateway_time_to_first_chunk_seconds",
            "Time from request to the first chunk produced by Ollama (not the early empty chunk)",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "gateway_queue_depth", "Generations waiting for a concurrency slot", registry=self.registry
        )
        self.in_flight = Gauge("gateway_generations_in_flight", "Generations running upstream", registry=self.registry)
        self.embed_queue_depth = Gauge(
            "gateway_embed_queue_depth", "Embedding requests waiting for a slot of their own", registry=self.registry
        )
        self.embed_in_flight = Gauge(
            "gateway_embeddings_in_flight", "Embedding requests running upstream", registry=self.registry
        )
        # Tokens from each answer's final object (tokens.py); model is one of the served models (a bounded set).
        self.prompt_tokens = Counter(
            "gateway_prompt_tokens_total", "Prompt tokens Ollama reported", ["model", "route"], registry=self.registry
        )
        self.completion_tokens = Counter(
            "gateway_completion_tokens_total",
            "Completion tokens Ollama reported",
            ["model", "route"],
            registry=self.registry,
        )
        self.tokens_per_second = Histogram(
            "gateway_tokens_per_second",
            "Generation speed Ollama reported (eval_count / eval_duration; Ollama's own routes only)",
            ["model", "route"],
            buckets=(1, 2, 5, 10, 15, 20, 30, 40, 60, 80, 100, 150, 200, 400),
            registry=self.registry,
        )
        self.policy_replacements = Counter(
            "gateway_policy_replacements_total",
            "Request fields the policy replaced (KEEP_ALIVE, NUM_CTX, MAX_PREDICT), by field",
            ["field"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total",
            "Failures talking to Ollama, by kind (connect, timeout, status_5xx, stream)",
            ["kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "gateway_rejected_total",
            "Requests refused before reaching Ollama, by reason "
            "(queue_full, embed_queue_full, rate_limited, auth, model, too_large)",
            ["reason"],
            registry=self.registry,
        )
