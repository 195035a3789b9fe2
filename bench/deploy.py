"""`make bench-deploy`: how fast and how smooth a deploy is on the testbed (real playbooks over SSH).

Measures, on the staging stack of the testbed:
  1. a deploy of a new tag (pulled from the registry, new colour, gate, proxy switch, old colour retired), wall
     clock of ansible-playbook;
  2. the same deploy again (nothing to do);
  3. a rollback to the previous release;
  4. seconds without a 200 from /health while (1) runs, probing at 20 requests/s;
  5. failed probe requests while a broken image (starts, never ready) is refused;
then 1-3 again on a stack of its own, by hand: the same steps as one shell script over one SSH session
(bench/direct.py), and what ansible-playbook costs here before any task's own work (bench/floor.py: an empty play,
and what one task result adds), which gives each run's floor with its current task list.
Prints each run's time (a measurement: deploys have no speed target) and whether any probe failed (none may: a
deploy is invisible to users), the direct path and the floor beside each run, then how many tasks each run had, how
much of its time they took, and its five slowest tasks (ansible-runner's per-task timings, scripts/playbook.py).
Not a test: numbers depend on the machine (and on whatever else runs on it); nothing here asserts.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import direct  # noqa: E402 (bench/direct.py; after the path tweak above, which it needs too)
import floor  # noqa: E402 (bench/floor.py, likewise)

from tests.e2e import harness  # noqa: E402

PROBE_URL = harness.health_url("staging")


def must(result: harness.PlaybookRun, what: str) -> harness.PlaybookRun:
    if result.returncode != 0:
        failed = "\n".join(f"  {task.task}: {task.message}" for task in result.failures)
        sys.exit(f"bench-deploy: {what} failed:\n{result.output[-3000:]}\nfailed tasks:\n{failed}")
    return result


def forget_unless_in_use(env: dict[str, str], tag: str) -> None:
    """A new tag is never on the Mac before its deploy: measure the pull too, whatever earlier runs left here."""
    if not harness.tag_in_use(tag):
        harness.forget_locally(env, tag, missing_ok=True)


def main() -> None:
    env = harness.testbed_up()
    print("bench-deploy: building images (scripts/build-push.sh) ...", file=sys.stderr)
    first, second = harness.build_push("bench-first"), harness.build_push("bench-second")
    broken = harness.push_broken(env, first)
    ansible = harness.Ansible(env)

    print("bench-deploy: warm-up: staging serves the first release ...", file=sys.stderr)
    must(ansible.deploy("staging", first), "warm-up deploy")
    forget_unless_in_use(env, second)

    print("bench-deploy: measuring ...", file=sys.stderr)
    with harness.Probe(PROBE_URL, rate=20) as good_probe:
        new_tag = must(ansible.deploy("staging", second), "new-tag deploy")
    rerun = must(ansible.deploy("staging", second), "no-change rerun")
    rollback = must(ansible.rollback("staging"), "rollback")
    with harness.Probe(PROBE_URL, rate=20) as broken_probe:
        refused = ansible.deploy("staging", broken, "-e", "release_gate_timeout=10")
    if refused.returncode == 0:
        sys.exit("bench-deploy: the broken image was deployed?!")

    print("bench-deploy: the same steps by hand (bench/direct.py) ...", file=sys.stderr)
    by_hand = direct.DirectStack(env, env["IMAGE_REPOSITORY"], env["PROXY_IMAGE"])
    try:
        ssh_session = statistics.median(by_hand.ssh(":") for _ in range(floor.RUNS))
        by_hand.up(first)
        forget_unless_in_use(env, second)
        with harness.Probe(f"http://127.0.0.1:{direct.PORT}/health", rate=20) as direct_probe:
            direct_new_tag = by_hand.deploy(second, pull=True)
        direct_rerun = by_hand.rerun(second)
        direct_rollback = by_hand.deploy(first, pull=False)
    finally:
        by_hand.down()

    print(f"bench-deploy: ansible-playbook's own costs, {floor.RUNS} runs a play (bench/floor.py) ...", file=sys.stderr)
    costs = floor.measure(ansible, ssh_session)

    # (measure, result, whether it holds what users must see: no failed request; None for a plain measurement)
    rows = [
        ("new-tag deploy (gate + switch)", f"{new_tag.seconds:.1f} s", None),
        ("no-change rerun", f"{rerun.seconds:.1f} s (changed={rerun.changed})", None),
        ("rollback to previous", f"{rollback.seconds:.1f} s", None),
        (
            "unavailable during a good deploy (20 req/s)",
            f"{good_probe.unavailable_seconds:.2f} s ({good_probe.failures}/{len(good_probe.results)} failed)",
            good_probe.failures == 0,
        ),
        (
            "failed requests during a broken deploy",
            f"{broken_probe.failures}/{len(broken_probe.results)}",
            broken_probe.failures == 0,
        ),
    ]
    cpu = platform.processor() or platform.machine()
    print(f"\nDeploy benchmark on the testbed ({platform.node()}, {cpu}, {_cores()} cores, load {_load()})\n")
    print("| measure | result | no failed request |")
    print("|---|---|---|")
    for name, value, held in rows:
        print(f"| {name} | {value} | {'–' if held is None else 'yes' if held else 'NO'} |")
    print("\nBeside the direct path (the same steps as one shell script over one SSH session, bench/direct.py) and the")
    print("floor (bench/floor.py: the empty play + each task result at its kind's cost + the direct path's work)\n")
    print("| measure | ansible-playbook | direct | ratio | task results (controller-only + module) | floor |")
    print("|---|---|---|---|---|---|")
    for name, playbook_run, by_hand_seconds in (
        ("new-tag deploy", new_tag, direct_new_tag),
        ("no-change rerun", rerun, direct_rerun),
        ("rollback to previous", rollback, direct_rollback),
    ):
        ratio = playbook_run.seconds / by_hand_seconds
        controller, module = floor.task_kinds(playbook_run)
        print(
            f"| {name} | {playbook_run.seconds:.1f} s | {by_hand_seconds:.1f} s | {ratio:.1f} x "
            f"| {controller} + {module} | {floor.floor(costs, playbook_run, by_hand_seconds):.1f} s |"
        )
    print(
        f"| unavailable during the direct new-tag deploy | | {direct_probe.unavailable_seconds:.2f} s "
        f"({direct_probe.failures}/{len(direct_probe.results)} failed) | | | |"
    )
    print(f"\nansible-playbook's own costs here (bench/floor.py, median of {floor.RUNS} runs of each play)\n")
    print("| cost | seconds |")
    print("|---|---|")
    print(f"| empty play (start, SSH connection, facts) | {costs.empty:.2f} |")
    print(f"| one controller-only task result (an assert) | {costs.controller_task:.3f} |")
    print(f"| one module task result (a ping) | {costs.module_task:.3f} |")
    print(f"| an empty SSH session (left out of the direct path's work) | {costs.ssh_session:.2f} |")
    print_slowest_tasks(
        {"new-tag deploy": new_tag, "no-change rerun": rerun, "rollback": rollback, "broken deploy": refused}
    )


def print_slowest_tasks(runs: dict[str, harness.PlaybookRun], count: int = 5) -> None:
    """Where each run's time went: its slowest task results, from ansible-runner's per-task durations."""
    print("\nWhere the time went (ansible-runner's events: task results, and the sum of their durations)\n")
    print("| run | wall | task results | in tasks |")
    print("|---|---|---|---|")
    for name, run in runs.items():
        in_tasks = sum(task.seconds for task in run.result.tasks)
        print(f"| {name} | {run.seconds:.1f} s | {len(run.result.tasks)} | {in_tasks:.1f} s |")
    print(f"\nThe {count} slowest tasks of each measured run\n")
    print("| run | task | seconds |")
    print("|---|---|---|")
    for name, run in runs.items():
        for task in run.result.slowest(count):
            print(f"| {name} | {task.task} | {task.seconds:.2f} |")
    idents = ", ".join(run.result.ident for run in runs.values())
    print(f"\nEach run's events and stats: {harness.playbook.ARTIFACTS.relative_to(harness.ROOT)}/<ident>/ ({idents})")


def _cores() -> int:
    return os.cpu_count() or 0


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
