"""One environment's line of the stack report, whether it is healthy, and whether the models of all stacks fit in
Ollama together (tested in tests/unit/test_deploy_plan.py).

app_live[env] | stack_status_row(last_release)
    healthy: the colour the proxy's file names runs, healthy (or without a healthcheck), answers /ready through
    the proxy from that colour (nginx has loaded its file), and runs the environment's last successful release
    (a container started by hand is drift)
env_file_text | stack_models
    the models a stack may ask Ollama for: its env file's ALLOWED_MODELS and EMBED_MODEL_NAME
{env: [models]} | models_over_limit(max_loaded)
    '' when every model of every stack can stay loaded at once under OLLAMA_MAX_LOADED_MODELS ('' = Ollama's
    default, 3 per GPU: https://docs.ollama.com/faq), else a warning naming them and the limit
"""

from __future__ import annotations

from typing import Any


def stack_status_row(live: dict[str, Any], last_release: str) -> dict[str, Any]:
    container = (live.get("containers") or {}).get(live.get("color") or "", {})
    health = container.get("health", "absent")
    return {
        "color": live.get("color") or "-",
        "served_color": live.get("served_color") or "-",
        "running": bool(container.get("running")),
        "health": health,
        "tag": live.get("tag", ""),
        "last_release": last_release,
        "ready": int(live.get("ready_status", -1)) == 200,
        "ready_detail": live.get("ready_detail", ""),
        "idle": live.get("idle", []),
        "healthy": bool(
            container.get("running")
            and health in ("healthy", "none")
            and live.get("answered")
            and live.get("tag")
            and live.get("tag") == last_release
        ),
    }


# Ollama's default OLLAMA_MAX_LOADED_MODELS on a Mac: 3 per GPU, and Apple silicon has one (envconfig/config.go).
OLLAMA_DEFAULT_MAX_LOADED = 3


def _tagged(name: str) -> str:
    # Ollama lists "llama3.2" as "llama3.2:latest".
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def stack_models(env_file_text: str) -> list[str]:
    settings = {}
    for line in env_file_text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.lstrip().startswith("#"):
            settings[name.strip()] = value.strip()
    names = [*settings.get("ALLOWED_MODELS", "").split(","), settings.get("EMBED_MODEL_NAME", "")]
    return list(dict.fromkeys(_tagged(n.strip()) for n in names if n.strip()))


def models_over_limit(models_by_env: dict[str, list[str]], max_loaded: str | int = "") -> str:
    limit = int(max_loaded) if str(max_loaded).strip() else OLLAMA_DEFAULT_MAX_LOADED
    models = list(dict.fromkeys(_tagged(m) for env in sorted(models_by_env) for m in models_by_env[env]))
    if len(models) <= limit:
        return ""
    each = "; ".join(f"{env}: {', '.join(models_by_env[env]) or 'none'}" for env in sorted(models_by_env))
    return (
        f"{len(models)} models of the stacks ({each}) cannot all stay loaded in Ollama, which keeps {limit} at once "
        f"(OLLAMA_MAX_LOADED_MODELS{' default' if not str(max_loaded).strip() else ''}): a request for one may wait "
        "for another to be unloaded and this one loaded. Raise app_ollama_max_loaded_models (memory permitting) and "
        "run make setup, or serve fewer models."
    )


class FilterModule:
    def filters(self):
        return {
            "stack_status_row": stack_status_row,
            "stack_models": stack_models,
            "models_over_limit": models_over_limit,
        }
