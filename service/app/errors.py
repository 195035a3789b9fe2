"""Error bodies in the format of the route family the client speaks.

Three families, told apart by the path (`family`):
  * Ollama (`/`, `/api/*`, and everything outside /v1): {"error": "..."} (ollama/ollama docs/api.md).
  * OpenAI (`/v1/*` except /v1/messages): {"error": {"message", "type", "param", "code"}}, what the openai client
    parses into its exceptions (ollama/ollama openai/openai.go NewError).
  * Anthropic (`/v1/messages`): {"type": "error", "error": {"type", "message"}}, what the anthropic client parses
    (https://docs.anthropic.com/en/api/errors; ollama/ollama anthropic/anthropic.go NewError).
"""

from __future__ import annotations

import json

from starlette.responses import Response

OLLAMA, OPENAI, ANTHROPIC = "ollama", "openai", "anthropic"

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
# https://docs.anthropic.com/en/api/errors (HTTP errors); 503 is Ollama's own mapping to overloaded_error.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def family(path: str) -> str:
    if path.startswith("/v1/"):
        return ANTHROPIC if path == "/v1/messages" else OPENAI
    return OLLAMA


def is_openai(path: str) -> bool:
    """True for both /v1 families (SSE streams, JSON error objects)."""
    return path.startswith("/v1/")


def error_object(path: str, status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict:
    kind = family(path)
    if kind == OPENAI:
        err_type = _OPENAI_TYPES.get(status, "api_error")
        return {"error": {"message": message, "type": err_type, "param": param, "code": code}}
    if kind == ANTHROPIC:
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    return {"error": message}


def error_body(path: str, status: int, message: str, *, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps(error_object(path, status, message, code=code, param=param), separators=(",", ":")).encode()


def error_response(
    path: str,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        error_body(path, status, message, code=code, param=param),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_chunk(path: str, message: str) -> bytes:
    """The last piece of a stream that failed after it began (status 200 is already sent).

    Ollama routes: an {"error": ...} line, as Ollama ends a failed stream; OpenAI: an SSE `data:` event with the
    error object (the openai client raises APIError on it); Anthropic: an SSE `error` event
    (https://docs.anthropic.com/en/docs/build-with-claude/streaming#error-events).
    """
    kind = family(path)
    if kind == OLLAMA:
        return json.dumps({"error": message}).encode() + b"\n"
    body = error_body(path, 502, message)
    return (b"event: error\ndata: " if kind == ANTHROPIC else b"data: ") + body + b"\n\n"


async def send_error(send, path: str, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """Answer from pure ASGI middleware (no Response object needed)."""
    body = error_body(path, status, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
