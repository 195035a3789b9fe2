"""A reboot of the Mac: the Docker engine stops and starts under both stacks, while the deploy user and its files
stay. Both stacks must serve their releases again by themselves (compose's `restart: always`), through their
proxies, from the colour each proxy's file names, within ENGINE_RESTART_BOUND seconds of the engine answering
(docs/testing.md states this bound).
"""

from __future__ import annotations

import time

from tests.e2e import harness

ENGINE_RESTART_BOUND = 60.0


def test_both_stacks_serve_again_by_themselves_after_the_engine_restarts(testbed, ansible, images):
    before = harness.ensure_serving(ansible, images.first)
    colors = {app_env: harness.live_color(app_env) for app_env in harness.PORTS}
    files = sorted(path for path in harness.DEPLOY_HOME.rglob("*") if path.is_file())

    harness.restart_engine()
    engine_back = time.monotonic()
    harness.wait_for(
        lambda: harness.serving_versions() == before, ENGINE_RESTART_BOUND, "both stacks to serve again", interval=0.25
    )
    took = time.monotonic() - engine_back

    # Through each proxy, from the colour its file names: nothing was redeployed, the same containers came back.
    assert {app_env: harness.served_color(app_env) for app_env in harness.PORTS} == colors
    for app_env in harness.PORTS:
        assert harness.container(app_env)["State"]["Running"], app_env
    # A reboot keeps the user and every file deployed under it.
    assert harness.run(["id", "deploy"]).returncode == 0
    assert sorted(path for path in harness.DEPLOY_HOME.rglob("*") if path.is_file()) == files
    print(f"both stacks serving again {took:.1f} s after the engine was back")
