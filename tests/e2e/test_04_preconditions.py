"""Ollama or cloudflared unhealthy: the deploy is refused before either stack is touched."""

from __future__ import annotations

import json

import pytest

from tests.e2e import harness

# Each test deploys the second release to production: a real change, which the checks must refuse.
pytestmark = pytest.mark.usefixtures("production_serves_the_first_release")


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        # Ollama answering every /api route with 503 = down for the containers (the double's `status` knob).
        ({"status": 503, "fail_with": "ollama is down"}, "Ollama does not answer"),
        # Ollama up, but without the configured model (the double then lists only this one).
        ({"models": ["some-other-model:7b"]}, "does not have model llama3.2:1b"),
    ],
    ids=["ollama-down", "model-missing"],
)
def test_unhealthy_ollama_refuses_before_any_change(ansible, images, double_restored, knobs, message):
    before = harness.snapshot()
    harness.double(double_restored, "config", knobs)
    result = ansible.deploy("production", images.second)
    assert result.returncode != 0
    assert message in result.output
    assert harness.snapshot() == before


def test_cloudflared_not_ready_refuses_before_any_change(ansible, images, testbed):
    state_file = harness.Path(testbed["CLOUDFLARED_STATE_FILE"])
    saved = state_file.read_text() if state_file.exists() else None
    before = harness.snapshot()
    try:
        state_file.write_text(json.dumps({"ready_connections": 0}))
        result = ansible.deploy("production", images.second)
    finally:
        if saved is None:
            state_file.unlink(missing_ok=True)
        else:
            state_file.write_text(saved)
    assert result.returncode != 0
    assert "cloudflared is not ready" in result.output and "readyConnections=0" in result.output
    assert harness.snapshot() == before


def test_ingress_routing_the_hostname_elsewhere_refuses_before_any_change(ansible, images, testbed):
    original = harness.CLOUDFLARED_USER_CONFIG.read_text()
    before = harness.snapshot()
    try:
        harness.install_cloudflared_config(
            original.replace(f"http://localhost:{harness.PORTS['production']}", "http://localhost:9999")
        )
        result = ansible.deploy("production", images.second)
    finally:
        harness.install_cloudflared_config(original)
    assert result.returncode != 0
    assert "ingress must route 'llm.example.com' (production)" in result.output
    assert harness.snapshot() == before


def test_start_interval_on_an_old_engine_refuses_before_any_change(ansible, images):
    # The testbed's engine is 20.10; compose's healthcheck start_interval needs >= 25 (the Mac's Docker Desktop).
    before = harness.snapshot()
    result = ansible.deploy("production", images.second, "-e", "app_healthcheck_start_interval=250ms")
    assert result.returncode != 0
    assert "app_healthcheck_start_interval needs Docker >= 25" in harness.flat(result.output)
    assert harness.snapshot() == before
