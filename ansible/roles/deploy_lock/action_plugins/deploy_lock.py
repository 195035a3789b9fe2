"""Action `deploy_lock`: take or release the lock in one task; the module library/deploy_lock.py does the locking.

Why an action in front of the module: whether a holder is dead can only be asked on the controller (its
ansible-playbook's pid), and asking there took three more tasks (the pid, the holder file, `kill -0`). Here the
worker that runs this action is a child of ansible-playbook, so the run's pid is os.getppid(); the holder file is read
with slurp, the dead check is os.kill(pid, 0) (https://docs.python.org/3/library/os.html#os.kill: signal 0 only
checks), then the module takes or releases the lock. `holder_id` and `dead_holders` below are unit-tested in
tests/unit/test_checks.py.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from ansible.plugins.action import ActionBase


def holder_id(run_id: str, controller: str, controller_pid: int) -> str:
    """A CI run is its run id (a re-run job takes its own lock back); elsewhere the controller and its pid."""
    return run_id or f"{controller}:{controller_pid}"


def dead_holders(holder: dict[str, Any], controller: str, own_id: str, alive) -> list[str]:
    """[holder's id] when the holder is another run of this controller whose ansible-playbook is gone."""
    pid = str(holder.get("controller_pid", ""))
    if holder.get("controller") != controller or not pid.isdigit() or holder.get("id") in (None, own_id):
        return []
    return [] if alive(int(pid)) else [holder["id"]]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, run by someone else
    return True


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        controller_pid = os.getppid()
        own_id = holder_id(args.pop("run_id", ""), args["controller"], controller_pid)
        module_args = {"path": args["path"], "state": args.get("state", "acquired"), "holder_id": own_id}
        if module_args["state"] == "acquired":
            current = self._execute_module(
                "ansible.builtin.slurp", module_args={"src": f"{args['path']}/holder.json"}, task_vars=task_vars
            )
            holder = json.loads(base64.b64decode(current["content"])) if "content" in current else {}
            module_args.update(
                holder={**args["holder"], "controller": args["controller"], "controller_pid": str(controller_pid)},
                wait=args["wait"],
                poll=args["poll"],
                stale_after=args["stale_after"],
                dead_holders=dead_holders(holder, args["controller"], own_id, pid_alive),
            )
        taken = self._execute_module("deploy_lock", module_args=module_args, task_vars=task_vars)
        result.update(taken)
        if module_args["state"] == "acquired" and not taken.get("failed"):
            waited = taken.get("waited_for")
            result["msg"] = f"Deploy lock {args['path']} taken by {args['holder'].get('actor', '?')} (run {own_id})" + (
                f" - waited for {waited}" if waited else ""
            )
            result["_ansible_verbose_always"] = True
        return result
