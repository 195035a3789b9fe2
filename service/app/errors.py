"""Error bodies in the format of the route family the client speaks.

Ollama routes answer {"error": "..."} (docs/api.md); the OpenAI-compatible /v1 routes answer
{"error": {"message", "type", "param", "code"}}, which is what the openai client parses into its exceptions.
"""

from __future__ import annotations

import json

from starlette.responses import Response

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def is_openai(path: str) -> bool:
    return path.startswith("/v1/")


def error_body(path: str, status: int, message: str, *, code: str | None = None, param: str | None = None) -> bytes:
    if is_openai(path):
        body: dict = {
            "error": {
                "message": message,
                "type": _OPENAI_TYPES.get(status, "api_error"),
                "param": param,
                "code": code,
            }
        }
    else:
        body = {"error": message}
    return json.dumps(body, separators=(",", ":")).encode()


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


async def send_error(send, path: str, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """Answer from pure ASGI middleware (no Response object needed)."""
    body = error_body(path, status, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
