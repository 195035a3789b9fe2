"""The embedding model end to end: an inventory variable (app_embed_model_name) reaches the env file, the ollama
role's check requires Ollama to have it (and pulls it with ollama_pull=true), /ready requires it, verify reports it,
and a retrieval lookup through the deployed stack's proxy gets vectors with the official ollama client."""

from __future__ import annotations

import ollama
import pytest

from tests.e2e import harness
from tests.e2e.harness import DEPLOY_HOME

EMBED = "nomic-embed-text:latest"

pytestmark = pytest.mark.usefixtures("serving")


@pytest.fixture
def without_the_embedding_model_afterwards(testbed, built_images):
    """The other files' stacks serve without an embedding model: put staging back that way, whatever happens."""
    yield
    harness.double(testbed, "reset")
    harness.must_deploy(
        harness.Ansible(testbed), "staging", harness.health("staging").get("version") or built_images.first
    )


def test_a_missing_embedding_model_is_refused_before_any_change(ansible, images, double_restored):
    before = harness.snapshot()
    result = ansible.deploy("staging", images.second, "-e", f"app_embed_model_name={EMBED}")
    assert result.returncode != 0
    assert f"does not have model {EMBED}" in harness.flat(result.output)
    assert harness.snapshot() == before


def test_the_embedding_model_is_pulled_checked_served_and_reported(
    ansible, images, testbed, without_the_embedding_model_afterwards
):
    harness.double(testbed, "reset")  # Ollama without the model, and no requests recorded yet
    deploy = ansible.deploy("staging", images.first, "-e", f"app_embed_model_name={EMBED}", "-e", "ollama_pull=true")
    assert deploy.returncode == 0, deploy.output[-4000:]
    # The ollama check pulled it (POST /api/pull reached Ollama); the new settings were a cut-over to a gated colour.
    pulls = harness.double_requests(testbed, "/api/pull")
    assert [r["body"]["model"] for r in pulls] == [EMBED]
    assert f"EMBED_MODEL_NAME={EMBED}" in (DEPLOY_HOME / "staging" / ".env.staging").read_text()
    status, ready = harness.http_get(f"http://127.0.0.1:{harness.PORTS['staging']}/ready")
    assert status == 200 and harness.json.loads(ready)["embed_model"] == EMBED, ready

    client = ollama.Client(host=f"http://127.0.0.1:{harness.PORTS['staging']}")
    vectors = client.embed(model=EMBED, input=["retrieval", "augmented"]).embeddings
    assert len(vectors) == 2 and all(len(v) > 0 and isinstance(v[0], float) for v in vectors)

    verify = ansible.run("verify.yml", "-e", f"app_embed_model_name={EMBED}")
    assert verify.returncode == 0, verify.output[-4000:]
    assert f"and has {testbed['MODEL_NAME']} and {EMBED}" in harness.flat(verify.output)

    # Two models (production's chat model is staging's too): Ollama's default keeps 3 loaded, so no warning; with
    # room for one, verify warns naming both and the limit, and still passes (a warning, not a failure).
    assert "cannot all stay loaded" not in harness.flat(verify.output)
    tight = ansible.run("verify.yml", "-e", f"app_embed_model_name={EMBED}", "-e", "app_ollama_max_loaded_models=1")
    assert tight.returncode == 0, tight.output[-4000:]
    said = harness.flat(tight.output)
    assert "WARNING: 2 models of the stacks" in said and "keeps 1 at once" in said, said[-3000:]
    assert f"staging: {testbed['MODEL_NAME']}, {EMBED}" in said
