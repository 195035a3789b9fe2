"""OpenAPI request bodies of the forwarded routes (documentation and the schemathesis pass).

The routes read raw bytes and only peek at `model` and `stream`, so these schemas are never used to parse a
request (that would cost a full validation and re-serialisation per call); Ollama validates the rest. They follow
Ollama's docs/api.md and the OpenAI chat completions request, reduced to the commonly used fields.
"""

from __future__ import annotations

_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
        "content": {"type": "string"},
        "images": {"type": "array", "items": {"type": "string"}},
    },
}
_OPTIONS = {
    "type": "object",
    "description": "Model parameters (Modelfile PARAMETER names), e.g. temperature, num_predict, seed.",
    "properties": {
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "num_predict": {"type": "integer", "minimum": -1, "maximum": 4096},
        "seed": {"type": "integer"},
    },
}


def _model(allowed: list[str]) -> dict:
    # Documents the policy: any other model is answered 404 here (routes.read_request), never forwarded.
    return {"type": "string", "enum": list(allowed), "description": "One of ALLOWED_MODELS"}


def _body(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def chat(models: list[str]) -> dict:
    return _body(
        {
            "type": "object",
            "required": ["model"],
            "properties": {
                "model": _model(models),
                "messages": {"type": "array", "items": _MESSAGE},
                "stream": {"type": "boolean", "default": True, "description": "Omitted = true, as in Ollama"},
                "format": {"type": "string", "enum": ["json"]},
                "options": _OPTIONS,
                "keep_alive": {"type": "string"},
            },
        }
    )


def generate(models: list[str]) -> dict:
    return _body(
        {
            "type": "object",
            "required": ["model"],
            "properties": {
                "model": _model(models),
                "prompt": {"type": "string"},
                "system": {"type": "string"},
                "stream": {"type": "boolean", "default": True, "description": "Omitted = true, as in Ollama"},
                "raw": {"type": "boolean"},
                "options": _OPTIONS,
                "keep_alive": {"type": "string"},
            },
        }
    )


def show(models: list[str]) -> dict:
    return _body({"type": "object", "required": ["model"], "properties": {"model": _model(models)}})


def openai_chat(models: list[str]) -> dict:
    return _body(
        {
            "type": "object",
            "required": ["model", "messages"],
            "properties": {
                "model": _model(models),
                "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
                "stream": {"type": "boolean", "default": False},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
                "seed": {"type": "integer"},
            },
        }
    )
