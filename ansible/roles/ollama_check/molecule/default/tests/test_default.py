"""What ollama_check asserted, checked independently: Ollama has the model at the address containers use."""

import json


def test_model_listed_at_the_bridge_address(host):
    gateway = host.check_output("docker network inspect bridge --format '{{(index .IPAM.Config 0).Subnet}}'")
    address = ".".join(gateway.split("/")[0].split(".")[:3] + ["1"])
    tags = host.check_output(
        f"python3 -c \"import urllib.request; print(urllib.request.urlopen('http://{address}:11434/api/tags').read().decode())\""
    )
    assert "llama3.2:1b" in [m["name"] for m in json.loads(tags)["models"]]
