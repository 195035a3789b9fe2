"""Reading the release history (one JSON object per line: time, env, tag, digest, actor, result, action, release,
cause). The role owns the history, so the questions asked of it are answered here, in tested code
(tests/unit/test_deploy_plan.py):

    slurped | release_history_parse                           the entries, oldest first, from slurp's result
    entries | release_history_last_success                     {env: tag of its newest successful release}
    entries | release_history_successes(env)                   that env's successful tags, oldest first, once each
    entries | release_history_keep(count)                      the newest `count` distinct successful tags, any env
    entries | release_history_rollback_target(env, running, requested, history_file)
        the tag a rollback returns to: `requested` when given; else the newest successful release of `env` whose tag
        is not the running one (so two rollbacks in a row toggle between the last two releases, like Kamal's
        `rollback` to the previous version: basecamp/kamal#1658).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ansible.errors import AnsibleFilterError


def release_history_parse(slurped: dict[str, Any] | None) -> list[dict[str, Any]]:
    """slurp's result for the history file: no content (the file does not exist yet) is an empty history."""
    content = base64.b64decode((slurped or {}).get("content") or "").decode("utf-8")
    return [json.loads(line) for line in content.splitlines() if line.strip()]


def _successes(entries: list[dict[str, Any]], env: str | None = None) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("result") == "success" and (env is None or e.get("env") == env)]


def release_history_last_success(entries: list[dict[str, Any]]) -> dict[str, str]:
    # Later entries overwrite earlier ones: each env keeps its newest successful tag.
    return {e["env"]: e["tag"] for e in _successes(entries)}


def release_history_successes(entries: list[dict[str, Any]], env: str) -> list[str]:
    return list(dict.fromkeys(e["tag"] for e in _successes(entries, env)))


def release_history_keep(entries: list[dict[str, Any]], count: int) -> list[str]:
    newest_first = list(dict.fromkeys(e["tag"] for e in reversed(_successes(entries))))
    return newest_first[: int(count)]


def release_history_rollback_target(
    entries: list[dict[str, Any]], env: str, running: str, requested: str = "", history_file: str = "the history"
) -> str:
    if requested:
        return requested
    earlier = [e["tag"] for e in _successes(entries, env) if e["tag"] != running]
    if not earlier:
        raise AnsibleFilterError(
            f"No earlier successful release of {env} in {history_file} (running: {running or 'nothing'}). "
            "Name one with -e image_tag=sha-..."
        )
    return earlier[-1]


class FilterModule:
    def filters(self):
        return {
            "release_history_parse": release_history_parse,
            "release_history_last_success": release_history_last_success,
            "release_history_successes": release_history_successes,
            "release_history_keep": release_history_keep,
            "release_history_rollback_target": release_history_rollback_target,
        }
