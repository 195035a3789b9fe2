"""After the release role: the stack serves the tag on its loopback port, its files are private, the release is
recorded in full, the lock is released, and images no release needs are pruned."""

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


def test_release_recorded_in_full(host):
    tag = os.environ["MOLECULE_IMAGE_TAG"]
    lines = host.file(f"{HOME_DIR}/state/releases.jsonl").content_string.splitlines()
    assert len(lines) == 1, "the idempotence run must not record a second release"
    entry = json.loads(lines[-1])
    assert (entry["env"], entry["tag"], entry["result"], entry["action"]) == ("staging", tag, "success", "deploy")
    inspect = "docker inspect molecule-deploy-api-blue-1 --format '{{json .Config.Labels}}'"
    labels = json.loads(host.check_output(inspect))
    assert entry["release"] == labels["io.local-llm-server.release"] and entry["release"].endswith(f"-{tag}")
    assert entry["digest"].startswith("sha256:") and entry["actor"] and entry["cause"] == ""
    # The models the release serves, with Ollama's digests, as its own /api/tags listed them.
    assert entry["models"] and all(m["name"] and m["digest"] for m in entry["models"]), entry["models"]


def test_lock_released(host):
    assert not host.file(f"{HOME_DIR}/state/locks/staging.lock").exists


def test_images_no_release_needs_are_pruned(host):
    repository = json.loads(host.check_output("docker inspect molecule-deploy-api-blue-1"))[0]["Config"]["Image"]
    tags = host.check_output(f"docker images {repository.rsplit(':', 1)[0]} --format '{{{{.Tag}}}}'").split()
    assert "sha-0000000" not in tags and os.environ["MOLECULE_IMAGE_TAG"] in tags
