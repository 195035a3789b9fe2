"""Rollback: without a tag to the previous successful release; with a tag to that one; unknown tags refused."""

from __future__ import annotations

import re

import pytest

from tests.e2e import harness

# Staging serves the second release, the first before it: what a rollback returns to.
pytestmark = pytest.mark.usefixtures("staging_after_two_releases")


def test_rollback_without_tag_returns_to_the_previous_release(ansible, images):
    assert harness.health("staging")["version"] == images.second
    result = ansible.rollback("staging")
    assert result.returncode == 0, result.output[-4000:]
    assert harness.health("staging")["version"] == images.first
    last = harness.history()[-1]
    assert (last["tag"], last["action"], last["result"]) == (images.first, "rollback", "success")


def test_rollback_to_an_explicit_tag(ansible, images):
    result = ansible.rollback("staging", "-e", f"image_tag={images.second}")
    assert result.returncode == 0, result.output[-4000:]
    assert harness.health("staging")["version"] == images.second


def test_rollback_to_a_retained_release_needs_no_registry(ansible, images):
    # The image is still on the host: the rollback must work while the registry refuses us (down, or an expired
    # token), and must not even try to log in.
    env = {**ansible.base_env, "REGISTRY_PASSWORD": "expired-token-e2e"}
    result = ansible.rollback("staging", env=env)
    assert result.returncode == 0, result.output[-4000:]
    assert harness.health("staging")["version"] == images.first
    assert not re.search(r"TASK \[release : Log in to the registry[^\n]*\n(ok|changed|fatal)", result.output)
    # Back to the state the next tests expect.
    again = ansible.rollback("staging", "-e", f"image_tag={images.second}")
    assert again.returncode == 0, again.output[-4000:]


def test_rollback_to_a_tag_neither_on_the_host_nor_in_the_registry_is_refused(ansible, images):
    serving = harness.container("staging")
    result = ansible.rollback("staging", "-e", "image_tag=sha-0000000")
    assert result.returncode != 0
    assert "Cannot roll staging back to sha-0000000" in result.output
    assert "not retained" in result.output and "no such tag" in result.output
    assert harness.container("staging")["Id"] == serving["Id"]
