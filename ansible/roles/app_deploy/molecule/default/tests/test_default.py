"""After app_deploy: the stack serves the tag on its loopback port, files are private, history recorded."""

import json
import os

HOME_DIR = "/home/deploy/molecule-deploy"


def test_stack_serves_the_tag_on_loopback(host):
    tag = os.environ["MOLECULE_IMAGE_TAG"]
    body = host.check_output(
        "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:18211/health').read().decode())\""
    )
    assert json.loads(body) == {"status": "ok", "env": "staging", "version": tag}
    labels = json.loads(host.check_output("docker inspect molecule-deploy-api-1 --format '{{json .Config.Labels}}'"))
    assert labels["io.local-llm-server.tag"] == tag
    assert not host.run("docker inspect molecule-deploy-candidate").succeeded, "the candidate must be removed"


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
