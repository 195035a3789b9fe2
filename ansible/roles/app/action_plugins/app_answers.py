"""Action `app_answers`: does api-<color> answer /ready through an environment's proxy? (tasks/answers.yml)

The proxy names the colour it sent the request to (X-Api-Color, app_deploy's templates/nginx.conf.j2), so the answer
says whether nginx has loaded the colour we expect, not only that something answered. One ansible.builtin.uri call
on the host per attempt, as the task with `until` made; asks up to `retries` more times, RETRY_DELAY seconds apart,
until that colour answers. One task instead of a uri task and a set_fact: a run's time is mostly its number of task
results (make bench-deploy). Never fails by itself and never reports a change.

reply | ready_answer(color)   (the function below, unit-tested in tests/unit/test_deploy_plan.py)
    answered      200 from that colour
    status        HTTP status (-1: no answer)    served_color   X-Api-Color ('' when no answer)
    detail        status, colour and the start of the body, for messages
"""

from __future__ import annotations

import time
from typing import Any

from ansible.plugins.action import ActionBase

URI_TIMEOUT = 5
# Seconds between two questions, as the task's `delay: 1` was.
RETRY_DELAY = 1


def ready_answer(reply: dict[str, Any], color: str) -> dict[str, Any]:
    """reply: what ansible.builtin.uri returned (status -1 and msg when nothing answered; response headers as
    lower-case keys, so X-Api-Color is x_api_color: https://docs.ansible.com/ansible/latest/collections/ansible/builtin/uri_module.html#return-values)."""
    status = int(reply.get("status", -1))
    served = reply.get("x_api_color") or ""
    body = reply.get("content", reply.get("msg", ""))
    return {
        "answered": status == 200 and served == color,
        "status": status,
        "served_color": served,
        "detail": f"HTTP {reply.get('status', 'no answer')} from {served or 'no colour'} {str(body)[:200]}",
    }


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True
    _VALID_ARGS = frozenset(("url", "color", "retries"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        attempts = int(args.get("retries") or 0) + 1
        for attempt in range(attempts):
            if attempt:
                time.sleep(RETRY_DELAY)
            reply = self._execute_module(
                "ansible.builtin.uri",
                module_args={"url": args["url"], "return_content": True, "status_code": [200], "timeout": URI_TIMEOUT},
                task_vars=task_vars,
            )
            answer = ready_answer(reply, args["color"])
            if answer["answered"]:
                break
        result.update(answer, attempts=attempt + 1, changed=False)
        return result
