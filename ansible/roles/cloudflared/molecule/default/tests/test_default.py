"""What the cloudflared role wrote and its check asserted, checked independently on the host."""

import json
from pathlib import Path

import yaml

# The repository's table of environments (environments.yml): each hostname must route to its port.
TABLE = yaml.safe_load((Path(__file__).resolve().parents[6] / "environments.yml").read_text())["environments"]


def test_ready_endpoint_reports_an_edge_connection(host):
    body = host.check_output(
        "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:20241/ready').read().decode())\""
    )
    assert json.loads(body)["readyConnections"] >= 1


def test_ingress_routes_each_hostname_to_its_port(host):
    config = yaml.safe_load(host.file(host.user().home + "/.cloudflared/config.yml").content_string)
    routes = {rule.get("hostname"): rule["service"] for rule in config["ingress"]}
    for env in TABLE.values():
        assert routes[env["hostname"]] == f"http://127.0.0.1:{env['port']}"
    assert "hostname" not in config["ingress"][-1]


def test_metrics_pinned_and_credentials_private(host):
    home = host.user().home
    config = yaml.safe_load(host.file(home + "/.cloudflared/config.yml").content_string)
    assert config["metrics"] == "127.0.0.1:20241"
    credentials = host.file(f"{home}/.cloudflared/{config['tunnel']}.json")
    assert credentials.mode == 0o600
    assert config["credentials-file"] == credentials.path
