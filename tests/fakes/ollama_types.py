"""How Ollama decodes request bodies, for the double: Go's encoding/json rules on Ollama's request structs.

Ollama binds every body into a typed Go struct (gin ShouldBindJSON), so a field of the wrong JSON type is a 400
("json: cannot unmarshal number into Go struct field ChatRequest.messages of type []api.Message"), `null` means "not
set" for any field, an unknown field is ignored, and an integer field takes only an integer literal. A few fields
have their own decoders or checks in the handlers; those are here too (`check`). Sources: ollama/ollama
api/types.go (ChatRequest, GenerateRequest, EmbedRequest, Duration, ThinkValue, Tool), openai/openai.go
(ChatCompletionRequest, CompletionRequest, EmbedRequest, FromChatRequest), openai/responses.go (ResponsesRequest),
anthropic/anthropic.go (MessagesRequest) and middleware/*.go (the handlers' own 400s).

The specs are small Python values: "str", "bool", "int", "num", "any", "obj" (a JSON object of anything),
("list", spec), ("map", spec) (an object of specs), ("union", spec, ...) (a custom decoder taking either), or a
dict {field: spec} (a struct).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

# Go's time.ParseDuration units (ASCII forms), as api.Duration accepts for keep_alive.
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_IMAGE_URL = re.compile(r"data:(?:image/(?:jpeg|jpg|png|webp))?;base64,(.*)", re.S)

_TOOL_PROPERTY = {"type": ("union", "str", ("list", "str")), "description": "str", "enum": ("list", "any")}
_TOOL_PARAMETERS = {
    "type": "str",
    "required": ("list", "str"),
    "properties": ("map", _TOOL_PROPERTY),
}
_TOOL = {"type": "str", "function": {"name": "str", "description": "str", "parameters": _TOOL_PARAMETERS}}
_TOOL_CALL = {"id": "str", "function": {"index": "int", "name": "str", "arguments": "obj"}}
_MESSAGE = {
    "role": "str",
    "content": "str",
    "thinking": "str",
    "images": ("list", "str"),
    "tool_calls": ("list", _TOOL_CALL),
    "tool_name": "str",
    "tool_call_id": "str",
}
_KEEP_ALIVE = ("union", "num", "str")
_THINK = ("union", "bool", "str")
CHAT = {
    "model": "str",
    "messages": ("list", _MESSAGE),
    "stream": "bool",
    "format": "any",
    "keep_alive": _KEEP_ALIVE,
    "tools": ("list", _TOOL),
    "options": "obj",
    "think": _THINK,
    "logprobs": "bool",
    "top_logprobs": "int",
}
GENERATE = {
    "model": "str",
    "prompt": "str",
    "suffix": "str",
    "system": "str",
    "template": "str",
    "context": ("list", "int"),
    "stream": "bool",
    "raw": "bool",
    "format": "any",
    "keep_alive": _KEEP_ALIVE,
    "images": ("list", "str"),
    "options": "obj",
    "think": _THINK,
    "logprobs": "bool",
    "top_logprobs": "int",
}
EMBED = {
    "model": "str",
    "input": "any",
    "keep_alive": _KEEP_ALIVE,
    "truncate": "bool",
    "dimensions": "int",
    "options": "obj",
}
EMBEDDINGS = {"model": "str", "prompt": "str", "keep_alive": _KEEP_ALIVE, "options": "obj"}
SHOW = {"model": "str", "system": "str", "template": "str", "verbose": "bool", "options": "obj"}

_OPENAI_TOOL_CALL = {"id": "str", "index": "int", "type": "str", "function": {"name": "str", "arguments": "str"}}
_OPENAI_MESSAGE = {
    "role": "str",
    "content": "any",
    "reasoning": "str",
    "tool_calls": ("list", _OPENAI_TOOL_CALL),
    "name": "str",
    "tool_call_id": "str",
}
_STREAM_OPTIONS = {"include_usage": "bool"}
OPENAI_CHAT = {
    "model": "str",
    "messages": ("list", _OPENAI_MESSAGE),
    "stream": "bool",
    "stream_options": _STREAM_OPTIONS,
    "max_tokens": "int",
    "seed": "int",
    "stop": "any",
    "temperature": "num",
    "frequency_penalty": "num",
    "presence_penalty": "num",
    "top_p": "num",
    "response_format": {"type": "str", "json_schema": {"schema": "any"}},
    "tools": ("list", _TOOL),
    "reasoning": {"effort": "str"},
    "reasoning_effort": "str",
    "logprobs": "bool",
    "top_logprobs": "int",
}
OPENAI_COMPLETION = {
    "model": "str",
    "prompt": "str",
    "frequency_penalty": "num",
    "max_tokens": "int",
    "presence_penalty": "num",
    "seed": "int",
    "stop": "any",
    "stream": "bool",
    "stream_options": _STREAM_OPTIONS,
    "temperature": "num",
    "top_p": "num",
    "suffix": "str",
}
OPENAI_EMBED = {"input": "any", "model": "str", "dimensions": "int", "encoding_format": "str"}
RESPONSES = {
    "model": "str",
    "background": "bool",
    "include": ("list", "str"),
    "input": "any",
    "instructions": "str",
    "max_output_tokens": "int",
    "reasoning": {"effort": "str", "generate_summary": "str", "summary": "str"},
    "temperature": "num",
    "text": {"format": {"type": "str", "name": "str", "schema": "any", "strict": "bool"}},
    "top_p": "num",
    "truncation": "str",
    "tools": (
        "list",
        {"type": "str", "name": "str", "description": "str", "strict": "bool", "parameters": _TOOL_PARAMETERS},
    ),
    "stream": "bool",
}
_ANTHROPIC_BLOCK = {
    "type": "str",
    "text": "str",
    "source": {"type": "str", "media_type": "str", "data": "str", "url": "str"},
    "id": "str",
    "name": "str",
    "input": "obj",
    "tool_use_id": "str",
    "content": "any",
    "is_error": "bool",
    "thinking": "str",
    "signature": "str",
}
MESSAGES = {
    "model": "str",
    "max_tokens": "int",
    "messages": ("list", {"role": "str", "content": ("union", "str", ("list", _ANTHROPIC_BLOCK))}),
    "system": "any",
    "stream": "bool",
    "temperature": "num",
    "top_p": "num",
    "top_k": "int",
    "stop_sequences": ("list", "str"),
    "tools": (
        "list",
        {"type": "str", "name": "str", "description": "str", "input_schema": _TOOL_PARAMETERS, "max_uses": "int"},
    ),
    "tool_choice": {"type": "str", "name": "str", "disable_parallel_tool_use": "bool"},
    "thinking": {"type": "str", "budget_tokens": "int"},
    "metadata": {"user_id": "str"},
}

SPECS = {
    "/api/chat": CHAT,
    "/api/generate": GENERATE,
    "/api/embed": EMBED,
    "/api/embeddings": EMBEDDINGS,
    "/api/show": SHOW,
    "/v1/chat/completions": OPENAI_CHAT,
    "/v1/completions": OPENAI_COMPLETION,
    "/v1/embeddings": OPENAI_EMBED,
    "/v1/responses": RESPONSES,
    "/v1/messages": MESSAGES,
}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _matches(value: Any, spec: Any, where: str) -> str | None:
    """None when Go would decode `value` into `spec`, else Go's error message."""
    if value is None:
        return None
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"json: cannot unmarshal {_json_kind(value)} into Go struct field {where} of type struct"
        for name, sub in spec.items():
            if name in value:
                err = _matches(value[name], sub, f"{where}.{name}")
                if err:
                    return err
        return None
    if isinstance(spec, tuple):
        kind = spec[0]
        if kind == "list":
            if not isinstance(value, list):
                return f"json: cannot unmarshal {_json_kind(value)} into Go struct field {where} of type slice"
            for item in value:
                err = _matches(item, spec[1], where)
                if err:
                    return err
            return None
        if kind == "map":
            if not isinstance(value, dict):
                return f"json: cannot unmarshal {_json_kind(value)} into Go struct field {where} of type map"
            for item in value.values():
                err = _matches(item, spec[1], where)
                if err:
                    return err
            return None
        for option in spec[1:]:  # union
            if _matches(value, option, where) is None:
                return None
        return f"json: cannot unmarshal {_json_kind(value)} into Go struct field {where}"
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        # Go takes only an integer literal for an int field; 182.0 is an integer to JSON Schema, and the double takes
        # it too (the one place it is more lenient than Ollama), so an OpenAPI document's "integer" stays testable.
        "int": (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
        and not isinstance(value, bool),
        "num": isinstance(value, int | float) and not isinstance(value, bool),
        "obj": isinstance(value, dict),
        "any": True,
    }[spec]
    if ok:
        return None
    return f"json: cannot unmarshal {_json_kind(value)} into Go struct field {where} of type {spec}"


def _base64(text: Any) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return False
    return True


def check(path: str, body: dict[str, Any]) -> str | None:
    """Ollama's 400 message for this body, or None when Ollama takes it."""
    spec = SPECS.get(path)
    if spec is None:
        return None
    err = _matches(body, spec, {"/api/": "Request"}.get(path[:5], "Request"))
    if err:
        return err
    keep_alive = body.get("keep_alive")
    if isinstance(keep_alive, str) and not _GO_DURATION.fullmatch(keep_alive):
        return f'time: invalid duration "{keep_alive}"'  # api.Duration.UnmarshalJSON -> time.ParseDuration
    think = body.get("think")
    if isinstance(think, str) and think not in ("high", "medium", "low"):
        return f'invalid think value: "{think}" (must be "high", "medium", "low", true, or false)'
    fmt = body.get("format")
    if fmt is not None and not (fmt in ("", "json") or isinstance(fmt, dict)):
        return f'invalid format: {fmt!r}; expected "json" or a valid JSON Schema object'  # llm/server.go
    images = list(body.get("images") or [])
    for message in body.get("messages") or [] if path == "/api/chat" else []:
        images += (message or {}).get("images") or []
    if any(image is not None and not _base64(image) for image in images):  # api.ImageData is []byte: base64 in JSON
        return "illegal base64 data in images"
    return _EXTRA.get(path, lambda _: None)(body)


def _openai_chat(body: dict[str, Any]) -> str | None:
    messages = body.get("messages") or []
    if not messages:
        return "[] is too short - 'messages'"  # middleware/openai.go ChatMiddleware
    for message in messages:
        content = (message or {}).get("content")
        if isinstance(content, str):
            continue
        if isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    return "invalid message format"
                if part.get("type") == "text":
                    if not isinstance(part.get("text"), str):
                        return "invalid message format"
                elif part.get("type") == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    match = _IMAGE_URL.fullmatch(url) if isinstance(url, str) else None
                    if match is None or not _base64(match.group(1)):
                        return "invalid image input"
                else:
                    return "invalid message format"
        elif not (message or {}).get("tool_calls"):
            return f"invalid message content type: {type(content).__name__}"
    effort = body.get("reasoning_effort") or (body.get("reasoning") or {}).get("effort")
    if effort is not None and effort not in ("high", "medium", "low", "none"):
        return f'invalid reasoning value: \'{effort}\' (must be "high", "medium", "low", or "none")'
    return None


def _openai_embed(body: dict[str, Any]) -> str | None:
    fmt = body.get("encoding_format")
    if fmt and fmt.lower() not in ("float", "base64"):
        return f"Invalid value for 'encoding_format' = {fmt}. Supported values: ['float', 'base64']."
    texts = body.get("input")
    if texts is None or texts == []:
        return "invalid input"  # middleware/openai.go EmbeddingsMiddleware
    return _texts(texts)


def _texts(texts: Any) -> str | None:
    if texts is None or isinstance(texts, str):
        return None
    if isinstance(texts, list) and all(isinstance(t, str) for t in texts):
        return None
    return "invalid input type"  # server/routes.go EmbedHandler


def _responses(body: dict[str, Any]) -> str | None:
    items = body.get("input")
    if items is not None and not isinstance(items, str | list):
        return "input must be a string or array"
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            return "input must be a string or array"
        if not isinstance(item.get("type"), str | None) or not isinstance(item.get("role"), str | None):
            return "json: cannot unmarshal into Go struct field .type/.role of type string"
        kind = item.get("type") or ("message" if item.get("role") else "")
        if kind not in ("message", "function_call", "function_call_output", "reasoning"):
            return f"unknown input item type: {kind!r}" if kind else "input item missing required 'type' field"
        content = item.get("content")
        if kind == "message" and not isinstance(content, str | list | type(None)):
            return "content must be a string or array"
        for part in content if kind == "message" and isinstance(content, list) else []:
            kind_of_part = (part or {}).get("type") if isinstance(part, dict | type(None)) else None
            if isinstance(part, dict) and not isinstance(part.get("text"), str | None):
                return "json: cannot unmarshal into Go struct field ResponsesTextContent.text of type string"
            if kind_of_part not in ("input_text", "output_text"):
                return f"unknown content type: {kind_of_part}"  # (input_image / input_file need more)
    effort = (body.get("reasoning") or {}).get("effort")
    if effort and effort not in ("none", "low", "medium", "high", "max"):
        return f'invalid reasoning value: "{effort}"'
    return None


def _messages(body: dict[str, Any]) -> str | None:
    if _matches(body.get("max_tokens"), "int", "") or not body.get("max_tokens") or body["max_tokens"] <= 0:
        return "max_tokens is required and must be positive"  # middleware/anthropic.go
    if not body.get("messages"):
        return "messages is required"
    for message in body["messages"]:
        if not isinstance(message, dict) or message.get("content") is None:
            return "unexpected end of JSON input"  # MessageParam.UnmarshalJSON on a null message or content
        for block in (message or {}).get("content") if isinstance((message or {}).get("content"), list) else []:
            kind = (block or {}).get("type")
            if kind == "image":
                source = block.get("source") or {}
                if source.get("type") != "base64" or not _base64(source.get("data")):
                    return "invalid image source"
            elif kind == "tool_use" and not (block.get("id") and block.get("name")):
                return "tool_use block missing required 'id' or 'name' field"
    return None


def _completion(body: dict[str, Any]) -> str | None:
    stop = body.get("stop")
    for item in stop if isinstance(stop, list) else []:
        if not isinstance(item, str):
            return f"invalid type for 'stop' field: {type(item).__name__}"  # openai/openai.go FromCompleteRequest
    return None


_EXTRA = {
    "/v1/completions": _completion,
    "/v1/chat/completions": _openai_chat,
    "/v1/embeddings": _openai_embed,
    "/api/embed": lambda body: _texts(body.get("input")),
    "/v1/responses": _responses,
    "/v1/messages": _messages,
}
