"""The double reads request bodies as Ollama's Go code does (tests/fakes/ollama_types.py), proven over real HTTP.

Each case is a rule of Go's encoding/json (https://pkg.go.dev/encoding/json#Unmarshal) or of an Ollama handler
(ollama/ollama api/types.go, openai/openai.go, openai/responses.go, anthropic/anthropic.go, middleware/*.go,
server/routes.go), sent as raw bytes so the spelling of each number and key is exactly what is tested.
"""

from __future__ import annotations

import httpx
import pytest

from tests.fakes import ollama_types

MODEL = "llama3.2:1b"
M = f'"model":"{MODEL}"'
CHAT = f'{{{M},"messages":[{{"role":"user","content":"hi"}}],"stream":false'
GEN = f'{{{M},"prompt":"hi","stream":false'
V1 = f'{{{M},"messages":[{{"role":"user","content":"hi"}}]'
RESP = f'{{{M},"input":"hi"'
MSGS = f'{{{M},"max_tokens":5'


@pytest.fixture
def http(double):
    with httpx.Client(base_url=double.url, timeout=10) as client:
        yield client


CASES = [
    # -- encoding/json: an int field takes an integer literal within int64, nothing else
    ("/api/chat", CHAT + ',"top_logprobs":1}', 200, None),
    ("/api/chat", CHAT + ',"top_logprobs":1.0}', 400, "cannot unmarshal number 1.0"),
    ("/api/chat", CHAT + ',"top_logprobs":1e0}', 400, "cannot unmarshal number"),
    ("/api/embed", f'{{{M},"input":"x","dimensions":9223372036854775807}}', 200, None),
    ("/api/embed", f'{{{M},"input":"x","dimensions":9223372036854775808}}', 400, "of type int"),
    ("/api/generate", GEN + ',"width":2147483648}', 400, "of type int32"),
    # -- float32 refuses a magnitude above math.MaxFloat32; any number is refused beyond float64
    ("/v1/completions", f'{{{M},"prompt":"x","temperature":3.4028234663852886e38}}', 200, None),
    ("/v1/completions", f'{{{M},"prompt":"x","temperature":3.5e38}}', 400, "of type float32"),
    ("/v1/chat/completions", V1 + ',"temperature":1e309}', 400, "of type float64"),
    ("/api/chat", CHAT + ',"keep_alive":NaN}', 400, "invalid JSON"),
    # -- keys match fields case-insensitively (with the long s); every matching key is decoded, the last wins
    ("/api/chat", CHAT + ',"STREAM":"yes"}', 400, "ChatRequest.stream of type bool"),
    ("/api/chat", CHAT + ',"ſtream":"yes"}', 400, "ChatRequest.stream of type bool"),
    ("/api/chat", CHAT + ',"think":"loud","Think":true}', 400, "invalid think value"),
    ("/api/chat", CHAT + ',"top_logprobs":"x","Top_Logprobs":1}', 400, "cannot unmarshal string"),
    ("/api/chat", CHAT + ',"Top_Logprobs":1,"top_logprobs":2}', 200, None),
    # -- null leaves a field unset; []byte is base64 (padded, CR/LF skipped) or an array of bytes
    ("/api/chat", f'{{{M},"messages":[null,{{"images":["QUJD\\nRA=="]}},{{"images":[[1,null,255]]}}]}}', 200, None),
    ("/api/chat", f'{{{M},"messages":[{{"images":["QUJDRA"]}}]}}', 400, "illegal base64"),
    ("/api/chat", f'{{{M},"messages":[{{"images":[[256]]}}]}}', 400, "of type uint8"),
    # -- custom decoders: api.Duration, api.ThinkValue
    ("/api/chat", CHAT + ',"keep_alive":"1h30m"}', 200, None),
    ("/api/chat", CHAT + ',"keep_alive":"0"}', 200, None),
    ("/api/chat", CHAT + ',"keep_alive":"5"}', 400, "missing unit"),
    ("/api/chat", CHAT + ',"keep_alive":"99999999999h"}', 400, "invalid duration"),
    ("/api/chat", CHAT + ',"keep_alive":true}', 400, "Unsupported type"),
    ("/api/chat", CHAT + ',"think":"max"}', 400, "invalid think value"),
    # -- the handlers: top_logprobs, raw mode (after the unload shortcut), option types and format (500s)
    ("/api/chat", CHAT + ',"top_logprobs":21}', 400, "between 0 and 20"),
    ("/api/generate", GEN + ',"raw":true,"system":"s"}', 400, "raw mode"),
    ("/api/generate", f'{{{M},"raw":true,"system":"s","keep_alive":0}}', 200, None),
    ("/api/chat", CHAT + ',"options":{"temperature":"hot"}}', 500, 'option "temperature" must be of type float32'),
    ("/api/chat", CHAT + ',"options":{"Temperature":"hot","stop":"x"}}', 500, 'option "stop" must be of type array'),
    ("/api/chat", CHAT + ',"format":"xml"}', 500, "invalid format"),
    ("/api/chat", f'{{{M},"messages":[],"format":"xml"}}', 200, None),  # nothing to generate: format unused
    # -- the OpenAI layer
    ("/v1/chat/completions", f'{{{M},"messages":[{{"content":null}}]}}', 400, "invalid message content type: <nil>"),
    ("/v1/chat/completions", f'{{{M},"messages":[{{"content":null,"tool_calls":[]}}]}}', 200, None),
    (
        "/v1/chat/completions",
        f'{{{M},"messages":[{{"content":"x","tool_calls":[{{"function":{{"arguments":"[1]"}}}}]}}]}}',
        400,
        "invalid tool call arguments",
    ),
    (
        "/v1/chat/completions",
        f'{{{M},"messages":[{{"content":[],"tool_calls":[{{"function":{{"arguments":"[1]"}}}}]}}]}}',
        200,
        None,
    ),
    ("/v1/chat/completions", V1 + ',"reasoning_effort":"turbo"}', 400, "invalid reasoning value"),
    ("/v1/chat/completions", V1 + ',"reasoning":{},"reasoning_effort":"turbo"}', 200, None),
    (
        "/v1/chat/completions",
        V1 + ',"response_format":{"type":" JSON_Schema ","json_schema":{"schema":5}}}',
        500,
        "invalid format",
    ),
    ("/v1/chat/completions", V1 + ',"response_format":{"type":"text","json_schema":{"schema":5}}}', 200, None),
    ("/v1/completions", f'{{{M},"prompt":"x","logprobs":21}}', 400, "between 0 and 20"),
    ("/v1/completions", f'{{{M},"prompt":"x","stop":["a",1]}}', 400, "invalid type for 'stop' field: float64"),
    ("/v1/embeddings", f'{{{M},"input":""}}', 200, None),
    ("/v1/embeddings", f'{{{M},"input":[]}}', 400, "invalid input"),
    ("/v1/embeddings", f'{{{M},"input":"x","encoding_format":"BASE64"}}', 200, None),
    # -- the Responses API's own decoders
    ("/v1/responses", f'{{{M},"input":[{{"type":"message","role":"","content":null}}]}}', 200, None),
    ("/v1/responses", f'{{{M},"input":[{{"role":"","content":"x"}}]}}', 400, "missing required 'type'"),
    ("/v1/responses", f'{{{M},"input":[{{"type":"message","content":5}}]}}', 400, "content must be a string or array"),
    ("/v1/responses", f'{{{M},"input":[{{"role":"user","content":[{{"type":"input_file"}}]}}]}}', 400, "file inputs"),
    ("/v1/responses", f'{{{M},"input":[{{"type":"function_call","arguments":"no"}}]}}', 400, "function call arguments"),
    ("/v1/responses", RESP + ',"reasoning":{"effort":"max"}}', 200, None),
    ("/v1/responses", RESP + ',"text":{"format":{"type":"json_schema","schema":"x"}}}', 500, "invalid format"),
    # -- the Anthropic layer
    ("/v1/messages", MSGS + ',"messages":[{"content":null}]}', 200, None),
    ("/v1/messages", MSGS + ',"messages":[{"role":"user"}]}', 400, "unexpected end of JSON input"),
    ("/v1/messages", f'{{{M},"max_tokens":5.0,"messages":[{{"content":"x"}}]}}', 400, "cannot unmarshal number 5.0"),
    ("/v1/messages", MSGS + ',"messages":[{"content":[{"type":"image"}]}]}', 400, "invalid image source"),
    ("/v1/messages", MSGS + ',"messages":[{"content":[{"type":"tool_use","id":"a"}]}]}', 400, "'name'"),
]


@pytest.mark.parametrize(("path", "raw", "status", "message"), CASES)
def test_double_decodes_as_ollama_does(http, double, path, raw, status, message):
    resp = http.post(path, content=raw.encode(), headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    if message:
        error = resp.json()["error"] if resp.headers["content-type"].startswith("application/json") else resp.text
        assert message in (error["message"] if isinstance(error, dict) else error)


def test_duration_parser_follows_go():
    # time.ParseDuration: "0" needs no unit, fractions and the micro signs are units of their own, int64 bounds.
    assert ollama_types.parse_duration("0") == 0
    assert ollama_types.parse_duration("-1.5h") == -5_400_000_000_000
    assert ollama_types.parse_duration(".5µs") == 500
    assert ollama_types.parse_duration("1.s") == 1_000_000_000
    for bad in ("", "h", ".s", "1h5", "5mx", "9223372036854775808ns"):
        with pytest.raises(ValueError):
            ollama_types.parse_duration(bad)
