"""The surface an agent's backend calls, through the official ollama, openai and anthropic clients, over real HTTP.

Each test sends through the service to the Ollama double and checks both directions: the request bytes the client
wrote are the bytes that reached the double (RecordedRequest.raw), and what the double answered (tool calls,
thinking, structured output, logprobs, embeddings, usage) is what the client parsed.
"""

from __future__ import annotations

import base64
import json
import struct

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.fakes.ollama import embedding_vector, expected_text

from .conftest import MODEL, Clients, base_env

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
SCHEMA = {
    "type": "object",
    "properties": {"age": {"type": "integer"}, "available": {"type": "boolean"}, "name": {"type": "string"}},
    "required": ["age", "available", "name"],
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(64))).decode()


def reached(double, path: str):
    [rec] = [r for r in double.requests if r.path == path]
    return rec


def assert_forwarded_as_sent(double, clients: Clients, path: str) -> dict:
    """The request reached Ollama exactly as the client wrote it; returns its JSON."""
    rec = reached(double, path)
    assert rec.raw == clients.last_sent, (rec.raw[:300], clients.last_sent[:300])
    return json.loads(rec.raw)


# ---- tool calls, thinking, structured output, images, options, logprobs ----------------------------------------


@pytest.mark.parametrize("delay", [0.0, 0.4], ids=["prompt", "after-early-chunk"])
def test_ollama_chat_tool_calls(clients, double, delay):
    # delay > FIRST_CHUNK_DEADLINE: the client first gets the service's early empty chunk, then Ollama's.
    double.configure(tool_calls=[WEATHER], first_token_delay=delay)
    answer = clients.ollama.chat(model=MODEL, messages=USER, tools=[TOOL])
    assert answer.message.tool_calls[0].function.name == "get_weather"
    assert answer.message.tool_calls[0].function.arguments == WEATHER["arguments"]
    assert assert_forwarded_as_sent(double, clients, "/api/chat")["tools"] == [TOOL]
    double.reset()
    double.configure(tool_calls=[WEATHER], first_token_delay=delay)
    chunks = list(clients.ollama.chat(model=MODEL, messages=USER, tools=[TOOL], stream=True))
    calls = [call for chunk in chunks for call in chunk.message.tool_calls or []]
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", WEATHER["arguments"])]
    assert chunks[-1].done and chunks[-1].done_reason == "stop"
    assert_forwarded_as_sent(double, clients, "/api/chat")


@pytest.mark.parametrize("delay", [0.0, 0.4], ids=["prompt", "after-early-chunk"])
def test_openai_chat_tool_calls(clients, double, delay):
    double.configure(tool_calls=[WEATHER], first_token_delay=delay)
    answer = clients.openai.chat.completions.create(model=MODEL, messages=USER, tools=[TOOL])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == WEATHER["arguments"]
    assert assert_forwarded_as_sent(double, clients, "/v1/chat/completions")["tools"] == [TOOL]
    double.reset()
    double.configure(tool_calls=[WEATHER], first_token_delay=delay)
    chunks = list(clients.openai.chat.completions.create(model=MODEL, messages=USER, tools=[TOOL], stream=True))
    deltas = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert [(d.function.name, json.loads(d.function.arguments)) for d in deltas] == [
        ("get_weather", WEATHER["arguments"])
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert_forwarded_as_sent(double, clients, "/v1/chat/completions")


@pytest.mark.parametrize("think", [True, "low", "medium", "high"])
def test_think_and_its_levels_reach_ollama_and_thinking_comes_back(clients, double, think):
    double.configure(thinking="Paris is in France.", first_token_delay=0.2)
    answer = clients.ollama.chat(model=MODEL, messages=USER, think=think)
    assert answer.message.thinking == "Paris is in France." and answer.message.content == expected_text(5)
    assert assert_forwarded_as_sent(double, clients, "/api/chat")["think"] == think
    double.reset()
    double.configure(thinking="Paris is in France.", first_token_delay=0.2)
    streamed = list(clients.ollama.generate(model=MODEL, prompt="weather?", think=think, stream=True))
    assert "".join(c.thinking or "" for c in streamed) == "Paris is in France."
    assert "".join(c.response for c in streamed) == expected_text(5)
    assert assert_forwarded_as_sent(double, clients, "/api/generate")["think"] == think


def test_structured_output_follows_the_format_schema(clients, double):
    answer = clients.ollama.chat(model=MODEL, messages=USER, format=SCHEMA, options={"temperature": 0, "seed": 7})
    value = json.loads(answer.message.content)
    assert set(value) == {"age", "available", "name"} and isinstance(value["age"], int)
    sent = assert_forwarded_as_sent(double, clients, "/api/chat")
    assert sent["format"] == SCHEMA and sent["options"] == {"temperature": 0, "seed": 7}
    double.reset()
    assert json.loads(clients.ollama.generate(model=MODEL, prompt="x", format="json").response)
    assert assert_forwarded_as_sent(double, clients, "/api/generate")["format"] == "json"
    double.reset()
    answer = clients.openai.chat.completions.create(
        model=MODEL,
        messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}},
    )
    assert set(json.loads(answer.choices[0].message.content)) == {"age", "available", "name"}
    assert assert_forwarded_as_sent(double, clients, "/v1/chat/completions")["response_format"]["json_schema"] == {
        "name": "person",
        "schema": SCHEMA,
    }


def test_images_reach_ollama_byte_for_byte(clients, double):
    clients.ollama.chat(model=MODEL, messages=[{"role": "user", "content": "what is this?", "images": [PNG]}])
    assert assert_forwarded_as_sent(double, clients, "/api/chat")["messages"][0]["images"] == [PNG]
    double.reset()
    clients.ollama.generate(model=MODEL, prompt="what is this?", images=[PNG])
    assert assert_forwarded_as_sent(double, clients, "/api/generate")["images"] == [PNG]
    double.reset()
    part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    clients.openai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": [{"type": "text", "text": "what is this?"}, part]}]
    )
    assert assert_forwarded_as_sent(double, clients, "/v1/chat/completions")["messages"][0]["content"][1] == part
    double.reset()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    clients.anthropic.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}]
    )
    assert assert_forwarded_as_sent(double, clients, "/v1/messages")["messages"][0]["content"][0] == image


def test_logprobs_reach_ollama_and_come_back(clients, double):
    answer = clients.ollama.chat(model=MODEL, messages=USER, logprobs=True, top_logprobs=2)
    assert [entry.token for entry in answer.logprobs] == [f"tok{i}" if i == 0 else f" tok{i}" for i in range(5)]
    assert answer.logprobs[0].top_logprobs[0].logprob == -0.25
    sent = assert_forwarded_as_sent(double, clients, "/api/chat")
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
    double.reset()
    double.configure(first_token_delay=0.3)
    chunks = list(clients.ollama.generate(model=MODEL, prompt="x", logprobs=True, stream=True))
    assert [lp.token for c in chunks for lp in c.logprobs or []] == [" tok" + str(i) if i else "tok0" for i in range(5)]
    double.reset()
    answer = clients.openai.chat.completions.create(model=MODEL, messages=USER, logprobs=True, top_logprobs=1)
    assert [t.token for t in answer.choices[0].logprobs.content][:2] == ["tok0", " tok1"]
    assert assert_forwarded_as_sent(double, clients, "/v1/chat/completions")["top_logprobs"] == 1


# ---- embeddings -------------------------------------------------------------------------------------------------


def test_embeddings_through_both_clients(clients, double):
    double.configure(embedding_dimensions=6)
    answer = clients.ollama.embed(model=MODEL, input=["first text", "second"], truncate=True, dimensions=4)
    assert answer.embeddings == [embedding_vector("first text", 4), embedding_vector("second", 4)]
    assert answer.prompt_eval_count == 3
    sent = assert_forwarded_as_sent(double, clients, "/api/embed")
    assert (sent["input"], sent["truncate"], sent["dimensions"]) == (["first text", "second"], True, 4)
    double.reset()
    double.configure(embedding_dimensions=6)
    assert clients.ollama.embed(model=MODEL, input="one").embeddings == [embedding_vector("one", 6)]
    assert clients.ollama.embeddings(model=MODEL, prompt="legacy").embedding == embedding_vector("legacy", 6)
    assert_forwarded_as_sent(double, clients, "/api/embeddings")
    listed = clients.openai.embeddings.create(model=MODEL, input=["a b", "c"], encoding_format="float")
    assert [d.embedding for d in listed.data] == [embedding_vector("a b", 6), embedding_vector("c", 6)]
    assert listed.usage.prompt_tokens == 3
    assert_forwarded_as_sent(double, clients, "/v1/embeddings")
    single = clients.openai.embeddings.create(model=MODEL, input="a b")  # the client asks for base64 by default
    assert json.loads(double.requests[-1].raw)["encoding_format"] == "base64"
    as_float32 = struct.unpack("<6f", struct.pack("<6f", *embedding_vector("a b", 6)))
    assert single.data[0].embedding == list(as_float32)


# ---- /v1/completions, /v1/responses, /v1/models/{model}, /v1/messages -----------------------------------------


def test_openai_completions_with_suffix_streamed_and_not(clients, double):
    answer = clients.openai.completions.create(
        model=MODEL, prompt="def add(a, b):", suffix="    return c", max_tokens=3
    )
    assert answer.choices[0].text == expected_text(3) and answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 3
    assert assert_forwarded_as_sent(double, clients, "/v1/completions")["suffix"] == "    return c"
    double.reset()
    double.configure(first_token_delay=0.3)
    stream = clients.openai.completions.create(
        model=MODEL, prompt="x", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected_text(5)
    assert chunks[-1].usage.completion_tokens == 5
    assert_forwarded_as_sent(double, clients, "/v1/completions")


def test_openai_responses_streamed_and_not(clients, double):
    answer = clients.openai.responses.create(model=MODEL, input="Hello", instructions="Be brief", max_output_tokens=4)
    assert answer.output_text == expected_text(4) and answer.usage.output_tokens == 4
    sent = assert_forwarded_as_sent(double, clients, "/v1/responses")
    assert (sent["instructions"], sent["max_output_tokens"]) == ("Be brief", 4)
    double.reset()
    double.configure(first_token_delay=0.3, thinking="hmm")
    with clients.openai.responses.stream(model=MODEL, input="Hello", reasoning={"effort": "low"}) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == expected_text(5)
    assert final.output[0].type == "reasoning" and final.output[0].summary[0].text == "hmm"
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 5
    assert_forwarded_as_sent(double, clients, "/v1/responses")
    double.reset()
    double.configure(tool_calls=[WEATHER])
    tool = {"type": "function", "name": "get_weather", "parameters": TOOL["function"]["parameters"]}
    called = clients.openai.responses.create(model=MODEL, input="weather?", tools=[tool])
    assert called.output[0].type == "function_call" and json.loads(called.output[0].arguments) == WEATHER["arguments"]


def test_responses_on_an_older_ollama_is_a_404_in_openai_format(clients, double):
    double.configure(missing_routes=["/v1/responses"])  # Ollama before 0.13.3 (ollama/ollama#13595)
    with pytest.raises(openai.NotFoundError) as info:
        clients.openai.responses.create(model=MODEL, input="Hello")
    error = info.value.body
    assert error["type"] == "invalid_request_error" and "/v1/responses" in error["message"]
    assert "upgrade Ollama" in error["message"]
    with pytest.raises(openai.NotFoundError), clients.openai.responses.stream(model=MODEL, input="Hello") as stream:
        list(stream)


def test_openai_model_retrieve_allowed_models_only(clients, double):
    double.configure(models=[MODEL, "hidden:7b"])
    model = clients.openai.models.retrieve(MODEL)
    assert model.id == MODEL and model.owned_by == "library"
    assert reached(double, f"/v1/models/{MODEL}").method == "GET"
    with pytest.raises(openai.NotFoundError) as info:
        clients.openai.models.retrieve("hidden:7b")
    assert info.value.code == "model_not_found"
    assert [r.path for r in double.requests] == [f"/v1/models/{MODEL}"]


@pytest.mark.parametrize("delay", [0.0, 0.4], ids=["prompt", "after-early-chunk"])
def test_anthropic_messages_streamed_and_not(clients, double, delay):
    double.configure(first_token_delay=delay)
    message = clients.anthropic.messages.create(
        model=MODEL, max_tokens=3, system="Be brief", messages=[{"role": "user", "content": "Hello"}]
    )
    assert message.content[0].text == expected_text(3) and message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3
    sent = assert_forwarded_as_sent(double, clients, "/v1/messages")
    assert (sent["system"], sent["max_tokens"]) == ("Be brief", 3)
    double.reset()
    double.configure(first_token_delay=delay, thinking="ok", tool_calls=[WEATHER])
    tool = {"name": "get_weather", "description": "w", "input_schema": TOOL["function"]["parameters"]}
    with clients.anthropic.messages.stream(
        model=MODEL,
        max_tokens=64,
        tools=[tool],
        thinking={"type": "enabled", "budget_tokens": 16},
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "tool_use"]
    assert final.content[0].thinking == "ok" and final.content[1].input == WEATHER["arguments"]
    assert final.stop_reason == "tool_use"
    assert assert_forwarded_as_sent(double, clients, "/v1/messages")["tools"] == [tool]


# ---- model policy and error formats on every new route ----------------------------------------------------------


def test_model_policy_on_every_new_route_in_its_family_format(clients, double):
    with pytest.raises(ollama.ResponseError) as info:
        clients.ollama.embed(model="nomic-embed-text", input="x")
    assert info.value.status_code == 404 and "nomic-embed-text" in info.value.error
    with pytest.raises(ollama.ResponseError):
        clients.ollama.embeddings(model="nomic-embed-text", prompt="x")
    for call in (
        lambda: clients.openai.embeddings.create(model="text-embedding-3-small", input="x"),
        lambda: clients.openai.completions.create(model="gpt-3.5-turbo-instruct", prompt="x"),
        lambda: clients.openai.responses.create(model="gpt-4o", input="x"),
    ):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.code == "model_not_found"
    with pytest.raises(anthropic.NotFoundError) as info:
        clients.anthropic.messages.create(model="claude-3-5-sonnet", max_tokens=5, messages=USER)
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "not_found_error"
    assert double.requests == []  # none of them reached Ollama


def test_anthropic_errors_keep_anthropic_format(clients, double):
    double.configure(status=500, fail_with="GPU on fire")
    with pytest.raises(anthropic.InternalServerError) as info:
        clients.anthropic.messages.create(model=MODEL, max_tokens=5, messages=USER)
    assert info.value.status_code == 502 and "GPU on fire" in info.value.body["error"]["message"]
    double.configure(status=200, error_after_tokens=2)
    stream = clients.anthropic.messages.stream(model=MODEL, max_tokens=64, messages=USER)
    with pytest.raises(anthropic.APIStatusError, match="GPU on fire"), stream as events:
        list(events)
    resp = httpx.post(str(clients.anthropic.base_url).rstrip("/") + "/v1/messages", content=b"{")
    assert resp.status_code == 400 and resp.json()["type"] == "error"


# ---- HEAD and 405 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/version", "/api/tags"])
def test_head_answers_as_ollama_does(client, double, path):
    got, whole = client.head(path), client.get(path)
    assert got.status_code == 200 and got.content == b""
    assert got.headers["content-type"] == whole.headers["content-type"]
    assert int(got.headers["content-length"]) == len(whole.content)


def test_unknown_method_on_a_known_path_is_405_with_a_true_allow(client, double):
    spec = client.get("/openapi.json").json()["paths"]
    for template, operations in spec.items():
        path = template.replace("{digest}", "sha256:abc").replace("{model}", MODEL)
        documented = {m.upper() for m in operations}
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"} - documented:
            resp = client.request(method, path)
            assert resp.status_code == 405, (method, path, resp.status_code)
            assert set(resp.headers["allow"].split(", ")) == documented, (method, path, resp.headers["allow"])
            if method != "HEAD":
                body = resp.json()
                assert "Method Not Allowed" in json.dumps(body)
    assert double.requests == []


# ---- EMBED_MODEL_NAME --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embed_service(start_service, ollama_double):
    return start_service(**base_env(ollama_double, EMBED_MODEL_NAME="nomic-embed-text"))


def test_embed_model_is_served_on_embedding_routes_only(embed_service, double):
    double.configure(models=[MODEL, "nomic-embed-text:latest", "other:1b"])
    both = Clients(embed_service.url)
    assert [m.model for m in both.ollama.list().models] == [MODEL, "nomic-embed-text:latest"]
    assert [m.id for m in both.openai.models.list()] == [MODEL, "nomic-embed-text:latest"]
    assert both.ollama.embed(model="nomic-embed-text", input="x").embeddings
    assert both.openai.embeddings.create(model="nomic-embed-text", input="x", encoding_format="float").data
    assert both.openai.models.retrieve("nomic-embed-text").id == "nomic-embed-text"
    with pytest.raises(ollama.ResponseError) as info:
        both.ollama.chat(model="nomic-embed-text", messages=USER)
    assert info.value.status_code == 404
    assert httpx.get(embed_service.url + "/ready").json()["embed_model"] == "nomic-embed-text"
    double.configure(models=[MODEL])  # the embedding model is not pulled: not ready
    ready = httpx.get(embed_service.url + "/ready")
    assert ready.status_code == 503 and "nomic-embed-text" in ready.json()["reason"]
