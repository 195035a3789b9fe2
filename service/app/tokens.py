"""Token accounting from the end of a generation's answer, without parsing the answer.

Every API Ollama speaks puts the counts in the last object it sends, after the content:
  * Ollama (/api/chat, /api/generate, /api/embed): `prompt_eval_count`, `eval_count`, `eval_duration` (ns), the
    embedded Metrics struct that ends ChatResponse / GenerateResponse (ollama/ollama api/types.go) - also of a
    whole non-streamed body, after `context` and `logprobs`.
  * OpenAI (/v1/chat/completions, /v1/completions, /v1/embeddings): `usage.prompt_tokens` /
    `usage.completion_tokens`, the last field of the object (openai/openai.go); streamed only when the client asks
    with stream_options.include_usage.
  * Responses and Anthropic (/v1/responses, /v1/messages): `input_tokens` / `output_tokens` in the final
    `response.completed` / `message_delta` event (openai/responses.go, anthropic/anthropic.go).
So the gateway keeps only the last TAIL bytes of what it passed on and finds the last occurrence of each key there:
no JSON parse of a long answer or a megabyte of embedding vectors on the hot path. A key inside the model's own
text cannot match: there its quotes are escaped (`\\"eval_count\\":`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The counts sit in the last few hundred bytes; 8 KiB leaves room for a final Responses event's trailing fields.
TAIL = 8192

_KEYS = {
    "ollama": ("prompt_eval_count", "eval_count"),
    "openai": ("prompt_tokens", "completion_tokens"),
    "input_output": ("input_tokens", "output_tokens"),
}
_PATTERNS = {
    name: re.compile(rb'"(%s|%s|eval_duration)"\s*:\s*(\d+)' % (prompt.encode(), completion.encode()))
    for name, (prompt, completion) in _KEYS.items()
}


def scheme(path: str) -> str:
    """Which counting keys a route's answers carry."""
    if path.startswith("/api/"):
        return "ollama"
    if path in ("/v1/responses", "/v1/messages"):
        return "input_output"
    return "openai"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt: int | None
    completion: int | None
    eval_seconds: float | None  # Ollama's eval_duration: time spent generating the completion tokens


def from_tail(tail: bytes, path: str) -> Usage | None:
    """The counts at the end of an answer, or None when it carries none."""
    name = scheme(path)
    prompt_key, completion_key = _KEYS[name]
    found: dict[bytes, int] = {}
    for match in _PATTERNS[name].finditer(tail):
        found[match.group(1)] = int(match.group(2))  # later occurrences win: the final object's counts
    if not found:
        return None
    duration = found.get(b"eval_duration")
    return Usage(
        found.get(prompt_key.encode()),
        found.get(completion_key.encode()),
        duration / 1e9 if duration else None,
    )
