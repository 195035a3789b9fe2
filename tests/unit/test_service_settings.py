"""Settings: per-environment files, precedence, defaults and start-up refusal with a message naming the setting."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from app.config import ConfigError, load_settings

from .conftest import SERVICE_DIR, SETTINGS


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean settings environment with tmp_path as the working directory (where .env.{APP_ENV} is looked up)."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_local_defaults(env):
    s = load_settings()
    assert s.app_env == "local"
    assert s.model_name == "llama3.2:1b"
    assert s.allowed_models == ["llama3.2:1b"]
    assert s.ollama_base_url == "http://host.docker.internal:11434"
    assert s.max_concurrent == 1
    assert s.first_chunk_deadline == pytest.approx(0.05)
    assert not s.jwt_enabled


@pytest.mark.parametrize("app_env", ["staging", "production"])
def test_deployed_envs_require_model_name(env, app_env):
    env.setenv("APP_ENV", app_env)
    with pytest.raises(ConfigError, match="MODEL_NAME"):
        load_settings()


@pytest.mark.parametrize("app_env", ["local", "staging", "production"])
def test_env_file_per_app_env_and_real_env_wins(env, tmp_path, app_env):
    (tmp_path / f".env.{app_env}").write_text(
        f"MODEL_NAME=qwen2.5:0.5b\nAPP_VERSION=from-{app_env}-file\nMAX_QUEUE=3\nUNRELATED_TOOL_SETTING=x\n"
    )
    (tmp_path / ".env.other").write_text("MAX_QUEUE=99\n")
    env.setenv("APP_ENV", app_env)
    env.setenv("MAX_QUEUE", "7")  # the real environment beats the file
    s = load_settings()
    assert (s.app_env, s.model_name, s.app_version, s.max_queue) == (
        app_env,
        "qwen2.5:0.5b",
        f"from-{app_env}-file",
        7,
    )


def test_other_env_files_are_not_read(env, tmp_path):
    (tmp_path / ".env.production").write_text("APP_VERSION=prod\n")
    env.setenv("APP_ENV", "staging")
    env.setenv("MODEL_NAME", "m:1")
    assert load_settings().app_version == "dev"


def test_lists_are_comma_separated(env):
    env.setenv("MODEL_NAME", "a:1")
    env.setenv("ALLOWED_MODELS", " a:1, b:2 ,c")
    env.setenv("ALLOWED_ORIGINS", "https://x.example.com,http://localhost:3000")
    s = load_settings()
    assert s.allowed_models == ["a:1", "b:2", "c"]
    assert s.allowed_model_set == {"a:1", "b:2", "c:latest"}  # Ollama reads a bare name as :latest
    assert s.allowed_origins == ["https://x.example.com", "http://localhost:3000"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APP_ENV", "prod"),
        ("MAX_CONCURRENT", "0"),
        ("MAX_QUEUE", "many"),
        ("RATE_LIMIT_PER_MINUTE", "-1"),
        ("OLLAMA_BASE_URL", "localhost:11434"),
        ("FIRST_CHUNK_DEADLINE", "soon"),
        ("NONSTREAM_KEEPALIVE_AFTER", "-1"),
        ("NONSTREAM_KEEPALIVE_INTERVAL", "0"),
        ("LOG_LEVEL", "loud"),
        ("ALLOWED_ORIGINS", "app.example.com"),
        ("TRUSTED_PROXIES", "10.0.0.300"),
        ("ALLOWED_MODELS", "other:1"),
        ("CF_ACCESS_AUD", "only-the-aud"),
    ],
)
def test_invalid_value_names_the_setting(env, name, value):
    env.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert name in str(info.value)


def _start(env: dict[str, str], cwd=SERVICE_DIR) -> subprocess.CompletedProcess:
    """Run uvicorn as the image does; a configuration error must end it before it listens."""
    return subprocess.run(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "0"],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SERVICE_DIR), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_uvicorn_refuses_unknown_app_env():
    result = _start({"APP_ENV": "prod"})
    assert result.returncode != 0
    assert "APP_ENV" in result.stderr
    assert "local, staging, production" in result.stderr
    assert "Traceback" not in result.stderr


def test_uvicorn_refuses_bad_value_naming_it():
    result = _start({"APP_ENV": "production", "MODEL_NAME": "m:1", "MAX_CONCURRENT": "zero"})
    assert result.returncode != 0
    assert "configuration error: MAX_CONCURRENT" in result.stderr


def test_running_service_reads_env_file(tmp_path, start_service, ollama_double):
    # The file is looked up in the working directory, as in the image; the real environment still wins.
    (tmp_path / ".env.staging").write_text(
        f"MODEL_NAME=llama3.2:1b\nAPP_VERSION=from-file\nOLLAMA_BASE_URL={ollama_double.url}\nLOG_LEVEL=debug\n"
    )
    proc = start_service(cwd=tmp_path, APP_ENV="staging", LOG_LEVEL="warning")
    health = httpx.get(proc.url + "/health").json()
    assert health == {"status": "ok", "env": "staging", "version": "from-file"}
    assert httpx.get(proc.url + "/ready").status_code == 200  # OLLAMA_BASE_URL came from the file too
    assert '"level":"debug"' not in proc.log()


def test_env_example_documents_every_setting_and_loads(env, tmp_path):
    from app.config import Settings

    from .conftest import REPO

    text = (REPO / ".env.example").read_text()
    keys = {line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert keys == {name.upper() for name in Settings.model_fields}
    assert keys == SETTINGS  # the test fixtures strip exactly these from the inherited environment
    (tmp_path / ".env.local").write_text(text)
    s = load_settings()  # the example is itself a valid settings file
    assert s.model_name == "llama3.2:1b" and s.allowed_models == ["llama3.2:1b"] and not s.jwt_enabled
