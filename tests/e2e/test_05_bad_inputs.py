"""Bad inputs are refused by the release role, before anything on the host changes, each with a clear message."""

from __future__ import annotations

import pytest

from tests.e2e import harness

# A deploy of the first release to staging is a real change, so the registry is asked (and refuses bad credentials).
pytestmark = pytest.mark.usefixtures("staging_serves_the_second_release")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-e", "app_env=qa", "-e", "image_tag=sha-1234567"], "app_env must be one of staging, production, got 'qa'"),
        (["-e", "image_tag=sha-1234567"], "with inventories/local pass -e app_env=staging|production"),
        (["-e", "app_env=staging", "-e", "image_tag=latest"], "image_tag must match"),
        (["-e", "app_env=staging", "-e", "image_tag=sha-XYZ1234"], "got 'sha-XYZ1234'"),
        (["-e", "app_env=staging"], "got '(not given)'"),
        (["-e", "app_env=staging", "-e", "image_tag=sha-1234567"], "cannot be deployed: no such tag (HTTP 404)"),
    ],
    ids=["unknown-env", "no-env", "channel-tag", "malformed-tag", "no-tag", "tag-not-in-registry"],
)
def test_bad_input_is_refused_before_any_change(ansible, extra, message):
    before = harness.snapshot()
    result = ansible.run("deploy.yml", *extra)
    assert result.returncode != 0
    assert message in result.output
    assert harness.snapshot() == before


def test_missing_registry_secret_is_refused_before_any_change(ansible, images, testbed):
    before = harness.snapshot()
    env = {k: v for k, v in ansible.base_env.items() if k != "REGISTRY_PASSWORD"}
    result = ansible.deploy("staging", images.first, env=env)
    assert result.returncode != 0
    assert "REGISTRY_USERNAME and REGISTRY_PASSWORD must be set" in result.output
    assert harness.snapshot() == before


def test_wrong_registry_password_is_refused_and_not_echoed(ansible, images):
    before = harness.snapshot()
    env = {**ansible.base_env, "REGISTRY_PASSWORD": "wrong-password-e2e"}
    result = ansible.deploy("staging", images.first, "-vvv", env=env)
    assert result.returncode != 0
    assert "credentials rejected (HTTP 401)" in result.output
    assert "wrong-password-e2e" not in result.output
    assert harness.snapshot() == before
