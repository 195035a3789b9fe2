"""What the ollama role did and asserted, checked independently: the models pulled and loaded through Ollama's API,
listed at the address the containers use."""

import json

DOUBLE = "http://127.0.0.1:11434"


def get(host, url: str):
    return json.loads(
        host.check_output(
            f"python3 -c \"import urllib.request; print(urllib.request.urlopen('{url}').read().decode())\""
        )
    )


def test_both_models_listed_at_the_bridge_address(host):
    gateway = host.check_output("docker network inspect bridge --format '{{(index .IPAM.Config 0).Subnet}}'")
    address = ".".join(gateway.split("/")[0].split(".")[:3] + ["1"])
    names = [m["name"] for m in get(host, f"http://{address}:11434/api/tags")["models"]]
    assert "llama3.2:1b" in names and "all-minilm:latest" in names


def test_setup_pulled_only_the_missing_model_and_loaded_both(host):
    seen = [(r["method"], r["path"], r.get("body") or {}) for r in get(host, f"{DOUBLE}/_double/requests")]
    pulls = [body.get("model") for method, path, body in seen if path == "/api/pull"]
    # Once, by the first converge; the idempotence run finds it listed.
    assert pulls == ["all-minilm:latest"], pulls
    # The FAQ's preload: the chat model with nothing to generate, the embedding model with nothing to embed.
    assert ("POST", "/api/generate", {"model": "llama3.2:1b"}) in seen
    assert ("POST", "/api/embed", {"model": "all-minilm", "input": []}) in seen
