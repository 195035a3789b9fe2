"""Request bodies as Ollama reads them: the checks the service makes before forwarding a body it has parsed anyway.

1. Key spelling. Ollama decodes bodies with Go's encoding/json, which matches an object key to a struct field
   case-insensitively, the last matching key winning (https://pkg.go.dev/encoding/json#Unmarshal): Ollama reads
   {"model": "allowed", "Model": "other"} as model "other", and {"Keep_Alive": 0} as keep_alive. The service decides
   on a few top-level fields (the model allowlist, `stream`, the request policy, the checks below), so a key that
   Go would read as one of them without being spelled exactly is refused (`misspelled`): the service and Ollama
   then always read the same value, and the allowlist and the policy cannot be walked around.
2. Mistakes Ollama answers with a 500. A known option of the wrong type (api.Options.FromMap, reached through
   scheduleRunner and handleScheduleError: `options.temperature: "hot"`), a `format` that is neither "json" nor a
   JSON schema object (llm/server.go Completion; also `response_format.json_schema.schema` and the Responses API's
   `text.format.schema`), and an OpenAI tool call whose `arguments` string is not a JSON object (Ollama skips that
   check in one corner of openai.FromChatRequest, so it is made here for every message). The client gets a 400
   that names the field instead of a 502 (`problem`). ollama/ollama api/types.go, openai/openai.go,
   openai/responses.go, server/routes.go.
"""

from __future__ import annotations

import json
import math

# The top-level fields each route's checks and policy read (and that Ollama's struct for the route has).
_GENERATION = ("model", "stream", "keep_alive", "options", "format")
FIELDS: dict[str, frozenset[str]] = {
    "/api/chat": frozenset(_GENERATION),
    "/api/generate": frozenset(_GENERATION),
    "/api/embed": frozenset(("model", "keep_alive", "options")),
    "/api/embeddings": frozenset(("model", "keep_alive", "options")),
    "/api/show": frozenset(("model",)),
    "/v1/chat/completions": frozenset(("model", "stream", "max_tokens", "response_format", "messages")),
    "/v1/completions": frozenset(("model", "stream", "max_tokens")),
    "/v1/embeddings": frozenset(("model",)),
    "/v1/responses": frozenset(("model", "stream", "max_output_tokens", "text")),
    "/v1/messages": frozenset(("model", "stream", "max_tokens")),
}
# api.Options / api.Runner fields and what Options.FromMap accepts for them (null is skipped; unknown keys ignored).
NUMBER_OPTIONS = frozenset(
    (
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "repeat_last_n",
        "top_p",
        "min_p",
        "typical_p",
        "temperature",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
    )
)
# unicode.IsSpace, which strings.TrimSpace trims (Python's str.strip() also trims \x1c-\x1f).
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
_FORMAT_HELP = 'must be "json", "" or a JSON schema object'
# Go's foldName maps these two non-ASCII runes onto ASCII letters (unicode.SimpleFold); no other rune does.
_FOLD_SPECIALS = str.maketrans({"ſ": "S", "K": "K"})


def fold(name: str) -> str:
    """A key as Go compares it with a field name (ASCII case folded, plus the long s and the Kelvin sign)."""
    return "".join(c.upper() if c < "\x80" else c for c in name.translate(_FOLD_SPECIALS))


_FOLDED = {path: {fold(name): name for name in names} for path, names in FIELDS.items()}


def misspelled(path: str, payload: dict) -> tuple[str, str] | None:
    """(key, field) for a top-level key Go would read as `field` although it is spelled otherwise, else None."""
    names = FIELDS.get(path, frozenset())
    for key in payload:
        # Fast path: every field name is lower-case ASCII, so such a key matches one only when it is the name.
        if key in names or (key.isascii() and key.islower()):
            continue
        field = _FOLDED[path].get(fold(key)) if path in _FOLDED else None
        if field is not None:
            return key, field
    return None


def _go_get(obj: object, name: str) -> object:
    """obj's field `name` as Go's decoder fills it (case-insensitive, last key wins); None when absent."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(name)
    folded = fold(name)
    for key in obj:
        if key != name and fold(key) == folded:
            value = obj[key]
    return value


def _format_ok(value: object) -> bool:
    return value is None or value in ("", "json") or isinstance(value, dict)


def _options_problem(options: object) -> str | None:
    if not isinstance(options, dict):
        return None  # absent, null, or the wrong type: Ollama's own 400
    for key, value in options.items():
        if value is None:
            continue
        if key in NUMBER_OPTIONS and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"options.{key} must be a number"
        if key == "use_mmap" and not isinstance(value, bool):
            return "options.use_mmap must be true or false"
        if key == "stop" and not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
            return "options.stop must be a list of strings"
    return None


def _json_object_text(text: object) -> bool:
    """A string holding a JSON object or null, as json.Unmarshal into api.ToolCallFunctionArguments takes it."""
    if not isinstance(text, str):
        return True  # the wrong type: Ollama's own 400
    try:
        value = json.loads(text, parse_constant=_refuse)
    except ValueError:
        return False
    return (value is None or isinstance(value, dict)) and _finite(value)


def _refuse(name: str) -> object:
    raise ValueError(name)


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 2**1024
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _tool_calls_problem(messages: object) -> str | None:
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        calls = _go_get(message, "tool_calls")
        for j, call in enumerate(calls if isinstance(calls, list) else []):
            arguments = _go_get(_go_get(call, "function"), "arguments")  # absent or null: "", not JSON
            if not _json_object_text("" if arguments is None else arguments):
                return f"messages[{i}].tool_calls[{j}].function.arguments must be a JSON object in a string"
    return None


def problem(path: str, payload: dict) -> tuple[str, str] | None:
    """(message, field) for a mistake Ollama would answer with a 500 (or, for tool call arguments, miss), else None."""
    if path in ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings"):
        message = _options_problem(payload.get("options"))
        if message:
            return message, "options"
        if "format" in payload and path in ("/api/chat", "/api/generate") and not _format_ok(payload["format"]):
            return f"format {_FORMAT_HELP}", "format"
    elif path == "/v1/chat/completions":
        wanted = payload.get("response_format")
        kind = _go_get(wanted, "type")
        if isinstance(kind, str) and kind.strip(GO_SPACE).lower() == "json_schema":
            schema = _go_get(_go_get(wanted, "json_schema"), "schema")
            if not _format_ok(schema):
                return f"response_format.json_schema.schema {_FORMAT_HELP}", "response_format"
        message = _tool_calls_problem(payload.get("messages"))
        if message:
            return message, "messages"
    elif path == "/v1/responses":
        wanted = _go_get(payload.get("text"), "format")
        if _go_get(wanted, "type") == "json_schema" and not _format_ok(_go_get(wanted, "schema")):
            return f"text.format.schema {_FORMAT_HELP}", "text"
    return None
