"""How Ollama reads a request body, for the double: Go's encoding/json on Ollama's request structs, then the checks
its handlers make before they generate.

gin's ShouldBindJSON decodes with encoding/json (https://pkg.go.dev/encoding/json#Unmarshal), whose rules are:
  * an object key matches a struct field case-insensitively (Go's simple case folding: "MODEL", "Model" and
    "ſtream" set Model / Stream); every matching key is decoded in order, so the last one wins; unknown keys are
    ignored. A Go map keeps its keys as they are.
  * null leaves a field unset - except that a field whose type has its own UnmarshalJSON and is not a pointer is
    handed the null (json.RawMessage keeps the text "null"); those cases are spelled out below.
  * a JSON value of another kind than the field's type is a 400 ("json: cannot unmarshal string into Go struct
    field ChatRequest.stream of type bool"). An int field takes only an integer literal that fits int64 (1.0 and 1e3
    are refused); a float32 field refuses a magnitude above 3.4028234663852886e38; a number too large for float64
    is refused anywhere it is decoded (not inside a json.RawMessage); NaN and Infinity are not JSON.
  * []byte (api.ImageData) is base64 (StdEncoding: padded, CR and LF skipped) or, as for any slice, an array of
    numbers 0-255.

The structs are those of ollama/ollama at the versions read: api/types.go (GenerateRequest, ChatRequest, Message,
ToolCall, Tool, ToolFunctionParameters, ToolProperty, EmbedRequest, EmbeddingRequest, ShowRequest, Options,
ThinkValue, Duration), openai/openai.go (ChatCompletionRequest, CompletionRequest, EmbedRequest, FromChatRequest,
FromCompleteRequest, decodeImageURL), openai/responses.go (ResponsesRequest and its custom decoders,
FromResponsesRequest), anthropic/anthropic.go (MessagesRequest, MessageParam.UnmarshalJSON, FromMessagesRequest),
middleware/openai.go and middleware/anthropic.go (the layers' own 400s) and server/routes.go (the handlers).
`check(path, raw)` returns (status, message) for a body Ollama refuses, or (None, body) with the body as Ollama's
structs see it (canonical field names, last duplicate winning), which the double's handlers then read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

INT64 = (-(2**63), 2**63 - 1)
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
INT32 = (-(2**31), 2**31 - 1)
MAX_FLOAT32 = 3.4028234663852886e38
# base64.StdEncoding as Go decodes it (padding required, trailing bits not checked), once CR/LF are dropped.
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_DURATION_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}
_DURATION_UNITS["h"] = 3600 * 10**9
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
# Go's foldName: ASCII letters fold to upper case; the only other runes that fold onto ASCII letters are the long s
# and the Kelvin sign (unicode.SimpleFold), so an ASCII field name matches exactly these keys.
_FOLD_SPECIALS = str.maketrans({"ſ": "S", "K": "K"})
IMAGE_URL_PREFIXES = ("data:;base64,", *(f"data:image/{t};base64," for t in ("jpeg", "jpg", "png", "webp")))
OPTION_TYPES = {  # api.Options and api.Runner fields, as Options.FromMap checks them
    **dict.fromkeys(
        ("num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep", "seed", "num_predict", "top_k"),
        "integer",
    ),
    "repeat_last_n": "integer",
    **dict.fromkeys(
        ("top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty"),
        "float32",
    ),
    "use_mmap": "boolean",
    "stop": "array",
}


class GoError(Exception):
    """A 400 from decoding, with Go's message."""


class BigNumber(float):
    """A number literal beyond float64's range (Python's parser would make it inf; Go refuses it)."""


def fold(name: str) -> str:
    return "".join(c.upper() if c < "\x80" else c for c in name.translate(_FOLD_SPECIALS))


class Obj(dict):
    """A decoded JSON object that remembers every key/value pair in order (duplicates included), as Go sees them."""

    pairs: list[tuple[str, Any]]


def _obj(pairs: list[tuple[str, Any]]) -> Obj:
    out = Obj(pairs)
    out.pairs = pairs
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def _number(text: str) -> float:
    value = float(text)
    return BigNumber(value) if value in (float("inf"), float("-inf")) else value


def loads(raw: bytes) -> Any:
    """JSON as Go's decoder reads it: pairs kept, NaN/Infinity refused, overflowing numbers marked."""
    return json.loads(raw, object_pairs_hook=_obj, parse_constant=_no_constant, parse_float=_number)


def _pairs(value: dict) -> list[tuple[str, Any]]:
    return value.pairs if isinstance(value, Obj) else list(value.items())


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def go_type_name(value: Any) -> str:
    """Go's %T of a JSON value decoded into interface{}."""
    if value is None:
        return "<nil>"
    return {
        "bool": "bool",
        "number": "float64",
        "string": "string",
        "array": "[]interface {}",
        "object": "map[string]interface {}",
    }[_kind(value)]


def _type_error(value: Any, where: str, gotype: str) -> GoError:
    kind = _kind(value)
    if kind == "number":
        kind = f"number {value!r}"
    return GoError(f"json: cannot unmarshal {kind} into Go struct field {where} of type {gotype}")


# ---- the decoder -------------------------------------------------------------------------------------------------
# A spec is a Go type: a name in SCALARS, ("list", spec), ("map", spec), a Struct, or a Custom decoder.


class Struct:
    def __init__(self, name: str, fields: dict[str, Any]) -> None:
        self.name = name
        self.fields = fields
        self.folded = {fold(f): f for f in fields}

    def field(self, key: str) -> str | None:
        return key if key in self.fields else self.folded.get(fold(key))


class Custom:
    """A type with its own UnmarshalJSON: `decode(value, where)` returns the value as Go holds it, or raises GoError.
    `sees_null`: a non-pointer field, whose UnmarshalJSON is handed a null (a pointer field is just left nil)."""

    def __init__(self, decode: Callable[[Any, str], Any], sees_null: bool = False) -> None:
        self.decode = decode
        self.sees_null = sees_null


def _integer(value: Any, where: str, bounds: tuple[int, int], gotype: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(value, where, gotype)
    if isinstance(value, float) or not bounds[0] <= value <= bounds[1]:  # 1.0, 1e3, or out of range
        raise _type_error(value, where, gotype)
    return value


def _float(value: Any, where: str, gotype: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or isinstance(value, BigNumber):
        raise _type_error(value, where, gotype)
    try:
        number = float(value)
    except OverflowError:  # an integer literal beyond float64
        raise _type_error(value, where, gotype) from None
    if gotype == "float32" and abs(number) > MAX_FLOAT32:
        raise _type_error(value, where, gotype)
    return value


def _any(value: Any, where: str) -> Any:
    """interface{}: anything, but its numbers become float64."""
    if isinstance(value, dict):
        for _, item in _pairs(value):
            _any(item, where)
    elif isinstance(value, list):
        for item in value:
            _any(item, where)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _float(value, where, "float64")
    return value


def _bytes(value: Any, where: str) -> Any:
    if isinstance(value, str):
        if not _BASE64.fullmatch(value.replace("\r", "").replace("\n", "")):
            raise GoError("illegal base64 data at input byte 0")
        return value
    if isinstance(value, list):  # a null element leaves its byte 0
        return [0 if b is None else _integer(b, where, (0, 255), "uint8") for b in value]
    raise _type_error(value, where, "api.ImageData")


SCALARS: dict[str, Callable[[Any, str], Any]] = {
    "str": lambda v, w: v if isinstance(v, str) else _raise(_type_error(v, w, "string")),
    "bool": lambda v, w: v if isinstance(v, bool) else _raise(_type_error(v, w, "bool")),
    "int": lambda v, w: _integer(v, w, INT64, "int"),
    "int32": lambda v, w: _integer(v, w, INT32, "int32"),
    "f64": lambda v, w: _float(v, w, "float64"),
    "f32": lambda v, w: _float(v, w, "float32"),
    "any": _any,
    "raw": lambda v, w: v,  # json.RawMessage: kept as written, not decoded
    "bytes": _bytes,
}


def _raise(error: Exception) -> Any:
    raise error


def decode(value: Any, spec: Any, where: str) -> Any:
    """`value` decoded into the Go type `spec`: None for null (unset), else the value; raises GoError."""
    if isinstance(spec, Custom):
        return spec.decode(value, where) if value is not None or spec.sees_null else None
    if value is None:
        return None
    if isinstance(spec, str):
        return SCALARS[spec](value, where)
    if isinstance(spec, Struct):
        if not isinstance(value, dict):
            raise _type_error(value, where, spec.name)
        out: dict[str, Any] = {}
        for key, item in _pairs(value):
            name = spec.field(key)
            if name is not None:
                out[name] = decode(item, spec.fields[name], f"{where}.{name}")  # the last matching key wins
        return out
    kind, item_spec = spec
    if kind == "list":
        if not isinstance(value, list):
            raise _type_error(value, where, "slice")
        return [decode(item, item_spec, where) for item in value]
    if not isinstance(value, dict):  # map
        raise _type_error(value, where, "map")
    return {key: decode(item, item_spec, where) for key, item in _pairs(value)}


def _as_string(value: Any) -> str | None:
    """json.Unmarshal(data, &s) for a string s: the string, "" for null, None when it is not a string."""
    if value is None:
        return ""
    return value if isinstance(value, str) else None


# ---- custom decoders ---------------------------------------------------------------------------------------------
def parse_duration(text: str) -> int:
    """time.ParseDuration, in nanoseconds; raises ValueError with Go's message."""
    invalid = ValueError(f'time: invalid duration "{text}"')
    rest, negative = text, False
    if rest[:1] in ("-", "+"):
        negative, rest = rest[0] == "-", rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise invalid
    total = 0
    while rest:
        if not (rest[0] == "." or "0" <= rest[0] <= "9"):
            raise invalid
        match = _DURATION_PART.match(rest)
        whole, frac, unit = match.group(1), match.group(2), match.group(3)
        rest = rest[match.end() :]
        if not whole and not frac:
            raise invalid
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if unit not in _DURATION_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        scale = _DURATION_UNITS[unit]
        value = int(whole or "0")
        if value > 2**63 // scale:
            raise invalid
        value *= scale
        if frac:
            value += int(float("0." + frac) * scale)
        total += value
        if total > 2**63:
            raise invalid
    if not negative and total > 2**63 - 1:
        raise invalid
    return -total if negative else total


def _duration(value: Any, where: str) -> Any:
    # api.Duration.UnmarshalJSON: seconds as a number (negative: forever), or a Go duration string.
    if isinstance(value, str):
        try:
            parse_duration(value)
        except ValueError as exc:
            raise GoError(str(exc)) from None
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _float(value, where, "float64")
    raise GoError(f"Unsupported type: '{go_type_name(value)}'")


def _think(value: Any, where: str) -> Any:
    # api.ThinkValue.UnmarshalJSON: a bool, or one of the levels.
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value not in ("high", "medium", "low"):
            raise GoError(f'invalid think value: "{value}" (must be "high", "medium", "low", true, or false)')
        return value
    raise GoError('think must be a boolean or string ("high", "medium", "low", true, or false)')


def _ordered_object(value_spec: Any) -> Custom:
    # internal/orderedmap.Map.UnmarshalJSON (wk8/go-ordered-map): an object, or null; anything else is refused.
    def decode_map(value: Any, where: str) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise GoError(f"Value looks like object, but can't find closing '}}' symbol ({where})")
        return {key: decode(item, value_spec, where) for key, item in _pairs(value)}

    return Custom(decode_map, sees_null=True)


def _property_type(value: Any, where: str) -> Any:
    # api.PropertyType: a string (null reads as "") or a list of strings.
    if _as_string(value) is not None:
        return [_as_string(value)]
    return decode(value, ("list", "str"), where)


# ---- Ollama's structs --------------------------------------------------------------------------------------------
ARGUMENTS = _ordered_object("any")  # api.ToolCallFunctionArguments
_PROPERTY = Struct("api.ToolProperty", {})
_PROPERTIES = _ordered_object(_PROPERTY)  # api.ToolPropertiesMap
_PROPERTY.fields.update(
    {
        "anyOf": ("list", _PROPERTY),
        "type": Custom(_property_type, sees_null=True),
        "items": "any",
        "description": "str",
        "enum": ("list", "any"),
        "properties": _PROPERTIES,
    }
)
_PROPERTY.folded = {fold(f): f for f in _PROPERTY.fields}
TOOL_PARAMETERS = Struct(
    "api.ToolFunctionParameters",
    {"type": "str", "$defs": "any", "items": "any", "required": ("list", "str"), "properties": _PROPERTIES},
)
_TOOL_FUNCTION = Struct("api.ToolFunction", {"name": "str", "description": "str", "parameters": TOOL_PARAMETERS})
TOOL = Struct("api.Tool", {"type": "str", "items": "any", "function": _TOOL_FUNCTION})
_TOOL_CALL = Struct(
    "api.ToolCall",
    {"id": "str", "function": Struct("api.ToolCallFunction", {"index": "int", "name": "str", "arguments": ARGUMENTS})},
)
_MESSAGE = Struct(
    "api.Message",
    {
        "role": "str",
        "content": "str",
        "thinking": "str",
        "images": ("list", "bytes"),
        "tool_calls": ("list", _TOOL_CALL),
        "tool_name": "str",
        "tool_call_id": "str",
    },
)
_KEEP_ALIVE = Custom(_duration)  # *api.Duration
_THINK = Custom(_think)  # *api.ThinkValue
_OPTIONS = ("map", "any")
# The fields api.ChatRequest and api.GenerateRequest share.
_GENERATION = {
    "model": "str",
    "stream": "bool",
    "format": "raw",
    "keep_alive": _KEEP_ALIVE,
    "options": _OPTIONS,
    "think": _THINK,
    "truncate": "bool",
    "shift": "bool",
    "_debug_render_only": "bool",
    "logprobs": "bool",
    "top_logprobs": "int",
}
CHAT = Struct("api.ChatRequest", {**_GENERATION, "messages": ("list", _MESSAGE), "tools": ("list", TOOL)})
GENERATE = Struct(
    "api.GenerateRequest",
    {
        **_GENERATION,
        "prompt": "str",
        "suffix": "str",
        "system": "str",
        "template": "str",
        "context": ("list", "int"),
        "raw": "bool",
        "images": ("list", "bytes"),
        "width": "int32",
        "height": "int32",
        "steps": "int32",
    },
)
EMBED = Struct(
    "api.EmbedRequest",
    {
        "model": "str",
        "input": "any",
        "keep_alive": _KEEP_ALIVE,
        "truncate": "bool",
        "dimensions": "int",
        "options": _OPTIONS,
    },
)
EMBEDDINGS = Struct(
    "api.EmbeddingRequest", {"model": "str", "prompt": "str", "keep_alive": _KEEP_ALIVE, "options": _OPTIONS}
)
SHOW = Struct(
    "api.ShowRequest",
    {"model": "str", "system": "str", "template": "str", "verbose": "bool", "options": _OPTIONS, "name": "str"},
)

_STREAM_OPTIONS = Struct("openai.StreamOptions", {"include_usage": "bool"})
_OPENAI_TOOL_CALL = Struct(
    "openai.ToolCall",
    {
        "id": "str",
        "index": "int",
        "type": "str",
        "function": Struct("openai.ToolCallFunction", {"name": "str", "arguments": "str"}),
    },
)
_OPENAI_MESSAGE = Struct(
    "openai.Message",
    {
        "role": "str",
        "content": "any",
        "reasoning": "str",
        "tool_calls": ("list", _OPENAI_TOOL_CALL),
        "name": "str",
        "tool_call_id": "str",
    },
)
OPENAI_CHAT = Struct(
    "openai.ChatCompletionRequest",
    {
        "model": "str",
        "messages": ("list", _OPENAI_MESSAGE),
        "stream": "bool",
        "stream_options": _STREAM_OPTIONS,
        "max_tokens": "int",
        "seed": "int",
        "stop": "any",
        "temperature": "f64",
        "frequency_penalty": "f64",
        "presence_penalty": "f64",
        "top_p": "f64",
        "response_format": Struct(
            "openai.ResponseFormat",
            {"type": "str", "json_schema": Struct("openai.JsonSchema", {"schema": "raw"})},
        ),
        "tools": ("list", TOOL),
        "reasoning": Struct("openai.Reasoning", {"effort": "str"}),
        "reasoning_effort": "str",
        "logprobs": "bool",
        "top_logprobs": "int",
        "_debug_render_only": "bool",
    },
)
OPENAI_COMPLETION = Struct(
    "openai.CompletionRequest",
    {
        "model": "str",
        "prompt": "str",
        "frequency_penalty": "f32",
        "max_tokens": "int",
        "presence_penalty": "f32",
        "seed": "int",
        "stop": "any",
        "stream": "bool",
        "stream_options": _STREAM_OPTIONS,
        "temperature": "f32",
        "top_p": "f32",
        "suffix": "str",
        "logprobs": "int",
        "_debug_render_only": "bool",
    },
)
OPENAI_EMBED = Struct(
    "openai.EmbedRequest", {"input": "any", "model": "str", "dimensions": "int", "encoding_format": "str"}
)


def _responses_content(value: Any, where: str) -> dict[str, Any]:
    # openai/responses.go unmarshalResponsesContent: picked by `type`.
    head = decode(value, Struct("struct", {"type": "str"}), where) or {}
    kind = head.get("type") or ""
    fields = {
        "input_text": {"type": "str", "text": "str"},
        "output_text": {"type": "str", "text": "str"},
        "input_image": {"type": "str", "detail": "str", "file_id": "str", "image_url": "str"},
        "input_file": {"type": "str", "file_data": "str", "file_id": "str", "file_url": "str", "filename": "str"},
    }.get(kind)
    if fields is None:
        raise GoError(f"unknown content type: {kind}")
    return {"type": kind, **(decode(value, Struct("openai.ResponsesContent", fields), where) or {})}


def _content_list(value: Any, where: str, what: str) -> list[dict[str, Any]] | str:
    """A string (null reads as "") or a list of Responses content items (ResponsesInputMessage.UnmarshalJSON)."""
    text = _as_string(value)
    if text is not None:
        return text
    if not isinstance(value, list):
        raise GoError(f"{what} must be a string or array: json: cannot unmarshal {_kind(value)} into []json.RawMessage")
    return [_responses_content(item, f"{where}[{i}]") for i, item in enumerate(value)]


_RESPONSES_ITEMS = {
    "function_call": Struct(
        "openai.ResponsesFunctionCall",
        {"id": "str", "type": "str", "call_id": "str", "name": "str", "arguments": "str"},
    ),
    "reasoning": Struct(
        "openai.ResponsesReasoningInput",
        {
            "id": "str",
            "type": "str",
            "summary": ("list", Struct("openai.ResponsesReasoningSummary", {"type": "str", "text": "str"})),
            "encrypted_content": "str",
        },
    ),
}


def _responses_item(value: Any, where: str) -> dict[str, Any]:
    # openai/responses.go unmarshalResponsesInputItem: `type`, or a message when only `role` is given.
    head = decode(value, Struct("struct", {"type": "str", "role": "str"}), where) or {}
    kind = head.get("type") or ("message" if head.get("role") else "")
    if kind in ("message", "function_call_output"):
        keys = ("type", "role", "content") if kind == "message" else ("type", "call_id", "output")
        spec = Struct("aux", {k: "raw" if k in ("content", "output") else "str" for k in keys})
        item = decode(value, spec, where)
        body_key = keys[2]
        if body_key in item:  # absent: no content (a present null reads as "")
            item[body_key] = _content_list(item[body_key], where, body_key)
        return {**item, "type": kind}
    if kind in _RESPONSES_ITEMS:
        return {**decode(value, _RESPONSES_ITEMS[kind], where), "type": kind}
    raise GoError(f'unknown input item type: "{kind}"' if kind else "input item missing required 'type' field")


def _responses_input(value: Any, where: str) -> Any:
    # openai/responses.go ResponsesInput.UnmarshalJSON: a string (null reads as ""), or a list of input items.
    text = _as_string(value)
    if text is not None:
        return text
    if not isinstance(value, list):
        raise GoError(f"input must be a string or array: json: cannot unmarshal {_kind(value)} into []json.RawMessage")
    items = []
    for i, item in enumerate(value):
        try:
            items.append(_responses_item(item, where))
        except GoError as exc:
            raise GoError(f"input[{i}]: {exc}") from None
    return items


RESPONSES = Struct(
    "openai.ResponsesRequest",
    {
        "model": "str",
        "background": "bool",
        "conversation": "raw",
        "include": ("list", "str"),
        "input": Custom(_responses_input, sees_null=True),
        "instructions": "str",
        "max_output_tokens": "int",
        "reasoning": Struct(
            "openai.ResponsesReasoning", {"effort": "str", "generate_summary": "str", "summary": "str"}
        ),
        "temperature": "f64",
        "text": Struct(
            "openai.ResponsesText",
            {
                "format": Struct(
                    "openai.ResponsesTextFormat", {"type": "str", "name": "str", "schema": "raw", "strict": "bool"}
                )
            },
        ),
        "top_p": "f64",
        "truncation": "str",
        "tools": (
            "list",
            Struct(
                "openai.ResponsesTool",
                {
                    "type": "str",
                    "name": "str",
                    "description": "str",
                    "strict": "bool",
                    "parameters": ("map", "any"),
                },
            ),
        ),
        "stream": "bool",
    },
)

_ANTHROPIC_BLOCK = Struct(
    "anthropic.ContentBlock",
    {
        "type": "str",
        "text": "str",
        "citations": (
            "list",
            Struct(
                "anthropic.Citation",
                {"type": "str", "url": "str", "title": "str", "encrypted_index": "str", "cited_text": "str"},
            ),
        ),
        "source": Struct("anthropic.ImageSource", {"type": "str", "media_type": "str", "data": "str", "url": "str"}),
        "id": "str",
        "name": "str",
        "input": ARGUMENTS,
        "tool_use_id": "str",
        "content": "any",
        "is_error": "bool",
        "thinking": "str",
        "signature": "str",
    },
)


def _message_param(value: Any, where: str) -> dict[str, Any]:
    # anthropic/anthropic.go MessageParam.UnmarshalJSON: content is a string (null reads as "") or blocks; a missing
    # content (or a null message) fails with "unexpected end of JSON input".
    raw = decode(value, Struct("struct", {"role": "str", "content": "raw"}), where) or {}
    if "content" not in raw:
        raise GoError("unexpected end of JSON input")
    text = _as_string(raw["content"])
    blocks = (
        [{"type": "text", "text": text}]
        if text is not None
        else decode(raw["content"], ("list", _ANTHROPIC_BLOCK), where)
    )
    return {"role": raw.get("role") or "", "content": blocks or []}


MESSAGES = Struct(
    "anthropic.MessagesRequest",
    {
        "model": "str",
        "max_tokens": "int",
        "messages": ("list", Custom(_message_param, sees_null=True)),
        "system": "any",
        "stream": "bool",
        "temperature": "f64",
        "top_p": "f64",
        "top_k": "int",
        "stop_sequences": ("list", "str"),
        "tools": (
            "list",
            Struct(
                "anthropic.Tool",
                {"type": "str", "name": "str", "description": "str", "input_schema": "raw", "max_uses": "int"},
            ),
        ),
        "tool_choice": Struct(
            "anthropic.ToolChoice", {"type": "str", "name": "str", "disable_parallel_tool_use": "bool"}
        ),
        "thinking": Struct("anthropic.ThinkingConfig", {"type": "str", "budget_tokens": "int"}),
        "metadata": Struct("anthropic.Metadata", {"user_id": "str"}),
        "output_config": Struct("anthropic.OutputConfig", {"effort": "str"}),
    },
)

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


# ---- the handlers' own checks ------------------------------------------------------------------------------------
class Refusal(Exception):
    """Ollama answers this status (400, or the 500 some client mistakes get) with this message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def option_problem(options: dict[str, Any] | None) -> str | None:
    """api.Options.FromMap: a known option of the wrong type (Ollama answers 500 through handleScheduleError)."""
    for key, value in (options or {}).items():
        want = OPTION_TYPES.get(key)
        if want is None or value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = {
            "integer": number,
            "float32": number,
            "boolean": isinstance(value, bool),
            "array": isinstance(value, list),
        }[want]
        if not ok:
            return f'option "{key}" must be of type {want}'
        if want == "array" and not all(isinstance(item, str) for item in value):
            return f'option "{key}" must be of an array of strings'
    return None


def format_problem(fmt: Any) -> str | None:
    """llm/server.go Completion: "", "json", null or a JSON schema object (else a 500, once the model is loaded)."""
    if fmt is None or fmt in ("", "json") or isinstance(fmt, dict):
        return None
    return f'invalid format: {json.dumps(fmt)!r}; expected "json" or a valid JSON Schema object'


def _top_logprobs(value: Any) -> None:
    if value is not None and not 0 <= value <= 20:  # server/routes.go ChatHandler / GenerateHandler
        raise Refusal(400, "top_logprobs must be between 0 and 20")


def _base64_ok(text: str) -> bool:
    return bool(_BASE64.fullmatch(text.replace("\r", "").replace("\n", "")))


def decode_image_url(url: str) -> None:
    """openai/openai.go decodeImageURL."""
    if url.startswith(("http://", "https://")):
        raise Refusal(400, "image URLs are not currently supported, please use base64 encoded data instead")
    prefix = next((p for p in IMAGE_URL_PREFIXES if url.startswith(p)), None)
    if prefix is None or not _base64_ok(url[len(prefix) :]):
        raise Refusal(400, "invalid image input")


def _tool_arguments(text: str, message: str) -> None:
    # json.Unmarshal into api.ToolCallFunctionArguments: a JSON object or null.
    try:
        ARGUMENTS.decode(loads(text.encode()), "arguments")
    except (ValueError, GoError):
        raise Refusal(400, message) from None


def _openai_chat(body: dict[str, Any]) -> None:
    # middleware/openai.go ChatMiddleware, then openai.FromChatRequest, then the chat handler.
    messages = body.get("messages") or []
    if not messages:
        raise Refusal(400, "[] is too short - 'messages'")
    converted = 0  # api.Messages made so far: tool calls of a parts message are attached to the last of them
    for message in messages:
        message = message or {}
        content, calls = message.get("content"), message.get("tool_calls")
        parse_calls = True
        if isinstance(content, list):
            converted += len(content)
            parse_calls = converted > 0
            for part in content:
                if not isinstance(part, dict):
                    raise Refusal(400, "invalid message format")
                if part.get("type") == "text":
                    if not isinstance(part.get("text"), str):
                        raise Refusal(400, "invalid message format")
                elif part.get("type") == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    if not isinstance(url, str):
                        raise Refusal(400, "invalid message format")
                    decode_image_url(url)
                else:
                    raise Refusal(400, "invalid message format")
        elif not isinstance(content, str) and calls is None:  # content is optional only beside tool calls
            raise Refusal(400, f"invalid message content type: {go_type_name(content)}")
        else:
            converted += 1
        for call in (calls or []) if parse_calls else []:  # FromCompletionToolCall
            _tool_arguments(((call or {}).get("function") or {}).get("arguments") or "", "invalid tool call arguments")
    reasoning = body.get("reasoning")
    effort = (reasoning or {}).get("effort") if reasoning is not None else body.get("reasoning_effort")
    if effort and effort not in ("high", "medium", "low", "none"):
        raise Refusal(400, f'invalid reasoning value: \'{effort}\' (must be "high", "medium", "low", or "none")')
    _top_logprobs(body.get("top_logprobs"))


def _openai_completion(body: dict[str, Any]) -> None:
    stop = body.get("stop")
    for item in stop if isinstance(stop, list) else []:
        if not isinstance(item, str):
            raise Refusal(400, f"invalid type for 'stop' field: {go_type_name(item)}")
    logprobs = body.get("logprobs")
    if logprobs is not None and logprobs > 0:  # FromCompleteRequest: top_logprobs = logprobs
        _top_logprobs(logprobs)


def _texts(texts: Any) -> None:
    # server/routes.go EmbedHandler: a string, or a list of strings.
    if texts is None or isinstance(texts, str):
        return
    if not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
        raise Refusal(400, "invalid input type")


def _openai_embed(body: dict[str, Any]) -> None:
    # middleware/openai.go EmbeddingsMiddleware.
    fmt = body.get("encoding_format")
    if fmt and fmt.lower() not in ("float", "base64"):
        raise Refusal(400, f"Invalid value for 'encoding_format' = {fmt}. Supported values: ['float', 'base64'].")
    texts = body.get("input")
    if texts is None or texts == []:
        raise Refusal(400, "invalid input")
    _texts(texts)


def _responses_contents(contents: Any) -> None:
    # openai/responses.go convertResponsesContent.
    for part in contents if isinstance(contents, list) else []:
        if part["type"] == "input_image" and part.get("image_url"):
            decode_image_url(part["image_url"])
        elif part["type"] == "input_file":
            raise Refusal(400, "file inputs are not currently supported")


def _responses(body: dict[str, Any]) -> None:
    # openai/responses.go FromResponsesRequest.
    for item in body.get("input") if isinstance(body.get("input"), list) else []:
        if item["type"] == "message":
            _responses_contents(item.get("content"))
        elif item["type"] == "function_call_output":
            _responses_contents(item.get("output"))
        elif item["type"] == "function_call" and item.get("arguments"):
            _tool_arguments(item["arguments"], "failed to parse function call arguments")
    effort = (body.get("reasoning") or {}).get("effort")
    if effort and effort not in ("none", "low", "medium", "high", "max"):
        raise Refusal(400, f'invalid reasoning value: "{effort}" (must be "high", "medium", "low", "max", or "none")')
    for tool in body.get("tools") or []:
        try:  # convertTool: the parameters map re-read as api.ToolFunctionParameters
            decode((tool or {}).get("parameters"), TOOL_PARAMETERS, "parameters")
        except GoError as exc:
            raise Refusal(400, f"failed to unmarshal tool parameters: {exc}") from None


def _anthropic_image(source: dict[str, Any] | None, missing: str) -> None:
    # anthropic/anthropic.go resolveImageSource.
    if source is None:
        raise Refusal(400, missing)
    if source.get("type") != "base64":
        raise Refusal(400, f"invalid image source type: {source.get('type') or ''}. Only base64 images are supported.")
    if not _base64_ok(source.get("data") or ""):
        raise Refusal(400, "invalid base64 image data: illegal base64 data at input byte 0")


def _messages(body: dict[str, Any]) -> None:
    # middleware/anthropic.go AnthropicMessagesMiddleware, then anthropic.FromMessagesRequest.
    if not body.get("model"):
        raise Refusal(400, "model is required")
    if (body.get("max_tokens") or 0) <= 0:
        raise Refusal(400, "max_tokens is required and must be positive")
    if not body.get("messages"):
        raise Refusal(400, "messages is required")
    for message in body["messages"]:
        for block in message["content"]:
            block = block or {}
            kind = block.get("type")
            if kind == "image":
                _anthropic_image(block.get("source"), "invalid image source")
            elif kind == "tool_use" and not block.get("id"):
                raise Refusal(400, "tool_use block missing required 'id' field")
            elif kind == "tool_use" and not block.get("name"):
                raise Refusal(400, "tool_use block missing required 'name' field")
            elif kind == "tool_result" and isinstance(block.get("content"), list):
                for part in block["content"]:
                    if isinstance(part, dict) and part.get("type") == "image":
                        source = part.get("source")
                        _anthropic_image(
                            source if isinstance(source, dict) else None, "invalid tool_result image source"
                        )
    for tool in body.get("tools") or []:
        schema = (tool or {}).get("input_schema")
        if "input_schema" in (tool or {}):
            try:  # convertTool
                decode(schema, TOOL_PARAMETERS, "input_schema")
            except GoError as exc:
                name = (tool or {}).get("name") or ""
                raise Refusal(400, f'invalid input_schema for tool "{name}": {exc}') from None


_HANDLER_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "/api/chat": lambda body: _top_logprobs(body.get("top_logprobs")),
    "/api/generate": lambda body: _top_logprobs(body.get("top_logprobs")),
    "/api/embed": lambda body: _texts(body.get("input")),
    "/v1/chat/completions": _openai_chat,
    "/v1/completions": _openai_completion,
    "/v1/embeddings": _openai_embed,
    "/v1/responses": _responses,
    "/v1/messages": _messages,
}


def check(path: str, value: Any) -> tuple[int | None, Any]:
    """(status, message) when Ollama refuses this parsed body on `path` before generating, else (None, the body as
    Ollama's structs hold it). Model lookup and the failures that come later (options, format) are the caller's."""
    spec = SPECS.get(path)
    if spec is None:
        return None, value
    if not isinstance(value, dict) and value is not None:
        return 400, f"json: cannot unmarshal {_kind(value)} into Go value of type {spec.name}"
    try:
        body = decode(value, spec, spec.name.split(".")[-1]) or {}
        _HANDLER_CHECKS.get(path, lambda _: None)(body)
    except GoError as exc:
        return 400, str(exc)
    except Refusal as exc:
        return exc.status, str(exc)
    return None, body


def unloads(body: dict[str, Any]) -> bool:
    """keep_alive is zero: with nothing to generate, the request only unloads the model (server/routes.go)."""
    keep_alive = body.get("keep_alive")
    if isinstance(keep_alive, str):
        return parse_duration(keep_alive) == 0
    return keep_alive is not None and 0 <= keep_alive * 1e9 < 1  # time.Duration(t * 1e9) truncates


def _generation_format(path: str, body: dict[str, Any]) -> Any:
    """The `format` the model is run with once there is something to generate (None: no constraint)."""
    if path in ("/api/chat", "/api/generate"):
        return body.get("format")
    if path == "/v1/chat/completions":  # openai.FromChatRequest
        wanted = body.get("response_format") or {}
        kind = (wanted.get("type") or "").strip(GO_SPACE).lower()  # strings.ToLower(strings.TrimSpace(...))
        if kind == "json_object":
            return "json"
        return (wanted.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
    if path == "/v1/responses":  # openai.FromResponsesRequest
        wanted = (body.get("text") or {}).get("format") or {}
        return wanted.get("schema") if wanted.get("type") == "json_schema" else None
    return None


def _generates(path: str, body: dict[str, Any]) -> bool:
    """Whether the request reaches the model, rather than being answered as a load (server/routes.go)."""
    if path == "/api/chat":
        return bool(body.get("messages"))
    if path in ("/api/generate", "/v1/completions"):
        return bool(body.get("prompt"))
    if path == "/v1/responses":  # FromResponsesRequest makes no message of an empty input and no instructions
        return bool(body.get("instructions") or body.get("input"))
    return path in ("/v1/chat/completions", "/v1/messages")


def late_problem(path: str, body: dict[str, Any]) -> tuple[int, str] | None:
    """What Ollama refuses once the model is found, in its handlers' order: the unload shortcut, raw mode's 400,
    then a wrong option type (Options.FromMap in scheduleRunner: handleScheduleError makes it a 500), then, when
    there is something to generate, an invalid format (llm/server.go Completion, also a 500)."""
    native = path in ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings")
    if path == "/api/chat" and not body.get("messages") and unloads(body):
        return None
    if path == "/api/generate":
        if not body.get("prompt") and unloads(body):
            return None
        if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
            return 400, "raw mode does not support template, system, or context"
    problem = option_problem(body.get("options")) if native else None
    if problem:
        return 500, problem
    problem = format_problem(_generation_format(path, body)) if _generates(path, body) else None
    return (500, problem) if problem else None
