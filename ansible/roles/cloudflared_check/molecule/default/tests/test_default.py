"""What cloudflared_check asserted, checked independently on the host."""

import json

import yaml


def test_ready_endpoint_reports_an_edge_connection(host):
    body = host.check_output(
        "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:20241/ready').read().decode())\""
    )
    assert json.loads(body)["readyConnections"] >= 1


def test_ingress_routes_each_hostname_to_its_port(host):
    config = yaml.safe_load(host.file(host.user().home + "/.cloudflared/config.yml").content_string)
    routes = {rule.get("hostname"): rule["service"] for rule in config["ingress"]}
    assert routes["staging.llm.example.com"] == "http://localhost:8001"
    assert routes["llm.example.com"] == "http://localhost:8000"
    assert "hostname" not in config["ingress"][-1]
