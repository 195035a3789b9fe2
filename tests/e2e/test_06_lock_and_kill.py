"""The per-environment deploy lock: concurrent deploys, a stale lock, and a deploy killed with SIGKILL midway."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest

from tests.e2e import harness
from tests.e2e.harness import DEPLOY_HOME

LOCK = DEPLOY_HOME / "state" / "locks" / "staging.lock"


# The first lock test deploys the first release: a real cut-over, which holds the lock meanwhile.
pytestmark = pytest.mark.usefixtures("staging_serves_the_second_release")


def as_deploy_user(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "deploy", "--", *argv], check=True)


def deploy_while_another_holds_the_lock(ansible, first_tag: str, second_tag: str, *second_extra: str):
    """Start a staging deploy of first_tag and pause it once it holds the lock (SIGSTOP to its ansible-playbook, whose
    pid the lock's holder.json names): a deploy is faster than a second run's way to the lock (inputs, host checks),
    so unpaused, the first could be done before the second asks. Then run a second deploy of second_tag; the first
    resumes when the second starts asking for the lock (its task-start event), so it holds the lock meanwhile.
    Returns the second run once the first has finished too (and asserts that the first succeeded)."""
    first = ansible.start("deploy.yml", "-e", "app_env=staging", "-e", f"image_tag={first_tag}")
    holder_pid = 0

    def resume_the_first(event: dict) -> None:
        data = event.get("event_data") or {}
        if event.get("event") == "playbook_on_task_start" and data.get("task") == "Take the deploy lock":
            os.kill(holder_pid, signal.SIGCONT)

    try:
        harness.wait_for(lambda: (LOCK / "holder.json").exists(), 120, "the first deploy to take the lock")
        holder_pid = int(json.loads((LOCK / "holder.json").read_text())["controller_pid"])
        os.kill(holder_pid, signal.SIGSTOP)
        second = ansible.deploy("staging", second_tag, *second_extra, on_event=resume_the_first)
    finally:
        if holder_pid:
            with contextlib.suppress(ProcessLookupError):  # resumed already, and done
                os.kill(holder_pid, signal.SIGCONT)
        output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output[-4000:]
    return second


def releases_in_turn(images) -> tuple[str, str]:
    """(the release staging does not serve, the one it serves): the first deploy is then a real cut-over."""
    serving = harness.health("staging")["version"]
    return (images.first, images.second) if serving != images.first else (images.second, images.first)


def test_second_concurrent_deploy_fails_naming_the_holder(ansible, images):
    first_tag, second_tag = releases_in_turn(images)
    second = deploy_while_another_holds_the_lock(ansible, first_tag, second_tag, "-e", "release_lock_wait=0")
    assert second.returncode != 0
    assert "Another deploy holds" in second.output and "e2e-tests" in second.output
    assert f"tag {first_tag}" in second.output  # the holder's tag is named too
    assert harness.health("staging")["version"] == first_tag
    assert not LOCK.exists(), "the lock must be released after the first deploy"


def test_second_concurrent_deploy_waits_for_the_first(ansible, images):
    first_tag, second_tag = releases_in_turn(images)
    second = deploy_while_another_holds_the_lock(ansible, first_tag, second_tag, "-e", "release_lock_wait=240")
    assert second.returncode == 0, second.output[-4000:]
    assert "waited for" in second.output
    assert harness.health("staging")["version"] == second_tag


def test_stale_lock_is_broken_with_a_warning(ansible, images):
    as_deploy_user("mkdir", "-p", str(LOCK))
    holder = {"id": "ci:4242", "actor": "cancelled-ci-job", "tag": "sha-1111111", "since_epoch": time.time() - 3600}
    write = f"import json, sys; json.dump({holder!r}, open(sys.argv[1], 'w'))"
    as_deploy_user("python3", "-c", write, str(LOCK / "holder.json"))
    result = ansible.deploy("staging", images.second, "-e", "release_lock_stale_after=600", "-e", "release_lock_wait=5")
    assert result.returncode == 0, result.output[-4000:]
    assert "Broke the deploy lock" in result.output and "cancelled-ci-job" in result.output
    assert not LOCK.exists()


def test_sigkill_midway_keeps_the_container_and_the_rerun_converges(ansible, images):
    serving = harness.container("staging")
    assert serving["Config"]["Labels"]["io.local-llm-server.tag"] == images.second
    new_color = {"blue": "green", "green": "blue"}[harness.live_color("staging")]
    proc = ansible.start("deploy.yml", "-e", "app_env=staging", "-e", f"image_tag={images.first}")
    try:
        # Kill it in the middle of the release: the new colour is up beside the live one, the switch has not
        # happened.
        harness.wait_for(
            lambda: harness.container_exists(harness.api_name("staging", new_color)), 180, "the new colour"
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # The environment never lost its serving container.
    info = harness.container("staging")
    assert info["Id"] == serving["Id"] and info["State"]["Running"]
    assert harness.health("staging")["version"] == images.second
    assert LOCK.exists(), "the killed run leaves its lock behind (that is what the rerun must cope with)"
    holder = json.loads((LOCK / "holder.json").read_text())
    assert holder["actor"] == "e2e-tests"

    rerun = ansible.deploy("staging", images.first)
    assert rerun.returncode == 0, rerun.output[-4000:]
    assert "its holder is gone" in rerun.output  # the dead run's lock was broken at once, not after 15 minutes
    assert harness.health("staging")["version"] == images.first
    assert harness.served_color("staging") == harness.live_color("staging") == new_color
    assert harness.project_containers("staging") == sorted(
        [harness.api_name("staging", new_color), harness.proxy_name("staging")]
    )
    again = ansible.deploy("staging", images.first)
    assert again.returncode == 0 and again.changed == 0, again.output[-3000:]


def test_sigkill_right_after_the_switch_is_finished_by_the_next_run(ansible, images):
    # Killed once nginx sends traffic to the new colour, before the old one is retired and the release recorded:
    # the rerun must retire the idle colour and record the release, and no request fails at any point.
    serving = harness.container("staging")
    old_tag = serving["Config"]["Labels"]["io.local-llm-server.tag"]
    new_tag = images.second if old_tag != images.second else images.first
    new_color = {"blue": "green", "green": "blue"}[harness.live_color("staging")]
    history_before = len(harness.history())
    with harness.Probe(harness.health_url("staging"), rate=20) as probe:
        proc = ansible.start("deploy.yml", "-e", "app_env=staging", "-e", f"image_tag={new_tag}")
        try:
            harness.wait_for(lambda: harness.served_color("staging") == new_color, 180, "the proxy to switch")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        killed_state = harness.project_containers("staging")
        rerun = ansible.deploy("staging", new_tag)
    assert rerun.returncode == 0, rerun.output[-4000:]
    assert probe.failures == 0, f"{probe.failures}/{len(probe.results)} failed requests"
    assert harness.api_name("staging", new_color) in killed_state
    assert harness.served_color("staging") == harness.live_color("staging") == new_color
    assert harness.project_containers("staging") == sorted(
        [harness.api_name("staging", new_color), harness.proxy_name("staging")]
    )
    entries = harness.history()[history_before:]
    assert [(e["tag"], e["result"]) for e in entries] == [(new_tag, "success")], entries
    assert entries[0]["cause"] == "finished by a later run", "the rerun, not the killed run, recorded it"
    again = ansible.deploy("staging", new_tag)
    assert again.returncode == 0 and again.changed == 0, again.output[-3000:]
