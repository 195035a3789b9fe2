"""What serves an environment, from what tasks/live.yml reads on the host (tested in tests/unit/test_deploy_plan.py).

conf_text | app_proxy_color                                   the live colour the proxy's config file names
container_results | app_live_state(conf_text, answers, colors)
    the observed facts of one environment (the shape app_deploy's bluegreen_plan and stack_status read):
    color, containers {colour: {tag, release, running, health}}, proxy_running, answered, ready_status,
    served_color, ready_detail, container (the live colour's docker inspect), tag, release, idle
"""

from __future__ import annotations

import re
from typing import Any

# The line templates/nginx.conf.j2 (app_deploy) writes; nginx uses it, and this is where it is read back.
COLOR_LINE = re.compile(r"^\s*set \$api_color (\w+);", re.M)
TAG_LABEL = "io.local-llm-server.tag"
RELEASE_LABEL = "io.local-llm-server.release"


def app_proxy_color(conf_text: str | None) -> str:
    match = COLOR_LINE.search(conf_text or "")
    return match.group(1) if match else ""


def app_live_state(
    container_results: list[dict[str, Any]], conf_text: str | None, answers: dict[str, Any], colors: list[str]
) -> dict[str, Any]:
    """container_results: docker_container_info's looped results (loop_var app_live_service: api-<colour>, proxy)."""
    by_service = {r["app_live_service"]: r["container"] for r in container_results if r.get("exists")}
    color = app_proxy_color(conf_text)
    containers = {}
    for name in colors:
        info = by_service.get(f"api-{name}")
        if info:
            labels = (info.get("Config") or {}).get("Labels") or {}
            state = info.get("State") or {}
            containers[name] = {
                "tag": labels.get(TAG_LABEL, ""),
                "release": labels.get(RELEASE_LABEL, ""),
                "running": bool(state.get("Running")),
                "health": (state.get("Health") or {}).get("Status", "none"),
            }
    live = by_service.get(f"api-{color}", {}) if color else {}
    return {
        "color": color,
        "containers": containers,
        "proxy_running": bool(((by_service.get("proxy") or {}).get("State") or {}).get("Running")),
        # /ready through the proxy answered 200 from the colour its file names (tasks/answers.yml).
        "answered": bool(answers.get("answered")),
        "ready_status": int(answers.get("status", -1)),
        "served_color": answers.get("served_color", ""),
        "ready_detail": answers.get("detail", ""),
        "container": live,
        "tag": containers.get(color, {}).get("tag", ""),
        "release": containers.get(color, {}).get("release", ""),
        "idle": [name for name in containers if name != color],
    }


class FilterModule:
    def filters(self):
        return {"app_proxy_color": app_proxy_color, "app_live_state": app_live_state}
