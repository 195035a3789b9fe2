"""The deploy workflows' sequence, rehearsed on the testbed through the same make targets they call.

deploy-staging.yml:    make ssh-setup -> make deploy ENV=staging IMAGE_TAG=sha-...
deploy-production.yml: make promote   -> make ssh-setup -> make deploy ENV=production IMAGE_TAG=sha-...
rollback.yml:          make ssh-setup -> make rollback ENV=<env> [IMAGE_TAG=sha-...]
Here the inventory is the testbed's (INVENTORY=local plus ENV=<env>, as one testbed plays both environments); the
Tailscale join is the only step that cannot run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.harness import ROOT


def make(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def pin_another_host_key(testbed: dict[str, str], directory: Path) -> Path:
    """A known_hosts file that pins a freshly made key, not the testbed's, for the testbed's SSH address."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / "other")], check=True)
    other = " ".join((directory / "other.pub").read_text().split()[:2])
    known_hosts = directory / "other_known_hosts"
    known_hosts.write_text(f"[{testbed['SSH_HOST']}]:{testbed['SSH_PORT']} {other}\n")
    return known_hosts


def test_ssh_setup_gives_a_working_pinned_connection(testbed, tmp_path):
    env = {
        **os.environ,
        "SSH_DIR": str(tmp_path / "ssh"),
        "DEPLOY_SSH_KEY": Path(testbed["SSH_KEY"]).read_text(),
        "DEPLOY_KNOWN_HOSTS": Path(testbed["SSH_KNOWN_HOSTS"]).read_text(),
    }
    result = make("ssh-setup", env=env)
    assert result.returncode == 0, result.stderr

    def ssh(known_hosts: Path) -> subprocess.CompletedProcess:
        argv = ["ssh", "-F", "/dev/null", "-i", str(tmp_path / "ssh" / "id_ed25519"), "-p", testbed["SSH_PORT"]]
        argv += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
        return subprocess.run(
            [*argv, f"{testbed['SSH_USER']}@{testbed['SSH_HOST']}", "docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert ssh(tmp_path / "ssh" / "known_hosts").returncode == 0
    # The pin is what lets it in: another host key for the same address is refused.
    refused = ssh(pin_another_host_key(testbed, tmp_path))
    assert refused.returncode != 0 and "host key" in refused.stderr.lower()


@pytest.mark.parametrize("pin", ["another-key", "nothing"])
def test_playbooks_refuse_a_host_key_that_is_not_pinned(ansible, testbed, tmp_path, pin):
    # Through ansible-playbook itself (its SSH, ansible.cfg's host_key_checking): a mismatching or unknown
    # host key ends the run before any task, and nothing gets written into the known_hosts file.
    if pin == "another-key":
        known_hosts = pin_another_host_key(testbed, tmp_path)
    else:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text("")
    before = known_hosts.read_text()
    args = {"ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts}"}
    # A connection of its own: ansible.cfg's ControlPersist keeps an earlier run's SSH connection open for a minute,
    # and a run that reuses it makes no new handshake, so no host key is checked (OpenSSH's ControlMaster).
    control_dir = tmp_path / "cp"
    control_dir.mkdir()
    env = {**ansible.base_env, "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir)}
    result = ansible.run("verify.yml", "-e", json.dumps(args), env=env)
    assert result.returncode != 0
    assert "Host key verification failed" in harness.flat(result.output)  # OpenSSH's words, as Ansible passes them on
    assert "ok=0" in result.output
    assert known_hosts.read_text() == before


def test_promote_retags_the_tested_digest_without_rebuilding(testbed, images, ansible):
    with tempfile.TemporaryDirectory() as docker_config:
        env = {**os.environ, "DOCKER_CONFIG": docker_config}
        login = subprocess.run(
            ["docker", "login", "--password-stdin", "-u", testbed["REGISTRY_USER"], testbed["REGISTRY"]],
            input=harness.registry_password(testbed),
            env=env,
            capture_output=True,
            text=True,
        )
        assert login.returncode == 0, login.stderr
        result = make(
            "promote", env={**env, "IMAGE_REPOSITORY": testbed["IMAGE_REPOSITORY"], "IMAGE_TAG": images.first}
        )
    assert result.returncode == 0, result.stderr
    assert harness.registry_digest(testbed, "latest") == harness.registry_digest(testbed, images.first)


def test_promote_refuses_a_tag_that_was_never_built(testbed, images):
    env = {**os.environ, "IMAGE_REPOSITORY": testbed["IMAGE_REPOSITORY"], "IMAGE_TAG": "sha-0000000"}
    result = make("promote", env=env)
    assert result.returncode != 0
    assert "not in the registry" in result.stderr


def test_make_deploy_and_rollback_as_the_workflows_call_them(testbed, images, ansible):
    env = ansible.base_env
    for stack in ("staging", "production"):
        result = make("deploy", "INVENTORY=local", f"ENV={stack}", f"IMAGE_TAG={images.second}", env=env)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert harness.health(stack)["version"] == images.second
    result = make("rollback", "INVENTORY=local", "ENV=staging", f"IMAGE_TAG={images.first}", env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert harness.health("staging")["version"] == images.first
    assert harness.health("production")["version"] == images.second
    last = harness.history()[-1]
    assert (last["env"], last["tag"], last["result"]) == ("staging", images.first, "success")
    # The registry password reached ansible-playbook through the environment only, never the command line.
    assert harness.registry_password(testbed) not in json.dumps([result.args, result.stdout])
