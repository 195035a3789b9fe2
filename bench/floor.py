"""What ansible-playbook costs on this machine before any task's own work, for bench/deploy.py.

Three plays with deploy.yml's header (hosts, facts), run through scripts/playbook.py like every playbook here:
  - empty: one debug task: ansible-playbook's start, the SSH connection and the facts;
  - controller: the same plus TASKS asserts (task results that never reach the host: assert, set_fact, include_*,
    validate_argument_spec, skipped tasks, ...);
  - module: the same plus TASKS pings (the smallest module call: one round trip to the host's Python, no work).
The difference to the empty play, over TASKS, is what one task result of each kind adds to a run's wall clock.

floor() applies it to a measured run: the empty play, plus each of its task results at its kind's cost, plus the
work itself at the direct path's speed (bench/direct.py, less its SSH session). That is a lower bound of the run
with its current task list: were every module as quick as a ping plus the direct path's commands, the run would
still take this long. Above a target, the target needs fewer task results rather than quicker modules.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.e2e import harness

DEPLOY_PLAYBOOK = harness.PLAYBOOKS / "deploy.yml"
TASKS = 20
RUNS = 3
# Task results that Ansible settles on the controller: nothing runs on the host
# (https://docs.ansible.com/ansible/latest/collections/ansible/builtin/index.html: these are action plugins only).
CONTROLLER_ACTIONS = frozenset(
    f"ansible.builtin.{name}"
    for name in (
        "assert",
        "debug",
        "fail",
        "include_role",
        "include_tasks",
        "include_vars",
        "meta",
        "set_fact",
        "validate_argument_spec",
    )
)
FACTS_ACTION = "gather_facts"  # part of the empty play's time


@dataclass(frozen=True)
class Costs:
    empty: float  # seconds: the empty play (median of RUNS)
    controller_task: float  # seconds one controller-only task result adds
    module_task: float  # seconds one module task result adds (a ping)
    ssh_session: float  # seconds of an empty `ssh HOST bash -s` (part of every direct run, not of its work)


def is_controller_only(task: harness.playbook.TaskResult) -> bool:
    """True when the task result never reached the host: a skipped task, or an action settled on the controller."""
    return task.status == "skipped" or task.action in CONTROLLER_ACTIONS


def task_kinds(run: harness.PlaybookRun) -> tuple[int, int]:
    """(controller-only, module) task results of a run, the facts left out (the empty play has them)."""
    tasks = [task for task in run.result.tasks if task.action != FACTS_ACTION]
    controller = sum(1 for task in tasks if is_controller_only(task))
    return controller, len(tasks) - controller


def floor(costs: Costs, run: harness.PlaybookRun, direct_seconds: float) -> float:
    """The lower bound of `run` with its task list (module docstring)."""
    controller, module = task_kinds(run)
    work = max(direct_seconds - costs.ssh_session, 0.0)
    before_first_task = costs.empty - costs.controller_task  # the empty play less its one debug task
    return before_first_task + controller * costs.controller_task + module * costs.module_task + work


def play(extra_tasks: list[dict]) -> list[dict]:
    """A play with deploy.yml's hosts and facts, one debug task, then extra_tasks."""
    header = yaml.safe_load(DEPLOY_PLAYBOOK.read_text())[0]
    return [
        {
            "name": "Connect and gather facts as deploy.yml does",
            "hosts": header["hosts"],
            "gather_facts": header.get("gather_facts", True),
            "gather_subset": header.get("gather_subset", ["all"]),
            "tasks": [{"name": "Say that the play ran", "ansible.builtin.debug": {"msg": "connected"}}, *extra_tasks],
        }
    ]


PLAYS = {
    "empty": play([]),
    "controller": play(
        [{"name": f"Assert {n}", "ansible.builtin.assert": {"that": [True], "quiet": True}} for n in range(TASKS)]
    ),
    "module": play([{"name": f"Ping {n}", "ansible.builtin.ping": {}} for n in range(TASKS)]),
}


def measure(ansible: harness.Ansible, ssh_session: float) -> Costs:
    """Each play RUNS times (median): the empty play and what one task result of each kind adds to it."""
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as directory:
        for kind, tasks in PLAYS.items():
            path = Path(directory) / f"{kind}.yml"
            path.write_text(yaml.safe_dump(tasks, sort_keys=False))
            runs = []
            for _ in range(RUNS):
                result = ansible.run(str(path))
                if result.returncode != 0:
                    raise SystemExit(f"bench-deploy: the {kind} play failed:\n{result.output[-2000:]}")
                runs.append(result.seconds)
            seconds[kind] = statistics.median(runs)
    return Costs(
        empty=seconds["empty"],
        controller_task=(seconds["controller"] - seconds["empty"]) / TASKS,
        module_task=(seconds["module"] - seconds["empty"]) / TASKS,
        ssh_session=ssh_session,
    )
