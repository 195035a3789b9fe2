"""Settings of the service: environment variables, with an optional `.env.{APP_ENV}` file underneath.

Precedence (highest first): real environment variables, then `.env.{APP_ENV}` in the working directory (the image
runs from /app/service; `make run-local` from service/), then the defaults below. APP_ENV itself is only read from
the real environment, because it chooses which file to read. `.env.example` at the repository root documents every
setting; keep the two in step.

Every problem is reported at start as `configuration error: SETTING: reason` and the process exits, so a bad deploy
fails its health check instead of serving with a surprising value.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ALLOWED_ENVS = ("local", "staging", "production")
# Only a developer's machine gets a default model; a deployed environment must say what it serves.
LOCAL_DEFAULT_MODEL = "llama3.2:1b"

CommaList = Annotated[list[str], NoDecode]
# 20 MiB: room for a few base64 images in one chat; the same size Ollama caps a decompressed /v1/responses body at
# (ollama/ollama middleware/openai.go maxDecompressedBodySize = 20 << 20). nginx's client_max_body_size 20m agrees.
DEFAULT_MAX_REQUEST_BYTES = 20 * 1024 * 1024
# Ollama's keep_alive: a number of seconds or a Go duration string ("5m", "1h30m"); negative = keep loaded forever
# (ollama/ollama api/types.go Duration.UnmarshalJSON, time.ParseDuration).
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the setting."""


def normalize_model(name: str) -> str:
    """Ollama treats a model name without a tag as `:latest` (`llama3.2` == `llama3.2:latest`)."""
    name = name.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def parse_keep_alive(value: str) -> int | float | str:
    """KEEP_ALIVE as it goes into a request body: a JSON number for plain seconds, else the duration string."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        if not _GO_DURATION.fullmatch(text):
            raise ValueError(f"{value!r} is neither seconds (e.g. 300, -1) nor a duration like 5m, 1h30m") from None
        return text
    return int(number) if number.is_integer() else number


def _split(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="ignore",  # .env files may carry settings for other tools (compose, ansible)
        protected_namespaces=(),  # allow the field name `model_name`
        validate_default=True,
    )

    app_env: Literal["local", "staging", "production"] = "local"
    app_version: str = "dev"  # the image tag, set at deploy time
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    model_name: str = ""  # required unless APP_ENV=local (then LOCAL_DEFAULT_MODEL)
    allowed_models: CommaList = []  # default: [MODEL_NAME]

    ollama_base_url: str = "http://host.docker.internal:11434"
    ollama_connect_timeout: float = Field(2.0, gt=0)  # seconds; an unreachable Ollama is reported this fast
    # Seconds between two reads from Ollama. A cold model load happens before the first byte, so be generous.
    ollama_read_timeout: float = Field(300.0, gt=0)
    # When Ollama has produced nothing after this many seconds, the client gets a first empty chunk at once, so
    # Cloudflare (524 after ~100 s without a byte) and impatient clients see the stream has started. 50 ms keeps
    # the client's first byte under the 100 ms target even on a busy host; a warm model usually beats it.
    first_chunk_deadline: float = Field(0.05, ge=0)
    # Non-streamed generations have no chunks to send early. When Ollama has not answered after this many seconds
    # (queue wait included), the client gets 200 with JSON headers at once and a space every
    # NONSTREAM_KEEPALIVE_INTERVAL seconds until the JSON body follows (JSON allows leading whitespace), so a cold
    # model load or a long answer does not hit Cloudflare's 524. Before that, errors keep their status codes;
    # after it they arrive as an error body under the 200. 0 turns this off.
    nonstream_keepalive_after: float = Field(60.0, ge=0)
    nonstream_keepalive_interval: float = Field(15.0, gt=0)

    allowed_origins: CommaList = []  # CORS; empty = no cross-origin browser access
    rate_limit_per_minute: int = Field(120, ge=0)  # per client IP on /api/* and /v1/*; 0 disables it
    # Only these peers may name the client with Cf-Connecting-Ip (cloudflared on the host reaches the container
    # through loopback or the Docker bridge). Anyone else is keyed by their own address.
    trusted_proxies: CommaList = ["127.0.0.0/8", "::1/128", "172.16.0.0/12", "192.168.65.0/24"]
    max_concurrent: int = Field(1, ge=1)  # generations running upstream at once, like OLLAMA_NUM_PARALLEL=1
    max_queue: int = Field(16, ge=0)  # generations waiting for a slot; more get 503 + Retry-After
    busy_retry_after: int = Field(5, ge=1)  # seconds, sent in Retry-After with 503 when the queue is full

    # An embedding model served beside MODEL_NAME on the embedding routes only (listed, required by /ready).
    embed_model_name: str = ""
    # Embeddings have their own gate and queue: a retrieval lookup never waits behind a long generation, and a
    # burst of embeddings never fills the generation queue.
    embed_max_concurrent: int = Field(1, ge=1)
    embed_max_queue: int = Field(32, ge=0)

    # Request policy for the one Ollama staging and production share (policy.py). Empty = off.
    max_request_bytes: int = Field(DEFAULT_MAX_REQUEST_BYTES, ge=0)  # larger bodies get 413; 0 = no limit
    keep_alive: str = ""  # replaces a client's keep_alive (a keep_alive of 0 would unload the model for everyone)
    num_ctx: int | None = Field(None, ge=1)  # replaces a different options.num_ctx (a new size reloads the model)
    max_predict: int | None = Field(None, ge=1)  # caps num_predict / max_tokens / max_output_tokens

    # Cloudflare Access JWT check: on when both are set, off when both are empty.
    cf_access_aud: str = ""
    cf_access_certs_url: str = ""
    cf_access_jwks_ttl: float = Field(3600.0, gt=0)  # seconds the fetched keys are trusted before a refetch

    @field_validator("allowed_models", "allowed_origins", "trusted_proxies", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("num_ctx", "max_predict", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: str) -> str:
        if value.strip():
            parse_keep_alive(value)  # raises ValueError with the reason
        return value.strip()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("ollama_base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1]) == 0:
            raise ValueError("must be an http:// or https:// URL, e.g. http://host.docker.internal:11434")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # raises ValueError naming the bad entry
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for item in value:
            if item != "*" and not item.startswith(("http://", "https://")):
                raise ValueError(f"{item!r} is not an origin like https://app.example.com (or *)")
        return value

    @model_validator(mode="after")
    def _defaults_and_pairs(self) -> Settings:
        if not self.model_name:
            if self.app_env != "local":
                raise ValueError("MODEL_NAME: required when APP_ENV is staging or production")
            self.model_name = LOCAL_DEFAULT_MODEL
        if not self.allowed_models:
            self.allowed_models = [self.model_name]
        if normalize_model(self.model_name) not in {normalize_model(m) for m in self.allowed_models}:
            raise ValueError("ALLOWED_MODELS: must include MODEL_NAME")
        if bool(self.cf_access_aud) != bool(self.cf_access_certs_url):
            raise ValueError("CF_ACCESS_AUD and CF_ACCESS_CERTS_URL: set both to enable the JWT check, or neither")
        return self

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.cf_access_aud and self.cf_access_certs_url)

    @property
    def allowed_model_set(self) -> frozenset[str]:
        """Models the generation routes forward."""
        return frozenset(normalize_model(m) for m in self.allowed_models)

    @property
    def embedding_model_set(self) -> frozenset[str]:
        """Models the embedding routes forward: ALLOWED_MODELS and EMBED_MODEL_NAME."""
        extra = {normalize_model(self.embed_model_name)} if self.embed_model_name else set()
        return self.allowed_model_set | extra

    @property
    def served_models(self) -> list[str]:
        """Every model this deployment serves, as listed by /api/tags and /v1/models (and in the OpenAPI enums)."""
        names = list(self.allowed_models)
        if self.embed_model_name and normalize_model(self.embed_model_name) not in self.allowed_model_set:
            names.append(self.embed_model_name)
        return names

    @property
    def keep_alive_value(self) -> int | float | str | None:
        return parse_keep_alive(self.keep_alive) if self.keep_alive else None


def _format(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]).upper()
        msg = item["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def load_settings(workdir: Path | None = None) -> Settings:
    """Read the settings for the APP_ENV named in the environment; raise ConfigError naming the bad setting."""
    app_env = os.environ.get("APP_ENV", "local")
    if app_env not in ALLOWED_ENVS:
        raise ConfigError(f"APP_ENV: must be one of {', '.join(ALLOWED_ENVS)} (got {app_env!r})")
    env_file = (workdir or Path.cwd()) / f".env.{app_env}"
    try:
        return Settings(_env_file=env_file if env_file.is_file() else None)
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None
