"""bench/floor.py's arithmetic: which task results count as controller-only, and a run's floor from them.

The runs are built from ansible-runner events of the shape scripts/playbook.py reads (event, event_data with host,
task, task_action, duration); the plays bench/floor.py generates are checked against deploy.yml's header.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from scripts.playbook import PlaybookResult
from tests.e2e import harness

# bench/ is a directory of scripts, not a package; loaded by path so that its other modules (service.py, ...) never
# shadow a name on sys.path.
_SPEC = importlib.util.spec_from_file_location("bench_floor", harness.ROOT / "bench" / "floor.py")
floor = sys.modules[_SPEC.name] = importlib.util.module_from_spec(_SPEC)  # dataclasses look the module up there
_SPEC.loader.exec_module(floor)


def event(action: str, status: str = "ok", task: str = "a task") -> dict:
    name = {"ok": "runner_on_ok", "skipped": "runner_on_skipped", "failed": "runner_on_failed"}[status]
    data = {"host": harness.TESTBED_HOST, "task": task, "task_action": action, "duration": 0.1, "res": {}}
    return {"event": name, "event_data": data}


def run_of(*events: dict) -> harness.PlaybookRun:
    result = PlaybookResult("deploy.yml", [], "ident", "successful", 0, 5.0, Path("/nonexistent"), list(events))
    return harness.PlaybookRun([], result)


COSTS = floor.Costs(empty=2.5, controller_task=0.05, module_task=0.1, ssh_session=0.2)


def test_facts_are_left_out_and_skipped_tasks_count_as_controller_only():
    run = run_of(
        event("gather_facts"),
        event("ansible.builtin.validate_argument_spec"),
        event("ansible.builtin.assert"),
        event("ansible.builtin.include_tasks", "skipped"),
        event("community.docker.docker_compose_v2", "skipped"),
        event("ansible.builtin.template"),
        event("release_lock"),
        event("ansible.builtin.uri", "failed"),
    )
    assert floor.task_kinds(run) == (4, 3)


def test_the_floor_is_the_empty_play_less_its_task_plus_each_result_and_the_direct_work():
    run = run_of(event("gather_facts"), event("ansible.builtin.set_fact"), event("ansible.builtin.copy"))
    # (2.5 - 0.05) + 1 x 0.05 + 1 x 0.1 + (1.2 - 0.2)
    assert floor.floor(COSTS, run, direct_seconds=1.2) == pytest.approx(3.6)


def test_a_direct_run_quicker_than_an_empty_session_adds_no_negative_work():
    assert floor.floor(COSTS, run_of(), direct_seconds=0.1) == pytest.approx(2.45)


def test_the_plays_have_deploy_yml_s_hosts_and_facts_and_their_tasks():
    header = harness.yaml.safe_load(floor.DEPLOY_PLAYBOOK.read_text())[0]
    for kind, extra in (("empty", 0), ("controller", floor.TASKS), ("module", floor.TASKS)):
        (play,) = floor.PLAYS[kind]
        assert (play["hosts"], play["gather_facts"], play["gather_subset"]) == (
            header["hosts"],
            header["gather_facts"],
            header["gather_subset"],
        )
        assert len(play["tasks"]) == 1 + extra
    assert all("ansible.builtin.ping" in task for task in floor.PLAYS["module"][0]["tasks"][1:])
    assert all(f"ansible.builtin.{task_action}" in floor.CONTROLLER_ACTIONS for task_action in ("assert", "debug"))
