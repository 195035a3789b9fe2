"""Releases the gate must refuse, a proxy switch that fails, and proxies in odd states (stopped, its port taken, its
file not loaded): the old release serves throughout, untouched, and the next deploy heals what it can."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.e2e import harness

# Both stacks serve a release: the refused ones must leave them untouched.
pytestmark = pytest.mark.usefixtures("serving")


def test_broken_image_is_refused_and_the_old_release_serves_throughout(ansible, images):
    serving = harness.container("staging")
    old_tag = harness.health("staging")["version"]
    containers = harness.project_containers("staging")
    with harness.Probe(harness.health_url("staging"), rate=20) as probe:
        result = ansible.deploy("staging", images.broken, "-e", "release_gate_timeout=10")
    assert result.returncode != 0
    assert f"Deploy of {images.broken} to staging refused" in result.output
    assert "/ready" in result.output and "cannot reach Ollama" in result.output  # the cause is named
    assert len(probe.results) >= 20 * 5, "the probe did not run for the whole attempt"
    assert probe.failures == 0, f"{probe.failures} failed requests during the refused deploy"
    after = harness.container("staging")
    assert (after["Id"], after["State"]["StartedAt"]) == (serving["Id"], serving["State"]["StartedAt"])
    assert harness.health("staging")["version"] == old_tag
    assert harness.project_containers("staging") == containers, "the refused colour must be removed"
    last = harness.history()[-1]
    assert (last["tag"], last["result"]) == (images.broken, "failed") and "cannot reach Ollama" in last["cause"]
    assert last["release"].endswith(f"-{images.broken}"), last  # the id of the refused attempt
    # The files on the host describe what runs again, so the next identical deploy is a no-op.
    rerun = ansible.deploy("staging", old_tag)
    assert rerun.returncode == 0 and rerun.changed == 0, rerun.output[-3000:]


def test_unhealthy_image_is_refused_before_it_takes_traffic(ansible, images):
    # The unhealthy image answers /ready but its Docker healthcheck always fails: the gate waits for "healthy"
    # too, so it never receives a request.
    serving = harness.container("staging")
    old_tag = harness.health("staging")["version"]
    production = harness.container("production")
    with harness.Probe(harness.health_url("staging"), rate=20) as probe:
        result = ansible.deploy("staging", images.unhealthy)
    assert result.returncode != 0
    assert f"Deploy of {images.unhealthy} to staging refused" in harness.flat(result.output), result.output[-4000:]
    assert probe.failures == 0, f"{probe.failures} failed requests during the refused deploy"
    assert harness.container("staging")["Id"] == serving["Id"]
    assert harness.health("staging")["version"] == old_tag
    assert harness.container("production")["Id"] == production["Id"], "production must not be touched"
    last = harness.history()[-1]
    assert (last["tag"], last["result"], last["env"]) == (images.unhealthy, "failed", "staging")
    assert "unhealthy" in last["cause"], last["cause"]
    rerun = ansible.deploy("staging", old_tag)
    assert rerun.returncode == 0 and rerun.changed == 0, rerun.output[-3000:]


def test_failed_proxy_switch_restores_the_previous_release(ansible, images):
    # A real fault in the proxy: nginx's pid file names no process, so `nginx -s reload` cannot signal the
    # master. The new colour passes the gate, the switch fails, and the deploy must switch back, remove the new
    # colour and fail, while the old colour keeps serving.
    serving = harness.container("staging")
    old_tag = harness.health("staging")["version"]
    new_tag = images.first if old_tag != images.first else images.second
    containers = harness.project_containers("staging")
    proxy_exec = ["docker", "exec", harness.proxy_name("staging"), "sh", "-c"]
    subprocess.run([*proxy_exec, "echo 999999 > /tmp/nginx.pid"], check=True)
    try:
        with harness.Probe(harness.health_url("staging"), rate=20) as probe:
            result = ansible.deploy("staging", new_tag)
    finally:
        # nginx runs in the foreground as the container's process 1.
        subprocess.run([*proxy_exec, "echo 1 > /tmp/nginx.pid"], check=True)
    output = harness.flat(result.output)
    assert result.returncode != 0
    assert f"Cut-over of staging to {new_tag} failed" in output, result.output[-4000:]
    assert "Reload nginx in the proxy container" in output and f"Restored {old_tag}." in output
    assert probe.failures == 0, f"{probe.failures} failed requests during the failed switch"
    assert harness.container("staging")["Id"] == serving["Id"]
    old_color = serving["Config"]["Labels"]["io.local-llm-server.color"]
    assert harness.served_color("staging") == harness.live_color("staging") == old_color
    assert harness.project_containers("staging") == containers, "the new colour must be removed"
    last = harness.history()[-1]
    assert (last["tag"], last["result"]) == (new_tag, "failed")
    rerun = ansible.deploy("staging", old_tag)
    assert rerun.returncode == 0 and rerun.changed == 0, rerun.output[-3000:]


def test_a_stopped_proxy_is_started_again_by_the_next_deploy(ansible):
    # Someone stopped the proxy: the port refuses. A deploy of the running tag must notice (compose's plan says
    # the proxy needs starting), bring it back through the gate and switch, and leave a stack verify calls healthy.
    tag = harness.health("staging")["version"]
    subprocess.run(["docker", "stop", harness.proxy_name("staging")], check=True, capture_output=True)
    assert harness.served_color("staging") is None
    result = ansible.deploy("staging", tag)
    assert result.returncode == 0, result.output[-4000:]
    assert harness.health("staging")["version"] == tag
    assert harness.served_color("staging") == harness.live_color("staging")
    assert len(harness.project_containers("staging")) == 2
    again = ansible.deploy("staging", tag)
    assert again.returncode == 0 and again.changed == 0, again.output[-3000:]


def test_a_proxy_that_cannot_start_fails_the_switch_and_says_what_stays(ansible, images):
    # The proxy is stopped and another process holds its port, so compose cannot start it: the switch fails at
    # "Make sure the proxy runs". The rescue must still run to its end although the reload meets a stopped
    # container (docker exec then returns no exit code): point the file back, record the failure, name the cause.
    # No colour answers through the port, so both are kept (bluegreen_switch_failed).
    old_tag = harness.health("staging")["version"]
    new_tag = images.first if old_tag != images.first else images.second
    old_color = harness.live_color("staging")
    subprocess.run(["docker", "stop", harness.proxy_name("staging")], check=True, capture_output=True)
    with socket.create_server(("127.0.0.1", harness.PORTS["staging"])):
        result = ansible.deploy("staging", new_tag)
    output = harness.flat(result.output)
    assert result.returncode != 0
    assert f"Cut-over of staging to {new_tag} failed (Make sure the proxy runs" in output, result.output[-4000:]
    assert "Could not switch the proxy back" in output, result.output[-4000:]
    last = harness.history()[-1]
    assert (last["tag"], last["result"]) == (new_tag, "failed") and "Make sure the proxy runs" in last["cause"]
    assert harness.live_color("staging") == old_color, "the proxy file must name the old colour again"
    # With the port free again, a deploy of the old tag starts the proxy, serves it and retires the new colour.
    again = ansible.deploy("staging", old_tag)
    assert again.returncode == 0, again.output[-4000:]
    assert harness.health("staging")["version"] == old_tag
    assert harness.served_color("staging") == harness.live_color("staging")
    assert len(harness.project_containers("staging")) == 2


def test_a_proxy_image_the_host_cannot_get_is_refused_before_the_new_colour_starts(ansible, images):
    # A proxy image that cannot be pulled (no registry has it): the deploy pulls the proxy image before it starts
    # anything, so it fails there, naming the image, and what serves is not touched.
    serving = harness.container("staging")
    old_tag = harness.health("staging")["version"]
    new_tag = images.first if old_tag != images.first else images.second
    containers = harness.project_containers("staging")
    lines_before = len(harness.history())
    missing = "local/nginx:missing-proxy-image"
    with harness.Probe(harness.health_url("staging"), rate=20) as probe:
        result = ansible.deploy("staging", new_tag, "-e", f"release_proxy_image={missing}")
    output = harness.flat(result.output)
    assert result.returncode != 0
    assert "Pull the proxy image" in output and missing.split(":")[1] in output, result.output[-4000:]
    assert probe.failures == 0, f"{probe.failures} failed requests during the refused deploy"
    assert harness.container("staging")["Id"] == serving["Id"]
    assert harness.project_containers("staging") == containers, "no new colour may start"
    assert harness.health("staging")["version"] == old_tag
    assert len(harness.history()) == lines_before, "nothing was released, so nothing is recorded"


def test_a_proxy_that_has_not_loaded_its_file_is_reloaded_not_redeployed(ansible):
    # A run killed between writing proxy/nginx.conf and the reload leaves a file nginx has not loaded; made here by
    # an edit nginx never sees. The next deploy of the serving tag writes the file back, reloads nginx, asks again
    # and plans once more with that answer: then nothing is left to do, and the same containers keep serving.
    tag = harness.health("staging")["version"]
    serving = harness.container("staging")
    proxy = harness.inspect(harness.proxy_name("staging"))
    conf = harness.DEPLOY_HOME / "staging" / "proxy" / "nginx.conf"
    conf.write_text(conf.read_text() + "# an edit nginx has not loaded\n")
    result = ansible.deploy("staging", tag)
    output = harness.flat(result.output)
    assert result.returncode == 0, result.output[-4000:]
    assert "Reload nginx in the proxy container" in output, result.output[-4000:]
    assert f"staging: nothing ({tag} already serves from api-" in output, "the plan after the reload: nothing"
    assert harness.container("staging")["Id"] == serving["Id"]
    assert harness.inspect(harness.proxy_name("staging"))["State"]["StartedAt"] == proxy["State"]["StartedAt"]
    assert harness.served_color("staging") == harness.live_color("staging")
    again = ansible.deploy("staging", tag)
    assert again.returncode == 0 and again.changed == 0, again.output[-3000:]
