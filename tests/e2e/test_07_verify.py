"""verify.yml: read-only report of both stacks; exit 0 when healthy, non-zero when anything is unhealthy."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e import harness
from tests.e2e.harness import DEPLOY_HOME, flat

# Both stacks serve their last release: verify calls them healthy, then each test breaks one thing.
pytestmark = pytest.mark.usefixtures("serving")


def test_verify_reports_both_stacks_healthy_and_changes_nothing(ansible):
    before = harness.snapshot()
    result = ansible.run("verify.yml")
    assert result.returncode == 0, result.output[-4000:]
    assert result.changed == 0
    assert "staging: HEALTHY" in result.output and "production: HEALTHY" in result.output
    assert harness.snapshot() == before


def test_verify_fails_when_a_stack_is_down(ansible):
    name = harness.container("production")["Name"].lstrip("/")
    subprocess.run(["docker", "stop", "-t", "2", name], check=True, capture_output=True)
    try:
        result = ansible.run("verify.yml")
    finally:
        subprocess.run(["docker", "start", name], check=True, capture_output=True)
    assert result.returncode != 0
    assert "production: UNHEALTHY" in result.output and "staging: HEALTHY" in result.output
    assert "unhealthy stacks: production" in flat(result.output)


def test_verify_fails_when_the_proxy_has_not_loaded_its_config(ansible):
    # The file names the other colour, nginx still runs the old config (as after a deploy killed between writing
    # the file and the reload): verify must compare X-Api-Color with the file and call it unhealthy.
    conf = DEPLOY_HOME / "production" / "proxy" / "nginx.conf"
    original = conf.read_text()
    live = harness.live_color("production")
    other = {"blue": "green", "green": "blue"}[live]
    conf.write_text(original.replace(f"set $api_color {live};", f"set $api_color {other};"))
    try:
        result = ansible.run("verify.yml")
    finally:
        conf.write_text(original)
    assert result.returncode != 0
    assert "production: UNHEALTHY" in result.output and "staging: HEALTHY" in result.output
    assert f"colour={other} (proxy serves {live})" in flat(result.output)
    assert harness.served_color("production") == live, "verify must not have reloaded anything"


def test_verify_reports_every_stack_even_when_a_host_check_fails(ansible, double_restored):
    # Ollama down: the Ollama check fails, yet the report of both stacks is still printed and the run fails
    # naming both the check and the stacks.
    harness.double(double_restored, "config", {"status": 503, "fail_with": "ollama is down"})
    result = ansible.run("verify.yml")
    assert result.returncode != 0
    assert "staging: UNHEALTHY" in result.output and "production: UNHEALTHY" in result.output
    assert "ollama: Ollama does not answer" in flat(result.output)
    assert "unhealthy stacks: staging, production" in flat(result.output)


def test_verify_with_docker_unreachable_still_runs_every_check(ansible):
    # A wrong docker_host (Docker Desktop not started, or its socket elsewhere): no stack can be inspected, yet
    # every check runs and the final message names each failure instead of stopping at the first.
    result = ansible.run("verify.yml", "-e", "app_docker_host=unix:///nonexistent/docker.sock")
    assert result.returncode != 0
    summary = flat(result.output)
    assert "host: The Docker engine at unix:///nonexistent/docker.sock does not answer" in summary
    assert "stacks: " in summary
    assert "cloudflared ready with 1 edge connection(s)" in result.output  # a later check still ran


def test_verify_fails_when_the_running_tag_is_not_the_last_release(ansible, images):
    # Someone started an old image by hand outside the pipeline: verify must notice the drift.
    entries = harness.history()
    last_staging = [e for e in entries if e["env"] == "staging" and e["result"] == "success"][-1]
    harness.HISTORY.write_text(
        harness.HISTORY.read_text() + harness.json.dumps({**last_staging, "tag": "sha-fffffff"}) + "\n"
    )
    try:
        result = ansible.run("verify.yml")
    finally:
        harness.HISTORY.write_text("".join(harness.json.dumps(e, sort_keys=True) + "\n" for e in entries))
    assert result.returncode != 0
    assert "staging: UNHEALTHY" in result.output and "last_release=sha-fffffff" in result.output


def test_verify_says_when_a_model_changed_under_a_release(ansible, double_restored):
    # Each release records the models it serves with Ollama's digests. Someone then runs `ollama pull` on the Mac and
    # gets a newer build of the model: the stack still looks healthy, but serves another model than was released.
    tag = harness.health("staging")["version"]
    redeploy = ansible.deploy("staging", tag, "-e", "release_force=true")
    assert redeploy.returncode == 0, redeploy.output[-4000:]
    recorded = harness.history()[-1]["models"]
    assert recorded and all(len(m["digest"]) == 64 for m in recorded), recorded
    model = recorded[0]["name"]
    unchanged = ansible.run("verify.yml")
    assert unchanged.returncode == 0 and "changed under the release" not in unchanged.output
    harness.double(double_restored, "config", {"digests": {model: "c" * 64}})
    result = ansible.run("verify.yml")
    summary = flat(result.output)
    assert result.returncode == 0, "a changed model is a warning; the stacks still serve"
    assert f"WARNING: staging: {model} changed under the release: digest {recorded[0]['digest'][:12]} then" in summary
    assert "cccccccccccc now" in summary
