"""Fixtures for the end-to-end tier: the testbed up, real images in its registry, and the state each file needs.

Every test file stands alone and passes in any order (`pytest tests/e2e/test_03_broken_image.py`): a module asks
for the baseline it needs through the fixtures below (`serving`, `staging_after_two_releases`, `nothing_deployed`)
and they deploy what is missing. Expensive things stay session-scoped: the images are built once, and pushed
again only if a test replaced the registry (test_10 brings the testbed down and up). Nothing is skipped: if the
testbed or an image cannot be prepared the session fails loudly (TestbedError).
"""

from __future__ import annotations

from dataclasses import astuple

import pytest

from tests.e2e import harness


@pytest.fixture(scope="session")
def testbed() -> dict[str, str]:
    env = harness.testbed_up()
    harness.double(env, "reset")
    return env


@pytest.fixture(scope="session")
def built_images(testbed) -> harness.Images:
    return harness.publish_images(testbed)


def in_the_registry(testbed: dict[str, str], images: harness.Images) -> harness.Images:
    """The session's images, in the registry. A test that replaced the registry (the testbed's own down and up)
    took them with it: they are pushed again under the same tags (the builds are content-addressed)."""
    if not harness.published(testbed, images) and harness.publish_images(testbed) != images:
        raise harness.TestbedError("rebuilding the e2e images gave other tags")
    return images


@pytest.fixture
def images(testbed, built_images) -> harness.Images:
    return in_the_registry(testbed, built_images)


@pytest.fixture
def ansible(testbed) -> harness.Ansible:
    # Per test, so the registry password is read now: a testbed brought down and up has a new one.
    return harness.Ansible(testbed)


@pytest.fixture(scope="module")
def nothing_deployed(testbed, built_images):
    """Neither stack exists: no containers, files or release history, and no release on the host: the first deploy
    of each tag logs in and pulls (an operator's first day)."""
    harness.reset_stacks()
    in_the_registry(testbed, built_images)
    harness.forget_locally(testbed, *astuple(built_images), missing_ok=True)


@pytest.fixture(scope="module")
def serving(testbed, built_images) -> dict[str, str]:
    """Both stacks serve a release (the first image where nothing serves). Returns {env: version}."""
    return harness.ensure_serving(harness.Ansible(testbed), in_the_registry(testbed, built_images).first)


def serve(testbed: dict[str, str], app_env: str, tag: str) -> None:
    """The environment serves `tag` (deployed when it does not)."""
    if harness.health(app_env).get("version") != tag:
        harness.must_deploy(harness.Ansible(testbed), app_env, tag)


@pytest.fixture(scope="module")
def staging_serves_the_second_release(testbed, built_images, serving) -> None:
    """So that a deploy of the first release is a real change (a rerun of what serves ends before the checks and the
    lock: deploy.yml)."""
    serve(testbed, "staging", built_images.second)


@pytest.fixture(scope="module")
def production_serves_the_first_release(testbed, built_images, serving) -> None:
    """So that a deploy of the second release to production is a real change."""
    serve(testbed, "production", built_images.first)


@pytest.fixture(scope="module")
def staging_after_two_releases(testbed, built_images, serving) -> None:
    """Staging serves the second image, and its release before that was the first (what a rollback returns to)."""
    first, second = built_images.first, built_images.second
    successes = [e["tag"] for e in harness.history() if e["env"] == "staging" and e["result"] == "success"]
    if harness.health("staging").get("version") == second and successes[-2:] == [first, second]:
        return
    for tag in (first, second):
        harness.must_deploy(harness.Ansible(testbed), "staging", tag)


@pytest.fixture
def double_restored(testbed):
    """Give a test the double to misconfigure, and put it back afterwards whatever happens."""
    yield testbed
    harness.double(testbed, "reset")
