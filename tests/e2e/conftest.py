"""Session fixtures for the end-to-end tier: the testbed up, three real images in its registry, a clean slate.

The tests in this directory run in file order (test_01_..., test_02_...) and build on each other's state
(what is deployed, the release history), like an operator's day. Nothing is skipped: if the testbed or an
image cannot be prepared the session fails loudly (TestbedError).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.e2e import harness


@dataclass
class Images:
    first: str  # two good releases built from this tree with distinct BUILD_VARIANTs
    second: str
    broken: str  # starts, /health 200, /ready always 503
    unhealthy: str  # /ready 200, Docker healthcheck always failing (refused by the gate)


@pytest.fixture(scope="session")
def testbed() -> dict[str, str]:
    return harness.testbed_up()


@pytest.fixture(scope="session")
def images(testbed) -> Images:
    first = harness.build_push("e2e-first")
    second = harness.build_push("e2e-second")
    images = Images(
        first=first,
        second=second,
        broken=harness.push_broken(testbed, first),
        unhealthy=harness.push_unhealthy(testbed, first),
    )
    # Only in the registry from here on: each first deploy of a tag logs in and pulls, as on the Mac.
    harness.forget_locally(testbed, images.first, images.second, images.broken, images.unhealthy)
    return images


@pytest.fixture(scope="session")
def ansible(testbed, images) -> harness.Ansible:
    harness.reset_stacks()
    harness.double(testbed, "reset")
    return harness.Ansible(testbed)


@pytest.fixture
def double_restored(testbed):
    """Give a test the double to misconfigure, and put it back afterwards whatever happens."""
    yield testbed
    harness.double(testbed, "reset")
