"""After app_deploy: the stack serves the tag on its loopback port, files are private, history recorded."""

import json
import os

HOME_DIR = "/home/deploy/molecule-deploy"


GET_HEALTH = (
    "python3 -c \"import json, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:18211/health'); "
    "print(json.dumps([r.headers['X-Api-Color'], json.load(r)]))\""
)


def test_stack_serves_the_tag_through_the_proxy_on_loopback(host):
    tag = os.environ["MOLECULE_IMAGE_TAG"]
    color, body = json.loads(host.check_output(GET_HEALTH))
    assert body == {"status": "ok", "env": "staging", "version": tag}
    assert color == "blue", "a first deploy goes to blue"
    inspect = "docker inspect molecule-deploy-api-blue-1 --format '{{json .Config.Labels}}'"
    labels = json.loads(host.check_output(inspect))
    assert (labels["io.local-llm-server.tag"], labels["io.local-llm-server.color"]) == (tag, "blue")
    assert not host.run("docker inspect molecule-deploy-api-green-1").succeeded, "only the live colour runs"
    proxy = json.loads(host.check_output("docker inspect molecule-deploy-proxy-1"))[0]
    assert proxy["State"]["Running"]
    assert proxy["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18211"}]}
    assert "set $api_color blue;" in host.file(f"{HOME_DIR}/staging/proxy/nginx.conf").content_string


def test_files_are_private(host):
    assert host.file(f"{HOME_DIR}/staging/.env.staging").mode == 0o600
    assert host.file(f"{HOME_DIR}/staging").mode == 0o700
    assert host.file(f"{HOME_DIR}/docker-config").mode == 0o700
    assert "credsStore" not in host.file(f"{HOME_DIR}/docker-config/config.json").content_string


def test_release_recorded(host):
    lines = host.file(f"{HOME_DIR}/state/releases.jsonl").content_string.splitlines()
    entry = json.loads(lines[-1])
    assert (entry["env"], entry["tag"], entry["result"]) == ("staging", os.environ["MOLECULE_IMAGE_TAG"], "success")
    assert len(lines) == 1, "the idempotence run must not record a second release"
