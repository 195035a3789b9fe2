"""OpenAPI documentation of the surface: request bodies, and every status and content type each route answers.

The routes read raw bytes and only look at a few fields (routes.read_request, bodies.py), so these schemas never
parse a request (that would cost a validation and a re-serialisation per call); Ollama checks the rest. They
document what Ollama's Go decoding and handlers accept, field by field, from the structs and checks of ollama/ollama
(api/types.go, openai/openai.go, openai/responses.go, anthropic/anthropic.go, middleware/openai.go,
middleware/anthropic.go, server/routes.go), as the double plays them (tests/fakes/ollama_types.py), plus what this
service refuses itself (bodies.py). The rules that keep them true:
  * The document is OpenAPI 3.0.3, whose schemas read `integer` as JSON Schema draft 4 does: an integer literal,
    so 1.0 is not one - exactly Go's rule for an int field. (Under OpenAPI 3.1, JSON Schema 2020-12 compares
    numbers by value, so 1.0 is an integer there and schemathesis sends 1.0 for integer fields, which Go refuses.)
  * Go takes `null` as "not set" for every field, so every optional field allows null (`nullable`, or an anyOf
    with `enum: [null]` where `nullable` would not apply), unless a custom decoder refuses it.
  * A Go int is `format: int64` (int32: `format: int32`), a float32 is bounded by +-3.4e38.
  * Where JSON Schema cannot say what Go checks (JSON inside a string, a Go duration that overflows int64), the
    document gives the largest subset it can say exactly and the description names the real rule.
  * Go matches keys case-insensitively. The top-level keys the service reads must be spelled exactly (a 400
    otherwise, bodies.py; draft 4 has no `propertyNames` to say it); other keys in another case reach Ollama, which
    reads them as the field (not spelled out here).
`make test-unit` runs `st run --checks all` against this document (tests/unit/test_service_openapi.py).
"""

from __future__ import annotations

from .bodies import FIELDS, NUMBER_OPTIONS
from .config import Settings
from .errors import ANTHROPIC, OLLAMA, OPENAI, family

STRING = {"type": "string"}
BOOL = {"type": "boolean"}
OBJECT = {"type": "object"}
ANY: dict = {}
NULL = {"enum": [None]}  # OpenAPI 3.0 has no null type; `nullable` widens only a schema's own `type`
NOT_ARRAY = {"not": {"type": "array", "items": ANY}}
# Go's int is int64 (schemathesis bounds `format: int64` exactly); float32 refuses a magnitude above
# math.MaxFloat32.
INT = {"type": "integer", "format": "int64"}
INT32 = {"type": "integer", "format": "int32"}
# float64: any number. (Go also refuses a literal that rounds past the largest float64, at 2**1024 - 2**970;
# that bound is no float itself, so it cannot be declared: schemathesis computes bounds as floats.)
NUMBER = {"type": "number"}
FLOAT32 = {"type": "number", "minimum": -3.4028234663852886e38, "maximum": 3.4028234663852886e38}


def _opt(schema: dict, description: str | None = None) -> dict:
    """An optional field: the schema, or null (Go's decoder takes null as "not set")."""
    plain = "type" in schema and "enum" not in schema
    out: dict = {**schema, "nullable": True} if plain else {"anyOf": [schema, NULL]}
    if description:
        out["description"] = description
    return out


def _const(value: object) -> dict:
    return {"enum": [value]}


def _implies(condition: dict, consequence: dict) -> dict:
    """`if condition then consequence`, in draft 4: not the condition, or the consequence."""
    return {"anyOf": [{"not": condition}, consequence]}


def _array(items: dict, nullable_items: bool = True, min_items: int = 0) -> dict:
    """A JSON array; Go decodes a null element into the element's zero value, so elements may be null unless
    that zero value is refused."""
    out: dict = {"type": "array", "items": _opt(items) if nullable_items else items}
    if min_items:
        out["minItems"] = min_items
    return out


def _obj(properties: dict, required: tuple[str, ...] = ()) -> dict:
    out: dict = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    return out


def _struct(**fields: dict) -> dict:
    """A Go struct: every field optional and nullable."""
    return _obj({name: _opt(schema) for name, schema in fields.items()})


def _model(models: list[str]) -> dict:
    # Documents the policy: any other model is answered 404 here (routes.read_request), never forwarded.
    return {"type": "string", "enum": list(models), "description": "One of the models this server serves"}


# ---- Go's value syntaxes -------------------------------------------------------------------------------------------
# base64.StdEncoding as Go decodes it: padded, CR and LF skipped anywhere.
_B64_CHAR = r"[A-Za-z0-9+/][\r\n]*"
_BASE64_BODY = (
    rf"[\r\n]*(?:(?:{_B64_CHAR}){{4}})*(?:(?:{_B64_CHAR}){{2}}=[\r\n]*=[\r\n]*|(?:{_B64_CHAR}){{3}}=[\r\n]*)?"
)
BASE64 = {"type": "string", "pattern": f"^{_BASE64_BODY}$", "description": "base64 (Go's StdEncoding: padded)"}
# api.ImageData is []byte: base64, or (as Go decodes any slice) an array of byte values.
_IMAGE = {"anyOf": [BASE64, _array({"type": "integer", "minimum": 0, "maximum": 255})]}
# openai/openai.go decodeImageURL: a data URL with one of these media types (or none), base64 payload.
DATA_URL = {
    "type": "string",
    "pattern": rf"^data:(?:image/(?:jpeg|jpg|png|webp))?;base64,{_BASE64_BODY}$",
    "description": "A data: URL (image/jpeg, jpg, png or webp, or no media type) with base64 content",
}
# time.ParseDuration syntax. The pattern keeps to at most 10 parts of at most 5 integer digits, which can never
# overflow Go's int64 nanoseconds; Go takes any duration up to about 292 years.
_UNIT = "(?:ns|us|µs|μs|ms|s|m|h)"
DURATION = {
    "type": "string",
    "pattern": rf"^[-+]?(?:0|(?:(?:[0-9]{{1,5}}(?:\.[0-9]*)?|\.[0-9]+){_UNIT}){{1,10}})$",
    "description": "A Go duration such as 5m or 1h30m",
}
_ZERO_DURATION = {"type": "string", "pattern": rf"^[-+]?(?:0|(?:(?:0+(?:\.0*)?|\.0+){_UNIT}){{1,10}})$"}
# The text of a JSON object (or null), as a tool call's `arguments`: the pattern spells out flat objects of
# strings, numbers, booleans and null; Go takes any JSON object.
_WS = r"[ \t\n\r]*"
_JSON_STRING = r'"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"'
_JSON_SCALAR = (
    rf"(?:{_JSON_STRING}|-?(?:0|[1-9][0-9]{{0,15}})(?:\.[0-9]{{1,15}})?(?:[eE][+-]?[0-9]{{1,2}})?|true|false|null)"
)
_JSON_MEMBER = rf"{_JSON_STRING}{_WS}:{_WS}{_JSON_SCALAR}"
JSON_OBJECT_TEXT = {
    "type": "string",
    "pattern": rf"^{_WS}(?:null|\{{{_WS}(?:{_JSON_MEMBER}(?:{_WS},{_WS}{_JSON_MEMBER})*)?{_WS}\}}){_WS}$",
    "description": "A JSON object, as a string",
}

# ---- shared parts of Ollama's structs --------------------------------------------------------------------------
_KEEP_ALIVE = _opt(
    {"anyOf": [DURATION, NUMBER]},
    "How long the model stays loaded: seconds or a duration like 5m; 0 unloads, negative keeps it loaded. "
    "Replaced by the server's KEEP_ALIVE when that is set.",
)
_OPTION_NUMBER = _opt(NUMBER)
_OPTIONS = _opt(
    {
        "type": "object",
        "description": "Model parameters (api.Options; Options.FromMap checks these types, ignores unknown keys)",
        "properties": {
            **{name: _OPTION_NUMBER for name in sorted(NUMBER_OPTIONS)},
            "num_predict": _opt(NUMBER, "Tokens to generate; capped by MAX_PREDICT when that is set"),
            "num_ctx": _opt(NUMBER, "Context size; replaced by NUM_CTX when that is set"),
            "use_mmap": _opt(BOOL),
            "stop": _opt(_array(STRING, nullable_items=False)),
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
_TOP_LOGPROBS = _opt({**INT, "minimum": 0, "maximum": 20})
# api.ToolFunctionParameters; its properties are api.ToolProperty, recursive (components/schemas/ToolProperty).
_PROPERTIES = _opt({"type": "object", "additionalProperties": _opt({"$ref": "#/components/schemas/ToolProperty"})})
TOOL_PROPERTY = _struct(
    anyOf=_array({"$ref": "#/components/schemas/ToolProperty"}),
    type={"anyOf": [STRING, _array(STRING)]},  # api.PropertyType
    items=ANY,
    description=STRING,
    enum={"type": "array", "items": ANY},
)
TOOL_PROPERTY["properties"]["properties"] = _PROPERTIES
COMPONENTS = {"ToolProperty": TOOL_PROPERTY}
_TOOL_PARAMETERS = _struct(type=STRING, required=_array(STRING), items=ANY)
_TOOL_PARAMETERS["properties"].update({"$defs": ANY, "properties": _PROPERTIES})
_TOOL_FUNCTION = _struct(name=STRING, description=STRING, parameters=_TOOL_PARAMETERS)
_TOOLS = _opt(_array(_struct(type=STRING, items=ANY, function=_TOOL_FUNCTION)), "Functions the model may call")
_ARGUMENTS = _opt(OBJECT)  # api.ToolCallFunctionArguments: an object, or null
_TOOL_CALL = _struct(id=STRING, function=_struct(index=INT, name=STRING, arguments=OBJECT))
_MESSAGE = _struct(
    role=STRING,
    content=STRING,
    thinking=STRING,
    images=_array(_IMAGE),
    tool_calls=_array(_TOOL_CALL),
    tool_name=STRING,
    tool_call_id=STRING,
)
_STREAM_TRUE = _opt(BOOL, "Omitted = true, as in Ollama")
_STREAM_FALSE = _opt(BOOL, "Omitted = false")
_NATIVE_COMMON = {
    "stream": _STREAM_TRUE,
    "format": _FORMAT,
    "keep_alive": _KEEP_ALIVE,
    "options": _OPTIONS,
    "think": _THINK,
    "truncate": _opt(BOOL),
    "shift": _opt(BOOL),
    "_debug_render_only": _opt(BOOL),
    "logprobs": _opt(BOOL),
    "top_logprobs": _TOP_LOGPROBS,
}
_TEXTS = {"anyOf": [STRING, _array(STRING, nullable_items=False)], "description": "A text, or a list of texts"}

# ---- the OpenAI layer (openai/openai.go) -------------------------------------------------------------------------
_OPENAI_PART = {
    "oneOf": [
        _obj({"type": {"type": "string", "enum": ["text"]}, "text": STRING}, ("type", "text")),
        _obj(
            {
                "type": {"type": "string", "enum": ["image_url"]},
                "image_url": {"anyOf": [DATA_URL, _obj({"url": DATA_URL}, ("url",))]},
            },
            ("type", "image_url"),
        ),
    ]
}
# FromCompletionToolCall: every call needs a function whose arguments string holds a JSON object (bodies.py checks
# it for every message; a missing or null arguments is an empty string, which is not JSON).
_OPENAI_TOOL_CALL = _obj(
    {
        "id": _opt(STRING),
        "index": _opt(INT),
        "type": _opt(STRING),
        "function": _obj({"name": _opt(STRING), "arguments": JSON_OBJECT_TEXT}, ("arguments",)),
    },
    ("function",),
)
# FromChatRequest: content is a string or a list of parts; anything else (null included) only beside tool calls.
_OPENAI_MESSAGE = {
    **_obj(
        {
            "role": _opt(STRING),
            "content": {"anyOf": [NOT_ARRAY, _array(_OPENAI_PART, nullable_items=False)]},
            "reasoning": _opt(STRING),
            "tool_calls": _opt(_array(_OPENAI_TOOL_CALL, nullable_items=False)),
            "name": _opt(STRING),
            "tool_call_id": _opt(STRING),
        }
    ),
    "anyOf": [
        {"required": ["content"], "properties": {"content": {"anyOf": [STRING, {"type": "array", "items": ANY}]}}},
        {"required": ["tool_calls"], "properties": {"tool_calls": {"type": "array", "items": ANY}}},
    ],
}
_STREAM_OPTIONS = _opt(_struct(include_usage=BOOL))
_OPENAI_EFFORT = {"type": "string", "enum": ["", "high", "medium", "low", "none"]}
# strings.ToLower(strings.TrimSpace(type)) == "json_schema": Unicode white space around, any case.
_GO_SPACE = r"[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*"
_SPELLED_JSON_SCHEMA = {
    "type": "string",
    "pattern": f"^{_GO_SPACE}[jJ][sS][oO][nN]_[sS][cC][hH][eE][mM][aA]{_GO_SPACE}$",
}

# ---- the Responses API (openai/responses.go) ---------------------------------------------------------------------
_RESPONSES_PART = {
    "oneOf": [
        _obj({"type": {"enum": ["input_text", "output_text"]}, "text": _opt(STRING)}, ("type",)),
        _obj(
            {
                "type": {"enum": ["input_image"]},
                "detail": _opt(STRING),
                "file_id": _opt(STRING),
                "image_url": _opt({"anyOf": [{"enum": [""]}, DATA_URL]}),
            },
            ("type",),
        ),
    ]
}
_RESPONSES_CONTENT = _opt({"anyOf": [STRING, _array(_RESPONSES_PART, nullable_items=False)]})
_RESPONSES_ITEM = {
    "oneOf": [
        {
            **_obj({"type": _opt({"enum": ["message", ""]}), "role": _opt(STRING), "content": _RESPONSES_CONTENT}),
            # Without a type, a non-empty role is what makes an item a message (unmarshalResponsesInputItem).
            "anyOf": [
                {"required": ["type"], "properties": {"type": _const("message")}},
                {"required": ["role"], "properties": {"role": {"type": "string", "minLength": 1}}},
            ],
        },
        _obj(
            {
                "type": _const("function_call"),
                "id": _opt(STRING),
                "call_id": _opt(STRING),
                "name": _opt(STRING),
                "arguments": _opt({"anyOf": [_const(""), JSON_OBJECT_TEXT]}),
            },
            ("type",),
        ),
        _obj(
            {"type": _const("function_call_output"), "call_id": _opt(STRING), "output": _RESPONSES_CONTENT},
            ("type",),
        ),
        _obj(
            {
                "type": _const("reasoning"),
                "id": _opt(STRING),
                "summary": _opt(_array(_struct(type=STRING, text=STRING))),
                "encrypted_content": _opt(STRING),
            },
            ("type",),
        ),
    ]
}
_EFFORT = {"type": "string", "enum": ["", "none", "low", "medium", "high", "max"]}

# ---- the Anthropic layer (anthropic/anthropic.go) ----------------------------------------------------------------
_ANTHROPIC_SOURCE = _struct(type=STRING, media_type=STRING, data=STRING, url=STRING)
_ANTHROPIC_FIELDS = {
    "text": _opt(STRING),
    "citations": _opt(
        _array(_struct(type=STRING, url=STRING, title=STRING, encrypted_index=STRING, cited_text=STRING))
    ),
    "id": _opt(STRING),
    "name": _opt(STRING),
    "input": _ARGUMENTS,
    "tool_use_id": _opt(STRING),
    "content": ANY,
    "is_error": _opt(BOOL),
    "thinking": _opt(STRING),
    "signature": _opt(STRING),
    "source": _opt(_ANTHROPIC_SOURCE),
}
# convertMessage: an image needs a base64 source; a tool_use needs an id and a name; tool_result images too.
_ANTHROPIC_IMAGE_SOURCE = _obj({"type": _const("base64"), "data": _opt(BASE64)}, ("type",))
# convertToolResultContent reads an image's source from a plain map: only a string `data` is decoded.
_TOOL_RESULT_SOURCE = _obj(
    {"type": _const("base64"), "data": {"anyOf": [BASE64, {"not": {"type": "string"}}]}}, ("type",)
)
_IMAGE_ITEM = {"type": "object", "required": ["type"], "properties": {"type": _const("image")}}
_ANTHROPIC_BLOCK = {
    **_obj({"type": _opt(STRING, "text, image, tool_use, tool_result, thinking; other kinds are ignored")}),
    "allOf": [
        _implies(
            {"required": ["type"], "properties": {"type": _const("image")}},
            {"required": ["source"], "properties": {"source": _ANTHROPIC_IMAGE_SOURCE}},
        ),
        _implies(
            {"required": ["type"], "properties": {"type": _const("tool_use")}},
            {
                "required": ["id", "name"],
                "properties": {"id": {"type": "string", "minLength": 1}, "name": {"type": "string", "minLength": 1}},
            },
        ),
        _implies(
            {"required": ["type", "content"], "properties": {"type": _const("tool_result")}},
            {
                "properties": {
                    "content": {
                        "anyOf": [
                            NOT_ARRAY,
                            {
                                "type": "array",
                                "items": _implies(
                                    _IMAGE_ITEM, {"required": ["source"], "properties": {"source": _TOOL_RESULT_SOURCE}}
                                ),
                            },
                        ]
                    }
                }
            },
        ),
    ],
}
_ANTHROPIC_BLOCK["properties"].update(_ANTHROPIC_FIELDS)
_ANTHROPIC_TOOL = _struct(type=STRING, name=STRING, description=STRING, max_uses=INT)
_ANTHROPIC_TOOL["properties"]["input_schema"] = _opt(_TOOL_PARAMETERS)

_BODIES: dict[str, dict] = {
    "/api/chat": _obj({"messages": _opt(_array(_MESSAGE)), "tools": _TOOLS, **_NATIVE_COMMON}),
    "/api/generate": {
        **_obj(
            {
                "prompt": _opt(STRING),
                "suffix": _opt(STRING),
                "system": _opt(STRING),
                "template": _opt(STRING, "A Go text/template; one Ollama cannot parse is its 500 (a 502 here)"),
                "context": _opt(_array(INT)),
                "raw": _opt(BOOL),
                "images": _opt(_array(_IMAGE)),
                "width": _opt(INT32),
                "height": _opt(INT32),
                "steps": _opt(INT32),
                **_NATIVE_COMMON,
            }
        ),
        # GenerateHandler: raw mode takes no template, system or context - unless the request only unloads the
        # model (no prompt, keep_alive 0), which is answered before that check.
        "anyOf": [
            {"not": {"required": ["raw"], "properties": {"raw": _const(True)}}},
            {
                "properties": {
                    "template": {"enum": ["", None]},
                    "system": {"enum": ["", None]},
                    "context": {"anyOf": [NULL, {"type": "array", "items": ANY, "maxItems": 0}]},
                }
            },
            {
                "properties": {
                    "prompt": {"enum": ["", None]},
                    "keep_alive": {
                        "anyOf": [
                            {"type": "number", "minimum": 0, "maximum": 1e-9, "exclusiveMaximum": True},
                            _ZERO_DURATION,
                        ]
                    },
                },
                "required": ["keep_alive"],
            },
        ],
    },
    "/api/embed": _obj(
        {
            "input": _opt(_TEXTS),
            "keep_alive": _KEEP_ALIVE,
            "truncate": _opt(BOOL),
            "dimensions": _opt(INT),
            "options": _OPTIONS,
        }
    ),
    "/api/embeddings": _obj({"prompt": _opt(STRING), "keep_alive": _KEEP_ALIVE, "options": _OPTIONS}),
    "/api/show": _obj(
        {
            "system": _opt(STRING),
            "template": _opt(STRING),
            "verbose": _opt(BOOL),
            "options": _opt(OBJECT),
            "name": _opt(STRING),
        }
    ),
    "/v1/chat/completions": _obj(
        {
            "messages": _array(_OPENAI_MESSAGE, nullable_items=False, min_items=1),
            "stream": _STREAM_FALSE,
            "stream_options": _STREAM_OPTIONS,
            "max_tokens": _opt(INT, "Capped by MAX_PREDICT when that is set"),
            "seed": _opt(INT),
            "stop": {"description": "A string or a list of strings (other values are ignored)"},
            "temperature": _opt(NUMBER),
            "frequency_penalty": _opt(NUMBER),
            "presence_penalty": _opt(NUMBER),
            "top_p": _opt(NUMBER),
            "response_format": _opt(
                {
                    **_obj(
                        {
                            "type": _opt(
                                STRING, "json_object, json_schema (then json_schema.schema), or anything else"
                            ),
                            "json_schema": _opt(_obj({"schema": ANY})),
                        }
                    ),
                    # FromChatRequest reads json_schema.schema only when the type, trimmed and lower-cased, says so.
                    **_implies(
                        {"required": ["type"], "properties": {"type": _SPELLED_JSON_SCHEMA}},
                        {"properties": {"json_schema": _opt(_obj({"schema": _FORMAT}))}},
                    ),
                }
            ),
            "tools": _TOOLS,
            # A `reasoning` object, even {}, takes precedence over reasoning_effort (FromChatRequest).
            "reasoning": _opt(_obj({"effort": _opt(_OPENAI_EFFORT)})),
            "reasoning_effort": _opt(STRING),
            "logprobs": _opt(BOOL),
            "top_logprobs": _TOP_LOGPROBS,
            "_debug_render_only": _opt(BOOL),
            # Ollama reads max_tokens only; this one passes through (capped by MAX_PREDICT when that is set).
            "max_completion_tokens": {"description": "The newer name of max_tokens; Ollama ignores it"},
        },
        ("messages",),
    )
    | {
        "anyOf": [
            {"required": ["reasoning"], "properties": {"reasoning": OBJECT}},
            {"properties": {"reasoning_effort": _opt(_OPENAI_EFFORT)}},
        ]
    },
    "/v1/completions": _obj(
        {
            "prompt": _opt(STRING),
            "suffix": _opt(STRING),
            "stream": _STREAM_FALSE,
            "stream_options": _STREAM_OPTIONS,
            "max_tokens": _opt(INT, "Capped by MAX_PREDICT when that is set"),
            "seed": _opt(INT),
            "temperature": _opt(FLOAT32),
            "top_p": _opt(FLOAT32),
            "frequency_penalty": _opt(FLOAT32),
            "presence_penalty": _opt(FLOAT32),
            # FromCompleteRequest: top_logprobs = logprobs when positive (and Ollama takes at most 20).
            "logprobs": _opt({**INT, "maximum": 20}),
            "_debug_render_only": _opt(BOOL),
            # Anything but a list of non-strings (FromCompleteRequest).
            "stop": {"anyOf": [NOT_ARRAY, _array(STRING, nullable_items=False)]},
        }
    ),
    "/v1/responses": _obj(
        {
            "input": _opt({"anyOf": [STRING, _array(_RESPONSES_ITEM, nullable_items=False)]}, "A text, or items"),
            "instructions": _opt(STRING),
            "stream": _STREAM_FALSE,
            "background": _opt(BOOL),
            "conversation": ANY,
            "include": _opt(_array(STRING)),
            "max_output_tokens": _opt(INT, "Capped by MAX_PREDICT when that is set"),
            "temperature": _opt(NUMBER),
            "top_p": _opt(NUMBER),
            "truncation": _opt(STRING),
            "text": _opt(
                _obj(
                    {
                        "format": _opt(
                            {
                                **_obj(
                                    {
                                        "type": _opt(STRING, "json_schema (then the schema below is used), or text"),
                                        "name": _opt(STRING),
                                        "schema": ANY,
                                        "strict": _opt(BOOL),
                                    }
                                ),
                                # FromResponsesRequest reads the schema only for the type json_schema.
                                **_implies(
                                    {"required": ["type"], "properties": {"type": _const("json_schema")}},
                                    {"properties": {"schema": _FORMAT}},
                                ),
                            }
                        )
                    }
                )
            ),
            "tools": _opt(
                _array(
                    _struct(
                        type=STRING,
                        name=STRING,
                        description=STRING,
                        strict=BOOL,
                        parameters=_TOOL_PARAMETERS,
                    )
                )
            ),
            "reasoning": _opt(_struct(effort=_EFFORT, generate_summary=STRING, summary=STRING)),
        },
    ),
    "/v1/embeddings": _obj(
        {
            "input": {"anyOf": [STRING, _array(STRING, nullable_items=False, min_items=1)]},
            "dimensions": _opt(INT),
            "encoding_format": _opt(
                {"type": "string", "pattern": "^(?:[fF][lL][oO][aA][tT]|[bB][aA][sSſ][eE]64)?$"},
                "float or base64, in any case (strings.EqualFold)",
            ),
        },
        ("input",),
    ),
    "/v1/messages": _obj(
        {
            "max_tokens": {**INT, "minimum": 1, "description": "Capped by MAX_PREDICT when that is set"},
            "messages": _array(
                # MessageParam.UnmarshalJSON: content must be present; null reads as an empty text.
                _obj(
                    {"role": _opt(STRING), "content": _opt({"anyOf": [STRING, _array(_ANTHROPIC_BLOCK)]})},
                    ("content",),
                ),
                nullable_items=False,
                min_items=1,
            ),
            "system": {"description": "A string, or text blocks ({type: text, text})"},
            "stream": _STREAM_FALSE,
            "temperature": _opt(NUMBER),
            "top_p": _opt(NUMBER),
            "top_k": _opt(INT),
            "stop_sequences": _opt(_array(STRING)),
            "tools": _opt(_array(_ANTHROPIC_TOOL)),
            "tool_choice": _opt(_struct(type=STRING, name=STRING, disable_parallel_tool_use=BOOL)),
            "thinking": _opt(_struct(type=STRING, budget_tokens=INT)),
            "metadata": _opt(_struct(user_id=STRING)),
            "output_config": _opt(_struct(effort=STRING)),
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
    description = (
        "Keys are matched to fields as Go does it, case-insensitively; the keys this server reads itself "
        f"({', '.join(sorted(FIELDS.get(path, ())))}) must be spelled as shown."
    )
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


def _path_parameter(name: str, schema: dict, description: str) -> dict:
    return {
        "parameters": [{"name": name, "in": "path", "required": True, "schema": schema, "description": description}]
    }


def model_parameter(models: list[str]) -> dict:
    return _path_parameter("model", _model(models), "A model this server serves")


_REFUSED_PARAMETERS = {
    "digest": "The blob's digest, sha256:<hex> (never reaches Ollama here)",
    "encodedKey": "The public key to remove from the signed-in account (never reaches Ollama here)",
}


def refused_path_parameter(path: str) -> dict | None:
    """The path parameter of a refused route, if it has one."""
    for name, description in _REFUSED_PARAMETERS.items():
        if "{" + name + "}" in path:
            return _path_parameter(name, STRING, description)
    return None


# ---- the transcription upload (ollama/ollama middleware/openai.go TranscriptionMiddleware) -------------------------
# Go's FormValue reads every field as text, so no value of the text fields is refused (no `type` here: whatever a
# client encodes into a part is that text); only an empty or missing file is. The fields OpenAI's API has beyond
# these (temperature, timestamp_granularities[], include[], stream, chunking_strategy) are accepted and ignored, and
# the answer is never streamed.
_UPLOAD = _obj(
    {
        "file": {
            "type": "string",
            "format": "binary",
            "minLength": 1,
            "description": "The audio, a file part, not empty (Ollama hears WAV and MP3, told apart by their first "
            "bytes)",
        },
        "language": {"description": 'Text appended to the instruction: "The audio is in <language>."'},
        "prompt": {"description": "Text appended to the instruction as context"},
        "response_format": {
            "description": "text: the transcript as plain text; anything else (json, verbose_json, srt, vtt): "
            '{"text": ...}',
        },
    },
    ("file",),
)


def upload_body(models: list[str]) -> dict:
    schema = {**_UPLOAD, "properties": {"model": _model(models), **_UPLOAD["properties"]}}
    schema["required"] = ["model", *_UPLOAD["required"]]
    description = (
        "Read as Go's net/http reads a form: the first value of each field; `file` must be a file part (with a "
        "filename). The body is forwarded as sent; at most MAX_REQUEST_BYTES."
    )
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }


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

    def _errors(self, path: str, statuses: list[int], why: dict[int, str] | None = None) -> dict:
        out = {}
        limited = path.startswith(("/api/", "/v1/"))
        extra = ([401, 403] if self.jwt and path != "/health" else []) + (
            [429] if self.rate_limited and limited else []
        )
        for status in sorted(set(statuses + extra)):
            entry: dict = {
                "description": (why or {}).get(status) or _WHY.get(status, "Error"),
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

    def transcription(self) -> dict:
        # Ollama commits its headers at the first piece of the transcript (the chat underneath streams; gin flushes
        # after each), so a transcript of more than one piece comes as application/x-ndjson, whatever the format.
        text = {"type": "object", "properties": {"text": STRING}, "required": ["text"]}
        media = {
            "application/json": {"schema": text},
            "application/x-ndjson": {"schema": text},
            "text/plain": {"schema": STRING},
        }
        ok = self._ok('The transcript: {"text": ...}, or plain text for response_format=text', media)
        why = {400: "Not a multipart/form-data body, no model, or no file (or an empty one)"}
        return {**ok, **self._errors("/v1/audio/transcriptions", [400, 404, 413, 502, 503, 504], why)}

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

    def refused(self, message: str) -> dict:
        forbidden = {
            403: {
                "description": f"Never forwarded to Ollama: {message}",
                "content": {"application/json": {"schema": _ERROR_SCHEMAS[OLLAMA]}},
            }
        }
        return {**forbidden, **{k: v for k, v in self._errors("/api/pull", []).items() if k != 403}}
