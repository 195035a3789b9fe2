"""OpenAPI documentation of the surface: request bodies, and every status and content type each route answers.

The routes read raw bytes and only peek at `model` and `stream`, so these schemas never parse a request (that would
cost a validation and a re-serialisation per call); Ollama validates the rest. They follow Ollama's own OpenAPI
document (ollama/ollama docs/openapi.yaml), docs/api/openai-compatibility.mdx and anthropic-compatibility.mdx,
and the Go request structs behind them (api/types.go, openai/openai.go, openai/responses.go,
anthropic/anthropic.go), with two rules that keep them true:
  * Go's JSON decoding treats `null` as "not set" for every field, so every optional field allows null.
  * A field is only typed as far as Ollama rejects other types with a 400 (Go's decoder does, for struct fields).
    `options` and `format` schemas are maps Ollama checks later (or not at all), so their members are described,
    not constrained: a constraint Ollama does not enforce would be a lie schemathesis finds.
`make test` runs `st run --checks all` against this document (tests/unit/test_service_openapi.py).
"""

from __future__ import annotations

from .config import Settings
from .errors import ANTHROPIC, OLLAMA, OPENAI, family

STRING = {"type": "string"}
BOOL = {"type": "boolean"}
INT = {"type": "integer"}
NUMBER = {"type": "number"}
OBJECT = {"type": "object"}


def _opt(schema: dict, description: str | None = None) -> dict:
    """An optional field: the schema, or null (Go's decoder takes null as "not set")."""
    out: dict = {"anyOf": [schema, {"type": "null"}]}
    if description:
        out["description"] = description
    return out


def _array(items: dict, nullable_items: bool = True, min_items: int = 0) -> dict:
    """A JSON array; Go decodes a null element into the element's zero value, so elements may be null unless
    Ollama then rejects that zero value."""
    out: dict = {"type": "array", "items": _opt(items) if nullable_items else items}
    if min_items:
        out["minItems"] = min_items
    return out


def _obj(properties: dict, required: tuple[str, ...] = ()) -> dict:
    out: dict = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    return out


def _model(models: list[str]) -> dict:
    # Documents the policy: any other model is answered 404 here (routes.read_request), never forwarded.
    return {"type": "string", "enum": list(models), "description": "One of the models this server serves"}


_BASE64 = {"type": "string", "format": "byte", "description": "base64-encoded image"}
# Go's time.ParseDuration syntax (what api.Duration takes in a string), e.g. 5m, 1h30m, -1s.
_DURATION = {"type": "string", "pattern": r"^[-+]?([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"}
_KEEP_ALIVE = _opt(
    {"anyOf": [_DURATION, NUMBER]},
    "How long the model stays loaded: seconds or a duration like 5m; 0 unloads, negative keeps it loaded. "
    "Replaced by the server's KEEP_ALIVE when that is set.",
)
_OPTIONS = _opt(
    {
        "type": "object",
        "description": "Model parameters (Modelfile PARAMETER names). Ollama checks their types itself.",
        "properties": {
            "temperature": {"description": "number"},
            "top_p": {"description": "number"},
            "top_k": {"description": "integer"},
            "seed": {"description": "integer"},
            "stop": {"description": "array of strings"},
            "num_predict": {"description": "integer, tokens to generate; capped by MAX_PREDICT when that is set"},
            "num_ctx": {"description": "integer, context size; replaced by NUM_CTX when that is set"},
        },
    }
)
_THINK = _opt(
    {"anyOf": [BOOL, {"type": "string", "enum": ["high", "medium", "low"]}]},
    "Thinking models: true/false, or a level for the models that have levels",
)
_FORMAT = _opt(
    {"anyOf": [{"type": "string", "enum": ["", "json"]}, OBJECT]},
    'Structured output: "json", or a JSON schema object the answer follows',
)
# api.ToolFunctionParameters / ToolProperty: Go decodes these typed (a property's type: a name or a list of names).
_TOOL_PROPERTY = _obj(
    {"type": _opt({"anyOf": [STRING, _array(STRING)]}), "description": _opt(STRING), "enum": _opt({"type": "array"})}
)
_TOOL_PARAMETERS = _obj(
    {
        "type": _opt(STRING),
        "required": _opt(_array(STRING)),
        "properties": _opt({"type": "object", "additionalProperties": _opt(_TOOL_PROPERTY)}),
    }
)
_TOOL_FUNCTION = _obj({"name": _opt(STRING), "description": _opt(STRING), "parameters": _opt(_TOOL_PARAMETERS)})
_TOOLS = _opt(_array(_obj({"type": _opt(STRING), "function": _opt(_TOOL_FUNCTION)})), "Functions the model may call")
_TOOL_CALLS = _opt(_array(_obj({"function": _opt(_obj({"name": _opt(STRING), "arguments": _opt(OBJECT)}))})))
_MESSAGE = _obj(
    {
        "role": _opt(STRING),
        "content": _opt(STRING),
        "images": _opt(_array(_BASE64)),
        "thinking": _opt(STRING),
        "tool_calls": _TOOL_CALLS,
        "tool_name": _opt(STRING),
    }
)
_STREAM_TRUE = _opt(BOOL, "Omitted = true, as in Ollama")
_STREAM_FALSE = _opt(BOOL, "Omitted = false")
_LOGPROBS = {"logprobs": _opt(BOOL), "top_logprobs": _opt(INT)}
_INPUT = {"anyOf": [STRING, _array(STRING, nullable_items=False)], "description": "A text, or a list of texts"}

# OpenAI's chat message content: a string, or parts (text, image_url with a data: URL) (openai/openai.go).
_DATA_URL = {"type": "string", "pattern": r"^data:image/(jpeg|jpg|png|webp);base64,([A-Za-z0-9+/]{4})*$"}
_OPENAI_PART = {
    "oneOf": [
        _obj({"type": {"type": "string", "enum": ["text"]}, "text": STRING}, ("type", "text")),
        _obj(
            {
                "type": {"type": "string", "enum": ["image_url"]},
                "image_url": {"anyOf": [_DATA_URL, _obj({"url": _DATA_URL}, ("url",))]},
            },
            ("type", "image_url"),
        ),
    ]
}
# `tool_calls` (an assistant turn's calls, arguments as a JSON string) pass through too; not described here because
# a JSON-in-a-string constraint cannot be written in a schema.
_OPENAI_MESSAGE = _obj(
    {
        "role": STRING,
        "content": {"anyOf": [STRING, _array(_OPENAI_PART, nullable_items=False)]},
        "name": _opt(STRING),
        "tool_call_id": _opt(STRING),
        "reasoning": _opt(STRING),
    },
    ("role", "content"),
)
_OPENAI_COMMON = {
    "stream": _STREAM_FALSE,
    "stream_options": _opt(_obj({"include_usage": _opt(BOOL)})),
    "max_tokens": _opt(INT, "Capped by MAX_PREDICT when that is set"),
    "seed": _opt(INT),
    "temperature": _opt(NUMBER),
    "top_p": _opt(NUMBER),
    "frequency_penalty": _opt(NUMBER),
    "presence_penalty": _opt(NUMBER),
}

# A Responses input message (openai/responses.go ResponsesInputMessage): text content, or input_text parts.
_RESPONSES_PART = _obj(
    {"type": {"type": "string", "enum": ["input_text", "output_text"]}, "text": _opt(STRING)}, ("type",)
)
_RESPONSES_ITEM = {
    **_obj(
        {
            "type": _opt({"type": "string", "enum": ["message"]}),
            "role": STRING,
            "content": {"anyOf": [STRING, _array(_RESPONSES_PART, nullable_items=False)]},
        },
    ),
    # Without a type, a non-empty role is what makes an item a message (unmarshalResponsesInputItem).
    "anyOf": [
        {"required": ["type"], "properties": {"type": {"enum": ["message"]}}},
        {"required": ["role"], "properties": {"role": {"minLength": 1}}},
    ],
}
_EFFORT = {"type": "string", "enum": ["none", "low", "medium", "high", "max"]}
# An Anthropic content block (anthropic/anthropic.go ContentBlock), the kinds that need nothing more; image and
# tool_use blocks pass through too (their source / id and name are checked by Ollama's convertMessage).
_ANTHROPIC_BLOCK = _obj(
    {
        "type": _opt(STRING, "text, image, tool_use, tool_result, thinking; Ollama ignores other kinds"),
        "text": _opt(STRING),
        "thinking": _opt(STRING),
        "signature": _opt(STRING),
        "tool_use_id": _opt(STRING),
        "is_error": _opt(BOOL),
    },
)

_BODIES: dict[str, dict] = {
    "/api/chat": _obj(
        {
            "messages": _opt(_array(_MESSAGE)),
            "tools": _TOOLS,
            "format": _FORMAT,
            "think": _THINK,
            "options": _OPTIONS,
            "stream": _STREAM_TRUE,
            "keep_alive": _KEEP_ALIVE,
            **_LOGPROBS,
        }
    ),
    "/api/generate": _obj(
        {
            "prompt": _opt(STRING),
            "suffix": _opt(STRING),
            "system": _opt(STRING),
            "template": _opt(STRING),
            "images": _opt(_array(_BASE64)),
            "format": _FORMAT,
            "think": _THINK,
            "raw": _opt(BOOL),
            "options": _OPTIONS,
            "stream": _STREAM_TRUE,
            "keep_alive": _KEEP_ALIVE,
            **_LOGPROBS,
        }
    ),
    "/api/embed": _obj(
        {
            "input": _opt(_INPUT),
            "truncate": _opt(BOOL),
            "dimensions": _opt(INT),
            "keep_alive": _KEEP_ALIVE,
            "options": _OPTIONS,
        }
    ),
    "/api/embeddings": _obj({"prompt": _opt(STRING), "keep_alive": _KEEP_ALIVE, "options": _OPTIONS}),
    "/api/show": _obj({"verbose": _opt(BOOL)}),
    "/v1/chat/completions": {
        **_obj(
            {
                "messages": _array(_OPENAI_MESSAGE, nullable_items=False, min_items=1),
                **_OPENAI_COMMON,
                "stop": {"description": "A string or a list of strings (anything else is ignored)"},
                # Ollama reads max_tokens only; this one passes through (capped by MAX_PREDICT when that is set).
                "max_completion_tokens": {"description": "integer, the newer name of max_tokens"},
                "response_format": _opt(_obj({"type": _opt(STRING), "json_schema": _opt(_obj({"schema": {}}))})),
                "tools": _opt(_array(_obj({"type": _opt(STRING), "function": _opt(_TOOL_FUNCTION)}))),
                "reasoning_effort": _opt(STRING),
                "logprobs": _opt(BOOL),
                "top_logprobs": _opt(INT),
            },
            ("messages",),
        )
    },
    "/v1/completions": _obj(
        {
            "prompt": _opt(STRING),
            "suffix": _opt(STRING),
            **_OPENAI_COMMON,
            # Anything but a list of non-strings (openai/openai.go FromCompleteRequest).
            "stop": {"anyOf": [{"not": {"type": "array"}}, _array(STRING, nullable_items=False)]},
        }
    ),
    "/v1/responses": _obj(
        {
            "input": _opt({"anyOf": [STRING, _array(_RESPONSES_ITEM, nullable_items=False)]}, "A text, or messages"),
            "instructions": _opt(STRING),
            "stream": _STREAM_FALSE,
            "max_output_tokens": _opt(INT, "Capped by MAX_PREDICT when that is set"),
            "temperature": _opt(NUMBER),
            "top_p": _opt(NUMBER),
            "tools": _opt(
                _array(
                    _obj(
                        {
                            "type": _opt(STRING),
                            "name": _opt(STRING),
                            "description": _opt(STRING),
                            "strict": _opt(BOOL),
                            "parameters": _opt(_TOOL_PARAMETERS),
                        }
                    )
                )
            ),
            "reasoning": _opt(_obj({"effort": _opt(_EFFORT), "summary": _opt(STRING)})),
        },
    ),
    "/v1/embeddings": _obj(
        {
            "input": {"anyOf": [STRING, _array(STRING, nullable_items=False, min_items=1)]},
            "dimensions": _opt(INT),
            "encoding_format": _opt({"type": "string", "enum": ["float", "base64"]}),
        },
        ("input",),
    ),
    "/v1/messages": _obj(
        {
            "max_tokens": {**INT, "minimum": 1, "description": "Capped by MAX_PREDICT when that is set"},
            "messages": _array(
                _obj({"role": _opt(STRING), "content": {"anyOf": [STRING, _array(_ANTHROPIC_BLOCK)]}}, ("content",)),
                nullable_items=False,
                min_items=1,
            ),
            "system": {"description": "A string, or text blocks ({type: text, text})"},
            "stream": _STREAM_FALSE,
            "temperature": _opt(NUMBER),
            "top_p": _opt(NUMBER),
            "top_k": _opt(INT),
            "stop_sequences": _opt(_array(STRING)),
            "tools": _opt(
                _array(
                    _obj({"name": _opt(STRING), "description": _opt(STRING), "input_schema": _opt(_TOOL_PARAMETERS)})
                )
            ),
            "thinking": _opt(_obj({"type": _opt(STRING), "budget_tokens": _opt(INT)})),
        },
        ("max_tokens", "messages"),
    ),
}


def tag(path: str) -> str:
    return family(path)


def request_body(path: str, models: list[str]) -> dict:
    schema = dict(_BODIES[path])
    schema["properties"] = {"model": _model(models), **schema["properties"]}
    schema["required"] = ["model", *schema.get("required", [])]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _path_parameter(name: str, schema: dict, description: str) -> dict:
    return {
        "parameters": [{"name": name, "in": "path", "required": True, "schema": schema, "description": description}]
    }


def model_parameter(models: list[str]) -> dict:
    return _path_parameter("model", _model(models), "A model this server serves")


def digest_parameter() -> dict:
    return _path_parameter("digest", STRING, "The blob's digest, sha256:<hex> (never reaches Ollama here)")


# ---- responses --------------------------------------------------------------------------------------------------
_ERROR_SCHEMAS = {
    OLLAMA: _obj({"error": STRING}, ("error",)),
    OPENAI: _obj(
        {
            "error": _obj(
                {"message": STRING, "type": STRING, "param": _opt(STRING), "code": _opt(STRING)}, ("message", "type")
            )
        },
        ("error",),
    ),
    ANTHROPIC: _obj(
        {"type": STRING, "error": _obj({"type": STRING, "message": STRING}, ("type", "message"))}, ("error",)
    ),
}
# In OpenAPI 3.1 the schema of a sequential media type describes one item: here one server-sent event.
_SSE_EVENT = _obj({"event": STRING, "data": STRING, "id": STRING, "retry": INT})
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again", "schema": INT}}
_WHY = {
    400: "The body is not a JSON object, has no model, or a field of the wrong type",
    401: "No valid Cloudflare Access JWT (CF_ACCESS_AUD is set)",
    403: "Cloudflare Access JWT refused",
    404: "The model is not served here (or not pulled in Ollama)",
    413: "The body is larger than MAX_REQUEST_BYTES",
    429: "Over RATE_LIMIT_PER_MINUTE for this client",
    502: "Ollama failed (5xx) or broke the connection",
    503: "Ollama is unreachable, or the queue is full (then with Retry-After)",
    504: "Ollama sent nothing within OLLAMA_READ_TIMEOUT",
}


class Responses:
    """The `responses` of each route for this deployment's settings (the JWT check and the rate limit add
    401/403 and 429 only where they are on)."""

    def __init__(self, settings: Settings) -> None:
        self.jwt = settings.jwt_enabled
        self.rate_limited = settings.rate_limit_per_minute > 0

    def _errors(self, path: str, statuses: list[int]) -> dict:
        out = {}
        limited = path.startswith(("/api/", "/v1/"))
        extra = ([401, 403] if self.jwt and path != "/health" else []) + (
            [429] if self.rate_limited and limited else []
        )
        for status in sorted(set(statuses + extra)):
            entry: dict = {
                "description": _WHY.get(status, "Error"),
                "content": {"application/json": {"schema": _ERROR_SCHEMAS[family(path)]}},
            }
            if status in (429, 503):
                entry["headers"] = _RETRY_AFTER
            out[status] = entry
        return out

    def _ok(self, description: str, media: dict[str, dict]) -> dict:
        return {200: {"description": description, "content": media}}

    def forwarding(self, path: str, stream_default: bool | None, gated: bool = True) -> dict:
        media = {"application/json": {"schema": OBJECT}}
        if stream_default is not None:
            if path.startswith("/v1/"):
                media["text/event-stream"] = {"schema": _SSE_EVENT}
            else:
                media["application/x-ndjson"] = {"schema": OBJECT}  # each line: one of Ollama's chunks
        statuses = [400, 404, 413, 502, 503, 504]
        description = "Ollama's answer (streamed when `stream` is true), passed through unchanged"
        return {**self._ok(description, media), **self._errors(path, statuses)}

    def plain(self, path: str = "/api/tags") -> dict:
        ok = self._ok(
            "Ollama's answer (listings: only the models this server serves)", {"application/json": {"schema": OBJECT}}
        )
        return {**ok, **self._errors(path, [502, 503, 504])}

    def root(self) -> dict:
        ok = self._ok('"Ollama is running"', {"text/plain": {"schema": STRING}})
        return {**ok, **self._errors("/", [502, 503, 504])}

    def model_lookup(self) -> dict:
        ok = self._ok("The model, as Ollama describes it", {"application/json": {"schema": OBJECT}})
        return {**ok, **self._errors("/v1/models/{model}", [404, 502, 503, 504])}

    def health(self) -> dict:
        return self._ok("Alive (no upstream call)", {"application/json": {"schema": OBJECT}})

    def ready(self) -> dict:
        ok = self._ok("Ollama answers and has every model this server needs", {"application/json": {"schema": OBJECT}})
        unready = {
            503: {"description": "Not ready, with the reason", "content": {"application/json": {"schema": OBJECT}}}
        }
        return {**ok, **unready, **self._errors("/ready", [])}

    def metrics(self) -> dict:
        ok = self._ok("Prometheus text exposition format", {"text/plain": {"schema": STRING}})
        return {**ok, **self._errors("/metrics", [])}

    def refused(self) -> dict:
        forbidden = {
            403: {
                "description": "Model management is never forwarded to Ollama",
                "content": {"application/json": {"schema": _ERROR_SCHEMAS[OLLAMA]}},
            }
        }
        return {**forbidden, **{k: v for k, v in self._errors("/api/pull", []).items() if k != 403}}
