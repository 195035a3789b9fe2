"""Action `app_live`: what serves an environment now, observed in one task (tasks/live.yml).

The module calls on the host are the ones tasks/live.yml made a task each: ansible.builtin.slurp of the proxy's
config (missing: nothing deployed yet), community.docker.docker_host_info listing the compose project's containers,
and the app_answers action's question to the colour that file names (chained as ansible-core's template action
chains copy). One task instead of five: a run's time is mostly its number of task results (make bench-deploy).
Reads only; never reports a change; fails only when the Docker engine does not answer.

conf_text | app_proxy_color                                  the live colour the proxy's config file names
app_live_state(containers, conf_text, answers, colors)
    the observed facts of one environment (the shape app_deploy's bluegreen_plan and stack_status read):
    color, containers {colour: {tag, release, running, health}}, proxy_running, answered, ready_status,
    served_color, ready_detail, tag, release (of the live colour), idle
Both are unit-tested in tests/unit/test_deploy_plan.py.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from ansible.plugins.action import ActionBase

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


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True
    _VALID_ARGS = frozenset(("conf_path", "compose_project", "docker_host", "ready_url", "colors"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        conf = self._execute_module(
            "ansible.builtin.slurp", module_args={"src": args["conf_path"]}, task_vars=task_vars
        )
        conf_text = "" if conf.get("failed") else base64.b64decode(conf["content"]).decode()
        listed = self._execute_module(
            "community.docker.docker_host_info",
            module_args={
                "docker_host": args["docker_host"],
                "containers": True,
                "containers_all": True,
                "containers_filters": {"label": f"com.docker.compose.project={args['compose_project']}"},
                "verbose_output": True,
            },
            task_vars=task_vars,
        )
        if listed.get("failed"):
            result.update(
                failed=True,
                msg=f"The Docker engine at {args['docker_host']} did not list the containers of "
                f"{args['compose_project']}: {listed.get('msg', '')}",
            )
            return result
        answers = self._ask_ready(args["ready_url"], app_proxy_color(conf_text), task_vars)
        result.update(changed=False, state=app_live_state(listed["containers"], conf_text, answers, args["colors"]))
        return result

    def _ask_ready(self, url: str, color: str, task_vars: dict) -> dict[str, Any]:
        task = self._task.copy()
        task.args = {"url": url, "color": color}
        action = self._shared_loader_obj.action_loader.get(
            "app_answers",
            task=task,
            connection=self._connection,
            play_context=self._play_context,
            loader=self._loader,
            templar=self._templar,
            shared_loader_obj=self._shared_loader_obj,
        )
        return action.run(task_vars=task_vars)
