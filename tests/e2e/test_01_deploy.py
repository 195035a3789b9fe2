"""Deploy staging then production over SSH with the real playbook; isolation, idempotence, history, secrets."""

from __future__ import annotations

import json
import re
import stat

import pytest

from scripts import playbook
from tests.e2e import harness
from tests.e2e.harness import DEPLOY_HOME

# An operator's first day: nothing deployed yet; the tests below build on each other's state, in order.
pytestmark = pytest.mark.usefixtures("nothing_deployed")


def test_deploy_staging_then_production_serves_each_on_its_port(ansible, images, testbed):
    staging = ansible.deploy("staging", images.first)
    assert staging.returncode == 0, staging.output[-4000:]
    # The image was only in the registry: the deploy logged in (isolated DOCKER_CONFIG) and pulled it.
    assert re.search(r"TASK \[release : Log in to the registry[^\n]*\n(ok|changed): \[testbed\]", staging.output)
    assert re.search(r"TASK \[release : Pull the image[^\]]*\] \*+\nchanged: \[testbed\]", staging.output)
    # ... and what a workflow uploads of that run (events and stats) holds no trace of the registry password.
    assert sorted(path.name for path in staging.result.artifacts.iterdir()) == ["events.jsonl", "stats.json"]
    assert playbook.files_containing(harness.registry_password(testbed), staging.result.artifacts) == []
    assert harness.health("staging") == {"status": "ok", "env": "staging", "version": images.first}
    # cloudflared's ingress (the user's ~/.cloudflared/config.yml on the testbed) was really checked.
    table = harness.ENVIRONMENTS["staging"]
    assert f"staging: {table['hostname']} -> http://localhost:{table['port']}" in staging.output
    assert harness.container("production") is None, "a staging deploy must not create production's stack"

    production = ansible.deploy("production", images.first)
    assert production.returncode == 0, production.output[-4000:]
    assert harness.health("production") == {"status": "ok", "env": "production", "version": images.first}
    # The proxy owns the environment's port, on loopback only; the api colour has a loopback port of its own.
    proxy = harness.inspect(harness.proxy_name("production"))
    published = [{"HostIp": "127.0.0.1", "HostPort": str(harness.PORTS["production"])}]
    assert list(proxy["HostConfig"]["PortBindings"].values()) == [published]
    api_bindings = list(harness.container("production")["HostConfig"]["PortBindings"].values())[0]
    assert api_bindings == [{"HostIp": "127.0.0.1", "HostPort": ""}]
    # A first deploy goes to blue, and blue alone.
    assert harness.served_color("production") == harness.live_color("production") == "blue"
    assert harness.project_containers("production") == [
        harness.api_name("production", "blue"),
        harness.proxy_name("production"),
    ]


def test_staging_deploy_leaves_production_untouched_and_history_grows(ansible, images):
    before = harness.container("production")
    lines_before = len(harness.history())

    staging_proxy = harness.inspect(harness.proxy_name("staging"))
    with harness.Probe(harness.health_url("staging"), rate=20) as probe:
        result = ansible.deploy("staging", images.second)
    assert result.returncode == 0, result.output[-4000:]
    # Zero downtime: every probe during the whole deploy got a 200, from the old release or the new one.
    assert probe.failures == 0, f"{probe.failures}/{len(probe.results)} failed requests during a good deploy"

    assert harness.health("staging")["version"] == images.second
    # Blue/green: the new release went to the other colour, the proxy switched to it and the old colour is gone;
    # the proxy itself was only reloaded, never restarted.
    assert harness.served_color("staging") == harness.live_color("staging") == "green"
    assert harness.project_containers("staging") == [
        harness.api_name("staging", "green"),
        harness.proxy_name("staging"),
    ]
    proxy_after = harness.inspect(harness.proxy_name("staging"))
    assert (proxy_after["Id"], proxy_after["State"]["StartedAt"]) == (
        staging_proxy["Id"],
        staging_proxy["State"]["StartedAt"],
    )
    after = harness.container("production")
    assert (after["Id"], after["State"]["StartedAt"]) == (before["Id"], before["State"]["StartedAt"])
    assert harness.health("production")["version"] == images.first
    entries = harness.history()
    assert len(entries) == lines_before + 1
    last = entries[-1]
    assert (last["env"], last["tag"], last["result"], last["action"]) == ("staging", images.second, "success", "deploy")
    assert last["digest"].startswith("sha256:") and last["actor"] == "e2e-tests" and last["time"]
    # The release id names this cut-over: the one the new container carries, and no earlier line's.
    assert last["release"].endswith(f"-{images.second}"), last
    assert last["release"] == harness.container("staging")["Config"]["Labels"]["io.local-llm-server.release"]
    assert last["release"] not in [entry["release"] for entry in entries[:-1]]


def test_second_deploy_changes_nothing_and_never_shows_the_password(ansible, images, testbed):
    serving = harness.container("staging")
    lines_before = len(harness.history())

    # -vvv: the most verbose output an operator could paste into a ticket.
    result = ansible.deploy("staging", images.second, "-vvv")
    assert result.returncode == 0, result.output[-4000:]
    assert result.changed == 0, f"second deploy changed something: {result.recap}"
    assert harness.container("staging")["Id"] == serving["Id"]
    assert len(harness.history()) == lines_before, "a no-op deploy must not add history lines"
    password = harness.registry_password(testbed)
    assert password not in result.output
    assert playbook.files_containing(password, result.result.artifacts) == []


def test_no_secret_in_docker_inspect_history_or_files_and_env_files_are_0600(testbed):
    password = harness.registry_password(testbed)
    for app_env in ("staging", "production"):
        info = harness.container(app_env)
        assert info is not None and password not in json.dumps(info)
        env_file = DEPLOY_HOME / app_env / f".env.{app_env}"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert password not in env_file.read_text()
        assert stat.S_IMODE((DEPLOY_HOME / app_env).stat().st_mode) == 0o700
    assert password not in harness.HISTORY.read_text()
    assert stat.S_IMODE(harness.HISTORY.stat().st_mode) == 0o600
    # The isolated DOCKER_CONFIG holds the registry login (that is its job) but only for the deploy user.
    docker_config = DEPLOY_HOME / "docker-config"
    assert stat.S_IMODE(docker_config.stat().st_mode) == 0o700
    assert '"credsStore"' not in (docker_config / "config.json").read_text()
