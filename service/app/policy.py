"""Request policy for the one Ollama that staging and production share.

One Ollama serves both environments on the Mac, so a request from one can hurt the other: `keep_alive: 0` unloads
the model for everyone, a different `options.num_ctx` reloads it with a new context size (ollama/ollama
server/sched.go needsReload), and a huge `num_predict` holds the one generation slot for minutes. When the operator
sets KEEP_ALIVE, NUM_CTX or MAX_PREDICT, `RequestPolicy.apply` rewrites exactly those fields and says what it
changed; a body without them is forwarded byte for byte (the caller re-serialises only when something changed).

The fields per route are each API's own names: Ollama's top-level `keep_alive` and `options.num_ctx` /
`options.num_predict` (docs/api.md); OpenAI's `max_tokens` / `max_completion_tokens` (chat) and `max_tokens`
(completions); the Responses API's `max_output_tokens`; Anthropic's `max_tokens`. Ollama's /v1 layers take no
keep_alive or num_ctx (openai/openai.go, anthropic/anthropic.go), so there is nothing to replace there.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings

_OLLAMA_GENERATION = ("keep_alive", "num_ctx", "num_predict")
_OLLAMA_EMBEDDING = ("keep_alive", "num_ctx")
# The fields each forwarding route's body may carry that the policy governs.
FIELDS: dict[str, tuple[str, ...]] = {
    "/api/chat": _OLLAMA_GENERATION,
    "/api/generate": _OLLAMA_GENERATION,
    "/api/embed": _OLLAMA_EMBEDDING,
    "/api/embeddings": _OLLAMA_EMBEDDING,
    "/v1/chat/completions": ("max_tokens", "max_completion_tokens"),
    "/v1/completions": ("max_tokens",),
    "/v1/responses": ("max_output_tokens",),
    "/v1/messages": ("max_tokens",),
}
_IN_OPTIONS = frozenset({"num_ctx", "num_predict"})
_CAPPED = frozenset({"num_predict", "max_tokens", "max_completion_tokens", "max_output_tokens"})


@dataclass(frozen=True, slots=True)
class Replacement:
    field: str  # as written in the body: "keep_alive", "options.num_ctx", "max_tokens", ...
    old: object
    new: object


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class RequestPolicy:
    def __init__(self, settings: Settings) -> None:
        self.keep_alive = settings.keep_alive_value
        self.num_ctx = settings.num_ctx
        self.max_predict = settings.max_predict

    def fields(self, path: str) -> tuple[str, ...]:
        """The governed fields of this route that a setting is on for (empty: the route's fast path). Asked once per
        route when the app is built (routes.load_carrying)."""
        wanted = {"keep_alive": self.keep_alive, "num_ctx": self.num_ctx}
        return tuple(f for f in FIELDS.get(path, ()) if wanted.get(f, self.max_predict) is not None)

    def apply(self, fields: tuple[str, ...], payload: dict) -> list[Replacement]:
        """Rewrite `payload` in place for the given fields; return what changed (empty: forward the body as is)."""
        changes: list[Replacement] = []
        options = payload.get("options")
        for name in fields:
            container = options if name in _IN_OPTIONS else payload
            if not isinstance(container, dict) or name not in container:
                continue  # absent: nothing to replace (Ollama then uses its own defaults)
            old = container[name]
            new = self._wanted(name, old)
            if new is not None and (new != old or type(new) is not type(old)):
                container[name] = new
                changes.append(Replacement(f"options.{name}" if name in _IN_OPTIONS else name, old, new))
        return changes

    def _wanted(self, name: str, old: object) -> object | None:
        """The value the field must have, or None to leave it."""
        if name == "keep_alive":
            return self.keep_alive
        if name == "num_ctx":
            return self.num_ctx
        if name in _CAPPED:
            # null means "not set" to every one of these APIs, and a non-number is the API's to reject (a clear error
            # beats a silently repaired request). Ollama's num_predict -1 (until the end) and -2 (fill the context,
            # docs/modelfile.md) are above any cap.
            if not _is_number(old) or 0 <= old <= self.max_predict:
                return None
            return self.max_predict
        return None
