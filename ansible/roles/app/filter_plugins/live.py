"""What serves an environment, from what tasks/live.yml reads on the host (tested in tests/unit/test_deploy_plan.py).

conf_text | app_proxy_color                                   the live colour the proxy's config file names
container_results | app_live_state(conf_text, answers, colors)
    the observed facts of one environment (the shape app_deploy's bluegreen_plan and stack_status read):
    color, containers {colour: {tag, release, running, health}}, proxy_running, answered, ready_status,
    served_color, ready_detail, tag, release (of the live colour), idle
"""

from __future__ import annotations

import re
from typing import Any

# The line templates/nginx.conf.j2 (app_deploy) writes; nginx uses it, and this is where it is read back.
COLOR_LINE = re.compile(r"^\s*set \$api_color (\w+);", re.M)
TAG_LABEL = "io.local-llm-server.tag"
SERVICE_LABEL = "com.docker.compose.service"
HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")
RELEASE_LABEL = "io.local-llm-server.release"


def app_proxy_color(conf_text: str | None) -> str:
    match = COLOR_LINE.search(conf_text or "")
    return match.group(1) if match else ""


def _health(status: str) -> str:
    """Health from `docker ps`'s status text: "Up 3 minutes (healthy)", "(health: starting)", or none."""
    match = HEALTH.search(status or "")
    return {"health: starting": "starting"}.get(match.group(1), match.group(1)) if match else "none"


def app_live_state(
    containers: list[dict[str, Any]], conf_text: str | None, answers: dict[str, Any], colors: list[str]
) -> dict[str, Any]:
    """containers: the environment's compose project as docker_host_info lists it (containers_all, verbose)."""
    by_service = {(c.get("Labels") or {}).get(SERVICE_LABEL): c for c in containers}
    color = app_proxy_color(conf_text)
    apis = {}
    for name in colors:
        info = by_service.get(f"api-{name}")
        if info:
            labels = info.get("Labels") or {}
            apis[name] = {
                "tag": labels.get(TAG_LABEL, ""),
                "release": labels.get(RELEASE_LABEL, ""),
                "running": info.get("State") == "running",
                "health": _health(info.get("Status", "")),
            }
    live = apis.get(color, {})
    return {
        "color": color,
        "containers": apis,
        "proxy_running": (by_service.get("proxy") or {}).get("State") == "running",
        # /ready through the proxy answered 200 from the colour its file names (tasks/answers.yml).
        "answered": bool(answers.get("answered")),
        "ready_status": int(answers.get("status", -1)),
        "served_color": answers.get("served_color", ""),
        "ready_detail": answers.get("detail", ""),
        "tag": live.get("tag", ""),
        "release": live.get("release", ""),
        "idle": [name for name in apis if name != color],
    }


class FilterModule:
    def filters(self):
        return {"app_proxy_color": app_proxy_color, "app_live_state": app_live_state}
