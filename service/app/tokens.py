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
So the gateway keeps only the last TAIL bytes of what it passed on and finds the last occurrence of each key there
(bytes.rfind, in C): no JSON parse of a long answer or a megabyte of embedding vectors on the hot path. A key inside
the model's own text cannot match: there its quotes are escaped (`\\"eval_count\\":`).
"""

from __future__ import annotations

from typing import NamedTuple

# The counts sit in the last few hundred bytes; 8 KiB leaves room for a final Responses event's trailing fields.
TAIL = 8192

_KEYS = {  # (prompt, completion, duration) as `"key":` byte strings; Go's encoder writes them without spaces
    scheme: tuple(f'"{key}":'.encode() if key else None for key in keys)
    for scheme, keys in {
        "ollama": ("prompt_eval_count", "eval_count", "eval_duration"),
        "openai": ("prompt_tokens", "completion_tokens", None),
        "input_output": ("input_tokens", "output_tokens", None),
    }.items()
}


def scheme(path: str) -> str:
    """Which counting keys a route's answers carry."""
    if path.startswith("/api/"):
        return "ollama"
    if path in ("/v1/responses", "/v1/messages"):
        return "input_output"
    return "openai"


class Usage(NamedTuple):  # a tuple: built on every answer, cheaper than a frozen dataclass
    prompt: int | None
    completion: int | None
    eval_seconds: float | None  # Ollama's eval_duration: time spent generating the completion tokens


def _last(tail: bytes, key: bytes | None) -> int | None:
    """The integer right after the last `key` in tail (later occurrences win: the final object's counts)."""
    if key is None:
        return None
    at = tail.rfind(key)
    if at < 0:
        return None
    start = at + len(key)
    rest = tail[start : start + 24]  # an int64 has at most 19 digits
    digits = len(rest) - len(rest.lstrip(b"0123456789"))
    return int(rest[:digits]) if digits else None


def from_tail(tail: bytes, path: str) -> Usage | None:
    """The counts at the end of an answer, or None when it carries none."""
    prompt_key, completion_key, duration_key = _KEYS[scheme(path)]
    prompt, completion, duration = _last(tail, prompt_key), _last(tail, completion_key), _last(tail, duration_key)
    if prompt is None and completion is None:
        return None
    return Usage(prompt, completion, duration / 1e9 if duration else None)
