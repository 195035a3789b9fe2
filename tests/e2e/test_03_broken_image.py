"""A release that starts but never becomes ready is refused by the candidate gate; the old one keeps serving."""

from __future__ import annotations

from tests.e2e import harness


def test_broken_image_is_refused_and_the_old_release_serves_throughout(ansible, images):
    serving = harness.container("staging")
    old_tag = harness.health("staging")["version"]
    with harness.Probe("http://127.0.0.1:8001/health", rate=20) as probe:
        result = ansible.deploy("staging", images.broken, "-e", "app_deploy_candidate_timeout=10")
    assert result.returncode != 0
    assert f"Deploy of {images.broken} to staging refused" in result.output
    assert "/ready" in result.output and "cannot reach Ollama" in result.output  # the cause is named
    assert len(probe.results) >= 20 * 5, "the probe did not run for the whole attempt"
    assert probe.failures == 0, f"{probe.failures} failed requests during the refused deploy"
    after = harness.container("staging")
    assert (after["Id"], after["State"]["StartedAt"]) == (serving["Id"], serving["State"]["StartedAt"])
    assert harness.health("staging")["version"] == old_tag
    assert not harness.container_exists("llm-staging-candidate"), "the candidate must be removed"
    last = harness.history()[-1]
    assert (last["tag"], last["result"]) == (images.broken, "failed") and "cannot reach Ollama" in last["cause"]
    # The files on the host describe what runs again, so the next identical deploy is a no-op.
    rerun = ansible.deploy("staging", old_tag)
    assert rerun.returncode == 0 and rerun.changed == 0, rerun.output[-3000:]


def test_failed_cut_over_restores_the_previous_release(ansible, images):
    # The unhealthy image answers /ready, so it passes the candidate gate; the serving container is then replaced
    # and compose's wait for "healthy" fails. The deploy must bring the previous tag back by itself and fail.
    old_tag = harness.health("staging")["version"]
    production = harness.container("production")
    result = ansible.deploy("staging", images.unhealthy)
    assert result.returncode != 0
    assert f"Cut-over of staging to {images.unhealthy} failed" in harness.flat(result.output), result.output[-4000:]
    assert f"Restored {old_tag}." in harness.flat(result.output)
    restored = harness.container("staging")
    assert restored["Config"]["Labels"]["io.local-llm-server.tag"] == old_tag
    assert restored["State"]["Health"]["Status"] == "healthy"
    assert harness.health("staging")["version"] == old_tag
    assert harness.container("production")["Id"] == production["Id"], "production must not be touched"
    last = harness.history()[-1]
    assert (last["tag"], last["result"], last["env"]) == (images.unhealthy, "failed", "staging")
    assert "unhealthy" in last["cause"], last["cause"]
    # The files on the host describe the restored release, so deploying it again changes nothing.
    rerun = ansible.deploy("staging", old_tag)
    assert rerun.returncode == 0 and rerun.changed == 0, rerun.output[-3000:]
